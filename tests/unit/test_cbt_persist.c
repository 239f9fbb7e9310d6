/* test_cbt_persist.c - the bitmap sidecar (encode, strict decode,
 * atomic replace, poison) and a LUN's bitmap set with its write-intent
 * flusher: a write to a clean chunk waits for one sync, a write to a chunk
 * already dirty on disk does not, an unwritable sidecar makes the bitmaps
 * inconsistent and poisons the file, and everything survives a reload. */
#include <errno.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cbt_bitmap.h"
#include "cbt_set.h"
#include "cbt_sidecar.h"
#include "check.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)

static char dir[256];

static const char *path_in(const char *name)
{
	static char p[4][512];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void test_roundtrip_and_rejects(void)
{
	struct cbt_bitmap *b[2], **out;
	uint8_t *buf, *bad;
	size_t len;
	unsigned n;
	uint64_t size;
	const char *why;

	b[0] = cbt_bitmap_new("daily", 10 * MIB + 512, 64 * KIB, true);
	b[1] = cbt_bitmap_new("weekly", 10 * MIB + 512, 4 * KIB, false);
	b[0]->persistent = b[1]->persistent = true;
	cbt_bitmap_mark(b[0], 0, 1);
	cbt_bitmap_mark(b[0], 10 * MIB, 512);
	cbt_bitmap_set_range(b[1], 5 * MIB, 12 * KIB);
	atomic_store(&b[1]->inconsistent, true);
	/* a frozen bitmap saves its successor's bits too */
	CHECK(cbt_bitmap_freeze(b[0]) == 0);
	cbt_bitmap_mark(b[0], 3 * MIB, 1);
	CHECK(cbt_sidecar_encode(b, 2, 10 * MIB + 512, &buf, &len) == 0);
	CHECK(cbt_sidecar_decode(buf, len, &out, &n, &size, &why) == 0, "%s", why);
	CHECK(n == 2 && size == 10 * MIB + 512);
	if (n == 2) {
		CHECK(!strcmp(out[0]->name, "daily") && out[0]->granularity == 64 * KIB &&
		      atomic_load(&out[0]->enabled) && !atomic_load(&out[0]->inconsistent));
		CHECK(cbt_bitmap_dirty_bytes(out[0]) == 64 * KIB + 64 * KIB + 512);
		CHECK(cbt_bitmap_test(out[0], 3 * MIB));
		CHECK(!atomic_load(&out[1]->enabled) && atomic_load(&out[1]->inconsistent));
		CHECK(cbt_bitmap_dirty_bytes(out[1]) == 12 * KIB);
		for (unsigned i = 0; i < n; i++)
			cbt_bitmap_free(out[i]);
		free(out);
	}
	/* every truncation is refused */
	for (size_t cut = 0; cut < len; cut++)
		CHECK(cbt_sidecar_decode(buf, cut, &out, &n, &size, &why) == -EINVAL,
		      "cut %zu", cut);
	/* every single flipped bit is refused (checksum or field checks),
	 * except in the magic, which only the poison value replaces */
	bad = malloc(len);
	for (size_t i = 0; i < len; i++) {
		memcpy(bad, buf, len);
		bad[i] ^= 0x10;
		CHECK(cbt_sidecar_decode(bad, len, &out, &n, &size, &why) == -EINVAL,
		      "flip at %zu", i);
	}
	/* poison: same bytes, poisoned magic: parses, all inconsistent */
	memcpy(bad, buf, len);
	memcpy(bad, "HFCBTBAD", 8);
	CHECK(cbt_sidecar_decode(bad, len, &out, &n, &size, &why) == 0 && n == 2);
	if (n == 2) {
		CHECK(atomic_load(&out[0]->inconsistent) &&
		      atomic_load(&out[1]->inconsistent));
		for (unsigned i = 0; i < n; i++)
			cbt_bitmap_free(out[i]);
		free(out);
	}
	free(bad);
	free(buf);
	/* duplicate names are refused even with a good checksum */
	cbt_bitmap_reclaim(b[0], CBT_MODE_NEVER, true, NULL);
	snprintf(b[1]->name, sizeof(b[1]->name), "daily");
	CHECK(cbt_sidecar_encode(b, 2, 10 * MIB + 512, &buf, &len) == 0);
	CHECK(cbt_sidecar_decode(buf, len, &out, &n, &size, &why) == -EINVAL &&
	      !strcmp(why, "duplicate bitmap name"));
	free(buf);
	/* sizes must agree */
	CHECK(cbt_sidecar_encode(b, 2, 20 * MIB, &buf, &len) == -EINVAL);
	cbt_bitmap_free(b[0]);
	cbt_bitmap_free(b[1]);
}

static void test_write_file(void)
{
	const char *p = path_in("wf.cbt");
	uint8_t *buf;
	size_t len;
	struct stat st;

	CHECK(cbt_sidecar_write_file(p, (const uint8_t *)"hello", 5) == 0);
	CHECK(cbt_sidecar_write_file(p, (const uint8_t *)"world!", 6) == 0);
	CHECK(cbt_sidecar_read_file(p, &buf, &len) == 0 && len == 6 &&
	      !memcmp(buf, "world!", 6));
	free(buf);
	CHECK(stat(path_in("wf.cbt.tmp"), &st) < 0 && errno == ENOENT);
	CHECK(cbt_sidecar_read_file(path_in("none"), &buf, &len) == -ENOENT);
}

struct waiter {
	struct cbt_wait w;
	sem_t sem;
	int res;
};

static void waiter_done(struct cbt_wait *w, int res)
{
	struct waiter *x = container_of(w, struct waiter, w);

	x->res = res;
	sem_post(&x->sem);
}

static int wait_for(struct waiter *x)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	return sem_timedwait(&x->sem, &ts);
}

