/* hang_ctl.c - the hang engine's control side: ABORT TASK and task-set
 * drops (SAM-5 7 task management functions), operator verbs, run-time
 * setting changes and the show lines.
 *
 * Callers run on any thread; everything that touches the held / queued /
 * in-flight lists is a message to the LUN's home reactor (hang_internal.h),
 * and each message holds a LUN reference so the hang_lun outlives it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hang_internal.h"

/* ---- ABORT TASK ---- */

struct hang_abort_req {
	struct hang_lun *h;
	struct media_io *m;	/* compared, never dereferenced: m may be
				 * gone if its completion was on its way */
	uint64_t seq;
};

/* Find m in list by address and seq (seq is unique per LUN, so a new
 * command that reuses m's memory is never mistaken for it). */
static bool hang_list_has(struct list_head *list, struct media_io *m,
			  uint64_t seq)
{
	struct media_io *pos;

	list_for_each_entry(pos, list, link)
		if (pos == m && pos->seq == seq)
			return true;
	return false;
}

static void hang_abort_msg(void *arg)
{
	struct hang_abort_req *req = arg;
	struct hang_lun *h = req->h;
	struct scsi_lun *lun = h->lun;
	struct media_io *m = req->m;

	if (hang_list_has(&h->held, m, req->seq)) {
		list_del(&m->link);
		hang_unaccount(h, m, true);
		/* if nothing is held now, the next probe tick decides (see
		 * hang_after_probe()) */
		hang_complete(h, m, -ECANCELED);
	} else if (hang_list_has(&h->queued, m, req->seq)) {
		list_del(&m->link);
		hang_unaccount(h, m, false);
		hang_complete(h, m, -ECANCELED);
	} else if (hang_list_has(&h->inflight, m, req->seq)) {
		hang_m_set(m, hang_m_get(m) | HM_ABORTED);
	}
	/* else: its completion is already on its way with the real result */
	free(req);
	h->env->lun_put(lun);	/* last: may free the LUN */
}

void hang_abort(struct scsi_lun *lun, struct media_io *m)
{
	struct hang_lun *h = lun->hang;
	struct hang_abort_req *req;
	int w = hang_m_get(m);

	switch (w & HM_WHERE_MASK) {
	case HW_IDLE:
	case HW_COMPLETING:
		return;
	case HW_DIRECT:
		/* still ours: hang_direct_done() runs on this reactor */
		hang_m_set(m, w | HM_ABORTED);
		return;
	default:
		break;
	}
	/* m is with the home reactor, or on its way there: our message is
	 * queued behind it (reactor_call is FIFO per sender) */
	req = malloc(sizeof(*req));
	if (!req) {
		log_err("hang: LUN %llu: no memory to abort a command",
			(unsigned long long)lun_settings_get(lun)->lun);
		return;
	}
	req->h = h;
	req->m = m;
	req->seq = m->seq;
	h->env->lun_get(lun);
	hang_send_home(h, m->origin, hang_abort_msg, req);
}

/* ---- task-set drops ---- */

struct hang_nexus_req {
	struct hang_lun *h;
	uint64_t nexus;
	uint64_t seq;		/* lun->seq when asked */
	struct reactor *r;
	void (*done)(void *arg, unsigned dropped);
	void *arg;
	unsigned dropped;
};

static bool hang_in_scope(const struct hang_nexus_req *q,
			  const struct media_io *m)
{
	return (q->nexus == HANG_NEXUS_ALL || m->nexus_id == q->nexus) &&
	       m->seq < q->seq;
}

static void hang_nexus_done_msg(void *arg)
{
	struct hang_nexus_req *q = arg;

	q->done(q->arg, q->dropped);
	free(q);
}

static void hang_drop_list(struct hang_nexus_req *q, struct list_head *list,
			   bool held)
{
	struct media_io *m, *n;

	list_for_each_entry_safe(m, n, list, link) {
		if (!hang_in_scope(q, m))
			continue;
		list_del(&m->link);
		hang_unaccount(q->h, m, held);
		hang_complete(q->h, m, -ECANCELED);
		q->dropped++;
	}
}

