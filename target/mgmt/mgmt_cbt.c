/* mgmt_cbt.c - `--mode bitmap` and `--mode job` (issue 10): a LUN's dirty
 * bitmaps and backup jobs, as holdfastadm sends them (tgtadm has no such
 * modes).  Errors are tgtd's numbers; the reason is logged once here. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbt_filter.h"
#include "cbt_job.h"
#include "cbt_set.h"
#include "lun.h"
#include "mgmt_internal.h"
#include "scsi.h"
#include "stack.h"
#include "target.h"

#define CBT_SHOW_MAX_BITMAPS 256
#define CBT_SHOW_MAX_JOBS 256


static int items_split(const struct mgmt_req *req, struct mgmt_items *it)
{
	it->copy = NULL;
	it->n = mgmt_payload_split(req->payload, &it->copy, it->v);
	return it->n < 0 ? it->n : 0;
}

const char *mgmt_item(const struct mgmt_items *it, const char *key)
{
	size_t k = strlen(key);

	for (int i = 0; i < it->n; i++)
		if (!strncmp(it->v[i], key, k) && it->v[i][k] == '=')
			return it->v[i] + k + 1;
	return NULL;
}

static bool parse_bool(const char *s, bool *out)
{
	if (!strcmp(s, "1") || !strcmp(s, "true") || !strcmp(s, "yes") ||
	    !strcmp(s, "on"))
		*out = true;
	else if (!strcmp(s, "0") || !strcmp(s, "false") || !strcmp(s, "no") ||
		 !strcmp(s, "off"))
		*out = false;
	else
		return false;
	return true;
}

bool mgmt_parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return !*end && !errno;
}

/* The LUN of the request, referenced; NULL with *err set. */
static struct scsi_lun *req_lun(const struct mgmt_req *req, int *err)
{
	struct target *t = tgt_get_by_tid(req->tid);
	struct scsi_lun *lun;

	if (!t) {
		*err = MGMT_NO_TARGET;
		return NULL;
	}
	lun = req->lun == MGMT_LUN_UNSET ? NULL : tgt_lun_get(t, req->lun);
	tgt_put(t);
	if (!lun || !lun->cbt) {
		scsi_lun_put(lun);
		*err = MGMT_NO_LUN;
		return NULL;
	}
	return lun;
}

static int errno_to_mgmt(int err)
{
	switch (err) {
	case 0:
		return MGMT_SUCCESS;
	case -ENOMEM:
		return MGMT_NOMEM;
	case -EBUSY:
		return MGMT_LUN_ACTIVE;
	default:
		return MGMT_INVALID_REQUEST;
	}
}

/* ---- bitmaps ---- */

struct since_extents {
	uint64_t *v;		/* offset, length pairs */
	size_t n, cap;
};

static int since_add(uint64_t offset, uint64_t len, void *arg)
{
	struct since_extents *e = arg;

	if (e->n && e->v[2 * e->n - 2] + e->v[2 * e->n - 1] == offset) {
		e->v[2 * e->n - 1] += len;	/* adjacent: one extent */
		return 0;
	}
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 256;
		uint64_t *nv = realloc(e->v, cap * 2 * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		e->v = nv;
		e->cap = cap;
	}
	e->v[2 * e->n] = offset;
	e->v[2 * e->n + 1] = len;
	e->n++;
	return 0;
}

/* action=merge,snapshot=SNAP: OR into bitmap name every extent the
 * store changed since its snapshot SNAP (an RBD image's), so that an
 * incremental chain can start from a snapshot taken outside holdfast.
 * The store is asked first, without the set's lock (it may take a while
 * on a large image); writes meanwhile are marked as usual. */
