/* test_scsi.c - SPC/SBC emulation with a fake LUN and a fake hang engine.
 *
 * hang_submit() is stubbed: it records the media_io so each test completes
 * it on demand with the result it wants.  tgt_lun_list() and
 * reactor_current() are stubbed too.  The stubs are weak: should another
 * object pulled from the archive define one (target.o, reactor.o), its
 * definition wins, so the fixtures below are also valid for the real
 * tgt_lun_list() and reactor_current(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scsi.h"
#include "scsi_internal.h"
#include "target.h"
#include "reactor.h"
#include "util.h"

static int passed, failed;

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (cond) {                                                   \
			passed++;                                             \
		} else {                                                      \
			failed++;                                             \
			fprintf(stderr, "%s:%d: %s: FAILED: %s\n", __FILE__,  \
				__LINE__, __func__, #cond);                   \
		}                                                             \
	} while (0)

/* ---- stubs ---- */
static struct media_io *pending;
static int submits, aborts;

__attribute__((weak)) void hang_submit(struct scsi_lun *lun UNUSED,
				       struct media_io *m)
{
	pending = m;
	submits++;
}

__attribute__((weak)) void hang_abort(struct scsi_lun *lun UNUSED,
				      struct media_io *m)
{
	CHECK(m == pending);
	aborts++;
}

__attribute__((weak)) int hang_lun_init(struct scsi_lun *lun UNUSED)
{
	return 0;
}

__attribute__((weak)) void hang_lun_free(struct scsi_lun *lun UNUSED)
{
}

__attribute__((weak)) struct reactor *reactor_current(void)
{
	return NULL;
}

__attribute__((weak)) int reactor_call(struct reactor *r UNUSED,
					void (*fn)(void *arg), void *arg)
{
	fn(arg);
	return 0;
}

static uint64_t fake_luns[8];
static int fake_nluns;

__attribute__((weak)) int tgt_lun_list(struct target *t UNUSED, uint64_t *luns,
				      int max)
{
	int n = MIN(fake_nluns, max);
	memcpy(luns, fake_luns, sizeof(uint64_t) * (size_t)n);
	return n;
}

/* ---- fixtures ---- */
static struct target tgt;
static struct scsi_lun lun;
static struct scsi_nexus nex_a = { .id = 1, .tpgt = 1, .rel_port_id = 1 };
static struct scsi_nexus nex_b = { .id = 2, .tpgt = 1, .rel_port_id = 1 };
static int done_calls;

static void on_done(struct scsi_cmd *cmd UNUSED)
{
	done_calls++;
}

static void lun_setup(void)
{
	scsi_lun_state_free(&lun);
	memset(&lun, 0, sizeof(lun));
	lun_settings_default(&lun.set, 1);
	lun.nblocks = 2048;
	lun.target = &tgt;
	memset(&tgt, 0, sizeof(tgt));
	pthread_mutex_init(&tgt.lock, NULL);
	snprintf(tgt.name, sizeof(tgt.name), "iqn.2026-01.test:disk");
	tgt.luns[1] = &lun;	/* what the real tgt_lun_list() reads */
	tgt.luns[2] = &lun;
	fake_nluns = 2;
	fake_luns[0] = 1;
	fake_luns[1] = 2;
	pending = NULL;
}

static void cmd_init(struct scsi_cmd *cmd, const struct scsi_nexus *nx,
		     const uint8_t *cdb, unsigned cdb_len)
{
	if (cmd->buf)
		scsi_buf_free(cmd->buf);
	memset(cmd, 0, sizeof(*cmd));
	cmd->target = &tgt;
	cmd->lun = &lun;
	cmd->lun_id = 1;
	cmd->nexus = nx;
	memcpy(cmd->cdb, cdb, cdb_len);
	cmd->cdb_len = 16;
	cmd->exp_len = 65536;
	cmd->done = on_done;
}

/* Execute and expect a synchronous answer. */
static void run(struct scsi_cmd *cmd)
{
	done_calls = 0;
	scsi_cmd_exec(cmd);
	CHECK(done_calls == 1);
}

static void cmd_free(struct scsi_cmd *cmd)
{
	scsi_buf_free(cmd->buf);
	cmd->buf = NULL;
}

