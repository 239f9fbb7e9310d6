/* test_scsi.c - SPC emulation with a fake LUN (scsi_fake.h): unit
 * attentions, INQUIRY and its VPD pages, absent LUNs and the LUN 0
 * controller, MODE SENSE, REPORT LUNS, sense formats, the errno -> sense
 * table, CDB checks, REPORT SUPPORTED OPERATION CODES and the default LUN
 * settings.  SBC commands are in test_scsi_sbc.c. */
#include "scsi_fake.h"

static void test_ua_first_command(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t inq[6] = { SCSI_OP_INQUIRY, 0, 0, 0, 96 };
	uint8_t tur[6] = { SCSI_OP_TEST_UNIT_READY };

	lun_setup();
	/* INQUIRY is not blocked by, and does not clear, the UA. */
	cmd_init(&c, &nex_a, inq, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION, ASC_POWER_ON_RESET));
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	/* A second nexus gets its own power-on UA. */
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION, ASC_POWER_ON_RESET));
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);

	/* LUN reset by A: both see BUS DEVICE RESET FUNCTION OCCURRED. */
	scsi_lun_reset_ua(&lun, &nex_a);
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_BUS_DEVICE_RESET_FUNCTION));
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_BUS_DEVICE_RESET_FUNCTION));
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);

	/* Events queue in order, one per command. */
	scsi_lun_notify(&lun, SCSI_EV_CAPACITY_CHANGED);
	scsi_lun_notify(&lun, SCSI_EV_LUNS_CHANGED);
	scsi_lun_notify(&lun, SCSI_EV_CAPACITY_CHANGED);
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_CAPACITY_DATA_CHANGED));
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_REPORTED_LUNS_DATA_CHANGED));
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_CAPACITY_DATA_CHANGED));
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_REPORTED_LUNS_DATA_CHANGED));
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);

	/* REQUEST SENSE reports the UA with GOOD status and clears it. */
	scsi_lun_reset_ua(&lun, NULL);
	uint8_t rs[6] = { SCSI_OP_REQUEST_SENSE, 0, 0, 0, 252 };
	cmd_init(&c, &nex_a, rs, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(c.in_len == 18);
	CHECK(c.buf && c.buf[0] == 0x70 && (c.buf[2] & 0xf) == 6 &&
	      c.buf[12] == 0x29 && c.buf[13] == 0x00);
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, rs, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.buf && (c.buf[2] & 0xf) == 0);
	cmd_free(&c);
}