static int bitmap_merge_snapshot(const struct mgmt_req *req,
				 struct scsi_lun *lun, const char *name,
				 const char *snap)
{
	struct backend *store = be_stack_store(lun->be);
	struct since_extents e = { 0 };
	uint64_t bytes = 0;
	int err;

	if (!cbt_set_find(lun->cbt, name))
		return -ENOENT;
	if (!store || !store->ops->changed_since) {
		log_warn("bitmap %s on tid %d lun %" PRIu64 ": merge from a "
			 "snapshot: the LUN's store (%s) keeps no snapshots "
			 "holdfast can read (rbd does)", name, req->tid,
			 req->lun, store ? store->ops->name : "-");
		return -EOPNOTSUPP;
	}
	err = store->ops->changed_since(store, snap, since_add, &e);
	if (err) {
		log_warn("bitmap %s on tid %d lun %" PRIu64 ": merge from "
			 "snapshot %s: %s", name, req->tid, req->lun, snap,
			 err == -ENOENT ? "no such snapshot" : strerror(-err));
		free(e.v);
		return err;
	}
	for (size_t i = 0; i < e.n; i++)
		bytes += e.v[2 * i + 1];
	err = cbt_set_merge_extents(lun->cbt, name, e.v, e.n);
	free(e.v);
	if (!err)
		log_info("tid %d lun %" PRIu64 ": bitmap %s: merged %zu "
			 "extent(s), %" PRIu64 " bytes, changed since snapshot "
			 "%s", req->tid, req->lun, name, e.n, bytes, snap);
	return err;
}

static void bitmap_show_one(struct mgmt_buf *b, struct cbt_bitmap *bm,
			    bool json, bool extents, bool first)
{
	bool en = atomic_load(&bm->enabled), busy = atomic_load(&bm->busy);
	bool inc = atomic_load(&bm->inconsistent);
	uint64_t off = 0, len;

	if (json) {
		mgmt_buf_printf(b, "%s{\"name\": ", first ? "" : ", ");
		mgmt_json_string(b, bm->name);
		mgmt_buf_printf(b, ", \"granularity\": %" PRIu32
				", \"dirty_bytes\": %" PRIu64
				", \"enabled\": %s, \"persistent\": %s"
				", \"busy\": %s, \"inconsistent\": %s",
				bm->granularity, cbt_bitmap_dirty_bytes(bm),
				en ? "true" : "false",
				bm->persistent ? "true" : "false",
				busy ? "true" : "false", inc ? "true" : "false");
		if (extents) {
			bool f = true;

			mgmt_buf_printf(b, ", \"extents\": [");
			while (cbt_bitmap_next_extent(bm, &off, &len, true)) {
				mgmt_buf_printf(b, "%s{\"offset\": %" PRIu64
						", \"length\": %" PRIu64 "}",
						f ? "" : ", ", off, len);
				f = false;
				off += len;
			}
			mgmt_buf_printf(b, "]");
		}
		mgmt_buf_printf(b, "}");
		return;
	}
	mgmt_buf_printf(b, "Bitmap: %s\n    Granularity: %" PRIu32
			"\n    Dirty bytes: %" PRIu64 "\n    Enabled: %s\n"
			"    Persistent: %s\n    Busy: %s\n    Inconsistent: %s\n",
			bm->name, bm->granularity, cbt_bitmap_dirty_bytes(bm),
			en ? "Yes" : "No", bm->persistent ? "Yes" : "No",
			busy ? "Yes" : "No", inc ? "Yes" : "No");
	if (extents) {
		mgmt_buf_printf(b, "    Extents:\n");
		while (cbt_bitmap_next_extent(bm, &off, &len, true)) {
			mgmt_buf_printf(b, "        %" PRIu64 " +%" PRIu64 "\n",
					off, len);
			off += len;
		}
	}
}

