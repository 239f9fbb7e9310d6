/* test_cbt_bitmap.c - dirty bitmap module: marking, extents, counts,
 * merge, resize, freeze/reclaim in every bitmap mode, concurrent marking. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cbt_bitmap.c"
#include "check.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)

/* Collect the dirty extents as "off+len," text for exact comparison. */
static const char *extents(const struct cbt_bitmap *b)
{
	static char buf[4096];
	uint64_t off = 0, len;
	size_t n = 0;

	buf[0] = 0;
	while (cbt_bitmap_next_extent(b, &off, &len, true)) {
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%llu+%llu,",
				      (unsigned long long)off,
				      (unsigned long long)len);
		off += len;
	}
	return buf;
}

static void test_new_and_validation(void)
{
	struct cbt_bitmap *b;

	CHECK(!cbt_bitmap_new("x", MIB, 2048, true) && errno == EINVAL);
	CHECK(!cbt_bitmap_new("x", MIB, 96 * KIB, true) && errno == EINVAL);
	CHECK(!cbt_bitmap_new("x", MIB, 128u * MIB, true) && errno == EINVAL);
	CHECK(!cbt_bitmap_new("", MIB, 64 * KIB, true) && errno == EINVAL);
	CHECK(!cbt_bitmap_new("a/b", MIB, 64 * KIB, true) && errno == EINVAL);
	b = cbt_bitmap_new("b0", MIB, CBT_GRANULARITY_MAX, true);
	CHECK(b && b->nchunks == 1);
	cbt_bitmap_free(b);
	/* 2 TiB at 64 KiB: 4 MiB of bits */
	b = cbt_bitmap_new("big", 2048ull * 1024 * MIB, 64 * KIB, true);
	CHECK(b && b->nwords * 8 == 4 * MIB);
	cbt_bitmap_free(b);
}

static void test_mark_and_extents(void)
{
	/* 1 MiB + 4 KiB: the last 64 KiB chunk is partial (4 KiB) */
	struct cbt_bitmap *b = cbt_bitmap_new("b", MIB + 4 * KIB, 64 * KIB, true);

	CHECK(cbt_bitmap_dirty_bytes(b) == 0);
	CHECK(cbt_bitmap_mark(b, 0, 512) == 1);
	CHECK(cbt_bitmap_mark(b, 100, 512) == 0, "same chunk again is free");
	CHECK(cbt_bitmap_mark(b, 64 * KIB - 1, 2) == 1, "straddles 0 and 1");
	CHECK(!strcmp(extents(b), "0+131072,"), "%s", extents(b));
	CHECK(cbt_bitmap_dirty_bytes(b) == 128 * KIB);
	CHECK(cbt_bitmap_mark(b, MIB, 4 * KIB) == 1);
	CHECK(cbt_bitmap_dirty_bytes(b) == 132 * KIB, "last chunk partial");
	CHECK(!strcmp(extents(b), "0+131072,1048576+4096,"), "%s", extents(b));
	CHECK(cbt_bitmap_mark(b, 2 * MIB, 4096) == 0, "beyond the end");
	CHECK(cbt_bitmap_mark(b, MIB, 10 * MIB) == 0, "clipped, already dirty");
	CHECK(cbt_bitmap_mark(b, 0, 0) == 0);
	/* clean extents */
	uint64_t off = 0, len;
	CHECK(cbt_bitmap_next_extent(b, &off, &len, false) &&
	      off == 128 * KIB && len == MIB - 128 * KIB);
	/* from the middle of a dirty extent */
	off = 4096;
	CHECK(cbt_bitmap_next_extent(b, &off, &len, true) && off == 4096 &&
	      len == 128 * KIB - 4096);
	/* disabled records nothing */
	atomic_store(&b->enabled, false);
	CHECK(cbt_bitmap_mark(b, 512 * KIB, 1) == 0 && !cbt_bitmap_test(b, 512 * KIB));
	/* set/reset ignore enabled */
	CHECK(cbt_bitmap_set_range(b, 512 * KIB, 1) == 1);
	cbt_bitmap_reset_range(b, 0, 64 * KIB);
	CHECK(!strcmp(extents(b), "65536+65536,524288+65536,1048576+4096,"),
	      "%s", extents(b));
	CHECK(atomic_load(&b->dirty) == 3);
	CHECK(cbt_bitmap_clear(b) == 0 && cbt_bitmap_dirty_bytes(b) == 0 &&
	      atomic_load(&b->dirty) == 0);
	cbt_bitmap_free(b);
}

