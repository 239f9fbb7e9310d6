/* test_backend_file.c - the file, null and fault backends and LUN creation,
 * driven through a real reactor (its io_uring, timers and calls).
 *
 * The backends' .c files are included so their statics (spec parser,
 * private state) are reachable; the archive supplies the reactor, the
 * registry and everything else. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../backends/fault.c"
#include "../../backends/file.c"
#include "../../backends/null.c"
#include "lun.h"
#include "reactor.h"

static int n_pass, n_fail;

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (cond) {                                                   \
			n_pass++;                                             \
		} else {                                                      \
			n_fail++;                                             \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__,         \
				__LINE__, #cond);                             \
			fprintf(stderr, __VA_ARGS__);                         \
			fputc('\n', stderr);                                  \
		}                                                             \
	} while (0)

#define KIB 1024ULL
#define MIB (1024ULL * 1024)

static struct reactor *R;
static char tmpdir[256];

/* ---- running one request on the reactor thread ---- */

struct tio {
	struct be_io io;
	struct backend *be;
	struct iovec iov[4];
	sem_t sem;
	int res;
	int ncalls;
	bool in_submit;
	bool done_in_submit;
	bool done_off_reactor;
};

static void tio_done(struct be_io *io, int res)
{
	struct tio *t = container_of(io, struct tio, io);

	if (t->in_submit)
		t->done_in_submit = true;
	if (reactor_current() != R)
		t->done_off_reactor = true;
	t->res = res;
	t->ncalls++;
	sem_post(&t->sem);
}

static void tio_submit_fn(void *arg)
{
	struct tio *t = arg;

	t->in_submit = true;
	backend_submit(t->be, &t->io, R);
	t->in_submit = false;
}

static int sem_wait_secs(sem_t *s, int secs)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	while (sem_timedwait(s, &ts) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Submit op on the reactor and wait.  buf may be split into two iovecs
 * (split = bytes in the first) to exercise vectors.  Returns res, or
 * -ETIME if no completion came. */
static int run_io_split(struct backend *be, enum be_op op, unsigned flags,
			uint64_t off, uint64_t len, void *buf, uint64_t split)
{
	struct tio t;

	memset(&t, 0, sizeof(t));
	sem_init(&t.sem, 0, 0);
	t.be = be;
	t.io.op = op;
	t.io.flags = flags;
	t.io.offset = off;
	t.io.length = len;
	t.io.done = tio_done;
	if (buf) {
		if (split && split < len) {
			t.iov[0] = (struct iovec){ buf, split };
			t.iov[1] = (struct iovec){ (char *)buf + split, len - split };
			t.io.iovcnt = 2;
		} else {
			t.iov[0] = (struct iovec){ buf, len };
			t.io.iovcnt = 1;
		}
		t.io.iov = t.iov;
	}
	reactor_call(R, tio_submit_fn, &t);
	if (sem_wait_secs(&t.sem, 10) < 0) {
		CHECK(0, "op %d off %llu: no completion in 10 s", op,
		      (unsigned long long)off);
		return -ETIME;	/* t leaks on purpose: it may still complete */
	}
	usleep(1000);		/* let a wrong second completion show up */
	CHECK(t.ncalls == 1, "done() called %d times", t.ncalls);
	CHECK(!t.done_in_submit, "done() ran inside submit()");
	CHECK(!t.done_off_reactor, "done() ran off the reactor thread");
	sem_destroy(&t.sem);
	return t.res;
}

static int run_io(struct backend *be, enum be_op op, uint64_t off,
		  uint64_t len, void *buf)
{
	return run_io_split(be, op, 0, off, len, buf, 0);
}

static void *reactor_thread(void *arg UNUSED)
{
	reactor_run(R);
	return NULL;
}

static void *abuf(size_t len, int fill)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, len))
		abort();
	memset(p, fill, len);
	return p;
}

static bool all_bytes(const void *p, size_t len, int val)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i] != (unsigned char)val)
			return false;
	return true;
}

static struct backend *open_be(const struct backend_ops *ops,
			       const struct backend_params *p, int *err,
			       const char **msg)
{
	struct backend *be = calloc(1, sizeof(*be));

	be->ops = ops;
	*msg = NULL;
	*err = ops->open(be, p, msg);
	if (*err) {
		free(be);
		return NULL;
	}
	return be;
}

static void close_be(struct backend *be)
{
	if (!be)
		return;
	be->ops->close(be);
	free(be);
}

static void tpath(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", tmpdir, name);
}

/* ---- null ---- */

static void test_null(void)
{
	struct backend_params p = { .block_size = 512, .direct = true };
	const struct backend_ops *ops = backend_find("null");
	const char *msg;
	struct backend *be;
	uint64_t ext = 0;
	char *buf = abuf(64 * KIB, 0xaa);
	int err;

	CHECK(ops == &be_null_ops, "backend_find(null)");
	CHECK(backend_find("file") == &be_file_ops, "backend_find(file)");
	CHECK(backend_find("fault") == &be_fault_ops, "backend_find(fault)");
	CHECK(backend_find("nope") == NULL, "unknown name");
	CHECK(backend_find(NULL) == NULL, "NULL name");

	be = open_be(ops, &p, &err, &msg);
	CHECK(be && be->size == 1ULL << 30, "null default size 1 GiB");
	if (!be)
		return;
	CHECK(be->direct, "null counts as direct");
	CHECK(run_io(be, BE_OP_READ, 4096, 64 * KIB, buf) == 0, "null read");
	CHECK(all_bytes(buf, 64 * KIB, 0), "null read returns zeroes");
	CHECK(run_io(be, BE_OP_WRITE, 0, 64 * KIB, buf) == 0, "null write");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "null flush");
	CHECK(run_io(be, BE_OP_READ, be->size, 512, buf) == -EINVAL,
	      "null read past the end");
	CHECK(be->ops->block_status(be, 0, 8192, &ext) == 0 && ext == 8192,
	      "null block_status: hole");
	close_be(be);

	p.size = 8 * MIB;
	p.readonly = true;
	be = open_be(ops, &p, &err, &msg);
	CHECK(be && be->size == 8 * MIB, "null explicit size");
	if (be) {
		CHECK(run_io(be, BE_OP_WRITE, 0, 4096, buf) == -EROFS,
		      "null read-only write");
		close_be(be);
	}
	p.size = 1000;
	p.readonly = false;
	be = open_be(ops, &p, &err, &msg);
	CHECK(!be && err == -EINVAL, "null size not a multiple of block size");
	free(buf);
}

