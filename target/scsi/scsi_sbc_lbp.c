/* scsi_sbc_lbp.c - logical block provisioning (SBC-3 4.7): UNMAP and
 * WRITE SAME(10/16).
 *
 * A thin LUN (thin_provisioning) advertises LBPME, LBPU, LBPWS, LBPWS10
 * and LBPRZ: unmapped blocks read back as zeroes, which the backends
 * guarantee for BE_OP_UNMAP.  WRITE SAME works on every LUN; a zero
 * pattern becomes BE_OP_WRITE_ZEROES (or BE_OP_UNMAP when the initiator
 * allows it on a thin LUN), anything else one write of the pattern
 * repeated. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_internal.h"
#include "util.h"

/* UNMAP (SBC-3 5.28) */
#define UNMAP_CDB_ANCHOR	0x01
#define UNMAP_HDR_LEN		8
#define UNMAP_DESC_LEN		16

/* WRITE SAME (SBC-3 5.42 / 5.43) byte 1 */
#define WS_CDB_PROTECT_MASK	0xe0
#define WS_CDB_ANCHOR		0x10
#define WS_CDB_UNMAP		0x08
#define WS16_CDB_NDOB		0x01	/* no Data-Out: pattern of zeroes */

/* ---- UNMAP ----
 * The parameter list is checked as a whole first (SBC-3 5.28.2), then the
 * descriptors run one after the other; cmd->cursor is the next one. */

static uint32_t unmap_ndesc(const struct scsi_cmd *cmd)
{
	uint32_t plen = MIN(get_be16(cmd->cdb + 7), cmd->out_len);
	uint32_t bdlen = get_be16(cmd->buf + 2);

	/* A partial trailing descriptor is ignored. */
	bdlen = MIN(bdlen, plen - UNMAP_HDR_LEN);
	return bdlen / UNMAP_DESC_LEN;
}

static void unmap_next(struct media_io *m, int res);

/* Submit the next non-empty descriptor, or finish. */
static enum scsi_exec_result unmap_step(struct scsi_cmd *cmd)
{
	uint32_t bs = lun_settings_get(cmd->lun)->block_size;
	uint32_t n = unmap_ndesc(cmd);

	while (cmd->cursor < n) {
		const uint8_t *d = cmd->buf + UNMAP_HDR_LEN +
				   cmd->cursor * UNMAP_DESC_LEN;
		uint64_t lba = get_be64(d);
		uint32_t nb = get_be32(d + 8);

		cmd->cursor++;
		if (!nb)
			continue;
		cmd->lba = lba;
		cmd->nblocks = nb;
		return sbc_media_submit(cmd, BE_OP_UNMAP, 0, lba * bs,
					(uint64_t)nb * bs, NULL, unmap_next);
	}
	cmd->status = SAM_STAT_GOOD;
	return SCSI_EXEC_DONE;
}

static void unmap_next(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;

	if (res < 0 || cmd->aborted) {
		sbc_media_finish(cmd, res);
		return;
	}
	cmd->stage = SCSI_STAGE_EXEC;
	if (unmap_step(cmd) == SCSI_EXEC_DONE)
		scsi_cmd_complete(cmd);
}

enum scsi_exec_result sbc_unmap(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint32_t plen = get_be16(cmd->cdb + 7);

	if (cmd->cdb[1] & UNMAP_CDB_ANCHOR) {	/* ANC_SUP is 0 */
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 0);
		return SCSI_EXEC_DONE;
	}
	cmd->out_want = plen;
	if (plen == 0)		/* nothing to do (SBC-3 5.28.1) */
		return SCSI_EXEC_DONE;
	if (plen < UNMAP_HDR_LEN) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_PARAMETER_LIST_LENGTH_ERROR);
		return SCSI_EXEC_DONE;
	}
	if (!cmd->buf || cmd->out_len < UNMAP_HDR_LEN) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_PARAMETER_LIST_LENGTH_ERROR);
		return SCSI_EXEC_DONE;
	}

	uint32_t n = unmap_ndesc(cmd);
	uint64_t total = 0;
	if (n > SBC_MAX_UNMAP_DESCRIPTORS) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_PARAMETER_LIST,
				 false, 2, -1);
		return SCSI_EXEC_DONE;
	}
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *d = cmd->buf + UNMAP_HDR_LEN + i * UNMAP_DESC_LEN;
		uint64_t lba = get_be64(d);
		uint32_t nb = get_be32(d + 8);

		if (!sbc_lba_range_ok(lun, lba, nb)) {
			scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
				   ASC_LBA_OUT_OF_RANGE);
			return SCSI_EXEC_DONE;
		}
		total += nb;
	}
	if (total > SBC_MAX_UNMAP_LBA_COUNT) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_PARAMETER_LIST,
				 false, UNMAP_HDR_LEN + 8, -1);
		return SCSI_EXEC_DONE;
	}
	cmd->cursor = 0;
	return unmap_step(cmd);
}

