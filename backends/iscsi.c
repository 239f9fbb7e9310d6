/* iscsi.c - a LUN stored on a remote iSCSI LUN (gateway mode), through
 * libiscsi's asynchronous API.
 *
 * Which reactor drives the remote session.  A libiscsi context is single
 * threaded, so each gateway LUN has exactly one session to the SAN, owned
 * by one reactor: the first one that submits I/O to it (the "session
 * reactor", chosen with a compare-and-swap, like the hang engine's home
 * reactor).  That reactor watches the context's fd (iscsi_get_fd /
 * iscsi_which_events / iscsi_service) and runs a 100 ms tick for every
 * timeout.  A command submitted on another reactor is handed to the session
 * reactor with reactor_call() and its completion is handed back the same
 * way, so done() always runs on the submitting reactor (backend.h).  One
 * session per LUN (rather than one per reactor) keeps the SAN's view
 * simple: one I_T nexus, one login to check identity on, one place that
 * decides the connection is lost.  The price is a thread hop per command
 * when the initiator's connection lives on another reactor.
 *
 * Loss of the session.  When the socket breaks, a command goes unanswered
 * for remote_timeout, or a reconnect cannot complete, every command in
 * flight completes with ECONNRESET / ETIMEDOUT (transient errors for the
 * hang engine), the context is destroyed, and the backend reconnects in the
 * background with exponential backoff (100 ms .. reconnect_max), trying the
 * configured portals in turn.  Until it is back, new commands fail at once
 * with the same error: the hang engine holds them (retry) or reports them
 * (report), and its probe succeeds as soon as the session is up again.
 * libiscsi's own automatic reconnect is switched off: it would resend
 * commands behind the hang engine's back, out of its ordering.
 *
 * Write ordering across reconnects.  A lost session's socket is closed
 * abortively (RST), so no stale PDU of it leaves this host later.  Every
 * login uses the same ISID (chosen at open), so a new login reinstates the
 * old session and the SAN must terminate the old session's tasks before it
 * accepts new ones (RFC 7143 6.3.5 session reinstatement): a write of the
 * lost session cannot land after the retried one.
 *
 * Identity.  At open the remote LUN's identity is recorded: its READ
 * CAPACITY (16) (blocks, block size), its unit serial number (VPD 0x80) and
 * its logical-unit designators (VPD 0x83, association 0).  Every reconnect
 * re-reads them; a difference means another LUN now sits behind the URL:
 * the backend refuses it (commands fail with ENODEV, which is not held),
 * logs it and keeps checking, instead of switching silently.
 *
 * Started without the SAN.  When the SAN cannot be reached at open but
 * the LUN's size is configured, the LUN is served with that size and the
 * backend starts DOWN with no identity (ident.block_size 0): the first
 * command starts the reconnect loop, and the first login records the
 * SAN's LUN as the identity if it has exactly that size (else it is
 * refused like a different LUN).  Without a size, open fails as before.
 *
 * Order.  Commands that overlap a command in flight (one of them changing
 * blocks) wait in st->waiting until it completes: the SAN may run one
 * session's commands in any order, a local disk would not (bi_must_wait).
 *
 * Provisioning and GET LBA STATUS.  be->thin is the SAN's LUN's (LBPME and
 * a deallocating command in VPD B2h), and block_status_async asks the
 * SAN with one GET LBA STATUS whose allocation length has room for as
 * many descriptors as the caller can take (io->ext_max, which the SCSI
 * layer derives from the initiator's allocation length): the first
 * descriptor answers the question, the ones that follow it go to io->ext,
 * clipped to the range asked about (the LUN's end).  A SAN without GET
 * LBA STATUS is answered "all mapped" from then on.
 *
 * Ownership by persistent reservation (alua_lock = "scsi-pr", pr_owner.c).
 * The reservation commands go on the LUN's one session, the same I_T
 * nexus as its I/O (the reservation belongs to a nexus): the ALUA thread
 * hands each to the session reactor as a control request (bi_ctl) and
 * waits for it.  A RESERVATION CONFLICT answered to I/O means another
 * node preempted this one: it completes with EBADE (as the kernel's
 * BLK_STS_NEXUS does), which the SCSI layer takes as the loss of the
 * ownership, never as something to retry.  Except right after a
 * reconnect: a SAN may count the new session as a new I_T nexus without
 * this node's registration (tgtd does), so until the ALUA watchdog has
 * re-asserted the reservation on it (pr_reassert) a conflict is EAGAIN.
 *
 * Remote status.  CHECK CONDITION is mapped to -errno by sense key, and
 * the sense that is no passing condition goes up with it (io->sense) for
 * the SCSI layer to report as it is, key, ASC/ASCQ, INFORMATION and all:
 * ILLEGAL REQUEST -> EINVAL / EOPNOTSUPP, DATA PROTECT -> EROFS / ENOSPC,
 * MEDIUM ERROR with a valid INFORMATION field (the LBA that failed) ->
 * ENODATA; none of them is held (ENOSPC only where retry_errors says
 * so).  MEDIUM ERROR without a valid LBA, HARDWARE ERROR and NOT READY
 * -> EREMOTEIO (held).  BUSY, TASK SET FULL, UNIT ATTENTION and ABORTED
 * COMMAND are retried here, every BI_TICK_MS up to BI_RETRIES_MAX times,
 * and are never seen above unless the SAN keeps answering them. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "backend.h"
#include "be_scsi.h"
#include "iscsi_conf.h"
#include "iscsi_dd.h"
#include "pr_owner.h"
#include "reactor.h"
#include "util.h"

#define BI_TICK_MS 100
#define BI_BACKOFF_MIN_MS 100
#define BI_RETRY_DELAY_MS 20		/* after BUSY / TASK SET FULL */
#define BI_RETRIES_MAX 50		/* UA / ABORTED COMMAND / BUSY per command */
#define BI_VPD_LEN 255
#define BI_IDENT_LEN 512
#define BI_WS_MAX_BLOCKS 65536u		/* WRITE SAME / UNMAP chunk */
#define BI_UA_TRIES 8			/* unit attentions cleared at login */

/* VPD pages (SPC-4 7.8, SBC-3 6.5.4) */
#define VPD_UNIT_SERIAL 0x80
#define VPD_DEVICE_ID 0x83
#define VPD_LB_PROVISIONING 0xb2
#define VPD_B2_LBPU 0x80
#define VPD_B2_LBPWS 0x40
/* GET LBA STATUS (SBC-3 5.16): header and descriptors */
#define BI_GLS_HDR 8
#define BI_GLS_DESC 16
#define BI_GLS_MAX_DESC 1024		/* per question to the SAN */
/* ASC/ASCQ (SPC-4 annex D) */
#define ASCQ_INVALID_OPCODE 0x2000
#define ASCQ_SPACE_ALLOC_FAILED 0x2707

enum bi_state {
	BI_DOWN,		/* no session; reconnect when the backoff ends */
	BI_CONNECTING,		/* TCP connect + login */
	BI_IDENTIFYING,		/* READ CAPACITY + INQUIRY of the new session */
	BI_UP,
};

/* What says "this is the same LUN". */
struct bi_ident {
	uint64_t nblocks;
	uint32_t block_size;
	bool lbpme, lbprz;
	bool lbpu, lbpws;	/* VPD B2 (not part of the identity) */
	bool have_b2;
	uint16_t serial_len, desig_len;
	uint8_t serial[BI_VPD_LEN];
	uint8_t desig[BI_IDENT_LEN];
};

struct be_iscsi {
	struct be_iscsi_conf conf;
	char url[BE_ISCSI_PORTAL_LEN + 2 * BE_ISCSI_NAME_LEN];	/* no secret */
	_Atomic(struct reactor *) owner;	/* the session reactor */
	uint32_t isid_rnd;			/* same ISID on every login */
	uint8_t *zero_block;			/* WRITE SAME source */
	struct bi_ident ident;			/* recorded at open, or at
						 * the first login when the
						 * SAN was down at open
						 * (block_size 0 until then) */
	uint64_t cfg_size;			/* started without the SAN:
						 * the configured size and */
	uint32_t cfg_block_size;		/* the LUN's block size, which
						 * the SAN's LUN must match */
	bool no_gls;				/* the SAN has no GET LBA
						 * STATUS: all mapped */
	uint32_t check_bs;			/* alignment submit checks,
						 * fixed at open (any thread
						 * reads it) */

	/* Owner reactor only (the open thread before there is one). */
	struct iscsi_context *ctx;
	enum bi_state state;
	unsigned portal;		/* index in conf.portals in use */
	struct ev_fd w;
	bool w_added;
	struct iscsi_dd *dd;		/* data_digest = crc32c: the relay
					 * libiscsi connects through */
	struct ev_fd dd_w;
	bool dd_w_added;
	struct ev_timer tick;
	struct list_head inflight;	/* bi_req, oldest first */
	struct list_head delayed;	/* BUSY retries, resent by the tick */
	struct list_head waiting;	/* behind an overlapping command in
					 * flight (bi_must_wait), in order */
	struct list_head done;		/* completions to deliver */
	uint64_t state_since_ms;
	uint64_t backoff_ms, next_attempt_ms;
	int down_err;			/* what commands fail with while down */
	bool wrong_lun;			/* another LUN answered: refuse it */
	int drop_err;			/* set inside libiscsi callbacks */
	bool closing;
	int identify_left, identify_err;
	int ua_left;			/* TEST UNIT READYs left to clear UAs */
	struct bi_ident probe;		/* being read from the new session */