/* ---- file: creation ---- */

static void test_file_create(void)
{
	struct backend_params p = { .block_size = 512, .direct = true };
	char path[512];
	const char *msg;
	struct backend *be;
	struct stat st;
	int err;

	tpath(path, sizeof(path), "nodir/sub/disk.img");
	p.path = path;
	p.size = 16 * MIB;
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(!be && err == -ENOENT, "missing directory: err %d", err);
	CHECK(msg && strstr(msg, "directory"), "message names the directory: %s",
	      msg ? msg : "(null)");

	tpath(path, sizeof(path), "absent.img");
	p.size = 0;
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(!be && err == -ENOENT, "absent file without size: %d", err);
	CHECK(access(path, F_OK) != 0, "absent file not created without size");

	tpath(path, sizeof(path), "sparse.img");
	p.size = 16 * MIB;
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(be != NULL, "create sparse file: %d %s", err, msg ? msg : "");
	if (!be)
		return;
	CHECK(stat(path, &st) == 0 && st.st_size == (off_t)(16 * MIB),
	      "created with the requested size");
	CHECK(st.st_blocks == 0, "created sparse (%lld blocks)",
	      (long long)st.st_blocks);
	CHECK((st.st_mode & 0777) == BE_FILE_CREATE_MODE, "mode 0600");
	CHECK(be->size == 16 * MIB && be->direct, "size and direct reported");
	CHECK(fcntl(((struct be_file *)be->priv)->fd, F_GETFL) & O_DIRECT,
	      "opened O_DIRECT");
	close_be(be);

	/* Reopen without a size: the file's own size. */
	p.size = 0;
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(be && be->size == 16 * MIB, "reopen uses the file's size");
	close_be(be);

	/* A larger configured size grows the file (sparse). */
	p.size = 32 * MIB;
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(be && be->size == 32 * MIB, "configured size grows the file");
	CHECK(stat(path, &st) == 0 && st.st_size == (off_t)(32 * MIB),
	      "file grown to 32 MiB");
	close_be(be);

	/* Buffered + O_SYNC through the options string. */
	p.size = 0;
	p.direct = false;
	p.opts = "sync";
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(be && !be->direct, "buffered open");
	if (be) {
		int fl = fcntl(((struct be_file *)be->priv)->fd, F_GETFL);

		CHECK(!(fl & O_DIRECT) && (fl & O_SYNC), "O_SYNC, no O_DIRECT");
	}
	close_be(be);
	p.opts = "bogus";
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(!be && err == -EINVAL, "unknown option refused");

	/* Not a file or block device. */
	p.opts = NULL;
	p.path = tmpdir;
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(!be, "a directory is refused");
}

/* ---- file: I/O ---- */

static struct backend *open_file(const char *name, uint64_t size, bool direct)
{
	struct backend_params p = {
		.block_size = 512, .direct = direct, .size = size,
	};
	static char path[512];
	const char *msg;
	struct backend *be;
	int err;

	tpath(path, sizeof(path), name);
	p.path = path;
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(be != NULL, "open %s: %d %s", name, err, msg ? msg : "");
	return be;
}

static struct backend *open_path(const char *path, uint64_t size, bool direct)
{
	struct backend_params p = {
		.path = path, .block_size = 512, .direct = direct, .size = size,
	};
	const char *msg;
	int err;
	struct backend *be = open_be(&be_file_ops, &p, &err, &msg);

	CHECK(be != NULL, "open %s: %d %s", path, err, msg ? msg : "");
	return be;
}