/* Clear the power-on unit attention of nexus nx. */
static void clear_ua(const struct scsi_nexus *nx)
{
	struct scsi_cmd c = { 0 };
	uint8_t tur[6] = { SCSI_OP_TEST_UNIT_READY };

	cmd_init(&c, nx, tur, 6);
	run(&c);
	cmd_init(&c, nx, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_free(&c);
}

static uint8_t sense_key(const struct scsi_cmd *c)
{
	return c->sense[0] == 0x72 ? c->sense[1] & 0xf : c->sense[2] & 0xf;
}

static uint16_t sense_asc(const struct scsi_cmd *c)
{
	if (c->sense[0] == 0x72)
		return (uint16_t)(c->sense[2] << 8 | c->sense[3]);
	return (uint16_t)(c->sense[12] << 8 | c->sense[13]);
}

static bool is_check(const struct scsi_cmd *c, uint8_t key, uint16_t asc)
{
	return c->status == SAM_STAT_CHECK_CONDITION && sense_key(c) == key &&
	       sense_asc(c) == asc;
}

/* ---- tests ---- */

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

static void inquiry_vpd(struct scsi_cmd *c, uint8_t page)
{
	uint8_t cdb[6] = { SCSI_OP_INQUIRY, 1, page, 0x04, 0 };

	cmd_init(c, &nex_a, cdb, 6);
	run(c);
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
	lun.set.lun = 2;
	inquiry_vpd(&c, 0x80);
	CHECK(memcmp(sn1, c.buf + 4, 16) != 0);
	snprintf(lun.set.scsi_sn, sizeof(lun.set.scsi_sn), "SN123");
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
	snprintf(lun.set.scsi_id, sizeof(lun.set.scsi_id), "my-disk");
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
	lun.set.thin_provisioning = true;
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

static void test_read_capacity(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t rc10[10] = { SCSI_OP_READ_CAPACITY_10 };
	uint8_t rc16[16] = { SCSI_OP_SERVICE_ACTION_IN_16,
			     SCSI_SAI_READ_CAPACITY_16 };

	lun_setup();
	clear_ua(&nex_a);
	cmd_init(&c, &nex_a, rc10, 10);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 8);
	CHECK(get_be32(c.buf) == 2047 && get_be32(c.buf + 4) == 512);

	lun.nblocks = 0x200000000ull;
	cmd_init(&c, &nex_a, rc10, 10);
	run(&c);
	CHECK(get_be32(c.buf) == 0xffffffff);

	put_be32(rc16 + 10, 32);
	cmd_init(&c, &nex_a, rc16, 16);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 32);
	CHECK(get_be64(c.buf) == 0x1ffffffffull);
	CHECK(get_be32(c.buf + 8) == 512);
	CHECK((c.buf[13] & 0xf) == 3);		/* 8 blocks per 4K physical */
	CHECK(c.buf[14] == 0);
	lun.set.thin_provisioning = true;
	cmd_init(&c, &nex_a, rc16, 16);
	run(&c);
	CHECK(c.buf[14] & 0x80);

	/* Allocation length 12 cuts the answer. */
	put_be32(rc16 + 10, 12);
	cmd_init(&c, &nex_a, rc16, 16);
	run(&c);
	CHECK(c.in_len == 12);

	/* LBA without PMI is an invalid field. */
	rc10[5] = 1;
	cmd_init(&c, &nex_a, rc10, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));

	/* Unknown SERVICE ACTION IN service action: invalid opcode. */
	rc16[1] = 0x1f;
	cmd_init(&c, &nex_a, rc16, 16);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_INVALID_OPCODE));
	cmd_free(&c);
}

