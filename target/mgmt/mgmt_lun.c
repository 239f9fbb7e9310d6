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
	if (lun_settings_validate(&s, reason, sizeof(reason))) {
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

/* Keys `logicalunit update` may change on a live LUN.  What the store is
 * (backend, path, size, block size, direct) is fixed at creation. */
static const char *const mgmt_lun_runtime_keys[] = {
	"vendor_id", "product_id", "product_rev", "scsi_id", "scsi_sn",
	"sense_format", "removable", "readonly", "online",
	"thin_provisioning", "write_cache", "rerror", "werror",
	"retry_interval", "retry_timeout", "retry_errors",
	"alua_state", "alua_group", "alua_peer_group",
};

static bool mgmt_lun_key_runtime(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(mgmt_lun_runtime_keys); i++)
		if (strcmp(key, mgmt_lun_runtime_keys[i]) == 0)
			return true;
	return false;
}

/* Online resize (README "Resizing a LUN"): size=BYTES grows the store,
 * force=1 lets it shrink, action=rescan re-reads a store grown outside
 * holdfast.  Handled apart from the settings: they act on the store. */
struct mgmt_resize {
	bool want;
	uint64_t size;		/* 0 = rescan */
	bool force;
};

static bool mgmt_lun_key_resize(const char *key)
{
	return strcmp(key, "size") == 0 || strcmp(key, "action") == 0 ||
	       strcmp(key, "force") == 0;
}

/* Parse one resize item into rs.  0 / -EINVAL with a reason. */
static int mgmt_resize_item(struct mgmt_resize *rs, const char *key,
			    const char *val, char *reason, unsigned len)
{
	if (strcmp(key, "size") == 0) {
		if (util_parse_size(val, &rs->size) || !rs->size) {
			snprintf(reason, len, "bad size (bytes, or a number "
				 "with K, M, G or T)");
			return -EINVAL;
		}
		rs->want = true;
	} else if (strcmp(key, "action") == 0) {
		if (strcmp(val, "rescan") != 0) {
			snprintf(reason, len, "unknown action (rescan)");
			return -EINVAL;
		}
		rs->want = true;
	} else if (strcmp(val, "1") == 0 || strcmp(val, "yes") == 0) {
		rs->force = true;
	} else if (strcmp(val, "0") != 0 && strcmp(val, "no") != 0) {
		snprintf(reason, len, "force is 0 or 1");
		return -EINVAL;
	}
	return 0;
}

/* Is this "key=value" item a LUN key (so it ends a fault spec)? */
static bool mgmt_item_is_lun_key(const char *item)
{
	char key[64];
	size_t n = strcspn(item, "=");

	if (n >= sizeof(key))
		return false;
	memcpy(key, item, n);
	key[n] = '\0';
	return mgmt_lun_key_runtime(key) || strcmp(key, "fault") == 0 ||
	       strcmp(key, "hang") == 0 || mgmt_stack_key(key) ||
	       mgmt_lun_key_resize(key);
}

static bool mgmt_hang_verb_valid(const char *v)
{
	return strcmp(v, "pause") == 0 || strcmp(v, "resume") == 0 ||
	       strcmp(v, "retry") == 0 || strcmp(v, "fail") == 0;
}

/* The first backend in lun's stack (top down) that takes run-time
 * parameters. */
