/* test_iscsi_dd.c - the data digest relay's codec (backends/iscsi_dd.c):
 * PDU framing before and after login (AHS, header digest, padding, data
 * digest), the DataDigest rewrite both ways with the length and padding
 * fixed, the SAN's answers noted, the refusals (SAN answers None, login
 * redirect, continued text), digests added, checked and stripped; and the
 * relay itself carrying a login and a digested PDU over loopback. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/time.h>
#include <unistd.h>

#include "check.h"
#include "crc32c.h"
#include "iscsi_dd.h"

static uint8_t in[8192], out[8192 + ISCSI_DD_GROW];

/* A PDU: opcode, flags, AHS words, data (len bytes), padded; with hd a
 * zeroed header digest, with dd a data digest (correct unless bad). */
static size_t pdu(uint8_t *b, uint8_t op, uint8_t flags, unsigned ahs,
		  const void *data, size_t len, bool hd, bool dd, bool bad)
{
	size_t o = 48 + ahs * 4 + (hd ? 4 : 0);

	memset(b, 0, o);
	b[0] = op;
	b[1] = flags;
	b[4] = (uint8_t)ahs;
	b[5] = (uint8_t)(len >> 16);
	b[6] = (uint8_t)(len >> 8);
	b[7] = (uint8_t)len;
	b[16] = 0xab;
	if (len)
		memcpy(b + o, data, len);
	o += len;
	while (o & 3)
		b[o++] = 0;
	if (dd && len) {
		uint32_t crc = crc32c(0, b + 48 + ahs * 4 + (hd ? 4 : 0),
				      (len + 3) & ~(size_t)3);

		if (bad)
			crc ^= 1;
		memcpy(b + o, &crc, 4);	/* little endian (x86, arm64) */
		o += 4;
	}
	return o;
}

static uint32_t dsl(const uint8_t *b)
{
	return (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7];
}

static const char req_text[] = "InitiatorName=iqn.x\0HeaderDigest=CRC32C,None\0"
			       "DataDigest=None\0MaxRecvDataSegmentLength=262144";
static const char rsp_text[] = "HeaderDigest=CRC32C\0DataDigest=CRC32C\0"
			       "MaxRecvDataSegmentLength=65536\0";

/* Login to full feature phase through the codec. */
static void login(struct iscsi_dd_codec *c)
{
	size_t n = pdu(in, 0x43, 0x87, 0, req_text, sizeof(req_text) - 1,
		       false, false, false);
	long m;

	iscsi_dd_codec_init(c);
	CHECK(iscsi_dd_pdu_len(c, false, in, 47) == 0);
	CHECK(iscsi_dd_pdu_len(c, false, in, n) == n);
	m = iscsi_dd_pdu(c, false, in, n, out);
	CHECK(m == (long)n + 4, "%ld %zu", m, n);	/* +2, padded */
	CHECK(dsl(out) == sizeof(req_text) - 1 + 2, "%u", dsl(out));
	CHECK(memmem(out + 48, dsl(out), "DataDigest=CRC32C\0", 18) != NULL);
	CHECK(memmem(out + 48, dsl(out), "DataDigest=None", 15) == NULL);
	CHECK(memcmp(out + 48 + dsl(out) - 31,
		     "MaxRecvDataSegmentLength=262144", 31) == 0);
	CHECK(out[48 + dsl(out)] == 0 && (m & 3) == 0);
	CHECK(c->dd_offered && !c->ffp);

	n = pdu(in, 0x23, 0x87, 0, rsp_text, sizeof(rsp_text) - 1, false,
		false, false);
	m = iscsi_dd_pdu(c, true, in, n, out);
	CHECK(m > 0 && dsl(out) == sizeof(rsp_text) - 1 - 2, "%ld", m);
	CHECK(memmem(out + 48, dsl(out), "DataDigest=None\0", 16) != NULL);
	CHECK(c->ffp && c->hd && c->dd_answer == 1);
}

