/* iscsi_dd.c - the CRC32C data digest relay for gateway LUNs (iscsi_dd.h).
 *
 * Threads: a relay belongs to its backend's session reactor (or the
 * thread running open() before there is one), like the libiscsi context
 * it serves; digest_errors and the active flag are read by show from any
 * thread (atomics). */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "crc32c.h"
#include "iscsi_dd.h"
#include "util.h"

#define OP_LOGIN_REQ 0x03
#define OP_LOGIN_RSP 0x23
#define FLAG_T 0x80
#define FLAG_C 0x40
#define STAGE_FFP 3
#define STATUS_REDIRECT 1
#define DD_MAX_DSL 0xffffffu

/* ---- codec ---- */

void iscsi_dd_codec_init(struct iscsi_dd_codec *c)
{
	memset(c, 0, sizeof(*c));
	c->dd_answer = -1;
}

static uint32_t dd_dsl(const uint8_t *bhs)
{
	return (uint32_t)bhs[5] << 16 | (uint32_t)bhs[6] << 8 | bhs[7];
}

static size_t dd_pad(size_t n)
{
	return (4 - (n & 3)) & 3;
}

static size_t dd_hdr_len(const struct iscsi_dd_codec *c, const uint8_t *bhs)
{
	return ISCSI_DD_BHS + (size_t)bhs[4] * 4 + (c->ffp && c->hd ? 4 : 0);
}

size_t iscsi_dd_pdu_len(const struct iscsi_dd_codec *c, bool from_san,
			const uint8_t *buf, size_t len)
{
	uint32_t dsl;

	if (len < ISCSI_DD_BHS)
		return 0;
	dsl = dd_dsl(buf);
	return dd_hdr_len(c, buf) + dsl + dd_pad(dsl) +
	       (c->ffp && from_san && dsl ? 4 : 0);
}

static void dd_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* Copy value (n bytes) into dst (cap with its NUL), printable only. */
static void dd_note(char *dst, size_t cap, const char *v, size_t n)
{
	size_t i;

	for (i = 0; i < n && i + 1 < cap; i++)
		dst[i] = v[i] >= 0x20 && v[i] < 0x7f ? v[i] : '?';
	dst[i] = '\0';
}

static bool dd_key(const char *item, size_t n, const char *key, size_t *vlen)
{
	size_t k = strlen(key);

	if (n < k + 1 || memcmp(item, key, k) != 0 || item[k] != '=')
		return false;
	*vlen = n - k - 1;
	return true;
}

/* A Login Request (libiscsi -> SAN) or Login Response (SAN -> libiscsi):
 * rewrite DataDigest, note the SAN's digest answers, fix the length. */
