/* pr_owner.c - ownership of a shared SCSI logical unit by SPC-3 persistent
 * reservation (pr_owner.h; README "Two nodes in front of shared storage").
 *
 * Each node registers its own reservation key on the logical unit; the
 * active node holds an EXCLUSIVE ACCESS reservation, so the device itself
 * refuses every read and write of any other I_T nexus with RESERVATION
 * CONFLICT.  A forced takeover preempts the holder's key: the device
 * removes the old node's registration and refuses its later commands,
 * which fences it at the storage, whatever state the old node is in.
 *
 * Taking it (SPC-3 5.6):
 *   REGISTER AND IGNORE EXISTING KEY (our key, whatever this I_T nexus
 *   had registered), READ RESERVATION, then
 *   - none held: RESERVE;
 *   - held under our key: RESERVE (a no-op when this nexus holds it).  If
 *     that conflicts, an earlier session of ours holds it (a reconnect
 *     whose SAN treats the new session as a new nexus, or a restart):
 *     this process took it before (owner_mode) or the operator said
 *     force=1 -> PREEMPT our own key, which moves it to this nexus;
 *   - held under another key: refused, or with force PREEMPT AND ABORT
 *     that key (PREEMPT where the device has no PREEMPT AND ABORT);
 *   and READ RESERVATION again to see that our key holds it. */
#include <errno.h>
#include <inttypes.h>
#include <scsi/sg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "pr_owner.h"
#include "util.h"

#define PR_UA_TRIES		5	/* unit attentions cleared per command */
#define PR_SGIO_TIMEOUT_MS	30000
#define PR_SENSE_LEN		64
#define PR_VPD_LEN		252
#define SCSI_OP_INQUIRY		0x12
#define SCSI_OP_SYNC_CACHE10	0x35
#define VPD_UNIT_SERIAL		0x80
#define VPD_DEVICE_ID		0x83

/* ---- wire format ---- */

void pr_out_cdb(struct pr_xfer *x, uint8_t sa, uint8_t type, uint8_t *param)
{
	memset(x, 0, sizeof(*x));
	x->cdb[0] = PR_OP_OUT;
	x->cdb[1] = sa & 0x1f;
	x->cdb[2] = type & 0x0f;		/* scope 0: logical unit */
	put_be32(x->cdb + 5, PR_OUT_PARAM_LEN);	/* PARAMETER LIST LENGTH */
	x->cdb_len = 10;
	x->dir = PR_DIR_OUT;
	x->buf = param;
	x->len = PR_OUT_PARAM_LEN;
}

void pr_out_param(uint8_t *param, uint64_t key, uint64_t sa_key)
{
	/* SPC-3 6.12.3: RESERVATION KEY, SERVICE ACTION RESERVATION KEY,
	 * obsolete, no SPEC_I_PT / ALL_TG_PT / APTPL */
	memset(param, 0, PR_OUT_PARAM_LEN);
	put_be64(param, key);
	put_be64(param + 8, sa_key);
}

void pr_in_cdb(struct pr_xfer *x, uint8_t sa, uint8_t *buf, uint32_t alloc)
{
	memset(x, 0, sizeof(*x));
	x->cdb[0] = PR_OP_IN;
	x->cdb[1] = sa & 0x1f;
	put_be16(x->cdb + 7, (uint16_t)alloc);	/* ALLOCATION LENGTH */
	x->cdb_len = 10;
	x->dir = PR_DIR_IN;
	x->buf = buf;
	x->len = alloc;
}

int pr_parse_reservation(const uint8_t *buf, uint32_t len, uint64_t *key,
			 uint8_t *type)
{
	uint32_t add;

	/* SPC-3 6.11.3: PRGENERATION, ADDITIONAL LENGTH (0 or 16), then
	 * RESERVATION KEY, obsolete, SCOPE/TYPE */
	if (len < 8)
		return -EPROTO;
	add = get_be32(buf + 4);
	if (add == 0)
		return 0;
	if (add < 16 || len < 24)
		return -EPROTO;
	*key = get_be64(buf + 8);
	*type = buf[21] & 0x0f;
	return 1;
}

