/* test_iscsi.c - unit tests of the iSCSI layer's pure parts: key
 * negotiation rules (RFC 7143 section 13), text segments, PDU field
 * helpers, LUN encoding, serial arithmetic and CRC32C. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "iscsi_internal.h"
#include "iscsi_param.h"
#include "iscsi_pdu.h"
#include "util.h"

static const char *neg(struct iscsi_neg *n, const char *key, const char *v)
{
	static char out[256];

	if (iscsi_neg_key(n, key, v, out, sizeof(out)) != 1)
		return "(not handled)";
	return out;
}

static void test_rules(void)
{
	struct iscsi_neg n;

	iscsi_neg_init(&n, true);
	/* minimum */
	CHECK(!strcmp(neg(&n, "MaxBurstLength", "65536"), "65536"), "min");
	CHECK(n.result[KEY_MAX_BURST_LENGTH] == 65536, "min result");
	CHECK(!strcmp(neg(&n, "MaxBurstLength", "99999999"), "Reject"),
	      "out of range rejected");
	CHECK(!strcmp(neg(&n, "MaxBurstLength", "abc"), "Reject"), "nan");
	CHECK(!strcmp(neg(&n, "FirstBurstLength", "0x10000"), "65536"),
	      "hex numbers");
	/* maximum */
	CHECK(!strcmp(neg(&n, "DefaultTime2Wait", "0"), "2"), "max");
	/* boolean AND / OR */
	CHECK(!strcmp(neg(&n, "ImmediateData", "Yes"), "Yes"), "and yes");
	CHECK(!strcmp(neg(&n, "ImmediateData", "No"), "No"), "and no");
	CHECK(!strcmp(neg(&n, "InitialR2T", "No"), "No"), "or no");
	CHECK(!strcmp(neg(&n, "InitialR2T", "Yes"), "Yes"), "or yes");
	CHECK(!strcmp(neg(&n, "InitialR2T", "maybe"), "Reject"), "bad bool");
	/* target override changes the outcome */
	CHECK(iscsi_neg_set_target(&n, "ImmediateData", "No") == 0, "set");
	CHECK(!strcmp(neg(&n, "ImmediateData", "Yes"), "No"), "and target");
	CHECK(iscsi_neg_set_target(&n, "InitialR2T", "Yes") == 0, "set");
	CHECK(!strcmp(neg(&n, "InitialR2T", "No"), "Yes"), "or target");
	CHECK(iscsi_neg_set_target(&n, "Bogus", "1") == -ENOENT, "unknown");
	CHECK(iscsi_neg_set_target(&n, "MaxBurstLength", "1") == -EINVAL,
	      "range");
	/* lists */
	CHECK(!strcmp(neg(&n, "HeaderDigest", "None,CRC32C"), "None"),
	      "first supported in initiator order");
	CHECK(!strcmp(neg(&n, "HeaderDigest", "CRC32C,None"), "CRC32C"),
	      "crc first");
	CHECK(n.result[KEY_HEADER_DIGEST] == DIGEST_CRC32C, "crc result");
	CHECK(!strcmp(neg(&n, "DataDigest", "MD5"), "Reject"), "no common");
	CHECK(iscsi_neg_set_target(&n, "DataDigest", "CRC32C") == 0, "req");
	CHECK(!strcmp(neg(&n, "DataDigest", "None"), "Reject"),
	      "target requires CRC32C");
	/* declarative */
	CHECK(!strcmp(neg(&n, "MaxRecvDataSegmentLength", "4096"), "262144"),
	      "we declare ours");
	CHECK(n.init_max_recv_dsl == 4096, "theirs recorded");
	CHECK(!strcmp(neg(&n, "MaxRecvDataSegmentLength", "100"), "Reject"),
	      "below 512");
	/* markers are off; their intervals irrelevant */
	CHECK(!strcmp(neg(&n, "OFMarker", "Yes"), "No"), "markers");
	CHECK(!strcmp(neg(&n, "IFMarkInt", "2048"), "Irrelevant"), "markint");
	CHECK(!strcmp(neg(&n, "ErrorRecoveryLevel", "2"), "0"), "ERL 0");
	CHECK(!strcmp(neg(&n, "MaxConnections", "8"), "1"), "one conn");
	CHECK(!strcmp(neg(&n, "X-com.example.Foo", "1"), "(not handled)"),
	      "unknown left to caller");

	/* FirstBurstLength never exceeds MaxBurstLength */
	iscsi_neg_init(&n, true);
	neg(&n, "MaxBurstLength", "8192");
	neg(&n, "FirstBurstLength", "65536");
	iscsi_neg_finish(&n);
	CHECK(n.result[KEY_FIRST_BURST_LENGTH] == 8192, "first <= max");

	/* discovery sessions: normal-only keys are irrelevant */
	iscsi_neg_init(&n, true);
	n.discovery = true;
	CHECK(!strcmp(neg(&n, "MaxBurstLength", "8192"), "Irrelevant"),
	      "discovery");
	CHECK(!strcmp(neg(&n, "HeaderDigest", "None"), "None"),
	      "digest allowed in discovery");
}

