/* hang_internal.h - what the hang engine's files share (hang.c: the state
 * machine; hang_ctl.c: task management, verbs, show; hang_env.c: the real
 * reactor/backend/clock).  Not for other modules.
 *
 * Threading (DESIGN.md "Threads and I/O"): each LUN has a home reactor, the
 * reactor of the first command that needed it.  Only the home reactor
 * touches the lists, timers and episode data below.  Other reactors read
 * `state` atomically: while it is not hung they submit to the backend
 * themselves; a retryable failure, and every command arriving while the
 * LUN is hung, is sent to the home reactor with reactor_call() (FIFO per
 * sender), and completions go back to m->origin the same way.  Every
 * message to the home reactor that carries the hang_lun also carries a LUN
 * reference (the command's own, or one taken for the message), so the
 * hang_lun outlives it. */
#ifndef HOLDFAST_HANG_INTERNAL_H
#define HOLDFAST_HANG_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "hang.h"
#include "lun.h"
#include "reactor.h"

/* Everything the engine needs from the outside world, so that unit tests
 * run it single-threaded on a fake clock, fake reactors and a fake
 * backend.  The real table is in hang_env.c. */
struct hang_env {
	/* monotonic ms; r is the calling reactor or NULL */
	uint64_t (*now_ms)(struct reactor *r);
	/* run fn(arg) on r later (reactor_call); 0 or -ENOMEM */
	int (*call)(struct reactor *r, void (*fn)(void *arg), void *arg);
	void (*timer_add)(struct reactor *r, struct ev_timer *t,
			  uint64_t delay_ms, ev_timer_fn fn, void *arg);
	void (*timer_del)(struct reactor *r, struct ev_timer *t);
	/* start io on lun's backend; io->done runs later on r */
	void (*submit)(struct scsi_lun *lun, struct be_io *io,
		       struct reactor *r);
	void (*lun_get)(struct scsi_lun *lun);
	void (*lun_put)(struct scsi_lun *lun);
	/* take a reference unless the count already reached 0 */
	bool (*lun_tryget)(struct scsi_lun *lun);
};

/* The table hang_lun_init() uses (hang_env.c; a unit test defines its
 * own). */
const struct hang_env *hang_env_real(void);

/* Where a media_io is; m->hstate = where | flags | errno << HM_ERR_SHIFT.
 * Only the side that owns m writes hstate (the origin while HW_DIRECT or
 * HW_IDLE, the home reactor otherwise); hang_abort() reads it on the
 * origin to learn whether m is still its own. */
enum hang_where {
	HW_IDLE = 0,		/* not with the engine */
	HW_DIRECT,		/* in the backend, submitted by its origin */
	HW_TO_HOME,		/* in a message to the home reactor */
	HW_HELD,		/* failed retryably, waiting for a probe */
	HW_QUEUED,		/* arrived while hung, never tried */
	HW_HOME_FLIGHT,		/* in the backend, submitted by home */
	HW_COMPLETING,		/* completion on its way to the origin */
};
#define HM_WHERE_MASK	0x0f
#define HM_ABORTED	0x10	/* drop the result of the attempt in flight */
#define HM_PROBE	0x20	/* this attempt is the hung LUN's probe */
#define HM_ERR_SHIFT	8	/* last errno (positive, < 256) */

#define HANG_DROP_SLOTS 8	/* remembered nexus drops, see hang_dropped() */

struct hang_drop {
	uint64_t nexus;		/* HANG_NEXUS_ALL or a nexus id */
	uint64_t seq;		/* drop commands with seq below this; 0 = unused */
};

struct hang_lun {
	struct scsi_lun *lun;
	const struct hang_env *env;
	atomic_int state;			/* enum hang_state */
	_Atomic(struct reactor *) home;
	atomic_bool paused;
	atomic_bool dying;			/* hang_lun_free() ran */
	atomic_bool evidence_pending;		/* success seen while failed */
	atomic_int err_op;			/* enum be_op of the last episode */
	/* Left failed on a probe blind to the failure (a flush for a write
	 * episode): until a write succeeds, a failing write re-enters failed
	 * at once instead of hanging for another retry_timeout. */
	atomic_bool unproven;
	int (*recheck)(struct media_io *m);	/* hang_set_recheck() */