static void test_login_and_ffp(void)
{
	struct iscsi_dd_codec c;
	uint8_t data[1001];
	size_t n;
	long m;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	login(&c);
	/* to the SAN: a SCSI Command with 1001 bytes of immediate data and
	 * one AHS word; the header digest is libiscsi's, passed on */
	n = pdu(in, 0x01, 0x80, 1, data, sizeof(data), true, false, false);
	CHECK(iscsi_dd_pdu_len(&c, false, in, 48) == n, "%zu",
	      iscsi_dd_pdu_len(&c, false, in, 48));
	m = iscsi_dd_pdu(&c, false, in, n, out);
	CHECK(m == (long)n + 4);
	pdu(in, 0x01, 0x80, 1, data, sizeof(data), true, true, false);
	CHECK(memcmp(out, in, n + 4) == 0);
	/* no data: nothing added */
	n = pdu(in, 0x00, 0x80, 0, NULL, 0, true, false, false);
	CHECK(iscsi_dd_pdu(&c, false, in, n, out) == (long)n && n == 52);
	/* from the SAN: a Data-In with its digest, checked and stripped */
	n = pdu(in, 0x25, 0x80, 0, data, sizeof(data), true, true, false);
	CHECK(iscsi_dd_pdu_len(&c, true, in, 48) == n);
	m = iscsi_dd_pdu(&c, true, in, n, out);
	CHECK(m == (long)n - 4 && memcmp(out, in, n - 4) == 0);
	CHECK(c.digest_errors == 0);
	/* one bit off: refused and counted */
	n = pdu(in, 0x25, 0x80, 0, data, sizeof(data), true, true, false);
	in[52 + 500] ^= 0x10;
	CHECK(iscsi_dd_pdu(&c, true, in, n, out) == -1);
	CHECK(c.digest_errors == 1 && strstr(c.err, "data digest error"),
	      "%s", c.err);
	n = pdu(in, 0x25, 0x80, 0, data, sizeof(data), true, true, true);
	CHECK(iscsi_dd_pdu(&c, true, in, n, out) == -1 && c.digest_errors == 2);
	/* a wrong length is refused */
	CHECK(iscsi_dd_pdu(&c, true, in, n - 1, out) == -1);
}

static void test_refusals(void)
{
	struct iscsi_dd_codec c;
	static const char none[] = "DataDigest=None\0HeaderDigest=None\0";
	static const char redir[] = "TargetAddress=192.0.2.9:3260,1\0";
	size_t n;

	/* the SAN answers None: the final response is refused */
	iscsi_dd_codec_init(&c);
	n = pdu(in, 0x23, 0x87, 0, none, sizeof(none) - 1, false, false, false);
	CHECK(iscsi_dd_pdu(&c, true, in, n, out) == -1);
	CHECK(strstr(c.err, "answered DataDigest=None") && !c.ffp, "%s", c.err);
	/* a non-final response with None: noted, refused at the end */
	iscsi_dd_codec_init(&c);
	n = pdu(in, 0x23, 0x00, 0, none, sizeof(none) - 1, false, false, false);
	CHECK(iscsi_dd_pdu(&c, true, in, n, out) > 0 && c.dd_answer == 0);
	n = pdu(in, 0x23, 0x87, 0, "", 0, false, false, false);
	CHECK(iscsi_dd_pdu(&c, true, in, n, out) == -1);
	/* no answer at all */
	iscsi_dd_codec_init(&c);
	CHECK(iscsi_dd_pdu(&c, true, in, n, out) == -1 &&
	      strstr(c.err, "no answer"), "%s", c.err);
	/* a redirect */
	iscsi_dd_codec_init(&c);
	n = pdu(in, 0x23, 0x00, 0, redir, sizeof(redir) - 1, false, false,
		false);
	in[36] = 1;
	CHECK(iscsi_dd_pdu(&c, true, in, n, out) == -1);
	CHECK(strstr(c.err, "redirects the login to 192.0.2.9:3260,1"), "%s",
	      c.err);
	/* a failed login (status class 2) passes, libiscsi reports it */
	iscsi_dd_codec_init(&c);
	n = pdu(in, 0x23, 0x00, 0, none, sizeof(none) - 1, false, false, false);
	in[36] = 2;
	CHECK(iscsi_dd_pdu(&c, true, in, n, out) > 0);
	/* continued text */
	iscsi_dd_codec_init(&c);
	n = pdu(in, 0x43, 0x40, 0, req_text, 10, false, false, false);
	CHECK(iscsi_dd_pdu(&c, false, in, n, out) == -1);
	/* DataDigest twice */
	n = pdu(in, 0x43, 0x00, 0, "DataDigest=None\0DataDigest=None", 31,
		false, false, false);
	CHECK(iscsi_dd_pdu(&c, false, in, n, out) == -1);
	/* other PDUs before login pass as they are */
	n = pdu(in, 0x3f, 0x00, 0, "xyz", 3, false, false, false);
	CHECK(iscsi_dd_pdu(&c, false, in, n, out) == (long)n &&
	      memcmp(in, out, n) == 0);
}

