/* test_scsi_pr.c - reservations (scsi_pr*.c) through the dispatcher, with a
 * fake LUN and a fake hang engine.
 *
 * hang_submit() records the media_io (the test completes it); the hang
 * engine's recheck hook and hang_abort_nexus() are captured, so the
 * dispatch-time recheck and PREEMPT AND ABORT are checked without
 * threads.  tgt_lun_list() and the target table are stubbed; the real reactor module answers
 * reactor_current() with NULL here (no reactor thread). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCSI_PR_INTERNAL
#include "reactor.h"
#include "scsi.h"
#include "scsi_internal.h"
#include "scsi_pr.h"
#include "target.h"
#include "util.h"

#include "check.h"


/* ---- stubs ---- */
static struct media_io *pending;
static int submits;
static int (*recheck_fn)(struct media_io *m);
static uint64_t aborted_nexus[8];
static unsigned naborted;

void hang_submit(struct scsi_lun *l UNUSED, struct media_io *m)
{
	pending = m;
	submits++;
}

void hang_abort(struct scsi_lun *l UNUSED, struct media_io *m UNUSED)
{
}

int hang_lun_init(struct scsi_lun *l UNUSED)
{
	return 0;
}

void hang_lun_free(struct scsi_lun *l UNUSED)
{
}

void hang_set_recheck(struct scsi_lun *l UNUSED,
		      int (*fn)(struct media_io *m))
{
	recheck_fn = fn;
}