	/* For show (any thread). */
	pthread_mutex_t lock;
	/* Ownership by reservation: ALUA threads only (serialized by the
	 * caller), the flag set by the session reactor. */
	struct pr_owner pr;
	_Atomic bool pr_reassert;	/* reconnected since the last query */
	bool shown_up, shown_wrong;
	bool shown_blind;		/* started without the SAN, not yet
					 * connected to it */
	time_t shown_since;
	uint64_t reconnects;
	uint64_t gls_sent;		/* GET LBA STATUS questions to the SAN */
	int last_err;
	char last_err_text[160];
	char portal_shown[BE_ISCSI_PORTAL_LEN];
};

/* Per-request state in be_io.be_scratch (may_alias: a second view of that
 * uint64_t storage). */
struct __attribute__((may_alias)) bi_req {
	struct list_head link;
	struct be_iscsi *st;
	struct reactor *origin;
	struct scsi_task *task;
	uint64_t start_ms;
	uint32_t progress;		/* blocks done (chunked UNMAP/WRITE SAME) */
	int res;
	uint16_t retries;
	bool gls;			/* a GET LBA STATUS question
					 * (block_status_async), not I/O */
	bool ctl;			/* a reservation command (bi_ctl) */
};
_Static_assert(sizeof(struct bi_req) <= sizeof(((struct be_io *)0)->be_scratch),
	       "bi_req must fit in be_io.be_scratch");

static struct bi_req *bi_req_of(struct be_io *io)
{
	return (struct bi_req *)io->be_scratch;
}

static struct be_io *bi_req_io(struct bi_req *q)
{
	return container_of((void *)q, struct be_io, be_scratch);
}

/* A reservation command from an ALUA thread (pr_owner.h), run on the
 * session.  Shared by that thread and the session reactor: whoever is
 * last frees it (the thread may give up waiting first). */
struct bi_ctl {
	struct be_io io;		/* be_scratch holds its bi_req */
	uint8_t cdb[16];
	unsigned cdb_len;
	enum pr_dir dir;
	uint32_t len;
	uint8_t data[PR_IN_ALLOC];	/* the data, copied both ways */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done, abandoned;
	int res;			/* 0 with status, or -errno */
	uint8_t status, sense_key;
	uint16_t asc;
	uint32_t in_len;
};

static uint64_t bi_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t bi_now(struct be_iscsi *st)
{
	struct reactor *o = atomic_load(&st->owner);

	return o ? reactor_now_ms(o) : bi_clock_ms();
}

/* Open failures carry the remote's words; errmsg must outlive open(). */
static __thread char bi_errbuf[320];

/* ---- state, the one place that changes it ---- */

static void bi_note_error(struct be_iscsi *st, int err, const char *why)
{
	pthread_mutex_lock(&st->lock);
	st->last_err = err;
	snprintf(st->last_err_text, sizeof(st->last_err_text), "%.*s",
		 (int)sizeof(st->last_err_text) - 1, why);
	pthread_mutex_unlock(&st->lock);
}

/* why, or the data digest relay's reason when it ended the connection
 * (libiscsi only sees the socket close). */
static const char *bi_dd_why(struct be_iscsi *st, const char *why)
{
	static __thread char buf[ISCSI_DD_ERR_LEN + 32];

	if (!st->dd || !iscsi_dd_take_error(st->dd, buf, sizeof(buf)))
		return why;
	return buf;
}

static void bi_set_state(struct be_iscsi *st, enum bi_state s, int err,
			 const char *why)
{
	enum bi_state old = st->state;

	if (old == s)
		return;
	st->state = s;
	st->state_since_ms = bi_now(st);
	pthread_mutex_lock(&st->lock);
	/* an operator sees connected / reconnecting (since when) / wrong
	 * LUN; the steps of a reconnect are one state to them */
	if ((s == BI_UP) != st->shown_up || st->wrong_lun != st->shown_wrong) {
		st->shown_up = s == BI_UP;
		st->shown_wrong = st->wrong_lun;
		st->shown_blind = st->cfg_size && !st->ident.block_size;
		st->shown_since = time(NULL);
	}
	snprintf(st->portal_shown, sizeof(st->portal_shown), "%s",
		 st->conf.portals[st->portal]);
	pthread_mutex_unlock(&st->lock);

	if (s == BI_UP)
		log_info("iscsi %s: connected via %s", st->url,
			 st->conf.portals[st->portal]);
	else if (old == BI_UP)
		log_warn("iscsi %s: connection lost (%s: %s), reconnecting",
			 st->url, strerrorname_np(err) ? strerrorname_np(err) : "?",
			 why);
}

/* ---- completions ---- */

static void bi_deliver_call(void *arg)
{
	struct be_io *io = arg;

	io->done(io, bi_req_of(io)->res);
}

/* Hand every finished request back to its reactor.  Runs on the session
 * reactor outside libiscsi (never inside iscsi_service's callbacks and
 * never inside submit). */
static void bi_release(struct be_iscsi *st);

static void bi_deliver(struct be_iscsi *st)
{
	struct reactor *self = reactor_current();

	/* what completed may let waiting commands go */
	if (!list_empty(&st->waiting))
		bi_release(st);

	while (!list_empty(&st->done)) {
		struct bi_req *q = list_first_entry(&st->done, struct bi_req, link);
		struct be_io *io = bi_req_io(q);

		list_del(&q->link);
		if (q->origin == self) {
			io->done(io, q->res);
		} else if (reactor_call(q->origin, bi_deliver_call, io) < 0) {
			/* no memory for the call: the embedded-timer path */
			backend_complete_later(q->origin, io, q->res);
		}
	}
}

static void bi_finish(struct be_iscsi *st, struct bi_req *q, int res)
{
	if (q->task) {
		scsi_free_scsi_task(q->task);
		q->task = NULL;
	}
	q->res = res;
	list_del(&q->link);
	list_add_tail(&q->link, &st->done);
}

/* ---- remote status -> errno ---- */

/* CHECK CONDITION: the errno, whether to retry here, and in *out the
 * sense to report as it is (key 0: none, the errno decides). */
static int bi_sense_errno(const struct scsi_task *task, bool *retry,
			  struct be_sense *out)
{
	struct be_sense s;
	int len;

	*retry = false;
	memset(out, 0, sizeof(*out));
	/* libiscsi keeps the Data-In of a CHECK CONDITION as it came:
	 * SenseLength (2 bytes), then the sense data (RFC 7143 11.4.7.2) */
	len = task->datain.data && task->datain.size >= 2
		      ? MIN((int)get_be16(task->datain.data),
			    task->datain.size - 2)
		      : 0;
	if (len <= 0 ||
	    be_sense_parse(task->datain.data + 2, (size_t)len, &s) < 0) {
		/* not sense we can repeat: classify by libiscsi's reading */
		memset(&s, 0, sizeof(s));
		s.key = (uint8_t)task->sense.key;
		s.asc = (uint8_t)(task->sense.ascq >> 8);
		s.ascq = (uint8_t)task->sense.ascq;
		len = 0;
	}
	switch (s.key) {
	case SCSI_SENSE_UNIT_ATTENTION:
	case SCSI_SENSE_COMMAND_ABORTED:
		*retry = true;
		return -EREMOTEIO;
	case SCSI_SENSE_ILLEGAL_REQUEST:
		if (len)
			*out = s;
		return (s.asc << 8 | s.ascq) == ASCQ_INVALID_OPCODE
			       ? -EOPNOTSUPP : -EINVAL;
	case SCSI_SENSE_DATA_PROTECTION:
		if (len)
			*out = s;
		return (s.asc << 8 | s.ascq) == ASCQ_SPACE_ALLOC_FAILED
			       ? -ENOSPC : -EROFS;
	case SCSI_SENSE_MEDIUM_ERROR:
		/* with the block that failed it is that block's error, not
		 * the path's: reported, not held */
		if (len && s.info_valid) {
			*out = s;
			return -ENODATA;
		}
		return -EREMOTEIO;
	default:	/* NOT READY, HARDWARE ERROR, vendor specific ... */
		return -EREMOTEIO;
	}
}

/* ---- reservation commands (bi_ctl) ---- */

/* Queue c's CDB on the session; completion to cb(priv).  NULL if it
 * cannot be queued. */
static struct scsi_task *bi_ctl_task(struct be_iscsi *st, struct bi_ctl *c,
				     iscsi_command_cb cb, void *priv)
{
	struct iscsi_data d = { .size = c->len, .data = c->data };
	struct scsi_task *t;

	t = scsi_create_task((int)c->cdb_len, c->cdb,
			     c->dir == PR_DIR_IN ? SCSI_XFER_READ
			     : c->dir == PR_DIR_OUT ? SCSI_XFER_WRITE
						    : SCSI_XFER_NONE,
			     c->dir == PR_DIR_NONE ? 0 : (int)c->len);
	if (!t)
		return NULL;
	if (iscsi_scsi_command_async(st->ctx, (int)st->conf.lun, t, cb,
				     c->dir == PR_DIR_OUT ? &d : NULL,
				     priv) != 0) {
		scsi_free_scsi_task(t);
		return NULL;
	}
	return t;
}

/* The answer to c: 0 with its status, sense and data, or -errno when
 * the session failed under it. */