static int bitmap_show(const struct mgmt_req *req, struct scsi_lun *lun,
		       const char *name, struct mgmt_buf *b)
{
	struct cbt_bitmap *list[CBT_SHOW_MAX_BITMAPS];
	unsigned n = cbt_set_list(lun->cbt, list, CBT_SHOW_MAX_BITMAPS);
	bool first = true;

	if (name && !cbt_set_find(lun->cbt, name))
		return MGMT_INVALID_REQUEST;
	if (req->json)
		mgmt_buf_printf(b, "{\"bitmaps\": [");
	for (unsigned i = 0; i < n && i < CBT_SHOW_MAX_BITMAPS; i++) {
		if (name && strcmp(list[i]->name, name))
			continue;
		bitmap_show_one(b, list[i], req->json, name != NULL, first);
		first = false;
	}
	if (req->json)
		mgmt_buf_printf(b, "]}\n");
	return MGMT_SUCCESS;
}

int mgmt_bitmap(const struct mgmt_req *req, struct mgmt_buf *b)
{
	struct scsi_lun *lun;
	struct mgmt_items it;
	const char *name, *v, *why = NULL;
	int err, ret = MGMT_SUCCESS;

	lun = req_lun(req, &ret);
	if (!lun)
		return ret;
	if (items_split(req, &it)) {
		scsi_lun_put(lun);
		return MGMT_NOMEM;
	}
	name = mgmt_item(&it, "name");
	if (req->op != MGMT_OP_SHOW && scsi_alua_standby(lun)) {
		/* the bitmaps of a shared store belong to the node that owns
		 * it (their sidecar is shared, scsi_alua.c) */
		log_warn("bitmap on tid %d lun %" PRIu64 ": this node is not "
			 "active for the LUN: manage its bitmaps on the node "
			 "that is", req->tid, req->lun);
		free(it.copy);
		scsi_lun_put(lun);
		return MGMT_INVALID_REQUEST;
	}
	switch (req->op) {
	case MGMT_OP_SHOW:
		ret = bitmap_show(req, lun, name, b);
		break;
	case MGMT_OP_NEW: {
		uint64_t gran = CBT_GRANULARITY_DEFAULT;
		bool persistent = false, enabled = true;

		if (!name || ((v = mgmt_item(&it, "granularity")) && !mgmt_parse_u64(v, &gran)) ||
		    ((v = mgmt_item(&it, "persistent")) && !parse_bool(v, &persistent)) ||
		    ((v = mgmt_item(&it, "enabled")) && !parse_bool(v, &enabled)) ||
		    gran > UINT32_MAX) {
			ret = MGMT_INVALID_REQUEST;
			break;
		}
		err = scsi_lun_cbt_attach(lun, &why);
		if (!err)
			err = cbt_set_add(lun->cbt, name, (uint32_t)gran,
					  persistent, enabled);
		if (err)
			log_warn("bitmap new %s on tid %d lun %" PRIu64 ": %s", name,
				 req->tid, req->lun, err == -EOPNOTSUPP ?
				 "no directory for persistent bitmaps" : strerror(-err));
		else
			log_info("tid %d lun %" PRIu64 ": bitmap %s added (granularity %" PRIu64 "%s%s)",
				 req->tid, req->lun, name, gran,
				 persistent ? ", persistent" : "",
				 enabled ? "" : ", disabled");
		ret = errno_to_mgmt(err);
		break;
	}
	case MGMT_OP_DELETE:
		err = name ? cbt_set_remove(lun->cbt, name) : -EINVAL;
		if (!err)
			log_info("tid %d lun %" PRIu64 ": bitmap %s removed",
				 req->tid, req->lun, name);
		ret = errno_to_mgmt(err);
		break;
	case MGMT_OP_UPDATE:
		v = mgmt_item(&it, "action");
		if (!name || !v)
			err = -EINVAL;
		else if (!strcmp(v, "clear"))
			err = cbt_set_clear(lun->cbt, name);
		else if (!strcmp(v, "enable") || !strcmp(v, "disable"))
			err = cbt_set_enable(lun->cbt, name, !strcmp(v, "enable"));
		else if (!strcmp(v, "merge") && mgmt_item(&it, "source"))
			err = cbt_set_merge(lun->cbt, name, mgmt_item(&it, "source"));
		else if (!strcmp(v, "merge") && mgmt_item(&it, "snapshot"))
			err = bitmap_merge_snapshot(req, lun, name,
						    mgmt_item(&it, "snapshot"));
		else
			err = -EINVAL;
		if (err)
			log_warn("bitmap %s %s on tid %d lun %" PRIu64 ": %s",
				 name ? name : "-", v ? v : "-", req->tid,
				 req->lun, strerror(-err));
		ret = errno_to_mgmt(err);
		break;
	default:
		ret = MGMT_UNSUPPORTED_OPERATION;
	}
	free(it.copy);
	scsi_lun_put(lun);
	return ret;
}

