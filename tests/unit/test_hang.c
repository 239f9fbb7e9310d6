/* test_hang.c - unit tests of the hang engine (target/hang/hang*.c) on a fake
 * clock, fake reactors and a fake backend, single-threaded.
 *
 * The engine's files are #included so their statics are reachable; the
 * fake world is the engine's struct hang_env (hang_internal.h).  Reactor
 * calls go to one FIFO that the test drains; the backend queues every
 * request until the test completes it with a result of its choice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../target/hang/hang.c"
#include "../../target/hang/hang_ctl.c"

#include "check.h"

/* ---- fake reactors and calls ---- */

static char r1_tag, r2_tag;
#define R1 ((struct reactor *)&r1_tag)
#define R2 ((struct reactor *)&r2_tag)

struct fcall {
	struct reactor *r;
	void (*fn)(void *arg);
	void *arg;
};
#define MAXCALLS 8192
static struct fcall calls[MAXCALLS];
static unsigned call_head, call_tail;
static struct reactor *cur;	/* the reactor "running" now */
static bool in_submit;		/* inside hang_submit() */
static uint64_t now;

static int f_call(struct reactor *r, void (*fn)(void *arg), void *arg)
{
	calls[call_tail++ % MAXCALLS] = (struct fcall){ r, fn, arg };
	return 0;
}

static bool run_one(void)
{
	struct fcall c;

	if (call_head == call_tail)
		return false;
	c = calls[call_head++ % MAXCALLS];
	cur = c.r;
	c.fn(c.arg);
	cur = NULL;
	return true;
}

static void run(void)
{
	while (run_one())
		;
}

static uint64_t f_now(struct reactor *r UNUSED)
{
	return now;
}

/* timers */
static struct list_head timers = LIST_HEAD_INIT(timers);
static struct reactor *timer_r[2];

static void f_timer_add(struct reactor *r, struct ev_timer *t,
			uint64_t delay, ev_timer_fn fn, void *arg)
{
	if (t->armed)
		list_del(&t->link);
	t->when_ms = now + delay;
	t->fn = fn;
	t->arg = arg;
	t->armed = true;
	list_add_tail(&t->link, &timers);
	timer_r[0] = r;
}

static void f_timer_del(struct reactor *r UNUSED, struct ev_timer *t)
{
	if (!t->armed)
		return;
	list_del(&t->link);
	t->armed = false;
}

static bool timer_armed(struct ev_timer *t)
{
	return t->armed;
}

/* Move the clock to now + ms, firing due timers in deadline order and
 * draining calls after each. */
static void advance(uint64_t ms)
{
	uint64_t target = now + ms;

	run();
	for (;;) {
		struct ev_timer *t, *best = NULL;

		list_for_each_entry(t, &timers, link)
			if (t->when_ms <= target &&
			    (!best || t->when_ms < best->when_ms))
				best = t;
		if (!best)
			break;
		if (best->when_ms > now)
			now = best->when_ms;
		list_del(&best->link);
		best->armed = false;
		cur = timer_r[0];
		best->fn(best);
		cur = NULL;
		run();
	}
	now = target;
}

/* backend */
struct fio {
	struct be_io *io;
	struct reactor *r;
	bool live;
	enum be_op op;
	uint64_t offset, length;
};
#define MAXIO 4096
static struct fio ios[MAXIO];
static unsigned n_ios;

static void f_submit(struct scsi_lun *lun UNUSED, struct be_io *io,
		     struct reactor *r)
{
	CHECK(n_ios < MAXIO);
	ios[n_ios++] = (struct fio){ io, r, true, io->op, io->offset,
				     io->length };
}

static int be_pending(void)
{
	int n = 0;

	for (unsigned i = 0; i < n_ios; i++)
		n += ios[i].live;
	return n;
}

static int be_submits(struct be_io *io)
{
	int n = 0;

	for (unsigned i = 0; i < n_ios; i++)
		n += ios[i].io == io;
	return n;
}

static struct fio *be_live(struct be_io *io)
{
	for (unsigned i = 0; i < n_ios; i++)
		if (ios[i].live && ios[i].io == io)
			return &ios[i];
	return NULL;
}

struct fdone {
	struct be_io *io;
	int res;
};

static void be_done_call(void *arg)
{
	struct fdone *d = arg;

	d->io->done(d->io, d->res);
	free(d);
}

/* Complete the live request io with res (queued as a call on its reactor,
 * not run). */
static bool be_finish(struct be_io *io, int res)
{
	struct fio *f = be_live(io);
	struct fdone *d;

	if (!f)
		return false;
	f->live = false;
	d = malloc(sizeof(*d));
	d->io = io;
	d->res = res;
	f_call(f->r, be_done_call, d);
	return true;
}

static bool be_complete(struct be_io *io, int res)
{
	bool ok = be_finish(io, res);

	run();
	return ok;
}

/* the most recent live request */
static struct fio *be_last_live(void)
{
	for (unsigned i = n_ios; i-- > 0;)
		if (ios[i].live)
			return &ios[i];
	return NULL;
}

static int refs;
static bool lun_dead;	/* the LUN's count reached 0 (being freed) */
static void f_get(struct scsi_lun *l UNUSED)
{
	refs++;
}
static bool f_tryget(struct scsi_lun *l UNUSED)
{
	if (lun_dead)
		return false;
	refs++;
	return true;
}
static void f_put(struct scsi_lun *l UNUSED)
{
	refs--;
}

static const struct hang_env fake_env = {
	.now_ms = f_now,
	.call = f_call,
	.timer_add = f_timer_add,
	.timer_del = f_timer_del,
	.submit = f_submit,
	.lun_get = f_get,
	.lun_put = f_put,
	.lun_tryget = f_tryget,
};

const struct hang_env *hang_env_real(void)
{
	return &fake_env;
}