static int bi_ctl_record(struct bi_ctl *c, int status,
			 const struct scsi_task *task)
{
	if (status == SCSI_STATUS_CANCELLED || status == SCSI_STATUS_TIMEOUT)
		return -ECONNRESET;
	if (status == SCSI_STATUS_ERROR || !task)
		return -EIO;
	c->status = (uint8_t)status;
	c->sense_key = (uint8_t)task->sense.key;
	c->asc = (uint16_t)task->sense.ascq;
	if (c->dir == PR_DIR_IN && task->datain.data) {
		c->in_len = (uint32_t)MIN(task->datain.size, (int)c->len);
		memcpy(c->data, task->datain.data, c->in_len);
	}
	return 0;
}

/* ---- issuing ---- */

static void bi_task_cb(struct iscsi_context *ctx, int status, void *data,
		       void *priv);

/* Build and queue the libiscsi task for q's (next) step.  0 or -errno. */
static int bi_issue(struct be_iscsi *st, struct bi_req *q)
{
	struct be_io *io = bi_req_io(q);
	uint32_t bs = st->ident.block_size;
	uint64_t lba = io->offset / bs, nblocks = io->length / bs;
	uint32_t chunk;
	struct scsi_task *t = NULL;
	int lun = (int)st->conf.lun;

	if (q->ctl) {
		t = bi_ctl_task(st, container_of((void *)io, struct bi_ctl, io),
				bi_task_cb, q);
		if (!t)
			return -ENOMEM;
		q->task = t;
		return 0;
	}
	if (q->gls) {
		/* room for the answer's descriptor and every following one
		 * the caller can take */
		uint32_t ndesc = 1 + MIN((uint32_t)io->ext_max,
					 (uint32_t)BI_GLS_MAX_DESC - 1);

		t = iscsi_get_lba_status_task(st->ctx, lun, lba,
					      BI_GLS_HDR + ndesc * BI_GLS_DESC,
					      bi_task_cb, q);
		if (!t)
			return -ENOMEM;
		q->task = t;
		pthread_mutex_lock(&st->lock);
		st->gls_sent++;
		pthread_mutex_unlock(&st->lock);
		return 0;
	}
	switch (io->op) {
	case BE_OP_READ:
		t = iscsi_read16_iov_task(st->ctx, lun, lba, (uint32_t)io->length,
					  (int)bs, 0, 0, 0, 0, 0, bi_task_cb, q,
					  (struct scsi_iovec *)io->iov, io->iovcnt);
		break;
	case BE_OP_WRITE:
		t = iscsi_write16_iov_task(st->ctx, lun, lba, NULL,
					   (uint32_t)io->length, (int)bs, 0, 0,
					   !!(io->flags & BE_IO_FUA), 0, 0,
					   bi_task_cb, q,
					   (struct scsi_iovec *)io->iov,
					   io->iovcnt);
		break;
	case BE_OP_FLUSH:
		t = iscsi_synchronizecache16_task(st->ctx, lun, 0, 0, 0, 0,
						  bi_task_cb, q);
		break;
	case BE_OP_UNMAP:
	case BE_OP_WRITE_ZEROES:
		chunk = (uint32_t)MIN(nblocks - q->progress, BI_WS_MAX_BLOCKS);
		if (io->op == BE_OP_UNMAP && st->ident.lbpme && st->ident.lbprz &&
		    (st->ident.lbpu || !st->ident.have_b2)) {
			/* deallocated blocks read back as zeroes (SBC-4 4.7.4.5) */
			struct unmap_list ul = { lba + q->progress, chunk };

			t = iscsi_unmap_task(st->ctx, lun, 0, 0, &ul, 1,
					     bi_task_cb, q);
		} else {
			/* WRITE SAME (16) of a zero block; with the UNMAP bit
			 * the SAN may deallocate, and must still read zeroes */
			t = iscsi_writesame16_task(st->ctx, lun, lba + q->progress,
						   st->zero_block, bs, chunk, 0,
						   io->op == BE_OP_UNMAP &&
							   st->ident.lbpme &&
							   (st->ident.lbpws ||
							    !st->ident.have_b2),
						   0, 0, bi_task_cb, q);
		}
		break;
	case BE_OP_COMPARE_AND_WRITE:
		return -EOPNOTSUPP;	/* caw_max 0: bi_check refuses it */
	}
	if (!t)
		return -ENOMEM;
	q->task = t;
	return 0;
}

static void bi_sync_events(struct be_iscsi *st);

/* ---- ordering of overlapping commands ----
 *
 * The SAN may run the commands of one session in any order (SIMPLE
 * tasks; tgtd runs them on a thread pool), so a read sent while an
 * overlapping write is in flight may return the old data, and of two
 * overlapping writes either may land last.  A local disk behind
 * holdfast keeps the order the gateway received them in; so does this
 * gateway: a command that overlaps one still in flight (or waiting
 * before it) waits in st->waiting until that one completes, when either
 * of the two changes the blocks.  Reads beside reads, and commands on
 * other blocks, go at once.  The cost is a scan of the commands in
 * flight (the initiators' queue depth) per command. */

static bool bi_changes(const struct be_io *io)
{
	return io->op != BE_OP_READ && io->op != BE_OP_FLUSH;
}

/* Do a and b touch a block in common, with at least one changing it? */
static bool bi_conflict(const struct bi_req *a, const struct bi_req *b)
{
	const struct be_io *x = bi_req_io((struct bi_req *)a);
	const struct be_io *y = bi_req_io((struct bi_req *)b);

	if (a->gls || b->gls || a->ctl || b->ctl || x->op == BE_OP_FLUSH || y->op == BE_OP_FLUSH)
		return false;
	if (!bi_changes(x) && !bi_changes(y))
		return false;
	return x->offset < y->offset + y->length &&
	       y->offset < x->offset + x->length;
}

/* Must q wait: does it overlap a command in flight, a BUSY retry, or one
 * that waits before it (every waiting one up to `before`, NULL = all)? */
static bool bi_must_wait(struct be_iscsi *st, struct bi_req *q,
			 struct bi_req *before)
{
	struct bi_req *o;

	list_for_each_entry(o, &st->inflight, link)
		if (bi_conflict(q, o))
			return true;
	list_for_each_entry(o, &st->delayed, link)
		if (bi_conflict(q, o))
			return true;
	list_for_each_entry(o, &st->waiting, link) {
		if (o == before)
			break;
		if (bi_conflict(q, o))
			return true;
	}
	return false;
}

/* Send q now (the session is up and nothing overlapping is ahead). */
static void bi_send(struct be_iscsi *st, struct bi_req *q)
{
	int err;

	list_add_tail(&q->link, &st->inflight);
	q->start_ms = bi_now(st);
	err = bi_issue(st, q);
	if (err) {
		bi_finish(st, q, err);
		return;
	}
	bi_sync_events(st);
}

/* Send q on the session reactor, or fail it at once if there is no
 * session, or queue it behind an overlapping command.  Completion goes
 * to st->done. */
static void bi_start(struct be_iscsi *st, struct bi_req *q)
{
	if (st->state != BI_UP) {
		list_add_tail(&q->link, &st->inflight);
		bi_finish(st, q, -st->down_err);
		return;
	}
	if (bi_must_wait(st, q, NULL)) {
		list_add_tail(&q->link, &st->waiting);
		return;
	}
	bi_send(st, q);
}

/* Send every waiting command that nothing overlaps any more, in order. */
static void bi_release(struct be_iscsi *st)
{
	struct bi_req *q, *n;

	if (st->state != BI_UP)
		return;
	list_for_each_entry_safe(q, n, &st->waiting, link) {
		if (bi_must_wait(st, q, q))
			continue;
		list_del(&q->link);
		bi_send(st, q);
	}
}

/* The SAN's GET LBA STATUS answer for q (be_gls_parse): 1 mapped / 0
 * deallocated with io->length cut to the first descriptor's extent, the
 * descriptors that continue it in io->ext, or -errno. */
static int bi_gls_answer(struct be_iscsi *st, struct bi_req *q,
			 const struct scsi_task *task)
{
	struct be_io *io = bi_req_io(q);

	return be_gls_parse(task->datain.data,
			    task->datain.size > 0 ? (size_t)task->datain.size : 0,
			    st->ident.block_size, io->offset, &io->length,
			    io->ext, io->ext_max, &io->ext_n);
}

