/* scsi_xcopy.c - the copy manager: EXTENDED COPY (LID1, SPC-4 6.4) with
 * block-to-block segment descriptors (type 02h, SPC-4 6.4.6.5) between
 * LUNs this daemon serves, identified by identification CSCD descriptors
 * (E4h, SPC-4 6.4.5.2) that carry the NAA designator of VPD page 83h;
 * and RECEIVE COPY RESULTS (SPC-4 6.18) to report on them.
 *
 * A copy runs asynchronously on the reactor of the command: one chunk of
 * at most XCOPY_CHUNK_BYTES is read from the source LUN and written to the
 * destination, each as a struct media_io through the hang engine, so the
 * destination's (or source's) hang-on-error policy holds the copy while a
 * store is failing exactly like an initiator's own writes.  Memory per
 * running copy is one chunk buffer. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "reactor.h"
#include "scsi_xcopy.h"
#include "target.h"
#include "util.h"

#define SENSE_KEY_COPY_ABORTED			0x0a

/* Additional sense codes used by the copy manager (SPC-4 Annex D) */
#define ASC_OPERATION_IN_PROGRESS		0x0016
#define ASC_COPY_TARGET_NOT_REACHABLE		0x0d02
#define ASC_INCORRECT_COPY_TARGET_TYPE		0x0d03
#define ASC_TOO_MANY_TARGET_DESCRIPTORS		0x2606
#define ASC_UNSUPPORTED_TARGET_DESC_TYPE	0x2607
#define ASC_TOO_MANY_SEGMENT_DESCRIPTORS	0x2608
#define ASC_UNSUPPORTED_SEGMENT_DESC_TYPE	0x2609
#define ASC_INSUFFICIENT_RESOURCES		0x5503

/* Parameter list header (SPC-4 6.4.3.1 table 106) */
#define XH_LIST_ID		0
#define XH_FLAGS		1
#define XH_STR			0x20
#define XH_USAGE_SHIFT		3
#define XH_USAGE_MASK		0x3
#define XH_PRIO_MASK		0x7
#define XH_CSCD_LEN		2
#define XH_SEG_LEN		8
#define XH_INLINE_LEN		12

/* Identification CSCD descriptor (SPC-4 6.4.5.2 table 117) */
#define CD_LU_ID_TYPE_SHIFT	6
#define CD_NUL			0x20
#define CD_PDT_MASK		0x1f
#define CD_CODE_SET		4
#define CD_DESIG_TYPE		5
#define CD_DESIG_LEN		7
#define CD_DESIG		8
#define CD_BLOCK_LEN		29	/* block device parameters, 24 bits */

/* Designator fields (SPC-4 7.8.6.1) */
#define DESIG_CODE_BINARY	0x1
#define DESIG_ASSOC_LU		0x0
#define DESIG_TYPE_NAA		0x3
#define NAA_LOCALLY_ASSIGNED	0x3
#define PDT_BLOCK		0x00

/* Block device to block device segment descriptor (SPC-4 6.4.6.5) */
#define SD_FLAGS		1
#define SD_DC			0x02
#define SD_CAT			0x01
#define SD_DESC_LEN		2	/* bytes after the first 4 */
#define SD_SRC			4
#define SD_DST			6
#define SD_NBLOCKS		10
#define SD_SRC_LBA		12
#define SD_DST_LBA		20

/* COPY STATUS (SPC-4 6.18.2) */
#define CS_LEN			12
#define CS_IN_PROGRESS		0x00
#define CS_DONE_OK		0x01
#define CS_DONE_ERROR		0x02

/* OPERATING PARAMETERS (SPC-4 6.18.4) */
#define OP_SNLID		0x01
#define OP_FIXED_LEN		44

/* FAILED SEGMENT DETAILS (SPC-4 6.18.5) */
#define FSD_HDR_LEN		60

/* Third-party Copy VPD page descriptors (SPC-4 7.8.17) */
#define TPC_DESC_SUPPORTED_COMMANDS	0x0001
#define TPC_DESC_PARAMETER_DATA		0x0008
#define TPC_DESC_SUPPORTED_DESCRIPTORS	0x000c
#define TPC_DESC_SUPPORTED_CSCD_IDS	0x000d

/* ---- parameter list ---- */

static int perr(struct xcopy_err *e, uint8_t key, uint16_t asc, int32_t byte,
		int8_t bit)
{
	e->key = key;
	e->asc = asc;
	e->byte = byte;
	e->bit = bit;
	return -EINVAL;
}

#define BAD_PARAM(e, byte, bit) \
	perr(e, SENSE_KEY_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST, \
	     byte, bit)
#define LEN_ERROR(e) \
	perr(e, SENSE_KEY_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR, \
	     -1, -1)