static void test_file_rw(void)
{
	struct backend *be = open_file("rw.img", 16 * MIB, true);
	size_t len = 256 * KIB;
	char *w = abuf(len, 0), *r = abuf(len, 0);

	if (!be)
		return;
	for (size_t i = 0; i < len; i++)
		w[i] = (char)(i * 7 + 3);
	CHECK(run_io(be, BE_OP_WRITE, 1 * MIB, len, w) == 0, "direct write");
	CHECK(run_io(be, BE_OP_READ, 1 * MIB, len, r) == 0, "direct read");
	CHECK(memcmp(w, r, len) == 0, "round trip");

	/* Two-element iovec, FUA. */
	memset(r, 0, len);
	CHECK(run_io_split(be, BE_OP_WRITE, BE_IO_FUA, 4 * MIB, len, w, 12288) == 0,
	      "FUA vectored write");
	CHECK(run_io_split(be, BE_OP_READ, 0, 4 * MIB, len, r, 4096) == 0,
	      "vectored read");
	CHECK(memcmp(w, r, len) == 0, "vectored round trip");

	/* iovec longer than length: only length is transferred. */
	{
		struct iovec big = { r, len };
		struct tio t;

		memset(&t, 0, sizeof(t));
		memset(r, 0x55, len);
		sem_init(&t.sem, 0, 0);
		t.be = be;
		t.io.op = BE_OP_READ;
		t.io.offset = 4 * MIB;
		t.io.length = 8192;
		t.io.iov = &big;
		t.io.iovcnt = 1;
		t.io.done = tio_done;
		reactor_call(R, tio_submit_fn, &t);
		CHECK(sem_wait_secs(&t.sem, 10) == 0 && t.res == 0,
		      "read with a longer iovec");
		CHECK(memcmp(r, w, 8192) == 0 && all_bytes(r + 8192, 4096, 0x55),
		      "only length bytes transferred");
		sem_destroy(&t.sem);
	}

	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "flush");
	CHECK(run_io(be, BE_OP_READ, 16 * MIB - 4096, 8192, r) == -EINVAL,
	      "read past the end of the LUN");
	CHECK(run_io(be, BE_OP_READ, 100, 512, r) == -EINVAL,
	      "unaligned O_DIRECT offset refused");
	close_be(be);
	free(w);
	free(r);
}

static void test_file_short(void)
{
	struct backend *be = open_file("short.img", 64 * KIB, true);
	char path[512];
	char *r = abuf(16 * KIB, 0x11);

	if (!be)
		return;
	/* The file shrinks under the open LUN (resize, admin error). */
	tpath(path, sizeof(path), "short.img");
	CHECK(truncate(path, 4096) == 0, "truncate");
	CHECK(run_io(be, BE_OP_READ, 0, 4096, r) == 0, "read inside the file");
	CHECK(run_io(be, BE_OP_READ, 0, 8192, r) == -EIO,
	      "read across EOF is an error, not a short success");
	CHECK(run_io(be, BE_OP_READ, 16 * KIB, 4096, r) == -EIO,
	      "read beyond EOF is an error");
	CHECK(truncate(path, 4096 + 1000) == 0, "truncate unaligned");
	CHECK(run_io(be, BE_OP_READ, 0, 8192, r) == -EIO,
	      "read across an unaligned EOF is an error");
	close_be(be);

	/* Buffered: a short read is continued, then EOF makes it fail. */
	be = open_file("short.img", 0, false);
	if (!be)
		return;
	CHECK(truncate(path, 2048) == 0, "truncate again");
	CHECK(run_io(be, BE_OP_READ, 0, 4096, r) == -EIO, "buffered short read");
	close_be(be);
	free(r);
}

static void test_file_unmap(void)
{
	struct backend *be = open_file("unmap.img", 8 * MIB, true);
	size_t len = 128 * KIB;
	char *w = abuf(len, 0x5a), *r = abuf(len, 0);
	uint64_t ext = 0;
	int st;

	if (!be)
		return;
	CHECK(run_io(be, BE_OP_WRITE, 0, len, w) == 0, "write pattern");
	CHECK(be->ops->block_status(be, 0, len, &ext) == 1 && ext == len,
	      "block_status: written range is data (ext %llu)",
	      (unsigned long long)ext);
	CHECK(be->ops->block_status(be, 1 * MIB, 4096, &ext) == 0 && ext == 4096,
	      "block_status: untouched range is a hole");

	CHECK(run_io(be, BE_OP_UNMAP, 0, 64 * KIB, NULL) == 0, "unmap");
	CHECK(run_io(be, BE_OP_READ, 0, len, r) == 0, "read after unmap");
	CHECK(all_bytes(r, 64 * KIB, 0), "unmapped range reads zero");
	CHECK(all_bytes(r + 64 * KIB, 64 * KIB, 0x5a), "rest kept");
	st = be->ops->block_status(be, 0, len, &ext);
	CHECK(st == 0 && ext == 64 * KIB, "block_status: punched hole (%d, %llu)",
	      st, (unsigned long long)ext);
	st = be->ops->block_status(be, 64 * KIB, 1 * MIB, &ext);
	CHECK(st == 1 && ext == 64 * KIB, "block_status: data after the hole (%d, %llu)",
	      st, (unsigned long long)ext);
	st = be->ops->block_status(be, 7 * MIB, 8 * MIB, &ext);
	CHECK(st == 0 && ext == 1 * MIB, "block_status: tail hole clipped to size");
	CHECK(be->ops->block_status(be, 8 * MIB, 4096, &ext) == -EINVAL,
	      "block_status past the end");

	/* WRITE ZEROES */
	CHECK(run_io(be, BE_OP_WRITE, 0, len, w) == 0, "rewrite pattern");
	CHECK(run_io(be, BE_OP_WRITE_ZEROES, 8 * KIB, 16 * KIB, NULL) == 0,
	      "write zeroes");
	CHECK(run_io(be, BE_OP_READ, 0, len, r) == 0, "read after write zeroes");
	CHECK(all_bytes(r, 8 * KIB, 0x5a) && all_bytes(r + 8 * KIB, 16 * KIB, 0) &&
	      all_bytes(r + 24 * KIB, len - 24 * KIB, 0x5a),
	      "write zeroes zeroed exactly its range");

	/* The last resort: real zero writes when fallocate is refused. */
	{
		struct be_file *f = be->priv;

		atomic_store(&f->no_punch, true);
		atomic_store(&f->no_zero_range, true);
		CHECK(run_io(be, BE_OP_WRITE, 0, len, w) == 0, "rewrite");
		CHECK(run_io(be, BE_OP_UNMAP, 4 * KIB, 100 * KIB, NULL) == 0,
		      "unmap by zero writes");
		CHECK(run_io(be, BE_OP_READ, 0, len, r) == 0, "read back");
		CHECK(all_bytes(r, 4 * KIB, 0x5a) &&
		      all_bytes(r + 4 * KIB, 100 * KIB, 0) &&
		      all_bytes(r + 104 * KIB, len - 104 * KIB, 0x5a),
		      "zero-write fallback zeroed exactly its range");
		CHECK(run_io(be, BE_OP_WRITE_ZEROES, 0, 1 * MIB, NULL) == 0,
		      "write zeroes larger than the zero chunk");
		CHECK(run_io(be, BE_OP_READ, 0, len, r) == 0 &&
		      all_bytes(r, len, 0), "zeroed");
	}
	close_be(be);
	free(w);
	free(r);
}

