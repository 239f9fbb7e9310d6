/* scsi_lun.c - creating and releasing logical units (target/lun.h).
 *
 * A LUN's backing store is a block stack (backends/stack.h): the store
 * named in its settings (file, null, iscsi, rbd) at the bottom and the
 * filters its `filters` key names above it (by default the
 * fault-injection filter, so `tgtadm --params fault=...` works on every
 * LUN without a restart); filters can be inserted and removed while the
 * LUN serves I/O.
 * Everything that opening the store decides (the stack,
 * capacity in blocks) is computed in lun_open_stack() and
 * lun_capacity(); scsi_lun_refresh() is the one place that re-reads
 * them on a live LUN (online resize, a handover between nodes).  The
 * filters above the store are the `filters` key's (lun.h); an update
 * rebuilds the live chain to match (scsi_lun_set_filters()). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cbt_filter.h"
#include "cbt_job.h"
#include "cbt_meta.h"
#include "cbt_mirror.h"
#include "cbt_set.h"
#include "hang.h"
#include "lun.h"
#include "util.h"
#include "scsi.h"
#include "scsi_internal.h"
#include "scsi_pr.h"
#include "stack.h"

/* The fault spec may be written with its key, as in --params. */
#define LUN_BLOCK_SIZE_DEFAULT 512
#define LUN_FAULT_PREFIX "fault="

/* Open the store named in s (or take given, an open store node), put the
 * fault and cbt filters on top of it and make them a block stack
 * (stack.h): *out is the stack's root, through which filters are inserted
 * and removed later while I/O runs.  given is closed on failure. */
static int lun_open_stack(const struct lun_settings *s, uint32_t block_size,
			  struct backend *given, struct backend **out,
			  const char **errmsg)
{
	struct backend_params p = {
		.path = s->path[0] ? s->path : NULL,
		.size = s->size,
		.block_size = block_size,
		.direct = s->direct,
		.sync = s->sync,
		.readonly = s->readonly,
		.opts = s->bsopts[0] ? s->bsopts : NULL,
	};
	const char *name = s->backend[0] ? s->backend : "file";
	const char *spec = s->backend_opts;
	const struct backend_ops *ops;
	struct backend *store, *top;
	int err;

	/* "fault" as the backend name means: inject into whatever the rest
	 * of the settings describe (a file if there is a path, else null). */
	if (strcmp(name, "fault") == 0)
		name = s->path[0] ? "file" : "null";
	if (given) {
		store = given;
	} else {
		ops = backend_find(name);
		if (!ops) {
			*errmsg = "unknown backend (file, null, iscsi or rbd)";
			return -EINVAL;
		}
		err = be_stack_node_open(ops, &p, &store, errmsg);
		if (err)
			return err;
	}

	if (strncmp(spec, LUN_FAULT_PREFIX, strlen(LUN_FAULT_PREFIX)) == 0)
		spec += strlen(LUN_FAULT_PREFIX);
	/* The filters named in s->filters, bottom up over the store; the
	 * fault spec goes to the topmost fault filter (the one an update's
	 * fault= reaches, scsi_lun_param_backend()). */
	char names[BE_STACK_MAX_NODES][LUN_FILTER_NAME_MAX];
	int n = lun_filters_split(s->filters, names, BE_STACK_MAX_NODES - 1);
	int top_fault = -1;

	for (int i = n - 1; i >= 0; i--)
		if (strcmp(names[i], "fault") == 0)
			top_fault = i;
	top = store;
	for (int i = n - 1; i >= 0; i--) {
		struct backend *node;

		memset(&p, 0, sizeof(p));
		p.block_size = block_size;
		p.opts = i == top_fault && spec[0] ? spec : NULL;
		p.inner = top;
		ops = backend_find(names[i]);
		err = ops && ops->filter ? be_stack_node_open(ops, &p, &node, errmsg)
					 : -EINVAL;
		if (err) {
			if (!*errmsg)
				*errmsg = "filters: not a filter";
			goto err_chain;
		}
		top = node;
	}
	err = be_stack_open(top, out);
	if (err) {
		*errmsg = "out of memory";
		goto err_chain;
	}
	return 0;

err_chain:
	while (top) {
		struct backend *inner = top->inner;

		be_stack_node_close(top);
		top = inner;
	}
	return err;
}

