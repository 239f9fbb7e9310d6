/* hang.c - the hang engine's state machine (DESIGN.md "Hang-on-error").
 *
 *          retryable error                 probe succeeds
 *   ok ───────────────────────► hung ─────────────────────────► ok
 *    ▲                           │  retry_timeout passes / verb fail
 *    │       probe succeeds      ▼
 *    └──────────────────────── failed
 *
 * See hang_internal.h for who runs what where.  In short: the healthy path
 * (state ok, and also failed, where errors are reported at once) is
 * hang_submit() -> backend -> hang_direct_done() on the command's own
 * reactor, one atomic load and no lock.  Everything else happens on the
 * LUN's home reactor.
 *
 * The probe while hung is the oldest held command itself (the design's
 * "oldest held command is resubmitted").  Once a command has been reported
 * failed it is never replayed, so the background probe while failed is a
 * read of one block at the LBA of the error for a read episode, and a
 * FLUSH for a write episode: neither changes data.  A live command that
 * succeeds while failed is a probe too (a read for a read episode, a
 * write, unmap or write-zeroes for a write episode).  A flush cannot see
 * every write failure (a full thin pool flushes fine), so after a flush
 * probe brought the LUN back, a write that still fails before any write
 * succeeded is reported at once and the LUN goes straight back to failed
 * ("unproven", hang_internal.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hang_internal.h"

/* ---- small helpers ---- */

struct reactor *hang_home(struct hang_lun *h)
{
	return atomic_load_explicit(&h->home, memory_order_acquire);
}

static uint64_t hang_now(struct hang_lun *h)
{
	return h->env->now_ms(hang_home(h));
}

const char *hang_op_name(enum be_op op)
{
	switch (op) {
	case BE_OP_READ:
		return "read";
	case BE_OP_WRITE:
		return "write";
	case BE_OP_FLUSH:
		return "flush";
	case BE_OP_UNMAP:
		return "unmap";
	case BE_OP_WRITE_ZEROES:
		return "write-zeroes";
	case BE_OP_COMPARE_AND_WRITE:
		return "compare-and-write";
	}
	return "?";
}

const char *hang_state_name(enum hang_state s)
{
	switch (s) {
	case HANG_OK:
		return "ok";
	case HANG_HUNG:
		return "hung";
	case HANG_FAILED:
		return "failed";
	}
	return "?";
}

static int hang_get_state(struct hang_lun *h)
{
	return atomic_load_explicit(&h->state, memory_order_acquire);
}

enum hang_state hang_state(struct scsi_lun *lun)
{
	return lun->hang ? (enum hang_state)hang_get_state(lun->hang) : HANG_OK;
}

static uint64_t hang_lba(const struct scsi_lun *lun, const struct be_io *io)
{
	uint32_t bs = lun_settings_get(lun)->block_size ? lun_settings_get(lun)->block_size : 512;

	return io->offset / bs;
}

/* Data a command pins while held or queued: its buffer. */
static uint64_t hang_m_bytes(const struct media_io *m)
{
	return m->io.op == BE_OP_READ || m->io.op == BE_OP_WRITE ?
		       m->io.length : 0;
}

static const char *hang_tgt_name(const struct hang_lun *h)
{
	return h->lun->target_name[0] ? h->lun->target_name : "-";
}

static const char *hang_errname(int err)
{
	const char *n = err > 0 ? strerrorname_np(err) : NULL;

	return n ? n : "E?";
}

/* A message the engine cannot lose (a command would never complete): a
 * failed reactor_call() means malloc failed, and like xzalloc() for small
 * control structures there is no sane way to continue. */
void hang_call_or_die(struct hang_lun *h, struct reactor *r,
		      void (*fn)(void *arg), void *arg)
{
	if (h->env->call(r, fn, arg) < 0) {
		log_err("hang: %s LUN %llu: cannot queue a reactor call",
			hang_tgt_name(h), (unsigned long long)lun_settings_get(h->lun)->lun);
		abort();
	}
}

/* The home reactor is the reactor of the first command that needs one. */
void hang_send_home(struct hang_lun *h, struct reactor *from,
		    void (*fn)(void *arg), void *arg)
{
	struct reactor *home = hang_home(h);

	if (!home) {
		struct reactor *expected = NULL;

		if (atomic_compare_exchange_strong(&h->home, &expected, from))
			home = from;
		else
			home = expected;
	}
	hang_call_or_die(h, home, fn, arg);
}

