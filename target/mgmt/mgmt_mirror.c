/* mgmt_mirror.c - `--mode job` requests for mirror jobs (issue 11): live
 * storage migration, cbt_mirror.h.
 *
 *   --op new    --mode job --tid T --lun L --params type=mirror,target=PATH
 *               [,copy_mode=background|write-blocking|auto]
 *               [,switch_after=S][,max_inflight=B][,rate_limit=B/S]
 *   --op update --mode job --params id=J,copy_mode=MODE
 *   --op update --mode job --params id=J,action=complete[,timeout=MS]
 *   --op update --mode job --params id=J,action=cancel
 *   --op delete --mode job --params id=J
 *   --op show   --mode job [--json]     (with the backup jobs)
 *
 * complete runs the pivot here, on the management thread (under
 * config_lock like every request), then names the new store in the LUN's
 * settings and, when holdfastd runs from a configuration file, saves it:
 * a SIGHUP or a restart must not bring the old store back behind the
 * initiators' backs. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbt_job.h"
#include "cbt_mirror.h"
#include "config.h"
#include "lun.h"
#include "mgmt_internal.h"
#include "scsi.h"
#include "target.h"

#define MIRROR_SHOW_MAX 256

static int merr(int err)
{
	switch (err) {
	case 0:
		return MGMT_SUCCESS;
	case -ENOMEM:
		return MGMT_NOMEM;
	case -EBUSY:
		return MGMT_LUN_ACTIVE;
	case -ENOENT:
		return MGMT_INVALID_REQUEST;
	default:
		return MGMT_INVALID_REQUEST;
	}
}

static void release_lun(void *arg)
{
	scsi_lun_put(arg);
}

static struct scsi_lun *lun_of(int tid, uint64_t nr)
{
	struct target *t = tgt_get_by_tid(tid);
	struct scsi_lun *lun;

	if (!t)
		return NULL;
	lun = tgt_lun_get(t, nr);
	tgt_put(t);
	if (lun && !lun->be) {
		scsi_lun_put(lun);
		return NULL;
	}
	return lun;
}

bool mgmt_mirror_claims(const struct mgmt_req *req)
{
	char v[32];
	uint64_t id;

	if (req->op == MGMT_OP_NEW)
		return mgmt_payload_get(req->payload, "type", v, sizeof(v)) &&
		       !strcmp(v, "mirror");
	if (req->op != MGMT_OP_UPDATE && req->op != MGMT_OP_DELETE)
		return false;
	return mgmt_payload_get(req->payload, "id", v, sizeof(v)) &&
	       mgmt_parse_u64(v, &id) && id <= UINT32_MAX &&
	       cbt_mirror_exists((unsigned)id);
}

/* The parameters of `type=mirror` (no LUN, no file looked at): 0 or
 * -EINVAL with *why. */
static int mirror_params_parse(const struct mgmt_items *it,
			       struct cbt_mirror_params *p, const char **why)
{
	const char *v;
	uint64_t n;

	p->mode = CBT_MIRROR_AUTO;
	if (!(v = mgmt_item(it, "target")) || v[0] != '/' ||
	    (size_t)snprintf(p->target, sizeof(p->target), "%s", v) >= sizeof(p->target)) {
		*why = "target=PATH (an absolute path) is required";
		return -EINVAL;
	}
	if ((v = mgmt_item(it, "copy_mode")) && cbt_mirror_mode_parse(v, &p->mode)) {
		*why = "copy_mode is background, write-blocking or auto";
		return -EINVAL;
	}
	if ((v = mgmt_item(it, "switch_after"))) {
		if (!mgmt_parse_u64(v, &n) || !n || n > 86400 * 365) {
			*why = "switch_after is a number of seconds (1 or more)";
			return -EINVAL;
		}
		p->switch_after_s = (uint32_t)n;
	}
	if ((v = mgmt_item(it, "max_inflight")) && !mgmt_parse_u64(v, &p->max_inflight)) {
		*why = "max_inflight is a number of bytes";
		return -EINVAL;
	}
	if ((v = mgmt_item(it, "rate_limit")) && !mgmt_parse_u64(v, &p->rate_limit)) {
		*why = "rate_limit is a number of bytes per second";
		return -EINVAL;
	}
	if ((v = mgmt_item(it, "dest_rate_limit")) &&
	    !mgmt_parse_u64(v, &p->dest_rate_limit)) {
		*why = "dest_rate_limit is a number of bytes per second";
		return -EINVAL;
	}
	return 0;
}

int mgmt_mirror_parse(const char *payload, struct cbt_mirror_params *p,
		      const char **why)
{
	struct mgmt_items it = { 0 };
	int err;

	*why = NULL;
	it.n = mgmt_payload_split(payload, &it.copy, it.v);
	if (it.n < 0)
		return it.n;
	err = mirror_params_parse(&it, p, why);
	free(it.copy);
	return err;
}

