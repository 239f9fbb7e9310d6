/* fusefail.c - a pass-through FUSE filesystem that fails I/O on demand.
 *
 * Usage: fusefail [-d] SRC_DIR MOUNTPOINT CONTROL_FILE
 *
 * Mirrors SRC_DIR at MOUNTPOINT (in the foreground; run it in the
 * background and unmount with `fusermount3 -u MOUNTPOINT`).  Every read,
 * write, fsync and fallocate of a regular file goes through a handler that
 * consults CONTROL_FILE, so the daemon under test gets genuine kernel errors
 * on its O_DIRECT I/O instead of simulated ones.
 *
 * CONTROL_FILE holds whitespace- or comma-separated tokens ('#' starts a
 * comment); a missing or empty file means "ok":
 *   ok             clear every rule below
 *   read=ERR       fail reads with ERR
 *   write=ERR      fail writes and fallocate (unmap, write zeroes) with ERR
 *   flush=ERR      fail fsync / fdatasync with ERR
 *   all=ERR        read=, write= and flush= at once (not lock=)
 *   lock=ERR       fail requests to take an fcntl lock (F_SETLK,
 *                  F_SETLKW, OFD or POSIX; unlocking and F_GETLK still
 *                  work) with ERR: ENOLCK is what NFS answers once the
 *                  server let the client's lease expire
 *   delay=MS       answer every read/write/flush MS milliseconds late
 *                  (whether it fails or not); models a slow backend
 *   write_delay=US answer every write (and fallocate) US microseconds late,
 *                  on top of delay=; models a device with higher write
 *                  latency, e.g. a remote destination
 *   write_rate=N   pass at most N bytes per second of writes (suffix K, M
 *                  or G for KiB/MiB/GiB), all files and threads together:
 *                  a write of S bytes waits until the link, busy with the
 *                  writes before it, has had S/N seconds for it.  Models
 *                  slow storage that concurrency cannot speed up.  Only the
 *                  bytes of write requests count (fallocate is free).
 *                  Note that the kernel serializes writes to one file
 *                  (libfuse 3.14 cannot ask for parallel direct writes), so
 *                  write_delay= on one file also bounds its write rate.
 *   match=STR      apply the rules only to paths containing STR
 * ERR is an errno name (EIO, ENOSPC, EDQUOT, EROFS, ...), a number, or ok.
 * The file is re-read at most every CONTROL_RECHECK_MS; write it atomically
 * (write a temporary file, rename it over CONTROL_FILE).
 *
 * Locks: fcntl locks on the mount are passed through as OFD locks on the
 * underlying file's descriptor of that FUSE open, so two opens (two
 * daemons, or one daemon twice) exclude each other as on a local file
 * system, and a lock goes away when its file is closed.
 *
 * Every open sets direct_io, so the kernel sends each O_DIRECT (and
 * buffered) request straight to the handlers instead of the page cache.
 * The underlying file is opened without O_DIRECT (SRC_DIR may be tmpfs);
 * the handler returns only after the data reached SRC_DIR's file, so a
 * successful write is really written and a failed one is not written at
 * all.
 *
 * Power loss (-v): a volatile write-back cache.  A write that is not
 * durable (neither the file's open flags nor the write's own carry
 * O_DSYNC / O_SYNC, i.e. no FUA and no O_SYNC LUN) is kept in memory and
 * not written to SRC_DIR; reads see it.  fsync / fdatasync of the file
 * write its cached extents to SRC_DIR in order (then fsync that);
 * fallocate and truncate do the same first.  When fusefail exits (the
 * unmount is the power cut) the cache is dropped, except that with
 * -k P each cached 512-byte block is written with probability P, the
 * extents in random order (-s SEED), which is what a disk with a
 * volatile cache may do: unflushed writes may be lost or land in any
 * order, block by block, but never torn within a block.
 *
 * Counters: the virtual file MOUNTPOINT/.fusefail-stats (hidden from
 * readdir) reads as one line of key=value counters, e.g.
 *   reads=3 writes=5 flushes=1 fallocs=0 failed_reads=0 failed_writes=2 ...
 * (with -v also cached_writes=, durable_writes=, flushed_extents=)
 * so a test can assert whether a request reached the backing store.  The
 * counters are also printed to stderr at exit. */