static int parse_cscd(const uint8_t *d, uint32_t off, struct xcopy_cscd *c,
		      struct xcopy_err *err)
{
	memset(c, 0, sizeof(*c));
	c->lu_id_type = d[1] >> CD_LU_ID_TYPE_SHIFT;
	c->nul = d[1] & CD_NUL;
	c->pdt = d[1] & CD_PDT_MASK;
	/* The designator names the copy target; SPC-4 has the copy manager
	 * ignore LU ID TYPE and LU IDENTIFIER of identification descriptors
	 * (libiscsi checks that a reserved LU ID TYPE is accepted from an
	 * SPC-4 device), so the field is kept for logging only. */
	c->code_set = d[CD_CODE_SET] & 0x0f;
	c->assoc = d[CD_DESIG_TYPE] >> 4 & 0x3;
	c->desig_type = d[CD_DESIG_TYPE] & 0x0f;
	c->desig_len = d[CD_DESIG_LEN];
	if (c->desig_len > XCOPY_DESIG_MAX)
		return BAD_PARAM(err, (int32_t)off + CD_DESIG_LEN, -1);
	memcpy(c->desig, d + CD_DESIG, c->desig_len);
	if (c->pdt == PDT_BLOCK)
		c->block_len = get_be24(d + CD_BLOCK_LEN);
	return 0;
}

static int parse_seg(const uint8_t *d, uint32_t left, uint32_t off,
		     struct xcopy_seg *s, struct xcopy_err *err)
{
	if (left < XCOPY_SEG_B2B_LEN)
		return LEN_ERROR(err);
	/* DESCRIPTOR LENGTH counts the bytes after byte 3: 0018h. */
	if (get_be16(d + SD_DESC_LEN) != XCOPY_SEG_B2B_LEN - 4)
		return BAD_PARAM(err, (int32_t)off + SD_DESC_LEN, -1);
	memset(s, 0, sizeof(*s));
	s->dc = d[SD_FLAGS] & SD_DC;
	s->cat = d[SD_FLAGS] & SD_CAT;
	s->src = get_be16(d + SD_SRC);
	s->dst = get_be16(d + SD_DST);
	s->nblocks = get_be16(d + SD_NBLOCKS);
	s->src_lba = get_be64(d + SD_SRC_LBA);
	s->dst_lba = get_be64(d + SD_DST_LBA);
	return 0;
}

int xcopy_parse(const uint8_t *p, uint32_t len, struct xcopy_list *out,
		struct xcopy_err *err)
{
	memset(out, 0, sizeof(*out));
	/* SPC-4 6.4.1: a PARAMETER LIST LENGTH of zero is not an error and
	 * copies nothing. */
	if (len == 0)
		return 1;
	if (len < XCOPY_HDR_LEN)
		return LEN_ERROR(err);

	uint32_t cscd_len = get_be16(p + XH_CSCD_LEN);
	uint32_t seg_len = get_be32(p + XH_SEG_LEN);
	uint32_t inline_len = get_be32(p + XH_INLINE_LEN);

	out->list_id = p[XH_LIST_ID];
	out->list_id_usage = p[XH_FLAGS] >> XH_USAGE_SHIFT & XH_USAGE_MASK;
	out->priority = p[XH_FLAGS] & XH_PRIO_MASK;
	if (out->list_id_usage == 1)		/* reserved value */
		return BAD_PARAM(err, XH_FLAGS, 4);
	/* 11b: no list identifier, so it must be zero (SPC-4 table 107). */
	if (out->list_id_usage == XCOPY_USAGE_NONE && out->list_id)
		return BAD_PARAM(err, XH_LIST_ID, -1);
	/* SPC-4 6.4.3.5: descriptors beyond MAXIMUM DESCRIPTOR LIST LENGTH
	 * are a PARAMETER LIST LENGTH ERROR, checked before counting them. */
	if ((uint64_t)cscd_len + seg_len > XCOPY_MAX_DESC_LIST_LEN)
		return LEN_ERROR(err);
	/* SPC-4 6.4.1: a list cut short by PARAMETER LIST LENGTH. */
	if ((uint64_t)XCOPY_HDR_LEN + cscd_len + seg_len + inline_len > len)
		return LEN_ERROR(err);
	/* No segment type offered here uses inline data (MAXIMUM INLINE
	 * DATA LENGTH is 0). */
	if (inline_len)
		return BAD_PARAM(err, XH_INLINE_LEN, -1);

