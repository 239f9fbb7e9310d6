/* test_iscsi_rx.c - unit tests of the iSCSI receive path
 * (target/iscsi/iscsi_conn.c, iscsi_scsi.c): the connection state table,
 * the resumable PDU parser (BHS, AHS, digests, data segment and padding,
 * fed in pieces split at random points), the CmdSN window (RFC 1982
 * arithmetic, gaps held until filled, MaxCmdSN), R2T / Data-Out
 * bookkeeping (DataSN, buffer offsets, R2TSN, MaxBurstLength,
 * FirstBurstLength, unsolicited and immediate data, MaxOutstandingR2T,
 * R2Ts deferred while the LUN is hung), Data-In sequencing, and task
 * management (ABORT TASK by RTT and RefCmdSN, LUN RESET, COLD RESET).
 *
 * The two files are #included so their statics are reachable.  The
 * connection is real (iscsi_conn_new()) on one end of a non-blocking
 * socketpair; the test plays the initiator on the other end.  Everything
 * outside the iSCSI layer is substituted at link time below: the reactor
 * (calls queue in a FIFO the test drains, timers are only marked armed),
 * the SCSI layer (commands are recorded and completed on demand, aborts
 * recorded), the target's LUN table, and login / session handling. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../target/iscsi/iscsi_conn.c"
#include "../../target/iscsi/iscsi_scsi.c"

#include "check.h"

/* ---- fake reactor ---- */

static char r1_tag;
#define R1 ((struct reactor *)&r1_tag)

struct fcall {
	void (*fn)(void *arg);
	void *arg;
};
static struct fcall calls[256];
static unsigned call_head, call_tail;

int reactor_call(struct reactor *r UNUSED, void (*fn)(void *arg), void *arg)
{
	calls[call_tail++ % ARRAY_SIZE(calls)] = (struct fcall){ fn, arg };
	return 0;
}

static void run_calls(void)
{
	while (call_head != call_tail) {
		struct fcall f = calls[call_head++ % ARRAY_SIZE(calls)];

		f.fn(f.arg);
	}
}

int reactor_fd_add(struct reactor *r, struct ev_fd *w, int fd,
		   uint32_t events, ev_fd_fn fn, void *arg)
{
	w->r = r;
	w->fd = fd;
	w->events = events;
	w->fn = fn;
	w->arg = arg;
	w->active = true;
	return 0;
}

int reactor_fd_mod(struct ev_fd *w, uint32_t events)
{
	w->events = events;
	return 0;
}

void reactor_fd_del(struct ev_fd *w)
{
	w->active = false;
}

void reactor_timer_add(struct reactor *r UNUSED, struct ev_timer *t,
		       uint64_t delay, ev_timer_fn fn, void *arg)
{
	t->when_ms = delay;
	t->fn = fn;
	t->arg = arg;
	t->armed = true;
}

void reactor_timer_del(struct reactor *r UNUSED, struct ev_timer *t)
{
	t->armed = false;
}

/* The reactor's clock: moved by the tests (idle_timeout). */
static uint64_t fake_now_ms = 1000;

uint64_t reactor_now_ms(struct reactor *r UNUSED)
{
	return fake_now_ms;
}

/* Not running on any reactor: iscsi_conn_send() then writes at once
 * instead of deferring one flush per loop turn, so every test sees its
 * answers on the socket right after the call that sent them. */
struct reactor *reactor_current(void)
{
	return NULL;
}

void reactor_defer(struct reactor *r UNUSED, struct ev_defer *d UNUSED,
		   ev_defer_fn fn UNUSED, void *arg UNUSED)
{
	CHECK(!"reactor_defer() off the reactor");
}

/* Fire an armed timer now (it is one-shot: disarmed first). */
static void fire(struct ev_timer *t)
{
	CHECK(t->armed);
	t->armed = false;
	t->fn(t);
}

/* ---- fake target, LUNs and SCSI layer ---- */

static struct target tgt;
static struct scsi_lun luns[2];		/* LUN 0 and 1 exist */
static bool lun_hung[2];

struct scsi_lun *tgt_lun_get(struct target *t, uint64_t id)
{
	if (t != &tgt || id >= ARRAY_SIZE(luns))
		return NULL;
	return &luns[id];
}

int tgt_lun_list(struct target *t UNUSED, uint64_t *out, int max)
{
	int n = 0;

	for (uint64_t i = 0; i < ARRAY_SIZE(luns) && n < max; i++)
		out[n++] = i;
	return n;
}

void tgt_put(struct target *t UNUSED)
{
}

void scsi_lun_put(struct scsi_lun *l UNUSED)
{
}

bool scsi_lun_may_solicit(struct scsi_lun *l)
{
	return !lun_hung[l - luns];
}

void scsi_lun_reset_ua(struct scsi_lun *l UNUSED,
		       const struct scsi_nexus *by UNUSED)
{
}

void scsi_nexus_lost(struct target *t UNUSED,
		     const struct scsi_nexus *n UNUSED)
{
}

void *scsi_buf_alloc(uint32_t len)
{
	return calloc(1, len ? len : 1);
}

/* A recycled buffer: what a former command left in it */
void *scsi_buf_alloc_uninit(uint32_t len)
{
	void *p = malloc(len ? len : 1);

	if (p)
		memset(p, 0xa5, len);
	return p;
}

void scsi_buf_free(void *p)
{
	free(p);
}

/* Commands handed to the SCSI layer and not completed yet. */
#define MAXCMD 64
static struct scsi_cmd *live[MAXCMD];
static int nlive, nexec;
static struct scsi_cmd *aborted[MAXCMD];
static int naborted;

void scsi_cmd_exec(struct scsi_cmd *cmd)
{
	nexec++;
	if (nlive < MAXCMD)
		live[nlive++] = cmd;
}

void scsi_cmd_abort(struct scsi_cmd *cmd)
{
	if (naborted < MAXCMD)
		aborted[naborted++] = cmd;
}

static struct scsi_cmd *live_by_itt(uint32_t itt)
{
	for (int i = 0; i < nlive; i++)
		if (((struct iscsi_task *)live[i]->priv)->itt == itt)
			return live[i];
	return NULL;
}

/* Complete cmd as the SCSI layer would; in_len bytes of Data-In. */
static void complete(struct scsi_cmd *cmd, uint8_t status, uint32_t in_len)
{
	for (int i = 0; i < nlive; i++)
		if (live[i] == cmd) {
			live[i] = live[--nlive];
			break;
		}
	if (in_len) {
		cmd->buf = scsi_buf_alloc(in_len);
		for (uint32_t i = 0; i < in_len; i++)
			cmd->buf[i] = (uint8_t)(i * 7);
		cmd->buf_len = in_len;
	}
	cmd->in_len = in_len;
	cmd->status = status;
	cmd->done(cmd);
}

/* scsi_lun_drop_nexus(): recorded; the test runs the callbacks. */
struct drop {
	uint64_t nexus;
	void (*done)(void *arg, unsigned dropped);
	void *arg;
};
static struct drop drops[8];
static int ndrops;

int scsi_lun_drop_nexus(struct scsi_lun *l UNUSED, uint64_t nexus,
			struct reactor *r UNUSED,
			void (*done)(void *arg, unsigned dropped), void *arg)
{
	if (ndrops == ARRAY_SIZE(drops))
		return -ENOMEM;
	drops[ndrops++] = (struct drop){ nexus, done, arg };
	return 0;
}

static void run_drops(void)
{
	for (int i = 0; i < ndrops; i++)
		drops[i].done(drops[i].arg, 0);
	ndrops = 0;
}

/* ---- login and sessions: not under test here ---- */

static int login_pdus;

void iscsi_login_rx(struct iscsi_conn *c UNUSED, const uint8_t *bhs UNUSED,
		    const uint8_t *data UNUSED, uint32_t len UNUSED)
{
	login_pdus++;
}

void iscsi_login_free(struct iscsi_conn *c UNUSED)
{
}

void iscsi_text_rx(struct iscsi_conn *c UNUSED, const uint8_t *bhs UNUSED,
		   const uint8_t *data UNUSED, uint32_t len UNUSED)
{
}

void iscsi_session_unregister(struct iscsi_session *s UNUSED)
{
}

static int sessions_closing, reinstate_notified;

void iscsi_session_closing(struct iscsi_session *s UNUSED)
{
	sessions_closing++;
}

void iscsi_session_reinstate_notify(struct iscsi_conn *x UNUSED)
{
	reinstate_notified++;
}

static int conns_freed;

void iscsi_conn_freed(void)
{
	conns_freed++;
}

/* ---- the connection under test and the initiator's end ---- */

static struct iscsi_conn *c;
static struct iscsi_session *sess;
static int peer = -1;		/* the initiator's socket (blocking) */

struct sess_params {
	uint32_t exp_cmd_sn;
	uint32_t max_burst, first_burst, max_r2t;
	bool initial_r2t, immediate_data;
	bool hdr_digest, data_digest;
};

static const struct sess_params defaults = {
	.exp_cmd_sn = 1,
	.max_burst = 262144,
	.first_burst = 65536,
	.max_r2t = 1,
	.initial_r2t = true,
	.immediate_data = true,
};

/* A connection on a fresh socketpair with a session; in full feature
 * phase unless login_phase. */
