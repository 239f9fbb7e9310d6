/* test_pr_owner.c - ownership by SCSI-3 persistent reservation
 * (backends/pr_owner.c) through its SG_IO transport, with the ioctl faked:
 * a small SCSI logical unit keeps registrations per I_T nexus (here: per
 * fd) and one reservation, and answers the CDBs pr_owner.c builds.  What
 * is checked: the CDB and parameter list bytes, the sg_io_hdr fields,
 * sense decoding (fixed and descriptor), unit attentions retried, a
 * transport failure, and the take / refuse / preempt / release / query
 * logic.  No real disk is involved (README: untested on real disks). */
#include <scsi/sg.h>
#include <stdarg.h>
#include <sys/ioctl.h>

int fake_ioctl(int fd, unsigned long req, ...);
#define ioctl fake_ioctl
#include "../../backends/pr_owner.c"
#undef ioctl

#include "check.h"

/* ---- the fake logical unit ---- */

#define NEXUS_MAX 8

static struct {
	uint64_t reg[NEXUS_MAX];	/* registered key per nexus, 0 = none */
	int holder;			/* nexus holding the reservation, -1 */
	uint8_t type;
	bool no_preempt_abort;		/* answer PREEMPT AND ABORT as invalid */
	bool descriptor_sense;
	int ua_pending[NEXUS_MAX];	/* unit attentions to report first */
	int fail_errno;			/* the ioctl fails */
	int host_status;		/* the transport failed */
	/* the last command seen */
	sg_io_hdr_t last;
	uint8_t last_cdb[16];
	uint8_t last_param[PR_OUT_PARAM_LEN];
	int cmds, preempt_aborts, preempts;
} lu;

static void lu_reset(void)
{
	memset(&lu, 0, sizeof(lu));
	lu.holder = -1;
}

static void lu_sense(sg_io_hdr_t *h, uint8_t key, uint8_t asc, uint8_t ascq)
{
	uint8_t *s = h->sbp;

	h->status = PR_STATUS_CHECK_CONDITION;
	memset(s, 0, h->mx_sb_len);
	if (lu.descriptor_sense) {
		s[0] = 0x72;
		s[1] = key;
		s[2] = asc;
		s[3] = ascq;
		h->sb_len_wr = 8;
	} else {
		s[0] = 0x70;
		s[2] = key;
		s[7] = 10;
		s[12] = asc;
		s[13] = ascq;
		h->sb_len_wr = 18;
	}
	h->driver_status = 0x08;	/* DRIVER_SENSE */
}

static void lu_pr_out(sg_io_hdr_t *h, int n)
{
	const uint8_t *cdb = h->cmdp, *p = h->dxferp;
	uint8_t sa = cdb[1] & 0x1f, type = cdb[2] & 0x0f;
	uint64_t key = get_be64(p), sa_key = get_be64(p + 8);

	if (get_be32(cdb + 5) != PR_OUT_PARAM_LEN ||
	    h->dxfer_len != PR_OUT_PARAM_LEN ||
	    h->dxfer_direction != SG_DXFER_TO_DEV) {
		lu_sense(h, PR_SENSE_ILLEGAL_REQUEST, 0x1a, 0);
		return;
	}
	switch (sa) {
	case PR_OUT_REGISTER_IGNORE:
		lu.reg[n] = sa_key;
		return;
	case PR_OUT_RESERVE:
		if (lu.reg[n] != key) {
			h->status = PR_STATUS_RESERVATION_CONFLICT;
		} else if (lu.holder < 0) {
			lu.holder = n;
			lu.type = type;
		} else if (lu.holder != n) {
			h->status = PR_STATUS_RESERVATION_CONFLICT;
		}
		return;
	case PR_OUT_RELEASE:
		if (!lu.reg[n])
			h->status = PR_STATUS_RESERVATION_CONFLICT;
		else if (lu.holder == n)
			lu.holder = -1;
		return;
	case PR_OUT_PREEMPT_AND_ABORT:
		if (lu.no_preempt_abort) {
			lu_sense(h, PR_SENSE_ILLEGAL_REQUEST, 0x24, 0);
			return;
		}
		lu.preempt_aborts++;
		/* fall through */
	case PR_OUT_PREEMPT:
		if (sa == PR_OUT_PREEMPT)
			lu.preempts++;
		if (lu.reg[n] != key) {
			h->status = PR_STATUS_RESERVATION_CONFLICT;
			return;
		}
		for (int i = 0; i < NEXUS_MAX; i++)
			if (i != n && lu.reg[i] == sa_key) {
				lu.reg[i] = 0;
				lu.ua_pending[i]++;
			}
		if (lu.holder >= 0 && (lu.holder == n ||
				       lu.reg[lu.holder] == 0 ||
				       lu.reg[lu.holder] == sa_key)) {
			lu.holder = n;
			lu.type = type;
		}
		return;
	}
	lu_sense(h, PR_SENSE_ILLEGAL_REQUEST, 0x24, 0);
}