static void waiter_init(struct waiter *x)
{
	memset(x, 0, sizeof(*x));
	sem_init(&x->sem, 0, 0);
	x->w.fn = waiter_done;
	x->res = 1;
}

/* Mark; when the set says wait, queue x. */
static bool mark_wait(struct cbt_set *s, uint64_t off, uint64_t len,
		      struct waiter *x)
{
	if (!cbt_set_mark(s, off, len))
		return false;
	cbt_set_wait(s, &x->w);
	return true;
}

/* Is chunk at offset dirty in bitmap name of the sidecar on disk? */
static int on_disk(const char *sidecar, const char *name, uint64_t offset,
		   bool *inconsistent)
{
	struct cbt_bitmap **out;
	uint8_t *buf;
	size_t len;
	unsigned n;
	uint64_t size;
	const char *why;
	int found = -1;

	if (cbt_sidecar_read_file(sidecar, &buf, &len))
		return -1;
	if (cbt_sidecar_decode(buf, len, &out, &n, &size, &why) == 0) {
		for (unsigned i = 0; i < n; i++) {
			if (!strcmp(out[i]->name, name)) {
				found = cbt_bitmap_test(out[i], offset);
				if (inconsistent)
					*inconsistent = atomic_load(&out[i]->inconsistent);
			}
			cbt_bitmap_free(out[i]);
		}
		free(out);
	}
	free(buf);
	return found;
}