/* ---- jobs ---- */

static void job_release_lun(void *arg)
{
	scsi_lun_put(arg);
}

/* Writes that passed the LUN's tracking node before a job's point in
 * time (cbt_job_params.drain). */
static int job_drain_lun(void *arg)
{
	struct scsi_lun *lun = arg;

	return be_stack_drain(lun->be, BE_STACK_DRAIN_MS);
}

/* What every job needs, whatever its type: the LUN (referenced; the job
 * holds it from start on), its tracking node (attached if need be), the
 * reactor, the LUN's own patience with its store for source reads, and
 * the keys every type takes (bitmap, bitmap_mode, on_target_error,
 * retry_interval, retry_timeout).  MGMT_SUCCESS with *out (free it), or
 * an error with nothing held. */
static int job_req_new(const struct mgmt_req *req, const struct mgmt_items *it,
		       struct cbt_job_params **out)
{
	struct cbt_job_params *p;
	const struct lun_settings *ls;
	struct scsi_lun *lun;
	const char *v, *why = NULL;
	uint64_t n;
	int ret = MGMT_SUCCESS;

	lun = req_lun(req, &ret);
	if (!lun)
		return ret;
	if (scsi_alua_standby(lun)) {
		log_warn("job on tid %d lun %" PRIu64 ": this node is not "
			 "active for the LUN: run it on the node that is",
			 req->tid, req->lun);
		scsi_lun_put(lun);
		return MGMT_INVALID_REQUEST;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		scsi_lun_put(lun);
		return MGMT_NOMEM;
	}
	ls = lun_settings_get(lun);
	p->tid = req->tid;
	p->lun = req->lun;
	p->filter = scsi_lun_cbt_attach(lun, &why) ? NULL : cbt_filter_find(lun->be);
	p->r = cbt_job_reactor_for(req->lun);
	if (ls->rerror == ERR_POLICY_RETRY) {
		p->src_retry_ms = ls->retry_interval_ms ? ls->retry_interval_ms : 1000;
		p->src_timeout_ms = ls->retry_timeout_ms;
	}
	p->drain = job_drain_lun;
	p->drain_arg = lun;
	p->release = job_release_lun;
	p->release_arg = lun;
	p->mode = CBT_MODE_ON_SUCCESS;
	if ((v = mgmt_item(it, "bitmap")) &&
	    (size_t)snprintf(p->bitmap, sizeof(p->bitmap), "%s", v) >= sizeof(p->bitmap))
		goto bad;
	if ((v = mgmt_item(it, "bitmap_mode")) && cbt_bitmap_mode_parse(v, &p->mode))
		goto bad;
	v = mgmt_item(it, "on_target_error");
	if (v && !strcmp(v, "retry")) {
		p->dest_retry_ms = 1000;
		if ((v = mgmt_item(it, "retry_interval"))) {
			if (!mgmt_parse_u64(v, &n) || !n || n > 3600000)	/* as the LUN key */
				goto bad;
			p->dest_retry_ms = (uint32_t)n;
		}
		if ((v = mgmt_item(it, "retry_timeout"))) {
			if (!mgmt_parse_u64(v, &n) || n > UINT32_MAX)
				goto bad;
			p->dest_timeout_ms = (uint32_t)n;
		}
	} else if (v && strcmp(v, "fail") && strcmp(v, "report")) {
		goto bad;
	} else if (mgmt_item(it, "retry_interval") || mgmt_item(it, "retry_timeout")) {
		goto bad;	/* they mean something only with retry */
	}
	*out = p;
	return MGMT_SUCCESS;
bad:
	log_warn("job new on tid %d lun %" PRIu64 ": bad parameters", req->tid,
		 req->lun);
	free(p);
	scsi_lun_put(lun);
	return MGMT_INVALID_REQUEST;
}