int hang_abort_nexus(struct scsi_lun *l UNUSED, uint64_t nexus_id,
		     struct reactor *r UNUSED,
		     void (*done)(void *arg, unsigned dropped), void *arg)
{
	if (naborted < ARRAY_SIZE(aborted_nexus))
		aborted_nexus[naborted++] = nexus_id;
	if (done)
		done(arg, 0);
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

int tgt_lun_list(struct target *t UNUSED, uint64_t *luns, int max)
{
	if (max < 1)
		return 0;
	luns[0] = 1;
	return 1;
}

/* The copy manager's view of the target table: nothing reachable.
 * Defined here so that target.o (and the real hang engine it needs) is
 * not pulled from the archive. */
void tgt_for_each(void (*fn)(struct target *t, void *arg) UNUSED,
		  void *arg UNUSED)
{
}

struct scsi_lun *tgt_lun_get(struct target *t UNUSED, uint64_t nr UNUSED)
{
	return NULL;
}

bool tgt_acl_allows(struct target *t UNUSED,
		    const struct sockaddr *peer UNUSED,
		    const char *name UNUSED)
{
	return false;
}

/* ---- fixtures ---- */
static struct target tgt;
static struct scsi_lun lun;
static struct lun_settings lun_set;	/* lun.set points here */
static struct scsi_nexus nex_a = { .id = 11, .initiator_name = "iqn.a",
				   .isid = { 0x80, 1, 2, 3, 4, 5 },
				   .tpgt = 1, .rel_port_id = 1 };
static struct scsi_nexus nex_b = { .id = 22, .initiator_name = "iqn.b",
				   .isid = { 0x80, 9, 9, 9, 9, 9 },
				   .tpgt = 1, .rel_port_id = 1 };
static char state_path[96];

static void on_done(struct scsi_cmd *cmd UNUSED)
{
}

static void lun_setup(const char *path)
{
	scsi_lun_state_free(&lun);
	memset(&lun, 0, sizeof(lun));
	lun_settings_default(&lun_set, 1);
	snprintf(lun_set.path, sizeof(lun_set.path), "%s", path);
	atomic_init(&lun.set, &lun_set);
	lun_fixed_init(&lun, &lun_set);
	lun.nblocks = 2048;
	lun.target = &tgt;
	atomic_store(&lun.refcnt, 100);	/* never freed by scsi_lun_put */
	memset(&tgt, 0, sizeof(tgt));
	pthread_mutex_init(&tgt.lock, NULL);
	snprintf(tgt.name, sizeof(tgt.name), "iqn.2026-01.test:pr");
	tgt.luns[1] = &lun;
	pending = NULL;
	recheck_fn = NULL;
	naborted = 0;
}

/* Run one command; completes a media submission with success. */
static struct scsi_cmd *exec(const struct scsi_nexus *nx, const uint8_t *cdb,
			     unsigned cdb_len, const uint8_t *out,
			     uint32_t out_len)
{
	static struct scsi_cmd c;

	if (c.buf)
		scsi_buf_free(c.buf);
	memset(&c, 0, sizeof(c));
	c.target = &tgt;
	c.lun = &lun;
	c.lun_id = 1;
	c.nexus = nx;
	memcpy(c.cdb, cdb, cdb_len);
	c.cdb_len = 16;
	c.exp_len = 65536;
	c.done = on_done;
	if (out_len) {
		c.buf = scsi_buf_alloc(out_len);
		c.buf_len = out_len;
		memcpy(c.buf, out, out_len);
		c.out_len = out_len;
		c.dir_write = true;
	}
	pending = NULL;
	scsi_cmd_exec(&c);
	if (pending && c.stage == SCSI_STAGE_MEDIA) {
		struct media_io *m = pending;
		pending = NULL;
		m->complete(m, 0);
	}
	return &c;
}

/* TEST UNIT READY until no unit attention is left. */
static void clear_ua(const struct scsi_nexus *nx)
{
	uint8_t tur[6] = { 0 };

	for (int i = 0; i < 8; i++)
		if (exec(nx, tur, 6, NULL, 0)->status == SAM_STAT_GOOD)
			return;
}

static uint16_t ua_of(const struct scsi_nexus *nx)
{
	uint8_t tur[6] = { 0 };
	struct scsi_cmd *c = exec(nx, tur, 6, NULL, 0);

	if (c->status != SAM_STAT_CHECK_CONDITION ||
	    (c->sense[2] & 0xf) != SENSE_KEY_UNIT_ATTENTION)
		return 0;
	return (uint16_t)(c->sense[12] << 8 | c->sense[13]);
}

static uint8_t prout(const struct scsi_nexus *nx, uint8_t sa, uint8_t type,
		     uint64_t key, uint64_t sakey, uint8_t flags)
{
	uint8_t cdb[10] = { SCSI_OP_PERSISTENT_RESERVE_OUT, sa, type };
	uint8_t p[24] = { 0 };

	put_be32(cdb + 5, sizeof(p));
	put_be64(p, key);
	put_be64(p + 8, sakey);
	p[20] = flags;
	return exec(nx, cdb, 10, p, sizeof(p))->status;
}

static struct scsi_cmd *prin(const struct scsi_nexus *nx, uint8_t sa)
{
	uint8_t cdb[10] = { SCSI_OP_PERSISTENT_RESERVE_IN, sa };

	put_be16(cdb + 7, 4096);
	return exec(nx, cdb, 10, NULL, 0);
}

static uint8_t write10(const struct scsi_nexus *nx)
{
	uint8_t cdb[10] = { 0x2a, 0, 0, 0, 0, 0, 0, 0, 1 };
	uint8_t data[512] = { 0 };

	return exec(nx, cdb, 10, data, sizeof(data))->status;
}

static uint8_t read10(const struct scsi_nexus *nx)
{
	uint8_t cdb[10] = { 0x28, 0, 0, 0, 0, 0, 0, 0, 1 };

	return exec(nx, cdb, 10, NULL, 0)->status;
}

#define CONFLICT SAM_STAT_RESERVATION_CONFLICT
#define GOOD SAM_STAT_GOOD

/* ---- tests ---- */

static void test_register_reserve_access(void)
{
	struct scsi_cmd *c;

	lun_setup("");
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0, 0xa, 0) == GOOD);
	CHECK(prout(&nex_b, PR_OUT_REGISTER_AND_IGNORE, 0, 0, 0xb, 0) == GOOD);
	/* a registered nexus re-registering with a wrong key conflicts */
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0x99, 0xc, 0) == CONFLICT);
	c = prin(&nex_a, PR_IN_READ_KEYS);
	CHECK(c->status == GOOD && get_be32(c->buf) == 2 &&
	      get_be32(c->buf + 4) == 16);
	CHECK(get_be64(c->buf + 8) == 0xa && get_be64(c->buf + 16) == 0xb);

	/* not registered / wrong key: RESERVE conflicts */
	CHECK(prout(&nex_a, PR_OUT_RESERVE, PR_TYPE_WE, 0xb, 0, 0) ==
	      CONFLICT);
	CHECK(prout(&nex_a, PR_OUT_RESERVE, PR_TYPE_WE, 0xa, 0, 0) == GOOD);
	CHECK(prout(&nex_b, PR_OUT_RESERVE, PR_TYPE_WE, 0xb, 0, 0) ==
	      CONFLICT);
	c = prin(&nex_b, PR_IN_READ_RESERVATION);
	CHECK(c->status == GOOD && get_be32(c->buf + 4) == 16 &&
	      get_be64(c->buf + 8) == 0xa && c->buf[21] == PR_TYPE_WE);
	/* write exclusive: B reads, does not write; A does both */
	CHECK(write10(&nex_b) == CONFLICT);
	CHECK(read10(&nex_b) == GOOD);
	CHECK(write10(&nex_a) == GOOD);
	/* RELEASE with the wrong type is INVALID RELEASE (26/04) */
	c = exec(&nex_a, (uint8_t[10]){ SCSI_OP_PERSISTENT_RESERVE_OUT,
					PR_OUT_RELEASE, PR_TYPE_EA, 0, 0, 0,
					0, 0, 24 },
		 10, (uint8_t[24]){ 0, 0, 0, 0, 0, 0, 0, 0xa }, 24);
	CHECK(c->status == SAM_STAT_CHECK_CONDITION && c->sense[12] == 0x26 &&
	      c->sense[13] == 0x04);
	CHECK(prout(&nex_a, PR_OUT_RELEASE, PR_TYPE_WE, 0xa, 0, 0) == GOOD);
	CHECK(write10(&nex_b) == GOOD);

	/* exclusive access, registrants only: B (registered) may do all */
	CHECK(prout(&nex_a, PR_OUT_RESERVE, PR_TYPE_EA_RO, 0xa, 0, 0) == GOOD);
	CHECK(write10(&nex_b) == GOOD && read10(&nex_b) == GOOD);
	/* B unregisters: now B is out */
	CHECK(prout(&nex_b, PR_OUT_REGISTER, 0, 0xb, 0, 0) == GOOD);
	CHECK(read10(&nex_b) == CONFLICT);
	/* the holder unregistering releases an RO reservation */
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0xa, 0, 0) == GOOD);
	CHECK(read10(&nex_b) == GOOD);
	c = prin(&nex_a, PR_IN_READ_RESERVATION);
	CHECK(get_be32(c->buf + 4) == 0);
}