/* ---- the one place that assigns h->state ---- */

static bool hang_transition_ok(int from, int to)
{
	return (from == HANG_OK && to == HANG_HUNG) ||
	       (from == HANG_OK && to == HANG_FAILED) ||	/* unproven */
	       (from == HANG_HUNG && to == HANG_OK) ||
	       (from == HANG_HUNG && to == HANG_FAILED) ||
	       (from == HANG_FAILED && to == HANG_OK);
}

/* Check, log (one line per DESIGN.md: LUN, target, errno, op, LBA,
 * duration, commands affected) and publish a transition.  `ncmds` is the
 * number of commands held / resubmitted / reported by it. */
static int hang_set_state(struct hang_lun *h, int to, unsigned ncmds,
			  const char *why)
{
	int from = hang_get_state(h);
	uint64_t now = hang_now(h), dur;
	char what[96];

	if (!hang_transition_ok(from, to)) {
		log_err("hang: %s LUN %llu: refused transition %s -> %s",
			hang_tgt_name(h), (unsigned long long)lun_settings_get(h->lun)->lun,
			hang_state_name(from), hang_state_name(to));
		return -EINVAL;
	}
	if (h->op == BE_OP_FLUSH)
		snprintf(what, sizeof(what), "%s on flush",
			 hang_errname(h->err));
	else
		snprintf(what, sizeof(what), "%s on %s at LBA %llu",
			 hang_errname(h->err), hang_op_name(h->op),
			 (unsigned long long)h->lba);
	dur = from == HANG_FAILED ? now - h->since :
	      from == HANG_HUNG ? now - h->t0 : 0;

	pthread_mutex_lock(&h->lock);
	if (from == HANG_HUNG && now - h->t0 > h->longest_ms)
		h->longest_ms = now - h->t0;
	h->since = now;
	pthread_mutex_unlock(&h->lock);
	atomic_store_explicit(&h->state, to, memory_order_release);

	if (to == HANG_HUNG)
		log_info("hang: %s LUN %llu: hung: %s, %u command(s) held",
			 hang_tgt_name(h), (unsigned long long)lun_settings_get(h->lun)->lun,
			 what, ncmds);
	else if (to == HANG_FAILED)
		log_info("hang: %s LUN %llu: failed after %llu.%llus (%s): "
			 "%s, %u command(s) reported",
			 hang_tgt_name(h), (unsigned long long)lun_settings_get(h->lun)->lun,
			 (unsigned long long)dur / 1000,
			 (unsigned long long)dur % 1000 / 100, why, what, ncmds);
	else
		log_info("hang: %s LUN %llu: recovered from %s after "
			 "%llu.%llus (%s): %s, %u command(s) resubmitted",
			 hang_tgt_name(h), (unsigned long long)lun_settings_get(h->lun)->lun,
			 hang_state_name(from), (unsigned long long)dur / 1000,
			 (unsigned long long)dur % 1000 / 100, why, what,
			 ncmds);
	return 0;
}

/* ---- accounting of held + queued commands (for show and the limits) ---- */

static void hang_account(struct hang_lun *h, struct media_io *m, bool held)
{
	pthread_mutex_lock(&h->lock);
	if (held)
		h->nheld++;
	else
		h->nqueued++;
	h->bytes += hang_m_bytes(m);
	pthread_mutex_unlock(&h->lock);
}

void hang_unaccount(struct hang_lun *h, struct media_io *m, bool held)
{
	pthread_mutex_lock(&h->lock);
	if (held)
		h->nheld--;
	else
		h->nqueued--;
	h->bytes -= hang_m_bytes(m);
	pthread_mutex_unlock(&h->lock);
}

static void hang_note_error(struct hang_lun *h, struct media_io *m, int res)
{
	pthread_mutex_lock(&h->lock);
	h->have_err = true;
	h->err = -res;
	h->op = m->io.op;
	h->lba = hang_lba(h->lun, &m->io);
	pthread_mutex_unlock(&h->lock);
}

static void hang_insert_by_seq(struct list_head *list, struct media_io *m)
{
	struct list_head *pos = list->prev;

	while (pos != list &&
	       list_entry(pos, struct media_io, link)->seq > m->seq)
		pos = pos->prev;
	list_insert_(&m->link, pos, pos->next);
}

/* ---- completion back to the command's own reactor ---- */

static void hang_origin_complete(void *arg)
{
	struct media_io *m = arg;
	int res = -(hang_m_get(m) >> HM_ERR_SHIFT);

	hang_m_set(m, HW_IDLE);
	m->complete(m, res);
}

