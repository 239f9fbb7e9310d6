/* fuzz_cbt_meta.c - libFuzzer harness for the persistent bitmaps kept in
 * a store's metadata (target/cbt/cbt_meta.c): the header parser, the
 * base64 shard decoder and the shards' reassembly, all of which read
 * values any client allowed to open the RBD image can set.
 *
 * The input is read two ways against an in-memory store:
 *   raw:   the header value up to the first NUL, then NUL-separated values
 *          handed out, in order, to every shard the loader asks for;
 *   fixed: the header value up to the first NUL, then raw encoding bytes
 *          cut among the header's bitmaps in order; the harness makes each
 *          header line, each bitmap's sidecar checksum and the shards agree
 *          with those bytes, so mutations reach the sidecar decoder behind
 *          the checksums.
 * Whatever loads must be sane (geometry, dirty count = extents), a header
 * that parses must format back to the same text, and what loads must save
 * and load again to the same bits. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbt_bitmap.h"
#include "cbt_meta.h"
#include "cbt_sidecar.h"
#include "crc32c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXV 512

struct store {
	unsigned n;
	char *key[MAXV], *val[MAXV];
	/* raw mode: values handed out to shard keys in order */
	unsigned nraw, next;
	char *raw[MAXV];
};

static int find(struct store *s, const char *key)
{
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->key[i], key))
			return (int)i;
	return -1;
}

static int st_get(void *ctx, const char *key, char **val)
{
	struct store *s = ctx;
	int i = find(s, key);

	if (i >= 0) {
		*val = strdup(s->val[i]);
		return *val ? 0 : -ENOMEM;
	}
	if (strncmp(key, CBT_META_SHARD_PREFIX, strlen(CBT_META_SHARD_PREFIX)) ||
	    s->next >= s->nraw)
		return -ENOENT;
	*val = strdup(s->raw[s->next++]);
	return *val ? 0 : -ENOMEM;
}

static int st_set(void *ctx, const char *key, const char *val)
{
	struct store *s = ctx;
	int i = find(s, key);

	if (i >= 0) {
		free(s->val[i]);
		if (val) {
			s->val[i] = strdup(val);
		} else {
			free(s->key[i]);
			s->key[i] = s->key[s->n - 1];
			s->val[i] = s->val[s->n - 1];
			s->n--;
		}
		return 0;
	}
	if (!val)
		return 0;
	if (s->n >= MAXV)
		return -ENOSPC;
	s->key[s->n] = strdup(key);
	s->val[s->n++] = strdup(val);
	return 0;
}

static const struct cbt_meta_ops st_ops = { .get = st_get, .set = st_set };

static void store_free(struct store *s)
{
	for (unsigned i = 0; i < s->n; i++) {
		free(s->key[i]);
		free(s->val[i]);
	}
	for (unsigned i = 0; i < s->nraw; i++)
		free(s->raw[i]);
	memset(s, 0, sizeof(*s));
}

static void check_bitmap(const struct cbt_bitmap *b, uint64_t lun_size)
{
	uint64_t off = 0, len, total = 0;

	if (b->size != lun_size || !b->persistent)
		__builtin_trap();
	while (cbt_bitmap_next_extent(b, &off, &len, true)) {
		total += len;
		off += len;
	}
	if (total != cbt_bitmap_dirty_bytes(b))
		__builtin_trap();
}

/* Load from s; on success check, save to a fresh store, load again and
 * compare. */
static void load_and_check(struct store *s)
{
	struct cbt_meta *m = cbt_meta_new(&st_ops, s), *m2;
	struct cbt_bitmap **bms = NULL, **again = NULL;
	struct store s2 = { 0 };
	unsigned n, n2;
	uint64_t size, size2;
	const char *why;

	if (!m)
		return;
	if (cbt_meta_load(m, &bms, &n, &size, &why) != 0) {
		cbt_meta_free(m);
		return;
	}
	for (unsigned i = 0; i < n; i++)
		check_bitmap(bms[i], size);
	m2 = cbt_meta_new(&st_ops, &s2);
	if (m2 && cbt_meta_save(m2, bms, n, size) == 0) {
		struct cbt_meta *m3 = cbt_meta_new(&st_ops, &s2);

		if (m3 && n && cbt_meta_load(m3, &again, &n2, &size2, &why) == 0) {
			if (n2 != n || size2 != size)
				__builtin_trap();
			for (unsigned i = 0; i < n; i++) {
				if (strcmp(again[i]->name, bms[i]->name) ||
				    again[i]->nchunks != bms[i]->nchunks ||
				    atomic_load(&again[i]->inconsistent) !=
				    atomic_load(&bms[i]->inconsistent))
					__builtin_trap();
				for (uint64_t c = 0; c < bms[i]->nchunks; c++)
					if (cbt_bitmap_test_chunk(again[i], c) !=
					    cbt_bitmap_test_chunk(bms[i], c))
						__builtin_trap();
				cbt_bitmap_free(again[i]);
			}
			free(again);
		} else if (m3 && n) {
			__builtin_trap();	/* our own save must load */
		}
		cbt_meta_free(m3);
	}
	cbt_meta_free(m2);
	store_free(&s2);
	for (unsigned i = 0; i < n; i++)
		cbt_bitmap_free(bms[i]);
	free(bms);
	cbt_meta_free(m);
}