static void conn_setup_phase(const struct sess_params *p, bool login_phase)
{
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	peer = sv[1];
	c = iscsi_conn_new(R1, sv[0], NULL);
	CHECK(c && c->state == CONN_STATE_LOGIN);
	sess = xzalloc(sizeof(*sess));
	sess->target = &tgt;
	sess->conn = c;
	sess->nexus.id = 7;
	list_init(&sess->pending);
	sess->exp_cmd_sn = p->exp_cmd_sn;
	sess->max_burst = p->max_burst;
	sess->first_burst = p->first_burst;
	sess->max_r2t = p->max_r2t;
	sess->initial_r2t = p->initial_r2t;
	sess->immediate_data = p->immediate_data;
	c->sess = sess;
	c->max_recv_dsl = 65536;
	c->max_send_dsl = 8192;
	c->hdr_digest = p->hdr_digest;
	c->data_digest = p->data_digest;
	if (!login_phase)
		CHECK(iscsi_conn_set_state(c, CONN_STATE_FULL_FEATURE) == 0);
	nlive = nexec = naborted = ndrops = 0;
	memset(lun_hung, 0, sizeof(lun_hung));
}

static void conn_setup(const struct sess_params *p)
{
	conn_setup_phase(p, false);
}

static void conn_teardown(void)
{
	int freed = conns_freed;

	iscsi_conn_close(c, "test done");
	while (nlive)	/* aborted by the close: the SCSI layer answers */
		complete(live[0], SAM_STAT_TASK_ABORTED, 0);
	run_drops();
	run_calls();
	CHECK(conns_freed == freed + 1, "connection freed");
	close(peer);
	c = NULL;
	sess = NULL;
}

/* Deterministic pseudo-random numbers for the split points. */
static uint32_t rnd_state = 12345;

static uint32_t rnd(uint32_t n)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return (rnd_state >> 8) % n;
}

/* ---- building initiator PDUs ---- */

struct wire {
	uint8_t b[200000];
	uint32_t len;
};

/* Append one PDU (BHS lengths filled in here) with the digests that are
 * on, as RFC 7143 11.2 lays it out. */
static void put_pdu(struct wire *w, uint8_t *bhs, const uint8_t *ahs,
		    uint32_t ahs_len, const uint8_t *data, uint32_t len)
{
	static const uint8_t zeros[4];
	uint8_t *start;

	bhs[BHS_TOTAL_AHS_LEN] = (uint8_t)(ahs_len / 4);
	put_be24(bhs + BHS_DATA_SEG_LEN, len);
	start = w->b + w->len;
	memcpy(w->b + w->len, bhs, ISCSI_BHS_LEN);
	w->len += ISCSI_BHS_LEN;
	if (ahs_len)
		memcpy(w->b + w->len, ahs, ahs_len);
	w->len += ahs_len;
	if (c->hdr_digest) {
		put_digest(w->b + w->len,
			   crc32c(0, start, ISCSI_BHS_LEN + ahs_len));
		w->len += 4;
	}
	if (!len)
		return;
	memcpy(w->b + w->len, data, len);
	w->len += len;
	memcpy(w->b + w->len, zeros, pdu_pad(len));
	w->len += pdu_pad(len);
	if (c->data_digest) {
		put_digest(w->b + w->len,
			   crc32c(crc32c(0, data, len), zeros, pdu_pad(len)));
		w->len += 4;
	}
}

static void bhs_scsi_cmd(uint8_t *bhs, uint32_t itt, uint32_t cmd_sn,
			 uint8_t flags, uint32_t edtl, uint8_t op,
			 uint64_t lun)
{
	memset(bhs, 0, ISCSI_BHS_LEN);
	bhs[BHS_OPCODE] = ISCSI_OP_SCSI_CMD;
	bhs[BHS_FLAGS] = flags;
	iscsi_lun_encode(bhs + BHS_LUN, lun);
	put_be32(bhs + BHS_ITT, itt);
	put_be32(bhs + SCSI_CMD_EDTL, edtl);
	put_be32(bhs + BHS_CMD_SN, cmd_sn);
	bhs[SCSI_CMD_CDB] = op;
}

static void bhs_data_out(uint8_t *bhs, uint32_t itt, uint32_t ttt,
			 uint32_t data_sn, uint32_t offset, bool final)
{
	memset(bhs, 0, ISCSI_BHS_LEN);
	bhs[BHS_OPCODE] = ISCSI_OP_DATA_OUT;
	bhs[BHS_FLAGS] = final ? ISCSI_FLAG_FINAL : 0;
	put_be32(bhs + BHS_ITT, itt);
	put_be32(bhs + BHS_TTT, ttt);
	put_be32(bhs + DATA_DATA_SN, data_sn);
	put_be32(bhs + DATA_BUFFER_OFFSET, offset);
}

static void bhs_tmf(uint8_t *bhs, uint32_t itt, uint8_t func, uint64_t lun,
		    uint32_t rtt, uint32_t cmd_sn, uint32_t ref_cmd_sn)
{
	memset(bhs, 0, ISCSI_BHS_LEN);
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_TMF_REQ;
	bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL | func;
	iscsi_lun_encode(bhs + BHS_LUN, lun);
	put_be32(bhs + BHS_ITT, itt);
	put_be32(bhs + TMF_REF_TASK_TAG, rtt);
	put_be32(bhs + BHS_CMD_SN, cmd_sn);
	put_be32(bhs + TMF_REF_CMD_SN, ref_cmd_sn);
}

/* ---- driving the parser ---- */

static void peer_write(const uint8_t *p, uint32_t len)
{
	while (len) {
		ssize_t n = write(peer, p, len);

		CHECK(n > 0, "write: %s", strerror(errno));
		if (n <= 0)
			return;
		p += n;
		len -= (uint32_t)n;
	}
}

/* Step the parser until it needs input; returns the number of PDUs
 * handled, and in *last the final return value. */
static int pump(int *last)
{
	int n = 0, r;

	while ((r = iscsi_conn_rx_step(c)) == 1)
		n++;
	*last = r;
	return n;
}

/* Send w in one write and parse it; expects no error. */
static int feed(const struct wire *w)
{
	int last, n;

	peer_write(w->b, w->len);
	n = pump(&last);
	CHECK(last == -EAGAIN, "parser returned %d", last);
	return n;
}

/* Send w cut at random points; every cut that ends inside a PDU must
 * leave the parser waiting (-EAGAIN) with nothing dispatched early.
 * Returns the number of PDUs handled. */
static int feed_split(const struct wire *w, unsigned cuts)
{
	uint32_t pos[64], np = 0, off = 0;
	int n = 0, last;

	for (unsigned i = 0; i < cuts && np < ARRAY_SIZE(pos) - 1; i++)
		pos[np++] = 1 + rnd(w->len - 1);
	pos[np++] = w->len;
	/* sort the cut points */
	for (uint32_t i = 1; i < np; i++)
		for (uint32_t j = i; j > 0 && pos[j - 1] > pos[j]; j--) {
			uint32_t t = pos[j];

			pos[j] = pos[j - 1];
			pos[j - 1] = t;
		}
	for (uint32_t i = 0; i < np; i++) {
		if (pos[i] <= off)
			continue;
		peer_write(w->b + off, pos[i] - off);
		off = pos[i];
		n += pump(&last);
		CHECK(last == -EAGAIN, "cut at %u: %d", off, last);
	}
	return n;
}

/* ---- reading what the target sent ---- */

struct rpdu {
	uint8_t bhs[ISCSI_BHS_LEN];
	uint8_t data[70000];
	uint32_t len;
};

static void peer_read(uint8_t *p, uint32_t len)
{
	while (len) {
		ssize_t n = read(peer, p, len);

		CHECK(n > 0, "read: %zd", n);
		if (n <= 0)
			return;
		p += n;
		len -= (uint32_t)n;
	}
}