/* res is 0 or -errno (< 256). */
void hang_complete(struct hang_lun *h, struct media_io *m, int res)
{
	hang_m_set(m, HW_COMPLETING | (-res) << HM_ERR_SHIFT);
	hang_call_or_die(h, m->origin, hang_origin_complete, m);
}

/* Was m in the scope of an earlier hang_abort_nexus()? (It was on its way
 * here from another reactor when the task set was dropped.) */
static bool hang_dropped(struct hang_lun *h, struct media_io *m)
{
	for (unsigned i = 0; i < HANG_DROP_SLOTS; i++) {
		struct hang_drop *d = &h->drops[i];

		if (d->seq && m->seq < d->seq &&
		    (d->nexus == HANG_NEXUS_ALL || d->nexus == m->nexus_id))
			return true;
	}
	return false;
}

/* ---- the home reactor's view of a command ---- */

static void hang_home_io_done(struct be_io *io, int res);

/* The SCSI layer's last word before a command that waited reaches the
 * backend (DESIGN.md: reservations are checked when a queued command is
 * finally dispatched).  True if m was completed instead. */
static bool hang_recheck_fails(struct hang_lun *h, struct media_io *m)
{
	int (*fn)(struct media_io *) =
		__atomic_load_n(&h->recheck, __ATOMIC_ACQUIRE);
	int res = fn ? fn(m) : 0;

	if (res >= 0)
		return false;
	hang_complete(h, m, res);
	return true;
}

static void hang_home_dispatch(struct hang_lun *h, struct media_io *m)
{
	if (hang_recheck_fails(h, m))
		return;
	hang_m_set(m, HW_HOME_FLIGHT);
	list_add_tail(&m->link, &h->inflight);
	m->io.done = hang_home_io_done;
	m->io.priv = h->lun;
	h->env->submit(h->lun, &m->io, hang_home(h));
}

static void hang_hold(struct hang_lun *h, struct media_io *m, int res)
{
	hang_m_set(m, HW_HELD | (-res) << HM_ERR_SHIFT);
	hang_insert_by_seq(&h->held, m);
	hang_account(h, m, true);
}

static void hang_enter_hung(struct hang_lun *h, struct media_io *m, int res)
{
	pthread_mutex_lock(&h->lock);
	h->t0 = hang_now(h);
	h->episodes++;
	pthread_mutex_unlock(&h->lock);
	hang_note_error(h, m, res);
	atomic_store(&h->err_op, m->io.op);
	hang_hold(h, m, res);
	hang_set_state(h, HANG_HUNG, 1, "error");
	hang_arm_probe(h);
	hang_arm_timeout(h);
}

/* The LUN left failed on a flush probe, but writes still fail: the probe
 * was blind to this failure, so report at once and go back to failed
 * rather than hold the write for another retry_timeout. */
static void hang_enter_failed(struct hang_lun *h, struct media_io *m, int res)
{
	pthread_mutex_lock(&h->lock);
	h->t0 = hang_now(h);
	h->episodes++;
	pthread_mutex_unlock(&h->lock);
	hang_note_error(h, m, res);
	atomic_store(&h->err_op, m->io.op);
	hang_set_state(h, HANG_FAILED, 1,
		       "writes still fail after a flush probe succeeded");
	hang_complete(h, m, res);
	hang_arm_probe(h);
}

/* m failed with a retryable error (res) under the LUN's policy. */
static void hang_home_fail(struct hang_lun *h, struct media_io *m, int res)
{
	if (hang_dropped(h, m)) {
		hang_complete(h, m, -ECANCELED);
		return;
	}
	switch (hang_get_state(h)) {
	case HANG_OK:
		if (atomic_load(&h->unproven) && hang_op_writes(m->io.op))
			hang_enter_failed(h, m, res);
		else
			hang_enter_hung(h, m, res);
		break;
	case HANG_HUNG:
		hang_hold(h, m, res);
		break;
	default:	/* failed: fail fast */
		hang_complete(h, m, res);
		break;
	}
}

/* Message: a command that failed retryably on its own reactor. */
static void hang_home_failed_msg(void *arg)
{
	struct media_io *m = arg;
	struct hang_lun *h = ((struct scsi_lun *)m->io.priv)->hang;

	hang_home_fail(h, m, -(hang_m_get(m) >> HM_ERR_SHIFT));
}

