/* test_reactor.c - the reactor's busy-poll (holdfastd --busy-poll): after
 * a turn with events the loop polls instead of sleeping, for at most the
 * window; a timer due inside the window still fires on time; an event
 * that arrives during the spin is taken without a sleep; and once the
 * window has passed with nothing, the loop sleeps again (no CPU).
 * The loop runs on its own thread, as in holdfastd. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "reactor.h"
#include "util.h"

struct fx {
	struct reactor *r;
	pthread_t th;
	int pfd[2];
	struct ev_fd w;
	atomic_int reads;
	atomic_ullong last_read_ns;
	struct ev_timer t;
	atomic_ullong timer_ns;
	atomic_ullong loop_cpu_ns;	/* the loop thread's CPU at its end */
};

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_read(struct ev_fd *w, uint32_t events UNUSED)
{
	struct fx *f = w->arg;
	char buf[64];

	if (read(f->pfd[0], buf, sizeof(buf)) > 0) {
		atomic_store(&f->last_read_ns, clock_ns());
		atomic_fetch_add(&f->reads, 1);
	}
}

static void on_timer(struct ev_timer *t)
{
	struct fx *f = t->arg;

	atomic_store(&f->timer_ns, clock_ns());
}

static void *loop(void *arg)
{
	struct fx *f = arg;

	reactor_run(f->r);
	atomic_store(&f->loop_cpu_ns, thread_cpu_ns());
	return NULL;
}

static void arm_timer(void *arg)
{
	struct fx *f = arg;

	reactor_timer_add(f->r, &f->t, 5, on_timer, f);
}

static void fx_start(struct fx *f, unsigned busy_us)
{
	memset(f, 0, sizeof(*f));
	f->r = reactor_new(0);
	CHECK(f->r != NULL);
	CHECK(pipe(f->pfd) == 0);
	reactor_set_busy_poll(f->r, busy_us);
	CHECK(reactor_fd_add(f->r, &f->w, f->pfd[0], EPOLLIN, on_read, f) ==
	      0);
	CHECK(pthread_create(&f->th, NULL, loop, f) == 0);
}

static uint64_t fx_stop(struct fx *f)
{
	reactor_stop(f->r);
	pthread_join(f->th, NULL);
	reactor_fd_del(&f->w);
	reactor_free(f->r);
	close(f->pfd[0]);
	close(f->pfd[1]);
	return atomic_load(&f->loop_cpu_ns);
}

static void poke(struct fx *f)
{
	CHECK(write(f->pfd[1], "x", 1) == 1);
}

static void wait_reads(struct fx *f, int n)
{
	for (int i = 0; i < 2000 && atomic_load(&f->reads) < n; i++)
		usleep(1000);
	CHECK(atomic_load(&f->reads) >= n, "reads %d, want %d",
	      atomic_load(&f->reads), n);
}

/* One event, then 300 ms of nothing: with a 60 ms window the loop spins
 * for about 60 ms of CPU and then sleeps; without, it hardly runs. */
static void test_window_then_sleep(void)
{
	struct fx f;
	uint64_t off, on;

	fx_start(&f, 0);
	poke(&f);
	wait_reads(&f, 1);
	usleep(300000);
	off = fx_stop(&f);

	fx_start(&f, 60000);
	poke(&f);
	wait_reads(&f, 1);
	usleep(300000);
	on = fx_stop(&f);

	CHECK(off < 20000000ull, "idle loop used %llu us of CPU",
	      (unsigned long long)(off / 1000));
	/* it spun (a loaded machine may deschedule it for part of the
	 * window, hence not the whole 60 ms) ... */
	CHECK(on > 10000000ull, "busy-poll loop used only %llu us of CPU",
	      (unsigned long long)(on / 1000));
	/* ... and stopped: not the whole 300 ms */
	CHECK(on < 200000000ull, "busy-poll loop used %llu us of CPU: it "
	      "did not go back to sleep", (unsigned long long)(on / 1000));
}

/* A timer due inside the window fires on time, not at its end. */
static void test_timer_inside_window(void)
{
	struct fx f;
	uint64_t t0, late;

	fx_start(&f, 100000);		/* 100 ms window */
	poke(&f);
	wait_reads(&f, 1);
	t0 = clock_ns();
	CHECK(reactor_call(f.r, arm_timer, &f) == 0);
	for (int i = 0; i < 1000 && !atomic_load(&f.timer_ns); i++)
		usleep(1000);
	CHECK(atomic_load(&f.timer_ns) != 0, "the timer never fired");
	late = atomic_load(&f.timer_ns) - t0;
	/* 5 ms timer; the window ends 100 ms after the last event */
	CHECK(late < 60000000ull, "5 ms timer fired after %llu us",
	      (unsigned long long)(late / 1000));
	fx_stop(&f);
}

/* Events keep coming during the spin: each is taken, and the loop keeps
 * the window open from the last one. */
static void test_events_during_spin(void)
{
	struct fx f;

	fx_start(&f, 50000);
	for (int i = 1; i <= 20; i++) {
		uint64_t sent;

		sent = clock_ns();
		poke(&f);
		wait_reads(&f, i);
		CHECK(atomic_load(&f.last_read_ns) >= sent);
		usleep(2000);	/* inside the window */
	}
	CHECK(atomic_load(&f.reads) == 20);
	fx_stop(&f);
}

int main(void)
{
	log_init(false, false);
	test_window_then_sleep();
	test_timer_inside_window();
	test_events_during_spin();
	return CHECK_SUMMARY("test_reactor");
}
