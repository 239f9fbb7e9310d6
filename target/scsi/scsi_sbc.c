/* scsi_sbc.c - SBC-3 block commands: READ/WRITE(6/10/12/16), WRITE AND
 * VERIFY(10/12/16), VERIFY(10/12/16), PRE-FETCH(10/16), READ
 * CAPACITY(10/16), SYNCHRONIZE CACHE(10/16).
 *
 * Media commands become one struct media_io (embedded in the command) and
 * go to the hang engine, which owns retrying and ordering; the completion
 * turns the result into status and sense through scsi_set_backend_error(). */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "reactor.h"
#include "scsi_internal.h"
#include "util.h"

/* CDB byte 1 bits of READ/WRITE(10/12/16) (SBC-3 5.8, 5.35) */
#define RW_CDB_PROTECT_MASK	0xe0	/* RDPROTECT / WRPROTECT */
#define RW_CDB_DPO		0x10
#define RW_CDB_FUA		0x08
#define RW_CDB_BYTCHK_SHIFT	1	/* VERIFY / WRITE AND VERIFY (SBC-3 5.27) */
#define RW_CDB_BYTCHK_MASK	0x3
#define BYTCHK_NONE		0	/* verify the medium only */
#define BYTCHK_ALL		1	/* compare Data-Out with every block */
#define BYTCHK_ONE_BLOCK	3	/* compare one Data-Out block with each */
#define RW6_LBA_MASK		0x1fffff
#define RW6_ZERO_MEANS		256	/* SBC-3 5.7: length 0 = 256 blocks */

/* READ CAPACITY(10) (SBC-3 5.15) */
#define RC10_CDB_PMI		0x01
#define RC10_LEN		8
/* READ CAPACITY(16) (SBC-3 5.16) */
#define RC16_LEN		32
#define RC16_LBPME		0x80
#define RC16_LBPRZ		0x40

/* SYNCHRONIZE CACHE (SBC-3 5.22) */
#define SC_CDB_IMMED		0x02

struct rw_cdb {
	uint64_t lba;
	uint32_t nblocks;
	bool fua;
	uint8_t protect;
	uint8_t bytchk;
};

static void rw_decode(const uint8_t *cdb, struct rw_cdb *rw)
{
	memset(rw, 0, sizeof(*rw));
	switch (cdb[0]) {
	case SCSI_OP_READ_6:
	case SCSI_OP_WRITE_6:
		rw->lba = get_be24(cdb + 1) & RW6_LBA_MASK;
		rw->nblocks = cdb[4] ? cdb[4] : RW6_ZERO_MEANS;
		return;
	case SCSI_OP_READ_10:
	case SCSI_OP_WRITE_10:
	case SCSI_OP_WRITE_VERIFY_10:
	case SCSI_OP_VERIFY_10:
	case SCSI_OP_PRE_FETCH_10:
		rw->lba = get_be32(cdb + 2);
		rw->nblocks = get_be16(cdb + 7);
		break;
	case SCSI_OP_READ_12:
	case SCSI_OP_WRITE_12:
	case SCSI_OP_WRITE_VERIFY_12:
	case SCSI_OP_VERIFY_12:
		rw->lba = get_be32(cdb + 2);
		rw->nblocks = get_be32(cdb + 6);
		break;
	default:	/* 16-byte forms */
		rw->lba = get_be64(cdb + 2);
		rw->nblocks = get_be32(cdb + 10);
		break;
	}
	/* DPO is a cache retention hint only; nothing to do with it. */
	rw->fua = cdb[1] & RW_CDB_FUA;
	rw->protect = cdb[1] & RW_CDB_PROTECT_MASK;
	rw->bytchk = cdb[1] >> RW_CDB_BYTCHK_SHIFT & RW_CDB_BYTCHK_MASK;
}

