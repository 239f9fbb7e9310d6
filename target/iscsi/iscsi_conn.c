/* iscsi_conn.c - one iSCSI connection: a resumable PDU parser over a
 * read-ahead buffer, a transmit queue drained with writev, NOP-In pings
 * and the connection's lifetime.
 *
 * Data-Out and immediate data are received straight into the command's
 * buffer (no copy for large writes); everything else into a buffer of its
 * own. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>
#include <netinet/tcp.h>

#include "iscsi_internal.h"

static atomic_uint_fast64_t conn_ids;

static void conn_rx_ready(struct ev_fd *w, uint32_t events);
static void conn_tx_flush(struct iscsi_conn *c);

/* ---- state ---- */

static const char *const conn_state_names[CONN_STATE_COUNT] = {
	[CONN_STATE_NEW] = "new",
	[CONN_STATE_LOGIN] = "login",
	[CONN_STATE_REINSTATE] = "reinstate",
	[CONN_STATE_FULL_FEATURE] = "full feature",
	[CONN_STATE_FLUSH] = "flush",
	[CONN_STATE_CLOSING] = "closing",
};

/* conn_transitions[from][to]: the diagram in iscsi_internal.h */
static const bool conn_transitions[CONN_STATE_COUNT][CONN_STATE_COUNT] = {
	[CONN_STATE_NEW] = {
		[CONN_STATE_LOGIN] = true,
	},
	[CONN_STATE_LOGIN] = {
		[CONN_STATE_FULL_FEATURE] = true,
		[CONN_STATE_REINSTATE] = true,	/* old sessions to end */
		[CONN_STATE_FLUSH] = true,	/* login reject (6.1) */
		[CONN_STATE_CLOSING] = true,
	},
	[CONN_STATE_REINSTATE] = {
		[CONN_STATE_FULL_FEATURE] = true,	/* old ones gone */
		[CONN_STATE_FLUSH] = true,	/* not in time: refused */
		[CONN_STATE_CLOSING] = true,
	},
	[CONN_STATE_FULL_FEATURE] = {
		[CONN_STATE_FLUSH] = true,	/* logout, cold reset */
		[CONN_STATE_CLOSING] = true,
	},
	[CONN_STATE_FLUSH] = {
		[CONN_STATE_CLOSING] = true,
	},
	/* CLOSING is final: the connection is freed from there */
};

const char *iscsi_conn_state_name(enum iscsi_conn_state s)
{
	return (unsigned)s < CONN_STATE_COUNT ? conn_state_names[s] : "?";
}

int iscsi_conn_set_state(struct iscsi_conn *c, enum iscsi_conn_state to)
{
	enum iscsi_conn_state from = c->state;

	if ((unsigned)from >= CONN_STATE_COUNT ||
	    (unsigned)to >= CONN_STATE_COUNT || !conn_transitions[from][to]) {
		log_err("conn %lu: refused state change %s -> %s",
			(unsigned long)c->id, iscsi_conn_state_name(from),
			iscsi_conn_state_name(to));
		return -EINVAL;
	}
	log_debug("conn %lu: %s -> %s", (unsigned long)c->id,
		  iscsi_conn_state_name(from), iscsi_conn_state_name(to));
	c->state = to;
	return 0;
}

/* ---- PDUs ---- */

/* PDU headers are recycled per thread: one is built per response. */
#define PDU_CACHE_MAX 256
static __thread struct free_list pdu_cache;

struct iscsi_pdu *iscsi_pdu_new(uint8_t opcode, uint32_t data_len)
{
	struct iscsi_pdu *p = free_list_zalloc(&pdu_cache, sizeof(*p));

	p->bhs[BHS_OPCODE] = opcode;
	list_init(&p->link);
	if (data_len) {
		p->data = xzalloc(data_len);
		p->data_len = data_len;
		p->data_owned = true;
	}
	return p;
}

void iscsi_pdu_free(struct iscsi_pdu *p)
{
	if (p->data_owned)
		free(p->data);
	if (p->task)
		iscsi_task_put(p->task);
	free_list_put(&pdu_cache, p, PDU_CACHE_MAX);
}

uint32_t iscsi_conn_next_stat_sn(struct iscsi_conn *c)
{
	return c->stat_sn++;
}

uint32_t iscsi_conn_new_ttt(struct iscsi_conn *c)
{
	if (++c->next_ttt == ISCSI_RSVD_TAG)
		c->next_ttt = 1;
	return c->next_ttt;
}

void iscsi_conn_put_sn(struct iscsi_conn *c, uint8_t *bhs)
{
	if (c->sess) {
		put_be32(bhs + BHS_EXP_CMD_SN, c->sess->exp_cmd_sn);
		put_be32(bhs + BHS_MAX_CMD_SN,
			 iscsi_session_max_cmd_sn(c->sess));
	} else if (c->login) {
		/* during login the window is the login's own CmdSN */
		uint32_t sn = get_be32(bhs + BHS_EXP_CMD_SN);

		put_be32(bhs + BHS_MAX_CMD_SN, sn);
	}
}

