/* pr_owner.h - ownership of a shared SCSI logical unit by SPC-3 persistent
 * reservation (alua_lock = "scsi-pr", README "Two nodes in front of shared
 * storage").
 *
 * The logic (register, reserve, preempt, release, query) is the same for
 * every store that speaks SCSI; only the way one CDB reaches the logical
 * unit differs: the iscsi backend sends it on its session to the SAN, a
 * local SCSI disk gets it through the SG_IO ioctl (pr_sgio_exec).  Both
 * plug in as a pr_exec_fn.  Everything here is synchronous: it runs on the
 * management / ALUA threads (backend_ops.owner), never on a reactor. */
#ifndef HOLDFAST_PR_OWNER_H
#define HOLDFAST_PR_OWNER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"

/* SPC-3 6.11 / 6.12: PERSISTENT RESERVE IN / OUT */
#define PR_OP_IN			0x5e
#define PR_OP_OUT			0x5f
#define PR_IN_READ_KEYS			0x00
#define PR_IN_READ_RESERVATION		0x01
#define PR_OUT_REGISTER			0x00
#define PR_OUT_RESERVE			0x01
#define PR_OUT_RELEASE			0x02
#define PR_OUT_PREEMPT			0x04
#define PR_OUT_PREEMPT_AND_ABORT	0x05
#define PR_OUT_REGISTER_IGNORE		0x06
/* The reservation the active node holds: EXCLUSIVE ACCESS (README says
 * why), LU scope. */
#define PR_TYPE_EXCLUSIVE_ACCESS	0x3
#define PR_OUT_PARAM_LEN		24
#define PR_IN_ALLOC			1024

/* SAM status codes the logic looks at */
#define PR_STATUS_GOOD			0x00
#define PR_STATUS_CHECK_CONDITION	0x02
#define PR_STATUS_RESERVATION_CONFLICT	0x18

#define PR_SENSE_ILLEGAL_REQUEST	0x05
#define PR_SENSE_UNIT_ATTENTION		0x06

enum pr_dir { PR_DIR_NONE, PR_DIR_IN, PR_DIR_OUT };

/* One command for the logical unit.  The transport fills status and the
 * decoded sense (sense_key 0 without sense), and in_len for PR_DIR_IN. */
struct pr_xfer {
	uint8_t cdb[16];
	unsigned cdb_len;
	enum pr_dir dir;
	uint8_t *buf;
	uint32_t len;
	/* out */
	uint8_t status;
	uint8_t sense_key;
	uint16_t asc;		/* ASC << 8 | ASCQ */
	uint32_t in_len;	/* bytes the device returned (PR_DIR_IN) */
};

/* Run x on the logical unit.  0 with x->status set, or -errno when the
 * command did not reach it (no session, ioctl failed). */
typedef int (*pr_exec_fn)(void *ctx, struct pr_xfer *x);

struct pr_owner {
	pr_exec_fn exec;
	void *ctx;
	uint64_t key;		/* this node's reservation key, 0 = off */
	bool owner_mode;	/* took it and keeps it (until RELEASE) */
	uint64_t preempted;	/* the last key this node preempted */
};

/* CDB and parameter list builders (SPC-3 6.11, 6.12). */
void pr_out_cdb(struct pr_xfer *x, uint8_t sa, uint8_t type, uint8_t *param);
void pr_out_param(uint8_t *param, uint64_t key, uint64_t sa_key);
void pr_in_cdb(struct pr_xfer *x, uint8_t sa, uint8_t *buf, uint32_t alloc);

/* READ RESERVATION parameter data: 1 a reservation exists (its key and
 * type into *key / *type), 0 none, -EPROTO malformed. */
int pr_parse_reservation(const uint8_t *buf, uint32_t len, uint64_t *key,
			 uint8_t *type);

/* Fixed (70h/71h) or descriptor (72h/73h) sense data -> key, ASC<<8|ASCQ.
 * false when buf holds no sense. */
bool pr_parse_sense(const uint8_t *buf, uint32_t len, uint8_t *key,
		    uint16_t *asc);

/* backend_ops.owner for a store owned by reservation: BE_OWNER_TAKE,
 * _TAKE_FORCE (PREEMPT AND ABORT the holder's key, PREEMPT where the
 * device has no PREEMPT AND ABORT), _RELEASE (SYNCHRONIZE CACHE, then
 * RELEASE; the registration stays), _QUERY (READ RESERVATION: MINE when
 * this node's key holds it, OTHER when another key does, NONE).
 * 0 / BE_OWNER_* or -errno with *errmsg (-EBUSY: another node holds it,
 * -EAGAIN: the device cannot be asked now). */
int pr_owner_op(struct pr_owner *p, enum be_owner_op op,
		const char **errmsg);

/* BE_OWNER_ID: the logical unit's identity (its unit serial number and
 * device identification VPD pages), as 16 hex digits of a hash. */
int pr_owner_id(struct pr_owner *p, char *buf, unsigned len,
		const char **errmsg);

/* set_param("pr_key", text) of a store owned by reservation: parse the
 * key ("0x..." hex or decimal, not 0).  0 or -EINVAL. */
int pr_key_parse(const char *text, uint64_t *key);

/* The SG_IO transport: ctx is a pointer to the open block device's fd.
 * Synchronous ioctl, 30 s timeout. */
int pr_sgio_exec(void *ctx, struct pr_xfer *x);

#endif
