/* test_scsi_more.c - GET LBA STATUS, READ DEFECT DATA(10/12), ORWRITE(16)
 * and WRITE ATOMIC(16) with the fake LUN and stubbed hang engine of
 * scsi_fake.h, plus a fake backend whose block_status() answers from a
 * per-block map (true = data). */
#include "scsi_fake.h"

/* ---- fake backend: block_status only ---- */
static bool fake_map[2048];	/* per 512-byte block of the fake LUN */
static int fake_bs_err;		/* non-zero: block_status returns it */
static int fake_bs_calls;

static int fake_block_status(struct backend *be UNUSED, uint64_t offset,
			     uint64_t len, uint64_t *extent)
{
	uint64_t blk = offset / 512, n = 0;

	fake_bs_calls++;
	if (fake_bs_err)
		return fake_bs_err;
	if (blk >= ARRAY_SIZE(fake_map))
		return -EINVAL;
	bool st = fake_map[blk];
	while (blk + n < ARRAY_SIZE(fake_map) && fake_map[blk + n] == st &&
	       (n + 1) * 512 <= len)
		n++;
	*extent = n * 512;
	return st ? 1 : 0;
}

static const struct backend_ops fake_ops = {
	.name = "fake",
	.block_status = fake_block_status,
};
static struct backend fake_be = { .ops = &fake_ops, .size = 2048 * 512 };

/* A store that learns of many extents per question (a gateway asking
 * its SAN): block_status_async answers at once, with the extents that
 * follow in io->ext, as many as the caller has room for. */
static unsigned fake_many_ext_max;	/* the last question's ext_max */

static int fake_many_status(struct backend *be, struct be_io *io,
			    struct reactor *r UNUSED)
{
	uint64_t ext, pos, end = io->offset + io->length;
	int res = fake_block_status(be, io->offset, io->length, &ext);

	fake_many_ext_max = io->ext_max;
	if (res < 0)
		return res;
	io->length = ext;
	pos = io->offset + ext;
	io->ext_n = 0;
	while (io->ext_n < io->ext_max && pos < end) {
		uint64_t e;
		int st = fake_block_status(be, pos, end - pos, &e);

		fake_bs_calls--;	/* one question, however many */
		io->ext[io->ext_n].length = e;
		io->ext[io->ext_n].status = st;
		io->ext_n++;
		pos += e;
	}
	return res;
}

static const struct backend_ops fake_many_ops = {
	.name = "fake-many",
	.block_status_async = fake_many_status,
};
static struct backend fake_many_be = { .ops = &fake_many_ops,
				       .size = 2048 * 512 };

static void more_setup(bool thin)
{
	lun_setup();
	lun.be = &fake_be;
	lun_set.thin_provisioning = thin;
	for (unsigned i = 0; i < ARRAY_SIZE(fake_map); i++)
		fake_map[i] = true;
	fake_bs_err = 0;
	fake_bs_calls = 0;
	clear_ua(&nex_a);
	clear_ua(&nex_b);
}

static void gls(struct scsi_cmd *c, uint64_t lba, uint32_t alloc)
{
	uint8_t cdb[16] = { SCSI_OP_SERVICE_ACTION_IN_16,
			    SCSI_SAI_GET_LBA_STATUS };

	put_be64(cdb + 2, lba);
	put_be32(cdb + 10, alloc);
	cmd_init(c, &nex_a, cdb, 16);
	run(c);
}

/* Descriptor i of a GET LBA STATUS answer. */
static uint64_t d_lba(const struct scsi_cmd *c, unsigned i)
{
	return get_be64(c->buf + 8 + 16 * i);
}

static uint32_t d_n(const struct scsi_cmd *c, unsigned i)
{
	return get_be32(c->buf + 8 + 16 * i + 8);
}

static uint8_t d_st(const struct scsi_cmd *c, unsigned i)
{
	return c->buf[8 + 16 * i + 12] & 0xf;
}

