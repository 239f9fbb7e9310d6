/* iscsi_chap.h - CHAP for iSCSI login (RFC 7143 12.1.3, RFC 1994), with
 * the digests RFC 7143 allows: CHAP_A 5 (MD5), 6 (SHA-1), 7 (SHA-256),
 * 8 (SHA3-256).  Digests and randomness come from OpenSSL. */
#ifndef HOLDFAST_ISCSI_CHAP_H
#define HOLDFAST_ISCSI_CHAP_H

#include <stdbool.h>
#include <stdint.h>

#define CHAP_MAX_DIGEST 32
#define CHAP_MAX_CHALLENGE 1024

enum chap_stage {
	CHAP_NONE,		/* not negotiated */
	CHAP_WAIT_A,		/* AuthMethod=CHAP answered, want CHAP_A */
	CHAP_WAIT_R,		/* challenge sent, want CHAP_N / CHAP_R */
	CHAP_DONE,		/* initiator authenticated */
};

struct chap_state {
	enum chap_stage stage;
	int alg;		/* CHAP_A value in use */
	uint8_t id;
	uint8_t challenge[CHAP_MAX_DIGEST];
	unsigned challenge_len;
};

/* Pick the strongest algorithm we support from the initiator's CHAP_A
 * list ("7,6,5").  Returns the value or -1 if none is acceptable. */
int chap_pick_alg(const char *list);

/* Fill a fresh random identifier and challenge.  0 / -EIO. */
int chap_new_challenge(struct chap_state *cs);

/* Compute H(id || secret || challenge) into out; returns the digest
 * length or -EINVAL. */
int chap_response(int alg, uint8_t id, const char *secret,
		  const uint8_t *challenge, unsigned challenge_len,
		  uint8_t *out);

/* Decode "0x..." hex or "0b..." base64 (RFC 7143 6.1 binary values).
 * Returns the length or -EINVAL. */
int chap_decode(const char *text, uint8_t *out, unsigned max);
/* Encode as "0x" + hex into out. */
void chap_encode_hex(const uint8_t *in, unsigned len, char *out,
		     unsigned outlen);

/* Constant-time comparison of two digests. */
bool chap_equal(const uint8_t *a, const uint8_t *b, unsigned len);

#endif
