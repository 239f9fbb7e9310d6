/* cbt_mirror.c - mirror jobs (cbt_mirror.h); the filter node and the guest
 * data path are in cbt_mirror_filter.c.
 *
 * Threads.  Guest requests enter the filter on any reactor.  Background
 * writes stay there (one atomic bitmap OR at completion).  Everything else
 * runs on the job's reactor (job->r): copies, write-blocking writes (the
 * filter hands them over with reactor_call and they complete back on their
 * own reactor), the destination throttle, the periodic tick (rate, ready,
 * auto switch), and the pivot point.  The management thread starts,
 * switches, completes, cancels and deletes jobs; the job table is one
 * mutex and one condition variable.
 *
 * Why dirty bits are set at completion and cleared at copy start: a
 * background write W and a copy C of its chunk race.  If W completes
 * before C clears the bit, C's read comes after W landed.  If not, W's
 * completion sets the bit again after C cleared it, and the chunk is
 * copied once more.  Either way no acknowledged write is missed.
 *
 * Why write-blocking writes and copies exclude each other per chunk: a
 * mirrored write does not dirty its chunk, so a copy that read the
 * source before the write landed and writes the destination after it
 * would leave stale data behind with a clean bit. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "cbt_job.h"
#include "cbt_mirror_internal.h"
#include "cbt_set.h"
#include "cbt_sidecar.h"
#include "reactor.h"
#include "stack.h"
#include "util.h"

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;
static struct list_head jobs = LIST_HEAD_INIT(jobs);

const char *cbt_mirror_state_name(enum cbt_mirror_state s)
{
	static const char *const names[] = {
		[CBT_MIRROR_RUNNING] = "running",
		[CBT_MIRROR_READY] = "ready",
		[CBT_MIRROR_COMPLETED] = "completed",
		[CBT_MIRROR_FAILED] = "failed",
		[CBT_MIRROR_CANCELLED] = "cancelled",
	};

	return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "?";
}

const char *cbt_mirror_mode_name(enum cbt_mirror_mode m)
{
	static const char *const names[] = {
		[CBT_MIRROR_BACKGROUND] = "background",
		[CBT_MIRROR_WRITE_BLOCKING] = "write-blocking",
		[CBT_MIRROR_AUTO] = "auto",
	};

	return (unsigned)m < ARRAY_SIZE(names) ? names[m] : "?";
}

int cbt_mirror_mode_parse(const char *s, enum cbt_mirror_mode *m)
{
	if (!strcmp(s, "background"))
		*m = CBT_MIRROR_BACKGROUND;
	else if (!strcmp(s, "write-blocking"))
		*m = CBT_MIRROR_WRITE_BLOCKING;
	else if (!strcmp(s, "auto"))
		*m = CBT_MIRROR_AUTO;
	else
		return -EINVAL;
	return 0;
}

static bool state_terminal(int s)
{
	return s == CBT_MIRROR_COMPLETED || s == CBT_MIRROR_FAILED ||
	       s == CBT_MIRROR_CANCELLED;
}

/* ---- chunk bitmaps ---- */

void mirror_dirty_range(struct mirror_job *j, uint64_t off, uint64_t len)
{
	uint64_t c0, c1;

	if (!len || off >= j->size)
		return;
	c0 = off / CBT_MIRROR_CHUNK;
	c1 = (MIN(off + len, j->size) - 1) / CBT_MIRROR_CHUNK;
	for (uint64_t c = c0; c <= c1; c++)
		if (mbits_set(&j->dirty, c))
			atomic_fetch_add(&j->ndirty, 1);
}

static uint64_t job_dirty_bytes(const struct mirror_job *j)
{
	uint64_t n = atomic_load(&j->ndirty) * CBT_MIRROR_CHUNK;

	return MIN(n, j->size);
}

/* ---- log and state ---- */

static void job_set_state(struct mirror_job *j, enum cbt_mirror_state s)
{
	pthread_mutex_lock(&jobs_lock);
	atomic_store(&j->state, s);
	pthread_cond_broadcast(&jobs_cond);
	pthread_mutex_unlock(&jobs_lock);
}

void mirror_fail(struct mirror_job *j, const char *what, int err)
{
	if (j->failing || j->finished)
		return;
	j->failing = true;
	if (err)
		snprintf(j->error, sizeof(j->error), "%s: %s", what, strerror(-err));
	else
		snprintf(j->error, sizeof(j->error), "%s", what);
	/* from now on the source alone: no marking, no mirrored writes */
	if (atomic_load(&j->mf->route) == MF_TRACK)
		atomic_store(&j->mf->route, MF_SOURCE);
}

static void job_finish(struct mirror_job *j)
{
	enum cbt_mirror_state s;

	if (j->finished)
		return;
	j->finished = true;
	j->end_ms = now_ms();
	if (j->tick_armed) {
		reactor_timer_del(j->r, &j->tick);
		j->tick_armed = false;
	}
	if (j->rate_timer_armed) {
		reactor_timer_del(j->r, &j->rate_timer);
		j->rate_timer_armed = false;
	}
	s = j->cancel_req ? CBT_MIRROR_CANCELLED : CBT_MIRROR_FAILED;
	if (j->cancel_req)
		log_info("job %u: mirror of tid %d lun %llu to %s cancelled: the source serves on",
			 j->id, j->p.tid, (unsigned long long)j->p.lun, j->p.target);
	else
		log_warn("job %u: mirror of tid %d lun %llu to %s failed: %s; the source serves on",
			 j->id, j->p.tid, (unsigned long long)j->p.lun,
			 j->p.target, j->error);
	job_set_state(j, s);
}