static long dd_login(struct iscsi_dd_codec *c, bool from_san,
		     const uint8_t *in, size_t hdr, uint8_t *out)
{
	uint32_t dsl = dd_dsl(in);
	const char *text = (const char *)in + hdr;
	size_t o = hdr, pos = 0;
	bool rewrote = false;

	if (in[1] & FLAG_C) {
		snprintf(c->err, sizeof(c->err), "continued login text (C bit) "
			 "is not supported by the data digest relay");
		return -1;
	}
	if (from_san && in[36] == STATUS_REDIRECT) {
		char where[64] = "?";

		while (pos < dsl) {
			const char *it = text + pos;
			const char *nul = memchr(it, '\0', dsl - pos);
			size_t n = nul ? (size_t)(nul - it) : dsl - pos, vl;

			if (dd_key(it, n, "TargetAddress", &vl))
				dd_note(where, sizeof(where), it + n - vl, vl);
			pos += n + 1;
		}
		snprintf(c->err, sizeof(c->err), "the SAN redirects the login to "
			 "%s: the data digest relay does not follow redirects "
			 "(list that portal instead)", where);
		return -1;
	}
	memcpy(out, in, hdr);
	while (pos < dsl) {
		const char *it = text + pos;
		const char *nul = memchr(it, '\0', dsl - pos);
		size_t n = nul ? (size_t)(nul - it) : dsl - pos, vl;
		const char *put = it;
		size_t put_n = n;
		char item[32];

		if (dd_key(it, n, "DataDigest", &vl)) {
			if (rewrote) {
				snprintf(c->err, sizeof(c->err),
					 "DataDigest twice in one login PDU");
				return -1;
			}
			rewrote = true;
			if (from_san) {
				dd_note(c->dd_answer_text,
					sizeof(c->dd_answer_text), it + n - vl, vl);
				c->dd_answer = vl == 6 &&
					       memcmp(it + n - vl, "CRC32C", 6) == 0;
				put = "DataDigest=None";
			} else {
				c->dd_offered = true;
				put = "DataDigest=CRC32C";
			}
			put_n = strlen(put);
			memcpy(item, put, put_n);
			put = item;
		} else if (from_san && dd_key(it, n, "HeaderDigest", &vl)) {
			c->hd = vl == 6 && memcmp(it + n - vl, "CRC32C", 6) == 0;
		}
		memcpy(out + o, put, put_n);
		o += put_n;
		if (nul)
			out[o++] = '\0';
		pos += n + 1;
	}
	dsl = (uint32_t)(o - hdr);
	out[5] = (uint8_t)(dsl >> 16);
	out[6] = (uint8_t)(dsl >> 8);
	out[7] = (uint8_t)dsl;
	memset(out + o, 0, dd_pad(dsl));
	o += dd_pad(dsl);
	/* the final response: full feature phase from the next PDU on */
	if (from_san && in[36] == 0 && (in[1] & FLAG_T) &&
	    (in[1] & 3) == STAGE_FFP) {
		if (c->dd_answer != 1) {
			snprintf(c->err, sizeof(c->err),
				 "the SAN %s%s to DataDigest=CRC32C "
				 "(data_digest = crc32c requires it)",
				 c->dd_answer < 0 ? "gave no answer"
						  : "answered DataDigest=",
				 c->dd_answer < 0 ? "" : c->dd_answer_text);
			return -1;
		}
		c->ffp = true;
	}
	return (long)o;
}

/* A full feature phase PDU (length checked): its output length; a
 * digest to append goes to dig. */
static long dd_ffp(struct iscsi_dd_codec *c, bool from_san, const uint8_t *in,
		   size_t in_len, uint8_t dig[4])
{
	size_t hdr = dd_hdr_len(c, in);
	uint32_t dsl = dd_dsl(in);
	size_t dlen = dsl + dd_pad(dsl);
	uint8_t want[4];

	if (!dsl)
		return (long)in_len;
	if (!from_san) {
		dd_put_le32(dig, crc32c(0, in + hdr, dlen));
		return (long)in_len + 4;
	}
	dd_put_le32(want, crc32c(0, in + hdr, dlen));
	if (memcmp(want, in + hdr + dlen, 4) != 0) {
		c->digest_errors++;
		snprintf(c->err, sizeof(c->err),
			 "data digest error from the SAN (opcode 0x%02x, "
			 "ITT 0x%02x%02x%02x%02x, %u bytes)", in[0] & 0x3f,
			 in[16], in[17], in[18], in[19], dsl);
		return -1;
	}
	return (long)in_len - 4;
}

long iscsi_dd_ffp_pdu(struct iscsi_dd_codec *c, bool from_san,
		      const uint8_t *in, size_t in_len, uint8_t dig[4])
{
	c->err[0] = '\0';
	if (!c->ffp || in_len < ISCSI_DD_BHS ||
	    in_len != iscsi_dd_pdu_len(c, from_san, in, in_len)) {
		snprintf(c->err, sizeof(c->err), "bad PDU length");
		return -1;
	}
	return dd_ffp(c, from_san, in, in_len, dig);
}

