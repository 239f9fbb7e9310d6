/* fuzz_conn.c - the iSCSI receive path end to end: PDU framing (BHS, AHS,
 * digests, padding), the connection's resumable receive state machine,
 * login (with CHAP on the second target), text, SCSI commands with
 * immediate and solicited data over null LUNs, task management, NOP and
 * logout.
 *
 * An input is a byte stream an initiator sends.  Its first two bytes seed
 * how the stream is cut into writes, so the parser sees PDUs split at
 * every possible point; the rest goes to a real connection (a socketpair
 * on a reactor driven turn by turn).  At the end the peer hangs up and the
 * connection must be freed: a connection that outlives its socket is a
 * leak or a stuck command, reported as a crash. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_env.h"
#include "iscsi.h"
#include "iscsi_internal.h"
#include "reactor.h"

#define FUZZ_CONN_MAX_TURNS 20000
#define FUZZ_CONN_CLOSE_TURNS 400	/* ~3 s: then it is stuck */

static void drain(int fd)
{
	char buf[65536];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* Bytes written by the peer the connection has not read yet. */
static int unread(int fd)
{
	int n = 0;

	if (ioctl(fd, FIONREAD, &n) < 0)
		return 0;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t seed;
	int sv[2], turns = 0;
	size_t off = 2;
	struct iscsi_conn *c;

	if (size < 2)
		return 0;
	fuzz_env_init(true);
	seed = (uint32_t)data[0] << 8 | data[1] | 1u << 16;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
		       sv) < 0)
		abort();
	c = iscsi_conn_new(fuzz_reactor(), sv[0], NULL);
	if (!c)
		abort();
	while (off < size) {
		size_t chunk;

		/* xorshift32: chunk sizes from 1 byte to 8 KiB */
		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		chunk = 1 + (seed % (1u << (1 + seed % 13)));
		if (chunk > size - off)
			chunk = size - off;
		ssize_t n = write(sv[1], data + off, chunk);
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN)
				break;	/* the target hung up */
			n = 0;
		}
		off += (size_t)n;
		/* let the target read it and answer */
		for (int idle = 0; idle < 3 && turns < FUZZ_CONN_MAX_TURNS;
		     turns++) {
			reactor_run_once(fuzz_reactor(), 0);
			drain(sv[1]);
			if (iscsi_conn_count() == 0)
				break;
			idle = unread(sv[0]) ? 0 : idle + 1;
		}
		if (iscsi_conn_count() == 0)
			break;
	}
	close(sv[1]);
	for (turns = 0; iscsi_conn_count() > 0 && turns < FUZZ_CONN_CLOSE_TURNS;
	     turns++)
		reactor_run_once(fuzz_reactor(), turns < 100 ? 0 : 10);
	if (getenv("HOLDFAST_FUZZ_LOG"))
		fprintf(stderr, "fuzz_conn: freed after %d turns\n", turns);
	if (iscsi_conn_count() > 0) {
		fprintf(stderr, "fuzz_conn: connection not freed after the "
				"peer hung up\n");
		abort();
	}
	return 0;
}