static void test_file_flush_latch(void)
{
	struct backend *be = open_file("buffered.img", 4 * MIB, false);
	char *w = abuf(4096, 1);

	if (!be)
		return;
	CHECK(!be->direct, "buffered");
	CHECK(run_io(be, BE_OP_WRITE, 0, 4096, w) == 0, "buffered write");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "buffered flush");
	/* A real fdatasync failure sets the latch (see fusefail tests);
	 * here it is set by hand to check that it sticks. */
	be->flush_failed = true;
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -EIO, "latched flush fails");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -EIO, "and keeps failing");
	CHECK(run_io(be, BE_OP_WRITE, 0, 4096, w) == 0, "writes still go on");
	close_be(be);

	be = open_file("direct.img", 4 * MIB, true);
	if (!be)
		return;
	be->flush_failed = true;	/* ignored on a direct LUN */
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "direct LUN: no latch");
	close_be(be);
	free(w);
}

/* ---- fault spec parsing ---- */

static void test_fault_parse(void)
{
	static const char *const good[] = {
		"off", "", "none", "  off", "eio", "EIO", "enospc",
		"errno=ETIMEDOUT", "errno=5", "errno=none,latency=10",
		"latency=250", "eio,latency=10",
		"errno=EIO,ops=w|flush,lba=10-20,count=3",
		"ops=r", "ops=rw", "ops=read+write", "ops=all", "ops=u|z|f",
		"lba=7", "lba=0-0", "skip=2,count=1", "count=0",
		"probability=0", "probability=1", "probability=0.25",
		"duration=20000", "EIO,OPS=W", "eio,,", "eio:ops=w:lba=0-99",
		"errno=EREMOTEIO", "ehostunreach", "errno=ENOLINK:count=1",
	};
	static const char *const bad[] = {
		"bogus", "errno=EFOO", "errno=0", "errno=99999", "ops=",
		"ops=x", "ops=r|x", "lba=20-10", "lba=abc", "lba=-5", "lba=1-",
		"count=-1", "count=1x", "probability=1.5", "probability=-0.1",
		"probability=abc", "probability=", "errno=none", "eio,enospc",
		"eio,errno=EIO", "latency=99999999999", "latency=x", "key=value",
		"=", "none,eio", "duration=", "eio:enospc", "errno=ENOTANERRNO",
	};
	struct fault_spec s, s2;
	char buf[FAULT_SPEC_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		int rc = fault_spec_parse(good[i], &s);

		CHECK(rc == 0, "valid spec \"%s\" refused", good[i]);
		if (rc)
			continue;
		/* round trip through the canonical form */
		fault_spec_format(&s, buf, sizeof(buf));
		memset(&s2, 0xff, sizeof(s2));
		rc = fault_spec_parse(buf, &s2);
		CHECK((rc == 0 && s.enabled == s2.enabled && s.err == s2.err &&
		       s.ops == s2.ops && s.has_lba == s2.has_lba &&
		       s.lba_start == s2.lba_start && s.lba_end == s2.lba_end &&
		       s.skip == s2.skip && s.count == s2.count &&
		       s.probability == s2.probability &&
		       s.latency_ms == s2.latency_ms &&
		       s.duration_ms == s2.duration_ms),
		      "round trip of \"%s\" via \"%s\"", good[i], buf);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		CHECK(fault_spec_parse(bad[i], &s) == -EINVAL,
		      "invalid spec \"%s\" accepted", bad[i]);

	CHECK(fault_spec_parse("off", &s) == 0 && !s.enabled, "off disables");
	CHECK(fault_spec_parse("eio", &s) == 0 && s.enabled && s.err == EIO &&
	      s.ops == FAULT_OP_ALL && s.probability == 1.0 && !s.has_lba,
	      "eio defaults");
	CHECK(fault_spec_parse("latency=250", &s) == 0 && s.err == 0 &&
	      s.latency_ms == 250, "latency alone only delays");
	CHECK(fault_spec_parse("enospc,ops=w|flush,lba=10-20,count=3", &s) == 0 &&
	      s.err == ENOSPC && s.ops == (FAULT_OP_WRITE | FAULT_OP_FLUSH) &&
	      s.has_lba && s.lba_start == 10 && s.lba_end == 20 && s.count == 3,
	      "full spec fields");
	fault_spec_parse("errno=EIO,ops=w|flush,lba=10-20,count=3", &s);
	fault_spec_format(&s, buf, sizeof(buf));
	CHECK(strcmp(buf, "errno=EIO:ops=write|flush:lba=10-20:count=3") == 0,
	      "canonical form: %s", buf);
}

/* ---- fault injection ---- */

static struct backend *open_fault(struct backend *inner, const char *spec,
				  uint32_t bs)
{
	struct backend_params p = { .block_size = bs, .opts = spec,
				    .inner = inner };
	const char *msg;
	int err;
	struct backend *be = open_be(&be_fault_ops, &p, &err, &msg);

	CHECK(be != NULL, "open fault \"%s\": %d", spec ? spec : "", err);
	return be;
}

static uint64_t fault_injected(struct backend *be)
{
	struct fault_state *f = be->priv;
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->injected;
	pthread_mutex_unlock(&f->lock);
	return n;
}

static void test_fault_inject(void)
{
	struct backend_params np = { .block_size = 512, .size = 64 * MIB };
	const char *msg;
	int err;
	struct backend *null = open_be(&be_null_ops, &np, &err, &msg);
	struct backend *be = open_fault(null, NULL, 512);
	char *buf = abuf(64 * KIB, 0);
	char desc[512];
	int fails;

	if (!null || !be)
		return;
	CHECK(be->size == null->size && be->inner == null && be->direct,
	      "fault mirrors its inner backend");
	CHECK(!atomic_load(&((struct fault_state *)be->priv)->active),
	      "idle by default");
	CHECK(run_io(be, BE_OP_WRITE, 0, 4096, buf) == 0, "idle pass-through");

	/* ops + lba range + count */
	CHECK(be->ops->set_param(be, "fault", "eio:ops=w:lba=8-15:count=2") == 0,
	      "set spec");
	CHECK(run_io(be, BE_OP_WRITE, 0, 4096, buf) == 0, "write before range");
	CHECK(run_io(be, BE_OP_WRITE, 16 * 512, 4096, buf) == 0,
	      "write after range");
	CHECK(run_io(be, BE_OP_READ, 8 * 512, 512, buf) == 0, "read not matched");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "flush not matched");
	CHECK(run_io(be, BE_OP_WRITE, 4 * 512, 8 * 512, buf) == -EIO,
	      "write overlapping range start fails");
	CHECK(run_io(be, BE_OP_WRITE, 15 * 512, 512, buf) == -EIO,
	      "write on range end fails");
	CHECK(run_io(be, BE_OP_WRITE, 10 * 512, 512, buf) == 0,
	      "count exhausted: passes");
	CHECK(fault_injected(be) == 2, "two injected");
	be->ops->describe(be, desc, sizeof(desc));
	CHECK(strstr(desc, "fault=errno=EIO:ops=write:lba=8-15:count=2") &&
	      strstr(desc, "injected=2") && strstr(desc, "null"),
	      "describe: %s", desc);

	/* lba in 4096-byte blocks */
	{
		struct backend *b4 = open_fault(null, "eio,lba=2", 4096);

		if (b4) {
			CHECK(run_io(b4, BE_OP_READ, 4096, 4096, buf) == 0,
			      "4k block 1 passes");
			CHECK(run_io(b4, BE_OP_READ, 8192, 4096, buf) == -EIO,
			      "4k block 2 fails");
			close_be(b4);
		}
	}

	/* errno choice, flush, skip */
	CHECK(be->ops->set_param(be, "fault", "enospc,ops=flush,skip=2") == 0,
	      "set flush spec");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "skip 1");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "skip 2");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -ENOSPC, "third flush fails");
	CHECK(run_io(be, BE_OP_WRITE, 0, 512, buf) == 0, "write not matched");
	CHECK(!null->flush_failed, "an injected flush error does not latch");

	/* unmap / write zeroes */
	CHECK(be->ops->set_param(be, "fault", "etimedout,ops=u|z") == 0, "set u|z");
	CHECK(run_io(be, BE_OP_UNMAP, 0, 4096, NULL) == -ETIMEDOUT, "unmap fails");
	CHECK(run_io(be, BE_OP_WRITE_ZEROES, 0, 4096, NULL) == -ETIMEDOUT,
	      "write zeroes fails");
	CHECK(run_io(be, BE_OP_READ, 0, 4096, buf) == 0, "read passes");

	/* a bad spec leaves the current one in place */
	CHECK(be->ops->set_param(be, "fault", "ops=bogus") == -EINVAL,
	      "bad spec refused");
	CHECK(run_io(be, BE_OP_UNMAP, 0, 4096, NULL) == -ETIMEDOUT,
	      "old spec still active");
	CHECK(be->ops->set_param(be, "nosuchkey", "1") == -ENOENT,
	      "unknown key: -ENOENT");

	/* probability 0 and 1, and something in between */
	CHECK(be->ops->set_param(be, "fault", "eio,probability=0") == 0, "p=0");
	fails = 0;
	for (int i = 0; i < 200; i++)
		fails += run_io(be, BE_OP_READ, 0, 512, buf) != 0;
	CHECK(fails == 0, "probability 0 never fails (%d)", fails);
	CHECK(be->ops->set_param(be, "fault", "eio,probability=1") == 0, "p=1");
	fails = 0;
	for (int i = 0; i < 200; i++)
		fails += run_io(be, BE_OP_READ, 0, 512, buf) == -EIO;
	CHECK(fails == 200, "probability 1 always fails (%d)", fails);
	CHECK(be->ops->set_param(be, "fault", "eio,probability=0.5") == 0, "p=.5");
	fails = 0;
	for (int i = 0; i < 400; i++)
		fails += run_io(be, BE_OP_READ, 0, 512, buf) == -EIO;
	CHECK(fails > 120 && fails < 280, "probability 0.5: %d of 400", fails);

	/* latency only, latency + error */
	CHECK(be->ops->set_param(be, "fault", "latency=100,ops=r") == 0, "latency");
	{
		uint64_t t0 = clock_ms();

		CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == 0, "delayed read passes");
		CHECK(clock_ms() - t0 >= 95, "read delayed (%llu ms)",
		      (unsigned long long)(clock_ms() - t0));
		t0 = clock_ms();
		CHECK(run_io(be, BE_OP_WRITE, 0, 512, buf) == 0, "write not delayed");
		CHECK(clock_ms() - t0 < 95, "write fast");
	}
	CHECK(be->ops->set_param(be, "fault", "eio,latency=60") == 0, "eio+latency");
	{
		uint64_t t0 = clock_ms();

		CHECK(run_io(be, BE_OP_WRITE, 0, 512, buf) == -EIO,
		      "delayed failure");
		CHECK(clock_ms() - t0 >= 55, "failure delayed");
	}

	/* duration: a fixed-length outage */
	CHECK(be->ops->set_param(be, "fault", "eio,duration=150") == 0, "duration");
	CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == -EIO, "inside the outage");
	usleep(250 * 1000);
	CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == 0, "after the outage");
	CHECK(!atomic_load(&((struct fault_state *)be->priv)->active),
	      "expired spec back on the idle path");
	be->ops->describe(be, desc, sizeof(desc));
	CHECK(strstr(desc, "fault=off"), "describe after expiry: %s", desc);

	CHECK(be->ops->set_param(be, "fault", "off") == 0, "off");
	CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == 0, "off passes");
	be->ops->describe(be, desc, sizeof(desc));
	CHECK(strstr(desc, "fault=off injected=0 total="), "describe off: %s", desc);

	close_be(be);
	close_be(null);
	free(buf);
}

