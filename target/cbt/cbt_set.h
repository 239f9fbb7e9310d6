/* cbt_set.h - a LUN's dirty bitmaps and their write-intent persistence.
 *
 * A set holds a LUN's named bitmaps.  Reactors mark every recording bitmap
 * for each data-changing request (cbt_set_mark); the management thread
 * adds, removes, clears, enables, disables and merges them.
 *
 * Persistence follows a write-intent protocol (as Linux md's bitmap): a
 * write whose chunk is not yet dirty *on disk* may not be acknowledged
 * before the sidecar holding its bit is durable.  cbt_set_mark() tells
 * the caller when it must wait; a flusher thread per set rewrites the
 * sidecar atomically and releases every waiter whose bit it covered, so
 * writes racing to clean chunks share one sync, and writes to chunks that
 * are already dirty on disk pay nothing.  If the sidecar cannot be
 * written, the persistent bitmaps become inconsistent (refused for
 * incremental backups until cleared), the on-disk copy is poisoned, and
 * writes go on unhindered: never silently wrong, never a failed guest
 * write. */
#ifndef HOLDFAST_CBT_SET_H
#define HOLDFAST_CBT_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbt_bitmap.h"
#include "util.h"

struct reactor;
struct cbt_set;

/* A write waiting for its bits to be durable.  Owned by the caller (part
 * of its request); valid until fn runs.  fn runs once, on r (through
 * reactor_call), or on the flusher thread when r is NULL.  res is 0, or
 * -errno when the sidecar could not be written (the bitmaps are then
 * inconsistent; the write itself should still complete normally). */
struct cbt_wait {
	struct list_head link;
	uint64_t gen;
	struct reactor *r;
	void (*fn)(struct cbt_wait *w, int res);
	int res;
};

/* Where sidecars live: the configuration's directory (set once at
 * startup; none set = bitmaps cannot be persistent). */
void cbt_state_dir_set(const char *dir);
/* The sidecar of LUN lun of target target_name:
 * DIR/<target_name>.lun<N>.bitmaps.  0, -ENOENT (no directory set) or
 * -ENAMETOOLONG. */
int cbt_sidecar_path(char *out, size_t len, const char *target_name,
		     uint64_t lun);

/* Create a set for a LUN of lun_size bytes.  sidecar: the file persistent
 * bitmaps live in (NULL: none can be persistent).  An existing sidecar is
 * loaded (bitmaps resized to lun_size if the LUN grew); a malformed one is
 * an error (-EINVAL, *why says why) so a LUN never starts with bitmaps it
 * cannot trust.  0 or -errno. */
int cbt_set_new(const char *sidecar, uint64_t lun_size, struct cbt_set **out,
		const char **why);
/* The same, with the persistent bitmaps in a store's own metadata
 * (cbt_meta.h: an RBD image's, ops = &cbt_meta_backend_ops, ctx the LUN's
 * root node) instead of a file, so every gateway in front of the store
 * reads them.  label names them in log lines.  legacy_sidecar (may be
 * NULL): the file an older version kept them in; when the metadata holds
 * none and that file exists, its bitmaps are loaded, saved in the
 * metadata, and the file removed. */
struct cbt_meta_ops;
int cbt_set_new_meta(const struct cbt_meta_ops *ops, void *ctx,
		     const char *label, const char *legacy_sidecar,
		     uint64_t lun_size, struct cbt_set **out,
		     const char **why);
/* Where the persistent bitmaps live (the sidecar's path or the metadata
 * label), NULL when they cannot be persistent. */
const char *cbt_set_store_label(const struct cbt_set *s);
/* Stop the flusher (it finishes a save in progress; the sidecar is
 * always current) and free everything.  No marking
 * or waiting may be in progress. */
void cbt_set_free(struct cbt_set *s);

/* Hot path, any reactor: mark [offset, offset+len) in every recording
 * bitmap.  Returns false when the write may be acknowledged as soon as it
 * completes; true when it must first wait: the caller then registers with
 * cbt_set_wait() (or, if it cannot, calls cbt_set_lost_intent()). */
bool cbt_set_mark(struct cbt_set *s, uint64_t offset, uint64_t len);
/* Queue w (w->r and w->fn set): w->fn runs once every bit marked before
 * this call is durable (or the save failed). */
void cbt_set_wait(struct cbt_set *s, struct cbt_wait *w);
/* A write went on without waiting for its intent (no memory): the
 * persistent bitmaps can no longer be trusted after a crash. */
void cbt_set_lost_intent(struct cbt_set *s);
/* Ask for a save without waiting (any thread, e.g. a job's reactor). */
void cbt_set_save_async(struct cbt_set *s);

/* True when the set has no bitmap at all (callers may skip marking). */
bool cbt_set_empty(const struct cbt_set *s);

/* Control path (management thread; serialised by the set's own lock).
 * Each saves the sidecar when a persistent bitmap changed and returns
 * -EIO-like errors from that save. */
int cbt_set_add(struct cbt_set *s, const char *name, uint32_t granularity,
		bool persistent, bool enabled);
int cbt_set_remove(struct cbt_set *s, const char *name);
int cbt_set_clear(struct cbt_set *s, const char *name);
int cbt_set_enable(struct cbt_set *s, const char *name, bool enabled);
int cbt_set_merge(struct cbt_set *s, const char *dst, const char *src);
/* dst |= the chunks of n extents (ext: offset, length pairs in bytes;
 * parts past the end are ignored).  -EBUSY while a job holds dst. */
int cbt_set_merge_extents(struct cbt_set *s, const char *dst,
			  const uint64_t *ext, size_t n);
/* Online resize to lun_size (management thread; reactors may mark
 * meanwhile): bits past a smaller end are dropped, new chunks are clean,
 * the sidecar is saved at the new size.  -EBUSY while a job holds a
 * bitmap; -ENOMEM (the bitmaps are then marked inconsistent). */
int cbt_set_resize(struct cbt_set *s, uint64_t lun_size);
/* Save now and wait until it is durable. */
int cbt_set_save(struct cbt_set *s);

/* A sidecar shared by two nodes (a LUN with alua_group): only the node
 * that owns the store may write it.  paused = true: saves write nothing
 * and succeed (the node is fenced, its writes do not land anyway);
 * false: saves write again.  Control path. */
void cbt_set_pause(struct cbt_set *s, bool paused);
/* The other node owned the store: replace the persistent bitmaps with the
 * ones in the sidecar (none if it is absent).  Bitmaps that are not
 * persistent, or that a job holds, missed the other node's writes: they
 * are kept and marked inconsistent.  No marking may be in progress (the
 * LUN is not active).  0, or -errno with *why (a malformed sidecar: the
 * old bitmaps are kept, all marked inconsistent). */
int cbt_set_reload(struct cbt_set *s, const char **why);

/* Look a bitmap up (control path).  The pointer stays valid until the set
 * is freed (removed bitmaps are retired, not freed, because a reactor may
 * still be marking them). */
struct cbt_bitmap *cbt_set_find(struct cbt_set *s, const char *name);
/* The bitmaps in creation order: fills up to max pointers, returns count. */
unsigned cbt_set_list(struct cbt_set *s, struct cbt_bitmap **out, unsigned max);

#endif
