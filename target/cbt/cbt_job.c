/* cbt_job.c - backup jobs (cbt_job.h).
 *
 * Everything a job does runs on its reactor (job->r): the background
 * scan, chunk copies (read from the node below the filter, write to the
 * destination), copy-before-write requests handed over by other
 * reactors, pause/resume/cancel requests from the management thread.
 * Only the copied/todo bitmaps (atomic bits) and the counters are read
 * from elsewhere.  The job table is guarded by one mutex. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbt_filter.h"
#include "cbt_job.h"
#include "cbt_set.h"
#include "qcow2_writer.h"
#include "reactor.h"
#include "util.h"

struct cbt_job;

/* One chunk copy in flight. */
struct job_copy {
	struct cbt_job *job;
	struct be_io io;
	struct iovec iov;
	void *buf;
	uint64_t unit;		/* unit index */
	uint64_t off, len;
	uint64_t dest_off;	/* where the data goes in the destination */
	bool background;
	bool writing;
	bool early;		/* read before the point in time was drained */
	bool held;		/* destination failing: retrying (dest_retry_ms) */
	struct ev_timer retry;
	uint64_t first_fail_ms, first_wfail_ms;
};

/* A guest write waiting for copies before it may go to the store. */
struct job_cbw_req {
	struct list_head link;
	struct cbt_job *job;
	struct backend *filter;
	struct be_io *io;
	struct reactor *r;
	uint64_t first, last;	/* units */
	bool snap_read;		/* a snapshot read, not a guest write */
};

struct cbt_job {
	struct list_head link;	/* in the job table */
	unsigned id;
	struct cbt_job_params p;
	struct cbt_cbw cbw;
	struct reactor *r;	/* where everything of the job runs */
	struct cbt_set *set;
	struct cbt_bitmap *bitmap;	/* frozen, or NULL */
	struct backend *dest;	/* file backend on the target */
	struct qcow2w *q;
	uint64_t size, unit;
	struct cbt_bitmap *todo, *copied, *busy;	/* unit granularity */
	/* the old data was read (it is in memory or in the destination):
	 * a guest write may go on; a snapshot read waits for copied */
	struct cbt_bitmap *captured;
	/* the bitmap's bits at the point in time (for show; immutable) */
	struct cbt_bitmap *pit;
	atomic_bool drained;	/* writes from before the point in time are done */
	unsigned held_copies;	/* copies retrying a failing destination */
	uint64_t held_bytes;
	bool cbw_deferred;	/* guest writes wait for room (CBT_JOB_HOLD_MAX) */
	char hold_error[128];
	bool snap_success;	/* a snapshot ended by its owner, not by failure */
	uint64_t cursor;	/* next unit the background scan looks at */
	unsigned inflight_bg, inflight_all;
	struct list_head cbw_waiting;
	struct ev_timer rate_timer;
	bool rate_timer_armed;
	atomic_int state;	/* enum cbt_job_state */
	atomic_int refs;	/* the table + snapshot nodes */
	bool cancel_req, failing, finished;
	atomic_uint_fast64_t bytes_done;
	uint64_t bytes_total;	/* __atomic: holes leave it on the reactor */
	uint64_t bytes_holes;
	uint64_t start_ms, end_ms, pause_started_ms, paused_ms;
	char error[128];
};

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;
static struct list_head jobs = LIST_HEAD_INIT(jobs);
static unsigned jobs_next_id = 1;

static struct reactor **job_reactors;
static int job_nreactors;

void cbt_job_reactors_set(struct reactor **r, int n)
{
	job_reactors = r;
	job_nreactors = n;
}

struct reactor *cbt_job_reactor_for(uint64_t lun)
{
	return job_nreactors ? job_reactors[lun % (uint64_t)job_nreactors] : NULL;
}

const char *cbt_job_state_name(enum cbt_job_state s)
{
	static const char *const names[] = {
		[CBT_JOB_RUNNING] = "running",
		[CBT_JOB_PAUSED] = "paused",
		[CBT_JOB_COMPLETED] = "completed",
		[CBT_JOB_FAILED] = "failed",
		[CBT_JOB_CANCELLED] = "cancelled",
	};

	return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "?";
}