int fake_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	sg_io_hdr_t *h;
	const uint8_t *cdb;
	uint8_t *d;
	int n = fd;

	va_start(ap, req);
	h = va_arg(ap, sg_io_hdr_t *);
	va_end(ap);
	if (req != SG_IO || n < 0 || n >= NEXUS_MAX) {
		errno = ENOTTY;
		return -1;
	}
	lu.cmds++;
	lu.last = *h;
	memcpy(lu.last_cdb, h->cmdp, MIN(h->cmd_len, 16));
	if (h->dxfer_direction == SG_DXFER_TO_DEV && h->dxfer_len >= 24)
		memcpy(lu.last_param, h->dxferp, PR_OUT_PARAM_LEN);
	if (lu.fail_errno) {
		errno = lu.fail_errno;
		return -1;
	}
	h->status = 0;
	h->host_status = (unsigned short)lu.host_status;
	h->driver_status = 0;
	h->sb_len_wr = 0;
	h->resid = 0;
	if (lu.host_status)
		return 0;
	if (lu.ua_pending[n]) {
		lu.ua_pending[n]--;
		lu_sense(h, PR_SENSE_UNIT_ATTENTION, 0x2a, 0x03);
		return 0;
	}
	cdb = h->cmdp;
	d = h->dxferp;
	switch (cdb[0]) {
	case PR_OP_OUT:
		lu_pr_out(h, n);
		break;
	case PR_OP_IN:
		memset(d, 0, h->dxfer_len);
		if ((cdb[1] & 0x1f) != PR_IN_READ_RESERVATION ||
		    h->dxfer_direction != SG_DXFER_FROM_DEV) {
			lu_sense(h, PR_SENSE_ILLEGAL_REQUEST, 0x24, 0);
			break;
		}
		put_be32(d, 7);			/* PRGENERATION */
		if (lu.holder >= 0) {
			put_be32(d + 4, 16);
			put_be64(d + 8, lu.reg[lu.holder]);
			d[21] = lu.type;
			h->resid = (int)h->dxfer_len - 24;
		} else {
			h->resid = (int)h->dxfer_len - 8;
		}
		break;
	case SCSI_OP_INQUIRY:
		memset(d, 0, h->dxfer_len);
		d[1] = cdb[2];
		put_be16(d + 2, 4);
		memcpy(d + 4, cdb[2] == VPD_UNIT_SERIAL ? "SN01" : "NAA6", 4);
		h->resid = (int)h->dxfer_len - 8;
		break;
	case SCSI_OP_SYNC_CACHE10:
		if (h->dxfer_direction != SG_DXFER_NONE)
			lu_sense(h, PR_SENSE_ILLEGAL_REQUEST, 0x24, 0);
		break;
	default:
		lu_sense(h, PR_SENSE_ILLEGAL_REQUEST, 0x20, 0);
	}
	return 0;
}

/* ---- the tests ---- */