bool pr_parse_sense(const uint8_t *buf, uint32_t len, uint8_t *key,
		    uint16_t *asc)
{
	uint8_t code;

	if (len < 2)
		return false;
	code = buf[0] & 0x7f;
	if (code == 0x70 || code == 0x71) {	/* fixed, SPC-3 4.5.3 */
		if (len < 3)
			return false;
		*key = buf[2] & 0x0f;
		*asc = len >= 14 ? (uint16_t)(buf[12] << 8 | buf[13]) : 0;
		return true;
	}
	if (code == 0x72 || code == 0x73) {	/* descriptor, SPC-3 4.5.2 */
		if (len < 4)
			return false;
		*key = buf[1] & 0x0f;
		*asc = (uint16_t)(buf[2] << 8 | buf[3]);
		return true;
	}
	return false;
}

/* ---- the logic ---- */

/* Run x; unit attentions (a new nexus, "reservations preempted") are
 * cleared by sending it again. */
static int pr_run(struct pr_owner *p, struct pr_xfer *x, const char **errmsg)
{
	int err = 0;

	for (int i = 0; i < PR_UA_TRIES; i++) {
		x->status = 0;
		x->sense_key = 0;
		x->asc = 0;
		x->in_len = 0;
		err = p->exec(p->ctx, x);
		if (err) {
			*errmsg = "the store cannot be reached to ask for its "
				  "reservation";
			return err;
		}
		if (x->status != PR_STATUS_CHECK_CONDITION ||
		    x->sense_key != PR_SENSE_UNIT_ATTENTION)
			break;
	}
	return 0;
}

static int pr_out(struct pr_owner *p, uint8_t sa, uint64_t key,
		  uint64_t sa_key, uint8_t *status, uint8_t *sense_key,
		  const char **errmsg)
{
	uint8_t param[PR_OUT_PARAM_LEN];
	struct pr_xfer x;
	int err;

	pr_out_param(param, key, sa_key);
	pr_out_cdb(&x, sa, PR_TYPE_EXCLUSIVE_ACCESS, param);
	err = pr_run(p, &x, errmsg);
	*status = x.status;
	*sense_key = x.sense_key;
	return err;
}

/* 1 a reservation exists (*holder), 0 none, or -errno. */
static int pr_read_reservation(struct pr_owner *p, uint64_t *holder,
			       const char **errmsg)
{
	uint8_t buf[PR_IN_ALLOC], type = 0;
	struct pr_xfer x;
	int err;

	memset(buf, 0, sizeof(buf));
	pr_in_cdb(&x, PR_IN_READ_RESERVATION, buf, sizeof(buf));
	err = pr_run(p, &x, errmsg);
	if (err)
		return err;
	if (x.status != PR_STATUS_GOOD) {
		*errmsg = "the store refused PERSISTENT RESERVE IN (READ "
			  "RESERVATION): it has no persistent reservations";
		return -EOPNOTSUPP;
	}
	err = pr_parse_reservation(buf, x.in_len ? x.in_len : sizeof(buf),
				   holder, &type);
	if (err < 0)
		*errmsg = "the store's READ RESERVATION answer is malformed";
	return err;
}

static int pr_register(struct pr_owner *p, const char **errmsg)
{
	uint8_t st, sk;
	int err = pr_out(p, PR_OUT_REGISTER_IGNORE, 0, p->key, &st, &sk,
			 errmsg);

	if (err)
		return err;
	if (st != PR_STATUS_GOOD) {
		*errmsg = "the store refused to register this node's "
			  "reservation key (PERSISTENT RESERVE OUT REGISTER "
			  "AND IGNORE EXISTING KEY)";
		return st == PR_STATUS_RESERVATION_CONFLICT ? -EBUSY : -EIO;
	}
	return 0;
}

/* RESERVE: 0, -EBUSY on a conflict, or -errno. */
static int pr_reserve(struct pr_owner *p, const char **errmsg)
{
	uint8_t st, sk;
	int err = pr_out(p, PR_OUT_RESERVE, p->key, 0, &st, &sk, errmsg);

	if (err)
		return err;
	if (st == PR_STATUS_GOOD)
		return 0;
	if (st == PR_STATUS_RESERVATION_CONFLICT)
		return -EBUSY;
	*errmsg = "the store refused PERSISTENT RESERVE OUT (RESERVE)";
	return -EIO;
}

/* PREEMPT AND ABORT victim's key (its commands queued at the device are
 * aborted too), PREEMPT where the device lacks it. */
