/* test_cbt_meta.c - persistent bitmaps in a store's metadata (cbt_meta.h)
 * against a fake key/value store: base64 and header codecs and their
 * rejects, a bitmap big enough for several shards, a save that rewrites
 * only the bitmaps that changed, a save that dies half-way (the reader
 * still sees the old state whole, the next save removes the orphans), a
 * reader racing a save (it retries and sees the new state whole),
 * poisoning, and a LUN's bitmap set on top of it: write-intent, a
 * handover between two sets, and the move from an older sidecar file. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbt_bitmap.h"
#include "cbt_meta.h"
#include "cbt_set.h"
#include "cbt_sidecar.h"
#include "check.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)
#define GIB (1024ull * MIB)

/* ---- the fake store ---- */

#define FAKE_MAX 4096

struct fake {
	pthread_mutex_t lock;
	unsigned n;
	char *key[FAKE_MAX], *val[FAKE_MAX];
	unsigned sets;		/* set calls that wrote */
	int fail_after;		/* > 0: set number fail_after fails (once) */
	bool fail_all;
	/* called (unlocked) on the first get of hook_key */
	const char *hook_key;
	void (*hook)(void);
};

static struct fake F = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void fake_reset(void)
{
	pthread_mutex_lock(&F.lock);
	for (unsigned i = 0; i < F.n; i++) {
		free(F.key[i]);
		free(F.val[i]);
	}
	F.n = 0;
	F.sets = 0;
	F.fail_after = 0;
	F.fail_all = false;
	F.hook_key = NULL;
	pthread_mutex_unlock(&F.lock);
}

static int find(const char *key)
{
	for (unsigned i = 0; i < F.n; i++)
		if (!strcmp(F.key[i], key))
			return (int)i;
	return -1;
}

static int fake_get(void *ctx, const char *key, char **val)
{
	int i, err = 0;

	(void)ctx;
	if (F.hook_key && !strcmp(F.hook_key, key)) {
		F.hook_key = NULL;
		F.hook();
	}
	pthread_mutex_lock(&F.lock);
	i = find(key);
	if (i < 0)
		err = -ENOENT;
	else
		*val = strdup(F.val[i]);
	pthread_mutex_unlock(&F.lock);
	return err;
}

