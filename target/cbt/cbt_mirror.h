/* cbt_mirror.h - live storage migration: mirror a LUN's store to new
 * storage while initiators write, then pivot to it (issue 11).
 *
 * A mirror job inserts a "mirror" filter node directly above the LUN's
 * store (below the fault and cbt filters, so they and the bitmaps stay
 * when the store is swapped) and copies the store to a destination file
 * or block device on its reactor:
 *
 * - Phase 1 copies every chunk the source reports as data (holes are
 *   skipped when the destination is new); then the job loops over the
 *   chunks guest writes dirtied meanwhile.  A chunk's dirty bit is set
 *   when a guest write to it *completes* (whatever its result) and is
 *   cleared when a copy of it starts, so a write that lands while the
 *   copy reads is always copied again.
 * - copy_mode background: guest writes go to the source only and dirty
 *   their chunks.  write-blocking: every guest write goes to source and
 *   destination in parallel and is acknowledged when both are done (it
 *   dirties nothing); it waits for a copy in flight on its chunks, and a
 *   copy never starts on chunks with such a write in flight, so a stale
 *   copy never overtakes it.  auto: background until switch_after
 *   seconds pass without ready, then write-blocking.
 * - ready: phase 1 is done and the dirty bytes left can be written in
 *   about a second at the destination rate measured recently.
 * - complete (management thread): the job switches to write-blocking,
 *   waits until nothing is dirty, flushes the destination, then routes
 *   every new request to the destination (the pivot point), and
 *   be_stack_replace() puts the destination in place of the filter and
 *   the source, which is closed once the requests in flight on it have
 *   drained.  The LUN object stays: identity, reservations, unit
 *   attentions, hang state and bitmaps are untouched.
 * - A destination error never fails a guest command: the job fails and
 *   the filter passes everything to the source (it is removed when the
 *   job is cancelled or deleted).  Only after the pivot point is the
 *   destination the LUN's store, and its errors are the store's.
 * - Copies read the source through the node below the filter; a failed
 *   read leaves the chunk dirty and the job retries after retry_ms.
 *
 * Jobs are not persisted: after a restart the LUN serves the store its
 * configuration names (the source until a complete saved the new path).
 */
#ifndef HOLDFAST_CBT_MIRROR_H
#define HOLDFAST_CBT_MIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct backend;
struct reactor;

#define CBT_MIRROR_CHUNK (64u * 1024)		/* dirty-tracking granularity */
#define CBT_MIRROR_COPY_MAX (1u << 20)		/* largest copy I/O */
#define CBT_MIRROR_INFLIGHT_DEFAULT (16u << 20)	/* max_inflight */
#define CBT_MIRROR_SWITCH_AFTER_DEFAULT 10	/* seconds */
#define CBT_MIRROR_READY_WINDOW_MS 1000		/* "about a second" */
#define CBT_MIRROR_COMPLETE_TIMEOUT_MS 30000

enum cbt_mirror_mode {
	CBT_MIRROR_BACKGROUND,
	CBT_MIRROR_WRITE_BLOCKING,
	CBT_MIRROR_AUTO,
};

enum cbt_mirror_state {
	CBT_MIRROR_RUNNING,
	CBT_MIRROR_READY,
	CBT_MIRROR_COMPLETED,
	CBT_MIRROR_FAILED,
	CBT_MIRROR_CANCELLED,
};

struct cbt_mirror_params {
	int tid;			/* for show and log */
	uint64_t lun;
	struct backend *root;		/* the LUN's block stack */
	struct reactor *r;		/* where the job runs */
	char target[4096];		/* destination file or device */
	enum cbt_mirror_mode mode;
	uint32_t switch_after_s;	/* auto: 0 = the default */
	uint64_t max_inflight;		/* bytes of copy I/O; 0 = default */
	uint64_t rate_limit;		/* background copy, bytes/s; 0 = none */
	/* Testing: throttle every destination write (copies and mirrored
	 * guest writes) to this many bytes/s, as a slow destination. */
	uint64_t dest_rate_limit;
	uint32_t block_size;
	uint32_t retry_ms;		/* source read failed: retry after */
	/* Keeps the LUN alive while the job exists: called once when the
	 * job is deleted. */
	void (*release)(void *arg);
	void *release_arg;
};

