/* backend.h - the interface every backing store implements.
 *
 * Backends know nothing of SCSI: they see byte offsets, lengths and iovecs
 * and complete with 0 or -errno.  The one exception is a store that is
 * itself a SCSI device (the gateway's SAN LUN), or the fault filter
 * playing one: it may hand the device's own sense up with the errno
 * (struct be_sense), which the SCSI layer then reports as it is.
 *
 * One `static const struct backend_ops` per backend, listed in
 * backends/registry.c (no constructors).  Backends may
 * wrap other backends (fault wraps any backend), so a backend only talks to
 * its inner backend through this interface. */
#ifndef HOLDFAST_BACKEND_H
#define HOLDFAST_BACKEND_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct reactor;
struct backend;

enum be_op {
	BE_OP_READ,
	BE_OP_WRITE,
	BE_OP_FLUSH,		/* offset/length ignored: flush everything */
	BE_OP_UNMAP,		/* deallocate [offset, offset+length), reads back zero */
	BE_OP_WRITE_ZEROES,	/* write zeroes, may deallocate */
	/* Atomically: if [offset, offset+length) holds the first length
	 * bytes of iov, write the next length bytes there (iov holds
	 * 2 * length).  -EILSEQ when it does not, with the offset of the
	 * first differing byte in miscompare_offset.  Only for a store whose
	 * backend.caw_max is at least length (the SCSI layer emulates
	 * COMPARE AND WRITE otherwise); filters pass it down as a write. */
	BE_OP_COMPARE_AND_WRITE,
};

#define BE_IO_FUA 0x1		/* write through to stable storage */

/* The sense of a store that is a SCSI device (SPC-4 4.5), for a request
 * it failed with CHECK CONDITION: key 0 = none (the SCSI layer derives
 * sense from the errno).  Only current errors; the INFORMATION field
 * (the failing LBA of a MEDIUM ERROR) and the sense-key specific bytes
 * only when the device marked them valid. */
struct be_sense {
	uint8_t key, asc, ascq;
	bool info_valid;
	bool sks_valid;
	uint8_t sks[3];
	uint64_t info;
};

/* One run of blocks with the same provisioning status, for a store that
 * learns of several at once (block_status_async). */
struct be_extent {
	uint64_t length;	/* bytes, > 0 */
	int status;		/* 1 mapped, 0 deallocated */
};

/* One backend request.  Owned by the caller; must stay valid until done()
 * is called.  done() runs on the reactor passed to submit(), never from
 * inside submit() itself (so a caller never recurses), exactly once.
 * res is 0 on success (a read filled all of iov) or -errno. */
struct be_io {
	enum be_op op;
	unsigned flags;		/* BE_IO_* */
	uint64_t offset;	/* bytes */
	uint64_t length;	/* bytes */
	struct iovec *iov;	/* READ/WRITE data; buffers aligned to 4096 */
	int iovcnt;
	void (*done)(struct be_io *io, int res);
	void *priv;		/* caller's */
	/* BE_OP_COMPARE_AND_WRITE that completed with -EILSEQ: the byte
	 * offset (from offset) of the first byte that differed */
	uint64_t miscompare_offset;
	/* A failed request (res < 0): the store's own sense, to report as
	 * it is (key 0: none).  The submitter zeroes it; a store that sets
	 * it clears it when the request is submitted again. */
	struct be_sense sense;
	/* block_status_async only: room for the extents that follow the
	 * answered one (the caller's array of ext_max; ext_max 0: none).  A
	 * store that learns of more than one extent per question (the
	 * gateway's GET LBA STATUS to the SAN) puts up to ext_max of them
	 * here, in order, each starting where the one before ends (the
	 * first at offset + length), none past the offset + length the
	 * caller asked about, and sets ext_n. */
	struct be_extent *ext;
	uint16_t ext_max, ext_n;
	/* backend-private scratch, untouched by callers */
	void *be_priv;
	uint64_t be_scratch[8];
	/* The LUN's block stack (stack.c) keeps the caller's done() and the
	 * in-flight counter the io holds here while the io is in the stack. */
	void (*stack_done)(struct be_io *io, int res);
	void *stack_ref;
};