/* Message: a command that arrived while the LUN was hung. */
static void hang_home_arrive_msg(void *arg)
{
	struct media_io *m = arg;
	struct hang_lun *h = ((struct scsi_lun *)m->io.priv)->hang;

	if (hang_dropped(h, m)) {
		hang_complete(h, m, -ECANCELED);
		return;
	}
	if (hang_get_state(h) != HANG_HUNG) {
		/* recovered (or timed out) while the message travelled */
		hang_home_dispatch(h, m);
		return;
	}
	if (h->nheld + h->nqueued + 1 > h->max_cmds ||
	    h->bytes + hang_m_bytes(m) > h->max_bytes) {
		hang_complete(h, m, HANG_TASK_SET_FULL);
		return;
	}
	hang_m_set(m, HW_QUEUED);
	hang_insert_by_seq(&h->queued, m);
	hang_account(h, m, false);
}

/* After the probe left (done, dropped or reported) without recovering the
 * LUN: the next probe comes at the interval.  If nothing is held by then,
 * hang_probe_now() promotes the oldest queued command or returns the LUN
 * to ok; waiting for the tick (rather than acting at once) means a batch
 * of ABORT TASKs for a whole task set never dispatches a queued command
 * that the next abort of the batch was about to drop. */
static void hang_after_probe(struct hang_lun *h)
{
	if (hang_get_state(h) != HANG_OK)
		hang_arm_probe(h);
}

static void hang_home_io_finish(struct be_io *io, int res);

static void hang_drain(struct hang_lun *h);

static void hang_home_io_done(struct be_io *io, int res)
{
	struct scsi_lun *lun = io->priv;
	struct hang_lun *h = lun->hang;
	const struct hang_env *env = h->env;

	/* the completion may drop the command's last hold on the LUN */
	env->lun_get(lun);
	hang_home_io_finish(io, res);
	/* a finished command may let a waiting overlapping one go */
	if (!list_empty(&h->held) || !list_empty(&h->queued))
		hang_drain(h);
	env->lun_put(lun);	/* last: may free the LUN */
}

static void hang_home_io_finish(struct be_io *io, int res)
{
	struct media_io *m = container_of(io, struct media_io, io);
	struct hang_lun *h = ((struct scsi_lun *)io->priv)->hang;
	int w = hang_m_get(m), st = hang_get_state(h);
	bool probe = w & HM_PROBE, aborted = w & HM_ABORTED;
	/* m belongs to its owner again once hang_complete() returns (it may
	 * already be reused on another thread): read what is needed first */
	enum be_op op = m->io.op;

	list_del(&m->link);
	if (probe)
		h->probe = NULL;
	if (res == 0) {
		if (probe)
			hang_unaccount(h, m, true);
		if (hang_op_writes(op))
			atomic_store(&h->unproven, false);
		hang_complete(h, m, aborted ? -ECANCELED : 0);
		/* a success proves the path works, even if its result is
		 * dropped; while failed, any success of the failed class
		 * does */
		if (st == HANG_HUNG && probe)
			hang_recover(h, "probe succeeded");
		else if (st == HANG_FAILED &&
			 hang_op_proves(atomic_load(&h->err_op), op))
			hang_recover(h, "command succeeded");
		else if (probe)
			hang_after_probe(h);
		return;
	}
	if (probe && !aborted && st == HANG_HUNG &&
	    hang_retryable(h->lun, m->io.op, res)) {
		/* still failing: back to the head of the held set */
		hang_note_error(h, m, res);
		hang_m_set(m, HW_HELD | (-res) << HM_ERR_SHIFT);
		hang_insert_by_seq(&h->held, m);
		hang_arm_probe(h);
		return;
	}
	if (probe)
		hang_unaccount(h, m, true);
	if (aborted)
		hang_complete(h, m, -ECANCELED);
	else if (hang_retryable(h->lun, m->io.op, res))
		hang_home_fail(h, m, res);
	else	/* not a passing failure: report it, whatever the state */
		hang_complete(h, m, res);
	if (probe)
		hang_after_probe(h);
}

/* ---- the healthy path, on the command's own reactor ---- */

static void hang_evidence_msg(void *arg)
{
	struct hang_lun *h = arg;
	struct scsi_lun *lun = h->lun;

	atomic_store(&h->evidence_pending, false);
	if (hang_get_state(h) == HANG_FAILED)
		hang_recover(h, "command succeeded");
	h->env->lun_put(lun);	/* last: may free the LUN */
}

