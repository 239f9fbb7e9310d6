/* file.c - a regular file or a block device as backing store.
 *
 * All media I/O goes through the calling reactor's io_uring (no thread per
 * command): readv/writev for data, fsync for FLUSH, fallocate for UNMAP and
 * WRITE ZEROES.  Files are opened O_DIRECT by default so that a failed
 * write means "not written" (DESIGN.md, hang-on-error safety rule); a
 * buffered LUN follows the latched flush-failure rule below.
 *
 * Per-request state lives in be_io.be_scratch (struct be_file_io); only a
 * short transfer that must be continued allocates (the remaining iovec). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend.h"
#include "pr_owner.h"
#include "reactor.h"

/* O_DIRECT transfers must stay aligned to the device's logical block;
 * 512 bytes is the smallest any Linux block device uses. */
#define BE_FILE_MIN_DIO_ALIGN 512
/* Data buffers are aligned to this (backend.h). */
#define BE_FILE_BUF_ALIGN 4096
/* New backing files hold disk images: private to the daemon's user. */
#define BE_FILE_CREATE_MODE 0600
/* Chunk for the last-resort "write real zeroes" path. */
#define BE_FILE_ZERO_CHUNK (256 * 1024)

/* How a request proceeds.  UNMAP and WRITE ZEROES walk down a list of
 * ways to get zeroes onto the medium, from cheapest to the one that always
 * works, skipping ways the file system already refused once. */
enum be_file_stage {
	BE_FILE_STAGE_RW,		/* readv / writev of the caller's data */
	BE_FILE_STAGE_FLUSH,		/* fdatasync */
	BE_FILE_STAGE_PUNCH,		/* fallocate PUNCH_HOLE | KEEP_SIZE */
	BE_FILE_STAGE_ZERO_RANGE,	/* fallocate ZERO_RANGE (| KEEP_SIZE) */
	BE_FILE_STAGE_ZERO_WRITE,	/* write zero buffers */
};

struct be_file {
	int fd;
	bool blockdev;
	bool sync;			/* opened O_SYNC */
	atomic_bool no_punch;		/* fallocate refused PUNCH_HOLE */
	atomic_bool no_zero_range;	/* fallocate refused ZERO_RANGE */
	uint32_t dio_align;		/* logical block size for O_DIRECT */
	/* a SCSI disk owned by persistent reservation (alua_lock =
	 * "scsi-pr"): the commands go through SG_IO on fd */
	struct pr_owner pr;
	char path[PATH_MAX];
};

/* Per-request state, kept in be_io.be_scratch (declared uint64_t[]):
 * may_alias tells the compiler this view of that storage is intended. */
struct __attribute__((may_alias)) be_file_io {
	struct reactor_uring_op op;	/* must stay first: SQE user_data */
	struct backend *be;
	struct reactor *r;
	uint64_t done;			/* bytes transferred so far */
	struct iovec *rest;		/* malloc'd iovec of what is left, or NULL */
	int restcnt;
	uint8_t stage;			/* enum be_file_stage */
};
_Static_assert(sizeof(struct be_file_io) <=
		       sizeof(((struct be_io *)0)->be_scratch),
	       "be_file_io must fit in be_io.be_scratch");

/* Read-only source for BE_FILE_STAGE_ZERO_WRITE; aligned for O_DIRECT.  It
 * stays in .bss, so it costs no memory until the fallback is used. */
static uint8_t be_file_zeroes[BE_FILE_ZERO_CHUNK] __attribute__((aligned(4096)));

/* be->flush_failed is a plain bool in backend.h but reactors on several
 * threads may flush one LUN: set and read it with atomic builtins. */
static void be_file_latch_flush(struct backend *be)
{
	__atomic_store_n(&be->flush_failed, true, __ATOMIC_RELEASE);
}

static bool be_file_flush_latched(struct backend *be)
{
	return __atomic_load_n(&be->flush_failed, __ATOMIC_ACQUIRE);
}

static struct be_file_io *be_file_io_of(struct be_io *io)
{
	return (struct be_file_io *)io->be_scratch;
}

