/* scsi_cmd.c - command dispatch, Data-In buffers, abort and unit attentions.
 *
 * scsi_cmd_exec() looks the CDB up in one table of supported commands
 * (opcode, service action, CDB length, flags, handler).  The checks every
 * command shares run here, in the order SAM-5 5.14 / SPC-4 expect:
 * logical unit present, pending unit attention, LUN online, write protect;
 * then the handler decodes the rest of its CDB. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "reactor.h"
#include "scsi_internal.h"
#include "scsi_pr.h"
#include "util.h"

/* CDB control byte (SAM-5 5.2): NACA is not supported (no ACA). */
#define CDB_CONTROL_NACA 0x04

/* ---- buffers ---- */

#define SCSI_BUF_ALIGN 4096

/* Data buffers are recycled per thread in power-of-two size classes from
 * 4 KiB to 128 KiB (a 4 KiB read is the common case; larger ones pay for
 * themselves anyway).  A buffer joins the largest class that its usable
 * size covers, so any 4 KiB-aligned buffer this file handed out may be
 * kept; each class holds at most ~2 MiB per thread. */
#define SCSI_BUF_CLASS_MIN_SHIFT 12
#define SCSI_BUF_CLASSES 6
#define SCSI_BUF_CLASS_BYTES (2u << 20)
static __thread struct free_list scsi_buf_cache[SCSI_BUF_CLASSES];

/* The class a request of len bytes is served from, or -1. */
static int scsi_buf_class(size_t len)
{
	int c = 0;

	while (((size_t)1 << (SCSI_BUF_CLASS_MIN_SHIFT + c)) < len)
		if (++c == SCSI_BUF_CLASSES)
			return -1;
	return c;
}

static void *scsi_buf_get(uint32_t len)
{
	int c = scsi_buf_class(len);
	void *p;

	if (c >= 0) {
		p = free_list_pop(&scsi_buf_cache[c]);
		if (p)
			return p;
		len = 1u << (SCSI_BUF_CLASS_MIN_SHIFT + c);
	}
	if (posix_memalign(&p, SCSI_BUF_ALIGN, len ? len : 1))
		return NULL;
	return p;
}

void *scsi_buf_alloc(uint32_t len)
{
	void *p = scsi_buf_get(len);

	if (p)
		memset(p, 0, len);
	return p;
}

void *scsi_buf_alloc_uninit(uint32_t len)
{
	return scsi_buf_get(len);
}

void scsi_buf_free(void *p)
{
	size_t usable;
	int c;

	if (!p)
		return;
	usable = malloc_usable_size(p);
	/* Too small, not aligned for O_DIRECT, or so large (a 1 MiB
	 * transfer) that keeping it as a 128 KiB buffer would waste most of
	 * it: back to malloc. */
	if (usable < ((size_t)1 << SCSI_BUF_CLASS_MIN_SHIFT) ||
	    usable >= ((size_t)2 << (SCSI_BUF_CLASS_MIN_SHIFT +
				     SCSI_BUF_CLASSES - 1)) ||
	    ((uintptr_t)p & (SCSI_BUF_ALIGN - 1))) {
		free(p);
		return;
	}
	/* the largest class that usable covers (malloc may round up) */
	c = SCSI_BUF_CLASSES - 1;
	while (((size_t)1 << (SCSI_BUF_CLASS_MIN_SHIFT + c)) > usable)
		c--;
	free_list_put(&scsi_buf_cache[c], p,
		      SCSI_BUF_CLASS_BYTES >> (SCSI_BUF_CLASS_MIN_SHIFT + c));
}

bool scsi_buf_charge(struct scsi_cmd *cmd, uint32_t len)
{
	return !len || !cmd->buf_charge || cmd->buf_charge(cmd, len);
}

