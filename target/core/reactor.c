/* reactor.c - per-thread event loop: epoll, timers, cross-thread calls and
 * the thread's io_uring (see reactor.h for the contract). */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "reactor.h"

#define REACTOR_MAX_EVENTS 64
#define REACTOR_URING_DEPTH 256

struct reactor_call_item {
	struct reactor_call_item *next;
	void (*fn)(void *arg);
	void *arg;
};

struct reactor {
	int index;
	int epfd;
	bool stopping;
	uint64_t now_ms;
	struct list_head timers;	/* sorted by when_ms */

	/* cross-thread calls: a FIFO guarded by call_lock, woken by call_efd */
	pthread_mutex_t call_lock;
	struct reactor_call_item *call_head, **call_tail;
	int call_efd;
	struct ev_fd call_w;

	/* same-thread deferred work (reactor_defer): FIFO, no lock */
	struct ev_defer *defer_head, **defer_tail;

	struct io_uring ring;
	int uring_efd;
	struct ev_fd uring_w;

	/* the epoll batch being dispatched, so a delete can void later entries */
	struct epoll_event batch[REACTOR_MAX_EVENTS];
	int batch_pos, batch_n;

	/* Quiescent-state counter for reactor_synchronize(): odd while the
	 * thread runs no callback (blocked in epoll_wait, not started yet or
	 * stopped), even while it does.  Only the reactor's thread writes it,
	 * twice per loop turn, so the hot path pays a store to a line no
	 * other thread writes (and nothing per command). */
	atomic_uint_fast64_t qs;
	uint_fast64_t qs_seen;		/* reactor_synchronize()'s snapshot */

	/* Busy-poll (reactor_set_busy_poll): after a turn that had events,
	 * poll without sleeping until hot_until_ns before blocking. */
	uint64_t busy_ns, hot_until_ns;
	struct list_head all;		/* reactors_all */
};

/* Every reactor between reactor_new() and reactor_free(), for
 * reactor_synchronize().  The lock also makes synchronizers take turns. */
static pthread_mutex_t reactors_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list_head reactors_all = LIST_HEAD_INIT(reactors_all);

static __thread struct reactor *reactor_cur;

struct reactor *reactor_current(void)
{
	return reactor_cur;
}

struct reactor *reactor_any(void)
{
	struct reactor *r = NULL;

	pthread_mutex_lock(&reactors_lock);
	if (!list_empty(&reactors_all))
		r = list_first_entry(&reactors_all, struct reactor, all);
	pthread_mutex_unlock(&reactors_lock);
	return r;
}

int reactor_index(const struct reactor *r)
{
	return r->index;
}

uint64_t reactor_now_ms(struct reactor *r)
{
	return r ? r->now_ms : clock_ms();
}

struct io_uring *reactor_uring(struct reactor *r)
{
	return &r->ring;
}

void reactor_uring_kick(struct reactor *r)
{
	if (io_uring_sq_ready(&r->ring))
		io_uring_submit(&r->ring);
}

int reactor_fd_add(struct reactor *r, struct ev_fd *w, int fd,
		   uint32_t events, ev_fd_fn fn, void *arg)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };

	w->fd = fd;
	w->events = events;
	w->fn = fn;
	w->arg = arg;
	w->r = r;
	if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	w->active = true;
	return 0;
}