static struct be_io *be_file_io_owner(struct be_file_io *fio)
{
	return container_of((void *)fio, struct be_io, be_scratch);
}

/* ---- open / close ---- */

/* Options string: items separated by ';' or ','.  "sync" = O_SYNC,
 * "direct" / "nodirect" override params->direct. */
static int be_file_parse_opts(const char *opts, bool *direct, bool *sync)
{
	char buf[256];
	char *save = NULL;

	if (!opts || !*opts)
		return 0;
	if (strlen(opts) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, opts);
	for (char *tok = strtok_r(buf, ";,", &save); tok;
	     tok = strtok_r(NULL, ";,", &save)) {
		if (strcmp(tok, "sync") == 0)
			*sync = true;
		else if (strcmp(tok, "direct") == 0)
			*direct = true;
		else if (strcmp(tok, "nodirect") == 0)
			*direct = false;
		else
			return -EINVAL;
	}
	return 0;
}

/* Why open() failed, for the operator. */
static int be_file_open_error(int err, int flags, const char **errmsg)
{
	if (err == -EINVAL && (flags & O_DIRECT))
		*errmsg = "the file system does not support O_DIRECT "
			  "(set direct=0 for a buffered LUN)";
	else if (err == -EROFS)
		*errmsg = "the backing file is on a read-only file system "
			  "(set readonly=1)";
	else if (err == -EACCES || err == -EPERM)
		*errmsg = "no permission to open the backing file";
	else
		*errmsg = "cannot open the backing file";
	return err;
}

/* Create a sparse file of size bytes.  Missing directories are an error,
 * not something to create: a typo in a path must not scatter images. */
static int be_file_create(const char *path, int flags, uint64_t size,
			  const char **errmsg)
{
	int fd = open(path, flags | O_CREAT | O_EXCL, BE_FILE_CREATE_MODE);

	if (fd < 0) {
		int err = -errno;

		if (err == -ENOENT) {
			*errmsg = "the backing file's directory does not exist";
			return err;
		}
		if (err == -EEXIST)
			return err;
		return be_file_open_error(err, flags, errmsg);
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		int err = -errno;

		*errmsg = "cannot size the new backing file";
		close(fd);
		unlink(path);
		return err;
	}
	return fd;
}

/* Open p->path, creating a sparse file of p->size if it does not exist.
 * Returns the fd or -errno with *errmsg set. */
static int be_file_open_fd(const struct backend_params *p, int flags,
			   const char **errmsg)
{
	int fd = open(p->path, flags);

	if (fd >= 0)
		return fd;
	if (errno != ENOENT)
		return be_file_open_error(-errno, flags, errmsg);
	if (!p->size) {
		*errmsg = "the backing file does not exist (give a size to create it)";
		return -ENOENT;
	}
	if (p->readonly) {
		*errmsg = "the backing file of a read-only LUN does not exist";
		return -ENOENT;
	}
	fd = be_file_create(p->path, flags, p->size, errmsg);
	if (fd == -EEXIST) {
		/* Lost a race with another creator: use its file. */
		fd = open(p->path, flags);
		if (fd < 0)
			return be_file_open_error(-errno, flags, errmsg);
	}
	return fd;
}

/* O_DIRECT constraints of a regular file (statx STATX_DIOALIGN, Linux
 * 6.1+): offsets must be multiples of the file system's alignment, which
 * is the underlying device's logical block size (4096 on 4Kn disks), and
 * buffers must be aligned as backend.h promises (4096).  Checking at open
 * turns a LUN that could only fail with EINVAL into a clear refusal. */
