/* scsi_sbc_status.c - what the medium can tell about itself: GET LBA
 * STATUS (SBC-3 5.16) and READ DEFECT DATA(10/12) (SBC-3 5.17 / 5.18).
 *
 * GET LBA STATUS asks the store, extent by extent, whether blocks are
 * mapped or deallocated (backend_block_status()); a store that learns of
 * several extents per question (a gateway's GET LBA STATUS to its SAN)
 * hands the ones that follow over in io->ext, as many as the answer
 * still has room for, so that one question to the SAN can fill it.  Only a thin LUN (LBPME)
 * has deallocated blocks to report: on a fully provisioned LUN every block
 * is mapped, whatever the sparse backing file looks like.  A file answers
 * at once (SEEK_DATA/SEEK_HOLE, a pair of lseek() calls on the reactor); a
 * gateway LUN asks the SAN with its own GET LBA STATUS and the command
 * waits for the answer (SCSI_STAGE_STATUS; an abort is answered when the
 * store's answer comes, within the gateway's remote_timeout).  It does
 * not go through the hang engine: the answer is advisory, so a store
 * that is down answers with its error instead of holding it.  A store
 * that cannot tell (-EOPNOTSUPP) has the rest reported mapped.
 *
 * A virtual disk has no defects, so READ DEFECT DATA answers with an empty
 * list in the format asked for. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "reactor.h"
#include "scsi_internal.h"
#include "util.h"

/* GET LBA STATUS parameter data (SBC-3 5.16.2) */
#define GLS_HDR_LEN		8
#define GLS_DESC_LEN		16
#define GLS_MAX_DESC		255	/* 4 KiB of answer; fewer than the
					 * allocation length allows is
					 * permitted (5.16.2) */
#define GLS_MAX_PROBES		256	/* questions to the store */
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

/* What GET LBA STATUS builds while it asks the store, extent by extent
 * (cmd->iov.iov_base while the command runs; cmd->lba is the next block
 * to ask about). */
struct gls_run {
	uint8_t b[GLS_HDR_LEN + GLS_MAX_DESC * GLS_DESC_LEN];
	struct be_extent ext[GLS_MAX_DESC];	/* the store's further
						 * extents (io->ext) */
	struct gls_out o;
	uint32_t alloc;
	unsigned probes;
};

/* Turn the store's answer for the extent at lba (r: 1 mapped, 0 hole,
 * ext bytes) into a status and a block count of at least one. */
static void gls_extent(uint32_t bs, uint64_t left, int r, uint64_t ext,
		       uint8_t *st, uint64_t *nb)
{
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
}

static enum scsi_exec_result gls_finish(struct scsi_cmd *cmd)
{
	struct gls_run *g = cmd->iov.iov_base;
	uint32_t len = GLS_HDR_LEN + g->o.n * GLS_DESC_LEN;
	enum scsi_exec_result ret;

	put_be32(g->b, len - 4);		/* PARAMETER DATA LENGTH */
	ret = scsi_data_in(cmd, g->b, len, g->alloc);
	free(g);
	cmd->iov.iov_base = NULL;
	return ret;
}

/* Add one extent of the store's answer at cmd->lba: false when there
 * is no room, or the extent did not end on a block boundary of the LUN
 * (what follows it must be asked about again from cmd->lba). */
static bool gls_take_one(struct scsi_cmd *cmd, int r, uint64_t ext)
{
	struct scsi_lun *lun = cmd->lun;
	struct gls_run *g = cmd->iov.iov_base;
	uint32_t bs = lun_settings_get(lun)->block_size;
	uint64_t left = lun->nblocks - cmd->lba, nb;
	uint8_t st;

	gls_extent(bs, left, r, ext, &st, &nb);
	if (!gls_add(&g->o, cmd->lba, nb, st))
		return false;
	cmd->lba += nb;
	return nb * bs == ext;
}

/* The store's answer r for the extent at cmd->lba (and io->ext, the ones
 * after it): add them, then true to go on asking, false when the answer
 * is complete (or r is the error). */