/* Parameters for open.  Strings are owned by the caller and only read
 * during open. */
struct backend_params {
	const char *path;	/* file / device path; NULL for null */
	uint64_t size;		/* bytes; create a sparse file of this size
				 * when path does not exist; 0 = use existing */
	uint32_t block_size;
	bool direct;		/* O_DIRECT (default true) */
	bool sync;		/* O_SYNC */
	bool readonly;
	const char *opts;	/* backend specific options string, may be NULL */
	struct backend *inner;	/* for wrapping backends (fault) */
};

/* Ownership of a store shared by several gateways (backend_ops.owner). */
enum be_owner_op {
	BE_OWNER_TAKE,		/* take it; -EBUSY while another holds it */
	BE_OWNER_TAKE_FORCE,	/* break another holder's (fencing it) */
	BE_OWNER_RELEASE,	/* flush, then release */
	BE_OWNER_QUERY,		/* returns BE_OWNER_MINE/_NONE/_OTHER, or
				 * -EAGAIN: cannot tell now (the store does
				 * not answer), ownership unchanged */
	BE_OWNER_ID,		/* the store's identity, as text, into buf */
};
/* Snapshots the store takes of itself (backend_ops.snapshot). */
enum be_snap_op {
	BE_SNAP_CREATE,
	BE_SNAP_REMOVE,
	BE_SNAP_OPEN,
};

#define BE_OWNER_NONE	0
#define BE_OWNER_MINE	1
#define BE_OWNER_OTHER	2

