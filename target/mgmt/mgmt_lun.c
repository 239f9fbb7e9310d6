/* mgmt_lun.c - `tgtadm --mode logicalunit` requests: new, delete and the
 * all-or-nothing update (--params), including holdfast's own keys (hang
 * settings, fault=, hang=, and the block stack's filter_add=,
 * filter_pos=, filter_remove= in mgmt_stack.c). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hang.h"
#include "mgmt_internal.h"
#include "scsi.h"
#include "target.h"
#include "util.h"

static int mgmt_lun_new(const struct mgmt_req *req)
{
	struct lun_settings s;
	char v[PATH_MAX], reason[256];
	const char *why = NULL;
	struct target *t;
	int ret;

	if (req->lun == MGMT_LUN_UNSET)
		return MGMT_INVALID_REQUEST;
	if (req->lun == 0)
		return MGMT_LUN_EXIST;	/* the controller LUN is always there */
	if (req->lun >= TGT_MAX_LUNS)
		return MGMT_INVALID_REQUEST;
	if (req->device_type != MGMT_DEVTYPE_DISK)
		return MGMT_UNSUPPORTED_OPERATION;
	t = tgt_get_by_tid(req->tid);
	if (!t)
		return MGMT_NO_TARGET;
	tgt_put(t);

	lun_settings_default(&s, req->lun);
	if (mgmt_payload_get(req->payload, "bstype", v, sizeof(v))) {
		/* tgtd's store types that mean "a file or block device". */
		if (strcmp(v, "rdwr") == 0 || strcmp(v, "aio") == 0 ||
		    strcmp(v, "file") == 0)
			snprintf(s.backend, sizeof(s.backend), "file");
		else if (strcmp(v, "null") == 0)
			snprintf(s.backend, sizeof(s.backend), "null");
		else if (strcmp(v, "iscsi") == 0)	/* gateway: -b URL */
			snprintf(s.backend, sizeof(s.backend), "iscsi");
		else if (strcmp(v, "rbd") == 0)		/* tgt's bs_rbd: -b POOL/IMAGE */
			snprintf(s.backend, sizeof(s.backend), "rbd");
		else
			return MGMT_INVALID_REQUEST;
	}
	if (mgmt_payload_get(req->payload, "path", v, sizeof(v)) &&
	    (strcmp(s.backend, "file") == 0 || strcmp(s.backend, "iscsi") == 0 ||
	     strcmp(s.backend, "rbd") == 0) &&
	    lun_setting_apply(&s, "path", v, reason, sizeof(reason)))
		return MGMT_INVALID_REQUEST;
	if (mgmt_payload_get(req->payload, "bsopts", v, sizeof(v)) && v[0]) {
		/* only the gateway store (iscsi_conf.h) and rbd
		 * ("conf=...;id=...", as tgt's bs_rbd) take options */
		if (strcmp(s.backend, "iscsi") != 0 &&
		    strcmp(s.backend, "rbd") != 0)
			return MGMT_UNSUPPORTED_OPERATION;
		if (lun_setting_apply(&s, "bsopts", v, reason, sizeof(reason)))
			return MGMT_INVALID_REQUEST;
	}
	if (mgmt_payload_get(req->payload, "bsoflags", v, sizeof(v))) {
		/* tgtd: "direct", "sync" or both joined by ':'.  holdfast
		 * opens O_DIRECT by default anyway; "sync" adds O_SYNC. */
		char *save = NULL;
		for (char *f = strtok_r(v, ":|", &save); f;
		     f = strtok_r(NULL, ":|", &save)) {
			if (strcmp(f, "direct") == 0)
				s.direct = true;
			else if (strcmp(f, "sync") == 0)
				s.sync = true;
			else
				return MGMT_INVALID_REQUEST;
		}
	}
	if (mgmt_payload_get(req->payload, "blocksize", v, sizeof(v)) &&
	    lun_setting_apply(&s, "block_size", v, reason, sizeof(reason)))
		return MGMT_INVALID_REQUEST;
	if (lun_settings_check(&s, NULL, NULL, reason, sizeof(reason))) {
		log_err("target %d: LUN %llu not created: %s", req->tid,
			(unsigned long long)req->lun, reason);
		return MGMT_INVALID_REQUEST;
	}
	ret = tgt_lun_add(req->tid, &s, &why);
	if (ret == -EEXIST)
		return MGMT_LUN_EXIST;
	if (ret == -ENOENT && !why)
		return MGMT_NO_TARGET;
	if (ret) {
		log_err("target %d: LUN %llu not created: %s%s%s", req->tid,
			(unsigned long long)req->lun, why ? why : "",
			why ? ": " : "", strerror(-ret));
		return ret == -ENOMEM ? MGMT_NOMEM : MGMT_INVALID_REQUEST;
	}
	return MGMT_SUCCESS;
}

