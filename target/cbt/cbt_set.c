/* cbt_set.c - a LUN's bitmaps and the write-intent flusher (cbt_set.h).
 *
 * The hot path reads an immutable array of bitmaps published through an
 * atomic pointer; changes publish a new array.  Old arrays and removed
 * bitmaps are retired to a list freed with the set, because a reactor may
 * still be marking through them (a grace period without locks).
 *
 * Each persistent bitmap has a shadow "durable" bitmap: the bits known to
 * be in the sidecar on disk.  The invariant is durable <= on-disk bits at
 * every moment, so a write whose chunks are all durable needs no wait. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbt_job.h"
#include "cbt_meta.h"
#include "cbt_set.h"
#include "cbt_sidecar.h"
#include "reactor.h"

struct cbt_entry {
	struct cbt_bitmap *bm;
	struct cbt_bitmap *durable;	/* persistent bitmaps only */
};

struct cbt_list {
	unsigned n;
	struct cbt_list *retired_next;	/* on the retired list */
	struct cbt_entry e[];
};

struct cbt_retired_bm {
	struct cbt_retired_bm *next;
	struct cbt_entry e;
};

struct cbt_set {
	char *sidecar;			/* a file holds the persistent bitmaps */
	struct cbt_meta *meta;		/* or the store's metadata does */
	char *label;			/* where they live, for log lines */
	uint64_t size;
	struct cbt_list *_Atomic active;
	pthread_mutex_t ctl;		/* serialises control operations */

	/* flusher: lock guards the generations, waiters and stop */
	pthread_mutex_t lock;
	pthread_cond_t kick, done;
	pthread_t thread;
	bool thread_started, stop;
	uint64_t want_gen, done_gen;
	int last_res;
	struct list_head waiters;
	atomic_bool broken;		/* sidecar unwritable: no waiting */
	atomic_bool paused;		/* cbt_set_pause(): the other node
					 * owns the sidecar */

	struct cbt_list *retired_lists;
	struct cbt_retired_bm *retired_bms;
};

static char cbt_state_dir[PATH_MAX];

void cbt_state_dir_set(const char *dir)
{
	snprintf(cbt_state_dir, sizeof(cbt_state_dir), "%s", dir ? dir : "");
}