static bool gls_take(struct scsi_cmd *cmd, int r, const struct be_io *io)
{
	struct scsi_lun *lun = cmd->lun;
	struct gls_run *g = cmd->iov.iov_base;
	uint32_t bs = lun_settings_get(lun)->block_size;
	uint64_t ext = io->length;
	unsigned more = MIN(io->ext_n, io->ext_max);

	if (r == -EOPNOTSUPP) {
		more = 0;
		/* a store that cannot tell (a SAN without GET LBA STATUS):
		 * the rest is mapped, which is always a true answer */
		r = 1;
		ext = (lun->nblocks - cmd->lba) * bs;
	}
	if (r < 0)
		return false;
	g->probes++;
	if (gls_take_one(cmd, r, ext))
		for (unsigned i = 0; i < more && cmd->lba < lun->nblocks; i++)
			if (!gls_take_one(cmd, io->ext[i].status ? 1 : 0,
					  io->ext[i].length))
				break;
	if (g->o.n == g->o.max)
		return false;
	return cmd->lba < lun->nblocks && g->probes < GLS_MAX_PROBES;
}

static void gls_answer(struct be_io *io, int r);

/* Ask the store about the extents from cmd->lba on until the answer is
 * complete: DONE with the answer (or the error), or ASYNC while the
 * store is asked (gls_answer goes on). */
static enum scsi_exec_result gls_step(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	struct gls_run *g = cmd->iov.iov_base;
	uint32_t bs = lun_settings_get(lun)->block_size;
	struct be_io *io = &cmd->mio.io;

	for (;;) {
		int r;

		memset(io, 0, sizeof(*io));
		io->offset = cmd->lba * bs;
		io->length = (lun->nblocks - cmd->lba) * bs;
		io->done = gls_answer;
		io->priv = cmd;
		/* room for what the answer can still take after this
		 * extent (a store that knows more says so at once) */
		io->ext = g->ext;
		io->ext_max = (uint16_t)(g->o.max - g->o.n);
		r = backend_block_status(lun->be, io, reactor_current());
		if (r == -EINPROGRESS) {
			cmd->stage = SCSI_STAGE_STATUS;
			return SCSI_EXEC_ASYNC;
		}
		if (gls_take(cmd, r, io))
			continue;
		if (r < 0 && r != -EOPNOTSUPP && !g->o.n) {
			free(g);
			cmd->iov.iov_base = NULL;
			scsi_set_store_error(cmd, r, io, false);
			return SCSI_EXEC_DONE;
		}
		/* what is known so far is an answer */
		return gls_finish(cmd);
	}
}

static void gls_answer(struct be_io *io, int r)
{
	struct scsi_cmd *cmd = io->priv;
	struct gls_run *g = cmd->iov.iov_base;
	enum scsi_exec_result ret;

	cmd->stage = SCSI_STAGE_EXEC;
	if (cmd->aborted) {
		free(g);
		cmd->iov.iov_base = NULL;
		scsi_cmd_complete(cmd);
		return;
	}
	if (gls_take(cmd, r, io))
		ret = gls_step(cmd);
	else if (r < 0 && r != -EOPNOTSUPP && !g->o.n) {
		free(g);
		cmd->iov.iov_base = NULL;
		scsi_set_store_error(cmd, r, io, false);
		ret = SCSI_EXEC_DONE;
	} else
		ret = gls_finish(cmd);
	if (ret == SCSI_EXEC_DONE)
		scsi_cmd_complete(cmd);
}

enum scsi_exec_result sbc_get_lba_status(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint64_t lba = get_be64(cmd->cdb + 2);
	uint32_t alloc = get_be32(cmd->cdb + 10);
	struct gls_run *g;

	/* SBC-3 5.16.1: a STARTING LOGICAL BLOCK ADDRESS beyond the last
	 * LBA is LOGICAL BLOCK ADDRESS OUT OF RANGE. */
	cmd->lba = lba;
	if (lba >= lun->nblocks) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return SCSI_EXEC_DONE;
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	g->o.b = g->b;
	g->o.max = GLS_MAX_DESC;
	g->alloc = alloc;
	cmd->iov.iov_base = g;
	/* Only as many descriptors as the initiator can take (at least
	 * the first, which must describe the starting LBA). */
	if (alloc > GLS_HDR_LEN)
		g->o.max = MIN(g->o.max, MAX((alloc - GLS_HDR_LEN) / GLS_DESC_LEN, 1u));
	else
		g->o.max = 1;
	/* Only a thin LUN has deallocated blocks to report: on a fully
	 * provisioned one every block is mapped, whatever the store says. */
	if (!scsi_lun_thin(lun) || !lun->be) {
		gls_add(&g->o, lba, lun->nblocks - lba, GLS_MAPPED);
		return gls_finish(cmd);
	}
	return gls_step(cmd);
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
