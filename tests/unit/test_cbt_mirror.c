/* test_cbt_mirror.c - the mirror job's engine (target/cbt/cbt_mirror.c)
 * with a fake in-memory source that can hold reads or writes, the real
 * file store as destination, the real block stack and a real reactor.
 *
 * What is pinned (the races of cbt_mirror.h, ordered by the test):
 * - a background write that is still in the source when a copy of its
 *   chunk reads the old data is copied again (dirty bits set at the
 *   write's completion, not before its submission);
 * - a write-blocking write to a chunk whose copy is in flight waits for
 *   it, so the stale copy does not overwrite it in the destination;
 * - auto switches to write-blocking after switch_after without ready;
 * - complete pivots: later writes reach the destination only, the source
 *   is closed; cancel takes the node out and leaves the source alone.
 *
 * cbt_mirror.c and cbt_mirror_filter.c are included so their statics are
 * reachable. */
#include "../../target/cbt/cbt_mirror.c"
#include "../../target/cbt/cbt_mirror_filter.c"
#include "backend_harness.h"

#define CH CBT_MIRROR_CHUNK
#define SRC_SIZE (4 * MIB)

/* ---- a fake source ---- */

struct fake {
	unsigned char *mem;
	atomic_bool hold_reads, hold_writes;
	struct be_io *held[256];
	atomic_int nheld;
	atomic_int reads, writes;
	atomic_bool closed;
};

static void fake_do(struct fake *f, struct be_io *io, bool read)
{
	uint64_t off = io->offset;

	for (int i = 0; i < io->iovcnt; i++) {
		if (read)
			memcpy(io->iov[i].iov_base, f->mem + off, io->iov[i].iov_len);
		else
			memcpy(f->mem + off, io->iov[i].iov_base, io->iov[i].iov_len);
		off += io->iov[i].iov_len;
	}
}

static int fake_open(struct backend *be, const struct backend_params *p,
		     const char **errmsg)
{
	(void)errmsg;
	be->priv = (void *)p->opts;
	be->size = SRC_SIZE;
	be->direct = true;
	return 0;
}

static void fake_close(struct backend *be)
{
	atomic_store(&((struct fake *)be->priv)->closed, true);
}

/* A held read has its data taken at submission (it read the old data)
 * and completes when released; a held write lands when released. */
static void fake_submit(struct backend *be, struct be_io *io, struct reactor *r)
{
	struct fake *f = be->priv;
	bool read = io->op == BE_OP_READ;

	if (io->op != BE_OP_READ && io->op != BE_OP_WRITE) {
		backend_complete_later(r, io, 0);
		return;
	}
	atomic_fetch_add(read ? &f->reads : &f->writes, 1);
	if (read)
		fake_do(f, io, true);
	if (atomic_load(read ? &f->hold_reads : &f->hold_writes)) {
		f->held[atomic_fetch_add(&f->nheld, 1)] = io;
		return;
	}
	if (!read)
		fake_do(f, io, false);
	backend_complete_later(r, io, 0);
}

static const struct backend_ops fake_ops = {
	.name = "fakesrc",
	.open = fake_open,
	.close = fake_close,
	.submit = fake_submit,
};

static void release_fn(void *arg)
{
	struct fake *f = arg;
	int n = atomic_exchange(&f->nheld, 0);

	for (int i = 0; i < n; i++) {
		if (f->held[i]->op == BE_OP_WRITE)
			fake_do(f, f->held[i], false);
		f->held[i]->done(f->held[i], 0);
	}
}

static void fake_release(struct fake *f)
{
	atomic_store(&f->hold_reads, false);
	atomic_store(&f->hold_writes, false);
	reactor_call(R, release_fn, f);
	usleep(20000);
}

struct setup {
	struct fake f;
	struct backend *root;
	char dst[512];
	unsigned id;
};

static void setup(struct setup *s, int fill)
{
	struct backend_params p = { .opts = (const char *)&s->f };
	struct backend *node = NULL;
	const char *msg;

	memset(s, 0, sizeof(*s));
	s->f.mem = malloc(SRC_SIZE);
	memset(s->f.mem, fill, SRC_SIZE);
	CHECK(be_stack_node_open(&fake_ops, &p, &node, &msg) == 0);
	CHECK(be_stack_open(node, &s->root) == 0);
	tpath(s->dst, sizeof(s->dst), "dst.img");
	unlink(s->dst);
}