static void test_inquiry_standard(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t inq[6] = { SCSI_OP_INQUIRY, 0, 0, 0, 255 };

	lun_setup();
	cmd_init(&c, &nex_a, inq, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(c.in_len == 96);
	CHECK(c.buf[0] == 0x00);		/* PQ 0, direct access */
	CHECK(c.buf[2] == 0x06);		/* SPC-4 */
	CHECK((c.buf[3] & 0x0f) == 2);
	CHECK(c.buf[4] == 91);
	CHECK(c.buf[7] & 0x02);			/* CMDQUE */
	CHECK(!memcmp(c.buf + 8, "HOLDFAST", 8));
	CHECK(!memcmp(c.buf + 16, "VIRTUAL-DISK    ", 16));
	CHECK(!memcmp(c.buf + 32, "0001", 4));

	/* Allocation length cuts the data. */
	inq[4] = 5;
	cmd_init(&c, &nex_a, inq, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 5);

	/* PAGE CODE without EVPD is an invalid field, pointer to byte 2. */
	uint8_t bad[6] = { SCSI_OP_INQUIRY, 0, 0x80, 0, 255 };
	cmd_init(&c, &nex_a, bad, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	CHECK(c.sense[15] == 0xc0 && c.sense[16] == 0 && c.sense[17] == 2);
	cmd_free(&c);
}

static const uint8_t *find_desig(const uint8_t *b, uint32_t len,
				 uint8_t assoc_type)
{
	for (uint32_t off = 4; off + 4 <= len; off += 4u + b[off + 3])
		if ((b[off + 1] & 0x3f) == assoc_type)
			return b + off;
	return NULL;
}

static void test_inquiry_vpd(void)
{
	struct scsi_cmd c = { 0 };
	char sn1[64] = "", sn2[64] = "";

	lun_setup();
	inquiry_vpd(&c, 0x00);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(c.buf[1] == 0x00 && get_be16(c.buf + 2) == 6);
	CHECK(!memcmp(c.buf + 4, "\x00\x80\x83\xb0\xb1\xb2", 6));

	inquiry_vpd(&c, 0x80);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[1] == 0x80);
	CHECK(get_be16(c.buf + 2) == 16);
	memcpy(sn1, c.buf + 4, get_be16(c.buf + 2));
	/* Stable: same target name and LUN give the same serial... */
	inquiry_vpd(&c, 0x80);
	memcpy(sn2, c.buf + 4, get_be16(c.buf + 2));
	CHECK(!strcmp(sn1, sn2));
	/* ...another LUN another, and a configured one wins. */
	lun_set.lun = 2;
	inquiry_vpd(&c, 0x80);
	CHECK(memcmp(sn1, c.buf + 4, 16) != 0);
	snprintf(lun_set.scsi_sn, sizeof(lun_set.scsi_sn), "SN123");
	inquiry_vpd(&c, 0x80);
	CHECK(get_be16(c.buf + 2) == 5 && !memcmp(c.buf + 4, "SN123", 5));

	lun_setup();
	inquiry_vpd(&c, 0x83);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[1] == 0x83);
	uint32_t len = 4 + get_be16(c.buf + 2);
	CHECK(len == c.in_len);
	const uint8_t *d = find_desig(c.buf, len, 0x03);	/* NAA, LU */
	CHECK(d && d[3] == 8 && (d[4] >> 4) == 3 && (d[0] & 0xf) == 1);
	uint64_t naa = d ? get_be64(d + 4) : 0;
	d = find_desig(c.buf, len, 0x01);			/* T10 */
	CHECK(d && (d[0] & 0xf) == 2 && !memcmp(d + 4, "HOLDFAST", 8));
	d = find_desig(c.buf, len, 0x14);	/* relative target port */
	CHECK(d && (d[1] & 0x80) && (d[0] >> 4) == 5 && d[3] == 4 &&
	      get_be16(d + 6) == 1);
	d = find_desig(c.buf, len, 0x15);	/* target port group */
	CHECK(d && d[3] == 4 && get_be16(d + 6) == 1);
	d = find_desig(c.buf, len, 0x18);	/* SCSI name, target port */
	CHECK(d && d[3] % 4 == 0 &&
	      !strcmp((const char *)d + 4, "iqn.2026-01.test:disk,t,0x0001"));
	d = find_desig(c.buf, len, 0x28);	/* SCSI name, target device */
	CHECK(d && !strcmp((const char *)d + 4, "iqn.2026-01.test:disk"));
	/* scsi_id changes the NAA. */
	snprintf(lun_set.scsi_id, sizeof(lun_set.scsi_id), "my-disk");
	inquiry_vpd(&c, 0x83);
	d = find_desig(c.buf, 4 + get_be16(c.buf + 2), 0x03);
	CHECK(d && get_be64(d + 4) != naa);
	d = find_desig(c.buf, 4 + get_be16(c.buf + 2), 0x01);
	CHECK(d && d[3] == 8 + 7 && !memcmp(d + 12, "my-disk", 7));

	inquiry_vpd(&c, 0xb0);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[1] == 0xb0);
	CHECK(get_be16(c.buf + 2) == 0x3c);
	CHECK(get_be32(c.buf + 8) == SBC_MAX_TRANSFER_BYTES / 512);
	CHECK(get_be16(c.buf + 6) == 8);

	inquiry_vpd(&c, 0xb1);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[1] == 0xb1);
	CHECK(get_be16(c.buf + 2) == 0x3c && get_be16(c.buf + 4) == 1);

	inquiry_vpd(&c, 0xb2);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[1] == 0xb2);
	CHECK(get_be16(c.buf + 2) == 4 && c.buf[6] == 0);
	lun_set.thin_provisioning = true;
	inquiry_vpd(&c, 0xb2);
	CHECK(c.buf[6] == 2);

	inquiry_vpd(&c, 0xc7);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	cmd_free(&c);
}