/* Byte offset of the TRANSFER LENGTH field, for sense field pointers. */
static uint16_t len_field(const uint8_t *cdb)
{
	switch (cdb[0]) {
	case SCSI_OP_READ_6:
	case SCSI_OP_WRITE_6:
		return 4;
	case SCSI_OP_READ_12:
	case SCSI_OP_WRITE_12:
	case SCSI_OP_WRITE_VERIFY_12:
	case SCSI_OP_VERIFY_12:
		return 6;
	case SCSI_OP_READ_10:
	case SCSI_OP_WRITE_10:
	case SCSI_OP_WRITE_VERIFY_10:
	case SCSI_OP_VERIFY_10:
		return 7;
	default:
		return 10;
	}
}

static bool is_write_verify_op(uint8_t op)
{
	return op == SCSI_OP_WRITE_VERIFY_10 || op == SCSI_OP_WRITE_VERIFY_12 ||
	       op == SCSI_OP_WRITE_VERIFY_16;
}

static bool is_write_op(uint8_t op)
{
	return op == SCSI_OP_WRITE_6 || op == SCSI_OP_WRITE_10 ||
	       op == SCSI_OP_WRITE_12 || op == SCSI_OP_WRITE_16 ||
	       is_write_verify_op(op);
}

static bool is_verify_op(uint8_t op)
{
	return op == SCSI_OP_VERIFY_10 || op == SCSI_OP_VERIFY_12 ||
	       op == SCSI_OP_VERIFY_16;
}

/* [lba, lba + n) must lie within the medium (SBC-3 4.5). */
bool sbc_lba_range_ok(const struct scsi_lun *lun, uint64_t lba, uint64_t n)
{
	uint64_t cap = lun->nblocks;

	return lba <= cap && n <= cap - lba;
}

/* VERIFY read the blocks into a scratch buffer (cmd->iov.iov_base); with
 * BYTCHK compare them with the Data-Out (SBC-3 5.27).  A miscompare is
 * MISCOMPARE DURING VERIFY OPERATION with the offset of the first differing
 * byte in INFORMATION. */
static void verify_done(struct scsi_cmd *cmd, int res)
{
	uint8_t *medium = cmd->iov.iov_base;
	uint32_t bs = lun_settings_get(cmd->lun)->block_size;
	uint32_t len = (uint32_t)cmd->mio.io.length;
	uint8_t bytchk = cmd->cdb[1] >> RW_CDB_BYTCHK_SHIFT &
			 RW_CDB_BYTCHK_MASK;

	if (res < 0 || cmd->aborted)
		goto out;
	cmd->status = SAM_STAT_GOOD;
	if (bytchk == BYTCHK_NONE)
		goto out;
	for (uint32_t i = 0; i < len; i++) {
		uint8_t want = bytchk == BYTCHK_ALL ? cmd->buf[i]
						    : cmd->buf[i % bs];
		if (medium[i] != want) {
			scsi_sense_info(cmd, SENSE_KEY_MISCOMPARE,
					ASC_MISCOMPARE_DURING_VERIFY, i);
			break;
		}
	}
out:
	free(medium);
	cmd->iov.iov_base = NULL;
}

void sbc_media_finish(struct scsi_cmd *cmd, int res)
{
	struct media_io *m = &cmd->mio;
	struct scsi_lun *lun = cmd->lun;

	/* Dropped by a handover (scsi_alua.c), not by task management, or
	 * refused by a store another node took by preempting this one's
	 * reservation: NOT READY 04/0A, which the initiator retries (on the
	 * other path once it sees this one standby). */
	if ((res == -ECANCELED || scsi_alua_store_lost(lun, res)) &&
	    !cmd->aborted && lun_settings_get(lun)->alua_group &&
	    scsi_alua_media_refused(cmd)) {
		scsi_cmd_complete(cmd);
		return;
	}
	if (cmd->aborted || res == -ECANCELED) {
		cmd->aborted = true;
		scsi_cmd_complete(cmd);
		return;
	}
	if (res < 0) {
		scsi_set_store_error(cmd, res, &m->io, m->io.op != BE_OP_READ);
		scsi_cmd_complete(cmd);
		return;
	}
	cmd->status = SAM_STAT_GOOD;
	switch (m->io.op) {
	case BE_OP_READ:
		cmd->in_len = (uint32_t)m->io.length;
		atomic_fetch_add(&lun->reads, 1);
		atomic_fetch_add(&lun->read_bytes, m->io.length);
		break;
	case BE_OP_WRITE:
	case BE_OP_COMPARE_AND_WRITE:
		atomic_fetch_add(&lun->writes, 1);
		atomic_fetch_add(&lun->write_bytes, m->io.length);
		break;
	default:
		break;
	}
	scsi_cmd_complete(cmd);
}

