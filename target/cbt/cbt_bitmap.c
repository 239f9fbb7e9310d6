/* cbt_bitmap.c - dirty bitmaps (cbt_bitmap.h).
 *
 * One bit per chunk in an array of 64-bit words; bit i of word w is chunk
 * w*64+i.  The hot path (cbt_bitmap_mark) reads a word before ORing it so
 * a write to an already-dirty chunk costs a load and no cache-line
 * transfer between reactors; only a clean-to-dirty transition does an
 * atomic OR and bumps the shared dirty counter. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbt_bitmap.h"

#define BITS_PER_WORD 64

int cbt_bitmap_mode_parse(const char *s, enum cbt_bitmap_mode *mode)
{
	if (!strcmp(s, "on-success") || !strcmp(s, "conditional"))
		*mode = CBT_MODE_ON_SUCCESS;
	else if (!strcmp(s, "always"))
		*mode = CBT_MODE_ALWAYS;
	else if (!strcmp(s, "never"))
		*mode = CBT_MODE_NEVER;
	else
		return -EINVAL;
	return 0;
}

const char *cbt_bitmap_mode_name(enum cbt_bitmap_mode mode)
{
	switch (mode) {
	case CBT_MODE_ON_SUCCESS:
		return "on-success";
	case CBT_MODE_ALWAYS:
		return "always";
	case CBT_MODE_NEVER:
		return "never";
	}
	return "?";
}

bool cbt_granularity_valid(uint64_t g)
{
	return g >= CBT_GRANULARITY_MIN && g <= CBT_GRANULARITY_MAX &&
	       (g & (g - 1)) == 0;
}

static uint64_t chunks_for(uint64_t size, unsigned shift)
{
	return (size + (1ull << shift) - 1) >> shift;
}

static struct cbt_bitmap *bitmap_alloc(const char *name, uint64_t size,
				       uint32_t granularity, bool enabled)
{
	struct cbt_bitmap *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->size = size;
	b->granularity = granularity;
	b->shift = (unsigned)__builtin_ctz(granularity);
	b->nchunks = chunks_for(size, b->shift);
	b->nwords = (b->nchunks + BITS_PER_WORD - 1) / BITS_PER_WORD;
	b->words = calloc(b->nwords ? b->nwords : 1, sizeof(uint64_t));
	if (!b->words) {
		free(b);
		return NULL;
	}
	atomic_init(&b->dirty, 0);
	atomic_init(&b->enabled, enabled);
	atomic_init(&b->inconsistent, false);
	atomic_init(&b->busy, false);
	atomic_init(&b->successor, NULL);
	return b;
}

static bool name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > CBT_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.'))
			return false;
	}
	return true;
}

struct cbt_bitmap *cbt_bitmap_new(const char *name, uint64_t size,
				  uint32_t granularity, bool enabled)
{
	struct cbt_bitmap *b;

	if (!name || !name_valid(name) || !cbt_granularity_valid(granularity)) {
		errno = EINVAL;
		return NULL;
	}
	b = bitmap_alloc(name, size, granularity, enabled);
	if (!b)
		errno = ENOMEM;
	return b;
}

void cbt_bitmap_free(struct cbt_bitmap *b)
{
	if (!b)
		return;
	cbt_bitmap_free(atomic_load(&b->successor));
	free((void *)b->words);
	free(b);
}

/* Set chunks [first, last] in b; returns how many were clean. */
static uint64_t set_chunks(struct cbt_bitmap *b, uint64_t first, uint64_t last)
{
	uint64_t fresh = 0;

	for (uint64_t w = first / BITS_PER_WORD; w <= last / BITS_PER_WORD; w++) {
		uint64_t lo = w == first / BITS_PER_WORD ? first % BITS_PER_WORD : 0;
		uint64_t hi = w == last / BITS_PER_WORD ? last % BITS_PER_WORD
							: BITS_PER_WORD - 1;
		uint64_t mask = (hi == 63 ? ~0ull : (1ull << (hi + 1)) - 1) &
				~((1ull << lo) - 1);
		/* acquire: a writer that finds the chunk already dirty must
		 * see what the writer that dirtied it did before (the
		 * persistence layer relies on it). */
		uint64_t old = atomic_load_explicit(&b->words[w],
						    memory_order_acquire);

		if ((old & mask) == mask)
			continue;
		old = atomic_fetch_or_explicit(&b->words[w], mask,
					       memory_order_acq_rel);
		fresh += (uint64_t)__builtin_popcountll(mask & ~old);
	}
	if (fresh)
		atomic_fetch_add_explicit(&b->dirty, fresh, memory_order_relaxed);
	return fresh;
}

