/* cbt_sidecar.c - encode, decode and atomically replace the persistent
 * bitmap sidecar (format in cbt_sidecar.h).  The decoder is a parser of
 * untrusted bytes (a file an operator may have edited or a crash may have
 * cut): every length is checked before it is used; see
 * tests/fuzz/fuzz_cbt_sidecar.c. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbt_bitmap.h"
#include "cbt_sidecar.h"
#include "crc32c.h"
#include "util.h"


static const char SIDECAR_MAGIC[8] = "HFCBTMAP";
static const char SIDECAR_POISON[8] = "HFCBTBAD";

#define HDR_LEN 32
#define ENTRY_LEN 16
#define CRC_LEN 4
#define FLAG_ENABLED 0x1
#define FLAG_INCONSISTENT 0x2
#define FLAGS_KNOWN (FLAG_ENABLED | FLAG_INCONSISTENT)
#define SIDECAR_MAX_FILE (1ull << 30)

static uint32_t sidecar_crc(const uint8_t *buf, size_t len)
{
	return crc32c(0, buf + 8, len - 8);
}

static uint64_t bits_bytes(uint64_t nchunks)
{
	return (nchunks + 7) / 8;
}

int cbt_sidecar_encode(struct cbt_bitmap *const *bms, unsigned n,
		       uint64_t lun_size, uint8_t **bufp, size_t *lenp)
{
	size_t len = HDR_LEN + CRC_LEN, pos;
	uint64_t *words = NULL;
	uint64_t maxwords = 0;
	uint8_t *buf;

	if (n > CBT_SIDECAR_MAX_BITMAPS)
		return -E2BIG;
	for (unsigned i = 0; i < n; i++) {
		if (bms[i]->size != lun_size)
			return -EINVAL;
		len += ENTRY_LEN + strlen(bms[i]->name) + bits_bytes(bms[i]->nchunks);
		if (bms[i]->nwords > maxwords)
			maxwords = bms[i]->nwords;
	}
	buf = calloc(1, len);
	words = calloc(maxwords + 1, sizeof(*words));
	if (!buf || !words) {
		free(buf);
		free(words);
		return -ENOMEM;
	}
	memcpy(buf, SIDECAR_MAGIC, 8);
	put_be32(buf + 8, CBT_SIDECAR_VERSION);
	put_be32(buf + 12, HDR_LEN);
	put_be64(buf + 16, lun_size);
	put_be32(buf + 24, n);
	pos = HDR_LEN;
	for (unsigned i = 0; i < n; i++) {
		const struct cbt_bitmap *b = bms[i];
		size_t nl = strlen(b->name);
		uint16_t flags = 0;

		if (atomic_load(&b->enabled))
			flags |= FLAG_ENABLED;
		if (atomic_load(&b->inconsistent))
			flags |= FLAG_INCONSISTENT;
		put_be16(buf + pos, (uint16_t)nl);
		put_be16(buf + pos + 2, flags);
		put_be32(buf + pos + 4, b->granularity);
		put_be64(buf + pos + 8, b->nchunks);
		memcpy(buf + pos + ENTRY_LEN, b->name, nl);
		pos += ENTRY_LEN + nl;
		cbt_bitmap_snapshot_words(b, words);
		for (uint64_t c = 0; c < bits_bytes(b->nchunks); c++)
			buf[pos + c] = (uint8_t)(words[c / 8] >> (c % 8 * 8));
		pos += bits_bytes(b->nchunks);
	}
	put_be32(buf + pos, sidecar_crc(buf, pos));
	free(words);
	*bufp = buf;
	*lenp = len;
	return 0;
}

/* Fill a new (clean) bitmap from the on-disk bytes, word by word. */
static void load_bits(struct cbt_bitmap *b, const uint8_t *p, uint64_t nbytes)
{
	uint64_t dirty = 0;

	for (uint64_t w = 0; w < b->nwords; w++) {
		uint64_t v = 0;

		for (unsigned k = 0; k < 8 && w * 8 + k < nbytes; k++)
			v |= (uint64_t)p[w * 8 + k] << (k * 8);
		atomic_store(&b->words[w], v);
		dirty += (uint64_t)__builtin_popcountll(v);
	}
	atomic_store(&b->dirty, dirty);
}

static int decode_fail(const char **why, const char *reason)
{
	*why = reason;
	return -EINVAL;
}