/* CRC32C digests go on the wire least significant byte first (the
 * byte order of the CRC register, RFC 7143 13.1 / RFC 3385). */
static void put_digest(uint8_t *p, uint32_t crc)
{
	p[0] = (uint8_t)crc;
	p[1] = (uint8_t)(crc >> 8);
	p[2] = (uint8_t)(crc >> 16);
	p[3] = (uint8_t)(crc >> 24);
}

static void conn_digest_pdu(struct iscsi_conn *c, struct iscsi_pdu *p)
{
	static const uint8_t zeros[4];

	/* decided per PDU: digests start after the final login response
	 * even if that response is still queued (13.1) */
	p->hd = c->hdr_digest;
	p->dd = c->data_digest;
	if (p->hd)
		put_digest(p->hdr_digest, crc32c(0, p->bhs, ISCSI_BHS_LEN));
	if (p->dd && p->data_len) {
		uint32_t crc = crc32c(0, p->data, p->data_len);

		put_digest(p->data_digest,
			   crc32c(crc, zeros, pdu_pad(p->data_len)));
	}
}

static void conn_maybe_free(struct iscsi_conn *c);

static void conn_tx_deferred(struct ev_defer *d)
{
	struct iscsi_conn *c = d->arg;

	c->tx_flush_queued = false;
	c->ntasks--;
	if (c->state == CONN_STATE_CLOSING) {
		conn_maybe_free(c);
		return;
	}
	if (!c->tx_blocked)
		conn_tx_flush(c);
}

void iscsi_conn_send(struct iscsi_conn *c, struct iscsi_pdu *p)
{
	if (c->state == CONN_STATE_CLOSING) {
		iscsi_pdu_free(p);
		return;
	}
	put_be24(p->bhs + BHS_DATA_SEG_LEN, p->data_len);
	conn_digest_pdu(c, p);
	STAT_ADD(c->stat.tx_data_octets, p->data_len);
	if (pdu_opcode(p->bhs) == ISCSI_OP_DATA_IN)
		STAT_ADD(c->stat.datain_pdus, 1);
	else if (pdu_opcode(p->bhs) == ISCSI_OP_SCSI_RSP)
		STAT_ADD(c->stat.rsp_pdus, 1);
	list_add_tail(&p->link, &c->txq);
	if (c->tx_blocked || c->tx_flush_queued)
		return;
	if (reactor_current() != c->r) {
		conn_tx_flush(c);	/* not on our loop (tests): now */
		return;
	}
	/* Send what this loop turn queues in one writev, after the epoll
	 * batch and the completions it produced, instead of one writev per
	 * PDU.  The queued flush holds c like a task does. */
	c->tx_flush_queued = true;
	c->ntasks++;
	reactor_defer(c->r, &c->tx_defer, conn_tx_deferred, c);
}

void iscsi_conn_reject(struct iscsi_conn *c, const uint8_t *bhs,
		       uint8_t reason)
{
	/* 11.17: the rejected header goes back as the data segment */
	struct iscsi_pdu *p = iscsi_pdu_new(ISCSI_OP_REJECT, ISCSI_BHS_LEN);

	log_debug("conn %lu: reject opcode 0x%02x reason 0x%02x",
		  (unsigned long)c->id, pdu_opcode(bhs), reason);
	p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	p->bhs[REJECT_REASON] = reason;
	put_be32(p->bhs + BHS_ITT, ISCSI_RSVD_TAG);
	put_be32(p->bhs + BHS_STAT_SN, iscsi_conn_next_stat_sn(c));
	iscsi_conn_put_sn(c, p->bhs);
	memcpy(p->data, bhs, ISCSI_BHS_LEN);
	iscsi_conn_send(c, p);
}

/* ---- transmit ---- */

/* Build the wire image of queued PDUs as iovecs, skipping what was sent. */
static int conn_tx_iov(struct iscsi_conn *c, struct iovec *iov, int max)
{
	static uint8_t zeros[4];
	struct iscsi_pdu *p;
	int n = 0;

	list_for_each_entry(p, &c->txq, link) {
		struct iovec parts[5];
		int np = 0;
		uint32_t skip = p->sent;

		parts[np++] = (struct iovec){ p->bhs, ISCSI_BHS_LEN };
		if (p->hd)
			parts[np++] = (struct iovec){ p->hdr_digest, 4 };
		if (p->data_len) {
			parts[np++] = (struct iovec){ p->data, p->data_len };
			if (pdu_pad(p->data_len))
				parts[np++] = (struct iovec){
					zeros, pdu_pad(p->data_len) };
			if (p->dd)
				parts[np++] = (struct iovec){ p->data_digest,
							      4 };
		}
		for (int i = 0; i < np; i++) {
			if (skip >= parts[i].iov_len) {
				skip -= (uint32_t)parts[i].iov_len;
				continue;
			}
			if (n == max)
				return n;
			iov[n].iov_base = (uint8_t *)parts[i].iov_base + skip;
			iov[n].iov_len = parts[i].iov_len - skip;
			skip = 0;
			n++;
		}
	}
	return n;
}