static void reset_chunks(struct cbt_bitmap *b, uint64_t first, uint64_t last)
{
	uint64_t gone = 0;

	for (uint64_t w = first / BITS_PER_WORD; w <= last / BITS_PER_WORD; w++) {
		uint64_t lo = w == first / BITS_PER_WORD ? first % BITS_PER_WORD : 0;
		uint64_t hi = w == last / BITS_PER_WORD ? last % BITS_PER_WORD
							: BITS_PER_WORD - 1;
		uint64_t mask = (hi == 63 ? ~0ull : (1ull << (hi + 1)) - 1) &
				~((1ull << lo) - 1);
		uint64_t old = atomic_fetch_and_explicit(&b->words[w], ~mask,
							 memory_order_acq_rel);

		gone += (uint64_t)__builtin_popcountll(mask & old);
	}
	if (gone)
		atomic_fetch_sub_explicit(&b->dirty, gone, memory_order_relaxed);
}

/* Turn a byte range into an inclusive chunk range; false if empty. */
static bool range_chunks(const struct cbt_bitmap *b, uint64_t offset,
			 uint64_t len, uint64_t *first, uint64_t *last)
{
	uint64_t end;

	if (len == 0 || offset >= b->size)
		return false;
	end = len > b->size - offset ? b->size : offset + len;
	*first = offset >> b->shift;
	*last = (end - 1) >> b->shift;
	return true;
}

uint64_t cbt_bitmap_set_range(struct cbt_bitmap *b, uint64_t offset,
			      uint64_t len)
{
	uint64_t first, last;

	if (!range_chunks(b, offset, len, &first, &last))
		return 0;
	return set_chunks(b, first, last);
}

void cbt_bitmap_reset_range(struct cbt_bitmap *b, uint64_t offset,
			    uint64_t len)
{
	uint64_t first, last;

	if (range_chunks(b, offset, len, &first, &last))
		reset_chunks(b, first, last);
}

uint64_t cbt_bitmap_mark(struct cbt_bitmap *b, uint64_t offset, uint64_t len)
{
	struct cbt_bitmap *s =
		atomic_load_explicit(&b->successor, memory_order_acquire);
	uint64_t n;

	if (s)
		return cbt_bitmap_set_range(s, offset, len);
	if (!atomic_load_explicit(&b->enabled, memory_order_relaxed))
		return 0;
	n = cbt_bitmap_set_range(b, offset, len);
	/* A freeze may have been published while we set b's bits: record
	 * in the successor too, so the write is never only in the frozen
	 * set (belt and braces; freezing happens drained). */
	s = atomic_load_explicit(&b->successor, memory_order_acquire);
	if (s)
		n += cbt_bitmap_set_range(s, offset, len);
	return n;
}

int cbt_bitmap_clear(struct cbt_bitmap *b)
{
	if (atomic_load(&b->busy))
		return -EBUSY;
	if (b->nchunks)
		reset_chunks(b, 0, b->nchunks - 1);
	atomic_store(&b->inconsistent, false);
	return 0;
}

int cbt_bitmap_merge(struct cbt_bitmap *dst, const struct cbt_bitmap *src)
{
	uint64_t off = 0, len;

	if (dst == src)
		return 0;
	if (atomic_load(&dst->busy))
		return -EBUSY;
	if (dst->size != src->size)
		return -EINVAL;
	while (cbt_bitmap_next_extent(src, &off, &len, true)) {
		cbt_bitmap_set_range(dst, off, len);
		off += len;
	}
	if (atomic_load(&src->inconsistent))
		atomic_store(&dst->inconsistent, true);
	return 0;
}

