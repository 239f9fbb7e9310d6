/* lun.h - a logical unit: its settings, backing store and run-time state.
 *
 * Settings are what targets.conf and `tgtadm --params` configure.  A LUN is
 * reference counted: every command in flight holds a reference, so deleting
 * a LUN from the management thread frees it only after the last command. */
#ifndef HOLDFAST_LUN_H
#define HOLDFAST_LUN_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"

enum err_policy { ERR_POLICY_REPORT = 0, ERR_POLICY_RETRY = 1 };

#define LUN_ERRNO_BITS 256	/* retry_errors is a bitset indexed by errno */

struct lun_settings {
	uint64_t lun;
	char backend[16];		/* "file", "null", "fault", "iscsi", "rbd" */
	char path[PATH_MAX];		/* absolute after config parsing */
	char backend_opts[256];		/* fault spec */
	char bsopts[1024];		/* store options (tgtadm --bsopts); the
					 * iscsi store's are in iscsi_conf.h,
					 * the rbd store's in backends/rbd.c */
	uint64_t size;			/* bytes, 0 = size of existing store */
	uint32_t block_size;		/* 512 default; power of two 512..65536 */
	bool direct;			/* O_DIRECT; default true */
	bool sync;			/* O_SYNC (tgtadm --bsoflags sync) */
	bool readonly;
	bool removable;
	bool thin_provisioning;
	bool write_cache;		/* WCE reported in the caching mode page */
	bool sense_desc;		/* descriptor format sense */
	bool online;
	char vendor_id[9];
	char product_id[17];
	char product_rev[5];
	char scsi_id[64];		/* device identification string */
	char scsi_sn[64];		/* unit serial number */
	/* hang-on-error (DESIGN.md) */
	enum err_policy rerror;
	enum err_policy werror;
	uint32_t retry_interval_ms;	/* default 1000 */
	uint32_t retry_timeout_ms;	/* 0 = never */
	uint64_t retry_errors[LUN_ERRNO_BITS / 64];
	/* two nodes in front of shared storage (target/scsi/scsi_alua.c):
	 * alua_group 0 = off (one implicit group, always active) */
	uint16_t alua_group;		/* this node's target port group */
	uint16_t alua_peer_group;	/* the other node's, 0 = none */
	bool alua_standby;		/* alua_state = "standby" */
};

/* Fill s with the defaults for LUN number lun. */
void lun_settings_default(struct lun_settings *s, uint64_t lun);
/* Set retry_errors to DESIGN.md's transient set. */
void lun_retry_errors_default(uint64_t *bits);
static inline bool lun_errno_retryable(const uint64_t *bits, int err)
{
	return err > 0 && err < LUN_ERRNO_BITS &&
	       (bits[err / 64] >> (err % 64) & 1);
}

struct hang_lun;
struct target;
struct cbt_set;

struct scsi_lun {
	struct lun_settings set;	/* read by reactors; updated under lock */
	struct backend *be;		/* NULL for LUN 0 (controller) */
	/* capacity in set.block_size blocks; atomic because online resize
	 * (scsi_lun_refresh) changes it while reactors read it */
	_Atomic uint64_t nblocks;
	struct target *target;		/* owner (not a reference) */
	char target_name[224];		/* the owner's IQN, for log lines */
	struct hang_lun *hang;		/* hang engine state, NULL until set */
	atomic_int refcnt;
	atomic_uint_fast64_t seq;	/* per-LUN media command arrival sequence */
	atomic_uint ua_gen;		/* bumped when a unit attention is raised */
	pthread_mutex_t lock;
	/* counters for show */
	atomic_uint_fast64_t reads, writes, read_bytes, write_bytes;
	/* SCSI layer state (unit attentions; later reservations).  Created
	 * lazily by target/scsi/; the last scsi_lun_put() must call
	 * scsi_lun_state_free() (scsi.h). */
	struct scsi_lun_state *scsi;
	/* Changed-block tracking: the LUN's dirty bitmaps (target/cbt),
	 * marked by the cbt filter node at the top of be.  NULL until the
	 * LUN is added to a target (scsi_lun_cbt_init()). */
	struct cbt_set *cbt;
	/* Called by the last scsi_lun_put(); set by scsi_lun_create(). */
	void (*release)(struct scsi_lun *l);
};

/* Take a reference (the caller already holds one, or a table does). */
void scsi_lun_get(struct scsi_lun *l);
/* Drop a reference; the last one calls l->release (closes the store and
 * frees).  NULL is allowed. */
void scsi_lun_put(struct scsi_lun *l);

/* Apply one LUN parameter (key=value as in targets.conf and tgtadm
 * --params) to s.  Returns 0, -ENOENT (unknown key) or -EINVAL (bad value)
 * with a reason in err.  Used by the config loader and management. */
int lun_setting_apply(struct lun_settings *s, const char *key,
		      const char *value, char *err, unsigned errlen);
/* Check a LUN's settings as a whole (a file LUN has a path, size is a
 * multiple of the block size, retry policies only with direct = true: the
 * DESIGN.md safety rule).  0 / -EINVAL with a reason in err. */
int lun_settings_validate(const struct lun_settings *s, char *err,
			  unsigned errlen);
/* Does s describe a file or block-device store (backend "file", or
 * "fault" with a path)? */
bool lun_settings_is_file(const struct lun_settings *s);
/* s->path as shown to operators (show, JSON, log): a URL's CHAP secret
 * ("iscsi://user%secret@host/...") is left out.  Returns buf, or "None"
 * for an empty path. */
const char *lun_settings_path_shown(const struct lun_settings *s, char *buf,
				    size_t len);

#endif