static void test_get_lba_status(void)
{
	struct scsi_cmd c = { 0 };

	/* Fully provisioned: everything mapped, whatever the backend says,
	 * and the backend is not even asked. */
	more_setup(false);
	memset(fake_map, 0, sizeof(fake_map));
	gls(&c, 10, 24);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 24);
	CHECK(get_be32(c.buf) == 20 && d_lba(&c, 0) == 10 &&
	      d_n(&c, 0) == 2038 && d_st(&c, 0) == 0);
	CHECK(fake_bs_calls == 0);

	/* Thin: holes are deallocated; runs become descriptors. */
	more_setup(true);
	for (unsigned i = 100; i < 108; i++)
		fake_map[i] = false;
	gls(&c, 96, 1024);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(get_be32(c.buf) == 4 + 3 * 16 && c.in_len == 8 + 3 * 16);
	CHECK(d_lba(&c, 0) == 96 && d_n(&c, 0) == 4 && d_st(&c, 0) == 0);
	CHECK(d_lba(&c, 1) == 100 && d_n(&c, 1) == 8 && d_st(&c, 1) == 1);
	CHECK(d_lba(&c, 2) == 108 && d_n(&c, 2) == 2048 - 108 &&
	      d_st(&c, 2) == 0);
	/* Starting inside the hole. */
	gls(&c, 104, 1024);
	CHECK(d_lba(&c, 0) == 104 && d_n(&c, 0) == 4 && d_st(&c, 0) == 1);
	/* The allocation length bounds the descriptors (24: just one). */
	gls(&c, 96, 24);
	CHECK(c.in_len == 24 && get_be32(c.buf) == 20 && d_n(&c, 0) == 4);
	/* 8 bytes: the header only, still GOOD. */
	gls(&c, 96, 8);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 8);
	/* A fragmented map gives at most 255 descriptors (4 KiB). */
	for (unsigned i = 0; i < 2048; i++)
		fake_map[i] = i & 1;
	gls(&c, 0, 65535);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 8 + 255 * 16);
	CHECK(d_lba(&c, 254) == 254 && d_n(&c, 254) == 1 && d_st(&c, 0) == 1 &&
	      d_st(&c, 1) == 0);
	/* A store that answers many extents at once: one question fills
	 * the answer, and it is asked for no more than the answer takes. */
	lun.be = &fake_many_be;
	fake_bs_calls = 0;
	gls(&c, 0, 65535);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 8 + 255 * 16);
	CHECK(d_lba(&c, 254) == 254 && d_n(&c, 254) == 1 &&
	      d_st(&c, 254) == 1 && d_st(&c, 253) == 0);
	CHECK(fake_bs_calls == 1 && fake_many_ext_max == 255);
	fake_bs_calls = 0;
	gls(&c, 7, 8 + 5 * 16);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 8 + 5 * 16);
	CHECK(d_lba(&c, 0) == 7 && d_lba(&c, 4) == 11 && d_n(&c, 4) == 1);
	CHECK(fake_bs_calls == 1 && fake_many_ext_max == 5);
	/* runs longer than a block, and the end of the LUN */
	for (unsigned i = 0; i < 2048; i++)
		fake_map[i] = (i / 100) & 1;
	fake_bs_calls = 0;
	gls(&c, 150, 65535);
	CHECK(c.status == SAM_STAT_GOOD &&
	      c.in_len == 8 + (1 + (2048 - 200 + 99) / 100) * 16);
	CHECK(d_lba(&c, 0) == 150 && d_n(&c, 0) == 50 && d_st(&c, 0) == 0);
	CHECK(d_lba(&c, 1) == 200 && d_n(&c, 1) == 100 && d_st(&c, 1) == 1);
	CHECK(d_lba(&c, 19) == 2000 && d_n(&c, 19) == 48);
	CHECK(fake_bs_calls == 1);
	lun.be = &fake_be;
	for (unsigned i = 0; i < 2048; i++)
		fake_map[i] = i & 1;

	/* The last block; one past the end; 2^63; -1. */
	gls(&c, 2047, 24);
	CHECK(c.status == SAM_STAT_GOOD && d_lba(&c, 0) == 2047 &&
	      d_n(&c, 0) == 1);
	gls(&c, 2048, 24);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	gls(&c, 0x8000000000000000ull, 24);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	gls(&c, UINT64_MAX, 24);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	/* A backend error before anything is known is the read error. */
	fake_bs_err = -EIO;
	gls(&c, 0, 24);
	CHECK(is_check(&c, SENSE_KEY_MEDIUM_ERROR,
		       ASC_UNRECOVERED_READ_ERROR));
	fake_bs_err = 0;
	/* Without block_status (LUN without backend): all mapped. */
	lun.be = NULL;
	gls(&c, 5, 24);
	CHECK(c.status == SAM_STAT_GOOD && d_n(&c, 0) == 2043 &&
	      d_st(&c, 0) == 0);

	/* READ CAPACITY(16): one logical block per physical block on a thin
	 * LUN, 4 KiB physical blocks otherwise. */
	uint8_t rc16[16] = { SCSI_OP_SERVICE_ACTION_IN_16,
			     SCSI_SAI_READ_CAPACITY_16 };
	put_be32(rc16 + 10, 32);
	cmd_init(&c, &nex_a, rc16, 16);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && (c.buf[13] & 0xf) == 0);
	lun_set.thin_provisioning = false;
	cmd_init(&c, &nex_a, rc16, 16);
	run(&c);
	CHECK((c.buf[13] & 0xf) == 3);
	cmd_free(&c);
}