int cbt_bitmap_resize(struct cbt_bitmap *b, uint64_t size)
{
	uint64_t nchunks = chunks_for(size, b->shift);
	uint64_t nwords = (nchunks + BITS_PER_WORD - 1) / BITS_PER_WORD;
	_Atomic uint64_t *words = calloc(nwords ? nwords : 1, sizeof(uint64_t));
	struct cbt_bitmap *s = atomic_load(&b->successor);
	uint64_t dirty = 0;

	if (!words)
		return -ENOMEM;
	if (s) {
		int err = cbt_bitmap_resize(s, size);

		if (err) {
			free((void *)words);
			return err;
		}
	}
	for (uint64_t w = 0; w < nwords && w < b->nwords; w++) {
		uint64_t v = atomic_load(&b->words[w]);

		if (w == nwords - 1 && nchunks % BITS_PER_WORD)
			v &= (1ull << (nchunks % BITS_PER_WORD)) - 1;
		atomic_init(&words[w], v);
		dirty += (uint64_t)__builtin_popcountll(v);
	}
	free((void *)b->words);
	b->words = words;
	b->nwords = nwords;
	b->nchunks = nchunks;
	b->size = size;
	atomic_store(&b->dirty, dirty);
	return 0;
}

/* Bytes covered by a set bit at the last chunk may be fewer than the
 * granularity; count them exactly. */
static uint64_t bytes_of_words(const struct cbt_bitmap *b, const uint64_t *w)
{
	uint64_t bits = 0, last;

	for (uint64_t i = 0; i < b->nwords; i++)
		bits += (uint64_t)__builtin_popcountll(w[i]);
	if (!b->nchunks || !bits)
		return 0;
	last = b->nchunks - 1;
	if (w[last / BITS_PER_WORD] >> (last % BITS_PER_WORD) & 1)
		return bits * b->granularity -
		       ((uint64_t)b->granularity * b->nchunks - b->size);
	return bits * b->granularity;
}

void cbt_bitmap_snapshot_words(const struct cbt_bitmap *b, uint64_t *out)
{
	const struct cbt_bitmap *s = atomic_load(&b->successor);

	for (uint64_t i = 0; i < b->nwords; i++) {
		out[i] = atomic_load_explicit(&b->words[i], memory_order_acquire);
		if (s)
			out[i] |= atomic_load_explicit(&s->words[i],
						       memory_order_acquire);
	}
}

uint64_t cbt_bitmap_dirty_bytes(const struct cbt_bitmap *b)
{
	uint64_t *w = malloc(b->nwords * sizeof(*w) + sizeof(*w));
	uint64_t bytes;

	if (!w)		/* cannot count: claim everything, never too little */
		return b->size;
	cbt_bitmap_snapshot_words(b, w);
	bytes = bytes_of_words(b, w);
	free(w);
	return bytes;
}

bool cbt_bitmap_test_chunk(const struct cbt_bitmap *b, uint64_t chunk)
{
	if (chunk >= b->nchunks)
		return false;
	return atomic_load_explicit(&b->words[chunk / BITS_PER_WORD],
				    memory_order_acquire) >>
		       (chunk % BITS_PER_WORD) & 1;
}

bool cbt_bitmap_test(const struct cbt_bitmap *b, uint64_t offset)
{
	return cbt_bitmap_test_chunk(b, offset >> b->shift);
}

/* First chunk >= from whose bit equals value; nchunks if none. */
static uint64_t find_chunk(const struct cbt_bitmap *b, uint64_t from, bool value)
{
	while (from < b->nchunks) {
		uint64_t w = atomic_load_explicit(&b->words[from / BITS_PER_WORD],
						  memory_order_acquire);

		if (!value)
			w = ~w;
		w &= ~0ull << (from % BITS_PER_WORD);
		if (w) {
			uint64_t c = from / BITS_PER_WORD * BITS_PER_WORD +
				     (uint64_t)__builtin_ctzll(w);

			return c < b->nchunks ? c : b->nchunks;
		}
		from = (from / BITS_PER_WORD + 1) * BITS_PER_WORD;
	}
	return b->nchunks;
}

bool cbt_bitmap_next_extent(const struct cbt_bitmap *b, uint64_t *offset,
			    uint64_t *len, bool want_dirty)
{
	uint64_t first, end_chunk, start, end;

	if (*offset >= b->size)
		return false;
	first = find_chunk(b, *offset >> b->shift, want_dirty);
	if (first >= b->nchunks)
		return false;
	end_chunk = find_chunk(b, first, !want_dirty);
	start = first << b->shift;
	if (start < *offset)
		start = *offset;
	end = end_chunk << b->shift;
	if (end > b->size || end_chunk >= b->nchunks)
		end = b->size;
	*offset = start;
	*len = end - start;
	return true;
}