static void hang_direct_done(struct be_io *io, int res)
{
	struct media_io *m = container_of(io, struct media_io, io);
	struct scsi_lun *lun = io->priv;
	struct hang_lun *h = lun->hang;
	int w = hang_m_get(m);

	if (w & HM_ABORTED) {
		hang_m_set(m, HW_IDLE);
		m->complete(m, -ECANCELED);
		return;
	}
	if (res < 0 && hang_retryable(lun, m->io.op, res) &&
	    hang_get_state(h) != HANG_FAILED) {
		hang_m_set(m, HW_TO_HOME | (-res) << HM_ERR_SHIFT);
		hang_send_home(h, m->origin, hang_home_failed_msg, m);
		return;
	}
	if (res == 0 && hang_op_writes(m->io.op) &&
	    atomic_load_explicit(&h->unproven, memory_order_relaxed))
		atomic_store(&h->unproven, false);
	/* While failed, a success of the failed class proves the path works
	 * again (the live command is the best probe there is). */
	if (res == 0 && hang_get_state(h) == HANG_FAILED &&
	    hang_op_proves(atomic_load(&h->err_op), m->io.op) &&
	    !atomic_exchange(&h->evidence_pending, true)) {
		h->env->lun_get(lun);
		hang_send_home(h, m->origin, hang_evidence_msg, h);
	}
	hang_m_set(m, HW_IDLE);
	m->complete(m, res);
}

/* No hang state (hang_lun_init() was not called): a plain pass-through. */
static void hang_plain_done(struct be_io *io, int res)
{
	struct media_io *m = container_of(io, struct media_io, io);

	if (hang_m_get(m) & HM_ABORTED)
		res = -ECANCELED;
	hang_m_set(m, HW_IDLE);
	m->complete(m, res);
}

void hang_submit(struct scsi_lun *lun, struct media_io *m)
{
	struct hang_lun *h = lun->hang;

	m->io.priv = lun;
	if (!h || hang_get_state(h) != HANG_HUNG) {
		/* ok, or failed (errors reported at once): no lock, no queue */
		hang_m_set(m, HW_DIRECT);
		if (h) {
			m->io.done = hang_direct_done;
			h->env->submit(lun, &m->io, m->origin);
		} else {
			m->io.done = hang_plain_done;
			backend_submit(lun->be, &m->io, m->origin);
		}
		return;
	}
	hang_m_set(m, HW_TO_HOME);
	hang_send_home(h, m->origin, hang_home_arrive_msg, m);
}

/* ---- recovery and failure of a whole episode ---- */

/* Do a and b touch the same blocks?  A flush has no range: it must not
 * overtake (or be overtaken by) anything, so it overlaps everything. */
static bool hang_overlaps(const struct media_io *a, const struct media_io *b)
{
	if (a->io.op == BE_OP_FLUSH || b->io.op == BE_OP_FLUSH)
		return true;
	return a->io.offset < b->io.offset + b->io.length &&
	       b->io.offset < a->io.offset + a->io.length;
}

/* Must m wait: does it overlap a command in the backend, or an earlier
 * command (held before queued, each in arrival order) still waiting? */
static bool hang_drain_blocked(struct hang_lun *h, struct media_io *m)
{
	struct list_head *lists[2] = { &h->held, &h->queued };
	struct media_io *o;

	list_for_each_entry(o, &h->inflight, link)
		if (hang_overlaps(o, m))
			return true;
	for (int i = 0; i < 2; i++)
		list_for_each_entry(o, lists[i], link) {
			if (o == m)
				return false;
			if (hang_overlaps(o, m))
				return true;
		}
	return false;
}

/* After a recovery, send what was held, then what was queued, to the
 * backend in arrival order.  Commands to different blocks go at once; one
 * that overlaps a command still in the backend or an earlier one still
 * waiting stays in its list (accounted, abortable) until that one is done,
 * so a retried write can never land after a later write to the same
 * blocks (DESIGN.md) even when the backend completes out of order.  Runs
 * again on every completion of the home reactor's in-flight commands. */
static void hang_drain(struct hang_lun *h)
{
	struct list_head *lists[2] = { &h->held, &h->queued };

	if (hang_get_state(h) != HANG_OK)
		return;	/* a new episode holds the rest in place */
	for (int i = 0; i < 2; i++) {
		struct media_io *m, *n;

		list_for_each_entry_safe(m, n, lists[i], link) {
			if (hang_drain_blocked(h, m))
				continue;
			list_del(&m->link);
			hang_unaccount(h, m, i == 0);
			hang_home_dispatch(h, m);
			if (hang_get_state(h) != HANG_OK)
				return;
		}
	}
}

