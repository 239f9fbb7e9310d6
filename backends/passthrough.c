/* passthrough.c - the trivial filter: every request goes to the node below.
 *
 * It exists to exercise the block stack (stack.h): insert it, remove it,
 * stack several, under I/O, and nothing must change for the initiator.  It
 * is also the smallest example of a filter: it keeps no state, reads the
 * node below with backend_inner() on every call (a live change may swap
 * it) and lets the node below complete the io straight to the caller.
 *
 *   tgtadm --op update --mode logicalunit --tid 1 --lun 1 \
 *          --params filter_add=passthrough */
#include <errno.h>

#include "backend.h"

static int be_passthrough_open(struct backend *be,
			       const struct backend_params *p,
			       const char **errmsg)
{
	if (!p->inner) {
		*errmsg = "the passthrough filter needs a node below it";
		return -EINVAL;
	}
	be->inner = p->inner;
	be->size = p->inner->size;
	be->direct = p->inner->direct;
	be->thin = p->inner->thin;
	be->readonly = p->inner->readonly;
	return 0;
}

static void be_passthrough_close(struct backend *be)
{
	(void)be;	/* nothing of its own; the node below is not ours */
}

static void be_passthrough_submit(struct backend *be, struct be_io *io,
				  struct reactor *r)
{
	backend_submit(backend_inner(be), io, r);
}

static int be_passthrough_set_param(struct backend *be, const char *key,
				    const char *val)
{
	struct backend *inner = backend_inner(be);

	if (!inner->ops->set_param)
		return -ENOENT;
	return inner->ops->set_param(inner, key, val);
}

static int be_passthrough_describe(struct backend *be, char *buf,
				   unsigned len)
{
	struct backend *inner = backend_inner(be);

	if (!inner->ops->describe)
		return 0;
	return inner->ops->describe(inner, buf, len);
}

static int be_passthrough_block_status(struct backend *be, uint64_t offset,
				       uint64_t len, uint64_t *extent)
{
	struct backend *inner = backend_inner(be);

	if (!inner->ops->block_status)
		return -EOPNOTSUPP;
	return inner->ops->block_status(inner, offset, len, extent);
}

/* GET LBA STATUS passes through (the store's answer, sync or async). */
static int be_passthrough_block_status_async(struct backend *be, struct be_io *io,
				  struct reactor *r)
{
	return backend_block_status(backend_inner(be), io, r);
}

const struct backend_ops be_passthrough_ops = {
	.name = "passthrough",
	.filter = true,
	.open = be_passthrough_open,
	.close = be_passthrough_close,
	.submit = be_passthrough_submit,
	.set_param = be_passthrough_set_param,
	.describe = be_passthrough_describe,
	.block_status = be_passthrough_block_status,
	.block_status_async = be_passthrough_block_status_async,
};
