/* scsi.h - the SCSI layer's interface to transports (iSCSI).
 *
 * The transport decodes its PDUs into a struct scsi_cmd, gathers all
 * Data-Out into cmd->buf, calls scsi_cmd_exec() and gets cmd->done() back
 * exactly once (possibly before scsi_cmd_exec returns), with status, sense
 * and Data-In filled in.  The SCSI layer never sees a PDU. */
#ifndef HOLDFAST_SCSI_H
#define HOLDFAST_SCSI_H

#include <stdbool.h>
#include <stdint.h>

/* For struct media_io, which a scsi_cmd embeds so a command needs no
 * second allocation.  The transport still never calls the hang engine:
 * it uses the scsi_lun_* calls at the end of this header (layers.sh checks
 * that no iSCSI file includes hang.h itself). */
#include "hang.h"
#include "lun.h"

struct reactor;

#define SCSI_SENSE_MAX 96
#define SCSI_CDB_MAX 32

/* SAM status codes */
#define SAM_STAT_GOOD 0x00
#define SAM_STAT_CHECK_CONDITION 0x02
#define SAM_STAT_CONDITION_MET 0x04
#define SAM_STAT_BUSY 0x08
#define SAM_STAT_RESERVATION_CONFLICT 0x18
#define SAM_STAT_TASK_SET_FULL 0x28
#define SAM_STAT_ACA_ACTIVE 0x30
#define SAM_STAT_TASK_ABORTED 0x40

/* Task attributes (RFC 7143 ATTR field values) */
enum scsi_task_attr {
	SCSI_ATTR_UNTAGGED = 0,
	SCSI_ATTR_SIMPLE = 1,
	SCSI_ATTR_ORDERED = 2,
	SCSI_ATTR_HEAD_OF_QUEUE = 3,
	SCSI_ATTR_ACA = 4,
};

struct target;

/* An I_T nexus as the SCSI layer sees it (owned by the session). */
struct scsi_nexus {
	uint64_t id;			/* unique per I_T nexus, never reused */
	char initiator_name[224];
	uint8_t isid[6];
	uint16_t tpgt;
	uint16_t rel_port_id;		/* relative target port identifier */
	const char *target_name;
};

struct scsi_cmd {
	/* set by the transport */
	struct target *target;
	struct scsi_lun *lun;		/* referenced; NULL if no such LUN */
	uint64_t lun_id;
	const struct scsi_nexus *nexus;
	uint8_t cdb[SCSI_CDB_MAX];
	uint32_t cdb_len;
	enum scsi_task_attr attr;
	bool dir_read, dir_write;	/* R / W bits of the transport */
	uint32_t exp_len;		/* expected data transfer length */
	uint8_t *buf;			/* Data-Out (all of it) or Data-In */
	uint32_t buf_len;		/* allocated bytes of buf */
	uint32_t out_len;		/* Data-Out bytes received into buf */
	void (*done)(struct scsi_cmd *cmd);
	void *priv;			/* transport's */
	/* Buffer accounting (README "Limits and slow peers"): the transport
	 * counts buf_counted bytes for cmd's data buffer; every buffer the
	 * SCSI layer allocates for cmd beyond that (a Data-In longer than
	 * buf_counted, the scratch buffers of VERIFY, COMPARE AND WRITE and
	 * ORWRITE, WRITE SAME's pattern, EXTENDED COPY's chunk) is charged
	 * first with buf_charge(cmd, bytes), on cmd's reactor.  false: over
	 * the transport's limit, and cmd is answered TASK SET FULL without
	 * the buffer.  The transport releases all of it once, when it frees
	 * cmd (the buffers are gone by then: each is freed before done()).
	 * NULL: nothing is counted (internal commands, tests). */
	uint32_t buf_counted;
	bool (*buf_charge)(struct scsi_cmd *cmd, uint32_t len);

	/* set by the SCSI layer */
	uint32_t in_len;		/* Data-In bytes in buf */
	uint32_t out_want;		/* Data-Out bytes the CDB asks for (0 if
					 * none): the transport reports the
					 * write residual as exp_len vs this
					 * (RFC 7143 11.4.5) */
	uint8_t status;
	uint8_t sense[SCSI_SENSE_MAX];
	uint32_t sense_len;

