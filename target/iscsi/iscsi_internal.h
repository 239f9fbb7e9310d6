/* iscsi_internal.h - state shared by the iSCSI layer's files:
 * iscsi_conn.c (receive/transmit, connection lifetime), iscsi_login.c
 * (login and text), iscsi_scsi.c (commands, data, R2T, task management),
 * iscsi_session.c (session table, portals).
 *
 * Ownership: a connection owns its session (MaxConnections=1), its tasks
 * and its transmit queue; all of it lives on the connection's reactor and
 * is freed in one place, iscsi_conn_free(), once no task is executing. */
#ifndef HOLDFAST_ISCSI_INTERNAL_H
#define HOLDFAST_ISCSI_INTERNAL_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "crc32c.h"
#include "iscsi.h"
#include "iscsi_param.h"
#include "iscsi_pdu.h"
#include "reactor.h"
#include "scsi.h"
#include "target.h"

#define ISCSI_CMD_WINDOW 128		/* default cmdsn_depth */
#define ISCSI_MAX_R2T 16		/* our MaxOutstandingR2T offer */
#define ISCSI_MAX_CMD_BUF (128u << 20)	/* largest EDTL we buffer */
/* The read-ahead buffer starts small (a login needs little) and doubles
 * while reads fill it, up to ISCSI_RXBUF_SIZE; data segments of
 * ISCSI_RX_DIRECT bytes or more are read straight into their buffer. */
#define ISCSI_RXBUF_MIN 2048u
#define ISCSI_RXBUF_SIZE (64u * 1024)
#define ISCSI_RX_DIRECT (32u * 1024)
#define ISCSI_FLUSH_TIMEOUT_MS 15000	/* FLUSH: the peer must read by then */
#define ISCSI_TPGT 1
#define ISCSI_PDUS_PER_WAKEUP 64	/* fairness between connections */
#define ISCSI_DEFER_POLL_MS 50		/* re-check of writes to a hung LUN */
#define ISCSI_REINSTATE_TIMEOUT_MS 5000	/* longest hold of a login answer */

/* Connection states (RFC 7143 8.1, target side, reduced to what ERL 0
 * with one connection per session needs).  Changed only by
 * iscsi_conn_set_state(), which allows exactly these transitions:
 *
 *   NEW          -> LOGIN
 *   LOGIN        -> FULL_FEATURE | REINSTATE | FLUSH (login reject)
 *                   | CLOSING
 *   REINSTATE    -> FULL_FEATURE | FLUSH (refused after the timeout)
 *                   | CLOSING
 *   FULL_FEATURE -> FLUSH (logout, TARGET COLD RESET) | CLOSING
 *   FLUSH        -> CLOSING
 *   CLOSING         final
 *
 * REINSTATE: the login succeeded and reinstates older sessions (6.3.5);
 * its final response (c->login_rsp_held) goes out, and the connection
 * enters FULL_FEATURE, only once every old session is gone: connection
 * closed, tasks finished (an attempt in the store completes first, its
 * result dropped), held and queued commands of its nexus dropped by each
 * LUN.  If that takes longer than ISCSI_REINSTATE_TIMEOUT_MS the login
 * is refused instead (0x0301, service unavailable; FLUSH).  A PDU from the initiator
 * meanwhile is a protocol error (it must wait for the answer).
 * FLUSH is "close after send": the last PDU (a Logout Response, a login
 * reject, the answer to TARGET COLD RESET) is queued, nothing more is
 * read, and the connection closes once the transmit queue is empty, or
 * after ISCSI_FLUSH_TIMEOUT_MS if the peer does not read it.
 * CLOSING: the socket is gone; the connection is freed when its last
 * task is. */
enum iscsi_conn_state {
	CONN_STATE_NEW,			/* allocated, not on a reactor yet */
	CONN_STATE_LOGIN,		/* login phase */
	CONN_STATE_REINSTATE,		/* final login answer held, 6.3.5 */
	CONN_STATE_FULL_FEATURE,
	CONN_STATE_FLUSH,		/* close once the tx queue is sent */
	CONN_STATE_CLOSING,		/* socket gone, waiting for tasks */
	CONN_STATE_COUNT
};