struct backend_ops {
	const char *name;
	/* A filter wraps the node below it (backend_params.inner) and can be
	 * inserted into and removed from a LUN's block stack (stack.h). */
	bool filter;
	/* Open synchronously (management/startup thread).  Fills be->size and
	 * be->direct.  Returns 0 or -errno; on error *errmsg may be set to a
	 * static string explaining why. */
	int (*open)(struct backend *be, const struct backend_params *p,
		    const char **errmsg);
	/* Close synchronously; no I/O may be outstanding. */
	void (*close)(struct backend *be);
	/* Start io asynchronously on reactor r (the calling thread's reactor).
	 * Completion via io->done on r. */
	void (*submit)(struct backend *be, struct be_io *io, struct reactor *r);
	/* Optional: run-time key=value (e.g. "fault" spec).  0 or -errno
	 * (-EINVAL bad value, -ENOENT unknown key). */
	int (*set_param)(struct backend *be, const char *key, const char *val);
	/* Optional: one-line description of run-time state for show. */
	int (*describe)(struct backend *be, char *buf, unsigned len);
	/* Optional: is [offset, offset+len) mapped (data) or a hole?
	 * Returns 1 mapped, 0 hole (deallocated), -errno.  *extent gets the
	 * length of the run with the same status starting at offset. */
	int (*block_status)(struct backend *be, uint64_t offset, uint64_t len,
			    uint64_t *extent);
	/* Optional: block_status that may have to wait, for a store that
	 * asks someone else (the gateway asks the SAN with GET LBA STATUS).
	 * In: io->offset, io->length, io->done/priv (op and data fields are
	 * ignored).  Returns -EINPROGRESS when the answer comes later:
	 * done(io, res) on r, exactly once, never from inside the call.
	 * Otherwise it is the answer now and done() is not called.  An
	 * answer is 1 mapped, 0 hole, or -errno; on 1 or 0 io->length is the
	 * extent (bytes, > 0), and io->ext / io->ext_n may hold the extents
	 * that follow it (see struct be_io).  Callers use backend_block_status(), which
	 * runs the synchronous block_status for stores without this. */
	int (*block_status_async)(struct backend *be, struct be_io *io,
				  struct reactor *r);
	/* Optional: change or re-read the store's size, synchronously on the
	 * management thread (online resize).  size 0: re-read the size the
	 * store has now (grown outside holdfast); else make it size bytes (a
	 * file is extended, or truncated when size is smaller; a device must
	 * already be that big).  The caller refuses a shrink it was not told
	 * to force.  Stores the new size in be->size with
	 * __atomic_store_n (reactors read it without a lock).  0 or -errno
	 * with *errmsg.  Wrappers pass it to their inner backend. */
	int (*resize)(struct backend *be, uint64_t size, const char **errmsg);
	/* Optional: the store keeps its own ownership lock, which the ALUA
	 * handover (scsi_alua.c) uses instead of a lock file beside it.
	 * Management / ALUA threads; may block.  0 (or a BE_OWNER_* for
	 * QUERY) or -errno with *errmsg.  buf/len only for BE_OWNER_ID. */
	int (*owner)(struct backend *be, enum be_owner_op op, char *buf,
		     unsigned len, const char **errmsg);
	/* owner is a SCSI-3 persistent reservation (pr_owner.h), used only
	 * when the LUN asks for it (alua_lock = "scsi-pr"), after
	 * set_param("pr_key", this node's key); otherwise the LUN keeps its
	 * lock file.  false: owner is always the ownership (rbd). */
	bool owner_opt_in;
	/* Optional: small named values kept in the store itself (an RBD
	 * image's metadata), so whichever gateway owns the store reads what
	 * the one before wrote: the reservation state (scsi_pr_store.c) lives
	 * there instead of in a file when the store offers both.  Any thread;
	 * may block.  meta_get: 0 with *val a malloc'd NUL-terminated string,
	 * -ENOENT when key is not set, or -errno.  meta_set: one call
	 * replaces the whole value atomically; val NULL removes the key (0
	 * also when it was not set).  0 or -errno. */
	int (*meta_get)(struct backend *be, const char *key, char **val);
	int (*meta_set)(struct backend *be, const char *key, const char *val);
	/* Optional, with meta_get: every key that starts with prefix, as a
	 * malloc'd array of *n malloc'd strings (the persistent bitmaps,
	 * cbt_meta.c, remove shards nothing refers to any more).  0 or
	 * -errno. */
	int (*meta_list)(struct backend *be, const char *prefix, char ***keys,
			 unsigned *n);
	/* Optional: the store keeps snapshots of itself (an RBD image's)
	 * and can say what changed since one: cb(offset, length, arg) for
	 * every extent written since snapshot snap, in ascending order (an
	 * extent may be larger than what was written, never smaller).
	 * Management thread; may block for a while on a large store.  0,
	 * -ENOENT (no such snapshot), cb's nonzero return, or -errno. */
	int (*changed_since)(struct backend *be, const char *snap,
			     int (*cb)(uint64_t offset, uint64_t len,
				       void *arg), void *arg);
	/* Optional: the store takes snapshots of itself (an RBD image's).
	 * BE_SNAP_CREATE name (-EEXIST: it has one by that name),
	 * BE_SNAP_REMOVE name (-ENOENT: none), BE_SNAP_OPEN: *out gets a new
	 * node, opened, reading the store as it was at snapshot name
	 * (read-only; closed and freed by the owner, ops->close then free).
	 * Management thread.  0 or -errno with *errmsg. */
	int (*snapshot)(struct backend *be, enum be_snap_op op,
			const char *name, struct backend **out,
			const char **errmsg);
};

/* struct backend.thin */
enum {
	BE_THIN_SETTING = 0,	/* the store has no say: the LUN's
				 * thin_provisioning setting decides */
	BE_THIN_NO,		/* the store is fully provisioned */
	BE_THIN_YES,		/* the store is thin (deallocates on UNMAP,
				 * and unmapped blocks read back zero) */
};