struct node {
	int fd;			/* = the fake nexus */
	struct pr_owner p;
};

static void node_init(struct node *n, int nexus, uint64_t key)
{
	memset(n, 0, sizeof(*n));
	n->fd = nexus;
	n->p.exec = pr_sgio_exec;
	n->p.ctx = &n->fd;
	n->p.key = key;
}

static void test_wire(void)
{
	struct pr_xfer x;
	uint8_t param[PR_OUT_PARAM_LEN], buf[32], key = 0;
	uint64_t k = 0;
	uint16_t asc = 0;

	pr_out_param(param, 0x1122334455667788ull, 0xa1);
	pr_out_cdb(&x, PR_OUT_PREEMPT, PR_TYPE_EXCLUSIVE_ACCESS, param);
	CHECK(x.cdb_len == 10 && x.cdb[0] == 0x5f && x.cdb[1] == 0x04 &&
	      x.cdb[2] == 0x03, "PR OUT opcode, service action, LU scope + type");
	CHECK(get_be32(x.cdb + 5) == 24 && x.dir == PR_DIR_OUT && x.len == 24,
	      "parameter list length 24");
	CHECK(get_be64(param) == 0x1122334455667788ull &&
	      get_be64(param + 8) == 0xa1 && param[20] == 0,
	      "keys big-endian, no APTPL / SPEC_I_PT / ALL_TG_PT");
	pr_in_cdb(&x, PR_IN_READ_RESERVATION, buf, 1024);
	CHECK(x.cdb[0] == 0x5e && x.cdb[1] == 0x01 &&
	      get_be16(x.cdb + 7) == 1024 && x.dir == PR_DIR_IN,
	      "PR IN READ RESERVATION, allocation length");

	memset(buf, 0, sizeof(buf));
	CHECK(pr_parse_reservation(buf, 8, &k, &key) == 0, "no reservation");
	put_be32(buf + 4, 16);
	put_be64(buf + 8, 0xbeef);
	buf[21] = 0x03;
	CHECK(pr_parse_reservation(buf, 24, &k, &key) == 1 && k == 0xbeef &&
	      key == 3, "holder key and type");
	CHECK(pr_parse_reservation(buf, 20, &k, &key) == -EPROTO,
	      "short answer");
	CHECK(pr_parse_reservation(buf, 4, &k, &key) == -EPROTO, "no header");

	memset(buf, 0, sizeof(buf));
	buf[0] = 0x70;
	buf[2] = 0x06;
	buf[12] = 0x2a;
	buf[13] = 0x03;
	CHECK(pr_parse_sense(buf, 18, &key, &asc) && key == 6 &&
	      asc == 0x2a03, "fixed sense");
	buf[0] = 0x72;
	buf[1] = 0x05;
	buf[2] = 0x24;
	buf[3] = 0x00;
	CHECK(pr_parse_sense(buf, 8, &key, &asc) && key == 5 &&
	      asc == 0x2400, "descriptor sense");
	buf[0] = 0x00;
	CHECK(!pr_parse_sense(buf, 8, &key, &asc), "no sense");

	CHECK(pr_key_parse("0x10", &k) == 0 && k == 16, "hex key");
	CHECK(pr_key_parse("42", &k) == 0 && k == 42, "decimal key");
	CHECK(pr_key_parse("0", &k) == -EINVAL, "key 0 refused");
	CHECK(pr_key_parse("0x1g", &k) == -EINVAL, "junk refused");
}