/* logging: keep the lines for checks */
static char logbuf[16384];
void log_msg(enum log_level lvl UNUSED, const char *fmt, ...)
{
	va_list ap;
	size_t n = strlen(logbuf);

	va_start(ap, fmt);
	if (n < sizeof(logbuf) - 2) {
		vsnprintf(logbuf + n, sizeof(logbuf) - n - 1, fmt, ap);
		strcat(logbuf, "\n");
	}
	va_end(ap);
	if (getenv("HANG_TEST_LOG")) {
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
}
bool log_debug_enabled(void)
{
	return false;
}

/* ---- the LUN and commands under test ---- */

static struct scsi_lun L;
static struct lun_settings LS;	/* L.set points here; tests change it in place */
#define H (L.hang)

struct tcmd {
	struct media_io m;
	uint8_t buf[512];
	struct iovec iov;
	int ndone;
	int res;
	struct reactor *ran_on;
	bool in_submit;
	uint64_t done_at;
};
static struct tcmd cmds[64];
static unsigned n_cmds;
static int done_order[64], n_done_order;

static void t_complete(struct media_io *m, int res)
{
	struct tcmd *c = container_of(m, struct tcmd, m);

	c->ndone++;
	c->res = res;
	c->ran_on = cur;
	c->in_submit = in_submit;
	c->done_at = now;
	done_order[n_done_order++] = (int)(c - cmds);
}

static void set_retry_errors(void)
{
	static const int e[] = { EIO, ENOSPC, EDQUOT, ETIMEDOUT, ENOTCONN,
				 ECONNRESET, EAGAIN, EBUSY, ENOMEM };

	memset(LS.retry_errors, 0, sizeof(LS.retry_errors));
	for (unsigned i = 0; i < ARRAY_SIZE(e); i++)
		LS.retry_errors[e[i] / 64] |= 1ULL << (e[i] % 64);
}

static void setup(enum err_policy rerror, enum err_policy werror,
		  uint32_t interval, uint32_t timeout)
{
	run();
	call_head = call_tail = 0;
	list_init(&timers);
	n_ios = 0;
	n_cmds = 0;
	n_done_order = 0;
	memset(cmds, 0, sizeof(cmds));
	logbuf[0] = 0;
	now = 100000;
	refs = 0;
	lun_dead = false;
	memset(&L, 0, sizeof(L));
	memset(&LS, 0, sizeof(LS));
	atomic_init(&L.set, &LS);
	snprintf(L.target_name, sizeof(L.target_name), "iqn.2026-11.test:hang");
	LS.lun = 1;
	LS.block_size = 512;
	L.nblocks = 1 << 20;
	LS.rerror = rerror;
	LS.werror = werror;
	LS.retry_interval_ms = interval;
	LS.retry_timeout_ms = timeout;
	set_retry_errors();
	CHECK(hang_lun_init(&L) == 0);
}

/* Free the LUN as its last scsi_lun_put() would, then let any armed
 * timer fire so the orphaned hang state is freed too. */
static void teardown(void)
{
	run();
	CHECK(refs == 0);
	lun_dead = true;
	hang_lun_free(&L);
	advance(1000000);
	CHECK(refs == 0);
	CHECK(list_empty(&timers));
	CHECK(list_empty(&hang_orphans));
}

/* A command numbered now (arrival order) but not yet submitted. */
static struct tcmd *cmd_new(enum be_op op, uint64_t lba, struct reactor *r,
			    uint64_t nexus)
{
	struct tcmd *c = &cmds[n_cmds++];

	c->m.io.op = op;
	c->m.io.offset = lba * 512;
	c->m.io.length = op == BE_OP_FLUSH ? 0 : 512;
	c->iov.iov_base = c->buf;
	c->iov.iov_len = 512;
	c->m.io.iov = &c->iov;
	c->m.io.iovcnt = 1;
	c->m.seq = atomic_fetch_add(&L.seq, 1);
	c->m.nexus_id = nexus;
	c->m.tag = n_cmds;
	c->m.origin = r;
	c->m.complete = t_complete;
	return c;
}

static void submit_norun(struct tcmd *c)
{
	cur = c->m.origin;
	in_submit = true;
	hang_submit(&L, &c->m);
	in_submit = false;
	cur = NULL;
}

static void submit(struct tcmd *c)
{
	submit_norun(c);
	run();
}

static struct tcmd *go(enum be_op op, uint64_t lba, struct reactor *r)
{
	struct tcmd *c = cmd_new(op, lba, r, 1);

	submit(c);
	return c;
}

static void abort_cmd(struct tcmd *c)
{
	cur = c->m.origin;
	hang_abort(&L, &c->m);
	cur = NULL;
	run();
}

static int st(void)
{
	return hang_state(&L);
}

static bool logged(const char *s)
{
	return strstr(logbuf, s) != NULL;
}

/* A write on R1 that fails with EIO: the LUN is hung, c held. */
static struct tcmd *hang_it(uint64_t lba)
{
	struct tcmd *c = go(BE_OP_WRITE, lba, R1);

	CHECK(be_complete(&c->m.io, -EIO));
	CHECK(st() == HANG_HUNG);
	CHECK(c->ndone == 0);
	return c;
}

/* ---- tests ---- */

static void test_ok_path(void)
{
	setup(ERR_POLICY_REPORT, ERR_POLICY_REPORT, 1000, 0);
	struct tcmd *c = go(BE_OP_WRITE, 8, R2);

	CHECK(be_pending() == 1 && be_live(&c->m.io)->r == R2);
	CHECK(c->ndone == 0);
	CHECK(be_complete(&c->m.io, 0));
	CHECK(c->ndone == 1 && c->res == 0 && c->ran_on == R2);
	CHECK(!c->in_submit);
	CHECK(hang_home(H) == NULL);	/* the healthy path never went home */
	CHECK(st() == HANG_OK);
	teardown();
}

static void test_report_mode(void)
{
	setup(ERR_POLICY_REPORT, ERR_POLICY_REPORT, 1000, 0);
	struct tcmd *r = go(BE_OP_READ, 8, R1), *w = go(BE_OP_WRITE, 9, R1);

	CHECK(be_complete(&r->m.io, -EIO));
	CHECK(be_complete(&w->m.io, -ENOSPC));
	CHECK(r->ndone == 1 && r->res == -EIO);
	CHECK(w->ndone == 1 && w->res == -ENOSPC);
	CHECK(st() == HANG_OK && H->episodes == 0);
	/* rerror and werror are separate: retry writes, report reads */
	LS.werror = ERR_POLICY_RETRY;
	r = go(BE_OP_READ, 8, R1);
	CHECK(be_complete(&r->m.io, -EIO));
	CHECK(r->ndone == 1 && r->res == -EIO && st() == HANG_OK);
	w = go(BE_OP_FLUSH, 0, R1);
	CHECK(be_complete(&w->m.io, -EIO));
	CHECK(w->ndone == 0 && st() == HANG_HUNG);	/* flush follows werror */
	hang_verb(&L, "fail");
	run();
	CHECK(w->ndone == 1 && w->res == -EIO);
	teardown();
}

static void test_non_retryable(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 0);
	struct tcmd *a = go(BE_OP_WRITE, 8, R1), *b = go(BE_OP_READ, 8, R1),
		    *c = go(BE_OP_WRITE, 8, R1);

	CHECK(be_complete(&a->m.io, -EROFS));
	CHECK(be_complete(&b->m.io, -EINVAL));
	CHECK(be_complete(&c->m.io, -EPERM));
	CHECK(a->res == -EROFS && b->res == -EINVAL && c->res == -EPERM);
	CHECK(a->ndone == 1 && b->ndone == 1 && c->ndone == 1);
	CHECK(st() == HANG_OK);
	/* an errno taken out of retry_errors is reported too */
	LS.retry_errors[EIO / 64] &= ~(1ULL << (EIO % 64));
	a = go(BE_OP_WRITE, 8, R1);
	CHECK(be_complete(&a->m.io, -EIO));
	CHECK(a->ndone == 1 && a->res == -EIO && st() == HANG_OK);
	teardown();
}

static void test_hold_probe_recover(void)
{
	setup(ERR_POLICY_REPORT, ERR_POLICY_RETRY, 1000, 0);
	struct tcmd *c1 = go(BE_OP_WRITE, 2048, R1);
	uint64_t t0 = now;

	CHECK(be_complete(&c1->m.io, -EIO));
	CHECK(st() == HANG_HUNG && c1->ndone == 0);
	CHECK(hang_home(H) == R1);
	CHECK(H->nheld == 1 && H->nqueued == 0);
	CHECK(H->t0 == t0 && H->err == EIO && H->op == BE_OP_WRITE &&
	      H->lba == 2048);
	CHECK(logged("hung: EIO on write at LBA 2048, 1 command(s) held"));
	CHECK(logged("hang: iqn.2026-11.test:hang LUN 1: "));

	/* a later command from another reactor is queued, not sent */
	struct tcmd *c2 = go(BE_OP_READ, 7, R2);
	CHECK(be_submits(&c2->m.io) == 0 && H->nqueued == 1);
	CHECK(c2->ndone == 0);

	/* the probe comes at the interval, not before */
	advance(999);
	CHECK(be_submits(&c1->m.io) == 1);
	advance(1);
	CHECK(be_submits(&c1->m.io) == 2 && be_live(&c1->m.io));
	CHECK(be_live(&c1->m.io)->r == R1);	/* home reactor submits */
	CHECK(be_complete(&c1->m.io, -EIO));
	CHECK(st() == HANG_HUNG && c1->ndone == 0 && H->retries == 1);
	advance(999);
	CHECK(be_submits(&c1->m.io) == 2);
	advance(1);
	CHECK(be_submits(&c1->m.io) == 3);
	/* no second probe while one is in flight */
	advance(5000);
	CHECK(be_submits(&c1->m.io) == 3);
	CHECK(be_submits(&c2->m.io) == 0);
	CHECK(be_complete(&c1->m.io, 0));
	CHECK(c1->ndone == 1 && c1->res == 0 && c1->ran_on == R1);
	CHECK(st() == HANG_OK);
	CHECK(be_submits(&c2->m.io) == 1);
	CHECK(be_complete(&c2->m.io, 0));
	CHECK(c2->ndone == 1 && c2->res == 0 && c2->ran_on == R2);
	CHECK(H->episodes == 1 && H->recoveries == 1 && H->retries == 2);
	CHECK(H->longest_ms == 7000);
	CHECK(H->nheld == 0 && H->nqueued == 0 && H->bytes == 0);
	CHECK(logged("recovered from hung after 7.0s (probe succeeded): "
		     "EIO on write at LBA 2048, 1 command(s) resubmitted"));
	CHECK(!timer_armed(&H->probe_timer));
	/* ok again: straight to the backend */
	c2 = go(BE_OP_WRITE, 1, R2);
	CHECK(be_submits(&c2->m.io) == 1 && be_live(&c2->m.io)->r == R2);
	CHECK(be_complete(&c2->m.io, 0) && c2->res == 0);
	teardown();
}

