/* test_chap.c - CHAP digests (checked against independently computed
 * values), algorithm choice, value encodings, accounts and bindings. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "account.h"
#include "iscsi_chap.h"

static void test_digests(void)
{
	/* H(0x07 || "secretsecret" || 00 01 .. 0f), from Python hashlib */
	static const struct { int alg; const char *hex; } v[] = {
		{ 5, "0x6ecf51cbe0f7ac32d9cd952f3fd639c0" },
		{ 6, "0x36e52195eafe95448fdcaeaed9d412d0f172ed9e" },
		{ 7, "0xcf08f83eb6fac1778026846c2914297e19faa06ab011ae8fc9d51a3c10f20a49" },
		{ 8, "0x85bd8fa7050229b8748221b7994c5337dca98b37923b96a37e2eb75fc3cf9d15" },
	};
	uint8_t ch[16], out[CHAP_MAX_DIGEST];
	char hex[80];

	for (int i = 0; i < 16; i++)
		ch[i] = (uint8_t)i;
	for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		int n = chap_response(v[i].alg, 7, "secretsecret", ch, 16, out);

		chap_encode_hex(out, (unsigned)n, hex, sizeof(hex));
		CHECK(n > 0 && strcmp(hex, v[i].hex) == 0, "alg %d: %s",
		      v[i].alg, hex);
	}
	CHECK(chap_response(4, 7, "s", ch, 16, out) == -EINVAL, "unknown alg");
}

static void test_pick(void)
{
	CHECK(chap_pick_alg("5") == 5, "md5 only");
	CHECK(chap_pick_alg("5,7") == 7, "strongest offered");
	CHECK(chap_pick_alg("6,5,8,7") == 8, "sha3 first");
	CHECK(chap_pick_alg("4,3") == -1, "nothing acceptable");
}

static void test_encoding(void)
{
	uint8_t b[16];

	CHECK(chap_decode("0x0102ff", b, sizeof(b)) == 3 && b[2] == 0xff,
	      "hex");
	CHECK(chap_decode("0xABC", b, sizeof(b)) == 2 && b[0] == 0x0a &&
		      b[1] == 0xbc,
	      "odd hex digits");
	CHECK(chap_decode("0bAQID", b, sizeof(b)) == 3 && b[0] == 1 &&
		      b[2] == 3,
	      "base64");
	CHECK(chap_decode("0bAQI=", b, sizeof(b)) == 2, "base64 padding");
	CHECK(chap_decode("1234", b, sizeof(b)) == -EINVAL, "no prefix");
	CHECK(chap_decode("0xzz", b, sizeof(b)) == -EINVAL, "bad digit");
	CHECK(chap_decode("0x0102", b, 1) == -EINVAL, "too long");
	CHECK(chap_equal((const uint8_t *)"abc", (const uint8_t *)"abc", 3) &&
		      !chap_equal((const uint8_t *)"abc",
				  (const uint8_t *)"abd", 3),
	      "compare");
}

static void test_challenge(void)
{
	struct chap_state a = { .alg = 7 }, b = { .alg = 7 };

	CHECK(chap_new_challenge(&a) == 0 && chap_new_challenge(&b) == 0,
	      "rng");
	CHECK(a.challenge_len == 32, "challenge as long as the digest");
	CHECK(memcmp(a.challenge, b.challenge, 32) != 0, "random");
}

static void test_accounts(void)
{
	char s[64], u[64];

	CHECK(acct_create("alice", "alicesecret1") == 0, "create");
	CHECK(acct_create("alice", "x") == -EEXIST, "duplicate");
	CHECK(acct_create("", "x") == -EINVAL, "empty name");
	CHECK(acct_create("bob", "bobsecret123") == 0, "create bob");
	CHECK(!acct_required(1), "no binding, no CHAP");
	CHECK(acct_bind(1, "alice", false) == 0, "bind in");
	CHECK(acct_bind(1, "alice", false) == -EEXIST, "bind twice");
	CHECK(acct_bind(1, "nobody", false) == -ENOENT, "bind unknown");
	CHECK(acct_required(1) && !acct_required(2), "required per tid");
	CHECK(acct_incoming_secret(1, "alice", s, sizeof(s)) == 0 &&
		      strcmp(s, "alicesecret1") == 0,
	      "secret");
	CHECK(acct_incoming_secret(2, "alice", s, sizeof(s)) == -ENOENT,
	      "other target");
	CHECK(acct_bind(1, "bob", true) == 0, "outgoing");
	CHECK(acct_bind(1, "alice", true) == -EBUSY, "one outgoing");
	CHECK(acct_outgoing(1, u, sizeof(u), s, sizeof(s)) == 0 &&
		      strcmp(u, "bob") == 0,
	      "outgoing lookup");
	CHECK(acct_bind(ACCT_DISCOVERY_TID, "bob", false) == 0, "discovery");
	CHECK(acct_required(ACCT_DISCOVERY_TID), "discovery required");
	CHECK(acct_unbind(1, "alice", false) == 0 && !acct_required(1),
	      "unbind");
	acct_unbind_all(ACCT_DISCOVERY_TID);
	CHECK(!acct_required(ACCT_DISCOVERY_TID), "unbind all");
	CHECK(acct_delete("bob") == 0 &&
		      acct_outgoing(1, u, sizeof(u), s, sizeof(s)) == -ENOENT,
	      "delete removes bindings");
	CHECK(acct_delete("bob") == -ENOENT, "delete twice");
	acct_clear();
}

int main(void)
{
	test_digests();
	test_pick();
	test_encoding();
	test_challenge();
	test_accounts();
	return CHECK_SUMMARY("test_chap");
}