/* 3.12: fuse_loop_mt() takes a fuse_loop_config built with fuse_loop_cfg_*() */
#define FUSE_USE_VERSION 312

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CONTROL_RECHECK_MS 2	/* "re-read the control file at most every few ms" */
#define CONTROL_MAX_BYTES 4096
#define STATS_NAME "/.fusefail-stats"
#define STATS_FH UINT64_MAX	/* fi->fh of the virtual stats file */
#define FF_MAX_THREADS 64

enum ff_op { FF_READ, FF_WRITE, FF_FLUSH, FF_FALLOC, FF_LOCK, FF_NR_OPS };

/* plural names of the counters in the stats file */
static const char *const ff_op_names[FF_NR_OPS] = {
	[FF_READ] = "reads", [FF_WRITE] = "writes", [FF_FLUSH] = "flushes",
	[FF_FALLOC] = "fallocs", [FF_LOCK] = "locks",
};

/* The parsed control file. */
struct ff_rules {
	int err[FF_NR_OPS];		/* positive errno to fail with, 0 = pass */
	unsigned delay_ms;
	unsigned write_delay_us;
	uint64_t write_rate;		/* bytes per second, 0 = unlimited */
	char match[256];		/* "" = every path */
};

/* One open regular file. */
struct ff_file {
	int fd;
	char path[PATH_MAX];
};

static struct {
	int src_fd;			/* SRC_DIR, for the *at() calls */
	char control[PATH_MAX];
	pthread_mutex_t lock;		/* guards rules and the recheck state */
	struct ff_rules rules;
	uint64_t checked_ms;
	struct stat control_st;		/* identity of the last file read */
	bool control_present;
	atomic_uint_fast64_t count[FF_NR_OPS];
	atomic_uint_fast64_t failed[FF_NR_OPS];
	atomic_uint_fast64_t bytes[FF_NR_OPS];
	pthread_mutex_t rate_lock;	/* guards rate_busy_ns */
	uint64_t rate_busy_ns;		/* write_rate: the link is busy until */
} ff = { .src_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER,
	.rate_lock = PTHREAD_MUTEX_INITIALIZER };

/* -v: cached (not yet durable) writes, in write order */
struct ff_extent {
	struct ff_extent *next;
	char path[PATH_MAX];
	off_t off;
	size_t len;
	char data[];
};

static struct {
	bool on;
	double keep;			/* -k: chance a block survives the cut */
	unsigned seed;
	pthread_mutex_t lock;
	struct ff_extent *head, **tail;
	atomic_uint_fast64_t cached, durable, flushed;
} vc = { .lock = PTHREAD_MUTEX_INITIALIZER, .tail = &vc.head };

static const struct {
	const char *name;
	int value;
} ff_errnos[] = {
	{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT },
	{ "EROFS", EROFS }, { "EPERM", EPERM }, { "EACCES", EACCES },
	{ "EINVAL", EINVAL }, { "ENOMEM", ENOMEM }, { "EAGAIN", EAGAIN },
	{ "EBUSY", EBUSY }, { "ETIMEDOUT", ETIMEDOUT },
	{ "ENOTCONN", ENOTCONN }, { "ECONNRESET", ECONNRESET },
	{ "ECONNREFUSED", ECONNREFUSED }, { "EHOSTUNREACH", EHOSTUNREACH },
	{ "ENETUNREACH", ENETUNREACH }, { "ESTALE", ESTALE },
	{ "EREMOTEIO", EREMOTEIO }, { "ENOLINK", ENOLINK },
	{ "ESHUTDOWN", ESHUTDOWN }, { "ENXIO", ENXIO }, { "ENODEV", ENODEV },
	{ "EFBIG", EFBIG }, { "EBADF", EBADF }, { "EINTR", EINTR },
	{ "ENODATA", ENODATA }, { "EILSEQ", EILSEQ }, { "EMEDIUMTYPE", EMEDIUMTYPE },
	{ "ENOMEDIUM", ENOMEDIUM }, { "EOVERFLOW", EOVERFLOW },
	{ "ENOLCK", ENOLCK }, { "EDEADLK", EDEADLK },
};

static uint64_t ff_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t ff_now_ms(void)
{
	return ff_now_ns() / 1000000;
}

