/* cbt_filter.c - the changed-block tracking node (cbt_filter.h).
 *
 * A write whose bitmap bit is not yet durable is sent to the store at
 * once, in parallel with the sidecar save; its completion is held until
 * both are done.  To hold it the node borrows the request's done/priv
 * (restored before the caller's done runs): the request's be_scratch
 * belongs to the nodes below. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cbt_filter.h"
#include "cbt_set.h"
#include "reactor.h"

struct cbt_filter {
	struct cbt_set *_Atomic set;
	struct cbt_cbw *_Atomic cbw;
};

/* A write held until its intent is durable. */
struct cbt_held {
	struct cbt_wait wait;
	struct be_io *io;
	void (*done)(struct be_io *io, int res);
	void *priv;
	atomic_int pending;	/* the store's answer and the intent */
	int res;
};

static int cbt_filter_open(struct backend *be, const struct backend_params *p,
			   const char **errmsg)
{
	struct cbt_filter *f;

	if (!p->inner) {
		*errmsg = "cbt filter: nothing to filter";
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	atomic_init(&f->set, NULL);
	atomic_init(&f->cbw, NULL);
	be->priv = f;
	be->inner = p->inner;
	be->size = p->inner->size;
	be->direct = p->inner->direct;
	be->thin = p->inner->thin;
	be->readonly = p->inner->readonly;
	return 0;
}

static void cbt_filter_close(struct backend *be)
{
	free(be->priv);
	be->priv = NULL;
}

static void held_finish(struct cbt_held *h)
{
	struct be_io *io = h->io;
	int res = h->res;

	if (atomic_fetch_sub(&h->pending, 1) != 1)
		return;
	io->done = h->done;
	io->priv = h->priv;
	free(h);
	io->done(io, res);
}

static void held_io_done(struct be_io *io, int res)
{
	struct cbt_held *h = io->priv;

	h->res = res;
	held_finish(h);
}

static void held_intent_done(struct cbt_wait *w, int res)
{
	/* A failed save made the bitmaps inconsistent; the write itself
	 * is unaffected and completes with the store's answer. */
	(void)res;
	held_finish(container_of(w, struct cbt_held, wait));
}

static bool changes_data(enum be_op op)
{
	return op == BE_OP_WRITE || op == BE_OP_UNMAP ||
	       op == BE_OP_WRITE_ZEROES || op == BE_OP_COMPARE_AND_WRITE;
}

void cbt_filter_resume(struct backend *be, struct be_io *io, struct reactor *r)
{
	backend_submit(backend_inner(be), io, r);
}

static void cbt_filter_submit(struct backend *be, struct be_io *io,
			      struct reactor *r)
{
	struct cbt_filter *f = be->priv;
	struct cbt_set *set;
	struct cbt_cbw *cbw;

	if (!changes_data(io->op)) {
		backend_submit(backend_inner(be), io, r);
		return;
	}
	set = atomic_load_explicit(&f->set, memory_order_acquire);
	if (set && cbt_set_mark(set, io->offset, io->length)) {
		struct cbt_held *h = malloc(sizeof(*h));

		if (!h) {
			cbt_set_lost_intent(set);
		} else {
			h->io = io;
			h->done = io->done;
			h->priv = io->priv;
			h->res = 0;
			atomic_init(&h->pending, 2);
			h->wait.r = r;
			h->wait.fn = held_intent_done;
			io->done = held_io_done;
			io->priv = h;
			cbt_set_wait(set, &h->wait);
		}
	}
	cbw = atomic_load_explicit(&f->cbw, memory_order_acquire);
	if (cbw && cbw->before_write(cbw, be, io, r))
		return;
	backend_submit(backend_inner(be), io, r);
}

static int cbt_filter_set_param(struct backend *be, const char *key,
				const char *val)
{
	struct backend *in = backend_inner(be);

	if (in->ops->set_param)
		return in->ops->set_param(in, key, val);
	return -ENOENT;
}

static int cbt_filter_describe(struct backend *be, char *buf, unsigned len)
{
	struct backend *in = backend_inner(be);

	if (in->ops->describe)
		return in->ops->describe(in, buf, len);
	return 0;
}

static int cbt_filter_block_status(struct backend *be, uint64_t offset,
				   uint64_t len, uint64_t *extent)
{
	struct backend *in = backend_inner(be);

	if (!in->ops->block_status)
		return -EOPNOTSUPP;
	return in->ops->block_status(in, offset, len, extent);
}

/* GET LBA STATUS passes through (the store's answer, sync or async). */
static int cbt_filter_block_status_async(struct backend *be, struct be_io *io,
				  struct reactor *r)
{
	return backend_block_status(backend_inner(be), io, r);
}

const struct backend_ops cbt_filter_ops = {
	.name = "cbt",
	.filter = true,
	.open = cbt_filter_open,
	.close = cbt_filter_close,
	.submit = cbt_filter_submit,
	.set_param = cbt_filter_set_param,
	.describe = cbt_filter_describe,
	.block_status = cbt_filter_block_status,
	.block_status_async = cbt_filter_block_status_async,
};

bool cbt_filter_is(const struct backend *be)
{
	return be && be->ops == &cbt_filter_ops;
}

struct backend *cbt_filter_find(struct backend *be)
{
	for (; be; be = backend_inner(be))
		if (cbt_filter_is(be))
			return be;
	return NULL;
}

void cbt_filter_set_bitmaps(struct backend *be, struct cbt_set *set)
{
	struct cbt_filter *f = be->priv;

	atomic_store_explicit(&f->set, set, memory_order_release);
}

struct cbt_set *cbt_filter_bitmaps(struct backend *be)
{
	struct cbt_filter *f = be->priv;

	return atomic_load(&f->set);
}

int cbt_filter_cbw_install(struct backend *be, struct cbt_cbw *c)
{
	struct cbt_filter *f = be->priv;
	struct cbt_cbw *none = NULL;

	return atomic_compare_exchange_strong(&f->cbw, &none, c) ? 0 : -EBUSY;
}

void cbt_filter_cbw_remove(struct backend *be, struct cbt_cbw *c)
{
	struct cbt_filter *f = be->priv;

	atomic_compare_exchange_strong(&f->cbw, &c, NULL);
}