/* ---- copies ---- */

static bool buf_is_zero(const void *buf, uint64_t len)
{
	const uint64_t *p = buf;

	for (uint64_t i = 0; i < len / 8; i++)
		if (p[i])
			return false;
	return true;
}

static void copy_free(struct mcopy *c)
{
	struct mirror_job *j = c->job;

	for (uint64_t k = c->c0; k <= c->c1; k++)
		mbits_clear(&j->busy, k);
	atomic_fetch_sub(&j->copy_inflight_bytes, c->len);
	j->copies--;
	free(c->buf);
	free(c);
	mirror_wb_release_waiting(j);
}

/* The copy did not reach the destination: its chunks are dirty again. */
static void copy_redirty(struct mcopy *c)
{
	mirror_dirty_range(c->job, c->off, c->len);
}

static void copy_write_done(struct be_io *io, int res)
{
	struct mcopy *c = io->priv;
	struct mirror_job *j = c->job;

	if (res < 0) {
		copy_redirty(c);
		mirror_fail(j, "writing the destination", res);
	} else {
		for (uint64_t k = c->c0; k <= c->c1; k++)
			mbits_set(&j->written, k);
		atomic_fetch_add(&j->bytes_done, c->len);
		j->dest_bytes += io->length;
	}
	copy_free(c);
	mirror_pump(j);
}

static void copy_read_done(struct be_io *io, int res)
{
	struct mcopy *c = io->priv;
	struct mirror_job *j = c->job;
	bool zero, untouched = true;

	if (res < 0 || j->failing || j->cancel_req) {
		copy_redirty(c);
		if (res < 0 && !j->failing) {
			uint32_t ms = j->p.retry_ms ? j->p.retry_ms
						    : MIRROR_RETRY_DEFAULT_MS;

			if (!j->backoff_until_ms)
				log_warn("job %u: reading the source at %llu failed (%s): retrying every %u ms",
					 j->id, (unsigned long long)c->off,
					 strerror(-res), ms);
			j->backoff_until_ms = now_ms() + ms;
		}
		copy_free(c);
		mirror_pump(j);
		return;
	}
	j->backoff_until_ms = 0;
	zero = buf_is_zero(c->buf, c->len);
	for (uint64_t k = c->c0; k <= c->c1 && untouched; k++)
		untouched = !mbits_test(&j->written, k);
	if (zero && j->fresh && untouched) {
		/* a new destination reads zero there already */
		atomic_fetch_add(&j->bytes_done, c->len);
		copy_free(c);
		mirror_pump(j);
		return;
	}
	memset(&c->io, 0, sizeof(c->io));
	c->io.op = zero ? BE_OP_WRITE_ZEROES : BE_OP_WRITE;
	c->io.offset = c->off;
	c->io.length = c->len;
	c->io.iov = &c->iov;
	c->io.iovcnt = 1;
	c->io.done = copy_write_done;
	c->io.priv = c;
	mirror_dest_submit(j, &c->dq, &c->io);
}

static bool chunk_has_wb(struct mirror_job *j, uint64_t c)
{
	struct mwrite *w;

	list_for_each_entry(w, &j->wb_inflight, link)
		if (ranges_overlap(w->c0, w->c1, c, c))
			return true;
	return false;
}

/* May chunk c be copied now? */
static bool chunk_copyable(struct mirror_job *j, uint64_t c)
{
	return mbits_test(&j->dirty, c) && !mbits_test(&j->busy, c) &&
	       !chunk_has_wb(j, c);
}

static int copy_start(struct mirror_job *j, uint64_t c0, uint64_t *end)
{
	uint64_t c1 = c0, max = CBT_MIRROR_COPY_MAX / CBT_MIRROR_CHUNK;
	struct mcopy *c;

	while (c1 + 1 < j->nchunks && c1 + 1 - c0 < max &&
	       chunk_copyable(j, c1 + 1))
		c1++;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->job = j;
	c->c0 = c0;
	c->c1 = c1;
	*end = c1;
	c->off = c0 * CBT_MIRROR_CHUNK;
	c->len = MIN((c1 + 1) * CBT_MIRROR_CHUNK, j->size) - c->off;
	if (posix_memalign(&c->buf, 4096, c->len)) {
		free(c);
		return -ENOMEM;
	}
	/* clear before the read (see the comment at the top) */
	for (uint64_t k = c0; k <= c1; k++) {
		mbits_set(&j->busy, k);
		if (mbits_clear(&j->dirty, k))
			atomic_fetch_sub(&j->ndirty, 1);
	}
	j->copies++;
	atomic_fetch_add(&j->copy_inflight_bytes, c->len);
	j->copied_for_limit += c->len;
	c->iov.iov_base = c->buf;
	c->iov.iov_len = c->len;
	c->io.op = BE_OP_READ;
	c->io.offset = c->off;
	c->io.length = c->len;
	c->io.iov = &c->iov;
	c->io.iovcnt = 1;
	c->io.done = copy_read_done;
	c->io.priv = c;
	backend_submit(backend_inner(j->filter), &c->io, j->r);
	return 0;
}