static void test_absent_lun(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t inq[6] = { SCSI_OP_INQUIRY, 0, 0, 0, 96 };
	uint8_t tur[6] = { SCSI_OP_TEST_UNIT_READY };
	uint8_t rs[6] = { SCSI_OP_REQUEST_SENSE, 0, 0, 0, 18 };
	uint8_t rd[10] = { SCSI_OP_READ_10, 0, 0, 0, 0, 0, 0, 0, 1, 0 };

	lun_setup();
	cmd_init(&c, &nex_a, inq, 6);
	c.lun = NULL;
	c.lun_id = 7;
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[0] == 0x7f);

	cmd_init(&c, &nex_a, tur, 6);
	c.lun = NULL;
	c.lun_id = 7;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED));

	cmd_init(&c, &nex_a, rd, 10);
	c.lun = NULL;
	c.lun_id = 7;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED));

	cmd_init(&c, &nex_a, rs, 6);
	c.lun = NULL;
	c.lun_id = 7;
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 18 &&
	      (c.buf[2] & 0xf) == 5 && c.buf[12] == 0x25);

	/* LUN 0 is the controller when not configured. */
	cmd_init(&c, &nex_a, inq, 6);
	c.lun = NULL;
	c.lun_id = 0;
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[0] == 0x0c);
	cmd_init(&c, &nex_a, tur, 6);
	c.lun = NULL;
	c.lun_id = 0;
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, rd, 10);
	c.lun = NULL;
	c.lun_id = 0;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_INVALID_OPCODE));
	cmd_free(&c);
}

static const uint8_t *mode_find(const uint8_t *b, uint32_t len, bool ten,
				uint8_t page)
{
	uint32_t off = ten ? 8u + get_be16(b + 6) : 4u + b[3];

	while (off + 2 <= len) {
		if ((b[off] & 0x3f) == page)
			return b + off;
		off += 2u + b[off + 1];
	}
	return NULL;
}