static void test_all_registrants_and_caps(void)
{
	struct scsi_cmd *c;

	lun_setup("");
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	c = prin(&nex_a, PR_IN_REPORT_CAPABILITIES);
	CHECK(c->status == GOOD && get_be16(c->buf) == 8);
	CHECK(!(c->buf[2] & 0x01));	/* no path: PTPL_C 0 */
	CHECK(c->buf[2] & 0x10 && !(c->buf[2] & 0x08));	/* CRH, no SIP_C */
	CHECK(c->buf[4] == 0xea && c->buf[5] == 0x01);
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0, 0xa, 0x01) ==
	      SAM_STAT_CHECK_CONDITION);	/* APTPL without a state file */
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0, 0xa, 0x08) ==
	      SAM_STAT_CHECK_CONDITION);	/* SPEC_I_PT not offered */
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0, 0xa, 0) == GOOD);
	CHECK(prout(&nex_b, PR_OUT_REGISTER, 0, 0, 0xb, 0) == GOOD);
	CHECK(prout(&nex_a, PR_OUT_RESERVE, PR_TYPE_EA_AR, 0xa, 0, 0) == GOOD);
	c = prin(&nex_b, PR_IN_READ_RESERVATION);
	CHECK(get_be64(c->buf + 8) == 0 && c->buf[21] == PR_TYPE_EA_AR);
	/* READ FULL STATUS: both are holders, TransportIDs name the ports */
	c = prin(&nex_a, PR_IN_READ_FULL_STATUS);
	CHECK(c->status == GOOD && (c->buf[8 + 12] & 0x01));
	CHECK(c->buf[8 + 24] == 0x45);
	CHECK(!strcmp((char *)c->buf + 8 + 28, "iqn.a,i,0x800102030405"));
	/* the reservation stays while any registrant is left */
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0xa, 0, 0) == GOOD);
	CHECK(write10(&nex_b) == GOOD);
	CHECK(write10(&nex_a) == CONFLICT);
	CHECK(prout(&nex_b, PR_OUT_REGISTER, 0, 0xb, 0, 0) == GOOD);
	CHECK(write10(&nex_a) == GOOD);
	/* an unknown service action is INVALID FIELD IN CDB */
	c = prin(&nex_a, 0x07);
	CHECK(c->status == SAM_STAT_CHECK_CONDITION && c->sense[12] == 0x24);
}