/* Find mode page `page` in a MODE SENSE answer. */
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

	lun.set.write_cache = false;
	lun.set.readonly = true;
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
	lun.set.sense_desc = true;
	cmd_init(&c, &nex_a, ms6, 6);
	run(&c);
	p = mode_find(c.buf, c.in_len, false, 0x0a);
	CHECK(p && (p[2] & 0x04));
	lun.set.sense_desc = false;

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

	lun.set.sense_desc = true;
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
	lun.set.sense_desc = false;
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
	lun.set.sense_desc = true;
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
	lun.set.readonly = true;
	uint8_t wr[10] = { SCSI_OP_WRITE_10, 0, 0, 0, 0, 0, 0, 0, 1, 0 };
	cmd_init(&c, &nex_a, wr, 10);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = 512;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_DATA_PROTECT, ASC_WRITE_PROTECTED));
	CHECK(submits == 0);

	/* Offline LUN: NOT READY. */
	lun.set.online = false;
	uint8_t tur[6] = { 0 };
	cmd_init(&c, &nex_a, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_CHECK_CONDITION &&
	      sense_key(&c) == SENSE_KEY_NOT_READY);
	cmd_free(&c);
}

static void test_media_io(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t rd[10] = { SCSI_OP_READ_10, 0, 0, 0, 0, 10, 0, 0, 4, 0 };
	uint8_t wr[16] = { SCSI_OP_WRITE_16, 0x08 };

	lun_setup();
	clear_ua(&nex_a);
	submits = 0;
	atomic_store(&lun.seq, 5);

	cmd_init(&c, &nex_a, rd, 10);
	done_calls = 0;
	scsi_cmd_exec(&c);
	CHECK(done_calls == 0 && submits == 1 && pending == &c.mio);
	CHECK(c.mio.io.op == BE_OP_READ && c.mio.io.offset == 10 * 512 &&
	      c.mio.io.length == 2048 && c.mio.io.iovcnt == 1 &&
	      c.mio.io.iov[0].iov_base == c.buf &&
	      c.mio.io.iov[0].iov_len == 2048);
	CHECK(c.mio.seq == 5 && atomic_load(&lun.seq) == 6);
	CHECK(c.mio.owner == &c && c.mio.complete);
	CHECK(((uintptr_t)c.buf & 4095) == 0);
	memset(c.buf, 0xab, 2048);
	c.mio.complete(&c.mio, 0);
	CHECK(done_calls == 1 && c.status == SAM_STAT_GOOD &&
	      c.in_len == 2048 && c.buf[2047] == 0xab);
	CHECK(atomic_load(&lun.reads) == 1 &&
	      atomic_load(&lun.read_bytes) == 2048);

	/* READ(6): transfer length 0 means 256 blocks. */
	uint8_t rd6[6] = { SCSI_OP_READ_6, 0, 0, 1, 0 };
	cmd_init(&c, &nex_a, rd6, 6);
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && c.mio.io.offset == 512 &&
	      c.mio.io.length == 256 * 512);
	c.mio.complete(&c.mio, -EIO);
	CHECK(is_check(&c, SENSE_KEY_MEDIUM_ERROR,
		       ASC_UNRECOVERED_READ_ERROR));
	CHECK(c.in_len == 0 && get_be32(c.sense + 3) == 1);

	/* WRITE(16) with FUA. */
	put_be64(wr + 2, 100);
	put_be32(wr + 10, 2);
	cmd_init(&c, &nex_a, wr, 16);
	c.buf = scsi_buf_alloc(1024);
	c.buf_len = c.out_len = 1024;
	done_calls = 0;
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && c.mio.io.op == BE_OP_WRITE &&
	      (c.mio.io.flags & BE_IO_FUA) && c.mio.io.offset == 100 * 512 &&
	      c.mio.io.length == 1024);
	c.mio.complete(&c.mio, 0);
	CHECK(done_calls == 1 && c.status == SAM_STAT_GOOD && c.in_len == 0);
	CHECK(atomic_load(&lun.writes) == 1 &&
	      atomic_load(&lun.write_bytes) == 1024);

	/* Without FUA but with the write cache off, still FUA. */
	wr[1] = 0;
	lun.set.write_cache = false;
	cmd_init(&c, &nex_a, wr, 16);
	c.buf = scsi_buf_alloc(1024);
	c.buf_len = c.out_len = 1024;
	scsi_cmd_exec(&c);
	CHECK(c.mio.io.flags & BE_IO_FUA);
	c.mio.complete(&c.mio, -ENOSPC);
	CHECK(is_check(&c, SENSE_KEY_DATA_PROTECT,
		       ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT));
	lun.set.write_cache = true;

	/* Fewer Data-Out bytes than the CDB asks for: whole blocks only. */
	cmd_init(&c, &nex_a, wr, 16);
	c.buf = scsi_buf_alloc(1024);
	c.buf_len = 1024;
	c.out_len = 700;
	scsi_cmd_exec(&c);
	CHECK(c.mio.io.length == 512 && !(c.mio.io.flags & BE_IO_FUA));
	CHECK(c.out_want == 1024);
	c.mio.complete(&c.mio, 0);

	/* SYNCHRONIZE CACHE(10) flushes. */
	uint8_t sc[10] = { SCSI_OP_SYNCHRONIZE_CACHE_10 };
	cmd_init(&c, &nex_a, sc, 10);
	done_calls = 0;
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && c.mio.io.op == BE_OP_FLUSH);
	c.mio.complete(&c.mio, -EIO);
	CHECK(done_calls == 1 && is_check(&c, SENSE_KEY_MEDIUM_ERROR,
					  ASC_WRITE_ERROR));
	sc[5] = 0xff;
	sc[4] = 0xff;
	cmd_init(&c, &nex_a, sc, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	cmd_free(&c);
}