static void media_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;

	if (is_verify_op(cmd->cdb[0])) {
		verify_done(cmd, res);
		if (res >= 0 && !cmd->aborted) {
			scsi_cmd_complete(cmd);
			return;
		}
	}
	sbc_media_finish(cmd, res);
}

static void gated_complete(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;

	cmd->gate_shared = false;
	scsi_write_gate_exit(cmd->lun);
	cmd->gate_complete(m, res);
}

enum scsi_exec_result sbc_media_submit(struct scsi_cmd *cmd, enum be_op op,
				       unsigned flags, uint64_t offset,
				       uint64_t length, void *data,
				       void (*complete)(struct media_io *m,
							int res))
{
	struct media_io *m = &cmd->mio;

	memset(m, 0, sizeof(*m));
	m->io.op = op;
	m->io.flags = flags;
	m->io.offset = offset;
	m->io.length = length;
	if (op == BE_OP_READ || op == BE_OP_WRITE ||
	    op == BE_OP_COMPARE_AND_WRITE) {
		/* COMPARE AND WRITE: the verify data, then the write data */
		cmd->iov.iov_base = data;
		cmd->iov.iov_len = op == BE_OP_COMPARE_AND_WRITE ? 2 * length
								  : length;
		m->io.iov = &cmd->iov;
		m->io.iovcnt = 1;
	}
	m->seq = atomic_fetch_add(&cmd->lun->seq, 1);
	m->nexus_id = cmd->nexus ? cmd->nexus->id : 0;
	m->tag = (uint64_t)(uintptr_t)cmd;
	m->origin = reactor_current();
	m->complete = complete ? complete : media_done;
	m->owner = cmd;
	if ((op == BE_OP_WRITE || op == BE_OP_WRITE_ZEROES ||
	     op == BE_OP_UNMAP) && !cmd->gate_excl) {
		/* plain writes wait while a COMPARE AND WRITE (or ORWRITE,
		 * WRITE ATOMIC) of this LUN runs: SBC-3 5.2 atomicity */
		cmd->gate_shared = true;
		cmd->gate_complete = m->complete;
		m->complete = gated_complete;
		if (!scsi_write_gate_enter(cmd))
			return SCSI_EXEC_ASYNC;	/* resumed by the gate */
	}
	/* Counted in the write gate first, then checked: a handover either
	 * sees this write in the gate and waits for it, or this write sees
	 * the LUN transitioning (scsi_alua.c, both sides seq_cst). */
	if (lun_settings_get(cmd->lun)->alua_group && op != BE_OP_READ &&
	    scsi_alua_state(cmd->lun) != ALUA_AO) {
		cmd->stage = SCSI_STAGE_MEDIA;
		m->complete(m, -ECANCELED);
		return SCSI_EXEC_ASYNC;
	}
	cmd->stage = SCSI_STAGE_MEDIA;
	hang_submit(cmd->lun, m);
	return SCSI_EXEC_ASYNC;
}

static enum scsi_exec_result media_submit(struct scsi_cmd *cmd,
					  enum be_op op, unsigned flags,
					  uint64_t offset, uint64_t length,
					  void *data)
{
	return sbc_media_submit(cmd, op, flags, offset, length, data, NULL);
}