static void bi_task_cb(struct iscsi_context *ctx UNUSED, int status,
		       void *data, void *priv)
{
	struct bi_req *q = priv;
	struct be_iscsi *st = q->st;
	struct scsi_task *task = data;
	struct be_io *io = bi_req_io(q);
	bool retry = false;
	int res;

	if (q->ctl && status != SCSI_STATUS_CANCELLED &&
	    status != SCSI_STATUS_TIMEOUT) {
		bi_finish(st, q, bi_ctl_record(container_of((void *)io,
							    struct bi_ctl, io),
					       status, task));
		return;
	}
	if (q->gls && status == SCSI_STATUS_GOOD) {
		bi_finish(st, q, bi_gls_answer(st, q, task));
		return;
	}
	if (q->gls && status == SCSI_STATUS_CHECK_CONDITION &&
	    task->sense.key == SCSI_SENSE_ILLEGAL_REQUEST) {
		/* no GET LBA STATUS at the SAN (invalid opcode or service
		 * action): every block is mapped, and it is not asked again */
		if (!st->no_gls)
			log_info("iscsi %s: the SAN has no GET LBA STATUS; "
				 "reporting every block mapped", st->url);
		st->no_gls = true;
		bi_finish(st, q, -EOPNOTSUPP);
		return;
	}
	switch (status) {
	case SCSI_STATUS_GOOD:
		if ((io->op == BE_OP_UNMAP || io->op == BE_OP_WRITE_ZEROES)) {
			uint64_t n = io->length / st->ident.block_size;

			q->progress += (uint32_t)MIN(n - q->progress,
						     BI_WS_MAX_BLOCKS);
			if (q->progress < n) {
				scsi_free_scsi_task(q->task);
				q->task = NULL;
				res = bi_issue(st, q);
				if (res)
					bi_finish(st, q, res);
				return;
			}
		}
		bi_finish(st, q, 0);
		return;
	case SCSI_STATUS_CANCELLED:
	case SCSI_STATUS_TIMEOUT:
		/* the session went away under the command */
		if (!st->drop_err)
			st->drop_err = status == SCSI_STATUS_TIMEOUT ? ETIMEDOUT
								     : ECONNRESET;
		bi_finish(st, q, -(st->drop_err));
		return;
	case SCSI_STATUS_BUSY:
	case SCSI_STATUS_TASK_SET_FULL:
		res = -EBUSY;
		retry = true;
		break;
	case SCSI_STATUS_RESERVATION_CONFLICT:
		if (!st->pr.key) {
			res = -EACCES;	/* someone else reserved the SAN's LUN */
		} else if (atomic_load(&st->pr_reassert)) {
			res = -EAGAIN;	/* a new nexus: re-asserted soon */
		} else {
			/* preempted: this node no longer owns the LUN */
			res = -EBADE;
			bi_note_error(st, EBADE, "RESERVATION CONFLICT: the "
				      "reservation was preempted");
		}
		break;
	case SCSI_STATUS_CHECK_CONDITION:
		res = bi_sense_errno(task, &retry, &io->sense);
		break;
	default:
		res = -EREMOTEIO;
		break;
	}
	if (retry && q->retries < BI_RETRIES_MAX) {
		q->retries++;
		scsi_free_scsi_task(q->task);
		q->task = NULL;
		list_del(&q->link);
		list_add_tail(&q->link, &st->delayed);
		return;
	}
	bi_finish(st, q, res);
}

/* ---- the session's fd and tick ---- */

static void bi_fd_cb(struct ev_fd *w, uint32_t events);

static uint32_t bi_wanted_events(struct be_iscsi *st)
{
	int ev = iscsi_which_events(st->ctx);
	uint32_t e = EPOLLRDHUP;

	if (ev & POLLIN)
		e |= EPOLLIN;
	if (ev & POLLOUT)
		e |= EPOLLOUT;
	return e;
}

/* Make the fd watcher match what libiscsi waits for (it may also have a
 * new socket after a connect).  Only on the session reactor. */
static void bi_sync_events(struct be_iscsi *st)
{
	struct reactor *r = atomic_load(&st->owner);
	int fd;
	uint32_t e;

	if (!r || !st->ctx || st->closing)
		return;
	fd = iscsi_get_fd(st->ctx);
	if (st->w_added && st->w.fd != fd) {
		reactor_fd_del(&st->w);
		st->w_added = false;
	}
	if (fd < 0)
		return;
	e = bi_wanted_events(st);
	if (!st->w_added) {
		if (reactor_fd_add(r, &st->w, fd, e, bi_fd_cb, st) == 0)
			st->w_added = true;
	} else if (st->w.events != e) {
		reactor_fd_mod(&st->w, e);
	}
}

/* Tear the session down: every command on it completes with err, and a
 * reconnect is scheduled.  Never called from inside libiscsi. */
static void bi_drop(struct be_iscsi *st, int err, const char *why)
{
	struct bi_req *q, *n;
	uint64_t now = bi_now(st);
	char text[sizeof(st->last_err_text)];

	/* why may be last_err_text */
	snprintf(text, sizeof(text), "%.*s", (int)sizeof(text) - 1, why);
	why = text;
	if (st->w_added) {
		reactor_fd_del(&st->w);
		st->w_added = false;
	}
	st->drop_err = err;
	if (st->ctx) {
		int fd = iscsi_get_fd(st->ctx);
		struct linger abort_close = { .l_onoff = 1, .l_linger = 0 };

		/* An abortive close (RST): a plain close would leave the
		 * kernel retransmitting the unsent rest of the send buffer
		 * once the link is back, and a WRITE of the lost session
		 * could then reach the SAN after its retry on the new one. */
		if (fd >= 0)
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close,
				   sizeof(abort_close));
		/* callbacks run with SCSI_STATUS_CANCELLED and finish their
		 * requests with drop_err */
		iscsi_destroy_context(st->ctx);
		st->ctx = NULL;
	}
	if (st->dd)
		iscsi_dd_reset(st->dd);	/* the SAN side too, abortively */
	bi_note_error(st, err, why);	/* after the cancelled callbacks' */
	list_for_each_entry_safe(q, n, &st->inflight, link)
		bi_finish(st, q, -err);
	list_for_each_entry_safe(q, n, &st->delayed, link)
		bi_finish(st, q, -err);
	list_for_each_entry_safe(q, n, &st->waiting, link)
		bi_finish(st, q, -err);
	st->drop_err = 0;
	/* while the wrong LUN answers, commands fail for that reason, not
	 * for a passing network error of a later attempt */
	st->down_err = st->wrong_lun ? ENODEV : err;
	bi_set_state(st, BI_DOWN, err, why);
	/* next attempt: the next portal, after a growing pause */
	if (st->conf.nportals > 1)
		st->portal = (st->portal + 1) % st->conf.nportals;
	st->next_attempt_ms = now + st->backoff_ms;
	st->backoff_ms = MIN(st->backoff_ms * 2, (uint64_t)st->conf.reconnect_max_ms);
	if (st->backoff_ms < BI_BACKOFF_MIN_MS)
		st->backoff_ms = BI_BACKOFF_MIN_MS;
}

/* The sense of a failed step of a reconnect, or libiscsi's error text. */
static void bi_connect_failed(struct be_iscsi *st, int err, const char *why)
{
	/* inside a libiscsi callback: note it, the caller drops */
	if (!st->drop_err)
		st->drop_err = err;
	bi_note_error(st, err, bi_dd_why(st, why));
}

/* ---- connecting and identifying ---- */

static void bi_ident_step_done(struct be_iscsi *st);

static void bi_ident_cb(struct iscsi_context *ctx, int status, void *data,
			void *priv)
{
	struct be_iscsi *st = priv;
	struct scsi_task *task = data;
	const uint8_t *d = task ? task->datain.data : NULL;
	int len = task ? task->datain.size : 0;
	struct bi_ident *p = &st->probe;

	if (status != SCSI_STATUS_GOOD || !task) {
		/* VPD 0x80 is optional (SPC-4 7.8.15): its absence is part of
		 * the identity; anything else fails this attempt */
		bool optional = task && task->cdb[0] == SCSI_OPCODE_INQUIRY &&
				(task->cdb[2] == VPD_UNIT_SERIAL ||
				 task->cdb[2] == VPD_LB_PROVISIONING) &&
				status == SCSI_STATUS_CHECK_CONDITION &&
				task->sense.key == SCSI_SENSE_ILLEGAL_REQUEST;
		if (!optional && !st->identify_err) {
			st->identify_err = status == SCSI_STATUS_CANCELLED
						   ? ECONNRESET : EREMOTEIO;
			snprintf(bi_errbuf, sizeof(bi_errbuf),
				 "identifying the remote LUN: %s",
				 iscsi_get_error(ctx));
			bi_note_error(st, st->identify_err, bi_errbuf);
		}
	} else if (task->cdb[0] == SCSI_OPCODE_SERVICE_ACTION_IN) {
		/* READ CAPACITY (16) parameter data, SBC-4 5.20.2 */
		if (len >= 32) {
			p->nblocks = get_be64(d) + 1;
			p->block_size = get_be32(d + 8);
			p->lbpme = d[14] & 0x80;
			p->lbprz = d[14] & 0x40;
		} else if (!st->identify_err) {
			st->identify_err = EREMOTEIO;
		}
	} else if (task->cdb[2] == VPD_LB_PROVISIONING && len >= 6) {
		/* SBC-3 6.5.4: which commands deallocate */
		p->have_b2 = true;
		p->lbpu = d[5] & VPD_B2_LBPU;
		p->lbpws = d[5] & VPD_B2_LBPWS;
	} else if (task->cdb[2] == VPD_UNIT_SERIAL && len >= 4) {
		uint16_t n = (uint16_t)MIN((int)get_be16(d + 2), len - 4);

		n = MIN(n, (uint16_t)sizeof(p->serial));
		memcpy(p->serial, d + 4, n);
		p->serial_len = n;
	} else if (task->cdb[2] == VPD_DEVICE_ID && len >= 4) {
		/* keep the designators of the logical unit itself
		 * (association 0, SPC-4 7.8.6.1); port designators differ
		 * between the SAN's portals and are no identity */
		int end = MIN((int)get_be16(d + 2) + 4, len);

		p->desig_len = 0;
		for (int i = 4; i + 4 <= end;) {
			int dl = d[i + 3] + 4;

			if (i + dl > end)
				break;
			if (((d[i + 1] >> 4) & 3) == 0 &&
			    p->desig_len + dl <= (int)sizeof(p->desig)) {
				memcpy(p->desig + p->desig_len, d + i, (size_t)dl);
				p->desig_len = (uint16_t)(p->desig_len + dl);
			}
			i += dl;
		}
	}
	if (task)
		scsi_free_scsi_task(task);
	bi_ident_step_done(st);
}