static bool job_terminal(const struct cbt_job *j)
{
	int s = atomic_load(&j->state);

	return s == CBT_JOB_COMPLETED || s == CBT_JOB_FAILED ||
	       s == CBT_JOB_CANCELLED;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void job_pump(struct cbt_job *j);

/* Does unit u still need its old data copied? */
static bool unit_pending(const struct cbt_job *j, uint64_t u)
{
	return cbt_bitmap_test_chunk(j->todo, u) &&
	       !cbt_bitmap_test_chunk(j->copied, u);
}

/* Must a guest write to unit u still wait (its old data not yet read)? */
static bool unit_uncaptured(const struct cbt_job *j, uint64_t u)
{
	return cbt_bitmap_test_chunk(j->todo, u) &&
	       !cbt_bitmap_test_chunk(j->captured, u);
}

/* Most bytes of old data held in memory for a failing destination before
 * guest writes to chunks not yet read wait for room. */
#define CBT_JOB_HOLD_MAX (64ull << 20)

/* ---- copy-before-write ---- */

static void snap_read_go(struct job_cbw_req *req);

static void cbw_resume(void *arg)
{
	struct job_cbw_req *req = arg;

	if (req->snap_read) {
		snap_read_go(req);
		return;
	}
	cbt_filter_resume(req->filter, req->io, req->r);
	free(req);
}

static void cbw_release(struct job_cbw_req *req)
{
	list_del(&req->link);
	if (reactor_call(req->r, cbw_resume, req) < 0)
		/* cannot reach its reactor: go on from here (the store
		 * completes on req->r as asked) */
		cbw_resume(req);
}

static bool cbw_req_ready(const struct cbt_job *j, const struct job_cbw_req *req)
{
	for (uint64_t u = req->first; u <= req->last; u++)
		if (req->snap_read ? unit_pending(j, u) : unit_uncaptured(j, u))
			return false;
	return true;
}

/* Release every waiting request that may go on now. */
static void cbw_release_ready(struct cbt_job *j)
{
	struct job_cbw_req *req, *tmp;

	list_for_each_entry_safe(req, tmp, &j->cbw_waiting, link)
		if (cbw_req_ready(j, req))
			cbw_release(req);
}

static void job_copy_start(struct cbt_job *j, uint64_t u, bool background);

/* On the job's reactor: a guest write wants to go on. */
static void cbw_arrive(void *arg)
{
	struct job_cbw_req *req = arg;
	struct cbt_job *j = req->job;

	list_init(&req->link);
	list_add_tail(&req->link, &j->cbw_waiting);
	if (j->finished || j->failing) {
		cbw_release(req);
		return;
	}
	if (!req->snap_read && j->held_bytes >= CBT_JOB_HOLD_MAX) {
		/* the destination is failing and memory holds enough old
		 * data: wait until a held copy lands (job_pump) */
		j->cbw_deferred = true;
		return;
	}
	for (uint64_t u = req->first; u <= req->last; u++)
		if (unit_pending(j, u) && !cbt_bitmap_test_chunk(j->busy, u))
			job_copy_start(j, u, false);
	if (cbw_req_ready(j, req))
		cbw_release(req);
}

/* Start the copies deferred guest writes wait for, once there is room. */
static void cbw_kick_deferred(struct cbt_job *j)
{
	struct job_cbw_req *req, *tmp;

	if (!j->cbw_deferred || j->held_bytes >= CBT_JOB_HOLD_MAX)
		return;
	j->cbw_deferred = false;
	list_for_each_entry_safe(req, tmp, &j->cbw_waiting, link) {
		for (uint64_t u = req->first; u <= req->last; u++)
			if (unit_pending(j, u) && !cbt_bitmap_test_chunk(j->busy, u))
				job_copy_start(j, u, false);
		if (cbw_req_ready(j, req))
			cbw_release(req);
	}
}

/* Any reactor: called by the filter for every data-changing request. */
static bool job_before_write(struct cbt_cbw *c, struct backend *filter,
			     struct be_io *io, struct reactor *r)
{
	struct cbt_job *j = container_of(c, struct cbt_job, cbw);
	struct job_cbw_req *req;
	uint64_t first, last;
	bool need = false;

	if (!io->length || io->offset >= j->size || job_terminal(j))
		return false;
	first = io->offset / j->unit;
	last = (MIN(io->offset + io->length, j->size) - 1) / j->unit;
	for (uint64_t u = first; u <= last && !need; u++)
		need = unit_uncaptured(j, u);
	if (!need)
		return false;
	req = calloc(1, sizeof(*req));
	if (!req)
		return false;	/* cannot wait: the backup may see the write */
	req->job = j;
	req->filter = filter;
	req->io = io;
	req->r = r;
	req->first = first;
	req->last = last;
	if (reactor_call(j->r, cbw_arrive, req) < 0) {
		free(req);
		return false;
	}
	return true;
}

/* ---- ending ---- */

static void job_log_end(struct cbt_job *j)
{
	int s = atomic_load(&j->state);

	if (s == CBT_JOB_COMPLETED)
		log_info("job %u: backup of tid %d lun %llu to %s completed: %llu bytes in %llu ms",
			 j->id, j->p.tid, (unsigned long long)j->p.lun, j->p.target,
			 (unsigned long long)atomic_load(&j->bytes_done),
			 (unsigned long long)(j->end_ms - j->start_ms));
	else
		log_warn("job %u: backup of tid %d lun %llu to %s %s: %s", j->id,
			 j->p.tid, (unsigned long long)j->p.lun, j->p.target,
			 cbt_job_state_name(s), j->error);
}

/* The chunks of the bitmap whose every unit was copied. */
static struct cbt_bitmap *copied_chunks(struct cbt_job *j)
{
	struct cbt_bitmap *b = j->bitmap, *c;
	uint64_t per = b->granularity / j->unit;

	c = cbt_bitmap_new("copied", b->size, b->granularity, true);
	if (!c)
		return NULL;
	for (uint64_t chunk = 0; chunk < b->nchunks; chunk++) {
		bool all = true;

		for (uint64_t k = 0; k < per && all; k++) {
			uint64_t u = chunk * per + k;

			if (u * j->unit >= j->size)
				break;
			all = cbt_bitmap_test_chunk(j->copied, u);
		}
		if (all)
			cbt_bitmap_set_range(c, chunk * b->granularity, 1);
	}
	return c;
}

static void job_finish(struct cbt_job *j)
{
	bool success = !j->failing || j->snap_success;
	struct job_cbw_req *req, *tmp;
	int err = 0;

	cbt_filter_cbw_remove(j->p.filter, &j->cbw);
	if (success && j->q) {
		err = qcow2w_finish(j->q);
		j->q = NULL;
		if (err) {
			snprintf(j->error, sizeof(j->error),
				 "writing the qcow2 metadata: %s", strerror(-err));
			success = false;
		}
	} else if (j->q) {
		qcow2w_abort(j->q);
		j->q = NULL;
	} else if (success && !j->p.store_snap) {
		int fd = open(j->p.target, O_WRONLY | O_CLOEXEC);

		if (fd < 0 || fsync(fd) < 0) {
			snprintf(j->error, sizeof(j->error), "syncing the destination: %s",
				 strerror(errno));
			success = false;
		}
		if (fd >= 0)
			close(fd);
	}
	if (j->dest && !j->p.snapshot) {	/* snapshot: at job_free */
		j->dest->ops->close(j->dest);
		free(j->dest);
		j->dest = NULL;
	}
	if (j->bitmap && j->p.snapshot) {
		/* the consumer of a snapshot read all of it, or none: an
		 * ended snapshot consumed the frozen bits, a failed one
		 * keeps them */
		cbt_bitmap_reclaim(j->bitmap, j->p.mode == CBT_MODE_ALWAYS
				   ? CBT_MODE_ON_SUCCESS : j->p.mode, success, NULL);
		cbt_set_save_async(j->set);
	} else if (j->bitmap) {
		struct cbt_bitmap *c = copied_chunks(j);

		/* without memory for the copied map, "always" keeps
		 * everything (merging back is always safe) */
		cbt_bitmap_reclaim(j->bitmap, c ? j->p.mode : CBT_MODE_NEVER,
				   success, c);
		cbt_bitmap_free(c);
		cbt_set_save_async(j->set);
	}
	list_for_each_entry_safe(req, tmp, &j->cbw_waiting, link)
		cbw_release(req);
	j->end_ms = now_ms();
	j->finished = true;
	pthread_mutex_lock(&jobs_lock);
	if (success)
		atomic_store(&j->state, CBT_JOB_COMPLETED);
	else
		atomic_store(&j->state, j->cancel_req ? CBT_JOB_CANCELLED
						      : CBT_JOB_FAILED);

	pthread_cond_broadcast(&jobs_cond);
	pthread_mutex_unlock(&jobs_lock);
	job_log_end(j);
}

static void job_fail(struct cbt_job *j, const char *what, int err)
{
	if (j->failing)
		return;
	j->failing = true;
	if (err)
		snprintf(j->error, sizeof(j->error), "%s: %s", what, strerror(-err));
	else
		snprintf(j->error, sizeof(j->error), "%s", what);
}

/* ---- chunk copies ---- */

static void copy_free(struct job_copy *c)
{
	struct cbt_job *j = c->job;

	if (c->held) {
		j->held_copies--;
		j->held_bytes -= c->len;
	}
	cbt_bitmap_reset_range(j->busy, c->unit * j->unit, 1);
	j->inflight_all--;
	if (c->background)
		j->inflight_bg--;
	free(c->buf);
	free(c);
}

static void copy_done_unit(struct cbt_job *j, struct job_copy *c)
{
	cbt_bitmap_set_range(j->captured, c->off, 1);
	cbt_bitmap_set_range(j->copied, c->off, 1);
	atomic_fetch_add(&j->bytes_done, c->len);
	cbw_release_ready(j);
}

static void copy_write_submit(struct job_copy *c);

static void copy_wretry_fire(struct ev_timer *t)
{
	struct job_copy *c = t->arg;
	struct cbt_job *j = c->job;

	if (j->failing) {
		copy_free(c);
		job_pump(j);
		return;
	}
	copy_write_submit(c);
}

/* on_target_error=retry: keep the data and try again later?  True when
 * the write was rescheduled. */
static bool copy_write_hold(struct cbt_job *j, struct job_copy *c, int res)
{
	uint64_t now = now_ms();

	if (j->failing || !j->p.dest_retry_ms)
		return false;
	if (!c->first_wfail_ms)
		c->first_wfail_ms = now;
	if (j->p.dest_timeout_ms && now - c->first_wfail_ms >= j->p.dest_timeout_ms)
		return false;
	if (!c->held) {
		c->held = true;
		if (!j->held_copies++)
			log_warn("job %u: writing %s failed (%s): holding, retrying every %u ms",
				 j->id, j->p.target, strerror(-res), j->p.dest_retry_ms);
		j->held_bytes += c->len;
	}
	pthread_mutex_lock(&jobs_lock);	/* show reads it under the lock */
	snprintf(j->hold_error, sizeof(j->hold_error), "holding: writing the destination: %s",
		 strerror(-res));
	pthread_mutex_unlock(&jobs_lock);
	memset(&c->retry, 0, sizeof(c->retry));
	reactor_timer_add(j->r, &c->retry, j->p.dest_retry_ms, copy_wretry_fire, c);
	return true;
}

static void copy_write_done(struct be_io *io, int res)
{
	struct job_copy *c = io->priv;
	struct cbt_job *j = c->job;

	if (res < 0 && copy_write_hold(j, c, res))
		return;
	if (res < 0) {
		job_fail(j, c->held ? "writing the destination (retry_timeout passed)"
				    : "writing the destination", res);
	} else {
		copy_done_unit(j, c);
		if (c->held && j->held_copies == 1) {
			log_info("job %u: %s writable again", j->id, j->p.target);
			pthread_mutex_lock(&jobs_lock);
			j->hold_error[0] = '\0';
			pthread_mutex_unlock(&jobs_lock);
		}
	}
	copy_free(c);
	job_pump(j);
}

/* The old data of c is read: guest writes waiting for it may go on.  A
 * read from before the point in time was drained may have missed a
 * write that was then still on its way to the store: its chunk stays
 * dirty for the next backup (it is marked in the frozen bitmap's
 * successor), so the bitmap never loses a write. */
static void copy_captured(struct cbt_job *j, struct job_copy *c)
{
	if (c->early && j->bitmap)
		cbt_bitmap_mark(j->bitmap, c->off, c->len);
	cbt_bitmap_set_range(j->captured, c->off, 1);
	cbw_release_ready(j);
}

static void copy_read_start(struct job_copy *c);

static void copy_retry_fire(struct ev_timer *t)
{
	copy_read_start(t->arg);
}

/* Is the buffer all zeroes? */
static bool buf_is_zero(const void *buf, uint64_t len)
{
	const uint64_t *p = buf;

	for (uint64_t i = 0; i < len / 8; i++)
		if (p[i])
			return false;
	return true;
}

static void copy_read_done(struct be_io *io, int res)
{
	struct job_copy *c = io->priv;
	struct cbt_job *j = c->job;
	uint64_t dest_off = c->off;
	int err = 0;

	if (res < 0) {
		uint64_t now = now_ms();

		if (!c->first_fail_ms)
			c->first_fail_ms = now;
		if (!j->failing && j->p.src_retry_ms &&
		    (!j->p.src_timeout_ms ||
		     now - c->first_fail_ms < j->p.src_timeout_ms)) {
			memset(&c->retry, 0, sizeof(c->retry));
			reactor_timer_add(j->r, &c->retry, j->p.src_retry_ms,
					  copy_retry_fire, c);
			return;
		}
		job_fail(j, "reading the LUN", res);
		copy_free(c);
		job_pump(j);
		return;
	}
	if (j->failing) {
		copy_free(c);
		job_pump(j);
		return;
	}
	copy_captured(j, c);
	/* zeroes need no data: a raw destination is sparse, a qcow2 one
	 * gets a zero cluster (which also hides its backing file) */
	if (buf_is_zero(c->buf, c->len)) {
		if (j->q) {
			err = qcow2w_zero(j->q, c->off, c->len);
			if (err)
				job_fail(j, "qcow2 zero cluster", err);
		}
		if (!err)
			copy_done_unit(j, c);
		copy_free(c);
		job_pump(j);
		return;
	}
	if (j->q) {
		err = qcow2w_map(j->q, c->off, &dest_off);
		if (err) {
			job_fail(j, "qcow2 allocation", err);
			copy_free(c);
			job_pump(j);
			return;
		}
	}
	c->dest_off = dest_off;
	copy_write_submit(c);
}

static void copy_write_submit(struct job_copy *c)
{
	struct cbt_job *j = c->job;

	c->writing = true;
	memset(&c->io, 0, sizeof(c->io));
	c->io.op = BE_OP_WRITE;
	c->io.offset = c->dest_off;
	c->io.length = c->len;
	c->iov.iov_base = c->buf;
	c->iov.iov_len = c->len;
	c->io.iov = &c->iov;
	c->io.iovcnt = 1;
	c->io.done = copy_write_done;
	c->io.priv = c;
	backend_submit(j->dest, &c->io, j->r);
}

static void copy_read_start(struct job_copy *c)
{
	struct cbt_job *j = c->job;

	c->early = !atomic_load(&j->drained);
	memset(&c->io, 0, sizeof(c->io));
	c->io.op = BE_OP_READ;
	c->io.offset = c->off;
	c->io.length = c->len;
	c->iov.iov_base = c->buf;
	c->iov.iov_len = c->len;
	c->io.iov = &c->iov;
	c->io.iovcnt = 1;
	c->io.done = copy_read_done;
	c->io.priv = c;
	/* the node below the filter, as the stack publishes it now */
	backend_submit(backend_inner(j->p.filter), &c->io, j->r);
}

static void job_copy_start(struct cbt_job *j, uint64_t u, bool background)
{
	struct job_copy *c = calloc(1, sizeof(*c));
	uint64_t off = u * j->unit;

	if (!c || posix_memalign(&c->buf, 4096, j->unit)) {
		free(c);
		job_fail(j, "out of memory", -ENOMEM);
		return;
	}
	c->job = j;
	c->unit = u;
	c->off = off;
	c->len = MIN(j->unit, j->size - off);
	c->background = background;
	cbt_bitmap_set_range(j->busy, off, 1);
	j->inflight_all++;
	if (background)
		j->inflight_bg++;
	copy_read_start(c);
}

/* ---- the background scan ---- */

static void rate_timer_fire(struct ev_timer *t)
{
	struct cbt_job *j = t->arg;

	j->rate_timer_armed = false;
	job_pump(j);
}

/* How long to wait before the next background copy to honour the rate
 * limit (ms, 0 = go). */
static uint64_t rate_delay(struct cbt_job *j)
{
	uint64_t elapsed, allowed;

	if (!j->p.rate_limit)
		return 0;
	elapsed = now_ms() - j->start_ms - j->paused_ms;
	allowed = j->p.rate_limit * elapsed / 1000 + j->unit;
	if (atomic_load(&j->bytes_done) < allowed)
		return 0;
	return (atomic_load(&j->bytes_done) - allowed) * 1000 / j->p.rate_limit + 1;
}

static void job_pump(struct cbt_job *j)
{
	if (j->finished)
		return;
	if (j->cancel_req && !j->failing)
		job_fail(j, "cancelled", 0);
	if (j->failing) {
		if (!j->inflight_all)
			job_finish(j);
		return;
	}
	cbw_kick_deferred(j);
	while (!j->p.snapshot && j->inflight_bg < CBT_JOB_INFLIGHT &&
	       atomic_load(&j->state) == CBT_JOB_RUNNING && !j->failing) {
		uint64_t off = j->cursor * j->unit, len, d;

		if (!cbt_bitmap_next_extent(j->todo, &off, &len, true)) {
			j->cursor = j->todo->nchunks;
			break;
		}
		j->cursor = off / j->unit;
		if (cbt_bitmap_test_chunk(j->copied, j->cursor) ||
		    cbt_bitmap_test_chunk(j->busy, j->cursor)) {
			j->cursor++;
			continue;
		}
		d = rate_delay(j);
		if (d) {
			if (!j->rate_timer_armed) {
				j->rate_timer_armed = true;
				reactor_timer_add(j->r, &j->rate_timer, d,
						  rate_timer_fire, j);
			}
			return;
		}
		job_copy_start(j, j->cursor, true);
		j->cursor++;
	}
	if (!j->p.snapshot && j->cursor >= j->todo->nchunks &&
	    !j->inflight_all && !j->failing)
		job_finish(j);
}

/* ---- control (management thread -> job reactor) ---- */

static void job_kick(void *arg)
{
	job_pump(arg);
}

static struct cbt_job *job_find(unsigned id)
{
	struct cbt_job *j;

	list_for_each_entry(j, &jobs, link)
		if (j->id == id)
			return j;
	return NULL;
}

/* The job id names if it has not ended, with jobs_lock held; NULL with
 * *err = -ENOENT (no such job) or -EINVAL (it has ended). */
static struct cbt_job *job_live_locked(unsigned id, int *err)
{
	struct cbt_job *j = job_find(id);

	*err = !j ? -ENOENT : job_terminal(j) ? -EINVAL : 0;
	return *err ? NULL : j;
}

static void job_snap_end_on_reactor(void *arg)
{
	struct cbt_job *j = arg;

	if (j->finished)
		return;
	j->snap_success = !j->failing;
	j->cancel_req = true;
	job_pump(j);
}

int cbt_job_snapshot_end(unsigned id)
{
	struct cbt_job *j;
	int err = 0;

	pthread_mutex_lock(&jobs_lock);
	j = job_live_locked(id, &err);
	if (j && !j->p.snapshot)
		err = -EINVAL;
	pthread_mutex_unlock(&jobs_lock);
	if (!err)
		err = reactor_call(j->r, job_snap_end_on_reactor, j);
	return err;
}

int cbt_job_extents(unsigned id, void (*fn)(uint64_t off, uint64_t len,
					    void *arg), void *arg)
{
	struct cbt_job *j;
	uint64_t off = 0, len;
	int err = 0;

	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (!j)
		err = -ENOENT;
	else if (!j->pit)
		err = -EINVAL;
	else
		while (cbt_bitmap_next_extent(j->pit, &off, &len, true)) {
			fn(off, len, arg);
			off += len;
		}
	pthread_mutex_unlock(&jobs_lock);
	return err;
}

int cbt_job_pause(unsigned id, bool pause)
{
	struct cbt_job *j;
	int err = 0;

	pthread_mutex_lock(&jobs_lock);
	j = job_live_locked(id, &err);
	if (!err && j->cancel_req)
		err = -EINVAL;
	if (!err && pause && atomic_load(&j->state) == CBT_JOB_RUNNING) {
		j->pause_started_ms = now_ms();
		atomic_store(&j->state, CBT_JOB_PAUSED);
	} else if (!err && !pause &&
		   atomic_load(&j->state) == CBT_JOB_PAUSED) {
		j->paused_ms += now_ms() - j->pause_started_ms;
		atomic_store(&j->state, CBT_JOB_RUNNING);
	}
	pthread_mutex_unlock(&jobs_lock);
	if (!err && !pause)
		reactor_call(j->r, job_kick, j);
	return err;
}

static void job_cancel_on_reactor(void *arg)
{
	struct cbt_job *j = arg;

	j->cancel_req = true;
	job_pump(j);
}

int cbt_job_cancel(unsigned id)
{
	struct cbt_job *j;
	int err = 0;

	pthread_mutex_lock(&jobs_lock);
	j = job_live_locked(id, &err);
	if (j && atomic_load(&j->state) == CBT_JOB_PAUSED) {
		j->paused_ms += now_ms() - j->pause_started_ms;
		atomic_store(&j->state, CBT_JOB_RUNNING);
	}
	pthread_mutex_unlock(&jobs_lock);
	if (!err)
		err = reactor_call(j->r, job_cancel_on_reactor, j);
	return err;
}

static void job_free(struct cbt_job *j)
{
	if (j->dest) {
		j->dest->ops->close(j->dest);
		free(j->dest);
	}
	cbt_bitmap_free(j->todo);
	cbt_bitmap_free(j->copied);
	cbt_bitmap_free(j->busy);
	cbt_bitmap_free(j->captured);
	cbt_bitmap_free(j->pit);
	if (j->p.release)
		j->p.release(j->p.release_arg);
	free(j);
}

/* ---- grace period ---- */

struct barrier {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int left;
};

static void barrier_arrive(void *arg)
{
	struct barrier *b = arg;

	pthread_mutex_lock(&b->lock);
	if (--b->left == 0)
		pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

/* Run a no-op through each of rs[] and wait for all of them.  A reactor
 * runs calls between callbacks, so once it ran ours, no submit() that
 * started before is still running there (an RCU-style grace period).
 * Calls to one reactor run in the order they were queued. */
static void barrier_run(struct reactor **rs, int n)
{
	struct barrier b = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };

	pthread_mutex_lock(&b.lock);
	for (int i = 0; i < n; i++)
		if (reactor_current() != rs[i] && reactor_call(rs[i], barrier_arrive, &b) == 0)
			b.left++;
	while (b.left)
		pthread_cond_wait(&b.cond, &b.lock);
	pthread_mutex_unlock(&b.lock);
}

void cbt_reactors_quiesce(void)
{
	if (job_nreactors)
		barrier_run(job_reactors, job_nreactors);
}

int cbt_job_dismiss(unsigned id)
{
	struct cbt_job *j;

	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (!j || !job_terminal(j)) {
		pthread_mutex_unlock(&jobs_lock);
		return j ? -EBUSY : -ENOENT;
	}
	list_del(&j->link);
	pthread_mutex_unlock(&jobs_lock);
	/* The hook was removed when the job ended, but a reactor may have
	 * loaded it just before and be inside job_before_write(), or have
	 * queued a request to the job's reactor.  Wait out every reactor
	 * (nobody is still inside a submit that saw the hook), then the
	 * job's own (it has run every request queued to it before). */
	cbt_reactors_quiesce();
	barrier_run(&j->r, 1);
	if (atomic_fetch_sub(&j->refs, 1) == 1)
		job_free(j);
	return 0;
}

/* ---- snapshot export node ---- */

struct snap_node {
	struct cbt_job *job;
};

static void snap_read_go(struct job_cbw_req *req)
{
	struct cbt_job *j = req->job;

	/* a failed or cancelled snapshot can no longer tell old from new */
	if (!cbw_req_ready(j, req))
		backend_complete_later(req->r, req->io, -EIO);
	else
		backend_submit(j->dest, req->io, req->r);
	free(req);
}

static void snap_submit(struct backend *be, struct be_io *io, struct reactor *r)
{
	struct cbt_job *j = ((struct snap_node *)be->priv)->job;
	struct job_cbw_req *req;
	uint64_t first, last;
	bool need = false;

	if (io->op == BE_OP_FLUSH) {
		backend_complete_later(r, io, 0);
		return;
	}
	if (io->op != BE_OP_READ) {
		backend_complete_later(r, io, -EROFS);
		return;
	}
	if (!io->length || io->offset >= j->size ||
	    io->length > j->size - io->offset) {
		backend_complete_later(r, io, -EINVAL);
		return;
	}
	first = io->offset / j->unit;
	last = (io->offset + io->length - 1) / j->unit;
	for (uint64_t u = first; u <= last && !need; u++)
		need = unit_pending(j, u);
	req = calloc(1, sizeof(*req));
	if (!req) {
		backend_complete_later(r, io, -ENOMEM);
		return;
	}
	req->job = j;
	req->io = io;
	req->r = r;
	req->first = first;
	req->last = last;
	req->snap_read = true;
	/* copied already: straight to the scratch file; otherwise the job
	 * copies first (copy-on-read), as it would for a guest write */
	if (!need)
		snap_read_go(req);
	else if (reactor_call(j->r, cbw_arrive, req) < 0) {
		free(req);
		backend_complete_later(r, io, -ENOMEM);
	}
}

static int snap_open(struct backend *be, const struct backend_params *p,
		     const char **errmsg)
{
	(void)be;
	(void)p;
	*errmsg = "a snapshot node is made by cbt_snap_node_new()";
	return -EINVAL;
}

static void snap_close(struct backend *be)
{
	struct snap_node *n = be->priv;

	if (atomic_fetch_sub(&n->job->refs, 1) == 1)
		job_free(n->job);
	free(n);
	be->priv = NULL;
}

static int snap_describe(struct backend *be, char *buf, unsigned len)
{
	struct snap_node *n = be->priv;

	return snprintf(buf, len, "snapshot of tid %d lun %llu (job %u)",
			n->job->p.tid, (unsigned long long)n->job->p.lun,
			n->job->id);
}

static const struct backend_ops cbt_snap_ops = {
	.name = "snapshot",
	.open = snap_open,
	.close = snap_close,
	.submit = snap_submit,
	.describe = snap_describe,
};

int cbt_snap_node_new(unsigned id, struct backend **out)
{
	struct backend *be = calloc(1, sizeof(*be));
	struct snap_node *n = calloc(1, sizeof(*n));
	struct cbt_job *j;
	int err = 0;

	if (!be || !n) {
		free(be);
		free(n);
		return -ENOMEM;
	}
	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (!j)
		err = -ENOENT;
	else if (!j->p.snapshot || job_terminal(j))
		err = -EINVAL;
	else
		atomic_fetch_add(&j->refs, 1);
	pthread_mutex_unlock(&jobs_lock);
	if (err) {
		free(be);
		free(n);
		return err;
	}
	n->job = j;
	be->ops = &cbt_snap_ops;
	be->priv = n;
	be->size = j->size;
	be->direct = true;
	be->readonly = true;
	*out = be;
	return 0;
}

void cbt_snap_node_free(struct backend *be)
{
	if (!be)
		return;
	be->ops->close(be);
	free(be);
}

bool cbt_job_running_on(const struct backend *filter)
{
	struct cbt_job *j;
	bool found = false;

	pthread_mutex_lock(&jobs_lock);
	list_for_each_entry(j, &jobs, link)
		if (j->p.filter == filter && !job_terminal(j))
			found = true;
	pthread_mutex_unlock(&jobs_lock);
	return found;
}

static void job_info(struct cbt_job *j, struct cbt_job_info *i)
{
	uint64_t end = job_terminal(j) ? j->end_ms : now_ms();
	uint64_t elapsed = end - j->start_ms - j->paused_ms;

	memset(i, 0, sizeof(*i));
	i->id = j->id;
	i->type = j->p.snapshot ? "snapshot" : "backup";
	i->export_lun = j->p.export_lun;
	i->store_snap = j->p.store_snap;
	if (j->p.snapshot && !j->p.store_snap)
		snprintf(i->scratch, sizeof(i->scratch), "%s", j->p.target);
	i->tid = j->p.tid;
	i->lun = j->p.lun;
	i->state = atomic_load(&j->state);
	i->bytes_done = atomic_load(&j->bytes_done);
	i->bytes_total = __atomic_load_n(&j->bytes_total, __ATOMIC_RELAXED);
	i->bytes_holes = __atomic_load_n(&j->bytes_holes, __ATOMIC_RELAXED);
	i->rate_bps = elapsed ? i->bytes_done * 1000 / elapsed : 0;
	if (job_terminal(j))
		i->eta_s = 0;
	else if (i->rate_bps)
		i->eta_s = (int64_t)((i->bytes_total - MIN(i->bytes_done, i->bytes_total)) /
				     i->rate_bps);
	else
		i->eta_s = -1;
	if (job_terminal(j) && i->state != CBT_JOB_COMPLETED) {
		snprintf(i->error, sizeof(i->error), "%s", j->error);
	} else if (!job_terminal(j) && j->hold_error[0]) {
		i->holding = true;	/* jobs_lock held: written under it */
		snprintf(i->error, sizeof(i->error), "%s", j->hold_error);
	}
	snprintf(i->target, sizeof(i->target), "%.*s",
		 (int)sizeof(i->target) - 1, j->p.target);
	snprintf(i->bitmap, sizeof(i->bitmap), "%s", j->p.bitmap);
}

unsigned cbt_job_list(struct cbt_job_info *out, unsigned max)
{
	struct cbt_job *j;
	unsigned n = 0;

	pthread_mutex_lock(&jobs_lock);
	list_for_each_entry(j, &jobs, link) {
		if (n < max)
			job_info(j, &out[n]);
		n++;
	}
	pthread_mutex_unlock(&jobs_lock);
	return n;
}

int cbt_job_get(unsigned id, struct cbt_job_info *out)
{
	struct cbt_job *j;

	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (j)
		job_info(j, out);
	pthread_mutex_unlock(&jobs_lock);
	return j ? 0 : -ENOENT;
}

int cbt_job_wait(unsigned id, unsigned timeout_ms)
{
	struct timespec ts;
	struct cbt_job *j;
	int err = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&jobs_lock);
	while ((j = job_find(id)) && !job_terminal(j) && !err)
		err = pthread_cond_timedwait(&jobs_cond, &jobs_lock, &ts);
	pthread_mutex_unlock(&jobs_lock);
	if (!j)
		return -ENOENT;
	return err ? -ETIMEDOUT : 0;
}

