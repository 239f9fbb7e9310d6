/* qcow2_writer.c - a one-pass qcow2 v3 image writer (qcow2_writer.h).
 *
 * Written from the qcow2 specification (QEMU docs/interop/qcow2.txt):
 *
 *   header (cluster 0): magic "QFI\xfb", version 3, backing file offset
 *   and size, cluster_bits, virtual size, crypt method 0, L1 size and
 *   offset, refcount table offset and clusters, no snapshots, feature
 *   bits 0, refcount_order 4 (16-bit), header length 104, then header
 *   extensions (type, length, data padded to 8; type 0 ends them) and
 *   the backing file name, all inside cluster 0.
 *   L1 entry: bits 9-55 L2 table offset, bit 63 "refcount is exactly 1".
 *   L2 entry: bits 9-55 data cluster offset, bit 63 as above, bit 0 "reads
 *   as zeroes" (v3).  0 means unallocated: read from the backing file.
 *   Refcount table: offsets of refcount blocks; a block holds one 16-bit
 *   refcount per host cluster.
 *
 * Layout produced: header, data clusters in write order, then at finish
 * the L2 tables, the L1 table, the refcount table and its blocks.  Every
 * host cluster is used exactly once, so every refcount is 1. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2_writer.h"
#include "util.h"

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_VERSION 3
#define QCOW2_HEADER_LEN 104
#define QCOW2_REFCOUNT_ORDER 4		/* 16-bit refcounts */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_ZERO 1ull
#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_BACKING_NAME_MAX 1023	/* what QEMU accepts */
#define QCOW2_FORMAT_NAME_MAX 16

/* header field offsets */
#define H_MAGIC 0
#define H_VERSION 4
#define H_BACKING_OFFSET 8
#define H_BACKING_SIZE 16
#define H_CLUSTER_BITS 20
#define H_SIZE 24
#define H_CRYPT 32
#define H_L1_SIZE 36
#define H_L1_OFFSET 40
#define H_REFTABLE_OFFSET 48
#define H_REFTABLE_CLUSTERS 56
#define H_NB_SNAPSHOTS 60
#define H_SNAPSHOTS_OFFSET 64
#define H_INCOMPAT 72
#define H_COMPAT 80
#define H_AUTOCLEAR 88
#define H_REFCOUNT_ORDER 96
#define H_HEADER_LEN 100

struct qcow2w {
	int fd;
	uint64_t size;
	unsigned cluster_bits;
	uint32_t cluster_size;
	uint64_t l2_entries;		/* entries per L2 table */
	uint64_t l1_size;
	uint64_t **l2;			/* [l1_size], host-order entries, lazily */
	uint64_t next_host;		/* first free host offset */
	char *backing_file;
	char *backing_format;
};

uint32_t qcow2w_cluster_size(const struct qcow2w *w)
{
	return w->cluster_size;
}

int qcow2w_fd(const struct qcow2w *w)
{
	return w->fd;
}

static void qcow2w_free(struct qcow2w *w)
{
	if (w->l2)
		for (uint64_t i = 0; i < w->l1_size; i++)
			free(w->l2[i]);
	free(w->l2);
	free(w->backing_file);
	free(w->backing_format);
	free(w);
}

int qcow2w_create(const char *path, const struct qcow2w_params *p,
		  struct qcow2w **out)
{
	unsigned cb = p->cluster_bits ? p->cluster_bits : 16;
	struct qcow2w *w;
	uint64_t clusters;

	if (cb < QCOW2W_CLUSTER_BITS_MIN || cb > QCOW2W_CLUSTER_BITS_MAX ||
	    p->size > (1ull << 55))
		return -EINVAL;
	if (p->backing_file && (!*p->backing_file ||
				strlen(p->backing_file) > QCOW2_BACKING_NAME_MAX))
		return -EINVAL;
	if (p->backing_format && (!p->backing_file ||
				  strlen(p->backing_format) > QCOW2_FORMAT_NAME_MAX))
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->size = p->size;
	w->cluster_bits = cb;
	w->cluster_size = 1u << cb;
	w->l2_entries = w->cluster_size / 8;
	clusters = (p->size + w->cluster_size - 1) >> cb;
	w->l1_size = (clusters + w->l2_entries - 1) / w->l2_entries;
	w->l2 = calloc(w->l1_size ? w->l1_size : 1, sizeof(*w->l2));
	w->backing_file = p->backing_file ? strdup(p->backing_file) : NULL;
	w->backing_format = p->backing_format ? strdup(p->backing_format) : NULL;
	if (!w->l2 || (p->backing_file && !w->backing_file) ||
	    (p->backing_format && !w->backing_format)) {
		qcow2w_free(w);
		return -ENOMEM;
	}
	w->next_host = w->cluster_size;		/* cluster 0: header */
	w->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		int err = -errno;

