/* null.c - a backend with no storage: reads return zeroes, writes are
 * discarded.  Useful to measure the target's own overhead and as the inner
 * backend of fault-injection tests that need no file. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "reactor.h"

#define BE_NULL_DEFAULT_SIZE (1ULL << 30)	/* 1 GiB */

static int be_null_open(struct backend *be, const struct backend_params *p,
			const char **errmsg)
{
	be->size = p->size ? p->size : BE_NULL_DEFAULT_SIZE;
	if (p->block_size && be->size % p->block_size) {
		*errmsg = "null backend: size is not a multiple of the block size";
		return -EINVAL;
	}
	/* Nothing is cached, so a failed write cannot be lost from a page
	 * cache: the LUN counts as direct for the hang engine's safety rule. */
	be->direct = true;
	be->readonly = p->readonly;
	be->priv = NULL;
	return 0;
}

static void be_null_close(struct backend *be)
{
	be->priv = NULL;
}

static void be_null_zero_iov(const struct be_io *io)
{
	uint64_t left = io->length;

	for (int i = 0; i < io->iovcnt && left; i++) {
		size_t n = io->iov[i].iov_len;

		if (n > left)
			n = (size_t)left;
		memset(io->iov[i].iov_base, 0, n);
		left -= n;
	}
}

static void be_null_submit(struct backend *be, struct be_io *io,
			   struct reactor *r)
{
	int res = 0;

	uint64_t size = be_size(be);

	if (io->op != BE_OP_FLUSH &&
	    (io->offset > size || io->length > size - io->offset)) {
		res = -EINVAL;
	} else {
		switch (io->op) {
		case BE_OP_READ:
			be_null_zero_iov(io);
			break;
		case BE_OP_WRITE:
		case BE_OP_UNMAP:
		case BE_OP_WRITE_ZEROES:
			if (be->readonly)
				res = -EROFS;
			break;
		case BE_OP_FLUSH:
			break;
		default:
			res = -EOPNOTSUPP;
			break;
		}
	}
	backend_complete_later(r, io, res);
}

/* Every block reads back as zeroes, so every block is a hole. */
static int be_null_block_status(struct backend *be, uint64_t offset,
				uint64_t len, uint64_t *extent)
{
	uint64_t size = be_size(be);

	if (offset >= size)
		return -EINVAL;
	*extent = MIN(len, size - offset);
	return 0;
}

/* No storage: any size is fine; a rescan (size 0) keeps the current one. */
static int be_null_resize(struct backend *be, uint64_t size,
			  const char **errmsg)
{
	(void)errmsg;
	if (size)
		__atomic_store_n(&be->size, size, __ATOMIC_RELEASE);
	return 0;
}

static int be_null_describe(struct backend *be, char *buf, unsigned len)
{
	return snprintf(buf, len, "null %llu bytes",
			(unsigned long long)be->size);
}

const struct backend_ops be_null_ops = {
	.name = "null",
	.open = be_null_open,
	.close = be_null_close,
	.submit = be_null_submit,
	.describe = be_null_describe,
	.block_status = be_null_block_status,
	.resize = be_null_resize,
};