static int start(struct setup *s, enum cbt_mirror_mode mode, uint32_t switch_after)
{
	struct cbt_mirror_params p = {
		.tid = 1, .lun = 1, .root = s->root, .r = R, .mode = mode,
		.switch_after_s = switch_after, .block_size = 512,
	};
	const char *why = NULL;
	int err;

	snprintf(p.target, sizeof(p.target), "%s", s->dst);
	err = cbt_mirror_start(&p, &s->id, &why);
	CHECK(err == 0, "start: %d %s", err, why ? why : "");
	return err;
}

static void teardown(struct setup *s)
{
	cbt_mirror_dismiss(s->id);
	be_stack_close(s->root);
	free(s->f.mem);
	unlink(s->dst);
}

/* The destination's bytes at off. */
static bool dest_is(struct setup *s, uint64_t off, uint64_t len, int val)
{
	unsigned char *buf = malloc(len);
	int fd = open(s->dst, O_RDONLY);
	bool ok = fd >= 0 && pread(fd, buf, len, (off_t)off) == (ssize_t)len &&
		  all_bytes(buf, len, val);

	if (fd >= 0)
		close(fd);
	free(buf);
	return ok;
}

/* A guest request through the stack, asynchronously. */
struct gio {
	struct be_io io;
	struct iovec iov;
	struct backend *be;
	void *buf;
	atomic_int res;		/* 1 = pending */
};

static void gio_done(struct be_io *io, int res)
{
	atomic_store(&container_of(io, struct gio, io)->res, res);
}

static void gio_submit_fn(void *arg)
{
	struct gio *g = arg;

	backend_submit(g->be, &g->io, R);
}

static void gio_write(struct gio *g, struct backend *root, uint64_t off,
		      uint64_t len, int val)
{
	memset(g, 0, sizeof(*g));
	g->buf = abuf(len, val);
	g->be = root;
	g->io.op = BE_OP_WRITE;
	g->io.offset = off;
	g->io.length = len;
	g->iov = (struct iovec){ g->buf, len };
	g->io.iov = &g->iov;
	g->io.iovcnt = 1;
	g->io.done = gio_done;
	atomic_store(&g->res, 1);
	reactor_call(R, gio_submit_fn, g);
}

static bool wait_res(struct gio *g, int ms)
{
	for (int i = 0; i < ms && atomic_load(&g->res) == 1; i++)
		usleep(1000);
	return atomic_load(&g->res) != 1;
}

static bool job_is(unsigned id, enum cbt_mirror_state st, int ms)
{
	return cbt_mirror_wait(id, st, (unsigned)ms) == 0 && ({
		struct cbt_mirror_info i;
		cbt_mirror_get(id, &i) == 0 && i.state == st;
	});
}

/* ---- tests ---- */

static void test_idle_copy_and_complete(void)
{
	struct setup s;
	struct gio g;
	const char *why;

	setup(&s, 0x11);
	if (start(&s, CBT_MIRROR_BACKGROUND, 0))
		return;
	CHECK(job_is(s.id, CBT_MIRROR_READY, 5000), "ready");
	CHECK(dest_is(&s, 0, SRC_SIZE, 0x11), "phase 1 copied everything");
	CHECK(cbt_mirror_complete(s.id, 5000, NULL, NULL, &why) == 0);
	CHECK(atomic_load(&s.f.closed), "the source is closed after the pivot");
	gio_write(&g, s.root, 0, CH, 0x22);
	CHECK(wait_res(&g, 5000) && atomic_load(&g.res) == 0);
	CHECK(dest_is(&s, 0, CH, 0x22), "a write after the pivot is in the destination");
	CHECK(all_bytes(s.f.mem, CH, 0x11), "and not in the source");
	free(g.buf);
	teardown(&s);
}

/* mark-at-completion: write W is in the source (held) while a copy of
 * its chunk reads the old data; W's completion dirties the chunk again. */
