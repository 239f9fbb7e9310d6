/* target.h - the table of targets, their LUNs and ACLs.
 *
 * Shared by every reactor (lookups at login and per command) and changed by
 * the management thread.  All functions are thread safe.  Lookups return
 * references (tgt_put / scsi_lun_put), so a target or LUN removed while in
 * use is freed only after its last user. */
#ifndef HOLDFAST_TARGET_H
#define HOLDFAST_TARGET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lun.h"
#include "util.h"

#define TGT_NAME_MAX 224
#define TGT_MAX_LUNS 256	/* LUN numbers 0..255 (flat addressing) */

enum acl_kind { ACL_ALL, ACL_ADDR, ACL_NAME };

struct acl_rule {
	struct list_head link;
	enum acl_kind kind;
	char text[TGT_NAME_MAX];	/* as given: "ALL", "10.0.0.0/8", IQN */
	struct sockaddr_storage addr;	/* ACL_ADDR */
	int prefix;			/* ACL_ADDR: prefix length */
};

/* iSCSI parameter overrides set per target (e.g. MaxRecvDataSegmentLength,
 * ImmediateData); stored as text, applied at login. */
struct tgt_param {
	struct list_head link;
	char key[64];
	char value[256];
};

struct target {
	int tid;
	char name[TGT_NAME_MAX];
	bool offline;			/* state=offline: refuse new logins */
	uint32_t nop_interval;		/* seconds, 0 = no target NOP-In */
	uint32_t nop_count;		/* unanswered pings before drop */
	struct list_head acls;		/* struct acl_rule */
	struct list_head params;	/* struct tgt_param */
	/* NULL = absent; [0] unused.  Written under lock with atomic
	 * stores; tgt_lun_get() reads it without the lock (RCU-style: the
	 * table's reference on a LUN taken out is dropped only after
	 * reactor_synchronize()). */
	struct scsi_lun *luns[TGT_MAX_LUNS];
	atomic_int refcnt;
	atomic_int nr_sessions;		/* maintained by the iSCSI layer */
	pthread_mutex_t lock;		/* guards acls, params, changes of
					 * luns[] */
	struct list_head link;		/* in the table, ordered by tid */
};

/* ---- table ---- */
void tgt_table_init(void);
/* Remove and release every target (shutdown). */
void tgt_table_clear(void);

/* Create target; tid <= 0 picks the lowest free tid.  Returns the tid,
 * or -EEXIST (tid or name taken), -EINVAL (bad name). */
int tgt_create(int tid, const char *name);
/* Delete; -ENOENT, -EBUSY if sessions exist and !force. */
int tgt_delete(int tid, bool force);

/* References; NULL if absent. */
struct target *tgt_get_by_tid(int tid);
struct target *tgt_get_by_name(const char *name);
void tgt_get(struct target *t);
void tgt_put(struct target *t);

/* Call fn for every target in tid order (under the table's read lock: fn
 * must not call tgt_create/tgt_delete). */
void tgt_for_each(void (*fn)(struct target *t, void *arg), void *arg);

/* ---- LUNs ---- */
/* Add a LUN (opens its backend).  -EEXIST, -ENOENT (no target), -EINVAL,
 * or the backend's -errno with *errmsg set. */
int tgt_lun_add(int tid, const struct lun_settings *s, const char **errmsg);
/* The same on a store node that is already open (a snapshot export);
 * the store is the LUN's, or closed, whatever the result. */
int tgt_lun_add_on(int tid, const struct lun_settings *s,
		   struct backend *store, const char **errmsg);
int tgt_lun_del(int tid, uint64_t lun, bool force);
/* Referenced LUN or NULL.  No lock (one load and one atomic add, per
 * command): from a reactor callback, or from a thread that holds
 * config_lock() (which serializes LUN deletes), or before the target is
 * shared. */
struct scsi_lun *tgt_lun_get(struct target *t, uint64_t lun);
/* Fill luns[] with the LUN numbers present, ascending; returns the count. */
int tgt_lun_list(struct target *t, uint64_t *luns, int max);
/* Number of targets in the table. */
int tgt_count(void);

/* ---- ACLs ---- */
/* rule: "ALL", an IPv4/IPv6 address, a CIDR, or (is_name) an initiator
 * name.  -EEXIST, -EINVAL. */
int tgt_acl_add(struct target *t, const char *rule, bool is_name);
int tgt_acl_del(struct target *t, const char *rule, bool is_name);
/* Parse and validate a rule without adding it (config validation).
 * 0 / -EINVAL. */
int tgt_acl_parse(const char *rule, bool is_name, struct acl_rule *out);
/* May this initiator log in?  Address rules OR name rules; none = no. */
bool tgt_acl_allows(struct target *t, const struct sockaddr *peer,
		    const char *initiator_name);

/* ---- per-target iSCSI parameter overrides ---- */
/* Store a per-target iSCSI key override; the caller has checked it with
 * iscsi_param_override_check().  0 / -EINVAL (too long). */
int tgt_param_set(struct target *t, const char *key, const char *value);
/* Copy the value of key into buf; 0 or -ENOENT. */
int tgt_param_get(struct target *t, const char *key, char *buf, unsigned len);

#endif
