/* reactor.h - one event loop per thread: epoll fds, timers, cross-thread
 * calls and the thread's io_uring.
 *
 * A connection is handed to one reactor and stays there; everything it does
 * (PDUs, backend I/O, completions) runs on that reactor's thread, so the hot
 * path needs no lock.  Other threads talk to a reactor only through
 * reactor_call(), which queues a function and wakes the loop (eventfd).
 *
 * Deleting an fd or a timer from inside any callback is safe: a deleted
 * watcher is never called again, even if its event is already in the
 * current epoll batch. */
#ifndef HOLDFAST_REACTOR_H
#define HOLDFAST_REACTOR_H

#include <stdbool.h>
#include <stdint.h>
#include "util.h"

struct reactor;
struct io_uring;

struct ev_fd;
typedef void (*ev_fd_fn)(struct ev_fd *w, uint32_t events);

/* An fd watcher, embedded in its owner.  events are EPOLLIN/EPOLLOUT/... */
struct ev_fd {
	int fd;
	uint32_t events;
	ev_fd_fn fn;
	void *arg;
	struct reactor *r;
	bool active;
	uint64_t gen;	/* bumped on delete; stale batch entries are skipped */
};

struct ev_timer;
typedef void (*ev_timer_fn)(struct ev_timer *t);

/* A one-shot timer, embedded in its owner.  Re-arm from the callback for
 * periodic work. */
struct ev_timer {
	uint64_t when_ms;
	ev_timer_fn fn;
	void *arg;
	struct list_head link;
	bool armed;
};

struct ev_defer;
typedef void (*ev_defer_fn)(struct ev_defer *d);

/* Deferred work, embedded in its owner: runs once on the same reactor
 * after the current callback returns, before the loop sleeps again. */
struct ev_defer {
	struct ev_defer *next;
	ev_defer_fn fn;
	void *arg;
};

/* Create a reactor; index is used in log lines.  Returns NULL on failure. */
struct reactor *reactor_new(int index);
/* Run the loop on the calling thread until reactor_stop(). */
void reactor_run(struct reactor *r);
/* One turn of the loop on the calling thread (which becomes r's thread):
 * wait at most timeout_ms (-1: until the next timer or event), dispatch
 * what is ready, run due timers and queued calls.  For harnesses and
 * tests that drive a reactor step by step; never mixed with
 * reactor_run() on another thread.  0 / -EIO. */
int reactor_run_once(struct reactor *r, int timeout_ms);
/* Ask the loop to return (thread safe). */
void reactor_stop(struct reactor *r);
/* Busy-poll: after a loop turn that had events, keep polling (epoll
 * without sleeping) for up to us microseconds before blocking; 0 (the
 * default) always blocks.  Before reactor_run(). */
void reactor_set_busy_poll(struct reactor *r, unsigned us);
/* Free a reactor whose loop has returned. */
void reactor_free(struct reactor *r);
/* The reactor running on this thread, or NULL (management thread, tests). */
struct reactor *reactor_current(void);
int reactor_index(const struct reactor *r);
/* The first reactor still running (the oldest created), or NULL: for a
 * management thread that needs some reactor to run work on (a remote
 * store's session that no I/O has chosen a reactor for yet). */
struct reactor *reactor_any(void);

/* Watch fd for events; w is owned by the caller and must stay valid until
 * reactor_fd_del().  Returns 0 or -errno. */
int reactor_fd_add(struct reactor *r, struct ev_fd *w, int fd,
		   uint32_t events, ev_fd_fn fn, void *arg);
int reactor_fd_mod(struct ev_fd *w, uint32_t events);
/* Stop watching (does not close the fd). */
void reactor_fd_del(struct ev_fd *w);

/* Arm t to fire once after delay_ms (re-arming an armed timer moves it). */
void reactor_timer_add(struct reactor *r, struct ev_timer *t,
		       uint64_t delay_ms, ev_timer_fn fn, void *arg);
void reactor_timer_del(struct reactor *r, struct ev_timer *t);

/* The loop's cached monotonic time (ms), refreshed once per loop turn. */
uint64_t reactor_now_ms(struct reactor *r);

/* Run fn(arg) on reactor r's thread, after the current callback returns.
 * Thread safe; calls from one thread to one reactor run in order.
 * Returns 0 or -ENOMEM. */
int reactor_call(struct reactor *r, void (*fn)(void *arg), void *arg);

/* Run fn(d) on r after the current callback returns, in FIFO order with
 * other deferred work.  Only from r's own thread (r == reactor_current()):
 * no lock, no allocation, no wake-up.  d must stay valid until fn runs. */
void reactor_defer(struct reactor *r, struct ev_defer *d, ev_defer_fn fn,
		   void *arg);

/* Grace period (quiescent-state based reclamation, as in RCU's QSBR).
 * A reactor thread may use a pointer it loaded from shared memory only
 * until its current callback returns: between callbacks (in epoll_wait)
 * it holds none.  reactor_synchronize() returns once every reactor has
 * been between callbacks at least once since the call began, so an object
 * unpublished before the call can be freed after it.  Blocks (a loop turn
 * at most); call it from a management thread while holding no lock a
 * reactor might wait for.  From a reactor thread, its own reactor counts
 * as quiescent.  Costs the loop two stores per turn, nothing per command. */
void reactor_synchronize(void);

/* The reactor's io_uring, for backends.  Each SQE's user_data must point
 * to a struct reactor_uring_op whose fn is called with the CQE result on
 * this reactor. */
struct reactor_uring_op {
	void (*fn)(struct reactor_uring_op *op, int res);
};
struct io_uring *reactor_uring(struct reactor *r);
/* Submit queued SQEs now (otherwise they are submitted at the end of the
 * loop turn, batched). */
void reactor_uring_kick(struct reactor *r);

#endif
