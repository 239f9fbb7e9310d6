/* config.h - targets.conf (libconfig syntax).
 *
 * config_load() parses and validates the whole file before anything is
 * applied: a bad file is refused as a whole with "FILE:LINE: key: reason"
 * and nothing is served. */
#ifndef HOLDFAST_CONFIG_H
#define HOLDFAST_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "iscsi.h"
#include "lun.h"

#define CONFIG_MAX_PORTALS 16


struct config {
	char path[4096];		/* the file, absolute */
	struct portal_config portals[CONFIG_MAX_PORTALS];
	int nr_portals;
	struct iscsi_limits limits;	/* "limits", defaults if absent */
	/* the parsed libconfig tree is kept for config_apply() */
	void *priv;
};

/* Parse and validate path.  On error returns -EINVAL (or -errno) and writes
 * "FILE:LINE: key: reason" into err. */
int config_load(const char *path, struct config *cfg, char *err,
		unsigned errlen);
/* Create the targets, ACLs and LUNs of cfg in the target table (creating
 * sparse backing files as needed).  On error nothing is left behind and err
 * says why. */
int config_apply(struct config *cfg, char *err, unsigned errlen);
void config_free(struct config *cfg);
/* Write the running configuration (target table, LUN settings, ACLs,
 * CHAP bindings, and the portals of the configuration last applied) as
 * targets.conf text that config_load() accepts.  CHAP passwords are left
 * empty.  0 / -EIO. */
int config_dump(FILE *f);
/* Write the running configuration to path as config_dump() does but with
 * the CHAP secrets, so the file restarts the same configuration: a
 * temporary file in the same directory, fsync, checked with
 * config_load(), renamed over path (mode 0600 when it holds secrets).
 * 0 / -errno with a reason in err (config_save.c). */
int config_save(const char *path, char *err, unsigned errlen);
/* SIGHUP: load path and apply the difference to the running target
 * table (targets, LUNs, ACLs, accounts, run-time LUN settings) without
 * touching what did not change.  A file that does not load changes
 * nothing.  Logs what it did.  0 / -errno (config_reload.c). */
int config_reload(const char *path);
/* The configuration config_apply() last applied successfully (portals for
 * show), or NULL. */
const struct config *config_get_active(void);

/* Parse "1G", "512M", "4096", "10k" into bytes.  0 / -EINVAL. */

/* Parse "ADDR:PORT" / "[v6]:PORT" (port default 3260). 0 / -EINVAL. */
int config_parse_portal(const char *s, struct sockaddr_storage *ss,
			socklen_t *len);


/* Delete target tid (tgt_delete()) and unbind its CHAP accounts: every
 * path that removes a target (tgtadm, SIGHUP reload, a failed apply) goes
 * through here.  0, -ENOENT, -EBUSY (sessions and !force). */
int config_target_delete(int tid, bool force);

/* Hold off other configuration changes: every management request and a
 * SIGHUP reload run under it, so the two never change the target table at
 * once. */
void config_lock(void);
void config_unlock(void);

#endif
