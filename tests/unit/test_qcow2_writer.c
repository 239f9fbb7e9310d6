/* test_qcow2_writer.c - the qcow2 writer checked by QEMU itself: every
 * image must pass `qemu-img check`, and `qemu-img compare` of the newest
 * image of a chain (raw base, qcow2 incrementals) must equal a raw
 * reference written alongside.  Skips (passes) without qemu-img. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2_writer.h"
#include "check.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)

static char dir[256];

static const char *p(const char *name)
{
	static char buf[8][512];
	static int k;

	k = (k + 1) % 8;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
	return buf[k];
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	if (rc != 0 && !strstr(cmd, "aborted.qcow2"))
		printf("command failed (%d): %s\n", rc, cmd);
	return rc;
}

static void fill(uint8_t *buf, uint64_t len, unsigned seed)
{
	for (uint64_t i = 0; i < len; i++)
		buf[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 12)) ^ seed);
}

/* Write the same bytes into the qcow2 and the raw reference. */
static void put(struct qcow2w *w, int ref, uint64_t off, uint64_t len,
		unsigned seed)
{
	uint8_t *buf = malloc(len);

	fill(buf, len, seed);
	CHECK(qcow2w_write(w, off, buf, len) == 0, "write %llu+%llu",
	      (unsigned long long)off, (unsigned long long)len);
	CHECK(pwrite(ref, buf, len, (off_t)off) == (ssize_t)len);
	free(buf);
}

static void zero(struct qcow2w *w, int ref, uint64_t off, uint64_t len)
{
	uint8_t *buf = calloc(1, len);

	CHECK(qcow2w_zero(w, off, len) == 0);
	CHECK(pwrite(ref, buf, len, (off_t)off) == (ssize_t)len);
	free(buf);
}