enum scsi_exec_result sbc_read_write(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint32_t bs = lun_settings_get(lun)->block_size;
	bool write = is_write_op(cmd->cdb[0]);
	struct rw_cdb rw;

	rw_decode(cmd->cdb, &rw);
	cmd->lba = rw.lba;
	cmd->nblocks = rw.nblocks;
	if (write)
		cmd->out_want = (uint32_t)MIN((uint64_t)rw.nblocks * bs,
					      (uint64_t)UINT32_MAX);

	/* No protection information is formatted: a non-zero RDPROTECT /
	 * WRPROTECT is an invalid field (SBC-3 5.8, table 58). */
	if (rw.protect) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 7);
		return SCSI_EXEC_DONE;
	}
	/* WRITE AND VERIFY: BYTCHK 00b and 01b only (SBC-4 5.48). */
	if (is_write_verify_op(cmd->cdb[0]) && rw.bytchk > BYTCHK_ALL) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 2);
		return SCSI_EXEC_DONE;
	}
	if (!sbc_lba_range_ok(lun, rw.lba, rw.nblocks)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	if (rw.nblocks == 0)	/* SBC-3: not an error, nothing moves */
		return SCSI_EXEC_DONE;
	if ((uint64_t)rw.nblocks * bs > SBC_MAX_TRANSFER_BYTES) {
		/* Beyond MAXIMUM TRANSFER LENGTH of the Block Limits page. */
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 len_field(cmd->cdb), -1);
		return SCSI_EXEC_DONE;
	}

	uint32_t len = rw.nblocks * bs;
	uint64_t offset = rw.lba * bs;
	unsigned flags = 0;

	if (!write) {
		if (scsi_buf_ensure(cmd, len) < 0) {
			scsi_set_backend_error(cmd, -ENOMEM, false);
			return SCSI_EXEC_DONE;
		}
		return media_submit(cmd, BE_OP_READ, 0, offset, len, cmd->buf);
	}

	/* A write gets what the initiator sent.  When it sent less than
	 * the CDB asks for (expected length too small), only whole blocks
	 * that arrived are written; the transport reports the residual
	 * (RFC 7143 11.4.5.1).  Nothing arrived: nothing to write. */
	uint32_t have = MIN(cmd->out_len, len);
	if (!cmd->buf)
		have = 0;
	have -= have % bs;
	if (have == 0)
		return SCSI_EXEC_DONE;
	/* With the write cache off every write must reach stable storage
	 * before GOOD (SBC-3 4.15). */
	if (rw.fua || !lun_settings_get(lun)->write_cache)
		flags |= BE_IO_FUA;
	/* WRITE AND VERIFY: the data must be on the medium before GOOD
	 * (SBC-3 5.40); a read-back compare of what the backend just took
	 * would only re-read its cache, so FUA is the verification. */
	if (is_write_verify_op(cmd->cdb[0]))
		flags |= BE_IO_FUA;
	return media_submit(cmd, BE_OP_WRITE, flags, offset, have, cmd->buf);
}

enum scsi_exec_result sbc_read_capacity_10(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint8_t b[RC10_LEN];
	uint64_t last = lun->nblocks ? lun->nblocks - 1 : 0;

	/* SBC-3 5.15: LOGICAL BLOCK ADDRESS must be 0 when PMI is 0. */
	if (!(cmd->cdb[8] & RC10_CDB_PMI) && get_be32(cmd->cdb + 2)) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 2, -1);
		return SCSI_EXEC_DONE;
	}
	/* Too big for 32 bits: the initiator must use READ CAPACITY(16). */
	put_be32(b, last > UINT32_MAX - 1 ? UINT32_MAX : (uint32_t)last);
	put_be32(b + 4, lun_settings_get(lun)->block_size);
	return scsi_data_in(cmd, b, sizeof(b), sizeof(b));
}

