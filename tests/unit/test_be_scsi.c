/* test_be_scsi.c - backends/be_scsi.c: a SCSI device's sense data (fixed
 * and descriptor format) into struct be_sense, for the gateway to pass
 * the SAN's sense on as it is, and its GET LBA STATUS answer into
 * block_status's extents. */
#include <errno.h>
#include <string.h>

#include "be_scsi.h"
#include "check.h"
#include "util.h"

/* A GET LBA STATUS answer: n descriptors (lba, blocks, status). */
static size_t gls_build(uint8_t *b, unsigned n, const uint64_t (*d)[3])
{
	memset(b, 0, 8 + 16 * n);
	put_be32(b, 4 + 16 * n);
	for (unsigned i = 0; i < n; i++) {
		put_be64(b + 8 + 16 * i, d[i][0]);
		put_be32(b + 16 + 16 * i, (uint32_t)d[i][1]);
		b[20 + 16 * i] = (uint8_t)d[i][2];
	}
	return 8 + 16 * n;
}

static void test_gls(void)
{
	static const uint64_t runs[][3] = {
		{ 100, 28, 0 }, { 128, 128, 1 }, { 256, 64, 2 }, { 320, 80, 1 },
	};
	uint8_t b[8 + 16 * 8];
	struct be_extent ext[8];
	uint16_t n;
	uint64_t len;
	size_t sz = gls_build(b, 4, runs);

	/* all of it: anchored (2) is mapped; the last cut at the end */
	len = 300 * 512;
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, ext, 8, &n) == 1 &&
	      len == 28 * 512 && n == 3);
	CHECK(ext[0].length == 128 * 512 && ext[0].status == 0 &&
	      ext[1].length == 64 * 512 && ext[1].status == 1 &&
	      ext[2].length == (400 - 320) * 512 && ext[2].status == 0);
	len = 250 * 512;	/* ends inside the last run */
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, ext, 8, &n) == 1 &&
	      n == 3 && ext[2].length == (350 - 320) * 512);
	len = 100 * 512;	/* ends inside the second */
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, ext, 8, &n) == 1 &&
	      n == 1 && ext[0].length == 72 * 512);
	/* no more than ext_max, and none without room */
	len = 300 * 512;
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, ext, 2, &n) == 1 &&
	      n == 2);
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, NULL, 0, &n) == 1 &&
	      n == 0 && len == 28 * 512);
	/* only what arrived, and only what was announced */
	len = 300 * 512;
	CHECK(be_gls_parse(b, sz - 1, 512, 100 * 512, &len, ext, 8, &n) == 1 &&
	      n == 2);
	put_be32(b, 4 + 16 * 2);
	len = 300 * 512;
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, ext, 8, &n) == 1 &&
	      n == 1);
	put_be32(b, 4 + 16 * 4);
	/* a gap: the descriptors after it are not this answer's */
	put_be64(b + 8 + 16 * 2, 257);
	len = 300 * 512;
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, ext, 8, &n) == 1 &&
	      n == 1);
	put_be64(b + 8 + 16 * 2, 256);
	/* 4096-byte blocks: byte lengths */
	len = 400ull * 4096;
	CHECK(be_gls_parse(b, sz, 4096, 100 * 4096ull, &len, ext, 8, &n) == 1 &&
	      len == 28 * 4096 && n == 3 && ext[0].length == 128 * 4096);
	/* a first descriptor about another LBA: one mapped block */
	len = 300 * 512;
	CHECK(be_gls_parse(b, sz, 512, 99 * 512, &len, ext, 8, &n) == 1 &&
	      len == 512 && n == 0);
	/* a zero-length first descriptor: likewise */
	put_be32(b + 16, 0);
	len = 300 * 512;
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, ext, 8, &n) == 1 &&
	      len == 512 && n == 0);
	/* no descriptor at all */
	len = 300 * 512;
	CHECK(be_gls_parse(b, 8, 512, 100 * 512, &len, ext, 8, &n) ==
	      -EREMOTEIO);
	put_be32(b, 4);
	CHECK(be_gls_parse(b, sz, 512, 100 * 512, &len, ext, 8, &n) ==
	      -EREMOTEIO);
	CHECK(be_gls_parse(NULL, 0, 512, 0, &len, ext, 8, &n) == -EREMOTEIO);
}