static void test_mode_sense(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t ms6[6] = { SCSI_OP_MODE_SENSE_6, 0, 0x08, 0, 255 };
	const uint8_t *p;

	lun_setup();
	clear_ua(&nex_a);
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(c.in_len == 4u + 8 + 20 && c.buf[0] == c.in_len - 1);
	CHECK(c.buf[3] == 8);				/* block descriptor */
	CHECK(get_be32(c.buf + 4) == 2048 && get_be24(c.buf + 9) == 512);
	CHECK(c.buf[2] & 0x10);				/* DPOFUA */
	CHECK(!(c.buf[2] & 0x80));			/* not WP */
	p = mode_find(c.buf, c.in_len, false, 0x08);
	CHECK(p && p[1] == 0x12 && (p[2] & 0x04));	/* WCE */

	lun_set.write_cache = false;
	lun_set.readonly = true;
	ms6[1] = 0x08;					/* DBD */
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[3] == 0);
	CHECK(c.buf[2] & 0x80);				/* WP */
	p = mode_find(c.buf, c.in_len, false, 0x08);
	CHECK(p && !(p[2] & 0x04));
	/* Changeable values: nothing is changeable. */
	ms6[2] = 0x48;
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	p = mode_find(c.buf, c.in_len, false, 0x08);
	CHECK(c.status == SAM_STAT_GOOD && p && p[2] == 0);
	/* Saved values are not supported. */
	ms6[2] = 0xc8;
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_SAVING_PARAMS_NOT_SUPPORTED));

	/* Control page and D_SENSE. */
	ms6[2] = 0x0a;
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	p = mode_find(c.buf, c.in_len, false, 0x0a);
	CHECK(p && p[1] == 0x0a && !(p[2] & 0x04));
	lun_set.sense_desc = true;
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	p = mode_find(c.buf, c.in_len, false, 0x0a);
	CHECK(p && (p[2] & 0x04));
	lun_set.sense_desc = false;

	/* All pages. */
	ms6[1] = 0;
	ms6[2] = 0x3f;
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(c.in_len == 4u + 8 + 12 + 20 + 12 + 12);
	CHECK(mode_find(c.buf, c.in_len, false, 0x01) &&
	      mode_find(c.buf, c.in_len, false, 0x08) &&
	      mode_find(c.buf, c.in_len, false, 0x0a) &&
	      mode_find(c.buf, c.in_len, false, 0x1c));
	ms6[3] = 0xff;
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 4u + 8 + 56);

	/* Unknown page. */
	ms6[2] = 0x2b;
	ms6[3] = 0;
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));

	/* MODE SENSE(10) with LLBAA: 16-byte block descriptor. */
	uint8_t ms10[10] = { SCSI_OP_MODE_SENSE_10, 0x10, 0x08, 0, 0, 0, 0,
			     0x01, 0x00 };
	cmd_init(&c, &nex_a, ms10, 10);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(c.in_len == 8u + 16 + 20 && get_be16(c.buf) == c.in_len - 2);
	CHECK(c.buf[4] & 1 && get_be16(c.buf + 6) == 16);
	CHECK(get_be64(c.buf + 8) == 2048 && get_be32(c.buf + 20) == 512);
	cmd_free(&c);
}

static void test_report_luns(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t rl[12] = { SCSI_OP_REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0 };

	lun_setup();
	cmd_init(&c, &nex_a, rl, 12);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(get_be32(c.buf) == 24 && c.in_len == 32);
	CHECK(get_be64(c.buf + 8) == 0);
	CHECK(get_be64(c.buf + 16) == 0x0001000000000000ull);
	CHECK(get_be64(c.buf + 24) == 0x0002000000000000ull);

	/* Works on an absent LUN too, and is not blocked by UAs. */
	cmd_init(&c, &nex_b, rl, 12);
	c.lun = NULL;
	c.lun_id = 0;
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && get_be32(c.buf) == 24);

	/* Allocation length below 16. */
	rl[9] = 8;
	rl[8] = 0;
	cmd_init(&c, &nex_a, rl, 12);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	/* Bad SELECT REPORT. */
	rl[8] = 1;
	rl[2] = 0x7;
	cmd_init(&c, &nex_a, rl, 12);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	cmd_free(&c);
}

static void test_sense_formats(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t rd[10] = { SCSI_OP_READ_10, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0 };

	lun_setup();
	clear_ua(&nex_a);
	cmd_init(&c, &nex_a, rd, 10);
	run(&c);
	CHECK(c.sense[0] == 0x70 && c.sense_len == 18 && c.sense[7] == 10);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));

	lun_set.sense_desc = true;
	cmd_init(&c, &nex_a, rd, 10);
	run(&c);
	CHECK(c.sense[0] == 0x72 && c.sense_len == 8 && c.sense[7] == 0);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));

	/* Descriptor format with a sense-key-specific descriptor. */
	uint8_t bad[10] = { SCSI_OP_READ_10, 0x20, 0, 0, 0, 0, 0, 0, 1, 0 };
	cmd_init(&c, &nex_a, bad, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	CHECK(c.sense_len == 16 && c.sense[7] == 8 && c.sense[8] == 0x02 &&
	      c.sense[9] == 6 && (c.sense[12] & 0xc0) == 0xc0 &&
	      get_be16(c.sense + 13) == 1);

	/* REQUEST SENSE with DESC asks for descriptor format itself. */
	lun_set.sense_desc = false;
	uint8_t rs[6] = { SCSI_OP_REQUEST_SENSE, 1, 0, 0, 255 };
	cmd_init(&c, &nex_a, rs, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 8 && c.buf[0] == 0x72);
	cmd_free(&c);
}