static void ff_sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* "4M" -> 4194304; 0 on a malformed value (= unlimited). */
static uint64_t ff_parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end) {
		fprintf(stderr, "fusefail: bad size '%s'\n", s);
		return 0;
	}
	return v;
}

/* "EIO" / "5" / "ok" -> 5 / 5 / 0; -1 if unknown. */
static int ff_parse_errno(const char *s)
{
	char *end;
	long v;

	if (!strcasecmp(s, "ok") || !strcasecmp(s, "none") || !strcmp(s, "0"))
		return 0;
	for (size_t i = 0; i < sizeof(ff_errnos) / sizeof(ff_errnos[0]); i++)
		if (!strcasecmp(s, ff_errnos[i].name))
			return ff_errnos[i].value;
	v = strtol(s, &end, 10);
	if (*end || v <= 0 || v > 4095)
		return -1;
	return (int)v;
}

/* Parse the control text into r.  Unknown tokens are reported on stderr
 * and ignored, so a typo shows up in the test log. */
static void ff_parse_rules(char *text, struct ff_rules *r)
{
	char *save = NULL, *tok, *hash;

	memset(r, 0, sizeof(*r));
	/* strip comments line by line */
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');

		hash = strchr(line, '#');
		if (hash && (!nl || hash < nl))
			memset(hash, ' ', (size_t)((nl ? nl : hash + strlen(hash)) - hash));
		line = nl ? nl + 1 : NULL;
	}
	for (tok = strtok_r(text, " \t\r\n,;", &save); tok;
	     tok = strtok_r(NULL, " \t\r\n,;", &save)) {
		char *eq = strchr(tok, '=');
		const char *key = tok, *val;
		int e;

		if (!eq) {
			if (!strcasecmp(tok, "ok"))
				memset(r, 0, sizeof(*r));
			else
				fprintf(stderr, "fusefail: unknown token '%s'\n", tok);
			continue;
		}
		*eq = '\0';
		val = eq + 1;
		if (!strcmp(key, "delay")) {
			r->delay_ms = (unsigned)strtoul(val, NULL, 10);
			continue;
		}
		if (!strcmp(key, "write_delay")) {
			r->write_delay_us = (unsigned)strtoul(val, NULL, 10);
			continue;
		}
		if (!strcmp(key, "write_rate")) {
			r->write_rate = ff_parse_size(val);
			continue;
		}
		if (!strcmp(key, "match")) {
			snprintf(r->match, sizeof(r->match), "%s", val);
			continue;
		}
		e = ff_parse_errno(val);
		if (e < 0) {
			fprintf(stderr, "fusefail: unknown errno '%s'\n", val);
			continue;
		}
		if (!strcmp(key, "read")) {
			r->err[FF_READ] = e;
		} else if (!strcmp(key, "write")) {
			r->err[FF_WRITE] = e;
			r->err[FF_FALLOC] = e;
		} else if (!strcmp(key, "flush") || !strcmp(key, "fsync")) {
			r->err[FF_FLUSH] = e;
		} else if (!strcmp(key, "lock")) {
			r->err[FF_LOCK] = e;
		} else if (!strcmp(key, "all")) {
			for (int i = 0; i < FF_LOCK; i++)
				r->err[i] = e;
		} else {
			fprintf(stderr, "fusefail: unknown key '%s'\n", key);
		}
	}
}

/* Re-read the control file if it changed, at most every
 * CONTROL_RECHECK_MS, and return a copy of the current rules. */
static void ff_current_rules(struct ff_rules *out)
{
	uint64_t now = ff_now_ms();

	pthread_mutex_lock(&ff.lock);
	if (now - ff.checked_ms >= CONTROL_RECHECK_MS || ff.checked_ms == 0) {
		struct stat st;
		bool present = stat(ff.control, &st) == 0;
		bool changed = present != ff.control_present ||
			(present && (st.st_ino != ff.control_st.st_ino ||
				     st.st_size != ff.control_st.st_size ||
				     st.st_mtim.tv_sec != ff.control_st.st_mtim.tv_sec ||
				     st.st_mtim.tv_nsec != ff.control_st.st_mtim.tv_nsec));

		ff.checked_ms = now;
		if (changed) {
			char buf[CONTROL_MAX_BYTES + 1];
			ssize_t n = 0;
			int fd = present ? open(ff.control, O_RDONLY | O_CLOEXEC) : -1;

			if (fd >= 0) {
				n = read(fd, buf, CONTROL_MAX_BYTES);
				close(fd);
			}
			buf[n > 0 ? n : 0] = '\0';
			ff_parse_rules(buf, &ff.rules);
			ff.control_present = present;
			if (present)
				ff.control_st = st;
		}
	}
	*out = ff.rules;
	pthread_mutex_unlock(&ff.lock);
}

