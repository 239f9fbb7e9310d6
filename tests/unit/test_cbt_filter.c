/* test_cbt_filter.c - the changed-block tracking node on a real reactor:
 * every data-changing op marks (failed writes too), reads do not, a write
 * to a clean chunk of a persistent bitmap completes only once its bit is
 * in the sidecar on disk, a copy-before-write hook holds writes until it
 * resumes them; and a backup job through the node copies a file LUN
 * exactly (raw and qcow2, full and bitmap). */
#include "backend_harness.h"
#include "cbt_filter.h"
#include "cbt_job.h"
#include "cbt_set.h"
#include "cbt_sidecar.h"

static struct backend *null_be, *fault_be, *filt;

static void stack_open(struct backend *store)
{
	struct backend_params p = { .block_size = 512 };
	const char *msg;
	int err;

	p.inner = store;
	fault_be = open_be(&be_fault_ops, &p, &err, &msg);
	CHECK(fault_be, "fault: %d %s", err, msg ? msg : "");
	p.inner = fault_be;
	filt = open_be(&cbt_filter_ops, &p, &err, &msg);
	CHECK(filt && filt->size == store->size, "cbt: %d %s", err, msg ? msg : "");
}

static void stack_close(void)
{
	close_be(filt);
	close_be(fault_be);
}

/* ---- write intent ordering ---- */

static char sidecar[512];

static int bit_on_disk(uint64_t off)
{
	struct cbt_bitmap **out;
	uint8_t *buf;
	size_t len;
	unsigned n;
	uint64_t size;
	const char *why;
	int r = -1;

	if (cbt_sidecar_read_file(sidecar, &buf, &len))
		return -1;
	if (!cbt_sidecar_decode(buf, len, &out, &n, &size, &why)) {
		r = n ? cbt_bitmap_test(out[0], off) : -1;
		for (unsigned i = 0; i < n; i++)
			cbt_bitmap_free(out[i]);
		free(out);
	}
	free(buf);
	return r;
}

struct probe {
	struct be_io io;
	struct iovec iov;
	sem_t sem;
	int res;
	int on_disk_at_done;
};

static void probe_done(struct be_io *io, int res)
{
	struct probe *pr = container_of(io, struct probe, io);

	pr->res = res;
	pr->on_disk_at_done = bit_on_disk(io->offset);
	sem_post(&pr->sem);
}

static void probe_submit(void *arg)
{
	struct probe *pr = arg;

	backend_submit(filt, &pr->io, R);
}

static int probe_write(uint64_t off, void *buf, int *on_disk)
{
	struct probe pr = { 0 };

	sem_init(&pr.sem, 0, 0);
	pr.iov.iov_base = buf;
	pr.iov.iov_len = 4096;
	pr.io.op = BE_OP_WRITE;
	pr.io.offset = off;
	pr.io.length = 4096;
	pr.io.iov = &pr.iov;
	pr.io.iovcnt = 1;
	pr.io.done = probe_done;
	reactor_call(R, probe_submit, &pr);
	if (sem_wait_secs(&pr.sem, 10))
		return -ETIMEDOUT;
	*on_disk = pr.on_disk_at_done;
	return pr.res;
}