void *scsi_work_alloc(struct scsi_cmd *cmd, uint32_t len)
{
	void *p;

	if (!scsi_buf_charge(cmd, len))
		return NULL;
	if (posix_memalign(&p, SCSI_BUF_ALIGN, len ? len : 1))
		return NULL;
	return p;
}

int scsi_buf_ensure(struct scsi_cmd *cmd, uint32_t len)
{
	if (cmd->buf && cmd->buf_len >= len)
		return 0;
	/* beyond what the transport counted for the data buffer */
	if (len > cmd->buf_counted) {
		if (!scsi_buf_charge(cmd, len - cmd->buf_counted))
			return -ENOMEM;
		cmd->buf_counted = len;
	}
	/* A Data-In buffer the transport pre-allocated is ours to replace:
	 * it is freed with scsi_buf_free() after done() either way.  Not
	 * zeroed: only in_len bytes are ever sent, and those are written
	 * by the handler or the backend's read first (saves a memset of up
	 * to SBC_MAX_TRANSFER_BYTES per READ). */
	void *b = scsi_buf_get(len);
	if (!b)
		return -ENOMEM;
	scsi_buf_free(cmd->buf);
	cmd->buf = b;
	cmd->buf_len = len;
	return 0;
}

enum scsi_exec_result scsi_data_in(struct scsi_cmd *cmd, const uint8_t *data,
				   uint32_t len, uint32_t alloc_len)
{
	uint32_t n = MIN(len, alloc_len);

	cmd->status = SAM_STAT_GOOD;
	cmd->in_len = 0;
	if (!n)
		return SCSI_EXEC_DONE;
	if (scsi_buf_ensure(cmd, n) < 0) {
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	memcpy(cmd->buf, data, n);
	cmd->in_len = n;
	return SCSI_EXEC_DONE;
}

/* ---- unit attentions (SAM-5 5.14, SPC-4 5.14 / 7.5.2) ----
 *
 * Each LUN keeps, per I_T nexus that has touched it, a short queue of
 * pending unit attentions.  A nexus seen for the first time starts with
 * POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.  Checking for a pending
 * UA is on every command's path, so a per-thread cache remembers "nothing
 * pending for (LUN, nexus) at ua_gen G"; raising a UA bumps lun->ua_gen,
 * which invalidates every cache entry of that LUN. */

#define UA_MAX_PENDING 8	/* older ones are dropped (SPC-4 allows it) */
#define UA_MAX_NEXUS 4096	/* bound per LUN; evicted nexuses re-register */
#define UA_CACHE_SLOTS 64

struct ua_nexus {
	struct ua_nexus *next;
	uint64_t nexus_id;
	unsigned n;
	uint16_t pending[UA_MAX_PENDING];
	bool prevent;		/* PREVENT MEDIUM REMOVAL from this nexus */
};

struct caw_waiter {
	struct caw_waiter *next;
	struct scsi_cmd *cmd;
	struct reactor *r;
	scsi_handler_fn start;	/* NULL: a gated write (resumes to hang_submit) */
};

struct scsi_lun_state {
	pthread_mutex_t lock;
	uint64_t instance;	/* unique per state, never reused */
	struct ua_nexus *nexus;	/* most recently registered first */
	unsigned nr_nexus;
	/* COMPARE AND WRITE serialization (see scsi_caw_lock) */
	bool caw_busy;
	struct caw_waiter *caw_head, *caw_tail;
	/* the write gate: plain writes in flight, and exclusive operations
	 * wanting or holding the lock (scsi_write_gate_enter) */
	atomic_uint writers;
	atomic_uint excl_wanted;
	struct caw_waiter *wr_head, *wr_tail;
	struct scsi_pr *pr;	/* reservations (scsi_pr.c) */
	struct scsi_alua *alua;	/* two-node handover (scsi_alua.c) */
	bool medium_removed;	/* removable LUN ejected (START STOP UNIT) */
};

static atomic_uint_fast64_t ua_instance_counter = 1;

struct ua_cache_slot {
	uint64_t instance;
	uint64_t nexus_id;
	unsigned gen;
};
static __thread struct ua_cache_slot ua_cache[UA_CACHE_SLOTS];

static struct scsi_lun_state *lun_state(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = __atomic_load_n(&lun->scsi,
						   __ATOMIC_ACQUIRE);
	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	s->instance = atomic_fetch_add(&ua_instance_counter, 1);
	struct scsi_lun_state *expected = NULL;
	if (!__atomic_compare_exchange_n(&lun->scsi, &expected, s, false,
					 __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		pthread_mutex_destroy(&s->lock);
		free(s);
		return expected;
	}
	return s;
}

void scsi_lun_state_free(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = lun->scsi;

	if (!s)
		return;
	while (s->nexus) {
		struct ua_nexus *n = s->nexus;
		s->nexus = n->next;
		free(n);
	}
	while (s->caw_head) {	/* none: every command holds a reference */
		struct caw_waiter *w = s->caw_head;
		s->caw_head = w->next;
		free(w);
	}
	scsi_pr_free(s->pr);
	scsi_alua_free(s->alua);
	pthread_mutex_destroy(&s->lock);
	free(s);
	lun->scsi = NULL;
}

static void ua_push(struct ua_nexus *n, uint16_t asc_ascq)
{
	for (unsigned i = 0; i < n->n; i++)
		if (n->pending[i] == asc_ascq)
			return;
	if (n->n == UA_MAX_PENDING) {
		memmove(n->pending, n->pending + 1,
			sizeof(n->pending[0]) * (UA_MAX_PENDING - 1));
		n->n--;
	}
	n->pending[n->n++] = asc_ascq;
}

/* Find or register nexus_id; called with s->lock held. */
static struct ua_nexus *ua_nexus_get(struct scsi_lun_state *s,
				     uint64_t nexus_id)
{
	struct ua_nexus *n, **pp;

	for (n = s->nexus; n; n = n->next)
		if (n->nexus_id == nexus_id)
			return n;
	if (s->nr_nexus >= UA_MAX_NEXUS) {
		/* Drop the oldest registration (the list tail). */
		for (pp = &s->nexus; (*pp)->next; pp = &(*pp)->next)
			;
		free(*pp);
		*pp = NULL;
		s->nr_nexus--;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->nexus_id = nexus_id;
	ua_push(n, ASC_POWER_ON_RESET);
	n->next = s->nexus;
	s->nexus = n;
	s->nr_nexus++;
	return n;
}

bool scsi_ua_take(struct scsi_lun *lun, uint64_t nexus_id, uint16_t *asc_ascq)
{
	struct scsi_lun_state *s = lun_state(lun);
	bool found = false;

	if (!s)
		return false;
	unsigned gen = atomic_load(&lun->ua_gen);
	struct ua_cache_slot *c =
		&ua_cache[(s->instance * 31 + nexus_id) % UA_CACHE_SLOTS];
	if (c->instance == s->instance && c->nexus_id == nexus_id &&
	    c->gen == gen)
		return false;

	pthread_mutex_lock(&s->lock);
	struct ua_nexus *n = ua_nexus_get(s, nexus_id);
	if (n && n->n) {
		*asc_ascq = n->pending[0];
		memmove(n->pending, n->pending + 1,
			sizeof(n->pending[0]) * (n->n - 1));
		n->n--;
		found = true;
	}
	bool clear = n && !n->n;
	pthread_mutex_unlock(&s->lock);
	if (clear) {
		c->instance = s->instance;
		c->nexus_id = nexus_id;
		c->gen = gen;
	}
	return found;
}

void scsi_ua_raise(struct scsi_lun *lun, uint16_t asc_ascq, uint64_t except)
{
	struct scsi_lun_state *s = lun_state(lun);

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	for (struct ua_nexus *n = s->nexus; n; n = n->next)
		if (n->nexus_id != except || !except)
			ua_push(n, asc_ascq);
	/* Bump after queueing: a reader that cached "nothing pending" at the
	 * old generation misses its cache from now on. */
	atomic_fetch_add(&lun->ua_gen, 1);
	pthread_mutex_unlock(&s->lock);
}

void scsi_ua_raise_nexus(struct scsi_lun *lun, uint16_t asc_ascq,
			 uint64_t nexus_id)
{
	struct scsi_lun_state *s = lun_state(lun);
	struct ua_nexus *n;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	n = ua_nexus_get(s, nexus_id);
	if (n)
		ua_push(n, asc_ascq);
	atomic_fetch_add(&lun->ua_gen, 1);
	pthread_mutex_unlock(&s->lock);
}

struct scsi_pr **scsi_lun_pr_slot(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = lun_state(lun);

	return s ? &s->pr : NULL;
}

struct scsi_alua **scsi_lun_alua_slot(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = lun_state(lun);

	return s ? &s->alua : NULL;
}

/* ---- removable medium (SBC-3 5.11 / 5.25) ----
 * A LUN set removable can be ejected and loaded with START STOP UNIT;
 * PREVENT ALLOW MEDIUM REMOVAL is per I_T nexus and any nexus preventing
 * it makes an eject fail.  Resets and nexus loss clear prevention. */

bool scsi_medium_present(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = __atomic_load_n(&lun->scsi,
						   __ATOMIC_ACQUIRE);

	return !s || !__atomic_load_n(&s->medium_removed, __ATOMIC_ACQUIRE);
}

int scsi_medium_load_eject(struct scsi_lun *lun, bool load)
{
	struct scsi_lun_state *s = lun_state(lun);
	int ret = 0;

	if (!s)
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	for (struct ua_nexus *n = s->nexus; n; n = n->next)
		if (n->prevent)
			ret = -EBUSY;
	if (!ret)
		__atomic_store_n(&s->medium_removed, !load, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

void scsi_medium_prevent(struct scsi_lun *lun, uint64_t nexus_id,
			 bool prevent)
{
	struct scsi_lun_state *s = lun_state(lun);

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	struct ua_nexus *n = ua_nexus_get(s, nexus_id);
	if (n)
		n->prevent = prevent;
	pthread_mutex_unlock(&s->lock);
}

/* nexus_id 0: every nexus (a reset). */
static void medium_allow(struct scsi_lun *lun, uint64_t nexus_id)
{
	struct scsi_lun_state *s = __atomic_load_n(&lun->scsi,
						   __ATOMIC_ACQUIRE);

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	for (struct ua_nexus *n = s->nexus; n; n = n->next)
		if (!nexus_id || n->nexus_id == nexus_id)
			n->prevent = false;
	pthread_mutex_unlock(&s->lock);
}

/* A lost I_T nexus never comes back (nexus ids are never reused), so its
 * registration goes with it: its PREVENT ends (SPC-4 6.13) and its
 * pending unit attentions can never be reported.  Kept, registrations of
 * dead nexuses piled up to UA_MAX_NEXUS per LUN and every command of a
 * session older than them walked past them all under the LUN's lock
 * (found by fuzz_conn: a long fuzzing run slowed down session by
 * session). */
void scsi_medium_nexus_lost(struct scsi_lun *lun, uint64_t nexus_id)
{
	struct scsi_lun_state *s = __atomic_load_n(&lun->scsi,
						   __ATOMIC_ACQUIRE);

	if (!s || !nexus_id)
		return;
	pthread_mutex_lock(&s->lock);
	for (struct ua_nexus **pp = &s->nexus; *pp; pp = &(*pp)->next) {
		struct ua_nexus *n = *pp;

		if (n->nexus_id == nexus_id) {
			*pp = n->next;
			free(n);
			s->nr_nexus--;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

void scsi_lun_reset_ua(struct scsi_lun *lun, const struct scsi_nexus *by)
{
	/* SPC-4 6.13: a reset ends every PREVENT MEDIUM REMOVAL. */
	medium_allow(lun, 0);
	/* SPC-2 5.5.1: resets end an SPC-2 RESERVE (not persistent ones) */
	scsi_pr_reset(lun);
	/* SAM-5 5.14 / 6.3: after a LOGICAL UNIT RESET every I_T nexus,
	 * the requester's included, sees BUS DEVICE RESET FUNCTION OCCURRED;
	 * a reset by the target itself (power on, reopen) is POWER ON,
	 * RESET, OR BUS DEVICE RESET OCCURRED. */
	scsi_ua_raise(lun, by ? ASC_BUS_DEVICE_RESET_FUNCTION
			      : ASC_POWER_ON_RESET, 0);
}

void scsi_lun_notify(struct scsi_lun *lun, enum scsi_lun_event ev)
{
	switch (ev) {
	case SCSI_EV_CAPACITY_CHANGED:
		scsi_ua_raise(lun, ASC_CAPACITY_DATA_CHANGED, 0);
		break;
	case SCSI_EV_LUNS_CHANGED:
		scsi_ua_raise(lun, ASC_REPORTED_LUNS_DATA_CHANGED, 0);
		break;
	case SCSI_EV_MODE_CHANGED:
		scsi_ua_raise(lun, ASC_MODE_PARAMETERS_CHANGED, 0);
		break;
	}
}

/* ---- COMPARE AND WRITE serialization ----
 * SBC-3 5.2 wants the compare and the write to be one atomic operation.
 * COMPARE AND WRITE commands of a LUN therefore run one at a time, from
 * any session or reactor: the others wait in arrival order and are resumed
 * on their own reactor when the running one unlocks. */

bool scsi_caw_lock(struct scsi_cmd *cmd, scsi_handler_fn start)
{
	struct scsi_lun_state *s = lun_state(cmd->lun);

	if (!s)
		return true;	/* no memory for state: run unserialized */
	pthread_mutex_lock(&s->lock);
	/* announce first: plain writes arriving from now on wait */
	atomic_fetch_add(&s->excl_wanted, 1);
	if (!s->caw_busy && atomic_load(&s->writers) == 0) {
		s->caw_busy = true;
		pthread_mutex_unlock(&s->lock);
		cmd->gate_excl = true;
		return true;
	}
	struct caw_waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		atomic_fetch_sub(&s->excl_wanted, 1);
		pthread_mutex_unlock(&s->lock);
		return true;
	}
	w->cmd = cmd;
	w->r = reactor_current();
	w->start = start;
	if (s->caw_tail)
		s->caw_tail->next = w;
	else
		s->caw_head = w;
	s->caw_tail = w;
	cmd->stage = SCSI_STAGE_WAIT;
	pthread_mutex_unlock(&s->lock);
	return false;
}

static void caw_resume(void *arg)
{
	struct caw_waiter *w = arg;
	struct scsi_cmd *cmd = w->cmd;
	scsi_handler_fn start = w->start;

	free(w);
	/* Aborted after it was handed the lock: pass the lock on. */
	if (cmd->aborted) {
		scsi_caw_unlock(cmd->lun);
		scsi_cmd_complete(cmd);
		return;
	}
	cmd->stage = SCSI_STAGE_EXEC;
	cmd->gate_excl = true;
	if (start(cmd) == SCSI_EXEC_DONE)
		scsi_cmd_complete(cmd);
}

static void gate_resume(void *arg);

/* Hand the lock to the next exclusive waiter if no plain write is in
 * flight; with nobody exclusive left, let the waiting writes go.  Called
 * with s->lock held and caw_busy false; returns the waiters to resume. */
static void gate_next(struct scsi_lun_state *s, struct caw_waiter **excl,
		      struct caw_waiter **writes)
{
	*excl = NULL;
	*writes = NULL;
	if (s->caw_head) {
		if (atomic_load(&s->writers) != 0)
			return;	/* the last write out starts it */
		*excl = s->caw_head;
		s->caw_head = (*excl)->next;
		if (!s->caw_head)
			s->caw_tail = NULL;
		(*excl)->cmd->stage = SCSI_STAGE_RESUMING;
		s->caw_busy = true;
		return;
	}
	if (atomic_load(&s->excl_wanted) == 0 && s->wr_head) {
		unsigned n = 0;

		for (struct caw_waiter *w = s->wr_head; w; w = w->next) {
			w->cmd->stage = SCSI_STAGE_RESUMING;
			n++;
		}
		atomic_fetch_add(&s->writers, n);
		*writes = s->wr_head;
		s->wr_head = s->wr_tail = NULL;
	}
}

static void gate_wake(struct caw_waiter *excl, struct caw_waiter *writes)
{
	if (excl && (!excl->r || reactor_call(excl->r, caw_resume, excl) < 0))
		caw_resume(excl);	/* tests (no reactor), or out of memory */
	while (writes) {
		struct caw_waiter *w = writes;

		writes = w->next;
		if (!w->r || reactor_call(w->r, gate_resume, w) < 0)
			gate_resume(w);
	}
}

void scsi_caw_unlock(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = lun_state(lun);
	struct caw_waiter *excl, *writes;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	atomic_fetch_sub(&s->excl_wanted, 1);
	s->caw_busy = false;
	gate_next(s, &excl, &writes);
	pthread_mutex_unlock(&s->lock);
	gate_wake(excl, writes);
}

/* ---- the write gate ----
 * SBC-3 5.2: COMPARE AND WRITE (and ORWRITE, WRITE ATOMIC) must be atomic
 * against every other write to those blocks.  They hold the lock above
 * exclusively; every other media write holds it shared through this gate.
 * The healthy path costs two atomic operations and no lock: a write counts
 * itself in, then checks that nobody exclusive has announced itself (both
 * sides use sequentially consistent atomics, so one of them always sees
 * the other); only while an exclusive operation waits or runs do writes
 * queue, in arrival order, to be resumed on their own reactor. */

bool scsi_write_gate_enter(struct scsi_cmd *cmd)
{
	struct scsi_lun_state *s = lun_state(cmd->lun);

	if (!s)
		return true;
	if (atomic_load(&s->excl_wanted) == 0) {
		atomic_fetch_add(&s->writers, 1);
		if (atomic_load(&s->excl_wanted) == 0)
			return true;
		scsi_write_gate_exit(cmd->lun);	/* lost the race: back off */
	}
	pthread_mutex_lock(&s->lock);
	if (atomic_load(&s->excl_wanted) == 0) {
		atomic_fetch_add(&s->writers, 1);
		pthread_mutex_unlock(&s->lock);
		return true;
	}
	struct caw_waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		/* no memory to wait: go now (atomicity best effort) */
		atomic_fetch_add(&s->writers, 1);
		pthread_mutex_unlock(&s->lock);
		return true;
	}
	w->cmd = cmd;
	w->r = reactor_current();
	if (s->wr_tail)
		s->wr_tail->next = w;
	else
		s->wr_head = w;
	s->wr_tail = w;
	cmd->stage = SCSI_STAGE_WAIT;
	pthread_mutex_unlock(&s->lock);
	return false;
}

void scsi_write_gate_join(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = lun_state(lun);

	if (s)
		atomic_fetch_add(&s->writers, 1);
}

bool scsi_write_gate_idle(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = lun_state(lun);
	bool idle;

	if (!s)
		return true;
	pthread_mutex_lock(&s->lock);
	idle = atomic_load(&s->writers) == 0 && !s->caw_busy;
	pthread_mutex_unlock(&s->lock);
	return idle;
}

void scsi_write_gate_exit(struct scsi_lun *lun)
{
	struct scsi_lun_state *s = lun_state(lun);
	struct caw_waiter *excl, *writes;

	if (!s)
		return;
	if (atomic_fetch_sub(&s->writers, 1) != 1 ||
	    atomic_load(&s->excl_wanted) == 0)
		return;
	/* the last write out while an exclusive operation waits */
	pthread_mutex_lock(&s->lock);
	if (s->caw_busy) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	gate_next(s, &excl, &writes);
	pthread_mutex_unlock(&s->lock);
	gate_wake(excl, writes);
}

static void gate_resume(void *arg)
{
	struct caw_waiter *w = arg;
	struct scsi_cmd *cmd = w->cmd;

	free(w);
	if (cmd->aborted) {
		scsi_write_gate_exit(cmd->lun);
		scsi_cmd_complete(cmd);
		return;
	}
	cmd->mio.seq = atomic_fetch_add(&cmd->lun->seq, 1);
	cmd->stage = SCSI_STAGE_MEDIA;
	hang_submit(cmd->lun, &cmd->mio);
}

/* Abort of a command waiting for the COMPARE AND WRITE lock: true if it
 * was still queued (removed; the caller answers at once). */
static bool caw_dequeue(struct scsi_cmd *cmd)
{
	struct scsi_lun_state *s = lun_state(cmd->lun);
	bool found = false;

	pthread_mutex_lock(&s->lock);
	if (cmd->stage == SCSI_STAGE_WAIT) {
		struct caw_waiter **heads[2] = { &s->caw_head, &s->wr_head };
		struct caw_waiter **tails[2] = { &s->caw_tail, &s->wr_tail };

		for (int q = 0; q < 2 && !found; q++) {
			struct caw_waiter **pp, *prev = NULL;

			for (pp = heads[q]; *pp; prev = *pp, pp = &(*pp)->next) {
				if ((*pp)->cmd != cmd)
					continue;
				struct caw_waiter *w = *pp;
				*pp = w->next;
				if (*tails[q] == w)
					*tails[q] = prev;
				free(w);
				found = true;
				break;
			}
			/* an exclusive waiter that gives up no longer wants
			 * the lock; the writes behind it may go */
			if (found && q == 0)
				atomic_fetch_sub(&s->excl_wanted, 1);
		}
	}
	struct caw_waiter *excl = NULL, *writes = NULL;

	if (found && !s->caw_busy)
		gate_next(s, &excl, &writes);
	pthread_mutex_unlock(&s->lock);
	gate_wake(excl, writes);
	return found;
}

/* ---- execution ---- */

static void cmd_finish(struct scsi_cmd *cmd)
{
	cmd->stage = SCSI_STAGE_DONE;
	cmd->done(cmd);
}

void scsi_cmd_complete(struct scsi_cmd *cmd)
{
	if (cmd->aborted) {
		cmd->status = SAM_STAT_TASK_ABORTED;
		cmd->sense_len = 0;
		cmd->in_len = 0;
	}
	cmd_finish(cmd);
}

void scsi_cmd_exec(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint16_t ua;

	/* Aborted before it was executed: done() has already been called. */
	if (cmd->stage != SCSI_STAGE_NEW)
		return;
	cmd->stage = SCSI_STAGE_EXEC;
	cmd->status = SAM_STAT_GOOD;
	cmd->sense_len = 0;
	cmd->in_len = 0;
	cmd->out_want = 0;

	const struct scsi_op_desc *d = scsi_op_lookup(lun, cmd->cdb);

	if (!lun && !(d && (d->flags & SCSI_OPF_NO_LUN))) {
		/* SPC-4 4.6.4: commands to an absent LUN other than INQUIRY,
		 * REPORT LUNS and REQUEST SENSE fail this way.  LUN 0 is the
		 * target's controller: it exists but serves no media. */
		if (cmd->lun_id == 0)
			scsi_sense_field(cmd, ASC_INVALID_OPCODE, true, 0, -1);
		else
			scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
				   ASC_LUN_NOT_SUPPORTED);
		goto out;
	}
	if (lun && !(d && (d->flags & SCSI_OPF_NO_UA)) &&
	    scsi_ua_take(lun, cmd->nexus ? cmd->nexus->id : 0, &ua)) {
		scsi_sense(cmd, SENSE_KEY_UNIT_ATTENTION, ua);
		goto out;
	}
	if (!d && scsi_pr_bad_service_action(cmd))
		goto out;
	if (!d) {
		scsi_sense_field(cmd, ASC_INVALID_OPCODE, true,
				 (cmd->cdb[0] == SCSI_OP_SERVICE_ACTION_IN_16 ||
				  cmd->cdb[0] == SCSI_OP_MAINTENANCE_IN) ? 1 : 0,
				 -1);
		goto out;
	}
	if (cmd->cdb[d->cdb_len - 1] & CDB_CONTROL_NACA) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 d->cdb_len - 1, 2);
		goto out;
	}
	/* SPC-4 5.13.1 / SPC-2 5.5.1: RESERVATION CONFLICT */
	if (lun && scsi_pr_conflict(cmd))
		goto out;
	/* one settings snapshot for the checks of this command */
	const struct lun_settings *set = lun ? lun_settings_get(lun) : NULL;

	/* SPC-4 5.15.2.4: a standby or transitioning port (the other node
	 * owns the store) serves no media */
	if (lun && set->alua_group && scsi_alua_refuse(cmd, d->flags))
		goto out;
	if (lun && (d->flags & SCSI_OPF_NEEDS_READY) && !set->online) {
		scsi_sense(cmd, SENSE_KEY_NOT_READY,
			   ASC_LUN_NOT_READY_MANUAL_INTERVENTION);
		goto out;
	}
	if (lun && (d->flags & SCSI_OPF_NEEDS_READY) && set->removable &&
	    !scsi_medium_present(lun)) {
		scsi_sense(cmd, SENSE_KEY_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
		goto out;
	}
	if (lun && (d->flags & SCSI_OPF_WRITE) &&
	    (set->readonly || (lun->be && lun->be->readonly))) {
		scsi_sense(cmd, SENSE_KEY_DATA_PROTECT, ASC_WRITE_PROTECTED);
		goto out;
	}
	if (d->fn(cmd) == SCSI_EXEC_ASYNC)
		return;
out:
	cmd_finish(cmd);
}

void scsi_cmd_abort(struct scsi_cmd *cmd)
{
	if (cmd->aborted || cmd->stage == SCSI_STAGE_DONE)
		return;
	cmd->aborted = true;
	/* Waiting for the COMPARE AND WRITE lock: answered at once if still
	 * queued, else by caw_resume() that is already on its way. */
	if (cmd->stage == SCSI_STAGE_WAIT || cmd->stage == SCSI_STAGE_RESUMING) {
		if (!caw_dequeue(cmd))
			return;
		goto aborted;
	}
	if (cmd->stage == SCSI_STAGE_XCOPY) {
		xcopy_abort(cmd);	/* the copy completes cmd */
		return;
	}
	if (cmd->stage == SCSI_STAGE_ALUA)
		return;		/* the handover completes cmd */
	if (cmd->stage == SCSI_STAGE_STATUS)
		return;		/* the store's answer completes cmd (a
				 * gateway's within remote_timeout) */
	if (cmd->stage == SCSI_STAGE_MEDIA) {
		/* The media completion sees cmd->aborted and answers TASK
		 * ABORTED, whatever the backend said. */
		hang_abort(cmd->lun, &cmd->mio);
		return;
	}
aborted:
	cmd->status = SAM_STAT_TASK_ABORTED;
	cmd->sense_len = 0;
	cmd->in_len = 0;
	cmd_finish(cmd);
}