static void test_background_write_racing_a_copy(void)
{
	struct setup s;
	struct gio g;
	const char *why;
	int reads;

	setup(&s, 0x31);
	if (start(&s, CBT_MIRROR_BACKGROUND, 0))
		return;
	CHECK(job_is(s.id, CBT_MIRROR_READY, 5000));
	atomic_store(&s.f.hold_writes, true);
	gio_write(&g, s.root, 2 * CH, CH, 0x32);
	usleep(100000);
	CHECK(atomic_load(&g.res) == 1, "held in the source");
	/* were the chunk dirty now (marked before the write reached the
	 * source), the job's tick would copy the old data and clear it */
	reads = atomic_load(&s.f.reads);
	usleep(300000);
	CHECK(atomic_load(&s.f.reads) == reads,
	      "nothing dirty yet: the held write has not completed");
	fake_release(&s.f);
	CHECK(wait_res(&g, 5000) && atomic_load(&g.res) == 0);
	CHECK(cbt_mirror_complete(s.id, 5000, NULL, NULL, &why) == 0);
	CHECK(dest_is(&s, 2 * CH, CH, 0x32), "the write was copied");
	free(g.buf);
	teardown(&s);
}

/* A write-blocking write to a chunk whose copy is in flight waits for it,
 * then goes to both sides: the stale copy cannot land after it. */
static void test_write_blocking_waits_for_copy(void)
{
	struct setup s;
	struct gio g;
	int writes;

	setup(&s, 0x41);
	atomic_store(&s.f.hold_reads, true);	/* copies read, then wait */
	if (start(&s, CBT_MIRROR_WRITE_BLOCKING, 0))
		return;
	usleep(200000);
	CHECK(atomic_load(&s.f.nheld) > 0, "copies in flight");
	writes = atomic_load(&s.f.writes);
	gio_write(&g, s.root, 0, CH, 0x42);
	usleep(200000);
	CHECK(atomic_load(&g.res) == 1 && atomic_load(&s.f.writes) == writes,
	      "the write waits for the copy of its chunk");
	fake_release(&s.f);
	CHECK(wait_res(&g, 5000) && atomic_load(&g.res) == 0);
	CHECK(job_is(s.id, CBT_MIRROR_READY, 5000));
	CHECK(dest_is(&s, 0, CH, 0x42), "the destination holds the write, not the stale copy");
	CHECK(dest_is(&s, CH, SRC_SIZE - CH, 0x41));
	CHECK(all_bytes(s.f.mem, CH, 0x42));
	CHECK(cbt_mirror_cancel(s.id) == 0);
	free(g.buf);
	teardown(&s);
}

static void test_auto_switch_and_cancel(void)
{
	struct setup s;
	struct cbt_mirror_info i;
	struct gio g;

	setup(&s, 0x51);
	atomic_store(&s.f.hold_reads, true);	/* never ready */
	if (start(&s, CBT_MIRROR_AUTO, 1))
		return;
	CHECK(cbt_mirror_get(s.id, &i) == 0 && i.active == CBT_MIRROR_BACKGROUND);
	usleep(1500000);
	CHECK(cbt_mirror_get(s.id, &i) == 0 && i.active == CBT_MIRROR_WRITE_BLOCKING &&
	      i.state == CBT_MIRROR_RUNNING, "auto switched after 1 s");
	fake_release(&s.f);
	CHECK(cbt_mirror_cancel(s.id) == 0);
	CHECK(cbt_mirror_get(s.id, &i) == 0 && i.state == CBT_MIRROR_CANCELLED);
	CHECK(s.root->inner->ops == &fake_ops, "the node is out of the stack");
	gio_write(&g, s.root, 0, CH, 0x52);
	CHECK(wait_res(&g, 5000) && atomic_load(&g.res) == 0);
	CHECK(all_bytes(s.f.mem, CH, 0x52));
	CHECK(cbt_mirror_complete(s.id, 1000, NULL, NULL, &(const char *){ NULL }) == -EINVAL);
	free(g.buf);
	teardown(&s);
}

int main(void)
{
	if (harness_start())
		return 1;
	test_idle_copy_and_complete();
	test_background_write_racing_a_copy();
	test_write_blocking_waits_for_copy();
	test_auto_switch_and_cancel();
	return harness_finish();
}