	const uint8_t *d = p + XCOPY_HDR_LEN;
	uint32_t off = 0;
	while (off < cscd_len) {
		uint32_t at = XCOPY_HDR_LEN + off;

		if (d[off] != XCOPY_CSCD_IDENTIFICATION)
			return perr(err, SENSE_KEY_ILLEGAL_REQUEST,
				    ASC_UNSUPPORTED_TARGET_DESC_TYPE,
				    (int32_t)at, -1);
		if (out->ncscd == XCOPY_MAX_CSCD)	/* SPC-4 6.4.3.4 */
			return perr(err, SENSE_KEY_ILLEGAL_REQUEST,
				    ASC_TOO_MANY_TARGET_DESCRIPTORS, -1, -1);
		if (cscd_len - off < XCOPY_CSCD_LEN)
			return BAD_PARAM(err, XH_CSCD_LEN, -1);
		if (parse_cscd(d + off, at, &out->cscd[out->ncscd], err) < 0)
			return -EINVAL;
		out->ncscd++;
		off += XCOPY_CSCD_LEN;
	}

	d += cscd_len;
	off = 0;
	while (off < seg_len) {
		uint32_t at = XCOPY_HDR_LEN + cscd_len + off;

		if (d[off] != XCOPY_SEG_BLOCK_TO_BLOCK)
			return perr(err, SENSE_KEY_ILLEGAL_REQUEST,
				    ASC_UNSUPPORTED_SEGMENT_DESC_TYPE,
				    (int32_t)at, -1);
		if (out->nseg == XCOPY_MAX_SEGMENTS)	/* SPC-4 6.4.3.5 */
			return perr(err, SENSE_KEY_ILLEGAL_REQUEST,
				    ASC_TOO_MANY_SEGMENT_DESCRIPTORS, -1, -1);
		if (parse_seg(d + off, seg_len - off, at, &out->seg[out->nseg],
			      err) < 0)
			return -EINVAL;
		out->nseg++;
		off += XCOPY_SEG_B2B_LEN;
	}
	return 0;
}

/* ---- copy targets ----
 *
 * Copy targets are found through the target table (target.h).  The unit
 * tests substitute their own table at link time (test_scsi_xcopy.c). */

uint64_t xcopy_lun_naa(const struct scsi_lun *lun)
{
	const struct lun_settings *s = lun_settings_get(lun);
	const char *tname = lun->target ? lun->target->name : "";
	/* Same derivation as the Device Identification page (scsi_spc.c):
	 * the configured scsi_id, else target name and LUN number. */
	uint64_t h = s->scsi_id[0] ? scsi_hash64(s->scsi_id, 0)
				   : scsi_hash64(tname, s->lun);

	return (uint64_t)NAA_LOCALLY_ASSIGNED << 60 | (h & ((1ull << 60) - 1));
}

struct naa_search {
	uint64_t naa;
	const struct scsi_nexus *nexus;
	struct target *own;		/* the command's target: searched first */
	struct scsi_lun *found;		/* referenced */
};

static struct scsi_lun *naa_in_target(struct target *t, uint64_t naa)
{
	for (uint64_t i = 1; i < TGT_MAX_LUNS; i++) {
		struct scsi_lun *l = tgt_lun_get(t, i);

		if (!l)
			continue;
		if (l->be && xcopy_lun_naa(l) == naa)
			return l;
		scsi_lun_put(l);
	}
	return NULL;
}

static void naa_search_target(struct target *t, void *arg)
{
	struct naa_search *q = arg;

	if (q->found || t == q->own)
		return;
	/* A LUN of another target is a copy target only for an initiator
	 * that target's ACL admits by name (or ALL): the copy manager must
	 * not become a way around access control.  Address rules cannot be
	 * evaluated here (no peer address), so they do not admit. */
	if (!tgt_acl_allows(t, NULL,
			    q->nexus ? q->nexus->initiator_name : NULL))
		return;
	q->found = naa_in_target(t, q->naa);
}

/* The LUN a CSCD descriptor names, referenced; NULL if none is reachable. */
static struct scsi_lun *cscd_resolve(struct scsi_cmd *cmd,
				     const struct xcopy_cscd *c)
{
	struct naa_search q = { .nexus = cmd->nexus };

	if (c->code_set != DESIG_CODE_BINARY || c->assoc != DESIG_ASSOC_LU ||
	    c->desig_type != DESIG_TYPE_NAA || c->desig_len != 8)
		return NULL;
	q.naa = get_be64(c->desig);
	q.own = cmd->lun ? cmd->lun->target : cmd->target;
	if (q.own) {
		q.found = naa_in_target(q.own, q.naa);
		if (q.found)
			return q.found;
	}
	tgt_for_each(naa_search_target, &q);
	return q.found;
}

/* ---- held copy results (RECEIVE COPY RESULTS) ----
 *
 * SPC-4 6.18: results are kept per I_T nexus and LIST IDENTIFIER for copies
 * whose LIST ID USAGE asked for it (00b).  A small table serves every
 * reactor; finished entries are evicted oldest first. */