static void test_text(void)
{
	const uint8_t seg[] = "InitiatorName=iqn.x\0SessionType=Normal\0Bad\0\0";
	char item[64], *k, *v;
	unsigned off = 0;
	char buf[40];
	unsigned o = 0;

	off = iscsi_text_next(seg, sizeof(seg) - 1, off, item, sizeof(item),
			      &k, &v);
	CHECK(off && !strcmp(k, "InitiatorName") && !strcmp(v, "iqn.x"), "1");
	off = iscsi_text_next(seg, sizeof(seg) - 1, off, item, sizeof(item),
			      &k, &v);
	CHECK(off && !strcmp(k, "SessionType") && !strcmp(v, "Normal"), "2");
	off = iscsi_text_next(seg, sizeof(seg) - 1, off, item, sizeof(item),
			      &k, &v);
	CHECK(off && !strcmp(k, "Bad") && v == NULL, "no value");
	off = iscsi_text_next(seg, sizeof(seg) - 1, off, item, sizeof(item),
			      &k, &v);
	CHECK(off == 0, "end");

	CHECK(iscsi_text_add(buf, sizeof(buf), &o, "A", "1") == 0, "add");
	CHECK(o == 4 && !memcmp(buf, "A=1\0", 4), "nul separated");
	CHECK(iscsi_text_add(buf, sizeof(buf), &o, "LongKeyName",
			     "a-long-value-that-does-not-fit") == -ENOSPC,
	      "no overflow");
	CHECK(o == 4, "offset unchanged on ENOSPC");
}

static void test_pdu(void)
{
	uint8_t bhs[ISCSI_BHS_LEN] = { 0 };
	uint8_t lun[8];

	bhs[BHS_OPCODE] = ISCSI_OP_IMMEDIATE | ISCSI_OP_SCSI_CMD;
	bhs[BHS_TOTAL_AHS_LEN] = 2;
	put_be24(bhs + BHS_DATA_SEG_LEN, 0x012345);
	CHECK(pdu_opcode(bhs) == ISCSI_OP_SCSI_CMD, "opcode without I bit");
	CHECK(pdu_ahs_len(bhs) == 8, "ahs in words");
	CHECK(pdu_data_len(bhs) == 0x012345, "24-bit length");
	CHECK(pdu_pad(5) == 3 && pdu_pad(8) == 0 && pdu_pad(0) == 0, "pad");

	iscsi_lun_encode(lun, 5);
	CHECK(lun[0] == 0 && lun[1] == 5, "peripheral");
	CHECK(iscsi_lun_decode(lun) == 5, "roundtrip small");
	iscsi_lun_encode(lun, 300);
	CHECK(lun[0] == (0x40 | 1) && lun[1] == 44, "flat");
	CHECK(iscsi_lun_decode(lun) == 300, "roundtrip flat");
	lun[0] = 0xc0;
	CHECK(iscsi_lun_decode(lun) == UINT64_MAX, "extended refused");

	put_be32(bhs + 20, 0xdeadbeef);
	CHECK(get_be32(bhs + 20) == 0xdeadbeef && bhs[20] == 0xde, "be32");
	put_be64(bhs + 24, 0x0102030405060708ull);
	CHECK(get_be64(bhs + 24) == 0x0102030405060708ull && bhs[24] == 1,
	      "be64");
}

static void test_serial(void)
{
	CHECK(sn_lt(1, 2) && !sn_lt(2, 1) && !sn_lt(3, 3), "lt");
	CHECK(sn_lt(0xfffffff0u, 5), "wraps");
	CHECK(sn_gt(5, 0xfffffff0u), "gt wraps");
	CHECK(sn_le(7, 7), "le");
}

static void test_crc(void)
{
	/* RFC 3720 appendix B.4 test vectors */
	uint8_t zeros[32] = { 0 }, ones[32], inc[32];

	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++)
		inc[i] = (uint8_t)i;
	CHECK(crc32c(0, zeros, 32) == 0x8a9136aa, "zeros %08x",
	      crc32c(0, zeros, 32));
	CHECK(crc32c(0, ones, 32) == 0x62a8ab43, "ones %08x",
	      crc32c(0, ones, 32));
	CHECK(crc32c(0, inc, 32) == 0x46dd794e, "incrementing %08x",
	      crc32c(0, inc, 32));
	CHECK(crc32c(crc32c(0, inc, 13), inc + 13, 19) ==
		      crc32c(0, inc, 32),
	      "incremental");
}

int main(void)
{
	test_rules();
	test_text();
	test_pdu();
	test_serial();
	test_crc();
	return CHECK_SUMMARY("test_iscsi");
}
