/* cbt_sidecar.h - the on-disk form of a LUN's persistent dirty bitmaps.
 *
 * One file per LUN beside the configuration.  Layout (big-endian):
 *
 *   0   8  magic "HFCBTMAP" ("HFCBTBAD" once poisoned, see below)
 *   8   4  version (1)
 *   12  4  header length (32)
 *   16  8  LUN size in bytes
 *   24  4  number of bitmaps (0..CBT_SIDECAR_MAX_BITMAPS)
 *   28  4  reserved, 0
 *   then per bitmap:
 *   0   2  name length (1..63), name bytes [A-Za-z0-9._-] follow the entry
 *   2   2  flags: bit 0 enabled, bit 1 inconsistent; others 0
 *   4   4  granularity (power of two, 4 KiB..64 MiB)
 *   8   8  number of chunks (= LUN size rounded up to granularity)
 *   16  n  name
 *   16+n   ceil(chunks/8) bytes of bits, chunk i = byte i/8 bit i%8;
 *          bits past the last chunk are 0
 *   end 4  CRC32C of everything from byte 8 to here
 *
 * The checksum leaves out the magic so a sidecar can be poisoned in place
 * (overwriting 8 bytes needs no new space on a full disk): a poisoned
 * sidecar still parses, and every bitmap in it loads as inconsistent. */
#ifndef HOLDFAST_CBT_SIDECAR_H
#define HOLDFAST_CBT_SIDECAR_H

#include <stddef.h>
#include <stdint.h>

struct cbt_bitmap;

#define CBT_SIDECAR_VERSION 1
#define CBT_SIDECAR_MAX_BITMAPS 256

/* Encode bitmaps (each with its successor ORed in, so a frozen bitmap
 * saves everything a failed job would merge back) for a LUN of lun_size
 * bytes.  *buf is malloc'd, owned by the caller.  0 or -errno. */
int cbt_sidecar_encode(struct cbt_bitmap *const *bms, unsigned n,
		       uint64_t lun_size, uint8_t **buf, size_t *len);

/* Parse and validate strictly (magic, version, lengths, names, duplicate
 * names, geometry, padding bits, checksum).  On success *out is a malloc'd
 * array of *n new bitmaps (persistent, each freed with cbt_bitmap_free,
 * the array with free) and *lun_size the size they cover.  A poisoned
 * sidecar yields inconsistent bitmaps.  -EINVAL for any malformed input
 * (with *why a static reason), -ENOMEM. */
int cbt_sidecar_decode(const uint8_t *buf, size_t len,
		       struct cbt_bitmap ***out, unsigned *n,
		       uint64_t *lun_size, const char **why);

/* Replace path atomically with buf: write path.tmp, fsync, rename, fsync
 * the directory.  Blocking; never on a reactor.  0 or -errno. */
int cbt_sidecar_write_file(const char *path, const uint8_t *buf, size_t len);

/* Read a whole sidecar (at most 1 GiB).  -ENOENT when absent. */
int cbt_sidecar_read_file(const char *path, uint8_t **buf, size_t *len);

/* Overwrite the magic of an existing sidecar with the poison magic and
 * fsync it.  0 or -errno. */
int cbt_sidecar_poison(const char *path);

#endif