static void hang_nexus_msg(void *arg)
{
	struct hang_nexus_req *q = arg;
	struct hang_lun *h = q->h;
	struct scsi_lun *lun = h->lun;
	struct media_io *m;

	/* remember the scope for commands still on their way here */
	h->drops[h->drop_next].nexus = q->nexus;
	h->drops[h->drop_next].seq = q->seq;
	h->drop_next = (h->drop_next + 1) % HANG_DROP_SLOTS;

	hang_drop_list(q, &h->held, true);
	hang_drop_list(q, &h->queued, false);
	list_for_each_entry(m, &h->inflight, link) {
		if (hang_in_scope(q, m) && !(hang_m_get(m) & HM_ABORTED)) {
			hang_m_set(m, hang_m_get(m) | HM_ABORTED);
			q->dropped++;
		}
	}
	if (hang_state(lun) == HANG_HUNG && list_empty(&h->held) && !h->probe)
		hang_recover(h, "task set dropped, nothing held");
	if (q->done)
		hang_call_or_die(h, q->r, hang_nexus_done_msg, q);
	else
		free(q);
	h->env->lun_put(lun);	/* last: may free the LUN */
}

int hang_abort_nexus(struct scsi_lun *lun, uint64_t nexus_id,
		     struct reactor *r,
		     void (*done)(void *arg, unsigned dropped), void *arg)
{
	struct hang_lun *h = lun->hang;
	struct hang_nexus_req *q;
	struct reactor *home;

	if (!h)
		return -ENODEV;
	if (done && !r)
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->h = h;
	q->nexus = nexus_id;
	q->seq = atomic_load(&lun->seq);
	q->r = r;
	q->done = done;
	q->arg = arg;
	home = hang_home(h);
	if (!home || !q->seq) {
		/* the LUN never needed its home reactor (nothing was ever
		 * held) or no command was ever numbered: nothing to drop */
		if (!done) {
			free(q);
			return 0;
		}
		if (h->env->call(r, hang_nexus_done_msg, q) < 0) {
			free(q);
			return -ENOMEM;
		}
		return 0;
	}
	h->env->lun_get(lun);
	if (h->env->call(home, hang_nexus_msg, q) < 0) {
		h->env->lun_put(lun);
		free(q);
		return -ENOMEM;
	}
	return 0;
}

/* ---- reset after a takeover ---- */

struct hang_reset_req {
	struct hang_lun *h;
	uint64_t seq;		/* lun->seq when asked */
	const char *why;
	void (*done)(void *arg);
	void *arg;
};

static void hang_reset_msg(void *arg)
{
	struct hang_reset_req *q = arg;
	struct hang_lun *h = q->h;
	struct scsi_lun *lun = h->lun;
	/* everything the engine has, whatever its number: the node was
	 * standby, so nothing it holds may still be sent */
	struct hang_nexus_req all = { .h = h, .nexus = HANG_NEXUS_ALL,
				      .seq = UINT64_MAX };
	enum hang_state was = hang_state(lun);
	struct media_io *m;

	/* commands still on their way here from other reactors */
	h->drops[h->drop_next].nexus = HANG_NEXUS_ALL;
	h->drops[h->drop_next].seq = q->seq;
	h->drop_next = (h->drop_next + 1) % HANG_DROP_SLOTS;

	hang_timer_clear(h, &h->probe_timer);
	hang_timer_clear(h, &h->timeout_timer);
	if (h->probe) {
		/* in the backend: no longer a probe, its result dropped
		 * (it is in the in-flight list, marked below) */
		hang_unaccount(h, h->probe, true);
		hang_m_set(h->probe, hang_m_get(h->probe) & ~HM_PROBE);
		h->probe = NULL;
	}
	hang_drop_list(&all, &h->held, true);
	hang_drop_list(&all, &h->queued, false);
	list_for_each_entry(m, &h->inflight, link)
		if (!(hang_m_get(m) & HM_ABORTED)) {
			hang_m_set(m, hang_m_get(m) | HM_ABORTED);
			all.dropped++;
		}
	hang_reset_state(h, q->why);
	log_info("hang: %s LUN %llu: state reset (%s): was %s, %u held or "
		 "queued command(s) dropped",
		 lun->target_name[0] ? lun->target_name : "-",
		 (unsigned long long)lun_settings_get(lun)->lun, q->why,
		 hang_state_name(was), all.dropped);
	if (q->done)
		q->done(q->arg);
	free(q);
	h->env->lun_put(lun);	/* last: may free the LUN */
}