static void test_errno_table(void)
{
	static const struct {
		int err;
		bool write;
		uint8_t status, key;
		uint16_t asc;
	} t[] = {
		{ EIO, false, SAM_STAT_CHECK_CONDITION, SENSE_KEY_MEDIUM_ERROR,
		  ASC_UNRECOVERED_READ_ERROR },
		{ EIO, true, SAM_STAT_CHECK_CONDITION, SENSE_KEY_MEDIUM_ERROR,
		  ASC_WRITE_ERROR },
		{ ENODATA, false, SAM_STAT_CHECK_CONDITION,
		  SENSE_KEY_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR },
		{ ENOSPC, true, SAM_STAT_CHECK_CONDITION, SENSE_KEY_DATA_PROTECT,
		  ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT },
		{ EDQUOT, true, SAM_STAT_CHECK_CONDITION, SENSE_KEY_DATA_PROTECT,
		  ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT },
		{ ENOSPC, false, SAM_STAT_CHECK_CONDITION,
		  SENSE_KEY_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE },
		{ EROFS, true, SAM_STAT_CHECK_CONDITION, SENSE_KEY_DATA_PROTECT,
		  ASC_WRITE_PROTECTED },
		{ ENOTCONN, false, SAM_STAT_CHECK_CONDITION,
		  SENSE_KEY_HARDWARE_ERROR, ASC_LUN_COMMUNICATION_FAILURE },
		{ ECONNRESET, true, SAM_STAT_CHECK_CONDITION,
		  SENSE_KEY_HARDWARE_ERROR, ASC_LUN_COMMUNICATION_FAILURE },
		{ ETIMEDOUT, false, SAM_STAT_CHECK_CONDITION,
		  SENSE_KEY_HARDWARE_ERROR, ASC_LUN_COMMUNICATION_FAILURE },
		{ EHOSTUNREACH, true, SAM_STAT_CHECK_CONDITION,
		  SENSE_KEY_HARDWARE_ERROR, ASC_LUN_COMMUNICATION_FAILURE },
		{ ENOMEM, false, SAM_STAT_TASK_SET_FULL, 0, 0 },
		{ EAGAIN, true, SAM_STAT_BUSY, 0, 0 },
		{ EBUSY, false, SAM_STAT_BUSY, 0, 0 },
		{ EINVAL, true, SAM_STAT_CHECK_CONDITION,
		  SENSE_KEY_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE },
		{ EPERM, false, SAM_STAT_CHECK_CONDITION,
		  SENSE_KEY_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE },
	};
	struct scsi_cmd c = { 0 };

	lun_setup();
	for (unsigned i = 0; i < ARRAY_SIZE(t); i++) {
		memset(&c, 0, sizeof(c));
		c.lun = &lun;
		c.lba = 77;
		scsi_set_backend_error(&c, -t[i].err, t[i].write);
		bool ok = c.status == t[i].status;
		if (t[i].status == SAM_STAT_CHECK_CONDITION)
			ok = ok && sense_key(&c) == t[i].key &&
			     sense_asc(&c) == t[i].asc;
		else
			ok = ok && c.sense_len == 0;
		if (!ok)
			fprintf(stderr, "errno %d write %d: status %#x\n",
				t[i].err, t[i].write, c.status);
		CHECK(ok);
	}
	/* Medium errors carry the LBA in INFORMATION. */
	memset(&c, 0, sizeof(c));
	c.lun = &lun;
	c.lba = 77;
	scsi_set_backend_error(&c, -EIO, false);
	CHECK((c.sense[0] & 0x80) && get_be32(c.sense + 3) == 77);
	lun_set.sense_desc = true;
	scsi_set_backend_error(&c, -EIO, true);
	CHECK(c.sense[0] == 0x72 && c.sense[8] == 0x00 && c.sense[9] == 0x0a &&
	      get_be64(c.sense + 12) == 77);
}