static void test_read_defect_data(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t rdd10[10] = { SCSI_OP_READ_DEFECT_DATA_10, 0, 0x18 | 0x0 };
	uint8_t rdd12[12] = { SCSI_OP_READ_DEFECT_DATA_12, 0x10 | 0x5 };

	more_setup(false);
	put_be16(rdd10 + 7, 32);
	cmd_init(&c, &nex_a, rdd10, 10);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 4);
	CHECK(c.buf[1] == 0x18 && get_be16(c.buf + 2) == 0);
	/* Allocation length 2 cuts the header. */
	put_be16(rdd10 + 7, 2);
	cmd_init(&c, &nex_a, rdd10, 10);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 2);
	/* Reserved format 111b. */
	rdd10[2] = 0x07;
	put_be16(rdd10 + 7, 32);
	cmd_init(&c, &nex_a, rdd10, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));

	put_be32(rdd12 + 6, 64);
	cmd_init(&c, &nex_a, rdd12, 12);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 8);
	CHECK(c.buf[1] == 0x15 && get_be32(c.buf + 4) == 0);
	rdd12[1] = 0x07;
	cmd_init(&c, &nex_a, rdd12, 12);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	cmd_free(&c);
}

static int done_a, done_b;
static void on_done_a(struct scsi_cmd *cmd UNUSED) { done_a++; }
static void on_done_b(struct scsi_cmd *cmd UNUSED) { done_b++; }

/* A 16-byte ORWRITE / WRITE ATOMIC / COMPARE AND WRITE of nb blocks at
 * lba with Data-Out bytes val (CAW: compare 0, write val). */
static void w16_init(struct scsi_cmd *c, const struct scsi_nexus *nx,
		     uint8_t op, uint64_t lba, uint32_t nb, uint8_t val)
{
	uint8_t cdb[16] = { op };
	uint32_t len = nb * 512;

	put_be64(cdb + 2, lba);
	if (op == SCSI_OP_ORWRITE_16)
		put_be32(cdb + 10, nb);
	else if (op == SCSI_OP_WRITE_ATOMIC_16)
		put_be16(cdb + 12, (uint16_t)nb);
	else
		cdb[13] = (uint8_t)nb;
	if (op == SCSI_OP_COMPARE_AND_WRITE)
		len *= 2;
	cmd_init(c, nx, cdb, 16);
	if (!len)
		return;
	c->buf = scsi_buf_alloc(len);
	c->buf_len = c->out_len = c->exp_len = len;
	if (op == SCSI_OP_COMPARE_AND_WRITE)
		memset(c->buf + len / 2, val, len / 2);
	else
		memset(c->buf, val, len);
}