/* Management thread flips the spec while the reactor submits. */
struct flip_arg {
	struct backend *be;
	atomic_bool stop;
};

static void *flipper(void *arg)
{
	struct flip_arg *a = arg;
	static const char *const specs[] = {
		"eio", "off", "enospc,ops=w", "off", "eio,probability=0.5",
	};

	for (unsigned i = 0; !atomic_load(&a->stop); i++) {
		a->be->ops->set_param(a->be, "fault", specs[i % ARRAY_SIZE(specs)]);
		usleep(100);
	}
	return NULL;
}

static void test_fault_concurrent(void)
{
	struct backend *be = open_file("conc.img", 4 * MIB, true);
	struct backend *fb = be ? open_fault(be, NULL, 512) : NULL;
	struct flip_arg a = { .be = fb };
	char *buf = abuf(4096, 3);
	pthread_t th;
	int ok = 0, bad = 0, other = 0;

	if (!fb)
		return;
	pthread_create(&th, NULL, flipper, &a);
	for (int i = 0; i < 1000; i++) {
		int rc = run_io(fb, i & 1 ? BE_OP_READ : BE_OP_WRITE,
				(uint64_t)(i % 64) * 4096, 4096, buf);

		if (rc == 0)
			ok++;
		else if (rc == -EIO || rc == -ENOSPC)
			bad++;
		else
			other++;
	}
	atomic_store(&a.stop, true);
	pthread_join(th, NULL);
	CHECK(other == 0 && ok + bad == 1000,
	      "concurrent spec changes: %d ok, %d injected, %d other", ok, bad,
	      other);
	close_be(fb);
	close_be(be);
	free(buf);
}