static void test_set_write_intent(void)
{
	const char *sc = path_in("lun1.cbt");
	struct cbt_set *s;
	struct cbt_bitmap *list[4];
	struct waiter x, y;
	const char *why;
	bool inc;

	CHECK(cbt_set_new(sc, 64 * MIB, &s, &why) == 0);
	CHECK(cbt_set_empty(s));
	CHECK(cbt_set_add(s, "vol", 64 * KIB, true, true) == 0);
	CHECK(cbt_set_add(s, "vol", 64 * KIB, true, true) == -EEXIST);
	CHECK(cbt_set_add(s, "mem", 4 * KIB, false, true) == 0);
	CHECK(cbt_set_add(s, "bad", 3 * KIB, false, true) == -EINVAL);
	CHECK(cbt_set_list(s, list, 4) == 2 && list[0] == cbt_set_find(s, "vol"));
	CHECK(on_disk(sc, "vol", 0, NULL) == 0, "added persistent bitmap is on disk");
	CHECK(on_disk(sc, "mem", 0, NULL) == -1, "non-persistent is not");

	/* first write to a clean chunk waits, and its bit is on disk by then */
	waiter_init(&x);
	CHECK(mark_wait(s, 1 * MIB, 4096, &x));
	CHECK(wait_for(&x) == 0 && x.res == 0);
	CHECK(on_disk(sc, "vol", 1 * MIB, NULL) == 1);
	/* a later write to the same chunk pays nothing */
	waiter_init(&y);
	CHECK(!mark_wait(s, 1 * MIB + 8192, 4096, &y));
	/* a non-persistent bitmap never waits */
	CHECK(cbt_bitmap_test(cbt_set_find(s, "mem"), 1 * MIB + 8192));
	/* disabled: no marking, no wait */
	CHECK(cbt_set_enable(s, "vol", false) == 0);
	CHECK(cbt_set_enable(s, "mem", false) == 0);
	CHECK(!mark_wait(s, 5 * MIB, 4096, &y));
	CHECK(!cbt_bitmap_test(cbt_set_find(s, "vol"), 5 * MIB));
	CHECK(cbt_set_enable(s, "vol", true) == 0);
	/* many clean chunks at once: one batch */
	struct waiter many[8];
	for (int i = 0; i < 8; i++) {
		waiter_init(&many[i]);
		CHECK(mark_wait(s, (uint64_t)(10 + i) * MIB, 4096, &many[i]));
	}
	for (int i = 0; i < 8; i++)
		CHECK(wait_for(&many[i]) == 0 && many[i].res == 0);
	CHECK(on_disk(sc, "vol", 17 * MIB, NULL) == 1);

	/* merge, clear, busy */
	CHECK(cbt_set_merge(s, "mem", "vol") == 0);
	CHECK(cbt_bitmap_test(cbt_set_find(s, "mem"), 17 * MIB));
	/* extents (what a snapshot's diff gives): their chunks, saved; a
	 * part past the end is ignored */
	const uint64_t ext[] = { 20 * MIB + 100, 10, 64 * MIB - 4096, 1 * MIB };
	CHECK(cbt_set_merge_extents(s, "vol", ext, 2) == 0);
	CHECK(cbt_bitmap_test(cbt_set_find(s, "vol"), 20 * MIB));
	CHECK(!cbt_bitmap_test(cbt_set_find(s, "vol"), 20 * MIB + 64 * KIB));
	CHECK(cbt_bitmap_test(cbt_set_find(s, "vol"), 64 * MIB - 1));
	CHECK(on_disk(sc, "vol", 20 * MIB, NULL) == 1, "merged extents saved");
	CHECK(cbt_set_merge_extents(s, "nope", ext, 2) == -ENOENT);
	CHECK(cbt_bitmap_freeze(cbt_set_find(s, "vol")) == 0);
	CHECK(cbt_set_remove(s, "vol") == -EBUSY);
	CHECK(cbt_set_merge(s, "vol", "mem") == -EBUSY);
	CHECK(cbt_set_merge_extents(s, "vol", ext, 1) == -EBUSY);
	/* frozen: a write lands in the successor and is saved too */
	waiter_init(&x);
	CHECK(mark_wait(s, 30 * MIB, 1, &x));
	CHECK(wait_for(&x) == 0 && on_disk(sc, "vol", 30 * MIB, NULL) == 1);
	cbt_bitmap_reclaim(cbt_set_find(s, "vol"), CBT_MODE_ON_SUCCESS, true, NULL);
	CHECK(cbt_set_save(s) == 0);
	CHECK(on_disk(sc, "vol", 1 * MIB, NULL) == 0 &&
	      on_disk(sc, "vol", 30 * MIB, NULL) == 1, "reclaimed state saved");
	/* cleared chunks wait again on the next write */
	CHECK(cbt_set_clear(s, "vol") == 0 && on_disk(sc, "vol", 30 * MIB, NULL) == 0);
	waiter_init(&x);
	CHECK(mark_wait(s, 30 * MIB, 1, &x));
	CHECK(wait_for(&x) == 0);
	cbt_set_free(s);

	/* reload: persistent bitmap and its bits are back, mem is gone */
	CHECK(cbt_set_new(sc, 128 * MIB, &s, &why) == 0, "%s", why ? why : "");
	CHECK(cbt_set_find(s, "vol") && !cbt_set_find(s, "mem"));
	CHECK(cbt_bitmap_test(cbt_set_find(s, "vol"), 30 * MIB));
	CHECK(cbt_set_find(s, "vol")->size == 128 * MIB, "grown with the LUN");
	/* already durable after load: no wait */
	waiter_init(&x);
	CHECK(!mark_wait(s, 30 * MIB, 1, &x));

	/* sidecar becomes unwritable: .tmp is a directory */
	CHECK(mkdir(path_in("lun1.cbt.tmp"), 0700) == 0);
	waiter_init(&x);
	CHECK(mark_wait(s, 40 * MIB, 1, &x));
	CHECK(wait_for(&x) == 0 && x.res < 0, "waiter told: %d", x.res);
	CHECK(atomic_load(&cbt_set_find(s, "vol")->inconsistent));
	CHECK(on_disk(sc, "vol", 30 * MIB, &inc) == 1 && inc, "poisoned on disk");
	/* broken: writes are not held up any more */
	waiter_init(&x);
	CHECK(!mark_wait(s, 50 * MIB, 1, &x));
	CHECK(cbt_bitmap_freeze(cbt_set_find(s, "vol")) == -EINVAL);
	/* repaired and cleared: consistent again */
	rmdir(path_in("lun1.cbt.tmp"));
	CHECK(cbt_set_clear(s, "vol") == 0);
	CHECK(!atomic_load(&cbt_set_find(s, "vol")->inconsistent));
	CHECK(on_disk(sc, "vol", 30 * MIB, &inc) == 0 && !inc);
	CHECK(cbt_set_remove(s, "vol") == 0 && cbt_set_empty(s));
	CHECK(cbt_set_remove(s, "vol") == -ENOENT);
	cbt_set_free(s);

	/* a corrupt sidecar refuses the LUN */
	CHECK(cbt_sidecar_write_file(sc, (const uint8_t *)"garbage-garbage-garbage-garbage-garbage",
				     39) == 0);
	CHECK(cbt_set_new(sc, 64 * MIB, &s, &why) == -EINVAL && why);
	/* no sidecar path: persistent bitmaps are refused */
	CHECK(cbt_set_new(NULL, 64 * MIB, &s, &why) == 0);
	CHECK(cbt_set_add(s, "p", 64 * KIB, true, true) == -EOPNOTSUPP);
	cbt_set_free(s);
}

