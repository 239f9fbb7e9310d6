/* test_scsi_sbc.c - SBC emulation with a fake LUN and a stubbed hang
 * engine (scsi_fake.h): READ CAPACITY, media I/O through hang_submit()
 * (reads, writes, FUA, residual Data-Out, SYNCHRONIZE CACHE, backend
 * errors), abort, VERIFY / WRITE AND VERIFY / PRE-FETCH, thin provisioning
 * (UNMAP, WRITE SAME) and COMPARE AND WRITE. */
#include "scsi_fake.h"

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
	lun_set.thin_provisioning = true;
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
	lun_set.write_cache = false;
	cmd_init(&c, &nex_a, wr, 16);
	c.buf = scsi_buf_alloc(1024);
	c.buf_len = c.out_len = 1024;
	scsi_cmd_exec(&c);
	CHECK(c.mio.io.flags & BE_IO_FUA);
	c.mio.complete(&c.mio, -ENOSPC);
	CHECK(is_check(&c, SENSE_KEY_DATA_PROTECT,
		       ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT));
	lun_set.write_cache = true;

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

	lun_set.thin_provisioning = true;
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
	lun_set.readonly = true;
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


/* Buffers the SCSI layer allocates for a command are charged to the
 * transport first (scsi_cmd.buf_charge, README "Limits and slow peers"):
 * a Data-In longer than what the transport counted, VERIFY's scratch,
 * WRITE SAME's pattern, COMPARE AND WRITE's compare buffer.  Refused:
 * TASK SET FULL, nothing submitted. */
static uint64_t charged;
static bool charge_ok;

static bool fake_charge(struct scsi_cmd *cmd UNUSED, uint32_t len)
{
	if (!charge_ok)
		return false;
	charged += len;
	return true;
}

static void charge_init(struct scsi_cmd *c, const uint8_t *cdb,
			unsigned len, uint32_t counted)
{
	cmd_init(c, &nex_a, cdb, len);
	c->buf_counted = counted;
	c->buf_charge = fake_charge;
	charged = 0;
}

static void test_buffer_charges(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t rd[10] = { SCSI_OP_READ_10, 0, 0, 0, 0, 10, 0, 0, 4, 0 };
	uint8_t v10[10] = { SCSI_OP_VERIFY_10, 0, 0, 0, 0, 4, 0, 0, 8, 0 };
	uint8_t ws10[10] = { SCSI_OP_WRITE_SAME_10, 0, 0, 0, 0, 8, 0, 0, 3,
			     0 };

	lun_setup();
	clear_ua(&nex_a);
	charge_ok = true;

	/* a READ within what the transport counted: nothing more */
	charge_init(&c, rd, 10, 2048);
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && charged == 0);
	c.mio.complete(&c.mio, 0);
	/* its CDB asks for more than the expected length counted */
	charge_init(&c, rd, 10, 512);
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && charged == 1536, "charged %lu",
	      (unsigned long)charged);
	c.mio.complete(&c.mio, 0);
	charge_ok = false;
	charge_init(&c, rd, 10, 512);
	pending = NULL;
	run(&c);
	CHECK(c.status == SAM_STAT_TASK_SET_FULL && !pending);
	charge_ok = true;

	/* VERIFY (BYTCHK 0) reads 8 blocks into a scratch buffer */
	charge_init(&c, v10, 10, 0);
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && charged == 8 * 512, "charged %lu",
	      (unsigned long)charged);
	c.mio.complete(&c.mio, 0);
	CHECK(c.status == SAM_STAT_GOOD);
	charge_ok = false;
	charge_init(&c, v10, 10, 0);
	pending = NULL;
	run(&c);
	CHECK(c.status == SAM_STAT_TASK_SET_FULL && !pending);
	charge_ok = true;

	/* WRITE SAME: one block of Data-Out, a 3-block pattern buffer */
	charge_init(&c, ws10, 10, 512);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = c.exp_len = 512;
	memset(c.buf, 0x5a, 512);
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && charged == 3 * 512, "charged %lu",
	      (unsigned long)charged);
	c.mio.complete(&c.mio, 0);
	CHECK(c.status == SAM_STAT_GOOD);
	charge_ok = false;
	charge_init(&c, ws10, 10, 512);
	c.buf = scsi_buf_alloc(512);
	c.buf_len = c.out_len = c.exp_len = 512;
	memset(c.buf, 0x5a, 512);
	pending = NULL;
	run(&c);
	CHECK(c.status == SAM_STAT_TASK_SET_FULL && !pending);
	charge_ok = true;

	/* COMPARE AND WRITE: the blocks read to compare */
	caw_init(&c, &nex_a, 5, 0x00, 0x01);
	c.buf_counted = 1024;
	c.buf_charge = fake_charge;
	charged = 0;
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio && charged == 512, "charged %lu",
	      (unsigned long)charged);
	memset(c.mio.io.iov[0].iov_base, 0x00, 512);
	c.mio.complete(&c.mio, 0);
	c.mio.complete(&c.mio, 0);
	CHECK(c.status == SAM_STAT_GOOD);
	charge_ok = false;
	caw_init(&c, &nex_a, 5, 0x00, 0x01);
	c.buf_counted = 1024;
	c.buf_charge = fake_charge;
	pending = NULL;
	run(&c);
	CHECK(c.status == SAM_STAT_TASK_SET_FULL && !pending);
	/* the lock was given back: the next one runs */
	charge_ok = true;
	caw_init(&c, &nex_a, 5, 0x00, 0x01);
	scsi_cmd_exec(&c);
	CHECK(pending == &c.mio);
	memset(c.mio.io.iov[0].iov_base, 0x00, 512);
	c.mio.complete(&c.mio, 0);
	c.mio.complete(&c.mio, 0);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_free(&c);
}

int main(void)
{
	test_read_capacity();
	test_media_io();
	test_abort();
	test_verify();
	test_provisioning();
	test_compare_and_write();
	test_buffer_charges();
	scsi_lun_state_free(&lun);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
