/* cbt_filter.h - the block-stack node that tracks changed blocks.
 *
 * A filter (struct backend_ops, like fault) that sits on top of a LUN's
 * stack, below the hang engine, so it sees every request that reaches
 * the store: WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE, XCOPY all
 * arrive as BE_OP_WRITE / BE_OP_UNMAP / BE_OP_WRITE_ZEROES.  For each it
 *   1. marks the LUN's bitmaps (before the store sees the request, so a
 *      write that fails or lands partly is tracked too), and when a
 *      persistent bitmap's bit is not yet on disk, holds the completion
 *      until it is (write intent, cbt_set.h);
 *   2. gives a running backup job's copy-before-write hook the chance to
 *      copy the old data first.
 * Reads and flushes pass straight through; with no bitmap and no job the
 * cost of a write is two atomic loads. */
#ifndef HOLDFAST_CBT_FILTER_H
#define HOLDFAST_CBT_FILTER_H

#include <stdbool.h>

#include "backend.h"

struct cbt_set;

extern const struct backend_ops cbt_filter_ops;

/* Copy-before-write: a job's hook.  before_write() runs on the submitting
 * reactor for every data-changing request while the hook is installed;
 * it returns false to let the request go on now, or true when it took the
 * request, and then calls cbt_filter_resume() later (any reactor is fine
 * for the call; the request is resubmitted on r). */
struct cbt_cbw {
	bool (*before_write)(struct cbt_cbw *c, struct backend *filter,
			     struct be_io *io, struct reactor *r);
};

/* Open parameters: p->inner is the node below (required). */

/* The LUN's bitmap set (owned by the LUN; the filter only uses it).
 * Control path, before the LUN takes I/O or with it quiesced. */
void cbt_filter_set_bitmaps(struct backend *filter, struct cbt_set *set);
struct cbt_set *cbt_filter_bitmaps(struct backend *filter);

/* Install a job's hook (-EBUSY if one is installed) / remove it.  A
 * removed hook may still be running on a reactor for a short while: its
 * owner keeps it valid until the job is dismissed. */
int cbt_filter_cbw_install(struct backend *filter, struct cbt_cbw *c);
void cbt_filter_cbw_remove(struct backend *filter, struct cbt_cbw *c);

/* Send a request that before_write() took on to the store. */
void cbt_filter_resume(struct backend *filter, struct be_io *io,
		       struct reactor *r);

/* Is be a cbt filter node? */
bool cbt_filter_is(const struct backend *be);
/* The cbt node in the chain below be (a LUN's stack root), or NULL. */
struct backend *cbt_filter_find(struct backend *be);

#endif