static void test_ordering(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *w1 = hang_it(100);
	struct tcmd *w2 = go(BE_OP_WRITE, 100, R2);
	struct tcmd *w3 = go(BE_OP_WRITE, 100, R1);
	struct tcmd *other = go(BE_OP_WRITE, 5000, R2);
	unsigned mark = n_ios;

	advance(100);
	CHECK(n_ios == mark + 1 && ios[mark].io == &w1->m.io);
	/* while the probe is out the newer writes stay queued */
	CHECK(be_submits(&w2->m.io) == 0 && be_submits(&w3->m.io) == 0);
	CHECK(be_complete(&w1->m.io, 0));
	/* recovered: w2 goes; w3 writes the same block, so it waits for w2
	 * (a backend may complete concurrent requests in any order); the
	 * write to other blocks does not wait */
	CHECK(n_ios == mark + 3);
	CHECK(ios[mark + 1].io == &w2->m.io && ios[mark + 2].io == &other->m.io);
	CHECK(be_submits(&w3->m.io) == 0);
	CHECK(be_complete(&w2->m.io, 0));
	CHECK(n_ios == mark + 4 && ios[mark + 3].io == &w3->m.io);
	CHECK(be_complete(&w3->m.io, 0) && be_complete(&other->m.io, 0));
	CHECK(done_order[0] == 0 && done_order[1] == 1 && done_order[2] == 2);
	CHECK(H->nheld == 0 && H->nqueued == 0 && H->bytes == 0);
	teardown();
}

static void test_inflight_join(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *a = go(BE_OP_WRITE, 1, R1), *b = go(BE_OP_WRITE, 2, R2),
		    *c = go(BE_OP_READ, 3, R2), *d = go(BE_OP_READ, 4, R1);
	struct tcmd *q = NULL;
	unsigned mark;

	CHECK(be_complete(&b->m.io, -EIO));	/* starts the episode */
	CHECK(st() == HANG_HUNG);
	CHECK(be_complete(&c->m.io, -ETIMEDOUT));
	CHECK(be_complete(&a->m.io, -EIO));	/* older: goes first */
	CHECK(be_complete(&d->m.io, 0));	/* success while hung: done */
	CHECK(d->ndone == 1 && d->res == 0 && d->ran_on == R1);
	CHECK(H->nheld == 3);
	CHECK(list_first_entry(&H->held, struct media_io, link) == &a->m);
	q = go(BE_OP_WRITE, 5, R1);
	mark = n_ios;
	advance(100);
	CHECK(n_ios == mark + 1 && ios[mark].io == &a->m.io);	/* oldest */
	CHECK(be_complete(&a->m.io, 0));
	/* held b, c (seq order), then queued q */
	CHECK(n_ios == mark + 4);
	CHECK(ios[mark + 1].io == &b->m.io && ios[mark + 2].io == &c->m.io &&
	      ios[mark + 3].io == &q->m.io);
	CHECK(be_complete(&b->m.io, 0) && be_complete(&c->m.io, 0) &&
	      be_complete(&q->m.io, 0));
	CHECK(b->ran_on == R2 && c->ran_on == R2 && q->ran_on == R1);
	CHECK(a->res == 0 && b->res == 0 && c->res == 0 && q->res == 0);
	teardown();
}

static void test_new_episode(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *a = hang_it(1), *b = go(BE_OP_WRITE, 2, R2);

	advance(100);
	CHECK(be_complete(&a->m.io, 0));
	CHECK(st() == HANG_OK && a->res == 0);
	/* the resubmitted queued command fails again: a new episode */
	CHECK(be_complete(&b->m.io, -ENOSPC));
	CHECK(st() == HANG_HUNG && b->ndone == 0);
	CHECK(H->episodes == 2 && H->err == ENOSPC && H->lba == 2);
	advance(100);
	CHECK(be_complete(&b->m.io, 0));
	CHECK(b->ndone == 1 && b->res == 0 && st() == HANG_OK);
	CHECK(H->recoveries == 2);
	teardown();
}

static void test_timeout_and_failed(void)
{
	setup(ERR_POLICY_REPORT, ERR_POLICY_RETRY, 1000, 2500);
	struct tcmd *c1 = hang_it(2048);
	struct tcmd *c2 = go(BE_OP_READ, 7, R2);
	struct fio *f;

	advance(1000);
	CHECK(be_complete(&c1->m.io, -EIO));
	advance(1000);
	CHECK(be_complete(&c1->m.io, -ENOTCONN));
	CHECK(st() == HANG_HUNG);
	advance(499);
	CHECK(st() == HANG_HUNG && c1->ndone == 0 && c2->ndone == 0);
	advance(1);
	CHECK(st() == HANG_FAILED);
	/* each held command with its own last error, queued ones with the
	 * episode's error; none of them reached the backend again */
	CHECK(c1->ndone == 1 && c1->res == -ENOTCONN && c1->ran_on == R1);
	CHECK(c2->ndone == 1 && c2->res == -ENOTCONN && c2->ran_on == R2);
	CHECK(be_submits(&c2->m.io) == 0);
	CHECK(H->timeouts == 1 && H->nheld == 0 && H->nqueued == 0);
	CHECK(logged("failed after 2.5s (retry_timeout): ENOTCONN on write "
		     "at LBA 2048, 2 command(s) reported"));

	/* failed: fail fast */
	struct tcmd *c3 = go(BE_OP_WRITE, 9, R2);
	CHECK(be_live(&c3->m.io) && be_live(&c3->m.io)->r == R2);
	CHECK(be_complete(&c3->m.io, -EIO));
	CHECK(c3->ndone == 1 && c3->res == -EIO && c3->done_at == now);
	CHECK(st() == HANG_FAILED);
	/* a read success proves nothing about writes */
	struct tcmd *c4 = go(BE_OP_READ, 9, R2);
	CHECK(be_complete(&c4->m.io, 0) && c4->res == 0);
	CHECK(st() == HANG_FAILED);

	/* the background probe: a flush (never a replay of a write) */
	unsigned mark = n_ios;
	advance(999);
	CHECK(n_ios == mark);
	advance(1);
	CHECK(n_ios == mark + 1);
	f = be_last_live();
	CHECK(f && f->io == &H->bg_io && f->op == BE_OP_FLUSH && f->r == R1);
	CHECK(refs == 1);	/* the probe holds the LUN */
	CHECK(be_complete(f->io, -EIO));
	CHECK(st() == HANG_FAILED && refs == 0);
	advance(1000);
	f = be_last_live();
	CHECK(f && f->io == &H->bg_io);
	CHECK(be_complete(f->io, 0));
	CHECK(st() == HANG_OK);
	CHECK(logged("recovered from failed after 2.0s (background probe "
		     "succeeded)"));
	CHECK(H->recoveries == 1 && H->longest_ms == 2500);
	CHECK(!timer_armed(&H->probe_timer));

	/* the flush could not see the write failure: until a write
	 * succeeds, a failing write is reported at once (back to failed) */
	char buf[1024];
	CHECK(hang_describe(&L, buf, sizeof(buf)) > 0);
	CHECK(strstr(buf, "Hang state: ok (no write succeeded since a flush "
			  "probe)\n") != NULL);
	struct tcmd *c5 = go(BE_OP_WRITE, 9, R2);
	CHECK(be_complete(&c5->m.io, -EIO));
	CHECK(c5->ndone == 1 && c5->res == -EIO && c5->ran_on == R2);
	CHECK(st() == HANG_FAILED && H->episodes == 2 && H->timeouts == 1);
	CHECK(logged("(writes still fail after a flush probe succeeded)"));
	advance(1000);
	f = be_last_live();
	CHECK(f && f->io == &H->bg_io && f->op == BE_OP_FLUSH);
	CHECK(be_complete(f->io, 0) && st() == HANG_OK);
	/* a read or a flush proves nothing; a write does */
	c5 = go(BE_OP_FLUSH, 0, R1);
	CHECK(be_complete(&c5->m.io, 0) && atomic_load(&H->unproven));
	c5 = go(BE_OP_WRITE, 10, R1);
	CHECK(be_complete(&c5->m.io, 0) && !atomic_load(&H->unproven));
	/* so the next failure is a new hang again */
	c5 = go(BE_OP_WRITE, 11, R1);
	CHECK(be_complete(&c5->m.io, -EIO));
	CHECK(c5->ndone == 0 && st() == HANG_HUNG);
	hang_verb(&L, "fail");
	run();
	CHECK(c5->res == -EIO);
	teardown();
}