static void rate_timer_fire(struct ev_timer *t)
{
	struct mirror_job *j = t->arg;

	j->rate_timer_armed = false;
	mirror_pump(j);
}

/* ms to wait before the next background copy (rate_limit), 0 = go.  The
 * copies of a complete (write-blocking convergence) are not throttled. */
static uint64_t rate_delay(struct mirror_job *j)
{
	uint64_t elapsed, allowed;

	if (!j->p.rate_limit || j->completing)
		return 0;
	elapsed = now_ms() - j->start_ms;
	allowed = j->p.rate_limit * elapsed / 1000 + CBT_MIRROR_COPY_MAX;
	if (j->copied_for_limit < allowed)
		return 0;
	return (j->copied_for_limit - allowed) * 1000 / j->p.rate_limit + 1;
}

/* ---- the pivot point ---- */

/* The destination flush of one complete attempt. */
struct pivot_flush {
	struct be_io io;
	struct mirror_job *job;
	unsigned gen;
};

static void pivot_flush_done(struct be_io *io, int res)
{
	struct pivot_flush *pf = container_of(io, struct pivot_flush, io);
	struct mirror_job *j = pf->job;
	bool current = pf->gen == j->complete_gen && j->completing;

	free(pf);
	j->flushing = false;
	if (res < 0) {
		mirror_fail(j, "flushing the destination", res);
		mirror_pump(j);
		return;
	}
	if (current) {	/* an older attempt's flush proves nothing now */
		j->flushed = true;
		pthread_mutex_lock(&jobs_lock);
		if (j->creq)
			j->creq->flushed = true;
		pthread_cond_broadcast(&jobs_cond);
		pthread_mutex_unlock(&jobs_lock);
	}
	mirror_pump(j);
}

/* Nothing dirty, nothing copying, no background write in the source:
 * the destination holds everything the source does (write-blocking
 * requests in flight write both). */
static bool job_converged(struct mirror_job *j)
{
	return atomic_load(&j->wb) && !atomic_load(&j->bg_inflight) &&
	       !atomic_load(&j->ndirty) && !j->copies &&
	       list_empty(&j->wb_waiting);
}

/* Converged while completing: flush the destination once, then tell the
 * management thread, which saves the new path and asks for the switch
 * (job_switch).  Until then every write still goes to both sides (and
 * every flush too), so a crash on either side of the saved path finds
 * everything acknowledged in the store it restarts on. */
static void job_try_pivot(struct mirror_job *j)
{
	struct pivot_flush *pf;

	if (!j->completing || j->flushing || j->flushed || j->pivoted ||
	    !j->phase1_done || !job_converged(j))
		return;
	pf = calloc(1, sizeof(*pf));
	if (!pf) {
		mirror_fail(j, "out of memory", -ENOMEM);
		return;
	}
	pf->job = j;
	pf->gen = j->complete_gen;
	pf->io.op = BE_OP_FLUSH;
	pf->io.done = pivot_flush_done;
	j->flushing = true;
	mirror_dest_submit(j, NULL, &pf->io);
}

/* The pivot point (job reactor): from here on every request goes to the
 * destination. */
static void job_switch(struct mirror_job *j)
{
	if (j->failing || j->finished || !j->flushed || !job_converged(j) ||
	    atomic_load(&j->mf->route) != MF_TRACK)
		return;
	atomic_store(&j->mf->route, MF_DEST);
	j->end_ms = now_ms();
	pthread_mutex_lock(&jobs_lock);
	j->pivoted = true;
	pthread_cond_broadcast(&jobs_cond);
	pthread_mutex_unlock(&jobs_lock);
}

/* ---- the pump and the tick ---- */

static void job_check_ready(struct mirror_job *j, bool drained);

void mirror_pump(struct mirror_job *j)
{
	bool wrapped = false;

	if (j->finished || j->pivoted)
		return;
	if (j->cancel_req && !j->failing)
		mirror_fail(j, "cancelled", 0);
	if (atomic_load(&j->lost) && !j->failing)
		mirror_fail(j, "out of memory: a guest request could not be followed", -ENOMEM);
	if (j->failing) {
		if (!j->copies && !j->flushing)
			job_finish(j);
		return;
	}
	while (atomic_load(&j->copy_inflight_bytes) < j->p.max_inflight &&
	       (!j->backoff_until_ms || now_ms() >= j->backoff_until_ms)) {
		uint64_t c = mbits_next(&j->dirty, j->cursor, j->nchunks), d, c1;

		if (c >= j->nchunks) {
			if (!j->phase1_done) {
				j->phase1_done = true;
				log_info("job %u: mirror phase 1 done: every chunk of the source is copied or on its way (%llu bytes copied in %llu ms); now the chunks written since",
					 j->id,
					 (unsigned long long)atomic_load(&j->bytes_done),
					 (unsigned long long)(now_ms() - j->start_ms));
			}
			if (wrapped)
				break;
			wrapped = true;
			j->cursor = 0;	/* again from the start */
			continue;
		}
		if (!chunk_copyable(j, c)) {
			/* busy or a write-blocking write on it: later */
			j->cursor = c + 1;
			continue;
		}
		d = rate_delay(j);
		if (d) {
			if (!j->rate_timer_armed) {
				j->rate_timer_armed = true;
				reactor_timer_add(j->r, &j->rate_timer, d,
						  rate_timer_fire, j);
			}
			break;
		}
		if (copy_start(j, c, &c1) < 0) {
			mirror_fail(j, "out of memory", -ENOMEM);
			return;
		}
		j->cursor = c1 + 1;
	}
	job_check_ready(j, true);
	job_try_pivot(j);
}