int scsi_lun_filters_now(struct scsi_lun *lun, char *buf, size_t len)
{
	const char *names[BE_STACK_MAX_NODES];
	int n, off = 0;

	if (len)
		buf[0] = '\0';
	if (!be_stack_is_root(lun->be))
		return -EINVAL;
	n = be_stack_names(lun->be, names, BE_STACK_MAX_NODES);
	/* the store (last) and what the key does not list (a tracking
	 * node: stack.h, be_stack_set_filters()) are left out */
	for (int i = 0; i < n - 1 && i < BE_STACK_MAX_NODES; i++) {
		const struct backend_ops *ops = backend_find(names[i]);

		if (!ops || !ops->filter)
			continue;
		off += snprintf(buf + off, (size_t)off < len ? len - (size_t)off : 0,
				"%s%s", off ? "," : "", names[i]);
	}
	return (size_t)off < len ? 0 : -ENOSPC;
}

const void *scsi_lun_fault_node(struct scsi_lun *lun)
{
	if (!be_stack_is_root(lun->be))
		return NULL;
	for (struct backend *be = backend_inner(lun->be); be;
	     be = backend_inner(be))
		if (strcmp(be->ops->name, "fault") == 0)
			return be;
	return NULL;
}

/* Rebuild lun's filters to match s->filters (scsi_lun_update()). */
static int scsi_lun_set_filters(struct scsi_lun *lun,
				const struct lun_settings *s,
				const char **errmsg)
{
	char names[BE_STACK_MAX_NODES][LUN_FILTER_NAME_MAX];
	const char *list[BE_STACK_MAX_NODES];
	struct backend_params p = { .block_size = s->block_size };
	int n = lun_filters_split(s->filters, names, BE_STACK_MAX_NODES - 1);
	int ret;

	if (!be_stack_is_root(lun->be)) {
		*errmsg = "the LUN has no block stack";
		return -EOPNOTSUPP;
	}
	for (int i = 0; i < n; i++)
		list[i] = names[i];
	ret = be_stack_set_filters(lun->be, list, n, &p, BE_STACK_DRAIN_MS,
				   errmsg);
	if (ret == 1)
		log_warn("target %s: LUN %llu: filters = %s: a removed filter "
			 "still has I/O after %d ms; closed when it completes",
			 lun->target_name, (unsigned long long)lun->id,
			 s->filters, BE_STACK_DRAIN_MS);
	return ret < 0 ? ret : 0;
}

/* Capacity of be in blocks; the store must hold a whole number of them. */
static int lun_capacity(const struct backend *be, uint32_t block_size,
			uint64_t *nblocks, const char **errmsg)
{
	uint64_t size = be_size(be);

	if (size % block_size) {
		*errmsg = "the backing store's size is not a multiple of the block size";
		return -EINVAL;
	}
	if (size < block_size) {
		*errmsg = "the backing store is smaller than one block";
		return -EINVAL;
	}
	*nblocks = size / block_size;
	return 0;
}

/* The last reference is gone (scsi_lun_put() in lun.c): tear down what
 * scsi_lun_create() built, in reverse order. */