static void test_marking_and_intent(void)
{
	struct backend_params np = { .size = 64 * MIB, .block_size = 512 };
	struct cbt_set *set;
	struct cbt_bitmap *p, *m;
	const char *msg;
	char *buf = abuf(4096, 0x5a);
	int err, on_disk;

	null_be = open_be(&be_null_ops, &np, &err, &msg);
	stack_open(null_be);
	tpath(sidecar, sizeof(sidecar), "lun.bitmaps");
	CHECK(cbt_set_new(sidecar, filt->size, &set, &msg) == 0);
	CHECK(cbt_set_add(set, "p", 64 * KIB, true, true) == 0);
	CHECK(cbt_set_add(set, "m", 4 * KIB, false, true) == 0);
	p = cbt_set_find(set, "p");
	m = cbt_set_find(set, "m");
	/* before bitmaps are attached the node just passes through */
	CHECK(run_io(filt, BE_OP_WRITE, 0, 4096, buf) == 0);
	cbt_filter_set_bitmaps(filt, set);
	CHECK(cbt_filter_is(filt) && !cbt_filter_is(fault_be));

	CHECK(probe_write(1 * MIB, buf, &on_disk) == 0);
	CHECK(on_disk == 1, "acknowledged only once durable (%d)", on_disk);
	CHECK(cbt_bitmap_test(p, 1 * MIB) && cbt_bitmap_test(m, 1 * MIB));
	CHECK(probe_write(1 * MIB + 8192, buf, &on_disk) == 0 && on_disk == 1);

	/* reads and flushes mark nothing */
	CHECK(run_io(filt, BE_OP_READ, 8 * MIB, 4096, buf) == 0);
	CHECK(run_io(filt, BE_OP_FLUSH, 0, 0, NULL) == 0);
	CHECK(!cbt_bitmap_test(m, 8 * MIB) && !cbt_bitmap_test(p, 8 * MIB));
	/* unmap and write-zeroes mark */
	CHECK(run_io(filt, BE_OP_UNMAP, 16 * MIB, 128 * KIB, NULL) == 0);
	CHECK(run_io(filt, BE_OP_WRITE_ZEROES, 20 * MIB, 4096, NULL) == 0);
	CHECK(cbt_bitmap_dirty_bytes(m) == 4096 + 4096 + 128 * KIB + 4096,
	      "%llu", (unsigned long long)cbt_bitmap_dirty_bytes(m));
	CHECK(bit_on_disk(16 * MIB + 64 * KIB) == 1);
	/* a failed write is tracked too (it may have landed partly) */
	CHECK(fault_be->ops->set_param(fault_be, "fault", "eio,ops=w") == 0);
	CHECK(probe_write(30 * MIB, buf, &on_disk) == -EIO && on_disk == 1);
	CHECK(cbt_bitmap_test(m, 30 * MIB));
	CHECK(fault_be->ops->set_param(fault_be, "fault", "off") == 0);

	cbt_filter_set_bitmaps(filt, NULL);
	stack_close();
	close_be(null_be);
	cbt_set_free(set);
	free(buf);
}

/* ---- copy-before-write hook ---- */

struct fake_cbw {
	struct cbt_cbw cbw;
	struct backend *filter;
	struct be_io *held;
	struct reactor *r;
	struct ev_timer timer;
	int taken;
	bool resumed;
};

static void fake_resume(struct ev_timer *t)
{
	struct fake_cbw *f = t->arg;

	f->resumed = true;
	cbt_filter_resume(f->filter, f->held, f->r);
}

static bool fake_before_write(struct cbt_cbw *c, struct backend *filter,
			      struct be_io *io, struct reactor *r)
{
	struct fake_cbw *f = container_of(c, struct fake_cbw, cbw);

	f->taken++;
	f->filter = filter;
	f->held = io;
	f->r = r;
	memset(&f->timer, 0, sizeof(f->timer));
	reactor_timer_add(r, &f->timer, 50, fake_resume, f);
	return true;
}

static void test_cbw_hook(void)
{
	struct backend_params np = { .size = 64 * MIB, .block_size = 512 };
	struct fake_cbw f = { .cbw.before_write = fake_before_write };
	struct fake_cbw g = { .cbw.before_write = fake_before_write };
	const char *msg;
	char *buf = abuf(4096, 1);
	int err;

	null_be = open_be(&be_null_ops, &np, &err, &msg);
	stack_open(null_be);
	CHECK(cbt_filter_cbw_install(filt, &f.cbw) == 0);
	CHECK(cbt_filter_cbw_install(filt, &g.cbw) == -EBUSY);
	CHECK(run_io(filt, BE_OP_READ, 0, 4096, buf) == 0 && f.taken == 0,
	      "reads are not held");
	CHECK(run_io(filt, BE_OP_WRITE, 0, 4096, buf) == 0);
	CHECK(f.taken == 1 && f.resumed, "the write went on only when resumed");
	cbt_filter_cbw_remove(filt, &g.cbw);	/* not installed: no effect */
	cbt_filter_cbw_remove(filt, &f.cbw);
	CHECK(run_io(filt, BE_OP_WRITE, 0, 4096, buf) == 0 && f.taken == 1);
	stack_close();
	close_be(null_be);
	free(buf);
}

/* ---- a backup job through the node ---- */

static bool files_equal(const char *a, const char *b)
{
	char cmd[9000];

	snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", a, b);
	return system(cmd) == 0;
}