/* Dirty bytes left, counting copies in flight. */
static uint64_t job_remaining(struct mirror_job *j)
{
	return job_dirty_bytes(j) + atomic_load(&j->copy_inflight_bytes);
}

static void set_wb(struct mirror_job *j, bool on, const char *why)
{
	if (!!atomic_load(&j->wb) == on)
		return;
	atomic_store(&j->wb, on);
	log_info("job %u: copy mode now %s (%s)", j->id,
		 on ? "write-blocking" : "background", why);
}

/* Ready: phase 1 is over and what is left can be written in about a
 * second at the measured rate.  The tick judges by the rate; the pump
 * (drained=true) only the case of nothing left at all, so that a copy
 * that finishes between two ticks is ready at once, not up to a tick
 * later. */
static void job_check_ready(struct mirror_job *j, bool drained)
{
	uint64_t now, rem;

	if (j->failing || !j->phase1_done ||
	    atomic_load(&j->state) != CBT_MIRROR_RUNNING)
		return;
	rem = job_remaining(j);
	if (rem && (drained || rem > atomic_load(&j->rate_bps) *
				    CBT_MIRROR_READY_WINDOW_MS / 1000))
		return;
	now = now_ms();
	pthread_mutex_lock(&jobs_lock);	/* show reads it */
	j->ready_ms = now - j->start_ms;
	pthread_mutex_unlock(&jobs_lock);
	log_info("job %u: mirror ready after %llu ms (%llu dirty bytes left, destination %llu bytes/s, %s)",
		 j->id, (unsigned long long)(now - j->start_ms),
		 (unsigned long long)rem,
		 (unsigned long long)atomic_load(&j->rate_bps),
		 atomic_load(&j->wb) ? "write-blocking" : "background");
	job_set_state(j, CBT_MIRROR_READY);
}

static void tick_fire(struct ev_timer *t)
{
	struct mirror_job *j = t->arg;
	uint64_t now = now_ms(), bytes = 0, ms = 0;

	j->tick_armed = false;
	if (j->finished || j->pivoted)
		return;
	/* destination rate over the last second (ticks with work only) */
	if (j->dest_bytes != j->rate_last_bytes || j->copies ||
	    atomic_load(&j->wb_pending)) {
		j->samp_bytes[j->samp_pos] = j->dest_bytes - j->rate_last_bytes;
		j->samp_ms[j->samp_pos] = now - j->rate_last_ms;
		j->samp_pos = (j->samp_pos + 1) % MIRROR_RATE_SAMPLES;
	}
	j->rate_last_bytes = j->dest_bytes;
	j->rate_last_ms = now;
	for (unsigned i = 0; i < MIRROR_RATE_SAMPLES; i++) {
		bytes += j->samp_bytes[i];
		ms += j->samp_ms[i];
	}
	if (ms)
		atomic_store(&j->rate_bps, bytes * 1000 / ms);
	job_check_ready(j, false);
	if (!j->failing && atomic_load(&j->mode) == CBT_MIRROR_AUTO &&
	    !atomic_load(&j->wb) && atomic_load(&j->state) == CBT_MIRROR_RUNNING &&
	    now - j->start_ms >= (uint64_t)j->p.switch_after_s * 1000)
		set_wb(j, true, "auto: not ready after switch_after");
	mirror_pump(j);
	if (!j->finished && !j->pivoted) {
		j->tick_armed = true;
		reactor_timer_add(j->r, &j->tick, MIRROR_TICK_MS, tick_fire, j);
	}
}

/* ---- control: management thread -> job reactor ---- */

static struct mirror_job *job_find(unsigned id)
{
	struct mirror_job *j;

	list_for_each_entry(j, &jobs, link)
		if (j->id == id)
			return j;
	return NULL;
}

bool cbt_mirror_exists(unsigned id)
{
	bool found;

	pthread_mutex_lock(&jobs_lock);
	found = job_find(id) != NULL;
	pthread_mutex_unlock(&jobs_lock);
	return found;
}

static void job_mode_on_reactor(void *arg)
{
	struct mirror_job *j = arg;
	int m = atomic_load(&j->mode);

	if (j->finished || j->completing)
		return;
	if (m == CBT_MIRROR_WRITE_BLOCKING)
		set_wb(j, true, "asked for");
	else if (m == CBT_MIRROR_BACKGROUND)
		set_wb(j, false, "asked for");
	else if (atomic_load(&j->state) == CBT_MIRROR_RUNNING &&
		 now_ms() - j->start_ms >= (uint64_t)j->p.switch_after_s * 1000)
		set_wb(j, true, "auto: not ready after switch_after");
	mirror_pump(j);
}