/* Bytes waiting (not just the end of the stream after a close)? */
static bool peer_has_data(void)
{
	uint8_t b;

	return recv(peer, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

/* Read the next PDU the target sent, checking its digests; false if
 * there is none. */
static bool recv_pdu(struct rpdu *p)
{
	uint8_t dg[4], want[4], pad[4];

	if (!peer_has_data())
		return false;
	peer_read(p->bhs, ISCSI_BHS_LEN);
	CHECK(p->bhs[BHS_TOTAL_AHS_LEN] == 0);
	if (c && c->hdr_digest) {
		peer_read(dg, 4);
		put_digest(want, crc32c(0, p->bhs, ISCSI_BHS_LEN));
		CHECK(!memcmp(dg, want, 4), "header digest of a sent PDU");
	}
	p->len = pdu_data_len(p->bhs);
	CHECK(p->len <= sizeof(p->data));
	if (p->len > sizeof(p->data))
		return false;
	if (p->len) {
		peer_read(p->data, p->len);
		peer_read(pad, pdu_pad(p->len));
		if (c && c->data_digest) {
			uint32_t crc = crc32c(0, p->data, p->len);

			peer_read(dg, 4);
			put_digest(want, crc32c(crc, pad, pdu_pad(p->len)));
			CHECK(!memcmp(dg, want, 4), "data digest of a sent PDU");
		}
	}
	return true;
}

/* Expect the next PDU to have opcode op. */
static bool expect_pdu(struct rpdu *p, uint8_t op)
{
	if (!recv_pdu(p)) {
		CHECK(false, "no PDU, wanted opcode 0x%02x", op);
		return false;
	}
	CHECK(pdu_opcode(p->bhs) == op, "opcode 0x%02x, wanted 0x%02x",
	      pdu_opcode(p->bhs), op);
	return pdu_opcode(p->bhs) == op;
}

static void expect_reject(uint8_t reason)
{
	struct rpdu p;

	if (expect_pdu(&p, ISCSI_OP_REJECT))
		CHECK(p.bhs[REJECT_REASON] == reason, "reason 0x%02x, wanted 0x%02x",
		      p.bhs[REJECT_REASON], reason);
}

static void expect_nothing(void)
{
	struct rpdu p;
	bool got = recv_pdu(&p);

	CHECK(!got, "unexpected PDU, opcode 0x%02x", pdu_opcode(p.bhs));
}

/* ---- connection states ---- */

/* Run fn with stderr going to a buffer (the log lines it writes). */
static void capture_stderr(void (*fn)(void), char *out, size_t len)
{
	FILE *tmp = tmpfile();
	int saved = dup(2);
	size_t n;

	fflush(stderr);
	dup2(fileno(tmp), 2);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, len - 1, tmp);
	out[n] = 0;
	fclose(tmp);
}

static void states_table(void)
{
	/* the allowed moves, and nothing else */
	static const bool allowed[CONN_STATE_COUNT][CONN_STATE_COUNT] = {
		[CONN_STATE_NEW][CONN_STATE_LOGIN] = true,
		[CONN_STATE_LOGIN][CONN_STATE_FULL_FEATURE] = true,
		[CONN_STATE_LOGIN][CONN_STATE_REINSTATE] = true,
		[CONN_STATE_REINSTATE][CONN_STATE_FULL_FEATURE] = true,
		[CONN_STATE_REINSTATE][CONN_STATE_CLOSING] = true,
		[CONN_STATE_REINSTATE][CONN_STATE_FLUSH] = true,
		[CONN_STATE_LOGIN][CONN_STATE_FLUSH] = true,
		[CONN_STATE_LOGIN][CONN_STATE_CLOSING] = true,
		[CONN_STATE_FULL_FEATURE][CONN_STATE_FLUSH] = true,
		[CONN_STATE_FULL_FEATURE][CONN_STATE_CLOSING] = true,
		[CONN_STATE_FLUSH][CONN_STATE_CLOSING] = true,
	};

	for (int from = 0; from < CONN_STATE_COUNT; from++)
		for (int to = 0; to < CONN_STATE_COUNT; to++) {
			struct iscsi_conn x = { .state = from, .id = 99 };
			int r = iscsi_conn_set_state(&x, to);

			CHECK((r == 0) == allowed[from][to], "%s -> %s: %d",
			      iscsi_conn_state_name(from),
			      iscsi_conn_state_name(to), r);
			CHECK((int)x.state == (r == 0 ? to : from));
		}
}

static void states_logged(void)
{
	struct iscsi_conn x = { .state = CONN_STATE_NEW, .id = 98 };

	log_set_debug(true);
	iscsi_conn_set_state(&x, CONN_STATE_LOGIN);
	log_set_debug(false);
	iscsi_conn_set_state(&x, CONN_STATE_FULL_FEATURE);
}

static void test_states(void)
{
	static char log[16384];

	capture_stderr(states_table, log, sizeof(log));
	/* every refused move was logged as an error, the allowed ones not
	 * (debug is off) */
	CHECK(strstr(log, "error: conn 99: refused state change closing -> login"));
	CHECK(strstr(log, "error: conn 99: refused state change flush -> full feature"));
	CHECK(!strstr(log, "new -> login"));
	capture_stderr(states_logged, log, sizeof(log));
	CHECK(strstr(log, "debug: conn 98: new -> login"),
	      "a transition is logged in debug mode: %s", log);
	CHECK(!strstr(log, "login -> full feature"), "and only then");
	CHECK(!strcmp(iscsi_conn_state_name(CONN_STATE_FLUSH), "flush"));
	CHECK(!strcmp(iscsi_conn_state_name(CONN_STATE_REINSTATE),
		      "reinstate"));
	CHECK(!strcmp(iscsi_conn_state_name(CONN_STATE_COUNT), "?"));
}

static void send_cmd(uint32_t itt, uint32_t sn, bool immediate);

/* Logout (11.14): every task is aborted and each LUN drops what it holds
 * for this nexus first; then the response is sent and the connection
 * closes (FLUSH, then CLOSING once it is on the wire). */
static void test_logout(void)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN] = { 0 };
	struct rpdu p;

	conn_setup(&defaults);
	send_cmd(0x70, 1, false);
	CHECK(nlive == 1);
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_LOGOUT_REQ;
	bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL | ISCSI_LOGOUT_CLOSE_SESSION;
	put_be32(bhs + BHS_ITT, 0x77);
	put_be32(bhs + BHS_CMD_SN, 2);
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	peer_write(w->b, w->len);
	conn_rx(c);
	CHECK(naborted == 1 && ndrops == 2);
	CHECK(drops[0].nexus == sess->nexus.id && drops[1].nexus == sess->nexus.id,
	      "this nexus only");
	run_drops();
	expect_nothing();		/* the aborted command is still running */
	CHECK(c->state == CONN_STATE_FULL_FEATURE);
	complete(live_by_itt(0x70), SAM_STAT_TASK_ABORTED, 0);
	if (expect_pdu(&p, ISCSI_OP_LOGOUT_RSP))	/* and no SCSI Response */
		CHECK(get_be32(p.bhs + BHS_ITT) == 0x77 &&
		      p.bhs[LOGOUT_RSP_RESPONSE] == 0);
	CHECK(c->state == CONN_STATE_CLOSING, "state %s",
	      iscsi_conn_state_name(c->state));
	expect_nothing();
	conn_teardown();
	free(w);
}

/* Logout while the initiator is not reading: the answer waits behind the
 * queued ones, the connection stops waking up for input (only EPOLLOUT),
 * and closes once everything is sent. */
static void test_logout_tx_blocked(void)
{
	struct wire *w = xzalloc(sizeof(*w));
	static uint8_t data[60000];
	uint8_t bhs[ISCSI_BHS_LEN];
	size_t cap = 8u << 20, got = 0, off = 0;
	uint8_t *stream = malloc(cap);
	int nops = 0, nop_ins = 0, turns = 0;
	uint8_t last_op = 0;

	conn_setup(&defaults);
	while (!c->tx_blocked && nops < 200) {
		memset(bhs, 0, sizeof(bhs));
		bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
		bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
		put_be32(bhs + BHS_ITT, 0x3000 + (uint32_t)nops++);
		w->len = 0;
		put_pdu(w, bhs, NULL, 0, data, sizeof(data));
		CHECK(feed(w) == 1);
	}
	CHECK(c->tx_blocked, "the echoes filled the socket");
	CHECK(c->w.events == (EPOLLIN | EPOLLOUT));
	memset(bhs, 0, sizeof(bhs));
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_LOGOUT_REQ;
	bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	put_be32(bhs + BHS_ITT, 0x77);
	w->len = 0;
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	peer_write(w->b, w->len);
	conn_rx(c);
	run_drops();			/* the LUNs had nothing for us */
	CHECK(c->state == CONN_STATE_FLUSH, "state %s",
	      iscsi_conn_state_name(c->state));
	CHECK(c->w.events == EPOLLOUT, "events 0x%x", c->w.events);
	CHECK(c->flush_timer.armed);
	/* in FLUSH nothing more is read: this ping gets no echo */
	memset(bhs, 0, sizeof(bhs));
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
	bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	put_be32(bhs + BHS_ITT, 0x4000);
	w->len = 0;
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	peer_write(w->b, w->len);
	conn_rx(c);
	/* the initiator reads again: each EPOLLOUT sends more, the last
	 * answer closes the connection */
	while (c->state == CONN_STATE_FLUSH && turns++ < 10000) {
		ssize_t n = recv(peer, stream + got, cap - got, MSG_DONTWAIT);

		if (n > 0)
			got += (size_t)n;
		conn_rx_ready(&c->w, EPOLLOUT);
	}
	CHECK(c->state == CONN_STATE_CLOSING);
	CHECK(!c->flush_timer.armed);
	for (;;) {
		ssize_t n = recv(peer, stream + got, cap - got, MSG_DONTWAIT);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	while (off + ISCSI_BHS_LEN <= got) {
		uint32_t len = pdu_data_len(stream + off);

		last_op = pdu_opcode(stream + off);
		nop_ins += last_op == ISCSI_OP_NOP_IN;
		off += ISCSI_BHS_LEN + len + pdu_pad(len);
	}
	CHECK(off == got && nop_ins == nops, "%d of %d echoes", nop_ins, nops);
	CHECK(last_op == ISCSI_OP_LOGOUT_RSP, "logout answered last");
	conn_teardown();
	free(stream);
	free(w);
}

/* An initiator that never reads what FLUSH waits to send is dropped
 * when the flush timer fires. */
static void test_flush_timeout(void)
{
	struct wire *w = xzalloc(sizeof(*w));
	static uint8_t data[60000];
	uint8_t bhs[ISCSI_BHS_LEN];
	int nops = 0;

	conn_setup(&defaults);
	while (!c->tx_blocked && nops++ < 200) {
		memset(bhs, 0, sizeof(bhs));
		bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
		bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
		put_be32(bhs + BHS_ITT, (uint32_t)nops);
		w->len = 0;
		put_pdu(w, bhs, NULL, 0, data, sizeof(data));
		CHECK(feed(w) == 1);
	}
	iscsi_conn_close_after_send(c, "test");
	CHECK(c->state == CONN_STATE_FLUSH && c->flush_timer.armed);
	CHECK(c->flush_timer.when_ms == ISCSI_FLUSH_TIMEOUT_MS);
	fire(&c->flush_timer);
	CHECK(c->state == CONN_STATE_CLOSING);
	conn_teardown();
	free(w);
}

/* ---- the PDU parser ---- */

/* A NOP-Out with an AHS, both digests and a padded data segment, cut at
 * random points: the parser resumes at any byte and echoes the data. */
static void test_parser_split(void)
{
	struct sess_params sp = defaults;
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN], ahs[8] = { 0, 5, 0x7f, 0, 1, 2, 3, 4 };
	uint8_t data[1001];
	struct rpdu p;

	for (unsigned i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i ^ 0x5a);
	for (int digests = 0; digests < 4; digests++) {
		sp.hdr_digest = digests & 1;
		sp.data_digest = digests & 2;
		conn_setup(&sp);
		for (int round = 0; round < 50; round++) {
			uint32_t itt = 0x1000 + (uint32_t)round;
			int n;

			w->len = 0;
			memset(bhs, 0, sizeof(bhs));
			bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
			bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
			put_be32(bhs + BHS_ITT, itt);
			put_be32(bhs + BHS_TTT, ISCSI_RSVD_TAG);
			put_be32(bhs + BHS_CMD_SN, 1);
			put_pdu(w, bhs, ahs, round & 1 ? sizeof(ahs) : 0, data,
				sizeof(data) - (uint32_t)round);
			n = feed_split(w, 1 + rnd(20));
			CHECK(n == 1, "digests %d round %d: %d PDUs", digests,
			      round, n);
			CHECK(c->rx_stage == RX_BHS && c->rx_got == 0);
			if (!expect_pdu(&p, ISCSI_OP_NOP_IN))
				continue;
			CHECK(get_be32(p.bhs + BHS_ITT) == itt);
			CHECK(p.len == sizeof(data) - (uint32_t)round &&
			      !memcmp(p.data, data, p.len), "ping data echoed");
		}
		/* three PDUs in one write: all three handled */
		w->len = 0;
		for (int i = 0; i < 3; i++) {
			memset(bhs, 0, sizeof(bhs));
			bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
			bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
			put_be32(bhs + BHS_ITT, 0x2000 + (uint32_t)i);
			put_pdu(w, bhs, NULL, 0, data, (uint32_t)i * 3);
		}
		CHECK(feed(w) == 3);
		for (int i = 0; i < 3; i++)
			if (expect_pdu(&p, ISCSI_OP_NOP_IN))
				CHECK(get_be32(p.bhs + BHS_ITT) ==
				      0x2000 + (uint32_t)i && p.len == (uint32_t)i * 3);
		conn_teardown();
	}
	free(w);
}