	/* SCSI layer private */
	struct media_io mio;
	struct iovec iov;
	uint64_t lba;
	uint32_t nblocks;
	int stage;
	bool aborted;
	bool gate_excl;			/* holds the write gate exclusively */
	bool gate_shared;		/* a media write counted in the gate */
	void (*gate_complete)(struct media_io *m, int res);
	uint32_t cursor;		/* next part of a multi-part command
					 * (UNMAP descriptors) */
};

/* Allocate a zeroed buffer aligned for O_DIRECT (4096).  NULL on failure. */
void *scsi_buf_alloc(uint32_t len);
/* The same, not zeroed: a recycled buffer still holds what an earlier
 * command (of any session) left in it.  For a caller that writes or
 * zeroes every byte before anything reads it. */
void *scsi_buf_alloc_uninit(uint32_t len);
void scsi_buf_free(void *p);
/* Charge len bytes of a buffer for cmd (cmd->buf_charge); true if it
 * fits or nothing is counted.  false: answer TASK SET FULL
 * (scsi_set_backend_error(cmd, -ENOMEM, ...)). */
bool scsi_buf_charge(struct scsi_cmd *cmd, uint32_t len);
/* A working buffer for cmd (aligned for O_DIRECT, not zeroed, freed
 * with free()), charged first: NULL when it does not fit the limits or
 * memory is short, which the caller answers with
 * scsi_set_backend_error(cmd, -ENOMEM, ...) (TASK SET FULL). */
void *scsi_work_alloc(struct scsi_cmd *cmd, uint32_t len);

/* Execute cmd.  If cmd->buf is NULL and the command returns data, the SCSI
 * layer allocates it with scsi_buf_alloc() (the transport frees it after
 * done() with scsi_buf_free()). */
void scsi_cmd_exec(struct scsi_cmd *cmd);

/* Set CHECK CONDITION with sense key/asc/ascq in the LUN's sense format. */
void scsi_set_sense(struct scsi_cmd *cmd, uint8_t key, uint8_t asc,
		    uint8_t ascq);

/* Map a backend -errno for a read (is_write false) or write into status
 * and sense (DESIGN.md table). */
void scsi_set_backend_error(struct scsi_cmd *cmd, int err, bool is_write);
/* The same for a failed be_io: the store's own sense (io->sense) as it
 * is when it gave one, else scsi_set_backend_error(). */
void scsi_set_store_error(struct scsi_cmd *cmd, int err,
			  const struct be_io *io, bool is_write);

/* Abort cmd (ABORT TASK and friends).  cmd->done() is still called exactly
 * once, with status SAM_STAT_TASK_ABORTED: at once if the command has not
 * reached the backend (or was held/queued by the hang engine), else when
 * its in-flight backend attempt finishes (result dropped).  Call on the
 * reactor that executes cmd. */
void scsi_cmd_abort(struct scsi_cmd *cmd);

/* A LUN reset / target reset was performed by nexus `by` (NULL: the
 * target itself, e.g. power on): raise the matching unit attention for
 * every I_T nexus, the one that asked included (SAM-5 5.14: a logical
 * unit reset establishes it for all; libiscsi's MultipathIO.Reset checks
 * both paths).  Thread safe. */
void scsi_lun_reset_ua(struct scsi_lun *lun, const struct scsi_nexus *by);

/* Changes announced to every I_T nexus that has used a LUN, as a unit
 * attention on its next command (SPC-4 5.14 / SBC-3 4.6). */
enum scsi_lun_event {
	SCSI_EV_CAPACITY_CHANGED,	/* 2A/09 after a resize */
	SCSI_EV_LUNS_CHANGED,		/* 3F/0E: raise on every LUN of a
					 * target whose LUN inventory changed */
	SCSI_EV_MODE_CHANGED,		/* 2A/01: a mode page setting changed
					 * (write_cache, sense_desc, readonly) */
};
/* Thread safe. */
void scsi_lun_notify(struct scsi_lun *lun, enum scsi_lun_event ev);

/* I_T nexus n of target t is gone (logout, connection loss, session
 * reinstatement): ends its SPC-2 reservations (SPC-2 5.5.1; persistent
 * registrations stay).  Any thread. */