int cbt_sidecar_path(char *out, size_t len, const char *target_name,
		     uint64_t lun)
{
	int n;

	if (!cbt_state_dir[0])
		return -ENOENT;
	n = snprintf(out, len, "%s/%s.lun%llu.bitmaps", cbt_state_dir,
		     target_name, (unsigned long long)lun);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Can persistent bitmaps be kept? */
static bool has_store(const struct cbt_set *s)
{
	return s->sidecar || s->meta;
}

/* Is anything stored now (a sidecar file, a metadata header)? */
static bool store_present(struct cbt_set *s)
{
	if (s->meta)
		return cbt_meta_present(s->meta);
	return access(s->sidecar, F_OK) == 0;
}

/* Read the stored bitmaps: -ENOENT when nothing is stored. */
static int store_read(struct cbt_set *s, struct cbt_bitmap ***bms,
		      unsigned *n, uint64_t *size, const char **why)
{
	uint8_t *buf;
	size_t len;
	int err;

	if (s->meta)
		return cbt_meta_load(s->meta, bms, n, size, why);
	err = cbt_sidecar_read_file(s->sidecar, &buf, &len);
	if (err) {
		if (err != -ENOENT)
			*why = "cannot read the bitmap sidecar";
		return err;
	}
	err = cbt_sidecar_decode(buf, len, bms, n, size, why);
	free(buf);
	return err;
}

static struct cbt_list *list_alloc(unsigned n)
{
	struct cbt_list *l = calloc(1, sizeof(*l) + n * sizeof(l->e[0]));

	if (l)
		l->n = n;
	return l;
}

bool cbt_set_empty(const struct cbt_set *s)
{
	return atomic_load_explicit(&((struct cbt_set *)s)->active,
				    memory_order_acquire)->n == 0;
}

/* ---- the flusher ---- */

/* Write every persistent bitmap.  Called on the flusher thread, or on the
 * control thread with ctl held (never both at once: both hold ctl or run
 * on the flusher, which takes ctl for the write). */
static int persist_now(struct cbt_set *s)
{
	struct cbt_list *l = atomic_load(&s->active);
	struct cbt_bitmap *snap[CBT_SIDECAR_MAX_BITMAPS];
	struct cbt_entry *ent[CBT_SIDECAR_MAX_BITMAPS];
	unsigned n = 0;
	uint8_t *buf = NULL;
	size_t len;
	int err = 0;

	for (unsigned i = 0; i < l->n && n < CBT_SIDECAR_MAX_BITMAPS; i++) {
		struct cbt_bitmap *b = l->e[i].bm, *c;

		if (!b->persistent)
			continue;
		c = cbt_bitmap_new(b->name, b->size, b->granularity,
				   atomic_load(&b->enabled));
		if (!c) {
			err = -ENOMEM;
			goto out;
		}
		/* the snapshot: own bits plus a job's successor */
		cbt_bitmap_snapshot_words(b, (uint64_t *)c->words);
		atomic_store(&c->inconsistent, atomic_load(&b->inconsistent));
		snap[n] = c;
		ent[n] = &l->e[i];
		n++;
	}
	if (!n && !store_present(s))
		goto out;	/* nothing persistent, nothing on disk */
	if (atomic_load(&s->paused))
		goto out;	/* the other node's file now */
	if (!s->meta) {
		err = cbt_sidecar_encode(snap, n, s->size, &buf, &len);
		if (err)
			goto out;
	}
	/* bits about to disappear from disk leave the durable shadow first */
	for (unsigned i = 0; i < n; i++)
		cbt_bitmap_and(ent[i]->durable, snap[i]);
	if (s->meta)
		err = cbt_meta_save(s->meta, snap, n, s->size);
	else
		err = cbt_sidecar_write_file(s->sidecar, buf, len);
	if (!err)
		for (unsigned i = 0; i < n; i++)
			cbt_bitmap_copy_from(ent[i]->durable, snap[i]);
out:
	if (err) {
		int perr;

		for (unsigned i = 0; i < l->n; i++)
			if (l->e[i].bm->persistent)
				atomic_store(&l->e[i].bm->inconsistent, true);
		if (s->meta) {
			perr = cbt_meta_poison(s->meta);
			if (perr && perr != -ENOENT)
				log_err("cbt: %s: cannot write (%s) nor poison the "
					"persistent bitmaps; remove the key "
					CBT_META_HEADER_KEY " before the LUN starts "
					"anywhere again", s->label, strerror(-err));
			else
				log_err("cbt: %s: cannot write the persistent bitmaps "
					"(%s); they are inconsistent until cleared",
					s->label, strerror(-err));
		} else if ((perr = cbt_sidecar_poison(s->sidecar)) &&
			   perr != -ENOENT && unlink(s->sidecar) < 0) {
			log_err("cbt: %s: cannot write (%s) nor poison the bitmap sidecar; "
				"remove it before restarting", s->sidecar, strerror(-err));
		} else {
			log_err("cbt: %s: cannot write the bitmap sidecar (%s); "
				"persistent bitmaps are inconsistent until cleared",
				s->sidecar, strerror(-err));
		}
		atomic_store(&s->broken, true);
	} else {
		atomic_store(&s->broken, false);
	}
	for (unsigned i = 0; i < n; i++)
		cbt_bitmap_free(snap[i]);
	free(buf);
	return err;
}

static void wait_call(void *arg)
{
	struct cbt_wait *w = arg;

	w->fn(w, w->res);
}

static void *flusher_main(void *arg)
{
	struct cbt_set *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct list_head ready;
		struct cbt_wait *w, *tmp;
		uint64_t g;
		int res;

		while (!s->stop && s->want_gen == s->done_gen)
			pthread_cond_wait(&s->kick, &s->lock);
		if (s->want_gen == s->done_gen)
			break;
		g = s->want_gen;
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_lock(&s->ctl);
		res = persist_now(s);
		pthread_mutex_unlock(&s->ctl);
		pthread_mutex_lock(&s->lock);
		s->done_gen = g;
		s->last_res = res;
		list_init(&ready);
		list_for_each_entry_safe(w, tmp, &s->waiters, link)
			if (w->gen <= g) {
				list_del(&w->link);
				w->res = res;
				list_add_tail(&w->link, &ready);
			}
		pthread_cond_broadcast(&s->done);
		pthread_mutex_unlock(&s->lock);
		list_for_each_entry_safe(w, tmp, &ready, link) {
			list_del(&w->link);
			if (!w->r || reactor_call(w->r, wait_call, w) < 0)
				w->fn(w, w->res);
		}
		pthread_mutex_lock(&s->lock);
		/* metadata: the shards the save made unreferenced go once
		 * nothing waits for a save (cbt_meta_cleanup) */
		while (s->meta && s->want_gen == s->done_gen && !s->stop) {
			bool more = false;

			/* a step at a time: a save asked for meanwhile, or
			 * the set being freed, goes first */
			pthread_mutex_unlock(&s->lock);
			pthread_mutex_lock(&s->ctl);
			if (!atomic_load(&s->paused))
				more = cbt_meta_cleanup_step(s->meta);
			pthread_mutex_unlock(&s->ctl);
			pthread_mutex_lock(&s->lock);
			if (!more)
				break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static int flusher_start(struct cbt_set *s)
{
	int err;

	if (s->thread_started)
		return 0;
	err = pthread_create(&s->thread, NULL, flusher_main, s);
	if (err)
		return -err;
	s->thread_started = true;
	return 0;
}

bool cbt_set_mark(struct cbt_set *s, uint64_t offset, uint64_t len)
{
	struct cbt_list *l = atomic_load_explicit(&s->active, memory_order_acquire);
	bool need = false;

	for (unsigned i = 0; i < l->n; i++) {
		struct cbt_bitmap *b = l->e[i].bm;
		uint64_t fresh = cbt_bitmap_mark(b, offset, len);

		if (!b->persistent || !cbt_bitmap_recording(b))
			continue;
		/* A chunk dirty in memory but not yet on disk (another
		 * write's intent still being saved) must wait too. */
		if (fresh || !cbt_bitmap_range_is_set(l->e[i].durable, offset, len))
			need = true;
	}
	return need && !atomic_load_explicit(&s->broken, memory_order_relaxed);
}

void cbt_set_wait(struct cbt_set *s, struct cbt_wait *w)
{
	pthread_mutex_lock(&s->lock);
	w->gen = ++s->want_gen;
	list_add_tail(&w->link, &s->waiters);
	pthread_cond_signal(&s->kick);
	pthread_mutex_unlock(&s->lock);
}

void cbt_set_save_async(struct cbt_set *s)
{
	if (!has_store(s) || !s->thread_started)
		return;
	pthread_mutex_lock(&s->lock);
	++s->want_gen;
	pthread_cond_signal(&s->kick);
	pthread_mutex_unlock(&s->lock);
}

void cbt_set_lost_intent(struct cbt_set *s)
{
	struct cbt_list *l = atomic_load(&s->active);

	for (unsigned i = 0; i < l->n; i++)
		if (l->e[i].bm->persistent)
			atomic_store(&l->e[i].bm->inconsistent, true);
	cbt_set_save_async(s);
}

/* Control path: save synchronously through the flusher (so it batches
 * with the writes in flight).  Called with ctl NOT held. */
static int save_sync(struct cbt_set *s)
{
	uint64_t g;
	int res;

	if (!has_store(s))
		return 0;
	res = flusher_start(s);
	if (res)
		return res;
	pthread_mutex_lock(&s->lock);
	g = ++s->want_gen;
	pthread_cond_signal(&s->kick);
	while (s->done_gen < g)
		pthread_cond_wait(&s->done, &s->lock);
	res = s->last_res;
	pthread_mutex_unlock(&s->lock);
	return res;
}

int cbt_set_save(struct cbt_set *s)
{
	return save_sync(s);
}

/* ---- control path ---- */

static int find_index(const struct cbt_list *l, const char *name)
{
	for (unsigned i = 0; i < l->n; i++)
		if (!strcmp(l->e[i].bm->name, name))
			return (int)i;
	return -1;
}

struct cbt_bitmap *cbt_set_find(struct cbt_set *s, const char *name)
{
	struct cbt_list *l = atomic_load(&s->active);
	int i = find_index(l, name);

	return i < 0 ? NULL : l->e[i].bm;
}

unsigned cbt_set_list(struct cbt_set *s, struct cbt_bitmap **out, unsigned max)
{
	struct cbt_list *l = atomic_load(&s->active);
	unsigned i;

	for (i = 0; i < l->n && i < max; i++)
		out[i] = l->e[i].bm;
	return l->n;
}

/* Publish l, retiring the array it replaces. */
static void publish(struct cbt_set *s, struct cbt_list *l)
{
	struct cbt_list *old = atomic_exchange(&s->active, l);

	old->retired_next = s->retired_lists;
	s->retired_lists = old;
}

static int add_entry(struct cbt_set *s, struct cbt_bitmap *b)
{
	struct cbt_list *old = atomic_load(&s->active), *l;
	struct cbt_bitmap *d = NULL;

	if (old->n >= CBT_SIDECAR_MAX_BITMAPS)
		return -ENOSPC;
	if (b->persistent) {
		d = cbt_bitmap_new(b->name, b->size, b->granularity, true);
		if (!d)
			return -ENOMEM;
	}
	l = list_alloc(old->n + 1);
	if (!l) {
		cbt_bitmap_free(d);
		return -ENOMEM;
	}
	memcpy(l->e, old->e, old->n * sizeof(l->e[0]));
	l->e[old->n].bm = b;
	l->e[old->n].durable = d;
	publish(s, l);
	return 0;
}

int cbt_set_add(struct cbt_set *s, const char *name, uint32_t granularity,
		bool persistent, bool enabled)
{
	struct cbt_bitmap *b;
	int err;

	if (persistent && !has_store(s))
		return -EOPNOTSUPP;
	pthread_mutex_lock(&s->ctl);
	if (cbt_set_find(s, name)) {
		pthread_mutex_unlock(&s->ctl);
		return -EEXIST;
	}
	b = cbt_bitmap_new(name, s->size, granularity, enabled);
	if (!b) {
		err = -errno;
		pthread_mutex_unlock(&s->ctl);
		return err;
	}
	b->persistent = persistent;
	err = add_entry(s, b);
	pthread_mutex_unlock(&s->ctl);
	if (err) {
		cbt_bitmap_free(b);
		return err;
	}
	if (persistent)
		err = save_sync(s);
	if (err)	/* never keep a persistent bitmap that is not on disk */
		cbt_set_remove(s, name);
	return err;
}

int cbt_set_remove(struct cbt_set *s, const char *name)
{
	struct cbt_list *old, *l;
	struct cbt_retired_bm *r;
	bool persistent;
	int i;

	pthread_mutex_lock(&s->ctl);
	old = atomic_load(&s->active);
	i = find_index(old, name);
	if (i < 0 || atomic_load(&old->e[i].bm->busy)) {
		pthread_mutex_unlock(&s->ctl);
		return i < 0 ? -ENOENT : -EBUSY;
	}
	l = list_alloc(old->n - 1);
	r = calloc(1, sizeof(*r));
	if (!l || !r) {
		free(l);
		free(r);
		pthread_mutex_unlock(&s->ctl);
		return -ENOMEM;
	}
	memcpy(l->e, old->e, (size_t)i * sizeof(l->e[0]));
	memcpy(l->e + i, old->e + i + 1, (old->n - (unsigned)i - 1) * sizeof(l->e[0]));
	r->e = old->e[i];
	r->next = s->retired_bms;
	s->retired_bms = r;
	persistent = r->e.bm->persistent;
	atomic_store(&r->e.bm->enabled, false);
	publish(s, l);
	pthread_mutex_unlock(&s->ctl);
	return persistent ? save_sync(s) : 0;
}

/* Run op on bitmap name under ctl, then save if it is persistent. */
static int with_bitmap(struct cbt_set *s, const char *name,
		       int (*op)(struct cbt_bitmap *b, void *arg), void *arg)
{
	struct cbt_bitmap *b;
	int err;

	pthread_mutex_lock(&s->ctl);
	b = cbt_set_find(s, name);
	err = b ? op(b, arg) : -ENOENT;
	pthread_mutex_unlock(&s->ctl);
	if (!err && b->persistent)
		err = save_sync(s);
	return err;
}

static int op_clear(struct cbt_bitmap *b, void *arg)
{
	(void)arg;
	return cbt_bitmap_clear(b);
}

static int op_enable(struct cbt_bitmap *b, void *arg)
{
	if (atomic_load(&b->busy))
		return -EBUSY;
	atomic_store(&b->enabled, *(bool *)arg);
	return 0;
}

static int op_merge(struct cbt_bitmap *b, void *arg)
{
	return cbt_bitmap_merge(b, arg);
}

int cbt_set_clear(struct cbt_set *s, const char *name)
{
	return with_bitmap(s, name, op_clear, NULL);
}

int cbt_set_enable(struct cbt_set *s, const char *name, bool enabled)
{
	return with_bitmap(s, name, op_enable, &enabled);
}

int cbt_set_merge(struct cbt_set *s, const char *dst, const char *src)
{
	struct cbt_bitmap *sb = cbt_set_find(s, src);

	if (!sb)
		return -ENOENT;
	return with_bitmap(s, dst, op_merge, sb);
}

struct cbt_extents {
	const uint64_t *v;	/* offset, length pairs */
	size_t n;
};

static int op_merge_extents(struct cbt_bitmap *b, void *arg)
{
	const struct cbt_extents *e = arg;

	if (atomic_load(&b->busy))
		return -EBUSY;
	for (size_t i = 0; i < e->n; i++)
		cbt_bitmap_set_range(b, e->v[2 * i], e->v[2 * i + 1]);
	return 0;
}

int cbt_set_merge_extents(struct cbt_set *s, const char *dst,
			  const uint64_t *ext, size_t n)
{
	struct cbt_extents e = { ext, n };

	return with_bitmap(s, dst, op_merge_extents, &e);
}

/* b |= src's bits that fall inside b (same granularity). */
static void or_in_range(struct cbt_bitmap *b, const struct cbt_bitmap *src)
{
	uint64_t off = 0, len;

	while (cbt_bitmap_next_extent(src, &off, &len, true)) {
		cbt_bitmap_set_range(b, off, len);
		off += len;
	}
}

/* Online resize: reactors keep marking while it runs.  Each bitmap is
 * replaced by a new one of the new size holding its bits (bits past a
 * smaller end are dropped), published like any change of the list; the
 * old ones are retired.  A reactor may still mark an old bitmap for a
 * moment (the old bitmaps stay enabled for it): after a grace period
 * (no reactor is inside a submit that loaded the old list) their bits
 * are folded in once more, then the sidecar is saved at the new size. */
int cbt_set_resize(struct cbt_set *s, uint64_t lun_size)
{
	struct cbt_list *old, *l;
	struct cbt_retired_bm **r = NULL;
	unsigned n;
	int err = 0;

	pthread_mutex_lock(&s->ctl);
	old = atomic_load(&s->active);
	n = old->n;
	if (lun_size == s->size) {
		pthread_mutex_unlock(&s->ctl);
		return 0;
	}
	for (unsigned i = 0; i < n; i++)
		if (atomic_load(&old->e[i].bm->busy))
			err = -EBUSY;	/* a job's frozen bitmap keeps its size */
	l = err ? NULL : list_alloc(n);
	r = err ? NULL : calloc(n ? n : 1, sizeof(*r));
	if (!err && (!l || !r))
		err = -ENOMEM;
	for (unsigned i = 0; i < n && !err; i++) {
		const struct cbt_bitmap *ob = old->e[i].bm;
		struct cbt_bitmap *b, *d = NULL;

		b = cbt_bitmap_new(ob->name, lun_size, ob->granularity,
				   atomic_load(&ob->enabled));
		if (b && old->e[i].durable)
			d = cbt_bitmap_new(ob->name, lun_size, ob->granularity, true);
		r[i] = calloc(1, sizeof(*r[i]));
		if (!b || (old->e[i].durable && !d) || !r[i]) {
			cbt_bitmap_free(b);
			cbt_bitmap_free(d);
			err = -ENOMEM;
			break;
		}
		b->persistent = ob->persistent;
		atomic_store(&b->inconsistent, atomic_load(&ob->inconsistent));
		or_in_range(b, ob);
		if (d)	/* what is on disk stays on disk */
			or_in_range(d, old->e[i].durable);
		l->e[i].bm = b;
		l->e[i].durable = d;
	}
	if (err) {
		for (unsigned i = 0; l && i < n; i++) {
			cbt_bitmap_free(l->e[i].bm);
			cbt_bitmap_free(l->e[i].durable);
			free(r ? r[i] : NULL);
		}
		free(l);
		free(r);
		if (err == -ENOMEM)	/* they now miss writes past the old end */
			for (unsigned i = 0; i < n; i++)
				atomic_store(&old->e[i].bm->inconsistent, true);
		pthread_mutex_unlock(&s->ctl);
		return err;
	}
	for (unsigned i = 0; i < n; i++) {
		r[i]->e = old->e[i];
		r[i]->next = s->retired_bms;
		s->retired_bms = r[i];
	}
	publish(s, l);
	s->size = lun_size;
	/* ctl stays held: the flusher must not save (and release a write
	 * whose bit is still only in an old bitmap) before the fold.
	 * Reactors never take ctl. */
	cbt_reactors_quiesce();
	for (unsigned i = 0; i < n; i++)
		or_in_range(l->e[i].bm, r[i]->e.bm);
	pthread_mutex_unlock(&s->ctl);
	free(r);
	return save_sync(s);
}

void cbt_set_pause(struct cbt_set *s, bool paused)
{
	pthread_mutex_lock(&s->ctl);
	atomic_store(&s->paused, paused);
	pthread_mutex_unlock(&s->ctl);
}

static void mark_all_inconsistent(struct cbt_set *s)
{
	struct cbt_list *l = atomic_load(&s->active);

	for (unsigned i = 0; i < l->n; i++)
		atomic_store(&l->e[i].bm->inconsistent, true);
}

int cbt_set_reload(struct cbt_set *s, const char **why)
{
	struct cbt_bitmap **bms = NULL;
	struct cbt_list *old, *l;
	struct cbt_retired_bm *ret = NULL;
	unsigned n = 0, k = 0;
	uint64_t size;
	int err = 0;

	*why = NULL;
	if (!has_store(s))
		return 0;
	pthread_mutex_lock(&s->ctl);
	err = store_read(s, &bms, &n, &size, why);
	if (err == -ENOENT)
		err = 0;
	for (unsigned i = 0; i < n && !err; i++)
		if (size != s->size)
			err = cbt_bitmap_resize(bms[i], s->size);
	old = atomic_load(&s->active);
	l = err ? NULL : list_alloc(old->n + n);
	if (!l) {
		if (!err) {
			err = -ENOMEM;
			*why = "out of memory loading the bitmap sidecar";
		}
		goto fail;
	}
	/* what stays: the bitmaps that are not persistent and the ones a
	 * job holds; both missed the other node's writes */
	for (unsigned i = 0; i < old->n; i++) {
		struct cbt_entry *e = &old->e[i];

		if (!e->bm->persistent || atomic_load(&e->bm->busy)) {
			atomic_store(&e->bm->inconsistent, true);
			l->e[k++] = *e;
			continue;
		}
		struct cbt_retired_bm *r = calloc(1, sizeof(*r));
		if (!r) {
			err = -ENOMEM;
			*why = "out of memory loading the bitmap sidecar";
			free(l);
			goto fail_retired;
		}
		r->e = *e;
		r->next = ret;
		ret = r;
	}
	for (unsigned i = 0; i < n; i++) {
		bool dup = false;

		for (unsigned j = 0; j < k; j++)
			dup |= !strcmp(l->e[j].bm->name, bms[i]->name);
		struct cbt_bitmap *d = dup ? NULL :
			cbt_bitmap_new(bms[i]->name, bms[i]->size,
				       bms[i]->granularity, true);
		if (!d) {	/* a job's bitmap of that name stays */
			cbt_bitmap_free(bms[i]);
			continue;
		}
		cbt_bitmap_copy_from(d, bms[i]);	/* what is on disk */
		l->e[k].bm = bms[i];
		l->e[k].durable = d;
		k++;
	}
	l->n = k;
	free(bms);
	bms = NULL;
	n = 0;
	/* the replaced bitmaps: retired, not freed (a reactor may still
	 * hold the old array, cbt_set.c header) */
	while (ret) {
		struct cbt_retired_bm *r = ret;

		ret = r->next;
		atomic_store(&r->e.bm->enabled, false);
		r->next = s->retired_bms;
		s->retired_bms = r;
	}
	publish(s, l);
	pthread_mutex_unlock(&s->ctl);
	return k ? flusher_start(s) : 0;

fail_retired:
	while (ret) {
		struct cbt_retired_bm *r = ret;

		ret = r->next;
		free(r);
	}
fail:
	for (unsigned i = 0; i < n; i++)
		cbt_bitmap_free(bms[i]);
	free(bms);
	/* never serve bitmaps nobody can trust */
	mark_all_inconsistent(s);
	pthread_mutex_unlock(&s->ctl);
	return err;
}

/* ---- life cycle ---- */

/* Add bitmaps read from a store (or the file of an older version) to a
 * new set; what was read is what is stored (the durable shadows). */
static int load_bitmaps(struct cbt_set *s, struct cbt_bitmap **bms,
			unsigned n, uint64_t size, const char **why)
{
	int err = 0;

	for (unsigned i = 0; i < n; i++) {
		if (!err && size != s->size)
			err = cbt_bitmap_resize(bms[i], s->size);
		if (!err)
			err = add_entry(s, bms[i]);
		if (err)
			cbt_bitmap_free(bms[i]);
		else	/* what we loaded is what is on disk */
			cbt_bitmap_copy_from(atomic_load(&s->active)->e[i].durable,
					     bms[i]);
	}
	free(bms);
	if (err)
		*why = "out of memory loading the bitmap sidecar";
	return err;
}

static int load_store(struct cbt_set *s, const char **why)
{
	struct cbt_bitmap **bms = NULL;
	unsigned n = 0;
	uint64_t size;
	int err = store_read(s, &bms, &n, &size, why);

	if (err == -ENOENT)
		return 0;
	if (err)
		return err;
	return load_bitmaps(s, bms, n, size, why);
}

/* A LUN whose bitmaps moved into its store's metadata: an older version
 * kept them in a sidecar file.  Nothing in the metadata yet and such a
 * file: take its bitmaps over, save them, and remove the file. */
static int migrate_sidecar(struct cbt_set *s, const char *legacy,
			   const char **why)
{
	struct cbt_bitmap **bms = NULL;
	uint8_t *buf;
	size_t len;
	unsigned n = 0;
	uint64_t size;
	int err;

	if (!legacy || atomic_load(&s->active)->n ||
	    cbt_meta_present(s->meta))
		return 0;
	err = cbt_sidecar_read_file(legacy, &buf, &len);
	if (err == -ENOENT)
		return 0;
	if (err) {
		*why = "cannot read the bitmap sidecar";
		return err;
	}
	err = cbt_sidecar_decode(buf, len, &bms, &n, &size, why);
	free(buf);
	if (!err)
		err = load_bitmaps(s, bms, n, size, why);
	if (!err && n) {
		/* the durable shadows say "on disk": true of the file */
		err = flusher_start(s);
		if (!err)
			err = save_sync(s);
		if (err)
			*why = "cannot save the sidecar's bitmaps in the store's metadata";
	}
	if (!err) {
		unlink(legacy);
		log_info("cbt: %s: %u persistent bitmap(s) moved from %s",
			 s->label, n, legacy);
	}
	return err;
}

static int set_create(const char *sidecar, const struct cbt_meta_ops *ops,
		      void *ctx, const char *label, const char *legacy,
		      uint64_t lun_size, struct cbt_set **out,
		      const char **why)
{
	struct cbt_set *s = calloc(1, sizeof(*s));
	struct cbt_list *l = list_alloc(0);
	int err;

	*why = NULL;
	if (!s || !l || (sidecar && !(s->sidecar = strdup(sidecar))) ||
	    (ops && !(s->meta = cbt_meta_new(ops, ctx))) ||
	    !(s->label = strdup(label ? label : sidecar ? sidecar : "-"))) {
		if (s) {
			free(s->sidecar);
			cbt_meta_free(s->meta);
		}
		free(s);
		free(l);
		*why = "out of memory";
		return -ENOMEM;
	}
	s->size = lun_size;
	atomic_init(&s->active, l);
	atomic_init(&s->broken, false);
	pthread_mutex_init(&s->ctl, NULL);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->kick, NULL);
	pthread_cond_init(&s->done, NULL);
	list_init(&s->waiters);
	err = has_store(s) ? load_store(s, why) : 0;
	if (!err && s->meta)
		err = migrate_sidecar(s, legacy, why);
	if (!err && has_store(s) && atomic_load(&s->active)->n)
		err = flusher_start(s);
	if (err) {
		cbt_set_free(s);
		return err;
	}
	*out = s;
	return 0;
}

int cbt_set_new(const char *sidecar, uint64_t lun_size, struct cbt_set **out,
		const char **why)
{
	return set_create(sidecar, NULL, NULL, NULL, NULL, lun_size, out, why);
}

int cbt_set_new_meta(const struct cbt_meta_ops *ops, void *ctx,
		     const char *label, const char *legacy_sidecar,
		     uint64_t lun_size, struct cbt_set **out, const char **why)
{
	return set_create(NULL, ops, ctx, label, legacy_sidecar, lun_size, out,
			  why);
}

const char *cbt_set_store_label(const struct cbt_set *s)
{
	return s->meta ? s->label : s->sidecar;
}

static void entry_free(struct cbt_entry *e)
{
	cbt_bitmap_free(e->bm);
	cbt_bitmap_free(e->durable);
}

void cbt_set_free(struct cbt_set *s)
{
	struct cbt_list *l;

	if (!s)
		return;
	if (s->thread_started) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_signal(&s->kick);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thread, NULL);
	}
	l = atomic_load(&s->active);
	for (unsigned i = 0; i < l->n; i++)
		entry_free(&l->e[i]);
	free(l);
	while ((l = s->retired_lists)) {
		s->retired_lists = l->retired_next;
		free(l);
	}
	while (s->retired_bms) {
		struct cbt_retired_bm *r = s->retired_bms;

		s->retired_bms = r->next;
		entry_free(&r->e);
		free(r);
	}
	pthread_mutex_destroy(&s->ctl);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->kick);
	pthread_cond_destroy(&s->done);
	free(s->sidecar);
	cbt_meta_free(s->meta);
	free(s->label);
	free(s);
}