/* type=snapshot,export_lun=L2,scratch=PATH: a copy-before-write job with
 * no background copy, and LUN L2 on the same target reading its
 * point-in-time image (read-only).  rbd_snap=NAME instead of scratch: the
 * point in time is a new snapshot NAME of the LUN's store (an RBD
 * image's), taken once the job has frozen the bitmap and drained the
 * writes in flight, and L2 reads the image at that snapshot; nothing is
 * copied by holdfast, and deleting the job removes the snapshot. */
static int snapshot_new(const struct mgmt_req *req, const struct mgmt_items *it,
			struct mgmt_buf *b)
{
	struct cbt_job_params *p;
	struct lun_settings ls;
	struct backend *node = NULL, *store = NULL;
	struct scsi_lun *lun;
	const char *v, *why = NULL, *rs = mgmt_item(it, "rbd_snap");
	bool snapped = false;
	uint64_t export_lun;
	unsigned id;
	int err, ret;

	v = mgmt_item(it, "scratch");
	if (!mgmt_parse_u64(mgmt_item(it, "export_lun"), &export_lun) ||
	    (v && !*v) || (rs && !*rs) || !v == !rs)
		return MGMT_INVALID_REQUEST;
	if (rs && strlen(rs) >= sizeof(p->target))
		return MGMT_INVALID_REQUEST;
	ret = job_req_new(req, it, &p);
	if (ret != MGMT_SUCCESS)
		return ret;
	lun = p->release_arg;
	if (rs) {
		store = be_stack_store(lun->be);
		if (!store || !store->ops->snapshot) {
			log_warn("snapshot on tid %d lun %" PRIu64 ": rbd_snap: "
				 "the LUN's store (%s) takes no snapshots of "
				 "itself (rbd does); use scratch=PATH", req->tid,
				 req->lun, store ? store->ops->name : "-");
			free(p);
			scsi_lun_put(lun);
			return errno_to_mgmt(-EOPNOTSUPP);
		}
	}
	p->snapshot = true;
	p->store_snap = rs != NULL;
	p->export_lun = export_lun;
	p->format = CBT_FORMAT_RAW;
	snprintf(p->target, sizeof(p->target), "%s", rs ? rs : v);
	err = cbt_job_backup_start(p, &id, &why);
	if (err) {
		log_warn("snapshot on tid %d lun %" PRIu64 ": %s", req->tid,
			 req->lun, why ? why : strerror(-err));
		free(p);
		scsi_lun_put(lun);
		return errno_to_mgmt(err);
	}
	free(p);	/* the job holds the LUN reference from here */
	if (rs) {
		/* the bitmap is frozen and the writes before it are done:
		 * now is the point in time */
		err = store->ops->snapshot(store, BE_SNAP_CREATE, rs, NULL,
					   &why);
		snapped = !err;
		if (!err)
			err = store->ops->snapshot(store, BE_SNAP_OPEN, rs,
						   &node, &why);
	} else {
		err = cbt_snap_node_new(id, &node);
	}
	if (!err) {
		lun_settings_default(&ls, export_lun);
		snprintf(ls.backend, sizeof(ls.backend), "snapshot");
		ls.readonly = true;
		ls.block_size = lun_settings_get(lun)->block_size;
		snprintf(ls.product_id, sizeof(ls.product_id), "SNAPSHOT");
		err = tgt_lun_add_on(req->tid, &ls, node, &why);
	}
	if (err) {
		log_warn("snapshot on tid %d lun %" PRIu64 ": LUN %" PRIu64 ": %s",
			 req->tid, req->lun, export_lun, why ? why : strerror(-err));
		cbt_job_cancel(id);
		cbt_job_wait(id, 10000);
		if (snapped &&
		    store->ops->snapshot(store, BE_SNAP_REMOVE, rs, NULL, &why))
			log_warn("snapshot on tid %d lun %" PRIu64 ": cannot "
				 "remove rbd snapshot %s: %s", req->tid,
				 req->lun, rs, why ? why : "?");
		cbt_job_dismiss(id);
		if (!rs)
			unlink(v);
		return err == -EEXIST ? MGMT_LUN_EXIST : errno_to_mgmt(err);
	}
	log_info("tid %d lun %" PRIu64 ": snapshot exported as LUN %" PRIu64
		 " (job %u, %s %s)", req->tid, req->lun, export_lun, id,
		 rs ? "rbd snapshot" : "scratch", rs ? rs : v);
	mgmt_buf_printf(b, "job %u\n", id);
	return MGMT_SUCCESS;
}