int cbt_sidecar_decode(const uint8_t *buf, size_t len,
		       struct cbt_bitmap ***out, unsigned *np,
		       uint64_t *lun_size, const char **why)
{
	struct cbt_bitmap **bms = NULL;
	bool poisoned;
	uint64_t size;
	unsigned n, got = 0;
	size_t pos;
	int err;

	*why = NULL;
	if (len < HDR_LEN + CRC_LEN)
		return decode_fail(why, "too short");
	if (!memcmp(buf, SIDECAR_MAGIC, 8))
		poisoned = false;
	else if (!memcmp(buf, SIDECAR_POISON, 8))
		poisoned = true;
	else
		return decode_fail(why, "bad magic");
	if (get_be32(buf + 8) != CBT_SIDECAR_VERSION)
		return decode_fail(why, "unsupported version");
	if (get_be32(buf + 12) != HDR_LEN)
		return decode_fail(why, "bad header length");
	if (get_be32(buf + 28) != 0)
		return decode_fail(why, "reserved field not zero");
	if (get_be32(buf + len - CRC_LEN) != sidecar_crc(buf, len - CRC_LEN))
		return decode_fail(why, "checksum mismatch");
	size = get_be64(buf + 16);
	n = get_be32(buf + 24);
	if (n > CBT_SIDECAR_MAX_BITMAPS)
		return decode_fail(why, "too many bitmaps");
	bms = calloc(n ? n : 1, sizeof(*bms));
	if (!bms)
		return -ENOMEM;
	pos = HDR_LEN;
	for (unsigned i = 0; i < n; i++) {
		size_t end = len - CRC_LEN;
		char name[CBT_NAME_MAX + 1];
		uint16_t nl, flags;
		uint32_t gran;
		uint64_t nchunks, nbytes;
		struct cbt_bitmap *b;

		err = -EINVAL;
		if (end - pos < ENTRY_LEN) {
			*why = "truncated bitmap entry";
			goto fail;
		}
		nl = get_be16(buf + pos);
		flags = get_be16(buf + pos + 2);
		gran = get_be32(buf + pos + 4);
		nchunks = get_be64(buf + pos + 8);
		pos += ENTRY_LEN;
		if (nl == 0 || nl > CBT_NAME_MAX || end - pos < nl) {
			*why = "bad name length";
			goto fail;
		}
		if (flags & ~FLAGS_KNOWN) {
			*why = "unknown flags";
			goto fail;
		}
		if (!cbt_granularity_valid(gran)) {
			*why = "bad granularity";
			goto fail;
		}
		if (size > UINT64_MAX - gran ||
		    nchunks != (size + gran - 1) / gran) {
			*why = "chunk count does not match the LUN size";
			goto fail;
		}
		memcpy(name, buf + pos, nl);
		name[nl] = 0;
		if (memchr(name, 0, nl)) {
			*why = "bad name";
			goto fail;
		}
		pos += nl;
		nbytes = bits_bytes(nchunks);
		if (end - pos < nbytes) {
			*why = "truncated bits";
			goto fail;
		}
		if (nchunks % 8 &&
		    buf[pos + nbytes - 1] >> (nchunks % 8)) {
			*why = "bits set past the last chunk";
			goto fail;
		}
		for (unsigned j = 0; j < got; j++)
			if (!strcmp(bms[j]->name, name)) {
				*why = "duplicate bitmap name";
				goto fail;
			}
		b = cbt_bitmap_new(name, size, gran, flags & FLAG_ENABLED);
		if (!b) {
			err = -errno;
			*why = err == -EINVAL ? "bad name" : "out of memory";
			goto fail;
		}
		b->persistent = true;
		bms[got++] = b;
		load_bits(b, buf + pos, nbytes);
		if ((flags & FLAG_INCONSISTENT) || poisoned)
			atomic_store(&b->inconsistent, true);
		pos += nbytes;
	}
	if (pos != len - CRC_LEN) {
		err = -EINVAL;
		*why = "trailing bytes";
		goto fail;
	}
	*out = bms;
	*np = got;
	*lun_size = size;
	return 0;
fail:
	for (unsigned j = 0; j < got; j++)
		cbt_bitmap_free(bms[j]);
	free(bms);
	return err;
}

static int fsync_dir_of(const char *path)
{
	char copy[PATH_MAX];
	int fd, err = 0;

	snprintf(copy, sizeof(copy), "%s", path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		err = -errno;
	close(fd);
	return err;
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len) {
		ssize_t w = write(fd, buf, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

int cbt_sidecar_write_file(const char *path, const uint8_t *buf, size_t len)
{
	char tmp[PATH_MAX];
	int fd, err;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	err = write_all(fd, buf, len);
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && !err)
		err = -errno;
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	if (err) {
		unlink(tmp);
		return err;
	}
	return fsync_dir_of(path);
}

int cbt_sidecar_read_file(const char *path, uint8_t **bufp, size_t *lenp)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size > SIDECAR_MAX_FILE) {
		err = errno ? -errno : -EFBIG;
		close(fd);
		return err;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = r < 0 ? -errno : -EIO;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	if (err) {
		free(buf);
		return err;
	}
	*bufp = buf;
	*lenp = got;
	return 0;
}

int cbt_sidecar_poison(const char *path)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return -errno;
	if (pwrite(fd, SIDECAR_POISON, 8, 0) != 8)
		err = errno ? -errno : -EIO;
	if (!err && fsync(fd) < 0)
		err = -errno;
	close(fd);
	return err;
}