static void raw_mode(const char *hdr, const uint8_t *rest, size_t len)
{
	struct store s = { 0 };
	size_t start = 0;

	st_set(&s, CBT_META_HEADER_KEY, hdr);
	for (size_t i = 0; i <= len && s.nraw < MAXV; i++)
		if (i == len || rest[i] == 0) {
			s.raw[s.nraw] = strndup((const char *)rest + start,
						i - start);
			if (!s.raw[s.nraw])
				break;
			s.nraw++;
			start = i + 1;
		}
	load_and_check(&s);
	store_free(&s);
}

static void fixed_mode(const char *hdr, const uint8_t *rest, size_t len)
{
	struct cbt_meta_header *h = malloc(sizeof(*h));
	struct store s = { 0 };
	char *b64 = malloc((CBT_META_SHARD_BYTES + 2) / 3 * 4 + 1), *text;
	const char *why;
	size_t pos = 0;

	if (!h || !b64 || cbt_meta_header_parse(hdr, h, &why) != 0) {
		free(h);
		free(b64);
		return;
	}
	/* the parser is canonical */
	if (cbt_meta_header_format(h, &text) == 0) {
		if (strcmp(text, hdr))
			__builtin_trap();
		free(text);
	}
	for (unsigned i = 0; i < h->n; i++) {
		struct cbt_meta_entry *e = &h->e[i];
		uint64_t take = len - pos < e->bytes ? len - pos : e->bytes;
		uint8_t *blob;
		char key[160];

		if (take == 0)
			take = 1;	/* the header's minimum */
		blob = calloc(1, take);
		if (!blob)
			break;
		memcpy(blob, rest + pos, take <= len - pos ? take : len - pos);
		pos += take <= len - pos ? take : len - pos;
		/* the sidecar's own checksum, where there is room for it */
		if (take >= 12) {
			uint32_t c = crc32c(0, blob + 8, take - 12);

			blob[take - 4] = (uint8_t)(c >> 24);
			blob[take - 3] = (uint8_t)(c >> 16);
			blob[take - 2] = (uint8_t)(c >> 8);
			blob[take - 1] = (uint8_t)c;
		}
		e->bytes = take;
		e->shards = (uint32_t)((take + CBT_META_SHARD_BYTES - 1) /
				       CBT_META_SHARD_BYTES);
		e->crc = crc32c(0, blob, take);
		for (uint32_t k = 0; k < e->shards; k++) {
			size_t off = (size_t)k * CBT_META_SHARD_BYTES;
			size_t sl = take - off < CBT_META_SHARD_BYTES
				    ? take - off : CBT_META_SHARD_BYTES;

			cbt_meta_b64_encode(blob + off, sl, b64);
			if (!cbt_meta_shard_key(key, sizeof(key), e->name,
						e->gen, k))
				st_set(&s, key, b64);
		}
		free(blob);
	}
	if (cbt_meta_header_format(h, &text) == 0) {
		st_set(&s, CBT_META_HEADER_KEY, text);
		free(text);
		load_and_check(&s);
	}
	store_free(&s);
	free(b64);
	free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t hl = nul ? (size_t)(nul - data) : size;
	char *hdr = strndup((const char *)data, hl);
	const uint8_t *rest = nul ? nul + 1 : data + size;
	size_t rlen = (size_t)(data + size - rest);

	if (!hdr)
		return 0;
	raw_mode(hdr, rest, rlen);
	fixed_mode(hdr, rest, rlen);
	free(hdr);
	return 0;
}