static void test_preempt_abort_and_recheck(void)
{
	lun_setup("");
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0, 0xa, 0) == GOOD);
	CHECK(prout(&nex_b, PR_OUT_REGISTER, 0, 0, 0xb, 0) == GOOD);
	CHECK(recheck_fn != NULL);

	/* B's write waits in the hang engine; A reserves meanwhile */
	struct scsi_cmd w;
	uint8_t wcdb[10] = { 0x2a, 0, 0, 0, 0, 0, 0, 0, 1 };

	memset(&w, 0, sizeof(w));
	w.lun = &lun;
	w.nexus = &nex_b;
	memcpy(w.cdb, wcdb, sizeof(wcdb));
	w.mio.owner = &w;
	CHECK(recheck_fn && recheck_fn(&w.mio) == 0);
	CHECK(prout(&nex_a, PR_OUT_RESERVE, PR_TYPE_WE, 0xa, 0, 0) == GOOD);
	CHECK(recheck_fn && recheck_fn(&w.mio) == SCSI_PR_ERR_CONFLICT);
	w.nexus = &nex_a;
	CHECK(recheck_fn && recheck_fn(&w.mio) == 0);

	/* B preempts A and aborts its tasks */
	CHECK(prout(&nex_b, PR_OUT_PREEMPT_AND_ABORT, PR_TYPE_EA, 0xb, 0xa,
		    0) == GOOD);
	CHECK(naborted == 1 && aborted_nexus[0] == nex_a.id);
	CHECK(ua_of(&nex_a) == ASC_REGISTRATIONS_PREEMPTED);
	CHECK(read10(&nex_a) == CONFLICT);
	CHECK(write10(&nex_b) == GOOD);
	/* PREEMPT without a matching key conflicts */
	CHECK(prout(&nex_b, PR_OUT_PREEMPT, PR_TYPE_EA, 0xb, 0x77, 0) ==
	      CONFLICT);
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0, 0xa2, 0) == GOOD);
	CHECK(prout(&nex_b, PR_OUT_CLEAR, 0, 0xb, 0, 0) == GOOD);
	CHECK(ua_of(&nex_a) == ASC_RESERVATIONS_PREEMPTED);
	CHECK(read10(&nex_a) == GOOD);
}

static void test_spc2(void)
{
	uint8_t res6[6] = { SCSI_OP_RESERVE_6 }, rel6[6] = { SCSI_OP_RELEASE_6 };
	uint8_t inq[6] = { SCSI_OP_INQUIRY, 0, 0, 0, 36 };
	uint8_t res10_3rd[10] = { SCSI_OP_RESERVE_10, 0x10 };

	lun_setup("");
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	CHECK(exec(&nex_a, res6, 6, NULL, 0)->status == GOOD);
	CHECK(exec(&nex_a, res6, 6, NULL, 0)->status == GOOD);
	CHECK(exec(&nex_b, res6, 6, NULL, 0)->status == CONFLICT);
	CHECK(exec(&nex_b, inq, 6, NULL, 0)->status == GOOD);
	CHECK(read10(&nex_b) == CONFLICT);
	CHECK(prin(&nex_b, PR_IN_READ_KEYS)->status == CONFLICT);
	CHECK(exec(&nex_b, rel6, 6, NULL, 0)->status == GOOD);	/* no-op */
	CHECK(read10(&nex_b) == CONFLICT);
	/* a LUN reset ends it */
	scsi_lun_reset_ua(&lun, &nex_b);
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	CHECK(read10(&nex_b) == GOOD);
	/* so does the loss of its I_T nexus */
	CHECK(exec(&nex_b, res6, 6, NULL, 0)->status == GOOD);
	CHECK(write10(&nex_a) == CONFLICT);
	scsi_nexus_lost(&tgt, &nex_b);
	CHECK(write10(&nex_a) == GOOD);
	/* registrations make RESERVE / RELEASE conflict (CRH) */
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0, 0xa, 0) == GOOD);
	CHECK(exec(&nex_a, res6, 6, NULL, 0)->status == CONFLICT);
	CHECK(exec(&nex_a, rel6, 6, NULL, 0)->status == CONFLICT);
	CHECK(exec(&nex_a, res10_3rd, 10, NULL, 0)->status ==
	      SAM_STAT_CHECK_CONDITION);
}