static void test_bad_requests(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t op[6] = { 0xc0 };
	uint8_t rd[10] = { SCSI_OP_READ_10, 0, 0, 0, 0x08, 0x00, 0, 0, 0, 0 };

	lun_setup();
	clear_ua(&nex_a);
	cmd_init(&c, &nex_a, op, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_INVALID_OPCODE));

	/* MODE SELECT is not served yet. */
	op[0] = 0x15;
	cmd_init(&c, &nex_a, op, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_INVALID_OPCODE));

	/* Zero-length read at the capacity: fine; one past: out of range. */
	cmd_init(&c, &nex_a, rd, 10);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 0 && submits == 0);
	rd[5] = 1;
	cmd_init(&c, &nex_a, rd, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));

	/* READ(16) with a huge LBA must not wrap. */
	uint8_t rd16[16] = { SCSI_OP_READ_16 };
	put_be64(rd16 + 2, ~0ull);
	put_be32(rd16 + 10, 2);
	cmd_init(&c, &nex_a, rd16, 16);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));

	/* Longer than the maximum transfer length. */
	lun.nblocks = 1ull << 30;
	put_be64(rd16 + 2, 0);
	put_be32(rd16 + 10, SBC_MAX_TRANSFER_BYTES / 512 + 1);
	cmd_init(&c, &nex_a, rd16, 16);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));

	/* Writes to a read-only LUN. */
	lun_set.readonly = true;
	uint8_t wr[10] = { SCSI_OP_WRITE_10, 0, 0, 0, 0, 0, 0, 0, 1, 0 };
	cmd_init(&c, &nex_a, wr, 10);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = 512;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_DATA_PROTECT, ASC_WRITE_PROTECTED));
	CHECK(submits == 0);

	/* Offline LUN: NOT READY. */
	lun_set.online = false;
	uint8_t tur[6] = { 0 };
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_CHECK_CONDITION &&
	      sense_key(&c) == SENSE_KEY_NOT_READY);
	cmd_free(&c);
}

static void rsoc(struct scsi_cmd *c, uint8_t opts, uint8_t op, uint16_t sa)
{
	uint8_t cdb[12] = { SCSI_OP_MAINTENANCE_IN,
			    SCSI_MI_REPORT_SUPPORTED_OPCODES, opts, op };

	put_be16(cdb + 4, sa);
	put_be32(cdb + 6, 4096);
	cmd_init(c, &nex_a, cdb, 12);
	run(c);
}