static void test_verify(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t v10[10] = { SCSI_OP_VERIFY_10, 0x02, 0, 0, 0, 4, 0, 0, 2, 0 };

	lun_setup();
	clear_ua(&nex_a);

	/* BYTCHK=1, equal: reads the blocks into a scratch buffer. */
	cmd_init(&c, &nex_a, v10, 10);
	c.buf = scsi_buf_alloc(1024);
	c.buf_len = c.out_len = 1024;
	memset(c.buf, 0x11, 1024);
	done_calls = 0;
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && c.mio.io.op == BE_OP_READ &&
	      c.mio.io.offset == 4 * 512 && c.mio.io.length == 1024 &&
	      c.mio.io.iov[0].iov_base != c.buf && c.out_want == 1024);
	memset(c.mio.io.iov[0].iov_base, 0x11, 1024);
	c.mio.complete(&c.mio, 0);
	CHECK(done_calls == 1 && c.status == SAM_STAT_GOOD && c.in_len == 0);

	/* Miscompare at byte 700. */
	cmd_init(&c, &nex_a, v10, 10);
	c.buf = scsi_buf_alloc(1024);
	c.buf_len = c.out_len = 1024;
	memset(c.buf, 0x11, 1024);
	scsi_cmd_exec(&c);
	memset(c.mio.io.iov[0].iov_base, 0x11, 1024);
	((uint8_t *)c.mio.io.iov[0].iov_base)[700] = 0x12;
	c.mio.complete(&c.mio, 0);
	CHECK(is_check(&c, SENSE_KEY_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY));
	CHECK((c.sense[0] & 0x80) && get_be32(c.sense + 3) == 700);

	/* BYTCHK=3: one block compared with each. */
	v10[1] = 0x06;
	cmd_init(&c, &nex_a, v10, 10);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = 512;
	memset(c.buf, 0x22, 512);
	scsi_cmd_exec(&c);
	CHECK(c.out_want == 512);
	memset(c.mio.io.iov[0].iov_base, 0x22, 1024);
	c.mio.complete(&c.mio, 0);
	CHECK(c.status == SAM_STAT_GOOD);

	/* BYTCHK=0: medium check only; a read error is reported. */
	v10[1] = 0;
	cmd_init(&c, &nex_a, v10, 10);
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && c.out_want == 0);
	c.mio.complete(&c.mio, -EIO);
	CHECK(is_check(&c, SENSE_KEY_MEDIUM_ERROR,
		       ASC_UNRECOVERED_READ_ERROR));

	/* Aborted while reading: TASK ABORTED, scratch freed (ASan). */
	cmd_init(&c, &nex_a, v10, 10);
	done_calls = 0;
	scsi_cmd_exec(&c);
	scsi_cmd_abort(&c);
	c.mio.complete(&c.mio, -ECANCELED);
	CHECK(done_calls == 1 && c.status == SAM_STAT_TASK_ABORTED);

	/* Too little Data-Out for BYTCHK=1; reserved BYTCHK 2; range. */
	v10[1] = 0x02;
	cmd_init(&c, &nex_a, v10, 10);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = 512;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	v10[1] = 0x04;
	cmd_init(&c, &nex_a, v10, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	uint8_t v16[16] = { SCSI_OP_VERIFY_16 };
	put_be64(v16 + 2, 2047);
	put_be32(v16 + 10, 2);
	cmd_init(&c, &nex_a, v16, 16);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));

	/* WRITE AND VERIFY is a FUA write. */
	uint8_t wv[12] = { SCSI_OP_WRITE_VERIFY_12, 0x02, 0, 0, 0, 8,
			   0, 0, 0, 1 };
	cmd_init(&c, &nex_a, wv, 12);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = 512;
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && c.mio.io.op == BE_OP_WRITE &&
	      (c.mio.io.flags & BE_IO_FUA) && c.mio.io.offset == 8 * 512);
	c.mio.complete(&c.mio, 0);
	CHECK(c.status == SAM_STAT_GOOD);

	/* PRE-FETCH: range check only. */
	uint8_t pf[10] = { SCSI_OP_PRE_FETCH_10, 0, 0, 0, 0, 0, 0, 0, 8, 0 };
	cmd_init(&c, &nex_a, pf, 10);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	pf[4] = 0x08;
	cmd_init(&c, &nex_a, pf, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	cmd_free(&c);
}