/* write_rate: reserve size bytes of the link's time after the writes
 * already queued on it, then sleep until that slot ends.  A link idle
 * for a while starts from now (no credit is saved up). */
static void ff_rate_wait(size_t size, uint64_t rate)
{
	uint64_t now = ff_now_ns(), cost, end;

	cost = (uint64_t)((double)size * 1e9 / (double)rate);
	pthread_mutex_lock(&ff.rate_lock);
	if (ff.rate_busy_ns < now)
		ff.rate_busy_ns = now;
	ff.rate_busy_ns += cost;
	end = ff.rate_busy_ns;
	pthread_mutex_unlock(&ff.rate_lock);
	if (end > now)
		ff_sleep_ns(end - now);
}

/* Apply the control rules to one request: delay it, then return the
 * negative errno to fail it with, or 0 to let it through. */
static int ff_gate(enum ff_op op, const char *path, size_t size)
{
	struct ff_rules r;

	ff_current_rules(&r);
	atomic_fetch_add(&ff.count[op], 1);
	if (r.match[0] && !strstr(path, r.match))
		return 0;
	if (r.delay_ms)
		ff_sleep_ns((uint64_t)r.delay_ms * 1000000);
	if (op == FF_WRITE || op == FF_FALLOC) {
		if (r.write_delay_us)
			ff_sleep_ns((uint64_t)r.write_delay_us * 1000);
		if (op == FF_WRITE && r.write_rate && !r.err[op])
			ff_rate_wait(size, r.write_rate);
	}
	if (!r.err[op])
		return 0;
	atomic_fetch_add(&ff.failed[op], 1);
	return -r.err[op];
}

static int ff_format_stats(char *buf, size_t len)
{
	int n = 0;

	for (int i = 0; i < FF_NR_OPS; i++)
		n += snprintf(buf + n, len - (size_t)n, "%s=%llu ", ff_op_names[i],
			      (unsigned long long)atomic_load(&ff.count[i]));
	for (int i = 0; i < FF_NR_OPS; i++)
		n += snprintf(buf + n, len - (size_t)n, "failed_%s=%llu ",
			      ff_op_names[i],
			      (unsigned long long)atomic_load(&ff.failed[i]));
	n += snprintf(buf + n, len - (size_t)n, "read_bytes=%llu write_bytes=%llu",
		      (unsigned long long)atomic_load(&ff.bytes[FF_READ]),
		      (unsigned long long)atomic_load(&ff.bytes[FF_WRITE]));
	if (vc.on)
		n += snprintf(buf + n, len - (size_t)n,
			      " cached_writes=%llu durable_writes=%llu "
			      "flushed_extents=%llu",
			      (unsigned long long)atomic_load(&vc.cached),
			      (unsigned long long)atomic_load(&vc.durable),
			      (unsigned long long)atomic_load(&vc.flushed));
	n += snprintf(buf + n, len - (size_t)n, "\n");
	return n;
}

/* "/a/b" -> "a/b" relative to SRC_DIR; "/" -> ".". */
static const char *ff_rel(const char *path)
{
	return path[1] ? path + 1 : ".";
}

static struct ff_file *ff_file(struct fuse_file_info *fi)
{
	return (struct ff_file *)(uintptr_t)fi->fh;
}

static void *ff_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	/* Paths are needed in read/write for match=, and attributes must not
	 * be cached across the backing file changing under the test. */
	cfg->nullpath_ok = 0;
	cfg->attr_timeout = 0;
	cfg->entry_timeout = 0;
	cfg->negative_timeout = 0;
	return NULL;
}