/* rbd_snap=NAME: the snapshot job took it, its end removes it (the job
 * still holds the origin LUN, so the LUN is there to ask). */
static void store_snap_remove(const struct cbt_job_info *info)
{
	struct target *t = tgt_get_by_tid(info->tid);
	struct scsi_lun *lun = t ? tgt_lun_get(t, info->lun) : NULL;
	struct backend *store = lun ? be_stack_store(lun->be) : NULL;
	const char *why = NULL;
	int err = -ENOENT;

	if (t)
		tgt_put(t);
	if (store && store->ops->snapshot)
		err = store->ops->snapshot(store, BE_SNAP_REMOVE, info->target,
					   NULL, &why);
	if (err)
		log_warn("job %u: cannot remove rbd snapshot %s of tid %d lun %"
			 PRIu64 ": %s (remove it with rbd snap rm)", info->id,
			 info->target, info->tid, info->lun,
			 why ? why : strerror(-err));
	else
		log_info("job %u: rbd snapshot %s removed", info->id,
			 info->target);
	scsi_lun_put(lun);
}

/* Delete a job: a snapshot is ended first (its LUN and scratch file go
 * with it); any other job must have finished. */
static int job_delete(unsigned id)
{
	struct cbt_job_info info;
	int err;

	if (cbt_job_get(id, &info))
		return -ENOENT;
	if (strcmp(info.type, "snapshot"))
		return cbt_job_dismiss(id);
	/* deleting ends the snapshot as a success: its bitmap's frozen
	 * bits were read (action=cancel first ends it as a failure) */
	cbt_job_snapshot_end(id);
	cbt_job_wait(id, 30000);
	tgt_lun_del(info.tid, info.export_lun, true);
	if (info.store_snap)
		store_snap_remove(&info);
	err = cbt_job_dismiss(id);
	if (!err) {
		if (!info.store_snap)
			unlink(info.scratch);
		log_info("job %u: snapshot LUN %" PRIu64 " removed", id,
			 info.export_lun);
	}
	return err;
}

static int job_new(const struct mgmt_req *req, const struct mgmt_items *it,
		   struct mgmt_buf *b)
{
	struct cbt_job_params *p;
	struct scsi_lun *lun;
	const char *v, *why = NULL;
	unsigned id;
	int err, ret;