static void test_orwrite(void)
{
	struct scsi_cmd a = { 0 }, b = { 0 };

	more_setup(false);
	/* Read, OR, write back what was read with the data ORed in. */
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 10, 2, 0x0f);
	done_calls = 0;
	submits = 0;
	scsi_cmd_exec(&a);
	CHECK(done_calls == 0 && pending == &a.mio &&
	      a.mio.io.op == BE_OP_READ && a.mio.io.offset == 10 * 512 &&
	      a.mio.io.length == 1024 && a.out_want == 1024);
	memset(a.mio.io.iov[0].iov_base, 0xf0, 1024);
	((uint8_t *)a.mio.io.iov[0].iov_base)[7] = 0x01;
	a.mio.complete(&a.mio, 0);
	CHECK(done_calls == 0 && submits == 2 && a.mio.io.op == BE_OP_WRITE &&
	      a.mio.io.offset == 10 * 512 && a.mio.io.length == 1024 &&
	      !(a.mio.io.flags & BE_IO_FUA));
	const uint8_t *w = a.mio.io.iov[0].iov_base;
	CHECK(w[0] == 0xff && w[7] == 0x0f && w[1023] == 0xff);
	a.mio.complete(&a.mio, 0);
	CHECK(done_calls == 1 && a.status == SAM_STAT_GOOD &&
	      atomic_load(&lun.writes) == 1);

	/* FUA, and the write cache off, write through. */
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 10, 1, 0x0f);
	a.cdb[1] = 0x08;
	scsi_cmd_exec(&a);
	a.mio.complete(&a.mio, 0);
	CHECK(a.mio.io.op == BE_OP_WRITE && (a.mio.io.flags & BE_IO_FUA));
	a.mio.complete(&a.mio, 0);

	/* Serialized with COMPARE AND WRITE: an ORWRITE arriving while a
	 * COMPARE AND WRITE holds the lock waits, and runs after it. */
	w16_init(&a, &nex_a, SCSI_OP_COMPARE_AND_WRITE, 20, 1, 0x01);
	a.done = on_done_a;
	w16_init(&b, &nex_b, SCSI_OP_ORWRITE_16, 20, 1, 0x02);
	b.done = on_done_b;
	done_a = done_b = 0;
	submits = 0;
	scsi_cmd_exec(&a);
	scsi_cmd_exec(&b);
	CHECK(submits == 1 && pending == &a.mio && done_b == 0);
	memset(a.mio.io.iov[0].iov_base, 0, 512);
	a.mio.complete(&a.mio, 0);		/* compare equal: write */
	CHECK(pending == &a.mio && a.mio.io.op == BE_OP_WRITE);
	a.mio.complete(&a.mio, 0);		/* unlock: b reads */
	CHECK(done_a == 1 && a.status == SAM_STAT_GOOD);
	CHECK(pending == &b.mio && b.mio.io.op == BE_OP_READ && submits == 3);
	memset(b.mio.io.iov[0].iov_base, 0x01, 512);
	b.mio.complete(&b.mio, 0);
	CHECK(b.mio.io.op == BE_OP_WRITE &&
	      ((uint8_t *)b.mio.io.iov[0].iov_base)[0] == 0x03);
	b.mio.complete(&b.mio, 0);
	CHECK(done_b == 1 && b.status == SAM_STAT_GOOD);

	/* A read error releases the lock: the next one runs at once. */
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 20, 1, 0x02);
	scsi_cmd_exec(&a);
	a.mio.complete(&a.mio, -EIO);
	CHECK(is_check(&a, SENSE_KEY_MEDIUM_ERROR,
		       ASC_UNRECOVERED_READ_ERROR));
	/* Aborted during its read: TASK ABORTED, lock released. */
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 20, 1, 0x02);
	done_calls = 0;
	submits = 0;
	scsi_cmd_exec(&a);
	CHECK(submits == 1);
	scsi_cmd_abort(&a);
	a.mio.complete(&a.mio, -ECANCELED);
	CHECK(done_calls == 1 && a.status == SAM_STAT_TASK_ABORTED);
	/* A write error is a write error. */
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 20, 1, 0x02);
	submits = 0;
	scsi_cmd_exec(&a);
	CHECK(submits == 1);
	a.mio.complete(&a.mio, 0);
	a.mio.complete(&a.mio, -ENOSPC);
	CHECK(is_check(&a, SENSE_KEY_DATA_PROTECT,
		       ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT));

	/* Only the whole blocks that arrived are ORed. */
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 20, 2, 0x02);
	a.out_len = 700;
	scsi_cmd_exec(&a);
	CHECK(a.mio.io.length == 512 && a.out_want == 1024);
	a.mio.complete(&a.mio, 0);
	a.mio.complete(&a.mio, 0);
	CHECK(a.status == SAM_STAT_GOOD);

	/* CDB checks: ORPROTECT, range, 0 blocks, too long. */
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 20, 1, 0);
	a.cdb[1] = 0x20;
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 2047, 2, 0);
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 0x8000000000000000ull, 1, 0);
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 5, 0, 0);
	run(&a);
	CHECK(a.status == SAM_STAT_GOOD);
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 2049, 0, 0);
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	lun.nblocks = 1u << 20;
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 0, 0, 0);
	put_be32(a.cdb + 10, SBC_MAX_TRANSFER_BYTES / 512 + 1);
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	lun.nblocks = 2048;
	/* Read-only LUN: DATA PROTECT before anything is read. */
	lun_set.readonly = true;
	w16_init(&a, &nex_a, SCSI_OP_ORWRITE_16, 5, 1, 0);
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_DATA_PROTECT, ASC_WRITE_PROTECTED));
	lun_set.readonly = false;
	cmd_free(&a);
	cmd_free(&b);
}