static uint32_t pdu_wire_len(const struct iscsi_pdu *p)
{
	uint32_t len = ISCSI_BHS_LEN + (p->hd ? 4 : 0);

	if (p->data_len)
		len += p->data_len + pdu_pad(p->data_len) + (p->dd ? 4 : 0);
	return len;
}

/* What to wait for while the socket cannot take more: its room, and
 * more input unless the connection reads nothing any more (FLUSH).  With
 * a level-triggered EPOLLIN on input nobody reads, the reactor would
 * spin until the peer drains its socket. */
static uint32_t conn_tx_wait_events(const struct iscsi_conn *c)
{
	return c->state == CONN_STATE_FLUSH ? EPOLLOUT : EPOLLIN | EPOLLOUT;
}

static void conn_tx_flush(struct iscsi_conn *c)
{
	struct iovec iov[64];

	while (!list_empty(&c->txq)) {
		int n = conn_tx_iov(c, iov, (int)ARRAY_SIZE(iov));
		ssize_t w = writev(c->fd, iov, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				c->tx_blocked = true;
				reactor_fd_mod(&c->w, conn_tx_wait_events(c));
				return;
			}
			iscsi_conn_close(c, "send failed");
			return;
		}
		while (w > 0 && !list_empty(&c->txq)) {
			struct iscsi_pdu *p = list_first_entry(
				&c->txq, struct iscsi_pdu, link);
			uint32_t left = pdu_wire_len(p) - p->sent;

			if ((size_t)w < left) {
				p->sent += (uint32_t)w;
				w = 0;
				break;
			}
			w -= left;
			list_del(&p->link);
			iscsi_pdu_free(p);
		}
	}
	if (c->tx_blocked) {
		c->tx_blocked = false;
		reactor_fd_mod(&c->w, EPOLLIN);
	}
	if (c->state == CONN_STATE_FLUSH)
		iscsi_conn_close(c, c->flush_why);
}

/* ---- receive ---- */

/* conn_rx_fill() when the read-ahead buffer does not hold it all. */
static __attribute__((noinline)) int
conn_rx_fill_slow(struct iscsi_conn *c, uint8_t *dst, uint32_t need,
		  uint32_t *got)
{
	while (*got < need) {
		uint32_t want = need - *got;

		if (c->rx_end > c->rx_start) {
			uint32_t n = MIN(want, c->rx_end - c->rx_start);

			if (dst)
				memcpy(dst + *got, c->rxbuf + c->rx_start, n);
			c->rx_start += n;
			*got += n;
			continue;
		}
		c->rx_start = c->rx_end = 0;
		ssize_t r;
		bool direct = dst && want >= ISCSI_RX_DIRECT;

		/* A read that came back short emptied the socket: the next
		 * one would almost always be an EAGAIN, a syscall for
		 * nothing.  The fd is level-triggered, so whatever arrived
		 * since wakes the loop again.  Only within conn_rx (a
		 * wakeup); harnesses stepping the parser read until EAGAIN. */
		if (c->rx_wakeup && c->rx_drained)
			return -EAGAIN;

		if (!direct && c->rx_cap < ISCSI_RXBUF_SIZE &&
		    (!c->rxbuf || c->rx_full)) {
			/* lazily, and larger only while reads fill it: an
			 * idle or slow connection holds 2 KiB, not 64 */
			uint32_t cap = c->rxbuf ? c->rx_cap * 2
						: ISCSI_RXBUF_MIN;
			uint8_t *b = malloc(cap);

			if (!b)
				return -ENOMEM;
			free(c->rxbuf);
			c->rxbuf = b;
			c->rx_cap = cap;
			c->rx_full = false;
		}
		if (direct)
			r = read(c->fd, dst + *got, want);  /* large: direct */
		else
			r = read(c->fd, c->rxbuf, c->rx_cap);
		if (r == 0)
			return -ECONNRESET;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		if (direct) {
			*got += (uint32_t)r;
			c->rx_drained = (uint32_t)r < want;
		} else {
			c->rx_end = (uint32_t)r;
			c->rx_full = (uint32_t)r == c->rx_cap;
			c->rx_drained = !c->rx_full;
		}
	}
	return 0;
}