/* ---- WRITE SAME ---- */

static bool all_zero(const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The pattern write used a scratch buffer (cmd->iov.iov_base). */
static void write_same_done(struct media_io *m, int res)
{
	struct scsi_cmd *cmd = m->owner;

	if (m->io.op == BE_OP_WRITE) {
		free(cmd->iov.iov_base);
		cmd->iov.iov_base = NULL;
	}
	sbc_media_finish(cmd, res);
}

enum scsi_exec_result sbc_write_same(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	const uint8_t *cdb = cmd->cdb;
	uint32_t bs = lun_settings_get(lun)->block_size;
	bool ws16 = cdb[0] == SCSI_OP_WRITE_SAME_16;
	bool ndob = ws16 && (cdb[1] & WS16_CDB_NDOB);
	uint64_t lba = ws16 ? get_be64(cdb + 2) : get_be32(cdb + 2);
	uint32_t nb = ws16 ? get_be32(cdb + 10) : get_be16(cdb + 7);

	cmd->lba = lba;
	cmd->nblocks = nb;
	if (!ndob)
		cmd->out_want = bs;
	if (cdb[1] & WS_CDB_PROTECT_MASK) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 7);
		return SCSI_EXEC_DONE;
	}
	if (cdb[1] & WS_CDB_ANCHOR) {		/* ANC_SUP is 0 */
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 4);
		return SCSI_EXEC_DONE;
	}
	/* UNMAP without LBPWS/LBPWS10, i.e. on a fully provisioned LUN, is
	 * an invalid field (SBC-3 5.42 / 5.43). */
	if ((cdb[1] & WS_CDB_UNMAP) && !scsi_lun_thin(lun)) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 3);
		return SCSI_EXEC_DONE;
	}
	if (!sbc_lba_range_ok(lun, lba, nb)) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	/* WSNZ is set in the Block Limits page: 0 blocks ("to the end") and
	 * more than MAXIMUM WRITE SAME LENGTH are refused. */
	if (nb == 0 || (uint64_t)nb * bs > SBC_MAX_TRANSFER_BYTES) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 ws16 ? 10 : 7, -1);
		return SCSI_EXEC_DONE;
	}
	if (!ndob && (!cmd->buf || cmd->out_len != bs || cmd->exp_len > bs)) {
		/* Exactly one logical block of Data-Out is the pattern; more
		 * or less is a malformed request (libiscsi checks both). */
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 ws16 ? 10 : 7, -1);
		return SCSI_EXEC_DONE;
	}

	uint64_t offset = lba * bs, length = (uint64_t)nb * bs;
	if (ndob || all_zero(cmd->buf, bs)) {
		/* SBC-3 4.7.3.4: with UNMAP set a thin LUN may deallocate;
		 * LBPRZ makes that read back as the zeroes asked for. */
		enum be_op op = (cdb[1] & WS_CDB_UNMAP) ? BE_OP_UNMAP
							: BE_OP_WRITE_ZEROES;
		return sbc_media_submit(cmd, op, 0, offset, length, NULL,
					write_same_done);
	}

	uint8_t *pat = scsi_work_alloc(cmd, (uint32_t)length);
	if (!pat) {
		scsi_set_backend_error(cmd, -ENOMEM, true);
		return SCSI_EXEC_DONE;
	}
	for (uint32_t i = 0; i < nb; i++)
		memcpy(pat + (uint64_t)i * bs, cmd->buf, bs);
	return sbc_media_submit(cmd, BE_OP_WRITE,
				lun_settings_get(lun)->write_cache ? 0 : BE_IO_FUA, offset,
				length, pat, write_same_done);
}