int hang_reset(struct scsi_lun *lun, const char *why,
	       void (*done)(void *arg), void *arg)
{
	struct hang_lun *h = lun->hang;
	struct hang_reset_req *q;
	struct reactor *home;

	if (!h || !(home = hang_home(h))) {
		/* no home reactor: the LUN never left ok and holds nothing;
		 * only the operator's pause may be set */
		if (h)
			atomic_store(&h->paused, false);
		if (done)
			done(arg);
		return 0;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->h = h;
	q->seq = atomic_load(&lun->seq);
	q->why = why;
	q->done = done;
	q->arg = arg;
	h->env->lun_get(lun);
	if (h->env->call(home, hang_reset_msg, q) < 0) {
		h->env->lun_put(lun);
		free(q);
		return -ENOMEM;
	}
	return 0;
}

/* ---- operator verbs and setting changes ---- */

enum hang_verb_code { HV_PAUSE, HV_RESUME, HV_RETRY, HV_FAIL, HV_SETTINGS };

struct hang_verb_req {
	struct hang_lun *h;
	enum hang_verb_code code;
};

static void hang_verb_msg(void *arg)
{
	struct hang_verb_req *v = arg;
	struct hang_lun *h = v->h;
	struct scsi_lun *lun = h->lun;
	enum hang_state st = hang_state(lun);

	switch (v->code) {
	case HV_PAUSE:
		hang_timer_clear(h, &h->probe_timer);
		break;
	case HV_RESUME:
		if (st != HANG_OK)
			hang_arm_probe(h);
		break;
	case HV_RETRY:
		hang_probe_now(h);
		break;
	case HV_FAIL:
		hang_fail_all(h, "operator");
		break;
	case HV_SETTINGS:
		if (st == HANG_OK)
			break;
		if (!hang_retryable(lun,
				    (enum be_op)atomic_load(&h->err_op),
				    -h->err)) {
			/* the policy (or the error list) no longer holds
			 * this error: report now, as a new error would be */
			if (st == HANG_HUNG)
				hang_fail_all(h, "policy changed");
			else
				hang_recover(h, "policy changed");
		} else if (st == HANG_HUNG) {
			hang_arm_timeout(h);
		}
		break;
	}
	free(v);
	h->env->lun_put(lun);	/* last: may free the LUN */
}

static int hang_send_verb(struct scsi_lun *lun, enum hang_verb_code code)
{
	struct hang_lun *h = lun->hang;
	struct hang_verb_req *v;
	struct reactor *home = hang_home(h);

	if (!home)
		return 0;	/* never left ok: nothing to act on */
	v = malloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->h = h;
	v->code = code;
	h->env->lun_get(lun);
	if (h->env->call(home, hang_verb_msg, v) < 0) {
		h->env->lun_put(lun);
		free(v);
		return -ENOMEM;
	}
	return 0;
}

int hang_verb(struct scsi_lun *lun, const char *verb)
{
	struct hang_lun *h = lun->hang;

	if (!h)
		return -ENODEV;
	if (strcmp(verb, "pause") == 0) {
		atomic_store(&h->paused, true);
		return hang_send_verb(lun, HV_PAUSE);
	}
	if (strcmp(verb, "resume") == 0) {
		atomic_store(&h->paused, false);
		return hang_send_verb(lun, HV_RESUME);
	}
	if (strcmp(verb, "retry") == 0)
		return hang_send_verb(lun, HV_RETRY);
	if (strcmp(verb, "fail") == 0)
		return hang_send_verb(lun, HV_FAIL);
	return -EINVAL;
}

void hang_settings_changed(struct scsi_lun *lun)
{
	if (lun->hang)
		hang_send_verb(lun, HV_SETTINGS);
}

void hang_set_recheck(struct scsi_lun *lun, int (*recheck)(struct media_io *m))
{
	if (lun->hang)
		__atomic_store_n(&lun->hang->recheck, recheck, __ATOMIC_RELEASE);
}

/* ---- show ---- */

static void hang_fmt_secs(char *buf, size_t len, uint64_t ms)
{
	snprintf(buf, len, "%llu.%llus", (unsigned long long)ms / 1000,
		 (unsigned long long)ms % 1000 / 100);
}

static void hang_fmt_error(char *buf, size_t len, int err, enum be_op op,
			   uint64_t lba)
{
	const char *n = strerrorname_np(err);

	if (op == BE_OP_FLUSH)
		snprintf(buf, len, "%s on flush", n ? n : "E?");
	else
		snprintf(buf, len, "%s on %s at LBA %llu", n ? n : "E?",
			 hang_op_name(op), (unsigned long long)lba);
}

int hang_describe(struct scsi_lun *lun, char *buf, unsigned len)
{
	struct hang_lun *h = lun->hang, s;
	enum hang_state st;
	char since[32], longest[32], err[96];
	uint64_t now;
	int n;

	if (!h) {
		n = snprintf(buf, len, "        Hang state: ok\n");
		return n < 0 || (unsigned)n >= len ? -ENOSPC : n;
	}
	pthread_mutex_lock(&h->lock);
	st = (enum hang_state)atomic_load(&h->state);
	s.nheld = h->nheld;
	s.nqueued = h->nqueued;
	s.bytes = h->bytes;
	s.t0 = h->t0;
	s.since = h->since;
	s.have_err = h->have_err;
	s.err = h->err;
	s.op = h->op;
	s.lba = h->lba;
	s.episodes = h->episodes;
	s.retries = h->retries;
	s.recoveries = h->recoveries;
	s.timeouts = h->timeouts;
	s.longest_ms = h->longest_ms;
	pthread_mutex_unlock(&h->lock);
	now = h->env->now_ms(NULL);

	if (s.have_err)
		hang_fmt_error(err, sizeof(err), s.err, s.op, s.lba);
	else
		snprintf(err, sizeof(err), "none");
	if (st == HANG_HUNG && now - s.t0 > s.longest_ms)
		s.longest_ms = now - s.t0;
	hang_fmt_secs(since, sizeof(since),
		      now - (st == HANG_HUNG ? s.t0 : s.since));
	hang_fmt_secs(longest, sizeof(longest), s.longest_ms);
	if (st == HANG_OK)
		n = snprintf(buf, len, "        Hang state: ok%s\n",
			     atomic_load(&h->unproven) ?
				     " (no write succeeded since a flush probe)" :
				     "");
	else
		n = snprintf(buf, len, "        Hang state: %s since %s (%s)\n",
			     hang_state_name(st), since, err);
	if (n < 0 || (unsigned)n >= len)
		return -ENOSPC;
	n += snprintf(buf + n, len - n,
		      "        Hang held: %u, queued: %u, bytes: %llu\n"
		      "        Hang last error: %s\n"
		      "        Hang counters: episodes %llu, retries %llu, "
		      "recoveries %llu, timeouts %llu, longest hang %s\n"
		      "        Hang probing: %s\n",
		      s.nheld, s.nqueued, (unsigned long long)s.bytes, err,
		      (unsigned long long)s.episodes,
		      (unsigned long long)s.retries,
		      (unsigned long long)s.recoveries,
		      (unsigned long long)s.timeouts, longest,
		      atomic_load(&h->paused) ? "paused" : "active");
	if (n < 0 || (unsigned)n >= len)
		return -ENOSPC;
	return n;
}