static void test_word_boundaries(void)
{
	/* 200 chunks of 4 KiB: ranges across 64-bit word boundaries */
	struct cbt_bitmap *b = cbt_bitmap_new("w", 200 * 4 * KIB, 4 * KIB, true);

	CHECK(cbt_bitmap_mark(b, 60 * 4 * KIB, 10 * 4 * KIB) == 10);
	CHECK(cbt_bitmap_mark(b, 127 * 4 * KIB, 2 * 4 * KIB) == 2);
	CHECK(cbt_bitmap_mark(b, 0, 200 * 4 * KIB) == 188);
	CHECK(!strcmp(extents(b), "0+819200,"), "%s", extents(b));
	cbt_bitmap_reset_range(b, 63 * 4 * KIB, 66 * 4 * KIB);
	CHECK(atomic_load(&b->dirty) == 134);
	CHECK(!strcmp(extents(b), "0+258048,528384+290816,"), "%s", extents(b));
	cbt_bitmap_free(b);
}

static void test_merge_and_busy(void)
{
	struct cbt_bitmap *a = cbt_bitmap_new("a", 4 * MIB, 64 * KIB, true);
	struct cbt_bitmap *f = cbt_bitmap_new("f", 4 * MIB, 4 * KIB, true);
	struct cbt_bitmap *c = cbt_bitmap_new("c", 8 * MIB, 64 * KIB, true);

	cbt_bitmap_mark(f, 70 * KIB, 4 * KIB);
	CHECK(cbt_bitmap_merge(a, f) == 0);
	CHECK(!strcmp(extents(a), "65536+65536,"), "finer into coarser: %s",
	      extents(a));
	CHECK(cbt_bitmap_merge(c, a) == -EINVAL);
	atomic_store(&f->inconsistent, true);
	cbt_bitmap_merge(a, f);
	CHECK(atomic_load(&a->inconsistent));
	CHECK(cbt_bitmap_clear(a) == 0 && !atomic_load(&a->inconsistent));
	CHECK(cbt_bitmap_freeze(a) == 0);
	CHECK(cbt_bitmap_merge(a, f) == -EBUSY && cbt_bitmap_clear(a) == -EBUSY);
	CHECK(cbt_bitmap_freeze(a) == -EBUSY);
	cbt_bitmap_reclaim(a, CBT_MODE_NEVER, true, NULL);
	CHECK(!atomic_load(&a->busy) && !atomic_load(&a->successor));
	CHECK(cbt_bitmap_freeze(f) == -EINVAL, "inconsistent can't be used");
	cbt_bitmap_free(a);
	cbt_bitmap_free(f);
	cbt_bitmap_free(c);
}

static void test_resize(void)
{
	struct cbt_bitmap *b = cbt_bitmap_new("r", MIB, 64 * KIB, true);

	cbt_bitmap_mark(b, MIB - 1, 1);
	CHECK(cbt_bitmap_resize(b, 16 * MIB) == 0 && b->nchunks == 256);
	CHECK(!strcmp(extents(b), "983040+65536,"), "%s", extents(b));
	CHECK(cbt_bitmap_mark(b, 15 * MIB, 1) == 1);
	CHECK(cbt_bitmap_resize(b, 512 * KIB) == 0 && atomic_load(&b->dirty) == 0);
	cbt_bitmap_free(b);
}

