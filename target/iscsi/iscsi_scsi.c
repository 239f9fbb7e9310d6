/* iscsi_scsi.c - SCSI commands over iSCSI: CmdSN ordering, Data-Out
 * through immediate data, unsolicited data and R2T, Data-In with status
 * in the last PDU, SCSI Response with sense and residuals, and task
 * management (RFC 7143 3.2.2, 4.2.3, 11.3-11.8).
 *
 * A task is created when a SCSI Command header arrives, so its immediate
 * data and later Data-Out land directly in the command buffer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi_internal.h"


static void task_execute(struct iscsi_task *t);
static void task_refuse(struct iscsi_task *t);
void iscsi_conn_defer_poll(struct ev_timer *timer);
static void tmf_respond(struct iscsi_conn *c, struct iscsi_tmf *tmf);

/* ---- tasks ---- */

static struct iscsi_task *task_find(struct iscsi_conn *c, uint32_t itt)
{
	struct iscsi_task *t;

	list_for_each_entry(t, &c->tasks, link)
		if (t->itt == itt && t->state != TASK_DONE)
			return t;
	return NULL;
}

/* Tasks are recycled per thread: one per SCSI command. */
#define TASK_CACHE_MAX 256
static __thread struct free_list task_cache;

void iscsi_task_put(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;

	if (--t->refs > 0)
		return;
	if (t->cmd.lun)
		scsi_lun_put(t->cmd.lun);
	scsi_buf_free(t->cmd.buf);
	if (t->buf_reserved) {
		/* the one release of everything counted for the task: its
		 * data buffer and what the SCSI layer charged */
		__atomic_fetch_sub(&iscsi_buf_total, t->buf_reserved,
				   __ATOMIC_RELAXED);
		__atomic_fetch_sub(&c->buf_reserved, t->buf_reserved,
				   __ATOMIC_RELAXED);
		t->buf_reserved = 0;
	}
	free_list_put(&task_cache, t, TASK_CACHE_MAX);
	c->ntasks--;
	iscsi_conn_task_gone(c);
}

/* Count a non-immediate command against the window until it is done. */
static void task_uncount(struct iscsi_task *t)
{
	if (!t->immediate && t->conn->sess && t->conn->sess->in_flight > 0 &&
	    t->state != TASK_PENDING)
		t->conn->sess->in_flight--;
}

/* Remove a task that never reached the SCSI layer or is finished. */
static void task_remove(struct iscsi_task *t)
{
	list_del(&t->link);
	list_del(&t->pending_link);
	iscsi_task_put(t);
}

/* max_data_buffer and max_data_buffer_per_connection count every
 * buffer held for a command (README "Limits and slow peers"): its data
 * buffer, by expected data transfer length, from when it is needed (the
 * first R2T, the start of a read; at once for immediate and unsolicited
 * data), and the buffers the SCSI layer allocates for it beyond that
 * (iscsi_task_buf_charge), until the task is freed.  Over a limit a
 * command whose data can wait waits (deferred, re-checked every
 * ISCSI_DEFER_POLL_MS); one whose data comes unasked, or whose SCSI
 * layer buffer does not fit, is answered TASK SET FULL.  Only what
 * others hold refuses: a command larger than a limit goes when nothing
 * else is counted, so it cannot starve. */