void hang_recover(struct hang_lun *h, const char *why)
{
	struct media_io *m;
	int from = hang_get_state(h);
	unsigned count = 0;

	if (from == HANG_OK)
		return;
	hang_timer_clear(h, &h->probe_timer);
	hang_timer_clear(h, &h->timeout_timer);
	list_for_each_entry(m, &h->held, link)
		count++;
	list_for_each_entry(m, &h->queued, link)
		count++;
	pthread_mutex_lock(&h->lock);
	h->recoveries++;
	pthread_mutex_unlock(&h->lock);
	hang_set_state(h, HANG_OK, count, why);
	/* A probe still in flight (only possible here via the evidence path
	 * or a verb) finishes on its own; it is no longer a probe. */
	if (h->probe) {
		hang_unaccount(h, h->probe, true);
		hang_m_set(h->probe, hang_m_get(h->probe) & ~HM_PROBE);
		h->probe = NULL;
	}
	/* held first, then queued, each in arrival order (DESIGN.md) */
	hang_drain(h);
}

void hang_fail_all(struct hang_lun *h, const char *why)
{
	struct media_io *m, *n;

	if (hang_get_state(h) != HANG_HUNG)
		return;
	hang_timer_clear(h, &h->probe_timer);
	hang_timer_clear(h, &h->timeout_timer);
	hang_set_state(h, HANG_FAILED,
		       h->nheld - (h->probe ? 1 : 0) + h->nqueued, why);
	/* each held command with its own last error, queued ones (never
	 * tried) with the episode's */
	list_for_each_entry_safe(m, n, &h->held, link) {
		list_del(&m->link);
		hang_unaccount(h, m, true);
		hang_complete(h, m, -(hang_m_get(m) >> HM_ERR_SHIFT));
	}
	list_for_each_entry_safe(m, n, &h->queued, link) {
		list_del(&m->link);
		hang_unaccount(h, m, false);
		hang_complete(h, m, -h->err);
	}
	/* a probe in flight completes with its own result when it returns */
	hang_arm_probe(h);
}

/* The episode's state after hang_reset() dropped every command it held:
 * ok without draining anything (nothing is left to drain), and nothing of
 * the old episode that would change how the next error is treated. */
void hang_reset_state(struct hang_lun *h, const char *why)
{
	if (hang_get_state(h) != HANG_OK)
		hang_set_state(h, HANG_OK, 0, why);
	atomic_store(&h->unproven, false);
	atomic_store(&h->paused, false);
	atomic_store(&h->err_op, BE_OP_WRITE);
	pthread_mutex_lock(&h->lock);
	h->have_err = false;
	h->err = 0;
	h->op = BE_OP_READ;
	h->lba = 0;
	pthread_mutex_unlock(&h->lock);
}

/* ---- timers ----
 *
 * A timer is the one thing on the home reactor that holds no LUN
 * reference (a failed LUN probes forever; a reference would keep a deleted
 * LUN alive).  So a timer callback first takes a reference if the LUN still
 * has one (hang_timer_enter), under h->lock against hang_lun_free(); and a
 * hang_lun freed while a timer is armed is left to that timer, which frees
 * it on the home reactor, the only thread that may touch the timer. */

static pthread_mutex_t hang_orphans_lock = PTHREAD_MUTEX_INITIALIZER;
/* hang_luns freed with timers armed, until a timer frees them (reachable,
 * so a daemon stopping with its reactors gone reports no leak) */
static struct list_head hang_orphans = LIST_HEAD_INIT(hang_orphans);

static bool *hang_timer_flag(struct hang_lun *h, struct ev_timer *t)
{
	return t == &h->probe_timer ? &h->probe_armed : &h->timeout_armed;
}

static void hang_timer_set(struct hang_lun *h, struct ev_timer *t,
			   uint64_t delay_ms, ev_timer_fn fn)
{
	pthread_mutex_lock(&h->lock);
	*hang_timer_flag(h, t) = true;
	pthread_mutex_unlock(&h->lock);
	h->env->timer_add(hang_home(h), t, delay_ms, fn, h);
}

void hang_timer_clear(struct hang_lun *h, struct ev_timer *t)
{
	h->env->timer_del(hang_home(h), t);
	pthread_mutex_lock(&h->lock);
	*hang_timer_flag(h, t) = false;
	pthread_mutex_unlock(&h->lock);
}