static void test_provisioning(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t um[10] = { SCSI_OP_UNMAP, 0, 0, 0, 0, 0, 0, 0, 56, 0 };
	uint8_t ws16[16] = { SCSI_OP_WRITE_SAME_16, 0x08 };
	uint8_t *p;

	lun_setup();
	clear_ua(&nex_a);

	/* Not thin: UNMAP is not a supported command; B2 says so. */
	cmd_init(&c, &nex_a, um, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_INVALID_OPCODE));
	inquiry_vpd(&c, 0xb2);
	CHECK(c.buf[5] == 0 && c.buf[6] == 0);
	inquiry_vpd(&c, 0xb0);
	CHECK(c.buf[4] == 1 && get_be32(c.buf + 20) == 0 &&
	      get_be32(c.buf + 24) == 0 &&
	      get_be64(c.buf + 36) == SBC_MAX_TRANSFER_BYTES / 512);

	/* WRITE SAME with UNMAP on a fully provisioned LUN: invalid. */
	put_be64(ws16 + 2, 64);
	put_be32(ws16 + 10, 32);
	cmd_init(&c, &nex_a, ws16, 16);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = c.exp_len = 512;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));

	lun.set.thin_provisioning = true;
	inquiry_vpd(&c, 0xb2);
	CHECK(c.buf[5] == 0xe4 && c.buf[6] == 2);
	inquiry_vpd(&c, 0xb0);
	CHECK(get_be32(c.buf + 20) == 0xffffffff &&
	      get_be32(c.buf + 24) == SBC_MAX_UNMAP_DESCRIPTORS &&
	      get_be32(c.buf + 28) == 8);

	/* Two descriptors (and an empty one) run one after the other. */
	cmd_init(&c, &nex_a, um, 10);
	p = c.buf = scsi_buf_alloc(56);
	c.buf_len = c.out_len = 56;
	put_be16(p, 54);
	put_be16(p + 2, 48);
	put_be64(p + 8, 16);
	put_be32(p + 16, 8);
	put_be64(p + 24, 100);
	put_be32(p + 32, 0);
	put_be64(p + 40, 2000);
	put_be32(p + 48, 48);
	done_calls = 0;
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && c.mio.io.op == BE_OP_UNMAP &&
	      c.mio.io.offset == 16 * 512 && c.mio.io.length == 8 * 512);
	CHECK(c.out_want == 56);
	struct media_io *first = pending;
	c.mio.complete(&c.mio, 0);
	CHECK(done_calls == 0 && pending == first &&
	      c.mio.io.op == BE_OP_UNMAP && c.mio.io.offset == 2000 * 512 &&
	      c.mio.io.length == 48 * 512);
	c.mio.complete(&c.mio, 0);
	CHECK(done_calls == 1 && c.status == SAM_STAT_GOOD);

	/* A failing descriptor ends it with the write-side sense. */
	cmd_init(&c, &nex_a, um, 10);
	p = c.buf = scsi_buf_alloc(56);
	c.buf_len = c.out_len = 56;
	put_be16(p + 2, 16);
	put_be64(p + 8, 1);
	put_be32(p + 16, 1);
	scsi_cmd_exec(&c);
	c.mio.complete(&c.mio, -ENOSPC);
	CHECK(is_check(&c, SENSE_KEY_DATA_PROTECT,
		       ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT));

	/* Out of range descriptor, short parameter list, zero length. */
	cmd_init(&c, &nex_a, um, 10);
	p = c.buf = scsi_buf_alloc(56);
	c.buf_len = c.out_len = 56;
	put_be16(p + 2, 16);
	put_be64(p + 8, 2040);
	put_be32(p + 16, 9);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	um[8] = 4;
	cmd_init(&c, &nex_a, um, 10);
	c.buf = scsi_buf_alloc(4);
	c.buf_len = c.out_len = 4;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_PARAMETER_LIST_LENGTH_ERROR));
	um[8] = 0;
	cmd_init(&c, &nex_a, um, 10);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);

	/* WRITE SAME(16) UNMAP with zeroes on a thin LUN deallocates. */
	put_be64(ws16 + 2, 64);
	put_be32(ws16 + 10, 32);
	cmd_init(&c, &nex_a, ws16, 16);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = c.exp_len = 512;
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && c.mio.io.op == BE_OP_UNMAP &&
	      c.mio.io.offset == 64 * 512 && c.mio.io.length == 32 * 512);
	c.mio.complete(&c.mio, 0);
	CHECK(c.status == SAM_STAT_GOOD);
	/* Without UNMAP: write zeroes. */
	ws16[1] = 0;
	cmd_init(&c, &nex_a, ws16, 16);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = c.exp_len = 512;
	scsi_cmd_exec(&c);
	CHECK(c.mio.io.op == BE_OP_WRITE_ZEROES);
	c.mio.complete(&c.mio, 0);
	/* A pattern is written block by block into one buffer. */
	uint8_t ws10[10] = { SCSI_OP_WRITE_SAME_10, 0x08, 0, 0, 0, 8, 0, 0, 3,
			     0 };
	cmd_init(&c, &nex_a, ws10, 10);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = c.exp_len = 512;
	memset(c.buf, 0x5a, 512);
	scsi_cmd_exec(&c);
	CHECK(c.mio.io.op == BE_OP_WRITE && c.mio.io.length == 3 * 512 &&
	      c.mio.io.offset == 8 * 512 &&
	      ((uint8_t *)c.mio.io.iov[0].iov_base)[3 * 512 - 1] == 0x5a);
	c.mio.complete(&c.mio, 0);
	CHECK(c.status == SAM_STAT_GOOD);
	/* Two blocks of Data-Out for a one-block pattern: refused. */
	cmd_init(&c, &nex_a, ws10, 10);
	c.buf = scsi_buf_alloc(1024);
	c.buf_len = c.out_len = 1024;
	c.exp_len = 1024;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	/* WSNZ: zero blocks refused; range checked; read-only refused. */
	ws10[8] = 0;
	cmd_init(&c, &nex_a, ws10, 10);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = c.exp_len = 512;
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	ws10[5] = 0xff;
	ws10[4] = 0x07;
	ws10[8] = 2;
	cmd_init(&c, &nex_a, ws10, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	lun.set.readonly = true;
	cmd_init(&c, &nex_a, ws10, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_DATA_PROTECT, ASC_WRITE_PROTECTED));
	cmd_free(&c);
}