static void test_write_atomic(void)
{
	struct scsi_cmd a = { 0 }, b = { 0 }, c = { 0 };

	more_setup(false);
	/* One backend write of the whole range. */
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 30, 4, 0x5a);
	done_calls = 0;
	submits = 0;
	scsi_cmd_exec(&a);
	CHECK(submits == 1 && pending == &a.mio &&
	      a.mio.io.op == BE_OP_WRITE && a.mio.io.offset == 30 * 512 &&
	      a.mio.io.length == 2048 && a.mio.io.iov[0].iov_base == a.buf &&
	      a.out_want == 2048);
	a.mio.complete(&a.mio, 0);
	CHECK(done_calls == 1 && a.status == SAM_STAT_GOOD);

	/* Holds the COMPARE AND WRITE lock: a COMPARE AND WRITE and an
	 * ORWRITE behind it wait their turn, in order. */
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 30, 4, 0x5a);
	a.done = on_done_a;
	w16_init(&b, &nex_b, SCSI_OP_COMPARE_AND_WRITE, 30, 1, 0x01);
	b.done = on_done_b;
	w16_init(&c, &nex_b, SCSI_OP_ORWRITE_16, 31, 1, 0x01);
	done_a = done_b = 0;
	done_calls = 0;
	submits = 0;
	scsi_cmd_exec(&a);
	scsi_cmd_exec(&b);
	scsi_cmd_exec(&c);
	CHECK(submits == 1 && pending == &a.mio);
	a.mio.complete(&a.mio, 0);
	CHECK(done_a == 1 && submits == 2 && pending == &b.mio);
	memset(b.mio.io.iov[0].iov_base, 0, 512);
	b.mio.complete(&b.mio, 0);
	b.mio.complete(&b.mio, 0);
	CHECK(done_b == 1 && submits == 4 && pending == &c.mio &&
	      c.mio.io.op == BE_OP_READ);
	c.mio.complete(&c.mio, 0);
	c.mio.complete(&c.mio, 0);
	CHECK(done_calls == 1 && c.status == SAM_STAT_GOOD);

	/* A write error releases the lock too. */
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 30, 1, 0x5a);
	scsi_cmd_exec(&a);
	a.mio.complete(&a.mio, -EIO);
	CHECK(is_check(&a, SENSE_KEY_MEDIUM_ERROR, ASC_WRITE_ERROR));
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 30, 1, 0x5a);
	a.cdb[1] = 0x08;
	submits = 0;
	scsi_cmd_exec(&a);
	CHECK(submits == 1 && (a.mio.io.flags & BE_IO_FUA));
	a.mio.complete(&a.mio, 0);

	/* CDB checks: WRPROTECT, range first, 0 blocks, boundary, size. */
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 5, 1, 0);
	a.cdb[1] = 0x40;
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 2047, 2, 0);
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, UINT64_MAX, 1, 0);
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE));
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 0, 0, 0);
	run(&a);
	CHECK(a.status == SAM_STAT_GOOD);
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 5, 1, 0);
	put_be16(a.cdb + 10, 1);		/* ATOMIC BOUNDARY */
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB) &&
	      get_be16(a.sense + 16) == 10);
	/* Short Data-Out: nothing is written. */
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 5, 2, 0);
	a.out_len = 512;
	submits = 0;
	run(&a);
	CHECK(submits == 0 && is_check(&a, SENSE_KEY_ILLEGAL_REQUEST,
				       ASC_INVALID_FIELD_IN_CDB));
	/* Beyond MAXIMUM ATOMIC TRANSFER LENGTH. */
	CHECK(sbc_max_atomic_blocks(512) == SBC_MAX_TRANSFER_BYTES / 512);
	CHECK(sbc_max_atomic_blocks(4096) == SBC_MAX_TRANSFER_BYTES / 4096);
	lun.nblocks = 1u << 20;
	w16_init(&a, &nex_a, SCSI_OP_WRITE_ATOMIC_16, 0, 0, 0);
	put_be16(a.cdb + 12, (uint16_t)(sbc_max_atomic_blocks(512) + 1));
	run(&a);
	CHECK(is_check(&a, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_CDB));
	lun.nblocks = 2048;

	/* The Block Limits page advertises it: MAXIMUM ATOMIC TRANSFER
	 * LENGTH within MAXIMUM TRANSFER LENGTH, no alignment, granularity
	 * or boundary requirements. */
	inquiry_vpd(&a, 0xb0);
	CHECK(a.status == SAM_STAT_GOOD && a.in_len == 64);
	CHECK(get_be32(a.buf + 44) == sbc_max_atomic_blocks(512) &&
	      get_be32(a.buf + 44) <= get_be32(a.buf + 8) &&
	      get_be32(a.buf + 48) == 0 && get_be32(a.buf + 52) == 0 &&
	      get_be32(a.buf + 56) == 0 && get_be32(a.buf + 60) == 0);
	cmd_free(&a);
	cmd_free(&b);
	cmd_free(&c);
}

