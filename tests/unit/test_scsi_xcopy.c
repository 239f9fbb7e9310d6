/* test_scsi_xcopy.c - the copy manager (target/scsi/scsi_xcopy.c): parameter
 * list and descriptor parsing, OPERATING PARAMETERS, and whole copies
 * between two fake LUNs with a fake hang engine that completes each chunk
 * on demand (data moved between in-memory disks).
 *
 * The .c file is included so its statics are reachable.  The target table
 * (tgt_for_each, tgt_lun_get, tgt_acl_allows) is replaced at link time by
 * the one below; the hang engine, the reactor and LUN references are
 * stubbed here too, by strong definitions as in scsi_fake.h (a link that
 * pulled the real ones would fail instead of silently using them). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../target/scsi/scsi_xcopy.c"

#include "check.h"


/* ---- fakes: two LUNs of one target, in memory ---- */

#define TBS 512
#define TBLOCKS 8192			/* 4 MiB per fake disk */

static struct target tgt;
static struct lun_settings lsets[3];	/* luns[i].set points here */
static struct scsi_lun luns[3];		/* [1], [2] used */
static struct backend bes[3];
static uint8_t *disk[3];
static const struct scsi_nexus nexus = { .id = 42,
					 .initiator_name = "iqn.test:ini" };

/* media_io submitted and not completed yet, in order */
#define MAXQ 8
static struct media_io *queue[MAXQ];
static int nq, submits;
static int fail_lun, fail_op = -1, fail_err;	/* inject on that LUN/op */

void hang_submit(struct scsi_lun *lun, struct media_io *m)
{
	m->io.priv = lun;
	submits++;
	if (nq < MAXQ)
		queue[nq++] = m;
}

static struct media_io *aborted_m;	/* its completion gets -ECANCELED */
static struct scsi_lun *aborted_lun;

void hang_abort(struct scsi_lun *lun, struct media_io *m)
{
	aborted_m = m;
	aborted_lun = lun;
}

/* reservations (scsi_pr*.c) reach the hang engine through these two;
 * defining them keeps the real engine out of the link */
void hang_set_recheck(struct scsi_lun *lun UNUSED,
		      int (*fn)(struct media_io *m) UNUSED)
{
}

int hang_abort_nexus(struct scsi_lun *lun UNUSED, uint64_t nexus UNUSED,
		     struct reactor *r UNUSED,
		     void (*done)(void *arg, unsigned dropped) UNUSED,
		     void *arg UNUSED)
{
	return 0;
}

/* scsi_alua.c's handover saves the LUN's shared state; not exercised
 * here. */
void scsi_lun_shared_release(struct scsi_lun *lun UNUSED, bool save UNUSED)
{
}

/* scsi_alua.c's takeover re-reads the LUN; not exercised here. */
int scsi_lun_refresh(struct scsi_lun *lun UNUSED, uint64_t size UNUSED,
		     unsigned flags UNUSED, const char **why UNUSED)
{
	return 0;
}

int hang_lun_init(struct scsi_lun *lun UNUSED)
{
	return 0;
}

void hang_lun_free(struct scsi_lun *lun UNUSED)
{
}

struct reactor *reactor_current(void)
{
	return NULL;
}

/* The key table checks the `filters` names with backend_find(); the real
 * backend table would pull in every store and the reactor. */
static const struct backend_ops fake_filters[] = {
	{ .name = "fault", .filter = true },
	{ .name = "passthrough", .filter = true },
};

const struct backend_ops *backend_find(const char *name)
{
	for (size_t i = 0; name && i < ARRAY_SIZE(fake_filters); i++)
		if (strcmp(fake_filters[i].name, name) == 0)
			return &fake_filters[i];
	return NULL;
}

int reactor_call(struct reactor *r UNUSED, void (*fn)(void *arg),
		 void *arg)
{
	fn(arg);
	return 0;
}

int tgt_lun_list(struct target *t UNUSED, uint64_t *l, int max)
{
	int n = 0;

	for (int i = 1; i <= 2 && n < max; i++)
		l[n++] = (uint64_t)i;
	return n;
}

void scsi_lun_get(struct scsi_lun *l)
{
	atomic_fetch_add(&l->refcnt, 1);
}