static int bi_ident_compare(const struct bi_ident *a, const struct bi_ident *b,
			    const char **why)
{
	if (a->block_size != b->block_size) {
		*why = "the block size differs";
		return -1;
	}
	if (a->nblocks != b->nblocks) {
		*why = "the capacity differs";
		return -1;
	}
	if (a->serial_len != b->serial_len ||
	    memcmp(a->serial, b->serial, a->serial_len)) {
		*why = "the unit serial number differs";
		return -1;
	}
	if (a->desig_len != b->desig_len ||
	    memcmp(a->desig, b->desig, a->desig_len)) {
		*why = "the device identifiers differ";
		return -1;
	}
	return 0;
}

static void bi_ident_step_done(struct be_iscsi *st)
{
	const char *why;

	if (--st->identify_left > 0)
		return;
	if (st->identify_err) {
		if (!st->drop_err)
			st->drop_err = st->identify_err;
		return;
	}
	if (!st->ident.block_size && st->cfg_size) {
		/* started while the SAN was down: the LUN was served with
		 * the configured size; the SAN's LUN must be that size, in
		 * blocks the LUN's block size is a multiple of */
		const struct bi_ident *p = &st->probe;

		if (p->nblocks * p->block_size != st->cfg_size ||
		    st->cfg_block_size < p->block_size ||
		    st->cfg_block_size % p->block_size) {
			if (!st->wrong_lun)
				log_err("iscsi %s: the SAN's LUN has %llu blocks "
					"of %u bytes, not the configured size "
					"%llu with %u-byte blocks; refusing it: "
					"commands fail until it matches",
					st->url, (unsigned long long)p->nblocks,
					p->block_size,
					(unsigned long long)st->cfg_size,
					st->cfg_block_size);
			st->wrong_lun = true;
			bi_note_error(st, ENODEV,
				      "the SAN's LUN is not the configured size");
			st->drop_err = ENODEV;
			return;
		}
		st->ident = st->probe;
		st->wrong_lun = false;
		st->backoff_ms = BI_BACKOFF_MIN_MS;
		log_info("iscsi %s: the SAN answered; its LUN (%llu blocks of "
			 "%u bytes) is recorded as this LUN's identity", st->url,
			 (unsigned long long)p->nblocks, p->block_size);
		bi_set_state(st, BI_UP, 0, "first login");
		return;
	}
	if (!st->ident.block_size) {	/* first login (open) */
		st->ident = st->probe;
		bi_set_state(st, BI_UP, 0, "open");
		return;
	}
	if (bi_ident_compare(&st->ident, &st->probe, &why)) {
		if (!st->wrong_lun)
			log_err("iscsi %s: a different LUN now answers at this "
				"URL (%s); refusing it: commands fail until the "
				"original LUN is back", st->url, why);
		st->wrong_lun = true;
		bi_note_error(st, ENODEV, why);
		st->drop_err = ENODEV;	/* log out; keep checking */
		return;
	}
	if (st->wrong_lun)
		log_info("iscsi %s: the original LUN is back", st->url);
	st->wrong_lun = false;
	st->backoff_ms = BI_BACKOFF_MIN_MS;
	pthread_mutex_lock(&st->lock);
	st->reconnects++;
	pthread_mutex_unlock(&st->lock);
	if (st->pr.key)
		atomic_store(&st->pr_reassert, true);
	bi_set_state(st, BI_UP, 0, "reconnected");
}

/* Logged in: READ CAPACITY (16) and the VPD pages (serial number, device
 * identifiers, logical block provisioning), in parallel. */
static void bi_identify_start(struct be_iscsi *st, struct iscsi_context *ctx)
{
	int lun = (int)st->conf.lun;
	struct scsi_task *t[4];

	memset(&st->probe, 0, sizeof(st->probe));
	st->identify_err = 0;
	st->identify_left = 4;
	t[0] = iscsi_readcapacity16_task(ctx, lun, bi_ident_cb, st);
	t[1] = iscsi_inquiry_task(ctx, lun, 1, VPD_UNIT_SERIAL, BI_VPD_LEN,
				  bi_ident_cb, st);
	t[2] = iscsi_inquiry_task(ctx, lun, 1, VPD_DEVICE_ID, BI_VPD_LEN,
				  bi_ident_cb, st);
	t[3] = iscsi_inquiry_task(ctx, lun, 1, VPD_LB_PROVISIONING, BI_VPD_LEN,
				  bi_ident_cb, st);
	if (!t[0] || !t[1] || !t[2] || !t[3])
		bi_connect_failed(st, ENOMEM, "cannot queue identify commands");
	for (int i = 0; i < 4; i++)
		if (!t[i])
			st->identify_left--;
}

/* TEST UNIT READY until the new nexus has no unit attention left (a new
 * session usually starts with one, SAM-5 6.3.1), then identify. */
static void bi_tur_cb(struct iscsi_context *ctx, int status, void *data,
		      void *priv)
{
	struct be_iscsi *st = priv;
	struct scsi_task *task = data;
	bool ua = status == SCSI_STATUS_CHECK_CONDITION && task &&
		  task->sense.key == SCSI_SENSE_UNIT_ATTENTION;

	if (task)
		scsi_free_scsi_task(task);
	if (status == SCSI_STATUS_CANCELLED) {
		bi_connect_failed(st, ECONNRESET, "session lost while identifying");
		return;
	}
	if (ua && st->ua_left > 0) {
		st->ua_left--;
		if (iscsi_testunitready_task(ctx, (int)st->conf.lun, bi_tur_cb,
					     st))
			return;
	}
	/* anything else (NOT READY, no such LUN) shows in the identify
	 * commands' answers */
	bi_identify_start(st, ctx);
}

static void bi_login_cb(struct iscsi_context *ctx, int status,
			void *data UNUSED, void *priv)
{
	struct be_iscsi *st = priv;

	if (status != SCSI_STATUS_GOOD) {
		snprintf(bi_errbuf, sizeof(bi_errbuf), "login to %s: %s",
			 st->conf.portals[st->portal], iscsi_get_error(ctx));
		bi_connect_failed(st, ECONNREFUSED, bi_errbuf);
		return;
	}
	if (st->state == BI_CONNECTING)
		bi_set_state(st, BI_IDENTIFYING, 0, "logged in");
	st->ua_left = BI_UA_TRIES;
	if (!iscsi_testunitready_task(ctx, (int)st->conf.lun, bi_tur_cb, st))
		bi_connect_failed(st, ENOMEM, "cannot queue TEST UNIT READY");
}

/* The TCP connection is up (status 0) or failed. */
static void bi_socket_cb(struct iscsi_context *ctx, int status,
			 void *data UNUSED, void *priv)
{
	struct be_iscsi *st = priv;

	if (status != 0) {
		snprintf(bi_errbuf, sizeof(bi_errbuf), "connect to %s: %s",
			 st->conf.portals[st->portal], iscsi_get_error(ctx));
		bi_connect_failed(st, ECONNREFUSED, bi_errbuf);
		return;
	}
	if (iscsi_login_async(ctx, bi_login_cb, st) != 0) {
		snprintf(bi_errbuf, sizeof(bi_errbuf), "login to %s: %s",
			 st->conf.portals[st->portal], iscsi_get_error(ctx));
		bi_connect_failed(st, ECONNREFUSED, bi_errbuf);
	}
}

/* Start a connect + login on the current portal.  0 or -errno. */
static int bi_connect_start(struct be_iscsi *st)
{
	struct be_iscsi_conf *c = &st->conf;
	struct iscsi_context *ctx = iscsi_create_context(c->initiator);

	if (!ctx) {
		bi_note_error(st, ENOMEM, "cannot create a libiscsi context");
		return -ENOMEM;
	}
	iscsi_set_targetname(ctx, c->target);
	iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(ctx, c->header_digest ? ISCSI_HEADER_DIGEST_CRC32C
						      : ISCSI_HEADER_DIGEST_NONE);
	if (c->user[0])
		iscsi_set_initiator_username_pwd(ctx, c->user, c->password);
	if (c->mutual_user[0])
		iscsi_set_target_username_pwd(ctx, c->mutual_user,
					      c->mutual_password);
	iscsi_set_noautoreconnect(ctx, 1);
	iscsi_set_timeout(ctx, 0);	/* timeouts are ours (the tick) */
	iscsi_set_isid_random(ctx, st->isid_rnd, 0);
	st->ctx = ctx;
	st->drop_err = 0;
	bi_set_state(st, BI_CONNECTING, 0, "connecting");
	if (st->dd) {
		/* libiscsi goes to the relay, the relay to this portal */
		if (iscsi_connect_async(ctx, iscsi_dd_addr(st->dd),
					bi_socket_cb, st) != 0) {
			snprintf(bi_errbuf, sizeof(bi_errbuf),
				 "connect to the data digest relay: %s",
				 iscsi_get_error(ctx));
			bi_note_error(st, ECONNREFUSED, bi_errbuf);
			return -ECONNREFUSED;
		}
		iscsi_dd_expect(st->dd, c->portals[st->portal],
				iscsi_get_fd(ctx));
		return 0;
	}
	/* connect and login step by step rather than with
	 * iscsi_full_connect_async(): that one allocates a task that nobody
	 * frees when the context is destroyed with the connect pending
	 * (libiscsi 1.19), which is what a connect timeout does. */
	if (iscsi_connect_async(ctx, c->portals[st->portal], bi_socket_cb,
				st) != 0) {
		snprintf(bi_errbuf, sizeof(bi_errbuf), "connect to %s: %s",
			 c->portals[st->portal], iscsi_get_error(ctx));
		bi_note_error(st, ECONNREFUSED, bi_errbuf);
		return -ECONNREFUSED;
	}
	return 0;
}