static int mgmt_lun_delete(const struct mgmt_req *req)
{
	struct target *t = tgt_get_by_tid(req->tid);
	int ret;

	if (!t)
		return MGMT_NO_TARGET;
	tgt_put(t);
	if (req->lun == MGMT_LUN_UNSET)
		return MGMT_INVALID_REQUEST;
	ret = tgt_lun_del(req->tid, req->lun, req->force != 0);
	if (ret == -ENOENT)
		return MGMT_NO_LUN;
	if (ret == -EBUSY)
		return MGMT_LUN_ACTIVE;
	return ret ? MGMT_UNKNOWN_ERR : MGMT_SUCCESS;
}

/* Online resize (README "Resizing a LUN"): size=BYTES is a key of the
 * table (scsi_lun_update() resizes the store); force=1 lets it shrink
 * (and ALUA take the lock over), action=rescan re-reads a store grown
 * outside holdfast.  These two are verbs, not settings. */
static bool mgmt_lun_key_resize(const char *key)
{
	return strcmp(key, "action") == 0 || strcmp(key, "force") == 0;
}

/* Parse action= / force= into *flags (scsi_lun_update()'s force). */
static int mgmt_resize_item(unsigned *flags, const char *key,
			    const char *val, char *reason, unsigned len)
{
	if (strcmp(key, "action") == 0) {
		if (strcmp(val, "rescan") != 0) {
			snprintf(reason, len, "unknown action (rescan)");
			return -EINVAL;
		}
		*flags |= LUN_KEY_RESIZE;
	} else if (strcmp(val, "1") == 0 || strcmp(val, "yes") == 0) {
		*flags |= SCSI_UPDATE_FORCE;
	} else if (strcmp(val, "0") != 0 && strcmp(val, "no") != 0) {
		snprintf(reason, len, "force is 0 or 1");
		return -EINVAL;
	}
	return 0;
}

/* Is this "key=value" item a LUN key that update takes (so it ends a
 * fault spec)? */
static bool mgmt_item_is_lun_key(const char *item)
{
	const struct lun_key *k;
	char key[64];
	size_t n = strcspn(item, "=");

	if (n >= sizeof(key))
		return false;
	memcpy(key, item, n);
	key[n] = '\0';
	k = lun_key_find(key);
	return (k && (lun_key_flags(k) & (LUN_KEY_RUNTIME | LUN_KEY_PARAM))) ||
	       strcmp(key, "hang") == 0 || mgmt_stack_key(key) ||
	       mgmt_lun_key_resize(key);
}

static bool mgmt_hang_verb_valid(const char *v)
{
	return strcmp(v, "pause") == 0 || strcmp(v, "resume") == 0 ||
	       strcmp(v, "retry") == 0 || strcmp(v, "fail") == 0;
}

/* logicalunit update: "targetOps k=v,k=v," applied all-or-nothing.  Every
 * item is applied to a copy of the settings first; an unknown key or a bad
 * value answers 17 and changes nothing.  fault=SPEC takes the following
 * items up to the next LUN key as part of its spec (the fault backend's
 * own syntax uses commas: fault=eio,ops=w,lba=0-7). */
