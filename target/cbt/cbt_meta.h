/* cbt_meta.h - persistent dirty bitmaps kept in the store's own metadata
 * (an RBD image's key/value metadata, backend_ops.meta_get/meta_set)
 * instead of a sidecar file, so every gateway in front of the image reads
 * the same bitmaps after a handover or a forced takeover.
 *
 * Values are text and size-limited in practice, so each bitmap is the
 * sidecar encoding of that one bitmap (cbt_sidecar.h, with its own magic,
 * LUN size and CRC32C), cut into shards of CBT_META_SHARD_BYTES bytes,
 * each stored base64 (RFC 4648, padded) under its own key:
 *
 *   holdfast.bitmap.<name>.<gen>.<i>    shard i (0-based) of bitmap <name>
 *                                       as written in generation <gen>
 *
 * One header key says which shards make up the current state:
 *
 *   holdfast.bitmaps
 *     holdfast-bitmaps 1
 *     generation <G>                     (decimal, >= 1; +1 per save)
 *     size <LUN bytes>
 *     poisoned                           (only once poisoned, see below)
 *     bitmap <name> <gen> <granularity> <shards> <bytes> <crc32c, 8 hex>
 *                                        (one line per bitmap, <= 256)
 *
 * Every number is decimal without leading zeros; every line ends in \n.
 * <bytes> is the length of the bitmap's sidecar encoding, <shards> =
 * ceil(<bytes> / CBT_META_SHARD_BYTES), the CRC32C is over the whole
 * encoding, and 1 <= <gen> <= <G>.
 *
 * A save never overwrites a key the header points at: the bitmaps that
 * changed are written as new shards under generation G+1, then the header
 * is replaced in one meta_set (the switch), then (cbt_meta_cleanup, once
 * the writes waiting for the save are released) the shards the new header
 * no longer names are removed.  A reader therefore sees the old or the new
 * state whole; a crash before the switch leaves unreferenced shards that
 * the next save overwrites or removes.  A bitmap that did not change keeps
 * its shards and generation (a save rewrites only what changed).
 *
 * A reader that meets a missing shard or a CRC mismatch (a save of the
 * owner removed old shards while it read) reads the header again and
 * retries while it keeps changing.
 *
 * Poisoned: a save failed; the header is rewritten with "poisoned" and
 * everything it names then loads as inconsistent (as a poisoned sidecar
 * does). */
#ifndef HOLDFAST_CBT_META_H
#define HOLDFAST_CBT_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbt_bitmap.h"

struct cbt_bitmap;

#define CBT_META_VERSION 1
#define CBT_META_HEADER_KEY "holdfast.bitmaps"
#define CBT_META_SHARD_PREFIX "holdfast.bitmap."
/* 24 KiB of encoding per shard: 32 KiB of base64, well under the 64 KiB
 * a metadata value should stay below */
#define CBT_META_SHARD_BYTES 24576u
/* the largest encoding of one bitmap (as the sidecar file's limit) */
#define CBT_META_MAX_BYTES (1ull << 30)

/* Where the values live.  ctx is the caller's.  get: 0 with *val a
 * malloc'd NUL-terminated string, -ENOENT when the key is not set, or
 * -errno.  set: replace the whole value at once; val NULL removes the key
 * (0 also when it was not set).  list (optional): every key that starts
 * with prefix, as a malloc'd array of malloc'd strings. */
struct cbt_meta_ops {
	int (*get)(void *ctx, const char *key, char **val);
	int (*set)(void *ctx, const char *key, const char *val);
	int (*list)(void *ctx, const char *prefix, char ***keys, unsigned *n);
};

/* The stores of a LUN's block stack: ctx is the LUN's root node
 * (struct backend *); each call goes to the store at the bottom
 * (be_stack_store) through its meta_get/meta_set/meta_list, retrying
 * -EAGAIN (an RBD image between two client instances) for a few seconds.
 * True when the store of root offers meta_get and meta_set. */
extern const struct cbt_meta_ops cbt_meta_backend_ops;
struct backend;
bool cbt_meta_backend_usable(struct backend *root);

struct cbt_meta_entry {
	char name[CBT_NAME_MAX + 1];
	uint64_t gen;
	uint32_t granularity;
	uint32_t shards;
	uint64_t bytes;
	uint32_t crc;
};

struct cbt_meta_header {
	uint64_t generation;
	uint64_t size;
	bool poisoned;
	unsigned n;
	struct cbt_meta_entry e[256];	/* CBT_SIDECAR_MAX_BITMAPS */
};

/* Parse a header value strictly (see above).  0, or -EINVAL with *why. */
int cbt_meta_header_parse(const char *text, struct cbt_meta_header *h,
			  const char **why);
/* Format h (as parse expects it).  *text malloc'd.  0 or -ENOMEM. */
int cbt_meta_header_format(const struct cbt_meta_header *h, char **text);

/* Strict base64 (standard alphabet, padded, canonical): decode len chars
 * into out (room for len / 4 * 3 bytes), *outlen the bytes.  0 or
 * -EINVAL.  encode: out has room for 4 * ceil(len / 3) + 1 chars. */
int cbt_meta_b64_decode(const char *in, size_t len, uint8_t *out,
			size_t *outlen);
void cbt_meta_b64_encode(const uint8_t *in, size_t len, char *out);

/* The key of shard i of bitmap name in generation gen. */
int cbt_meta_shard_key(char *out, size_t len, const char *name, uint64_t gen,
		       uint32_t i);

/* One LUN's metadata state: what this node last read or wrote. */
struct cbt_meta;
struct cbt_meta *cbt_meta_new(const struct cbt_meta_ops *ops, void *ctx);
void cbt_meta_free(struct cbt_meta *m);

/* Read the bitmaps: 0 with *out a malloc'd array of *n new persistent
 * bitmaps (free each with cbt_bitmap_free, the array with free) covering
 * *lun_size bytes; -ENOENT when there is no header; -EINVAL (with *why)
 * when what is stored does not decode; other -errno from the store. */
int cbt_meta_load(struct cbt_meta *m, struct cbt_bitmap ***out, unsigned *n,
		  uint64_t *lun_size, const char **why);
/* Save bms (each with its successor ORed in, as the sidecar) for a LUN of
 * lun_size bytes; n = 0 removes the header and every shard.  Blocking. 0
 * or -errno (the stored state is then the old one or, if the switch's
 * outcome is unknown, the new one; the next save reads the header
 * first). */
int cbt_meta_save(struct cbt_meta *m, struct cbt_bitmap *const *bms,
		  unsigned n, uint64_t lun_size);
/* Remove the shards earlier saves made unreferenced, and (once after a
 * load, or after a failed save, when the store can list its keys) every
 * shard key the header does not name.  Kept out of cbt_meta_save() so a
 * save costs the writes waiting for it only its shards and the switch.
 * Only the store's owner calls it. */
void cbt_meta_cleanup(struct cbt_meta *m);
/* One piece of that (one stale bitmap's shards, or the listing): true
 * while more is left.  Each value the store changes may take seconds (an
 * RBD image notifies its watchers, and waits 5 s for a dead one), so a
 * caller that must stop soon checks between steps. */
bool cbt_meta_cleanup_step(struct cbt_meta *m);
/* Is there a header (as last read or written; asks the store when not
 * known)?  Errors count as present. */
bool cbt_meta_present(struct cbt_meta *m);
/* Mark the stored state poisoned (its bitmaps load inconsistent).
 * 0, -ENOENT (nothing stored) or -errno. */
int cbt_meta_poison(struct cbt_meta *m);

#endif