/* ---- start ---- */

static int open_dest(struct cbt_job *j, const char **why)
{
	const struct backend_ops *file = backend_find("file");
	/* O_DIRECT where the filesystem has it (page-cache writeback is
	 * slower and evicts the guest's cache), buffered elsewhere (tmpfs);
	 * job_finish() syncs before it reports success either way */
	struct backend_params bp = { .path = j->p.target, .direct = true };
	int fd, err;

	if (j->p.format == CBT_FORMAT_QCOW2) {
		const char *bfmt = j->p.backing_format;
		struct qcow2w_params qp = { .size = j->size };

		qp.cluster_bits = (unsigned)__builtin_ctzll(j->unit);
		if (j->p.backing[0]) {
			size_t n = strlen(j->p.backing);

			if (!bfmt[0])
				bfmt = n > 6 && !strcmp(j->p.backing + n - 6, ".qcow2")
					       ? "qcow2" : "raw";
			qp.backing_file = j->p.backing;
			qp.backing_format = bfmt;
		}
		err = qcow2w_create(j->p.target, &qp, &j->q);
		if (err) {
			*why = "cannot create the qcow2 destination";
			return err;
		}
		/* room for every data cluster, so the file node accepts
		 * them; qcow2w_finish() trims the file to what it used */
		if (ftruncate(qcow2w_fd(j->q), (off_t)((j->size + 2 * j->unit - 1) /
						       j->unit * j->unit + j->unit)) < 0) {
			*why = "cannot size the qcow2 destination";
			return -errno;
		}
	} else {
		fd = open(j->p.target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || ftruncate(fd, (off_t)j->size) < 0) {
			err = -errno;
			if (fd >= 0)
				close(fd);
			*why = "cannot create the raw destination";
			return err;
		}
		close(fd);
	}
	j->dest = calloc(1, sizeof(*j->dest));
	if (!j->dest)
		return -ENOMEM;
	j->dest->ops = file;
	err = file->open(j->dest, &bp, why);
	if (err == -EINVAL) {
		bp.direct = false;
		err = file->open(j->dest, &bp, why);
	}
	if (err) {
		free(j->dest);
		j->dest = NULL;
	}
	return err;
}