static bool buf_take(struct iscsi_task *t, uint64_t len, const char *then)
{
	struct iscsi_conn *c = t->conn;
	uint64_t max = LIMIT(max_data_buffer);
	uint64_t max_c = LIMIT(max_data_buffer_per_connection);
	uint64_t mine = t->buf_reserved;
	uint64_t conn = __atomic_load_n(&c->buf_reserved, __ATOMIC_RELAXED);
	uint64_t cur = __atomic_load_n(&iscsi_buf_total, __ATOMIC_RELAXED);
	uint64_t peak;

	if (max_c && conn > mine && conn + len > max_c) {
		iscsi_limit_log(LIMIT_LOG_BUFFER,
				"conn %lu (%s): %lu bytes of command buffers "
				"(max_data_buffer_per_connection %lu): %s",
				(unsigned long)c->id, c->peer_str,
				(unsigned long)conn, (unsigned long)max_c,
				then);
		return false;
	}
	do {
		if (max && cur > mine && cur + len > max) {
			iscsi_limit_log(LIMIT_LOG_BUFFER,
					"%lu bytes of command buffers in use "
					"(max_data_buffer %lu): %s",
					(unsigned long)cur,
					(unsigned long)max, then);
			return false;
		}
	} while (!__atomic_compare_exchange_n(&iscsi_buf_total, &cur,
					      cur + len, true,
					      __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	peak = __atomic_load_n(&iscsi_buf_peak, __ATOMIC_RELAXED);
	while (cur + len > peak &&
	       !__atomic_compare_exchange_n(&iscsi_buf_peak, &peak, cur + len,
					    true, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
	conn = __atomic_add_fetch(&c->buf_reserved, len, __ATOMIC_RELAXED);
	if (conn > __atomic_load_n(&c->buf_peak, __ATOMIC_RELAXED))
		__atomic_store_n(&c->buf_peak, conn, __ATOMIC_RELAXED);
	t->buf_reserved += len;
	return true;
}

bool iscsi_task_buf_reserve(struct iscsi_task *t)
{
	if (!t->edtl || t->buf_reserved)
		return true;
	return buf_take(t, t->edtl, "commands wait");
}

bool iscsi_task_buf_charge(struct iscsi_task *t, uint64_t len)
{
	if (!len)
		return true;
	if (buf_take(t, len, "command answered TASK SET FULL"))
		return true;
	__atomic_fetch_add(&iscsi_buf_refused, 1, __ATOMIC_RELAXED);
	return false;
}

/* scsi_cmd.buf_charge: a buffer the SCSI layer allocates for the task. */
static bool task_buf_charge(struct scsi_cmd *cmd, uint32_t len)
{
	return iscsi_task_buf_charge(cmd->priv, len);
}

uint32_t iscsi_session_max_cmd_sn(struct iscsi_session *s)
{
	int window = s->cmd_window ? (int)s->cmd_window : ISCSI_CMD_WINDOW;
	int free_slots = window - s->in_flight;

	/* 3.2.2.1: MaxCmdSN = ExpCmdSN - 1 closes the window */
	if (free_slots <= 0)
		return s->exp_cmd_sn - 1;
	return s->exp_cmd_sn + (uint32_t)free_slots - 1;
}

bool iscsi_cmd_sn_accept(struct iscsi_conn *c, const uint8_t *bhs)
{
	struct iscsi_session *s = c->sess;
	uint32_t sn = get_be32(bhs + BHS_CMD_SN);

	/* 3.2.2.1: outside [ExpCmdSN, MaxCmdSN] is silently ignored */
	if (sn_lt(sn, s->exp_cmd_sn) ||
	    sn_gt(sn, iscsi_session_max_cmd_sn(s))) {
		log_debug("conn %lu: CmdSN %u outside window [%u, %u], ignored",
			  (unsigned long)c->id, sn, s->exp_cmd_sn,
			  iscsi_session_max_cmd_sn(s));
		return false;
	}
	if (sn == s->exp_cmd_sn)
		s->exp_cmd_sn++;
	return true;
}

/* ---- SCSI Command ---- */

/* 11.3.4 / 11.2.1.2: CDBs longer than 16 bytes continue in an Extended
 * CDB AHS: AHSLength (2), AHSType 1 (1), reserved (1), CDB bytes 16.. */
static void iscsi_scsi_ext_cdb(struct iscsi_conn *c, struct iscsi_task *t)
{
	uint32_t off = 0;

	while (off + 4 <= c->rx_ahs_len) {
		uint32_t len = get_be16(c->rx_ahs + off);
		uint8_t type = c->rx_ahs[off + 2];

		if (type == ISCSI_AHS_EXTENDED_CDB && len > 1) {
			uint32_t extra = MIN(len - 1, SCSI_CDB_MAX - 16);

			if (off + 4 + extra <= c->rx_ahs_len) {
				memcpy(t->cmd.cdb + 16, c->rx_ahs + off + 4,
				       extra);
				t->cmd.cdb_len = 16 + extra;
			}
		}
		off += 3 + len;	/* AHS length excludes its first 3 bytes */
		off = (off + 3) & ~3u;
	}
}

/* Data for [off, off + len) of a write's buffer is about to be received
 * into it.  The buffer is recycled, not zeroed (a 1 MiB memset per 1 MiB
 * write otherwise): whatever lies between what is initialized so far and
 * off is zeroed now, and task_execute() zeroes the tail, so by the time
 * the command runs cmd.buf[0, EDTL) holds only its own data or zeros.
 * Data-Out offsets are range-checked but may overlap and leave holes; a
 * hole never shows a former command's (another session's) data.  A PDU
 * cut short ends the connection, so its command never runs. */
static void task_buf_landing(struct iscsi_task *t, uint32_t off,
			     uint32_t len)
{
	if (off > t->buf_init)
		memset(t->cmd.buf + t->buf_init, 0, off - t->buf_init);
	if (off + len > t->buf_init)
		t->buf_init = off + len;
	t->conn->rx_data = t->cmd.buf + off;
}

int iscsi_scsi_cmd_begin(struct iscsi_conn *c)
{
	const uint8_t *bhs = c->rx_bhs;
	struct iscsi_session *s = c->sess;
	struct iscsi_task *t;
	uint32_t len = c->rx_data_len;

	if (s->discovery) {
		c->rx_discard = true;
		return 0;
	}
	t = free_list_zalloc(&task_cache, sizeof(*t));
	t->conn = c;
	t->refs = 1;
	list_init(&t->link);
	list_init(&t->pending_link);
	c->ntasks++;
	t->state = TASK_PENDING;
	t->itt = get_be32(bhs + BHS_ITT);
	t->cmd_sn = get_be32(bhs + BHS_CMD_SN);
	t->immediate = bhs[BHS_OPCODE] & ISCSI_OP_IMMEDIATE;
	memcpy(t->lun_raw, bhs + BHS_LUN, 8);
	t->lun_id = iscsi_lun_decode(bhs + BHS_LUN);
	t->edtl = get_be32(bhs + SCSI_CMD_EDTL);
	t->cmd.dir_read = bhs[BHS_FLAGS] & SCSI_CMD_FLAG_READ;
	t->cmd.dir_write = bhs[BHS_FLAGS] & SCSI_CMD_FLAG_WRITE;
	t->cmd.attr = bhs[BHS_FLAGS] & SCSI_CMD_ATTR_MASK;
	t->cmd.exp_len = t->edtl;
	t->cmd.priv = t;
	memcpy(t->cmd.cdb, bhs + SCSI_CMD_CDB, SCSI_CMD_CDB_LEN);
	t->cmd.cdb_len = SCSI_CMD_CDB_LEN;
	iscsi_scsi_ext_cdb(c, t);
	c->rx_task = t;
	c->rx_task_new = true;
	/* The buffer is needed now only if data may come unasked: immediate
	 * data, or unsolicited Data-Out (InitialR2T=No and no F bit).  Else
	 * it is allocated when the first R2T goes out, so writes queued
	 * behind a hung LUN do not pin memory (DESIGN.md). */
	if (t->cmd.dir_write && t->edtl && t->edtl <= ISCSI_MAX_CMD_BUF &&
	    (len || (!c->sess->initial_r2t &&
		     !(bhs[BHS_FLAGS] & ISCSI_FLAG_FINAL)))) {
		/* The data comes unasked, so the command cannot wait for
		 * room: without it the data is received and dropped, and
		 * the command answered TASK SET FULL once it is in. */
		if (!buf_take(t, t->edtl, "command answered TASK SET FULL")) {
			t->no_room = true;
		} else {
			t->cmd.buf = scsi_buf_alloc_uninit(t->edtl);
			if (!t->cmd.buf)
				return -ENOMEM;
			t->cmd.buf_len = t->edtl;
			t->buf_init = 0;
		}
	}
	if (len) {
		/* immediate data must fit the buffer; anything else is
		 * received and dropped, and answered in cmd_rx */
		if (t->cmd.buf && len <= t->edtl)
			task_buf_landing(t, 0, len);
		else
			c->rx_discard = true;
		t->imm_len = len;
	}
	return 0;
}

static void task_send_r2ts(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;
	struct iscsi_session *s = c->sess;

	if (t->deferred)
		return;
	if (!t->cmd.buf && t->r2t_next < t->edtl) {
		if (!iscsi_task_buf_reserve(t)) {
			/* over max_data_buffer: ask again on the next poll */
			t->deferred = true;
			if (!c->defer_timer.armed)
				reactor_timer_add(c->r, &c->defer_timer,
						  ISCSI_DEFER_POLL_MS,
						  iscsi_conn_defer_poll, c);
			return;
		}
		t->cmd.buf = scsi_buf_alloc_uninit(t->edtl);
		t->buf_init = 0;
		if (!t->cmd.buf) {
			/* no memory now: ask again on the next poll */
			t->deferred = true;
			reactor_timer_add(c->r, &c->defer_timer,
					  ISCSI_DEFER_POLL_MS,
					  iscsi_conn_defer_poll, c);
			return;
		}
		t->cmd.buf_len = t->edtl;
	}
	while (t->r2t_next < t->edtl) {
		struct iscsi_r2t *r = NULL;
		struct iscsi_pdu *p;
		uint32_t active = 0;

		for (unsigned i = 0; i < s->max_r2t; i++) {
			if (t->r2t[i].active)
				active++;
			else if (!r)
				r = &t->r2t[i];
		}
		if (!r || active >= s->max_r2t)
			return;
		r->active = true;
		r->ttt = iscsi_conn_new_ttt(c);
		r->offset = t->r2t_next;
		r->length = MIN(s->max_burst, t->edtl - t->r2t_next);
		r->received = 0;
		r->exp_data_sn = 0;
		t->r2t_next += r->length;

		p = iscsi_pdu_new(ISCSI_OP_R2T, 0);
		p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
		memcpy(p->bhs + BHS_LUN, t->lun_raw, 8);
		put_be32(p->bhs + BHS_ITT, t->itt);
		put_be32(p->bhs + BHS_TTT, r->ttt);
		put_be32(p->bhs + BHS_STAT_SN, c->stat_sn);  /* not advanced */
		iscsi_conn_put_sn(c, p->bhs);
		put_be32(p->bhs + R2T_R2T_SN, t->r2t_sn++);
		put_be32(p->bhs + R2T_BUFFER_OFFSET, r->offset);
		put_be32(p->bhs + R2T_DESIRED_LEN, r->length);
		iscsi_conn_send(c, p);
	}
}

/* The command's turn has come (CmdSN order): start its data phase. */
/* The task's LUN, looked up once and kept (referenced) in cmd.lun for
 * execution; NULL if there is no such LUN. */
static struct scsi_lun *task_lun(struct iscsi_task *t)
{
	if (!t->cmd.lun && t->lun_id != UINT64_MAX)
		t->cmd.lun = tgt_lun_get(t->conn->sess->target, t->lun_id);
	return t->cmd.lun;
}

static bool task_lun_hung(struct iscsi_task *t)
{
	struct scsi_lun *lun = task_lun(t);

	return lun && !scsi_lun_may_solicit(lun);
}

/* While a LUN is hung its writes would only queue behind the held one:
 * leave their data with the initiator (no R2T, no buffer) until the LUN
 * is ok again or fails. */
void iscsi_conn_defer_poll(struct ev_timer *timer)
{
	struct iscsi_conn *c = timer->arg;
	struct iscsi_task *t, *n;
	bool again = false;

	if (c->state != CONN_STATE_FULL_FEATURE)
		return;
	list_for_each_entry_safe(t, n, &c->tasks, link) {
		if (!t->deferred)
			continue;
		if (!t->cmd.dir_write) {
			/* a read waiting for max_data_buffer */
			if (!iscsi_task_buf_reserve(t)) {
				again = true;
				continue;
			}
			t->deferred = false;
			task_execute(t);
			continue;
		}
		if (task_lun_hung(t)) {
			again = true;
			continue;
		}
		t->deferred = false;
		task_send_r2ts(t);
		again |= t->deferred;
	}
	if (again)
		reactor_timer_add(c->r, &c->defer_timer, ISCSI_DEFER_POLL_MS,
				  iscsi_conn_defer_poll, c);
}

static void task_start(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;

	t->state = TASK_DATA_OUT;
	if (t->no_room) {
		/* refused once its unsolicited data is in (dropped) */
		if (t->received >= t->unsol_end)
			task_refuse(t);
		return;
	}
	if (!t->cmd.dir_write && t->edtl &&
	    !iscsi_task_buf_reserve(t)) {
		/* over max_data_buffer: the read waits for room */
		t->deferred = true;
		if (!c->defer_timer.armed)
			reactor_timer_add(c->r, &c->defer_timer,
					  ISCSI_DEFER_POLL_MS,
					  iscsi_conn_defer_poll, c);
		return;
	}
	if (!t->cmd.dir_write || t->edtl == 0 || t->received >= t->edtl) {
		task_execute(t);
		return;
	}
	if (t->r2t_next < t->edtl && task_lun_hung(t)) {
		log_debug("conn %lu: itt 0x%x: LUN %lu hung, R2T deferred",
			  (unsigned long)c->id, t->itt,
			  (unsigned long)t->lun_id);
		t->deferred = true;
		if (!c->defer_timer.armed)
			reactor_timer_add(c->r, &c->defer_timer,
					  ISCSI_DEFER_POLL_MS,
					  iscsi_conn_defer_poll, c);
		return;
	}
	task_send_r2ts(t);
}

void iscsi_scsi_cmd_rx(struct iscsi_conn *c)
{
	const uint8_t *bhs = c->rx_bhs;
	struct iscsi_session *s = c->sess;
	struct iscsi_task *t = c->rx_task;
	uint32_t sn;

	if (s->discovery) {
		/* 11.3: no SCSI commands in a discovery session */
		iscsi_conn_reject(c, bhs, ISCSI_REJECT_PROTOCOL_ERROR);
		return;
	}
	c->rx_task = NULL;
	c->rx_task_new = false;
	list_add_tail(&t->link, &c->tasks);
	/* immediate data is only allowed with ImmediateData=Yes, within
	 * FirstBurstLength and EDTL (10.3.5) */
	if (t->imm_len && (!s->immediate_data || !t->cmd.dir_write ||
			   t->imm_len > s->first_burst ||
			   t->imm_len > t->edtl ||
			   (!t->cmd.buf && !t->no_room))) {
		iscsi_conn_reject(c, bhs, ISCSI_REJECT_PROTOCOL_ERROR);
		task_remove(t);
		return;
	}
	if (t->cmd.dir_write && t->edtl > ISCSI_MAX_CMD_BUF) {
		iscsi_conn_reject(c, bhs, ISCSI_REJECT_OUT_OF_RESOURCES);
		task_remove(t);
		return;
	}
	/* 3.2.4.2: unsolicited Data-Out (InitialR2T=No) may follow up to
	 * FirstBurstLength unless the command carried the F bit; R2Ts ask
	 * for the rest */
	if (t->cmd.dir_write) {
		if (bhs[BHS_FLAGS] & ISCSI_FLAG_FINAL || s->initial_r2t)
			t->unsol_end = t->imm_len;
		else
			t->unsol_end = MAX(MIN(s->first_burst, t->edtl),
					   t->imm_len);
		t->r2t_next = t->unsol_end;
		t->received = t->imm_len;
	}
	if (t->immediate) {
		task_start(t);
		return;
	}
	sn = t->cmd_sn;
	if (sn_lt(sn, s->exp_cmd_sn) ||
	    sn_gt(sn, iscsi_session_max_cmd_sn(s))) {
		log_debug("conn %lu: CmdSN %u outside window [%u, %u], ignored",
			  (unsigned long)c->id, sn, s->exp_cmd_sn,
			  iscsi_session_max_cmd_sn(s));
		task_remove(t);
		return;
	}
	if (sn != s->exp_cmd_sn) {
		/* a gap: hold it until the missing commands arrive */
		struct iscsi_task *pos;

		list_for_each_entry(pos, &s->pending, pending_link)
			if (sn_lt(sn, pos->cmd_sn))
				break;
		list_add_tail(&t->pending_link, &pos->pending_link);
		return;
	}
	s->exp_cmd_sn++;
	s->in_flight++;
	task_start(t);
	while (!list_empty(&s->pending)) {
		t = list_first_entry(&s->pending, struct iscsi_task,
				     pending_link);
		if (t->cmd_sn != s->exp_cmd_sn)
			break;
		list_del(&t->pending_link);
		s->exp_cmd_sn++;
		s->in_flight++;
		task_start(t);
	}
}

/* ---- Data-Out ---- */

int iscsi_data_out_begin(struct iscsi_conn *c)
{
	const uint8_t *bhs = c->rx_bhs;
	uint32_t ttt = get_be32(bhs + BHS_TTT);
	uint32_t off = get_be32(bhs + DATA_BUFFER_OFFSET);
	uint32_t len = c->rx_data_len;
	struct iscsi_task *t = task_find(c, get_be32(bhs + BHS_ITT));

	c->rx_discard = true;
	if (!t || (!t->cmd.buf && !t->no_room) ||
	    (t->state != TASK_DATA_OUT && t->state != TASK_PENDING))
		return 0;
	if ((uint64_t)off + len > t->edtl)
		return 0;
	if (ttt == ISCSI_RSVD_TAG) {
		if (off < t->imm_len || off + len > t->unsol_end)
			return 0;
	} else {
		struct iscsi_r2t *r = NULL;

		for (unsigned i = 0; i < ISCSI_MAX_R2T; i++)
			if (t->r2t[i].active && t->r2t[i].ttt == ttt)
				r = &t->r2t[i];
		if (!r || off < r->offset || off + len > r->offset + r->length)
			return 0;
	}
	c->rx_task = t;
	if (t->no_room)
		return 0;	/* no buffer: its data is dropped */
	c->rx_discard = false;
	task_buf_landing(t, off, len);
	return 0;
}

void iscsi_data_out_rx(struct iscsi_conn *c)
{
	const uint8_t *bhs = c->rx_bhs;
	struct iscsi_task *t = c->rx_task;
	uint32_t ttt = get_be32(bhs + BHS_TTT);
	uint32_t data_sn = get_be32(bhs + DATA_DATA_SN);
	uint32_t len = c->rx_data_len;
	bool final = bhs[BHS_FLAGS] & ISCSI_FLAG_FINAL;

	c->rx_task = NULL;
	if (!t || (c->rx_discard && !t->no_room)) {
		/* 11.7: a Data-Out for no task or outside what was asked
		 * for is a protocol error */
		iscsi_conn_reject(c, bhs, ISCSI_REJECT_INVALID_PDU_FIELD);
		return;
	}
	if (ttt == ISCSI_RSVD_TAG) {
		if (data_sn != t->unsol_exp_data_sn) {
			iscsi_conn_reject(c, bhs, ISCSI_REJECT_PROTOCOL_ERROR);
			return;
		}
		t->unsol_exp_data_sn++;
	} else {
		struct iscsi_r2t *r = NULL;

		for (unsigned i = 0; i < ISCSI_MAX_R2T; i++)
			if (t->r2t[i].active && t->r2t[i].ttt == ttt)
				r = &t->r2t[i];
		if (!r)
			return;
		/* 11.7.4: DataSN counts within each R2T's sequence */
		if (data_sn != r->exp_data_sn) {
			iscsi_conn_reject(c, bhs, ISCSI_REJECT_PROTOCOL_ERROR);
			return;
		}
		r->exp_data_sn++;
		r->received += len;
		if (final || r->received >= r->length)
			r->active = false;
	}
	t->received += len;
	if (t->no_room) {
		/* unsolicited data of a refused command: the F bit or
		 * FirstBurstLength ends it (no R2T follows) */
		if (final || t->received >= t->unsol_end)
			t->unsol_end = t->received;
		if (t->state == TASK_DATA_OUT && t->received >= t->unsol_end)
			task_refuse(t);
		return;
	}
	if (t->state != TASK_DATA_OUT)
		return;		/* still waiting for its CmdSN */
	if (t->received >= t->edtl) {
		task_execute(t);
		return;
	}
	task_send_r2ts(t);
}

/* ---- execution and response ---- */

static void task_send_data_in(struct iscsi_task *t, uint32_t len,
			      bool with_status, uint8_t rflags,
			      uint32_t residual)
{
	struct iscsi_conn *c = t->conn;
	uint32_t off = 0, burst = 0;
	uint32_t max_burst = c->sess->max_burst;

	while (off < len) {
		uint32_t n = MIN(len - off, c->max_send_dsl);
		struct iscsi_pdu *p = iscsi_pdu_new(ISCSI_OP_DATA_IN, 0);
		uint8_t flags = 0;

		n = MIN(n, max_burst - burst);
		p->data = t->cmd.buf + off;
		p->data_len = n;
		p->task = t;
		t->refs++;
		burst += n;
		off += n;
		/* 11.7.1: F ends each sequence of up to MaxBurstLength */
		if (burst >= max_burst || off == len) {
			flags |= ISCSI_FLAG_FINAL;
			burst = 0;
		}
		put_be32(p->bhs + BHS_ITT, t->itt);
		put_be32(p->bhs + BHS_TTT, ISCSI_RSVD_TAG);
		if (off == len && with_status) {
			flags |= DATA_FLAG_STATUS | rflags;
			p->bhs[DATA_STATUS] = t->cmd.status;
			put_be32(p->bhs + BHS_STAT_SN,
				 iscsi_conn_next_stat_sn(c));
			put_be32(p->bhs + DATA_RESIDUAL, residual);
		}
		p->bhs[BHS_FLAGS] = flags;
		iscsi_conn_put_sn(c, p->bhs);
		put_be32(p->bhs + DATA_DATA_SN, t->data_in_sn++);
		put_be32(p->bhs + DATA_BUFFER_OFFSET, off - n);
		iscsi_conn_send(c, p);
	}
}

static void task_respond(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;
	struct scsi_cmd *cmd = &t->cmd;
	uint32_t want, edtl_dir, send = 0, residual = 0;
	uint8_t rflags = 0;
	struct iscsi_pdu *p;

	/* residuals (11.4.5): the command's own transfer size against the
	 * initiator's EDTL for that direction */
	if (cmd->in_len) {
		want = cmd->in_len;
		edtl_dir = cmd->dir_read ? t->edtl : 0;
		send = MIN(want, edtl_dir);
	} else if (cmd->dir_write) {
		want = cmd->out_want ? cmd->out_want : cmd->out_len;
		edtl_dir = t->edtl;
	} else {
		want = 0;
		edtl_dir = cmd->dir_read ? t->edtl : 0;
	}
	if (want > edtl_dir) {
		rflags = SCSI_RSP_FLAG_OVERFLOW;
		residual = want - edtl_dir;
	} else if (want < edtl_dir) {
		rflags = SCSI_RSP_FLAG_UNDERFLOW;
		residual = edtl_dir - want;
	}
	log_debug("conn %lu: itt 0x%x lun %lu op 0x%02x status 0x%02x in %u out %u/%u edtl %u",
		  (unsigned long)c->id, t->itt, (unsigned long)t->lun_id,
		  cmd->cdb[0], cmd->status, cmd->in_len, cmd->out_len,
		  cmd->out_want, t->edtl);
	if (send && cmd->sense_len == 0) {
		/* 10.4.3: status in the last Data-In ("phase collapse") */
		task_send_data_in(t, send, true, rflags, residual);
		return;
	}
	if (send)
		task_send_data_in(t, send, false, 0, 0);
	p = iscsi_pdu_new(ISCSI_OP_SCSI_RSP,
			  cmd->sense_len ? cmd->sense_len + 2 : 0);
	p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL | rflags;
	p->bhs[SCSI_RSP_RESPONSE] = ISCSI_RESPONSE_COMPLETED;
	p->bhs[SCSI_RSP_STATUS] = cmd->status;
	put_be32(p->bhs + BHS_ITT, t->itt);
	put_be32(p->bhs + BHS_STAT_SN, iscsi_conn_next_stat_sn(c));
	iscsi_conn_put_sn(c, p->bhs);
	put_be32(p->bhs + SCSI_RSP_EXP_DATA_SN, t->data_in_sn);
	put_be32(p->bhs + SCSI_RSP_RESIDUAL, residual);
	if (cmd->sense_len) {
		/* 11.4.7: SenseLength then the sense data */
		put_be16(p->data, (uint16_t)cmd->sense_len);
		memcpy(p->data + 2, cmd->sense, cmd->sense_len);
	}
	iscsi_conn_send(c, p);
}

static struct iscsi_lun_stat *task_stat(struct iscsi_task *t)
{
	struct iscsi_session *s = t->conn->sess;

	if (!s || !s->lun_stats || t->lun_id >= TGT_MAX_LUNS)
		return NULL;
	return &s->lun_stats[t->lun_id];
}

static void task_scsi_done(struct scsi_cmd *cmd)
{
	struct iscsi_task *t = cmd->priv;
	struct iscsi_conn *c = t->conn;
	struct iscsi_tmf *tmf = t->tmf;
	struct iscsi_lun_stat *st = task_stat(t);

	if (st) {
		if (cmd->dir_write) {
			STAT_ADD(st->wr_done_cmds, 1);
			STAT_ADD(st->wr_done_bytes, t->edtl);
		} else {
			STAT_ADD(st->rd_done_cmds, 1);
			STAT_ADD(st->rd_done_bytes, t->edtl);
		}
		if (cmd->status != SAM_STAT_GOOD)
			STAT_ADD(st->errs, 1);
	}

	task_uncount(t);
	t->state = TASK_DONE;
	/* aborted tasks get no response (4.2.3.3) */
	if (!t->aborted && c->state == CONN_STATE_FULL_FEATURE)
		task_respond(t);
	task_remove(t);
	if (tmf && --tmf->waiting == 0)
		tmf_respond(c, tmf);
}

static void task_execute(struct iscsi_task *t)
{
	struct iscsi_conn *c = t->conn;
	struct iscsi_session *s = c->sess;
	struct scsi_cmd *cmd = &t->cmd;

	struct iscsi_lun_stat *st = task_stat(t);

	if (st) {
		if (cmd->dir_write) {
			STAT_ADD(st->wr_subm_cmds, 1);
			STAT_ADD(st->wr_subm_bytes, t->edtl);
		} else {
			STAT_ADD(st->rd_subm_cmds, 1);
			STAT_ADD(st->rd_subm_bytes, t->edtl);
		}
	}
	if (cmd->dir_write && cmd->buf && t->buf_init < t->edtl) {
		/* Data-Out counted up to EDTL but overlapped, leaving a
		 * hole at the end: zeros, never a former command's data */
		memset(cmd->buf + t->buf_init, 0, t->edtl - t->buf_init);
		t->buf_init = t->edtl;
	}
	t->state = TASK_EXECUTING;
	cmd->target = s->target;
	cmd->lun_id = t->lun_id;
	cmd->lun = task_lun(t);
	cmd->nexus = &s->nexus;
	cmd->out_len = t->cmd.dir_write ? MIN(t->received, t->edtl) : 0;
	cmd->buf_counted = (uint32_t)MIN(t->buf_reserved, UINT32_MAX);
	cmd->buf_charge = task_buf_charge;
	cmd->done = task_scsi_done;
	scsi_cmd_exec(cmd);
}

/* A command whose unasked data found no buffer room (t->no_room), once
 * that data is in: TASK SET FULL (SAM-5 5.3.1: the task set cannot take
 * it now; the initiator retries).  Never executed. */
static void task_refuse(struct iscsi_task *t)
{
	__atomic_fetch_add(&iscsi_buf_refused, 1, __ATOMIC_RELAXED);
	log_debug("conn %lu: itt 0x%x: no buffer room, TASK SET FULL",
		  (unsigned long)t->conn->id, t->itt);
	t->cmd.status = SAM_STAT_TASK_SET_FULL;
	t->cmd.out_want = t->edtl;	/* nothing ran: no residual */
	task_scsi_done(&t->cmd);
}

/* ---- task management (11.5, 11.6) ---- */

/* The Logout Response goes out only after the session's commands are
 * gone (11.14.1: the target cleans up before it answers), so a held write
 * can never reach the store after the initiator saw the session end. */
static void logout_respond(struct iscsi_conn *c, struct iscsi_tmf *tmf)
{
	struct iscsi_pdu *p;

	if (c->state == CONN_STATE_FULL_FEATURE) {
		p = iscsi_pdu_new(ISCSI_OP_LOGOUT_RSP, 0);
		p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
		/* ERL 0: close session and close connection both end the
		 * session; recovery removal is not supported (11.15.1) */
		p->bhs[LOGOUT_RSP_RESPONSE] =
			(tmf->bhs[BHS_FLAGS] & LOGOUT_REASON_MASK) ==
					ISCSI_LOGOUT_REMOVE_FOR_RECOVERY ?
				2 : 0;
		put_be32(p->bhs + BHS_ITT, get_be32(tmf->bhs + BHS_ITT));
		put_be32(p->bhs + BHS_STAT_SN, iscsi_conn_next_stat_sn(c));
		iscsi_conn_put_sn(c, p->bhs);
		iscsi_conn_send(c, p);
		iscsi_conn_close_after_send(c, "logged out");
	}
	free(tmf);
}

static void tmf_respond(struct iscsi_conn *c, struct iscsi_tmf *tmf)
{
	struct iscsi_pdu *p;
	bool close_after = tmf->close_after;

	if (tmf->logout) {
		logout_respond(c, tmf);
		return;
	}
	if (c->state == CONN_STATE_FULL_FEATURE) {
		p = iscsi_pdu_new(ISCSI_OP_TMF_RSP, 0);
		p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
		p->bhs[TMF_RSP_RESPONSE] = tmf->response;
		put_be32(p->bhs + BHS_ITT, get_be32(tmf->bhs + BHS_ITT));
		put_be32(p->bhs + BHS_STAT_SN, iscsi_conn_next_stat_sn(c));
		iscsi_conn_put_sn(c, p->bhs);
		iscsi_conn_send(c, p);
	}
	free(tmf);
	if (close_after)
		iscsi_conn_close_after_send(c, "target cold reset");
}

static void task_abort(struct iscsi_task *t, struct iscsi_tmf *tmf)
{
	if (t->aborted || t->state == TASK_DONE)
		return;
	t->aborted = true;
	if (t->state != TASK_EXECUTING) {
		task_uncount(t);
		task_remove(t);
		return;
	}
	if (tmf) {
		t->tmf = tmf;
		tmf->waiting++;
	}
	scsi_cmd_abort(&t->cmd);	/* done() follows, maybe at once */
}

void iscsi_conn_abort_tasks(struct iscsi_conn *c)
{
	struct iscsi_task *t, *n;

	/* pending tasks are on c->tasks too */
	list_for_each_entry_safe(t, n, &c->tasks, link)
		task_abort(t, NULL);
}

struct tmf_hang_wait {
	struct iscsi_conn *c;
	struct iscsi_tmf *tmf;
};

static void tmf_hang_done(void *arg, unsigned dropped)
{
	struct tmf_hang_wait *w = arg;
	struct iscsi_conn *c = w->c;

	log_debug("conn %lu: TMF dropped %u held/queued command(s)",
		  (unsigned long)c->id, dropped);
	if (--w->tmf->waiting == 0)
		tmf_respond(c, w->tmf);
	free(w);
	c->ntasks--;
	iscsi_conn_task_gone(c);
}

/* LUN RESET, CLEAR TASK SET and target resets act on every I_T nexus
 * (SAM-5 7.6, 7.10): the hang engine drops what it holds or queues for
 * any session, and the TMF is answered once that is done. */
static void tmf_drop_lun(struct iscsi_conn *c, struct iscsi_tmf *tmf,
			 struct scsi_lun *lun, uint64_t nexus)
{
	struct tmf_hang_wait *w = xzalloc(sizeof(*w));

	w->c = c;
	w->tmf = tmf;
	c->ntasks++;		/* keeps c until the callback ran */
	tmf->waiting++;
	if (scsi_lun_drop_nexus(lun, nexus, c->r, tmf_hang_done, w) < 0) {
		tmf->waiting--;
		c->ntasks--;
		free(w);
	}
}

static void reset_lun(struct iscsi_conn *c, struct iscsi_tmf *tmf,
		      uint64_t lun_id, bool ua, uint64_t nexus)
{
	struct iscsi_session *s = c->sess;
	struct scsi_lun *lun = tgt_lun_get(s->target, lun_id);

	if (!lun)
		return;
	tmf_drop_lun(c, tmf, lun, nexus);
	if (ua)
		scsi_lun_reset_ua(lun, &s->nexus);
	scsi_lun_put(lun);
}

void iscsi_tmf_rx(struct iscsi_conn *c, const uint8_t *bhs)
{
	struct iscsi_session *s = c->sess;
	struct iscsi_tmf *tmf;
	struct iscsi_task *t, *n;
	uint8_t func = bhs[BHS_FLAGS] & TMF_FUNC_MASK;
	uint64_t lun_id = iscsi_lun_decode(bhs + BHS_LUN);
	uint32_t cmd_sn = get_be32(bhs + BHS_CMD_SN);
	bool immediate = bhs[BHS_OPCODE] & ISCSI_OP_IMMEDIATE;

	if (!immediate && !iscsi_cmd_sn_accept(c, bhs))
		return;
	tmf = xzalloc(sizeof(*tmf));
	memcpy(tmf->bhs, bhs, ISCSI_BHS_LEN);
	tmf->response = ISCSI_TMF_RSP_COMPLETE;
	tmf->waiting = 1;	/* held until every abort below is issued */

	switch (func) {
	case ISCSI_TMF_ABORT_TASK: {
		uint32_t rtt = get_be32(bhs + TMF_REF_TASK_TAG);
		uint32_t ref_sn = get_be32(bhs + TMF_REF_CMD_SN);

		t = task_find(c, rtt);
		if (t) {
			task_abort(t, tmf);
		} else if (sn_lt(ref_sn, s->exp_cmd_sn) ||
			   sn_gt(ref_sn, iscsi_session_max_cmd_sn(s)) ||
			   !sn_lt(ref_sn, cmd_sn)) {
			/* 11.5.1 c): not in the window: no such task */
			tmf->response = ISCSI_TMF_RSP_NO_TASK;
		}
		/* 11.5.1 b): in the window but never received: consider it
		 * received and answer function complete */
		break;
	}
	case ISCSI_TMF_ABORT_TASK_SET:
	case ISCSI_TMF_CLEAR_TASK_SET:
	case ISCSI_TMF_LUN_RESET: {
		struct scsi_lun *lun = lun_id == UINT64_MAX ? NULL :
				       tgt_lun_get(s->target, lun_id);

		if (!lun) {
			tmf->response = ISCSI_TMF_RSP_NO_LUN;
			break;
		}
		scsi_lun_put(lun);
		list_for_each_entry_safe(t, n, &c->tasks, link)
			if (t->lun_id == lun_id)
				task_abort(t, tmf);
		if (func == ISCSI_TMF_LUN_RESET)
			log_info("conn %lu (%s): LUN RESET on LUN %lu",
				 (unsigned long)c->id, s->initiator_name,
				 (unsigned long)lun_id);
		/* ABORT TASK SET is this nexus only (SAM-5 7.3) */
		reset_lun(c, tmf, lun_id, func == ISCSI_TMF_LUN_RESET,
			  func == ISCSI_TMF_ABORT_TASK_SET ? s->nexus.id
							   : SCSI_NEXUS_ALL);
		break;
	}
	case ISCSI_TMF_TARGET_WARM_RESET:
	case ISCSI_TMF_TARGET_COLD_RESET: {
		uint64_t luns[TGT_MAX_LUNS];
		int nl = tgt_lun_list(s->target, luns, TGT_MAX_LUNS);

		log_info("conn %lu (%s): TARGET %s RESET", (unsigned long)c->id,
			 s->initiator_name,
			 func == ISCSI_TMF_TARGET_COLD_RESET ? "COLD" : "WARM");
		list_for_each_entry_safe(t, n, &c->tasks, link)
			task_abort(t, tmf);
		for (int i = 0; i < nl; i++)
			reset_lun(c, tmf, luns[i], true, SCSI_NEXUS_ALL);
		tmf->close_after = func == ISCSI_TMF_TARGET_COLD_RESET;
		break;
	}
	case ISCSI_TMF_CLEAR_ACA:
		/* NACA is never set, so there is never an ACA to clear */
		break;
	case ISCSI_TMF_TASK_REASSIGN:
		/* 11.5.1: ERL 0 cannot reassign tasks */
		tmf->response = ISCSI_TMF_RSP_NO_REASSIGN;
		break;
	default:
		tmf->response = ISCSI_TMF_RSP_NOT_SUPPORTED;
		break;
	}
	if (--tmf->waiting == 0)
		tmf_respond(c, tmf);
}

void iscsi_logout_rx(struct iscsi_conn *c, const uint8_t *bhs)
{
	struct iscsi_session *s = c->sess;
	struct iscsi_task *t, *n;
	struct iscsi_tmf *tmf = xzalloc(sizeof(*tmf));

	memcpy(tmf->bhs, bhs, ISCSI_BHS_LEN);
	tmf->logout = true;
	tmf->waiting = 1;	/* held until every abort below is issued */
	/* A command in the store is answered when its attempt finishes
	 * (its result dropped); held and queued ones are dropped now. */
	list_for_each_entry_safe(t, n, &c->tasks, link)
		task_abort(t, tmf);
	if (!s->discovery && s->target) {
		uint64_t luns[TGT_MAX_LUNS];
		int nl = tgt_lun_list(s->target, luns, TGT_MAX_LUNS);

		for (int i = 0; i < nl; i++)
			reset_lun(c, tmf, luns[i], false, s->nexus.id);
	}
	if (--tmf->waiting == 0)
		tmf_respond(c, tmf);
}