static int caw_done_a, caw_done_b;
static void on_done_a(struct scsi_cmd *cmd UNUSED) { caw_done_a++; }
static void on_done_b(struct scsi_cmd *cmd UNUSED) { caw_done_b++; }

static void caw_init(struct scsi_cmd *c, const struct scsi_nexus *nx,
		     uint64_t lba, uint8_t cmpv, uint8_t wrv)
{
	uint8_t cdb[16] = { SCSI_OP_COMPARE_AND_WRITE };

	put_be64(cdb + 2, lba);
	cdb[13] = 1;
	cmd_init(c, nx, cdb, 16);
	c->buf = scsi_buf_alloc(1024);
	c->buf_len = c->out_len = c->exp_len = 1024;
	memset(c->buf, cmpv, 512);
	memset(c->buf + 512, wrv, 512);
}

static void test_compare_and_write(void)
{
	struct scsi_cmd a = { 0 }, b = { 0 }, c = { 0 };

	lun_setup();
	clear_ua(&nex_a);
	clear_ua(&nex_b);

	/* Equal: read, then write of the second half. */
	caw_init(&a, &nex_a, 5, 0x00, 0x01);
	done_calls = 0;
	scsi_cmd_exec(&a);
	CHECK(pending == &a.mio && a.mio.io.op == BE_OP_READ &&
	      a.mio.io.offset == 5 * 512 && a.mio.io.length == 512);
	memset(a.mio.io.iov[0].iov_base, 0x00, 512);
	a.mio.complete(&a.mio, 0);
	CHECK(done_calls == 0 && pending == &a.mio &&
	      a.mio.io.op == BE_OP_WRITE && a.mio.io.offset == 5 * 512 &&
	      a.mio.io.iov[0].iov_base == a.buf + 512);
	a.mio.complete(&a.mio, 0);
	CHECK(done_calls == 1 && a.status == SAM_STAT_GOOD);

	/* Different at byte 3: MISCOMPARE, nothing written. */
	caw_init(&a, &nex_a, 5, 0x00, 0x01);
	done_calls = 0;
	scsi_cmd_exec(&a);
	memset(a.mio.io.iov[0].iov_base, 0x00, 512);
	((uint8_t *)a.mio.io.iov[0].iov_base)[3] = 9;
	a.mio.complete(&a.mio, 0);
	CHECK(done_calls == 1 && is_check(&a, SENSE_KEY_MISCOMPARE,
					  ASC_MISCOMPARE_DURING_VERIFY));
	CHECK(get_be32(a.sense + 3) == 3);

	/* Two at once from two nexuses: the second waits its turn. */
	caw_init(&a, &nex_a, 7, 0x00, 0x01);
	a.done = on_done_a;
	caw_init(&b, &nex_b, 7, 0x01, 0x00);
	b.done = on_done_b;
	caw_done_a = caw_done_b = 0;
	submits = 0;
	scsi_cmd_exec(&a);
	scsi_cmd_exec(&b);
	CHECK(submits == 1 && pending == &a.mio && caw_done_b == 0);
	/* A third one is aborted while queued: answered at once. */
	caw_init(&c, &nex_b, 7, 0x01, 0x00);
	done_calls = 0;
	scsi_cmd_exec(&c);
	scsi_cmd_abort(&c);
	CHECK(done_calls == 1 && c.status == SAM_STAT_TASK_ABORTED);
	memset(a.mio.io.iov[0].iov_base, 0x00, 512);
	a.mio.complete(&a.mio, 0);			/* compare ok */
	CHECK(pending == &a.mio && a.mio.io.op == BE_OP_WRITE);
	a.mio.complete(&a.mio, 0);			/* written: unlock */
	CHECK(caw_done_a == 1 && a.status == SAM_STAT_GOOD);
	CHECK(pending == &b.mio && b.mio.io.op == BE_OP_READ && submits == 3);
	memset(b.mio.io.iov[0].iov_base, 0x01, 512);
	b.mio.complete(&b.mio, 0);
	b.mio.complete(&b.mio, 0);
	CHECK(caw_done_b == 1 && b.status == SAM_STAT_GOOD);
	/* The lock is free again. */
	caw_init(&a, &nex_a, 7, 0x00, 0x01);
	submits = 0;
	scsi_cmd_exec(&a);
	CHECK(submits == 1 && pending == &a.mio);
	scsi_cmd_abort(&a);
	a.mio.complete(&a.mio, -ECANCELED);
	CHECK(a.status == SAM_STAT_TASK_ABORTED);
	caw_init(&a, &nex_a, 7, 0x00, 0x01);
	submits = 0;
	scsi_cmd_exec(&a);
	CHECK(submits == 1);
	a.mio.complete(&a.mio, -EIO);
	CHECK(is_check(&a, SENSE_KEY_MEDIUM_ERROR,
		       ASC_UNRECOVERED_READ_ERROR));

	/* Data-Out must be exactly both halves. */
	caw_init(&a, &nex_a, 7, 0x00, 0x01);
	a.out_len = a.exp_len = 512;
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	caw_init(&a, &nex_a, 7, 0x00, 0x01);
	a.cdb[13] = 0;			/* 256 wrapped to 0, with data */
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	caw_init(&a, &nex_a, 7, 0x00, 0x01);
	a.cdb[13] = 0;
	a.out_len = a.exp_len = 0;
	run(&a);
	CHECK(a.status == SAM_STAT_GOOD);
	caw_init(&a, &nex_a, 2047, 0x00, 0x01);
	a.cdb[13] = 2;
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	cmd_free(&a);
	cmd_free(&b);
	cmd_free(&c);
}