/* REPORT SUPPORTED OPERATION CODES lists the new commands with usage data
 * that shows DPO/FUA examined (libiscsi's DpoFua tests check it). */
static void test_rsoc(void)
{
	struct scsi_cmd c = { 0 };
	static const struct { uint8_t op, sa, len, opts; } want[] = {
		{ SCSI_OP_READ_DEFECT_DATA_10, 0, 10, 1 },
		{ SCSI_OP_READ_DEFECT_DATA_12, 0, 12, 1 },
		{ SCSI_OP_ORWRITE_16, 0, 16, 1 },
		{ SCSI_OP_WRITE_ATOMIC_16, 0, 16, 1 },
		{ SCSI_OP_SERVICE_ACTION_IN_16, SCSI_SAI_GET_LBA_STATUS, 16, 2 },
	};

	more_setup(false);
	for (unsigned i = 0; i < ARRAY_SIZE(want); i++) {
		uint8_t cdb[12] = { SCSI_OP_MAINTENANCE_IN,
				    SCSI_MI_REPORT_SUPPORTED_OPCODES,
				    want[i].opts, want[i].op };
		put_be16(cdb + 4, want[i].sa);
		put_be32(cdb + 6, 512);
		cmd_init(&c, &nex_a, cdb, 12);
		run(&c);
		CHECK(c.status == SAM_STAT_GOOD && (c.buf[1] & 7) == 3 &&
		      get_be16(c.buf + 2) == want[i].len &&
		      c.buf[4] == want[i].op);
		if (want[i].op == SCSI_OP_ORWRITE_16 ||
		    want[i].op == SCSI_OP_WRITE_ATOMIC_16)
			CHECK((c.buf[5] & 0x18) == 0x18);
	}
	cmd_free(&c);
}