int cbt_mirror_set_mode(unsigned id, enum cbt_mirror_mode m)
{
	struct mirror_job *j;
	int err = 0;

	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (!j)
		err = -ENOENT;
	else if (state_terminal(atomic_load(&j->state)) || j->pivoted)
		err = -EINVAL;
	else
		atomic_store(&j->mode, m);
	pthread_mutex_unlock(&jobs_lock);
	if (!err)
		err = reactor_call(j->r, job_mode_on_reactor, j);
	return err;
}

static void job_complete_on_reactor(void *arg)
{
	struct mirror_job *j = arg;

	pthread_mutex_lock(&jobs_lock);
	j->creq = j->creq_next;
	pthread_mutex_unlock(&jobs_lock);
	if (j->finished || j->failing)
		return;
	j->completing = true;
	j->flushed = false;
	j->complete_gen++;
	set_wb(j, true, "complete: converging");
	mirror_pump(j);
}

/* A complete attempt ended without the switch (synchronous: the
 * caller's request is not touched after this). */
static void job_uncomplete(struct mirror_job *j)
{
	pthread_mutex_lock(&jobs_lock);
	j->creq = NULL;
	pthread_mutex_unlock(&jobs_lock);
	if (j->pivoted || j->finished)
		return;
	j->completing = false;
	j->flushed = false;
	job_mode_on_reactor(j);
}

/* Wait for pred on j with jobs_lock held; false on timeout. */
static bool wait_locked(struct mirror_job *j, bool (*pred)(struct mirror_job *),
			unsigned timeout_ms)
{
	struct timespec ts;
	int err = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	while (!pred(j) && !err)
		err = pthread_cond_timedwait(&jobs_cond, &jobs_lock, &ts);
	return pred(j);
}

static bool flushed_or_over(struct mirror_job *j)
{
	return j->creq_next->flushed || state_terminal(atomic_load(&j->state));
}

static int run_on_job_reactor(struct mirror_job *j,
			      void (*fn)(struct mirror_job *j));

int cbt_mirror_complete(unsigned id, unsigned timeout_ms,
			int (*before_switch)(void *arg), void *arg,
			const char **why)
{
	struct mirror_creq creq = { false };
	struct mirror_job *j;
	int err = 0, ret;

	*why = NULL;
	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (!j) {
		pthread_mutex_unlock(&jobs_lock);
		return -ENOENT;
	}
	j->creq_next = &creq;
	if (atomic_load(&j->state) != CBT_MIRROR_READY) {
		*why = state_terminal(atomic_load(&j->state))
			       ? "the job has ended" : "the job is not ready yet";
		pthread_mutex_unlock(&jobs_lock);
		return -EINVAL;
	}
	pthread_mutex_unlock(&jobs_lock);
	if (reactor_call(j->r, job_complete_on_reactor, j) < 0)
		return -ENOMEM;
	pthread_mutex_lock(&jobs_lock);
	wait_locked(j, flushed_or_over, timeout_ms);
	if (state_terminal(atomic_load(&j->state))) {
		*why = "the job failed while converging";
		err = -EIO;
	} else if (!creq.flushed) {
		*why = "the destination did not catch up in time (the job goes on)";
		err = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&jobs_lock);
	if (!err && before_switch) {
		err = before_switch(arg);
		if (err)
			*why = "the new store could not be recorded";
	}
	if (!err) {
		run_on_job_reactor(j, job_switch);
		if (!j->pivoted) {
			*why = state_terminal(atomic_load(&j->state))
				       ? "the job failed before the switch"
				       : "the mirror fell behind before the switch";
			err = -EIO;
		}
	}
	run_on_job_reactor(j, job_uncomplete);	/* forgets creq */
	if (err)
		return err;
	/* Past the pivot point every new request goes to the destination
	 * through the filter; now take the filter and the source out.  The
	 * source is closed once the requests in flight on it drained. */
	j->mf->dest_handed = true;
	ret = be_stack_replace(j->p.root, cbt_mirror_filter_ops.name, j->dest,
			       BE_STACK_DRAIN_MS, why);
	if (ret < 0) {
		/* the filter keeps routing to the destination: still correct */
		j->mf->dest_handed = false;
		log_warn("job %u: the destination serves through the mirror node (%s)",
			 j->id, *why ? *why : strerror(-ret));
	} else {
		j->unlinked = true;
	}
	*why = NULL;
	log_info("job %u: mirror of tid %d lun %llu completed: the LUN now serves from %s (%llu bytes copied in %llu ms)%s",
		 j->id, j->p.tid, (unsigned long long)j->p.lun, j->p.target,
		 (unsigned long long)atomic_load(&j->bytes_done),
		 (unsigned long long)(j->end_ms - j->start_ms),
		 ret == 1 ? "; the source closes when its last requests finish" : "");
	job_set_state(j, CBT_MIRROR_COMPLETED);
	return 0;
}

static void job_cancel_on_reactor(void *arg)
{
	struct mirror_job *j = arg;

	if (j->pivoted || j->finished)
		return;
	j->cancel_req = true;
	mirror_pump(j);
}