struct cbt_mirror_info {
	unsigned id;
	int tid;
	uint64_t lun;
	enum cbt_mirror_state state;
	enum cbt_mirror_mode mode;	/* asked for */
	enum cbt_mirror_mode active;	/* in force: background/write-blocking */
	uint64_t bytes_done, bytes_total, dirty_bytes, rate_bps;
	int64_t eta_s;			/* -1 unknown */
	uint64_t elapsed_ms;
	uint64_t ready_ms;		/* since start when it became ready, 0 never */
	char error[128];
	char target[4096];
};

const char *cbt_mirror_state_name(enum cbt_mirror_state s);
const char *cbt_mirror_mode_name(enum cbt_mirror_mode m);
/* "background", "write-blocking", "auto".  0 or -EINVAL. */
int cbt_mirror_mode_parse(const char *s, enum cbt_mirror_mode *m);

/* Start a mirror (management thread).  *id gets the job's number (from
 * the same sequence as backup jobs).  0 or -errno with *why: -EBUSY a
 * mirror already runs on the LUN, -EINVAL bad parameters or destination
 * (smaller than the LUN, the source itself, no O_DIRECT where the source
 * has it), file errors. */
int cbt_mirror_start(const struct cbt_mirror_params *p, unsigned *id,
		     const char **why);
/* Is id a mirror job? */
bool cbt_mirror_exists(unsigned id);
/* Change copy_mode.  -ENOENT, -EINVAL (finished). */
int cbt_mirror_set_mode(unsigned id, enum cbt_mirror_mode m);
/* Pivot a ready job (management thread; may wait up to timeout_ms for
 * the last dirty chunks).  Once nothing is dirty and the destination is
 * flushed, before_switch(arg) runs (if not NULL) while every write still
 * goes to both sides: the caller records the new store there (settings,
 * saved configuration); an error from it ends the attempt.  Then the
 * switch.  0: the LUN serves from the destination and the source is
 * closed (or will be once its requests drain).  -EINVAL not ready /
 * finished, -ETIMEDOUT did not converge in time (the job goes on in the
 * mode it had), -EIO the job failed meanwhile (if before_switch ran, the
 * caller undoes what it recorded); *why says which. */
int cbt_mirror_complete(unsigned id, unsigned timeout_ms,
			int (*before_switch)(void *arg), void *arg,
			const char **why);
/* Stop tracking, remove the filter; the source is as it was and serves
 * on.  Also cleans up after a failed job.  -ENOENT, -EINVAL (completed). */
int cbt_mirror_cancel(unsigned id);
/* Forget a finished job (-EBUSY while it runs); releases the LUN. */
int cbt_mirror_dismiss(unsigned id);

unsigned cbt_mirror_list(struct cbt_mirror_info *out, unsigned max);
int cbt_mirror_get(unsigned id, struct cbt_mirror_info *out);
/* Wait until job id reaches state (or a terminal one).  0 or -ETIMEDOUT. */
int cbt_mirror_wait(unsigned id, enum cbt_mirror_state state,
		    unsigned timeout_ms);

/* A marker beside the bitmap sidecars (<dir>/<target>.lun<N>.mirror,
 * holding the destination) while a mirror job of the LUN exists, so that
 * the next start can say that a job was lost (jobs are not persisted).
 * set: 0 or -errno (-ENOENT: no state directory).  take: true if there
 * was one (its destination in dest), and removes it. */
int cbt_mirror_marker_set(const char *target_name, uint64_t lun,
			  const char *dest);
void cbt_mirror_marker_clear(const char *target_name, uint64_t lun);
bool cbt_mirror_marker_take(const char *target_name, uint64_t lun,
			    char *dest, size_t len);

/* The filter node (stack.h): ops->name "mirror". */
extern const struct backend_ops cbt_mirror_filter_ops;

#endif
