/* cbt_meta.c - persistent bitmaps in the store's metadata (format and
 * protocol in cbt_meta.h).  The header parser and the shard decoder read
 * values any client of the image may have written: every number and
 * length is checked before it is used; see tests/fuzz/fuzz_cbt_meta.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cbt_meta.h"
#include "cbt_sidecar.h"
#include "crc32c.h"
#include "stack.h"

#define META_MAGIC "holdfast-bitmaps 1"
#define LOAD_ATTEMPTS 5
/* shard sets a save made unreferenced, removed by cbt_meta_cleanup() */
#define STALE_MAX CBT_SIDECAR_MAX_BITMAPS

/* ---- base64 ---- */

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void cbt_meta_b64_encode(const uint8_t *in, size_t len, char *out)
{
	size_t i, o = 0;

	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
			     in[i + 2];

		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = b64[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = '=';
		out[o++] = '=';
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = '=';
	}
	out[o] = 0;
}

static int b64_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int cbt_meta_b64_decode(const char *in, size_t len, uint8_t *out,
			size_t *outlen)
{
	size_t o = 0;

	if (len % 4)
		return -EINVAL;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;
		uint32_t w;

		for (int k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad)	/* '=' then a character */
				return -EINVAL;
			v[k] = b64_val(in[i + k]);
			if (v[k] < 0)
				return -EINVAL;
		}
		w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
		    (uint32_t)v[2] << 6 | (uint32_t)v[3];
		/* canonical: the bits a pad leaves over are zero */
		if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
			return -EINVAL;
		out[o++] = (uint8_t)(w >> 16);
		if (pad < 2)
			out[o++] = (uint8_t)(w >> 8);
		if (pad < 1)
			out[o++] = (uint8_t)w;
	}
	*outlen = o;
	return 0;
}

/* ---- the header ---- */