static bool over(struct mirror_job *j)
{
	return state_terminal(atomic_load(&j->state)) || j->pivoted;
}

/* Take the filter out of the LUN's stack (management thread). */
static void job_unlink_filter(struct mirror_job *j)
{
	int ret;

	if (j->unlinked || j->pivoted)
		return;		/* after the pivot it routes to the store */
	ret = be_stack_remove_node(j->p.root, j->filter, BE_STACK_DRAIN_MS);
	if (ret < 0 && ret != -ENOENT)
		log_warn("job %u: the mirror node stays in the stack (%s)", j->id,
			 strerror(-ret));
	else
		j->unlinked = true;	/* closed now, or once its I/O drained */
}

int cbt_mirror_cancel(unsigned id)
{
	struct mirror_job *j;
	int err = 0;

	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (!j)
		err = -ENOENT;
	else if (atomic_load(&j->state) == CBT_MIRROR_COMPLETED || j->pivoted)
		err = -EINVAL;
	pthread_mutex_unlock(&jobs_lock);
	if (err)
		return err;
	if (!state_terminal(atomic_load(&j->state))) {
		err = reactor_call(j->r, job_cancel_on_reactor, j);
		if (err)
			return err;
		pthread_mutex_lock(&jobs_lock);
		wait_locked(j, over, CBT_MIRROR_COMPLETE_TIMEOUT_MS);
		pthread_mutex_unlock(&jobs_lock);
		if (!state_terminal(atomic_load(&j->state)))
			return -ETIMEDOUT;
	}
	job_unlink_filter(j);
	return 0;
}

/* Run fn on r and wait for it. */
struct sync_call {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	void (*fn)(struct mirror_job *j);
	struct mirror_job *j;
};