static void test_standalone(void)
{
	const uint64_t size = 10 * MIB + 512;	/* partial last cluster */
	struct qcow2w *w;
	struct qcow2w_params prm = { .size = size };
	int ref = open(p("ref1.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	uint64_t host;

	CHECK(ftruncate(ref, (off_t)size) == 0);
	CHECK(qcow2w_create(p("full.qcow2"), &prm, &w) == 0);
	CHECK(qcow2w_cluster_size(w) == 64 * KIB);
	put(w, ref, 0, 64 * KIB, 1);
	put(w, ref, 5 * MIB, 256 * KIB, 2);
	put(w, ref, 10 * MIB, 512, 3);		/* the last, partial cluster */
	put(w, ref, 0, 64 * KIB, 4);		/* rewrite in place */
	zero(w, ref, 5 * MIB + 64 * KIB, 64 * KIB);	/* zero an allocated one */
	zero(w, ref, 8 * MIB, 128 * KIB);	/* and unallocated ones */
	CHECK(qcow2w_write(w, 100, "x", 1) == -EINVAL, "unaligned");
	CHECK(qcow2w_write(w, 0, "x", 1) == -EINVAL, "partial cluster");
	CHECK(qcow2w_map(w, 11 * MIB, &host) == -EINVAL, "beyond size");
	CHECK(qcow2w_finish(w) == 0);
	close(ref);
	CHECK(sh("qemu-img check -q %s", p("full.qcow2")) == 0);
	CHECK(sh("qemu-img compare -q -f qcow2 -F raw %s %s", p("full.qcow2"),
		 p("ref1.raw")) == 0);
	CHECK(sh("qemu-img info %s | grep -q 'virtual size: 10 MiB (10486272 bytes)'",
		 p("full.qcow2")) == 0);
}

/* raw base <- inc1.qcow2 (backing raw) <- inc2.qcow2 (backing qcow2) */
static void test_chain(void)
{
	const uint64_t size = 32 * MIB;
	struct qcow2w *w;
	int ref = open(p("ref2.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	int base = open(p("base.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	uint8_t *buf = malloc(size);

	fill(buf, size, 9);
	CHECK(pwrite(base, buf, size, 0) == (ssize_t)size);
	CHECK(pwrite(ref, buf, size, 0) == (ssize_t)size);
	free(buf);
	close(base);

	struct qcow2w_params p1 = { .size = size, .backing_file = "base.raw",
				    .backing_format = "raw" };
	CHECK(qcow2w_create(p("inc1.qcow2"), &p1, &w) == 0);
	put(w, ref, 1 * MIB, 64 * KIB, 11);
	put(w, ref, 20 * MIB, 1 * MIB, 12);
	zero(w, ref, 30 * MIB, 64 * KIB);
	CHECK(qcow2w_finish(w) == 0);
	CHECK(sh("qemu-img check -q %s", p("inc1.qcow2")) == 0);
	CHECK(sh("qemu-img compare -q %s %s", p("inc1.qcow2"), p("ref2.raw")) == 0);

	/* 4 KiB clusters: many L2 tables and more than one refcount block */
	struct qcow2w_params p2 = { .size = size, .cluster_bits = 12,
				    .backing_file = "inc1.qcow2",
				    .backing_format = "qcow2" };
	CHECK(qcow2w_create(p("inc2.qcow2"), &p2, &w) == 0);
	for (uint64_t off = 0; off < size; off += 1 * MIB + 4 * KIB)
		put(w, ref, off & ~(4 * KIB - 1), 4 * KIB, (unsigned)(off >> 20));
	put(w, ref, 2 * MIB, 12 * MIB, 13);	/* 3072 clusters */
	zero(w, ref, 20 * MIB + 8 * KIB, 8 * KIB);
	CHECK(qcow2w_finish(w) == 0);
	close(ref);
	CHECK(sh("qemu-img check -q %s", p("inc2.qcow2")) == 0);
	CHECK(sh("qemu-img compare -q %s %s", p("inc2.qcow2"), p("ref2.raw")) == 0);
	CHECK(sh("cd %s && qemu-img convert -O raw inc2.qcow2 restored.raw && "
		 "cmp -s restored.raw ref2.raw", dir) == 0,
	      "the newest image restores the whole chain");
	CHECK(sh("qemu-img info %s | grep -q 'backing file format: qcow2'",
		 p("inc2.qcow2")) == 0);
}

static void test_big_cluster_and_empty(void)
{
	struct qcow2w *w;
	struct qcow2w_params prm = { .size = 8 * MIB, .cluster_bits = 21 };
	int ref = open(p("ref3.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);

	CHECK(ftruncate(ref, 8 * MIB) == 0);
	CHECK(qcow2w_create(p("big.qcow2"), &prm, &w) == 0);
	put(w, ref, 4 * MIB, 2 * MIB, 21);
	CHECK(qcow2w_finish(w) == 0);
	close(ref);
	CHECK(sh("qemu-img check -q %s", p("big.qcow2")) == 0);
	CHECK(sh("qemu-img compare -q -F raw %s %s", p("big.qcow2"), p("ref3.raw")) == 0);
	/* an empty incremental (nothing changed) is a valid image too */
	struct qcow2w_params pe = { .size = 8 * MIB, .backing_file = "big.qcow2",
				    .backing_format = "qcow2" };
	CHECK(qcow2w_create(p("empty.qcow2"), &pe, &w) == 0);
	CHECK(qcow2w_finish(w) == 0);
	CHECK(sh("qemu-img check -q %s", p("empty.qcow2")) == 0);
	CHECK(sh("qemu-img compare -q -F raw %s %s", p("empty.qcow2"), p("ref3.raw")) == 0);
	/* abort leaves no valid image */
	CHECK(qcow2w_create(p("aborted.qcow2"), &prm, &w) == 0);
	qcow2w_abort(w);
	CHECK(sh("qemu-img info -f qcow2 %s >/dev/null 2>&1", p("aborted.qcow2")) != 0);
	/* parameter checks */
	struct qcow2w_params bad = { .size = MIB, .cluster_bits = 22 };
	CHECK(qcow2w_create(p("bad.qcow2"), &bad, &w) == -EINVAL);
	struct qcow2w_params badf = { .size = MIB, .backing_format = "raw" };
	CHECK(qcow2w_create(p("bad.qcow2"), &badf, &w) == -EINVAL);
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("test_qcow2_writer: qemu-img missing, skipped\n");
		return 0;
	}
	snprintf(dir, sizeof(dir), "/tmp/holdfast-qcow2-XXXXXX");
	if (!mkdtemp(dir))
		return 2;
	test_standalone();
	test_chain();
	test_big_cluster_and_empty();
	if (!failed)
		sh("rm -rf %s", dir);
	else
		printf("images kept in %s\n", dir);
	return CHECK_SUMMARY("test_qcow2_writer");
}
