/* fuzz_iscsi_dd.c - the gateway's data digest relay codec
 * (backends/iscsi_dd.c): PDU framing both ways before and after login
 * (AHS, header digest, padding, data digest), the login text rewrite of
 * DataDigest with its length and padding, the SAN's answers, refusals.
 *
 * Input: records of one direction byte (bit 0: from the SAN) and one PDU
 * as that direction frames it now; the stream stops at a PDU that does
 * not fit.  Checks: a refusal says why; an output is never larger than
 * promised and is framed as its direction's peer will read it; after
 * login, what goes to the SAN carries a digest that the SAN-side check
 * of a second codec accepts, giving back the input, and the relay's
 * copy-free path (iscsi_dd_ffp_pdu) agrees with the copying one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi_dd.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static size_t out_len_expected(const struct iscsi_dd_codec *before,
			       bool from_san, const uint8_t *o)
{
	size_t dsl = (size_t)o[5] << 16 | (size_t)o[6] << 8 | o[7];

	return 48 + (size_t)o[4] * 4 + (before->ffp && before->hd ? 4 : 0) +
	       dsl + ((4 - (dsl & 3)) & 3) +
	       (before->ffp && !from_san && dsl ? 4 : 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct iscsi_dd_codec c;
	const uint8_t *p = data, *end = data + size;

	iscsi_dd_codec_init(&c);
	while (p < end) {
		bool from_san = *p++ & 1;
		size_t have = (size_t)(end - p);
		size_t need = iscsi_dd_pdu_len(&c, from_san, p, have);
		struct iscsi_dd_codec before = c;
		uint8_t *in, *out;
		long r;

		if (!need || need > have)
			break;
		/* exact-size copies: ASan sees any read or write past them */
		in = malloc(need);
		out = malloc(need + ISCSI_DD_GROW);
		if (!in || !out)
			__builtin_trap();
		memcpy(in, p, need);
		p += need;
		if (c.ffp) {
			/* the relay's copy-free path must say the same */
			struct iscsi_dd_codec f = c;
			uint8_t dig[4];
			long q = iscsi_dd_ffp_pdu(&f, from_san, in, need, dig);

			r = iscsi_dd_pdu(&c, from_san, in, need, out);
			if (q != r || f.digest_errors != c.digest_errors ||
			    (r > 0 &&
			     (memcmp(out, in, MIN((size_t)r, need)) != 0 ||
			      ((size_t)r > need && memcmp(out + need, dig, 4)))))
				__builtin_trap();
		} else {
			r = iscsi_dd_pdu(&c, from_san, in, need, out);
		}
		if (r < 0) {
			if (!c.err[0])
				__builtin_trap();
			free(in);
			free(out);
			break;		/* the relay drops the connection */
		}
		if ((size_t)r < 48 || (size_t)r > need + ISCSI_DD_GROW ||
		    (size_t)r != out_len_expected(&before, from_san, out))
			__builtin_trap();
		if (before.ffp && !from_san) {
			struct iscsi_dd_codec san;
			uint8_t *back = malloc((size_t)r + ISCSI_DD_GROW);

			iscsi_dd_codec_init(&san);
			san.ffp = true;
			san.hd = before.hd;
			if (!back ||
			    iscsi_dd_pdu(&san, true, out, (size_t)r, back) !=
				    (long)need ||
			    memcmp(back, in, need) != 0)
				__builtin_trap();
			free(back);
		}
		free(in);
		free(out);
	}
	return 0;
}