long iscsi_dd_pdu(struct iscsi_dd_codec *c, bool from_san,
		  const uint8_t *in, size_t in_len, uint8_t *out)
{
	size_t hdr;
	uint8_t op;

	c->err[0] = '\0';
	if (in_len < ISCSI_DD_BHS ||
	    in_len != iscsi_dd_pdu_len(c, from_san, in, in_len)) {
		snprintf(c->err, sizeof(c->err), "bad PDU length");
		return -1;
	}
	hdr = dd_hdr_len(c, in);
	op = in[0] & 0x3f;
	if (!c->ffp) {
		if ((!from_san && op == OP_LOGIN_REQ) ||
		    (from_san && op == OP_LOGIN_RSP))
			return dd_login(c, from_san, in, hdr, out);
		memcpy(out, in, in_len);
		return (long)in_len;
	}
	{
		uint8_t dig[4];
		long n = dd_ffp(c, from_san, in, in_len, dig);

		if (n < 0)
			return -1;
		memcpy(out, in, MIN((size_t)n, in_len));
		if ((size_t)n > in_len)
			memcpy(out + in_len, dig, 4);
		return n;
	}
}

/* ---- relay ---- */

#define DD_READ_CHUNK (256u * 1024)
#define DD_OUT_HIGH (8u * 1024 * 1024)	/* stop reading the other side */
#define DD_MAX_PDU (ISCSI_DD_BHS + 255 * 4 + 4 + DD_MAX_DSL + 3 + 4)

struct dd_buf {
	uint8_t *p;
	size_t rd, wr, cap;
};

struct dd_side {
	int fd;
	uint32_t events;	/* registered with the epoll fd */
	struct dd_buf in;	/* read from this side, not yet framed */
	struct dd_buf out;	/* to write to this side */
};

struct iscsi_dd {
	char name[96];
	char addr[32];
	int lsn;		/* listening socket */
	int efd;		/* epoll: the listener and both sides */
	char portal[272];
	bool expecting;
	uint16_t expect_port;	/* libiscsi's local port */
	bool san_connecting;
	struct dd_side lib, san;
	struct iscsi_dd_codec codec;
	char err[ISCSI_DD_ERR_LEN];
	_Atomic uint64_t errors;
	_Atomic bool active;
};

static int dd_buf_room(struct dd_buf *b, size_t need)
{
	if (b->rd && (b->rd == b->wr || b->cap - b->wr < need)) {
		memmove(b->p, b->p + b->rd, b->wr - b->rd);
		b->wr -= b->rd;
		b->rd = 0;
	}
	if (b->cap - b->wr < need) {
		size_t cap = MAX(b->cap * 2, b->wr + need);
		uint8_t *p = realloc(b->p, cap);

		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	return 0;
}

static void dd_buf_free(struct dd_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static void dd_close_fd(int *fd)
{
	struct linger abort_close = { .l_onoff = 1, .l_linger = 0 };

	if (*fd < 0)
		return;
	/* abortive: nothing of this connection reaches the SAN later
	 * (iscsi.c's write ordering across reconnects) */
	setsockopt(*fd, SOL_SOCKET, SO_LINGER, &abort_close,
		   sizeof(abort_close));
	close(*fd);
	*fd = -1;
}

static void dd_side_close(struct iscsi_dd *d, struct dd_side *s)
{
	if (s->fd >= 0)
		epoll_ctl(d->efd, EPOLL_CTL_DEL, s->fd, NULL);
	dd_close_fd(&s->fd);
	s->events = 0;
	dd_buf_free(&s->in);
	dd_buf_free(&s->out);
}

void iscsi_dd_reset(struct iscsi_dd *d)
{
	dd_side_close(d, &d->lib);
	dd_side_close(d, &d->san);
	d->san_connecting = false;
	d->expecting = false;
	atomic_store(&d->active, false);
	iscsi_dd_codec_init(&d->codec);
}

static void dd_fail(struct iscsi_dd *d, const char *why)
{
	if (d->lib.fd < 0 && d->san.fd < 0)
		return;
	snprintf(d->err, sizeof(d->err), "%s", why);
	log_warn("%s: data digest relay to %s: %s", d->name, d->portal, why);
	iscsi_dd_reset(d);
}

struct iscsi_dd *iscsi_dd_new(const char *name, const char **errmsg)
{
	struct iscsi_dd *d = calloc(1, sizeof(*d));
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	struct epoll_event ev = { .events = EPOLLIN };

	if (!d) {
		*errmsg = "out of memory";
		return NULL;
	}
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->lib.fd = d->san.fd = -1;
	iscsi_dd_codec_init(&d->codec);
	d->efd = epoll_create1(EPOLL_CLOEXEC);
	d->lsn = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (d->efd < 0 || d->lsn < 0 ||
	    bind(d->lsn, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(d->lsn, 4) < 0 ||
	    getsockname(d->lsn, (struct sockaddr *)&a, &alen) < 0 ||
	    epoll_ctl(d->efd, EPOLL_CTL_ADD, d->lsn, &ev) < 0) {
		*errmsg = "data digest relay: cannot listen on 127.0.0.1";
		if (d->lsn >= 0)
			close(d->lsn);
		if (d->efd >= 0)
			close(d->efd);
		free(d);
		return NULL;
	}
	snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%u",
		 (unsigned)ntohs(a.sin_port));
	return d;
}

void iscsi_dd_free(struct iscsi_dd *d)
{
	if (!d)
		return;
	iscsi_dd_reset(d);
	close(d->lsn);
	close(d->efd);
	free(d);
}

int iscsi_dd_fd(const struct iscsi_dd *d)
{
	return d->efd;
}

const char *iscsi_dd_addr(const struct iscsi_dd *d)
{
	return d->addr;
}

uint64_t iscsi_dd_errors(const struct iscsi_dd *d)
{
	return atomic_load(&d->errors);
}

bool iscsi_dd_active(const struct iscsi_dd *d)
{
	return atomic_load(&d->active);
}

bool iscsi_dd_take_error(struct iscsi_dd *d, char *buf, size_t len)
{
	if (!d->err[0])
		return false;
	snprintf(buf, len, "%s", d->err);
	d->err[0] = '\0';
	return true;
}

void iscsi_dd_expect(struct iscsi_dd *d, const char *portal, int lfd)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);

	iscsi_dd_reset(d);
	d->err[0] = '\0';
	snprintf(d->portal, sizeof(d->portal), "%s", portal);
	d->expecting = true;
	d->expect_port = 0;
	if (lfd >= 0 && getsockname(lfd, (struct sockaddr *)&a, &alen) == 0 &&
	    a.sin_family == AF_INET)
		d->expect_port = ntohs(a.sin_port);
}

