/* test_scsi_alua.c - two nodes in front of one store (scsi_alua.c), both
 * played by this process: OFD locks on the sidecar conflict between two
 * open files even in one process, so a second LUN on the same file is the
 * "other node".  Checks the ownership rule, what each ALUA state answers,
 * REPORT TARGET PORT GROUPS, the 2A/06 unit attention and SET TARGET PORT
 * GROUPS' parameter checks and its asynchronous completion. */
#include <fcntl.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "scsi_fake.h"

static struct scsi_lun peer;	/* the other node's LUN, same store */
static struct lun_settings peer_set;	/* peer.set points here */
static char store[64];

static void alua_settings(struct lun_settings *s, uint16_t group,
			  uint16_t other, bool standby)
{
	lun_settings_default(s, 1);
	snprintf(s->path, sizeof(s->path), "%s", store);
	s->alua_group = group;
	s->alua_peer_group = other;
	s->alua_standby = standby;
}

static void setup(void)
{
	int fd;

	snprintf(store, sizeof(store), "/tmp/hf-alua-unit-%d.img", getpid());
	fd = open(store, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	close(fd);
	lun_setup();
	alua_settings(&lun_set, 1, 2, false);
	lun_fixed_init(&lun, &lun_set);
	memset(&peer, 0, sizeof(peer));
	alua_settings(&peer_set, 2, 1, true);
	atomic_init(&peer.set, &peer_set);
	lun_fixed_init(&peer, &peer_set);
	peer.nblocks = 2048;
	peer.target = &tgt;
}

static void cmd_on(struct scsi_cmd *c, struct scsi_lun *l,
		   const struct scsi_nexus *nx, const uint8_t *cdb,
		   unsigned len)
{
	cmd_init(c, nx, cdb, len);
	c->lun = l;
}

static void tur_on(struct scsi_cmd *c, struct scsi_lun *l,
		   const struct scsi_nexus *nx)
{
	uint8_t tur[6] = { SCSI_OP_TEST_UNIT_READY };

	cmd_on(c, l, nx, tur, 6);
	run(c);
}

static void read_on(struct scsi_cmd *c, struct scsi_lun *l)
{
	uint8_t cdb[10] = { SCSI_OP_READ_10, 0, 0, 0, 0, 0, 0, 0, 1, 0 };

	cmd_on(c, l, &nex_a, cdb, 10);
	run(c);		/* refused synchronously; a served read would pend */
}

/* STPG with one descriptor (group, state); data length len (0: 8). */
static void stpg_on(struct scsi_cmd *c, struct scsi_lun *l, uint16_t group,
		    uint8_t state, uint32_t len)
{
	uint8_t cdb[12] = { SCSI_OP_MAINTENANCE_OUT,
			    SCSI_MO_SET_TARGET_PORT_GROUPS };

	put_be32(cdb + 6, len ? len : 8);
	cmd_on(c, l, &nex_a, cdb, 12);
	c->buf = scsi_buf_alloc(8);
	c->buf[4] = state;
	put_be16(c->buf + 6, group);
	c->out_len = 8;
	done_calls = 0;
	scsi_cmd_exec(c);
}

static void wait_done(void)
{
	for (int i = 0; i < 2000 && !__atomic_load_n(&done_calls,
						      __ATOMIC_ACQUIRE); i++) {
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	CHECK(__atomic_load_n(&done_calls, __ATOMIC_ACQUIRE) == 1);
}

static void test_ownership_and_states(void)
{
	struct scsi_cmd c = { 0 };
	const char *why = NULL;

	CHECK(scsi_alua_apply(&lun, &lun_set, false, &why) == 0);
	CHECK(scsi_alua_state(&lun) == ALUA_AO);
	/* the other node may not become active, and comes up standby */
	struct lun_settings want = peer_set;
	want.alua_standby = false;
	CHECK(scsi_alua_apply(&peer, &want, false, &why) == -EBUSY);
	CHECK(why && strstr(why, "holds the ownership lock"));
	CHECK(scsi_alua_state(&peer) == ALUA_STANDBY);
	CHECK(scsi_alua_peer_state(&peer) == ALUA_AO);
	/* one identity for both */
	CHECK(scsi_alua_identity(&lun) && scsi_alua_identity(&peer));
	CHECK(strcmp(scsi_alua_identity(&lun), scsi_alua_identity(&peer)) == 0);

	clear_ua(&nex_a);
	tur_on(&c, &peer, &nex_a);	/* peer's power-on UA */
	tur_on(&c, &peer, &nex_a);
	CHECK(c.status == SAM_STAT_GOOD);
	read_on(&c, &peer);
	CHECK(is_check(&c, SENSE_KEY_NOT_READY, ASC_LUN_NOT_ACCESSIBLE_STANDBY));
	uint8_t inq[6] = { SCSI_OP_INQUIRY, 0, 0, 0, 96, 0 };
	cmd_on(&c, &peer, &nex_a, inq, 6);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && (c.buf[5] >> 4 & 3) == 3);

	/* REPORT TARGET PORT GROUPS on the active node */
	uint8_t rtpg[12] = { SCSI_OP_MAINTENANCE_IN,
			     SCSI_MI_REPORT_TARGET_PORT_GROUPS, 0, 0, 0, 0,
			     0, 0, 1, 0 };
	cmd_on(&c, &lun, &nex_a, rtpg, 12);
	run(&c);
	CHECK(c.status == SAM_STAT_GOOD && c.in_len == 4 + 2 * 12);
	CHECK((c.buf[4] & 0xf) == ALUA_AO && get_be16(c.buf + 6) == 1);
	CHECK(get_be16(c.buf + 4 + 10) == 1);		/* its port */
	CHECK((c.buf[16] & 0xf) == ALUA_STANDBY && get_be16(c.buf + 18) == 2);
	CHECK(get_be16(c.buf + 16 + 10) == 2);

	/* handover: lun standby (2A/06 once), peer active */
	struct lun_settings sb = lun_set;
	sb.alua_standby = true;
	CHECK(scsi_alua_apply(&lun, &sb, false, &why) == 0);
	tur_on(&c, &lun, &nex_a);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_ASYMMETRIC_ACCESS_STATE_CHANGED));
	tur_on(&c, &lun, &nex_a);
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(scsi_alua_apply(&peer, &want, false, &why) == 0);
	CHECK(scsi_alua_state(&peer) == ALUA_AO);
	tur_on(&c, &peer, &nex_a);
	CHECK(is_check(&c, SENSE_KEY_UNIT_ATTENTION,
		       ASC_ASYMMETRIC_ACCESS_STATE_CHANGED));
	cmd_free(&c);
}