static void test_failed_read_probe(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_REPORT, 500, 1000);
	struct tcmd *c = go(BE_OP_READ, 4096, R2);
	struct fio *f;

	CHECK(be_complete(&c->m.io, -EIO));
	CHECK(st() == HANG_HUNG && hang_home(H) == R2);
	advance(500);
	CHECK(be_complete(&c->m.io, -EIO));
	advance(500);
	CHECK(st() == HANG_FAILED && c->res == -EIO);
	advance(500);
	f = be_last_live();
	CHECK(f && f->io == &H->bg_io && f->op == BE_OP_READ);
	CHECK(f && f->offset == 4096ULL * 512 && f->length == 512);
	CHECK(be_complete(f->io, -EIO) && st() == HANG_FAILED);
	/* a live read that succeeds returns the LUN to ok at once */
	c = go(BE_OP_READ, 1, R1);
	CHECK(be_complete(&c->m.io, 0));
	CHECK(c->res == 0 && st() == HANG_OK);
	CHECK(logged("(command succeeded)"));
	/* write failures under werror=report stay reported */
	c = go(BE_OP_WRITE, 1, R1);
	CHECK(be_complete(&c->m.io, -EIO) && c->res == -EIO);
	CHECK(st() == HANG_OK);
	teardown();
}

static void test_failed_write_evidence(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 900);
	struct tcmd *c = hang_it(5);

	advance(900);
	CHECK(st() == HANG_FAILED && c->res == -EIO);
	/* a flush that succeeds proves nothing about writes */
	c = go(BE_OP_FLUSH, 0, R2);
	CHECK(be_complete(&c->m.io, 0) && c->res == 0);
	CHECK(st() == HANG_FAILED);
	/* a live write succeeds: ok */
	c = go(BE_OP_WRITE, 6, R2);
	CHECK(be_complete(&c->m.io, 0) && c->res == 0);
	CHECK(st() == HANG_OK);
	CHECK(!timer_armed(&H->probe_timer));
	teardown();
}

static void test_timeout_never(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 0);
	struct tcmd *c = hang_it(1);

	for (int i = 0; i < 100; i++) {
		advance(1000);
		CHECK(be_complete(&c->m.io, -EIO));
	}
	CHECK(st() == HANG_HUNG && c->ndone == 0 && H->retries == 100);
	CHECK(!timer_armed(&H->timeout_timer));
	advance(1000);
	CHECK(be_complete(&c->m.io, 0) && c->res == 0 && st() == HANG_OK);
	teardown();
}

static void test_probe_inflight_at_timeout(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 1500);
	struct tcmd *a = hang_it(1), *b = go(BE_OP_WRITE, 2, R2);

	advance(1000);		/* probe out */
	CHECK(be_live(&a->m.io));
	advance(500);		/* timeout with the probe in flight */
	CHECK(st() == HANG_FAILED);
	CHECK(b->ndone == 1 && b->res == -EIO && a->ndone == 0);
	CHECK(be_complete(&a->m.io, -EIO));
	CHECK(a->ndone == 1 && a->res == -EIO && st() == HANG_FAILED);
	CHECK(timer_armed(&H->probe_timer));	/* background probe next */

	/* same, but the late probe succeeds: the LUN recovers */
	teardown();
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 1500);
	a = hang_it(1);
	advance(1500);
	CHECK(st() == HANG_FAILED && a->ndone == 0);
	CHECK(be_complete(&a->m.io, 0));
	CHECK(a->res == 0 && st() == HANG_OK);
	teardown();
}

static void test_abort_held_queued(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 0);
	struct tcmd *a = hang_it(1), *b = go(BE_OP_WRITE, 2, R2),
		    *c = go(BE_OP_WRITE, 3, R2);

	/* queued: removed at once, never reaches the backend */
	abort_cmd(b);
	CHECK(b->ndone == 1 && b->res == -ECANCELED && b->ran_on == R2);
	CHECK(H->nqueued == 1 && st() == HANG_HUNG);
	/* held, the only one: removed at once; nothing is dispatched
	 * before the next probe tick (a batch of aborts may be under way),
	 * which takes the oldest queued command as the probe */
	abort_cmd(a);
	CHECK(a->ndone == 1 && a->res == -ECANCELED && a->ran_on == R1);
	CHECK(st() == HANG_HUNG && H->nheld == 0 && H->nqueued == 1);
	CHECK(be_submits(&c->m.io) == 0);
	advance(1000);
	CHECK(be_submits(&a->m.io) == 1 && be_submits(&b->m.io) == 0);
	CHECK(be_submits(&c->m.io) == 1 && H->nheld == 1 && H->nqueued == 0);
	CHECK(be_complete(&c->m.io, -EIO));	/* c is held now */
	CHECK(c->ndone == 0 && st() == HANG_HUNG);
	advance(1000);
	CHECK(be_complete(&c->m.io, 0) && c->res == 0);
	CHECK(st() == HANG_OK && H->nheld == 0);
	CHECK(be_submits(&a->m.io) == 1);
	/* every held and queued command aborted: ok at the next tick */
	a = hang_it(4);
	b = go(BE_OP_WRITE, 5, R2);
	abort_cmd(a);
	abort_cmd(b);
	CHECK(st() == HANG_HUNG);
	advance(1000);
	CHECK(st() == HANG_OK && logged("(nothing held)"));
	CHECK(be_submits(&a->m.io) == 1 && be_submits(&b->m.io) == 0);
	/* aborting a finished command does nothing */
	abort_cmd(a);
	CHECK(a->ndone == 1);
	teardown();
}

static void test_abort_held_of_two(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *a = go(BE_OP_WRITE, 1, R1), *b = go(BE_OP_WRITE, 2, R2);

	CHECK(be_complete(&a->m.io, -EIO) && be_complete(&b->m.io, -EIO));
	abort_cmd(a);
	CHECK(a->res == -ECANCELED && st() == HANG_HUNG);
	advance(100);	/* the probe is now b */
	CHECK(be_submits(&a->m.io) == 1 && be_submits(&b->m.io) == 2);
	CHECK(be_complete(&b->m.io, 0) && b->res == 0 && st() == HANG_OK);
	teardown();
}

static void test_abort_inflight(void)
{
	/* submitted directly: result dropped when it returns */
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *a = go(BE_OP_WRITE, 1, R1);

	abort_cmd(a);
	CHECK(a->ndone == 0);
	CHECK(be_complete(&a->m.io, 0));
	CHECK(a->ndone == 1 && a->res == -ECANCELED && a->ran_on == R1);
	/* same for a retryable failure: not held */
	a = go(BE_OP_WRITE, 1, R1);
	abort_cmd(a);
	CHECK(be_complete(&a->m.io, -EIO));
	CHECK(a->ndone == 1 && a->res == -ECANCELED && st() == HANG_OK);

	/* the probe in flight: dropped when it returns; nothing held: ok */
	a = hang_it(1);
	struct tcmd *b = go(BE_OP_WRITE, 2, R2);
	advance(100);
	CHECK(be_live(&a->m.io));
	abort_cmd(a);
	CHECK(a->ndone == 0);
	CHECK(be_complete(&a->m.io, -EIO));
	CHECK(a->ndone == 1 && a->res == -ECANCELED);
	CHECK(st() == HANG_HUNG && be_submits(&b->m.io) == 0);
	advance(100);	/* b, the oldest queued, is the next probe */
	CHECK(be_submits(&b->m.io) == 1);
	CHECK(be_complete(&b->m.io, 0) && b->res == 0 && st() == HANG_OK);
	/* a probe that succeeds but was aborted: dropped result, ok */
	a = hang_it(1);
	advance(100);
	abort_cmd(a);
	CHECK(be_complete(&a->m.io, 0));
	CHECK(a->res == -ECANCELED && st() == HANG_OK);
	/* a resubmitted command in flight after recovery */
	a = hang_it(1);
	b = go(BE_OP_WRITE, 2, R2);
	advance(100);
	CHECK(be_complete(&a->m.io, 0));
	CHECK(be_live(&b->m.io));
	abort_cmd(b);
	CHECK(be_complete(&b->m.io, -EIO));
	CHECK(b->res == -ECANCELED && st() == HANG_OK);
	teardown();
}