static void dd_watch(struct iscsi_dd *d, struct dd_side *s, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = s };

	if (s->fd < 0 || s->events == ev)
		return;
	if (epoll_ctl(d->efd, s->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
		      s->fd, &e) == 0)
		s->events = ev;
}

/* "host:port" / "[v6]:port" -> a non-blocking connect.  The name lookup
 * is numeric first; a host name is looked up like libiscsi would. */
static int dd_connect(struct iscsi_dd *d)
{
	char host[272], *port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	int fd, one = 1;

	snprintf(host, sizeof(host), "%s", d->portal);
	port = strrchr(host, ':');
	if (!port)
		return -EINVAL;
	*port++ = '\0';
	if (host[0] == '[') {
		size_t n = strlen(host);

		if (n < 2 || host[n - 1] != ']')
			return -EINVAL;
		host[n - 1] = '\0';
		memmove(host, host + 1, n - 1);
	}
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res) != 0) {
		hints.ai_flags = AI_NUMERICSERV;
		if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
			return -EHOSTUNREACH;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0) {
		freeaddrinfo(res);
		return -errno;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, res->ai_addr, res->ai_addrlen) < 0 &&
	    errno != EINPROGRESS) {
		int err = errno;

		freeaddrinfo(res);
		close(fd);
		return -err;
	}
	freeaddrinfo(res);
	d->san.fd = fd;
	d->san_connecting = true;
	return 0;
}