	/* ---- home reactor only ---- */
	struct list_head held;		/* by seq; the probe is not in it */
	struct list_head queued;	/* by seq */
	struct list_head inflight;	/* HW_HOME_FLIGHT, incl. the probe */
	struct media_io *probe;		/* held command being retried */
	bool bg_inflight;		/* failed-state probe in the backend */
	struct be_io bg_io;
	struct iovec bg_iov;
	void *bg_buf;
	uint32_t bg_buf_len;
	struct ev_timer probe_timer;	/* retry_interval */
	struct ev_timer timeout_timer;	/* retry_timeout */
	struct list_head orphan_link;	/* freed with timers still armed */
	uint64_t max_cmds, max_bytes;	/* HANG_MAX_HELD_* */
	struct hang_drop drops[HANG_DROP_SLOTS];
	unsigned drop_next;

	/* ---- written on the home reactor under lock, read by show ---- */
	pthread_mutex_t lock;
	unsigned nheld, nqueued;	/* nheld counts the probe */
	uint64_t bytes;			/* data pinned by held + queued */
	uint64_t t0;			/* episode start (entered hung) */
	uint64_t since;			/* current state entered */
	bool have_err;
	int err;			/* last error (positive errno) */
	enum be_op op;			/* ... its operation */
	uint64_t lba;			/* ... and LBA */
	uint64_t episodes, retries, recoveries, timeouts, longest_ms;
	bool probe_armed, timeout_armed;	/* our view of the timers */
};

/* hang.c, home reactor only */
void hang_call_or_die(struct hang_lun *h, struct reactor *r,
		      void (*fn)(void *arg), void *arg);
void hang_send_home(struct hang_lun *h, struct reactor *from,
		    void (*fn)(void *arg), void *arg);
void hang_complete(struct hang_lun *h, struct media_io *m, int res);
void hang_recover(struct hang_lun *h, const char *why);
void hang_fail_all(struct hang_lun *h, const char *why);
void hang_reset_state(struct hang_lun *h, const char *why);
void hang_probe_now(struct hang_lun *h);
void hang_arm_probe(struct hang_lun *h);
void hang_arm_timeout(struct hang_lun *h);
void hang_timer_clear(struct hang_lun *h, struct ev_timer *t);
void hang_unaccount(struct hang_lun *h, struct media_io *m, bool held);
struct reactor *hang_home(struct hang_lun *h);

static inline int hang_m_get(const struct media_io *m)
{
	return __atomic_load_n(&m->hstate, __ATOMIC_ACQUIRE);
}
static inline void hang_m_set(struct media_io *m, int v)
{
	__atomic_store_n(&m->hstate, v, __ATOMIC_RELEASE);
}
static inline int hang_m_where(const struct media_io *m)
{
	return hang_m_get(m) & HM_WHERE_MASK;
}

/* Is this errno held under the LUN's policy for op? */
static inline bool hang_retryable(const struct scsi_lun *lun, enum be_op op,
				  int res)
{
	/* one snapshot for the policy and the errno set */
	const struct lun_settings *s = lun_settings_get(lun);
	enum err_policy p = op == BE_OP_READ ? s->rerror : s->werror;

	return res < 0 && p == ERR_POLICY_RETRY &&
	       lun_errno_retryable(s->retry_errors, -res);
}

/* Does a success of op prove that data can be written again? */
static inline bool hang_op_writes(enum be_op op)
{
	return op == BE_OP_WRITE || op == BE_OP_UNMAP ||
	       op == BE_OP_WRITE_ZEROES || op == BE_OP_COMPARE_AND_WRITE;
}

/* Does a success of op show that the episode's failing operation (err_op)
 * works again?  A read says nothing about writes, and a flush (which may
 * succeed on a full thin pool) says nothing about writing new data. */
static inline bool hang_op_proves(int err_op, enum be_op op)
{
	if (err_op == BE_OP_READ)
		return op == BE_OP_READ;
	if (err_op == BE_OP_FLUSH)
		return op != BE_OP_READ;
	return hang_op_writes(op);
}

const char *hang_op_name(enum be_op op);

#endif