/* Fill dst[*got..need) from the read-ahead buffer or the socket (dst
 * NULL: consume and drop).  Returns 0 when complete, -EAGAIN when the
 * socket has no more for now, -ECONNRESET on EOF, else -errno.  Inline
 * for the common cases, a stage with nothing to read (no AHS, no data,
 * no padding) and a stage the buffer already holds: about five calls
 * per PDU. */
static inline int conn_rx_fill(struct iscsi_conn *c, uint8_t *dst,
			       uint32_t need, uint32_t *got)
{
	uint32_t want;

	if (*got >= need)
		return 0;
	want = need - *got;
	if (c->rx_end - c->rx_start < want)
		return conn_rx_fill_slow(c, dst, need, got);
	if (dst)
		memcpy(dst + *got, c->rxbuf + c->rx_start, want);
	c->rx_start += want;
	*got = need;
	return 0;
}

static void conn_rx_reset(struct iscsi_conn *c)
{
	if (c->rx_data_owned)
		free(c->rx_data);
	c->rx_data = NULL;
	c->rx_data_owned = false;
	c->rx_data_len = 0;
	c->rx_task = NULL;
	c->rx_discard = false;
	c->rx_stage = RX_BHS;
	c->rx_got = 0;
}

/* The header is complete: decide where its data goes. */
static int conn_rx_header_done(struct iscsi_conn *c)
{
	uint8_t op = pdu_opcode(c->rx_bhs);
	uint32_t len = pdu_data_len(c->rx_bhs);
	uint32_t limit = c->state == CONN_STATE_LOGIN ? 65536
						       : c->max_recv_dsl;

	c->rx_data_len = len;
	if (len > limit) {
		log_warn("conn %lu (%s): data segment %u exceeds %u",
			 (unsigned long)c->id, c->peer_str, len, limit);
		return -EPROTO;
	}
	if (c->state == CONN_STATE_FULL_FEATURE && op == ISCSI_OP_SCSI_CMD)
		return iscsi_scsi_cmd_begin(c);
	if (c->state == CONN_STATE_FULL_FEATURE && op == ISCSI_OP_DATA_OUT)
		return iscsi_data_out_begin(c);
	if (len) {
		c->rx_data = malloc(len);
		if (!c->rx_data)
			return -ENOMEM;
		c->rx_data_owned = true;
	}
	return 0;
}

static void conn_dispatch(struct iscsi_conn *c)
{
	const uint8_t *bhs = c->rx_bhs;
	uint8_t op = pdu_opcode(bhs);

	c->nop_outstanding = 0;	/* any PDU proves the initiator alive */
	STAT_ADD(c->stat.rx_data_octets, c->rx_data_len);
	if (op == ISCSI_OP_DATA_OUT)
		STAT_ADD(c->stat.dataout_pdus, 1);
	else if (op == ISCSI_OP_SCSI_CMD)
		STAT_ADD(c->stat.cmd_pdus, 1);
	if (c->state == CONN_STATE_LOGIN) {
		if (op != ISCSI_OP_LOGIN_REQ) {
			/* 6.1: only Login Requests before full feature */
			iscsi_conn_close(c, "non-login PDU during login");
			return;
		}
		iscsi_login_rx(c, bhs, c->rx_data, c->rx_data_len);
		return;
	}
	if (c->state == CONN_STATE_REINSTATE) {
		/* 6.3: nothing may come before the final login response */
		iscsi_conn_close(c, "PDU before the final login response");
		return;
	}
	if (c->state != CONN_STATE_FULL_FEATURE)
		return;
	switch (op) {
	case ISCSI_OP_SCSI_CMD:
		if (!c->rx_task && !c->sess->discovery) {
			/* its header came before the full feature phase began
			 * (while the final login response was still held), so
			 * no task was set up for it (6.3) */
			iscsi_conn_close(c, "SCSI command before full feature phase");
			return;
		}
		iscsi_scsi_cmd_rx(c);
		break;
	case ISCSI_OP_DATA_OUT:
		iscsi_data_out_rx(c);
		break;
	case ISCSI_OP_NOP_OUT: {
		uint32_t itt = get_be32(bhs + BHS_ITT);
		struct iscsi_pdu *p;

		if (!(bhs[BHS_OPCODE] & ISCSI_OP_IMMEDIATE) &&
		    !iscsi_cmd_sn_accept(c, bhs))
			break;
		if (itt == ISCSI_RSVD_TAG)	/* answer to our ping */
			break;
		/* 11.19: echo the ping data back in a NOP-In */
		p = iscsi_pdu_new(ISCSI_OP_NOP_IN, 0);
		p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
		memcpy(p->bhs + BHS_LUN, bhs + BHS_LUN, 8);
		put_be32(p->bhs + BHS_ITT, itt);
		put_be32(p->bhs + BHS_TTT, ISCSI_RSVD_TAG);
		put_be32(p->bhs + BHS_STAT_SN, iscsi_conn_next_stat_sn(c));
		iscsi_conn_put_sn(c, p->bhs);
		if (c->rx_data_len) {
			p->data = c->rx_data;
			p->data_len = c->rx_data_len;
			p->data_owned = true;
			c->rx_data = NULL;
			c->rx_data_owned = false;
		}
		iscsi_conn_send(c, p);
		break;
	}
	case ISCSI_OP_TEXT_REQ:
		if (!(bhs[BHS_OPCODE] & ISCSI_OP_IMMEDIATE) &&
		    !iscsi_cmd_sn_accept(c, bhs))
			break;
		iscsi_text_rx(c, bhs, c->rx_data, c->rx_data_len);
		break;
	case ISCSI_OP_TMF_REQ:
		if (c->sess->discovery) {
			iscsi_conn_reject(c, bhs, ISCSI_REJECT_PROTOCOL_ERROR);
			break;
		}
		iscsi_tmf_rx(c, bhs);
		break;
	case ISCSI_OP_LOGOUT_REQ: {
		if (!(bhs[BHS_OPCODE] & ISCSI_OP_IMMEDIATE) &&
		    !iscsi_cmd_sn_accept(c, bhs))
			break;
		log_info("conn %lu (%s): logout", (unsigned long)c->id,
			 c->peer_str);
		iscsi_logout_rx(c, bhs);
		break;
	}
	case ISCSI_OP_SNACK_REQ:
		/* ERL 0: SNACK is not supported (11.16) */
		iscsi_conn_reject(c, bhs, ISCSI_REJECT_CMD_NOT_SUPPORTED);
		break;
	default:
		iscsi_conn_reject(c, bhs, ISCSI_REJECT_CMD_NOT_SUPPORTED);
		break;
	}
}

