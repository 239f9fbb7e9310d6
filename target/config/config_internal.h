/* config_internal.h - the parsed form of targets.conf, shared by
 * config.c (load and validate) and config_apply.c (create what it
 * describes).  Not for other modules. */
#ifndef HOLDFAST_CONFIG_INTERNAL_H
#define HOLDFAST_CONFIG_INTERNAL_H

#include <libconfig.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "account.h"
#include "config.h"
#include "lun.h"
#include "target.h"

#define CFG_WHERE_MAX (PATH_MAX + 32)

struct cfg_param {
	char key[64];
	char value[256];
};

struct cfg_acl {
	char text[TGT_NAME_MAX];
	bool is_name;
};

/* A dirty bitmap declared in a LUN: bitmaps = ( { name = ...; } ); */
#define CFG_MAX_BITMAPS 16
struct cfg_bitmap {
	char name[64];
	uint32_t granularity;
	bool persistent, enabled;
};

struct cfg_lun {
	struct lun_settings s;
	char where[CFG_WHERE_MAX];	/* "FILE:LINE" of the LUN's group */
	struct cfg_bitmap bitmaps[CFG_MAX_BITMAPS];
	int nr_bitmaps;
};

/* A reference to a CHAP account, remembered with its place in the file
 * because accounts may be defined after the targets that use them. */
struct cfg_account_ref {
	char user[ACCT_NAME_MAX];
	char where[CFG_WHERE_MAX];
};

/* CHAP bindings of a target (or of discovery sessions). */
struct cfg_auth {
	struct cfg_account_ref *incoming;	/* incoming_users */
	int nr_incoming;
	bool has_outgoing;
	struct cfg_account_ref outgoing;	/* outgoing_user (mutual CHAP) */
};

struct cfg_account {
	char user[ACCT_NAME_MAX];
	char password[ACCT_SECRET_MAX];	/* wiped when freed */
	char where[CFG_WHERE_MAX];
};

struct cfg_target {
	char name[TGT_NAME_MAX];
	int tid;
	char where[CFG_WHERE_MAX];
	bool has_nop_interval, has_nop_count;
	uint32_t nop_interval, nop_count;
	struct cfg_acl *acls;
	int nr_acls;
	struct cfg_param *params;
	int nr_params;
	struct cfg_lun *luns;
	int nr_luns;
	struct cfg_auth auth;
};

struct cfg_priv {
	struct cfg_target *targets;
	int nr_targets;
	struct cfg_account *accounts;
	int nr_accounts;
	struct cfg_auth discovery;
};

/* Parsing context: where messages point and where the first one goes. */
struct cfg_ctx {
	const char *file;	/* as the user named it */
	char dir[PATH_MAX];	/* directory of the file (for relative paths) */
	char *err;
	unsigned errlen;
	/* the file's top level: defaults for the LUNs (cfg_lun_globals) */
	const config_setting_t *root;
};

/* "FILE:LINE" of s. */
void cfg_where(const struct cfg_ctx *c, const config_setting_t *s,
	       char *buf, size_t len);
/* Write "FILE:LINE: key: reason" for s (or for a saved where) into the
 * context's error buffer; returns -EINVAL. */
int cfg_fail(struct cfg_ctx *c, const config_setting_t *s, const char *key,
	     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int cfg_fail_at(struct cfg_ctx *c, const char *where, const char *key,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
const char *cfg_type_name(int type);

void cfg_priv_free(struct cfg_priv *pv);
/* Remember cfg (config_apply succeeded) for config_dump's portals; cfg
 * must outlive the daemon's use of it, as main's does. */
void config_set_active(const struct config *cfg);

/* CHAP accounts (config_auth.c). */
int cfg_accounts(struct cfg_ctx *c, const config_setting_t *s,
		 struct cfg_priv *pv);
int cfg_discovery(struct cfg_ctx *c, const config_setting_t *s,
		  struct cfg_priv *pv);
/* incoming_users = [ ... ] or outgoing_user = "..." of a target. */
int cfg_auth_member(struct cfg_ctx *c, const config_setting_t *v,
		    struct cfg_auth *a);
/* After the whole file: every reference names a defined account, and no
 * secret authenticates in both directions. */
int cfg_auth_check(struct cfg_ctx *c, struct cfg_priv *pv);
void cfg_auth_free(struct cfg_priv *pv);
/* Create the accounts and bind them (config_apply); on failure err is
 * set.  Created account names are appended to *made (for rollback). */
int cfg_auth_apply(const struct cfg_priv *pv, char *err, unsigned errlen,
		   char ***made, int *nr_made);
int cfg_auth_bind(const struct cfg_auth *a, int tid, char *err,
		  unsigned errlen);

/* config_apply.c: SIGHUP for declared dirty bitmaps.  Adds the bitmaps pv
 * declares (and sets their enabled state), removes the ones the file
 * applied before declared and pv no longer does (bitmaps made with
 * holdfastadm are never touched), then remembers pv's.  Returns how many
 * bitmaps it changed.  Called with config_lock() held. */
int cfg_bitmaps_reload(const struct cfg_priv *pv);

#endif