static void test_fixed(void)
{
	/* MEDIUM ERROR 11/00, INFORMATION 0x1234 valid */
	uint8_t b[18] = { 0xf0, 0, 0x03, 0, 0, 0x12, 0x34, 10,
			  0, 0, 0, 0, 0x11, 0x00, 0, 0, 0, 0 };
	struct be_sense s;

	CHECK(be_sense_parse(b, sizeof(b), &s) == 0);
	CHECK(s.key == 3 && s.asc == 0x11 && s.ascq == 0 && s.info_valid &&
	      s.info == 0x1234 && !s.sks_valid);
	/* INFORMATION not marked valid: not taken */
	b[0] = 0x70;
	CHECK(be_sense_parse(b, sizeof(b), &s) == 0 && !s.info_valid &&
	      s.info == 0);
	/* ILLEGAL REQUEST 24/00 with a field pointer (SKSV, C/D, byte 2) */
	b[2] = 0x05;
	b[12] = 0x24;
	b[15] = 0xc0;
	b[16] = 0x00;
	b[17] = 0x02;
	CHECK(be_sense_parse(b, sizeof(b), &s) == 0 && s.key == 5 &&
	      s.asc == 0x24 && s.sks_valid && s.sks[0] == 0xc0 &&
	      s.sks[2] == 2);
	/* the additional length cuts what is read: ASC/ASCQ beyond it */
	b[7] = 4;
	CHECK(be_sense_parse(b, sizeof(b), &s) == 0 && s.key == 5 &&
	      s.asc == 0 && !s.sks_valid);
	b[7] = 10;
	/* so does len */
	CHECK(be_sense_parse(b, 13, &s) == 0 && s.asc == 0x24 && s.ascq == 0);
	CHECK(be_sense_parse(b, 8, &s) == 0 && s.key == 5 && s.asc == 0);
	CHECK(be_sense_parse(b, 7, &s) == -EINVAL && s.key == 0);
	/* deferred errors and NO SENSE are nothing to repeat */
	b[0] = 0x71;
	CHECK(be_sense_parse(b, sizeof(b), &s) == -EINVAL && s.key == 0);
	b[0] = 0x70;
	b[2] = 0;
	CHECK(be_sense_parse(b, sizeof(b), &s) == -EINVAL);
}

static void test_desc(void)
{
	/* DATA PROTECT 27/07; INFORMATION 64-bit; sense-key specific */
	uint8_t b[8 + 12 + 8] = {
		0x72, 0x07, 0x27, 0x07, 0, 0, 0, 20,
		0x00, 0x0a, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 5,
		0x02, 0x06, 0, 0, 0x80, 0x12, 0x34, 0,
	};
	struct be_sense s;

	CHECK(be_sense_parse(b, sizeof(b), &s) == 0);
	CHECK(s.key == 7 && s.asc == 0x27 && s.ascq == 0x07 && s.info_valid &&
	      s.info == 0x100000005ull && s.sks_valid && s.sks[1] == 0x12);
	/* a descriptor that runs past the end is not read */
	CHECK(be_sense_parse(b, sizeof(b) - 1, &s) == 0 && s.info_valid &&
	      !s.sks_valid);
	b[7] = 12;	/* the additional length ends after the first */
	CHECK(be_sense_parse(b, sizeof(b), &s) == 0 && s.info_valid &&
	      !s.sks_valid);
	/* INFORMATION without VALID; a too short one */
	b[7] = 20;
	b[10] = 0;
	CHECK(be_sense_parse(b, sizeof(b), &s) == 0 && !s.info_valid);
	b[10] = 0x80;
	b[9] = 0x02;	/* 4 bytes: too short for INFORMATION, skipped */
	CHECK(be_sense_parse(b, sizeof(b), &s) == 0 && !s.info_valid);
	/* header only */
	CHECK(be_sense_parse(b, 8, &s) == 0 && s.key == 7 && !s.info_valid);
	/* deferred, vendor, empty */
	b[0] = 0x73;
	CHECK(be_sense_parse(b, sizeof(b), &s) == -EINVAL);
	b[0] = 0x7f;
	CHECK(be_sense_parse(b, sizeof(b), &s) == -EINVAL);
	CHECK(be_sense_parse(b, 0, &s) == -EINVAL);
	CHECK(be_sense_parse(NULL, 18, &s) == -EINVAL);
}

int main(void)
{
	test_fixed();
	test_desc();
	test_gls();
	return CHECK_SUMMARY("test_be_scsi");
}