static int be_file_dio_align(struct be_file *f, uint32_t block_size,
			     const char **errmsg)
{
	struct statx stx;

	if (statx(f->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) < 0 ||
	    !(stx.stx_mask & STATX_DIOALIGN))
		return 0;	/* older kernel: find out at the first I/O */
	if (!stx.stx_dio_offset_align) {
		*errmsg = "the file system does not support O_DIRECT on this "
			  "file (set direct=0 for a buffered LUN)";
		return -EINVAL;
	}
	if (stx.stx_dio_mem_align > BE_FILE_BUF_ALIGN) {
		*errmsg = "the file system needs O_DIRECT buffers aligned "
			  "beyond 4096 bytes";
		return -EINVAL;
	}
	if (stx.stx_dio_offset_align > f->dio_align)
		f->dio_align = stx.stx_dio_offset_align;
	if (block_size && block_size % f->dio_align) {
		*errmsg = "the block size is smaller than the file system's "
			  "O_DIRECT alignment (use block_size=4096 or direct=0)";
		return -EINVAL;
	}
	return 0;
}

static int be_file_open(struct backend *be, const struct backend_params *p,
			const char **errmsg)
{
	bool direct = p->direct, sync = p->sync;
	struct be_file *f;
	struct stat st;
	uint64_t actual;
	int flags, fd, err;

	if (!p->path || !*p->path) {
		*errmsg = "the file backend needs a path";
		return -EINVAL;
	}
	if (strlen(p->path) >= PATH_MAX) {
		*errmsg = "backing file path too long";
		return -ENAMETOOLONG;
	}
	if (be_file_parse_opts(p->opts, &direct, &sync) < 0) {
		*errmsg = "unknown file backend option (known: sync, direct, nodirect)";
		return -EINVAL;
	}

	flags = (p->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	if (direct)
		flags |= O_DIRECT;
	if (sync)
		flags |= O_SYNC;

	fd = be_file_open_fd(p, flags, errmsg);
	if (fd < 0)
		return fd;

	f = calloc(1, sizeof(*f));
	if (!f) {
		err = -ENOMEM;
		*errmsg = "out of memory";
		goto err_close;
	}
	f->fd = fd;
	f->sync = sync;
	f->dio_align = BE_FILE_MIN_DIO_ALIGN;
	strcpy(f->path, p->path);

	if (fstat(fd, &st) < 0) {
		err = -errno;
		*errmsg = "cannot stat the backing file";
		goto err_free;
	}
	if (S_ISBLK(st.st_mode)) {
		int lbs = 0;

		f->blockdev = true;
		if (ioctl(fd, BLKGETSIZE64, &actual) < 0) {
			err = -errno;
			*errmsg = "cannot read the block device's size";
			goto err_free;
		}
		if (ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0)
			f->dio_align = (uint32_t)lbs;
		if (direct && p->block_size && p->block_size < f->dio_align) {
			err = -EINVAL;
			*errmsg = "the block size is smaller than the device's "
				  "logical block size (O_DIRECT cannot split it)";
			goto err_free;
		}
	} else if (S_ISREG(st.st_mode)) {
		actual = (uint64_t)st.st_size;
		if (direct) {
			err = be_file_dio_align(f, p->block_size, errmsg);
			if (err)
				goto err_free;
		}
	} else {
		err = -EINVAL;
		*errmsg = "the backing store is neither a regular file nor a block device";
		goto err_free;
	}

	if (p->size && p->size > actual) {
		/* A configured size larger than the file grows it (sparse,
		 * existing data kept); a device cannot grow. */
		if (f->blockdev) {
			err = -EINVAL;
			*errmsg = "size is larger than the block device";
			goto err_free;
		}
		if (p->readonly) {
			err = -EINVAL;
			*errmsg = "size is larger than the read-only backing file";
			goto err_free;
		}
		if (ftruncate(fd, (off_t)p->size) < 0) {
			err = -errno;
			*errmsg = "cannot grow the backing file to the configured size";
			goto err_free;
		}
		actual = p->size;
	}
	be->size = p->size ? p->size : actual;
	if (!be->size) {
		err = -EINVAL;
		*errmsg = "the backing file is empty (give a size)";
		goto err_free;
	}
	be->direct = direct;
	be->readonly = p->readonly;
	be->flush_failed = false;
	be->priv = f;
	return 0;

err_free:
	free(f);
err_close:
	close(fd);
	return err;
}

static void be_file_close(struct backend *be)
{
	struct be_file *f = be->priv;

	if (!f)
		return;
	close(f->fd);
	free(f);
	be->priv = NULL;
}

/* ---- request engine ---- */

static struct io_uring_sqe *be_file_get_sqe(struct reactor *r)
{
	struct io_uring *ring = reactor_uring(r);
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (!sqe) {
		/* Submission queue full: push what is queued and retry once. */
		reactor_uring_kick(r);
		sqe = io_uring_get_sqe(ring);
	}
	return sqe;
}

/* Build fio->rest: the part of io's iovec from byte `from` up to
 * io->length.  Used when the caller's iovec is longer than the request
 * and to continue after a short transfer.  The caller's array is never
 * modified: the hang engine resubmits the same io on retry. */
static int be_file_build_rest(struct be_file_io *fio, struct be_io *io,
			      uint64_t from)
{
	uint64_t skip = from, want = io->length - from;
	int i = 0, n = 0;
	struct iovec *v;

	while (i < io->iovcnt && skip >= io->iov[i].iov_len) {
		skip -= io->iov[i].iov_len;
		i++;
	}
	v = malloc(sizeof(*v) * (size_t)(io->iovcnt - i > 0 ? io->iovcnt - i : 1));
	if (!v)
		return -ENOMEM;
	for (; i < io->iovcnt && want; i++, skip = 0) {
		uint64_t len = io->iov[i].iov_len - skip;

		if (len > want)
			len = want;
		v[n].iov_base = (char *)io->iov[i].iov_base + skip;
		v[n].iov_len = (size_t)len;
		want -= len;
		n++;
	}
	if (want) {
		free(v);
		return -EINVAL;		/* iovec shorter than length */
	}
	free(fio->rest);
	fio->rest = v;
	fio->restcnt = n;
	return 0;
}

static uint64_t be_file_iov_total(const struct be_io *io)
{
	uint64_t t = 0;

	for (int i = 0; i < io->iovcnt; i++)
		t += io->iov[i].iov_len;
	return t;
}

static void be_file_cqe(struct reactor_uring_op *op, int res);

/* Queue the SQE for fio's current stage.  0 or -errno. */
static int be_file_issue(struct be_file_io *fio)
{
	struct be_io *io = be_file_io_owner(fio);
	struct backend *be = fio->be;
	struct be_file *f = be->priv;
	struct io_uring_sqe *sqe = be_file_get_sqe(fio->r);
	uint64_t off = io->offset + fio->done;
	uint64_t left = io->length - fio->done;
	int mode;

	if (!sqe)
		return -EAGAIN;
	switch (fio->stage) {
	case BE_FILE_STAGE_RW: {
		const struct iovec *v = fio->rest ? fio->rest : io->iov;
		int cnt = fio->rest ? fio->restcnt : io->iovcnt;

		if (io->op == BE_OP_READ) {
			io_uring_prep_readv(sqe, f->fd, v, (unsigned)cnt, off);
		} else {
			/* FUA bit (SBC-4 WRITE (10)/(16)): this write alone
			 * goes to stable storage; O_SYNC already does that. */
			int rwf = (io->flags & BE_IO_FUA) && !f->sync ? RWF_DSYNC : 0;

			io_uring_prep_writev2(sqe, f->fd, v, (unsigned)cnt, off, rwf);
		}
		break;
	}
	case BE_FILE_STAGE_FLUSH:
		io_uring_prep_fsync(sqe, f->fd, IORING_FSYNC_DATASYNC);
		break;
	case BE_FILE_STAGE_PUNCH:
		mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		io_uring_prep_fallocate(sqe, f->fd, mode, (off_t)io->offset,
					(off_t)io->length);
		break;
	case BE_FILE_STAGE_ZERO_RANGE:
		mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
		io_uring_prep_fallocate(sqe, f->fd, mode, (off_t)io->offset,
					(off_t)io->length);
		break;
	case BE_FILE_STAGE_ZERO_WRITE: {
		int rwf = (io->flags & BE_IO_FUA) && !f->sync ? RWF_DSYNC : 0;

		if (left > BE_FILE_ZERO_CHUNK)
			left = BE_FILE_ZERO_CHUNK;
		/* io_uring_prep_write takes a non-const buffer but only
		 * reads it. */
		io_uring_prep_write(sqe, f->fd, be_file_zeroes, (unsigned)left, off);
		sqe->rw_flags = rwf;
		break;
	}
	}
	fio->op.fn = be_file_cqe;
	io_uring_sqe_set_data(sqe, &fio->op);
	return 0;
}

static void be_file_finish(struct be_file_io *fio, int res)
{
	struct be_io *io = be_file_io_owner(fio);

	free(fio->rest);
	fio->rest = NULL;
	io->done(io, res);
}

/* The next way to zero [offset, offset+length) after `cur`, skipping ways
 * this file already refused. */
static enum be_file_stage be_file_next_zero_stage(struct be_file *f,
						  enum be_op op, int cur)
{
	/* UNMAP prefers deallocating, WRITE ZEROES prefers keeping the
	 * blocks allocated (SBC-4 WRITE SAME with the UNMAP bit clear). */
	static const enum be_file_stage unmap_order[] = {
		BE_FILE_STAGE_PUNCH, BE_FILE_STAGE_ZERO_RANGE,
		BE_FILE_STAGE_ZERO_WRITE,
	};
	static const enum be_file_stage zeroes_order[] = {
		BE_FILE_STAGE_ZERO_RANGE, BE_FILE_STAGE_PUNCH,
		BE_FILE_STAGE_ZERO_WRITE,
	};
	const enum be_file_stage *order =
		op == BE_OP_UNMAP ? unmap_order : zeroes_order;
	size_t i = 0;

	if (cur >= 0) {
		while (i < ARRAY_SIZE(unmap_order) &&
		       order[i] != (enum be_file_stage)cur)
			i++;
		i++;
	}
	for (; i < ARRAY_SIZE(unmap_order); i++) {
		if (order[i] == BE_FILE_STAGE_PUNCH && atomic_load(&f->no_punch))
			continue;
		if (order[i] == BE_FILE_STAGE_ZERO_RANGE &&
		    atomic_load(&f->no_zero_range))
			continue;
		return order[i];
	}
	return BE_FILE_STAGE_ZERO_WRITE;
}

/* A data transfer advanced by res bytes: finish, or continue the rest.
 * A short transfer never counts as success (backend.h contract). */
static void be_file_transfer_done(struct be_file_io *fio, int res)
{
	struct be_io *io = be_file_io_owner(fio);
	struct be_file *f = fio->be->priv;
	int err;

	if (res < 0) {
		be_file_finish(fio, res);
		return;
	}
	if (res == 0) {
		/* No progress: end of file (the file shrank under us) or a
		 * device that stopped accepting data. */
		be_file_finish(fio, -EIO);
		return;
	}
	fio->done += (uint64_t)res;
	if (fio->done >= io->length) {
		be_file_finish(fio, 0);
		return;
	}
	/* An O_DIRECT continuation must start on a sector boundary; a short
	 * transfer that ended mid-sector (EOF of a non-aligned file) cannot
	 * be continued. */
	if (fio->be->direct && fio->done % f->dio_align) {
		be_file_finish(fio, -EIO);
		return;
	}
	if (fio->stage == BE_FILE_STAGE_RW) {
		err = be_file_build_rest(fio, io, fio->done);
		if (err) {
			be_file_finish(fio, err);
			return;
		}
	}
	err = be_file_issue(fio);
	if (err)
		be_file_finish(fio, err);
}

static void be_file_cqe(struct reactor_uring_op *op, int res)
{
	struct be_file_io *fio = container_of(op, struct be_file_io, op);
	struct be_io *io = be_file_io_owner(fio);
	struct backend *be = fio->be;
	struct be_file *f = be->priv;
	int err;

	switch (fio->stage) {
	case BE_FILE_STAGE_RW:
		/* A buffered write that had to reach stable storage (FUA or
		 * O_SYNC) and failed may have lost page-cache data, exactly as
		 * a failed flush can. */
		if (res < 0 && io->op == BE_OP_WRITE && !be->direct &&
		    ((io->flags & BE_IO_FUA) || f->sync))
			be_file_latch_flush(be);
		be_file_transfer_done(fio, res);
		return;
	case BE_FILE_STAGE_ZERO_WRITE:
		be_file_transfer_done(fio, res);
		return;
	case BE_FILE_STAGE_FLUSH:
		/* DESIGN.md: after a failed flush on a buffered LUN the page
		 * cache may have dropped the dirty data (and the kernel reports
		 * a writeback error only once), so every later flush fails. */
		if (res < 0 && !be->direct)
			be_file_latch_flush(be);
		be_file_finish(fio, res < 0 ? res : 0);
		return;
	case BE_FILE_STAGE_PUNCH:
	case BE_FILE_STAGE_ZERO_RANGE:
		if (res == -EOPNOTSUPP) {
			if (fio->stage == BE_FILE_STAGE_PUNCH)
				atomic_store(&f->no_punch, true);
			else
				atomic_store(&f->no_zero_range, true);
			fio->stage = be_file_next_zero_stage(f, io->op, fio->stage);
			fio->done = 0;
			err = be_file_issue(fio);
			if (err)
				be_file_finish(fio, err);
			return;
		}
		be_file_finish(fio, res < 0 ? res : 0);
		return;
	}
	be_file_finish(fio, -EIO);
}

static int be_file_check(struct backend *be, const struct be_io *io)
{
	const struct be_file *f = be->priv;

	if (io->op == BE_OP_FLUSH)
		return 0;
	uint64_t size = be_size(be);

	if (io->offset > size || io->length > size - io->offset)
		return -EINVAL;
	if (io->op != BE_OP_READ && be->readonly)
		return -EROFS;
	/* another node owns the store now (be_fence) */
	if (io->op != BE_OP_READ && io->op != BE_OP_FLUSH &&
	    __atomic_load_n(&be->fenced, __ATOMIC_SEQ_CST))
		return -ECANCELED;
	if (be->direct && (io->offset % f->dio_align ||
			   io->length % f->dio_align))
		return -EINVAL;
	return 0;
}

static void be_file_submit(struct backend *be, struct be_io *io,
			   struct reactor *r)
{
	struct be_file_io *fio = be_file_io_of(io);
	struct be_file *f = be->priv;
	int err;

	memset(fio, 0, sizeof(*fio));
	fio->be = be;
	fio->r = r;

	err = be_file_check(be, io);
	if (err)
		goto fail;
	switch (io->op) {
	case BE_OP_READ:
	case BE_OP_WRITE:
		fio->stage = BE_FILE_STAGE_RW;
		if (!io->length) {
			err = 0;
			goto fail;
		}
		if (be_file_iov_total(io) != io->length) {
			err = be_file_build_rest(fio, io, 0);
			if (err)
				goto fail;
		}
		break;
	case BE_OP_FLUSH:
		if (!be->direct && be_file_flush_latched(be)) {
			err = -EIO;
			goto fail;
		}
		fio->stage = BE_FILE_STAGE_FLUSH;
		break;
	case BE_OP_UNMAP:
	case BE_OP_WRITE_ZEROES:
		if (!io->length) {
			err = 0;
			goto fail;
		}
		fio->stage = be_file_next_zero_stage(f, io->op, -1);
		break;
	default:
		err = -EOPNOTSUPP;
		goto fail;
	}
	err = be_file_issue(fio);
	if (!err)
		return;
fail:
	free(fio->rest);
	fio->rest = NULL;
	backend_complete_later(r, io, err);
}

/* ---- block status (SBC-4 GET LBA STATUS, thin provisioning) ---- */

static int be_file_block_status(struct backend *be, uint64_t offset,
				uint64_t len, uint64_t *extent)
{
	struct be_file *f = be->priv;
	uint64_t size = be_size(be);
	off_t data, hole;

	if (offset >= size)
		return -EINVAL;
	len = MIN(len, size - offset);
	data = lseek(f->fd, (off_t)offset, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) {
			/* No data at or after offset: a hole to the end. */
			*extent = len;
			return 0;
		}
		/* SEEK_DATA unsupported (block devices, some file systems):
		 * everything counts as mapped. */
		*extent = len;
		return 1;
	}
	if ((uint64_t)data > offset) {
		*extent = MIN((uint64_t)data - offset, len);
		return 0;
	}
	hole = lseek(f->fd, (off_t)offset, SEEK_HOLE);
	if (hole < 0 || (uint64_t)hole <= offset)
		*extent = len;
	else
		*extent = MIN((uint64_t)hole - offset, len);
	return 1;
}