	v = mgmt_item(it, "type");
	if (v && !strcmp(v, "snapshot"))
		return snapshot_new(req, it, b);
	if (!v || strcmp(v, "backup"))
		return MGMT_INVALID_REQUEST;
	ret = job_req_new(req, it, &p);
	if (ret != MGMT_SUCCESS)
		return ret;
	lun = p->release_arg;
	err = -EINVAL;
	if (!(v = mgmt_item(it, "target")) || !*v ||
	    (size_t)snprintf(p->target, sizeof(p->target), "%s", v) >= sizeof(p->target))
		goto bad;
	v = mgmt_item(it, "format");
	if (!v || !strcmp(v, "raw"))
		p->format = CBT_FORMAT_RAW;
	else if (!strcmp(v, "qcow2"))
		p->format = CBT_FORMAT_QCOW2;
	else
		goto bad;
	if ((v = mgmt_item(it, "backing")))
		snprintf(p->backing, sizeof(p->backing), "%s", v);
	if ((v = mgmt_item(it, "backing_format")))
		snprintf(p->backing_format, sizeof(p->backing_format), "%s", v);
	v = mgmt_item(it, "sync");
	if (!v || !strcmp(v, "full"))
		p->sync_bitmap = false;
	else if (!strcmp(v, "bitmap"))
		p->sync_bitmap = true;
	else
		goto bad;
	if ((v = mgmt_item(it, "rate_limit")) && !mgmt_parse_u64(v, &p->rate_limit))
		goto bad;
	err = cbt_job_backup_start(p, &id, &why);
	if (err)
		goto bad;
	free(p);
	mgmt_buf_printf(b, "job %u\n", id);
	return MGMT_SUCCESS;	/* the job holds the LUN reference */
bad:
	log_warn("job new on tid %d lun %" PRIu64 ": %s", req->tid, req->lun,
		 why ? why : "bad parameters");
	free(p);
	scsi_lun_put(lun);
	return errno_to_mgmt(err);
}

struct extent_out {
	struct mgmt_buf *b;
	bool json, first;
};

static void extent_print(uint64_t off, uint64_t len, void *arg)
{
	struct extent_out *o = arg;

	if (o->json)
		mgmt_buf_printf(o->b, "%s{\"offset\": %" PRIu64 ", \"length\": %" PRIu64 "}",
				o->first ? "" : ", ", off, len);
	else
		mgmt_buf_printf(o->b, "        %" PRIu64 " +%" PRIu64 "\n", off, len);
	o->first = false;
}

/* A snapshot job with a bitmap: the bitmap's dirty extents at its point
 * in time (what an incremental pull backup reads from the export LUN). */
static void job_show_extents(struct mgmt_buf *b, const struct cbt_job_info *i,
			     bool json)
{
	struct extent_out o = { b, json, true };

	if (strcmp(i->type, "snapshot") || !i->bitmap[0])
		return;
	mgmt_buf_printf(b, json ? ", \"extents\": [" : "    Extents:\n");
	cbt_job_extents(i->id, extent_print, &o);
	if (json)
		mgmt_buf_printf(b, "]");
}

static void job_show_one(struct mgmt_buf *b, const struct cbt_job_info *i,
			 bool json, bool first)
{
	if (json) {
		mgmt_buf_printf(b, "%s{\"id\": %u, \"type\": ", first ? "" : ", ",
				i->id);
		mgmt_json_string(b, i->type);
		mgmt_buf_printf(b, ", \"tid\": %d, \"lun\": %" PRIu64
				", \"state\": \"%s\", \"bytes_done\": %" PRIu64
				", \"bytes_total\": %" PRIu64 ", \"rate_bps\": %" PRIu64
				", \"eta_s\": %" PRId64 ", \"error\": ",
				i->tid, i->lun, cbt_job_state_name(i->state),
				i->bytes_done, i->bytes_total, i->rate_bps, i->eta_s);
		if (i->error[0])
			mgmt_json_string(b, i->error);
		else
			mgmt_buf_printf(b, "null");
		mgmt_buf_printf(b, ", \"target\": ");
		mgmt_json_string(b, i->target);
		mgmt_buf_printf(b, ", \"bitmap\": ");
		mgmt_json_string(b, i->bitmap);
		mgmt_buf_printf(b, ", \"holding\": %s, \"bytes_holes\": %" PRIu64,
				i->holding ? "true" : "false", i->bytes_holes);
		if (!strcmp(i->type, "snapshot"))
			mgmt_buf_printf(b, ", \"export_lun\": %" PRIu64, i->export_lun);
		if (i->store_snap) {
			mgmt_buf_printf(b, ", \"rbd_snap\": ");
			mgmt_json_string(b, i->target);
		}
		job_show_extents(b, i, true);
		mgmt_buf_printf(b, "}");
		return;
	}
	mgmt_buf_printf(b, "Job: %u\n    Type: %s\n    Target: %d LUN: %" PRIu64
			"\n    State: %s\n    Progress: %" PRIu64 "/%" PRIu64
			" bytes\n    Rate: %" PRIu64 " bytes/s\n    ETA: %" PRId64
			" s\n    Destination: %s\n    Bitmap: %s\n",
			i->id, i->type, i->tid, i->lun, cbt_job_state_name(i->state),
			i->bytes_done, i->bytes_total, i->rate_bps, i->eta_s,
			i->target, i->bitmap[0] ? i->bitmap : "-");
	if (i->error[0])
		mgmt_buf_printf(b, "    Error: %s\n", i->error);
	if (i->bytes_holes)
		mgmt_buf_printf(b, "    Holes skipped: %" PRIu64 " bytes\n", i->bytes_holes);
	if (!strcmp(i->type, "snapshot"))
		mgmt_buf_printf(b, "    Export LUN: %" PRIu64 "\n", i->export_lun);
	if (i->store_snap)
		mgmt_buf_printf(b, "    RBD snapshot: %s\n", i->target);
	job_show_extents(b, i, false);
}

