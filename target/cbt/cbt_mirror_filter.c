/* cbt_mirror_filter.c - the mirror filter node and the guest data path
 * (cbt_mirror.h; the job's side is cbt_mirror.c).
 *
 * A guest request enters the node on any reactor.  Reads go to the
 * source.  In background mode a write goes to the source and dirties its
 * chunks when it completes (see cbt_mirror.c for why at completion).  In
 * write-blocking mode writes, unmaps and flushes are handed to the job's
 * reactor, which sends them to source and destination in parallel once
 * no copy of their chunks is in flight, and completes them back on their
 * own reactor when both answered.  After the pivot point everything goes
 * to the destination. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cbt_mirror_internal.h"
#include "stack.h"

static void chunks_of(const struct mirror_job *j, const struct be_io *io,
		      uint64_t *c0, uint64_t *c1)
{
	uint64_t end = io->length ? MIN(io->offset + io->length, j->size) : 0;

	if (io->op == BE_OP_FLUSH || end <= io->offset) {
		*c0 = 1;	/* empty range */
		*c1 = 0;
		return;
	}
	*c0 = io->offset / CBT_MIRROR_CHUNK;
	*c1 = (end - 1) / CBT_MIRROR_CHUNK;
}

/* ---- the destination, throttled ---- */

static void dest_timer_fire(struct ev_timer *t);

static void dest_run_queue(struct mirror_job *j)
{
	uint64_t now = now_us();

	while (!list_empty(&j->dest_q)) {
		struct dest_req *d = list_first_entry(&j->dest_q, struct dest_req, link);

		if (d->at_us > now) {
			if (!j->dest_timer_armed) {
				j->dest_timer_armed = true;
				reactor_timer_add(j->r, &j->dest_timer,
						  (d->at_us - now + 999) / 1000,
						  dest_timer_fire, j);
			}
			return;
		}
		list_del(&d->link);
		backend_submit(j->dest, d->io, j->r);
	}
}

static void dest_timer_fire(struct ev_timer *t)
{
	struct mirror_job *j = t->arg;

	j->dest_timer_armed = false;
	dest_run_queue(j);
}

/* Submit io to the destination on the job's reactor, after the test
 * throttle (dest_rate_limit) lets it through. */
void mirror_dest_submit(struct mirror_job *j, struct dest_req *d,
			struct be_io *io)
{
	uint64_t now, start, len;

	if (!j->p.dest_rate_limit || io->op != BE_OP_WRITE) {
		backend_submit(j->dest, io, j->r);
		return;
	}
	now = now_us();
	len = io->length;
	start = MAX(now, j->dest_next_us);
	j->dest_next_us = start + len * 1000000 / j->p.dest_rate_limit;
	d->io = io;
	d->at_us = j->dest_next_us;	/* done when the bytes "went through" */
	list_init(&d->link);
	list_add_tail(&d->link, &j->dest_q);
	dest_run_queue(j);
}

/* ---- write-blocking requests ---- */

static bool wb_overlaps_copy(struct mirror_job *j, const struct mwrite *w)
{
	for (uint64_t c = w->c0; c <= w->c1 && w->c0 <= w->c1; c++)
		if (mbits_test(&j->busy, c))
			return true;
	return false;
}

static void wb_leg_done(struct mwrite *w)
{
	struct mirror_job *j = w->job;
	struct be_io *io = w->io;
	int res;

	if (--w->pending)
		return;
	list_del(&w->link);
	if (w->dest_only) {
		res = w->dst_res;
	} else if (w->dst_res < 0 && atomic_load(&j->mf->route) == MF_DEST) {
		/* past the pivot point the destination is the store: its
		 * error is the store's (the hang engine may retry it there) */
		res = w->dst_res;
	} else {
		if (w->dst_res < 0)
			mirror_fail(j, "writing the destination", w->dst_res);
		else if (w->c0 <= w->c1)
			for (uint64_t c = w->c0; c <= w->c1; c++)
				mbits_set(&j->written, c);
		res = w->src_res;
	}
	io->done = w->done;
	io->priv = w->priv;
	backend_complete_later(w->r, io, res);
	free(w);
	atomic_fetch_sub(&j->wb_pending, 1);
	mirror_pump(j);
}