/* After libiscsi ran: drop the session if a callback asked for it, send
 * what was retried, fix the fd watcher, deliver completions. */
static void bi_after_service(struct be_iscsi *st)
{
	if (st->ctx && st->drop_err) {
		int err = st->drop_err;

		bi_drop(st, err, st->last_err_text[0] ? st->last_err_text
						      : strerror(err));
	}
	bi_sync_events(st);
	bi_deliver(st);
}

static void bi_fd_cb(struct ev_fd *w, uint32_t events)
{
	struct be_iscsi *st = w->arg;
	int rev = 0, ret;

	if (events & (EPOLLIN | EPOLLRDHUP))
		rev |= POLLIN;
	if (events & EPOLLOUT)
		rev |= POLLOUT;
	if (events & EPOLLERR)
		rev |= POLLERR;
	if (events & EPOLLHUP)
		rev |= POLLHUP;
	ret = iscsi_service(st->ctx, rev);
	if (st->ctx && !st->drop_err &&
	    (ret < 0 || (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)))) {
		snprintf(bi_errbuf, sizeof(bi_errbuf), "socket: %s",
			 iscsi_get_error(st->ctx));
		bi_note_error(st, ECONNRESET, bi_dd_why(st, bi_errbuf));
		st->drop_err = ECONNRESET;
	}
	bi_after_service(st);
}

static void bi_tick(struct ev_timer *t)
{
	struct be_iscsi *st = t->arg;
	struct reactor *r = atomic_load(&st->owner);
	uint64_t now = reactor_now_ms(r);
	struct bi_req *q, *n;

	if (st->closing)
		return;
	switch (st->state) {
	case BI_UP:
		/* an unanswered command means a dead path (the oldest is
		 * first: commands are appended as they are sent) */
		if (!list_empty(&st->inflight)) {
			q = list_first_entry(&st->inflight, struct bi_req, link);
			if (now - q->start_ms >= st->conf.remote_timeout_ms) {
				snprintf(bi_errbuf, sizeof(bi_errbuf),
					 "no answer for %u ms",
					 st->conf.remote_timeout_ms);
				bi_drop(st, ETIMEDOUT, bi_errbuf);
				break;
			}
		}
		/* a retry keeps its place: the commands that overlap it
		 * wait for it, so it must not wait for them */
		list_for_each_entry_safe(q, n, &st->delayed, link) {
			list_del(&q->link);
			bi_send(st, q);
		}
		break;
	case BI_CONNECTING:
	case BI_IDENTIFYING:
		if (now - st->state_since_ms >= st->conf.connect_timeout_ms) {
			snprintf(bi_errbuf, sizeof(bi_errbuf),
				 "no login to %s within %u ms",
				 st->conf.portals[st->portal],
				 st->conf.connect_timeout_ms);
			bi_drop(st, ETIMEDOUT, bi_errbuf);
		}
		break;
	case BI_DOWN:
		if (!st->ctx && now >= st->next_attempt_ms &&
		    bi_connect_start(st) < 0)
			bi_drop(st, ECONNREFUSED, st->last_err_text);
		break;
	}
	bi_after_service(st);
	/* a completion above may have dropped the LUN's last reference and
	 * closed this backend (be_iscsi_close): then the tick stays off */
	if (!st->closing)
		reactor_timer_add(r, &st->tick, BI_TICK_MS, bi_tick, st);
}

/* ---- ownership and submission ---- */

/* First I/O on reactor r: r becomes the session reactor. */
static struct reactor *bi_owner(struct be_iscsi *st, struct reactor *r)
{
	struct reactor *o = atomic_load(&st->owner);

	if (o)
		return o;
	if (atomic_compare_exchange_strong(&st->owner, &o, r))
		return r;
	return o;
}

/* The relay's sockets are ready: move the bytes (libiscsi's own watcher
 * sees what arrives on its socket). */
static void bi_dd_cb(struct ev_fd *w, uint32_t events UNUSED)
{
	struct be_iscsi *st = w->arg;

	if (!st->closing)
		iscsi_dd_service(st->dd);
}

/* On the session reactor: adopt the session opened by open(). */
static void bi_adopt(struct be_iscsi *st)
{
	struct reactor *r = atomic_load(&st->owner);

	if (st->tick.armed || st->closing)
		return;
	st->state_since_ms = reactor_now_ms(r);
	if (st->dd && !st->dd_w_added &&
	    reactor_fd_add(r, &st->dd_w, iscsi_dd_fd(st->dd), EPOLLIN,
			   bi_dd_cb, st) == 0)
		st->dd_w_added = true;
	bi_sync_events(st);
	reactor_timer_add(r, &st->tick, BI_TICK_MS, bi_tick, st);
}

static void bi_deliver_call_st(void *arg)
{
	bi_deliver(arg);
}

static void bi_submit_call(void *arg)
{
	struct be_io *io = arg;
	struct bi_req *q = bi_req_of(io);

	bi_adopt(q->st);
	bi_start(q->st, q);
	bi_deliver(q->st);
}

static int bi_check(struct backend *be, struct be_iscsi *st,
		    const struct be_io *io)
{
	uint32_t bs = st->check_bs;

	switch (io->op) {
	case BE_OP_FLUSH:
		return 0;
	case BE_OP_READ:
	case BE_OP_WRITE:
	case BE_OP_UNMAP:
	case BE_OP_WRITE_ZEROES:
		break;
	default:
		return -EOPNOTSUPP;
	}
	if (io->offset > be->size || io->length > be->size - io->offset ||
	    io->offset % bs || io->length % bs || io->length > UINT32_MAX)
		return -EINVAL;
	if (io->op != BE_OP_READ && be->readonly)
		return -EROFS;
	/* a node that is not active for a shared LUN writes nothing
	 * (backend.h be_fence, scsi_alua.c) */
	if (io->op != BE_OP_READ &&
	    __atomic_load_n(&be->fenced, __ATOMIC_SEQ_CST))
		return -ECANCELED;
	return 0;
}

static void be_iscsi_submit(struct backend *be, struct be_io *io,
			    struct reactor *r)
{
	struct be_iscsi *st = be->priv;
	struct bi_req *q = bi_req_of(io);
	struct reactor *owner;
	int err;

	memset(q, 0, sizeof(*q));
	q->st = st;
	q->origin = r;
	list_init(&q->link);
	/* an earlier attempt's sense is not this one's */
	memset(&io->sense, 0, sizeof(io->sense));
	err = bi_check(be, st, io);
	if (err || !io->length) {
		if (err || io->op != BE_OP_FLUSH) {
			backend_complete_later(r, io, err);
			return;
		}
	}
	owner = bi_owner(st, r);
	if (owner != r) {
		if (reactor_call(owner, bi_submit_call, io) < 0)
			backend_complete_later(r, io, -ENOMEM);
		return;
	}
	bi_adopt(st);
	if (st->state != BI_UP) {
		/* no session: fail now (the hang engine holds or reports) */
		backend_complete_later(r, io, -st->down_err);
		return;
	}
	/* bi_start() cannot complete synchronously here: the session is up
	 * and a failure to queue is reported through st->done, which the
	 * next loop turn delivers (the tick or the fd). */
	bi_start(st, q);
	if (!list_empty(&st->done) && reactor_call(r, bi_deliver_call_st, st) < 0)
		reactor_timer_add(r, &st->tick, 0, bi_tick, st);
}

/* GET LBA STATUS at the SAN (backend.h block_status_async): the answer's
 * first descriptor is this extent.  Sent like I/O on the session; while
 * the SAN is down it is answered with the link's error at once (it is
 * advisory: nothing holds it). */
static int be_iscsi_block_status_async(struct backend *be, struct be_io *io,
				       struct reactor *r)
{
	struct be_iscsi *st = be->priv;
	struct bi_req *q = bi_req_of(io);
	uint32_t bs = st->check_bs;
	struct reactor *owner;

	if (st->no_gls)
		return -EOPNOTSUPP;
	if (!bs || io->offset % bs || io->offset >= be->size || !io->length)
		return -EINVAL;
	io->length = MIN(io->length, be->size - io->offset);
	io->ext_n = 0;
	if (!io->ext)
		io->ext_max = 0;
	memset(q, 0, sizeof(*q));
	q->st = st;
	q->origin = r;
	q->gls = true;
	list_init(&q->link);
	owner = bi_owner(st, r);
	if (owner != r) {
		if (reactor_call(owner, bi_submit_call, io) < 0)
			return -ENOMEM;
		return -EINPROGRESS;
	}
	bi_adopt(st);
	if (st->state != BI_UP)
		return -st->down_err;
	bi_start(st, q);
	if (!list_empty(&st->done) && reactor_call(r, bi_deliver_call_st, st) < 0)
		reactor_timer_add(r, &st->tick, 0, bi_tick, st);
	return -EINPROGRESS;
}

/* ---- open / close ---- */

/* Run libiscsi on the calling thread until the first login and identify
 * finish (open is synchronous, backend.h). */