static void test_backup_job(void)
{
	struct cbt_job_params *jp = calloc(1, sizeof(*jp));
	struct backend *file = open_file("src.img", 8 * MIB, true);
	struct cbt_set *set;
	char src[512], cmd[1400];
	const char *why;
	char *buf = abuf(64 * KIB, 0);
	unsigned id;
	struct cbt_job_info info;

	tpath(src, sizeof(src), "src.img");
	stack_open(file);
	CHECK(cbt_set_new(NULL, filt->size, &set, &why) == 0);
	cbt_filter_set_bitmaps(filt, set);
	CHECK(cbt_set_add(set, "b", 64 * KIB, false, true) == 0);
	for (int i = 0; i < 8; i++) {
		memset(buf, 0x41 + i, 64 * KIB);
		CHECK(run_io(filt, BE_OP_WRITE, (uint64_t)i * MIB + 64 * KIB * (uint64_t)i,
			     64 * KIB, buf) == 0);
	}
	CHECK(cbt_bitmap_dirty_bytes(cbt_set_find(set, "b")) == 8 * 64 * KIB);

	/* full raw backup with the bitmap: a copy, and the bitmap cleared */
	jp->filter = filt;
	jp->r = R;
	jp->format = CBT_FORMAT_RAW;
	snprintf(jp->bitmap, sizeof(jp->bitmap), "b");
	tpath(jp->target, sizeof(jp->target), "full.raw");
	CHECK(cbt_job_backup_start(jp, &id, &why) == 0, "%s", why ? why : "");
	CHECK(cbt_job_wait(id, 20000) == 0);
	/* the file is sparse: its holes are not read (sync=full) */
	CHECK(cbt_job_get(id, &info) == 0 && info.state == CBT_JOB_COMPLETED &&
	      info.bytes_done + info.bytes_holes == 8 * MIB &&
	      info.bytes_done == info.bytes_total && info.bytes_holes >= 4 * MIB,
	      "%s %s %llu+%llu", cbt_job_state_name(info.state), info.error,
	      (unsigned long long)info.bytes_done,
	      (unsigned long long)info.bytes_holes);
	CHECK(files_equal(src, jp->target));
	CHECK(cbt_bitmap_dirty_bytes(cbt_set_find(set, "b")) == 0);
	CHECK(cbt_job_dismiss(id) == 0 && cbt_job_get(id, &info) == -ENOENT);

	/* change two chunks; an incremental qcow2 on top of the raw full */
	memset(buf, 0x7e, 64 * KIB);
	CHECK(run_io(filt, BE_OP_WRITE, 3 * MIB, 64 * KIB, buf) == 0);
	CHECK(run_io(filt, BE_OP_WRITE, 7 * MIB + 512 * KIB, 4096, buf) == 0);
	jp->format = CBT_FORMAT_QCOW2;
	jp->sync_bitmap = true;
	snprintf(jp->backing, sizeof(jp->backing), "full.raw");
	tpath(jp->target, sizeof(jp->target), "inc.qcow2");
	CHECK(cbt_job_backup_start(jp, &id, &why) == 0, "%s", why ? why : "");
	CHECK(cbt_job_running_on(filt) || cbt_job_wait(id, 0) == 0);
	CHECK(cbt_job_wait(id, 20000) == 0);
	CHECK(cbt_job_get(id, &info) == 0 && info.state == CBT_JOB_COMPLETED &&
	      info.bytes_total == 2 * 64 * KIB, "%s %s %llu",
	      cbt_job_state_name(info.state), info.error,
	      (unsigned long long)info.bytes_total);
	if (system("qemu-img --version >/dev/null 2>&1") == 0) {
		snprintf(cmd, sizeof(cmd), "cd '%s' && qemu-img check -q inc.qcow2 && "
			 "qemu-img compare -q inc.qcow2 src.img", tmpdir);
		CHECK(system(cmd) == 0, "the chain restores the LUN");
	}
	CHECK(cbt_job_dismiss(id) == 0);

	/* refusals */
	jp->sync_bitmap = true;
	snprintf(jp->bitmap, sizeof(jp->bitmap), "nope");
	CHECK(cbt_job_backup_start(jp, &id, &why) == -ENOENT && why);
	jp->bitmap[0] = 0;
	CHECK(cbt_job_backup_start(jp, &id, &why) == -EINVAL && why);

	cbt_filter_set_bitmaps(filt, NULL);
	stack_close();
	close_be(file);
	cbt_set_free(set);
	free(jp);
	free(buf);
}

/* ---- writes in flight at the point in time ---- */

static struct probe *async_w;
static bool async_w_waited;