enum iscsi_rx_stage {
	RX_BHS,
	RX_AHS,
	RX_HDR_DIGEST,
	RX_DATA,
	RX_PAD,
	RX_DATA_DIGEST,
};

enum iscsi_task_state {
	TASK_PENDING,			/* waiting for its CmdSN turn */
	TASK_DATA_OUT,			/* collecting Data-Out */
	TASK_EXECUTING,			/* in the SCSI layer */
	TASK_DONE,			/* response queued */
};

struct iscsi_r2t {
	uint32_t ttt;
	uint32_t offset, length, received;
	uint32_t exp_data_sn;
	bool active;
};

struct iscsi_tmf;

struct iscsi_task {
	struct list_head link;		/* conn->tasks */
	struct list_head pending_link;	/* sess->pending (CmdSN order) */
	struct iscsi_conn *conn;
	enum iscsi_task_state state;
	int refs;			/* task list + Data-In PDUs queued */
	uint32_t itt;
	uint32_t cmd_sn;
	bool immediate;
	bool aborted;			/* by TMF or connection close */
	bool deferred;			/* LUN hung or buffer limit: data not
					 * solicited / read not started yet */
	bool no_room;			/* unasked data over the buffer limits:
					 * no buffer, the data is dropped and
					 * the command answered TASK SET FULL */
	uint64_t buf_reserved;		/* bytes counted against the limits:
					 * its data buffer, then what the SCSI
					 * layer charged (iscsi_task_buf_charge)
					 * - released once, in iscsi_task_put */
	uint64_t lun_id;
	uint8_t lun_raw[8];
	uint32_t edtl;
	uint32_t imm_len;
	uint32_t unsol_end;		/* offsets below this come unsolicited */
	uint32_t unsol_exp_data_sn;
	uint32_t received;		/* Data-Out bytes in */
	uint32_t buf_init;		/* cmd.buf[0, buf_init) holds data or
					 * zeros; the rest is a recycled
					 * buffer's old contents */
	uint32_t r2t_next;		/* next offset to ask for */
	uint32_t r2t_sn;
	uint32_t data_in_sn;
	struct iscsi_r2t r2t[ISCSI_MAX_R2T];
	struct iscsi_tmf *tmf;		/* TMF waiting for this task */
	struct scsi_cmd cmd;
};

/* A task management request waiting for aborted tasks to finish
 * (RFC 7143 4.2.3.3: the response follows their termination). */
struct iscsi_tmf {
	uint8_t bhs[ISCSI_BHS_LEN];
	uint8_t response;
	int waiting;			/* tasks still to finish */
	bool close_after;		/* TARGET COLD RESET */
	bool logout;			/* a Logout Request waiting for its tasks */
};

struct iscsi_login;

struct iscsi_session {
	struct list_head link;		/* global session table */
	uint64_t sid;			/* ISID << 16 | TSIH, as tgtd shows */
	uint16_t tsih;
	uint8_t isid[6];
	bool discovery;
	char initiator_name[TGT_NAME_MAX];
	char initiator_alias[TGT_NAME_MAX];
	struct target *target;		/* referenced; NULL for discovery */
	struct iscsi_conn *conn;
	bool closing;			/* conn closed; listed until freed */
	struct scsi_nexus nexus;
	uint32_t exp_cmd_sn;
	struct list_head pending;	/* tasks ahead of exp_cmd_sn */
	int in_flight;			/* non-immediate commands not done */
	struct iscsi_lun_stat *lun_stats;	/* [TGT_MAX_LUNS], for stat */
	uint32_t cmd_window;		/* cmdsn_depth at login; 0: default */
	/* negotiated parameters */
	uint32_t max_burst, first_burst, max_r2t;
	bool initial_r2t, immediate_data;
};

