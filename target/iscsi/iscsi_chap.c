/* iscsi_chap.c - CHAP digests, challenges and value encodings.
 * The login state machine that uses them is in iscsi_login.c. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi_chap.h"
#include "util.h"

/* CHAP_A values (RFC 7143 12.1.3, IANA "PPP Authentication Algorithms") */
#define CHAP_A_MD5 5
#define CHAP_A_SHA1 6
#define CHAP_A_SHA256 7
#define CHAP_A_SHA3_256 8

static const EVP_MD *chap_md(int alg)
{
	switch (alg) {
	case CHAP_A_MD5: return EVP_md5();
	case CHAP_A_SHA1: return EVP_sha1();
	case CHAP_A_SHA256: return EVP_sha256();
	case CHAP_A_SHA3_256: return EVP_sha3_256();
	default: return NULL;
	}
}

int chap_pick_alg(const char *list)
{
	static const int strongest_first[] = { CHAP_A_SHA3_256, CHAP_A_SHA256,
					       CHAP_A_SHA1, CHAP_A_MD5 };

	for (unsigned i = 0; i < ARRAY_SIZE(strongest_first); i++) {
		char buf[256], *save, *tok;

		snprintf(buf, sizeof(buf), "%s", list);
		for (tok = strtok_r(buf, ",", &save); tok;
		     tok = strtok_r(NULL, ",", &save))
			if (atoi(tok) == strongest_first[i] &&
			    chap_md(strongest_first[i]))
				return strongest_first[i];
	}
	return -1;
}

int chap_new_challenge(struct chap_state *cs)
{
	const EVP_MD *md = chap_md(cs->alg);

	/* a challenge as long as the digest: RFC 7143 12.1.3 asks for
	 * unpredictable challenges; RAND_bytes is a CSPRNG */
	cs->challenge_len = md ? (unsigned)EVP_MD_get_size(md) : 16;
	if (cs->challenge_len < 16)
		cs->challenge_len = 16;
	if (RAND_bytes(&cs->id, 1) != 1 ||
	    RAND_bytes(cs->challenge, (int)cs->challenge_len) != 1)
		return -EIO;
	return 0;
}

int chap_response(int alg, uint8_t id, const char *secret,
		  const uint8_t *challenge, unsigned challenge_len,
		  uint8_t *out)
{
	const EVP_MD *md = chap_md(alg);
	EVP_MD_CTX *ctx;
	unsigned len = 0;
	int ok;

	if (!md)
		return -EINVAL;
	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	/* RFC 1994 4.1: hash of identifier, secret, challenge */
	ok = EVP_DigestInit_ex(ctx, md, NULL) &&
	     EVP_DigestUpdate(ctx, &id, 1) &&
	     EVP_DigestUpdate(ctx, secret, strlen(secret)) &&
	     EVP_DigestUpdate(ctx, challenge, challenge_len) &&
	     EVP_DigestFinal_ex(ctx, out, &len);
	EVP_MD_CTX_free(ctx);
	return ok ? (int)len : -EINVAL;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int chap_decode(const char *text, uint8_t *out, unsigned max)
{
	size_t n = strlen(text);

	if (n > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
		const char *p = text + 2;
		unsigned len = 0;

		n -= 2;
		if (n % 2) {	/* odd digit count: leading nibble */
			int v = hexval(*p++);

			if (v < 0 || max < 1)
				return -EINVAL;
			out[len++] = (uint8_t)v;
			n--;
		}
		for (; n; n -= 2, p += 2) {
			int hi = hexval(p[0]), lo = hexval(p[1]);

			if (hi < 0 || lo < 0 || len >= max)
				return -EINVAL;
			out[len++] = (uint8_t)(hi << 4 | lo);
		}
		return (int)len;
	}
	if (n > 2 && text[0] == '0' && (text[1] == 'b' || text[1] == 'B')) {
		unsigned char tmp[CHAP_MAX_CHALLENGE + 4];
		int len;

		if ((n - 2) / 4 * 3 > sizeof(tmp))
			return -EINVAL;
		len = EVP_DecodeBlock(tmp, (const unsigned char *)text + 2,
				      (int)(n - 2));
		if (len < 0)
			return -EINVAL;
		/* EVP_DecodeBlock keeps the padding bytes: drop them */
		if (n >= 4 && text[n - 1] == '=')
			len--;
		if (n >= 5 && text[n - 2] == '=')
			len--;
		if ((unsigned)len > max)
			return -EINVAL;
		memcpy(out, tmp, (size_t)len);
		return len;
	}
	return -EINVAL;
}

void chap_encode_hex(const uint8_t *in, unsigned len, char *out,
		     unsigned outlen)
{
	static const char digits[] = "0123456789abcdef";
	unsigned o = 0;

	if (outlen < 3)
		return;
	out[o++] = '0';
	out[o++] = 'x';
	for (unsigned i = 0; i < len && o + 2 < outlen; i++) {
		out[o++] = digits[in[i] >> 4];
		out[o++] = digits[in[i] & 15];
	}
	out[o] = 0;
}

bool chap_equal(const uint8_t *a, const uint8_t *b, unsigned len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}