/* conn_rx (one wake-up) stops reading after a short read: the socket is
 * empty then, and level-triggered epoll calls again for more.  A PDU cut
 * at any point completes on the next wake-up, and a read that fills the
 * buffer is followed by another in the same wake-up. */
static void test_rx_wakeups(void)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN], data[1001];
	struct rpdu p;

	for (unsigned i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 13);
	conn_setup(&defaults);
	memset(bhs, 0, sizeof(bhs));
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
	bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	put_be32(bhs + BHS_TTT, ISCSI_RSVD_TAG);
	for (uint32_t cut = 1; cut < ISCSI_BHS_LEN + sizeof(data) + 3;
	     cut += 37) {
		put_be32(bhs + BHS_ITT, 0x3000 + cut);
		w->len = 0;
		put_pdu(w, bhs, NULL, 0, data, sizeof(data));
		peer_write(w->b, cut);
		conn_rx(c);
		CHECK(c->rx_drained && !c->rx_wakeup, "cut %u: short read", cut);
		peer_write(w->b + cut, w->len - cut);
		conn_rx(c);
		if (expect_pdu(&p, ISCSI_OP_NOP_IN))
			CHECK(get_be32(p.bhs + BHS_ITT) == 0x3000 + cut &&
			      p.len == sizeof(data), "cut %u: completed", cut);
		expect_nothing();
	}
	/* more than the read-ahead buffer holds, in one write and one
	 * wake-up: the full reads are followed by more */
	w->len = 0;
	for (uint32_t i = 0; i < 8; i++) {
		put_be32(bhs + BHS_ITT, 0x4000 + i);
		put_pdu(w, bhs, NULL, 0, data, sizeof(data));
	}
	CHECK(w->len > c->rx_cap, "%u bytes, buffer %u", w->len, c->rx_cap);
	peer_write(w->b, w->len);
	conn_rx(c);
	for (uint32_t i = 0; i < 8; i++)
		if (expect_pdu(&p, ISCSI_OP_NOP_IN))
			CHECK(get_be32(p.bhs + BHS_ITT) == 0x4000 + i,
			      "PDU %u of 8 in one wake-up", i);
	expect_nothing();
	conn_teardown();
	free(w);
}

/* Immediate data large enough to be read straight into the command
 * buffer (no copy through the read-ahead buffer), cut at random points. */
static void test_parser_direct(void)
{
	struct sess_params sp = defaults;
	struct wire *w = xzalloc(sizeof(*w));
	static uint8_t data[50000];
	uint8_t bhs[ISCSI_BHS_LEN];
	struct rpdu p;

	for (unsigned i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 13 + 1);
	sp.data_digest = true;
	conn_setup(&sp);
	for (int round = 0; round < 20; round++) {
		uint32_t len = sizeof(data) - (uint32_t)round * 7;
		uint32_t sn = 1 + (uint32_t)round;
		struct scsi_cmd *cmd;

		w->len = 0;
		bhs_scsi_cmd(bhs, 0x100 + (uint32_t)round, sn,
			     ISCSI_FLAG_FINAL | SCSI_CMD_FLAG_WRITE, len, 0x2a,
			     0);
		put_pdu(w, bhs, NULL, 0, data, len);
		CHECK(feed_split(w, 1 + rnd(8)) == 1);
		CHECK(nlive == 1 && sess->exp_cmd_sn == sn + 1);
		if (nlive != 1)
			break;
		cmd = live[0];
		CHECK(cmd->out_len == len && !memcmp(cmd->buf, data, len),
		      "immediate data in the command buffer");
		complete(cmd, SAM_STAT_GOOD, 0);
		if (expect_pdu(&p, ISCSI_OP_SCSI_RSP)) {
			CHECK(p.bhs[SCSI_RSP_STATUS] == SAM_STAT_GOOD);
			CHECK(get_be32(p.bhs + BHS_EXP_CMD_SN) == sn + 1);
		}
	}
	conn_teardown();
	free(w);
}

/* A CDB longer than 16 bytes continues in an Extended CDB AHS (11.3.4):
 * AHSLength counts the reserved byte and the CDB bytes from 16 on. */
static void test_parser_ext_cdb(void)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN], ahs[20] = { 0, 17, ISCSI_AHS_EXTENDED_CDB };

	for (int i = 0; i < 16; i++)
		ahs[4 + i] = (uint8_t)(0x80 + i);
	conn_setup(&defaults);
	bhs_scsi_cmd(bhs, 0x42, 1, ISCSI_FLAG_FINAL, 0, 0x7f, 0);
	for (int i = 1; i < 16; i++)
		bhs[SCSI_CMD_CDB + i] = (uint8_t)i;
	put_pdu(w, bhs, ahs, sizeof(ahs), NULL, 0);
	CHECK(feed_split(w, 5) == 1 && nlive == 1);
	if (nlive == 1) {
		struct scsi_cmd *cmd = live[0];
		bool ok = cmd->cdb_len == 32 && cmd->cdb[0] == 0x7f;

		for (int i = 1; i < 32; i++)
			ok &= cmd->cdb[i] == (i < 16 ? i : 0x80 + i - 16);
		CHECK(ok, "32-byte CDB, cdb_len %u", cmd->cdb_len);
		complete(cmd, SAM_STAT_GOOD, 0);
	}
	while (recv_pdu(&(struct rpdu){ 0 }))
		;
	conn_teardown();
	free(w);
}

static void test_parser_errors(void)
{
	struct sess_params sp = defaults;
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN], data[100] = { 1, 2, 3 };
	int last;

	/* header digest mismatch: the header is untrusted, connection ends */
	sp.hdr_digest = sp.data_digest = true;
	conn_setup(&sp);
	memset(bhs, 0, sizeof(bhs));
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
	bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	put_be32(bhs + BHS_ITT, 1);
	w->len = 0;
	put_pdu(w, bhs, NULL, 0, data, sizeof(data));
	w->b[ISCSI_BHS_LEN] ^= 1;
	peer_write(w->b, w->len);
	CHECK(pump(&last) == 0 && last == -EBADMSG, "%d", last);
	expect_nothing();
	conn_teardown();

	/* data digest mismatch: Reject (digest error), connection ends */
	conn_setup(&sp);
	w->len = 0;
	put_pdu(w, bhs, NULL, 0, data, sizeof(data));
	w->b[w->len - 1] ^= 0x80;
	peer_write(w->b, w->len);
	CHECK(pump(&last) == 0 && last == -EBADMSG, "%d", last);
	expect_reject(ISCSI_REJECT_DIGEST_ERROR);
	conn_teardown();

	/* a data segment over our MaxRecvDataSegmentLength */
	conn_setup(&defaults);
	c->max_recv_dsl = 512;
	memset(bhs, 0, sizeof(bhs));
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
	put_be24(bhs + BHS_DATA_SEG_LEN, 513);
	peer_write(bhs, sizeof(bhs));
	CHECK(pump(&last) == 0 && last == -EPROTO, "%d", last);
	conn_teardown();

	/* the peer goes away in the middle of a PDU: conn_rx closes */
	conn_setup(&defaults);
	w->len = 0;
	put_pdu(w, bhs, NULL, 0, data, 8);
	peer_write(w->b, 30);
	CHECK(pump(&last) == 0 && last == -EAGAIN);
	CHECK(c->rx_stage == RX_BHS && c->rx_got == 30);
	shutdown(peer, SHUT_WR);
	CHECK(pump(&last) == 0 && last == -ECONNRESET, "%d", last);
	conn_rx(c);
	CHECK(c->state == CONN_STATE_CLOSING);
	conn_teardown();

	/* a non-login PDU during login ends the connection (6.1); a Login
	 * Request goes to the login code */
	conn_setup_phase(&defaults, true);
	memset(bhs, 0, sizeof(bhs));
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_LOGIN_REQ;
	w->len = 0;
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	login_pdus = 0;
	CHECK(feed(w) == 1 && login_pdus == 1);
	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
	w->len = 0;
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	peer_write(w->b, w->len);
	conn_rx(c);
	CHECK(c->state == CONN_STATE_CLOSING);
	conn_teardown();
	free(w);
}