struct iscsi_conn {
	int fd;
	struct ev_fd w;
	struct reactor *r;
	enum iscsi_conn_state state;	/* iscsi_conn_set_state() only */
	const char *flush_why;		/* FLUSH: the reason logged at close */
	bool free_scheduled;
	uint64_t id;
	struct sockaddr_storage peer, local;
	char peer_str[64];		/* "ADDR" */
	char local_str[80];		/* "ADDR:PORT" as initiators reach it */
	char advertise[128];		/* portal's advertised address or "" */
	uint16_t cid;
	uint32_t stat_sn;
	uint32_t next_ttt;

	/* receive: a resumable parser over a read-ahead buffer */
	uint8_t *rxbuf;			/* NULL until the first read */
	uint32_t rx_cap;		/* bytes allocated at rxbuf */
	bool rx_full;			/* the last read filled it */
	bool rx_wakeup;			/* conn_rx runs: rx_drained is trusted */
	bool rx_drained;		/* a read came back short this wakeup */
	uint64_t rx_pdus;		/* PDUs completed */
	uint64_t rx_stall_pdus;		/* rx_pdus when the stall began */
	uint64_t rx_stall_since;	/* ms: a partial PDU waits since */
	struct ev_timer idle_timer;	/* idle_timeout of a partial PDU */
	struct iscsi_portal_count *portal_count; /* its portal's count */
	uint64_t buf_reserved;		/* bytes its tasks reserved (__atomic:
					 * read by management) */
	uint64_t buf_peak;		/* the most buf_reserved has been */
	uint32_t rx_start, rx_end;
	enum iscsi_rx_stage rx_stage;
	uint8_t rx_bhs[ISCSI_BHS_LEN];
	uint8_t rx_ahs[1024];
	uint32_t rx_ahs_len;
	uint8_t *rx_data;		/* where this PDU's data goes */
	uint32_t rx_data_len;
	bool rx_data_owned;		/* rx_data is ours to free */
	uint8_t rx_pad[4];
	uint8_t rx_digest[4];
	uint32_t rx_got;		/* bytes of the current stage */
	struct iscsi_task *rx_task;	/* SCSI cmd / Data-Out target */
	bool rx_task_new;		/* rx_task is a command not yet listed */
	bool rx_discard;		/* data goes nowhere (bad Data-Out) */

	/* transmit */
	struct list_head txq;
	bool tx_blocked;		/* waiting for EPOLLOUT */
	bool tx_flush_queued;		/* tx_defer is queued on c->r */
	struct ev_defer tx_defer;	/* one flush per loop turn */

	/* negotiated per connection */
	uint32_t max_send_dsl;		/* initiator's MaxRecvDataSegmentLength */
	uint32_t max_recv_dsl;		/* ours */
	bool hdr_digest, data_digest;

	struct iscsi_login *login;	/* during the login phase */
	/* REINSTATE: the held final login response, and how many old
	 * sessions it still waits for (each one holds an ntasks count) */
	struct iscsi_pdu *login_rsp_held;
	int reinstate_waiting;
	/* new logins waiting for this (old) connection to be freed */
	struct list_head reinstate_waiters;
	struct iscsi_session *sess;	/* after login */
	struct list_head tasks;
	int ntasks;

	/* text continuation (long SendTargets answers) */
	char *text_rsp;
	uint32_t text_rsp_len, text_rsp_off, text_ttt, text_itt;

	struct iscsi_conn_stat stat;	/* written here, read by management */

	struct ev_timer login_timer;
	struct ev_timer nop_timer;
	struct ev_timer defer_timer;	/* re-checks deferred writes */
	struct ev_timer flush_timer;	/* FLUSH: gives up on the peer */
	struct ev_timer reinstate_timer; /* REINSTATE: answers anyway */
	uint32_t nop_outstanding;
	uint32_t nop_interval_ms, nop_count;
};

/* Counters have one writer, the connection's reactor, and are read by
 * the management thread: relaxed atomic loads and stores, no ordering and
 * no locked read-modify-write needed on the hot path. */