static void test_report_supported_opcodes(void)
{
	struct scsi_cmd c = { 0 };

	lun_setup();
	clear_ua(&nex_a);
	/* UNMAP is listed only on a thin LUN, SET TARGET PORT GROUPS only
	 * on a LUN shared by two nodes (alua_group). */
	lun_set.thin_provisioning = true;
	lun_set.alua_group = 1;
	rsoc(&c, 0, 0, 0);
	CHECK(c.status == SAM_STAT_GOOD &&
	      get_be32(c.buf) == scsi_op_table_len * 8);
	lun_set.alua_group = 0;
	rsoc(&c, 0, 0, 0);
	CHECK(c.status == SAM_STAT_GOOD &&
	      get_be32(c.buf) == (scsi_op_table_len - 1) * 8);
	lun_set.thin_provisioning = false;
	rsoc(&c, 0, 0, 0);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(get_be32(c.buf) == (scsi_op_table_len - 2) * 8 &&
	      c.in_len == 4 + (scsi_op_table_len - 2) * 8);
	bool seen_read10 = false, seen_rc16 = false;
	for (uint32_t off = 4; off < c.in_len; off += 8) {
		if (c.buf[off] == SCSI_OP_READ_10)
			seen_read10 = get_be16(c.buf + off + 6) == 10 &&
				      c.buf[off + 5] == 0;
		/* SERVICE ACTION IN(16) has more than one row (GET LBA
		 * STATUS too): look for READ CAPACITY(16) among them. */
		if (c.buf[off] == SCSI_OP_SERVICE_ACTION_IN_16 &&
		    get_be16(c.buf + off + 2) == 0x10)
			seen_rc16 = c.buf[off + 5] == 1;
	}
	CHECK(seen_read10 && seen_rc16);
	/* RCTD adds a command timeouts descriptor to each. */
	rsoc(&c, 0x80, 0, 0);
	CHECK(c.status == SAM_STAT_GOOD &&
	      get_be32(c.buf) == (scsi_op_table_len - 2) * 20 &&
	      c.buf[4 + 5] == 0x02 && get_be16(c.buf + 4 + 8) == 0x0a);

	/* One command: READ(10) examines DPO and FUA. */
	rsoc(&c, 1, SCSI_OP_READ_10, 0);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 14);
	CHECK((c.buf[1] & 7) == 3 && get_be16(c.buf + 2) == 10);
	CHECK(c.buf[4] == SCSI_OP_READ_10 && (c.buf[5] & 0x18) == 0x18);
	/* Opcode with service actions asked without one, and vice versa. */
	rsoc(&c, 1, SCSI_OP_SERVICE_ACTION_IN_16, 0);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	rsoc(&c, 2, SCSI_OP_READ_10, 0);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	rsoc(&c, 2, SCSI_OP_SERVICE_ACTION_IN_16, 0x10);
	CHECK(c.status == SAM_STAT_GOOD && (c.buf[1] & 7) == 3 &&
	      get_be16(c.buf + 2) == 16 && c.buf[4] == 0x9e);
	/* Unsupported: SUPPORT 001b. */
	rsoc(&c, 1, 0xc5, 0);
	CHECK(c.status == SAM_STAT_GOOD && (c.buf[1] & 7) == 1);
	rsoc(&c, 2, SCSI_OP_SERVICE_ACTION_IN_16, 0x11);
	CHECK(c.status == SAM_STAT_GOOD && (c.buf[1] & 7) == 1);
	rsoc(&c, 5, 0, 0);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	/* Every row's usage data starts with its opcode. */
	for (unsigned i = 0; i < scsi_op_table_len; i++)
		CHECK(scsi_op_table[i].usage[0] == scsi_op_table[i].opcode &&
		      (scsi_op_table[i].usage[scsi_op_table[i].cdb_len - 1] &
		       0x04));
	cmd_free(&c);
}