static void test_sgio_transport(void)
{
	struct node a;
	struct pr_xfer x;
	uint8_t buf[64];
	int err;

	lu_reset();
	node_init(&a, 1, 0xa);
	pr_in_cdb(&x, PR_IN_READ_RESERVATION, buf, sizeof(buf));
	err = pr_sgio_exec(a.p.ctx, &x);
	CHECK(err == 0 && x.status == PR_STATUS_GOOD && x.in_len == 8,
	      "READ RESERVATION: resid gives in_len (%d, %u)", err, x.in_len);
	CHECK(lu.last.interface_id == 'S' && lu.last.cmd_len == 10 &&
	      lu.last.dxfer_direction == SG_DXFER_FROM_DEV &&
	      lu.last.dxfer_len == sizeof(buf) && lu.last.timeout == 30000 &&
	      lu.last.mx_sb_len > 0, "sg_io_hdr for a data-in command");

	memset(&x, 0, sizeof(x));
	x.cdb[0] = SCSI_OP_SYNC_CACHE10;
	x.cdb_len = 10;
	x.dir = PR_DIR_NONE;
	CHECK(pr_sgio_exec(a.p.ctx, &x) == 0 && x.status == PR_STATUS_GOOD &&
	      lu.last.dxfer_direction == SG_DXFER_NONE &&
	      lu.last.dxfer_len == 0, "no data: SG_DXFER_NONE");

	memset(&x, 0, sizeof(x));
	x.cdb[0] = 0xff;		/* the fake answers INVALID OPCODE */
	x.cdb_len = 6;
	CHECK(pr_sgio_exec(a.p.ctx, &x) == 0 &&
	      x.status == PR_STATUS_CHECK_CONDITION &&
	      x.sense_key == PR_SENSE_ILLEGAL_REQUEST && x.asc == 0x2000,
	      "fixed sense decoded");
	lu.descriptor_sense = true;
	CHECK(pr_sgio_exec(a.p.ctx, &x) == 0 &&
	      x.sense_key == PR_SENSE_ILLEGAL_REQUEST && x.asc == 0x2000,
	      "descriptor sense decoded");
	lu.descriptor_sense = false;

	lu.host_status = 0x01;		/* DID_NO_CONNECT */
	CHECK(pr_sgio_exec(a.p.ctx, &x) == -EIO, "transport failure: -EIO");
	lu.host_status = 0;
	lu.fail_errno = ENODEV;
	CHECK(pr_sgio_exec(a.p.ctx, &x) == -ENODEV, "ioctl failure: -errno");
	lu.fail_errno = 0;
	a.fd = NEXUS_MAX + 1;		/* a file that is no SCSI device */
	CHECK(pr_sgio_exec(a.p.ctx, &x) == -ENOTTY, "not SCSI: -ENOTTY");
}