#define STAT_ADD(field, n)                                                    \
	__atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) \
			 + (n), __ATOMIC_RELAXED)
#define STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* iscsi_conn.c */
struct iscsi_conn *iscsi_conn_new(struct reactor *r, int fd,
				  const char *advertise);
/* The one place a connection's state changes: checks the transition
 * against the table above and logs it (debug).  0, or -EINVAL (logged as
 * an error, state unchanged) for a transition the table forbids. */
int iscsi_conn_set_state(struct iscsi_conn *c, enum iscsi_conn_state to);
const char *iscsi_conn_state_name(enum iscsi_conn_state s);
/* The receive path's entry point (the PDU decoder): advance the
 * resumable parser over the read-ahead buffer and then c->fd (which must
 * be non-blocking), and dispatch the PDU once its BHS, AHS, header
 * digest, data segment, padding and data digest are in (RFC 7143 11.2).
 * Returns
 *   1            a PDU was completed and handled (call again for the next)
 *   -EAGAIN      input ran out; all progress is kept in c (rx_stage,
 *                rx_got), call again when the fd is readable
 *   other -errno the connection must be closed: -ECONNRESET peer closed,
 *                -EPROTO data segment over MaxRecvDataSegmentLength,
 *                -EBADMSG header or data digest mismatch (a Reject is
 *                queued for a data digest error), -ENOMEM
 * The caller (conn_rx, or a test / fuzz harness driving a socketpair)
 * closes the connection on an error; handling may itself have closed it
 * or put it in FLUSH, after which nothing more is read. */
int iscsi_conn_rx_step(struct iscsi_conn *c);
/* Close now: socket closed, tasks aborted, c freed when the last is gone
 * (CLOSING).  Idempotent. */
void iscsi_conn_close(struct iscsi_conn *c, const char *why);
/* Close once every queued PDU is sent (FLUSH); at once if none is.  Call
 * after queueing the last PDU.  No-op on a connection already closing. */
void iscsi_conn_close_after_send(struct iscsi_conn *c, const char *why);
struct iscsi_pdu *iscsi_pdu_new(uint8_t opcode, uint32_t data_len);
void iscsi_pdu_free(struct iscsi_pdu *p);
/* Queue a PDU (sets DataSegmentLength from data_len) and send. */
void iscsi_conn_send(struct iscsi_conn *c, struct iscsi_pdu *p);
/* Fill ExpCmdSN / MaxCmdSN of a response BHS. */
void iscsi_conn_put_sn(struct iscsi_conn *c, uint8_t *bhs);
/* Next StatSN for a status-carrying PDU (post-increments). */
uint32_t iscsi_conn_next_stat_sn(struct iscsi_conn *c);
void iscsi_conn_reject(struct iscsi_conn *c, const uint8_t *bhs,
		       uint8_t reason);
void iscsi_conn_start_nop(struct iscsi_conn *c);
/* A task of c was freed: a closing connection may now be freed too. */
void iscsi_conn_task_gone(struct iscsi_conn *c);
uint32_t iscsi_conn_new_ttt(struct iscsi_conn *c);

/* iscsi_login.c */
void iscsi_login_rx(struct iscsi_conn *c, const uint8_t *bhs,
		    const uint8_t *data, uint32_t len);
void iscsi_login_free(struct iscsi_conn *c);
void iscsi_text_rx(struct iscsi_conn *c, const uint8_t *bhs,
		   const uint8_t *data, uint32_t len);
/* REINSTATE is over (old sessions gone, or the wait timed out): send
 * the held final login response and enter FULL_FEATURE. */
void iscsi_login_reinstated(struct iscsi_conn *c);

/* iscsi_scsi.c */
/* Called when a SCSI Command BHS arrived; sets up rx_data for its
 * immediate data.  Returns 0 or -errno (connection error). */
