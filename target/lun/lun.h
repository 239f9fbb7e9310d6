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
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

enum err_policy { ERR_POLICY_REPORT = 0, ERR_POLICY_RETRY = 1 };

#define LUN_ERRNO_BITS 256	/* retry_errors is a bitset indexed by errno */

struct lun_settings {
	uint64_t lun;
	char backend[16];		/* "file", "null", "fault", "iscsi", "rbd" */
	char path[PATH_MAX];		/* absolute after config parsing */
	char backend_opts[256];		/* fault spec */
	char filters[128];		/* the filter nodes above the store,
					 * top first, comma-separated ("" =
					 * none); the block stack follows it */
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
	bool alua_standby;		/* alua_state = "standby": the state
					 * asked for; the state the LUN is in
					 * is scsi_alua_state() (run-time
					 * state, not a setting) */
	char alua_state_dir[PATH_MAX];	/* where the state both nodes share
					 * lives (lun_shared_state_path);
					 * "" = next to a file store */
	bool alua_lock_pr;		/* alua_lock = "scsi-pr": the ownership
					 * is a SCSI-3 persistent reservation
					 * on the store (an iscsi store or a
					 * SCSI disk), not a lock file */
	uint64_t alua_pr_key;		/* this node's reservation key for
					 * scsi-pr; 0 = derived from the host
					 * name and alua_group */
};

/* Set retry_errors to DESIGN.md's transient set. */
void lun_retry_errors_default(uint64_t *bits);
static inline bool lun_errno_retryable(const uint64_t *bits, int err)
{
	return err > 0 && err < LUN_ERRNO_BITS &&
	       (bits[err / 64] >> (err % 64) & 1);
}

/* ---- the key table (lun_keys.c) ----
 *
 * Every LUN setting is one row of one table: its name, its type and
 * limits, the field it fills, its default, whether it may change on a
 * live LUN and what else must happen when it does.  The config loader,
 * `tgtadm --params`, validation, the reload diff and the printers all
 * walk that table; adding a key is one row plus the code that uses the
 * value. */

/* How a key's value is spelled; what the printers quote and how. */
enum lun_key_kind {
	LUN_KIND_NUMBER,	/* decimal */
	LUN_KIND_SIZE,		/* bytes, decimal; parsed also as "64M" */
	LUN_KIND_BOOL,		/* true / false */
	LUN_KIND_STRING,
	LUN_KIND_LIST,		/* comma-separated names; "none" when empty */
};

enum lun_key_flag {
	LUN_KEY_RUNTIME = 1u << 0,	/* `tgtadm --op update` and SIGHUP may
					 * change it on a live LUN */
	LUN_KEY_STORE = 1u << 1,	/* describes the store: a change needs a
					 * new LUN (reload replaces it) */
	LUN_KEY_HANG = 1u << 2,		/* the hang engine re-reads its policy */
	LUN_KEY_MODE = 1u << 3,		/* a mode page changes (SPC-4 5.14:
					 * MODE PARAMETERS CHANGED) */
	LUN_KEY_PARAM = 1u << 4,	/* handed to the store at run time
					 * (backend_ops.set_param) */
	LUN_KEY_NONEMPTY = 1u << 5,	/* printers omit it while empty */
	LUN_KEY_ITEM = 1u << 6,		/* an item of another key's value
					 * (bsopts): printers skip it */
	LUN_KEY_ALUA = 1u << 7,		/* scsi_alua_apply() re-reads it;
					 * printers omit it without alua_group */
	LUN_KEY_RESIZE = 1u << 8,	/* the store is resized (size) */
	LUN_KEY_STACK = 1u << 9,	/* the block stack's filters are
					 * rebuilt to match (filters) */
	LUN_KEY_CHANGED = 1u << 31,	/* lun_settings_diff(): any change */
};

struct lun_key;

/* The rows, in the order the printers write them; NULL after the last. */
const struct lun_key *lun_key_at(unsigned i);
/* The row for name (or its alias, e.g. "blocksize"), or NULL. */
const struct lun_key *lun_key_find(const char *name);
const char *lun_key_name(const struct lun_key *k);
unsigned lun_key_flags(const struct lun_key *k);
enum lun_key_kind lun_key_kind(const struct lun_key *k);
/* The member name in `show --json`, or NULL when JSON does not carry the
 * key under its own name. */
const char *lun_key_json(const struct lun_key *k);
/* The unit `show` writes after the value ("ms"), or NULL. */
const char *lun_key_unit(const struct lun_key *k);
/* k's value in s as text that lun_setting_apply() takes back (bools
 * "true"/"false", lists comma-separated, "none" for an empty one).
 * Returns the length (truncated to len like snprintf). */
int lun_key_format(const struct lun_key *k, const struct lun_settings *s,
		   char *buf, size_t len);

/* The names in a filters value (lun_settings.filters), top first, into
 * names (each at most LUN_FILTER_NAME_MAX - 1 characters).  Returns the
 * count (at most max). */
#define LUN_FILTER_NAME_MAX 16
int lun_filters_split(const char *filters, char (*names)[LUN_FILTER_NAME_MAX],
		      int max);

/* Fill s with every key's default, for LUN number lun. */
void lun_settings_default(struct lun_settings *s, uint64_t lun);
/* Apply one LUN parameter (key=value as in targets.conf and tgtadm
 * --params) to s.  Returns 0, -ENOENT (unknown key) or -EINVAL (bad value)
 * with a reason in err; s is unchanged on failure. */
int lun_setting_apply(struct lun_settings *s, const char *key,
		      const char *value, char *err, unsigned errlen);