static void hang_destroy(struct hang_lun *h)
{
	pthread_mutex_destroy(&h->lock);
	free(h->bg_buf);
	free(h);
}

/* Timer t of h fired.  Returns true with a LUN reference held (drop it
 * last), false if the LUN is going or gone (h may be freed then). */
static bool hang_timer_enter(struct hang_lun *h, struct ev_timer *t)
{
	bool ok;

	pthread_mutex_lock(&h->lock);
	*hang_timer_flag(h, t) = false;
	if (atomic_load(&h->dying)) {
		if (h->probe_armed)
			h->env->timer_del(hang_home(h), &h->probe_timer);
		if (h->timeout_armed)
			h->env->timer_del(hang_home(h), &h->timeout_timer);
		pthread_mutex_lock(&hang_orphans_lock);
		list_del(&h->orphan_link);
		pthread_mutex_unlock(&hang_orphans_lock);
		pthread_mutex_unlock(&h->lock);
		hang_destroy(h);
		return false;
	}
	/* while we hold h->lock, hang_lun_free() has not finished, so the
	 * LUN is still there to be looked at */
	ok = h->env->lun_tryget(h->lun);
	pthread_mutex_unlock(&h->lock);
	return ok;
}

/* ---- probes ---- */

static void hang_bg_done(struct be_io *io, int res)
{
	struct hang_lun *h = container_of(io, struct hang_lun, bg_io);
	struct scsi_lun *lun = h->lun;

	h->bg_inflight = false;
	if (hang_get_state(h) == HANG_FAILED) {
		if (res == 0) {
			/* a flush cannot tell whether writes work again */
			if (h->bg_io.op == BE_OP_FLUSH && h->op != BE_OP_FLUSH)
				atomic_store(&h->unproven, true);
			hang_recover(h, "background probe succeeded");
		} else {
			pthread_mutex_lock(&h->lock);
			h->err = -res;
			pthread_mutex_unlock(&h->lock);
			hang_arm_probe(h);
		}
	}
	h->env->lun_put(lun);	/* last: may free the LUN */
}

/* The failed-state probe: never a replay of a reported command. */
static void hang_bg_probe(struct hang_lun *h)
{
	struct scsi_lun *lun = h->lun;
	uint32_t bs = lun_settings_get(lun)->block_size ? lun_settings_get(lun)->block_size : 512;
	uint64_t lba = h->lba;

	if (h->bg_inflight || h->probe)
		return;
	memset(&h->bg_io, 0, sizeof(h->bg_io));
	h->bg_io.op = BE_OP_FLUSH;
	if (atomic_load(&h->err_op) == BE_OP_READ) {
		if (h->bg_buf_len < bs) {
			free(h->bg_buf);
			h->bg_buf_len = 0;
			if (posix_memalign(&h->bg_buf, 4096, bs) == 0)
				h->bg_buf_len = bs;
			else
				h->bg_buf = NULL;
		}
		if (lun->nblocks && lba >= lun->nblocks)
			lba = 0;
		if (h->bg_buf) {
			h->bg_iov.iov_base = h->bg_buf;
			h->bg_iov.iov_len = bs;
			h->bg_io.op = BE_OP_READ;
			h->bg_io.offset = lba * bs;
			h->bg_io.length = bs;
			h->bg_io.iov = &h->bg_iov;
			h->bg_io.iovcnt = 1;
		}
	}
	h->bg_io.done = hang_bg_done;
	h->bg_io.priv = lun;
	h->bg_inflight = true;
	pthread_mutex_lock(&h->lock);
	h->retries++;
	pthread_mutex_unlock(&h->lock);
	h->env->lun_get(lun);
	h->env->submit(lun, &h->bg_io, hang_home(h));
}