static int pr_preempt(struct pr_owner *p, uint64_t victim,
		      const char **errmsg)
{
	uint8_t st, sk;
	int err = pr_out(p, PR_OUT_PREEMPT_AND_ABORT, p->key, victim, &st,
			 &sk, errmsg);

	if (!err && st == PR_STATUS_CHECK_CONDITION &&
	    sk == PR_SENSE_ILLEGAL_REQUEST)
		err = pr_out(p, PR_OUT_PREEMPT, p->key, victim, &st, &sk,
			     errmsg);
	if (err)
		return err;
	if (st == PR_STATUS_GOOD)
		return 0;
	*errmsg = st == PR_STATUS_RESERVATION_CONFLICT
			  ? "the store refused the PREEMPT (the other key is "
			    "not registered any more, or this one was removed)"
			  : "the store refused PERSISTENT RESERVE OUT (PREEMPT)";
	return st == PR_STATUS_RESERVATION_CONFLICT ? -EBUSY : -EIO;
}

static int pr_take(struct pr_owner *p, bool force, const char **errmsg)
{
	uint64_t holder = 0;
	int err;

	err = pr_register(p, errmsg);
	if (err)
		return err;
	err = pr_read_reservation(p, &holder, errmsg);
	if (err < 0)
		return err;
	if (err == 0) {
		err = pr_reserve(p, errmsg);
		if (err == -EBUSY)
			*errmsg = "another node reserved the store first";
		if (err)
			return err;
	} else if (holder == p->key) {
		err = pr_reserve(p, errmsg);
		if (err == -EBUSY && !force && !p->owner_mode) {
			*errmsg = "the store is reserved under this node's own "
				  "key by an earlier session (a restart?); "
				  "add force=1 to take it back";
			return -EBUSY;
		}
		if (err == -EBUSY)
			err = pr_preempt(p, p->key, errmsg);
		if (err)
			return err;
	} else {
		if (!force) {
			*errmsg = "the other node holds the store's persistent "
				  "reservation (it is active; make it standby "
				  "first, or add force=1 if it is dead)";
			return -EBUSY;
		}
		err = pr_preempt(p, holder, errmsg);
		if (err)
			return err;
		p->preempted = holder;
		log_warn("reservation key 0x%" PRIx64 " preempted by 0x%" PRIx64
			 ": the other node's commands now get RESERVATION "
			 "CONFLICT", holder, p->key);
	}
	err = pr_read_reservation(p, &holder, errmsg);
	if (err < 0)
		return err;
	if (err == 0 || holder != p->key) {
		*errmsg = "another node took the reservation at the same time";
		return -EBUSY;
	}
	p->owner_mode = true;
	return 0;
}

static int pr_release(struct pr_owner *p, const char **errmsg)
{
	struct pr_xfer x;
	uint8_t st, sk;
	int err;

	p->owner_mode = false;
	/* what the device may cache reaches the medium before the other
	 * node can read it */
	memset(&x, 0, sizeof(x));
	x.cdb[0] = SCSI_OP_SYNC_CACHE10;
	x.cdb_len = 10;
	x.dir = PR_DIR_NONE;
	err = pr_run(p, &x, errmsg);
	if (err)
		return err;
	if (x.status != PR_STATUS_GOOD &&
	    !(x.status == PR_STATUS_CHECK_CONDITION &&
	      x.sense_key == PR_SENSE_ILLEGAL_REQUEST))
		log_warn("reservation key 0x%" PRIx64 ": SYNCHRONIZE CACHE "
			 "before the release failed (status 0x%02x)", p->key,
			 x.status);
	err = pr_out(p, PR_OUT_RELEASE, p->key, 0, &st, &sk, errmsg);
	if (err)
		return err;
	/* RELEASE by a nexus that is not the holder is GOOD and does
	 * nothing (SPC-3 5.6.10.2): a conflict means we are no registrant */
	if (st != PR_STATUS_GOOD) {
		*errmsg = "the store refused PERSISTENT RESERVE OUT (RELEASE)";
		return -EIO;
	}
	return 0;
}

static int pr_query(struct pr_owner *p, const char **errmsg)
{
	uint64_t holder = 0;
	int err = pr_read_reservation(p, &holder, errmsg);

	if (err < 0)
		return err == -EOPNOTSUPP ? err : -EAGAIN;
	if (err == 0)
		return BE_OWNER_NONE;
	if (holder != p->key)
		return BE_OWNER_OTHER;
	return p->owner_mode ? BE_OWNER_MINE : BE_OWNER_OTHER;
}