int cbt_bitmap_freeze(struct cbt_bitmap *b)
{
	struct cbt_bitmap *s;

	if (atomic_load(&b->busy) || atomic_load(&b->successor))
		return -EBUSY;
	if (atomic_load(&b->inconsistent))
		return -EINVAL;
	s = bitmap_alloc(b->name, b->size, b->granularity, true);
	if (!s)
		return -ENOMEM;
	atomic_store(&b->busy, true);
	atomic_store_explicit(&b->successor, s, memory_order_release);
	return 0;
}

/* b |= s, chunk for chunk (same geometry). */
static void or_words(struct cbt_bitmap *b, const struct cbt_bitmap *s)
{
	uint64_t fresh = 0;

	for (uint64_t i = 0; i < b->nwords && i < s->nwords; i++) {
		uint64_t v = atomic_load(&s->words[i]);
		uint64_t old;

		if (!v)
			continue;
		old = atomic_fetch_or(&b->words[i], v);
		fresh += (uint64_t)__builtin_popcountll(v & ~old);
	}
	atomic_fetch_add(&b->dirty, fresh);
}

void cbt_bitmap_reclaim(struct cbt_bitmap *b, enum cbt_bitmap_mode mode,
			bool success, const struct cbt_bitmap *copied)
{
	struct cbt_bitmap *s = atomic_load(&b->successor);

	switch (mode) {
	case CBT_MODE_ON_SUCCESS:
		if (success && b->nchunks)
			reset_chunks(b, 0, b->nchunks - 1);
		break;
	case CBT_MODE_ALWAYS:
		for (uint64_t i = 0; copied && i < b->nwords && i < copied->nwords; i++) {
			uint64_t v = atomic_load(&copied->words[i]);
			uint64_t old = atomic_fetch_and(&b->words[i], ~v);

			atomic_fetch_sub(&b->dirty,
					 (uint64_t)__builtin_popcountll(old & v));
		}
		break;
	case CBT_MODE_NEVER:
		break;
	}
	if (s) {
		or_words(b, s);
		atomic_store_explicit(&b->successor, NULL, memory_order_release);
		/* A marker that loaded s just before it was unpublished has
		 * finished by now in a drained LUN; fold once more anyway. */
		or_words(b, s);
		cbt_bitmap_free(s);
	}
	atomic_store(&b->busy, false);
}

bool cbt_bitmap_range_is_set(const struct cbt_bitmap *b, uint64_t offset,
			     uint64_t len)
{
	uint64_t first, last;

	if (!range_chunks(b, offset, len, &first, &last))
		return true;
	for (uint64_t w = first / BITS_PER_WORD; w <= last / BITS_PER_WORD; w++) {
		uint64_t lo = w == first / BITS_PER_WORD ? first % BITS_PER_WORD : 0;
		uint64_t hi = w == last / BITS_PER_WORD ? last % BITS_PER_WORD
							: BITS_PER_WORD - 1;
		uint64_t mask = (hi == 63 ? ~0ull : (1ull << (hi + 1)) - 1) &
				~((1ull << lo) - 1);

		if ((atomic_load_explicit(&b->words[w], memory_order_acquire) &
		     mask) != mask)
			return false;
	}
	return true;
}

bool cbt_bitmap_recording(const struct cbt_bitmap *b)
{
	return atomic_load_explicit(&b->successor, memory_order_acquire) ||
	       atomic_load_explicit(&b->enabled, memory_order_relaxed);
}

void cbt_bitmap_copy_from(struct cbt_bitmap *b, const struct cbt_bitmap *src)
{
	uint64_t dirty = 0;

	for (uint64_t i = 0; i < b->nwords; i++) {
		uint64_t v = i < src->nwords ? atomic_load(&src->words[i]) : 0;

		atomic_store(&b->words[i], v);
		dirty += (uint64_t)__builtin_popcountll(v);
	}
	atomic_store(&b->dirty, dirty);
}

void cbt_bitmap_and(struct cbt_bitmap *b, const struct cbt_bitmap *src)
{
	uint64_t gone = 0;

	for (uint64_t i = 0; i < b->nwords; i++) {
		uint64_t v = i < src->nwords ? atomic_load(&src->words[i]) : 0;
		uint64_t old = atomic_fetch_and(&b->words[i], v);

		gone += (uint64_t)__builtin_popcountll(old & ~v);
	}
	atomic_fetch_sub(&b->dirty, gone);
}