static int job_show(const struct mgmt_req *req, struct mgmt_buf *b)
{
	struct cbt_job_info *info = calloc(CBT_SHOW_MAX_JOBS, sizeof(*info));
	unsigned n;

	if (!info)
		return MGMT_NOMEM;
	n = cbt_job_list(info, CBT_SHOW_MAX_JOBS);
	if (req->json)
		mgmt_buf_printf(b, "{\"jobs\": [");
	for (unsigned i = 0; i < n && i < CBT_SHOW_MAX_JOBS; i++)
		job_show_one(b, &info[i], req->json, i == 0);
	mgmt_mirror_show(b, req->json, n == 0);
	if (req->json)
		mgmt_buf_printf(b, "]}\n");
	free(info);
	return MGMT_SUCCESS;
}

int mgmt_job_params_check(const struct mgmt_req *req)
{
	struct cbt_job_params *p;
	struct mgmt_items it;
	int ret;

	if (items_split(req, &it))
		return MGMT_NOMEM;
	ret = job_req_new(req, &it, &p);
	if (ret == MGMT_SUCCESS) {
		scsi_lun_put(p->release_arg);
		free(p);
	}
	free(it.copy);
	return ret;
}

int mgmt_job(const struct mgmt_req *req, struct mgmt_buf *b)
{
	struct mgmt_items it;
	const char *v;
	uint64_t id = 0;
	int err = 0, ret;

	if (req->op == MGMT_OP_SHOW)
		return job_show(req, b);
	if (mgmt_mirror_claims(req))
		return mgmt_mirror(req, b);
	if (items_split(req, &it))
		return MGMT_NOMEM;
	switch (req->op) {
	case MGMT_OP_NEW:
		ret = job_new(req, &it, b);
		break;
	case MGMT_OP_UPDATE:
	case MGMT_OP_DELETE:
		if (!mgmt_parse_u64(mgmt_item(&it, "id"), &id) || id > UINT32_MAX) {
			ret = MGMT_INVALID_REQUEST;
			break;
		}
		v = mgmt_item(&it, "action");
		if (req->op == MGMT_OP_DELETE)
			err = job_delete((unsigned)id);
		else if (v && !strcmp(v, "pause"))
			err = cbt_job_pause((unsigned)id, true);
		else if (v && !strcmp(v, "resume"))
			err = cbt_job_pause((unsigned)id, false);
		else if (v && !strcmp(v, "cancel"))
			err = cbt_job_cancel((unsigned)id);
		else
			err = -EINVAL;
		ret = errno_to_mgmt(err);
		break;
	default:
		ret = MGMT_UNSUPPORTED_OPERATION;
	}
	free(it.copy);
	return ret;
}