static int ff_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	if (!strcmp(path, STATS_NAME)) {
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = 4096;
		return 0;
	}
	if (fi && fi->fh != STATS_FH && fi->fh)
		return fstat(ff_file(fi)->fd, st) < 0 ? -errno : 0;
	if (fstatat(ff.src_fd, ff_rel(path), st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static int ff_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct dirent *de;
	DIR *d;
	int fd;

	(void)off; (void)fi; (void)flags;
	fd = openat(ff.src_fd, ff_rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		struct stat st = { .st_ino = de->d_ino,
				   .st_mode = (mode_t)DTTOIF(de->d_type) };

		if (fill(buf, de->d_name, &st, 0, 0))
			break;
	}
	closedir(d);
	return 0;
}

static int ff_open_common(const char *path, int flags, mode_t mode,
			  struct fuse_file_info *fi)
{
	struct ff_file *f;
	int fd;

	/* SRC_DIR may not support O_DIRECT (tmpfs); the FUSE side keeps it
	 * honest through direct_io below. */
	flags &= ~O_DIRECT;
	fd = openat(ff.src_fd, ff_rel(path), flags | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	f = calloc(1, sizeof(*f));
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	f->fd = fd;
	snprintf(f->path, sizeof(f->path), "%s", path);
	fi->fh = (uint64_t)(uintptr_t)f;
	/* Every request reaches read/write below, O_DIRECT or not. */
	fi->direct_io = 1;
	fi->keep_cache = 0;
	return 0;
}

static int ff_open(const char *path, struct fuse_file_info *fi)
{
	if (!strcmp(path, STATS_NAME)) {
		if ((fi->flags & O_ACCMODE) != O_RDONLY)
			return -EACCES;
		fi->fh = STATS_FH;
		fi->direct_io = 1;
		return 0;
	}
	return ff_open_common(path, fi->flags, 0, fi);
}

static int ff_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (!strcmp(path, STATS_NAME))
		return -EEXIST;
	return ff_open_common(path, fi->flags | O_CREAT, mode, fi);
}

static int ff_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	if (fi->fh != STATS_FH) {
		close(ff_file(fi)->fd);
		free(ff_file(fi));
	}
	return 0;
}

