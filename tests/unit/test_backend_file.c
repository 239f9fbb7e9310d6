/* test_backend_file.c - the file and null backends driven through a real
 * reactor (its io_uring, timers and calls): sparse creation, O_DIRECT
 * round trips, short reads, flush and its latch, unmap / write zeroes,
 * block status, a loop block device and real kernel errors through
 * fusefail.  The last two are skipped (not failed) where the machine
 * cannot provide them.
 *
 * file.c and null.c are included so their statics are reachable. */
#include <signal.h>
#include <sys/wait.h>

#include "../../backends/file.c"
#include "../../backends/null.c"
#include "backend_harness.h"

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
	{
		uint32_t a = ((struct be_file *)be->priv)->dio_align;

		CHECK(a >= 512 && !(a & (a - 1)), "O_DIRECT alignment %u", a);
	}
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

/* A fenced store (be_fence, a node that lost a shared store)
 * refuses every change with -ECANCELED and writes nothing; reads and
 * flushes still work; lifting the fence restores writes. */
static void test_file_fence(void)
{
	struct backend *be = open_file("fence.img", 4 * MIB, true);
	size_t len = 64 * KIB;
	char *w = abuf(len, 0x5a), *r = abuf(len, 0);

	if (!be)
		return;
	CHECK(run_io(be, BE_OP_WRITE, 0, len, w) == 0, "write before fence");
	__atomic_store_n(&be->fenced, true, __ATOMIC_SEQ_CST);
	memset(w, 0xa5, len);
	CHECK(run_io(be, BE_OP_WRITE, 0, len, w) == -ECANCELED,
	      "fenced write refused");
	CHECK(run_io(be, BE_OP_WRITE_ZEROES, 0, len, NULL) == -ECANCELED,
	      "fenced write zeroes refused");
	CHECK(run_io(be, BE_OP_UNMAP, 0, len, NULL) == -ECANCELED,
	      "fenced unmap refused");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "fenced flush works");
	CHECK(run_io(be, BE_OP_READ, 0, len, r) == 0 &&
	      all_bytes(r, len, 0x5a), "fenced: nothing written, reads work");
	__atomic_store_n(&be->fenced, false, __ATOMIC_SEQ_CST);
	CHECK(run_io(be, BE_OP_WRITE, 0, len, w) == 0, "write after fence");
	CHECK(run_io(be, BE_OP_READ, 0, len, r) == 0 && all_bytes(r, len, 0xa5),
	      "write after fence landed");
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
		/* A plain buffered write that fails at once left nothing in
		 * the page cache: no latch.  A FUA write that fails may have
		 * (its data was to be synced): latch. */
		fuse_set(&fe, "write=EIO");
		CHECK(run_io(be, BE_OP_WRITE, 0, 4096, buf) == -EIO,
		      "fuse: buffered write fails");
		CHECK(!be->flush_failed, "fuse: plain write failure: no latch");
		CHECK(run_io_split(be, BE_OP_WRITE, BE_IO_FUA, 0, 4096, buf, 0) ==
		      -EIO, "fuse: buffered FUA write fails");
		CHECK(be->flush_failed, "fuse: failed FUA write latches");
		fuse_set(&fe, "ok");
		CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -EIO,
		      "fuse: flush after a failed FUA write fails");
		close_be(be);
	}

	snprintf(path, sizeof(path), "%s/buffered2.img", fe.mnt);
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

int main(void)
{
	if (harness_start() < 0)
		return 1;
	test_null();
	test_file_create();
	test_file_rw();
	test_file_fence();
	test_file_short();
	test_file_unmap();
	test_file_flush_latch();
	test_blockdev();
	test_fuse();
	return harness_finish();
}