static int fake_drain_wait(void *arg)
{
	(void)arg;
	/* the write that passed the node before the hook lands */
	async_w_waited = true;
	return sem_wait_secs(&async_w->sem, 10) ? -ETIMEDOUT : 0;
}

static int fake_drain_timeout(void *arg)
{
	(void)arg;
	return -ETIMEDOUT;	/* e.g. a store that does not answer in time */
}

static bool dest_has(const char *path, uint64_t off, int val, size_t len)
{
	char *b = abuf(len, 0);
	FILE *f = fopen(path, "rb");
	bool ok = f && fseek(f, (long)off, SEEK_SET) == 0 &&
		  fread(b, 1, len, f) == len && all_bytes(b, len, val);

	if (f)
		fclose(f);
	free(b);
	return ok;
}

/* A job starting while the tracking node is already in the stack: a
 * write W that passed it just before the hook went in is still on its
 * way to the store (delayed 400 ms below the node).  The background copy
 * must not read W's chunk before W landed, or the image misses W while
 * the bitmap forgets it.  And when the drain times out, every chunk the
 * job copies stays dirty. */
static void test_drain_in_flight(void)
{
	struct cbt_job_params *jp = calloc(1, sizeof(*jp));
	struct backend *file = open_file("pit.img", 4 * MIB, true);
	struct cbt_set *set;
	struct cbt_bitmap *b;
	struct cbt_job_info info;
	struct probe pr = { 0 };
	char *buf = abuf(64 * KIB, 0x11), *wbuf = abuf(64 * KIB, 0x22);
	const char *why;
	unsigned id;

	stack_open(file);
	CHECK(cbt_set_new(NULL, filt->size, &set, &why) == 0);
	cbt_filter_set_bitmaps(filt, set);
	CHECK(cbt_set_add(set, "b", 64 * KIB, false, true) == 0);
	b = cbt_set_find(set, "b");
	CHECK(run_io(filt, BE_OP_WRITE, 1 * MIB, 64 * KIB, buf) == 0);
	CHECK(cbt_set_clear(set, "b") == 0);

	for (int round = 0; round < 2; round++) {
		CHECK(fault_be->ops->set_param(fault_be, "fault",
					       "errno=none:latency=400:ops=w") == 0);
		memset(&pr, 0, sizeof(pr));
		sem_init(&pr.sem, 0, 0);
		pr.iov.iov_base = wbuf;
		pr.iov.iov_len = 64 * KIB;
		pr.io.op = BE_OP_WRITE;
		pr.io.offset = 1 * MIB;
		pr.io.length = 64 * KIB;
		pr.io.iov = &pr.iov;
		pr.io.iovcnt = 1;
		pr.io.done = probe_done;
		async_w = &pr;
		reactor_call(R, probe_submit, &pr);
		usleep(50000);	/* W is past the node, waiting below it */
		CHECK(cbt_bitmap_test(b, 1 * MIB), "W was tracked");

		memset(jp, 0, sizeof(*jp));
		jp->filter = filt;
		jp->r = R;
		jp->format = CBT_FORMAT_RAW;
		jp->mode = CBT_MODE_ON_SUCCESS;
		snprintf(jp->bitmap, sizeof(jp->bitmap), "b");
		tpath(jp->target, sizeof(jp->target), round ? "pit2.raw" : "pit1.raw");
		jp->drain = round ? fake_drain_timeout : fake_drain_wait;
		CHECK(cbt_job_backup_start(jp, &id, &why) == 0, "%s", why ? why : "");
		CHECK(cbt_job_wait(id, 20000) == 0);
		CHECK(cbt_job_get(id, &info) == 0 && info.state == CBT_JOB_COMPLETED,
		      "%s", info.error);
		if (!async_w_waited)	/* W is done before pr is reused */
			CHECK(sem_wait_secs(&pr.sem, 10) == 0);
		async_w_waited = false;
		if (!round) {
			/* drained: the image has W, so clearing W's bit is right */
			CHECK(dest_has(jp->target, 1 * MIB, 0x22, 64 * KIB),
			      "the image holds the write that was in flight");
			CHECK(!cbt_bitmap_test(b, 1 * MIB));
		} else {
			/* not drained: whatever the image has, W's chunk and
			 * every other chunk copied stay dirty */
			CHECK(cbt_bitmap_test(b, 1 * MIB) || dest_has(jp->target, 1 * MIB,
								     0x22, 64 * KIB));
			CHECK(cbt_bitmap_test(b, 1 * MIB),
			      "early copies keep their chunks dirty");
			CHECK(info.bytes_holes == 0, "undrained: holes are read");
		}
		CHECK(cbt_job_dismiss(id) == 0);
		CHECK(fault_be->ops->set_param(fault_be, "fault", "off") == 0);
		CHECK(cbt_set_clear(set, "b") == 0);
		memset(wbuf, 0x33, 64 * KIB);
	}
	cbt_filter_set_bitmaps(filt, NULL);
	stack_close();
	close_be(file);
	cbt_set_free(set);
	free(jp);
	free(buf);
	free(wbuf);
}

