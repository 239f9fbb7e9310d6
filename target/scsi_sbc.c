/* scsi_sbc.c - SBC-3 block commands: READ/WRITE(6/10/12/16), READ
 * CAPACITY(10/16), SYNCHRONIZE CACHE(10/16).
 *
 * Media commands become one struct media_io (embedded in the command) and
 * go to the hang engine, which owns retrying and ordering; the completion
 * turns the result into status and sense through scsi_set_backend_error(). */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "reactor.h"
#include "scsi_internal.h"
#include "util.h"

/* CDB byte 1 bits of READ/WRITE(10/12/16) (SBC-3 5.8, 5.35) */
#define RW_CDB_PROTECT_MASK	0xe0	/* RDPROTECT / WRPROTECT */
#define RW_CDB_DPO		0x10
#define RW_CDB_FUA		0x08
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
		rw->lba = get_be32(cdb + 2);
		rw->nblocks = get_be16(cdb + 7);
		break;
	case SCSI_OP_READ_12:
	case SCSI_OP_WRITE_12:
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
}

static bool is_write_op(uint8_t op)
{
	return op == SCSI_OP_WRITE_6 || op == SCSI_OP_WRITE_10 ||
	       op == SCSI_OP_WRITE_12 || op == SCSI_OP_WRITE_16;
}

/* [lba, lba + n) must lie within the medium (SBC-3 4.5). */
static bool lba_range_ok(const struct scsi_lun *lun, uint64_t lba, uint64_t n)
{
	uint64_t cap = lun->nblocks;

	return lba <= cap && n <= cap - lba;
}

static void media_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;
	struct scsi_lun *lun = cmd->lun;

	if (cmd->aborted || res == -ECANCELED) {
		cmd->aborted = true;
		scsi_cmd_complete(cmd);
		return;
	}
	if (res < 0) {
		scsi_set_backend_error(cmd, res, m->io.op != BE_OP_READ);
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
		atomic_fetch_add(&lun->writes, 1);
		atomic_fetch_add(&lun->write_bytes, m->io.length);
		break;
	default:
		break;
	}
	scsi_cmd_complete(cmd);
}

static enum scsi_exec_result media_submit(struct scsi_cmd *cmd,
					  enum be_op op, unsigned flags,
					  uint64_t offset, uint64_t length)
{
	struct media_io *m = &cmd->mio;

	memset(m, 0, sizeof(*m));
	m->io.op = op;
	m->io.flags = flags;
	m->io.offset = offset;
	m->io.length = length;
	if (op == BE_OP_READ || op == BE_OP_WRITE) {
		cmd->iov.iov_base = cmd->buf;
		cmd->iov.iov_len = length;
		m->io.iov = &cmd->iov;
		m->io.iovcnt = 1;
	}
	m->seq = atomic_fetch_add(&cmd->lun->seq, 1);
	m->nexus_id = cmd->nexus ? cmd->nexus->id : 0;
	m->tag = (uint64_t)(uintptr_t)cmd;
	m->origin = reactor_current();
	m->complete = media_done;
	m->owner = cmd;
	cmd->stage = SCSI_STAGE_MEDIA;
	hang_submit(cmd->lun, m);
	return SCSI_EXEC_ASYNC;
}

enum scsi_exec_result sbc_read_write(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint32_t bs = lun->set.block_size;
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
	if (!lba_range_ok(lun, rw.lba, rw.nblocks)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	if (rw.nblocks == 0)	/* SBC-3: not an error, nothing moves */
		return SCSI_EXEC_DONE;
	if ((uint64_t)rw.nblocks * bs > SBC_MAX_TRANSFER_BYTES) {
		/* Beyond MAXIMUM TRANSFER LENGTH of the Block Limits page. */
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 cmd->cdb[0] == SCSI_OP_READ_6 ||
				 cmd->cdb[0] == SCSI_OP_WRITE_6 ? 4 : 7, -1);
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
		return media_submit(cmd, BE_OP_READ, 0, offset, len);
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
	if (rw.fua || !lun->set.write_cache)
		flags |= BE_IO_FUA;
	return media_submit(cmd, BE_OP_WRITE, flags, offset, have);
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
	put_be32(b + 4, lun->set.block_size);
	return scsi_data_in(cmd, b, sizeof(b), sizeof(b));
}

enum scsi_exec_result sbc_read_capacity_16(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint8_t b[RC16_LEN];
	uint32_t bs = lun->set.block_size;

	memset(b, 0, sizeof(b));
	put_be64(b, lun->nblocks ? lun->nblocks - 1 : 0);
	put_be32(b + 8, bs);
	/* LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: report 4 KiB physical
	 * blocks for 512-byte LUNs so initiators align their I/O. */
	if (bs < 4096)
		b[13] = (uint8_t)(__builtin_ctz(4096 / bs) & 0x0f);
	if (lun->set.thin_provisioning)
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
	if (!lba_range_ok(lun, lba, n)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	/* The whole store is flushed whatever the range (a flush of more
	 * than asked is allowed); IMMED is honoured by simply finishing
	 * when the flush does, which SBC-3 5.22 permits. */
	return media_submit(cmd, BE_OP_FLUSH, 0, 0, 0);
}
