/* scsi_fake.h - shared by the SCSI layer's unit tests (test_scsi.c,
 * test_scsi_sbc.c): a fake LUN and target, a stubbed hang engine and the
 * helpers that run a CDB and look at the answer.
 *
 * hang_submit() is stubbed (and hang_abort, hang_set_recheck,
 * hang_abort_nexus, hang_lun_init/free): hang_submit() records the
 * media_io so each test completes it on demand with the result it wants.
 * tgt_lun_list() and reactor_current() are stubbed too, and so is the
 * target table (tgt_for_each, tgt_lun_get, tgt_acl_allows).
 *
 * The stubs replace the real functions at link time: because the test
 * defines them, the archive members that hold the real ones (hang*.o,
 * target.o, reactor.o) are never pulled in.  They are ordinary (strong)
 * definitions, so should a change make the link pull one of those members
 * anyway, the build fails with "multiple definition" instead of the real
 * function silently replacing the stub.  Each test program includes this
 * once. */
#ifndef HOLDFAST_TEST_SCSI_FAKE_H
#define HOLDFAST_TEST_SCSI_FAKE_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scsi.h"
#include "scsi_internal.h"
#include "target.h"
#include "reactor.h"
#include "util.h"

#include "check.h"


/* ---- stubs ---- */
static struct media_io *pending UNUSED;
static int submits UNUSED, aborts UNUSED;

void hang_submit(struct scsi_lun *lun UNUSED, struct media_io *m)
{
	pending = m;
	submits++;
}

void hang_abort(struct scsi_lun *lun UNUSED, struct media_io *m)
{
	CHECK(m == pending);
	aborts++;
}

int hang_lun_init(struct scsi_lun *lun UNUSED)
{
	return 0;
}

void hang_lun_free(struct scsi_lun *lun UNUSED)
{
}

/* Reservations register a dispatch-time recheck and PREEMPT AND ABORT
 * drops a nexus: test_scsi_pr.c looks at both; here they do nothing. */
void hang_set_recheck(struct scsi_lun *lun UNUSED,
		      int (*fn)(struct media_io *m) UNUSED)
{
}

int hang_abort_nexus(struct scsi_lun *lun UNUSED,
		     uint64_t nexus_id UNUSED,
		     struct reactor *r UNUSED,
		     void (*done)(void *arg,
							unsigned dropped) UNUSED,
		     void *arg UNUSED)
{
	return 0;
}

struct reactor *reactor_current(void)
{
	return NULL;
}

/* A takeover re-reads the LUN (scsi_alua.c); the SCSI tests link without
 * scsi_lun.c, whose store handling they fake. */
int scsi_lun_refresh(struct scsi_lun *lun UNUSED, uint64_t size UNUSED,
		     unsigned flags UNUSED, const char **why UNUSED)
{
	return 0;
}

void scsi_lun_shared_release(struct scsi_lun *lun UNUSED, bool save UNUSED)
{
}

int reactor_call(struct reactor *r UNUSED, void (*fn)(void *arg), void *arg)
{
	fn(arg);
	return 0;
}

/* The key table checks the names of the `filters` key with backend_find()
 * (lun_keys.c); these tests link no backend (the real table would pull in
 * every store and the reactor), so the two named filters are faked. */
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

/* No reactor runs in these tests: nothing to wait for before freeing an
 * old settings snapshot (lun_settings_retire()). */
void reactor_synchronize(void)
{
}

static uint64_t fake_luns[8] UNUSED;
static int fake_nluns UNUSED;

int tgt_lun_list(struct target *t UNUSED, uint64_t *luns, int max)
{
	int n = MIN(fake_nluns, max);
	memcpy(luns, fake_luns, sizeof(uint64_t) * (size_t)n);
	return n;
}

/* The target table as the copy manager (scsi_xcopy.c) sees it: no copy
 * target is reachable here (test_scsi_xcopy.c has a table with LUNs).
 * Defining these keeps target.o, and the hang engine behind it, out of
 * the link. */
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
static struct target tgt UNUSED;
static struct scsi_lun lun UNUSED;
static struct lun_settings lun_set UNUSED;	/* lun.set points here */
static struct scsi_nexus nex_a UNUSED = { .id = 1, .tpgt = 1, .rel_port_id = 1 };
static struct scsi_nexus nex_b UNUSED = { .id = 2, .tpgt = 1, .rel_port_id = 1 };
static int done_calls UNUSED;

static inline void on_done(struct scsi_cmd *cmd UNUSED)
{
	done_calls++;
}

static inline void lun_setup(void)
{
	scsi_lun_state_free(&lun);
	memset(&lun, 0, sizeof(lun));
	lun_settings_default(&lun_set, 1);
	atomic_init(&lun.set, &lun_set);
	lun_fixed_init(&lun, &lun_set);
	lun.nblocks = 2048;
	lun.target = &tgt;
	memset(&tgt, 0, sizeof(tgt));
	pthread_mutex_init(&tgt.lock, NULL);
	snprintf(tgt.name, sizeof(tgt.name), "iqn.2026-01.test:disk");
	tgt.luns[1] = &lun;	/* what the real tgt_lun_list() reads */
	tgt.luns[2] = &lun;
	fake_nluns = 2;
	fake_luns[0] = 1;
	fake_luns[1] = 2;
	pending = NULL;
}

static inline void cmd_init(struct scsi_cmd *cmd, const struct scsi_nexus *nx,
			    const uint8_t *cdb, unsigned cdb_len)
{
	if (cmd->buf)
		scsi_buf_free(cmd->buf);
	memset(cmd, 0, sizeof(*cmd));
	cmd->target = &tgt;
	cmd->lun = &lun;
	cmd->lun_id = 1;
	cmd->nexus = nx;
	memcpy(cmd->cdb, cdb, cdb_len);
	cmd->cdb_len = 16;
	cmd->exp_len = 65536;
	cmd->done = on_done;
}

/* Execute and expect a synchronous answer. */
static inline void run(struct scsi_cmd *cmd)
{
	done_calls = 0;
	scsi_cmd_exec(cmd);
	CHECK(done_calls == 1);
}

static inline void cmd_free(struct scsi_cmd *cmd)
{
	scsi_buf_free(cmd->buf);
	cmd->buf = NULL;
}

/* Clear the power-on unit attention of nexus nx. */
static inline void clear_ua(const struct scsi_nexus *nx)
{
	struct scsi_cmd c = { 0 };
	uint8_t tur[6] = { SCSI_OP_TEST_UNIT_READY };

	cmd_init(&c, nx, tur, 6);
	run(&c);
	cmd_init(&c, nx, tur, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD);
	cmd_free(&c);
}

static inline uint8_t sense_key(const struct scsi_cmd *c)
{
	return c->sense[0] == 0x72 ? c->sense[1] & 0xf : c->sense[2] & 0xf;
}

static inline uint16_t sense_asc(const struct scsi_cmd *c)
{
	if (c->sense[0] == 0x72)
		return (uint16_t)(c->sense[2] << 8 | c->sense[3]);
	return (uint16_t)(c->sense[12] << 8 | c->sense[13]);
}

static inline bool is_check(const struct scsi_cmd *c, uint8_t key, uint16_t asc)
{
	return c->status == SAM_STAT_CHECK_CONDITION && sense_key(c) == key &&
	       sense_asc(c) == asc;
}


static inline void inquiry_vpd(struct scsi_cmd *c, uint8_t page)
{
	uint8_t cdb[6] = { SCSI_OP_INQUIRY, 1, page, 0x04, 0 };

	cmd_init(c, &nex_a, cdb, 6);
	run(c);
}


#endif