struct xcopy_held {
	bool used;
	bool running;
	uint64_t nexus_id;
	uint8_t list_id;
	uint64_t age;
	uint8_t status;			/* CS_* */
	uint16_t segments;		/* segments processed */
	uint64_t bytes;			/* transferred */
	uint8_t cmd_status;		/* SCSI status of the EXTENDED COPY */
	uint32_t sense_len;
	uint8_t sense[SCSI_SENSE_MAX];
};

static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xcopy_held held[XCOPY_HELD_MAX];
static uint64_t held_clock;

/* Under held_lock. */
static struct xcopy_held *held_find(uint64_t nexus_id, uint8_t list_id)
{
	for (unsigned i = 0; i < XCOPY_HELD_MAX; i++)
		if (held[i].used && held[i].nexus_id == nexus_id &&
		    held[i].list_id == list_id)
			return &held[i];
	return NULL;
}

/* Reserve the slot for a copy starting now: 0, -EBUSY (same list id still
 * running: OPERATION IN PROGRESS) or -ENOSPC (every slot running). */
static int held_start(uint64_t nexus_id, uint8_t list_id, bool hold,
		      struct xcopy_held **out)
{
	struct xcopy_held *h, *victim = NULL;
	int ret = 0;

	*out = NULL;
	pthread_mutex_lock(&held_lock);
	h = held_find(nexus_id, list_id);
	if (h && h->running) {
		ret = -EBUSY;
		goto out;
	}
	if (h)			/* an old result for a reused list id */
		h->used = false;
	if (!hold)
		goto out;
	for (unsigned i = 0; i < XCOPY_HELD_MAX; i++) {
		if (!held[i].used) {
			victim = &held[i];
			break;
		}
		if (!held[i].running &&
		    (!victim || held[i].age < victim->age))
			victim = &held[i];
	}
	if (!victim) {
		ret = -ENOSPC;
		goto out;
	}
	memset(victim, 0, sizeof(*victim));
	victim->used = true;
	victim->running = true;
	victim->nexus_id = nexus_id;
	victim->list_id = list_id;
	victim->age = ++held_clock;
	victim->status = CS_IN_PROGRESS;
	*out = victim;
out:
	pthread_mutex_unlock(&held_lock);
	return ret;
}

/* ---- the copy ---- */

enum xcopy_phase { XP_READ, XP_WRITE };

struct xcopy_job {
	struct scsi_cmd *cmd;
	struct xcopy_list list;
	struct scsi_lun *lun[XCOPY_MAX_CSCD];	/* referenced, by CSCD */
	struct xcopy_held *held;		/* NULL: results not held */
	unsigned seg;				/* segment being copied */
	uint64_t seg_bytes, seg_done;		/* its length, progress */
	uint64_t total;				/* bytes copied */
	enum xcopy_phase phase;
	uint32_t chunk;				/* bytes in this chunk */
	uint8_t *buf;
	struct iovec iov;
	struct media_io mio;			/* the chunk in flight */
	struct scsi_lun *io_lun;		/* ... and its LUN */
	bool gated;				/* its write is counted in the
						 * LUN's write gate (ALUA) */
};

static void job_progress(struct xcopy_job *j)
{
	if (!j->held)
		return;
	pthread_mutex_lock(&held_lock);
	j->held->segments = (uint16_t)j->seg;
	j->held->bytes = j->total;
	pthread_mutex_unlock(&held_lock);
}

static void job_free(struct xcopy_job *j)
{
	for (unsigned i = 0; i < XCOPY_MAX_CSCD; i++)
		if (j->lun[i])
			scsi_lun_put(j->lun[i]);
	scsi_buf_free(j->buf);
	free(j);
}

/* Finish the EXTENDED COPY with whatever status and sense cmd has. */
static void job_finish(struct xcopy_job *j)
{
	struct scsi_cmd *cmd = j->cmd;

	if (j->held) {
		pthread_mutex_lock(&held_lock);
		j->held->running = false;
		j->held->segments = (uint16_t)j->seg;
		j->held->bytes = j->total;
		j->held->status = cmd->status == SAM_STAT_GOOD && !cmd->aborted
					  ? CS_DONE_OK : CS_DONE_ERROR;
		j->held->cmd_status = cmd->aborted ? SAM_STAT_TASK_ABORTED
						   : cmd->status;
		j->held->sense_len = cmd->aborted ? 0 : cmd->sense_len;
		memcpy(j->held->sense, cmd->sense, j->held->sense_len);
		j->held->age = ++held_clock;
		pthread_mutex_unlock(&held_lock);
	}
	job_free(j);
	scsi_cmd_complete(cmd);
}

