/* cbt_job.h - backup jobs: a point-in-time copy of a LUN to a raw or
 * qcow2 file while initiators keep writing (push backup).
 *
 * A job runs on one reactor (the LUN's home reactor when it has one).  At
 * start it freezes the bitmap (sync=bitmap, or sync=full with a bitmap to
 * restart an incremental chain) and installs a copy-before-write hook in
 * the LUN's cbt filter node: a guest write to a chunk that is still to be
 * copied waits until that chunk's old data has been read (it never waits
 * for more than the reads of the chunks it touches; a snapshot read waits
 * until the data is in the scratch file).  Writes that passed the node
 * before the hook are drained (params.drain) before the background copy
 * starts.  In the background the job copies every chunk still to do, at
 * most CBT_JOB_INFLIGHT at a time, throttled by rate_limit; sync=full
 * skips the holes the store reports.  Source reads go to the node below
 * the filter (they are not guest reads: they change no bitmap); a failing
 * source read is retried every src_retry_ms until src_timeout_ms (the
 * LUN's hang settings); a failing destination fails the job, or with
 * dest_retry_ms is retried (held) until dest_timeout_ms.  Guest commands
 * never fail because of a job.
 *
 * When it ends the bitmap is reclaimed by bitmap_mode (cbt_bitmap.h):
 * on-success clears what was copied on success and merges everything back
 * otherwise; always clears the chunks that were copied either way; never
 * leaves it.  Cancel counts as failure.
 *
 * Jobs live in one table (ids from 1); the management thread creates,
 * pauses, resumes, cancels, lists and dismisses them. */
#ifndef HOLDFAST_CBT_JOB_H
#define HOLDFAST_CBT_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "cbt_bitmap.h"

struct backend;
struct cbt_set;
struct reactor;

#define CBT_JOB_INFLIGHT 8		/* background chunk copies at once */
#define CBT_JOB_UNIT_MAX (1u << 20)	/* copy unit: min(granularity, 1 MiB) */

enum cbt_job_state {
	CBT_JOB_RUNNING,
	CBT_JOB_PAUSED,
	CBT_JOB_COMPLETED,
	CBT_JOB_FAILED,
	CBT_JOB_CANCELLED,
};

enum cbt_job_format { CBT_FORMAT_RAW, CBT_FORMAT_QCOW2 };

struct cbt_job_params {
	int tid;			/* for show only */
	uint64_t lun;			/* for show only */
	struct backend *filter;		/* the LUN's cbt filter node */
	struct reactor *r;		/* where the job runs */
	char target[4096];		/* destination file */
	enum cbt_job_format format;
	char backing[4096];		/* qcow2: previous image ("" none) */
	char backing_format[16];	/* "raw" / "qcow2" ("" = guess by name) */
	bool sync_bitmap;		/* sync=bitmap (else full) */
	char bitmap[CBT_NAME_MAX + 1];	/* "" = none */
	enum cbt_bitmap_mode mode;
	uint64_t rate_limit;		/* bytes/s, 0 = unlimited */
	/* type=snapshot: no background copy; the point-in-time image is
	 * read through cbt_snap_node_new() (copy-on-read into target, the
	 * scratch file), until the job is cancelled */
	bool snapshot;
	uint64_t export_lun;		/* snapshot: the LUN that exports it */
	/* snapshot whose point in time is the store's own snapshot (an
	 * RBD image's, named by target, taken by the caller once the job
	 * has started): no scratch file, no copy-before-write; the job
	 * only freezes the bitmap and waits for the writes in flight */
	bool store_snap;
	uint32_t src_retry_ms;		/* 0 = fail on the first read error */
	uint32_t src_timeout_ms;	/* 0 = retry for ever */
	/* on_target_error=retry: a failing destination write is retried
	 * every dest_retry_ms (the chunk's old data stays in memory) until
	 * dest_timeout_ms has passed since it first failed (0 = for ever);
	 * dest_retry_ms 0 = fail the job on the first error (the default) */
	uint32_t dest_retry_ms;
	uint32_t dest_timeout_ms;
	/* Waits until every write that entered the LUN's stack before the
	 * call has completed (0, or -ETIMEDOUT).  Called once the job's
	 * hook is in, before the background copy starts: a write that
	 * passed the tracking node just before the point in time may
	 * still be on its way to the store.  NULL: nothing to wait for. */
	int (*drain)(void *arg);
	void *drain_arg;
	/* Keeps the LUN alive while the job exists: called once when the
	 * job is dismissed. */
	void (*release)(void *arg);
	void *release_arg;
};