void scsi_lun_put(struct scsi_lun *l)
{
	atomic_fetch_sub(&l->refcnt, 1);
}

struct scsi_lun *tgt_lun_get(struct target *t, uint64_t nr)
{
	if (t != &tgt || nr < 1 || nr > 2)
		return NULL;
	scsi_lun_get(&luns[nr]);
	return &luns[nr];
}

void tgt_for_each(void (*fn)(struct target *t, void *arg), void *arg)
{
	fn(&tgt, arg);
}

bool tgt_acl_allows(struct target *t UNUSED, const struct sockaddr *p UNUSED,
		    const char *name UNUSED)
{
	return true;
}

/* Complete the oldest queued chunk: move the data, or inject. */
static bool complete_one(void)
{
	if (!nq)
		return false;
	struct media_io *m = queue[0];
	memmove(queue, queue + 1, sizeof(queue[0]) * (size_t)--nq);
	struct scsi_lun *l = m->io.priv;
	int nr = (int)(l - luns);
	int res = 0;

	if (m == aborted_m) {
		aborted_m = NULL;
		res = -ECANCELED;
	} else if (nr == fail_lun && (int)m->io.op == fail_op) {
		res = fail_err;
	} else if (m->io.op == BE_OP_READ) {
		memcpy(m->io.iov[0].iov_base, disk[nr] + m->io.offset,
		       m->io.length);
	} else if (m->io.op == BE_OP_WRITE) {
		memcpy(disk[nr] + m->io.offset, m->io.iov[0].iov_base,
		       m->io.length);
	}
	m->complete(m, res);
	return true;
}

static void drain(void)
{
	while (complete_one())
		;
}

static void setup(void)
{
	memset(&tgt, 0, sizeof(tgt));
	snprintf(tgt.name, sizeof(tgt.name), "iqn.test:t");
	for (int i = 1; i <= 2; i++) {
		memset(&luns[i], 0, sizeof(luns[i]));
		memset(&bes[i], 0, sizeof(bes[i]));
		lun_settings_default(&lsets[i], (uint64_t)i);
		atomic_init(&luns[i].set, &lsets[i]);
		lsets[i].block_size = TBS;
		lsets[i].scsi_id[0] = '\0';
		luns[i].nblocks = TBLOCKS;
		luns[i].be = &bes[i];
		luns[i].target = &tgt;
		atomic_store(&luns[i].refcnt, 1);
		free(disk[i]);
		disk[i] = calloc(TBLOCKS, TBS);
		for (uint32_t b = 0; b < TBLOCKS; b++)
			memset(disk[i] + (size_t)b * TBS, (i * 31 + b) & 0xff,
			       TBS);
	}
	nq = submits = 0;
	fail_lun = 0;
	fail_op = -1;
	fail_err = 0;
}

/* ---- building parameter lists ---- */

static uint32_t put_hdr(uint8_t *p, uint8_t list_id, uint8_t usage,
			uint16_t cscd_len, uint32_t seg_len, uint32_t inl)
{
	memset(p, 0, XCOPY_HDR_LEN);
	p[0] = list_id;
	p[1] = (uint8_t)(usage << 3);
	put_be16(p + 2, cscd_len);
	put_be32(p + 8, seg_len);
	put_be32(p + 12, inl);
	return XCOPY_HDR_LEN;
}

static uint32_t put_cscd(uint8_t *d, uint64_t naa, uint32_t block_len)
{
	memset(d, 0, XCOPY_CSCD_LEN);
	d[0] = XCOPY_CSCD_IDENTIFICATION;
	d[4] = DESIG_CODE_BINARY;
	d[5] = DESIG_TYPE_NAA;
	d[7] = 8;
	put_be64(d + 8, naa);
	put_be24(d + 29, block_len);
	return XCOPY_CSCD_LEN;
}

static uint32_t put_seg(uint8_t *d, uint16_t src, uint16_t dst,
			uint16_t nblocks, uint64_t slba, uint64_t dlba)
{
	memset(d, 0, XCOPY_SEG_B2B_LEN);
	d[0] = XCOPY_SEG_BLOCK_TO_BLOCK;
	put_be16(d + 2, XCOPY_SEG_B2B_LEN - 4);
	put_be16(d + 4, src);
	put_be16(d + 6, dst);
	put_be16(d + 10, nblocks);
	put_be64(d + 12, slba);
	put_be64(d + 20, dlba);
	return XCOPY_SEG_B2B_LEN;
}