/* ---- a block device (a loop device over a file; skipped without root) ---- */

static void test_blockdev(void)
{
	char img[300], cmd[400], dev[64] = "";
	struct backend *be;
	char *w = abuf(64 * KIB, 0x77), *r = abuf(64 * KIB, 0);
	uint64_t ext;
	FILE *p;

	tpath(img, sizeof(img), "loop.img");
	if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) {
		printf("SKIP block device tests: needs root and loop devices\n");
		goto out;
	}
	p = fopen(img, "w");
	if (!p || ftruncate(fileno(p), (off_t)(16 * MIB)) != 0) {
		if (p)
			fclose(p);
		goto out;
	}
	fclose(p);
	snprintf(cmd, sizeof(cmd), "losetup -f --show '%s' 2>/dev/null", img);
	p = popen(cmd, "r");
	if (!p || !fgets(dev, sizeof(dev), p)) {
		if (p)
			pclose(p);
		printf("SKIP block device tests: losetup failed\n");
		goto out;
	}
	pclose(p);
	dev[strcspn(dev, "\n")] = '\0';

	be = open_path(dev, 0, true);
	if (be) {
		struct be_file *f = be->priv;

		CHECK(f->blockdev && be->size == 16 * MIB,
		      "block device size from BLKGETSIZE64 (%llu)",
		      (unsigned long long)be->size);
		CHECK(run_io(be, BE_OP_WRITE, 1 * MIB, 64 * KIB, w) == 0,
		      "blockdev write");
		CHECK(run_io(be, BE_OP_READ, 1 * MIB, 64 * KIB, r) == 0 &&
		      memcmp(w, r, 64 * KIB) == 0, "blockdev round trip");
		CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "blockdev flush");
		CHECK(run_io(be, BE_OP_UNMAP, 1 * MIB, 32 * KIB, NULL) == 0,
		      "blockdev unmap");
		CHECK(run_io(be, BE_OP_WRITE_ZEROES, 1 * MIB + 48 * KIB, 8 * KIB,
			     NULL) == 0, "blockdev write zeroes");
		CHECK(run_io(be, BE_OP_READ, 1 * MIB, 64 * KIB, r) == 0 &&
		      all_bytes(r, 32 * KIB, 0) &&
		      all_bytes(r + 32 * KIB, 16 * KIB, 0x77) &&
		      all_bytes(r + 48 * KIB, 8 * KIB, 0) &&
		      all_bytes(r + 56 * KIB, 8 * KIB, 0x77),
		      "blockdev unmap / write zeroes read back");
		CHECK(be->ops->block_status(be, 0, 4096, &ext) == 1 && ext == 4096,
		      "blockdev block_status: mapped");
		close_be(be);
	}
	be = open_path(dev, 8 * MIB, true);
	CHECK(be && be->size == 8 * MIB, "blockdev: smaller configured size");
	close_be(be);
	{
		struct backend_params bp = {
			.path = dev, .block_size = 512, .direct = true,
			.size = 32 * MIB,
		};
		const char *msg;
		int err;

		be = open_be(&be_file_ops, &bp, &err, &msg);
		CHECK(!be && err == -EINVAL, "blockdev: size beyond the device");
		close_be(be);
	}
	snprintf(cmd, sizeof(cmd), "losetup -d '%s'", dev);
	if (system(cmd) != 0)
		fprintf(stderr, "could not detach %s\n", dev);