static void wb_src_done(struct be_io *io, int res)
{
	struct mwrite *w = io->priv;

	w->src_res = res;
	wb_leg_done(w);
}

static void wb_dst_done(struct be_io *io, int res)
{
	struct mwrite *w = io->priv;

	/* the destination rate counts what it took, not what was queued */
	if (res >= 0 && io->op == BE_OP_WRITE)
		w->job->dest_bytes += io->length;
	w->dst_res = res;
	wb_leg_done(w);
}

static void wb_dispatch(struct mirror_job *j, struct mwrite *w)
{
	struct be_io *io = w->io;

	list_add_tail(&w->link, &j->wb_inflight);
	w->dio = (struct be_io){
		.op = io->op, .flags = io->flags, .offset = io->offset,
		.length = io->length, .iov = io->iov, .iovcnt = io->iovcnt,
		.done = wb_dst_done, .priv = w,
	};
	if (w->dest_only) {
		w->pending = 1;
		mirror_dest_submit(j, &w->dq, &w->dio);
		return;
	}
	w->pending = 2;
	io->done = wb_src_done;
	io->priv = w;
	backend_submit(backend_inner(j->filter), io, j->r);
	mirror_dest_submit(j, &w->dq, &w->dio);
}

/* The guest's request, without the mirror: to the source. */
static void wb_source_only(void *arg)
{
	struct mwrite *w = arg;
	struct mirror_job *j = w->job;

	list_add_tail(&w->link, &j->wb_inflight);
	w->pending = 1;
	w->dst_res = 0;
	w->io->done = wb_src_done;
	w->io->priv = w;
	backend_submit(backend_inner(j->filter), w->io, j->r);
}

/* On the job's reactor. */
static void wb_arrive(void *arg)
{
	struct mwrite *w = arg;
	struct mirror_job *j = w->job;
	int route = atomic_load(&j->mf->route);

	list_init(&w->link);
	if (route == MF_DEST) {
		w->dest_only = true;
		wb_dispatch(j, w);
		return;
	}
	if (route == MF_SOURCE) {
		wb_source_only(w);
		return;
	}
	if (wb_overlaps_copy(j, w)) {
		list_add_tail(&w->link, &j->wb_waiting);
		return;
	}
	wb_dispatch(j, w);
}

/* Waiting writes whose copies have finished go on, in arrival order. */
void mirror_wb_release_waiting(struct mirror_job *j)
{
	struct mwrite *w, *tmp;

	list_for_each_entry_safe(w, tmp, &j->wb_waiting, link) {
		if (wb_overlaps_copy(j, w))
			continue;
		list_del(&w->link);
		if (atomic_load(&j->mf->route) == MF_SOURCE)
			wb_source_only(w);
		else
			wb_dispatch(j, w);
	}
}

/* ---- background writes ---- */

static void bg_done(struct be_io *io, int res)
{
	struct mbg *g = io->priv;
	struct mirror_job *j = g->job;

	/* failed writes too: they may have landed partly */
	mirror_dirty_range(j, io->offset, io->length);
	io->done = g->done;
	io->priv = g->priv;
	free(g);
	atomic_fetch_sub(&j->bg_inflight, 1);
	io->done(io, res);
}

/* ---- the filter ---- */

static bool changes_data(enum be_op op)
{
	/* a COMPARE AND WRITE cannot reach here while the node is in the
	 * stack (caw_opaque), but one sent as the node went in may */
	return op == BE_OP_WRITE || op == BE_OP_UNMAP ||
	       op == BE_OP_WRITE_ZEROES || op == BE_OP_COMPARE_AND_WRITE;
}