/* Probe now, whatever the interval and the pause flag say. */
void hang_probe_now(struct hang_lun *h)
{
	struct media_io *m;

	hang_timer_clear(h, &h->probe_timer);
	if (hang_get_state(h) == HANG_FAILED) {
		hang_bg_probe(h);
		return;
	}
again:
	if (hang_get_state(h) != HANG_HUNG || h->probe)
		return;
	if (list_empty(&h->held)) {
		/* aborts took every held command: the oldest queued one (never
		 * tried yet) becomes the probe; with nothing at all left the
		 * LUN is ok again (DESIGN.md: "nothing held") */
		if (list_empty(&h->queued)) {
			hang_recover(h, "nothing held");
			return;
		}
		m = list_first_entry(&h->queued, struct media_io, link);
		list_del(&m->link);
		hang_unaccount(h, m, false);
		hang_account(h, m, true);
	} else {
		m = list_first_entry(&h->held, struct media_io, link);
		list_del(&m->link);
	}
	if (hang_recheck_fails(h, m)) {
		hang_unaccount(h, m, true);
		goto again;
	}
	h->probe = m;
	pthread_mutex_lock(&h->lock);
	h->retries++;
	pthread_mutex_unlock(&h->lock);
	hang_m_set(m, HW_HOME_FLIGHT | HM_PROBE);
	list_add_tail(&m->link, &h->inflight);
	m->io.done = hang_home_io_done;
	m->io.priv = h->lun;
	h->env->submit(h->lun, &m->io, hang_home(h));
}

static void hang_probe_fire(struct ev_timer *t)
{
	struct hang_lun *h = t->arg;
	struct scsi_lun *lun;

	if (!hang_timer_enter(h, t))
		return;
	lun = h->lun;
	if (!atomic_load(&h->paused))
		hang_probe_now(h);
	h->env->lun_put(lun);	/* last: may free the LUN */
}

void hang_arm_probe(struct hang_lun *h)
{
	uint32_t iv = lun_settings_get(h->lun)->retry_interval_ms;

	if (atomic_load(&h->paused) || h->probe || h->bg_inflight)
		return;
	hang_timer_set(h, &h->probe_timer, iv ? iv : 1, hang_probe_fire);
}

static void hang_timeout_fire(struct ev_timer *t)
{
	struct hang_lun *h = t->arg;
	struct scsi_lun *lun;
	uint32_t to;

	if (!hang_timer_enter(h, t))
		return;
	lun = h->lun;
	/* re-read the setting: it may have changed during the episode */
	to = lun_settings_get(lun)->retry_timeout_ms;
	if (hang_get_state(h) != HANG_HUNG || !to)
		goto out;
	if (hang_now(h) - h->t0 < to) {
		hang_arm_timeout(h);
		goto out;
	}
	pthread_mutex_lock(&h->lock);
	h->timeouts++;
	pthread_mutex_unlock(&h->lock);
	hang_fail_all(h, "retry_timeout");
out:
	h->env->lun_put(lun);	/* last: may free the LUN */
}

/* (Re)arm the retry_timeout timer for the current episode; 0 = never. */
void hang_arm_timeout(struct hang_lun *h)
{
	uint64_t to = lun_settings_get(h->lun)->retry_timeout_ms, el;

	hang_timer_clear(h, &h->timeout_timer);
	if (!to || hang_get_state(h) != HANG_HUNG)
		return;
	el = hang_now(h) - h->t0;
	hang_timer_set(h, &h->timeout_timer, el >= to ? 0 : to - el,
		       hang_timeout_fire);
}

/* ---- life cycle ---- */

int hang_lun_init(struct scsi_lun *lun)
{
	struct hang_lun *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->lun = lun;
	h->env = hang_env_real();
	atomic_init(&h->state, HANG_OK);
	atomic_init(&h->home, NULL);
	atomic_init(&h->err_op, BE_OP_WRITE);
	list_init(&h->held);
	list_init(&h->queued);
	list_init(&h->inflight);
	h->max_cmds = HANG_MAX_HELD_CMDS;
	h->max_bytes = HANG_MAX_HELD_BYTES;
	pthread_mutex_init(&h->lock, NULL);
	lun->hang = h;
	return 0;
}

/* The last LUN reference is gone, so no command is with the engine, no
 * background probe is in flight and no message is on its way (each holds a
 * reference).  Only timers may still be armed on the home reactor: then
 * the next of them to fire frees h (hang_timer_enter). */
void hang_lun_free(struct scsi_lun *lun)
{
	struct hang_lun *h = lun->hang;
	bool armed;

	if (!h)
		return;
	lun->hang = NULL;
	pthread_mutex_lock(&h->lock);
	atomic_store(&h->dying, true);
	armed = h->probe_armed || h->timeout_armed;
	if (armed) {
		pthread_mutex_lock(&hang_orphans_lock);
		list_add_tail(&h->orphan_link, &hang_orphans);
		pthread_mutex_unlock(&hang_orphans_lock);
	}
	pthread_mutex_unlock(&h->lock);
	if (!armed)
		hang_destroy(h);
}