/* Check settings as a whole, each rule once: a file LUN has a path, the
 * size is a multiple of the block size, and DESIGN.md's safety rule
 * (retry only on a store that bypasses the page cache: s asks for
 * direct I/O and be, the store actually open if there is one, has it).
 * 0, or -EINVAL with the reason in err and, in *key (if not NULL), the
 * key to blame. */
int lun_settings_check(const struct lun_settings *s, const struct backend *be,
		       const char **key, char *err, unsigned errlen);
/* Does s describe a file or block-device store (backend "file", or
 * "fault" with a path)? */
bool lun_settings_is_file(const struct lun_settings *s);
/* Is the store a block device (a path under /dev/, or one that stat()s
 * as a block device)? */
bool lun_settings_is_blockdev(const struct lun_settings *s);
/* Where a LUN shared by two nodes (alua_group) keeps the state both nodes
 * read and write: the ownership lock, the reservations, the persistent
 * bitmaps (suffix ".holdfast-owner", ".pr", ".bitmaps").  With
 * alua_state_dir: DIR/<target name, '/' and ':' as '_'>.lun<N><suffix>,
 * the same on both nodes as they use the same target name; without it,
 * next to a file store: <path><suffix>.  0, -ENOENT (a block device
 * without alua_state_dir: /dev is not shared between machines) or
 * -ENAMETOOLONG. */
int lun_shared_state_path(const struct lun_settings *s,
			  const char *target_name, const char *suffix,
			  char *out, size_t len);
/* s->path as shown to operators (show, JSON, log): a URL's CHAP secret
 * ("iscsi://user%secret@host/...") is left out.  Returns buf, or "None"
 * for an empty path. */
const char *lun_settings_path_shown(const struct lun_settings *s, char *buf,
				    size_t len);
/* The flags (LUN_KEY_*) of every key whose value differs between a and
 * b, or 0 if none does; *first (if not NULL) is the first such key not
 * flagged LUN_KEY_RUNTIME | LUN_KEY_PARAM.  A size of 0 in b means "the
 * store's size" and matches any size. */
unsigned lun_settings_diff(const struct lun_settings *a,
			   const struct lun_settings *b,
			   const struct lun_key **first);
/* Copy into dst the value of every key of src that has one of flags. */
void lun_settings_merge(struct lun_settings *dst, const struct lun_settings *src,
			unsigned flags);

struct hang_lun;
struct target;
struct cbt_set;

struct scsi_lun {
	/* The settings: an immutable snapshot, replaced whole by
	 * lun_settings_publish().  Read it through lun_settings_get(). */
	struct lun_settings *_Atomic set;
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
	/* Copies of the settings fixed when the LUN is created
	 * (lun_fixed_init()), for code that may run on a thread that is
	 * neither a reactor nor holds config_lock() (the ALUA handover
	 * worker and watchdog, scsi_lun_refresh() on a takeover, the
	 * reservation file it re-reads): such a thread must not read a
	 * snapshot, which an update may free under it. */
	uint64_t id;			/* the LUN number */
	uint32_t block_size;
	char path[PATH_MAX];		/* the store's path, "" if none;
					 * a mirror's pivot changes it
					 * (scsi_pr_store_moved(); never on
					 * a LUN with alua_group) */
	/* Called by the last scsi_lun_put(); set by scsi_lun_create(). */
	void (*release)(struct scsi_lun *l);
};

/* Copy into l the values of s that are fixed for the LUN's life (its
 * number, block size and store path); before l is shared. */
void lun_fixed_init(struct scsi_lun *l, const struct lun_settings *s);

/* Take a reference (the caller already holds one, or a table does). */
void scsi_lun_get(struct scsi_lun *l);
/* Drop a reference; the last one calls l->release (closes the store and
 * frees).  NULL is allowed. */
void scsi_lun_put(struct scsi_lun *l);

/* ---- settings snapshots (lun.c) ----
 *
 * A LUN's settings never change in place: an update builds a new object
 * and publishes it with one atomic pointer store, so a reader sees either
 * the old settings or the new ones, never a mix.
 *
 * Who may read, and for how long:
 * - a reactor thread: lun_settings_get() once per use (per command step),
 *   and only until its current callback returns: never store the pointer
 *   in a command or across a reactor_call().  The old snapshot is freed
 *   after reactor_synchronize() (reactor.h), which the healthy path pays
 *   nothing per command for;
 * - any other thread: while it holds what serializes updates (holdfast's
 *   management requests and a SIGHUP reload all run under config_lock()),
 *   or before the LUN is shared (creation, unit tests). */
static inline const struct lun_settings *
lun_settings_get(const struct scsi_lun *l)
{
	/* seq_cst pairs with reactor_synchronize()'s quiescent-state
	 * counters; on x86 and arm64 it is a plain (acquire) load. */
	return atomic_load_explicit(&l->set, memory_order_seq_cst);
}
/* Make s (malloc'ed, now owned by the LUN) the current settings; returns
 * the previous snapshot (NULL on a new LUN) for lun_settings_retire().
 * Callers serialize updates of one LUN. */
struct lun_settings *lun_settings_publish(struct scsi_lun *l,
					  struct lun_settings *s);
/* Free a snapshot unpublished before the call once no reactor can still
 * use it (blocks for a loop turn; hold no lock a reactor may wait for).
 * NULL is allowed. */
void lun_settings_retire(struct lun_settings *old);
/* Free the current snapshot of a LUN nobody else can reach any more (the
 * last reference is gone). */
void lun_settings_release(struct scsi_lun *l);

#endif