static int ff_pwrite_all(int fd, const char *buf, size_t size, off_t off)
{
	size_t done = 0;

	while (done < size) {
		ssize_t n = pwrite(fd, buf + done, size - done,
				   off + (off_t)done);

		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

/* Write path's cached extents to fd in order and drop them (vc.lock). */
static int vc_flush_locked(const char *path, int fd)
{
	struct ff_extent **pp = &vc.head, *e;
	int ret = 0;

	while ((e = *pp)) {
		if (strcmp(e->path, path) != 0) {
			pp = &e->next;
			continue;
		}
		if (!ret)
			ret = ff_pwrite_all(fd, e->data, e->len, e->off);
		*pp = e->next;
		if (vc.tail == &e->next)
			vc.tail = pp;
		free(e);
		atomic_fetch_add(&vc.flushed, 1);
	}
	return ret;
}

static int vc_flush(const char *path, int fd)
{
	int ret;

	pthread_mutex_lock(&vc.lock);
	ret = vc_flush_locked(path, fd);
	pthread_mutex_unlock(&vc.lock);
	return ret;
}

/* Cached data over what a read got from SRC_DIR, oldest first. */
static void vc_overlay(const char *path, char *buf, size_t size, off_t off,
		       size_t *done)
{
	pthread_mutex_lock(&vc.lock);
	for (struct ff_extent *e = vc.head; e; e = e->next) {
		off_t a = e->off > off ? e->off : off;
		off_t b = e->off + (off_t)e->len;

		if (b > off + (off_t)size)
			b = off + (off_t)size;
		if (strcmp(e->path, path) != 0 || a >= b)
			continue;
		memcpy(buf + (a - off), e->data + (a - e->off),
		       (size_t)(b - a));
		if ((size_t)(b - off) > *done)
			*done = (size_t)(b - off);
	}
	pthread_mutex_unlock(&vc.lock);
}

/* The power cut (exit): drop the cache, each block kept with vc.keep. */
static void vc_cut(void)
{
	struct ff_extent *e, **all = NULL;
	size_t n = 0, kept = 0, lost = 0;

	for (e = vc.head; e; e = e->next)
		n++;
	all = calloc(n ? n : 1, sizeof(*all));
	n = 0;
	for (e = vc.head; e && all; e = e->next)
		all[n++] = e;
	srand(vc.seed);
	for (size_t i = n; i > 1; i--) {	/* any order */
		size_t j = (size_t)rand() % i;
		struct ff_extent *t = all[i - 1];

		all[i - 1] = all[j];
		all[j] = t;
	}
	for (size_t i = 0; i < n; i++) {
		int fd = vc.keep > 0 ? openat(ff.src_fd, ff_rel(all[i]->path),
					      O_WRONLY | O_CLOEXEC) : -1;

		for (size_t o = 0; o < all[i]->len; o += 512) {
			size_t l = all[i]->len - o < 512 ? all[i]->len - o : 512;

			if (fd >= 0 && (double)rand() / RAND_MAX < vc.keep &&
			    ff_pwrite_all(fd, all[i]->data + o, l,
					  all[i]->off + (off_t)o) == 0)
				kept++;
			else
				lost++;
		}
		if (fd >= 0)
			close(fd);
	}
	fprintf(stderr, "fusefail: power cut: %zu cached extents, %zu blocks "
		"kept, %zu lost\n", n, kept, lost);
	free(all);
}

static int ff_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	ssize_t n;
	size_t done = 0;
	int err;

	if (fi->fh == STATS_FH) {
		char text[1024];
		int len = ff_format_stats(text, sizeof(text));

		if (off >= len)
			return 0;
		if (size > (size_t)(len - off))
			size = (size_t)(len - off);
		memcpy(buf, text + off, size);
		return (int)size;
	}
	err = ff_gate(FF_READ, ff_file(fi)->path, size);
	if (err)
		return err;
	(void)path;
	while (done < size) {
		n = pread(ff_file(fi)->fd, buf + done, size - done,
			  off + (off_t)done);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	if (vc.on)
		vc_overlay(ff_file(fi)->path, buf, size, off, &done);
	atomic_fetch_add(&ff.bytes[FF_READ], done);
	return (int)done;
}

static int ff_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	ssize_t n;
	size_t done = 0;
	int err;

	(void)path;
	if (fi->fh == STATS_FH)
		return -EACCES;
	err = ff_gate(FF_WRITE, ff_file(fi)->path, size);
	if (err)
		return err;
	if (vc.on && !(fi->flags & O_DSYNC)) {
		/* not durable: cached until a flush (O_SYNC includes the
		 * O_DSYNC bit; FUA arrives as RWF_DSYNC, i.e. O_DSYNC) */
		struct ff_extent *e = malloc(sizeof(*e) + size);

		if (!e)
			return -ENOMEM;
		e->next = NULL;
		snprintf(e->path, sizeof(e->path), "%s", ff_file(fi)->path);
		e->off = off;
		e->len = size;
		memcpy(e->data, buf, size);
		pthread_mutex_lock(&vc.lock);
		*vc.tail = e;
		vc.tail = &e->next;
		pthread_mutex_unlock(&vc.lock);
		atomic_fetch_add(&vc.cached, 1);
		atomic_fetch_add(&ff.bytes[FF_WRITE], size);
		return (int)size;
	}
	if (vc.on) {
		/* durable: earlier cached writes of the file first (a disk
		 * may order them either way; this keeps reads simple) */
		pthread_mutex_lock(&vc.lock);
		err = vc_flush_locked(ff_file(fi)->path, ff_file(fi)->fd);
		if (!err)
			err = ff_pwrite_all(ff_file(fi)->fd, buf, size, off);
		if (!err && fdatasync(ff_file(fi)->fd) < 0)
			err = -errno;
		pthread_mutex_unlock(&vc.lock);
		if (err)
			return err;
		atomic_fetch_add(&vc.durable, 1);
		atomic_fetch_add(&ff.bytes[FF_WRITE], size);
		return (int)size;
	}
	while (done < size) {
		n = pwrite(ff_file(fi)->fd, buf + done, size - done,
			   off + (off_t)done);
		if (n < 0)
			return done ? (int)done : -errno;
		done += (size_t)n;
	}
	atomic_fetch_add(&ff.bytes[FF_WRITE], done);
	return (int)done;
}

static int ff_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	int err;

	(void)path;
	if (fi->fh == STATS_FH)
		return 0;
	err = ff_gate(FF_FLUSH, ff_file(fi)->path, 0);
	if (err)
		return err;
	if (vc.on && (err = vc_flush(ff_file(fi)->path, ff_file(fi)->fd)))
		return err;
	if ((datasync ? fdatasync(ff_file(fi)->fd) : fsync(ff_file(fi)->fd)) < 0)
		return -errno;
	return 0;
}