/* A list copying LUN 1 -> LUN 2 with nseg segments as given. */
struct segspec {
	uint16_t src, dst, n;
	uint64_t slba, dlba;
};

static uint32_t build(uint8_t *p, uint8_t list_id, uint8_t usage,
		      const struct segspec *s, unsigned nseg)
{
	uint32_t off = XCOPY_HDR_LEN;

	off += put_cscd(p + off, xcopy_lun_naa(&luns[1]), TBS);
	off += put_cscd(p + off, xcopy_lun_naa(&luns[2]), 0);
	for (unsigned i = 0; i < nseg; i++)
		off += put_seg(p + off, s[i].src, s[i].dst, s[i].n, s[i].slba,
			       s[i].dlba);
	put_hdr(p, list_id, usage, 2 * XCOPY_CSCD_LEN,
		nseg * XCOPY_SEG_B2B_LEN, 0);
	return off;
}

static int parse_err(const uint8_t *p, uint32_t len, uint16_t *asc)
{
	static struct xcopy_list l;
	struct xcopy_err e = { 0 };
	int r = xcopy_parse(p, len, &l, &e);

	*asc = r < 0 ? e.asc : 0;
	return r;
}

/* ---- parsing ---- */

static void test_parse_valid(void)
{
	static uint8_t p[512];
	static struct xcopy_list l;
	struct xcopy_err e;
	struct segspec s[2] = { { 0, 1, 100, 7, 9 }, { 1, 0, 0, 1, 2 } };

	setup();
	uint32_t len = build(p, 5, XCOPY_USAGE_HOLD, s, 2);
	p[XCOPY_HDR_LEN + 2 * XCOPY_CSCD_LEN + 1] = SD_DC | SD_CAT;
	CHECK(xcopy_parse(p, len, &l, &e) == 0);
	CHECK(l.list_id == 5 && l.list_id_usage == XCOPY_USAGE_HOLD);
	CHECK(l.ncscd == 2 && l.nseg == 2);
	CHECK(l.cscd[0].code_set == DESIG_CODE_BINARY &&
	      l.cscd[0].desig_type == DESIG_TYPE_NAA &&
	      l.cscd[0].desig_len == 8 && l.cscd[0].block_len == TBS);
	CHECK(get_be64(l.cscd[1].desig) == xcopy_lun_naa(&luns[2]));
	CHECK(l.cscd[1].block_len == 0 && !l.cscd[1].nul);
	CHECK(l.seg[0].dc && l.seg[0].cat && l.seg[0].nblocks == 100);
	CHECK(l.seg[0].src_lba == 7 && l.seg[0].dst_lba == 9);
	CHECK(l.seg[1].src == 1 && l.seg[1].dst == 0 && !l.seg[1].dc);
	/* empty list: nothing to do */
	CHECK(xcopy_parse(p, 0, &l, &e) == 1);
	/* a reserved LU ID TYPE is ignored (SPC-4) */
	p[XCOPY_HDR_LEN + 1] = 0x80;
	CHECK(xcopy_parse(p, len, &l, &e) == 0);
	/* NUL is decoded (refused when a segment uses it) */
	p[XCOPY_HDR_LEN + 1] = CD_NUL;
	CHECK(xcopy_parse(p, len, &l, &e) == 0 && l.cscd[0].nul);
}