int reactor_fd_mod(struct ev_fd *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };

	if (!w->active)
		return -EINVAL;
	if (w->events == events)
		return 0;
	if (epoll_ctl(w->r->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

void reactor_fd_del(struct ev_fd *w)
{
	struct reactor *r = w->r;

	if (!w->active)
		return;
	epoll_ctl(r->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->active = false;
	w->gen++;
	/* The watcher may be freed by its owner right after this returns;
	 * forget it in the rest of the batch being dispatched. */
	for (int i = r->batch_pos + 1; i < r->batch_n; i++)
		if (r->batch[i].data.ptr == w)
			r->batch[i].data.ptr = NULL;
}

void reactor_timer_add(struct reactor *r, struct ev_timer *t,
		       uint64_t delay_ms, ev_timer_fn fn, void *arg)
{
	struct ev_timer *pos;

	if (t->armed)
		list_del(&t->link);
	t->when_ms = reactor_now_ms(r) + delay_ms;
	t->fn = fn;
	t->arg = arg;
	t->armed = true;
	/* few timers per reactor (per connection / per hung LUN): a sorted
	 * list scanned from the tail is cheap and keeps FIFO order for equal
	 * deadlines */
	for (pos = list_entry(r->timers.prev, struct ev_timer, link);
	     &pos->link != &r->timers;
	     pos = list_entry(pos->link.prev, struct ev_timer, link))
		if (pos->when_ms <= t->when_ms)
			break;
	list_insert_(&t->link, &pos->link, pos->link.next);
}

void reactor_timer_del(struct reactor *r UNUSED, struct ev_timer *t)
{
	if (!t->armed)
		return;
	list_del(&t->link);
	t->armed = false;
}

int reactor_call(struct reactor *r, void (*fn)(void *arg), void *arg)
{
	struct reactor_call_item *it = malloc(sizeof(*it));
	uint64_t one = 1;
	bool was_empty;

	if (!it)
		return -ENOMEM;
	it->fn = fn;
	it->arg = arg;
	it->next = NULL;
	pthread_mutex_lock(&r->call_lock);
	was_empty = r->call_head == NULL;
	*r->call_tail = it;
	r->call_tail = &it->next;
	pthread_mutex_unlock(&r->call_lock);
	if (was_empty && write(r->call_efd, &one, sizeof(one)) < 0 &&
	    errno != EAGAIN)
		return -errno;
	return 0;
}

void reactor_defer(struct reactor *r, struct ev_defer *d, ev_defer_fn fn,
		   void *arg)
{
	d->fn = fn;
	d->arg = arg;
	d->next = NULL;
	*r->defer_tail = d;
	r->defer_tail = &d->next;
}

/* Run deferred work, including what it defers in turn (a completion
 * queues a response whose flush is deferred behind the other completions
 * of this turn: one send for all of them).  At most REACTOR_DEFER_BUDGET
 * items per turn; the rest waits for the next turn, which then does not
 * sleep, so a chain of deferrals cannot starve the fds. */
#define REACTOR_DEFER_BUDGET 4096
static void reactor_run_deferred(struct reactor *r)
{
	for (int i = 0; r->defer_head && i < REACTOR_DEFER_BUDGET; i++) {
		struct ev_defer *d = r->defer_head;

		r->defer_head = d->next;
		if (!r->defer_head)
			r->defer_tail = &r->defer_head;
		d->fn(d);
	}
}

static void reactor_run_calls(struct reactor *r)
{
	struct reactor_call_item *list, *next;

	pthread_mutex_lock(&r->call_lock);
	list = r->call_head;
	r->call_head = NULL;
	r->call_tail = &r->call_head;
	pthread_mutex_unlock(&r->call_lock);
	for (; list; list = next) {
		next = list->next;
		list->fn(list->arg);
		free(list);
	}
}

static void reactor_call_ready(struct ev_fd *w, uint32_t events UNUSED)
{
	struct reactor *r = w->arg;
	uint64_t v;

	if (read(r->call_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("reactor %d: eventfd read: %s", r->index,
			 strerror(errno));
	reactor_run_calls(r);
}

static void reactor_uring_reap(struct reactor *r)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
		struct reactor_uring_op *op = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&r->ring, cqe);
		if (op)
			op->fn(op, res);
	}
}

static void reactor_uring_ready(struct ev_fd *w, uint32_t events UNUSED)
{
	struct reactor *r = w->arg;
	uint64_t v;

	if (read(r->uring_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("reactor %d: uring eventfd read: %s", r->index,
			 strerror(errno));
	reactor_uring_reap(r);
}

struct reactor *reactor_new(int index)
{
	struct reactor *r = xzalloc(sizeof(*r));
	int ret;

	r->index = index;
	list_init(&r->timers);
	pthread_mutex_init(&r->call_lock, NULL);
	r->call_tail = &r->call_head;
	r->defer_tail = &r->defer_head;
	r->now_ms = clock_ms();
	atomic_init(&r->qs, 1);		/* not running: quiescent */
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	r->call_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	r->uring_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->epfd < 0 || r->call_efd < 0 || r->uring_efd < 0)
		goto err_fds;
	ret = io_uring_queue_init(REACTOR_URING_DEPTH, &r->ring, 0);
	if (ret < 0) {
		log_err("reactor %d: io_uring_queue_init: %s", index,
			strerror(-ret));
		goto err_fds;
	}
	if (io_uring_register_eventfd(&r->ring, r->uring_efd) < 0)
		goto err_ring;
	if (reactor_fd_add(r, &r->call_w, r->call_efd, EPOLLIN,
			   reactor_call_ready, r) < 0 ||
	    reactor_fd_add(r, &r->uring_w, r->uring_efd, EPOLLIN,
			   reactor_uring_ready, r) < 0)
		goto err_ring;
	pthread_mutex_lock(&reactors_lock);
	list_add_tail(&r->all, &reactors_all);
	pthread_mutex_unlock(&reactors_lock);
	return r;

err_ring:
	io_uring_queue_exit(&r->ring);
err_fds:
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->call_efd >= 0)
		close(r->call_efd);
	if (r->uring_efd >= 0)
		close(r->uring_efd);
	free(r);
	return NULL;
}

static void reactor_run_timers(struct reactor *r)
{
	while (!list_empty(&r->timers)) {
		struct ev_timer *t =
			list_first_entry(&r->timers, struct ev_timer, link);

		if (t->when_ms > r->now_ms)
			break;
		list_del(&t->link);
		t->armed = false;
		t->fn(t);
	}
}

static int reactor_next_timeout(struct reactor *r)
{
	struct ev_timer *t;

	if (r->defer_head)
		return 0;
	if (list_empty(&r->timers))
		return -1;
	t = list_first_entry(&r->timers, struct ev_timer, link);
	if (t->when_ms <= r->now_ms)
		return 0;
	return (int)MIN(t->when_ms - r->now_ms, 60000);
}

/* Leave a quiescent period: from here on the thread may read pointers
 * that reactor_synchronize() protects.  seq_cst (not release): the store
 * must be ordered before the loads that follow, against the publisher's
 * pointer store and its load of qs (both seq_cst too). */
static void reactor_qs_online(struct reactor *r)
{
	uint_fast64_t v = atomic_load_explicit(&r->qs, memory_order_relaxed);

	atomic_store_explicit(&r->qs, v + 1, memory_order_seq_cst);
}

/* Enter a quiescent period: every pointer read in callbacks so far is
 * dropped (release: those reads happen before a waiter frees). */
static void reactor_qs_offline(struct reactor *r)
{
	uint_fast64_t v = atomic_load_explicit(&r->qs, memory_order_relaxed);

	atomic_store_explicit(&r->qs, v + 1, memory_order_release);
}

void reactor_synchronize(void)
{
	struct reactor *r, *self = reactor_cur;

	pthread_mutex_lock(&reactors_lock);
	list_for_each_entry(r, &reactors_all, all)
		r->qs_seen = atomic_load_explicit(&r->qs, memory_order_seq_cst);
	list_for_each_entry(r, &reactors_all, all) {
		/* The caller's own reactor is between callbacks by contract. */
		if (r == self || (r->qs_seen & 1))
			continue;
		/* A loop turn is short (a capped batch of callbacks): yield
		 * a few times, then sleep rather than spin on a busy one. */
		for (unsigned spins = 0;
		     atomic_load_explicit(&r->qs, memory_order_acquire) ==
		     r->qs_seen; spins++) {
			if (spins < 64)
				sched_yield();
			else
				usleep(100);
		}
	}
	pthread_mutex_unlock(&reactors_lock);
}

void reactor_set_busy_poll(struct reactor *r, unsigned us)
{
	r->busy_ns = (uint64_t)us * 1000;
}

/* The busy-poll part of a wait: while the loop is hot (it had events
 * less than busy_ns ago), ask epoll without sleeping, so a command that
 * arrives within the window is taken without the sleep and the wake-up
 * behind a blocking epoll_wait (this VM's largest single cost per
 * wake-up).  Never past timeout_ms (a timer).  The epoll_wait result, or
 * 0 when the window closed with nothing. */
static int reactor_spin(struct reactor *r, int timeout_ms)
{
	uint64_t now = clock_ns(), until = r->hot_until_ns;
	int n;

	if (timeout_ms >= 0 && now + (uint64_t)timeout_ms * 1000000 < until)
		until = now + (uint64_t)timeout_ms * 1000000;
	while (now < until) {
		n = epoll_wait(r->epfd, r->batch, REACTOR_MAX_EVENTS, 0);
		if (n != 0)
			return n;
		now = clock_ns();
	}
	return 0;
}

/* One loop turn: wait up to timeout_ms (or the next timer) for events,
 * dispatch them, then run due timers.  false if epoll_wait failed.  The
 * wait is the thread's quiescent period (reactor_synchronize()). */
static bool reactor_turn(struct reactor *r, int timeout_ms)
{
	uint64_t ns;
	int n = 0;

	reactor_uring_kick(r);
	reactor_qs_offline(r);
	if (r->busy_ns && timeout_ms != 0)
		n = reactor_spin(r, timeout_ms);
	if (n == 0)
		n = epoll_wait(r->epfd, r->batch, REACTOR_MAX_EVENTS,
			       timeout_ms);
	reactor_qs_online(r);
	ns = clock_ns();
	r->now_ms = ns / 1000000;
	if (n > 0 && r->busy_ns)
		r->hot_until_ns = ns + r->busy_ns;
	if (n < 0) {
		if (errno == EINTR)
			return true;
		log_err("reactor %d: epoll_wait: %s", r->index,
			strerror(errno));
		return false;
	}
	r->batch_n = n;
	for (r->batch_pos = 0; r->batch_pos < n; r->batch_pos++) {
		struct ev_fd *w = r->batch[r->batch_pos].data.ptr;

		if (w && w->active)
			w->fn(w, r->batch[r->batch_pos].events);
	}
	r->batch_n = r->batch_pos = 0;
	reactor_run_deferred(r);
	reactor_run_timers(r);
	return true;
}

void reactor_run(struct reactor *r)
{
	reactor_cur = r;
	reactor_qs_online(r);
	while (!r->stopping)
		if (!reactor_turn(r, reactor_next_timeout(r)))
			break;
	/* last calls queued before stop (e.g. completions) still run */
	reactor_run_calls(r);
	while (r->defer_head)
		reactor_run_deferred(r);
	reactor_qs_offline(r);
	reactor_cur = NULL;
}

int reactor_run_once(struct reactor *r, int timeout_ms)
{
	int next = reactor_next_timeout(r);
	int ret = 0;

	reactor_cur = r;
	if (next >= 0 && (timeout_ms < 0 || next < timeout_ms))
		timeout_ms = next;
	reactor_qs_online(r);
	if (reactor_turn(r, timeout_ms)) {
		/* calls queued by this turn's callbacks run now, not next
		 * turn, and so does the work they defer (a response's flush,
		 * say) */
		reactor_run_calls(r);
		reactor_run_deferred(r);
	} else {
		ret = -EIO;
	}
	reactor_qs_offline(r);
	return ret;
}

static void reactor_stop_fn(void *arg)
{
	((struct reactor *)arg)->stopping = true;
}

void reactor_stop(struct reactor *r)
{
	if (reactor_call(r, reactor_stop_fn, r) < 0)
		r->stopping = true;
}

void reactor_free(struct reactor *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&reactors_lock);
	list_del(&r->all);
	pthread_mutex_unlock(&reactors_lock);
	io_uring_queue_exit(&r->ring);
	close(r->epfd);
	close(r->call_efd);
	close(r->uring_efd);
	pthread_mutex_destroy(&r->call_lock);
	free(r);
}
