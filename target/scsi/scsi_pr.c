/* scsi_pr.c - reservation state, conflict checks, PERSISTENT RESERVE IN and
 * SPC-2 RESERVE / RELEASE.  PERSISTENT RESERVE OUT is in scsi_pr_out.c, the
 * APTPL state file in scsi_pr_store.c.
 *
 * Every command on a LUN asks scsi_pr_conflict() first; while nothing is
 * reserved that is one atomic load.  Media commands that waited in the
 * hang engine are asked again when they are finally dispatched
 * (hang_set_recheck, DESIGN.md "Reservations are checked when a queued
 * command is finally dispatched"). */
#define SCSI_PR_INTERNAL
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_internal.h"
#include "scsi_pr.h"
#include "target.h"
#include "util.h"

/* ---- which commands a reservation blocks ----
 * SPC-4 5.13.1 Table 62 and SBC-3 4.18.1 Table 13 classify each command
 * for the non-holders of a reservation; SPC-2 5.5.1 lists the few that an
 * SPC-2 RESERVE of another I_T nexus lets through.  A command not listed
 * here conflicts with every type (the safe default for new commands). */
#define PRC_ALLOW	0x01	/* never conflicts with a persistent one */
#define PRC_READ	0x02	/* conflicts with exclusive access types only */
#define PRC_SPC2_OK	0x04	/* allowed despite another's SPC-2 RESERVE */
#define PRC_ANY_SA	0xff

#define OP_TEST_UNIT_READY	0x00
#define OP_REQUEST_SENSE	0x03
#define OP_READ_6		0x08
#define OP_INQUIRY		0x12
#define OP_PREVENT_ALLOW	0x1e
#define OP_READ_CAPACITY_10	0x25
#define OP_READ_10		0x28
#define OP_VERIFY_10		0x2f
#define OP_PRE_FETCH_10		0x34
#define OP_READ_DEFECT_DATA_10	0x37
#define OP_LOG_SENSE		0x4d
#define OP_READ_16		0x88
#define OP_VERIFY_16		0x8f
#define OP_PRE_FETCH_16		0x90
#define OP_SERVICE_ACTION_IN_16	0x9e
#define OP_REPORT_LUNS		0xa0
#define OP_MAINTENANCE_IN	0xa3
#define OP_READ_12		0xa8
#define OP_VERIFY_12		0xaf
#define OP_READ_DEFECT_DATA_12	0xb7
#define SAI_READ_CAPACITY_16	0x10
#define SAI_GET_LBA_STATUS	0x12
#define SAI_REPORT_REFERRALS	0x13
#define PREVENT_MASK		0x03	/* PREVENT ALLOW byte 4 */