static int mgmt_lun_update(const struct mgmt_req *req)
{
	char *copy = NULL, *items[MGMT_MAX_ITEMS];
	char fault[sizeof(((struct lun_settings *)0)->backend_opts)] = "";
	char reason[512], hang[16] = "";
	struct mgmt_stack_change stack = { .add = "" };
	unsigned flags = req->force ? SCSI_UPDATE_FORCE : 0;
	bool has_fault = false, has_filters = false, alua = false;
	const void *fault_was;
	struct lun_settings tmp;
	const struct lun_key *k;
	struct scsi_lun *lun = NULL;
	struct target *t;
	int n, ret, err = MGMT_SUCCESS;

	t = tgt_get_by_tid(req->tid);
	if (!t)
		return MGMT_NO_TARGET;
	if (req->lun != MGMT_LUN_UNSET)
		lun = tgt_lun_get(t, req->lun);
	tgt_put(t);
	if (!lun)
		return MGMT_NO_LUN;

	n = mgmt_payload_split(req->payload, &copy, items);
	if (n <= 0) {
		err = n == -ENOMEM ? MGMT_NOMEM : MGMT_INVALID_REQUEST;
		goto out;
	}
	/* Management requests hold config_lock(): the snapshot is stable. */
	tmp = *lun_settings_get(lun);

	for (int i = 0; i < n && !err; i++) {
		char *eq = strchr(items[i], '=');
		const char *key = items[i], *val;

		if (!eq) {
			err = MGMT_INVALID_REQUEST;
			break;
		}
		*eq = '\0';
		val = eq + 1;
		/* an alua_* key is applied even when it repeats the current
		 * value: alua_state=active again retries a refused takeover */
		if (strncmp(key, "alua_", 5) == 0)
			alua = true;
		if (strcmp(key, "fault") == 0) {
			size_t len = strlen(val);
			if (len >= sizeof(fault)) {
				err = MGMT_INVALID_REQUEST;
				break;
			}
			memcpy(fault, val, len + 1);
			while (i + 1 < n && !mgmt_item_is_lun_key(items[i + 1])) {
				const char *more = items[++i];
				if (len + 1 + strlen(more) >= sizeof(fault)) {
					err = MGMT_INVALID_REQUEST;
					break;
				}
				fault[len++] = ',';
				memcpy(fault + len, more, strlen(more) + 1);
				len += strlen(more);
			}
			if (err)
				break;
			has_fault = true;
			snprintf(tmp.backend_opts, sizeof(tmp.backend_opts),
				 "%s", fault);
		} else if (strcmp(key, "filters") == 0) {
			/* "filters=fault,passthrough": the items after it
			 * that are no key=value belong to it */
			char list[sizeof(tmp.filters)];
			size_t len = strlen(val);
			char why[128];

			if (len >= sizeof(list)) {
				err = MGMT_INVALID_REQUEST;
				break;
			}
			memcpy(list, val, len + 1);
			while (i + 1 < n && !mgmt_item_is_lun_key(items[i + 1])) {
				const char *more = items[++i];

				if (len + 1 + strlen(more) >= sizeof(list)) {
					err = MGMT_INVALID_REQUEST;
					break;
				}
				list[len++] = ',';
				memcpy(list + len, more, strlen(more) + 1);
				len += strlen(more);
			}
			if (!err && lun_setting_apply(&tmp, "filters", list, why,
						      sizeof(why))) {
				log_err("target %d: LUN %llu: filters=%s: %s",
					req->tid, (unsigned long long)req->lun,
					list, why);
				err = MGMT_INVALID_REQUEST;
			}
			if (err)
				break;
			has_filters = true;
		} else if (mgmt_stack_key(key)) {
			if (mgmt_stack_parse(&stack, key, val)) {
				log_err("target %d: LUN %llu: %s=%s: bad value or given twice",
					req->tid, (unsigned long long)req->lun,
					key, val);
				err = MGMT_INVALID_REQUEST;
			}
		} else if (strcmp(key, "hang") == 0) {
			if (!mgmt_hang_verb_valid(val))
				err = MGMT_INVALID_REQUEST;
			else
				snprintf(hang, sizeof(hang), "%s", val);
		} else if (mgmt_lun_key_resize(key)) {
			if (mgmt_resize_item(&flags, key, val, reason,
					     sizeof(reason))) {
				log_err("target %d: LUN %llu: %s=%s: %s",
					req->tid, (unsigned long long)req->lun,
					key, val, reason);
				err = MGMT_INVALID_REQUEST;
			}
		} else if (!(k = lun_key_find(key)) ||
			   !(lun_key_flags(k) & LUN_KEY_RUNTIME)) {
			log_err("target %d: LUN %llu: %s: %s", req->tid,
				(unsigned long long)req->lun, key,
				k ? "fixed when the LUN is created"
				  : "unknown key");
			err = MGMT_INVALID_REQUEST;
		} else if (lun_setting_apply(&tmp, key, val, reason,
					     sizeof(reason))) {
			log_err("target %d: LUN %llu: %s=%s: %s", req->tid,
				(unsigned long long)req->lun, key, val, reason);
			err = MGMT_INVALID_REQUEST;
		}
	}
	if (err)
		goto out;

	/* Refuse before changing anything: the stack request, and the
	 * settings as a whole (scsi_lun_update() checks them again against
	 * the chain it then has). */
	if (has_filters && (stack.add[0] || stack.remove[0]))
		snprintf(reason, sizeof(reason), "filters names the whole "
			 "chain: not with filter_add or filter_remove");
	else if (mgmt_stack_check(&stack))
		snprintf(reason, sizeof(reason), "filter_pos needs filter_add");
	else
		lun_settings_check(&tmp, lun->be, NULL, reason, sizeof(reason));
	if ((has_filters && (stack.add[0] || stack.remove[0])) ||
	    mgmt_stack_check(&stack) ||
	    lun_settings_check(&tmp, lun->be, NULL, NULL, 0)) {
		log_err("target %d: LUN %llu: update refused: %s", req->tid,
			(unsigned long long)req->lun, reason);
		err = MGMT_INVALID_REQUEST;
		goto out;
	}
	/* Apply: the block stack changes first (the backend may refuse
	 * them; a fault spec then reaches the topmost fault filter of the
	 * new chain), then validate and install the settings with the fault
	 * spec (scsi_lun_update()), then the hang verb. */
	fault_was = scsi_lun_fault_node(lun);
	err = mgmt_stack_apply(req->tid, req->lun, tmp.block_size, lun->be,
			       &stack);
	if (err)
		goto out;
	/* The fault spec lived in the topmost fault filter: if that one is
	 * gone (or another is above it now), so is the spec. */
	if (!has_fault && scsi_lun_fault_node(lun) != fault_was)
		tmp.backend_opts[0] = '\0';
	/* The settings record the chain filter_add / filter_remove made
	 * (dump, save and reload then keep it). */
	if ((stack.add[0] || stack.remove[0]) &&
	    scsi_lun_filters_now(lun, tmp.filters, sizeof(tmp.filters)))
		log_warn("target %d: LUN %llu: the chain is not recorded in "
			 "filters", req->tid, (unsigned long long)req->lun);
	/* One update (scsi_lun_update()): the resize, the ALUA state (taking
	 * or giving up the store may be refused: the other node is active;
	 * it may wait for writes to drain), the fault spec, then the
	 * settings as one new snapshot. */
	if (has_fault)
		flags |= LUN_KEY_PARAM;
	if (alua)
		flags |= LUN_KEY_ALUA;
	ret = scsi_lun_update(lun, &tmp, flags, reason, sizeof(reason));
	if (ret < 0) {
		log_err("target %d: LUN %llu: update refused: %s", req->tid,
			(unsigned long long)req->lun, reason);
		err = ret == -EOPNOTSUPP ? MGMT_UNSUPPORTED_OPERATION :
		      ret == -EBUSY && alua ? MGMT_LUN_ACTIVE :
		      MGMT_INVALID_REQUEST;
		goto out;
	}
	if (hang[0] && hang_verb(lun, hang))
		err = MGMT_INVALID_REQUEST;
	log_info("target %d: LUN %llu updated: %s", req->tid,
		 (unsigned long long)req->lun, req->payload);
out:
	free(copy);
	scsi_lun_put(lun);
	return err;
}

int mgmt_lun(const struct mgmt_req *req)
{
	switch (req->op) {
	case MGMT_OP_NEW:
		return mgmt_lun_new(req);
	case MGMT_OP_DELETE:
		return mgmt_lun_delete(req);
	case MGMT_OP_UPDATE:
		return mgmt_lun_update(req);
	}
	return MGMT_UNSUPPORTED_OPERATION;
}