static void test_ownership(void)
{
	struct node a, b, a2;
	const char *msg = NULL;
	int err;

	lu_reset();
	node_init(&a, 1, 0x6866000000000001ull);
	node_init(&b, 2, 0x6866000000000002ull);
	lu.ua_pending[1] = 2;	/* a new nexus: the first answers are UAs */

	err = pr_owner_op(&a.p, BE_OWNER_TAKE, &msg);
	CHECK(err == 0, "A takes it (%d %s)", err, msg ? msg : "");
	CHECK(lu.holder == 1 && lu.type == PR_TYPE_EXCLUSIVE_ACCESS &&
	      lu.reg[1] == a.p.key, "A registered, holds EXCLUSIVE ACCESS");
	CHECK(pr_owner_op(&a.p, BE_OWNER_TAKE, &msg) == 0,
	      "taking it again is a no-op");
	CHECK(pr_owner_op(&a.p, BE_OWNER_QUERY, &msg) == BE_OWNER_MINE,
	      "A: mine");

	msg = NULL;
	err = pr_owner_op(&b.p, BE_OWNER_TAKE, &msg);
	CHECK(err == -EBUSY && msg && strstr(msg, "other node holds"),
	      "B refused while A holds it (%d)", err);
	CHECK(lu.holder == 1 && lu.reg[2] == b.p.key,
	      "A still holds it; B is registered");
	CHECK(pr_owner_op(&b.p, BE_OWNER_QUERY, &msg) == BE_OWNER_OTHER,
	      "B: other");

	/* force: PREEMPT AND ABORT A's key */
	err = pr_owner_op(&b.p, BE_OWNER_TAKE_FORCE, &msg);
	CHECK(err == 0 && lu.holder == 2 && lu.reg[1] == 0 &&
	      lu.preempt_aborts == 1 && b.p.preempted == a.p.key,
	      "B preempted A's key (%d)", err);
	CHECK(lu.last_cdb[0] == PR_OP_IN, "and checked the result");
	CHECK(pr_owner_op(&a.p, BE_OWNER_QUERY, &msg) == BE_OWNER_OTHER,
	      "A learns it lost (after its unit attention)");

	/* B hands over: flush, release; A takes it back without force */
	lu.cmds = 0;
	CHECK(pr_owner_op(&b.p, BE_OWNER_RELEASE, &msg) == 0 &&
	      lu.holder == -1, "B released");
	CHECK(pr_owner_op(&b.p, BE_OWNER_QUERY, &msg) == BE_OWNER_NONE,
	      "nobody holds it");
	CHECK(pr_owner_op(&a.p, BE_OWNER_TAKE, &msg) == 0 && lu.holder == 1,
	      "A re-registers and takes it");

	/* a device without PREEMPT AND ABORT: PREEMPT */
	lu.no_preempt_abort = true;
	CHECK(pr_owner_op(&b.p, BE_OWNER_TAKE_FORCE, &msg) == 0 &&
	      lu.holder == 2 && lu.preempts == 1, "fallback to PREEMPT");
	lu.no_preempt_abort = false;

	/* B restarts: a new nexus, the same key; the reservation is its
	 * earlier session's */
	node_init(&a2, 3, b.p.key);
	msg = NULL;
	err = pr_owner_op(&a2.p, BE_OWNER_TAKE, &msg);
	CHECK(err == -EBUSY && msg && strstr(msg, "own key"),
	      "own key held by an earlier session: needs force (%d)", err);
	CHECK(pr_owner_op(&a2.p, BE_OWNER_TAKE_FORCE, &msg) == 0 &&
	      lu.holder == 3 && lu.reg[2] == 0 && lu.reg[3] == b.p.key,
	      "force: the old nexus preempted, the new one holds it");
	/* a reconnect of a node that owns it (owner_mode) needs no force */
	lu.holder = 2;
	lu.reg[2] = b.p.key;
	CHECK(pr_owner_op(&a2.p, BE_OWNER_TAKE, &msg) == 0 && lu.holder == 3,
	      "owner_mode: re-asserted on the new nexus without force");

	/* the device cannot be asked: the query says "try later" */
	lu.fail_errno = EIO;
	CHECK(pr_owner_op(&a2.p, BE_OWNER_QUERY, &msg) == -EAGAIN,
	      "query while unreachable: -EAGAIN");
	CHECK(pr_owner_op(&a2.p, BE_OWNER_TAKE, &msg) == -EIO,
	      "take while unreachable: the error");
	lu.fail_errno = 0;

	struct node off;
	node_init(&off, 4, 0);
	CHECK(pr_owner_op(&off.p, BE_OWNER_TAKE, &msg) == -EOPNOTSUPP,
	      "no key: not in scsi-pr mode");
}

static void test_identity(void)
{
	struct node a, b;
	char id1[32] = "", id2[32] = "";
	const char *msg = NULL;

	lu_reset();
	node_init(&a, 1, 1);
	node_init(&b, 2, 2);
	CHECK(pr_owner_id(&a.p, id1, sizeof(id1), &msg) == 0 &&
	      strlen(id1) == 16, "identity: 16 hex digits");
	CHECK(lu.last_cdb[0] == 0x12 && lu.last_cdb[1] == 1 &&
	      lu.last_cdb[2] == 0x83, "INQUIRY EVPD 83h");
	CHECK(pr_owner_id(&b.p, id2, sizeof(id2), &msg) == 0 &&
	      !strcmp(id1, id2), "the same on every node");
}

int main(void)
{
	test_wire();
	test_sgio_transport();
	test_ownership();
	test_identity();
	return CHECK_SUMMARY("test_pr_owner");
}