static int fake_set(void *ctx, const char *key, const char *val)
{
	int i;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	if (F.fail_all || (F.fail_after && --F.fail_after == 0)) {
		pthread_mutex_unlock(&F.lock);
		return -EIO;
	}
	i = find(key);
	if (!val) {
		if (i >= 0) {
			free(F.key[i]);
			free(F.val[i]);
			F.key[i] = F.key[F.n - 1];
			F.val[i] = F.val[F.n - 1];
			F.n--;
		}
	} else if (i >= 0) {
		free(F.val[i]);
		F.val[i] = strdup(val);
	} else if (F.n < FAKE_MAX) {
		F.key[F.n] = strdup(key);
		F.val[F.n++] = strdup(val);
	}
	F.sets++;
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static int fake_list(void *ctx, const char *prefix, char ***keys, unsigned *n)
{
	char **out;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	out = calloc(F.n + 1, sizeof(*out));
	*n = 0;
	for (unsigned i = 0; i < F.n; i++)
		if (!strncmp(F.key[i], prefix, strlen(prefix)))
			out[(*n)++] = strdup(F.key[i]);
	pthread_mutex_unlock(&F.lock);
	*keys = out;
	return 0;
}

static const struct cbt_meta_ops fake_ops = {
	.get = fake_get, .set = fake_set, .list = fake_list,
};
static const struct cbt_meta_ops fake_ops_nolist = {
	.get = fake_get, .set = fake_set,
};

/* Keys starting with prefix. */
static unsigned count_keys(const char *prefix)
{
	unsigned c = 0;

	pthread_mutex_lock(&F.lock);
	for (unsigned i = 0; i < F.n; i++)
		c += !strncmp(F.key[i], prefix, strlen(prefix));
	pthread_mutex_unlock(&F.lock);
	return c;
}

static bool has_key(const char *key)
{
	bool r;

	pthread_mutex_lock(&F.lock);
	r = find(key) >= 0;
	pthread_mutex_unlock(&F.lock);
	return r;
}

static char *header_text(void)
{
	char *v = NULL;

	return fake_get(NULL, CBT_META_HEADER_KEY, &v) ? NULL : v;
}

/* ---- codecs ---- */

static void test_base64(void)
{
	uint8_t in[7] = { 0xff, 0x00, 0x80, 0x7f, 0x01, 0xfe, 0x55 }, out[16];
	char enc[16];
	size_t n;

	for (size_t len = 0; len <= sizeof(in); len++) {
		cbt_meta_b64_encode(in, len, enc);
		CHECK(strlen(enc) == (len + 2) / 3 * 4);
		CHECK(cbt_meta_b64_decode(enc, strlen(enc), out, &n) == 0 &&
		      n == len && !memcmp(in, out, len), "len %zu", len);
	}
	cbt_meta_b64_encode((const uint8_t *)"hello", 5, enc);
	CHECK(!strcmp(enc, "aGVsbG8="));
	CHECK(cbt_meta_b64_decode("aGVsbG8", 7, out, &n) == -EINVAL);
	CHECK(cbt_meta_b64_decode("aGVsbG9=", 8, out, &n) == -EINVAL,
	      "non-canonical pad bits");
	CHECK(cbt_meta_b64_decode("aG=sbG8=", 8, out, &n) == -EINVAL);
	CHECK(cbt_meta_b64_decode("aGVs\nG8=", 8, out, &n) == -EINVAL);
	CHECK(cbt_meta_b64_decode("=GVsbG8=", 8, out, &n) == -EINVAL);
	CHECK(cbt_meta_b64_decode("aGV=bG8=", 8, out, &n) == -EINVAL,
	      "padding only at the end");
}

static void test_header(void)
{
	struct cbt_meta_header *h = calloc(1, sizeof(*h));
	const char *why;
	char *text;
	static const char good[] =
		"holdfast-bitmaps 1\ngeneration 7\nsize 67108864\n"
		"bitmap daily 7 65536 1 184 0a1b2c3d\n"
		"bitmap big.one_2-x 3 4096 6 131142 ffffffff\n";
	static const char *bad[] = {
		"",
		"holdfast-bitmaps 2\ngeneration 1\nsize 0\n",
		"holdfast-bitmaps 1\ngeneration 1\nsize 0",
		"holdfast-bitmaps 1\ngeneration 0\nsize 0\n",
		"holdfast-bitmaps 1\ngeneration 01\nsize 0\n",
		"holdfast-bitmaps 1\ngeneration 1\nsize -1\n",
		"holdfast-bitmaps 1\ngeneration 1\n",
		"holdfast-bitmaps 1\ngeneration 99999999999999999999\nsize 0\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 3 65536 1 10 00000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 0 65536 1 10 00000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 1 65535 1 10 00000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 1 65536 2 10 00000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 1 65536 0 0 00000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 1 65536 1 10 0000000G\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 1 65536 1 10 ABCDEF00\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 1 65536 1 10 000000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a/b 1 65536 1 10 00000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 1 65536 1 10 00000000\n"
		"bitmap a 2 65536 1 10 00000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap a 1 65536 1 10 00000000\n"
		"poisoned\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap  a 1 65536 1 10 00000000\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nextra\n",
		"holdfast-bitmaps 1\ngeneration 2\nsize 0\nbitmap "
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		" 1 65536 1 10 00000000\n",
	};

	CHECK(cbt_meta_header_parse(good, h, &why) == 0, "%s", why);
	CHECK(h->generation == 7 && h->size == 64 * MIB && h->n == 2 &&
	      !h->poisoned);
	CHECK(!strcmp(h->e[1].name, "big.one_2-x") && h->e[1].gen == 3 &&
	      h->e[1].granularity == 4096 && h->e[1].shards == 6 &&
	      h->e[1].bytes == 131142 && h->e[1].crc == 0xffffffff);
	CHECK(h->e[0].crc == 0x0a1b2c3d);
	CHECK(cbt_meta_header_format(h, &text) == 0 && !strcmp(text, good),
	      "format(parse(x)) == x");
	free(text);
	h->poisoned = true;
	CHECK(cbt_meta_header_format(h, &text) == 0 &&
	      strstr(text, "size 67108864\npoisoned\nbitmap daily"));
	CHECK(cbt_meta_header_parse(text, h, &why) == 0 && h->poisoned &&
	      h->n == 2);
	free(text);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(cbt_meta_header_parse(bad[i], h, &why) == -EINVAL && why,
		      "bad[%zu] accepted", i);
	free(h);
}

/* ---- save and load ---- */

static struct cbt_bitmap *pbitmap(const char *name, uint64_t size,
				  uint32_t gran)
{
	struct cbt_bitmap *b = cbt_bitmap_new(name, size, gran, true);

	b->persistent = true;
	return b;
}

/* Load through a fresh reader; returns the number of bitmaps or -errno.
 * The bitmap called name is returned in *out (others freed). */
static int load(const char *name, struct cbt_bitmap **out, uint64_t *size)
{
	struct cbt_meta *r = cbt_meta_new(&fake_ops, NULL);
	struct cbt_bitmap **bms;
	unsigned n;
	uint64_t sz;
	const char *why;
	int err = cbt_meta_load(r, &bms, &n, &sz, &why);

	cbt_meta_free(r);
	if (out)
		*out = NULL;
	if (err)
		return err;
	for (unsigned i = 0; i < n; i++) {
		if (out && name && !strcmp(bms[i]->name, name) && !*out)
			*out = bms[i];
		else
			cbt_bitmap_free(bms[i]);
	}
	free(bms);
	if (size)
		*size = sz;
	return (int)n;
}

static bool same_bits(const struct cbt_bitmap *a, const struct cbt_bitmap *b)
{
	if (a->nchunks != b->nchunks || a->granularity != b->granularity)
		return false;
	for (uint64_t c = 0; c < a->nchunks; c++)
		if (cbt_bitmap_test_chunk(a, c) != cbt_bitmap_test_chunk(b, c))
			return false;
	return true;
}

static void test_save_load_shards(void)
{
	struct cbt_meta *m;
	struct cbt_bitmap *b[2], *got;
	char key[160], *h1, *h2;
	uint64_t size = 0;

	fake_reset();
	m = cbt_meta_new(&fake_ops, NULL);
	/* 4 GiB in 4 KiB chunks: 128 KiB of bits, six shards */
	b[0] = pbitmap("big", 4 * GIB, 4 * KIB);
	b[1] = pbitmap("small", 4 * GIB, 64 * KIB);
	cbt_bitmap_mark(b[0], 0, 1);
	cbt_bitmap_mark(b[0], 1 * GIB + 4 * KIB, 8 * KIB);
	cbt_bitmap_mark(b[0], 4 * GIB - 1, 1);		/* the last chunk */
	cbt_bitmap_mark(b[1], 2 * GIB, 1);
	atomic_store(&b[1]->enabled, false);
	CHECK(load(NULL, NULL, NULL) == -ENOENT, "nothing stored yet");
	CHECK(cbt_meta_save(m, b, 2, 4 * GIB) == 0);
	CHECK(count_keys(CBT_META_SHARD_PREFIX "big.1.") == 6,
	      "%u shards", count_keys(CBT_META_SHARD_PREFIX "big.1."));
	CHECK(has_key(CBT_META_SHARD_PREFIX "small.1.0") &&
	      !has_key(CBT_META_SHARD_PREFIX "small.1.1"));
	/* no value near 64 KiB */
	pthread_mutex_lock(&F.lock);
	for (unsigned i = 0; i < F.n; i++)
		CHECK(strlen(F.val[i]) <= 32768, "%s: %zu", F.key[i],
		      strlen(F.val[i]));
	pthread_mutex_unlock(&F.lock);
	CHECK(load("big", &got, &size) == 2 && got && size == 4 * GIB);
	if (got) {
		CHECK(same_bits(got, b[0]) && got->persistent &&
		      atomic_load(&got->enabled));
		cbt_bitmap_free(got);
	}
	CHECK(load("small", &got, NULL) == 2 && got);
	if (got) {
		CHECK(same_bits(got, b[1]) && !atomic_load(&got->enabled));
		cbt_bitmap_free(got);
	}

	/* only "big" changes: "small" keeps its generation-1 shard, big's
	 * generation-1 shards go */
	h1 = header_text();
	cbt_bitmap_mark(b[0], 3 * GIB, 1);
	F.sets = 0;
	CHECK(cbt_meta_save(m, b, 2, 4 * GIB) == 0);
	CHECK(F.sets == 6 + 1, "6 shards and the header: %u", F.sets);
	CHECK(count_keys(CBT_META_SHARD_PREFIX "big.1.") == 6,
	      "the old generation goes after the save");
	CHECK(load("big", &got, NULL) == 2 && got &&
	      cbt_bitmap_test(got, 3 * GIB), "the new state is current");
	cbt_bitmap_free(got);
	cbt_meta_cleanup(m);
	CHECK(F.sets == 6 + 1 + 6, "then 6 removals: %u", F.sets);
	CHECK(count_keys(CBT_META_SHARD_PREFIX "big.1.") == 0 &&
	      count_keys(CBT_META_SHARD_PREFIX "big.2.") == 6);
	CHECK(has_key(CBT_META_SHARD_PREFIX "small.1.0") &&
	      !has_key(CBT_META_SHARD_PREFIX "small.2.0"),
	      "an unchanged bitmap is not rewritten");
	h2 = header_text();
	CHECK(h1 && h2 && strstr(h2, "generation 2\n") &&
	      strstr(h2, "bitmap small 1 65536 1 "));
	free(h1);
	free(h2);
	/* nothing changed: only the header is written */
	F.sets = 0;
	CHECK(cbt_meta_save(m, b, 2, 4 * GIB) == 0 && F.sets == 1);
	cbt_meta_cleanup(m);
	CHECK(F.sets == 1, "nothing to remove: %u", F.sets);
	CHECK(load("big", &got, NULL) == 2 && got && same_bits(got, b[0]));
	cbt_bitmap_free(got);

	/* a shard that went bad: refused, not half used */
	snprintf(key, sizeof(key), CBT_META_SHARD_PREFIX "big.2.3");
	{
		char *v = NULL;

		CHECK(fake_get(NULL, key, &v) == 0);
		if (v) {
			v[10] = v[10] == 'A' ? 'B' : 'A';
			fake_set(NULL, key, v);
			free(v);
		}
	}
	CHECK(load(NULL, NULL, NULL) == -EINVAL, "checksum mismatch");
	fake_set(NULL, key, NULL);
	CHECK(load(NULL, NULL, NULL) == -EINVAL, "missing shard");

	/* no bitmap left: header and every shard removed */
	CHECK(cbt_meta_save(m, b, 0, 4 * GIB) == 0);
	CHECK(count_keys("holdfast.") == 0, "%u keys left",
	      count_keys("holdfast."));
	CHECK(load(NULL, NULL, NULL) == -ENOENT);
	cbt_meta_free(m);
	cbt_bitmap_free(b[0]);
	cbt_bitmap_free(b[1]);
}

static void test_torn_save(void)
{
	struct cbt_meta *m;
	struct cbt_bitmap *b, *got;
	char *before, *after;

	fake_reset();
	m = cbt_meta_new(&fake_ops, NULL);
	b = pbitmap("big", 4 * GIB, 4 * KIB);
	cbt_bitmap_mark(b, 5 * MIB, 1);
	CHECK(cbt_meta_save(m, &b, 1, 4 * GIB) == 0);
	before = header_text();
	/* the next save dies after three of its six shards */
	cbt_bitmap_mark(b, 2 * GIB, 1);
	F.fail_after = 4;
	CHECK(cbt_meta_save(m, &b, 1, 4 * GIB) == -EIO);
	F.fail_after = 0;
	after = header_text();
	CHECK(before && after && !strcmp(before, after), "header untouched");
	CHECK(count_keys(CBT_META_SHARD_PREFIX "big.2.") == 3, "orphans");
	/* a reader sees the old state whole */
	CHECK(load("big", &got, NULL) == 1 && got &&
	      cbt_bitmap_test(got, 5 * MIB) && !cbt_bitmap_test(got, 2 * GIB));
	cbt_bitmap_free(got);
	/* the header switch itself fails: outcome unknown, read again */
	F.fail_after = 7;
	CHECK(cbt_meta_save(m, &b, 1, 4 * GIB) == -EIO);
	F.fail_after = 0;
	CHECK(cbt_meta_save(m, &b, 1, 4 * GIB) == 0);
	CHECK(load("big", &got, NULL) == 1 && got &&
	      cbt_bitmap_test(got, 2 * GIB));
	cbt_bitmap_free(got);
	cbt_meta_cleanup(m);
	CHECK(count_keys(CBT_META_SHARD_PREFIX) == 6,
	      "only the current shards remain: %u",
	      count_keys(CBT_META_SHARD_PREFIX));
	free(before);
	free(after);
	cbt_meta_free(m);

	/* a new owner (after a takeover) removes what a dead one left */
	fake_set(NULL, CBT_META_SHARD_PREFIX "big.77.0", "AAAA");
	fake_set(NULL, CBT_META_SHARD_PREFIX "gone.3.0", "AAAA");
	m = cbt_meta_new(&fake_ops, NULL);
	{
		struct cbt_bitmap **bms;
		unsigned n;
		uint64_t sz;
		const char *why;

		CHECK(cbt_meta_load(m, &bms, &n, &sz, &why) == 0 && n == 1);
		cbt_bitmap_mark(bms[0], 3 * GIB, 1);
		CHECK(cbt_meta_save(m, bms, 1, 4 * GIB) == 0);
		cbt_meta_cleanup(m);
		CHECK(!has_key(CBT_META_SHARD_PREFIX "big.77.0") &&
		      !has_key(CBT_META_SHARD_PREFIX "gone.3.0"));
		CHECK(count_keys(CBT_META_SHARD_PREFIX) == 6);
		cbt_bitmap_free(bms[0]);
		free(bms);
	}
	cbt_meta_free(m);
	/* without list, a later save at the same generation overwrites
	 * the orphans (and the reader never looks at them) */
	m = cbt_meta_new(&fake_ops_nolist, NULL);
	{
		struct cbt_bitmap **bms;
		unsigned n;
		uint64_t sz;
		const char *why;

		CHECK(cbt_meta_load(m, &bms, &n, &sz, &why) == 0 && n == 1);
		cbt_bitmap_mark(bms[0], 1 * GIB, 1);
		CHECK(cbt_meta_save(m, bms, 1, 4 * GIB) == 0);
		CHECK(load("big", &got, NULL) == 1 && got &&
		      cbt_bitmap_test(got, 1 * GIB) &&
		      cbt_bitmap_test(got, 3 * GIB));
		cbt_bitmap_free(got);
		cbt_bitmap_free(bms[0]);
		free(bms);
	}
	cbt_meta_free(m);
	cbt_bitmap_free(b);
}

/* A reader that starts on one generation while the owner switches to the
 * next and removes the old shards: it retries and sees the new state. */
static struct cbt_meta *race_writer;
static struct cbt_bitmap *race_bm;

static void race_save(void)
{
	cbt_bitmap_mark(race_bm, 7 * MIB, 1);
	CHECK(cbt_meta_save(race_writer, &race_bm, 1, 4 * GIB) == 0);
	cbt_meta_cleanup(race_writer);	/* generation 1 is gone */
}

static void test_reader_races_save(void)
{
	struct cbt_bitmap *got;

	fake_reset();
	race_writer = cbt_meta_new(&fake_ops, NULL);
	race_bm = pbitmap("big", 4 * GIB, 4 * KIB);
	cbt_bitmap_mark(race_bm, 1 * MIB, 1);
	CHECK(cbt_meta_save(race_writer, &race_bm, 1, 4 * GIB) == 0);
	/* the reader has the generation-1 header; before it reads shard 2
	 * the writer saves generation 2 and removes generation 1 */
	F.hook_key = CBT_META_SHARD_PREFIX "big.1.2";
	F.hook = race_save;
	CHECK(load("big", &got, NULL) == 1 && got);
	if (got) {
		CHECK(cbt_bitmap_test(got, 1 * MIB) &&
		      cbt_bitmap_test(got, 7 * MIB), "the new state, whole");
		cbt_bitmap_free(got);
	}
	CHECK(F.hook_key == NULL, "the race happened");
	cbt_meta_free(race_writer);
	cbt_bitmap_free(race_bm);
}

static void test_poison(void)
{
	struct cbt_meta *m;
	struct cbt_bitmap *b, *got;

	fake_reset();
	m = cbt_meta_new(&fake_ops, NULL);
	CHECK(cbt_meta_poison(m) == -ENOENT);
	b = pbitmap("p", 64 * MIB, 64 * KIB);
	cbt_bitmap_mark(b, 0, 1);
	CHECK(cbt_meta_save(m, &b, 1, 64 * MIB) == 0);
	CHECK(cbt_meta_poison(m) == 0);
	CHECK(load("p", &got, NULL) == 1 && got &&
	      atomic_load(&got->inconsistent) && cbt_bitmap_test(got, 0));
	cbt_bitmap_free(got);
	/* the next good save clears the poison (the set saves its bitmaps
	 * marked inconsistent by then) */
	atomic_store(&b->inconsistent, true);
	CHECK(cbt_meta_save(m, &b, 1, 64 * MIB) == 0);
	{
		char *h = header_text();

		CHECK(h && !strstr(h, "poisoned"));
		free(h);
	}
	CHECK(load("p", &got, NULL) == 1 && got &&
	      atomic_load(&got->inconsistent));
	cbt_bitmap_free(got);
	cbt_meta_free(m);
	cbt_bitmap_free(b);
}

/* ---- a LUN's set on the metadata ---- */

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

static bool mark_wait(struct cbt_set *s, uint64_t off, uint64_t len,
		      struct waiter *x)
{
	memset(x, 0, sizeof(*x));
	sem_init(&x->sem, 0, 0);
	x->w.fn = waiter_done;
	x->res = 1;
	if (!cbt_set_mark(s, off, len))
		return false;
	cbt_set_wait(s, &x->w);
	return true;
}

static int stored(const char *name, uint64_t off)
{
	struct cbt_bitmap *got;
	int r;

	if (load(name, &got, NULL) < 0 || !got)
		return -1;
	r = cbt_bitmap_test(got, off);
	cbt_bitmap_free(got);
	return r;
}

static void test_set_on_meta(void)
{
	struct cbt_set *a, *b;
	struct waiter x;
	const char *why;

	fake_reset();
	CHECK(cbt_set_new_meta(&fake_ops, NULL, "fake", NULL, 64 * MIB, &a,
			       &why) == 0);
	CHECK(cbt_set_new_meta(&fake_ops, NULL, "fake", NULL, 64 * MIB, &b,
			       &why) == 0);
	cbt_set_pause(b, true);		/* B: standby */
	CHECK(!strcmp(cbt_set_store_label(a), "fake"));
	CHECK(cbt_set_add(a, "daily", 64 * KIB, true, true) == 0);
	CHECK(has_key(CBT_META_HEADER_KEY) && stored("daily", 0) == 0);
	/* write-intent: the bit is in the metadata before the write may
	 * be acknowledged; a second write to the chunk does not wait */
	CHECK(mark_wait(a, 1 * MIB, 4096, &x));
	CHECK(wait_for(&x) == 0 && x.res == 0);
	CHECK(stored("daily", 1 * MIB) == 1);
	CHECK(!mark_wait(a, 1 * MIB + 4096, 4096, &x));
	/* B, paused, writes nothing */
	CHECK(cbt_set_add(b, "mine", 64 * KIB, true, true) == 0);
	CHECK(stored("mine", 0) == -1, "a paused set leaves the metadata alone");
	CHECK(cbt_set_remove(b, "mine") == 0);
	/* handover to B */
	CHECK(cbt_set_save(a) == 0);
	cbt_set_pause(a, true);
	CHECK(cbt_set_reload(b, &why) == 0, "%s", why ? why : "");
	cbt_set_pause(b, false);
	CHECK(cbt_set_find(b, "daily") &&
	      cbt_bitmap_test(cbt_set_find(b, "daily"), 1 * MIB));
	CHECK(!mark_wait(b, 1 * MIB, 1, &x), "loaded bits are durable");
	CHECK(mark_wait(b, 9 * MIB, 1, &x));
	CHECK(wait_for(&x) == 0 && x.res == 0 && stored("daily", 9 * MIB) == 1);
	/* A "dies"; a new set (a restart) reads B's state */
	cbt_set_free(a);
	CHECK(cbt_set_new_meta(&fake_ops, NULL, "fake", NULL, 64 * MIB, &a,
			       &why) == 0);
	CHECK(cbt_set_find(a, "daily") &&
	      cbt_bitmap_test(cbt_set_find(a, "daily"), 9 * MIB));
	cbt_set_free(a);
	/* the store fails: inconsistent, poisoned, writes not held */
	F.fail_all = true;
	CHECK(mark_wait(b, 20 * MIB, 1, &x));
	CHECK(wait_for(&x) == 0 && x.res < 0);
	CHECK(atomic_load(&cbt_set_find(b, "daily")->inconsistent));
	CHECK(!mark_wait(b, 30 * MIB, 1, &x), "broken: no waiting");
	F.fail_all = false;
	CHECK(cbt_set_clear(b, "daily") == 0);
	CHECK(!atomic_load(&cbt_set_find(b, "daily")->inconsistent));
	CHECK(stored("daily", 9 * MIB) == 0);
	CHECK(cbt_set_remove(b, "daily") == 0);
	CHECK(count_keys("holdfast.") == 0, "%u keys left",
	      count_keys("holdfast."));
	cbt_set_free(b);
	/* poisoned while it could not be written */
	fake_reset();
	CHECK(cbt_set_new_meta(&fake_ops, NULL, "fake", NULL, 64 * MIB, &a,
			       &why) == 0);
	CHECK(cbt_set_add(a, "p", 64 * KIB, true, true) == 0);
	F.fail_after = 1;	/* the shard fails, the poison gets through */
	CHECK(mark_wait(a, 0, 1, &x));
	CHECK(wait_for(&x) == 0 && x.res < 0);
	F.fail_after = 0;
	{
		struct cbt_bitmap *got;

		CHECK(load("p", &got, NULL) == 1 && got &&
		      atomic_load(&got->inconsistent), "poisoned in the store");
		cbt_bitmap_free(got);
	}
	cbt_set_free(a);
	/* a header that does not parse: the LUN is refused */
	fake_set(NULL, CBT_META_HEADER_KEY, "garbage\n");
	CHECK(cbt_set_new_meta(&fake_ops, NULL, "fake", NULL, 64 * MIB, &a,
			       &why) == -EINVAL && why);
}

static void test_migrate_sidecar(void)
{
	char path[] = "/tmp/holdfast-cbtmeta-XXXXXX";
	struct cbt_bitmap *b = pbitmap("old", 64 * MIB, 64 * KIB);
	struct cbt_set *s;
	uint8_t *buf;
	size_t len;
	const char *why;
	int fd = mkstemp(path);

	fake_reset();
	close(fd);
	cbt_bitmap_mark(b, 3 * MIB, 1);
	CHECK(cbt_sidecar_encode(&b, 1, 64 * MIB, &buf, &len) == 0);
	CHECK(cbt_sidecar_write_file(path, buf, len) == 0);
	free(buf);
	CHECK(cbt_set_new_meta(&fake_ops, NULL, "fake", path, 64 * MIB, &s,
			       &why) == 0, "%s", why ? why : "");
	CHECK(cbt_set_find(s, "old") &&
	      cbt_bitmap_test(cbt_set_find(s, "old"), 3 * MIB));
	CHECK(stored("old", 3 * MIB) == 1, "moved into the metadata");
	CHECK(access(path, F_OK) != 0, "the sidecar is gone");
	cbt_set_free(s);
	cbt_bitmap_free(b);
	unlink(path);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_base64();
	test_header();
	test_save_load_shards();
	test_torn_save();
	test_reader_races_save();
	test_poison();
	test_set_on_meta();
	test_migrate_sidecar();
	fake_reset();
	return CHECK_SUMMARY("test_cbt_meta");
}