/* The first node at or below be that reports block status. */
static struct backend *status_node(struct backend *be)
{
	for (; be; be = backend_inner(be))
		if (be->ops->block_status)
			return be;
	return NULL;
}

/* Mark [first, end) units (none busy, none copied) done without copying:
 * the source is a hole there, so the destination reads zeroes already
 * (a new raw file is sparse; a qcow2 image without backing file reads
 * unallocated clusters as zeroes; with one it gets zero clusters). */
static uint64_t skip_units(struct cbt_job *j, uint64_t first, uint64_t end)
{
	uint64_t off = first * j->unit;
	uint64_t len = MIN(end * j->unit, j->size) - off;

	if (j->q && j->p.backing[0] && qcow2w_zero(j->q, off, len))
		return 0;	/* then it is copied like data */
	cbt_bitmap_set_range(j->captured, off, len);
	cbt_bitmap_set_range(j->copied, off, len);
	return len;
}

/* sync=full (and snapshots): holes the store reports are not read.  Runs
 * on the job's reactor after the drain, so no write from before the point
 * in time is still on its way; a guest write since waits for its chunk's
 * copy (the chunk is pending), so a hole seen here was a hole at the
 * point in time. */
static void skip_holes(struct cbt_job *j)
{
	struct backend *st = status_node(backend_inner(j->p.filter));
	uint64_t off = 0, ext, skipped = 0, nunits = j->todo->nchunks;

	while (st && off < j->size) {
		int hole = st->ops->block_status(st, off, j->size - off, &ext);
		uint64_t first, end;

		if (hole < 0 || !ext)
			break;
		if (hole == 0) {
			first = (off + j->unit - 1) / j->unit;
			end = off + ext >= j->size ? nunits : (off + ext) / j->unit;
			/* skip busy or copied units (a guest write got there) */
			for (uint64_t u = first; u < end;) {
				uint64_t v = u;

				while (v < end && unit_pending(j, v) &&
				       !cbt_bitmap_test_chunk(j->busy, v))
					v++;
				if (v > u)
					skipped += skip_units(j, u, v);
				u = v == u ? u + 1 : v;
			}
		}
		off += ext;
	}
	if (skipped) {
		__atomic_store_n(&j->bytes_holes, skipped, __ATOMIC_RELAXED);
		__atomic_store_n(&j->bytes_total, j->bytes_total - skipped,
				 __ATOMIC_RELAXED);
		cbw_release_ready(j);
	}
}