static int ff_fallocate(const char *path, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	int err;

	(void)path;
	if (fi->fh == STATS_FH)
		return -EACCES;
	err = ff_gate(FF_FALLOC, ff_file(fi)->path, 0);
	if (err)
		return err;
	if (vc.on && (err = vc_flush(ff_file(fi)->path, ff_file(fi)->fd)))
		return err;
	if (fallocate(ff_file(fi)->fd, mode, off, len) < 0)
		return -errno;
	return 0;
}

static int ff_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path; (void)fi;
	return 0;	/* close(): nothing buffered here */
}

static int ff_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	int fd, ret = 0;

	if (vc.on && fi && fi->fh && fi->fh != STATS_FH &&
	    (ret = vc_flush(ff_file(fi)->path, ff_file(fi)->fd)))
		return ret;
	if (fi && fi->fh && fi->fh != STATS_FH)
		return ftruncate(ff_file(fi)->fd, size) < 0 ? -errno : 0;
	fd = openat(ff.src_fd, ff_rel(path), O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, size) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static int ff_unlink(const char *path)
{
	return unlinkat(ff.src_fd, ff_rel(path), 0) < 0 ? -errno : 0;
}

static int ff_mkdir(const char *path, mode_t mode)
{
	return mkdirat(ff.src_fd, ff_rel(path), mode) < 0 ? -errno : 0;
}

static int ff_rmdir(const char *path)
{
	return unlinkat(ff.src_fd, ff_rel(path), AT_REMOVEDIR) < 0 ? -errno : 0;
}

static int ff_rename(const char *from, const char *to, unsigned flags)
{
	if (renameat2(ff.src_fd, ff_rel(from), ff.src_fd, ff_rel(to), flags) < 0)
		return -errno;
	return 0;
}

static int ff_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	(void)fi;
	return fchmodat(ff.src_fd, ff_rel(path), mode, 0) < 0 ? -errno : 0;
}

