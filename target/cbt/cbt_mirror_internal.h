/* cbt_mirror_internal.h - shared by the two files of the mirror job:
 * cbt_mirror.c (the job: copies, pump, tick, pivot, control) and
 * cbt_mirror_filter.c (the filter node and the guest data path:
 * background and write-blocking requests, the destination throttle).
 * Not for other modules: they use cbt_mirror.h. */
#ifndef HOLDFAST_CBT_MIRROR_INTERNAL_H
#define HOLDFAST_CBT_MIRROR_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "cbt_mirror.h"
#include "reactor.h"
#include "util.h"

#define MIRROR_TICK_MS 100
#define MIRROR_RATE_SAMPLES 10		/* ticks in the rate window */
#define MIRROR_RETRY_DEFAULT_MS 1000

/* Where the filter sends requests. */
enum mf_route {
	MF_SOURCE,	/* pass-through: no job, or it failed / was cancelled */
	MF_TRACK,	/* mirroring (background or write-blocking) */
	MF_DEST,	/* pivoted: the destination is the store */
};

struct mirror_job;

struct mirror_filter {
	atomic_int route;
	struct mirror_job *job;		/* set before route leaves MF_SOURCE */
	struct backend *dest;		/* owned, unless handed to the stack */
	bool dest_handed;
};

/* An atomic bitmap of chunks. */
struct mbits {
	_Atomic uint64_t *w;
	uint64_t nwords;
};

/* A destination write waiting for the throttle. */
struct dest_req {
	struct list_head link;
	struct be_io *io;
	uint64_t at_us;
};

/* One copy in flight. */
struct mcopy {
	struct mirror_job *job;
	struct list_head link;
	struct be_io io;
	struct iovec iov;
	void *buf;
	uint64_t c0, c1;		/* chunks [c0, c1] */
	uint64_t off, len;
	struct dest_req dq;
};

/* A write-blocking request (write, unmap, write zeroes, flush). */
struct mwrite {
	struct mirror_job *job;
	struct list_head link;		/* waiting or in flight */
	struct be_io *io;		/* the guest's: goes to the source */
	void (*done)(struct be_io *io, int res);
	void *priv;
	struct reactor *r;		/* the guest's reactor */
	struct be_io dio;		/* its copy for the destination */
	struct dest_req dq;
	uint64_t c0, c1;
	int pending, src_res, dst_res;
	bool dest_only;			/* arrived after the pivot point */
};

/* A background write: its chunks are marked when it completes. */
struct mbg {
	struct mirror_job *job;
	void (*done)(struct be_io *io, int res);
	void *priv;
};

/* One complete attempt, on the management thread's stack. */
struct mirror_creq {
	bool flushed;		/* converged and the destination flushed */
};

struct mirror_job {
	struct list_head link;		/* in the table */
	unsigned id;
	struct cbt_mirror_params p;
	struct reactor *r;
	struct backend *filter;		/* the node (valid until it is closed) */
	bool unlinked;			/* taken out of the stack */
	struct mirror_filter *mf;
	struct backend *dest;
	uint64_t size, nchunks;
	bool fresh;			/* destination reads zero where never written */
	struct mbits dirty, busy, written;
	atomic_uint_fast64_t ndirty;	/* set bits in dirty */
	/* mode */
	atomic_int mode;		/* asked for */
	atomic_int wb;			/* 1: write-blocking in force */
	/* counters any thread reads */
	atomic_int state;
	atomic_uint_fast64_t bytes_done, copy_inflight_bytes, rate_bps;
	atomic_int bg_inflight;		/* background writes in the source */
	atomic_int wb_pending;		/* write-blocking requests not yet done */
	atomic_bool lost;		/* the filter could not follow a request */
	/* job reactor only */
	uint64_t cursor;
	bool phase1_done;
	unsigned copies;
	struct list_head wb_waiting, wb_inflight;
	struct list_head dest_q;
	uint64_t dest_next_us;
	struct ev_timer tick, dest_timer, rate_timer;
	bool dest_timer_armed, rate_timer_armed, tick_armed;
	uint64_t backoff_until_ms;
	uint64_t dest_bytes;		/* written to the destination */
	uint64_t rate_last_bytes, rate_last_ms;
	uint64_t samp_bytes[MIRROR_RATE_SAMPLES], samp_ms[MIRROR_RATE_SAMPLES];
	unsigned samp_pos;
	uint64_t copied_for_limit;	/* rate_limit accounting */
	bool completing, flushing, flushed, failing, cancel_req, finished;
	unsigned complete_gen;		/* complete attempts (job reactor) */
	/* the running complete's request (jobs_lock): creq_next is set by
	 * the management thread, creq by the job reactor when it starts */
	struct mirror_creq *creq, *creq_next;
	/* times (ms, monotonic) */
	uint64_t start_ms, end_ms, ready_ms;
	char error[128];
	/* management waits on jobs_cond for these */
	bool pivoted;
};

static inline uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static inline uint64_t now_ms(void)
{
	return now_us() / 1000;
}

/* ---- chunk bitmaps ---- */

static inline int mbits_init(struct mbits *b, uint64_t nchunks)
{
	b->nwords = (nchunks + 63) / 64;
	b->w = calloc(b->nwords ? b->nwords : 1, sizeof(*b->w));
	return b->w ? 0 : -ENOMEM;
}

static inline bool mbits_test(const struct mbits *b, uint64_t c)
{
	return atomic_load_explicit(&b->w[c / 64], memory_order_acquire) >>
	       (c % 64) & 1;
}

/* Returns true if the bit was clear. */
static inline bool mbits_set(struct mbits *b, uint64_t c)
{
	uint64_t m = 1ull << (c % 64);

	return !(atomic_fetch_or(&b->w[c / 64], m) & m);
}

/* Returns true if the bit was set. */
static inline bool mbits_clear(struct mbits *b, uint64_t c)
{
	uint64_t m = 1ull << (c % 64);

	return atomic_fetch_and(&b->w[c / 64], ~m) & m;
}

/* The first set bit at or after c, or n. */
static inline uint64_t mbits_next(const struct mbits *b, uint64_t c, uint64_t n)
{
	while (c < n) {
		uint64_t w = atomic_load_explicit(&b->w[c / 64],
						  memory_order_acquire) >> (c % 64);

		if (w)
			return MIN(c + (uint64_t)__builtin_ctzll(w), n);
		c = (c / 64 + 1) * 64;
	}
	return n;
}

static inline bool ranges_overlap(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1)
{
	return a0 <= a1 && b0 <= b1 && a0 <= b1 && b0 <= a1;
}

/* cbt_mirror.c, for the data path (job reactor unless said otherwise) */
/* Dirty [off, off+len) (any thread). */
void mirror_dirty_range(struct mirror_job *j, uint64_t off, uint64_t len);
/* The job fails: the filter passes everything to the source from now. */
void mirror_fail(struct mirror_job *j, const char *what, int err);
/* Start what can start (copies, the pivot's steps, the end). */
void mirror_pump(struct mirror_job *j);

/* cbt_mirror_filter.c, for the job (job reactor) */
/* Submit io to the destination after the throttle (dest_rate_limit);
 * d holds it while it waits (writes only; NULL is fine for others). */
void mirror_dest_submit(struct mirror_job *j, struct dest_req *d,
			struct be_io *io);
/* Write-blocking requests whose chunks' copies are done go on. */
void mirror_wb_release_waiting(struct mirror_job *j);

#endif