out:
	free(w);
	free(r);
}

/* ---- real kernel errors through fusefail (skipped when unavailable) ----
 *
 * build/tools/fusefail mirrors a directory and fails reads, writes or
 * flushes on command, so these errors come from the kernel through
 * io_uring exactly as a failing SAN's would. */

struct fuse_env {
	char src[300], mnt[300], ctl[300];
	pid_t pid;
};

static void fuse_set(struct fuse_env *fe, const char *rules)
{
	char tmp[320];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", fe->ctl);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "%s\n", rules);
	fclose(f);
	rename(tmp, fe->ctl);
	usleep(30 * 1000);	/* fusefail re-reads it every few ms */
}

static bool fuse_mounted(const char *mnt)
{
	struct stat a, b;
	char parent[320];

	snprintf(parent, sizeof(parent), "%s/..", mnt);
	return stat(mnt, &a) == 0 && stat(parent, &b) == 0 &&
	       a.st_dev != b.st_dev;
}

static int fuse_start(struct fuse_env *fe, const char *bin)
{
	snprintf(fe->src, sizeof(fe->src), "%s/fuse-src", tmpdir);
	snprintf(fe->mnt, sizeof(fe->mnt), "%s/fuse-mnt", tmpdir);
	snprintf(fe->ctl, sizeof(fe->ctl), "%s/fuse-ctl", tmpdir);
	mkdir(fe->src, 0700);
	mkdir(fe->mnt, 0700);
	fuse_set(fe, "ok");
	fe->pid = fork();
	if (fe->pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execl(bin, bin, fe->src, fe->mnt, fe->ctl, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		int st;

		if (fuse_mounted(fe->mnt))
			return 0;
		if (waitpid(fe->pid, &st, WNOHANG) == fe->pid) {
			fe->pid = 0;
			return -1;
		}
		usleep(10 * 1000);
	}
	return -1;
}

static void fuse_stop(struct fuse_env *fe)
{
	char cmd[800];

	snprintf(cmd, sizeof(cmd), "fusermount3 -u '%s' 2>/dev/null || "
		 "fusermount3 -uz '%s' 2>/dev/null", fe->mnt, fe->mnt);
	if (system(cmd) != 0)
		fprintf(stderr, "could not unmount %s\n", fe->mnt);
	if (fe->pid > 0) {
		for (int i = 0; i < 200; i++) {
			if (waitpid(fe->pid, NULL, WNOHANG) == fe->pid) {
				fe->pid = 0;
				break;
			}
			usleep(10 * 1000);
		}
		if (fe->pid > 0) {
			kill(fe->pid, SIGKILL);
			waitpid(fe->pid, NULL, 0);
		}
	}
}

static void test_fuse(void)
{
	const char *bdir = getenv("HOLDFAST_BUILD") ? getenv("HOLDFAST_BUILD")
						     : "build";
	char bin[300], path[400];
	struct fuse_env fe = { .pid = 0 };
	struct backend *be;
	char *buf = abuf(64 * KIB, 0x42);

	snprintf(bin, sizeof(bin), "%s/tools/fusefail", bdir);
	if (access(bin, X_OK) != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
		printf("SKIP fuse tests: %s or /dev/fuse not available\n", bin);
		free(buf);
		return;
	}
	if (fuse_start(&fe, bin) < 0) {
		printf("SKIP fuse tests: fusefail did not mount\n");
		fuse_stop(&fe);
		free(buf);
		return;
	}

	snprintf(path, sizeof(path), "%s/direct.img", fe.mnt);
	be = open_path(path, 4 * MIB, true);
	if (be) {
		CHECK(run_io(be, BE_OP_WRITE, 0, 64 * KIB, buf) == 0,
		      "fuse: direct write");
		fuse_set(&fe, "write=EIO");
		CHECK(run_io(be, BE_OP_WRITE, 0, 64 * KIB, buf) == -EIO,
		      "fuse: real EIO on write");
		fuse_set(&fe, "write=ENOSPC");
		CHECK(run_io(be, BE_OP_WRITE, 0, 4096, buf) == -ENOSPC,
		      "fuse: real ENOSPC on write");
		fuse_set(&fe, "read=EIO");
		CHECK(run_io(be, BE_OP_READ, 0, 4096, buf) == -EIO,
		      "fuse: real EIO on read");
		fuse_set(&fe, "flush=EIO");
		CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -EIO,
		      "fuse: real EIO on flush");
		fuse_set(&fe, "ok");
		CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0,
		      "fuse: direct LUN flushes again after recovery");
		memset(buf, 0, 64 * KIB);
		CHECK(run_io(be, BE_OP_READ, 0, 64 * KIB, buf) == 0 &&
		      all_bytes(buf, 64 * KIB, 0x42),
		      "fuse: failed writes left the old data");
		close_be(be);
	}

	snprintf(path, sizeof(path), "%s/buffered.img", fe.mnt);
	be = open_path(path, 4 * MIB, false);
	if (be) {
		CHECK(run_io(be, BE_OP_WRITE, 0, 4096, buf) == 0,
		      "fuse: buffered write");
		fuse_set(&fe, "flush=EIO");
		CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -EIO,
		      "fuse: buffered flush fails");
		CHECK(be->flush_failed, "fuse: the failure latched");
		fuse_set(&fe, "ok");
		CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -EIO,
		      "fuse: later flushes keep failing (page cache may have lost data)");
		close_be(be);
	}
	fuse_stop(&fe);
	free(buf);
}