static int mirror_new(const struct mgmt_req *req, const struct mgmt_items *it,
		      struct mgmt_buf *b)
{
	struct cbt_mirror_params *p;
	const struct lun_settings *s;
	struct scsi_lun *lun;
	char rsrc[PATH_MAX], rdst[PATH_MAX];
	const char *why = NULL;
	unsigned id;
	int err = -EINVAL;

	if (req->lun == MGMT_LUN_UNSET)
		return MGMT_NO_LUN;
	lun = lun_of(req->tid, req->lun);
	if (!lun)
		return MGMT_NO_LUN;
	p = calloc(1, sizeof(*p));
	if (!p) {
		scsi_lun_put(lun);
		return MGMT_NOMEM;
	}
	s = lun_settings_get(lun);
	p->tid = req->tid;
	p->lun = req->lun;
	p->root = lun->be;
	p->r = cbt_job_reactor_for(req->lun);
	p->block_size = s->block_size;
	p->retry_ms = s->retry_interval_ms;
	err = mirror_params_parse(it, p, &why);
	if (err)
		goto bad;
	if (s->alua_group) {
		why = "a LUN shared between two nodes (alua_group) cannot move its store";
		err = -EINVAL;
		goto bad;
	}
	if (realpath(p->target, rdst) && s->path[0] && realpath(s->path, rsrc) &&
	    !strcmp(rsrc, rdst)) {
		why = "the destination is the LUN's own store";
		err = -EINVAL;
		goto bad;
	}
	p->release = release_lun;
	p->release_arg = lun;
	err = cbt_mirror_start(p, &id, &why);
	if (err)
		goto bad;
	err = cbt_mirror_marker_set(lun->target_name, req->lun, p->target);
	if (err && err != -ENOENT)
		log_warn("job %u: no marker for the mirror (%s): a crash during it will not be reported at the next start",
			 id, strerror(-err));
	free(p);
	mgmt_buf_printf(b, "job %u\n", id);
	return MGMT_SUCCESS;	/* the job holds the LUN reference */
bad:
	log_warn("mirror on tid %d lun %" PRIu64 ": %s", req->tid, req->lun,
		 why ? why : strerror(-err));
	free(p);
	scsi_lun_put(lun);
	return merr(err);
}

/* What complete records while the mirror still writes both sides. */
struct record {
	struct scsi_lun *lun;
	unsigned id;
	const char *path;
	bool done;
};

/* Name path as the LUN's store and save the configuration file (if
 * holdfastd runs from one). */
static int record_store(struct scsi_lun *lun, unsigned id, const char *path)
{
	const struct config *cfg = config_get_active();
	char err[256];
	int ret;

	ret = scsi_lun_store_moved(lun, path);
	if (ret)
		return ret;
	if (!cfg || !cfg->path[0])
		return 0;
	if (config_save(cfg->path, err, sizeof(err))) {
		log_err("job %u: the store path %s was not saved to %s: %s",
			id, path, cfg->path, err);
		return -EIO;
	}
	log_info("job %u: configuration saved to %s with the store %s", id,
		 cfg->path, path);
	return 0;
}

static int record_new_store(void *arg)
{
	struct record *r = arg;
	int err = record_store(r->lun, r->id, r->path);

	r->done = true;	/* undone on failure, whatever went through */
	return err;
}

static int mirror_complete(unsigned id, const struct mgmt_items *it)
{
	struct cbt_mirror_info *info = calloc(1, sizeof(*info));
	struct record rec = { .id = id };
	char *old = NULL;
	const char *why = NULL, *v;
	uint64_t timeout = CBT_MIRROR_COMPLETE_TIMEOUT_MS;
	int ret;

	if (!info)
		return -ENOMEM;
	if ((v = mgmt_item(it, "timeout")) && (!mgmt_parse_u64(v, &timeout) ||
					   timeout > UINT32_MAX)) {
		ret = -EINVAL;
		goto out;
	}
	ret = cbt_mirror_get(id, info);
	if (ret)
		goto out;
	rec.lun = lun_of(info->tid, info->lun);
	if (!rec.lun) {
		ret = -ENOENT;
		goto out;
	}
	old = strdup(lun_settings_get(rec.lun)->path);
	if (!old) {
		ret = -ENOMEM;
		goto out;
	}
	rec.path = info->target;
	ret = cbt_mirror_complete(id, (unsigned)timeout, record_new_store, &rec,
				  &why);
	if (ret) {
		log_warn("job %u: complete refused: %s", id,
			 why ? why : strerror(-ret));
		if (rec.done && record_store(rec.lun, id, old))
			log_err("job %u: the LUN still serves %s, but the configuration may name %s: check it and --save",
				id, old, info->target);
	}
out:
	free(old);
	scsi_lun_put(rec.lun);
	free(info);
	return ret;
}

/* The job is over for good (completed and recorded, cancelled, or
 * deleted): the next start has nothing to report about it. */