static void sync_call_run(void *arg)
{
	struct sync_call *s = arg;

	s->fn(s->j);
	pthread_mutex_lock(&s->lock);
	s->done = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static int run_on_job_reactor(struct mirror_job *j,
			      void (*fn)(struct mirror_job *j))
{
	struct sync_call s = { PTHREAD_MUTEX_INITIALIZER,
			       PTHREAD_COND_INITIALIZER, false, fn, j };

	if (reactor_current() == j->r) {
		fn(j);
		return 0;
	}
	if (reactor_call(j->r, sync_call_run, &s) < 0)
		return -ENOMEM;
	pthread_mutex_lock(&s.lock);
	while (!s.done)
		pthread_cond_wait(&s.cond, &s.lock);
	pthread_mutex_unlock(&s.lock);
	return 0;
}

static void job_stop_timers(struct mirror_job *j)
{
	if (j->tick_armed)
		reactor_timer_del(j->r, &j->tick);
	if (j->rate_timer_armed)
		reactor_timer_del(j->r, &j->rate_timer);
	if (j->dest_timer_armed)
		reactor_timer_del(j->r, &j->dest_timer);
	j->tick_armed = j->rate_timer_armed = j->dest_timer_armed = false;
}

static void job_free(struct mirror_job *j)
{
	free(j->dirty.w);
	free(j->busy.w);
	free(j->written.w);
	if (j->p.release)
		j->p.release(j->p.release_arg);
	free(j);
}

int cbt_mirror_dismiss(unsigned id)
{
	struct mirror_job *j;
	uint64_t deadline;

	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (!j || !state_terminal(atomic_load(&j->state))) {
		pthread_mutex_unlock(&jobs_lock);
		return j ? -EBUSY : -ENOENT;
	}
	list_del(&j->link);
	pthread_mutex_unlock(&jobs_lock);
	job_unlink_filter(j);
	/* requests that still hold the job (their completion marks its
	 * bitmap) finish first; then no reactor can be inside the filter
	 * with the job's pointer, and its timers go */
	deadline = now_ms() + 10000;
	while ((atomic_load(&j->bg_inflight) || atomic_load(&j->wb_pending) ||
		!list_empty(&j->dest_q)) && now_ms() < deadline)
		usleep(1000);
	if (atomic_load(&j->bg_inflight) || atomic_load(&j->wb_pending)) {
		log_warn("job %u: requests still in flight: its memory is kept", id);
		return 0;
	}
	reactor_synchronize();
	run_on_job_reactor(j, job_stop_timers);
	job_free(j);
	return 0;
}

static void job_info(struct mirror_job *j, struct cbt_mirror_info *i)
{
	int s = atomic_load(&j->state);
	uint64_t end = state_terminal(s) && j->end_ms > 1 ? j->end_ms : now_ms();

	memset(i, 0, sizeof(*i));
	i->id = j->id;
	i->tid = j->p.tid;
	i->lun = j->p.lun;
	i->state = s;
	i->mode = atomic_load(&j->mode);
	i->active = atomic_load(&j->wb) ? CBT_MIRROR_WRITE_BLOCKING
					 : CBT_MIRROR_BACKGROUND;
	i->bytes_done = atomic_load(&j->bytes_done);
	i->dirty_bytes = state_terminal(s) ? 0 : job_remaining(j);
	i->bytes_total = i->bytes_done + i->dirty_bytes;
	i->rate_bps = atomic_load(&j->rate_bps);
	i->elapsed_ms = end - j->start_ms;
	i->ready_ms = j->ready_ms;
	if (state_terminal(s))
		i->eta_s = 0;
	else if (!i->dirty_bytes)
		i->eta_s = 0;
	else if (i->rate_bps)
		i->eta_s = (int64_t)(i->dirty_bytes / i->rate_bps);
	else
		i->eta_s = -1;
	if (s == CBT_MIRROR_FAILED || s == CBT_MIRROR_CANCELLED)
		snprintf(i->error, sizeof(i->error), "%s", j->error);
	snprintf(i->target, sizeof(i->target), "%s", j->p.target);
}

unsigned cbt_mirror_list(struct cbt_mirror_info *out, unsigned max)
{
	struct mirror_job *j;
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

int cbt_mirror_get(unsigned id, struct cbt_mirror_info *out)
{
	struct mirror_job *j;

	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (j)
		job_info(j, out);
	pthread_mutex_unlock(&jobs_lock);
	return j ? 0 : -ENOENT;
}

static enum cbt_mirror_state wait_state;

static bool reached(struct mirror_job *j)
{
	int s = atomic_load(&j->state);

	return s == (int)wait_state || state_terminal(s);
}

int cbt_mirror_wait(unsigned id, enum cbt_mirror_state state,
		    unsigned timeout_ms)
{
	struct mirror_job *j;
	bool ok;

	pthread_mutex_lock(&jobs_lock);
	j = job_find(id);
	if (!j) {
		pthread_mutex_unlock(&jobs_lock);
		return -ENOENT;
	}
	wait_state = state;	/* tests: one waiter at a time */
	ok = wait_locked(j, reached, timeout_ms);
	pthread_mutex_unlock(&jobs_lock);
	return ok ? 0 : -ETIMEDOUT;
}

/* ---- start ---- */

static void job_start_on_reactor(void *arg)
{
	struct mirror_job *j = arg;

	log_info("job %u: mirror of tid %d lun %llu to %s started (copy_mode=%s, %llu of %llu bytes to copy%s)",
		 j->id, j->p.tid, (unsigned long long)j->p.lun, j->p.target,
		 cbt_mirror_mode_name(atomic_load(&j->mode)),
		 (unsigned long long)job_dirty_bytes(j),
		 (unsigned long long)j->size,
		 j->fresh ? ", holes skipped" : "");
	j->rate_last_ms = now_ms();
	j->tick_armed = true;
	reactor_timer_add(j->r, &j->tick, MIRROR_TICK_MS, tick_fire, j);
	mirror_pump(j);
}

/* Open (or create) the destination; *fresh: it reads zero everywhere. */
static int open_dest(struct mirror_job *j, const struct backend *store,
		     struct backend **out, const char **why)
{
	struct backend_params bp = {
		.path = j->p.target, .size = j->size,
		.block_size = j->p.block_size, .direct = store->direct,
	};
	struct stat st;
	int err;

	j->fresh = false;
	if (stat(j->p.target, &st) < 0) {
		if (errno != ENOENT) {
			*why = "cannot look at the destination";
			return -errno;
		}
		j->fresh = true;
	} else if (S_ISREG(st.st_mode)) {
		if (st.st_size == 0)
			j->fresh = true;
		else if ((uint64_t)st.st_size < j->size) {
			*why = "the destination is smaller than the LUN";
			return -EINVAL;
		}
	} else if (!S_ISBLK(st.st_mode)) {
		*why = "the destination is neither a file nor a block device";
		return -EINVAL;
	}
	err = be_stack_node_open(backend_find("file"), &bp, out, why);
	if (err == -EINVAL && !store->direct) {
		bp.direct = false;
		err = be_stack_node_open(backend_find("file"), &bp, out, why);
	}
	if (err) {
		if (j->fresh && err != -EEXIST && stat(j->p.target, &st) == 0 &&
		    st.st_size == (off_t)j->size && st.st_blocks == 0)
			unlink(j->p.target);
		if (err == -EINVAL && store->direct)
			*why = "the destination must take O_DIRECT I/O as the source does";
		return err;
	}
	if (be_size(*out) < j->size) {
		be_stack_node_close(*out);
		*why = "the destination is smaller than the LUN";
		return -EINVAL;
	}
	__atomic_store_n(&(*out)->size, j->size, __ATOMIC_RELEASE);
	return 0;
}

/* Dirty what the source holds (holes skipped for a fresh destination). */
static void fill_initial(struct mirror_job *j, struct backend *store)
{
	uint64_t off = 0, ext;
	int st;

	if (!j->fresh || !store->ops->block_status) {
		mirror_dirty_range(j, 0, j->size);
		return;
	}
	while (off < j->size) {
		st = store->ops->block_status(store, off, j->size - off, &ext);
		if (st < 0 || !ext) {
			mirror_dirty_range(j, off, j->size - off);
			return;
		}
		if (st)
			mirror_dirty_range(j, off, ext);
		off += ext;
	}
}

int cbt_mirror_start(const struct cbt_mirror_params *p, unsigned *id,
		     const char **why)
{
	const char *names[BE_STACK_MAX_NODES];
	struct backend *store, *node = NULL, *dest = NULL;
	struct backend_params fp = { 0 };
	struct mirror_job *j;
	int n, err;

	*why = NULL;
	if (!be_stack_is_root(p->root) || !p->r) {
		*why = "the LUN has no block stack";
		return -EINVAL;
	}
	n = be_stack_names(p->root, names, BE_STACK_MAX_NODES);
	for (int i = 0; i < n && i < BE_STACK_MAX_NODES; i++)
		if (!strcmp(names[i], cbt_mirror_filter_ops.name)) {
			*why = "a mirror already runs on this LUN (cancel or delete it first)";
			return -EBUSY;
		}
	for (store = p->root; backend_inner(store); store = backend_inner(store))
		;
	if (store->readonly) {
		*why = "the LUN is read-only";
		return -EINVAL;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->p = *p;
	j->p.release = NULL;	/* only once the job exists */
	if (!j->p.switch_after_s)
		j->p.switch_after_s = CBT_MIRROR_SWITCH_AFTER_DEFAULT;
	if (!j->p.max_inflight)
		j->p.max_inflight = CBT_MIRROR_INFLIGHT_DEFAULT;
	if (j->p.max_inflight < CBT_MIRROR_CHUNK)
		j->p.max_inflight = CBT_MIRROR_CHUNK;
	j->r = p->r;
	j->size = be_size(p->root);
	j->nchunks = (j->size + CBT_MIRROR_CHUNK - 1) / CBT_MIRROR_CHUNK;
	list_init(&j->wb_waiting);
	list_init(&j->wb_inflight);
	list_init(&j->dest_q);
	atomic_init(&j->mode, p->mode);
	atomic_init(&j->wb, p->mode == CBT_MIRROR_WRITE_BLOCKING);
	atomic_init(&j->state, CBT_MIRROR_RUNNING);
	if (mbits_init(&j->dirty, j->nchunks) || mbits_init(&j->busy, j->nchunks) ||
	    mbits_init(&j->written, j->nchunks)) {
		err = -ENOMEM;
		goto fail;
	}
	err = open_dest(j, store, &dest, why);
	if (err)
		goto fail;
	j->dest = dest;
	/* directly above the store: the fault and cbt filters stay above it
	 * and survive the pivot */
	err = be_stack_insert(p->root, &cbt_mirror_filter_ops, &fp,
			      BE_STACK_ABOVE, store->ops->name, &node, why);
	if (err) {
		be_stack_node_close(dest);
		goto fail;
	}
	j->filter = node;
	j->mf = node->priv;
	j->mf->job = j;
	j->mf->dest = dest;	/* the node owns it from here */
	atomic_store(&j->mf->route, MF_TRACK);
	/* writes that entered before the node are done after this: every
	 * later one is tracked; then what the source holds is dirty */
	be_stack_drain(p->root, BE_STACK_DRAIN_MS);
	fill_initial(j, store);
	j->start_ms = now_ms();
	j->p.release = p->release;
	pthread_mutex_lock(&jobs_lock);
	j->id = cbt_job_id_next();
	list_add_tail(&j->link, &jobs);
	pthread_mutex_unlock(&jobs_lock);
	*id = j->id;
	if (reactor_call(j->r, job_start_on_reactor, j) < 0)
		log_err("job %u: cannot reach its reactor", j->id);
	return 0;
fail:
	free(j->dirty.w);
	free(j->busy.w);
	free(j->written.w);
	free(j);
	if (!*why)
		*why = "cannot start the mirror";
	return err;
}

/* ---- the marker of a running mirror ---- */

static int marker_path(char *out, size_t len, const char *target_name,
		       uint64_t lun)
{
	char side[PATH_MAX];
	size_t n;
	int err = cbt_sidecar_path(side, sizeof(side), target_name, lun);

	if (err)
		return err;
	n = strlen(side);
	if (n < 8 || strcmp(side + n - 8, ".bitmaps"))
		return -EINVAL;
	side[n - 8] = '\0';
	n = (size_t)snprintf(out, len, "%s.mirror", side);
	return n >= len ? -ENAMETOOLONG : 0;
}

int cbt_mirror_marker_set(const char *target_name, uint64_t lun,
			  const char *dest)
{
	char path[PATH_MAX + 16], line[PATH_MAX + 2];
	int n, err = marker_path(path, sizeof(path), target_name, lun);

	if (err)
		return err;
	n = snprintf(line, sizeof(line), "%s\n", dest);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -ENAMETOOLONG;
	/* replaced whole (temporary file, fsync, rename): a crash while it
	 * is written leaves no marker or this one, never an empty one */
	return cbt_sidecar_write_file(path, (const uint8_t *)line, (size_t)n);
}

void cbt_mirror_marker_clear(const char *target_name, uint64_t lun)
{
	char path[PATH_MAX + 16];

	if (!marker_path(path, sizeof(path), target_name, lun))
		unlink(path);
}

bool cbt_mirror_marker_take(const char *target_name, uint64_t lun,
			    char *dest, size_t len)
{
	char path[PATH_MAX + 16];
	FILE *f;

	if (marker_path(path, sizeof(path), target_name, lun))
		return false;
	f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(dest, (int)len, f))
		dest[0] = '\0';
	dest[strcspn(dest, "\n")] = '\0';
	fclose(f);
	unlink(path);
	return true;
}