/* The resumable PDU parser: each stage keeps its progress in c (rx_stage,
 * rx_got), so input may stop at any byte and the next call goes on from
 * there (the nginx request-line parser's shape). */
int iscsi_conn_rx_step(struct iscsi_conn *c)
{
	int r;

	switch (c->rx_stage) {
	case RX_BHS:
		r = conn_rx_fill(c, c->rx_bhs, ISCSI_BHS_LEN, &c->rx_got);
		if (r < 0)
			return r;
		c->rx_ahs_len = pdu_ahs_len(c->rx_bhs);
		c->rx_got = 0;
		c->rx_stage = RX_AHS;
		/* fall through */
	case RX_AHS:
		r = conn_rx_fill(c, c->rx_ahs, c->rx_ahs_len, &c->rx_got);
		if (r < 0)
			return r;
		c->rx_got = 0;
		c->rx_stage = RX_HDR_DIGEST;
		/* fall through */
	case RX_HDR_DIGEST:
		if (c->hdr_digest) {
			uint32_t crc;

			r = conn_rx_fill(c, c->rx_digest, 4, &c->rx_got);
			if (r < 0)
				return r;
			uint8_t want[4];

			crc = crc32c(0, c->rx_bhs, ISCSI_BHS_LEN);
			crc = crc32c(crc, c->rx_ahs, c->rx_ahs_len);
			put_digest(want, crc);
			if (memcmp(want, c->rx_digest, 4) != 0) {
				/* 7.8: a header digest error at ERL 0 ends
				 * the connection (the header is untrusted) */
				log_warn("conn %lu (%s): header digest error",
					 (unsigned long)c->id, c->peer_str);
				return -EBADMSG;
			}
		}
		c->rx_got = 0;
		r = conn_rx_header_done(c);
		if (r < 0)
			return r;
		c->rx_stage = RX_DATA;
		/* fall through */
	case RX_DATA:
		r = conn_rx_fill(c, c->rx_discard ? NULL : c->rx_data,
				 c->rx_data_len, &c->rx_got);
		if (r < 0)
			return r;
		c->rx_got = 0;
		c->rx_stage = RX_PAD;
		/* fall through */
	case RX_PAD:
		r = conn_rx_fill(c, c->rx_pad, pdu_pad(c->rx_data_len),
				 &c->rx_got);
		if (r < 0)
			return r;
		c->rx_got = 0;
		c->rx_stage = RX_DATA_DIGEST;
		/* fall through */
	case RX_DATA_DIGEST:
		if (c->data_digest && c->rx_data_len) {
			r = conn_rx_fill(c, c->rx_digest, 4, &c->rx_got);
			if (r < 0)
				return r;
			if (!c->rx_discard) {
				uint32_t crc = crc32c(0, c->rx_data,
						      c->rx_data_len);
				uint8_t want[4];

				crc = crc32c(crc, c->rx_pad,
					     pdu_pad(c->rx_data_len));
				put_digest(want, crc);
				if (memcmp(want, c->rx_digest, 4) != 0) {
					/* 7.8: a data digest error at ERL 0:
					 * reject and drop the task */
					log_warn("conn %lu: data digest error",
						 (unsigned long)c->id);
					iscsi_conn_reject(
						c, c->rx_bhs,
						ISCSI_REJECT_DIGEST_ERROR);
					return -EBADMSG;
				}
			}
		}
		break;
	}
	conn_dispatch(c);
	conn_rx_reset(c);
	c->rx_pdus++;
	return 1;
}