void scsi_nexus_lost(struct target *t, const struct scsi_nexus *n);

/* Free the SCSI layer's per-LUN state (lun->scsi: pending unit attentions).
 * Called once from the last scsi_lun_put(); safe when lun->scsi is NULL. */
void scsi_lun_state_free(struct scsi_lun *lun);

/* The one way a live LUN's settings change (tgtadm update, SIGHUP
 * reload): validate s as a whole against the store that is open
 * (lun_settings_check()), refuse a change of a key that is fixed at
 * creation, hand a changed fault spec to the store, then publish the
 * run-time keys of s as a new snapshot and tell who depends on them: the
 * hang engine when the error policy changed, the initiators (MODE
 * PARAMETERS CHANGED) when a mode page changed.  Keys in force (LUN_KEY_*
 * flags) count as changed even when equal (tgtadm re-arming the same
 * fault spec).  Returns 1 if something changed, 0 if nothing did, or
 * -EINVAL / -EPERM (a fixed key) / the store's -errno with the reason in
 * err; nothing changes on failure.  Management thread, with updates of
 * the LUN serialized (config_lock()); blocks for a reactor loop turn
 * (reactor_synchronize()) before the old snapshot is freed. */
int scsi_lun_update(struct scsi_lun *lun, const struct lun_settings *s,
		    unsigned force, char *err, unsigned errlen);
/* In scsi_lun_update()'s force: tgtadm's force=1 (a smaller size may
 * shrink the LUN; ALUA takes the lock over from a node known dead).
 * LUN_KEY_RESIZE in force with s->size 0 re-reads the store's size
 * (action=rescan); LUN_KEY_ALUA re-applies the ALUA state. */
#define SCSI_UPDATE_FORCE	(1u << 30)

/* Create a LUN from settings: opens the backend (creating a sparse file if
 * needed).  Returns 0 and *out, or -errno with *errmsg explaining why. */
int scsi_lun_create(const struct lun_settings *s, struct scsi_lun **out,
		    const char **errmsg);

/* scsi_lun_refresh() flags */
#define SCSI_REFRESH_FORCE	0x1	/* a smaller size may shrink the LUN */
#define SCSI_REFRESH_SHARED	0x2	/* also what another node may have
					 * changed: reservations, hang state */

/* The LUN's filters as the `filters` key spells them (top first, the
 * store and a tracking node left out), from the live chain: after
 * filter_add / filter_remove, so the settings record the chain.  0, or
 * -EINVAL (no block stack), -ENOSPC. */
int scsi_lun_filters_now(struct scsi_lun *lun, char *buf, size_t len);
/* The topmost fault filter (the one the fault spec goes to), as an
 * identity to compare across a chain change; NULL if none.  Management
 * thread. */
const void *scsi_lun_fault_node(struct scsi_lun *lun);
/* The one place that re-reads the LUN state that lives with its store
 * (DESIGN.md: online resize, handover between nodes and a mirror's pivot
 * all come through here).  The store's size -> capacity, and with
 * SCSI_REFRESH_SHARED (a node taking over a shared store) the reservation
 * state from its file, the persistent bitmaps, and the hang engine started
 * over (hang_reset(): nothing held, ok, no last error; waited for before
 * this returns).  A resize (size != 0, not SHARED) holds the LUN's ALUA
 * transition lock and is refused unless this node owns the store
 * (scsi_alua_resize_begin()).  size:
 * bytes to make the store (grow; shrink only with SCSI_REFRESH_FORCE), or
 * 0 to re-read the size the store has now (`action=rescan`).  When the
 * capacity changes every I_T nexus gets CAPACITY DATA HAS CHANGED.
 * Management thread.  0 or -errno with *errmsg. */
int scsi_lun_refresh(struct scsi_lun *lun, uint64_t size, unsigned flags,
		     const char **errmsg);

/* Two nodes in front of shared storage (scsi_alua.c): bring the LUN's
 * ALUA state in line with settings s (alua_group, alua_state): go active
 * (take the ownership lock next to the store and re-read its state) or
 * standby (drain, flush, release the lock).  force: take the lock over
 * from a node known dead.  Management thread; blocks while draining.
 * 0, or -EBUSY (the other node is active, or writes would not drain) /
 * -errno with *errmsg. */