int iscsi_scsi_cmd_begin(struct iscsi_conn *c);
void iscsi_scsi_cmd_rx(struct iscsi_conn *c);
int iscsi_data_out_begin(struct iscsi_conn *c);
void iscsi_data_out_rx(struct iscsi_conn *c);
void iscsi_tmf_rx(struct iscsi_conn *c, const uint8_t *bhs);
/* A Logout Request (11.14): answered once every task of the connection
 * is gone and the LUNs dropped what they held for this nexus. */
void iscsi_logout_rx(struct iscsi_conn *c, const uint8_t *bhs);
void iscsi_task_put(struct iscsi_task *t);
/* Abort every task of the connection (close).  */
void iscsi_conn_abort_tasks(struct iscsi_conn *c);
/* CmdSN window check for a non-SCSI request.  true: process it. */
bool iscsi_cmd_sn_accept(struct iscsi_conn *c, const uint8_t *bhs);

/* iscsi_session.c */
int iscsi_session_register(struct iscsi_session *s);
/* The session's connection closed: hidden from lookups and management,
 * but listed (for reinstatement) until iscsi_session_unregister(), when
 * its connection is freed. */
void iscsi_session_closing(struct iscsi_session *s);
void iscsi_session_unregister(struct iscsi_session *s);
/* Session reinstatement (RFC 7143 6.3.5), called on the final login of
 * c's new session: each older session with the same initiator name, ISID
 * and target is closed on its reactor, which reports back to c's once it
 * is freed (tasks finished, nexus dropped by every LUN).  Returns how
 * many old sessions c now waits for (c->reinstate_waiting, each holding
 * c->ntasks); iscsi_login_reinstated() runs when the last one is gone. */
int iscsi_session_reinstate(struct iscsi_conn *c);
/* c (an old session's connection) is being freed: tell the new logins
 * waiting for it. */
void iscsi_session_reinstate_notify(struct iscsi_conn *c);
uint32_t iscsi_session_max_cmd_sn(struct iscsi_session *s);
void iscsi_conn_freed(void);

/* Limits (iscsi_session.c): LIMIT(field) reads one of them. */
extern struct iscsi_limits iscsi_lim;
#define LIMIT(field) __atomic_load_n(&iscsi_lim.field, __ATOMIC_RELAXED)
/* Connections accepted on one portal; outlives the portal while its
 * connections do. */
struct iscsi_portal_count {
	atomic_int conns;
	atomic_int refs;
};
struct iscsi_portal_count *iscsi_portal_count_new(void);
void iscsi_portal_count_unref(struct iscsi_portal_count *pc);
/* A connection of the portal is gone: conns and refs down by one. */
void iscsi_portal_count_put(struct iscsi_portal_count *pc);
/* A limit was hit: log why, at most once per 10 s per kind (the kinds
 * are LIMIT_LOG_*), with how many times it was hit meanwhile. */
enum { LIMIT_LOG_CONN, LIMIT_LOG_BUFFER, LIMIT_LOG_SESSION,
       LIMIT_LOG_IDLE, LIMIT_LOG_KINDS };
void iscsi_limit_log(int kind, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Reserve t's EDTL against max_data_buffer(_per_connection) for its
 * data buffer: true if reserved (or nothing to reserve, or reserved
 * before); false if over a limit (the caller makes the command wait, or
 * refuses it).  Released when the task is freed. */
bool iscsi_task_buf_reserve(struct iscsi_task *t);
/* Count len more bytes for t (a buffer the SCSI layer allocates for it:
 * scsi_cmd.buf_charge); false if over a limit.  Released with the rest
 * when the task is freed.  Both refuse only when something besides t
 * itself is counted, so one command larger than a limit still goes. */
bool iscsi_task_buf_charge(struct iscsi_task *t, uint64_t len);
/* All under __atomic builtins: bytes reserved now, the most ever, and
 * commands answered TASK SET FULL for want of buffer room. */
extern uint64_t iscsi_buf_total, iscsi_buf_peak, iscsi_buf_refused;

/* CRC32C digests: crc32c() from core/crc32c.h */

#endif
