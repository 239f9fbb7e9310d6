/* qcow2_writer.h - write a new qcow2 (version 3) image: backup
 * destinations, full or incremental with a backing file.
 *
 * Only what a backup needs: no compression, no encryption, no internal
 * snapshots, 16-bit refcounts, one pass.  Data clusters are appended in
 * the order they are written; metadata (L2 tables, L1, refcounts,
 * header) is written by qcow2w_finish(), so an image whose job never
 * finished has no valid header and is never mistaken for a backup.
 *
 * A cluster that is written overrides the backing file for the whole
 * cluster, so callers write whole clusters (the last one may end at the
 * virtual size).  The cluster size is chosen at create time; backup jobs
 * use min(bitmap granularity, 2 MiB) so a dirty chunk is whole clusters.
 *
 * Data can go through qcow2w_write() (pwrite), or the caller allocates
 * with qcow2w_map() and writes the data itself at the returned host
 * offset (through a store node, asynchronously).  Not thread safe: one
 * owner (a job on its home reactor). */
#ifndef HOLDFAST_QCOW2_WRITER_H
#define HOLDFAST_QCOW2_WRITER_H

#include <stdbool.h>
#include <stdint.h>

struct qcow2w;

#define QCOW2W_CLUSTER_BITS_MIN 12	/* 4 KiB; the format allows 512 */
#define QCOW2W_CLUSTER_BITS_MAX 21	/* 2 MiB */

struct qcow2w_params {
	uint64_t size;			/* virtual size, bytes */
	unsigned cluster_bits;		/* 12..21; 0 = 16 (64 KiB) */
	const char *backing_file;	/* NULL: none; stored as given */
	const char *backing_format;	/* "raw" or "qcow2"; NULL: not recorded */
};

/* Create (truncate) path and start an image.  0 or -errno; *out owned by
 * the caller until qcow2w_finish() or qcow2w_abort(). */
int qcow2w_create(const char *path, const struct qcow2w_params *p,
		  struct qcow2w **out);

/* Cluster size in bytes. */
uint32_t qcow2w_cluster_size(const struct qcow2w *w);

/* The file descriptor of the image (for callers writing data clusters
 * themselves). */
int qcow2w_fd(const struct qcow2w *w);

/* Host offset of the cluster holding guest_offset (cluster-aligned),
 * allocating it if needed.  0 or -EINVAL (beyond size, unaligned), -ENOMEM. */
int qcow2w_map(struct qcow2w *w, uint64_t guest_offset, uint64_t *host_offset);

/* Write whole clusters at guest_offset (cluster-aligned; len a multiple
 * of the cluster size, or ending at the virtual size).  0 or -errno. */
int qcow2w_write(struct qcow2w *w, uint64_t guest_offset, const void *buf,
		 uint64_t len);

/* Mark whole clusters as reading zeroes (v3 zero flag; no data, hides the
 * backing file).  Clusters already written keep their data cluster but
 * are flagged zero.  0 or -errno. */
int qcow2w_zero(struct qcow2w *w, uint64_t guest_offset, uint64_t len);

/* Write the metadata and header, fsync, close and free w.  0 or -errno
 * (w is freed either way). */
int qcow2w_finish(struct qcow2w *w);

/* Close and free w without finishing (the file is left headerless). */
void qcow2w_abort(struct qcow2w *w);

#endif