/* Part of a PDU is in: is it stuck?  A peer that starts a PDU and stops
 * sending (slowloris) is closed after idle_timeout without progress. */
static bool conn_rx_partial(const struct iscsi_conn *c)
{
	return c->rx_stage != RX_BHS || c->rx_got > 0 ||
	       c->rx_end > c->rx_start;
}

static void conn_idle_timeout(struct ev_timer *t)
{
	struct iscsi_conn *c = t->arg;
	uint64_t limit = LIMIT(idle_timeout_ms), now, since;

	if (c->state != CONN_STATE_FULL_FEATURE || !limit ||
	    !conn_rx_partial(c))
		return;
	now = reactor_now_ms(c->r);
	if (c->rx_stall_pdus != c->rx_pdus) {
		/* PDUs completed since: this partial one is newer */
		c->rx_stall_pdus = c->rx_pdus;
		c->rx_stall_since = now;
	}
	since = now - c->rx_stall_since;
	if (since >= limit) {
		iscsi_limit_log(LIMIT_LOG_IDLE,
				"conn %lu (%s): a PDU started %lu ms ago is "
				"still incomplete (idle_timeout %lu ms): "
				"closing", (unsigned long)c->id, c->peer_str,
				(unsigned long)since, (unsigned long)limit);
		iscsi_conn_close(c, "idle_timeout: PDU incomplete");
		return;
	}
	reactor_timer_add(c->r, &c->idle_timer, limit - since,
			  conn_idle_timeout, c);
}

/* Input ran out in the middle of a PDU: make sure the idle timer runs. */
static void conn_rx_stalled(struct iscsi_conn *c)
{
	uint64_t limit = LIMIT(idle_timeout_ms);

	if (c->idle_timer.armed || !limit ||
	    c->state != CONN_STATE_FULL_FEATURE || !conn_rx_partial(c))
		return;
	c->rx_stall_pdus = c->rx_pdus;
	c->rx_stall_since = reactor_now_ms(c->r);
	reactor_timer_add(c->r, &c->idle_timer, limit, conn_idle_timeout, c);
}

static void conn_rx_continue(void *arg);

/* Parse and dispatch what the socket has, up to the wakeup's budget. */
static void conn_rx_pdus(struct iscsi_conn *c)
{
	for (int i = 0; i < ISCSI_PDUS_PER_WAKEUP; i++) {
		int r;

		if (c->state == CONN_STATE_CLOSING ||
		    c->state == CONN_STATE_FLUSH)
			return;
		r = iscsi_conn_rx_step(c);
		if (r == -EAGAIN) {
			conn_rx_stalled(c);
			return;
		}
		if (r < 0) {
			iscsi_conn_close(c, "connection closed by peer");
			return;
		}
	}
	/* Budget used up: let other connections run, then continue with
	 * what is buffered (epoll will not wake us for that). */
	if (c->rx_end > c->rx_start) {
		c->ntasks++;	/* keeps c alive until the call runs */
		if (reactor_call(c->r, conn_rx_continue, c) < 0)
			c->ntasks--;
	}
}

/* One wakeup's worth of input.  c stays allocated until the current
 * callback returns even if it closes (conn_maybe_free defers). */
static void conn_rx(struct iscsi_conn *c)
{
	c->rx_wakeup = true;
	c->rx_drained = false;
	conn_rx_pdus(c);
	c->rx_wakeup = false;
}

static void conn_maybe_free(struct iscsi_conn *c);

static void conn_rx_continue(void *arg)
{
	struct iscsi_conn *c = arg;

	c->ntasks--;
	if (c->state == CONN_STATE_CLOSING) {
		conn_maybe_free(c);
		return;
	}
	conn_rx(c);
}

static void conn_rx_ready(struct ev_fd *w, uint32_t events)
{
	struct iscsi_conn *c = w->arg;

	if (events & EPOLLOUT)
		conn_tx_flush(c);
	if (c->state == CONN_STATE_CLOSING)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_rx(c);
}

/* ---- timers ---- */

