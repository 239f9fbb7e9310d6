/* scsi_sbc_status.c - what the medium can tell about itself: GET LBA
 * STATUS (SBC-3 5.16) and READ DEFECT DATA(10/12) (SBC-3 5.17 / 5.18).
 *
 * GET LBA STATUS asks the backend's block_status() (SEEK_DATA/SEEK_HOLE on
 * files) whether blocks are mapped or deallocated.  Only a thin LUN
 * (LBPME) has deallocated blocks to report: on a fully provisioned LUN
 * every block is mapped, whatever the sparse backing file looks like.  The
 * call is synchronous on the reactor; it is a pair of lseek() calls, cheap
 * next to the I/O that goes through the hang engine.
 *
 * A virtual disk has no defects, so READ DEFECT DATA answers with an empty
 * list in the format asked for. */
#include <errno.h>
#include <string.h>

#include "scsi_internal.h"
#include "util.h"

/* GET LBA STATUS parameter data (SBC-3 5.16.2) */
#define GLS_HDR_LEN		8
#define GLS_DESC_LEN		16
#define GLS_MAX_DESC		64	/* fewer than the allocation length
					 * allows is permitted (5.16.2) */
#define GLS_MAX_PROBES		(4 * GLS_MAX_DESC)
#define GLS_MAPPED		0x0	/* PROVISIONING STATUS */
#define GLS_DEALLOCATED		0x1

/* READ DEFECT DATA (SBC-3 5.17 / 5.18) */
#define RDD_REQ_PLIST		0x10	/* CDB: REQ_PLIST; data: PLISTV */
#define RDD_REQ_GLIST		0x08	/* CDB: REQ_GLIST; data: GLISTV */
#define RDD_FORMAT_MASK		0x07
#define RDD_FORMAT_RESERVED	0x07
#define RDD10_HDR_LEN		4
#define RDD12_HDR_LEN		8

/* ---- GET LBA STATUS ---- */

struct gls_out {
	uint8_t *b;
	unsigned n;		/* descriptors written */
	unsigned max;
};

/* Append [lba, lba + nb) with status st, merged into the previous
 * descriptor when it continues it.  false when there is no room. */
static bool gls_add(struct gls_out *o, uint64_t lba, uint64_t nb, uint8_t st)
{
	while (nb) {
		uint8_t *prev = o->n ? o->b + GLS_HDR_LEN +
					       (o->n - 1) * GLS_DESC_LEN
				     : NULL;
		if (prev && prev[12] == st &&
		    get_be64(prev) + get_be32(prev + 8) == lba &&
		    get_be32(prev + 8) < UINT32_MAX) {
			uint32_t have = get_be32(prev + 8);
			uint32_t add = (uint32_t)MIN(nb, (uint64_t)(UINT32_MAX -
								    have));
			put_be32(prev + 8, have + add);
			lba += add;
			nb -= add;
			continue;
		}
		if (o->n == o->max)
			return false;
		uint8_t *d = o->b + GLS_HDR_LEN + o->n * GLS_DESC_LEN;
		uint32_t take = (uint32_t)MIN(nb, (uint64_t)UINT32_MAX);
		memset(d, 0, GLS_DESC_LEN);
		put_be64(d, lba);
		put_be32(d + 8, take);
		d[12] = st;
		o->n++;
		lba += take;
		nb -= take;
	}
	return true;
}

/* Status of the extent starting at block lba: 0 and *st / *nb (at least
 * one block), or -errno from the backend. */
static int gls_probe(struct scsi_lun *lun, uint64_t lba, uint8_t *st,
		     uint64_t *nb)
{
	struct backend *be = lun->be;
	uint32_t bs = lun_settings_get(lun)->block_size;
	uint64_t left = lun->nblocks - lba, ext = 0;

	if (!lun_settings_get(lun)->thin_provisioning || !be || !be->ops->block_status) {
		*st = GLS_MAPPED;
		*nb = left;
		return 0;
	}
	int r = be->ops->block_status(be, lba * bs, left * bs, &ext);
	if (r < 0)
		return r;
	if (r == 0 && ext >= bs) {
		/* Whole blocks of hole only: a block that is partly data
		 * (file system blocks smaller than ours) is mapped. */
		*st = GLS_DEALLOCATED;
		*nb = ext / bs;
	} else {
		*st = GLS_MAPPED;
		*nb = r == 0 ? 1 : (ext + bs - 1) / bs;
	}
	*nb = MAX(MIN(*nb, left), (uint64_t)1);
	return 0;
}

enum scsi_exec_result sbc_get_lba_status(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint64_t lba = get_be64(cmd->cdb + 2);
	uint32_t alloc = get_be32(cmd->cdb + 10);
	uint8_t b[GLS_HDR_LEN + GLS_MAX_DESC * GLS_DESC_LEN];
	struct gls_out o = { .b = b, .max = GLS_MAX_DESC };

	/* SBC-3 5.16.1: a STARTING LOGICAL BLOCK ADDRESS beyond the last
	 * LBA is LOGICAL BLOCK ADDRESS OUT OF RANGE. */
	cmd->lba = lba;
	if (lba >= lun->nblocks) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	/* Only as many descriptors as the initiator can take (at least
	 * the first, which must describe the starting LBA). */
	if (alloc > GLS_HDR_LEN)
		o.max = MIN(o.max, MAX((alloc - GLS_HDR_LEN) / GLS_DESC_LEN, 1u));
	else
		o.max = 1;
	memset(b, 0, GLS_HDR_LEN);

	for (unsigned probes = 0;
	     lba < lun->nblocks && probes < GLS_MAX_PROBES; probes++) {
		uint8_t st;
		uint64_t nb;
		int r = gls_probe(lun, lba, &st, &nb);

		if (r < 0) {
			if (o.n)	/* what is known so far is an answer */
				break;
			scsi_set_backend_error(cmd, r, false);
			return SCSI_EXEC_DONE;
		}
		if (!gls_add(&o, lba, nb, st))
			break;
		lba += nb;
	}
	uint32_t len = GLS_HDR_LEN + o.n * GLS_DESC_LEN;
	put_be32(b, len - 4);		/* PARAMETER DATA LENGTH */
	return scsi_data_in(cmd, b, len, alloc);
}

/* ---- READ DEFECT DATA ---- */

enum scsi_exec_result sbc_read_defect_data(struct scsi_cmd *cmd)
{
	const uint8_t *cdb = cmd->cdb;
	bool ten = cdb[0] == SCSI_OP_READ_DEFECT_DATA_10;
	uint8_t req = ten ? cdb[2] : cdb[1];
	uint8_t format = req & RDD_FORMAT_MASK;
	uint32_t alloc = ten ? get_be16(cdb + 7) : get_be32(cdb + 6);
	uint8_t b[RDD12_HDR_LEN];

	if (format == RDD_FORMAT_RESERVED) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 ten ? 2 : 1, 2);
		return SCSI_EXEC_DONE;
	}
	/* Both lists exist and are empty: PLISTV / GLISTV say the list
	 * asked for is there, DEFECT LIST LENGTH is 0 in any format; the
	 * ADDRESS DESCRIPTOR INDEX of the 12-byte form points into
	 * nothing. */
	memset(b, 0, sizeof(b));
	b[1] = (req & (RDD_REQ_PLIST | RDD_REQ_GLIST)) | format;
	return scsi_data_in(cmd, b, ten ? RDD10_HDR_LEN : RDD12_HDR_LEN,
			    alloc);
}