enum scsi_exec_result sbc_read_capacity_16(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	const struct lun_settings *set = lun_settings_get(lun);
	uint8_t b[RC16_LEN];
	uint32_t bs = set->block_size;

	memset(b, 0, sizeof(b));
	put_be64(b, lun->nblocks ? lun->nblocks - 1 : 0);
	put_be32(b + 8, bs);
	/* LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: report 4 KiB physical
	 * blocks for 512-byte LUNs so initiators align their I/O.  Not on
	 * thin LUNs: there GET LBA STATUS reports per logical block and
	 * libiscsi's GetLBAStatus.UnmapSingle only holds with one logical
	 * block per physical block; the 4 KiB alignment and unmap hints
	 * stay in the Block Limits page (OPTIMAL TRANSFER LENGTH / UNMAP
	 * GRANULARITY), which is what Linux takes io_min from. */
	if (bs < 4096 && !scsi_lun_thin(lun))
		b[13] = (uint8_t)(__builtin_ctz(4096 / bs) & 0x0f);
	if (scsi_lun_thin(lun))
		b[14] = RC16_LBPME | RC16_LBPRZ;
	return scsi_data_in(cmd, b, sizeof(b), get_be32(cmd->cdb + 10));
}

enum scsi_exec_result sbc_synchronize_cache(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	const uint8_t *cdb = cmd->cdb;
	uint64_t lba, n;

	if (cdb[0] == SCSI_OP_SYNCHRONIZE_CACHE_10) {
		lba = get_be32(cdb + 2);
		n = get_be16(cdb + 7);
	} else {
		lba = get_be64(cdb + 2);
		n = get_be32(cdb + 10);
	}
	cmd->lba = lba;
	cmd->nblocks = (uint32_t)MIN(n, (uint64_t)UINT32_MAX);
	if (!sbc_lba_range_ok(lun, lba, n)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	/* The whole store is flushed whatever the range (a flush of more
	 * than asked is allowed); IMMED is honoured by simply finishing
	 * when the flush does, which SBC-3 5.22 permits. */
	return media_submit(cmd, BE_OP_FLUSH, 0, 0, 0, NULL);
}

enum scsi_exec_result sbc_verify(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint32_t bs = lun_settings_get(lun)->block_size;
	struct rw_cdb rw;

	rw_decode(cmd->cdb, &rw);
	cmd->lba = rw.lba;
	cmd->nblocks = rw.nblocks;
	if (rw.protect) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 7);
		return SCSI_EXEC_DONE;
	}
	if (rw.bytchk == 2) {	/* reserved */
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 2);
		return SCSI_EXEC_DONE;
	}
	if (rw.bytchk != BYTCHK_NONE)
		cmd->out_want = rw.bytchk == BYTCHK_ALL ?
			(uint32_t)MIN((uint64_t)rw.nblocks * bs,
				      (uint64_t)UINT32_MAX) : bs;
	if (!sbc_lba_range_ok(lun, rw.lba, rw.nblocks)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	if (rw.nblocks == 0)
		return SCSI_EXEC_DONE;
	if ((uint64_t)rw.nblocks * bs > SBC_MAX_TRANSFER_BYTES) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 len_field(cmd->cdb), -1);
		return SCSI_EXEC_DONE;
	}
	/* Comparing needs all the data the CDB announces. */
	if (rw.bytchk != BYTCHK_NONE &&
	    (!cmd->buf || cmd->out_len < cmd->out_want)) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 len_field(cmd->cdb), -1);
		return SCSI_EXEC_DONE;
	}

	uint32_t len = rw.nblocks * bs;
	void *medium = scsi_work_alloc(cmd, len);
	if (!medium) {
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	return media_submit(cmd, BE_OP_READ, 0, rw.lba * bs, len, medium);
}

/* PRE-FETCH (SBC-3 5.9): there is no cache to load, so after the range
 * check the answer is GOOD (CONDITION MET would promise cached blocks). */
enum scsi_exec_result sbc_pre_fetch(struct scsi_cmd *cmd)
{
	struct rw_cdb rw;

	rw_decode(cmd->cdb, &rw);
	if (!sbc_lba_range_ok(cmd->lun, rw.lba, rw.nblocks)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	cmd->status = SAM_STAT_GOOD;
	return SCSI_EXEC_DONE;
}