static int ff_chown(const char *path, uid_t uid, gid_t gid,
		    struct fuse_file_info *fi)
{
	(void)fi;
	if (fchownat(ff.src_fd, ff_rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static int ff_utimens(const char *path, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	(void)fi;
	if (utimensat(ff.src_fd, ff_rel(path), tv, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static int ff_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	return fstatvfs(ff.src_fd, sv) < 0 ? -errno : 0;
}

static int ff_access(const char *path, int mask)
{
	if (!strcmp(path, STATS_NAME))
		return 0;
	return faccessat(ff.src_fd, ff_rel(path), mask, 0) < 0 ? -errno : 0;
}

/* fcntl locks (F_GETLK / F_SETLK / F_SETLKW): as OFD locks on this open's
 * own descriptor of the underlying file; lock= fails taking one. */
static int ff_lock(const char *path, struct fuse_file_info *fi, int cmd,
		   struct flock *lock)
{
	struct flock fl = *lock;
	int ret, ofd;

	if (!fi || !fi->fh || fi->fh == STATS_FH)
		return -ENOLCK;
	if (cmd == F_SETLK || cmd == F_SETLKW) {
		if (lock->l_type != F_UNLCK &&
		    (ret = ff_gate(FF_LOCK, path, 0)))
			return ret;
		ofd = cmd == F_SETLK ? F_OFD_SETLK : F_OFD_SETLKW;
	} else if (cmd == F_GETLK) {
		ofd = F_OFD_GETLK;
	} else {
		return -EINVAL;
	}
	fl.l_pid = 0;		/* OFD locks require it */
	if (fcntl(ff_file(fi)->fd, ofd, &fl) < 0)
		return -errno;
	if (cmd == F_GETLK) {
		lock->l_type = fl.l_type;
		lock->l_whence = fl.l_whence;
		lock->l_start = fl.l_start;
		lock->l_len = fl.l_len;
		lock->l_pid = fl.l_pid;
	}
	return 0;
}

static const struct fuse_operations ff_ops = {
	.init = ff_init,
	.getattr = ff_getattr,
	.readdir = ff_readdir,
	.open = ff_open,
	.create = ff_create,
	.release = ff_release,
	.read = ff_read,
	.write = ff_write,
	.fsync = ff_fsync,
	.flush = ff_flush,
	.fallocate = ff_fallocate,
	.truncate = ff_truncate,
	.unlink = ff_unlink,
	.mkdir = ff_mkdir,
	.rmdir = ff_rmdir,
	.rename = ff_rename,
	.chmod = ff_chmod,
	.chown = ff_chown,
	.utimens = ff_utimens,
	.statfs = ff_statfs,
	.access = ff_access,
	.lock = ff_lock,
};

static void ff_usage(void)
{
	fprintf(stderr,
		"usage: fusefail [-d] [-v [-k KEEP] [-s SEED]] [-o FUSEOPTS] SRC_DIR MOUNTPOINT CONTROL_FILE\n"
		"control file tokens: ok read=ERR write=ERR flush=ERR all=ERR lock=ERR "
		"delay=MS write_delay=US write_rate=N[KMG] match=STR\n");
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *loop;
	struct fuse_session *se;
	struct fuse *f;
	const char *fuse_opts = NULL, *mnt;
	bool debug = false;
	char stats[1024];
	int ret = 1, opt;

	while ((opt = getopt(argc, argv, "dvk:s:o:h")) != -1) {
		switch (opt) {
		case 'd': debug = true; break;
		case 'v': vc.on = true; break;
		case 'k': vc.keep = strtod(optarg, NULL); break;
		case 's': vc.seed = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'o': fuse_opts = optarg; break;
		default: ff_usage(); return opt == 'h' ? 0 : 2;
		}
	}
	if (argc - optind != 3) {
		ff_usage();
		return 2;
	}
	mnt = argv[optind + 1];
	ff.src_fd = open(argv[optind], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ff.src_fd < 0) {
		perror(argv[optind]);
		return 1;
	}
	if (!realpath(argv[optind + 2], ff.control)) {
		/* the control file may not exist yet: make the path absolute */
		snprintf(ff.control, sizeof(ff.control), "%s", argv[optind + 2]);
		if (ff.control[0] != '/') {
			char cwd[PATH_MAX / 2];

			if (!getcwd(cwd, sizeof(cwd)))
				return 1;
			snprintf(ff.control, sizeof(ff.control), "%s/%s", cwd,
				 argv[optind + 2]);
		}
	}

	if (fuse_opt_add_arg(&args, argv[0]) ||
	    fuse_opt_add_arg(&args, "-ofsname=fusefail") ||
	    (debug && fuse_opt_add_arg(&args, "-d")) ||
	    (fuse_opts && (fuse_opt_add_arg(&args, "-o") ||
			   fuse_opt_add_arg(&args, fuse_opts)))) {
		fprintf(stderr, "fusefail: out of memory\n");
		return 1;
	}
	f = fuse_new(&args, &ff_ops, sizeof(ff_ops), NULL);
	if (!f)
		goto out_args;
	if (fuse_mount(f, mnt) != 0)
		goto out_destroy;
	se = fuse_get_session(f);
	if (fuse_set_signal_handlers(se) != 0)
		goto out_unmount;
	/* Enough threads that delay= on one request does not stall the
	 * others (fuse_main's defaults trip a libfuse 3.14 warning). */
	loop = fuse_loop_cfg_create();
	if (!loop)
		goto out_signals;
	fuse_loop_cfg_set_max_threads(loop, FF_MAX_THREADS);
	fuse_loop_cfg_set_clone_fd(loop, 0);
	ret = fuse_loop_mt(f, loop) ? 1 : 0;
	fuse_loop_cfg_destroy(loop);
out_signals:
	fuse_remove_signal_handlers(se);
out_unmount:
	fuse_unmount(f);
out_destroy:
	fuse_destroy(f);
out_args:
	fuse_opt_free_args(&args);
	if (vc.on)
		vc_cut();
	ff_format_stats(stats, sizeof(stats));
	fprintf(stderr, "fusefail: %s", stats);
	return ret;
}