/* The relay over loopback: a fake libiscsi and a fake SAN. */
static int rd_exact(int fd, uint8_t *b, size_t n, struct iscsi_dd *d)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
				       { .fd = iscsi_dd_fd(d), .events = POLLIN } };
		ssize_t r;

		if (poll(p, 2, 2000) <= 0)
			return -1;
		if (p[1].revents)
			iscsi_dd_service(d);
		if (!(p[0].revents & POLLIN))
			continue;
		r = read(fd, b + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* The peer closed (EOF or RST), not just quiet for 2 s. */
static bool closed(int fd)
{
	struct timeval tv = { .tv_sec = 2 };
	uint8_t b[256];
	ssize_t r;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	do
		r = read(fd, b, sizeof(b));
	while (r > 0);
	return r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

static void pump(struct iscsi_dd *d, int ms)
{
	struct pollfd p = { .fd = iscsi_dd_fd(d), .events = POLLIN };

	while (poll(&p, 1, ms) > 0)
		iscsi_dd_service(d);
}

static void test_relay(void)
{
	const char *err = NULL;
	struct iscsi_dd *d = iscsi_dd_new("test", &err);
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int san_l, san = -1, lib;
	char portal[64], why[256];
	uint8_t buf[4096], data[100];
	size_t n;

	CHECK(d != NULL, "%s", err);
	if (!d)
		return;
	CHECK(strncmp(iscsi_dd_addr(d), "127.0.0.1:", 10) == 0);
	san_l = socket(AF_INET, SOCK_STREAM, 0);
	bind(san_l, (struct sockaddr *)&a, sizeof(a));
	listen(san_l, 1);
	getsockname(san_l, (struct sockaddr *)&a, &alen);
	snprintf(portal, sizeof(portal), "127.0.0.1:%u", ntohs(a.sin_port));
	/* "libiscsi" connects to the relay */
	lib = socket(AF_INET, SOCK_STREAM, 0);
	sscanf(strchr(iscsi_dd_addr(d), ':') + 1, "%hu", &a.sin_port);
	a.sin_port = htons(a.sin_port);
	CHECK(connect(lib, (struct sockaddr *)&a, sizeof(a)) == 0);
	iscsi_dd_expect(d, portal, lib);
	pump(d, 50);
	san = accept(san_l, NULL, NULL);
	CHECK(san >= 0);
	n = pdu(in, 0x43, 0x87, 0, req_text, sizeof(req_text) - 1, false,
		false, false);
	CHECK(write(lib, in, n) == (ssize_t)n);
	CHECK(rd_exact(san, buf, n + 4, d) == 0);
	CHECK(memmem(buf + 48, dsl(buf), "DataDigest=CRC32C", 17) != NULL);
	n = pdu(in, 0x23, 0x87, 0, rsp_text, sizeof(rsp_text) - 1, false,
		false, false);
	CHECK(write(san, in, n) == (ssize_t)n);
	CHECK(rd_exact(lib, buf, n - 4, d) == 0);
	CHECK(iscsi_dd_active(d));
	/* full feature phase: header digests on (the SAN said so) */
	memset(data, 0x42, sizeof(data));
	n = pdu(in, 0x01, 0x80, 0, data, sizeof(data), true, false, false);
	CHECK(write(lib, in, n) == (ssize_t)n);
	CHECK(rd_exact(san, buf, n + 4, d) == 0);
	pdu(in, 0x01, 0x80, 0, data, sizeof(data), true, true, false);
	CHECK(memcmp(buf, in, n + 4) == 0);
	n = pdu(in, 0x25, 0x80, 0, data, sizeof(data), true, true, false);
	CHECK(write(san, in, n) == (ssize_t)n);
	CHECK(rd_exact(lib, buf, n - 4, d) == 0 && memcmp(buf, in, n - 4) == 0);
	/* a bad digest: counted, both connections closed */
	n = pdu(in, 0x25, 0x80, 0, data, sizeof(data), true, true, true);
	CHECK(write(san, in, n) == (ssize_t)n);
	pump(d, 100);
	CHECK(iscsi_dd_errors(d) == 1 && !iscsi_dd_active(d));
	CHECK(closed(lib));
	CHECK(closed(san));
	CHECK(iscsi_dd_take_error(d, why, sizeof(why)) &&
	      strstr(why, "data digest error"), "%s", why);
	CHECK(!iscsi_dd_take_error(d, why, sizeof(why)));
	/* a connection that is not libiscsi's expected one is refused */
	close(lib);
	lib = socket(AF_INET, SOCK_STREAM, 0);
	connect(lib, (struct sockaddr *)&a, sizeof(a));
	pump(d, 50);
	CHECK(closed(lib));
	close(lib);
	close(san);
	close(san_l);
	iscsi_dd_free(d);
}

int main(void)
{
	test_login_and_ffp();
	test_refusals();
	test_relay();
	return CHECK_SUMMARY("test_iscsi_dd");
}