/* ---- online resize (backend.h) ---- */

static int be_file_resize(struct backend *be, uint64_t size,
			  const char **errmsg)
{
	struct be_file *f = be->priv;
	struct stat st;
	uint64_t actual;

	if (fstat(f->fd, &st) < 0) {
		*errmsg = "cannot stat the backing file";
		return -errno;
	}
	if (f->blockdev) {
		if (ioctl(f->fd, BLKGETSIZE64, &actual) < 0) {
			*errmsg = "cannot read the block device's size";
			return -errno;
		}
		if (size > actual) {
			*errmsg = "size is larger than the block device";
			return -EINVAL;
		}
	} else {
		actual = (uint64_t)st.st_size;
		/* A file is made exactly as big as the LUN (sparse when it
		 * grows), so a later rescan reads the same size back. */
		if (size && size != actual) {
			if (be->readonly) {
				*errmsg = "the backing file is read-only";
				return -EROFS;
			}
			if (ftruncate(f->fd, (off_t)size) < 0) {
				*errmsg = "cannot change the backing file's size";
				return -errno;
			}
			actual = size;
		}
	}
	__atomic_store_n(&be->size, size ? size : actual, __ATOMIC_RELEASE);
	return 0;
}

/* ---- ownership of a SCSI disk by persistent reservation ----
 *
 * The block device's own fd takes SG_IO (sd and sg both do); I/O the
 * disk refuses with RESERVATION CONFLICT completes with EBADE (the
 * kernel's BLK_STS_NEXUS), which the SCSI layer takes as the loss of
 * the ownership.  Untested on real disks (README). */

