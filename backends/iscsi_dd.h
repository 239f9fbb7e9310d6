/* iscsi_dd.h - the CRC32C data digest for gateway LUNs (backend "iscsi").
 *
 * libiscsi 1.19 offers DataDigest=None in every login and has no setting
 * for it.  With data_digest = "crc32c" the backend points libiscsi at a
 * loopback port of its own (127.0.0.1, an ephemeral port) and this relay
 * carries each of libiscsi's connections to the SAN portal the backend is
 * trying, PDU by PDU (RFC 7143 11.2):
 *
 *   login phase   libiscsi -> SAN: DataDigest=<anything> becomes
 *                 DataDigest=CRC32C (DataSegmentLength and padding fixed);
 *                 SAN -> libiscsi: the SAN's DataDigest answer is noted and
 *                 becomes DataDigest=None; its HeaderDigest answer is noted
 *                 (a 4-byte header digest follows BHS + AHS after login).
 *                 CRC32C is required: a SAN that answers anything else, a
 *                 login redirect, or continued login text ends the
 *                 connection with an error saying so.
 *   full feature  from the PDU after the final Login Response on, both
 *                 ways: libiscsi -> SAN gets a CRC32C appended to every
 *                 data segment; SAN -> libiscsi has it checked and removed.
 *                 A mismatch is counted and ends the connection (ERL 0):
 *                 libiscsi sees a lost connection and the backend's
 *                 reconnect and the hang engine's retry take over.
 *
 * Two parts: the codec (one PDU in, one PDU out; pure, unit tested and
 * fuzzed) and the relay (sockets, an epoll fd of its own that the caller
 * watches for readability and then calls iscsi_dd_service(); never
 * blocks). */
#ifndef HOLDFAST_ISCSI_DD_H
#define HOLDFAST_ISCSI_DD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ISCSI_DD_BHS 48
#define ISCSI_DD_GROW 16	/* a PDU grows by at most this much */
#define ISCSI_DD_ERR_LEN 200

/* ---- codec: the state of one relayed connection ---- */
struct iscsi_dd_codec {
	bool ffp;		/* full feature phase: digests on */
	bool hd;		/* the SAN answered HeaderDigest=CRC32C */
	bool dd_offered;	/* DataDigest=CRC32C went to the SAN */
	int dd_answer;		/* -1 not yet, 0 not CRC32C, 1 CRC32C */
	char dd_answer_text[16];
	uint64_t digest_errors;	/* data digest mismatches from the SAN */
	char err[ISCSI_DD_ERR_LEN];	/* why the last call returned -1 */
};

void iscsi_dd_codec_init(struct iscsi_dd_codec *c);

/* The bytes the PDU at the start of buf takes as it arrives from the SAN
 * (from_san) or from libiscsi: 0 while len is too short to tell. */
size_t iscsi_dd_pdu_len(const struct iscsi_dd_codec *c, bool from_san,
			const uint8_t *buf, size_t len);

/* One whole PDU (in_len = iscsi_dd_pdu_len()) into what goes out on the
 * other side; out has room for in_len + ISCSI_DD_GROW bytes.  The output
 * length, or -1 with c->err set (a digest mismatch also counts). */
long iscsi_dd_pdu(struct iscsi_dd_codec *c, bool from_san,
		  const uint8_t *in, size_t in_len, uint8_t *out);

/* The same for a PDU after login, without copying it: the output is the
 * input with the 4 bytes of dig appended (to the SAN, data segment
 * present), or without its last 4 bytes (from the SAN: the digest,
 * checked), or the input as it is; its length is returned, or -1. */
long iscsi_dd_ffp_pdu(struct iscsi_dd_codec *c, bool from_san,
		      const uint8_t *in, size_t in_len, uint8_t dig[4]);

/* ---- relay ---- */
struct iscsi_dd;

/* A relay listening on 127.0.0.1 (ephemeral port); name is for the log.
 * NULL with *errmsg on failure. */
struct iscsi_dd *iscsi_dd_new(const char *name, const char **errmsg);
void iscsi_dd_free(struct iscsi_dd *d);
/* The fd to watch (readable: call iscsi_dd_service). */
int iscsi_dd_fd(const struct iscsi_dd *d);
/* "127.0.0.1:PORT": where libiscsi connects. */
const char *iscsi_dd_addr(const struct iscsi_dd *d);
/* libiscsi has just started connecting on its socket lfd: the one
 * connection accepted from that socket is relayed to portal ("host:port",
 * "[v6]:port").  Ends the connection relayed before, if any. */
void iscsi_dd_expect(struct iscsi_dd *d, const char *portal, int lfd);
/* Do what is ready, without blocking. */
void iscsi_dd_service(struct iscsi_dd *d);
/* End the relayed connection: both sockets closed abortively (RST). */
void iscsi_dd_reset(struct iscsi_dd *d);
/* The error that ended the last relayed connection (cleared by reading). */
bool iscsi_dd_take_error(struct iscsi_dd *d, char *buf, size_t len);
/* Data digest errors so far, and whether the connection relayed now has
 * CRC32C data digests on (logged in through the relay). */
uint64_t iscsi_dd_errors(const struct iscsi_dd *d);
bool iscsi_dd_active(const struct iscsi_dd *d);

#endif