static void mf_submit(struct backend *be, struct be_io *io, struct reactor *r)
{
	struct mirror_filter *f = be->priv;
	int route = atomic_load(&f->route);
	struct mirror_job *j = f->job;

	if (route == MF_DEST) {
		backend_submit(f->dest, io, r);
		return;
	}
	/* a flush goes to both sides in write-blocking mode only: the pivot
	 * flushes the destination itself before it switches */
	if (route == MF_SOURCE || (!changes_data(io->op) &&
				   (io->op != BE_OP_FLUSH || !atomic_load(&j->wb)))) {
		backend_submit(backend_inner(be), io, r);
		return;
	}
	/* count first, then read the mode: the pivot's convergence check
	 * (mode first, then this count) cannot miss a background write */
	atomic_fetch_add(&j->bg_inflight, 1);
	if (io->op != BE_OP_FLUSH && !atomic_load(&j->wb)) {
		struct mbg *g = malloc(sizeof(*g));

		if (g) {
			g->job = j;
			g->done = io->done;
			g->priv = io->priv;
			io->done = bg_done;
			io->priv = g;
			backend_submit(backend_inner(be), io, r);
			return;
		}
		atomic_fetch_sub(&j->bg_inflight, 1);
	} else {
		struct mwrite *w = calloc(1, sizeof(*w));

		atomic_fetch_sub(&j->bg_inflight, 1);
		if (w) {
			w->job = j;
			w->io = io;
			w->done = io->done;
			w->priv = io->priv;
			w->r = r;
			chunks_of(j, io, &w->c0, &w->c1);
			atomic_fetch_add(&j->wb_pending, 1);
			if (reactor_call(j->r, wb_arrive, w) == 0)
				return;
			atomic_fetch_sub(&j->wb_pending, 1);
			free(w);
		}
	}
	/* out of memory: this request cannot be followed, so the mirror can
	 * no longer be trusted: the source alone from now on, and the job
	 * fails at its next look (never switches) */
	atomic_store(&j->lost, true);
	atomic_store(&f->route, MF_SOURCE);
	backend_submit(backend_inner(be), io, r);
}

static int mf_open(struct backend *be, const struct backend_params *p,
		   const char **errmsg)
{
	struct mirror_filter *f;

	if (!p->inner) {
		*errmsg = "mirror filter: nothing to filter";
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	atomic_init(&f->route, MF_SOURCE);
	be->priv = f;
	be->inner = p->inner;
	be->size = p->inner->size;
	be->direct = p->inner->direct;
	be->caw_opaque = true;
	be->readonly = p->inner->readonly;
	return 0;
}

static void mf_close(struct backend *be)
{
	struct mirror_filter *f = be->priv;

	if (f && f->dest && !f->dest_handed)
		be_stack_node_close(f->dest);
	free(f);
	be->priv = NULL;
}

static struct backend *mf_target(struct backend *be)
{
	struct mirror_filter *f = be->priv;

	return atomic_load(&f->route) == MF_DEST ? f->dest : backend_inner(be);
}

static int mf_set_param(struct backend *be, const char *key, const char *val)
{
	struct backend *in = mf_target(be);

	return in->ops->set_param ? in->ops->set_param(in, key, val) : -ENOENT;
}

static int mf_describe(struct backend *be, char *buf, unsigned len)
{
	struct backend *in = mf_target(be);

	return in->ops->describe ? in->ops->describe(in, buf, len) : 0;
}

static int mf_block_status(struct backend *be, uint64_t offset, uint64_t len,
			   uint64_t *extent)
{
	struct backend *in = mf_target(be);

	if (!in->ops->block_status)
		return -EOPNOTSUPP;
	return in->ops->block_status(in, offset, len, extent);
}

static int mf_resize(struct backend *be, uint64_t size, const char **errmsg)
{
	(void)be;
	(void)size;
	*errmsg = "a mirror is running on the LUN: complete or cancel it first";
	return -EBUSY;
}

const struct backend_ops cbt_mirror_filter_ops = {
	.name = "mirror",
	.filter = true,
	.open = mf_open,
	.close = mf_close,
	.submit = mf_submit,
	.set_param = mf_set_param,
	.describe = mf_describe,
	.block_status = mf_block_status,
	.resize = mf_resize,
};