static void conn_login_timeout(struct ev_timer *t)
{
	struct iscsi_conn *c = t->arg;

	if (c->state == CONN_STATE_LOGIN) {
		iscsi_limit_log(LIMIT_LOG_IDLE,
				"conn %lu (%s): login not finished within "
				"login_timeout (%u ms): closing",
				(unsigned long)c->id, c->peer_str,
				LIMIT(login_timeout_ms));
		iscsi_conn_close(c, "login timed out");
	}
}

static void conn_nop_timer(struct ev_timer *t)
{
	struct iscsi_conn *c = t->arg;
	struct iscsi_pdu *p;

	if (c->state != CONN_STATE_FULL_FEATURE)
		return;
	if (c->nop_count && c->nop_outstanding >= c->nop_count) {
		log_warn("conn %lu (%s): %u NOP-In pings unanswered, dropping",
			 (unsigned long)c->id, c->peer_str, c->nop_outstanding);
		iscsi_conn_close(c, "NOP-In timeout");
		return;
	}
	/* 11.19: a target ping carries a valid TTT and the reserved ITT; it
	 * does not advance StatSN */
	p = iscsi_pdu_new(ISCSI_OP_NOP_IN, 0);
	p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	put_be32(p->bhs + BHS_ITT, ISCSI_RSVD_TAG);
	put_be32(p->bhs + BHS_TTT, iscsi_conn_new_ttt(c));
	put_be32(p->bhs + BHS_STAT_SN, c->stat_sn);
	iscsi_conn_put_sn(c, p->bhs);
	c->nop_outstanding++;
	iscsi_conn_send(c, p);
	reactor_timer_add(c->r, &c->nop_timer, c->nop_interval_ms,
			  conn_nop_timer, c);
}

void iscsi_conn_start_nop(struct iscsi_conn *c)
{
	reactor_timer_del(c->r, &c->login_timer);
	if (c->nop_interval_ms)
		reactor_timer_add(c->r, &c->nop_timer, c->nop_interval_ms,
				  conn_nop_timer, c);
}

/* ---- lifetime ---- */

static void sockaddr_text(const struct sockaddr_storage *ss, char *buf,
			  size_t len, bool with_port)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		port = ntohs(s4->sin_port);
		snprintf(buf, len, with_port ? "%s:%u" : "%s", ip, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		port = ntohs(s6->sin6_port);
		if (with_port)
			snprintf(buf, len, "[%s]:%u", ip, port);
		else
			snprintf(buf, len, "%s", ip);
	} else {
		snprintf(buf, len, "?");
	}
}

struct iscsi_conn *iscsi_conn_new(struct reactor *r, int fd,
				  const char *advertise)
{
	struct iscsi_conn *c = xzalloc(sizeof(*c));
	socklen_t len = sizeof(c->peer);
	int one = 1;

	c->fd = fd;
	c->r = r;
	c->id = atomic_fetch_add(&conn_ids, 1) + 1;
	iscsi_conn_set_state(c, CONN_STATE_LOGIN);	/* from NEW (zeroed) */
	list_init(&c->txq);
	list_init(&c->tasks);
	list_init(&c->reinstate_waiters);
	c->max_send_dsl = 8192;	/* RFC default until declared */
	c->max_recv_dsl = 8192;
	c->next_ttt = 0x10;
	snprintf(c->advertise, sizeof(c->advertise), "%s",
		 advertise ? advertise : "");
	getpeername(fd, (struct sockaddr *)&c->peer, &len);
	len = sizeof(c->local);
	getsockname(fd, (struct sockaddr *)&c->local, &len);
	sockaddr_text(&c->peer, c->peer_str, sizeof(c->peer_str), false);
	sockaddr_text(&c->local, c->local_str, sizeof(c->local_str), true);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (reactor_fd_add(r, &c->w, fd, EPOLLIN, conn_rx_ready, c) < 0) {
		free(c);
		return NULL;
	}
	if (LIMIT(login_timeout_ms))
		reactor_timer_add(r, &c->login_timer, LIMIT(login_timeout_ms),
				  conn_login_timeout, c);
	log_debug("conn %lu: new connection from %s to %s",
		  (unsigned long)c->id, c->peer_str, c->local_str);
	return c;
}

static void conn_free_deferred(void *arg)
{
	struct iscsi_conn *c = arg;
	struct iscsi_pdu *p, *n;

	list_for_each_entry_safe(p, n, &c->txq, link) {
		list_del(&p->link);
		iscsi_pdu_free(p);
	}
	conn_rx_reset(c);
	if (c->login_rsp_held)
		iscsi_pdu_free(c->login_rsp_held);
	if (c->sess) {
		/* listed until now so a reinstating login could wait for
		 * every task of this session to be gone */
		iscsi_session_unregister(c->sess);
		iscsi_session_reinstate_notify(c);
		if (c->sess->target) {
			atomic_fetch_sub(&c->sess->target->nr_sessions, 1);
			tgt_put(c->sess->target);
		}
		free(c->sess->lun_stats);
		free(c->sess);
	}
	iscsi_login_free(c);
	free(c->text_rsp);
	free(c->rxbuf);
	if (c->portal_count)
		iscsi_portal_count_put(c->portal_count);
	log_debug("conn %lu: freed", (unsigned long)c->id);
	free(c);
	iscsi_conn_freed();
}