/* What show prints for a job. */
struct cbt_job_info {
	unsigned id;
	const char *type;
	int tid;
	uint64_t lun;
	enum cbt_job_state state;
	uint64_t bytes_done, bytes_total, rate_bps;
	int64_t eta_s;			/* -1 unknown */
	char error[128];
	char target[256];
	char bitmap[CBT_NAME_MAX + 1];
	uint64_t export_lun;		/* snapshot jobs */
	char scratch[4096];		/* snapshot jobs: the scratch file */
	bool store_snap;		/* snapshot of the store: target names it */
	uint64_t bytes_holes;		/* sync=full: holes skipped (not in total) */
	bool holding;			/* retrying a failing destination (error says why) */
};

const char *cbt_job_state_name(enum cbt_job_state s);

/* The daemon's reactors (set once at startup); a LUN's jobs run on
 * reactor lun % n.  NULL when none are set. */
void cbt_job_reactors_set(struct reactor **r, int n);
struct reactor *cbt_job_reactor_for(uint64_t lun);

/* Start a backup job; *id gets its number.  0 or -errno with *why:
 * -ENOENT no such bitmap, -EBUSY bitmap busy or a job already runs on the
 * LUN, -EINVAL inconsistent bitmap or bad parameters, file errors. */
int cbt_job_backup_start(const struct cbt_job_params *p, unsigned *id,
			 const char **why);

/* pause / resume / cancel.  -ENOENT no job, -EINVAL finished. */
int cbt_job_pause(unsigned id, bool pause);
int cbt_job_cancel(unsigned id);
/* End a snapshot job as a success (its consumer read the image): with a
 * bitmap and bitmap_mode on-success or always the frozen bits are
 * cleared; cbt_job_cancel() ends it as a failure (they are kept).
 * -ENOENT, -EINVAL (not a running snapshot job). */
int cbt_job_snapshot_end(unsigned id);
/* A snapshot job's frozen bitmap (the bits at its point in time): calls
 * fn for each dirty extent, in order.  -ENOENT, -EINVAL no bitmap. */
int cbt_job_extents(unsigned id, void (*fn)(uint64_t off, uint64_t len,
					    void *arg), void *arg);
/* Forget a finished job (-EBUSY while it runs). */
int cbt_job_dismiss(unsigned id);
/* Does a running job use this filter node? */
bool cbt_job_running_on(const struct backend *filter);

/* Fill info for every job (in id order), up to max; returns the count. */
unsigned cbt_job_list(struct cbt_job_info *out, unsigned max);
/* One job; -ENOENT. */
int cbt_job_get(unsigned id, struct cbt_job_info *out);

/* A read-only store node that reads snapshot job id's point-in-time
 * image (for the LUN that exports it).  It keeps the job's memory alive
 * until the node is closed.  0, -ENOENT, -EINVAL (not a running snapshot
 * job), -ENOMEM. */
int cbt_snap_node_new(unsigned id, struct backend **out);
void cbt_snap_node_free(struct backend *be);

/* A grace period: returns once every reactor of the daemon has finished
 * the callback it was running (no submit that started before is still
 * inside the cbt node).  No-op without reactors. */
void cbt_reactors_quiesce(void);

/* Wait until job id is finished (tests, benchmarks).  0 or -ETIMEDOUT. */
int cbt_job_wait(unsigned id, unsigned timeout_ms);

/* A new job number from the sequence backup jobs use (mirror jobs,
 * cbt_mirror.h, share it so `id=J` names one job).  Any thread. */
unsigned cbt_job_id_next(void);

#endif