/* A failed chunk: COPY ABORTED with the reason of the failing device
 * (SPC-4 6.4.4: errors while processing a segment descriptor), except
 * for conditions the initiator should simply retry. */
static void job_io_error(struct xcopy_job *j, int res, bool is_write)
{
	struct scsi_cmd *cmd = j->cmd;
	uint16_t asc;

	switch (-res) {
	case EBUSY:		/* hung LUN over its limits */
	case ENOMEM:
	case EAGAIN:		/* BUSY / TASK SET FULL: retry later */
		scsi_set_backend_error(cmd, res, is_write);
		return;
	case ENOSPC:
		asc = ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT;
		break;
	case EROFS:
		asc = ASC_WRITE_PROTECTED;
		break;
	default:
		asc = is_write ? ASC_WRITE_ERROR : ASC_UNRECOVERED_READ_ERROR;
		break;
	}
	scsi_sense_info(cmd, SENSE_KEY_COPY_ABORTED, asc, j->seg);
}

static void job_step(struct xcopy_job *j);

static void job_submit(struct xcopy_job *j, struct scsi_lun *lun,
		       enum be_op op, unsigned flags, uint64_t offset)
{
	struct media_io *m = &j->mio;

	memset(m, 0, sizeof(*m));
	m->io.op = op;
	m->io.flags = flags;
	m->io.offset = offset;
	m->io.length = j->chunk;
	j->iov.iov_base = j->buf;
	j->iov.iov_len = j->chunk;
	m->io.iov = &j->iov;
	m->io.iovcnt = 1;
	m->seq = atomic_fetch_add(&lun->seq, 1);
	m->nexus_id = j->cmd->nexus ? j->cmd->nexus->id : 0;
	m->tag = (uint64_t)(uintptr_t)j->cmd;
	m->origin = reactor_current();
	/* The SCSI layer's convention (the reservation recheck relies on
	 * it): a media_io's owner is its scsi_cmd; the job hangs off
	 * cmd->mio.owner. */
	m->owner = j->cmd;
	m->complete = NULL;	/* set by the caller */
	j->io_lun = lun;
}

static void job_chunk_done(struct media_io *m, int res)
{
	struct scsi_cmd *owner = m->owner;
	struct xcopy_job *j = owner->mio.owner;
	struct xcopy_seg *s = &j->list.seg[j->seg];
	struct scsi_cmd *cmd = j->cmd;

	if (j->gated) {
		j->gated = false;
		scsi_write_gate_exit(j->lun[s->dst]);
	}
	if (res == -ECANCELED)
		cmd->aborted = true;
	if (cmd->aborted) {
		job_finish(j);
		return;
	}
	if (res < 0) {
		job_io_error(j, res, j->phase == XP_WRITE);
		job_finish(j);
		return;
	}
	if (j->phase == XP_READ) {
		struct scsi_lun *src = j->lun[s->src];
		struct scsi_lun *dst = j->lun[s->dst];
		const struct lun_settings *ds = lun_settings_get(dst);
		uint64_t off = s->dst_lba * ds->block_size + j->seg_done;
		unsigned flags = ds->write_cache ? 0 : BE_IO_FUA;

		atomic_fetch_add(&src->reads, 1);
		atomic_fetch_add(&src->read_bytes, j->chunk);
		j->phase = XP_WRITE;
		if (lun_settings_get(dst)->alua_group) {
			/* Counted, then checked: a handover of dst waits for
			 * this write or this write sees it (scsi_alua.c). */
			scsi_write_gate_join(dst);
			j->gated = true;
			if (scsi_alua_state(dst) != ALUA_AO) {
				j->gated = false;
				scsi_write_gate_exit(dst);
				scsi_sense(cmd, SENSE_KEY_NOT_READY,
					   ASC_LUN_NOT_ACCESSIBLE_TRANSITION);
				job_finish(j);
				return;
			}
		}
		job_submit(j, dst, BE_OP_WRITE, flags, off);
		j->mio.complete = job_chunk_done;
		hang_submit(dst, &j->mio);
		return;
	}
	struct scsi_lun *dst = j->lun[s->dst];
	atomic_fetch_add(&dst->writes, 1);
	atomic_fetch_add(&dst->write_bytes, j->chunk);
	j->seg_done += j->chunk;
	j->total += j->chunk;
	if (j->seg_done == j->seg_bytes) {
		j->seg++;
		j->seg_done = 0;
	}
	job_progress(j);
	job_step(j);
}