static void test_abort_races(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *a = hang_it(1);

	/* on its way to the home reactor: the abort message follows it */
	struct tcmd *b = cmd_new(BE_OP_WRITE, 2, R2, 1);
	submit_norun(b);
	abort_cmd(b);
	CHECK(b->ndone == 1 && b->res == -ECANCELED);
	CHECK(be_submits(&b->m.io) == 0);

	/* completion already on its way: the real result wins */
	advance(100);
	CHECK(be_finish(&a->m.io, 0));
	CHECK(run_one());	/* the probe's done on the home reactor */
	CHECK(hang_m_where(&a->m) == HW_COMPLETING);
	cur = R1;
	hang_abort(&L, &a->m);
	cur = NULL;
	run();
	CHECK(a->ndone == 1 && a->res == 0 && st() == HANG_OK);

	/* a retryable failure on its way home, then aborted */
	a = go(BE_OP_WRITE, 3, R2);
	CHECK(be_finish(&a->m.io, -EIO));
	CHECK(run_one());	/* done on R2: sends it home */
	CHECK(hang_m_where(&a->m) == HW_TO_HOME);
	cur = R2;
	hang_abort(&L, &a->m);
	cur = NULL;
	run();
	CHECK(a->ndone == 1 && a->res == -ECANCELED);
	/* it started an episode at home, then left nothing held: ok at the
	 * next tick */
	CHECK(st() == HANG_HUNG && H->episodes == 2);
	advance(100);
	CHECK(st() == HANG_OK);
	teardown();
}

static unsigned nexus_done_count, nexus_done_calls;
static struct reactor *nexus_done_on;
static void nexus_done(void *arg UNUSED, unsigned dropped)
{
	nexus_done_calls++;
	nexus_done_count = dropped;
	nexus_done_on = cur;
}

static void test_abort_nexus(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *a1 = cmd_new(BE_OP_WRITE, 1, R1, 0xA);
	struct tcmd *b1 = cmd_new(BE_OP_WRITE, 2, R2, 0xB);

	submit(a1);
	submit(b1);
	CHECK(be_complete(&a1->m.io, -EIO) && be_complete(&b1->m.io, -EIO));
	struct tcmd *a2 = cmd_new(BE_OP_WRITE, 3, R1, 0xA);
	struct tcmd *b2 = cmd_new(BE_OP_WRITE, 4, R2, 0xB);
	submit(a2);
	submit(b2);
	CHECK(H->nheld == 2 && H->nqueued == 2);

	nexus_done_calls = 0;
	CHECK(hang_abort_nexus(&L, 0xA, R1, nexus_done, NULL) == 0);
	CHECK(nexus_done_calls == 0);	/* never inside the call */
	run();
	CHECK(nexus_done_calls == 1 && nexus_done_count == 2 &&
	      nexus_done_on == R1);
	CHECK(a1->res == -ECANCELED && a2->res == -ECANCELED);
	CHECK(a1->ran_on == R1 && a2->ran_on == R1);
	CHECK(b1->ndone == 0 && b2->ndone == 0 && st() == HANG_HUNG);
	advance(100);
	CHECK(be_submits(&b1->m.io) == 2);
	CHECK(be_complete(&b1->m.io, 0));
	CHECK(be_submits(&b2->m.io) == 1 && be_submits(&a2->m.io) == 0);
	CHECK(be_submits(&a1->m.io) == 1);
	CHECK(be_complete(&b2->m.io, 0) && b1->res == 0 && b2->res == 0);

	/* a command numbered before the drop but arriving after it */
	struct tcmd *h1 = hang_it(9);
	struct tcmd *late = cmd_new(BE_OP_WRITE, 10, R2, 0xA);
	struct tcmd *other = cmd_new(BE_OP_WRITE, 11, R2, 0xB);
	CHECK(hang_abort_nexus(&L, 0xA, NULL, NULL, NULL) == 0);
	run();
	submit(late);
	submit(other);
	CHECK(late->ndone == 1 && late->res == -ECANCELED);
	CHECK(other->ndone == 0 && H->nqueued == 1);
	/* h1 was nexus 1: still held */
	CHECK(h1->ndone == 0 && st() == HANG_HUNG);

	/* LUN RESET: everything goes, the LUN returns to ok */
	CHECK(hang_abort_nexus(&L, HANG_NEXUS_ALL, R2, nexus_done, NULL) == 0);
	run();
	CHECK(nexus_done_count == 2 && nexus_done_on == R2);
	CHECK(h1->res == -ECANCELED && other->res == -ECANCELED);
	CHECK(st() == HANG_OK && H->nheld == 0 && H->nqueued == 0);
	CHECK(logged("task set dropped, nothing held"));
	CHECK(be_submits(&other->m.io) == 0 && be_submits(&h1->m.io) == 1);
	/* commands after the reset are not affected */
	struct tcmd *n = go(BE_OP_WRITE, 12, R1);
	CHECK(be_complete(&n->m.io, 0) && n->res == 0);

	/* a probe in flight is dropped when it returns */
	h1 = hang_it(9);
	advance(100);
	CHECK(hang_abort_nexus(&L, HANG_NEXUS_ALL, R1, nexus_done, NULL) == 0);
	run();
	CHECK(nexus_done_count == 1 && h1->ndone == 0);
	CHECK(be_complete(&h1->m.io, -EIO));
	CHECK(h1->res == -ECANCELED && st() == HANG_HUNG);
	advance(100);
	CHECK(st() == HANG_OK);
	teardown();

	/* a LUN that never left ok: done still called, later */
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	nexus_done_calls = 0;
	CHECK(hang_abort_nexus(&L, 5, R1, nexus_done, NULL) == 0);
	CHECK(nexus_done_calls == 0);
	run();
	CHECK(nexus_done_calls == 1 && nexus_done_count == 0);
	teardown();
}

static void test_verbs(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 0);
	char buf[1024];

	CHECK(hang_verb(&L, "bogus") == -EINVAL);
	CHECK(hang_verb(&L, "retry") == 0);	/* ok: nothing to do */
	struct tcmd *a = hang_it(1), *b = go(BE_OP_READ, 2, R2);

	CHECK(hang_verb(&L, "pause") == 0);
	run();
	advance(10000);
	CHECK(be_submits(&a->m.io) == 1);	/* no probe while paused */
	CHECK(hang_describe(&L, buf, sizeof(buf)) > 0);
	CHECK(strstr(buf, "        Hang probing: paused\n") != NULL);
	/* retry probes now, even while paused */
	CHECK(hang_verb(&L, "retry") == 0);
	run();
	CHECK(be_submits(&a->m.io) == 2);
	CHECK(be_complete(&a->m.io, -EIO));
	advance(10000);
	CHECK(be_submits(&a->m.io) == 2);	/* still paused */
	CHECK(hang_verb(&L, "resume") == 0);
	run();
	advance(999);
	CHECK(be_submits(&a->m.io) == 2);
	advance(1);
	CHECK(be_submits(&a->m.io) == 3);
	CHECK(be_complete(&a->m.io, -EIO));
	/* fail: everything reported now, failed */
	CHECK(hang_verb(&L, "fail") == 0);
	run();
	CHECK(st() == HANG_FAILED);
	CHECK(a->res == -EIO && b->res == -EIO && be_submits(&b->m.io) == 0);
	CHECK(logged("(operator)"));
	/* retry while failed: the background probe now */
	unsigned mark = n_ios;
	CHECK(hang_verb(&L, "retry") == 0);
	run();
	CHECK(n_ios == mark + 1 && ios[mark].io == &H->bg_io);
	CHECK(be_complete(&H->bg_io, 0) && st() == HANG_OK);
	teardown();
}