/* ---- the CmdSN window ---- */

static void send_cmd(uint32_t itt, uint32_t sn, bool immediate)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN];

	bhs_scsi_cmd(bhs, itt, sn, ISCSI_FLAG_FINAL, 0, 0x00 /* TUR */, 0);
	if (immediate)
		bhs[BHS_OPCODE] |= ISCSI_OP_IMMEDIATE;
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	CHECK(feed(w) == 1);
	free(w);
}

static unsigned pending_count(void)
{
	struct iscsi_task *t;
	unsigned n = 0;

	list_for_each_entry(t, &sess->pending, pending_link)
		n++;
	return n;
}

static void test_cmd_sn(void)
{
	struct sess_params sp = defaults;
	struct rpdu p;
	const uint32_t exp = 0xfffffffeu;	/* the window wraps (RFC 1982) */

	sp.exp_cmd_sn = exp;
	conn_setup(&sp);
	CHECK(iscsi_session_max_cmd_sn(sess) == exp + ISCSI_CMD_WINDOW - 1);

	/* a gap: exp+2 and exp+1 are held until exp arrives */
	send_cmd(0xa2, exp + 2, false);
	send_cmd(0xa1, exp + 1, false);
	CHECK(nexec == 0 && pending_count() == 2);
	CHECK(sess->exp_cmd_sn == exp);
	/* an immediate command does not wait and takes no CmdSN */
	send_cmd(0xaf, exp, true);
	CHECK(nexec == 1 && sess->exp_cmd_sn == exp);
	complete(live_by_itt(0xaf), SAM_STAT_GOOD, 0);
	if (expect_pdu(&p, ISCSI_OP_SCSI_RSP))
		CHECK(get_be32(p.bhs + BHS_ITT) == 0xaf &&
		      get_be32(p.bhs + BHS_EXP_CMD_SN) == exp);
	send_cmd(0xa0, exp, false);
	CHECK(nexec == 4 && pending_count() == 0);
	CHECK(nlive == 3 && ((struct iscsi_task *)live[0]->priv)->itt == 0xa0 &&
	      ((struct iscsi_task *)live[1]->priv)->itt == 0xa1 &&
	      ((struct iscsi_task *)live[2]->priv)->itt == 0xa2,
	      "executed in CmdSN order");
	CHECK(sess->exp_cmd_sn == 1, "ExpCmdSN wrapped past 0: %u",
	      sess->exp_cmd_sn);
	CHECK(sess->in_flight == 3);
	CHECK(iscsi_session_max_cmd_sn(sess) == 1 + ISCSI_CMD_WINDOW - 3 - 1);

	/* outside the window: silently ignored (3.2.2.1) */
	send_cmd(0xb0, exp + 1, false);			/* already seen */
	send_cmd(0xb1, 1 + ISCSI_CMD_WINDOW, false);	/* past MaxCmdSN */
	CHECK(nexec == 4 && pending_count() == 0 && c->ntasks == 3);
	expect_nothing();

	/* a response carries ExpCmdSN and the window the finished command
	 * gave back */
	complete(live_by_itt(0xa1), SAM_STAT_GOOD, 0);
	if (expect_pdu(&p, ISCSI_OP_SCSI_RSP)) {
		CHECK(get_be32(p.bhs + BHS_ITT) == 0xa1);
		CHECK(get_be32(p.bhs + BHS_EXP_CMD_SN) == 1);
		CHECK(get_be32(p.bhs + BHS_MAX_CMD_SN) ==
		      1 + ISCSI_CMD_WINDOW - 2 - 1);
	}

	/* a full window closes: MaxCmdSN = ExpCmdSN - 1 */
	sess->in_flight = ISCSI_CMD_WINDOW;
	CHECK(iscsi_session_max_cmd_sn(sess) == 0);
	send_cmd(0xc0, 1, false);
	CHECK(nexec == 4, "no room in the window");
	sess->in_flight = 2;

	/* non-SCSI requests take part in the window too */
	{
		uint8_t bhs[ISCSI_BHS_LEN] = { 0 };

		bhs[BHS_OPCODE] = ISCSI_OP_NOP_OUT;
		bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
		put_be32(bhs + BHS_ITT, 0xd0);
		put_be32(bhs + BHS_CMD_SN, 1);
		CHECK(iscsi_cmd_sn_accept(c, bhs) && sess->exp_cmd_sn == 2);
		CHECK(!iscsi_cmd_sn_accept(c, bhs), "old CmdSN refused");
		CHECK(sess->exp_cmd_sn == 2);
	}
	complete(live_by_itt(0xa0), SAM_STAT_GOOD, 0);
	complete(live_by_itt(0xa2), SAM_STAT_GOOD, 0);
	CHECK(sess->in_flight == 0);
	while (recv_pdu(&p))
		;
	conn_teardown();
}

/* ---- R2T and Data-Out ---- */

static uint8_t pattern(uint32_t off)
{
	return (uint8_t)(off * 31 + (off >> 8));
}

static void send_data_out(uint32_t itt, uint32_t ttt, uint32_t data_sn,
			  uint32_t off, uint32_t len, bool final)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN];
	uint8_t *data = malloc(len);

	for (uint32_t i = 0; i < len; i++)
		data[i] = pattern(off + i);
	bhs_data_out(bhs, itt, ttt, data_sn, off, final);
	put_pdu(w, bhs, NULL, 0, data, len);
	CHECK(feed_split(w, 3) == 1);
	free(data);
	free(w);
}

static void send_write(uint32_t itt, uint32_t sn, uint32_t edtl,
		       uint32_t imm, bool final)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN];
	uint8_t *data = malloc(imm + 1);

	for (uint32_t i = 0; i < imm; i++)
		data[i] = pattern(i);
	bhs_scsi_cmd(bhs, itt, sn,
		     (final ? ISCSI_FLAG_FINAL : 0) | SCSI_CMD_FLAG_WRITE, edtl,
		     0x2a, 0);
	put_pdu(w, bhs, NULL, 0, data, imm);
	CHECK(feed(w) == 1);
	free(data);
	free(w);
}

struct r2t {
	uint32_t ttt, r2t_sn, off, len;
};

static bool expect_r2t(uint32_t itt, struct r2t *r)
{
	struct rpdu p;

	if (!expect_pdu(&p, ISCSI_OP_R2T))
		return false;
	CHECK(get_be32(p.bhs + BHS_ITT) == itt);
	r->ttt = get_be32(p.bhs + BHS_TTT);
	r->r2t_sn = get_be32(p.bhs + R2T_R2T_SN);
	r->off = get_be32(p.bhs + R2T_BUFFER_OFFSET);
	r->len = get_be32(p.bhs + R2T_DESIRED_LEN);
	CHECK(r->ttt != ISCSI_RSVD_TAG);
	CHECK(p.bhs[BHS_FLAGS] & ISCSI_FLAG_FINAL);
	return true;
}

static bool buf_is_pattern(const uint8_t *b, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		if (b[i] != pattern(i))
			return false;
	return true;
}

/* InitialR2T=No, ImmediateData=Yes: immediate data, then unsolicited
 * Data-Out up to FirstBurstLength, then R2Ts of at most MaxBurstLength,
 * MaxOutstandingR2T at a time. */
