/* scsi_pr.h - reservations: SPC-4 persistent reservations (5.13, PERSISTENT
 * RESERVE IN / OUT 6.15 / 6.16) and SPC-2 RESERVE / RELEASE (6) and (10).
 * Internal to the SCSI layer (target/scsi/).
 *
 * State lives per LUN in the SCSI layer's LUN state (scsi_lun_pr_slot()),
 * is created on the first command that reaches the LUN and, while the last
 * REGISTER asked for APTPL, is kept in a state file (see scsi_pr_store.c
 * and README "Persistent reservations"). */
#ifndef HOLDFAST_SCSI_PR_H
#define HOLDFAST_SCSI_PR_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "scsi.h"

/* ---- operation codes ---- */
#define SCSI_OP_RESERVE_6		0x16	/* SPC-2 7.21 */
#define SCSI_OP_RELEASE_6		0x17	/* SPC-2 7.17 */
#define SCSI_OP_RESERVE_10		0x56	/* SPC-2 7.22 */
#define SCSI_OP_RELEASE_10		0x57	/* SPC-2 7.18 */
#define SCSI_OP_PERSISTENT_RESERVE_IN	0x5e	/* SPC-4 6.15 */
#define SCSI_OP_PERSISTENT_RESERVE_OUT	0x5f	/* SPC-4 6.16 */

/* PERSISTENT RESERVE IN service actions (SPC-4 6.15.1) */
#define PR_IN_READ_KEYS			0x00
#define PR_IN_READ_RESERVATION		0x01
#define PR_IN_REPORT_CAPABILITIES	0x02
#define PR_IN_READ_FULL_STATUS		0x03

/* PERSISTENT RESERVE OUT service actions (SPC-4 6.16.2) */
#define PR_OUT_REGISTER			0x00
#define PR_OUT_RESERVE			0x01
#define PR_OUT_RELEASE			0x02
#define PR_OUT_CLEAR			0x03
#define PR_OUT_PREEMPT			0x04
#define PR_OUT_PREEMPT_AND_ABORT	0x05
#define PR_OUT_REGISTER_AND_IGNORE	0x06
#define PR_OUT_REGISTER_AND_MOVE	0x07

/* Persistent reservation types (SPC-4 6.16.3, Table 172) */
#define PR_TYPE_WE			0x1	/* write exclusive */
#define PR_TYPE_EA			0x3	/* exclusive access */
#define PR_TYPE_WE_RO			0x5	/* ... registrants only */
#define PR_TYPE_EA_RO			0x6
#define PR_TYPE_WE_AR			0x7	/* ... all registrants */
#define PR_TYPE_EA_AR			0x8
#define PR_SCOPE_LU			0x0

/* Unit attentions of reservations (SPC-4 5.13.11, Annex D) */
#define ASC_RESERVATIONS_PREEMPTED	0x2a03
#define ASC_RESERVATIONS_RELEASED	0x2a04
#define ASC_REGISTRATIONS_PREEMPTED	0x2a05

/* Most registrations one LUN keeps (more: INSUFFICIENT REGISTRATION
 * RESOURCES, SPC-4 5.13.7). */
#define PR_MAX_REGISTRATIONS		256

/* The code a media command that waited in the hang engine gets when its
 * dispatch-time reservation check fails (hang_set_recheck);
 * scsi_set_backend_error() answers RESERVATION CONFLICT for it. */
#define SCSI_PR_ERR_CONFLICT		(-EACCES)

struct scsi_pr;

/* Handlers (dispatch table rows in scsi_ops.c). */
enum scsi_exec_result spc_pr_in(struct scsi_cmd *cmd);
enum scsi_exec_result spc_pr_out(struct scsi_cmd *cmd);
enum scsi_exec_result spc_reserve(struct scsi_cmd *cmd);
enum scsi_exec_result spc_release(struct scsi_cmd *cmd);

/* Does cmd conflict with a reservation held on its LUN (SPC-4 5.13.1
 * Table 62 / SBC-3 4.18 for persistent reservations, SPC-2 5.5.1 for
 * RESERVE)?  If so, status is set to RESERVATION CONFLICT and true is
 * returned.  Called by the dispatcher for every command on a LUN; cheap
 * while nothing is reserved. */
bool scsi_pr_conflict(struct scsi_cmd *cmd);

/* The dispatcher found no row for cmd: if it is a PERSISTENT RESERVE
 * IN / OUT with a service action that does not exist, answer INVALID
 * FIELD IN CDB (SPC-4 6.15.1 / 6.16.1) and return true. */
bool scsi_pr_bad_service_action(struct scsi_cmd *cmd);

/* A LUN reset, target reset or power on (SAM-5 6.3): releases an SPC-2
 * reservation (persistent ones survive, SPC-4 5.13.1). */
void scsi_pr_reset(struct scsi_lun *lun);