static int be_file_set_param(struct backend *be, const char *key,
			     const char *val)
{
	struct be_file *f = be->priv;

	if (strcmp(key, "pr_key"))
		return -ENOENT;
	if (!f->blockdev)
		return -EOPNOTSUPP;	/* a reservation needs a SCSI disk */
	return pr_key_parse(val, &f->pr.key);
}

static int be_file_owner(struct backend *be, enum be_owner_op op, char *buf,
			 unsigned len, const char **errmsg)
{
	struct be_file *f = be->priv;

	if (!f->blockdev) {
		*errmsg = "a persistent reservation needs a SCSI block device";
		return -EOPNOTSUPP;
	}
	f->pr.exec = pr_sgio_exec;
	f->pr.ctx = &f->fd;
	if (op == BE_OWNER_ID)
		return pr_owner_id(&f->pr, buf, len, errmsg);
	return pr_owner_op(&f->pr, op, errmsg);
}

static int be_file_describe(struct backend *be, char *buf, unsigned len)
{
	struct be_file *f = be->priv;

	return snprintf(buf, len, "file %s %s%s%s", f->path,
			be->direct ? "direct" : "buffered",
			f->sync ? " sync" : "",
			be_file_flush_latched(be) ? " flush-failed" : "");
}

const struct backend_ops be_file_ops = {
	.name = "file",
	.open = be_file_open,
	.close = be_file_close,
	.submit = be_file_submit,
	.describe = be_file_describe,
	.block_status = be_file_block_status,
	.resize = be_file_resize,
	.set_param = be_file_set_param,
	.owner = be_file_owner,
	.owner_opt_in = true,
};