static void test_limits(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 0);
	H->max_cmds = 3;
	struct tcmd *a = hang_it(1), *b = go(BE_OP_WRITE, 2, R2),
		    *c = go(BE_OP_WRITE, 3, R2), *d = go(BE_OP_WRITE, 4, R2);

	CHECK(b->ndone == 0 && c->ndone == 0);
	CHECK(d->ndone == 1 && d->res == HANG_TASK_SET_FULL);
	CHECK(d->ran_on == R2 && be_submits(&d->m.io) == 0);
	CHECK(H->nheld == 1 && H->nqueued == 2 && H->bytes == 3 * 512);
	/* a flush pins no data but still counts as a command */
	d = go(BE_OP_FLUSH, 0, R1);
	CHECK(d->res == HANG_TASK_SET_FULL);
	hang_verb(&L, "fail");
	run();
	CHECK(a->ndone && b->ndone && c->ndone && H->bytes == 0);
	teardown();

	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 0);
	H->max_bytes = 1024;
	a = hang_it(1);
	b = go(BE_OP_WRITE, 2, R2);
	c = go(BE_OP_WRITE, 3, R2);
	d = go(BE_OP_UNMAP, 4, R2);
	d->m.io.length = 0;
	CHECK(b->ndone == 0 && c->ndone == 1 && c->res == HANG_TASK_SET_FULL);
	CHECK(H->bytes == 1024);
	teardown();
}

static void test_describe(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 30000);
	char buf[1024];

	CHECK(hang_describe(&L, buf, sizeof(buf)) > 0);
	CHECK(strncmp(buf, "        Hang state: ok\n", 23) == 0);
	CHECK(strstr(buf, "        Hang last error: none\n") != NULL);
	struct tcmd *a = hang_it(2048);
	go(BE_OP_READ, 5, R2);
	advance(12300);
	CHECK(be_complete(&a->m.io, -EIO));
	CHECK(hang_describe(&L, buf, sizeof(buf)) > 0);
	CHECK(strstr(buf, "        Hang state: hung since 12.3s (EIO on "
			  "write at LBA 2048)\n") != NULL);
	CHECK(strstr(buf, "        Hang held: 1, queued: 1, bytes: 1024\n"));
	CHECK(strstr(buf, "        Hang counters: episodes 1, retries 1, "
			  "recoveries 0, timeouts 0, longest hang 12.3s\n"));
	CHECK(strstr(buf, "        Hang probing: active\n") != NULL);
	CHECK(hang_describe(&L, buf, 20) == -ENOSPC);
	if (getenv("HANG_TEST_LOG"))
		fputs(buf, stderr);
	advance(30000);
	CHECK(hang_describe(&L, buf, sizeof(buf)) > 0);
	if (getenv("HANG_TEST_LOG"))
		fputs(buf, stderr);
	CHECK(strstr(buf, "Hang state: failed since 12.3s (EIO on write at "
			  "LBA 2048)") != NULL);
	CHECK(strstr(buf, "timeouts 1, longest hang 30.0s") != NULL);
	teardown();
}

static void test_settings_changed(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 0);
	struct tcmd *a = hang_it(1);

	/* paused: no probe, but the timeout still runs */
	hang_verb(&L, "pause");
	advance(5000);
	CHECK(be_submits(&a->m.io) == 1);
	/* a timeout set during the episode counts from its start */
	LS.retry_timeout_ms = 8000;
	hang_settings_changed(&L);
	run();
	advance(2999);
	CHECK(st() == HANG_HUNG);
	advance(1);
	CHECK(st() == HANG_FAILED && a->res == -EIO);
	teardown();

	/* policy switched to report: the held commands are reported */
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 1000, 0);
	a = hang_it(1);
	LS.werror = ERR_POLICY_REPORT;
	hang_settings_changed(&L);
	run();
	CHECK(st() == HANG_FAILED && a->res == -EIO);
	hang_settings_changed(&L);
	run();
	CHECK(st() == HANG_OK);
	teardown();
}

static struct media_io *recheck_refuse;
static int recheck_calls;
static int t_recheck(struct media_io *m)
{
	recheck_calls++;
	CHECK(cur == R1);	/* on the home reactor */
	return m == recheck_refuse ? -EACCES : 0;
}

static void test_recheck(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	hang_set_recheck(&L, t_recheck);
	struct tcmd *a = hang_it(1), *b = go(BE_OP_WRITE, 2, R2),
		    *c = go(BE_OP_WRITE, 3, R2);

	CHECK(recheck_calls == 0);	/* the healthy path asks nothing */
	/* a reservation taken meanwhile: b is refused at dispatch */
	recheck_refuse = &b->m;
	advance(100);
	CHECK(recheck_calls == 1);
	CHECK(be_complete(&a->m.io, 0));
	CHECK(recheck_calls == 3);
	CHECK(b->ndone == 1 && b->res == -EACCES && be_submits(&b->m.io) == 0);
	CHECK(be_submits(&c->m.io) == 1 && be_complete(&c->m.io, 0));
	/* the would-be probe refused: the next one is tried at once */
	a = hang_it(4);
	b = go(BE_OP_WRITE, 5, R2);
	recheck_refuse = &a->m;
	advance(100);
	CHECK(a->res == -EACCES && be_submits(&a->m.io) == 1);
	CHECK(be_submits(&b->m.io) == 1 && H->nheld == 1 && H->nqueued == 0);
	CHECK(be_complete(&b->m.io, 0) && b->res == 0 && st() == HANG_OK);
	recheck_refuse = NULL;
	teardown();
}

static void test_probe_non_retryable(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *a = hang_it(1), *b = go(BE_OP_WRITE, 2, R2);

	advance(100);
	CHECK(be_complete(&a->m.io, -EINVAL));
	CHECK(a->res == -EINVAL);
	CHECK(st() == HANG_HUNG && be_submits(&b->m.io) == 0);
	advance(100);
	CHECK(be_submits(&b->m.io) == 1);
	CHECK(be_complete(&b->m.io, 0) && b->res == 0 && st() == HANG_OK);
	teardown();
}

static void test_same_reactor_never_inside_submit(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	struct tcmd *a = hang_it(1);
	struct tcmd *b = go(BE_OP_WRITE, 2, R1);	/* home == origin */

	H->max_cmds = 2;
	struct tcmd *c = go(BE_OP_WRITE, 3, R1);	/* over the limit */
	CHECK(c->ndone == 1 && !c->in_submit);
	advance(100);
	CHECK(be_complete(&a->m.io, 0));
	CHECK(be_complete(&b->m.io, 0));
	CHECK(!a->in_submit && !b->in_submit);
	teardown();
}

static void test_free_while_failed(void)
{
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 50);
	struct tcmd *a = hang_it(1);

	advance(50);
	CHECK(a->ndone == 1 && st() == HANG_FAILED);
	CHECK(timer_armed(&H->probe_timer));
	/* freed with the probe timer armed: the timer frees the state on
	 * the home reactor and probes nothing */
	struct hang_lun *h = H;
	lun_dead = true;
	hang_lun_free(&L);
	CHECK(L.hang == NULL && atomic_load(&h->dying));
	CHECK(!list_empty(&hang_orphans));
	advance(100);
	CHECK(n_ios == 1);
	CHECK(list_empty(&timers) && refs == 0 && list_empty(&hang_orphans));

	/* the count reaches 0 just as a timer fires: it does nothing, and the
	 * free that follows frees at once */
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 0);
	a = hang_it(1);
	hang_verb(&L, "fail");
	run();
	CHECK(a->ndone == 1 && timer_armed(&H->probe_timer));
	lun_dead = true;
	advance(100);
	CHECK(n_ios == 1 && !H->probe_armed && refs == 0);
	hang_lun_free(&L);
	CHECK(list_empty(&hang_orphans) && list_empty(&timers));

	/* both timers armed (hung, nothing held after an abort) */
	setup(ERR_POLICY_RETRY, ERR_POLICY_RETRY, 100, 5000);
	a = hang_it(1);
	abort_cmd(a);
	CHECK(H->probe_armed && H->timeout_armed);
	teardown();
}