/* ---- a store that answers block status later (the gateway) ---- */
static struct be_io *async_pending;	/* the one question in flight */
static int async_calls, async_err;

static int fake_async(struct backend *be, struct be_io *io,
		      struct reactor *r UNUSED)
{
	async_calls++;
	CHECK(async_pending == NULL);	/* one question at a time */
	async_pending = io;
	(void)be;
	return -EINPROGRESS;
}

/* Answer the pending question from fake_map (or async_err), as the SAN
 * would, after the command went asynchronous. */
static bool async_answer(void)
{
	struct be_io *io = async_pending;
	uint64_t ext = 0;
	int r;

	if (!io)
		return false;
	async_pending = NULL;
	r = async_err ? async_err
		      : fake_block_status(NULL, io->offset, io->length, &ext);
	if (r >= 0)
		io->length = ext;
	io->done(io, r);
	return true;
}

static const struct backend_ops fake_async_ops = {
	.name = "fake-async",
	.block_status_async = fake_async,
};
static struct backend fake_async_be = { .ops = &fake_async_ops,
					 .size = 2048 * 512 };

/* GET LBA STATUS whose answers come after scsi_cmd_exec() returned. */
static void gls_async(struct scsi_cmd *c, uint64_t lba, uint32_t alloc,
		      bool abort_first)
{
	uint8_t cdb[16] = { SCSI_OP_SERVICE_ACTION_IN_16,
			    SCSI_SAI_GET_LBA_STATUS };

	put_be64(cdb + 2, lba);
	put_be32(cdb + 10, alloc);
	cmd_init(c, &nex_a, cdb, 16);
	done_calls = 0;
	scsi_cmd_exec(c);
	if (abort_first) {
		CHECK(done_calls == 0);
		scsi_cmd_abort(c);
		/* not answered before the store answers */
		CHECK(done_calls == 0);
	}
	while (async_answer())
		CHECK(done_calls == 0 || async_pending == NULL);
	CHECK(done_calls == 1);
}