static void scsi_lun_release(struct scsi_lun *l)
{
	/* the SCSI state first: it takes the LUN off the ALUA watchdog's
	 * list, under the mutex the watchdog holds while it works on a LUN
	 * (dropping held commands through the hang engine); freed after
	 * the hang engine, the watchdog could still be reading lun->hang */
	scsi_lun_state_free(l);
	hang_lun_free(l);
	/* the bitmaps' flusher first: a set whose bitmaps live in the
	 * store's metadata finishes its save (or clean-up) through the
	 * stack, which must still be open */
	cbt_set_free(l->cbt);
	l->cbt = NULL;
	be_stack_close(l->be);
	l->be = NULL;
	lun_settings_release(l);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

int scsi_lun_cbt_attach(struct scsi_lun *l, const char **errmsg)
{
	struct backend_params p = { 0 };
	struct backend *node;
	int err;

	if (!l->be || !l->cbt)
		return -EINVAL;
	if (cbt_filter_find(l->be))
		return 0;
	/* the set before the node goes live: a write that reaches the node
	 * is marked from the start */
	err = be_stack_insert(l->be, &cbt_filter_ops, &p, BE_STACK_TOP, NULL,
			      &node, errmsg);
	if (err)
		return err;
	cbt_filter_set_bitmaps(node, l->cbt);
	/* writes that entered the stack before the node are done after
	 * this: from here on every write passes through it */
	be_stack_drain(l->be, BE_STACK_DRAIN_MS);
	return 0;
}

int scsi_lun_cbt_init(struct scsi_lun *l, const char *target_name,
		      const char **errmsg)
{
	char path[PATH_MAX];
	int err;

	if (!l->be || l->cbt)
		return 0;
	if (cbt_mirror_marker_take(target_name, lun_settings_get(l)->lun, path,
				   sizeof(path)))
		log_warn("target %s: LUN %llu: a mirror job to %s had not ended when holdfastd stopped: the job is gone (jobs are not kept over a restart); the LUN serves %s, the destination is left as it was",
			 target_name,
			 (unsigned long long)lun_settings_get(l)->lun, path,
			 lun_settings_get(l)->path);
	/* A store with metadata of its own (RBD) keeps them there, where
	 * every gateway in front of it reads them (cbt_meta.h), unless the
	 * LUN shares a state file with the other node (alua_state_dir): as
	 * the reservations (scsi_pr_store.c). */
	bool meta = cbt_meta_backend_usable(l->be);

	if (lun_settings_get(l)->alua_group) {
		/* shared with the other node, which loads it when it takes
		 * over (scsi_lun_refresh, SCSI_REFRESH_SHARED) */
		err = lun_shared_state_path(lun_settings_get(l), target_name,
					    ".bitmaps", path, sizeof(path));
		meta = meta && err;
	} else {
		err = cbt_sidecar_path(path, sizeof(path), target_name,
				       lun_settings_get(l)->lun);
	}
	if (meta) {
		char label[PATH_MAX + 64];

		snprintf(label, sizeof(label), "metadata " CBT_META_HEADER_KEY
			 " of %s", lun_settings_get(l)->path[0]
			 ? lun_settings_get(l)->path : "the store");
		/* a bitmap sidecar of an older version moves in */
		err = cbt_set_new_meta(&cbt_meta_backend_ops, l->be, label,
				       lun_settings_get(l)->alua_group || err
				       ? NULL : path, l->be->size, &l->cbt,
				       errmsg);
	} else {
		err = cbt_set_new(err ? NULL : path, l->be->size, &l->cbt,
				  errmsg);
	}
	if (err)
		return err;
	/* the tracking node joins the stack with the first bitmap */
	return cbt_set_empty(l->cbt) ? 0 : scsi_lun_cbt_attach(l, errmsg);
}

static int scsi_lun_create_store(const struct lun_settings *s,
				  struct backend *given, struct scsi_lun **out,
				  const char **errmsg);

int scsi_lun_create(const struct lun_settings *s, struct scsi_lun **out,
		    const char **errmsg)
{
	return scsi_lun_create_store(s, NULL, out, errmsg);
}

int scsi_lun_create_on(const struct lun_settings *s, struct backend *store,
		       struct scsi_lun **out, const char **errmsg)
{
	return scsi_lun_create_store(s, store, out, errmsg);
}

static int scsi_lun_create_store(const struct lun_settings *s,
				  struct backend *given, struct scsi_lun **out,
				  const char **errmsg)
{
	/* Messages of lun_settings_check() outlive this call: LUN creation
	 * runs on one thread at a time (config_lock(), or startup). */
	static char why[256];
	uint32_t bs = s->block_size ? s->block_size : LUN_BLOCK_SIZE_DEFAULT;
	struct lun_settings *set;
	struct scsi_lun *l;
	int err;

	/* The settings as a whole first (the key table's limits, the
	 * safety rule as the settings state it) ... */
	*errmsg = NULL;
	l = calloc(1, sizeof(*l));
	set = malloc(sizeof(*set));
	if (!l || !set) {
		free(l);
		free(set);
		be_stack_node_close(given);
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	*set = *s;
	set->block_size = bs;
	err = lun_settings_check(set, NULL, NULL, why, sizeof(why));
	if (err) {
		be_stack_node_close(given);
		*errmsg = why;
		goto err_free;
	}

	err = lun_open_stack(s, bs, given, &l->be, errmsg);
	if (err)
		goto err_free;
	/* ... and again against the store actually opened (the DESIGN.md
	 * safety rule): the same check an update makes. */
	err = lun_settings_check(set, l->be, NULL, why, sizeof(why));
	if (err) {
		*errmsg = why;
		goto err_close;
	}
	uint64_t nblocks;
	err = lun_capacity(l->be, bs, &nblocks, errmsg);
	if (err)
		goto err_close;
	atomic_init(&l->nblocks, nblocks);
	/* The snapshot carries the size of what is open (size = 0 asks for
	 * "the store's size"), so dump and reload see the real one. */
	set->size = nblocks * bs;
	atomic_init(&l->set, set);
	lun_fixed_init(l, set);

	atomic_init(&l->refcnt, 1);
	l->release = scsi_lun_release;
	atomic_init(&l->seq, 0);
	atomic_init(&l->ua_gen, 0);
	atomic_init(&l->reads, 0);
	atomic_init(&l->writes, 0);
	atomic_init(&l->read_bytes, 0);
	atomic_init(&l->write_bytes, 0);
	pthread_mutex_init(&l->lock, NULL);

	err = hang_lun_init(l);
	if (err) {
		*errmsg = "cannot set up the hang engine for the LUN";
		goto err_mutex;
	}
	*out = l;
	return 0;

err_mutex:
	pthread_mutex_destroy(&l->lock);
err_close:
	be_stack_close(l->be);
err_free:
	free(set);
	free(l);
	if (!*errmsg)
		*errmsg = "cannot open the LUN's backing store";
	return err;
}

void scsi_lun_shared_release(struct scsi_lun *lun, bool save)
{
	if (!lun->cbt)
		return;
	if (save && cbt_set_save(lun->cbt))
		log_warn("target %s: LUN %llu: bitmaps not saved before "
			 "handover: they are inconsistent", lun->target_name,
			 (unsigned long long)lun->id);
	cbt_set_pause(lun->cbt, true);
}

/* hang_reset() and wait until it is done: the LUN serves only after
 * (this runs on the management thread or the ALUA worker, never on a
 * reactor, so waiting for the LUN's home reactor is safe). */
struct scsi_lun_reset_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int refs;	/* the waiter and the callback */
};

static void scsi_lun_reset_wait_put(struct scsi_lun_reset_wait *w)
{
	bool last;

	pthread_mutex_lock(&w->lock);
	last = --w->refs == 0;
	pthread_mutex_unlock(&w->lock);
	if (last) {
		pthread_mutex_destroy(&w->lock);
		pthread_cond_destroy(&w->cond);
		free(w);
	}
}

static void scsi_lun_reset_done(void *arg)
{
	struct scsi_lun_reset_wait *w = arg;

	pthread_mutex_lock(&w->lock);
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	scsi_lun_reset_wait_put(w);
}

#define SCSI_LUN_RESET_WAIT_S	10

static void scsi_lun_hang_reset(struct scsi_lun *lun)
{
	struct scsi_lun_reset_wait *w = calloc(1, sizeof(*w));
	struct timespec until;
	int err = -ENOMEM;

	if (w) {
		pthread_mutex_init(&w->lock, NULL);
		pthread_cond_init(&w->cond, NULL);
		w->refs = 2;
		err = hang_reset(lun, "ownership taken over", scsi_lun_reset_done,
				 w);
		if (err)
			w->refs = 1;
	}
	if (err) {
		log_warn("target %s: LUN %llu: hang state not reset: %s",
			 lun->target_name, (unsigned long long)lun->id,
			 strerror(-err));
		if (w)
			scsi_lun_reset_wait_put(w);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += SCSI_LUN_RESET_WAIT_S;
	pthread_mutex_lock(&w->lock);
	while (!w->done && !pthread_cond_timedwait(&w->cond, &w->lock, &until))
		;
	if (!w->done)
		log_warn("target %s: LUN %llu: hang state reset not done after "
			 "%d s (the LUN's reactor is busy); serving anyway",
			 lun->target_name, (unsigned long long)lun->id,
			 SCSI_LUN_RESET_WAIT_S);
	pthread_mutex_unlock(&w->lock);
	scsi_lun_reset_wait_put(w);
}

/* Refreshes run on the management thread (a resize, a rescan, a SIGHUP
 * reload) and on the ALUA worker (a takeover by SET TARGET PORT GROUPS):
 * they must not interleave on one LUN. */
static pthread_mutex_t scsi_lun_refresh_lock = PTHREAD_MUTEX_INITIALIZER;

int scsi_lun_refresh(struct scsi_lun *lun, uint64_t size, unsigned flags,
		     const char **errmsg)
{
	/* No snapshot is read here: a takeover runs this on the ALUA
	 * worker, which is neither a reactor nor holds config_lock()
	 * (lun.h); what it needs is fixed at creation. */
	uint32_t bs = lun->block_size;
	uint64_t old_nb, new_nb;
	int err = 0, alua_held = 0;

	*errmsg = NULL;
	if (!lun->be)
		return 0;
	if (size % bs) {
		*errmsg = "size is not a multiple of the block size";
		return -EINVAL;
	}
	if (!lun->be->ops->resize) {
		*errmsg = "the backing store cannot be resized";
		return -EOPNOTSUPP;
	}
	if (be_stack_is_root(lun->be)) {
		const char *names[BE_STACK_MAX_NODES];
		int n = be_stack_names(lun->be, names, BE_STACK_MAX_NODES);

		/* a mirror copies to a destination of the size it started
		 * with (cbt_mirror.h) */
		for (int i = 0; i < n && i < BE_STACK_MAX_NODES; i++)
			if (!strcmp(names[i], "mirror")) {
				*errmsg = "a mirror job runs on the LUN: complete or cancel it first";
				return -EBUSY;
			}
	}
	/* A job copies the LUN at the size it had at its point in time
	 * (QEMU's backup job forbids a resize too). */
	if (lun->cbt && cbt_job_running_on(cbt_filter_find(lun->be))) {
		*errmsg = "a backup or snapshot job runs on the LUN";
		return -EBUSY;
	}
	/* Only the node that owns a shared store changes it, and not while
	 * it hands the store over: the ALUA transition waits for the resize
	 * (the other node then reads the new size when it takes over), a
	 * resize that arrives during a transition waits for it and is then
	 * refused on a node that went standby.  A takeover (SHARED) already
	 * runs inside its transition. */
	if (size && !(flags & SCSI_REFRESH_SHARED)) {
		alua_held = scsi_alua_resize_begin(lun, errmsg);
		if (alua_held < 0)
			return alua_held;
	}
	pthread_mutex_lock(&scsi_lun_refresh_lock);
	old_nb = atomic_load(&lun->nblocks);
	if (size && size / bs < old_nb && !(flags & SCSI_REFRESH_FORCE)) {
		*errmsg = "shrinking a LUN loses the data past the new end "
			  "(add force=1 if that is meant)";
		err = -EINVAL;
		goto out;
	}
	/* Shrinking: new commands see the smaller capacity before the store
	 * gets smaller.  Growing: the store is bigger before any command may
	 * address the new blocks.  Commands already past their range check
	 * finish against the size they were checked against (on a shrink
	 * the store may answer those beyond the new end with an error). */
	if (size && size / bs < old_nb)
		atomic_store(&lun->nblocks, size / bs);
	err = lun->be->ops->resize(lun->be, size, errmsg);
	if (!err)
		err = lun_capacity(lun->be, bs, &new_nb, errmsg);
	if (err) {
		atomic_store(&lun->nblocks, old_nb);
		goto out;
	}
	/* The bitmaps take the new size before a command may address a new
	 * block (on a shrink the blocks past the end are gone already). */
	if (lun->cbt && new_nb != old_nb) {
		int cerr = cbt_set_resize(lun->cbt, new_nb * bs);

		if (cerr)
			log_warn("target %s: LUN %llu: dirty bitmaps not resized (%s): marked inconsistent",
				 lun->target_name,
				 (unsigned long long)lun_settings_get(lun)->lun,
				 strerror(-cerr));
	}
	atomic_store(&lun->nblocks, new_nb);
	/* The settings snapshot is not written here (it is immutable):
	 * scsi_lun_update() publishes the new size; readers of the
	 * capacity use lun->nblocks. */
	if (flags & SCSI_REFRESH_SHARED) {
		/* What the other node changed while it owned the store:
		 * registrations and the reservation (their file), and
		 * nothing held from before may be replayed (the LUN was
		 * standby, so this normally drops nothing). */
		err = scsi_pr_reload(lun);
		if (err && err != -ENOENT)
			log_warn("target %s: LUN %llu: reservations not re-read: %s",
				 lun->target_name,
				 (unsigned long long)lun->id,
				 strerror(-err));
		err = 0;
		/* The hang engine starts over: an episode of this node's
		 * from before it went standby (failed after retry_timeout,
		 * probes paused...) must not make the first error after the
		 * takeover fail fast, and nothing held from before may be
		 * replayed (the LUN was standby, so normally nothing is). */
		scsi_lun_hang_reset(lun);
		/* the persistent bitmaps, with the other node's writes */
		if (lun->cbt) {
			const char *cwhy = NULL;
			int cerr = cbt_set_reload(lun->cbt, &cwhy);

			if (cerr)
				log_warn("target %s: LUN %llu: bitmaps not re-read (%s): all are inconsistent",
					 lun->target_name,
					 (unsigned long long)lun->id,
					 cwhy ? cwhy : strerror(-cerr));
			cbt_set_pause(lun->cbt, false);
			if (!cbt_set_empty(lun->cbt) &&
			    scsi_lun_cbt_attach(lun, &cwhy))
				log_warn("target %s: LUN %llu: bitmap tracking not attached: %s",
					 lun->target_name,
					 (unsigned long long)lun->id,
					 cwhy ? cwhy : "?");
		}
	}
	if (new_nb != old_nb) {
		/* SBC-3 4.6: every I_T nexus learns of it on its next
		 * command; READ CAPACITY, the VPD pages and GET LBA STATUS
		 * read lun->nblocks, so they follow at once. */
		scsi_lun_notify(lun, SCSI_EV_CAPACITY_CHANGED);
		log_info("target %s: LUN %llu: capacity %llu -> %llu blocks of %u bytes",
			 lun->target_name, (unsigned long long)lun->id,
			 (unsigned long long)old_nb,
			 (unsigned long long)new_nb, bs);
	}
out:
	pthread_mutex_unlock(&scsi_lun_refresh_lock);
	if (alua_held > 0)
		scsi_alua_resize_end(lun);
	return err;
}

/* The first backend in lun's stack (top down) that takes run-time
 * parameters (the fault layer). */
static struct backend *scsi_lun_param_backend(struct scsi_lun *lun)
{
	for (struct backend *be = lun->be; be; be = be->inner)
		if (be->ops->set_param)
			return be;
	return NULL;
}

int scsi_lun_update(struct scsi_lun *lun, const struct lun_settings *s,
		    unsigned force, char *err, unsigned errlen)
{
	const struct lun_settings *cur = lun_settings_get(lun);
	const struct lun_key *fixed;
	struct lun_settings *next;
	const char *why = NULL;
	unsigned changed;
	uint64_t cap, new_size;
	int ret;

	changed = lun_settings_diff(cur, s, &fixed) |
		  (force & ~SCSI_UPDATE_FORCE);
	if (fixed) {
		snprintf(err, errlen, "%s: fixed when the LUN is created",
			 lun_key_name(fixed));
		return -EPERM;
	}
	/* the size asked for against the capacity the LUN has now (a
	 * takeover may have re-read it, scsi_alua.c) */
	cap = atomic_load(&lun->nblocks) * cur->block_size;
	new_size = s->size != cap ? s->size : 0;	/* 0: re-read it */
	if (new_size)
		changed |= LUN_KEY_RESIZE | LUN_KEY_CHANGED;
	else if (!(force & LUN_KEY_RESIZE))
		changed &= ~LUN_KEY_RESIZE;
	/* Leaving the pair, or renumbering it, on a live LUN could leave
	 * both nodes serving: the groups are fixed once set. */
	if (cur->alua_group && (s->alua_group != cur->alua_group ||
				s->alua_peer_group != cur->alua_peer_group)) {
		snprintf(err, errlen, "alua_group and alua_peer_group are "
			 "fixed once set (delete and add the LUN to change "
			 "them)");
		return -EPERM;
	}
	/* alua_state is the state asked for; the LUN's is run-time state
	 * (scsi_alua.c), which an STPG, a refused takeover or a lost lock
	 * may have moved away from the setting.  It is asked again only
	 * when this update names an alua_* key (force, from management) or
	 * changes the setting (a reload): an unrelated update (hang=retry)
	 * must not hand a LUN back that an initiator moved by STPG. */
	if (s->alua_group && (force & LUN_KEY_ALUA))
		changed |= LUN_KEY_CHANGED;
	if (!changed)
		return 0;
	next = malloc(sizeof(*next));
	if (!next) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*next = *cur;
	lun_settings_merge(next, s, LUN_KEY_RUNTIME | LUN_KEY_PARAM);
	next->size = cap;
	ret = lun_settings_check(next, lun->be, NULL, err, errlen);
	if (ret)
		goto refuse;

	/* The steps the store may still refuse, each before anything is
	 * published: the resize, the ALUA state, the fault spec. */
	if (changed & LUN_KEY_RESIZE) {
		ret = scsi_lun_refresh(lun, new_size,
				       force & SCSI_UPDATE_FORCE ?
				       SCSI_REFRESH_FORCE : 0, &why);
		if (ret) {
			snprintf(err, errlen, "size %" PRIu64 " refused (%s%s%s); it stays %" PRIu64,
				 new_size, why ? why : "", why ? ": " : "",
				 strerror(-ret), cap);
			goto refuse;
		}
	}
	next->size = atomic_load(&lun->nblocks) * next->block_size;
	if (changed & LUN_KEY_ALUA) {
		ret = scsi_alua_apply(lun, next, force & SCSI_UPDATE_FORCE,
				      &why);
		if (ret) {
			snprintf(err, errlen, "alua_state=%s refused: %s",
				 next->alua_standby ? "standby" : "active",
				 why ? why : strerror(-ret));
			goto refuse;
		}
	}
	if (changed & LUN_KEY_STACK) {
		const void *fault_was = scsi_lun_fault_node(lun);

		ret = scsi_lun_set_filters(lun, next, &why);
		if (ret) {
			snprintf(err, errlen, "filters = %s refused: %s",
				 next->filters[0] ? next->filters : "none",
				 why ? why : strerror(-ret));
			goto refuse;
		}
		/* a new topmost fault filter starts with no spec: give it
		 * the one the settings hold */
		if (next->backend_opts[0] &&
		    scsi_lun_fault_node(lun) != fault_was)
			changed |= LUN_KEY_PARAM;
	}
	if (changed & LUN_KEY_PARAM) {
		struct backend *be = scsi_lun_param_backend(lun);
		const char *spec = next->backend_opts[0] ? next->backend_opts
							 : "off";

		ret = be ? be->ops->set_param(be, "fault", spec) : -EOPNOTSUPP;
		if (ret) {
			snprintf(err, errlen, "fault=%s: %s", spec,
				 strerror(-ret));
			goto refuse;
		}
	}
	lun_settings_retire(lun_settings_publish(lun, next));
	if (changed & LUN_KEY_HANG)
		hang_settings_changed(lun);
	/* Mode page contents changed (SPC-4 5.14: MODE PARAMETERS CHANGED). */
	if (changed & LUN_KEY_MODE)
		scsi_lun_notify(lun, SCSI_EV_MODE_CHANGED);
	return 1;

refuse:
	free(next);
	return ret;
}

bool scsi_lun_may_solicit(struct scsi_lun *lun)
{
	return hang_state(lun) != HANG_HUNG;
}

_Static_assert(SCSI_NEXUS_ALL == HANG_NEXUS_ALL,
	       "one 'every nexus' value for the SCSI layer and the hang engine");

int scsi_lun_drop_nexus(struct scsi_lun *lun, uint64_t nexus,
			struct reactor *r,
			void (*done)(void *arg, unsigned dropped), void *arg)
{
	return hang_abort_nexus(lun, nexus, r, done, arg);
}

int scsi_lun_store_moved(struct scsi_lun *lun, const char *path)
{
	const struct lun_settings *cur = lun_settings_get(lun);
	struct lun_settings *next = malloc(sizeof(*next));
	int err;

	if (!next)
		return -ENOMEM;
	*next = *cur;
	/* the destination is a file or block device ("fault" stays: it
	 * means a file store with injection when there is a path) */
	if (strcmp(next->backend, "fault") && strcmp(next->backend, "file")) {
		snprintf(next->backend, sizeof(next->backend), "file");
		next->bsopts[0] = '\0';	/* the old store's options */
	}
	snprintf(next->path, sizeof(next->path), "%s", path);
	lun_settings_retire(lun_settings_publish(lun, next));
	err = scsi_pr_store_moved(lun, path);
	if (err)
		log_warn("target %s: LUN %llu: the reservation state file did not follow the store: %s",
			 lun->target_name, (unsigned long long)next->lun,
			 strerror(-err));
	return 0;
}