/* ---- the real thing: reactors on threads, a backend that flips ----
 *
 * Three reactor threads each keep commands in flight on one LUN while the
 * main thread makes the backend fail and heal, sends verbs and LUN resets,
 * and reactors abort some of their own commands.  Checked: every command
 * completes exactly once, on its own reactor, never inside hang_submit(),
 * with a result it may have; nothing is left over.  (Run it under
 * -fsanitize=thread for races.) */

/* hang_reset(): what a node that takes a shared store over does.  A
 * hung LUN (held, queued, a probe in the backend) and a failed one
 * (unproven, paused) both come back ok with nothing of the old episode
 * left, and the next error starts a new hang instead of failing fast. */
static int reset_done;
static void reset_cb(void *arg)
{
	(void)arg;
	reset_done++;
}

static void test_reset_after_takeover(void)
{
	char buf[1024];

	/* never needed a home reactor: done at once */
	setup(ERR_POLICY_REPORT, ERR_POLICY_RETRY, 1000, 2500);
	reset_done = 0;
	CHECK(hang_verb(&L, "pause") == 0);
	CHECK(hang_reset(&L, "ownership taken over", reset_cb, NULL) == 0);
	CHECK(reset_done == 1 && !atomic_load(&H->paused));
	teardown();

	/* hung: a probe in the backend, another held, one queued */
	setup(ERR_POLICY_REPORT, ERR_POLICY_RETRY, 1000, 2500);
	reset_done = 0;
	struct tcmd *a = go(BE_OP_WRITE, 16, R1), *b = go(BE_OP_WRITE, 17, R2);
	CHECK(be_complete(&a->m.io, -EIO) && st() == HANG_HUNG);
	CHECK(be_complete(&b->m.io, -EIO) && H->nheld == 2);
	struct tcmd *q = go(BE_OP_READ, 99, R2);
	advance(1000);				/* a is the probe now */
	CHECK(H->probe == &a->m && be_live(&a->m.io));
	CHECK(hang_reset(&L, "ownership taken over", reset_cb, NULL) == 0);
	CHECK(reset_done == 0);			/* on the home reactor */
	run();
	CHECK(reset_done == 1 && st() == HANG_OK);
	CHECK(b->ndone == 1 && b->res == -ECANCELED);
	CHECK(q->ndone == 1 && q->res == -ECANCELED);
	CHECK(be_submits(&q->m.io) == 0);
	CHECK(H->nheld == 0 && H->nqueued == 0 && H->bytes == 0 && !H->probe);
	CHECK(!timer_armed(&H->probe_timer) && !timer_armed(&H->timeout_timer));
	/* the old probe's success is dropped and recovers nothing twice */
	CHECK(be_complete(&a->m.io, 0));
	CHECK(a->ndone == 1 && a->res == -ECANCELED && st() == HANG_OK);
	CHECK(be_submits(&b->m.io) == 1);	/* never replayed */
	CHECK(logged("state reset (ownership taken over): was hung"));
	advance(10000);
	CHECK(st() == HANG_OK && H->timeouts == 0);
	teardown();

	/* failed after retry_timeout, with probing paused */
	setup(ERR_POLICY_REPORT, ERR_POLICY_RETRY, 1000, 2500);
	a = hang_it(2048);
	CHECK(hang_verb(&L, "pause") == 0);
	advance(2500);
	CHECK(st() == HANG_FAILED && a->res == -EIO);
	CHECK(hang_describe(&L, buf, sizeof(buf)) > 0);
	CHECK(strstr(buf, "Hang last error: EIO on write at LBA 2048\n"));
	CHECK(hang_reset(&L, "ownership taken over", NULL, NULL) == 0);
	run();
	CHECK(st() == HANG_OK && !atomic_load(&H->paused));
	CHECK(!atomic_load(&H->unproven));
	CHECK(hang_describe(&L, buf, sizeof(buf)) > 0);
	CHECK(strstr(buf, "        Hang state: ok\n"));
	CHECK(strstr(buf, "Hang last error: none\n"));
	CHECK(strstr(buf, "Hang held: 0, queued: 0, bytes: 0\n"));
	CHECK(strstr(buf, "Hang probing: active\n"));
	/* history stays */
	CHECK(strstr(buf, "episodes 1, ") && strstr(buf, "timeouts 1, "));
	/* a new error is a new hang, not a fast failure */
	struct tcmd *c = go(BE_OP_WRITE, 5, R2);
	CHECK(be_complete(&c->m.io, -EIO));
	CHECK(c->ndone == 0 && st() == HANG_HUNG && H->episodes == 2);
	advance(1000);
	CHECK(be_complete(&c->m.io, 0));
	CHECK(c->ndone == 1 && c->res == 0 && st() == HANG_OK);
	teardown();
}

#include <pthread.h>
#include <unistd.h>

#define TH_REACTORS 3
#define TH_SLOTS 12

static atomic_int th_fail;		/* what the backend answers now */
static atomic_int th_bad;		/* broken invariants */
static atomic_int th_refs;
static atomic_uint th_backend_ios;
static __thread bool th_in_submit;

struct th_client;
struct th_cmd {
	struct media_io m;
	uint8_t buf[512];
	struct iovec iov;
	struct th_client *cl;
	unsigned gen;			/* bumped at each completion */
	bool busy;
};
struct th_client {
	struct reactor *r;
	struct th_cmd cmd[TH_SLOTS];
	atomic_uint issued, completed, cancelled, errors, busy_full;
	atomic_int outstanding;
	atomic_bool stopping;
	unsigned rnd;
};
static struct th_client th_clients[TH_REACTORS];

struct th_sio {
	struct be_io *io;
	int res;
};

static void th_done_call(void *arg)
{
	struct th_sio *s = arg;

	s->io->done(s->io, s->res);
	free(s);
}

static void th_submit(struct scsi_lun *lun UNUSED, struct be_io *io,
		      struct reactor *r)
{
	struct th_sio *s = malloc(sizeof(*s));

	if (reactor_current() != r)
		atomic_fetch_add(&th_bad, 1);
	atomic_fetch_add(&th_backend_ios, 1);
	s->io = io;
	s->res = atomic_load(&th_fail);
	if (reactor_call(r, th_done_call, s) < 0)
		abort();
}

/* th_refs models lun->refcnt: 1 for the target table, 1 per user; the
 * last put frees the hang state, as scsi_lun_put() does */
static atomic_int th_freed;
static void th_get(struct scsi_lun *l UNUSED)
{
	atomic_fetch_add(&th_refs, 1);
}
static void th_put(struct scsi_lun *l)
{
	if (atomic_fetch_sub(&th_refs, 1) == 1) {
		hang_lun_free(l);
		atomic_store(&th_freed, 1);
	}
}
static bool th_tryget(struct scsi_lun *l UNUSED)
{
	int v = atomic_load(&th_refs);

	while (v > 0)
		if (atomic_compare_exchange_weak(&th_refs, &v, v + 1))
			return true;
	return false;
}

static const struct hang_env th_env = {
	.now_ms = reactor_now_ms,
	.call = reactor_call,
	.timer_add = reactor_timer_add,
	.timer_del = reactor_timer_del,
	.submit = th_submit,
	.lun_get = th_get,
	.lun_put = th_put,
	.lun_tryget = th_tryget,
};

static void th_issue(struct th_cmd *c);

static void th_complete(struct media_io *m, int res)
{
	struct th_cmd *c = container_of(m, struct th_cmd, m);
	struct th_client *cl = c->cl;

	if (reactor_current() != cl->r || th_in_submit || !c->busy)
		atomic_fetch_add(&th_bad, 1);
	if (res != 0 && res != -EIO && res != -ECANCELED &&
	    res != HANG_TASK_SET_FULL)
		atomic_fetch_add(&th_bad, 1);
	c->busy = false;
	c->gen++;
	atomic_fetch_add(&cl->completed, 1);
	if (res == -ECANCELED)
		atomic_fetch_add(&cl->cancelled, 1);
	else if (res == HANG_TASK_SET_FULL)
		atomic_fetch_add(&cl->busy_full, 1);
	else if (res)
		atomic_fetch_add(&cl->errors, 1);
	atomic_fetch_sub(&cl->outstanding, 1);
	if (!atomic_load(&cl->stopping))
		th_issue(c);
}