static void marker_clear(unsigned id)
{
	struct cbt_mirror_info *info = calloc(1, sizeof(*info));
	struct scsi_lun *lun;

	if (info && !cbt_mirror_get(id, info) &&
	    (lun = lun_of(info->tid, info->lun))) {
		cbt_mirror_marker_clear(lun->target_name, info->lun);
		scsi_lun_put(lun);
	}
	free(info);
}

int mgmt_mirror(const struct mgmt_req *req, struct mgmt_buf *b)
{
	struct mgmt_items it = { 0 };
	enum cbt_mirror_mode m;
	const char *v;
	uint64_t id = 0;
	int err = 0, ret;

	it.n = mgmt_payload_split(req->payload, &it.copy, it.v);
	if (it.n < 0)
		return MGMT_NOMEM;
	if (req->op == MGMT_OP_NEW) {
		ret = mirror_new(req, &it, b);
		goto out;
	}
	if (!mgmt_parse_u64(mgmt_item(&it, "id"), &id) || id > UINT32_MAX) {
		ret = MGMT_INVALID_REQUEST;
		goto out;
	}
	v = mgmt_item(&it, "action");
	if (req->op == MGMT_OP_DELETE) {
		marker_clear((unsigned)id);
		err = cbt_mirror_dismiss((unsigned)id);
	} else if (v && !strcmp(v, "complete")) {
		err = mirror_complete((unsigned)id, &it);
		if (!err)
			marker_clear((unsigned)id);
	} else if (v && !strcmp(v, "cancel")) {
		err = cbt_mirror_cancel((unsigned)id);
		if (!err)
			marker_clear((unsigned)id);
	}
	else if (!v && (v = mgmt_item(&it, "copy_mode"))) {
		err = cbt_mirror_mode_parse(v, &m);
		if (!err)
			err = cbt_mirror_set_mode((unsigned)id, m);
	} else
		err = -EINVAL;	/* pause/resume: a mirror is not paused */
	if (err)
		log_warn("job %u: %s: %s", (unsigned)id,
			 req->op == MGMT_OP_DELETE ? "delete" : v ? v : "update",
			 strerror(-err));
	ret = merr(err);
out:
	free(it.copy);
	return ret;
}

static void show_one(struct mgmt_buf *b, const struct cbt_mirror_info *i,
		     bool json, bool first)
{
	if (json) {
		mgmt_buf_printf(b, "%s{\"id\": %u, \"type\": \"mirror\", \"tid\": %d"
				", \"lun\": %" PRIu64 ", \"state\": \"%s\""
				", \"bytes_done\": %" PRIu64 ", \"bytes_total\": %" PRIu64
				", \"dirty_bytes\": %" PRIu64 ", \"rate_bps\": %" PRIu64
				", \"eta_s\": %" PRId64 ", \"copy_mode\": \"%s\""
				", \"active_mode\": \"%s\", \"elapsed_ms\": %" PRIu64
				", \"ready_ms\": %" PRIu64 ", \"error\": ",
				first ? "" : ", ", i->id, i->tid, i->lun,
				cbt_mirror_state_name(i->state), i->bytes_done,
				i->bytes_total, i->dirty_bytes, i->rate_bps, i->eta_s,
				cbt_mirror_mode_name(i->mode),
				cbt_mirror_mode_name(i->active), i->elapsed_ms,
				i->ready_ms);
		if (i->error[0])
			mgmt_json_string(b, i->error);
		else
			mgmt_buf_printf(b, "null");
		mgmt_buf_printf(b, ", \"target\": ");
		mgmt_json_string(b, i->target);
		mgmt_buf_printf(b, ", \"bitmap\": \"\"}");
		return;
	}
	mgmt_buf_printf(b, "Job: %u\n    Type: mirror\n    Target: %d LUN: %" PRIu64
			"\n    State: %s\n    Progress: %" PRIu64 "/%" PRIu64
			" bytes\n    Dirty: %" PRIu64 " bytes\n    Rate: %" PRIu64
			" bytes/s\n    ETA: %" PRId64 " s\n    Copy mode: %s (in force: %s)\n"
			"    Destination: %s\n",
			i->id, i->tid, i->lun, cbt_mirror_state_name(i->state),
			i->bytes_done, i->bytes_total, i->dirty_bytes, i->rate_bps,
			i->eta_s, cbt_mirror_mode_name(i->mode),
			cbt_mirror_mode_name(i->active), i->target);
	if (i->error[0])
		mgmt_buf_printf(b, "    Error: %s\n", i->error);
}

void mgmt_mirror_show(struct mgmt_buf *b, bool json, bool first)
{
	struct cbt_mirror_info *info = calloc(MIRROR_SHOW_MAX, sizeof(*info));
	unsigned n;

	if (!info)
		return;
	n = cbt_mirror_list(info, MIRROR_SHOW_MAX);
	for (unsigned i = 0; i < n && i < MIRROR_SHOW_MAX; i++)
		show_one(b, &info[i], json, first && i == 0);
	free(info);
}