static void test_r2t_unsolicited(void)
{
	struct sess_params sp = defaults;
	struct r2t r0, r1;
	const uint32_t itt = 0x500, edtl = 40000;

	sp.initial_r2t = false;
	sp.first_burst = 8192;
	sp.max_burst = 16384;
	sp.max_r2t = 2;
	conn_setup(&sp);
	send_write(itt, 1, edtl, 1000, false);
	/* the command's turn came at once: R2Ts for what follows the first
	 * burst, two outstanding */
	if (expect_r2t(itt, &r0) && expect_r2t(itt, &r1)) {
		CHECK(r0.r2t_sn == 0 && r0.off == 8192 && r0.len == 16384);
		CHECK(r1.r2t_sn == 1 && r1.off == 8192 + 16384 &&
		      r1.len == edtl - 8192 - 16384);
		CHECK(r0.ttt != r1.ttt);
	}
	expect_nothing();
	/* unsolicited: TTT reserved, DataSN from 0, after the immediate data */
	send_data_out(itt, ISCSI_RSVD_TAG, 0, 1000, 4000, false);
	send_data_out(itt, ISCSI_RSVD_TAG, 1, 5000, 3192, true);
	/* solicited: DataSN restarts at 0 for each R2T (11.7.4) */
	send_data_out(itt, r1.ttt, 0, r1.off, r1.len, true);
	send_data_out(itt, r0.ttt, 0, r0.off, 8192, false);
	CHECK(nexec == 0, "not all data in yet");
	send_data_out(itt, r0.ttt, 1, r0.off + 8192, 8192, true);
	CHECK(nexec == 1);
	if (nlive == 1) {
		struct scsi_cmd *cmd = live[0];

		CHECK(cmd->out_len == edtl && buf_is_pattern(cmd->buf, edtl),
		      "every byte where its offset says");
		complete(cmd, SAM_STAT_GOOD, 0);
	}
	{
		struct rpdu p;

		if (expect_pdu(&p, ISCSI_OP_SCSI_RSP))
			CHECK(p.bhs[SCSI_RSP_STATUS] == SAM_STAT_GOOD &&
			      get_be32(p.bhs + SCSI_RSP_RESIDUAL) == 0);
	}
	expect_nothing();
	conn_teardown();
}

/* Write buffers are recycled, not zeroed: Data-Out that overlaps and so
 * counts up to EDTL while leaving holes (in the middle and at the end)
 * must hand the SCSI layer zeros there, never a former command's bytes. */
static void test_write_buffer_holes(void)
{
	struct sess_params sp = defaults;
	struct r2t r;
	const uint32_t itt = 0x580, edtl = 16384;

	sp.max_burst = 16384;
	sp.max_r2t = 1;
	conn_setup(&sp);
	send_write(itt, 1, edtl, 1000, true);	/* [0, 1000) immediate */
	if (!expect_r2t(itt, &r))
		goto out;
	CHECK(r.off == 1000 && r.len == edtl - 1000);
	send_data_out(itt, r.ttt, 0, 5000, 4000, false);
	send_data_out(itt, r.ttt, 1, 5000, 4000, false);
	send_data_out(itt, r.ttt, 2, 5000, 4000, false);
	send_data_out(itt, r.ttt, 3, 12000, 3000, false);
	CHECK(nexec == 0, "1000 + 15000 bytes counted, EDTL not reached");
	send_data_out(itt, r.ttt, 4, 12000, 3000, true);
	CHECK(nexec == 1);
	if (nlive == 1) {
		const uint8_t *b = live[0]->buf;
		bool ok = true;

		for (uint32_t i = 0; i < edtl; i++) {
			bool data = i < 1000 || (i >= 5000 && i < 9000) ||
				    (i >= 12000 && i < 15000);

			if (b[i] != (data ? pattern(i) : 0)) {
				CHECK(false, "byte %u is 0x%02x", i, b[i]);
				ok = false;
				break;
			}
		}
		CHECK(ok, "data where sent, zeros in the holes and the tail");
		complete(live[0], SAM_STAT_GOOD, 0);
	}
out:
	while (recv_pdu(&(struct rpdu){ 0 }))
		;
	conn_teardown();
}

/* InitialR2T=Yes, ImmediateData=No, MaxOutstandingR2T=1: one R2T at a
 * time, R2TSN counting up; Data-Out that does not fit is rejected. */
static void test_r2t_solicited(void)
{
	struct sess_params sp = defaults;
	struct r2t r;
	const uint32_t itt = 0x600, edtl = 20000;

	sp.immediate_data = false;
	sp.max_burst = 8192;
	sp.max_r2t = 1;
	conn_setup(&sp);

	/* immediate data although ImmediateData=No: protocol error */
	send_write(0x5ff, 1, 4096, 512, true);
	expect_reject(ISCSI_REJECT_PROTOCOL_ERROR);
	CHECK(nexec == 0 && c->ntasks == 0);

	send_write(itt, 1, edtl, 0, true);
	if (!expect_r2t(itt, &r))
		goto out;
	CHECK(r.r2t_sn == 0 && r.off == 0 && r.len == 8192);
	expect_nothing();	/* MaxOutstandingR2T=1 */

	/* unsolicited data is not allowed (InitialR2T=Yes) */
	send_data_out(itt, ISCSI_RSVD_TAG, 0, 0, 512, false);
	expect_reject(ISCSI_REJECT_INVALID_PDU_FIELD);
	/* past the end of what the R2T asked for */
	send_data_out(itt, r.ttt, 0, 8000, 1000, false);
	expect_reject(ISCSI_REJECT_INVALID_PDU_FIELD);
	/* an unknown TTT, and an unknown ITT */
	send_data_out(itt, r.ttt + 1000, 0, 0, 512, false);
	expect_reject(ISCSI_REJECT_INVALID_PDU_FIELD);
	send_data_out(itt + 1, r.ttt, 0, 0, 512, false);
	expect_reject(ISCSI_REJECT_INVALID_PDU_FIELD);
	/* DataSN out of order */
	send_data_out(itt, r.ttt, 1, 0, 4096, false);
	expect_reject(ISCSI_REJECT_PROTOCOL_ERROR);

	send_data_out(itt, r.ttt, 0, 0, 4096, false);
	expect_nothing();
	send_data_out(itt, r.ttt, 1, 4096, 4096, true);
	/* the R2T is satisfied: the next one goes out */
	if (expect_r2t(itt, &r))
		CHECK(r.r2t_sn == 1 && r.off == 8192 && r.len == 8192);
	send_data_out(itt, r.ttt, 0, r.off, r.len, true);
	if (expect_r2t(itt, &r))
		CHECK(r.r2t_sn == 2 && r.off == 16384 && r.len == edtl - 16384);
	expect_nothing();
	send_data_out(itt, r.ttt, 0, r.off, r.len, true);
	CHECK(nexec == 1);
	if (nlive == 1) {
		CHECK(live[0]->out_len == edtl &&
		      buf_is_pattern(live[0]->buf, edtl));
		complete(live[0], SAM_STAT_GOOD, 0);
	}
out:
	while (recv_pdu(&(struct rpdu){ 0 }))
		;
	conn_teardown();
}

/* While the LUN is hung a write's data is left with the initiator: no R2T
 * and no buffer until the LUN may solicit again. */
static void test_r2t_deferred(void)
{
	struct r2t r;
	const uint32_t itt = 0x700;

	conn_setup(&defaults);
	lun_hung[0] = true;
	send_write(itt, 1, 8192, 0, true);
	expect_nothing();
	{
		struct iscsi_task *t = task_find(c, itt);

		CHECK(t && t->deferred && !t->cmd.buf, "deferred, no buffer");
	}
	CHECK(c->defer_timer.armed);
	fire(&c->defer_timer);		/* still hung: wait on */
	expect_nothing();
	CHECK(c->defer_timer.armed);
	lun_hung[0] = false;
	fire(&c->defer_timer);
	if (expect_r2t(itt, &r))
		CHECK(r.r2t_sn == 0 && r.off == 0 && r.len == 8192);
	CHECK(!c->defer_timer.armed);
	send_data_out(itt, r.ttt, 0, 0, 8192, true);
	CHECK(nexec == 1);
	if (nlive == 1)
		complete(live[0], SAM_STAT_GOOD, 0);
	while (recv_pdu(&(struct rpdu){ 0 }))
		;
	conn_teardown();
}

/* ---- Data-In ---- */

/* A read's data goes out in PDUs of at most MaxRecvDataSegmentLength,
 * the F bit ending each MaxBurstLength sequence, DataSN and offsets
 * counting up, status in the last (phase collapse). */
static void test_data_in(void)
{
	struct sess_params sp = defaults;
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN];
	const uint32_t edtl = 40000;
	uint32_t off = 0, sn = 0;
	struct rpdu p;

	sp.max_burst = 16384;
	conn_setup(&sp);
	bhs_scsi_cmd(bhs, 0x800, 1, ISCSI_FLAG_FINAL | SCSI_CMD_FLAG_READ,
		     edtl, 0x28, 0);
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	CHECK(feed(w) == 1 && nlive == 1);
	if (nlive == 1)
		complete(live[0], SAM_STAT_GOOD, edtl);
	while (off < edtl && expect_pdu(&p, ISCSI_OP_DATA_IN)) {
		uint32_t want = MIN(8192u, edtl - off);
		bool end_of_burst = (off + want) % 16384 == 0;
		bool last = off + want == edtl;

		CHECK(p.len == want, "pdu %u: %u bytes", sn, p.len);
		CHECK(get_be32(p.bhs + DATA_DATA_SN) == sn);
		CHECK(get_be32(p.bhs + DATA_BUFFER_OFFSET) == off);
		CHECK(!!(p.bhs[BHS_FLAGS] & ISCSI_FLAG_FINAL) ==
		      (end_of_burst || last), "F bit of pdu %u", sn);
		CHECK(!!(p.bhs[BHS_FLAGS] & DATA_FLAG_STATUS) == last);
		for (uint32_t i = 0; i < p.len; i++)
			if (p.data[i] != (uint8_t)((off + i) * 7)) {
				CHECK(false, "data at %u", off + i);
				break;
			}
		off += p.len;
		sn++;
	}
	CHECK(off == edtl && sn == 5);
	expect_nothing();
	conn_teardown();
	free(w);
}

/* ---- task management ---- */