/* Start the next chunk, or finish when every segment is done. */
static void job_step(struct xcopy_job *j)
{
	while (j->seg < j->list.nseg) {
		struct xcopy_seg *s = &j->list.seg[j->seg];
		struct scsi_lun *src = j->lun[s->src];

		if (j->seg_done == 0) {
			uint32_t bs = s->dc ? lun_settings_get(j->lun[s->dst])->block_size
					    : lun_settings_get(src)->block_size;
			j->seg_bytes = (uint64_t)s->nblocks * bs;
		}
		if (j->seg_done == j->seg_bytes) {	/* 0 blocks */
			j->seg++;
			j->seg_done = 0;
			continue;
		}
		j->chunk = (uint32_t)MIN(j->seg_bytes - j->seg_done,
					 (uint64_t)XCOPY_CHUNK_BYTES);
		j->phase = XP_READ;
		job_submit(j, src, BE_OP_READ, 0,
			   s->src_lba * lun_settings_get(src)->block_size + j->seg_done);
		j->mio.complete = job_chunk_done;
		hang_submit(src, &j->mio);
		return;
	}
	j->cmd->status = SAM_STAT_GOOD;
	job_finish(j);
}

/* Resolve every segment's copy targets and check what a block device
 * would refuse before anything moves, so a bad list copies nothing.
 * 0, or -EINVAL with CHECK CONDITION set on cmd. */
static int job_prepare(struct xcopy_job *j)
{
	struct scsi_cmd *cmd = j->cmd;
	uint64_t max_bytes = 0;

	for (unsigned i = 0; i < j->list.nseg; i++) {
		struct xcopy_seg *s = &j->list.seg[i];
		uint16_t idx[2] = { s->src, s->dst };

		for (unsigned k = 0; k < 2; k++) {
			struct xcopy_cscd *c;

			/* SPC-4 6.4.6.1: an index beyond the CSCD list
			 * names no reachable copy target. */
			if (idx[k] >= j->list.ncscd)
				goto unreachable;
			c = &j->list.cscd[idx[k]];
			if (c->nul)	/* a null device moves no data */
				goto unreachable;
			if (c->pdt != PDT_BLOCK)
				goto wrong_type;
			if (!j->lun[idx[k]]) {
				j->lun[idx[k]] = cscd_resolve(cmd, c);
				if (!j->lun[idx[k]])
					goto unreachable;
			}
			struct scsi_lun *l = j->lun[idx[k]];
			const struct lun_settings *ls = lun_settings_get(l);
			if (!ls->online || !l->be)
				goto unreachable;
			if (c->block_len && c->block_len != ls->block_size)
				goto wrong_type;
		}

		struct scsi_lun *src = j->lun[s->src], *dst = j->lun[s->dst];
		const struct lun_settings *ss = lun_settings_get(src),
					  *ds = lun_settings_get(dst);
		uint32_t sbs = ss->block_size, dbs = ds->block_size;
		uint64_t bytes = (uint64_t)s->nblocks * (s->dc ? dbs : sbs);

		if (ds->readonly || dst->be->readonly) {
			scsi_sense_info(cmd, SENSE_KEY_COPY_ABORTED,
					ASC_WRITE_PROTECTED, i);
			return -EINVAL;
		}
		/* Block sizes that do not divide the segment would need the
		 * CAT / PAD residue handling, which is not offered. */
		if (bytes % sbs || bytes % dbs)
			goto wrong_type;
		if (!sbc_lba_range_ok(src, s->src_lba, bytes / sbs) ||
		    !sbc_lba_range_ok(dst, s->dst_lba, bytes / dbs)) {
			/* The copy target would refuse the transfer;
			 * COPY ABORTED carries no more specific code that
			 * initiators expect here (libiscsi accepts only
			 * 00/00, 08/04 and 0D/02). */
			scsi_sense_info(cmd, SENSE_KEY_COPY_ABORTED,
					ASC_NO_ADDITIONAL_SENSE, i);
			return -EINVAL;
		}
		max_bytes = MAX(max_bytes, MIN(bytes, XCOPY_CHUNK_BYTES));
		continue;
unreachable:
		scsi_sense_info(cmd, SENSE_KEY_COPY_ABORTED,
				ASC_COPY_TARGET_NOT_REACHABLE, i);
		return -EINVAL;
wrong_type:
		scsi_sense_info(cmd, SENSE_KEY_COPY_ABORTED,
				ASC_INCORRECT_COPY_TARGET_TYPE, i);
		return -EINVAL;
	}
	if (max_bytes) {
		/* the chunk buffer counts against the transport's buffer
		 * limits for the whole copy: TASK SET FULL if it does not
		 * fit (the initiator retries) */
		j->buf = scsi_buf_charge(cmd, (uint32_t)max_bytes) ?
			 scsi_buf_alloc((uint32_t)max_bytes) : NULL;
		if (!j->buf) {
			scsi_set_backend_error(cmd, -ENOMEM, false);
			return -EINVAL;
		}
	}
	return 0;
}

#define XCOPY_CDB_LIST_LEN	10