/* Two nodes sharing one sidecar (a LUN with alua_group): the standby
 * node's set is paused (writes nothing), the node that takes over reloads
 * the other node's bitmaps; its own non-persistent ones turn
 * inconsistent; a corrupt sidecar makes everything inconsistent. */
static void test_set_shared_reload(void)
{
	const char *sc = path_in("shared.cbt");
	struct cbt_set *a, *b;
	struct waiter x;
	const char *why;

	CHECK(cbt_set_new(sc, 64 * MIB, &a, &why) == 0);
	CHECK(cbt_set_new(sc, 64 * MIB, &b, &why) == 0);	/* B: empty */
	cbt_set_pause(b, true);
	CHECK(cbt_set_add(a, "daily", 64 * KIB, true, true) == 0);
	CHECK(cbt_set_add(b, "mine", 64 * KIB, false, true) == 0);
	waiter_init(&x);
	CHECK(mark_wait(a, 1 * MIB, 4096, &x));
	CHECK(wait_for(&x) == 0 && x.res == 0);
	/* A hands over: saved, paused */
	CHECK(cbt_set_save(a) == 0);
	cbt_set_pause(a, true);
	/* B takes over */
	CHECK(cbt_set_reload(b, &why) == 0, "%s", why ? why : "");
	cbt_set_pause(b, false);
	CHECK(cbt_set_find(b, "daily") &&
	      cbt_bitmap_test(cbt_set_find(b, "daily"), 1 * MIB),
	      "B has A's bitmap and bits");
	CHECK(atomic_load(&cbt_set_find(b, "mine")->inconsistent),
	      "B's own non-persistent bitmap missed A's writes");
	/* loaded bits are durable: no wait; a new chunk waits and is saved */
	waiter_init(&x);
	CHECK(!mark_wait(b, 1 * MIB, 4096, &x));
	CHECK(mark_wait(b, 9 * MIB, 4096, &x));
	CHECK(wait_for(&x) == 0 && x.res == 0);
	CHECK(on_disk(sc, "daily", 9 * MIB, NULL) == 1);
	/* A, paused, writes nothing even when asked */
	CHECK(cbt_set_clear(a, "daily") == 0);
	CHECK(on_disk(sc, "daily", 9 * MIB, NULL) == 1 &&
	      on_disk(sc, "daily", 1 * MIB, NULL) == 1,
	      "a paused set leaves the shared sidecar alone");
	/* back to A: reload sees B's writes */
	cbt_set_pause(b, true);
	CHECK(cbt_set_reload(a, &why) == 0);
	cbt_set_pause(a, false);
	CHECK(cbt_bitmap_test(cbt_set_find(a, "daily"), 9 * MIB) &&
	      cbt_bitmap_test(cbt_set_find(a, "daily"), 1 * MIB));
	CHECK(!atomic_load(&cbt_set_find(a, "daily")->inconsistent));
	/* a corrupt shared sidecar: nothing trusted */
	CHECK(cbt_sidecar_write_file(sc, (const uint8_t *)"garbage-garbage-garbage-garbage-garbage",
				     39) == 0);
	CHECK(cbt_set_reload(b, &why) == -EINVAL && why);
	CHECK(atomic_load(&cbt_set_find(b, "daily")->inconsistent));
	cbt_set_free(a);
	cbt_set_free(b);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/holdfast-cbt-XXXXXX");
	if (!mkdtemp(dir))
		return 2;
	test_roundtrip_and_rejects();
	test_write_file();
	test_set_write_intent();
	test_set_shared_reload();
	if (fork() == 0)
		execlp("rm", "rm", "-rf", dir, (char *)NULL);
	return CHECK_SUMMARY("test_cbt_persist");
}