static void job_start_on_reactor(void *arg)
{
	struct cbt_job *j = arg;

	/* undrained, a hole may still be filled by a write from before the
	 * point in time: read everything then */
	if (!j->p.sync_bitmap && atomic_load(&j->drained) && !j->p.store_snap)
		skip_holes(j);

	log_info("job %u: backup of tid %d lun %llu to %s started (%s, sync=%s%s%s, %llu bytes)",
		 j->id, j->p.tid, (unsigned long long)j->p.lun, j->p.target,
		 j->q ? "qcow2" : "raw", j->p.sync_bitmap ? "bitmap" : "full",
		 j->p.bitmap[0] ? ", bitmap=" : "", j->p.bitmap,
		 (unsigned long long)j->bytes_total);
	job_pump(j);
}

int cbt_job_backup_start(const struct cbt_job_params *p, unsigned *id,
			 const char **why)
{
	struct cbt_job *j;
	uint64_t unit, off = 0, len;
	uint32_t gran;
	int err;

	*why = NULL;
	if (!cbt_filter_is(p->filter) || !p->r) {
		*why = "the LUN has no changed-block tracking node";
		return -EINVAL;
	}
	if (p->sync_bitmap && !p->bitmap[0]) {
		*why = "sync=bitmap needs bitmap=NAME";
		return -EINVAL;
	}
	if (p->snapshot && (p->format != CBT_FORMAT_RAW || p->sync_bitmap)) {
		*why = "a snapshot takes a raw scratch file and no sync=bitmap";
		return -EINVAL;
	}
	if (p->store_snap && !p->snapshot) {
		*why = "a store snapshot is a snapshot job";
		return -EINVAL;
	}
	if (p->backing[0] && p->format != CBT_FORMAT_QCOW2) {
		*why = "backing= needs format=qcow2";
		return -EINVAL;
	}
	if (cbt_job_running_on(p->filter)) {
		*why = "a job already runs on this LUN";
		return -EBUSY;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->p = *p;
	j->p.release = NULL;	/* only once the job exists */
	j->set = cbt_filter_bitmaps(p->filter);
	j->size = p->filter->size;
	j->r = p->r;
	list_init(&j->cbw_waiting);
	atomic_init(&j->drained, false);
	j->cbw.before_write = job_before_write;
	/* without a bitmap nothing ties the copy unit to a chunk: copy in
	 * the largest unit (fewer, larger I/Os; a guest write then waits
	 * for at most one 1 MiB copy) */
	gran = CBT_JOB_UNIT_MAX;
	if (p->bitmap[0]) {
		j->bitmap = j->set ? cbt_set_find(j->set, p->bitmap) : NULL;
		if (!j->bitmap) {
			*why = "no such bitmap";
			err = -ENOENT;
			goto fail;
		}
		gran = j->bitmap->granularity;
		if (atomic_load(&j->bitmap->inconsistent) && p->sync_bitmap) {
			*why = "the bitmap is inconsistent: clear it and take a full backup";
			err = -EINVAL;
			goto fail;
		}
	}
	unit = MIN(gran, CBT_JOB_UNIT_MAX);
	j->unit = unit;
	j->todo = cbt_bitmap_new("todo", j->size, (uint32_t)unit, true);
	j->copied = cbt_bitmap_new("copied", j->size, (uint32_t)unit, true);
	j->busy = cbt_bitmap_new("busy", j->size, (uint32_t)unit, true);
	j->captured = cbt_bitmap_new("captured", j->size, (uint32_t)unit, true);
	if (!j->todo || !j->copied || !j->busy || !j->captured) {
		err = -ENOMEM;
		goto fail;
	}
	err = p->store_snap ? 0 : open_dest(j, why);
	if (err)
		goto fail;
	/* the point in time: freeze, fill the to-do list, hook in */
	if (j->bitmap) {
		if (atomic_load(&j->bitmap->inconsistent))	/* sync=full */
			cbt_bitmap_clear(j->bitmap);
		j->pit = cbt_bitmap_new(j->bitmap->name, j->size,
					j->bitmap->granularity, true);
		if (!j->pit) {
			err = -ENOMEM;
			goto fail_dest;
		}
		err = cbt_bitmap_freeze(j->bitmap);
		if (err) {
			*why = err == -EBUSY ? "the bitmap is busy" : "cannot freeze the bitmap";
			goto fail_dest;
		}
		cbt_bitmap_copy_from(j->pit, j->bitmap);
	}
	if (p->sync_bitmap) {
		while (cbt_bitmap_next_extent(j->bitmap, &off, &len, true)) {
			cbt_bitmap_set_range(j->todo, off, len);
			off += len;
		}
	} else {
		cbt_bitmap_set_range(j->todo, 0, j->size);
	}
	j->bytes_total = cbt_bitmap_dirty_bytes(j->todo);
	/* a store snapshot copies nothing before writes: no hook */
	err = p->store_snap ? 0 : cbt_filter_cbw_install(p->filter, &j->cbw);
	if (err) {
		*why = "a job already runs on this LUN";
		if (j->bitmap)
			cbt_bitmap_reclaim(j->bitmap, CBT_MODE_NEVER, false, NULL);
		goto fail_dest;
	}
	atomic_init(&j->state, CBT_JOB_RUNNING);
	atomic_init(&j->refs, 1);
	atomic_init(&j->bytes_done, 0);
	j->start_ms = now_ms();
	/* The hook is in: every write from now on waits for its chunk's
	 * copy.  Writes that passed the node just before may still be on
	 * their way to the store; wait for them before the background copy
	 * reads anything (copies a guest write asks for meanwhile are
	 * "early": copy_captured() keeps their chunks dirty). */
	if (p->drain && p->drain(p->drain_arg)) {
		if (p->store_snap) {
			/* the store's snapshot could miss a write the
			 * frozen bits hold: no point in time to offer */
			*why = "writes in flight did not finish; try again";
			if (j->bitmap)
				cbt_bitmap_reclaim(j->bitmap, CBT_MODE_NEVER,
						   false, NULL);
			err = -EBUSY;
			goto fail_dest;
		}
		log_warn("tid %d lun %llu: writes in flight at the point in time did not finish; "
			 "the bitmap keeps every chunk this job copies",
			 p->tid, (unsigned long long)p->lun);
	} else {
		atomic_store(&j->drained, true);
	}
	j->p.release = p->release;
	pthread_mutex_lock(&jobs_lock);
	j->id = jobs_next_id++;
	list_add_tail(&j->link, &jobs);
	pthread_mutex_unlock(&jobs_lock);
	*id = j->id;
	if (reactor_call(j->r, job_start_on_reactor, j) < 0) {
		/* the job exists: let it fail through the normal path */
		log_err("job %u: cannot reach its reactor", j->id);
	}
	return 0;

fail_dest:
	if (j->q)
		qcow2w_abort(j->q);
	if (j->dest) {
		j->dest->ops->close(j->dest);
		free(j->dest);
	}
fail:
	cbt_bitmap_free(j->todo);
	cbt_bitmap_free(j->copied);
	cbt_bitmap_free(j->busy);
	cbt_bitmap_free(j->captured);
	cbt_bitmap_free(j->pit);
	free(j);
	if (!*why)
		*why = "cannot start the job";
	return err;
}

unsigned cbt_job_id_next(void)
{
	unsigned id;

	pthread_mutex_lock(&jobs_lock);
	id = jobs_next_id++;
	pthread_mutex_unlock(&jobs_lock);
	return id;
}