static void test_get_lba_status_async(void)
{
	struct scsi_cmd c = { 0 };

	more_setup(true);
	lun.be = &fake_async_be;
	async_calls = 0;
	async_err = 0;
	for (unsigned i = 100; i < 108; i++)
		fake_map[i] = false;
	/* the same answer as the synchronous store, one question per
	 * extent, each answered after the command went asynchronous */
	gls_async(&c, 96, 1024, false);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(get_be32(c.buf) == 4 + 3 * 16 && c.in_len == 8 + 3 * 16);
	CHECK(d_lba(&c, 0) == 96 && d_n(&c, 0) == 4 && d_st(&c, 0) == 0);
	CHECK(d_lba(&c, 1) == 100 && d_n(&c, 1) == 8 && d_st(&c, 1) == 1);
	CHECK(d_lba(&c, 2) == 108 && d_n(&c, 2) == 2048 - 108 &&
	      d_st(&c, 2) == 0);
	CHECK(async_calls == 3, "%d questions", async_calls);
	/* a store that cannot tell (a SAN without GET LBA STATUS): mapped */
	async_err = -EOPNOTSUPP;
	gls_async(&c, 10, 1024, false);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 24 &&
	      d_lba(&c, 0) == 10 && d_n(&c, 0) == 2038 && d_st(&c, 0) == 0);
	/* the SAN down before anything is known: its error */
	async_err = -ENOTCONN;
	gls_async(&c, 10, 1024, false);
	CHECK(c.status == SAM_STAT_CHECK_CONDITION);
	/* ... after a first extent: what is known is the answer */
	async_err = 0;
	async_calls = 0;
	{
		uint8_t cdb[16] = { SCSI_OP_SERVICE_ACTION_IN_16,
				    SCSI_SAI_GET_LBA_STATUS };

		put_be64(cdb + 2, 96);
		put_be32(cdb + 10, 1024);
		cmd_init(&c, &nex_a, cdb, 16);
		done_calls = 0;
		scsi_cmd_exec(&c);
		CHECK(async_answer() && done_calls == 0);
		async_err = -ETIMEDOUT;
		CHECK(async_answer() && done_calls == 1);
		CHECK(c.status == SAM_STAT_GOOD && c.in_len == 8 + 16 &&
		      d_lba(&c, 0) == 96 && d_n(&c, 0) == 4);
		async_err = 0;
	}
	/* an abort while the store is asked: TASK ABORTED when it answers */
	gls_async(&c, 96, 1024, true);
	CHECK(c.status == SAM_STAT_TASK_ABORTED && c.in_len == 0);
	CHECK(async_pending == NULL);
	cmd_free(&c);
}

/* A store that reports its own provisioning (a gateway LUN: the SAN's
 * LBPME) decides over the thin_provisioning setting. */
static void test_thin_from_store(void)
{
	struct scsi_cmd c = { 0 };
	uint8_t rc16[16] = { SCSI_OP_SERVICE_ACTION_IN_16,
			     SCSI_SAI_READ_CAPACITY_16 };
	uint8_t unmap[10] = { SCSI_OP_UNMAP };
	uint8_t b2[6] = { SCSI_OP_INQUIRY, 1, 0xb2, 0, 255 };

	put_be32(rc16 + 10, 32);
	more_setup(false);
	lun.be = &fake_async_be;
	fake_async_be.thin = BE_THIN_YES;
	cmd_init(&c, &nex_a, rc16, 16);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && (c.buf[14] & 0xc0) == 0xc0);
	cmd_init(&c, &nex_a, b2, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && (c.buf[5] & 0xe0) == 0xe0);
	/* the setting says thin, the store says it is not: not thin */
	more_setup(true);
	lun.be = &fake_async_be;
	fake_async_be.thin = BE_THIN_NO;
	cmd_init(&c, &nex_a, rc16, 16);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && (c.buf[14] & 0xc0) == 0);
	cmd_init(&c, &nex_a, b2, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.buf[5] == 0);
	cmd_init(&c, &nex_a, unmap, 10);
	run(&c);
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST, ASC_INVALID_OPCODE));
	/* GET LBA STATUS then reports everything mapped, without asking */
	async_calls = 0;
	gls(&c, 0, 1024);
	CHECK(c.status == SAM_STAT_GOOD && d_n(&c, 0) == 2048 &&
	      d_st(&c, 0) == 0 && async_calls == 0);
	fake_async_be.thin = BE_THIN_SETTING;
	cmd_free(&c);
}

int main(void)
{
	test_get_lba_status();
	test_get_lba_status_async();
	test_thin_from_store();
	test_read_defect_data();
	test_orwrite();
	test_write_atomic();
	test_rsoc();
	scsi_lun_state_free(&lun);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