static void dd_accept(struct iscsi_dd *d)
{
	for (;;) {
		struct sockaddr_in a;
		socklen_t alen = sizeof(a);
		int fd = accept4(d->lsn, (struct sockaddr *)&a, &alen,
				 SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1, err;

		if (fd < 0)
			return;
		/* only libiscsi's socket of this attempt is relayed */
		if (!d->expecting || a.sin_family != AF_INET ||
		    a.sin_addr.s_addr != htonl(INADDR_LOOPBACK) ||
		    (d->expect_port && ntohs(a.sin_port) != d->expect_port)) {
			close(fd);
			continue;
		}
		d->expecting = false;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		d->lib.fd = fd;
		err = dd_connect(d);
		if (err) {
			char why[320];

			snprintf(why, sizeof(why), "connect to %s: %s", d->portal,
				 strerror(-err));
			dd_fail(d, why);
		}
	}
}

/* Read what s has; false when the connection ended. */
static bool dd_frame(struct iscsi_dd *d, struct dd_side *from,
		     struct dd_side *to, bool from_san);
static bool dd_write(struct iscsi_dd *d, struct dd_side *s, const char *who);

static bool dd_read(struct iscsi_dd *d, struct dd_side *s, const char *who)
{
	char why[160];

	for (size_t got = 0; got < 4 * DD_READ_CHUNK;) {
		ssize_t n;

		if (dd_buf_room(&s->in, DD_READ_CHUNK) < 0) {
			dd_fail(d, "out of memory");
			return false;
		}
		n = read(s->fd, s->in.p + s->in.wr, DD_READ_CHUNK);
		if (n > 0) {
			s->in.wr += (size_t)n;
			got += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		if (s == &d->lib && n == 0) {
			/* libiscsi hung up (the backend dropped the session
			 * or libiscsi gave up on a login): nothing to say */
			iscsi_dd_reset(d);
			return false;
		}
		snprintf(why, sizeof(why), "%s %s", who,
			 n == 0 ? "closed the connection" : strerror(errno));
		/* what the SAN said before it closed (a login reject)
		 * still goes to libiscsi */
		if (s == &d->san && dd_frame(d, &d->san, &d->lib, true))
			dd_write(d, &d->lib, "send to libiscsi");
		dd_fail(d, why);
		return false;
	}
	return true;
}

#define DD_IOV 256

/* Full feature phase with nothing queued for `to`: send the complete
 * PDUs in from->in straight from there (one sendmsg, the digests added
 * or left out by the iovecs), saving the copy into to->out; what the
 * socket does not take is copied there.  -1: the connection failed;
 * 0: no complete PDU; 1: a batch went. */
static int dd_direct(struct iscsi_dd *d, struct dd_side *from,
		     struct dd_side *to, bool from_san)
{
	struct iovec iov[DD_IOV];
	uint8_t dig[DD_IOV / 2][4];
	struct msghdr mh = { .msg_iov = iov };
	size_t pos = from->in.rd, skip;
	int n = 0, ndig = 0;
	ssize_t w;

	while (n + 2 <= DD_IOV) {
		size_t have = from->in.wr - pos;
		size_t need = iscsi_dd_pdu_len(&d->codec, from_san,
					       from->in.p + pos, have);
		uint64_t errs = d->codec.digest_errors;
		long m;

		if (!need || need > have)
			break;
		m = iscsi_dd_ffp_pdu(&d->codec, from_san, from->in.p + pos,
				     need, dig[ndig]);
		if (m < 0) {
			if (d->codec.digest_errors != errs)
				atomic_fetch_add(&d->errors, 1);
			dd_fail(d, d->codec.err);
			return -1;
		}
		iov[n++] = (struct iovec){ from->in.p + pos,
					   MIN((size_t)m, need) };
		if ((size_t)m > need)
			iov[n++] = (struct iovec){ dig[ndig++], 4 };
		pos += need;
	}
	if (!n)
		return 0;
	mh.msg_iovlen = (size_t)n;
	w = sendmsg(to->fd, &mh, MSG_NOSIGNAL);
	if (w < 0) {
		char why[160];

		if (errno != EAGAIN && errno != EINTR) {
			snprintf(why, sizeof(why), "send to %s: %s",
				 to == &d->san ? "the SAN" : "libiscsi",
				 strerror(errno));
			dd_fail(d, why);
			return -1;
		}
		w = 0;
	}
	skip = (size_t)w;
	for (int i = 0; i < n; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		if (dd_buf_room(&to->out, iov[i].iov_len - skip) < 0) {
			dd_fail(d, "out of memory");
			return -1;
		}
		memcpy(to->out.p + to->out.wr, (uint8_t *)iov[i].iov_base + skip,
		       iov[i].iov_len - skip);
		to->out.wr += iov[i].iov_len - skip;
		skip = 0;
	}
	from->in.rd = pos;
	return 1;
}

/* Frame what came from `from` into to->out (or straight to its socket). */
static bool dd_frame(struct iscsi_dd *d, struct dd_side *from,
		     struct dd_side *to, bool from_san)
{
	for (;;) {
		if (d->codec.ffp && to->out.rd == to->out.wr && to->fd >= 0 &&
		    !(to == &d->san && d->san_connecting)) {
			int r = dd_direct(d, from, to, from_san);

			if (r < 0)
				return false;
			if (r == 0)
				return true;
			continue;
		}
		size_t have = from->in.wr - from->in.rd;
		size_t need = iscsi_dd_pdu_len(&d->codec, from_san,
					       from->in.p + from->in.rd, have);
		bool was_ffp = d->codec.ffp;
		uint64_t errs = d->codec.digest_errors;
		long n;

		if (!need || need > have)
			return true;
		if (need > DD_MAX_PDU || dd_buf_room(&to->out, need + ISCSI_DD_GROW) < 0) {
			dd_fail(d, "out of memory");
			return false;
		}
		n = iscsi_dd_pdu(&d->codec, from_san, from->in.p + from->in.rd,
				 need, to->out.p + to->out.wr);
		if (n < 0) {
			if (d->codec.digest_errors != errs)
				atomic_fetch_add(&d->errors, 1);
			dd_fail(d, d->codec.err);
			return false;
		}
		from->in.rd += need;
		to->out.wr += (size_t)n;
		if (!was_ffp && d->codec.ffp)
			atomic_store(&d->active, true);
	}
}

static bool dd_write(struct iscsi_dd *d, struct dd_side *s, const char *who)
{
	char why[160];

	while (s->out.rd < s->out.wr) {
		ssize_t n = send(s->fd, s->out.p + s->out.rd,
				 s->out.wr - s->out.rd, MSG_NOSIGNAL);

		if (n > 0) {
			s->out.rd += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		snprintf(why, sizeof(why), "%s: %s", who, strerror(errno));
		dd_fail(d, why);
		return false;
	}
	s->out.rd = s->out.wr = 0;
	return true;
}

static void dd_pump(struct iscsi_dd *d)
{
	if (d->lib.fd < 0)
		return;
	if (!dd_frame(d, &d->lib, &d->san, false))
		return;
	if (!d->san_connecting && !dd_write(d, &d->san, "send to the SAN"))
		return;
	if (!dd_frame(d, &d->san, &d->lib, true))
		return;
	if (!dd_write(d, &d->lib, "send to libiscsi"))
		return;
	dd_watch(d, &d->lib,
		 (d->san.out.wr - d->san.out.rd < DD_OUT_HIGH ? EPOLLIN : 0) |
		 (d->lib.out.wr > d->lib.out.rd ? EPOLLOUT : 0) | EPOLLRDHUP);
	dd_watch(d, &d->san,
		 d->san_connecting ? EPOLLOUT
		 : (d->lib.out.wr - d->lib.out.rd < DD_OUT_HIGH ? EPOLLIN : 0) |
		   (d->san.out.wr > d->san.out.rd ? EPOLLOUT : 0) | EPOLLRDHUP);
}

void iscsi_dd_service(struct iscsi_dd *d)
{
	struct epoll_event ev[8];
	int n = epoll_wait(d->efd, ev, 8, 0);

	for (int i = 0; i < n; i++) {
		struct dd_side *s = ev[i].data.ptr;

		if (!s) {
			dd_accept(d);
			continue;
		}
		if (s->fd < 0)
			continue;	/* closed by an earlier event */
		if (s == &d->san && d->san_connecting) {
			if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
				int err = 0;
				socklen_t l = sizeof(err);

				getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
				if (err || (ev[i].events & EPOLLHUP)) {
					char why[320];

					snprintf(why, sizeof(why),
						 "connect to %s: %s", d->portal,
						 strerror(err ? err : ECONNREFUSED));
					dd_fail(d, why);
					continue;
				}
				d->san_connecting = false;
			}
			continue;
		}
		if ((ev[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
		    !dd_read(d, s, s == &d->san ? "the SAN" : "libiscsi"))
			continue;
	}
	dd_pump(d);
}