/* The bitmap mode table of QEMU's backup: frozen set F = {0,1,2,3},
 * the job copies {0,1}, a write during the job dirties chunk 9. */
static void one_reclaim(enum cbt_bitmap_mode mode, bool success,
			const char *want)
{
	struct cbt_bitmap *b = cbt_bitmap_new("m", MIB, 64 * KIB, true);
	struct cbt_bitmap *copied = cbt_bitmap_new("copied", MIB, 64 * KIB, true);

	cbt_bitmap_mark(b, 0, 256 * KIB);
	CHECK(cbt_bitmap_freeze(b) == 0);
	CHECK(cbt_bitmap_mark(b, 9 * 64 * KIB, 1) == 1);
	CHECK(!cbt_bitmap_test_chunk(b, 9), "frozen bits unchanged");
	CHECK(cbt_bitmap_dirty_bytes(b) == 5 * 64 * KIB, "show counts both");
	cbt_bitmap_set_range(copied, 0, 128 * KIB);
	cbt_bitmap_reclaim(b, mode, success, copied);
	CHECK(!strcmp(extents(b), want), "%s %s: %s", cbt_bitmap_mode_name(mode),
	      success ? "success" : "failure", extents(b));
	CHECK(atomic_load(&b->dirty) * 64 * KIB == cbt_bitmap_dirty_bytes(b));
	cbt_bitmap_free(b);
	cbt_bitmap_free(copied);
}

static void test_reclaim_modes(void)
{
	enum cbt_bitmap_mode m;

	one_reclaim(CBT_MODE_ON_SUCCESS, true, "589824+65536,");
	one_reclaim(CBT_MODE_ON_SUCCESS, false, "0+262144,589824+65536,");
	one_reclaim(CBT_MODE_ALWAYS, true, "131072+131072,589824+65536,");
	one_reclaim(CBT_MODE_ALWAYS, false, "131072+131072,589824+65536,");
	one_reclaim(CBT_MODE_NEVER, true, "0+262144,589824+65536,");
	one_reclaim(CBT_MODE_NEVER, false, "0+262144,589824+65536,");
	CHECK(cbt_bitmap_mode_parse("conditional", &m) == 0 &&
	      m == CBT_MODE_ON_SUCCESS);
	CHECK(cbt_bitmap_mode_parse("sometimes", &m) == -EINVAL);
}

/* Several threads mark overlapping ranges; the count equals the bits. */
struct marker {
	struct cbt_bitmap *b;
	unsigned seed;
	uint64_t fresh;
};

static void *marker_main(void *arg)
{
	struct marker *m = arg;

	for (int i = 0; i < 200000; i++) {
		uint64_t off = (uint64_t)rand_r(&m->seed) % (64 * MIB);

		m->fresh += cbt_bitmap_mark(m->b, off, 4096);
	}
	return NULL;
}

static void test_concurrent_mark(void)
{
	struct cbt_bitmap *b = cbt_bitmap_new("c", 64 * MIB, 4 * KIB, true);
	struct marker m[4];
	pthread_t th[4];
	uint64_t fresh = 0, bits = 0;

	for (int i = 0; i < 4; i++) {
		m[i] = (struct marker){ .b = b, .seed = (unsigned)i + 1 };
		pthread_create(&th[i], NULL, marker_main, &m[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		fresh += m[i].fresh;
	}
	for (uint64_t c = 0; c < b->nchunks; c++)
		bits += cbt_bitmap_test_chunk(b, c);
	CHECK(fresh == bits && atomic_load(&b->dirty) == bits,
	      "fresh %llu bits %llu", (unsigned long long)fresh,
	      (unsigned long long)bits);
	cbt_bitmap_free(b);
}

int main(void)
{
	test_new_and_validation();
	test_mark_and_extents();
	test_word_boundaries();
	test_merge_and_busy();
	test_resize();
	test_reclaim_modes();
	test_concurrent_mark();
	return CHECK_SUMMARY("test_cbt_bitmap");
}