static void conn_maybe_free(struct iscsi_conn *c)
{
	if (c->ntasks || c->free_scheduled)
		return;
	/* Free after the current callback: callers up the stack may still
	 * hold c. */
	c->free_scheduled = true;
	if (reactor_call(c->r, conn_free_deferred, c) < 0)
		c->free_scheduled = false;	/* leak rather than crash */
}

/* Best effort, once, without blocking: what this loop turn queued (a
 * Reject before a dropped connection, say) goes out before the close, as
 * it did when every PDU was sent at once. */
static void conn_tx_last(struct iscsi_conn *c)
{
	struct iovec iov[64];
	int n;

	if (c->tx_blocked || list_empty(&c->txq))
		return;
	n = conn_tx_iov(c, iov, (int)ARRAY_SIZE(iov));
	if (n > 0) {
		ssize_t w = writev(c->fd, iov, n);

		(void)w;	/* closing either way */
	}
}

void iscsi_conn_close(struct iscsi_conn *c, const char *why)
{
	struct iscsi_pdu *p, *n;

	if (c->state == CONN_STATE_CLOSING)
		return;
	conn_tx_last(c);
	if (c->sess && !c->sess->discovery)
		log_info("conn %lu (%s, %s): closed: %s", (unsigned long)c->id,
			 c->peer_str, c->sess->initiator_name, why);
	else
		log_debug("conn %lu (%s): closed: %s", (unsigned long)c->id,
			  c->peer_str, why);
	iscsi_conn_set_state(c, CONN_STATE_CLOSING);
	if (c->rx_task_new && c->rx_task) {
		/* a command whose PDU never completed: nobody else knows it */
		struct iscsi_task *t = c->rx_task;

		c->rx_task = NULL;
		c->rx_task_new = false;
		iscsi_task_put(t);
	}
	reactor_fd_del(&c->w);
	close(c->fd);
	c->fd = -1;
	reactor_timer_del(c->r, &c->login_timer);
	reactor_timer_del(c->r, &c->nop_timer);
	reactor_timer_del(c->r, &c->defer_timer);
	reactor_timer_del(c->r, &c->flush_timer);
	reactor_timer_del(c->r, &c->reinstate_timer);
	reactor_timer_del(c->r, &c->idle_timer);
	list_for_each_entry_safe(p, n, &c->txq, link) {
		list_del(&p->link);
		iscsi_pdu_free(p);
	}
	if (c->login_rsp_held) {	/* died in REINSTATE: never answered */
		iscsi_pdu_free(c->login_rsp_held);
		c->login_rsp_held = NULL;
	}
	if (c->sess)
		iscsi_session_closing(c->sess);
	/* I_T nexus loss ends SPC-2 reservations (SPC-2 5.5.1) */
	if (c->sess && !c->sess->discovery && c->sess->target)
		scsi_nexus_lost(c->sess->target, &c->sess->nexus);
	/* executing tasks finish in the SCSI layer and then free c */
	iscsi_conn_abort_tasks(c);
	conn_maybe_free(c);
}

static void conn_flush_timeout(struct ev_timer *t)
{
	struct iscsi_conn *c = t->arg;

	if (c->state == CONN_STATE_FLUSH)
		iscsi_conn_close(c, "peer did not read the last answer");
}

void iscsi_conn_close_after_send(struct iscsi_conn *c, const char *why)
{
	if (c->state == CONN_STATE_CLOSING)
		return;		/* e.g. the send itself failed */
	if (c->state != CONN_STATE_FLUSH) {
		if (iscsi_conn_set_state(c, CONN_STATE_FLUSH) < 0)
			return;
		c->flush_why = why;
		if (c->tx_blocked)	/* stop waking up for input */
			reactor_fd_mod(&c->w, conn_tx_wait_events(c));
		/* a peer that never reads must not keep us forever */
		if (!list_empty(&c->txq))
			reactor_timer_add(c->r, &c->flush_timer,
					  ISCSI_FLUSH_TIMEOUT_MS,
					  conn_flush_timeout, c);
	}
	/* conn_tx_flush() closes when it empties the queue; if it already
	 * has, nothing else would */
	if (list_empty(&c->txq))
		iscsi_conn_close(c, c->flush_why);
}

void iscsi_conn_task_gone(struct iscsi_conn *c)
{
	if (c->state == CONN_STATE_CLOSING)
		conn_maybe_free(c);
}
