/* fuzz_chap.c - CHAP value decoding and computation (RFC 7143 6.1 binary
 * values, 12.1.3 CHAP): CHAP_A list selection, "0x" hex / "0b" base64
 * decoding of CHAP_C and CHAP_R, responses for every algorithm, hex
 * encoding.  The CHAP exchange inside a login (CHAP_N, CHAP_R, CHAP_I,
 * CHAP_C keys in order or out of order) is fuzzed by fuzz_conn against
 * the fixture's CHAP target.
 *
 * Input: NUL-separated fields: CHAP_A list, a value to decode, a secret,
 * the rest is a challenge. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "iscsi_chap.h"

static const char *field(const uint8_t **p, const uint8_t *end, char *buf,
			 size_t len)
{
	size_t n = 0;

	while (*p < end && **p && n + 1 < len)
		buf[n++] = (char)*(*p)++;
	buf[n] = '\0';
	if (*p < end)
		(*p)++;
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char list[256], text[4096], secret[256], hex[2 * CHAP_MAX_CHALLENGE + 3];
	uint8_t bin[CHAP_MAX_CHALLENGE], bin2[CHAP_MAX_CHALLENGE];
	uint8_t dig[CHAP_MAX_DIGEST];
	const uint8_t *p = data, *end = data + size;
	int alg, n, d;

	field(&p, end, list, sizeof(list));
	field(&p, end, text, sizeof(text));
	field(&p, end, secret, sizeof(secret));
	alg = chap_pick_alg(list);
	if (alg != -1 && (alg < 5 || alg > 8))
		__builtin_trap();
	n = chap_decode(text, bin, sizeof(bin));
	if (n > (int)sizeof(bin))
		__builtin_trap();
	if (n >= 0) {
		chap_encode_hex(bin, (unsigned)n, hex, sizeof(hex));
		/* what we encode decodes to the same bytes */
		if (n > 0 && (chap_decode(hex, bin2, sizeof(bin2)) != n ||
			      memcmp(bin, bin2, (size_t)n) != 0))
			__builtin_trap();
	}
	n = (int)(end - p);
	if (n > CHAP_MAX_CHALLENGE)
		n = CHAP_MAX_CHALLENGE;
	for (int a = 4; a <= 9; a++) {
		d = chap_response(a, (uint8_t)size, secret, p, (unsigned)n, dig);
		if (d > CHAP_MAX_DIGEST)
			__builtin_trap();
		if (d > 0 && !chap_equal(dig, dig, (unsigned)d))
			__builtin_trap();
	}
	return 0;
}