static int bi_open_wait(struct be_iscsi *st, const char **errmsg)
{
	uint64_t deadline = bi_clock_ms() + st->conf.connect_timeout_ms;

	for (unsigned tries = 0; tries < st->conf.nportals; tries++) {
		if (bi_connect_start(st) == 0) {
			while (st->state != BI_UP && !st->drop_err) {
				struct pollfd pf[2] = { {
					.fd = iscsi_get_fd(st->ctx),
					.events = (short)iscsi_which_events(st->ctx),
				}, {
					.fd = st->dd ? iscsi_dd_fd(st->dd) : -1,
					.events = POLLIN,
				} };
				uint64_t now = bi_clock_ms();

				if (now >= deadline) {
					snprintf(bi_errbuf, sizeof(bi_errbuf),
						 "no login to %s within %u ms",
						 st->conf.portals[st->portal],
						 st->conf.connect_timeout_ms);
					bi_note_error(st, ETIMEDOUT, bi_errbuf);
					st->drop_err = ETIMEDOUT;
					break;
				}
				if (poll(pf, 2, (int)MIN(deadline - now, 100)) < 0)
					continue;
				if (pf[1].revents)
					iscsi_dd_service(st->dd);
				if (iscsi_service(st->ctx, pf[0].revents) < 0 &&
				    !st->drop_err) {
					snprintf(bi_errbuf, sizeof(bi_errbuf),
						 "%s: %s", st->conf.portals[st->portal],
						 iscsi_get_error(st->ctx));
					bi_note_error(st, ECONNRESET,
						      bi_dd_why(st, bi_errbuf));
					st->drop_err = ECONNRESET;
				}
			}
			if (st->state == BI_UP && !st->drop_err)
				return 0;
		}
		if (st->ctx) {
			iscsi_destroy_context(st->ctx);
			st->ctx = NULL;
		}
		if (st->dd)
			iscsi_dd_reset(st->dd);
		st->drop_err = 0;
		st->state = BI_DOWN;
		st->portal = (st->portal + 1) % st->conf.nportals;
		deadline = bi_clock_ms() + st->conf.connect_timeout_ms;
	}
	snprintf(bi_errbuf, sizeof(bi_errbuf),
		 "iscsi backend: cannot reach %.100s: %.180s", st->url,
		 st->last_err_text);
	*errmsg = bi_errbuf;
	return -(st->last_err ? st->last_err : EHOSTUNREACH);
}

