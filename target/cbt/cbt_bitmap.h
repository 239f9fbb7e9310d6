/* cbt_bitmap.h - named dirty bitmaps for changed-block tracking.
 *
 * A bitmap covers a LUN of `size` bytes in chunks of `granularity` bytes
 * (a power of two, 4 KiB .. 64 MiB); one bit per chunk, set when a
 * data-changing request touched any byte of the chunk.  Semantics follow
 * QEMU's dirty bitmaps (docs/interop/bitmaps.rst).
 *
 * Threads: cbt_bitmap_mark() may run on any reactor at once; it only uses
 * atomic word ORs and touches a shared counter only when a clean chunk
 * becomes dirty.  Every other call is a control-path operation: the
 * caller serialises them (the management thread or the LUN's home
 * reactor), and they may run while reactors mark.
 *
 * Jobs (backup) freeze a bitmap: from cbt_bitmap_freeze() on, new writes
 * are recorded in an anonymous successor while the job reads the frozen
 * bits; cbt_bitmap_reclaim() folds the successor back according to the
 * bitmap mode and the job's outcome.  Freeze must happen with the LUN's
 * writes drained (the block stack drains when a job's filter is inserted),
 * so every write either completed before the point in time or is
 * recorded in the successor. */
#ifndef HOLDFAST_CBT_BITMAP_H
#define HOLDFAST_CBT_BITMAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define CBT_GRANULARITY_MIN (4u * 1024)
#define CBT_GRANULARITY_MAX (64u * 1024 * 1024)
#define CBT_GRANULARITY_DEFAULT (64u * 1024)
#define CBT_NAME_MAX 63

/* What a job does to its bitmap when it ends (QEMU's bitmap sync modes). */
enum cbt_bitmap_mode {
	CBT_MODE_ON_SUCCESS,	/* success: copied bits cleared; else merged back */
	CBT_MODE_ALWAYS,	/* copied bits cleared whatever the outcome */
	CBT_MODE_NEVER,		/* bitmap left as it was (differential) */
};

struct cbt_bitmap {
	char name[CBT_NAME_MAX + 1];
	uint64_t size;			/* bytes covered */
	uint32_t granularity;		/* bytes per bit, power of two */
	unsigned shift;			/* log2(granularity) */
	uint64_t nchunks;
	uint64_t nwords;
	_Atomic uint64_t *words;
	atomic_uint_fast64_t dirty;	/* number of set bits */
	atomic_bool enabled;		/* records writes */
	bool persistent;		/* saved in the LUN's sidecar */
	atomic_bool inconsistent;	/* may have missed writes: refuse incremental use */
	atomic_bool busy;		/* in use by a job: no remove, no merge into */
	/* While frozen: records new writes; NULL otherwise.  Published with
	 * release ordering, read with acquire on the hot path. */
	struct cbt_bitmap *_Atomic successor;
};

/* Parse the mode names of the interface ("on-success" or "conditional",
 * "always", "never").  0 or -EINVAL. */
int cbt_bitmap_mode_parse(const char *s, enum cbt_bitmap_mode *mode);
const char *cbt_bitmap_mode_name(enum cbt_bitmap_mode mode);

/* True if g is a valid granularity. */
bool cbt_granularity_valid(uint64_t g);

/* Create a bitmap covering size bytes (all clean).  Returns NULL with
 * errno set (EINVAL bad name or granularity, ENOMEM).  Freed with
 * cbt_bitmap_free(), which frees a successor too. */
struct cbt_bitmap *cbt_bitmap_new(const char *name, uint64_t size,
				  uint32_t granularity, bool enabled);
void cbt_bitmap_free(struct cbt_bitmap *b);

/* Hot path: record that [offset, offset+len) changed.  Records in the
 * successor when frozen, does nothing when disabled.  Returns the number
 * of chunks that went from clean to dirty (callers persisting the bitmap
 * need a sync only when this is non-zero).  Any thread. */
uint64_t cbt_bitmap_mark(struct cbt_bitmap *b, uint64_t offset, uint64_t len);

/* Set or clear [offset, offset+len) regardless of enabled (control path:
 * restore from disk, a job clearing what it copied). */
uint64_t cbt_bitmap_set_range(struct cbt_bitmap *b, uint64_t offset,
			      uint64_t len);
void cbt_bitmap_reset_range(struct cbt_bitmap *b, uint64_t offset,
			    uint64_t len);

/* Clear every bit and the inconsistent flag.  -EBUSY when busy. */
int cbt_bitmap_clear(struct cbt_bitmap *b);

/* dst |= src.  Granularities may differ (a src chunk dirties every dst
 * chunk it overlaps).  -EBUSY if dst is busy, -EINVAL if sizes differ.
 * An inconsistent src makes dst inconsistent. */
int cbt_bitmap_merge(struct cbt_bitmap *dst, const struct cbt_bitmap *src);

/* Grow (or shrink) to a new LUN size; new chunks are clean.  Grows the
 * successor too.  0 or -ENOMEM.  Callers quiesce marking (LUN reopen). */
int cbt_bitmap_resize(struct cbt_bitmap *b, uint64_t size);

/* Dirty bytes (the last chunk counts only up to size); including the
 * successor's bits when frozen, so show tells what the next incremental
 * backup would copy. */
uint64_t cbt_bitmap_dirty_bytes(const struct cbt_bitmap *b);

/* Is chunk / byte offset dirty in b's own bits (not the successor)? */
bool cbt_bitmap_test_chunk(const struct cbt_bitmap *b, uint64_t chunk);
bool cbt_bitmap_test(const struct cbt_bitmap *b, uint64_t offset);

/* Is every chunk touching [offset, offset+len) set in b's own bits?
 * (An empty or out-of-range tail counts as set.) */
bool cbt_bitmap_range_is_set(const struct cbt_bitmap *b, uint64_t offset,
			     uint64_t len);

/* Does b record writes now (enabled, or frozen with a successor)? */
bool cbt_bitmap_recording(const struct cbt_bitmap *b);

/* Make b's own bits equal to src's (same geometry), for shadow copies. */
void cbt_bitmap_copy_from(struct cbt_bitmap *b, const struct cbt_bitmap *src);

/* b &= src (same geometry). */
void cbt_bitmap_and(struct cbt_bitmap *b, const struct cbt_bitmap *src);

/* Extent iteration over b's own bits: the first dirty run starting at or
 * after *offset.  Returns true and sets *offset, *len (clipped to size), or
 * false when there is none.  With want_dirty false it finds clean runs. */
bool cbt_bitmap_next_extent(const struct cbt_bitmap *b, uint64_t *offset,
			    uint64_t *len, bool want_dirty);

/* Freeze b for a job: creates the successor.  -EBUSY if b is busy or
 * frozen, -EINVAL if inconsistent, -ENOMEM.  Sets busy. */
int cbt_bitmap_freeze(struct cbt_bitmap *b);

/* End a job.  copied holds the chunks the job copied (granularity of b;
 * may be NULL when nothing was copied).  success: the job completed.
 * Applies the mode, folds the successor in, clears busy. */
void cbt_bitmap_reclaim(struct cbt_bitmap *b, enum cbt_bitmap_mode mode,
			bool success, const struct cbt_bitmap *copied);

/* Copy the raw bits (little-endian words, nwords*8 bytes) out of b, with
 * the successor ORed in: the state a persistent copy must cover. */
void cbt_bitmap_snapshot_words(const struct cbt_bitmap *b, uint64_t *out);

#endif
