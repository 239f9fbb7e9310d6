/* scsi_sbc_atomic.c - writes that must not interleave with others:
 * ORWRITE(16) (SBC-3 5.9) and WRITE ATOMIC(16) (SBC-4 5.48).
 *
 * Both run under the LUN's COMPARE AND WRITE lock (scsi_caw_lock), so a
 * COMPARE AND WRITE, an ORWRITE and a WRITE ATOMIC never see each other
 * half done.  ORWRITE reads the blocks, ORs the Data-Out into them and
 * writes the result back with the lock held throughout.  WRITE ATOMIC is
 * one backend write request of at most MAXIMUM ATOMIC TRANSFER LENGTH
 * blocks (Block Limits VPD page), never split by the SCSI layer.  Media
 * steps go through the hang engine like every read and write. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_internal.h"
#include "util.h"

/* CDB byte 1 (ORWRITE(16): ORPROTECT; WRITE ATOMIC(16): WRPROTECT) */
#define AW_CDB_PROTECT_MASK	0xe0
#define AW_CDB_FUA		0x08
/* ORWRITE(16) CDB (SBC-3 5.9): LBA 2..9, TRANSFER LENGTH 10..13 */
#define ORW_CDB_LEN_OFF		10
/* WRITE ATOMIC(16) CDB (SBC-4 5.48): LBA 2..9, ATOMIC BOUNDARY 10..11,
 * TRANSFER LENGTH 12..13 */
#define WA_CDB_BOUNDARY_OFF	10
#define WA_CDB_LEN_OFF		12
#define WA_MAX_LEN_FIELD	0xffff

uint32_t sbc_max_atomic_blocks(uint32_t block_size)
{
	uint32_t bs = block_size ? block_size : 512;

	return MIN(SBC_MAX_TRANSFER_BYTES / bs, (uint32_t)WA_MAX_LEN_FIELD);
}

static unsigned write_flags(const struct scsi_cmd *cmd)
{
	/* With the write cache off every write reaches stable storage
	 * before GOOD (SBC-3 4.15). */
	return (cmd->cdb[1] & AW_CDB_FUA) || !lun_settings_get(cmd->lun)->write_cache ?
		       BE_IO_FUA : 0;
}

/* Checks shared by both commands, in the order libiscsi's suites and SBC
 * expect: protection field, LBA range, then length.  false: cmd is
 * answered (or is a 0-block no-op that is GOOD). */
static bool aw_decode(struct scsi_cmd *cmd, uint32_t nb, uint16_t len_off,
		      uint32_t max_blocks)
{
	struct scsi_lun *lun = cmd->lun;
	uint32_t bs = lun_settings_get(lun)->block_size;

	cmd->lba = get_be64(cmd->cdb + 2);
	cmd->nblocks = nb;
	cmd->out_want = (uint32_t)MIN((uint64_t)nb * bs, (uint64_t)UINT32_MAX);
	/* No protection information is formatted (SBC-3 5.9 table 46). */
	if (cmd->cdb[1] & AW_CDB_PROTECT_MASK) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 7);
		return false;
	}
	if (!sbc_lba_range_ok(lun, cmd->lba, nb)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return false;
	}
	if (nb == 0)		/* not an error; nothing is written */
		return false;
	if (nb > max_blocks) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, len_off,
				 -1);
		return false;
	}
	return true;
}

/* ---- ORWRITE ----
 * The read lands in a scratch buffer (cmd->iov.iov_base while reading);
 * the OR goes into cmd->buf, which is then written. */

static void orw_write_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;

	scsi_caw_unlock(cmd->lun);
	sbc_media_finish(cmd, res);
}

static void orw_read_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;
	uint8_t *medium = cmd->iov.iov_base;
	uint32_t len = (uint32_t)m->io.length;

	cmd->iov.iov_base = NULL;
	if (res < 0 || cmd->aborted) {
		free(medium);
		scsi_caw_unlock(cmd->lun);
		sbc_media_finish(cmd, res);
		return;
	}
	for (uint32_t i = 0; i < len; i++)
		cmd->buf[i] |= medium[i];
	free(medium);
	sbc_media_submit(cmd, BE_OP_WRITE, write_flags(cmd),
			 m->io.offset, len, cmd->buf, orw_write_done);
}

/* Runs with the LUN's COMPARE AND WRITE lock held; cmd->cursor is the
 * number of bytes to OR (whole blocks of the Data-Out that arrived). */
static enum scsi_exec_result orw_start(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	void *medium;

	medium = scsi_work_alloc(cmd, cmd->cursor);
	if (!medium) {
		scsi_caw_unlock(lun);
		scsi_set_backend_error(cmd, -ENOMEM, true);
		return SCSI_EXEC_DONE;
	}
	return sbc_media_submit(cmd, BE_OP_READ, 0,
				cmd->lba * lun_settings_get(lun)->block_size, cmd->cursor,
				medium, orw_read_done);
}

enum scsi_exec_result sbc_orwrite(struct scsi_cmd *cmd)
{
	uint32_t bs = lun_settings_get(cmd->lun)->block_size;
	uint32_t nb = get_be32(cmd->cdb + ORW_CDB_LEN_OFF);

	if (!aw_decode(cmd, nb, ORW_CDB_LEN_OFF, SBC_MAX_TRANSFER_BYTES / bs))
		return SCSI_EXEC_DONE;
	/* Like WRITE, only the whole blocks that arrived are written; the
	 * transport reports the residual (RFC 7143 11.4.5.1). */
	uint32_t have = cmd->buf ? MIN(cmd->out_len, nb * bs) : 0;
	have -= have % bs;
	if (have == 0)
		return SCSI_EXEC_DONE;
	cmd->cursor = have;
	if (!scsi_caw_lock(cmd, orw_start))
		return SCSI_EXEC_ASYNC;
	return orw_start(cmd);
}

/* ---- WRITE ATOMIC ---- */

static void wa_write_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;

	scsi_caw_unlock(cmd->lun);
	sbc_media_finish(cmd, res);
}

static enum scsi_exec_result wa_start(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;

	return sbc_media_submit(cmd, BE_OP_WRITE, write_flags(cmd),
				cmd->lba * lun_settings_get(lun)->block_size,
				(uint64_t)cmd->nblocks * lun_settings_get(lun)->block_size,
				cmd->buf, wa_write_done);
}

enum scsi_exec_result sbc_write_atomic(struct scsi_cmd *cmd)
{
	uint32_t bs = lun_settings_get(cmd->lun)->block_size;
	uint32_t nb = get_be16(cmd->cdb + WA_CDB_LEN_OFF);

	if (!aw_decode(cmd, nb, WA_CDB_LEN_OFF, sbc_max_atomic_blocks(bs)))
		return SCSI_EXEC_DONE;
	/* MAXIMUM ATOMIC BOUNDARY SIZE is 0: atomic boundaries are not
	 * supported, so ATOMIC BOUNDARY must be 0 (SBC-4 5.48). */
	if (get_be16(cmd->cdb + WA_CDB_BOUNDARY_OFF)) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 WA_CDB_BOUNDARY_OFF, -1);
		return SCSI_EXEC_DONE;
	}
	/* All or nothing: a write that did not get all its data is not
	 * started at all rather than written in part. */
	if (!cmd->buf || cmd->out_len < nb * bs) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 WA_CDB_LEN_OFF, -1);
		return SCSI_EXEC_DONE;
	}
	if (!scsi_caw_lock(cmd, wa_start))
		return SCSI_EXEC_ASYNC;
	return wa_start(cmd);
}