int pr_owner_op(struct pr_owner *p, enum be_owner_op op,
		const char **errmsg)
{
	if (!p->key) {
		*errmsg = "no reservation key (alua_lock = scsi-pr not set)";
		return -EOPNOTSUPP;
	}
	switch (op) {
	case BE_OWNER_TAKE:
		return pr_take(p, false, errmsg);
	case BE_OWNER_TAKE_FORCE:
		return pr_take(p, true, errmsg);
	case BE_OWNER_RELEASE:
		return pr_release(p, errmsg);
	case BE_OWNER_QUERY:
		return pr_query(p, errmsg);
	case BE_OWNER_ID:
		break;
	}
	*errmsg = "unknown ownership operation";
	return -EINVAL;
}

int pr_owner_id(struct pr_owner *p, char *buf, unsigned len,
		const char **errmsg)
{
	static const uint8_t pages[] = { VPD_UNIT_SERIAL, VPD_DEVICE_ID };
	uint64_t h = 0xcbf29ce484222325ull;	/* FNV-1a */
	uint8_t vpd[PR_VPD_LEN];
	bool any = false;

	for (size_t i = 0; i < sizeof(pages); i++) {
		struct pr_xfer x;
		int err;

		memset(&x, 0, sizeof(x));
		x.cdb[0] = SCSI_OP_INQUIRY;
		x.cdb[1] = 0x01;		/* EVPD */
		x.cdb[2] = pages[i];
		put_be16(x.cdb + 3, sizeof(vpd));
		x.cdb_len = 6;
		x.dir = PR_DIR_IN;
		x.buf = vpd;
		x.len = sizeof(vpd);
		err = pr_run(p, &x, errmsg);
		if (err)
			return err;
		if (x.status != PR_STATUS_GOOD || x.in_len < 4)
			continue;	/* VPD 80h is optional */
		uint32_t n = MIN((uint32_t)get_be16(vpd + 2) + 4, x.in_len);

		for (uint32_t j = 0; j < n; j++)
			h = (h ^ vpd[j]) * 0x100000001b3ull;
		any = true;
	}
	if (!any) {
		*errmsg = "the store answers no identity (INQUIRY VPD 80h/83h)";
		return -EIO;
	}
	snprintf(buf, len, "%016" PRIx64, h);
	return 0;
}

int pr_key_parse(const char *text, uint64_t *key)
{
	char *end;
	unsigned long long v;

	if (!text || !*text)
		return -EINVAL;
	errno = 0;
	v = strtoull(text, &end, 0);
	if (errno || *end || v == 0)
		return -EINVAL;
	*key = v;
	return 0;
}

/* ---- SG_IO (a local SCSI disk) ----
 *
 * Untested on real disks (README): the unit test drives it through a
 * fake ioctl. */

int pr_sgio_exec(void *ctx, struct pr_xfer *x)
{
	int fd = *(int *)ctx;
	uint8_t sense[PR_SENSE_LEN];
	sg_io_hdr_t h;

	memset(&h, 0, sizeof(h));
	memset(sense, 0, sizeof(sense));
	h.interface_id = 'S';
	h.cmdp = x->cdb;
	h.cmd_len = (unsigned char)x->cdb_len;
	h.dxferp = x->buf;
	h.dxfer_len = x->len;
	h.dxfer_direction = x->dir == PR_DIR_IN    ? SG_DXFER_FROM_DEV
			    : x->dir == PR_DIR_OUT ? SG_DXFER_TO_DEV
						   : SG_DXFER_NONE;
	if (x->dir == PR_DIR_NONE) {
		h.dxferp = NULL;
		h.dxfer_len = 0;
	}
	h.sbp = sense;
	h.mx_sb_len = sizeof(sense);
	h.timeout = PR_SGIO_TIMEOUT_MS;
	if (ioctl(fd, SG_IO, &h) < 0)
		return -errno;
	/* the command did not reach the device, or it did not answer */
	if (h.host_status || (h.driver_status & ~0x08 /* DRIVER_SENSE */))
		return -EIO;
	x->status = h.status;
	if (h.sb_len_wr && !pr_parse_sense(sense, h.sb_len_wr, &x->sense_key,
					   &x->asc))
		x->sense_key = 0;
	if (x->status == PR_STATUS_CHECK_CONDITION && !x->sense_key &&
	    !h.sb_len_wr)
		return -EIO;	/* CHECK CONDITION without sense */
	if (x->dir == PR_DIR_IN)
		x->in_len = h.resid >= 0 && (uint32_t)h.resid <= x->len
				    ? x->len - (uint32_t)h.resid : x->len;
	return 0;
}