int scsi_alua_apply(struct scsi_lun *lun, const struct lun_settings *s,
		    bool force, const char **errmsg);
/* The show line of a LUN's ALUA state ("" without alua_group). */
int scsi_alua_describe(struct scsi_lun *lun, char *buf, unsigned len);
/* A LUN's ALUA state for the shows (text and JSON).  Strings are static
 * or live as long as the LUN. */
struct scsi_alua_info {
	uint16_t group, peer_group;
	const char *state, *peer_state;	/* "active/optimized", "standby",
					 * "transitioning" */
	bool owner;			/* holds the ownership lock */
	bool fenced;			/* the store refuses this node's writes */
	const char *identity;		/* 16 hex digits, or NULL */
	const char *lock_path;		/* the ownership lock file, or NULL */
};
/* Fill *out; false without alua_group. */
bool scsi_alua_info(struct scsi_lun *lun, struct scsi_alua_info *out);
/* Is the LUN not active/optimized for its ALUA group?  Run-time state
 * (SET TARGET PORT GROUPS, a refused takeover at start), which the
 * alua_state setting (the state asked for) need not match.  false
 * without alua_group. */
bool scsi_alua_standby(struct scsi_lun *lun);

/* The same on a store node that is already open (a snapshot export):
 * the LUN takes it over, and closes it on failure too. */
int scsi_lun_create_on(const struct lun_settings *s, struct backend *store,
		       struct scsi_lun **out, const char **errmsg);

/* Set up the LUN's dirty bitmaps (target/cbt): loads the persistent ones
 * from the LUN's sidecar beside the configuration.  Called when the LUN
 * joins target target_name.  0 or -errno with *errmsg (a sidecar that
 * cannot be trusted refuses the LUN). */
int scsi_lun_cbt_init(struct scsi_lun *l, const char *target_name,
		      const char **errmsg);

/* Put the changed-block tracking node on top of the LUN's block stack if
 * it is not there yet (first bitmap, first job); drains the writes that
 * entered before.  Management thread.  0 or -errno with *errmsg. */
int scsi_lun_cbt_attach(struct scsi_lun *l, const char **errmsg);

/* The LUN's store is now the file or device at path (a mirror job's pivot
 * replaced it in the block stack, cbt_mirror.h): publish settings naming
 * it, so show, dump, save and a reload see it, and move the reservation
 * state file with it.  Management thread, updates serialized as for
 * scsi_lun_update().  0 or -errno. */
int scsi_lun_store_moved(struct scsi_lun *lun, const char *path);

/* ---- what the transport asks of a LUN ----
 * The iSCSI layer talks to the SCSI layer only; these two calls are how it
 * learns about, and acts on, commands the LUN holds below it. */

/* May the transport solicit a write's data now (R2T, buffers)?  False
 * while the LUN holds its media commands (hang-on-error): data for a
 * command that would only queue stays with the initiator.  Any thread. */
bool scsi_lun_may_solicit(struct scsi_lun *lun);

/* Scope of scsi_lun_drop_nexus() meaning every I_T nexus (LUN RESET,
 * CLEAR TASK SET, target resets: SAM-5 7.6, 7.10). */
#define SCSI_NEXUS_ALL UINT64_MAX

/* Drop every media command of I_T nexus `nexus` (or SCSI_NEXUS_ALL) that
 * the LUN holds or queues and that arrived before this call (ABORT TASK
 * SET, CLEAR TASK SET, LUN RESET).  Each dropped command completes as
 * aborted on its own reactor and never reaches the store.  done(arg,
 * dropped) runs on reactor r once that is finished.  Returns 0 when done
 * will be called, or -errno (nothing to wait for). */
int scsi_lun_drop_nexus(struct scsi_lun *lun, uint64_t nexus,
			struct reactor *r,
			void (*done)(void *arg, unsigned dropped), void *arg);

/* Stable 64-bit FNV-1a hash used for default serial numbers and NAA
 * identifiers (scsi_spc.c). */
uint64_t scsi_hash64(const char *s, uint64_t lun);

#endif