enum scsi_exec_result spc_extended_copy(struct scsi_cmd *cmd)
{
	uint32_t len = get_be32(cmd->cdb + XCOPY_CDB_LIST_LEN);
	struct xcopy_err err;
	struct xcopy_job *j;
	int ret;

	cmd->out_want = len;
	if (len > cmd->out_len || (len && !cmd->buf)) {
		/* Less Data-Out than PARAMETER LIST LENGTH announced. */
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_PARAMETER_LIST_LENGTH_ERROR);
		return SCSI_EXEC_DONE;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	j->cmd = cmd;
	ret = xcopy_parse(cmd->buf, len, &j->list, &err);
	if (ret == 1) {
		free(j);
		cmd->status = SAM_STAT_GOOD;
		return SCSI_EXEC_DONE;
	}
	if (ret < 0) {
		free(j);
		if (err.byte >= 0)
			scsi_sense_field(cmd, err.asc, false,
					 (uint16_t)err.byte, err.bit);
		else
			scsi_sense(cmd, err.key, err.asc);
		return SCSI_EXEC_DONE;
	}
	if (job_prepare(j) < 0) {
		job_free(j);
		return SCSI_EXEC_DONE;
	}

	uint64_t nexus_id = cmd->nexus ? cmd->nexus->id : 0;
	bool hold = j->list.list_id_usage == XCOPY_USAGE_HOLD;
	if (j->list.list_id_usage != XCOPY_USAGE_NONE) {
		ret = held_start(nexus_id, j->list.list_id, hold, &j->held);
		if (ret == -EBUSY || ret == -ENOSPC) {
			job_free(j);
			if (ret == -EBUSY)	/* SPC-4 6.4.3.2 */
				scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
					   ASC_OPERATION_IN_PROGRESS);
			else
				scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
					   ASC_INSUFFICIENT_RESOURCES);
			return SCSI_EXEC_DONE;
		}
	}
	/* Asynchronous from here: exactly one chunk is in flight until the
	 * copy completes cmd (an ABORT TASK goes through xcopy_abort). */
	cmd->mio.owner = j;
	cmd->stage = SCSI_STAGE_XCOPY;
	job_step(j);
	return SCSI_EXEC_ASYNC;
}

void xcopy_abort(struct scsi_cmd *cmd)
{
	struct xcopy_job *j = cmd->mio.owner;

	/* Called on cmd's reactor, where the chunk was submitted and where
	 * its completion runs: the chunk is with the engine now.  Dropping
	 * it matters when it is held by a hung LUN (possibly not cmd's):
	 * the abort is answered without waiting for the store to return.
	 * Its completion (-ECANCELED, or the real result) sees cmd->aborted
	 * and finishes the copy. */
	hang_abort(j->io_lun, &j->mio);
}

/* ---- RECEIVE COPY RESULTS (SPC-4 6.18) ---- */

uint32_t xcopy_op_params(uint8_t *b)
{
	static const uint8_t impl[] = { XCOPY_SEG_BLOCK_TO_BLOCK,
					XCOPY_CSCD_IDENTIFICATION };
	uint32_t len = OP_FIXED_LEN + (uint32_t)sizeof(impl);

	memset(b, 0, len);
	put_be32(b, len - 4);			/* AVAILABLE DATA */
	b[4] = OP_SNLID;			/* LIST ID USAGE 11b works */
	put_be16(b + 8, XCOPY_MAX_CSCD);
	put_be16(b + 10, XCOPY_MAX_SEGMENTS);
	put_be32(b + 12, XCOPY_MAX_DESC_LIST_LEN);
	put_be32(b + 16, XCOPY_MAX_SEGMENT_BYTES);
	/* 20: MAXIMUM INLINE DATA LENGTH, 24: HELD DATA LIMIT, 28: MAXIMUM
	 * STREAM DEVICE TRANSFER SIZE: all 0 (no inline, held or stream
	 * data). */
	put_be16(b + 34, XCOPY_HELD_MAX);	/* TOTAL CONCURRENT COPIES */
	b[36] = XCOPY_HELD_MAX;			/* MAXIMUM CONCURRENT COPIES */
	b[43] = sizeof(impl);
	memcpy(b + 44, impl, sizeof(impl));
	return len;
}

/* Units for the COPY STATUS TRANSFER COUNT: the smallest power of 1024
 * in which count fits 32 bits. */
static void put_transfer_count(uint8_t *b, uint64_t bytes)
{
	uint8_t units = 0;

	while (bytes > UINT32_MAX) {
		bytes >>= 10;
		units++;
	}
	b[7] = units;
	put_be32(b + 8, (uint32_t)bytes);
}

