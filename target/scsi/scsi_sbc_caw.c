/* scsi_sbc_caw.c - COMPARE AND WRITE (SBC-3 5.2).
 *
 * The Data-Out holds the verify data followed by the write data, one
 * NUMBER OF LOGICAL BLOCKS each.  The blocks are read, compared, and only
 * if equal written; a difference is MISCOMPARE DURING VERIFY OPERATION
 * with the offset of the first differing byte.  Atomicity against other
 * COMPARE AND WRITEs (what ATS locking on VMFS or a cluster lock needs)
 * comes from scsi_caw_lock(): one at a time per LUN.  Both media steps go
 * through the hang engine like any read and write.
 *
 * A store that compares and writes itself (backend.caw_max: RBD, with
 * rbd_aio_compare_and_write, for one 512-byte sector) gets the whole
 * command as one BE_OP_COMPARE_AND_WRITE instead: atomic on the cluster,
 * against every client of the image and not only this LUN's commands,
 * and one round trip instead of two. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_internal.h"
#include "stack.h"
#include "util.h"

#define CAW_CDB_PROTECT_MASK	0xe0
#define CAW_CDB_FUA		0x08
#define CAW_CDB_NBLOCKS		13

static unsigned caw_write_flags(struct scsi_cmd *cmd)
{
	return (cmd->cdb[1] & CAW_CDB_FUA) ||
			       !lun_settings_get(cmd->lun)->write_cache
		       ? BE_IO_FUA
		       : 0;
}

static void caw_write_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;

	scsi_caw_unlock(cmd->lun);
	sbc_media_finish(cmd, res);
}

static void caw_read_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;
	struct scsi_lun *lun = cmd->lun;
	uint8_t *medium = cmd->iov.iov_base;
	uint32_t len = (uint32_t)m->io.length;

	cmd->iov.iov_base = NULL;
	if (res < 0 || cmd->aborted) {
		free(medium);
		scsi_caw_unlock(lun);
		sbc_media_finish(cmd, res);
		return;
	}
	for (uint32_t i = 0; i < len; i++) {
		if (medium[i] != cmd->buf[i]) {
			free(medium);
			scsi_caw_unlock(lun);
			scsi_sense_info(cmd, SENSE_KEY_MISCOMPARE,
					ASC_MISCOMPARE_DURING_VERIFY, i);
			scsi_cmd_complete(cmd);
			return;
		}
	}
	free(medium);

	sbc_media_submit(cmd, BE_OP_WRITE, caw_write_flags(cmd),
			 cmd->lba * lun_settings_get(lun)->block_size, len, cmd->buf + len,
			 caw_write_done);
}

static void caw_store_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;

	scsi_caw_unlock(cmd->lun);
	if (res == -EILSEQ && !cmd->aborted) {
		scsi_sense_info(cmd, SENSE_KEY_MISCOMPARE,
				ASC_MISCOMPARE_DURING_VERIFY,
				m->io.miscompare_offset);
		scsi_cmd_complete(cmd);
		return;
	}
	sbc_media_finish(cmd, res);
}

/* Does the store compare and write [off, off+len) itself? */
static bool caw_by_store(struct scsi_lun *lun, uint64_t off, uint32_t len)
{
	uint32_t max = be_stack_caw_max(lun->be);

	return max && len <= max && off / max == (off + len - 1) / max;
}

/* Runs with the LUN's COMPARE AND WRITE lock held. */
static enum scsi_exec_result caw_start(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint32_t len = cmd->nblocks * lun_settings_get(lun)->block_size;
	uint64_t off = cmd->lba * lun_settings_get(lun)->block_size;
	void *medium;

	if (caw_by_store(lun, off, len))
		return sbc_media_submit(cmd, BE_OP_COMPARE_AND_WRITE,
					caw_write_flags(cmd), off, len,
					cmd->buf, caw_store_done);

	medium = scsi_work_alloc(cmd, len);
	if (!medium) {
		scsi_caw_unlock(lun);
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	return sbc_media_submit(cmd, BE_OP_READ, 0,
				cmd->lba * lun_settings_get(lun)->block_size, len, medium,
				caw_read_done);
}

enum scsi_exec_result sbc_compare_and_write(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	const uint8_t *cdb = cmd->cdb;
	uint32_t bs = lun_settings_get(lun)->block_size;
	uint32_t nb = cdb[CAW_CDB_NBLOCKS];

	cmd->lba = get_be64(cdb + 2);
	cmd->nblocks = nb;
	cmd->out_want = 2 * nb * bs;
	if (cdb[1] & CAW_CDB_PROTECT_MASK) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 7);
		return SCSI_EXEC_DONE;
	}
	if (nb > SBC_MAX_CAW_BLOCKS) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 CAW_CDB_NBLOCKS, -1);
		return SCSI_EXEC_DONE;
	}
	if (!sbc_lba_range_ok(lun, cmd->lba, nb)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	if (nb == 0) {
		/* SBC-3 5.2: nothing to do - but Data-Out sent with it means
		 * the initiator meant something else (a count of 256 wraps
		 * to 0 in this 8-bit field). */
		if (cmd->exp_len || cmd->out_len)
			scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
					 CAW_CDB_NBLOCKS, -1);
		return SCSI_EXEC_DONE;
	}
	/* Both halves must be there, and no more (libiscsi checks both). */
	if (!cmd->buf || cmd->out_len != cmd->out_want ||
	    cmd->exp_len != cmd->out_want) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 CAW_CDB_NBLOCKS, -1);
		return SCSI_EXEC_DONE;
	}
	if (!scsi_caw_lock(cmd, caw_start))
		return SCSI_EXEC_ASYNC;
	return caw_start(cmd);
}