static const struct {
	uint8_t opcode, sa, cls;
} pr_classes[] = {
	{ OP_TEST_UNIT_READY, PRC_ANY_SA, PRC_ALLOW },
	{ OP_REQUEST_SENSE, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	{ OP_READ_6, PRC_ANY_SA, PRC_READ },
	{ OP_INQUIRY, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	/* the handlers apply SPC-3 5.6.3 (CRH) themselves */
	{ SCSI_OP_RESERVE_6, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	{ SCSI_OP_RELEASE_6, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	{ OP_READ_CAPACITY_10, PRC_ANY_SA, PRC_ALLOW },
	{ OP_READ_10, PRC_ANY_SA, PRC_READ },
	{ OP_VERIFY_10, PRC_ANY_SA, PRC_READ },
	{ OP_PRE_FETCH_10, PRC_ANY_SA, PRC_READ },
	{ OP_READ_DEFECT_DATA_10, PRC_ANY_SA, PRC_READ },
	{ OP_LOG_SENSE, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	{ SCSI_OP_RESERVE_10, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	{ SCSI_OP_RELEASE_10, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	/* PERSISTENT RESERVE OUT checks keys itself (SPC-4 5.13.1) */
	{ SCSI_OP_PERSISTENT_RESERVE_IN, PRC_ANY_SA, PRC_ALLOW },
	{ SCSI_OP_PERSISTENT_RESERVE_OUT, PRC_ANY_SA, PRC_ALLOW },
	{ OP_READ_16, PRC_ANY_SA, PRC_READ },
	{ OP_VERIFY_16, PRC_ANY_SA, PRC_READ },
	{ OP_PRE_FETCH_16, PRC_ANY_SA, PRC_READ },
	{ OP_SERVICE_ACTION_IN_16, SAI_READ_CAPACITY_16, PRC_ALLOW },
	{ OP_SERVICE_ACTION_IN_16, SAI_GET_LBA_STATUS, PRC_READ },
	{ OP_SERVICE_ACTION_IN_16, SAI_REPORT_REFERRALS, PRC_ALLOW },
	{ OP_REPORT_LUNS, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	/* REPORT SUPPORTED OPERATION CODES / TMFs / TARGET PORT GROUPS... */
	{ OP_MAINTENANCE_IN, PRC_ANY_SA, PRC_ALLOW | PRC_SPC2_OK },
	{ OP_READ_12, PRC_ANY_SA, PRC_READ },
	{ OP_VERIFY_12, PRC_ANY_SA, PRC_READ },
	{ OP_READ_DEFECT_DATA_12, PRC_ANY_SA, PRC_READ },
};

static uint8_t pr_class(const uint8_t *cdb)
{
	/* PREVENT ALLOW MEDIUM REMOVAL with PREVENT 0 is allowed by both
	 * SPC-2 and SBC-3; preventing removal conflicts. */
	if (cdb[0] == OP_PREVENT_ALLOW && !(cdb[4] & PREVENT_MASK))
		return PRC_ALLOW | PRC_SPC2_OK;
	for (unsigned i = 0; i < ARRAY_SIZE(pr_classes); i++)
		if (pr_classes[i].opcode == cdb[0] &&
		    (pr_classes[i].sa == PRC_ANY_SA ||
		     pr_classes[i].sa == (cdb[1] & 0x1f)))
			return pr_classes[i].cls;
	return 0;
}

/* ---- state ---- */

static int pr_recheck(struct media_io *m);

struct scsi_pr *scsi_pr_state(struct scsi_lun *lun)
{
	struct scsi_pr **slot = scsi_lun_pr_slot(lun);
	struct scsi_pr *pr, *expected = NULL;

	if (!slot)
		return NULL;
	pr = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	if (pr)
		return pr;
	pr = calloc(1, sizeof(*pr));
	if (!pr)
		return NULL;
	pthread_mutex_init(&pr->lock, NULL);
	pr->lun = lun;
	pr->path = scsi_pr_store_path(lun, &pr->meta);
	if (!__atomic_compare_exchange_n(slot, &expected, pr, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		scsi_pr_free(pr);
		return expected;
	}
	/* Published first, so that two reactors never both load the file;
	 * commands that find the state before the load ends wait on the
	 * lock (the load holds it). */
	pthread_mutex_lock(&pr->lock);
	if (pr->path)
		scsi_pr_store_load(pr);
	scsi_pr_update_active(pr);
	pthread_mutex_unlock(&pr->lock);
	hang_set_recheck(lun, pr_recheck);
	return pr;
}

void scsi_pr_free(struct scsi_pr *pr)
{
	if (!pr)
		return;
	pthread_mutex_destroy(&pr->lock);
	free(pr->regs);
	free(pr->path);
	free(pr);
}

int scsi_pr_reserve_slot(struct scsi_pr *pr)
{
	struct scsi_pr_reg *n;
	unsigned cap;

	if (pr->nregs < pr->cap)
		return 0;
	if (pr->cap >= PR_MAX_REGISTRATIONS)
		return -ENOSPC;
	cap = pr->cap ? pr->cap * 2 : 8;
	n = realloc(pr->regs, sizeof(*n) * cap);
	if (!n)
		return -ENOMEM;
	pr->regs = n;
	pr->cap = cap;
	return 0;
}

void scsi_pr_update_active(struct scsi_pr *pr)
{
	atomic_store(&pr->active, pr->reserved || pr->spc2_reserved);
}

/* The registration of nexus n, or -1.  Remembers n's session as the one
 * to tell about this registration (unit attentions). */
int scsi_pr_find(struct scsi_pr *pr, const struct scsi_nexus *n)
{
	if (!n)
		return -1;
	for (unsigned i = 0; i < pr->nregs; i++) {
		struct scsi_pr_reg *r = &pr->regs[i];

		if (memcmp(r->isid, n->isid, sizeof(r->isid)) != 0 ||
		    strcmp(r->iname, n->initiator_name) != 0 ||
		    (!r->all_tg_pt && r->rel_port_id != n->rel_port_id))
			continue;
		r->nexus_id = n->id;
		return (int)i;
	}
	return -1;
}

bool scsi_pr_is_holder(const struct scsi_pr *pr, int idx)
{
	if (!pr->reserved || idx < 0)
		return false;
	return scsi_pr_type_all_regs(pr->type) || pr->regs[idx].holder;
}

void scsi_pr_ua(struct scsi_pr *pr, uint16_t asc_ascq, int except_idx,
		uint64_t except_nexus)
{
	for (unsigned i = 0; i < pr->nregs; i++) {
		uint64_t id = pr->regs[i].nexus_id;

		if ((int)i != except_idx && id && id != except_nexus)
			scsi_ua_raise_nexus(pr->lun, asc_ascq, id);
	}
}

/* ---- conflicts ---- */

static bool pr_conflicts(struct scsi_pr *pr, const uint8_t *cdb,
			 const struct scsi_nexus *n)
{
	uint8_t cls = pr_class(cdb);
	uint64_t id = n ? n->id : 0;
	bool conflict = false;

	pthread_mutex_lock(&pr->lock);
	if (pr->spc2_reserved && pr->spc2_nexus != id) {
		conflict = !(cls & PRC_SPC2_OK);
	} else if (pr->reserved && !(cls & PRC_ALLOW)) {
		int idx = scsi_pr_find(pr, n);
		bool we = pr->type == PR_TYPE_WE ||
			  pr->type == PR_TYPE_WE_RO ||
			  pr->type == PR_TYPE_WE_AR;

		if (scsi_pr_is_holder(pr, idx))
			conflict = false;
		else if (idx >= 0 && scsi_pr_type_regs_access(pr->type))
			conflict = false;
		else
			conflict = !((cls & PRC_READ) && we);
	}
	pthread_mutex_unlock(&pr->lock);
	return conflict;
}

bool scsi_pr_conflict(struct scsi_cmd *cmd)
{
	struct scsi_pr *pr = scsi_pr_state(cmd->lun);

	if (!pr || !atomic_load_explicit(&pr->active, memory_order_acquire))
		return false;
	if (!pr_conflicts(pr, cmd->cdb, cmd->nexus))
		return false;
	cmd->status = SAM_STAT_RESERVATION_CONFLICT;
	cmd->sense_len = 0;
	cmd->in_len = 0;
	return true;
}

bool scsi_pr_bad_service_action(struct scsi_cmd *cmd)
{
	if (cmd->cdb[0] != SCSI_OP_PERSISTENT_RESERVE_IN &&
	    cmd->cdb[0] != SCSI_OP_PERSISTENT_RESERVE_OUT)
		return false;
	scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 4);
	return true;
}

/* Runs on the LUN's home reactor for a command that waited. */
static int pr_recheck(struct media_io *m)
{
	struct scsi_cmd *cmd = m->owner;
	struct scsi_pr **slot;
	struct scsi_pr *pr;

	if (!cmd || !cmd->lun)
		return 0;
	slot = scsi_lun_pr_slot(cmd->lun);
	pr = slot ? __atomic_load_n(slot, __ATOMIC_ACQUIRE) : NULL;
	if (!pr || !atomic_load_explicit(&pr->active, memory_order_acquire))
		return 0;
	return pr_conflicts(pr, cmd->cdb, cmd->nexus) ? SCSI_PR_ERR_CONFLICT
						      : 0;
}

void scsi_pr_reset(struct scsi_lun *lun)
{
	struct scsi_pr **slot = scsi_lun_pr_slot(lun);
	struct scsi_pr *pr = slot ? __atomic_load_n(slot, __ATOMIC_ACQUIRE)
				  : NULL;

	if (!pr)
		return;
	pthread_mutex_lock(&pr->lock);
	pr->spc2_reserved = false;
	scsi_pr_update_active(pr);
	pthread_mutex_unlock(&pr->lock);
}

void scsi_nexus_lost(struct target *t, const struct scsi_nexus *n)
{
	/* SPC-2 5.5.1: a RESERVE ends with its I_T nexus (logout, dropped
	 * connection, reinstatement).  Registrations outlive sessions. */
	if (!t || !n)
		return;
	for (unsigned i = 0; i < TGT_MAX_LUNS; i++) {
		struct scsi_lun *lun;
		struct scsi_pr **slot;
		struct scsi_pr *pr;

		pthread_mutex_lock(&t->lock);
		lun = t->luns[i];
		if (lun)
			scsi_lun_get(lun);
		pthread_mutex_unlock(&t->lock);
		if (!lun)
			continue;
		slot = lun->scsi ? scsi_lun_pr_slot(lun) : NULL;
		pr = slot ? __atomic_load_n(slot, __ATOMIC_ACQUIRE) : NULL;
		if (pr) {
			pthread_mutex_lock(&pr->lock);
			if (pr->spc2_reserved && pr->spc2_nexus == n->id) {
				pr->spc2_reserved = false;
				scsi_pr_update_active(pr);
			}
			for (unsigned r = 0; r < pr->nregs; r++)
				if (pr->regs[r].nexus_id == n->id)
					pr->regs[r].nexus_id = 0;
			pthread_mutex_unlock(&pr->lock);
		}
		/* SPC-4 6.13: a PREVENT MEDIUM REMOVAL ends with its nexus */
		if (lun->scsi)
			scsi_medium_nexus_lost(lun, n->id);
		scsi_lun_put(lun);
	}
}

/* ---- TransportID (SPC-4 7.6.4.6): iSCSI, initiator port name ---- */

#define TPID_PROTO_ISCSI	0x05
#define TPID_FMT_MASK		0xc0
#define TPID_FMT_NAME		0x00	/* iSCSI name only (initiator device) */
#define TPID_FMT_PORT		0x40	/* name ",i,0x" ISID: initiator port */
#define TPID_PROTO_MASK		0x0f
#define TPID_HDR		4
#define TPID_ISID_SEP		",i,0x"
#define TPID_MIN_LEN		24	/* SPC-4: additional length >= 20 */

uint32_t scsi_pr_transport_id(const struct scsi_pr_reg *r, uint8_t *buf)
{
	char name[sizeof(r->iname) + 32];
	int n = snprintf(name, sizeof(name),
			 "%s" TPID_ISID_SEP "%02x%02x%02x%02x%02x%02x",
			 r->iname, r->isid[0], r->isid[1], r->isid[2],
			 r->isid[3], r->isid[4], r->isid[5]);
	uint32_t len = ((uint32_t)n + 1 + 3) & ~3u;	/* NUL, pad to 4 */

	if (len < TPID_MIN_LEN - TPID_HDR)
		len = TPID_MIN_LEN - TPID_HDR;
	memset(buf, 0, TPID_HDR + len);
	buf[0] = TPID_FMT_PORT | TPID_PROTO_ISCSI;
	put_be16(buf + 2, (uint16_t)len);
	memcpy(buf + TPID_HDR, name, (size_t)n);
	return TPID_HDR + len;
}

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Only format 01b can name one I_T nexus (REGISTER AND MOVE); format 00b
 * names every port of an initiator and is refused (-EINVAL). */
int scsi_pr_transport_id_parse(const uint8_t *p, uint32_t len,
			       struct scsi_pr_reg *out, uint32_t *used)
{
	uint32_t alen, n;
	const char *s, *sep;

	if (len < TPID_HDR)
		return -EINVAL;
	alen = get_be16(p + 2);
	if ((p[0] & TPID_PROTO_MASK) != TPID_PROTO_ISCSI ||
	    (p[0] & TPID_FMT_MASK) != TPID_FMT_PORT ||
	    TPID_HDR + alen > len || alen < 20 || alen % 4)
		return -EINVAL;
	s = (const char *)p + TPID_HDR;
	n = (uint32_t)strnlen(s, alen);
	if (n == alen)
		return -EINVAL;		/* not NUL terminated */
	sep = strstr(s, TPID_ISID_SEP);
	if (!sep && !(sep = strstr(s, ",I,0X")) && !(sep = strstr(s, ",i,0X")))
		return -EINVAL;
	if ((size_t)(sep - s) >= sizeof(out->iname) ||
	    strlen(sep + strlen(TPID_ISID_SEP)) != 12)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	memcpy(out->iname, s, (size_t)(sep - s));
	for (int i = 0; i < 6; i++) {
		int hi = hex_nibble(sep[5 + 2 * i]);
		int lo = hex_nibble(sep[6 + 2 * i]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out->isid[i] = (uint8_t)(hi << 4 | lo);
	}
	*used = TPID_HDR + alen;
	return 0;
}

/* ---- PERSISTENT RESERVE IN (SPC-4 6.15) ---- */

#define PRIN_CDB_ALLOC		7
#define PRIN_HDR		8
#define PRIN_RESV_DESC		16
#define PRIN_CAPS_LEN		8
#define PRIN_FULL_DESC		24
#define CAPS_CRH		0x10	/* byte 2: SPC-3 5.6.3 RESERVE rules */
#define CAPS_SIP_C		0x08
#define CAPS_ATP_C		0x04
#define CAPS_PTPL_C		0x01
#define CAPS_TMV		0x80	/* byte 3: type mask valid */
#define CAPS_PTPL_A		0x01
#define CAPS_MASK_WE_AR		0x80	/* byte 4 */
#define CAPS_MASK_EA_RO		0x40
#define CAPS_MASK_WE_RO		0x20
#define CAPS_MASK_EA		0x08
#define CAPS_MASK_WE		0x02
#define CAPS_MASK_EA_AR		0x01	/* byte 5 */
#define FULL_ALL_TG_PT		0x02
#define FULL_R_HOLDER		0x01
#define TPID_MAX		(TPID_HDR + 224 + 32)

static uint8_t pr_scope_type(const struct scsi_pr *pr)
{
	return (uint8_t)(pr->scope << 4 | pr->type);
}

static uint32_t pr_in_build(struct scsi_pr *pr, uint8_t sa, uint8_t *b)
{
	uint32_t off = PRIN_HDR;

	put_be32(b, pr->generation);
	switch (sa) {
	case PR_IN_READ_KEYS:
		for (unsigned i = 0; i < pr->nregs; i++, off += 8)
			put_be64(b + off, pr->regs[i].key);
		break;
	case PR_IN_READ_RESERVATION:
		if (!pr->reserved)
			break;
		for (unsigned i = 0; i < pr->nregs; i++) {
			if (!pr->regs[i].holder)
				continue;
			put_be64(b + off, pr->regs[i].key);
			break;
		}
		/* all registrants: the key is zero (SPC-4 6.15.3.3) */
		if (scsi_pr_type_all_regs(pr->type))
			put_be64(b + off, 0);
		b[off + 13] = pr_scope_type(pr);
		off += PRIN_RESV_DESC;
		break;
	case PR_IN_READ_FULL_STATUS:
		for (unsigned i = 0; i < pr->nregs; i++) {
			const struct scsi_pr_reg *r = &pr->regs[i];
			uint32_t tl;

			put_be64(b + off, r->key);
			if (r->all_tg_pt)
				b[off + 12] |= FULL_ALL_TG_PT;
			if (scsi_pr_is_holder(pr, (int)i)) {
				b[off + 12] |= FULL_R_HOLDER;
				b[off + 13] = pr_scope_type(pr);
			}
			put_be16(b + off + 18, r->rel_port_id);
			tl = scsi_pr_transport_id(r, b + off + PRIN_FULL_DESC);
			put_be32(b + off + 20, tl);
			off += PRIN_FULL_DESC + tl;
		}
		break;
	}
	put_be32(b + 4, off - PRIN_HDR);
	return off;
}

static enum scsi_exec_result pr_report_caps(struct scsi_cmd *cmd,
					    struct scsi_pr *pr, uint32_t alloc)
{
	uint8_t b[PRIN_CAPS_LEN] = { 0 };

	put_be16(b, PRIN_CAPS_LEN);
	/* SPEC_I_PT is not offered (SIP_C 0); holdfast has one target port
	 * per target, so ALL_TG_PT is trivially honoured. */
	b[2] = CAPS_CRH | CAPS_ATP_C | (pr->path ? CAPS_PTPL_C : 0);
	pthread_mutex_lock(&pr->lock);
	b[3] = CAPS_TMV | (pr->aptpl ? CAPS_PTPL_A : 0);
	pthread_mutex_unlock(&pr->lock);
	b[4] = CAPS_MASK_WE_AR | CAPS_MASK_EA_RO | CAPS_MASK_WE_RO |
	       CAPS_MASK_EA | CAPS_MASK_WE;
	b[5] = CAPS_MASK_EA_AR;
	return scsi_data_in(cmd, b, sizeof(b), alloc);
}

enum scsi_exec_result spc_pr_in(struct scsi_cmd *cmd)
{
	struct scsi_pr *pr = scsi_pr_state(cmd->lun);
	uint8_t sa = cmd->cdb[1] & 0x1f;
	uint32_t alloc = get_be16(cmd->cdb + PRIN_CDB_ALLOC);
	enum scsi_exec_result res;
	uint8_t *b;
	uint32_t len;

	if (!pr) {
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	if (sa == PR_IN_REPORT_CAPABILITIES)
		return pr_report_caps(cmd, pr, alloc);
	if (sa > PR_IN_READ_FULL_STATUS) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 4);
		return SCSI_EXEC_DONE;
	}
	pthread_mutex_lock(&pr->lock);
	scsi_pr_find(pr, cmd->nexus);	/* note the caller's session */
	b = calloc(1, PRIN_HDR + PRIN_RESV_DESC +
		      (size_t)pr->nregs * (PRIN_FULL_DESC + TPID_MAX));
	len = b ? pr_in_build(pr, sa, b) : 0;
	pthread_mutex_unlock(&pr->lock);
	if (!b) {
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	res = scsi_data_in(cmd, b, len, alloc);
	free(b);
	return res;
}

/* ---- SPC-2 RESERVE / RELEASE (6) and (10) ---- */

#define RESERVE10_3RDPTY	0x10
#define RESERVE10_LONGID	0x02

static enum scsi_exec_result spc2_reserve_release(struct scsi_cmd *cmd,
						  bool reserve)
{
	struct scsi_pr *pr = scsi_pr_state(cmd->lun);
	uint64_t id = cmd->nexus ? cmd->nexus->id : 0;
	bool ten = cmd->cdb[0] == SCSI_OP_RESERVE_10 ||
		   cmd->cdb[0] == SCSI_OP_RELEASE_10;

	if (!pr) {
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	/* Third-party reservations (obsolete in SPC-3) are not offered. */
	if (ten && (cmd->cdb[1] & (RESERVE10_3RDPTY | RESERVE10_LONGID))) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1,
				 cmd->cdb[1] & RESERVE10_3RDPTY ? 4 : 1);
		return SCSI_EXEC_DONE;
	}
	pthread_mutex_lock(&pr->lock);
	if (pr->nregs) {
		/* SPC-3 5.6.3 (CRH = 1): while any I_T nexus is registered,
		 * RESERVE and RELEASE from every nexus conflict. */
		cmd->status = SAM_STAT_RESERVATION_CONFLICT;
	} else if (reserve) {
		if (pr->spc2_reserved && pr->spc2_nexus != id) {
			cmd->status = SAM_STAT_RESERVATION_CONFLICT;
		} else {
			pr->spc2_reserved = true;
			pr->spc2_nexus = id;
		}
	} else if (pr->spc2_reserved && pr->spc2_nexus == id) {
		pr->spc2_reserved = false;
	}
	/* RELEASE by another nexus, or with nothing reserved: GOOD, no
	 * effect (SPC-2 7.17) */
	scsi_pr_update_active(pr);
	pthread_mutex_unlock(&pr->lock);
	return SCSI_EXEC_DONE;
}

enum scsi_exec_result spc_reserve(struct scsi_cmd *cmd)
{
	return spc2_reserve_release(cmd, true);
}

enum scsi_exec_result spc_release(struct scsi_cmd *cmd)
{
	return spc2_reserve_release(cmd, false);
}