enum scsi_exec_result spc_receive_copy_results(struct scsi_cmd *cmd)
{
	uint8_t sa = cmd->cdb[1] & 0x1f;
	uint8_t list_id = cmd->cdb[2];
	uint32_t alloc = get_be32(cmd->cdb + 10);
	uint64_t nexus_id = cmd->nexus ? cmd->nexus->id : 0;
	uint8_t b[FSD_HDR_LEN + SCSI_SENSE_MAX];
	uint32_t len = 0;
	struct xcopy_held *h;

	memset(b, 0, sizeof(b));
	if (sa == RCR_SA_OPERATING_PARAMETERS) {
		len = xcopy_op_params(b);
		return scsi_data_in(cmd, b, len, alloc);
	}

	pthread_mutex_lock(&held_lock);
	h = held_find(nexus_id, list_id);
	if (!h) {
		pthread_mutex_unlock(&held_lock);
		/* No results held for this LIST IDENTIFIER (SPC-4 6.18.1). */
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 2, -1);
		return SCSI_EXEC_DONE;
	}
	switch (sa) {
	case RCR_SA_COPY_STATUS:
		put_be32(b, CS_LEN - 4);
		b[4] = h->status;
		put_be16(b + 5, h->segments);
		put_transfer_count(b, h->bytes);
		len = CS_LEN;
		break;
	case RCR_SA_RECEIVE_DATA:
		/* No segment type offered holds data: AVAILABLE DATA 0. */
		len = 4;
		break;
	case RCR_SA_FAILED_SEGMENT_DETAILS:
		/* SPC-4 6.18.5: nothing to report while running or after a
		 * success; otherwise the status and sense of the failed
		 * EXTENDED COPY, after which the results are discarded. */
		if (h->running || h->status == CS_DONE_OK) {
			len = 4;
			break;
		}
		len = FSD_HDR_LEN + h->sense_len;
		put_be32(b, len - 4);
		b[56] = h->cmd_status;
		put_be16(b + 58, (uint16_t)h->sense_len);
		memcpy(b + FSD_HDR_LEN, h->sense, h->sense_len);
		h->used = false;
		break;
	default:	/* not reached: the dispatch table lists the SAs */
		break;
	}
	pthread_mutex_unlock(&held_lock);
	return scsi_data_in(cmd, b, len, alloc);
}

/* ---- Third-party Copy VPD page (SPC-4 7.8.17) ---- */

static uint32_t tpc_desc(uint8_t *d, uint16_t type, uint32_t body_len)
{
	/* Descriptors are padded to a multiple of four bytes. */
	uint32_t len = (body_len + 3) & ~3u;

	put_be16(d, type);
	put_be16(d + 2, (uint16_t)len);
	return 4 + len;
}

uint32_t xcopy_vpd_page(const struct scsi_cmd *cmd UNUSED, uint8_t *b)
{
	uint32_t off = 4;
	uint8_t *d;

	/* Supported Commands: EXTENDED COPY(LID1) and the RECEIVE COPY
	 * RESULTS service actions. */
	d = b + off;
	d[4] = 9;			/* COMMANDS SUPPORTED LIST LENGTH */
	d[5] = SCSI_OP_EXTENDED_COPY;
	d[6] = 1;
	d[7] = XCOPY_SA_LID1;
	d[8] = SCSI_OP_RECEIVE_COPY_RESULTS;
	d[9] = 4;
	d[10] = RCR_SA_COPY_STATUS;
	d[11] = RCR_SA_RECEIVE_DATA;
	d[12] = RCR_SA_OPERATING_PARAMETERS;
	d[13] = RCR_SA_FAILED_SEGMENT_DETAILS;
	off += tpc_desc(d, TPC_DESC_SUPPORTED_COMMANDS, 1 + 9);

	/* Parameter Data: the same limits as OPERATING PARAMETERS. */
	d = b + off;
	put_be16(d + 8, XCOPY_MAX_CSCD);
	put_be16(d + 10, XCOPY_MAX_SEGMENTS);
	put_be32(d + 12, XCOPY_MAX_DESC_LIST_LEN);
	/* 16: MAXIMUM INLINE DATA LENGTH 0 */
	off += tpc_desc(d, TPC_DESC_PARAMETER_DATA, 28);

	/* Supported Descriptors: segment 02h and CSCD E4h. */
	d = b + off;
	d[4] = 2;
	d[5] = XCOPY_SEG_BLOCK_TO_BLOCK;
	d[6] = XCOPY_CSCD_IDENTIFICATION;
	off += tpc_desc(d, TPC_DESC_SUPPORTED_DESCRIPTORS, 3);

	/* Supported CSCD IDs: none beyond the descriptor types (list 0). */
	d = b + off;
	off += tpc_desc(d, TPC_DESC_SUPPORTED_CSCD_IDS, 2);
	return off;
}