static void test_abort(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t rd[10] = { SCSI_OP_READ_10, 0, 0, 0, 0, 10, 0, 0, 4, 0 };

	lun_setup();
	clear_ua(&nex_a);
	aborts = 0;

	/* In the backend: hang_abort, then TASK ABORTED on completion. */
	cmd_init(&c, &nex_a, rd, 10);
	done_calls = 0;
	scsi_cmd_exec(&c);
	scsi_cmd_abort(&c);
	CHECK(aborts == 1 && done_calls == 0);
	scsi_cmd_abort(&c);
	CHECK(aborts == 1);
	c.mio.complete(&c.mio, -ECANCELED);
	CHECK(done_calls == 1 && c.status == SAM_STAT_TASK_ABORTED &&
	      c.in_len == 0 && c.sense_len == 0);
	scsi_cmd_abort(&c);
	CHECK(done_calls == 1);

	/* Its attempt finished anyway: still TASK ABORTED. */
	cmd_init(&c, &nex_a, rd, 10);
	done_calls = 0;
	scsi_cmd_exec(&c);
	scsi_cmd_abort(&c);
	c.mio.complete(&c.mio, 0);
	CHECK(done_calls == 1 && c.status == SAM_STAT_TASK_ABORTED);

	/* Not executed yet: done() at once, exec afterwards is a no-op. */
	cmd_init(&c, &nex_a, rd, 10);
	done_calls = 0;
	scsi_cmd_abort(&c);
	CHECK(done_calls == 1 && c.status == SAM_STAT_TASK_ABORTED);
	scsi_cmd_exec(&c);
	CHECK(done_calls == 1);
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
	/* UNMAP is listed only on a thin LUN. */
	lun.set.thin_provisioning = true;
	rsoc(&c, 0, 0, 0);
	CHECK(c.status == SAM_STAT_GOOD &&
	      get_be32(c.buf) == scsi_op_table_len * 8);
	lun.set.thin_provisioning = false;
	rsoc(&c, 0, 0, 0);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(get_be32(c.buf) == (scsi_op_table_len - 1) * 8 &&
	      c.in_len == 4 + (scsi_op_table_len - 1) * 8);
	bool seen_read10 = false, seen_rc16 = false;
	for (uint32_t off = 4; off < c.in_len; off += 8) {
		if (c.buf[off] == SCSI_OP_READ_10)
			seen_read10 = get_be16(c.buf + off + 6) == 10 &&
				      c.buf[off + 5] == 0;
		if (c.buf[off] == SCSI_OP_SERVICE_ACTION_IN_16)
			seen_rc16 = get_be16(c.buf + off + 2) == 0x10 &&
				    c.buf[off + 5] == 1;
	}
	CHECK(seen_read10 && seen_rc16);
	/* RCTD adds a command timeouts descriptor to each. */
	rsoc(&c, 0x80, 0, 0);
	CHECK(c.status == SAM_STAT_GOOD &&
	      get_be32(c.buf) == (scsi_op_table_len - 1) * 20 &&
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

int main(void)
{
	test_ua_first_command();
	test_inquiry_standard();
	test_inquiry_vpd();
	test_absent_lun();
	test_read_capacity();
	test_mode_sense();
	test_report_luns();
	test_sense_formats();
	test_errno_table();
	test_bad_requests();
	test_media_io();
	test_abort();
	test_verify();
	test_provisioning();
	test_compare_and_write();
	test_report_supported_opcodes();
	test_settings_default();
	scsi_lun_state_free(&lun);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