static int be_iscsi_open(struct backend *be, const struct backend_params *p,
			 const char **errmsg)
{
	struct be_iscsi *st = calloc(1, sizeof(*st));
	int err;

	if (!st) {
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	err = be_iscsi_conf_parse(p->path, p->opts, NULL, &st->conf, errmsg);
	if (err)
		goto err_free;
	be_iscsi_conf_url(&st->conf, st->url, sizeof(st->url));
	pthread_mutex_init(&st->lock, NULL);
	list_init(&st->inflight);
	list_init(&st->delayed);
	list_init(&st->waiting);
	list_init(&st->done);
	atomic_init(&st->owner, NULL);
	st->backoff_ms = BI_BACKOFF_MIN_MS;
	st->down_err = ENOTCONN;
	st->state = BI_DOWN;
	st->shown_since = time(NULL);
	if (st->conf.data_digest) {
		st->dd = iscsi_dd_new(st->url, errmsg);
		if (!st->dd) {
			err = -ENOMEM;
			goto err_lock;
		}
	}
	if (getrandom(&st->isid_rnd, sizeof(st->isid_rnd), 0) < 0)
		st->isid_rnd = (uint32_t)bi_clock_ms() ^ (uint32_t)getpid();
	st->isid_rnd &= 0xffffff;	/* ISID type 2: 24-bit random */

	err = bi_open_wait(st, errmsg);
	if (err && p->size) {
		/* The SAN is down now, but the operator said how big its LUN
		 * is: serve the LUN with that size and connect in the
		 * background; the SAN's LUN is checked against it when it
		 * answers.  Until then commands fail with ENOTCONN, which
		 * the hang engine holds (retry) or reports. */
		log_warn("%s; serving the LUN with the configured size (%llu "
			 "bytes) and connecting when the first command comes",
			 *errmsg, (unsigned long long)p->size);
		st->cfg_size = p->size;
		st->cfg_block_size = p->block_size ? p->block_size : 512;
		st->check_bs = st->cfg_block_size;
		st->shown_blind = true;
		st->state = BI_DOWN;
		st->down_err = ENOTCONN;
		st->next_attempt_ms = 0;
		be->size = p->size;
		be->thin = BE_THIN_SETTING;	/* not known yet */
		goto ready;
	}
	if (err) {
		snprintf(bi_errbuf + strlen(bi_errbuf),
			 sizeof(bi_errbuf) - strlen(bi_errbuf),
			 " (set size to the SAN LUN's size to start without it)");
		goto err_lock;
	}
	if (p->block_size && (p->block_size < st->ident.block_size ||
			      p->block_size % st->ident.block_size)) {
		snprintf(bi_errbuf, sizeof(bi_errbuf),
			 "iscsi backend: the remote LUN has %u-byte blocks: "
			 "set block_size = %u (or a multiple)",
			 st->ident.block_size, st->ident.block_size);
		*errmsg = bi_errbuf;
		err = -EINVAL;
		goto err_ctx;
	}
	be->size = st->ident.nblocks * st->ident.block_size;
	if (p->size && p->size != be->size) {
		*errmsg = "iscsi backend: size is the remote LUN's (leave it out)";
		err = -EINVAL;
		goto err_ctx;
	}
	st->check_bs = st->ident.block_size;
	/* the SAN's LUN is thin when it says so and has a command that
	 * deallocates (UNMAP, or WRITE SAME with UNMAP) */
	be->thin = st->ident.lbpme && (!st->ident.have_b2 || st->ident.lbpu ||
				       st->ident.lbpws)
			   ? BE_THIN_YES : BE_THIN_NO;
ready:
	/* the WRITE SAME source: one block of the SAN's LUN, which is at
	 * most the LUN's block size (checked at open or first login) */
	st->zero_block = aligned_alloc(4096, MAX(MAX(st->ident.block_size,
						    p->block_size), 4096u));
	if (!st->zero_block) {
		*errmsg = "out of memory";
		err = -ENOMEM;
		goto err_ctx;
	}
	memset(st->zero_block, 0, MAX(MAX(st->ident.block_size, p->block_size),
				      4096u));
	/* a write the SAN did not acknowledge is one the hang engine may
	 * resend: nothing is cached in between (DESIGN.md safety rule) */
	be->direct = true;
	be->readonly = p->readonly;
	be->priv = st;
	if (st->ident.block_size)
		log_info("iscsi %s: remote LUN %llu blocks of %u bytes%s, "
			 "initiator %s", st->url,
			 (unsigned long long)st->ident.nblocks,
			 st->ident.block_size,
			 be->thin == BE_THIN_YES ? ", thin" : "",
			 st->conf.initiator);
	return 0;

err_ctx:
	if (st->ctx)
		iscsi_destroy_context(st->ctx);
err_lock:
	iscsi_dd_free(st->dd);
	pthread_mutex_destroy(&st->lock);
err_free:
	free(st);
	return err;
}

static void bi_free(struct be_iscsi *st)
{
	if (st->ctx)
		iscsi_destroy_context(st->ctx);
	iscsi_dd_free(st->dd);
	pthread_mutex_destroy(&st->lock);
	free(st->zero_block);
	free(st);
}

struct bi_close {
	struct be_iscsi *st;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

/* On the session reactor: stop the watcher and the tick (only that thread
 * may touch them). */
static void bi_close_call(void *arg)
{
	struct bi_close *c = arg;
	struct be_iscsi *st = c->st;

	st->closing = true;
	if (st->w_added)
		reactor_fd_del(&st->w);
	st->w_added = false;
	if (st->dd_w_added)
		reactor_fd_del(&st->dd_w);
	st->dd_w_added = false;
	reactor_timer_del(atomic_load(&st->owner), &st->tick);
	pthread_mutex_lock(&c->lock);
	c->done = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static void bi_free_call(void *arg)
{
	struct be_iscsi *st = arg;

	log_info("iscsi %s: closed", st->url);
	bi_free(st);
}

static void be_iscsi_close(struct backend *be)
{
	struct be_iscsi *st = be->priv;
	struct reactor *owner;
	struct bi_close c = { .st = st };

	if (!st)
		return;
	be->priv = NULL;
	owner = atomic_load(&st->owner);
	if (owner && owner == reactor_current()) {
		/* The last command's completion closed us from inside one of
		 * our own callbacks (bi_deliver, the fd or the tick), which
		 * still use st when it returns: unhook now, free on the next
		 * turn of the loop. */
		bi_close_call(&c);
		if (reactor_call(owner, bi_free_call, st) < 0)
			log_warn("iscsi %s: no memory to free the session "
				 "state; leaking it", st->url);
		return;
	} else if (owner) {
		struct timespec until;

		pthread_mutex_init(&c.lock, NULL);
		pthread_cond_init(&c.cond, NULL);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 5;
		pthread_mutex_lock(&c.lock);
		if (reactor_call(owner, bi_close_call, &c) == 0)
			while (!c.done &&
			       pthread_cond_timedwait(&c.cond, &c.lock, &until) == 0)
				;
		pthread_mutex_unlock(&c.lock);
		if (!c.done) {
			/* the session reactor is gone or stuck: leave the
			 * state to it rather than free what it may touch */
			log_warn("iscsi %s: session reactor did not answer; "
				 "leaking its state", st->url);
			return;
		}
		pthread_cond_destroy(&c.cond);
		pthread_mutex_destroy(&c.lock);
	}
	log_info("iscsi %s: closed", st->url);
	bi_free(st);
}

/* ---- ownership by persistent reservation (pr_owner.h) ---- */

static void bi_ctl_put(struct bi_ctl *c)
{
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* On the session reactor: the command finished (res 0 with a status, or
 * the session's error). */
static void bi_ctl_done(struct be_io *io, int res)
{
	struct bi_ctl *c = container_of(io, struct bi_ctl, io);
	bool abandoned;

	pthread_mutex_lock(&c->lock);
	c->res = res;
	c->done = true;
	abandoned = c->abandoned;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (abandoned)
		bi_ctl_put(c);
}

static void bi_ctl_sync_cb(struct iscsi_context *ctx UNUSED, int status,
			   void *data, void *priv)
{
	struct bi_ctl *c = priv;
	struct scsi_task *task = data;

	c->res = bi_ctl_record(c, status, task);
	c->done = true;
	if (task)
		scsi_free_scsi_task(task);
}

/* No reactor exists yet (holdfastd applies its configuration before it
 * starts them): nothing else can touch the session, so run it here, as
 * open() does. */
static int bi_ctl_sync(struct be_iscsi *st, struct bi_ctl *c)
{
	uint64_t deadline = bi_clock_ms() + st->conf.remote_timeout_ms;

	if (st->state != BI_UP || !st->ctx)
		return -(st->down_err ? st->down_err : ENOTCONN);
	if (!bi_ctl_task(st, c, bi_ctl_sync_cb, c))
		return -ENOMEM;
	while (!c->done) {
		struct pollfd p = {
			.fd = iscsi_get_fd(st->ctx),
			.events = (short)iscsi_which_events(st->ctx),
		};
		uint64_t now = bi_clock_ms();

		if (now >= deadline)
			return -ETIMEDOUT;	/* the first I/O reconnects */
		if (poll(&p, 1, (int)MIN(deadline - now, 100)) < 0)
			continue;
		if (iscsi_service(st->ctx, p.revents) < 0)
			return -ECONNRESET;
	}
	return c->res;
}

/* pr_exec_fn: one command on the session, waited for (ALUA thread). */
static int bi_ctl_exec(void *ctx, struct pr_xfer *x)
{
	struct be_iscsi *st = ctx;
	struct reactor *r = atomic_load(&st->owner);
	struct bi_ctl *c;
	struct bi_req *q;
	struct timespec until;
	int err = 0;

	if (x->len > PR_IN_ALLOC || x->cdb_len > sizeof(c->cdb))
		return -EINVAL;
	if (!r && reactor_any()) {
		/* no I/O chose a session reactor yet: pick one */
		r = bi_owner(st, reactor_any());
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	memcpy(c->cdb, x->cdb, x->cdb_len);
	c->cdb_len = x->cdb_len;
	c->dir = x->dir;
	c->len = x->dir == PR_DIR_NONE ? 0 : x->len;
	if (x->dir == PR_DIR_OUT)
		memcpy(c->data, x->buf, x->len);
	if (!r) {
		err = bi_ctl_sync(st, c);
		goto out;
	}
	c->io.done = bi_ctl_done;
	q = bi_req_of(&c->io);
	memset(q, 0, sizeof(*q));
	q->st = st;
	q->origin = r;
	q->ctl = true;
	list_init(&q->link);
	if (reactor_call(r, bi_submit_call, &c->io) < 0) {
		bi_ctl_put(c);
		return -ENOMEM;
	}
	/* the tick answers an unanswered command after remote_timeout, a
	 * connect after connect_timeout: this is only a backstop */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += (st->conf.remote_timeout_ms +
			 st->conf.connect_timeout_ms) / 1000 + 5;
	pthread_mutex_lock(&c->lock);
	while (!c->done && err == 0)
		err = pthread_cond_timedwait(&c->cond, &c->lock, &until);
	if (!c->done) {
		c->abandoned = true;
		pthread_mutex_unlock(&c->lock);
		return -ETIMEDOUT;
	}
	pthread_mutex_unlock(&c->lock);
	err = c->res;
out:
	if (!err) {
		x->status = c->status;
		x->sense_key = c->sense_key;
		x->asc = c->asc;
		x->in_len = c->in_len;
		if (x->dir == PR_DIR_IN)
			memcpy(x->buf, c->data, c->in_len);
	}
	bi_ctl_put(c);
	return err;
}

/* backend_ops.resize: the SAN's LUN is resized on the SAN; size 0 reads
 * its capacity again (READ CAPACITY (16) on the session), as a takeover
 * does (scsi_lun_refresh), else the LUN must already be that big. */
static int be_iscsi_resize(struct backend *be, uint64_t size,
			   const char **errmsg)
{
	struct be_iscsi *st = be->priv;
	uint8_t buf[32];
	struct pr_xfer x;
	uint64_t cap;
	int err;

	memset(&x, 0, sizeof(x));
	memset(buf, 0, sizeof(buf));
	x.cdb[0] = 0x9e;		/* SERVICE ACTION IN (16) */
	x.cdb[1] = 0x10;		/* READ CAPACITY (16) */
	put_be32(x.cdb + 10, sizeof(buf));
	x.cdb_len = 16;
	x.dir = PR_DIR_IN;
	x.buf = buf;
	x.len = sizeof(buf);
	err = bi_ctl_exec(st, &x);
	if (!err && x.status == PR_STATUS_CHECK_CONDITION &&
	    x.sense_key == PR_SENSE_UNIT_ATTENTION)
		err = bi_ctl_exec(st, &x);	/* capacity changed: again */
	if (err || x.status != PR_STATUS_GOOD || x.in_len < 12) {
		*errmsg = "cannot read the SAN LUN's capacity";
		return err ? err : -EIO;
	}
	if (st->ident.block_size && get_be32(buf + 8) != st->ident.block_size) {
		*errmsg = "the SAN LUN's block size changed";
		return -EIO;
	}
	cap = (get_be64(buf) + 1) * get_be32(buf + 8);
	if (size > cap) {
		*errmsg = "the SAN's LUN is smaller: grow it on the SAN first";
		return -EINVAL;
	}
	/* the identity a reconnect compares follows the SAN's LUN */
	st->ident.nblocks = get_be64(buf) + 1;
	__atomic_store_n(&be->size, size ? size : cap, __ATOMIC_RELEASE);
	return 0;
}

static int be_iscsi_set_param(struct backend *be, const char *key,
			      const char *val)
{
	struct be_iscsi *st = be->priv;

	if (strcmp(key, "pr_key"))
		return -ENOENT;
	return pr_key_parse(val, &st->pr.key);
}

static int be_iscsi_owner(struct backend *be, enum be_owner_op op, char *buf,
			  unsigned len, const char **errmsg)
{
	struct be_iscsi *st = be->priv;

	st->pr.exec = bi_ctl_exec;
	st->pr.ctx = st;
	if (op == BE_OWNER_ID)
		return pr_owner_id(&st->pr, buf, len, errmsg);
	if (op == BE_OWNER_QUERY && atomic_exchange(&st->pr_reassert, false) &&
	    st->pr.owner_mode) {
		/* reconnected while owning it: the new session must hold the
		 * reservation (pr_owner.c takes it over from our own earlier
		 * nexus); if another key holds it, the query says so */
		const char *why = NULL;
		int err = pr_owner_op(&st->pr, BE_OWNER_TAKE, &why);

		if (err == 0)
			log_info("iscsi %s: reservation re-asserted on the new "
				 "session", st->url);
		else if (err == -EBUSY)
			st->pr.owner_mode = false;
		else
			atomic_store(&st->pr_reassert, true); /* again later */
	}
	return pr_owner_op(&st->pr, op, errmsg);
}

static int be_iscsi_describe(struct backend *be, char *buf, unsigned len)
{
	struct be_iscsi *st = be->priv;
	char since[32];
	struct tm tm;
	int n;

	pthread_mutex_lock(&st->lock);
	gmtime_r(&st->shown_since, &tm);
	strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
	n = snprintf(buf, len, "iscsi %s via %s: %s since %s, reconnects %llu, "
		     "lba status queries %llu",
		     st->url, st->portal_shown[0] ? st->portal_shown
						  : st->conf.portals[0],
		     st->shown_wrong ? "wrong-lun"
				     : st->shown_up ? "connected"
				     : st->shown_blind ? "not-yet-connected"
					       : "reconnecting",
		     since,
		     (unsigned long long)st->reconnects,
		     (unsigned long long)st->gls_sent);
	/* key=value: these are fields of the JSON's backend_state too */
	if (st->dd && n >= 0 && (unsigned)n < len)
		n += snprintf(buf + n, len - (unsigned)n,
			      ", data_digest=%s digest_errors=%llu",
			      iscsi_dd_active(st->dd) ? "crc32c"
						      : "crc32c-not-logged-in",
			      (unsigned long long)iscsi_dd_errors(st->dd));
	if (st->last_err && n >= 0 && (unsigned)n < len)
		n += snprintf(buf + n, len - (unsigned)n,
			      ", last error %s (%s)",
			      strerrorname_np(st->last_err)
				      ? strerrorname_np(st->last_err) : "?",
			      st->last_err_text);
	pthread_mutex_unlock(&st->lock);
	return n;
}

const struct backend_ops be_iscsi_ops = {
	.name = "iscsi",
	.open = be_iscsi_open,
	.close = be_iscsi_close,
	.submit = be_iscsi_submit,
	.describe = be_iscsi_describe,
	.block_status_async = be_iscsi_block_status_async,
	.set_param = be_iscsi_set_param,
	.resize = be_iscsi_resize,
	.owner = be_iscsi_owner,
	.owner_opt_in = true,
};