static void send_tmf(uint32_t itt, uint8_t func, uint64_t lun, uint32_t rtt,
		     uint32_t cmd_sn, uint32_t ref_cmd_sn)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN];

	bhs_tmf(bhs, itt, func, lun, rtt, cmd_sn, ref_cmd_sn);
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	CHECK(feed(w) == 1);
	free(w);
}

static void expect_tmf_rsp(uint32_t itt, uint8_t response)
{
	struct rpdu p;

	if (expect_pdu(&p, ISCSI_OP_TMF_RSP)) {
		CHECK(get_be32(p.bhs + BHS_ITT) == itt);
		CHECK(p.bhs[TMF_RSP_RESPONSE] == response,
		      "response %u, wanted %u", p.bhs[TMF_RSP_RESPONSE],
		      response);
	}
}

static void test_tmf_abort_task(void)
{
	conn_setup(&defaults);
	send_cmd(0x10, 1, false);	/* executing */
	send_cmd(0x11, 2, false);	/* executing */
	send_cmd(0x13, 4, false);	/* held: CmdSN 3 is missing */
	CHECK(nexec == 2 && pending_count() == 1 && c->ntasks == 3);

	/* ABORT TASK of an executing task: answered once the SCSI layer
	 * has finished it, and the task itself gets no response */
	send_tmf(0x90, ISCSI_TMF_ABORT_TASK, 0, 0x10, 3, 1);
	CHECK(naborted == 1 && aborted[0] == live_by_itt(0x10));
	expect_nothing();
	complete(live_by_itt(0x10), SAM_STAT_TASK_ABORTED, 0);
	expect_tmf_rsp(0x90, ISCSI_TMF_RSP_COMPLETE);
	expect_nothing();

	/* ABORT TASK of a task still waiting for its CmdSN: dropped at once,
	 * never executed */
	send_tmf(0x91, ISCSI_TMF_ABORT_TASK, 0, 0x13, 3, 4);
	expect_tmf_rsp(0x91, ISCSI_TMF_RSP_COMPLETE);
	CHECK(pending_count() == 0 && c->ntasks == 1 && naborted == 1);

	/* unknown RTT: RefCmdSN outside the window means no such task;
	 * inside the window and before the TMF's CmdSN, the command is
	 * taken as received and aborted (11.5.1) */
	send_tmf(0x92, ISCSI_TMF_ABORT_TASK, 0, 0x99, 3, 0xfffffff0u);
	expect_tmf_rsp(0x92, ISCSI_TMF_RSP_NO_TASK);
	send_tmf(0x93, ISCSI_TMF_ABORT_TASK, 0, 0x99, 5, 3);
	expect_tmf_rsp(0x93, ISCSI_TMF_RSP_COMPLETE);
	send_tmf(0x94, ISCSI_TMF_ABORT_TASK, 0, 0x99, 3, 3);
	expect_tmf_rsp(0x94, ISCSI_TMF_RSP_NO_TASK);	/* not before it */

	/* a finished task is not found */
	complete(live_by_itt(0x11), SAM_STAT_GOOD, 0);
	{
		struct rpdu p;

		expect_pdu(&p, ISCSI_OP_SCSI_RSP);
	}
	send_tmf(0x95, ISCSI_TMF_ABORT_TASK, 0, 0x11, 3, 0xfffffff0u);
	expect_tmf_rsp(0x95, ISCSI_TMF_RSP_NO_TASK);

	/* functions ERL 0 cannot do, and unknown ones */
	send_tmf(0x96, ISCSI_TMF_TASK_REASSIGN, 0, 0x11, 3, 2);
	expect_tmf_rsp(0x96, ISCSI_TMF_RSP_NO_REASSIGN);
	send_tmf(0x97, 20, 0, 0, 3, 0);
	expect_tmf_rsp(0x97, ISCSI_TMF_RSP_NOT_SUPPORTED);
	expect_nothing();
	conn_teardown();
}

static void test_tmf_lun_reset(void)
{
	conn_setup(&defaults);
	send_cmd(0x20, 1, false);
	CHECK(nlive == 1);

	send_tmf(0xa0, ISCSI_TMF_LUN_RESET, 5, 0, 2, 0);
	expect_tmf_rsp(0xa0, ISCSI_TMF_RSP_NO_LUN);

	/* LUN RESET: the LUN's tasks are aborted and the hang engine drops
	 * what it holds for every nexus; the answer waits for both */
	send_tmf(0xa1, ISCSI_TMF_LUN_RESET, 0, 0, 2, 0);
	CHECK(naborted == 1 && ndrops == 1 &&
	      drops[0].nexus == SCSI_NEXUS_ALL);
	expect_nothing();
	complete(live_by_itt(0x20), SAM_STAT_TASK_ABORTED, 0);
	expect_nothing();
	run_drops();
	expect_tmf_rsp(0xa1, ISCSI_TMF_RSP_COMPLETE);

	/* ABORT TASK SET is this nexus only */
	send_tmf(0xa2, ISCSI_TMF_ABORT_TASK_SET, 1, 0, 2, 0);
	CHECK(ndrops == 1 && drops[0].nexus == sess->nexus.id);
	run_drops();
	expect_tmf_rsp(0xa2, ISCSI_TMF_RSP_COMPLETE);
	expect_nothing();

	/* TARGET COLD RESET: answered, then the connection closes (FLUSH,
	 * then CLOSING once the answer is sent) */
	send_tmf(0xa3, ISCSI_TMF_TARGET_COLD_RESET, 0, 0, 2, 0);
	CHECK(ndrops == 2);
	CHECK(c->state == CONN_STATE_FULL_FEATURE);
	run_drops();
	expect_tmf_rsp(0xa3, ISCSI_TMF_RSP_COMPLETE);
	CHECK(c->state == CONN_STATE_CLOSING, "state %s",
	      iscsi_conn_state_name(c->state));
	conn_teardown();
}

/* Session reinstatement (6.3.5): the final login response is held in
 * REINSTATE while the old sessions end.  A PDU from the initiator
 * meanwhile closes the connection without the answer ever going out;
 * the connection stays until the outstanding old-session replies
 * (ntasks) come back; once freed, its own waiters are told. */
static void test_reinstate_hold(void)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN] = { 0 };
	int freed = conns_freed, closing = sessions_closing;
	int notified = reinstate_notified, last;

	conn_setup_phase(&defaults, true);
	CHECK(iscsi_conn_set_state(c, CONN_STATE_REINSTATE) == 0);
	c->login_rsp_held = iscsi_pdu_new(ISCSI_OP_LOGIN_RSP, 0);
	c->reinstate_waiting = 1;
	c->ntasks++;		/* the old session's reply outstanding */
	expect_nothing();	/* held: the initiator sees no answer */

	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
	bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	put_be32(bhs + BHS_ITT, 0x55);
	put_be32(bhs + BHS_TTT, ISCSI_RSVD_TAG);
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	peer_write(w->b, w->len);
	pump(&last);
	CHECK(c->state == CONN_STATE_CLOSING, "a PDU before the answer "
	      "closes: state %s", iscsi_conn_state_name(c->state));
	CHECK(c->login_rsp_held == NULL, "held answer dropped");
	CHECK(sessions_closing == closing + 1);
	expect_nothing();
	run_calls();
	CHECK(conns_freed == freed, "kept while a reply is outstanding");
	c->ntasks--;		/* the reply arrives */
	iscsi_conn_task_gone(c);
	run_calls();
	CHECK(conns_freed == freed + 1, "freed after the last reply");
	CHECK(reinstate_notified == notified + 1,
	      "waiters on this connection told when it is freed");
	close(peer);
	c = NULL;
	free(w);
}

static void put_nop(struct wire *w, uint32_t itt, uint32_t len)
{
	static uint8_t data[4096];
	uint8_t bhs[ISCSI_BHS_LEN] = { 0 };

	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_NOP_OUT;
	bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	put_be32(bhs + BHS_ITT, itt);
	put_be32(bhs + BHS_TTT, ISCSI_RSVD_TAG);
	put_pdu(w, bhs, NULL, 0, len ? data : NULL, len);
}

/* idle_timeout (slowloris): a PDU started and not finished within the
 * limit closes the connection; PDUs that complete meanwhile restart
 * the clock.  The read-ahead buffer is allocated at the first read,
 * small, and grows only while reads fill it. */