static void test_stpg(void)
{
	struct scsi_cmd c = { 0 };

	/* peer is active now (test above); lun is standby */
	stpg_on(&c, &lun, 1, ALUA_AO, 6);	/* not whole descriptors */
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_PARAMETER_LIST_LENGTH_ERROR));
	stpg_on(&c, &lun, 9, ALUA_AO, 0);	/* no such group */
	CHECK(is_check(&c, SENSE_KEY_ILLEGAL_REQUEST,
		       ASC_INVALID_FIELD_IN_PARAMETER_LIST));
	stpg_on(&c, &lun, 1, ALUA_AO, 0);	/* the other node is active */
	wait_done();
	CHECK(is_check(&c, SENSE_KEY_HARDWARE_ERROR, ASC_STPG_FAILED));
	stpg_on(&c, &peer, 1, ALUA_AO, 0);	/* peer: "make group 1 AO" */
	wait_done();
	CHECK(c.status == SAM_STAT_GOOD);
	CHECK(scsi_alua_state(&peer) == ALUA_STANDBY);
	/* the state is run-time state: the settings snapshot (the state
	 * asked for) is neither written nor replaced */
	CHECK(lun_settings_get(&peer) == &peer_set && peer_set.alua_standby);
	stpg_on(&c, &lun, 1, ALUA_AO, 0);
	wait_done();
	CHECK(c.status == SAM_STAT_GOOD && scsi_alua_state(&lun) == ALUA_AO);
	cmd_free(&c);
}

int main(void)
{
	setup();
	test_ownership_and_states();
	test_stpg();
	scsi_lun_state_free(&peer);
	scsi_lun_state_free(&lun);
	unlink(store);
	char side[96];
	snprintf(side, sizeof(side), "%s.holdfast-owner", store);
	unlink(side);
	printf("test_scsi_alua: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