int cbt_meta_shard_key(char *out, size_t len, const char *name, uint64_t gen,
		       uint32_t i)
{
	int n = snprintf(out, len, CBT_META_SHARD_PREFIX "%s.%" PRIu64 ".%u",
			 name, gen, i);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* A decimal without sign or leading zeros, ending at a space or the end
 * of the token; *p advances past it. */
static bool parse_dec(const char **p, const char *end, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (s >= end || *s < '0' || *s > '9')
		return false;
	if (*s == '0' && s + 1 < end && s[1] >= '0' && s[1] <= '9')
		return false;
	while (s < end && *s >= '0' && *s <= '9') {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
		s++;
	}
	*p = s;
	*out = v;
	return true;
}

static bool expect(const char **p, const char *end, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(end - *p) < n || memcmp(*p, word, n))
		return false;
	*p += n;
	return true;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static int hdr_fail(const char **why, const char *reason)
{
	*why = reason;
	return -EINVAL;
}

static uint64_t shards_for(uint64_t bytes)
{
	return (bytes + CBT_META_SHARD_BYTES - 1) / CBT_META_SHARD_BYTES;
}

static int parse_bitmap_line(const char *p, const char *end,
			     struct cbt_meta_header *h, const char **why)
{
	struct cbt_meta_entry *e = &h->e[h->n];
	const char *name = p;
	uint64_t gen, gran, shards, bytes, crc = 0;
	size_t nl;

	while (p < end && name_char(*p))
		p++;
	nl = (size_t)(p - name);
	if (nl == 0 || nl > CBT_NAME_MAX || !expect(&p, end, " "))
		return hdr_fail(why, "bad bitmap name");
	if (!parse_dec(&p, end, &gen) || !expect(&p, end, " ") ||
	    !parse_dec(&p, end, &gran) || !expect(&p, end, " ") ||
	    !parse_dec(&p, end, &shards) || !expect(&p, end, " ") ||
	    !parse_dec(&p, end, &bytes) || !expect(&p, end, " "))
		return hdr_fail(why, "bad bitmap line");
	if (end - p != 8)
		return hdr_fail(why, "bad checksum");
	for (int k = 0; k < 8; k++) {
		char c = p[k];

		if (c >= '0' && c <= '9')
			crc = crc << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			crc = crc << 4 | (uint64_t)(c - 'a' + 10);
		else
			return hdr_fail(why, "bad checksum");
	}
	if (gen == 0 || gen > h->generation)
		return hdr_fail(why, "bitmap generation out of range");
	if (!cbt_granularity_valid(gran))
		return hdr_fail(why, "bad granularity");
	if (bytes == 0 || bytes > CBT_META_MAX_BYTES)
		return hdr_fail(why, "bad encoding length");
	if (shards != shards_for(bytes))
		return hdr_fail(why, "shard count does not match the length");
	memcpy(e->name, name, nl);
	e->name[nl] = 0;
	for (unsigned j = 0; j < h->n; j++)
		if (!strcmp(h->e[j].name, e->name))
			return hdr_fail(why, "duplicate bitmap name");
	e->gen = gen;
	e->granularity = (uint32_t)gran;
	e->shards = (uint32_t)shards;
	e->bytes = bytes;
	e->crc = (uint32_t)crc;
	h->n++;
	return 0;
}

int cbt_meta_header_parse(const char *text, struct cbt_meta_header *h,
			  const char **why)
{
	const char *p = text, *nl;
	unsigned line = 0;

	*why = NULL;
	memset(h, 0, offsetof(struct cbt_meta_header, e));
	while (*p) {
		const char *q;

		nl = strchr(p, '\n');
		if (!nl)
			return hdr_fail(why, "last line not terminated");
		q = p;
		switch (line++) {
		case 0:
			if (!expect(&q, nl, META_MAGIC) || q != nl)
				return hdr_fail(why, "bad magic");
			break;
		case 1:
			if (!expect(&q, nl, "generation ") ||
			    !parse_dec(&q, nl, &h->generation) || q != nl ||
			    h->generation == 0)
				return hdr_fail(why, "bad generation line");
			break;
		case 2:
			if (!expect(&q, nl, "size ") ||
			    !parse_dec(&q, nl, &h->size) || q != nl)
				return hdr_fail(why, "bad size line");
			break;
		default:
			if (line == 4 && nl - q == 8 && !memcmp(q, "poisoned", 8)) {
				h->poisoned = true;
				break;
			}
			if (!expect(&q, nl, "bitmap "))
				return hdr_fail(why, "unknown line");
			if (h->n >= CBT_SIDECAR_MAX_BITMAPS)
				return hdr_fail(why, "too many bitmaps");
			if (parse_bitmap_line(q, nl, h, why))
				return -EINVAL;
			break;
		}
		p = nl + 1;
	}
	if (line < 3)
		return hdr_fail(why, "truncated header");
	return 0;
}

int cbt_meta_header_format(const struct cbt_meta_header *h, char **text)
{
	size_t cap = 128 + (size_t)h->n * (CBT_NAME_MAX + 96), len;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(buf, cap, META_MAGIC "\ngeneration %" PRIu64
			       "\nsize %" PRIu64 "\n%s", h->generation,
			       h->size, h->poisoned ? "poisoned\n" : "");
	for (unsigned i = 0; i < h->n; i++) {
		const struct cbt_meta_entry *e = &h->e[i];

		len += (size_t)snprintf(buf + len, cap - len,
					"bitmap %s %" PRIu64 " %u %u %" PRIu64
					" %08x\n", e->name, e->gen,
					e->granularity, e->shards, e->bytes,
					e->crc);
	}
	*text = buf;
	return 0;
}

/* ---- the state of one LUN ---- */

struct cbt_meta {
	const struct cbt_meta_ops *ops;
	void *ctx;
	bool known;		/* cur is what the store holds */
	bool present;		/* the store has a header */
	bool gc;		/* unreferenced shards may exist */
	struct cbt_meta_header *cur;
	uint8_t *blob[CBT_SIDECAR_MAX_BITMAPS];	/* cur->e[i]'s encoding */
	unsigned nstale;
	struct cbt_meta_entry stale[STALE_MAX];
};

struct cbt_meta *cbt_meta_new(const struct cbt_meta_ops *ops, void *ctx)
{
	struct cbt_meta *m = calloc(1, sizeof(*m));

	if (!m || !(m->cur = calloc(1, sizeof(*m->cur)))) {
		free(m);
		return NULL;
	}
	m->ops = ops;
	m->ctx = ctx;
	m->gc = true;
	return m;
}

static void drop_blobs(struct cbt_meta *m)
{
	for (unsigned i = 0; i < CBT_SIDECAR_MAX_BITMAPS; i++) {
		free(m->blob[i]);
		m->blob[i] = NULL;
	}
}

void cbt_meta_free(struct cbt_meta *m)
{
	if (!m)
		return;
	drop_blobs(m);
	free(m->cur);
	free(m);
}

/* Read the shards of e into a malloc'd buffer of e->bytes.  -ENOENT: a
 * shard is missing (the caller looks at the header again). */
static int read_entry(struct cbt_meta *m, const struct cbt_meta_entry *e,
		      uint8_t **out, const char **why)
{
	uint8_t *buf = NULL;
	size_t have = 0, cap = 0;
	char key[160];
	int err = 0;

	for (uint32_t i = 0; i < e->shards; i++) {
		uint64_t want = i + 1 < e->shards ? CBT_META_SHARD_BYTES
				: e->bytes - (uint64_t)i * CBT_META_SHARD_BYTES;
		char *val = NULL;
		size_t vlen, got;

		if ((err = cbt_meta_shard_key(key, sizeof(key), e->name,
					      e->gen, i)))
			break;
		err = m->ops->get(m->ctx, key, &val);
		if (err) {
			if (err != -ENOENT)
				*why = "cannot read a bitmap shard";
			break;
		}
		vlen = strlen(val);
		if (vlen != (want + 2) / 3 * 4) {
			free(val);
			err = -EINVAL;
			*why = "bitmap shard of the wrong length";
			break;
		}
		/* grown as the shards come, never to a length only the
		 * header claims */
		if (have + want + 3 > cap) {
			size_t ncap = cap ? cap * 2 : 2 * CBT_META_SHARD_BYTES;
			uint8_t *nb;

			while (ncap < have + want + 3)
				ncap *= 2;
			nb = realloc(buf, ncap);
			if (!nb) {
				free(val);
				err = -ENOMEM;
				*why = "out of memory";
				break;
			}
			buf = nb;
			cap = ncap;
		}
		err = cbt_meta_b64_decode(val, vlen, buf + have, &got);
		free(val);
		if (err || got != want) {
			err = -EINVAL;
			*why = "bitmap shard is not base64";
			break;
		}
		have += got;
	}
	if (!err && crc32c(0, buf, have) != e->crc) {
		err = -ESTALE;	/* torn by a concurrent save, or corrupt */
		*why = "bitmap checksum mismatch";
	}
	if (err) {
		free(buf);
		return err;
	}
	*out = buf;
	return 0;
}

/* Decode e's encoding: exactly one bitmap, as the header describes it. */
static int decode_entry(const struct cbt_meta_header *h,
			const struct cbt_meta_entry *e, const uint8_t *blob,
			struct cbt_bitmap **out, const char **why)
{
	struct cbt_bitmap **bms;
	unsigned n;
	uint64_t size;
	int err = cbt_sidecar_decode(blob, e->bytes, &bms, &n, &size, why);

	if (err)
		return err;
	if (n != 1 || size != h->size || strcmp(bms[0]->name, e->name) ||
	    bms[0]->granularity != e->granularity) {
		for (unsigned i = 0; i < n; i++)
			cbt_bitmap_free(bms[i]);
		free(bms);
		*why = "bitmap shards do not match the header";
		return -EINVAL;
	}
	*out = bms[0];
	free(bms);
	if (h->poisoned)
		atomic_store(&(*out)->inconsistent, true);
	return 0;
}

static int get_header(struct cbt_meta *m, char **text,
		      struct cbt_meta_header *h, const char **why)
{
	int err = m->ops->get(m->ctx, CBT_META_HEADER_KEY, text);

	if (err) {
		if (err != -ENOENT)
			*why = "cannot read the bitmap header";
		return err;
	}
	err = cbt_meta_header_parse(*text, h, why);
	if (err) {
		free(*text);
		*text = NULL;
	}
	return err;
}

int cbt_meta_load(struct cbt_meta *m, struct cbt_bitmap ***outp,
		  unsigned *np, uint64_t *lun_size, const char **why)
{
	struct cbt_meta_header *h = malloc(sizeof(*h));
	struct cbt_bitmap **bms = NULL;
	uint8_t *blobs[CBT_SIDECAR_MAX_BITMAPS] = { 0 };
	char *text = NULL;
	unsigned got = 0;
	int err = 0;

	*why = NULL;
	if (!h) {
		*why = "out of memory";
		return -ENOMEM;
	}
	for (int attempt = 0; attempt < LOAD_ATTEMPTS; attempt++) {
		char *again = NULL;

		err = get_header(m, &text, h, why);
		if (err == -ENOENT) {
			m->known = true;
			m->present = false;
			memset(m->cur, 0, offsetof(struct cbt_meta_header, e));
			drop_blobs(m);
			free(h);
			return -ENOENT;
		}
		if (err)
			break;
		bms = calloc(h->n ? h->n : 1, sizeof(*bms));
		if (!bms) {
			err = -ENOMEM;
			*why = "out of memory";
			break;
		}
		for (got = 0; got < h->n; got++) {
			err = read_entry(m, &h->e[got], &blobs[got], why);
			if (!err)
				err = decode_entry(h, &h->e[got], blobs[got],
						   &bms[got], why);
			if (err)
				break;
		}
		if (!err)
			break;
		for (unsigned i = 0; i < CBT_SIDECAR_MAX_BITMAPS; i++) {
			if (i < got)
				cbt_bitmap_free(bms[i]);
			free(blobs[i]);
			blobs[i] = NULL;
		}
		free(bms);
		bms = NULL;
		got = 0;
		if (err != -ENOENT && err != -ESTALE)
			break;
		/* a shard gone or torn: a save switched the header under
		 * us (retry), or the store is damaged (the header is the
		 * same: give up) */
		{
			struct cbt_meta_header *h2 = malloc(sizeof(*h2));
			const char *w2;
			int e2 = h2 ? get_header(m, &again, h2, &w2) : -ENOMEM;

			free(h2);
			if (e2 || !strcmp(again, text)) {
				free(again);
				if (err == -ENOENT)
					*why = "a bitmap shard is missing";
				err = -EINVAL;
				break;
			}
			free(again);
		}
		free(text);
		text = NULL;
		err = -EINVAL;
		*why = "the bitmap header kept changing while it was read";
	}
	free(text);
	if (err) {
		free(h);
		if (err == -ESTALE || err == -ENOENT)
			err = -EINVAL;
		return err;
	}
	/* what the store holds now, for the next save */
	drop_blobs(m);
	*m->cur = *h;
	for (unsigned i = 0; i < h->n; i++)
		m->blob[i] = blobs[i];
	m->known = true;
	m->present = true;
	m->gc = true;		/* whatever the owner before left */
	m->nstale = 0;
	*outp = bms;
	*np = h->n;
	*lun_size = h->size;
	free(h);
	return 0;
}

bool cbt_meta_present(struct cbt_meta *m)
{
	char *text = NULL;
	int err;

	if (m->known)
		return m->present;
	err = m->ops->get(m->ctx, CBT_META_HEADER_KEY, &text);
	free(text);
	return err != -ENOENT;
}

/* Learn what the store holds (after a save of unknown outcome). */
static int refresh(struct cbt_meta *m)
{
	char *text = NULL;
	const char *why;
	int err = get_header(m, &text, m->cur, &why);

	free(text);
	drop_blobs(m);	/* shards unknown: nothing is reused */
	if (err == -ENOENT) {
		memset(m->cur, 0, offsetof(struct cbt_meta_header, e));
		m->present = false;
		m->known = true;
		return 0;
	}
	if (err == -EINVAL) {
		/* unreadable: start over from a generation of our own */
		memset(m->cur, 0, offsetof(struct cbt_meta_header, e));
		m->cur->generation = (uint64_t)time(NULL);
		m->present = true;
		m->known = true;
		m->gc = true;
		return 0;
	}
	if (!err) {
		m->present = true;
		m->known = true;
	}
	return err;
}

static void remove_shards(struct cbt_meta *m, const struct cbt_meta_entry *e)
{
	char key[160];

	for (uint32_t i = 0; i < e->shards; i++)
		if (cbt_meta_shard_key(key, sizeof(key), e->name, e->gen, i) ||
		    m->ops->set(m->ctx, key, NULL))
			m->gc = true;
}

static void remove_stale(struct cbt_meta *m)
{
	for (unsigned i = 0; i < m->nstale; i++)
		remove_shards(m, &m->stale[i]);
	m->nstale = 0;
}

static bool referenced(const struct cbt_meta_header *h, const char *key)
{
	char k[160];

	for (unsigned i = 0; i < h->n; i++) {
		size_t pl = strlen(CBT_META_SHARD_PREFIX) + strlen(h->e[i].name) + 1;

		if (strncmp(key, CBT_META_SHARD_PREFIX, strlen(CBT_META_SHARD_PREFIX)) ||
		    strlen(key) <= pl)
			continue;
		for (uint32_t s = 0; s < h->e[i].shards; s++)
			if (!cbt_meta_shard_key(k, sizeof(k), h->e[i].name,
						h->e[i].gen, s) &&
			    !strcmp(k, key))
				return true;
	}
	return false;
}

/* Remove every shard key the header does not name (left by a save that
 * died before its switch, or removals that failed). */
static void collect_garbage(struct cbt_meta *m, const struct cbt_meta_header *h)
{
	char **keys = NULL;
	unsigned n = 0;
	bool ok = true;

	if (!m->ops->list || m->ops->list(m->ctx, CBT_META_SHARD_PREFIX,
					  &keys, &n))
		return;
	for (unsigned i = 0; i < n; i++) {
		if (!referenced(h, keys[i]) && m->ops->set(m->ctx, keys[i], NULL))
			ok = false;
		free(keys[i]);
	}
	free(keys);
	if (ok)
		m->gc = false;
}

int cbt_meta_save(struct cbt_meta *m, struct cbt_bitmap *const *bms,
		  unsigned n, uint64_t lun_size)
{
	struct cbt_meta_header *h = NULL;
	uint8_t *blobs[CBT_SIDECAR_MAX_BITMAPS] = { 0 };
	char *text = NULL, *b64buf = NULL;
	char key[160];
	int err = 0;

	if (n > CBT_SIDECAR_MAX_BITMAPS)
		return -E2BIG;
	if (!m->known && (err = refresh(m)))
		return err;
	/* room for what this save may make stale */
	if (m->nstale + m->cur->n > STALE_MAX)
		remove_stale(m);
	h = calloc(1, sizeof(*h));
	b64buf = malloc((CBT_META_SHARD_BYTES + 2) / 3 * 4 + 1);
	if (!h || !b64buf) {
		err = -ENOMEM;
		goto out;
	}
	h->generation = m->cur->generation + 1;
	h->size = lun_size;
	for (unsigned i = 0; i < n; i++) {
		struct cbt_meta_entry *e = &h->e[i];
		const struct cbt_meta_entry *old = NULL;
		uint8_t *blob;
		size_t len;

		err = cbt_sidecar_encode(&bms[i], 1, lun_size, &blob, &len);
		if (err)
			goto out;
		blobs[i] = blob;
		if (len > CBT_META_MAX_BYTES) {
			err = -EFBIG;
			goto out;
		}
		for (unsigned j = 0; j < m->cur->n; j++)
			if (!strcmp(m->cur->e[j].name, bms[i]->name) &&
			    m->blob[j] && m->cur->e[j].bytes == len &&
			    !m->cur->poisoned && !memcmp(m->blob[j], blob, len))
				old = &m->cur->e[j];
		if (old) {	/* unchanged: its shards stay */
			*e = *old;
			continue;
		}
		snprintf(e->name, sizeof(e->name), "%s", bms[i]->name);
		e->gen = h->generation;
		e->granularity = bms[i]->granularity;
		e->bytes = len;
		e->shards = (uint32_t)shards_for(len);
		e->crc = crc32c(0, blob, len);
		for (uint32_t s = 0; s < e->shards; s++) {
			size_t off = (size_t)s * CBT_META_SHARD_BYTES;
			size_t sl = len - off < CBT_META_SHARD_BYTES
				    ? len - off : CBT_META_SHARD_BYTES;

			cbt_meta_b64_encode(blob + off, sl, b64buf);
			err = cbt_meta_shard_key(key, sizeof(key), e->name,
						 e->gen, s);
			if (!err)
				err = m->ops->set(m->ctx, key, b64buf);
			if (err) {
				m->gc = true;	/* some shards of G+1 exist */
				goto out;
			}
		}
	}
	h->n = n;
	/* the switch */
	if (n) {
		err = cbt_meta_header_format(h, &text);
		if (!err)
			err = m->ops->set(m->ctx, CBT_META_HEADER_KEY, text);
	} else if (m->present || m->cur->n || m->gc) {
		err = m->ops->set(m->ctx, CBT_META_HEADER_KEY, NULL);
	}
	if (err) {
		m->known = false;	/* it may have happened or not */
		m->gc = true;
		goto out;
	}
	/* the old generation's shards, now unreferenced: removed by
	 * cbt_meta_cleanup(), after the writes waiting for this save are
	 * released */
	for (unsigned j = 0; j < m->cur->n; j++) {
		bool kept = false;

		for (unsigned i = 0; i < n; i++)
			kept |= !strcmp(h->e[i].name, m->cur->e[j].name) &&
				h->e[i].gen == m->cur->e[j].gen;
		if (!kept)
			m->stale[m->nstale++] = m->cur->e[j];
	}
	drop_blobs(m);
	*m->cur = *h;
	for (unsigned i = 0; i < n; i++) {
		m->blob[i] = blobs[i];
		blobs[i] = NULL;
	}
	m->known = true;
	m->present = n > 0;
	if (!n)		/* nothing left: no hurry, no reason to wait */
		cbt_meta_cleanup(m);
out:
	for (unsigned i = 0; i < n; i++)
		free(blobs[i]);
	free(text);
	free(b64buf);
	free(h);
	return err;
}

void cbt_meta_cleanup(struct cbt_meta *m)
{
	while (cbt_meta_cleanup_step(m))
		;
}

bool cbt_meta_cleanup_step(struct cbt_meta *m)
{
	if (m->nstale) {
		remove_shards(m, &m->stale[--m->nstale]);
		return m->nstale || (m->gc && m->known && m->ops->list);
	}
	if (m->gc && m->known && m->ops->list)
		collect_garbage(m, m->cur);
	return false;
}

int cbt_meta_poison(struct cbt_meta *m)
{
	char *text = NULL;
	int err;

	if (!m->known) {
		err = refresh(m);
		if (err)
			return err;
	}
	if (!m->present)
		return -ENOENT;
	m->cur->poisoned = true;
	err = cbt_meta_header_format(m->cur, &text);
	if (!err)
		err = m->ops->set(m->ctx, CBT_META_HEADER_KEY, text);
	free(text);
	if (err)
		m->known = false;
	return err;
}

/* ---- the LUN's store ---- */

static struct backend *meta_store(void *ctx)
{
	struct backend *store = be_stack_store(ctx);

	return store && store->ops->meta_get && store->ops->meta_set ? store
								     : NULL;
}

bool cbt_meta_backend_usable(struct backend *root)
{
	return root && meta_store(root);
}

/* An RBD store answers -EAGAIN while it moves to a new client instance
 * (a fence): wait for it, a few seconds at most. */
#define EAGAIN_TRIES 100
#define EAGAIN_SLEEP_MS 50

static void nap(void)
{
	struct timespec ts = { 0, EAGAIN_SLEEP_MS * 1000000L };

	nanosleep(&ts, NULL);
}

static int be_get(void *ctx, const char *key, char **val)
{
	struct backend *store = meta_store(ctx);
	int err = -EOPNOTSUPP;

	for (int i = 0; store && i < EAGAIN_TRIES; i++) {
		err = store->ops->meta_get(store, key, val);
		if (err != -EAGAIN)
			break;
		nap();
	}
	return err;
}

static int be_set(void *ctx, const char *key, const char *val)
{
	struct backend *store = meta_store(ctx);
	int err = -EOPNOTSUPP;

	for (int i = 0; store && i < EAGAIN_TRIES; i++) {
		err = store->ops->meta_set(store, key, val);
		if (err != -EAGAIN)
			break;
		nap();
	}
	return err;
}

static int be_list(void *ctx, const char *prefix, char ***keys, unsigned *n)
{
	struct backend *store = meta_store(ctx);
	int err = -EOPNOTSUPP;

	for (int i = 0; store && store->ops->meta_list && i < EAGAIN_TRIES; i++) {
		err = store->ops->meta_list(store, prefix, keys, n);
		if (err != -EAGAIN)
			break;
		nap();
	}
	return err;
}

const struct cbt_meta_ops cbt_meta_backend_ops = {
	.get = be_get,
	.set = be_set,
	.list = be_list,
};