static void test_idle_timeout(void)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint32_t limit = LIMIT(idle_timeout_ms);

	conn_setup(&defaults);
	CHECK(c->rxbuf == NULL, "no read-ahead buffer before a read");
	put_nop(w, 0x60, 0);
	peer_write(w->b, 20);		/* part of a header, then nothing */
	conn_rx(c);
	CHECK(c->rx_cap == ISCSI_RXBUF_MIN, "cap %u", c->rx_cap);
	CHECK(c->idle_timer.armed, "a partial PDU arms the idle timer");
	fake_now_ms += limit - 1;
	fire(&c->idle_timer);
	CHECK(c->state == CONN_STATE_FULL_FEATURE && c->idle_timer.armed,
	      "not yet: %s", iscsi_conn_state_name(c->state));
	fake_now_ms += 1;
	fire(&c->idle_timer);
	CHECK(c->state == CONN_STATE_CLOSING, "stalled PDU closes: %s",
	      iscsi_conn_state_name(c->state));
	conn_teardown();

	/* progress: the rest of that PDU and the start of the next one */
	conn_setup(&defaults);
	w->len = 0;
	put_nop(w, 0x61, 0);
	put_nop(w, 0x62, 0);
	peer_write(w->b, 20);
	conn_rx(c);
	CHECK(c->idle_timer.armed);
	fake_now_ms += limit - 1;
	peer_write(w->b + 20, ISCSI_BHS_LEN + 10);
	conn_rx(c);
	fake_now_ms += 1;
	fire(&c->idle_timer);
	CHECK(c->state == CONN_STATE_FULL_FEATURE,
	      "a PDU completed meanwhile: the clock restarts: %s",
	      iscsi_conn_state_name(c->state));
	fake_now_ms += limit;
	fire(&c->idle_timer);
	CHECK(c->state == CONN_STATE_CLOSING, "then the new one stalls: %s",
	      iscsi_conn_state_name(c->state));
	conn_teardown();

	/* many PDUs in one go: the buffer grows, up to ISCSI_RXBUF_SIZE */
	conn_setup(&defaults);
	w->len = 0;
	for (uint32_t i = 0; i < 12; i++)
		put_nop(w, 0x70 + i, 1000);
	peer_write(w->b, w->len);
	conn_rx(c);
	CHECK(c->rx_cap > ISCSI_RXBUF_MIN && c->rx_cap <= ISCSI_RXBUF_SIZE,
	      "cap %u", c->rx_cap);
	CHECK(!c->idle_timer.armed, "nothing partial: no idle timer");
	conn_teardown();
	free(w);
}


/* ---- buffer limits (README "Limits and slow peers") ---- */

static void send_read(uint32_t itt, uint32_t sn, uint32_t edtl)
{
	struct wire *w = xzalloc(sizeof(*w));
	uint8_t bhs[ISCSI_BHS_LEN];

	bhs_scsi_cmd(bhs, itt, sn, ISCSI_FLAG_FINAL | SCSI_CMD_FLAG_READ,
		     edtl, 0x28, 0);
	put_pdu(w, bhs, NULL, 0, NULL, 0);
	CHECK(feed(w) == 1);
	free(w);
}

static uint64_t buf_used(void)
{
	return __atomic_load_n(&iscsi_buf_total, __ATOMIC_RELAXED);
}

static void expect_status(uint32_t itt, uint8_t status)
{
	struct rpdu p;

	if (expect_pdu(&p, ISCSI_OP_SCSI_RSP)) {
		CHECK(get_be32(p.bhs + BHS_ITT) == itt, "itt 0x%x, wanted 0x%x",
		      get_be32(p.bhs + BHS_ITT), itt);
		CHECK(p.bhs[SCSI_RSP_STATUS] == status,
		      "status 0x%02x, wanted 0x%02x", p.bhs[SCSI_RSP_STATUS],
		      status);
	}
}

/* max_data_buffer_per_connection = 64 KiB: immediate and unsolicited
 * data that do not fit are received into no buffer and answered TASK
 * SET FULL; what the SCSI layer charges (scsi_cmd.buf_charge) counts
 * and is refused over the limit; everything counted is released once,
 * whichever way the task ends (answered, aborted by LUN RESET, the
 * connection closed mid-transfer), back to 0. */
static void test_buffer_limits(void)
{
	struct iscsi_limits saved, l;
	struct sess_params sp = defaults;
	struct scsi_cmd *cmd;
	struct rpdu p;
	uint64_t refused = iscsi_buf_refused;

	iscsi_limits_get(&saved);
	l = saved;
	l.max_data_buffer_per_connection = 65536;
	l.max_data_buffer = 1 << 20;
	iscsi_limits_set(&l);
	sp.initial_r2t = false;
	sp.first_burst = 16384;
	sp.max_burst = 65536;
	conn_setup(&sp);
	CHECK(buf_used() == 0);

	/* fits: 40000 counted from its immediate data on */
	send_write(0x900, 1, 40000, 1000, false);
	CHECK(c->buf_reserved == 40000 && buf_used() == 40000,
	      "conn %lu total %lu", (unsigned long)c->buf_reserved,
	      (unsigned long)buf_used());
	while (recv_pdu(&p))	/* its R2T */
		;
	/* does not fit (80000 > 64 KiB): no buffer, no R2T; its
	 * unsolicited data is taken and dropped, then TASK SET FULL */
	send_write(0x901, 2, 40000, 1000, false);
	CHECK(c->buf_reserved == 40000, "refused command counted: %lu",
	      (unsigned long)c->buf_reserved);
	expect_nothing();
	send_data_out(0x901, ISCSI_RSVD_TAG, 0, 1000, 8000, false);
	expect_nothing();
	send_data_out(0x901, ISCSI_RSVD_TAG, 1, 9000, 7384, true);
	expect_status(0x901, SAM_STAT_TASK_SET_FULL);
	CHECK(iscsi_buf_refused == refused + 1);
	CHECK(nexec == 0 && c->buf_reserved == 40000);
	/* all of it immediate (F bit): refused at once */
	send_write(0x902, 3, 30000, 16384, true);
	expect_status(0x902, SAM_STAT_TASK_SET_FULL);
	CHECK(iscsi_buf_refused == refused + 2);
	/* one that fits still goes */
	send_write(0x903, 4, 8192, 8192, true);
	CHECK(nexec == 1 && c->buf_reserved == 48192);
	if (nlive == 1)
		complete(live[0], SAM_STAT_GOOD, 0);
	expect_status(0x903, SAM_STAT_GOOD);
	CHECK(c->buf_reserved == 40000, "released when answered: %lu",
	      (unsigned long)c->buf_reserved);

	/* the SCSI layer's buffers: charged on top, refused over the limit
	 * while others hold buffers, released with the task */
	send_read(0x904, 5, 4096);
	cmd = live_by_itt(0x904);
	CHECK(cmd && cmd->buf_charge && cmd->buf_counted == 4096);
	if (cmd) {
		CHECK(cmd->buf_charge(cmd, 10000));
		CHECK(c->buf_reserved == 54096 && buf_used() == 54096);
		CHECK(!cmd->buf_charge(cmd, 20000), "over the limit");
		CHECK(iscsi_buf_refused == refused + 3);
		CHECK(c->buf_reserved == 54096);
		complete(cmd, SAM_STAT_GOOD, 0);
	}
	expect_status(0x904, SAM_STAT_GOOD);
	CHECK(c->buf_reserved == 40000 && buf_used() == 40000);

	/* an executing task with a charged buffer, aborted by LUN RESET */
	send_read(0x905, 6, 8192);
	cmd = live_by_itt(0x905);
	if (cmd)
		CHECK(cmd->buf_charge(cmd, 8192));
	CHECK(c->buf_reserved == 56384);
	send_tmf(0x906, ISCSI_TMF_LUN_RESET, 0, 0, 7, 0);
	if (cmd)
		complete(cmd, SAM_STAT_TASK_ABORTED, 0);
	run_drops();
	while (recv_pdu(&p))
		;
	CHECK(live_by_itt(0x900) == NULL && c->buf_reserved == 0 &&
	      buf_used() == 0, "LUN RESET released it all: %lu",
	      (unsigned long)c->buf_reserved);

	/* alone, a command larger than the limit goes (no starvation) */
	send_read(0x907, 7, 100000);
	cmd = live_by_itt(0x907);
	CHECK(cmd && c->buf_reserved == 100000);
	if (cmd)
		CHECK(cmd->buf_charge(cmd, 4096), "nothing else counted");
	if (cmd)
		complete(cmd, SAM_STAT_GOOD, 0);
	while (recv_pdu(&p))
		;
	CHECK(c->buf_reserved == 0 && buf_used() == 0);
	CHECK(c->buf_peak == 104096, "peak %lu", (unsigned long)c->buf_peak);

	/* the connection dies mid-transfer: a command held for a CmdSN gap
	 * with its immediate data, one waiting for unsolicited data, and a
	 * command whose immediate data never finished arriving */
	send_write(0x910, 10, 8192, 4096, false);	/* CmdSN 8, 9 missing */
	send_write(0x911, 8, 16384, 1000, false);
	CHECK(c->buf_reserved == 8192 + 16384 && pending_count() == 1);
	{
		struct wire *w = xzalloc(sizeof(*w));
		uint8_t bhs[ISCSI_BHS_LEN], data[8192] = { 0 };
		int last;

		bhs_scsi_cmd(bhs, 0x912, 9, SCSI_CMD_FLAG_WRITE, 16384, 0x2a, 0);
		put_pdu(w, bhs, NULL, 0, data, sizeof(data));
		peer_write(w->b, w->len - 4000);
		pump(&last);
		CHECK(c->buf_reserved == 8192 + 2 * 16384,
		      "counted from its header: %lu",
		      (unsigned long)c->buf_reserved);
		free(w);
	}
	conn_teardown();
	CHECK(buf_used() == 0, "all released at close: %lu",
	      (unsigned long)buf_used());
	iscsi_limits_set(&saved);
}

int main(void)
{
	test_states();
	test_reinstate_hold();
	test_logout();
	test_logout_tx_blocked();
	test_flush_timeout();
	test_parser_split();
	test_rx_wakeups();
	test_parser_direct();
	test_parser_ext_cdb();
	test_parser_errors();
	test_cmd_sn();
	test_r2t_unsolicited();
	test_r2t_solicited();
	test_write_buffer_holes();
	test_r2t_deferred();
	test_data_in();
	test_tmf_abort_task();
	test_tmf_lun_reset();
	test_idle_timeout();
	test_buffer_limits();
	return CHECK_SUMMARY("test_iscsi_rx");
}