static void test_parse_errors(void)
{
	static uint8_t p[8192];
	struct segspec s = { 0, 1, 8, 0, 0 };
	uint16_t asc;
	uint32_t len;

	setup();
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	/* shorter than a header */
	CHECK(parse_err(p, 15, &asc) < 0 &&
	      asc == ASC_PARAMETER_LIST_LENGTH_ERROR);
	/* descriptors cut off by PARAMETER LIST LENGTH */
	CHECK(parse_err(p, len - 1, &asc) < 0 &&
	      asc == ASC_PARAMETER_LIST_LENGTH_ERROR);
	CHECK(parse_err(p, XCOPY_HDR_LEN + XCOPY_CSCD_LEN - 1, &asc) < 0 &&
	      asc == ASC_PARAMETER_LIST_LENGTH_ERROR);
	/* inline data is not offered */
	put_be32(p + 12, 4);
	CHECK(parse_err(p, len + 4, &asc) < 0 &&
	      asc == ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	put_be32(p + 12, 0);
	/* LIST ID USAGE 01b is reserved; 11b needs list id 0 */
	p[1] = 1 << 3;
	CHECK(parse_err(p, len, &asc) < 0 &&
	      asc == ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	p[1] = XCOPY_USAGE_NONE << 3;
	p[0] = 9;
	CHECK(parse_err(p, len, &asc) < 0 &&
	      asc == ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	p[0] = 0;
	CHECK(parse_err(p, len, &asc) == 0);
	/* unsupported descriptor types */
	p[XCOPY_HDR_LEN] = 0xe0;
	CHECK(parse_err(p, len, &asc) < 0 &&
	      asc == ASC_UNSUPPORTED_TARGET_DESC_TYPE);
	p[XCOPY_HDR_LEN] = XCOPY_CSCD_IDENTIFICATION;
	p[XCOPY_HDR_LEN + 2 * XCOPY_CSCD_LEN] = 0x03;
	CHECK(parse_err(p, len, &asc) < 0 &&
	      asc == ASC_UNSUPPORTED_SEGMENT_DESC_TYPE);
	p[XCOPY_HDR_LEN + 2 * XCOPY_CSCD_LEN] = XCOPY_SEG_BLOCK_TO_BLOCK;
	/* wrong segment DESCRIPTOR LENGTH */
	p[XCOPY_HDR_LEN + 2 * XCOPY_CSCD_LEN + 3] = 0x14;
	CHECK(parse_err(p, len, &asc) < 0 &&
	      asc == ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	p[XCOPY_HDR_LEN + 2 * XCOPY_CSCD_LEN + 3] = 0x18;
	/* designator longer than its field */
	p[XCOPY_HDR_LEN + CD_DESIG_LEN] = 21;
	CHECK(parse_err(p, len, &asc) < 0 &&
	      asc == ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	p[XCOPY_HDR_LEN + CD_DESIG_LEN] = 8;
	CHECK(parse_err(p, len, &asc) == 0);

	/* one CSCD too many, one segment too many, list too long */
	uint32_t off = XCOPY_HDR_LEN;
	for (unsigned i = 0; i <= XCOPY_MAX_CSCD; i++)
		off += put_cscd(p + off, 1, 0);
	off += put_seg(p + off, 0, 0, 1, 0, 0);
	put_hdr(p, 0, XCOPY_USAGE_NONE, (XCOPY_MAX_CSCD + 1) * XCOPY_CSCD_LEN,
		XCOPY_SEG_B2B_LEN, 0);
	CHECK(parse_err(p, off, &asc) < 0 &&
	      asc == ASC_TOO_MANY_TARGET_DESCRIPTORS);
	off = XCOPY_HDR_LEN + put_cscd(p + XCOPY_HDR_LEN, 1, 0);
	for (unsigned i = 0; i <= XCOPY_MAX_SEGMENTS; i++)
		off += put_seg(p + off, 0, 0, 1, 0, 0);
	put_hdr(p, 0, XCOPY_USAGE_NONE, XCOPY_CSCD_LEN,
		(XCOPY_MAX_SEGMENTS + 1) * XCOPY_SEG_B2B_LEN, 0);
	CHECK(parse_err(p, off, &asc) < 0 &&
	      asc == ASC_TOO_MANY_SEGMENT_DESCRIPTORS);
	off = XCOPY_HDR_LEN;
	for (unsigned i = 0; i <= XCOPY_MAX_CSCD; i++)
		off += put_cscd(p + off, 1, 0);
	for (unsigned i = 0; i <= XCOPY_MAX_SEGMENTS; i++)
		off += put_seg(p + off, 0, 0, 1, 0, 0);
	put_hdr(p, 0, XCOPY_USAGE_NONE, (XCOPY_MAX_CSCD + 1) * XCOPY_CSCD_LEN,
		(XCOPY_MAX_SEGMENTS + 1) * XCOPY_SEG_B2B_LEN, 0);
	CHECK(parse_err(p, off, &asc) < 0 &&
	      asc == ASC_PARAMETER_LIST_LENGTH_ERROR);
}

static void test_op_params(void)
{
	uint8_t b[128];
	uint32_t len = xcopy_op_params(b);

	CHECK(len == 46 && get_be32(b) == len - 4);
	CHECK(get_be16(b + 8) == XCOPY_MAX_CSCD);
	CHECK(get_be16(b + 10) == XCOPY_MAX_SEGMENTS);
	CHECK(get_be32(b + 12) == XCOPY_MAX_DESC_LIST_LEN);
	CHECK(b[43] == 2 && b[44] == 0x02 && b[45] == 0xe4);
	/* the limits must let libiscsi's DescrLimits cases each hit their
	 * own error: (max+1) CSCDs + 1 segment and 1 CSCD + (max+1)
	 * segments fit the list length, both maxima + 1 do not */
	CHECK((XCOPY_MAX_CSCD + 1) * 32 + 28 <= XCOPY_MAX_DESC_LIST_LEN);
	CHECK(32 + (XCOPY_MAX_SEGMENTS + 1) * 28 <= XCOPY_MAX_DESC_LIST_LEN);
	CHECK((XCOPY_MAX_CSCD + 1) * 32 + (XCOPY_MAX_SEGMENTS + 1) * 28 >
	      XCOPY_MAX_DESC_LIST_LEN);
}

/* ---- whole copies ---- */

static int dones;

static void on_done(struct scsi_cmd *cmd UNUSED)
{
	dones++;
}

static struct scsi_cmd *new_cmd(const uint8_t *plist, uint32_t len)
{
	struct scsi_cmd *c = calloc(1, sizeof(*c));

	c->lun = &luns[1];
	c->lun_id = 1;
	c->nexus = &nexus;
	c->cdb[0] = SCSI_OP_EXTENDED_COPY;
	put_be32(c->cdb + 10, len);
	c->cdb_len = 16;
	c->buf = scsi_buf_alloc(len ? len : 1);
	memcpy(c->buf, plist, len);
	c->buf_len = c->out_len = len;
	c->exp_len = len;
	c->done = on_done;
	return c;
}

static void cmd_free(struct scsi_cmd *c)
{
	scsi_buf_free(c->buf);
	free(c);
}

static uint8_t skey(const struct scsi_cmd *c)
{
	return c->sense[2] & 0x0f;
}

static uint16_t sasc(const struct scsi_cmd *c)
{
	return (uint16_t)(c->sense[12] << 8 | c->sense[13]);
}

static bool blocks_equal(int a, uint64_t alba, int b, uint64_t blba,
			 uint64_t n)
{
	return memcmp(disk[a] + alba * TBS, disk[b] + blba * TBS,
		      n * TBS) == 0;
}

static struct scsi_cmd *rcr(uint8_t sa, uint8_t list_id)
{
	struct scsi_cmd *c = calloc(1, sizeof(*c));

	c->lun = &luns[1];
	c->nexus = &nexus;
	c->cdb[0] = SCSI_OP_RECEIVE_COPY_RESULTS;
	c->cdb[1] = sa;
	c->cdb[2] = list_id;
	put_be32(c->cdb + 10, 1024);
	c->done = on_done;
	CHECK(spc_receive_copy_results(c) == SCSI_EXEC_DONE);
	return c;
}

static void test_copy(void)
{
	static uint8_t p[1024];
	/* 2500 blocks: three chunks (1 MiB = 2048 blocks, then 452) */
	struct segspec s[3] = { { 0, 1, 2500, 10, 100 },
				{ 0, 1, 3, 5000, 7000 },
				{ 1, 1, 0, 0, 0 } };

	setup();
	uint8_t before[TBS];
	memcpy(before, disk[2] + 99 * TBS, TBS);
	uint32_t len = build(p, 1, XCOPY_USAGE_HOLD, s, 3);
	struct scsi_cmd *c = new_cmd(p, len);
	dones = 0;
	CHECK(spc_extended_copy(c) == SCSI_EXEC_ASYNC);
	CHECK(nq == 1 && queue[0]->io.op == BE_OP_READ);
	/* one chunk at a time: bounded memory */
	complete_one();
	CHECK(nq == 1 && queue[0]->io.op == BE_OP_WRITE &&
	      queue[0]->io.length == XCOPY_CHUNK_BYTES);
	CHECK(queue[0]->io.offset == 100 * TBS);
	/* COPY STATUS while running */
	struct scsi_cmd *r = rcr(RCR_SA_COPY_STATUS, 1);
	CHECK(r->status == SAM_STAT_GOOD && r->in_len == CS_LEN);
	CHECK(r->buf[4] == CS_IN_PROGRESS);
	scsi_buf_free(r->buf);
	free(r);
	drain();
	CHECK(dones == 1 && c->status == SAM_STAT_GOOD);
	CHECK(submits == 6);
	CHECK(blocks_equal(1, 10, 2, 100, 2500));
	CHECK(blocks_equal(1, 5000, 2, 7000, 3));
	CHECK(memcmp(disk[2] + 99 * TBS, before, TBS) == 0);
	CHECK(atomic_load(&luns[1].refcnt) == 1 &&
	      atomic_load(&luns[2].refcnt) == 1);
	CHECK(luns[2].write_bytes == 2503 * TBS);
	r = rcr(RCR_SA_COPY_STATUS, 1);
	CHECK(r->status == SAM_STAT_GOOD && r->buf[4] == CS_DONE_OK);
	CHECK(get_be16(r->buf + 5) == 3 && r->buf[7] == 0 &&
	      get_be32(r->buf + 8) == 2503 * TBS);
	scsi_buf_free(r->buf);
	free(r);
	/* another list id: nothing held */
	r = rcr(RCR_SA_COPY_STATUS, 2);
	CHECK(r->status == SAM_STAT_CHECK_CONDITION &&
	      sasc(r) == ASC_INVALID_FIELD_IN_CDB);
	scsi_buf_free(r->buf);
	free(r);
	cmd_free(c);
}

static void test_copy_errors(void)
{
	static uint8_t p[1024];
	struct segspec s = { 0, 1, 3000, 0, 0 };
	struct scsi_cmd *c, *c2, *r;
	uint32_t len;

	/* a write error in the second chunk: COPY ABORTED, status held */
	setup();
	len = build(p, 3, XCOPY_USAGE_HOLD, &s, 1);
	c = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_ASYNC);
	complete_one();
	complete_one();		/* first chunk written */
	fail_lun = 2;
	fail_op = BE_OP_WRITE;
	fail_err = -EIO;
	drain();
	CHECK(c->status == SAM_STAT_CHECK_CONDITION &&
	      skey(c) == SENSE_KEY_COPY_ABORTED && sasc(c) == ASC_WRITE_ERROR);
	r = rcr(RCR_SA_COPY_STATUS, 3);
	CHECK(r->buf[4] == CS_DONE_ERROR && get_be16(r->buf + 5) == 0 &&
	      get_be32(r->buf + 8) == XCOPY_CHUNK_BYTES);
	scsi_buf_free(r->buf);
	free(r);
	r = rcr(RCR_SA_FAILED_SEGMENT_DETAILS, 3);
	CHECK(r->status == SAM_STAT_GOOD && r->buf[56] == 2 &&
	      (r->buf[60 + 2] & 0x0f) == SENSE_KEY_COPY_ABORTED);
	scsi_buf_free(r->buf);
	free(r);
	/* ... after which the results are gone */
	r = rcr(RCR_SA_COPY_STATUS, 3);
	CHECK(r->status == SAM_STAT_CHECK_CONDITION);
	scsi_buf_free(r->buf);
	free(r);
	cmd_free(c);
	CHECK(atomic_load(&luns[2].refcnt) == 1);

	/* a retry-later error is not COPY ABORTED */
	setup();
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	c = new_cmd(p, len);
	fail_lun = 1;
	fail_op = BE_OP_READ;
	fail_err = -EBUSY;
	CHECK(spc_extended_copy(c) == SCSI_EXEC_ASYNC);
	drain();
	CHECK(c->status == SAM_STAT_BUSY || c->status == SAM_STAT_TASK_SET_FULL);
	cmd_free(c);

	/* the same held list id twice: OPERATION IN PROGRESS */
	setup();
	len = build(p, 4, XCOPY_USAGE_HOLD, &s, 1);
	c = new_cmd(p, len);
	c2 = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_ASYNC);
	CHECK(spc_extended_copy(c2) == SCSI_EXEC_DONE);
	CHECK(c2->status == SAM_STAT_CHECK_CONDITION &&
	      sasc(c2) == ASC_OPERATION_IN_PROGRESS);
	/* abort between chunks: TASK ABORTED, nothing more submitted */
	c->aborted = true;
	int before = submits;
	drain();
	CHECK(submits == before && c->status == SAM_STAT_TASK_ABORTED);
	r = rcr(RCR_SA_COPY_STATUS, 4);
	CHECK(r->buf[4] == CS_DONE_ERROR);
	scsi_buf_free(r->buf);
	free(r);
	cmd_free(c);
	cmd_free(c2);

	/* ABORT TASK while a chunk (here a write to LUN 2, not the LUN the
	 * command went to) is with the engine: that chunk is dropped */
	setup();
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	c = new_cmd(p, len);
	dones = 0;
	CHECK(spc_extended_copy(c) == SCSI_EXEC_ASYNC);
	complete_one();		/* read done, write submitted */
	before = submits;
	scsi_cmd_abort(c);
	CHECK(aborted_m == queue[0] && aborted_lun == &luns[2]);
	CHECK(dones == 0);	/* answered when the chunk comes back */
	drain();
	CHECK(dones == 1 && c->status == SAM_STAT_TASK_ABORTED);
	CHECK(submits == before);
	scsi_cmd_abort(c);	/* a second abort is harmless */
	CHECK(dones == 1);
	cmd_free(c);
	CHECK(atomic_load(&luns[2].refcnt) == 1);

	/* -ECANCELED from the engine (LUN reset dropped the chunk) */
	setup();
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	c = new_cmd(p, len);
	fail_lun = 1;
	fail_op = BE_OP_READ;
	fail_err = -ECANCELED;
	CHECK(spc_extended_copy(c) == SCSI_EXEC_ASYNC);
	drain();
	CHECK(c->status == SAM_STAT_TASK_ABORTED);
	cmd_free(c);
}

static void test_copy_refused(void)
{
	static uint8_t p[1024];
	struct scsi_cmd *c;
	uint32_t len;

	/* segment beyond the destination: nothing moves */
	setup();
	struct segspec s2[2] = { { 0, 1, 8, 0, 0 },
				 { 0, 1, 8, 0, TBLOCKS - 4 } };
	len = build(p, 0, XCOPY_USAGE_NONE, s2, 2);
	c = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(skey(c) == SENSE_KEY_COPY_ABORTED && submits == 0);
	cmd_free(c);

	/* index beyond the CSCD list, unknown designator, NUL, wrong
	 * peripheral type, wrong block length */
	struct segspec s = { 0, 2, 8, 0, 0 };
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	c = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(skey(c) == SENSE_KEY_COPY_ABORTED &&
	      sasc(c) == ASC_COPY_TARGET_NOT_REACHABLE);
	cmd_free(c);
	s.dst = 1;
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	put_be64(p + XCOPY_HDR_LEN + XCOPY_CSCD_LEN + CD_DESIG, 12345);
	c = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(sasc(c) == ASC_COPY_TARGET_NOT_REACHABLE);
	cmd_free(c);
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	p[XCOPY_HDR_LEN + 1] = CD_NUL;
	c = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(sasc(c) == ASC_COPY_TARGET_NOT_REACHABLE);
	cmd_free(c);
	p[XCOPY_HDR_LEN + 1] = 0x01;	/* sequential-access device */
	c = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(sasc(c) == ASC_INCORRECT_COPY_TARGET_TYPE);
	cmd_free(c);
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	put_be24(p + XCOPY_HDR_LEN + CD_BLOCK_LEN, 4096);
	c = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(sasc(c) == ASC_INCORRECT_COPY_TARGET_TYPE);
	cmd_free(c);

	/* read-only destination */
	len = build(p, 0, XCOPY_USAGE_NONE, &s, 1);
	lsets[2].readonly = true;
	c = new_cmd(p, len);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(skey(c) == SENSE_KEY_COPY_ABORTED &&
	      sasc(c) == ASC_WRITE_PROTECTED);
	cmd_free(c);
	lsets[2].readonly = false;

	/* less Data-Out than PARAMETER LIST LENGTH */
	c = new_cmd(p, len);
	c->out_len = len - 1;
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(skey(c) == SENSE_KEY_ILLEGAL_REQUEST &&
	      sasc(c) == ASC_PARAMETER_LIST_LENGTH_ERROR);
	cmd_free(c);
	/* an empty list is GOOD */
	c = new_cmd(p, 0);
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE &&
	      c->status == SAM_STAT_GOOD);
	cmd_free(c);
	CHECK(atomic_load(&luns[1].refcnt) == 1 &&
	      atomic_load(&luns[2].refcnt) == 1);
}

static void test_vpd_page(void)
{
	uint8_t b[1024];

	memset(b, 0, sizeof(b));
	uint32_t len = xcopy_vpd_page(NULL, b);
	/* descriptors: type, length (multiple of 4), walk them */
	uint32_t off = 4, n = 0;
	bool cmds = false;
	while (off + 4 <= len) {
		uint16_t type = get_be16(b + off);
		uint16_t dl = get_be16(b + off + 2);
		CHECK(dl % 4 == 0);
		if (type == TPC_DESC_SUPPORTED_COMMANDS)
			cmds = b[off + 5] == SCSI_OP_EXTENDED_COPY &&
			       b[off + 8] == SCSI_OP_RECEIVE_COPY_RESULTS &&
			       b[off + 9] == 4;
		off += 4 + dl;
		n++;
	}
	CHECK(off == len && n == 4 && cmds);
}


/* The chunk buffer is charged to the transport's buffer limits
 * (scsi_cmd.buf_charge) before it is allocated: its size when that fits,
 * TASK SET FULL with nothing moved when it does not. */
static uint64_t charged;
static bool charge_ok;

static bool fake_charge(struct scsi_cmd *cmd UNUSED, uint32_t len)
{
	if (!charge_ok)
		return false;
	charged += len;
	return true;
}

static void test_copy_charged(void)
{
	static uint8_t p[1024];
	struct segspec big[1] = { { 0, 1, 2500, 10, 100 } };
	struct segspec small[1] = { { 0, 1, 3, 5000, 7000 } };
	struct scsi_cmd *c;
	uint32_t len;

	setup();
	len = build(p, 0, XCOPY_USAGE_NONE, big, 1);
	c = new_cmd(p, len);
	c->buf_charge = fake_charge;
	charge_ok = true;
	charged = 0;
	dones = 0;
	CHECK(spc_extended_copy(c) == SCSI_EXEC_ASYNC);
	CHECK(charged == XCOPY_CHUNK_BYTES, "charged %lu",
	      (unsigned long)charged);
	drain();
	CHECK(dones == 1 && c->status == SAM_STAT_GOOD);
	CHECK(charged == XCOPY_CHUNK_BYTES, "charged once per copy");
	cmd_free(c);

	/* a short copy charges only its one chunk */
	len = build(p, 0, XCOPY_USAGE_NONE, small, 1);
	c = new_cmd(p, len);
	c->buf_charge = fake_charge;
	charged = 0;
	dones = 0;
	CHECK(spc_extended_copy(c) == SCSI_EXEC_ASYNC);
	CHECK(charged == 3 * TBS, "charged %lu", (unsigned long)charged);
	drain();
	CHECK(dones == 1 && c->status == SAM_STAT_GOOD);
	cmd_free(c);

	/* no room: TASK SET FULL, nothing read or written */
	len = build(p, 0, XCOPY_USAGE_NONE, big, 1);
	c = new_cmd(p, len);
	c->buf_charge = fake_charge;
	charge_ok = false;
	submits = 0;
	CHECK(spc_extended_copy(c) == SCSI_EXEC_DONE);
	CHECK(c->status == SAM_STAT_TASK_SET_FULL && submits == 0,
	      "status 0x%02x submits %d", c->status, submits);
	CHECK(atomic_load(&luns[1].refcnt) == 1 &&
	      atomic_load(&luns[2].refcnt) == 1);
	cmd_free(c);
}

int main(void)
{
	test_parse_valid();
	test_parse_errors();
	test_op_params();
	test_copy();
	test_copy_errors();
	test_copy_refused();
	test_copy_charged();
	test_vpd_page();
	for (int i = 1; i <= 2; i++)
		free(disk[i]);
	return CHECK_SUMMARY("test_scsi_xcopy");
}