static void test_aptpl_file(void)
{
	char img[64], *text = NULL;
	size_t n = 0;
	FILE *f;

	snprintf(img, sizeof(img), "/tmp/test_scsi_pr.%d.img", (int)getpid());
	snprintf(state_path, sizeof(state_path), "%s.pr", img);
	unlink(state_path);
	lun_setup(img);
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	CHECK(prin(&nex_a, PR_IN_REPORT_CAPABILITIES)->buf[2] & 0x01);
	CHECK(prout(&nex_a, PR_OUT_REGISTER, 0, 0, 0xa, 0x01) == GOOD);
	CHECK(prout(&nex_b, PR_OUT_REGISTER, 0, 0, 0xb, 0x01) == GOOD);
	CHECK(prout(&nex_a, PR_OUT_RESERVE, PR_TYPE_WE_RO, 0xa, 0, 0) == GOOD);
	f = fopen(state_path, "r");
	CHECK(f != NULL);
	if (f) {
		text = calloc(1, 4096);
		n = fread(text, 1, 4095, f);
		fclose(f);
	}
	CHECK(n > 0 && text && !strncmp(text, "holdfast-pr 1\n", 14));
	CHECK(text && strstr(text, "reservation 5 0\n"));
	CHECK(text && strstr(text, "reg 0x000000000000000a 800102030405 1 0 1 "
				   "iqn.a\n"));
	free(text);

	/* "power loss": drop the state; the next command reloads it */
	scsi_lun_state_free(&lun);
	clear_ua(&nex_a);
	clear_ua(&nex_b);
	struct scsi_cmd *c = prin(&nex_b, PR_IN_READ_RESERVATION);
	CHECK(c->status == GOOD && get_be64(c->buf + 8) == 0xa &&
	      c->buf[21] == PR_TYPE_WE_RO);
	c = prin(&nex_b, PR_IN_REPORT_CAPABILITIES);
	CHECK(c->buf[3] & 0x01);	/* PTPL_A */
	CHECK(write10(&nex_b) == GOOD);	/* registrant of an RO type */
	/* APTPL off: the file goes */
	CHECK(prout(&nex_b, PR_OUT_REGISTER, 0, 0xb, 0xb2, 0) == GOOD);
	CHECK(access(state_path, F_OK) < 0);
	scsi_lun_state_free(&lun);
	clear_ua(&nex_a);
	c = prin(&nex_a, PR_IN_READ_KEYS);
	CHECK(c->status == GOOD && get_be32(c->buf + 4) == 0);

	/* a damaged file is ignored, never half applied */
	f = fopen(state_path, "w");
	if (f) {
		fputs("holdfast-pr 1\ngeneration 3\nreg 0xa zz 1 0 0 iqn.a\n",
		      f);
		fclose(f);
	}
	scsi_lun_state_free(&lun);
	clear_ua(&nex_a);
	c = prin(&nex_a, PR_IN_READ_KEYS);
	CHECK(c->status == GOOD && get_be32(c->buf + 4) == 0);
	unlink(state_path);
}

int main(void)
{
	log_init(true, false);
	test_register_reserve_access();
	test_all_registrants_and_caps();
	test_preempt_abort_and_recheck();
	test_spc2();
	test_aptpl_file();
	scsi_lun_state_free(&lun);
	return CHECK_SUMMARY("test_scsi_pr");
}