		qcow2w_free(w);
		return err;
	}
	*out = w;
	return 0;
}

/* The L2 entry for guest cluster index gc, allocating its table. */
static uint64_t *l2_entry(struct qcow2w *w, uint64_t gc)
{
	uint64_t l1i = gc / w->l2_entries;

	if (!w->l2[l1i]) {
		w->l2[l1i] = calloc(w->l2_entries, sizeof(uint64_t));
		if (!w->l2[l1i])
			return NULL;
	}
	return &w->l2[l1i][gc % w->l2_entries];
}

int qcow2w_map(struct qcow2w *w, uint64_t guest_offset, uint64_t *host_offset)
{
	uint64_t *e;

	if (guest_offset >= w->size || guest_offset & (w->cluster_size - 1))
		return -EINVAL;
	e = l2_entry(w, guest_offset >> w->cluster_bits);
	if (!e)
		return -ENOMEM;
	if (!(*e & QCOW2_OFFSET_MASK)) {
		*e = w->next_host | QCOW2_OFLAG_COPIED;
		w->next_host += w->cluster_size;
	}
	*e &= ~QCOW2_OFLAG_ZERO;	/* written data reads as itself */
	*host_offset = *e & QCOW2_OFFSET_MASK;
	return 0;
}

static int pwrite_all(int fd, const void *buf, uint64_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (uint64_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Is [off, off+len) whole clusters (the last may stop at the size)? */
static bool whole_clusters(const struct qcow2w *w, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;

	return !(off & (w->cluster_size - 1)) && len && end <= w->size &&
	       end > off && (!(end & (w->cluster_size - 1)) || end == w->size);
}

int qcow2w_write(struct qcow2w *w, uint64_t guest_offset, const void *buf,
		 uint64_t len)
{
	const uint8_t *p = buf;

	if (!whole_clusters(w, guest_offset, len))
		return -EINVAL;
	while (len) {
		uint64_t n = MIN(len, (uint64_t)w->cluster_size), host;
		int err = qcow2w_map(w, guest_offset, &host);

		if (!err)
			err = pwrite_all(w->fd, p, n, host);
		if (err)
			return err;
		guest_offset += n;
		p += n;
		len -= n;
	}
	return 0;
}

int qcow2w_zero(struct qcow2w *w, uint64_t guest_offset, uint64_t len)
{
	if (!whole_clusters(w, guest_offset, len))
		return -EINVAL;
	for (uint64_t off = guest_offset; off < guest_offset + len;
	     off += w->cluster_size) {
		uint64_t *e = l2_entry(w, off >> w->cluster_bits);

		if (!e)
			return -ENOMEM;
		*e |= QCOW2_OFLAG_ZERO;
	}
	return 0;
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

/* Build cluster 0: header, extensions, backing file name. */
static int build_header(const struct qcow2w *w, uint8_t *h, uint64_t l1_off,
			uint64_t rt_off, uint64_t rt_clusters)
{
	size_t pos = QCOW2_HEADER_LEN;

	put_be32(h + H_MAGIC, QCOW2_MAGIC);
	put_be32(h + H_VERSION, QCOW2_VERSION);
	put_be32(h + H_CLUSTER_BITS, w->cluster_bits);
	put_be64(h + H_SIZE, w->size);
	put_be32(h + H_CRYPT, 0);
	put_be32(h + H_L1_SIZE, (uint32_t)w->l1_size);
	put_be64(h + H_L1_OFFSET, l1_off);
	put_be64(h + H_REFTABLE_OFFSET, rt_off);
	put_be32(h + H_REFTABLE_CLUSTERS, (uint32_t)rt_clusters);
	put_be32(h + H_NB_SNAPSHOTS, 0);
	put_be64(h + H_SNAPSHOTS_OFFSET, 0);
	put_be64(h + H_INCOMPAT, 0);
	put_be64(h + H_COMPAT, 0);
	put_be64(h + H_AUTOCLEAR, 0);
	put_be32(h + H_REFCOUNT_ORDER, QCOW2_REFCOUNT_ORDER);
	put_be32(h + H_HEADER_LEN, QCOW2_HEADER_LEN);
	if (w->backing_format) {
		size_t n = strlen(w->backing_format);

		put_be32(h + pos, QCOW2_EXT_BACKING_FORMAT);
		put_be32(h + pos + 4, (uint32_t)n);
		memcpy(h + pos + 8, w->backing_format, n);
		pos += 8 + (n + 7) / 8 * 8;
	}
	put_be32(h + pos, QCOW2_EXT_END);
	put_be32(h + pos + 4, 0);
	pos += 8;
	if (w->backing_file) {
		size_t n = strlen(w->backing_file);

		if (pos + n > w->cluster_size)
			return -ENAMETOOLONG;
		memcpy(h + pos, w->backing_file, n);
		put_be64(h + H_BACKING_OFFSET, pos);
		put_be32(h + H_BACKING_SIZE, (uint32_t)n);
	}
	return 0;
}

int qcow2w_finish(struct qcow2w *w)
{
	uint64_t cs = w->cluster_size, l1_off, l1_clusters, rt_off, rb_off;
	uint64_t n_used, rb_count = 0, rt_clusters = 0, total, per_block;
	uint64_t *l1 = NULL;
	uint8_t *buf = NULL;
	int err = 0;

	/* place the L2 tables, then the L1 table */
	l1 = calloc(w->l1_size ? w->l1_size : 1, sizeof(*l1));
	if (!l1) {
		err = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < w->l1_size; i++)
		if (w->l2[i]) {
			l1[i] = w->next_host | QCOW2_OFLAG_COPIED;
			w->next_host += cs;
		}
	l1_off = w->next_host;
	l1_clusters = div_up(w->l1_size * 8, cs);
	w->next_host += l1_clusters * cs;
	/* refcounts must cover themselves: iterate to a fixed point */
	n_used = w->next_host / cs;
	per_block = cs * 8 / (1u << QCOW2_REFCOUNT_ORDER);
	for (;;) {
		uint64_t rb = div_up(n_used + rb_count + rt_clusters, per_block);
		uint64_t rt = div_up(rb * 8, cs);

		if (rb == rb_count && rt == rt_clusters)
			break;
		rb_count = rb;
		rt_clusters = rt;
	}
	rt_off = w->next_host;
	rb_off = rt_off + rt_clusters * cs;
	total = n_used + rt_clusters + rb_count;

	buf = malloc(cs);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	/* L2 tables */
	for (uint64_t i = 0; i < w->l1_size && !err; i++) {
		if (!w->l2[i])
			continue;
		for (uint64_t k = 0; k < w->l2_entries; k++)
			put_be64(buf + k * 8, w->l2[i][k]);
		err = pwrite_all(w->fd, buf, cs, l1[i] & QCOW2_OFFSET_MASK);
	}
	/* L1 table */
	for (uint64_t c = 0; c < l1_clusters && !err; c++) {
		memset(buf, 0, cs);
		for (uint64_t k = 0; k < cs / 8 && c * (cs / 8) + k < w->l1_size; k++)
			put_be64(buf + k * 8, l1[c * (cs / 8) + k]);
		err = pwrite_all(w->fd, buf, cs, l1_off + c * cs);
	}
	/* refcount table */
	for (uint64_t c = 0; c < rt_clusters && !err; c++) {
		memset(buf, 0, cs);
		for (uint64_t k = 0; k < cs / 8 && c * (cs / 8) + k < rb_count; k++)
			put_be64(buf + k * 8, rb_off + (c * (cs / 8) + k) * cs);
		err = pwrite_all(w->fd, buf, cs, rt_off + c * cs);
	}
	/* refcount blocks: 1 for every used cluster */
	for (uint64_t b = 0; b < rb_count && !err; b++) {
		memset(buf, 0, cs);
		for (uint64_t k = 0; k < per_block && b * per_block + k < total; k++)
			put_be16(buf + k * 2, 1);
		err = pwrite_all(w->fd, buf, cs, rb_off + b * cs);
	}
	/* everything else durable before the header makes it an image */
	if (!err && fdatasync(w->fd) < 0)
		err = -errno;
	if (!err) {
		memset(buf, 0, cs);
		err = build_header(w, buf, l1_off, rt_off, rt_clusters);
	}
	if (!err)
		err = pwrite_all(w->fd, buf, cs, 0);
	/* a caller that sized the file for its own data writes gets it
	 * trimmed to what the image uses */
	if (!err && ftruncate(w->fd, (off_t)(total * cs)) < 0)
		err = -errno;
	if (!err && fsync(w->fd) < 0)
		err = -errno;
out:
	free(l1);
	free(buf);
	if (close(w->fd) < 0 && !err)
		err = -errno;
	qcow2w_free(w);
	return err;
}

void qcow2w_abort(struct qcow2w *w)
{
	close(w->fd);
	qcow2w_free(w);
}