struct backend {
	const struct backend_ops *ops;
	void *priv;		/* backend-private state */
	uint64_t size;		/* bytes; changed only by ops->resize, read
				 * with be_size() from other threads */
	bool direct;		/* opened O_DIRECT (page cache bypassed) */
	bool readonly;
	bool flush_failed;	/* buffered LUN: a flush failed once, fail all later flushes */
	/* The store does BE_OP_COMPARE_AND_WRITE itself for up to this many
	 * bytes, aligned to them (0 = not at all); set at open. */
	uint32_t caw_max;
	/* Filter nodes: BE_OP_COMPARE_AND_WRITE must not pass this node
	 * (it has to see the compare's write as a plain write, as the
	 * mirror does): with such a node in the stack the SCSI layer
	 * emulates COMPARE AND WRITE (be_stack_caw_max() is 0). */
	bool caw_opaque;
	/* Logical block provisioning as the store itself reports it
	 * (BE_THIN_*), fixed at open; filters and the stack root copy it
	 * from the node below like size and direct. */
	uint8_t thin;
	/* Store nodes: refuse every request that changes data with
	 * -ECANCELED, checked as the request reaches the store (after any
	 * filter delayed it).  Set by be_fence() when this node lost a
	 * store another machine now owns (target/scsi/scsi_alua.c); read
	 * and written with __atomic builtins. */
	bool fenced;
	/* Wrapped backend, if any.  A live stack change may swap it while I/O
	 * runs (stack.h): read it with backend_inner(). */
	struct backend *inner;
};

/* be->size as seen from a reactor while management may resize. */
static inline uint64_t be_size(const struct backend *be)
{
	return __atomic_load_n(&be->size, __ATOMIC_ACQUIRE);
}

/* The node below be, as published by the latest stack change. */
static inline struct backend *backend_inner(struct backend *be)
{
	return __atomic_load_n(&be->inner, __ATOMIC_SEQ_CST);
}

/* Fence the store (the bottom node below be) or lift the fence: while
 * fenced, a store that supports it (file) answers every request that
 * changes data with -ECANCELED when the request reaches it, however long
 * a filter above held it.  For a node that lost a shared store to another
 * machine (target/scsi/scsi_alua.c).  Any thread; be_stack_replace()
 * carries the flag over to a new store. */
static inline struct backend *be_bottom(struct backend *be)
{
	while (backend_inner(be))
		be = backend_inner(be);
	return be;
}

static inline void be_fence(struct backend *be, bool on)
{
	__atomic_store_n(&be_bottom(be)->fenced, on, __ATOMIC_SEQ_CST);
}

static inline bool be_fenced(struct backend *be)
{
	return __atomic_load_n(&be_bottom(be)->fenced, __ATOMIC_SEQ_CST);
}

/* Look a backend up by name ("file", "null", "fault", "passthrough");
 * NULL if unknown. */
const struct backend_ops *backend_find(const char *name);

/* Convenience: be->ops->submit(be, io, r). */
static inline void backend_submit(struct backend *be, struct be_io *io,
				  struct reactor *r)
{
	be->ops->submit(be, io, r);
}

/* The status of [io->offset, io->offset + io->length), as
 * backend_ops.block_status_async answers it (-EINPROGRESS: done() comes
 * later), for every backend: its block_status_async if it has one, else
 * its block_status (-EOPNOTSUPP without either) answered at once. */
static inline int backend_block_status(struct backend *be, struct be_io *io,
				       struct reactor *r)
{
	uint64_t ext = 0;
	int res;

	if (be->ops->block_status_async)
		return be->ops->block_status_async(be, io, r);
	/* a file: SEEK_DATA/SEEK_HOLE, answered at once, no loop turn per
	 * extent */
	if (!be->ops->block_status)
		return -EOPNOTSUPP;
	res = be->ops->block_status(be, io->offset, io->length, &ext);
	if (res >= 0)
		io->length = ext ? ext : 1;
	return res;
}

/* Complete io on reactor r asynchronously (for backends that finish
 * synchronously, e.g. null or an error before submission). */
void backend_complete_later(struct reactor *r, struct be_io *io, int res);

#endif