static struct backend *mgmt_param_backend(struct scsi_lun *lun)
{
	for (struct backend *be = lun->be; be; be = be->inner)
		if (be->ops->set_param)
			return be;
	return NULL;
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
	struct mgmt_resize rs = { .force = req->force != 0 };
	bool has_fault = false, alua = false;
	struct lun_settings tmp;
	struct scsi_lun *lun = NULL;
	struct target *t;
	int n, err = MGMT_SUCCESS;

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
	pthread_mutex_lock(&lun->lock);
	tmp = lun->set;
	pthread_mutex_unlock(&lun->lock);

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
			if (mgmt_resize_item(&rs, key, val, reason,
					     sizeof(reason))) {
				log_err("target %d: LUN %llu: %s=%s: %s",
					req->tid, (unsigned long long)req->lun,
					key, val, reason);
				err = MGMT_INVALID_REQUEST;
			}
		} else if (!mgmt_lun_key_runtime(key)) {
			struct lun_settings scratch = tmp;
			bool known = lun_setting_apply(&scratch, key, val, reason,
						       sizeof(reason)) != -ENOENT;
			log_err("target %d: LUN %llu: %s: %s", req->tid,
				(unsigned long long)req->lun, key,
				known ? "fixed when the LUN is created"
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

	/* The settings as a whole, against the store actually open (the
	 * DESIGN.md safety rule: retry only on a store that bypasses the
	 * page cache). */
	const char *why = hang_check_settings(&tmp, lun->be);
	if (!why && lun_settings_validate(&tmp, reason, sizeof(reason)))
		why = reason;
	if (!why && mgmt_stack_check(&stack))
		why = "filter_pos needs filter_add";
	if (why) {
		log_err("target %d: LUN %llu: update refused: %s", req->tid,
			(unsigned long long)req->lun, why);
		err = MGMT_INVALID_REQUEST;
		goto out;
	}

	/* Apply: the block stack changes and the fault spec first, the steps
	 * the backend may still refuse (a fault spec then reaches the topmost
	 * fault filter of the new chain); then the settings; then the hang
	 * verb. */
	err = mgmt_stack_apply(req->tid, req->lun, tmp.block_size, lun->be,
			       &stack);
	if (err)
		goto out;
	/* The resize too may still be refused by the store. */
	if (rs.want) {
		int ret = scsi_lun_refresh(lun, rs.size,
					   rs.force ? SCSI_REFRESH_FORCE : 0,
					   &why);
		if (ret) {
			log_err("target %d: LUN %llu: resize refused: %s%s%s",
				req->tid, (unsigned long long)req->lun,
				why ? why : "", why ? ": " : "",
				strerror(-ret));
			err = ret == -EOPNOTSUPP ? MGMT_UNSUPPORTED_OPERATION
						 : MGMT_INVALID_REQUEST;
			goto out;
		}
		tmp.size = lun->set.size;
	}
	/* ALUA (README "Two nodes in front of shared storage"): taking or
	 * giving up the store may be refused (the other node is active) and
	 * may wait for writes to drain. */
	/* Leaving the pair, or renumbering it, on a live LUN could leave
	 * both nodes serving: the group is fixed once set. */
	if (alua && lun->set.alua_group &&
	    (tmp.alua_group != lun->set.alua_group ||
	     tmp.alua_peer_group != lun->set.alua_peer_group)) {
		log_err("target %d: LUN %llu: alua_group and alua_peer_group "
			"are fixed once set (delete and add the LUN to change "
			"them)", req->tid, (unsigned long long)req->lun);
		err = MGMT_INVALID_REQUEST;
		goto out;
	}
	if (alua) {
		int ret = scsi_alua_apply(lun, &tmp, rs.force, &why);
		if (ret) {
			log_err("target %d: LUN %llu: alua_state=%s refused: %s",
				req->tid, (unsigned long long)req->lun,
				tmp.alua_standby ? "standby" : "active",
				why ? why : strerror(-ret));
			err = ret == -EBUSY ? MGMT_LUN_ACTIVE
					    : MGMT_INVALID_REQUEST;
			goto out;
		}
	}
	if (has_fault) {
		struct backend *be = mgmt_param_backend(lun);
		int ret = be ? be->ops->set_param(be, "fault", fault) : -EOPNOTSUPP;
		if (ret) {
			log_err("target %d: LUN %llu: fault=%s: %s", req->tid,
				(unsigned long long)req->lun, fault,
				strerror(-ret));
			err = ret == -EOPNOTSUPP ? MGMT_UNSUPPORTED_OPERATION
						 : MGMT_INVALID_REQUEST;
			goto out;
		}
	}
	lun_settings_install(lun, &tmp);
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