struct th_abort {
	struct th_cmd *c;
	unsigned gen;
};

static void th_abort_call(void *arg)
{
	struct th_abort *a = arg;

	/* only if that very command has not completed yet */
	if (a->c->busy && a->c->gen == a->gen)
		hang_abort(&L, &a->c->m);
	free(a);
}

static void th_issue(struct th_cmd *c)
{
	struct th_client *cl = c->cl;
	unsigned x = cl->rnd = cl->rnd * 1103515245u + 12345u;

	memset(&c->m, 0, sizeof(c->m));
	c->m.io.op = (x >> 8) % 3 == 0 ? BE_OP_READ :
		     (x >> 8) % 7 == 1 ? BE_OP_FLUSH : BE_OP_WRITE;
	c->m.io.offset = (uint64_t)((x >> 12) % 64) * 512;
	c->m.io.length = c->m.io.op == BE_OP_FLUSH ? 0 : 512;
	c->iov.iov_base = c->buf;
	c->iov.iov_len = 512;
	c->m.io.iov = &c->iov;
	c->m.io.iovcnt = 1;
	c->m.seq = atomic_fetch_add(&L.seq, 1);
	c->m.nexus_id = (uint64_t)(cl - th_clients);
	c->m.origin = cl->r;
	c->m.complete = th_complete;
	c->busy = true;
	atomic_fetch_add(&cl->issued, 1);
	atomic_fetch_add(&cl->outstanding, 1);
	th_in_submit = true;
	hang_submit(&L, &c->m);
	th_in_submit = false;
	if ((x >> 20) % 10 == 0) {
		struct th_abort *a = malloc(sizeof(*a));

		a->c = c;
		a->gen = c->gen;
		if (reactor_call(cl->r, th_abort_call, a) < 0)
			abort();
	}
}

static void th_start(void *arg)
{
	struct th_client *cl = arg;

	for (int i = 0; i < TH_SLOTS; i++) {
		cl->cmd[i].cl = cl;
		th_issue(&cl->cmd[i]);
	}
}

static void *th_thread(void *arg)
{
	reactor_run(arg);
	return NULL;
}

static void th_sleep_ms(unsigned ms)
{
	usleep(ms * 1000);
}

static void test_threads_phase(uint32_t timeout_ms, unsigned run_ms)
{
	struct reactor *rs[TH_REACTORS];
	pthread_t th[TH_REACTORS];
	unsigned rnd = 7;
	uint64_t issued = 0, completed = 0, cancelled = 0, errors = 0;

	memset(&L, 0, sizeof(L));
	memset(&LS, 0, sizeof(LS));
	atomic_init(&L.set, &LS);
	LS.lun = 2;
	LS.block_size = 512;
	L.nblocks = 64;
	LS.rerror = ERR_POLICY_RETRY;
	LS.werror = ERR_POLICY_RETRY;
	LS.retry_interval_ms = 2;
	LS.retry_timeout_ms = timeout_ms;
	set_retry_errors();
	CHECK(hang_lun_init(&L) == 0);
	H->env = &th_env;
	H->max_cmds = TH_REACTORS * TH_SLOTS - 4;	/* hit the limit too */
	atomic_store(&th_fail, 0);
	atomic_store(&th_bad, 0);
	atomic_store(&th_refs, 1);
	atomic_store(&th_freed, 0);
	memset(th_clients, 0, sizeof(th_clients));
	for (int i = 0; i < TH_REACTORS; i++) {
		rs[i] = reactor_new(i);
		CHECK(rs[i] != NULL);
		th_clients[i].r = rs[i];
		th_clients[i].rnd = 1000u + (unsigned)i;
		pthread_create(&th[i], NULL, th_thread, rs[i]);
		reactor_call(rs[i], th_start, &th_clients[i]);
	}
	for (unsigned t = 0; t < run_ms; t += 5) {
		rnd = rnd * 1103515245u + 12345u;
		switch ((rnd >> 16) % 40) {
		case 0 ... 7:
			atomic_store(&th_fail, -EIO);
			break;
		case 8 ... 17:
			atomic_store(&th_fail, 0);
			break;
		case 18:
			hang_verb(&L, "pause");
			break;
		case 19:
		case 20:
			hang_verb(&L, "resume");
			break;
		case 21:
			hang_verb(&L, "retry");
			break;
		case 22:
			hang_verb(&L, "fail");
			break;
		case 23:
			hang_abort_nexus(&L, HANG_NEXUS_ALL, NULL, NULL, NULL);
			break;
		case 24:
			hang_abort_nexus(&L, (rnd >> 8) % TH_REACTORS, NULL,
					 NULL, NULL);
			break;
		case 25: {
			char buf[1024];

			CHECK(hang_describe(&L, buf, sizeof(buf)) > 0);
			break;
		}
		default:
			break;
		}
		th_sleep_ms(5);
	}
	/* heal, stop issuing, drain */
	atomic_store(&th_fail, 0);
	hang_verb(&L, "resume");
	for (int i = 0; i < TH_REACTORS; i++)
		atomic_store(&th_clients[i].stopping, true);
	for (int w = 0; w < 1000; w++) {
		int out = 0;

		for (int i = 0; i < TH_REACTORS; i++)
			out += atomic_load(&th_clients[i].outstanding);
		if (!out)
			break;
		th_sleep_ms(5);
	}
	for (int i = 0; i < TH_REACTORS; i++) {
		issued += atomic_load(&th_clients[i].issued);
		completed += atomic_load(&th_clients[i].completed);
		cancelled += atomic_load(&th_clients[i].cancelled);
		errors += atomic_load(&th_clients[i].errors);
		CHECK(atomic_load(&th_clients[i].outstanding) == 0);
	}
	CHECK(issued == completed);
	CHECK(atomic_load(&th_bad) == 0);
	CHECK(H->nheld == 0 && H->nqueued == 0);
	/* the table lets go while the reactors run: the last reference
	 * frees the hang state, any armed timer frees the rest */
	th_put(&L);
	for (int w = 0; w < 200 && !atomic_load(&th_freed); w++)
		th_sleep_ms(5);
	CHECK(atomic_load(&th_freed) == 1);
	th_sleep_ms(50);
	for (int i = 0; i < TH_REACTORS; i++) {
		reactor_stop(rs[i]);
		pthread_join(th[i], NULL);
		reactor_free(rs[i]);
	}
	CHECK(atomic_load(&th_refs) == 0);
	CHECK(list_empty(&hang_orphans));
	if (getenv("HANG_TEST_LOG"))
		fprintf(stderr, "threads(timeout %u): %llu commands, %llu "
			"cancelled, %llu errors, %u backend I/Os\n", timeout_ms,
			(unsigned long long)issued,
			(unsigned long long)cancelled,
			(unsigned long long)errors,
			atomic_load(&th_backend_ios));
	CHECK(issued > 1000);
}

static void test_threads(void)
{
	test_threads_phase(0, 800);	/* hangs never time out */
	test_threads_phase(15, 800);	/* with failed states */
}

int main(void)
{
	test_ok_path();
	test_report_mode();
	test_non_retryable();
	test_hold_probe_recover();
	test_ordering();
	test_inflight_join();
	test_new_episode();
	test_timeout_and_failed();
	test_failed_read_probe();
	test_failed_write_evidence();
	test_timeout_never();
	test_probe_inflight_at_timeout();
	test_abort_held_queued();
	test_abort_held_of_two();
	test_abort_inflight();
	test_abort_races();
	test_abort_nexus();
	test_verbs();
	test_limits();
	test_describe();
	test_settings_changed();
	test_probe_non_retryable();
	test_recheck();
	test_same_reactor_never_inside_submit();
	test_free_while_failed();
	test_reset_after_takeover();
	test_threads();
	return CHECK_SUMMARY("test_hang");
}