/* ---- online resize of a set ---- */

static void test_set_resize(void)
{
	struct cbt_set *set;
	struct cbt_bitmap *p, *m, **out;
	const char *why;
	uint64_t off, len, size;
	uint8_t *fbuf;
	size_t flen;
	unsigned n;

	tpath(sidecar, sizeof(sidecar), "resize.bitmaps");
	CHECK(cbt_set_new(sidecar, 8 * MIB, &set, &why) == 0);
	CHECK(cbt_set_add(set, "p", 64 * KIB, true, true) == 0);
	CHECK(cbt_set_add(set, "m", 4 * KIB, false, true) == 0);
	cbt_set_mark(set, 1 * MIB, 4096);
	cbt_set_mark(set, 8 * MIB - 4096, 4096);
	CHECK(cbt_set_save(set) == 0);

	/* grow: old bits kept, a write past the old end is tracked */
	CHECK(cbt_set_resize(set, 16 * MIB) == 0);
	p = cbt_set_find(set, "p");
	m = cbt_set_find(set, "m");
	CHECK(p->size == 16 * MIB && m->size == 16 * MIB);
	cbt_set_mark(set, 12 * MIB, 8192);
	off = 0;
	CHECK(cbt_bitmap_next_extent(p, &off, &len, true) && off == 1 * MIB && len == 64 * KIB);
	off += len;
	CHECK(cbt_bitmap_next_extent(p, &off, &len, true) && off == 8 * MIB - 64 * KIB);
	off += len;
	CHECK(cbt_bitmap_next_extent(p, &off, &len, true) && off == 12 * MIB && len == 64 * KIB,
	      "%llu", (unsigned long long)off);
	CHECK(cbt_bitmap_dirty_bytes(m) == 3 * 4096 + 4096);
	CHECK(cbt_set_save(set) == 0);
	CHECK(cbt_sidecar_read_file(sidecar, &fbuf, &flen) == 0);
	CHECK(cbt_sidecar_decode(fbuf, flen, &out, &n, &size, &why) == 0 &&
	      size == 16 * MIB && n == 1 && cbt_bitmap_test(out[0], 12 * MIB),
	      "the sidecar has the new size");
	cbt_bitmap_free(out[0]);
	free(out);
	free(fbuf);

	/* shrink: the bits past the new end go */
	CHECK(cbt_set_resize(set, 4 * MIB) == 0);
	p = cbt_set_find(set, "p");
	CHECK(p->size == 4 * MIB && cbt_bitmap_dirty_bytes(p) == 64 * KIB);
	CHECK(cbt_sidecar_read_file(sidecar, &fbuf, &flen) == 0);
	CHECK(cbt_sidecar_decode(fbuf, flen, &out, &n, &size, &why) == 0 &&
	      size == 4 * MIB && n == 1);
	cbt_bitmap_free(out[0]);
	free(out);
	free(fbuf);
	/* a busy bitmap keeps its size */
	CHECK(cbt_bitmap_freeze(p) == 0);
	CHECK(cbt_set_resize(set, 8 * MIB) == -EBUSY);
	cbt_bitmap_reclaim(p, CBT_MODE_NEVER, false, NULL);
	CHECK(cbt_set_resize(set, 4 * MIB) == 0);
	cbt_set_free(set);
	/* and the sidecar loads at the size it was saved with */
	CHECK(cbt_set_new(sidecar, 4 * MIB, &set, &why) == 0);
	CHECK(cbt_bitmap_dirty_bytes(cbt_set_find(set, "p")) == 64 * KIB);
	cbt_set_free(set);
}

int main(void)
{
	if (harness_start() < 0)
		return 1;
	test_marking_and_intent();
	test_cbw_hook();
	test_backup_job();
	test_drain_in_flight();
	test_set_resize();
	return harness_finish();
}