/* Free the state (from scsi_lun_state_free). NULL is fine. */
void scsi_pr_free(struct scsi_pr *pr);
/* Forget the LUN's reservation state and read it again from the state
 * file (a node taking over a shared LUN, scsi_lun_refresh()).  No file:
 * no registrations.  0 or -errno (the state is then empty). */
int scsi_pr_reload(struct scsi_lun *lun);
/* The LUN's store moved to store_path (a mirror's pivot): lun->path
 * takes it, and the state file follows to the new store's name.
 * Management thread.  0 or -errno (the state in memory is kept either
 * way). */
int scsi_pr_store_moved(struct scsi_lun *lun, const char *store_path);

/* ---- internal to target/scsi_pr*.c ---- */
#ifdef SCSI_PR_INTERNAL
#include <pthread.h>
#include <stdatomic.h>

/* One registration: a reservation key and the I_T nexus it belongs to,
 * named by initiator port (iSCSI name + ISID) and relative target port
 * (SPC-4 5.13.7).  Sessions come and go; the registration stays. */
struct scsi_pr_reg {
	uint64_t key;
	char iname[224];
	uint8_t isid[6];
	uint16_t rel_port_id;
	bool all_tg_pt;		/* registered through every target port */
	bool holder;		/* holds a WE/EA/RO reservation */
	uint64_t nexus_id;	/* last session seen with this identity
				 * (unit attentions, PREEMPT AND ABORT);
				 * 0 = none since start */
};

struct scsi_pr {
	pthread_mutex_t lock;
	atomic_bool active;	/* a persistent or SPC-2 reservation exists:
				 * the dispatcher's only check otherwise */
	struct scsi_lun *lun;
	uint32_t generation;	/* PRgeneration (SPC-4 6.15.2) */
	unsigned nregs, cap;
	struct scsi_pr_reg *regs;	/* nregs used of cap */
	bool reserved;		/* persistent reservation */
	uint8_t type, scope;
	bool aptpl;		/* last REGISTER asked to persist */
	char *path;		/* APTPL state file; NULL: PTPL_C = 0 */
	bool meta;		/* kept in the store's metadata instead
				 * (backend_ops.meta_set); path is its label */
	bool unread;		/* the metadata could not be read (the store
				 * was not open): read it again before any
				 * change, never overwrite it unseen */
	/* SPC-2 RESERVE: held by one session until RELEASE, a reset or
	 * the nexus' loss */
	bool spc2_reserved;
	uint64_t spc2_nexus;
};

static inline bool scsi_pr_type_all_regs(uint8_t type)
{
	return type == PR_TYPE_WE_AR || type == PR_TYPE_EA_AR;
}

static inline bool scsi_pr_type_regs_access(uint8_t type)
{
	return type == PR_TYPE_WE_RO || type == PR_TYPE_EA_RO ||
	       scsi_pr_type_all_regs(type);
}

/* scsi_pr.c */
/* Room for one more registration: 0 or -ENOSPC / -ENOMEM. */
int scsi_pr_reserve_slot(struct scsi_pr *pr);
struct scsi_pr *scsi_pr_state(struct scsi_lun *lun);
int scsi_pr_find(struct scsi_pr *pr, const struct scsi_nexus *n);
bool scsi_pr_is_holder(const struct scsi_pr *pr, int idx);
void scsi_pr_update_active(struct scsi_pr *pr);
void scsi_pr_ua(struct scsi_pr *pr, uint16_t asc_ascq, int except_idx,
		uint64_t except_nexus);
/* TransportID (SPC-4 7.6.4.6, iSCSI, format 01b: "name,i,0xISID"). */
uint32_t scsi_pr_transport_id(const struct scsi_pr_reg *r, uint8_t *buf);
int scsi_pr_transport_id_parse(const uint8_t *p, uint32_t len,
			       struct scsi_pr_reg *out, uint32_t *used);

/* scsi_pr_store.c: the APTPL state file */
/* Where lun's reservation state lives: a file's path, or (*meta set) the
 * label of the store's metadata key; NULL: nowhere (PTPL_C = 0). */
char *scsi_pr_store_path(const struct scsi_lun *lun, bool *meta);
int scsi_pr_store_save(const struct scsi_pr *pr);
int scsi_pr_store_load(struct scsi_pr *pr);
/* Parse a state text (as a state file or metadata value holds) into pr,
 * which must be empty (pr->lock held or not yet shared).  0 or -EINVAL
 * (pr then holds what was parsed so far: the caller empties it). */
int scsi_pr_store_parse(struct scsi_pr *pr, const char *text, size_t len);
/* Forget the state and load it again (pr->lock held).  0 or -errno. */
int scsi_pr_store_reload_locked(struct scsi_pr *pr);
void scsi_pr_store_remove(const struct scsi_pr *pr);
#endif

#endif