static void test_removable_medium(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t tur[6] = { SCSI_OP_TEST_UNIT_READY };
	uint8_t eject[6] = { SCSI_OP_START_STOP_UNIT, 0, 0, 0, 0x02 };
	uint8_t load[6] = { SCSI_OP_START_STOP_UNIT, 0, 0, 0, 0x03 };
	uint8_t prevent[6] = { SCSI_OP_PREVENT_ALLOW, 0, 0, 0, 0x01 };
	uint8_t allow[6] = { SCSI_OP_PREVENT_ALLOW };
	uint8_t rd[10] = { SCSI_OP_READ_10, 0, 0, 0, 0, 0, 0, 0, 1, 0 };
	uint8_t inq[6] = { SCSI_OP_INQUIRY, 0, 0, 0, 96 };

	lun_setup();
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	/* Not removable: eject is accepted and changes nothing. */
	cmd_init(&c, &nex_a, eject, 6);
	run(&c);
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);

	lun_set.removable = true;
	cmd_init(&c, &nex_a, inq, 6);
	run(&c);
	CHECK(c.buf[1] & 0x80);				/* RMB */
	cmd_init(&c, &nex_a, eject, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_NOT_READY, ASC_MEDIUM_NOT_PRESENT));
	cmd_init(&c, &nex_b, rd, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_NOT_READY, ASC_MEDIUM_NOT_PRESENT));
	cmd_init(&c, &nex_a, load, 6);
	run(&c);
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);

	/* Prevented by B: A's eject fails; B allows: it works. */
	cmd_init(&c, &nex_b, prevent, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, eject, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_MEDIUM_REMOVAL_PREVENTED));
	cmd_init(&c, &nex_a, load, 6);		/* the tray stays shut too */
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_MEDIUM_REMOVAL_PREVENTED));
	cmd_init(&c, &nex_b, allow, 6);
	run(&c);
	cmd_init(&c, &nex_a, eject, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, load, 6);
	run(&c);

	/* Nexus loss and LUN reset end prevention. */
	cmd_init(&c, &nex_b, prevent, 6);
	run(&c);
	scsi_medium_nexus_lost(&lun, nex_b.id);
	cmd_init(&c, &nex_a, eject, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, load, 6);
	run(&c);
	cmd_init(&c, &nex_a, prevent, 6);
	run(&c);
	scsi_lun_reset_ua(&lun, &nex_a);
	clear_ua(&nex_a);
	cmd_init(&c, &nex_a, eject, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_init(&c, &nex_a, load, 6);
	run(&c);

	/* PREVENT 1xb is not served. */
	prevent[4] = 0x02;
	cmd_init(&c, &nex_a, prevent, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	cmd_free(&c);
}

static void test_settings_default(void)
{
	struct lun_settings s;

	lun_settings_default(&s, 3);
	CHECK(s.lun == 3 && s.block_size == 512 && s.direct &&
	      s.write_cache && s.online && !s.thin_provisioning &&
	      !s.readonly && s.rerror == ERR_POLICY_REPORT &&
	      s.werror == ERR_POLICY_REPORT && s.retry_interval_ms == 1000 &&
	      s.retry_timeout_ms == 0);
	CHECK(!strcmp(s.vendor_id, "HOLDFAST") &&
	      !strcmp(s.product_id, "VIRTUAL-DISK") &&
	      !strcmp(s.product_rev, "0001"));
	CHECK(lun_errno_retryable(s.retry_errors, EIO));
	CHECK(lun_errno_retryable(s.retry_errors, ESHUTDOWN));
	CHECK(lun_errno_retryable(s.retry_errors, EREMOTEIO));
	CHECK(!lun_errno_retryable(s.retry_errors, EINVAL));
	CHECK(!lun_errno_retryable(s.retry_errors, EROFS));
	CHECK(!lun_errno_retryable(s.retry_errors, EPERM));
}

/* A lost nexus's registration is dropped: its pending unit attentions go
 * with it (the id is never reused by the transport; reusing it here shows
 * a fresh registration, POWER ON first), and thousands of short sessions
 * leave nothing behind for a long-lived one to walk past. */
static void test_nexus_lost_drops_registration(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t tur[6] = { SCSI_OP_TEST_UNIT_READY };

	lun_setup();
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	scsi_lun_notify(&lun, SCSI_EV_MODE_CHANGED);
	scsi_medium_nexus_lost(&lun, nex_a.id);
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION, ASC_POWER_ON_RESET),
	      "lost nexus registered afresh");
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_MODE_PARAMETERS_CHANGED), "others keep theirs");
	for (uint64_t id = 100; id < 100 + 10000; id++) {
		struct scsi_nexus nx = { .id = id, .tpgt = 1, .rel_port_id = 1 };

		cmd_init(&c, &nx, tur, 6);
		run(&c);
		scsi_medium_nexus_lost(&lun, id);
	}
	/* the oldest registration survived them all (before, the 4096th
	 * newer one evicted it and it was registered afresh) */
	cmd_init(&c, &nex_b, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD, "nex_b kept its registration");
	cmd_free(&c);
}

int main(void)
{
	test_ua_first_command();
	test_inquiry_standard();
	test_inquiry_vpd();
	test_absent_lun();
	test_mode_sense();
	test_report_luns();
	test_sense_formats();
	test_errno_table();
	test_bad_requests();
	test_report_supported_opcodes();
	test_removable_medium();
	test_settings_default();
	test_nexus_lost_drops_registration();
	scsi_lun_state_free(&lun);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