/* ---- LUN creation ---- */

static void test_lun(void)
{
	struct lun_settings s;
	struct scsi_lun *l = NULL;
	const char *msg = NULL;
	char *buf = abuf(4096, 9);
	int err;

	lun_settings_default(&s, 1);
	snprintf(s.backend, sizeof(s.backend), "null");
	s.size = 64 * MIB;
	s.block_size = 4096;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == 0 && l, "null LUN: %d %s", err, msg ? msg : "");
	if (l) {
		CHECK(l->nblocks == 64 * MIB / 4096, "nblocks");
		CHECK(l->be->ops == &be_fault_ops && l->be->inner &&
		      l->be->inner->ops == &be_null_ops, "fault on top of null");
		CHECK(atomic_load(&l->refcnt) == 1, "one reference");
		CHECK(l->be->ops->set_param(l->be, "fault", "eio,ops=r") == 0,
		      "fault settable on any LUN");
		CHECK(run_io(l->be, BE_OP_READ, 0, 4096, buf) == -EIO,
		      "LUN read fails on command");
		scsi_lun_get(l);
		scsi_lun_put(l);
		CHECK(atomic_load(&l->refcnt) == 1, "get/put balance");
		scsi_lun_put(l);
	}

	/* file LUN, created sparse, initial fault spec from backend_opts */
	lun_settings_default(&s, 2);
	tpath(s.path, sizeof(s.path), "lun2.img");
	s.size = 8 * MIB;
	snprintf(s.backend_opts, sizeof(s.backend_opts), "eio,ops=w");
	l = NULL;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == 0 && l, "file LUN: %d %s", err, msg ? msg : "");
	if (l) {
		CHECK(l->nblocks == 8 * MIB / 512, "file nblocks");
		CHECK(run_io(l->be, BE_OP_WRITE, 0, 4096, buf) == -EIO,
		      "initial spec active");
		CHECK(run_io(l->be, BE_OP_READ, 0, 4096, buf) == 0, "read ok");
		scsi_lun_put(l);
	}

	/* size not a multiple of the block size */
	lun_settings_default(&s, 3);
	snprintf(s.backend, sizeof(s.backend), "null");
	s.size = 4096 * 3;
	s.block_size = 8192;
	l = NULL;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == -EINVAL && !l && msg, "size %% block size refused: %s",
	      msg ? msg : "");

	/* retry on a buffered LUN is refused */
	lun_settings_default(&s, 4);
	tpath(s.path, sizeof(s.path), "lun4.img");
	s.size = 1 * MIB;
	s.direct = false;
	s.werror = ERR_POLICY_RETRY;
	l = NULL;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == -EINVAL && !l, "werror=retry on buffered refused: %s",
	      msg ? msg : "");

	/* bad fault spec, bad block size, unknown backend */
	lun_settings_default(&s, 5);
	snprintf(s.backend, sizeof(s.backend), "null");
	snprintf(s.backend_opts, sizeof(s.backend_opts), "fault=nonsense");
	CHECK(scsi_lun_create(&s, &l, &msg) == -EINVAL, "bad fault spec");
	snprintf(s.backend_opts, sizeof(s.backend_opts), "fault=eio");
	l = NULL;
	CHECK(scsi_lun_create(&s, &l, &msg) == 0 && l, "fault= prefix accepted");
	if (l)
		scsi_lun_put(l);
	s.block_size = 1000;
	CHECK(scsi_lun_create(&s, &l, &msg) == -EINVAL, "block size 1000");
	s.block_size = 512;
	snprintf(s.backend, sizeof(s.backend), "rbd");
	CHECK(scsi_lun_create(&s, &l, &msg) == -EINVAL, "unknown backend");
	free(buf);
}

int main(void)
{
	pthread_t th;
	char cmd[300];

	snprintf(tmpdir, sizeof(tmpdir), "%s/holdfast-be-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	R = reactor_new(0);
	if (!R) {
		fprintf(stderr, "reactor_new failed\n");
		return 1;
	}
	pthread_create(&th, NULL, reactor_thread, NULL);

	test_null();
	test_file_create();
	test_file_rw();
	test_file_short();
	test_file_unmap();
	test_file_flush_latch();
	test_fault_parse();
	test_fault_inject();
	test_fault_concurrent();
	test_lun();
	test_fuse();
	test_blockdev();

	reactor_stop(R);
	pthread_join(th, NULL);
	reactor_free(R);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
