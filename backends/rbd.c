/* rbd.c - a Ceph RBD image as backing store (librbd asynchronous API).
 *
 * path is "POOL/IMAGE", or "POOL/IMAGE@SNAP" for a read-only view of
 * the image's snapshot SNAP; the options string (tgt's bsopts spelling, items
 * separated by ';') holds the cluster connection:
 *
 *   conf=FILE  id=CLIENT  cluster=NAME  keyring=FILE
 *   osd_op_timeout=SECONDS  (default 5; 0 = librbd's default, wait forever)
 *   cache=0|1               (librbd cache, default off)
 *
 * Hang-on-error.  librbd waits forever while an OSD is unreachable; with
 * rados_osd_op_timeout set, a stuck operation completes with -ETIMEDOUT
 * and the hang engine holds, retries and times it out like any backend.
 *
 * Fencing (no zombie writes).  A write that timed out may still be applied
 * by the OSD later, after a newer write to the same block.  So before the
 * error of any write, discard or write-zeroes whose outcome is unknown is
 * passed up (where it may be reported, or the held command dropped), the
 * client instance that sent it is blocklisted (rados_blocklist_add of its
 * own address) and I/O moves to another instance whose OSD map already
 * contains the blocklist: the OSDs then refuse every late operation of the
 * old instance.  This is done eagerly, at the first indeterminate write
 * error, instead of when the hang engine drops or reports the command:
 * every later fate of the command is then safe, and the hang engine needs
 * no hook.  The price is one blocklist and one reopen per outage.
 *
 * Fence backoff.  A timeout says nothing about the instance: right after
 * an OSD thaws, a placement group may hold every client's operations
 * ("waiting for readable": its read lease ran out while the OSD was
 * stopped; Ceph 16 sometimes never renews it, README), and a fresh
 * instance times out there exactly as the fenced one did.  Fencing again at each timeout then only burns
 * instances (a fence storm).  So after a fence, until a write succeeds
 * again, a write that times out is re-sent on the same instance (it
 * writes the same data, and one client's operations on an object are
 * applied in order, so the earlier copy cannot land after a later write)
 * before that instance is fenced in turn: once after the first fence,
 * 3 times after the second, 7 after the third, 15 after the fourth and
 * on (at most 60 s in all): an effective timeout of 2, 4, 8, 16 times
 * rados_osd_op_timeout.  The error still goes up only after a fence.
 *
 * Instances.  An instance is a rados_t + ioctx + open image.  A standby
 * instance ("spare") is opened in the background, so a fence can move I/O
 * at once even while the OSD is unreachable (opening an image needs the
 * OSDs).  A worker thread per LUN does everything that blocks: opening
 * spares, blocklisting, waiting for the OSD map, closing fenced instances
 * once their last operation has come back.  Submissions never block.
 *
 * Completions.  Each instance has an eventfd that librbd signals when
 * operations finish (rbd_set_image_notification); the reactor that first
 * submits to the instance watches it and collects every finished
 * operation with rbd_poll_io_events, a batch per wake-up, so io->done runs
 * on that reactor with no hand-off (backend.h).  Only an operation another
 * reactor submitted is passed on with reactor_call().  Where librbd cannot
 * notify, its completion callback (on librbd's thread) hands each result
 * over with reactor_call().  The submit path takes one uncontended mutex
 * (to pin the current instance); no I/O waits on it. */
#include <errno.h>
#include <pthread.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "reactor.h"

extern const struct backend_ops be_rbd_ops;

#define BE_RBD_DEFAULT_POOL "rbd"
#define BE_RBD_DEFAULT_OP_TIMEOUT 5	/* seconds */
#define BE_RBD_NAME_MAX 128
#define BE_RBD_CAW_MAX 512	/* librbd's compare-and-write limit */
/* How often the worker retries a failed open or blocklist. */
#define BE_RBD_RETRY_MS 500
/* Connect timeout for the monitors (seconds). */
#define BE_RBD_MON_TIMEOUT "10"
/* Finished operations collected per rbd_poll_io_events call. */
#define BE_RBD_POLL_BATCH 64
/* How often a standby gateway asks the cluster who holds the lock. */
#define BE_RBD_PEER_ASK_MS 1000
/* How long the dead gateway's other watchers get to answer a probe after
 * a forced takeover (ms; librbd's own notifications wait 5 s). */
#define BE_RBD_PROBE_MS 3000
#define BE_RBD_WATCHERS_MAX 64
/* A write older than this, while another client holds the image's
 * exclusive lock and we are not an ALUA owner, makes the worker probe
 * that holder (be_rbd_stale_lock); a holder that answered is not probed
 * again for BE_RBD_STALE_QUIET_MS. */
#define BE_RBD_STUCK_MS 1000
#define BE_RBD_STALE_QUIET_MS 30000
/* Not while the cluster itself is in trouble: a timed-out operation or a
 * fence less than this long ago (ms) means writes wait for the OSDs, and
 * the probe's own cluster calls would hold up the worker's fencing. */
#define BE_RBD_STALE_CALM_MS 60000
/* Fence backoff: the longest a timed-out write is re-sent on its instance
 * before that one is fenced (seconds). */
#define BE_RBD_RESEND_BUDGET_S 60

enum be_rbd_fence {
	BE_RBD_LIVE,		/* serving or standby */
	BE_RBD_FENCING,		/* must be blocklisted before errors go up */
	BE_RBD_FENCED,		/* blocklisted: late writes are refused */
};

#define BE_RBD_FENCED_KEEP 8

struct be_rbd_inst {
	rados_t cluster;
	rados_ioctx_t ioctx;
	rbd_image_t image;
	char addr[128];			/* rados_getaddrs(), for blocklisting */
	uint64_t gid;			/* rados_get_instance_id: client.GID */
	int inflight;			/* operations in librbd (under lock) */
	enum be_rbd_fence fence;
	struct be_io *parked;		/* errors waiting for the blocklist */
	bool locked;			/* took the exclusive lock explicitly */
	struct be_rbd_inst *next;	/* on be_rbd.retired */
	/* completion notification: efd < 0 means librbd's callback */
	struct be_rbd *b;
	int efd;
	struct ev_fd evw;		/* on home's thread only */
	struct reactor *home;		/* watches efd (set under be_rbd.lock) */
	sem_t unwatched;		/* home dropped evw: efd may close */
};

struct be_rbd {
	char pool[BE_RBD_NAME_MAX];
	char image[BE_RBD_NAME_MAX];
	char snap[BE_RBD_NAME_MAX];	/* "" = the image itself */
	char conf[256];
	char id[64];
	char cluster_name[64];
	char keyring[256];
	unsigned op_timeout;		/* seconds, 0 = forever */
	bool cache;

	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t worker;
	bool stop;
	struct be_rbd_inst *cur;	/* serving I/O, or NULL */
	struct be_rbd_inst *spare;	/* opened, standing by, or NULL */
	struct be_rbd_inst *retired;	/* fencing or fenced, not yet closed */
	/* for show */
	uint64_t fences, opens, open_failures, timeouts;
	/* fences since the last successful write (the backoff's exponent),
	 * and the timed-out writes re-sent on their instance instead */
	unsigned fence_streak;
	uint64_t resends;
	/* writes librbd refused for want of the exclusive lock (owner mode) */
	uint64_t lock_waits;
	/* eventfd wake-ups and the completions they collected */
	atomic_ullong wakeups, polled;
	int last_open_err;
	unsigned open_streak;		/* failed opens since the last success */
	char last_fenced[160];
	time_t last_fence_at;
	/* several gateways: the image's exclusive lock is the ALUA
	 * ownership (be_rbd_owner) */
	bool owner_mode;		/* we took it and keep it */
	char broken[160];		/* the last owner we broke */
	/* after a forced break: look for broken's other watchers
	 * (be_rbd_reap_watchers), on the worker */
	bool reap_pending;
	uint64_t watcher_probes, watchers_fenced;
	/* mutating operations sent to librbd and their completions (any
	 * instance), for the worker's "a write is stuck" test; its mark:
	 * w_issued when last looked at (ms) */
	atomic_ullong w_issued, w_done;
	uint64_t w_mark, w_mark_ms, stale_quiet_until;
	uint64_t last_trouble_ms;	/* last timeout or fence (ms) */
	uint64_t stale_probes, stale_locks_broken;
	/* our own fenced (blocklisted) instances, the last few: a lock one
	 * of them still holds is ours to break and take again */
	char fenced_addr[BE_RBD_FENCED_KEEP][128];
	unsigned fenced_next;
	/* the standby's last answer to the owner query, and when (ms) */
	int peer_answer;		/* BE_OWNER_OTHER or _NONE */
	bool peer_valid;		/* peer_answer holds one */
	uint64_t peer_asked_ms;
};

/* Per-request state in be_io.be_scratch; may_alias: a second view of the
 * uint64_t storage. */
struct __attribute__((may_alias)) be_rbd_io {
	struct backend *be;
	struct be_rbd_inst *inst;
	struct reactor *r;
	struct iovec *trim;		/* malloc'd iovec cut to length, or NULL */
	int res;
	bool flushing;			/* FUA write: the flush after it */
	uint8_t resends;		/* re-sent on rio->inst after a timeout */
	struct be_io *next;		/* on inst->parked */
	uint64_t mismatch;		/* compare and write: image offset */
	char *bounce;			/* compare and write: iov made flat */
};
_Static_assert(sizeof(struct be_rbd_io) <=
		       sizeof(((struct be_io *)0)->be_scratch),
	       "be_rbd_io must fit in be_io.be_scratch");

static uint64_t be_rbd_now_ms(void);

/* An operation goes from the reactor that submits it, through librbd's
 * threads, to the reactor that collects its completion (or librbd's
 * callback thread).  librbd orders that with its own locks, which
 * ThreadSanitizer cannot see (librbd is not instrumented), so it would
 * report every field of the request as a race: tell it about the
 * hand-off.  Nothing outside a TSan build. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define BE_RBD_HANDOFF(io) __tsan_release(io)
#define BE_RBD_TAKEOVER(io) __tsan_acquire(io)
#else
#define BE_RBD_HANDOFF(io) ((void)(io))
#define BE_RBD_TAKEOVER(io) ((void)(io))
#endif

static struct be_rbd_io *be_rbd_io_of(struct be_io *io)
{
	return (struct be_rbd_io *)io->be_scratch;
}

/* ---- options ---- */

static int be_rbd_copy(char *dst, size_t len, const char *val)
{
	if (strlen(val) >= len)
		return -ENAMETOOLONG;
	strcpy(dst, val);
	return 0;
}

/* "conf=...;id=...": tgt's bs_rbd separates with ';'.  Both "id" and
 * "ceph_id"-style long names are accepted so targets.conf keys map 1:1. */
static int be_rbd_parse_opts(struct be_rbd *b, const char *opts,
			     const char **errmsg)
{
	char buf[1024];
	char *save = NULL;

	if (!opts || !*opts)
		return 0;
	if (strlen(opts) >= sizeof(buf)) {
		*errmsg = "rbd options too long";
		return -EINVAL;
	}
	strcpy(buf, opts);
	for (char *tok = strtok_r(buf, ";", &save); tok;
	     tok = strtok_r(NULL, ";", &save)) {
		char *val = strchr(tok, '=');
		int err = 0;

		if (!*tok)
			continue;
		if (!val) {
			*errmsg = "rbd option without '=' (conf=, id=, cluster=, keyring=, osd_op_timeout=, cache=)";
			return -EINVAL;
		}
		*val++ = '\0';
		if (strcmp(tok, "conf") == 0) {
			err = be_rbd_copy(b->conf, sizeof(b->conf), val);
		} else if (strcmp(tok, "id") == 0) {
			/* "client.admin" and "admin" both name client.admin */
			if (strncmp(val, "client.", 7) == 0)
				val += 7;
			err = be_rbd_copy(b->id, sizeof(b->id), val);
		} else if (strcmp(tok, "cluster") == 0) {
			err = be_rbd_copy(b->cluster_name,
					  sizeof(b->cluster_name), val);
		} else if (strcmp(tok, "keyring") == 0) {
			err = be_rbd_copy(b->keyring, sizeof(b->keyring), val);
		} else if (strcmp(tok, "osd_op_timeout") == 0) {
			char *end;
			unsigned long t = strtoul(val, &end, 10);

			if (!*val || *end || t > 3600) {
				*errmsg = "osd_op_timeout: seconds, 0 to 3600";
				return -EINVAL;
			}
			b->op_timeout = (unsigned)t;
		} else if (strcmp(tok, "cache") == 0) {
			if (strcmp(val, "1") == 0 || strcmp(val, "true") == 0 ||
			    strcmp(val, "on") == 0)
				b->cache = true;
			else if (strcmp(val, "0") == 0 ||
				 strcmp(val, "false") == 0 ||
				 strcmp(val, "off") == 0)
				b->cache = false;
			else
				err = -EINVAL;
		} else {
			*errmsg = "unknown rbd option (conf, id, cluster, keyring, osd_op_timeout, cache)";
			return -EINVAL;
		}
		if (err) {
			*errmsg = "bad rbd option value";
			return err;
		}
	}
	return 0;
}

/* "POOL/IMAGE" or "IMAGE" (pool rbd, as tgt's bs_rbd). */
static int be_rbd_parse_path(struct be_rbd *b, const char *path,
			     const char **errmsg)
{
	const char *slash = path ? strchr(path, '/') : NULL;
	const char *at;
	int err;

	if (!path || !*path) {
		*errmsg = "the rbd backend needs a path: POOL/IMAGE";
		return -EINVAL;
	}
	if (!slash) {
		snprintf(b->pool, sizeof(b->pool), "%s", BE_RBD_DEFAULT_POOL);
		err = be_rbd_copy(b->image, sizeof(b->image), path);
	} else if (slash == path || !slash[1] || strchr(slash + 1, '/') ||
		   (size_t)(slash - path) >= sizeof(b->pool)) {
		*errmsg = "rbd path must be POOL/IMAGE";
		return -EINVAL;
	} else {
		memcpy(b->pool, path, (size_t)(slash - path));
		b->pool[slash - path] = '\0';
		err = be_rbd_copy(b->image, sizeof(b->image), slash + 1);
	}
	if (err)
		return err;
	/* POOL/IMAGE@SNAP: the image as it was at its snapshot SNAP */
	at = strchr(b->image, '@');
	if (at) {
		if (at == b->image || !at[1] || strchr(at + 1, '@')) {
			*errmsg = "rbd path must be POOL/IMAGE or POOL/IMAGE@SNAP";
			return -EINVAL;
		}
		snprintf(b->snap, sizeof(b->snap), "%s", at + 1);
		b->image[at - b->image] = '\0';
	}
	return 0;
}

/* ---- instances (blocking; open thread or worker) ---- */

/* On in->home: stop watching the eventfd (the instance is closing). */
static void be_rbd_unwatch_call(void *arg)
{
	struct be_rbd_inst *in = arg;

	if (in->evw.active)
		reactor_fd_del(&in->evw);
	sem_post(&in->unwatched);
}

static void be_rbd_inst_close(struct be_rbd_inst *in)
{
	/* home is set and read under be_rbd.lock; an instance is closed
	 * only once no operation is in flight and nobody can pin it, so
	 * home no longer changes. */
	if (in->home && in->home == reactor_current()) {
		if (in->evw.active)
			reactor_fd_del(&in->evw);
	} else if (in->home) {
		while (reactor_call(in->home, be_rbd_unwatch_call, in) != 0)
			usleep(1000);
		while (sem_wait(&in->unwatched) != 0)
			;	/* EINTR */
	}
	if (in->image)
		rbd_close(in->image);
	if (in->ioctx)
		rados_ioctx_destroy(in->ioctx);
	if (in->cluster)
		rados_shutdown(in->cluster);
	if (in->efd >= 0)
		close(in->efd);
	sem_destroy(&in->unwatched);
	free(in);
}

static int be_rbd_conf_set(rados_t c, const char *key, const char *val)
{
	return val && *val ? rados_conf_set(c, key, val) : 0;
}

/* Connect a new client instance and open the image.  0 or -errno. */
static int be_rbd_inst_open(struct be_rbd *b, struct be_rbd_inst **out,
			    const char **errmsg)
{
	struct be_rbd_inst *in = calloc(1, sizeof(*in));
	char tmo[16];
	char *addrs = NULL;
	int err;

	if (!in) {
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	in->efd = -1;
	in->b = b;
	sem_init(&in->unwatched, 0, 0);
	err = rados_create2(&in->cluster,
			    b->cluster_name[0] ? b->cluster_name : "ceph",
			    b->id[0] ? b->id : "client.admin", 0);
	if (err) {
		*errmsg = "rados_create failed (bad client id?)";
		goto fail;
	}
	if (b->conf[0])
		err = rados_conf_read_file(in->cluster, b->conf);
	else
		err = rados_conf_read_file(in->cluster, NULL);
	if (err) {
		*errmsg = "cannot read the ceph configuration file";
		goto fail;
	}
	snprintf(tmo, sizeof(tmo), "%u", b->op_timeout);
	if ((err = be_rbd_conf_set(in->cluster, "keyring", b->keyring)) ||
	    (err = rados_conf_set(in->cluster, "rados_osd_op_timeout", tmo)) ||
	    (err = rados_conf_set(in->cluster, "rados_mon_op_timeout",
				  BE_RBD_MON_TIMEOUT)) ||
	    (err = rados_conf_set(in->cluster, "client_mount_timeout",
				  BE_RBD_MON_TIMEOUT)) ||
	    (err = rados_conf_set(in->cluster, "rbd_cache",
				  b->cache ? "true" : "false")) ||
	    /* UNMAP must read back zeroes (backend.h): librbd's default
	     * silently skips discards smaller than an object. */
	    (err = rados_conf_set(in->cluster, "rbd_skip_partial_discard",
				  "false"))) {
		*errmsg = "cannot apply a ceph client option";
		goto fail;
	}
	err = rados_connect(in->cluster);
	if (err) {
		*errmsg = "cannot connect to the ceph cluster";
		goto fail;
	}
	err = rados_ioctx_create(in->cluster, b->pool, &in->ioctx);
	if (err) {
		*errmsg = "cannot open the rbd pool";
		goto fail;
	}
	/* a snapshot is read-only: no exclusive lock, nothing to fence */
	if (b->snap[0])
		err = rbd_open_read_only(in->ioctx, b->image, &in->image,
					 b->snap);
	else
		err = rbd_open(in->ioctx, b->image, &in->image, NULL);
	if (err == -ENOENT && b->snap[0]) {
		*errmsg = "the rbd image or its snapshot does not exist";
		goto fail;
	}
	if (err) {
		*errmsg = "cannot open the rbd image";
		goto fail;
	}
	/* Completions through an eventfd the serving reactor polls; where
	 * that is not possible, librbd's callback thread hands them over. */
	in->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (in->efd >= 0 &&
	    rbd_set_image_notification(in->image, in->efd,
				       EVENT_TYPE_EVENTFD) != 0) {
		close(in->efd);
		in->efd = -1;
	}
	in->gid = rados_get_instance_id(in->cluster);
	if (rados_getaddrs(in->cluster, &addrs) == 0 && addrs) {
		snprintf(in->addr, sizeof(in->addr), "%s", addrs);
		free(addrs);
	}
	if (!in->addr[0]) {
		/* Without its address an instance cannot be fenced: refuse
		 * it rather than serve writes that could turn into zombies. */
		err = -EADDRNOTAVAIL;
		*errmsg = "cannot learn the rados client address (needed for fencing)";
		goto fail;
	}
	*out = in;
	return 0;
fail:
	be_rbd_inst_close(in);
	return err < 0 ? err : -EIO;
}

/* ---- completion ---- */

static void be_rbd_deliver_call(void *arg)
{
	struct be_io *io = arg;
	struct be_rbd_io *rio = be_rbd_io_of(io);

	free(rio->trim);
	rio->trim = NULL;
	free(rio->bounce);
	rio->bounce = NULL;
	/* librbd 16 gives the offset within the request; take an image
	 * offset too, should a later one give that */
	if (rio->res == -EILSEQ && io->op == BE_OP_COMPARE_AND_WRITE)
		io->miscompare_offset =
			rio->mismatch < io->length ? rio->mismatch
			: rio->mismatch >= io->offset &&
					rio->mismatch - io->offset < io->length
				? rio->mismatch - io->offset
				: 0;
	io->done(io, rio->res);
}

/* Hand io's result to its reactor (any thread): at once when this is
 * that reactor (completions collected from the eventfd). */
static void be_rbd_deliver(struct be_io *io, int res)
{
	struct be_rbd_io *rio = be_rbd_io_of(io);

	rio->res = res;
	if (rio->r == reactor_current()) {
		be_rbd_deliver_call(io);
		return;
	}
	while (reactor_call(rio->r, be_rbd_deliver_call, io) != 0)
		usleep(1000);	/* out of memory: nothing else to do here */
}

static bool be_rbd_mutating(const struct be_io *io)
{
	return io->op == BE_OP_WRITE || io->op == BE_OP_UNMAP ||
	       io->op == BE_OP_WRITE_ZEROES ||
	       io->op == BE_OP_COMPARE_AND_WRITE;
}

/* May a write that failed with err still be applied later?  Errors the
 * client decides itself before sending mean "not written". */
static bool be_rbd_indeterminate(int err)
{
	switch (err) {
	case -EINVAL:
	case -EROFS:
	case -EOPNOTSUPP:
	case -ENOMEM:
	case -ENOENT:
	case -EILSEQ:	/* compare and write: the data differed, no write */
		return false;
	default:
		return true;
	}
}

/* Start fencing in (lock held): take it out of service, promote nothing
 * yet (the spare may only serve once its OSD map holds the blocklist). */
static void be_rbd_start_fence(struct be_rbd *b, struct be_rbd_inst *in)
{
	if (in->fence != BE_RBD_LIVE)
		return;
	in->fence = BE_RBD_FENCING;
	if (b->fence_streak < 16)
		b->fence_streak++;	/* the next instance backs off longer */
	if (b->cur == in)
		b->cur = NULL;
	if (b->spare == in)
		b->spare = NULL;
	in->next = b->retired;
	b->retired = in;
	pthread_cond_signal(&b->wake);
}

static void be_rbd_aio_done(rbd_completion_t c, void *arg);

/* A completion for an operation of io on in: collected from in's eventfd,
 * or with the callback where librbd cannot notify.  librbd 16's C API
 * does not flag rbd_aio_compare_and_write for the image's event socket
 * (it passes native_async = false), so that call (caw) keeps the
 * callback; every other call is flagged, and a flagged completion must
 * have no callback (it would be finished twice).  0 or -errno. */
static int be_rbd_completion(struct be_rbd_inst *in, struct be_io *io,
			     bool caw, rbd_completion_t *c)
{
	bool notified = in->efd >= 0 && !caw;

	return rbd_aio_create_completion(io, notified ? NULL : be_rbd_aio_done,
					 c);
}

/* The iovec io is sent with: the caller's, or rio->trim (be_rbd_trim). */
static void be_rbd_iov(struct be_io *io, struct be_rbd_io *rio,
		       const struct iovec **v, int *cnt)
{
	uint64_t want = io->length;
	int n = 0;

	if (!rio->trim) {
		*v = io->iov;
		*cnt = io->iovcnt;
		return;
	}
	while (n < io->iovcnt && want) {
		want -= MIN(want, (uint64_t)rio->trim[n].iov_len);
		n++;
	}
	*v = rio->trim;
	*cnt = n;
}

/* Send io to librbd on in (pinned by the caller).  0 or -errno (nothing
 * was sent). */
static int be_rbd_issue(struct be_rbd_inst *in, struct be_io *io)
{
	struct be_rbd_io *rio = be_rbd_io_of(io);
	const struct iovec *v = NULL;
	rbd_completion_t c;
	int cnt = 0, err;

	err = be_rbd_completion(in, io, io->op == BE_OP_COMPARE_AND_WRITE, &c);
	if (err)
		return err;
	BE_RBD_HANDOFF(io);
	if (io->op == BE_OP_READ || io->op == BE_OP_WRITE)
		be_rbd_iov(io, rio, &v, &cnt);
	switch (io->op) {
	case BE_OP_READ:
		err = rbd_aio_readv(in->image, v, cnt, io->offset, c);
		break;
	case BE_OP_WRITE:
		err = rbd_aio_writev(in->image, v, cnt, io->offset, c);
		break;
	case BE_OP_FLUSH:
		err = rbd_aio_flush(in->image, c);
		break;
	case BE_OP_UNMAP:
		err = rbd_aio_discard(in->image, io->offset, io->length, c);
		break;
	case BE_OP_WRITE_ZEROES:
		err = rbd_aio_write_zeroes(in->image, io->offset,
					   (size_t)io->length, c, 0, 0);
		break;
	case BE_OP_COMPARE_AND_WRITE:
		err = (int)rbd_aio_compare_and_write(in->image, io->offset,
						     (size_t)io->length,
						     rio->bounce,
						     rio->bounce + io->length,
						     c, &rio->mismatch, 0);
		break;
	default:
		err = -EOPNOTSUPP;
		break;
	}
	if (err)
		rbd_aio_release(c);
	else if (be_rbd_mutating(io))
		atomic_fetch_add_explicit(&in->b->w_issued, 1,
					  memory_order_relaxed);
	return err;
}

/* Fence backoff (top of file): how often a write that timed out on a
 * live instance is re-sent there before the instance is fenced.  0 until
 * a fence happened with no successful write since.  Under b->lock. */
static unsigned be_rbd_resend_max(const struct be_rbd *b)
{
	unsigned shift = MIN(b->fence_streak, 4u);
	unsigned max = (1u << shift) - 1;

	if (!b->op_timeout)
		return 0;
	/* at most 60 s in all: (max + 1) * op_timeout */
	if ((max + 1) * b->op_timeout > BE_RBD_RESEND_BUDGET_S)
		max = BE_RBD_RESEND_BUDGET_S / b->op_timeout > 0
			      ? BE_RBD_RESEND_BUDGET_S / b->op_timeout - 1
			      : 0;
	return max;
}

/* May io, a write that failed with res on in, be re-sent there instead of
 * fencing in?  Only a timeout (the operation may be pending still, on an
 * instance that may still send), only operations that write the same data
 * again (not compare and write: a copy that landed would miscompare, not
 * the flush after a FUA write), only while in is live and within the
 * backoff.  Under b->lock. */
static bool be_rbd_may_resend(const struct be_rbd *b,
			      const struct be_rbd_inst *in,
			      const struct be_io *io,
			      const struct be_rbd_io *rio, int res)
{
	return res == -ETIMEDOUT && in->fence == BE_RBD_LIVE && b->cur == in &&
	       (io->op == BE_OP_WRITE || io->op == BE_OP_UNMAP ||
		io->op == BE_OP_WRITE_ZEROES) &&
	       !rio->flushing && rio->resends < be_rbd_resend_max(b);
}

static void be_rbd_aio_done(rbd_completion_t c, void *arg)
{
	struct be_io *io = (BE_RBD_TAKEOVER(arg), arg);
	struct be_rbd_io *rio = be_rbd_io_of(io);
	struct be_rbd_inst *in = rio->inst;
	struct backend *be = rio->be;
	struct be_rbd *b = be->priv;
	ssize_t ret = rbd_aio_get_return_value(c);
	bool refused = false;	/* librbd did not send it */
	int res;

	rbd_aio_release(c);
	if (be_rbd_mutating(io))
		atomic_fetch_add_explicit(&b->w_done, 1, memory_order_relaxed);
	if (ret < 0)
		res = (int)ret;
	else if (io->op == BE_OP_READ && (uint64_t)ret != io->length)
		res = -EIO;	/* short read: never success (backend.h) */
	else
		res = 0;

	/* FUA with the librbd cache on: the flush goes after the write. */
	if (res == 0 &&
	    (io->op == BE_OP_WRITE || io->op == BE_OP_COMPARE_AND_WRITE) &&
	    (io->flags & BE_IO_FUA) &&
	    b->cache && !rio->flushing) {
		rbd_completion_t fc;

		rio->flushing = true;
		if (be_rbd_completion(in, io, false, &fc) == 0) {
			BE_RBD_HANDOFF(io);
			if (rbd_aio_flush(in->image, fc) == 0) {
				atomic_fetch_add_explicit(&b->w_issued, 1,
							  memory_order_relaxed);
				return;
			}
			rbd_aio_release(fc);
		}
		res = -EIO;
	}

	pthread_mutex_lock(&b->lock);
	if (res == -ETIMEDOUT) {
		b->timeouts++;
		b->last_trouble_ms = be_rbd_now_ms();
	}
	if (res == -EROFS && b->owner_mode && be_rbd_mutating(io)) {
		/* librbd refused the write before sending it because this
		 * instance does not hold the exclusive lock at the moment:
		 * after a fence the watchdog is taking it back from our
		 * fenced instance (be_rbd_owner).  Not written, and not
		 * "write protected" for the initiator: a transient error the
		 * hang engine holds and retries.  A lock truly lost to the
		 * peer blocklists this instance and the watchdog says so. */
		res = -ENOTCONN;
		refused = true;
		b->lock_waits++;
	}
	if (res < 0 && be_rbd_may_resend(b, in, io, rio, res)) {
		/* in stays pinned (inflight) for the copy */
		rio->resends++;
		b->resends++;
		pthread_mutex_unlock(&b->lock);
		if (be_rbd_issue(in, io) == 0)
			return;
		pthread_mutex_lock(&b->lock);	/* not sent: fence, as below */
	}
	in->inflight--;
	if (res == 0 && be_rbd_mutating(io) && b->cur == in)
		b->fence_streak = 0;	/* writes work again: no backoff */
	if (res < 0 && !refused &&
	    ((be_rbd_mutating(io) && be_rbd_indeterminate(res)) ||
	     res == -ESHUTDOWN))	/* -EBLOCKLISTED: this instance is dead */
		be_rbd_start_fence(b, in);
	if (res < 0 && !refused && in->fence == BE_RBD_FENCING &&
	    be_rbd_mutating(io)) {
		/* Not a word to the initiator before the blocklist holds. */
		rio->res = res;
		rio->next = in->parked;
		in->parked = io;
		pthread_cond_signal(&b->wake);
		pthread_mutex_unlock(&b->lock);
		return;
	}
	if (in->inflight == 0 && in->fence == BE_RBD_FENCED)
		pthread_cond_signal(&b->wake);	/* can be closed now */
	pthread_mutex_unlock(&b->lock);
	be_rbd_deliver(io, res);
}

/* On in->home: librbd signalled in's eventfd; finish every operation
 * that is done, a batch at a time. */
static void be_rbd_events(struct ev_fd *w, uint32_t events)
{
	struct be_rbd_inst *in = w->arg;
	struct be_rbd *b = in->b;
	rbd_completion_t done[BE_RBD_POLL_BATCH];
	uint64_t cnt;
	int n;

	(void)events;
	/* Clear first: a completion that lands after the read signals
	 * again, so none is left behind. */
	if (read(in->efd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		log_warn("rbd: reading the completion eventfd: %s",
			 strerror(errno));
	atomic_fetch_add_explicit(&b->wakeups, 1, memory_order_relaxed);
	while ((n = rbd_poll_io_events(in->image, done,
				       BE_RBD_POLL_BATCH)) > 0) {
		atomic_fetch_add_explicit(&b->polled, (unsigned long long)n,
					  memory_order_relaxed);
		for (int i = 0; i < n; i++)
			be_rbd_aio_done(done[i], rbd_aio_get_arg(done[i]));
		if (n < BE_RBD_POLL_BATCH)
			break;
	}
}

/* On r: watch in's eventfd (the first submission to in came from r). */
static void be_rbd_watch_call(void *arg)
{
	struct be_rbd_inst *in = arg;
	int err = reactor_fd_add(in->home, &in->evw, in->efd, EPOLLIN,
				 be_rbd_events, in);

	if (err)	/* completions would never come back */
		log_err("rbd: cannot watch the completion eventfd: %s",
			  strerror(-err));
}

/* ---- worker ---- */

static void be_rbd_sleep_locked(struct be_rbd *b, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&b->wake, &b->lock, &ts);
}

/* Blocklist in (lock dropped).  The new serving instance then waits for
 * the OSD map that carries the entry, so the OSDs order our new writes
 * after the point where in's late writes are refused.  0 or -errno. */
static int be_rbd_fence_one(struct be_rbd *b, struct be_rbd_inst *in,
			    struct be_rbd_inst *next)
{
	int err;

	pthread_mutex_unlock(&b->lock);
	err = rados_blocklist_add(in->cluster, in->addr, 0);
	if (err == 0 && next)
		err = rados_wait_for_latest_osdmap(next->cluster);
	pthread_mutex_lock(&b->lock);
	if (err) {
		log_warn("rbd %s/%s: cannot blocklist client.%llu (%s): %s; "
			 "its failed writes stay unreported until it is fenced",
			 b->pool, b->image, (unsigned long long)in->gid,
			 in->addr, strerror(-err));
		return err;
	}
	log_info("rbd %s/%s: fenced client.%llu (%s) after a write with an "
		 "unknown outcome; I/O moves to %s", b->pool, b->image,
		 (unsigned long long)in->gid, in->addr,
		 next ? "the standby instance" : "a new instance");
	in->fence = BE_RBD_FENCED;
	b->fences++;
	b->last_trouble_ms = be_rbd_now_ms();
	b->last_fence_at = time(NULL);
	snprintf(b->last_fenced, sizeof(b->last_fenced), "client.%llu@%s",
		 (unsigned long long)in->gid, in->addr);
	snprintf(b->fenced_addr[b->fenced_next % BE_RBD_FENCED_KEEP],
		 sizeof(b->fenced_addr[0]), "%s", in->addr);
	b->fenced_next++;
	return 0;
}

static void be_rbd_reap_watchers(struct be_rbd *b, struct be_rbd_inst *in,
				 const char *owner);
static void be_rbd_stale_lock(struct be_rbd *b, struct be_rbd_inst *in);
static void be_rbd_unpin(struct be_rbd *b, struct be_rbd_inst *in);

/* Has a mutating operation been in librbd for BE_RBD_STUCK_MS or more,
 * on a LUN that is not an ALUA owner (which holds the lock itself)?
 * Sufficient, not necessary: some operation sent before the last mark
 * (at least BE_RBD_STUCK_MS ago) has not completed when fewer have
 * completed than had been sent by then.  Under b->lock, on the worker. */
static bool be_rbd_writes_stuck(struct be_rbd *b)
{
	uint64_t now = be_rbd_now_ms();
	uint64_t issued, done;
	bool stuck;

	if (b->owner_mode || !b->cur || b->snap[0] || b->retired ||
	    now < b->stale_quiet_until ||
	    (b->last_trouble_ms &&
	     now - b->last_trouble_ms < BE_RBD_STALE_CALM_MS)) {
		b->w_mark_ms = 0;
		return false;
	}
	if (b->w_mark_ms && now - b->w_mark_ms < BE_RBD_STUCK_MS)
		return false;
	issued = atomic_load_explicit(&b->w_issued, memory_order_relaxed);
	done = atomic_load_explicit(&b->w_done, memory_order_relaxed);
	stuck = b->w_mark_ms && done < b->w_mark;
	b->w_mark = issued;
	b->w_mark_ms = now;
	return stuck;
}

static void *be_rbd_worker(void *arg)
{
	struct backend *be = arg;
	struct be_rbd *b = be->priv;

	pthread_mutex_lock(&b->lock);
	while (!b->stop) {
		bool busy = false;

		/* 1. Fence: blocklist, switch to the spare, release errors. */
		for (struct be_rbd_inst *in = b->retired; in; in = in->next) {
			struct be_rbd_inst *next = b->spare;
			struct be_io *parked;

			if (in->fence != BE_RBD_FENCING)
				continue;
			if (be_rbd_fence_one(b, in, next)) {
				/* mon unreachable: the errors stay parked */
				be_rbd_sleep_locked(b, BE_RBD_RETRY_MS);
				busy = true;
				break;
			}
			if (!b->cur && next && b->spare == next) {
				b->cur = next;
				b->spare = NULL;
			}
			parked = in->parked;
			in->parked = NULL;
			pthread_mutex_unlock(&b->lock);
			while (parked) {
				struct be_io *n = be_rbd_io_of(parked)->next;

				be_rbd_deliver(parked, be_rbd_io_of(parked)->res);
				parked = n;
			}
			pthread_mutex_lock(&b->lock);
			busy = true;
			break;	/* the list may have changed */
		}
		if (busy)
			continue;

		/* 2. Close fenced instances whose last operation is back. */
		for (struct be_rbd_inst **pp = &b->retired; *pp;
		     pp = &(*pp)->next) {
			struct be_rbd_inst *in = *pp;

			if (in->fence != BE_RBD_FENCED || in->inflight)
				continue;
			*pp = in->next;
			pthread_mutex_unlock(&b->lock);
			be_rbd_inst_close(in);
			pthread_mutex_lock(&b->lock);
			busy = true;
			break;
		}
		if (busy)
			continue;

		/* 2b. After a forced takeover: fence the dead gateway's
		 * standby instance too (be_rbd_reap_watchers). */
		if (b->reap_pending && b->cur) {
			struct be_rbd_inst *in = b->cur;
			char owner[sizeof(b->broken)];

			b->reap_pending = false;
			memcpy(owner, b->broken, sizeof(owner));
			in->inflight++;
			pthread_mutex_unlock(&b->lock);
			be_rbd_reap_watchers(b, in, owner);
			be_rbd_unpin(b, in);
			pthread_mutex_lock(&b->lock);
			continue;
		}

		/* 3. Keep a serving instance and a spare.  Nothing is
		 * fencing here (step 1 finished), so a spare may serve. */
		if (!b->cur && b->spare) {
			b->cur = b->spare;
			b->spare = NULL;
			continue;
		}
		if (!b->cur || !b->spare) {
			struct be_rbd_inst *in = NULL;
			const char *msg = NULL;
			int err;

			pthread_mutex_unlock(&b->lock);
			err = be_rbd_inst_open(b, &in, &msg);
			if (err == 0)
				err = rados_wait_for_latest_osdmap(in->cluster);
			pthread_mutex_lock(&b->lock);
			if (err) {
				if (in) {
					pthread_mutex_unlock(&b->lock);
					be_rbd_inst_close(in);
					pthread_mutex_lock(&b->lock);
				}
				b->open_failures++;
				if (!b->open_streak++)
					log_warn("rbd %s/%s: cannot open a %s client "
						 "instance: %s (%s); retrying",
						 b->pool, b->image,
						 b->cur ? "standby" : "serving",
						 msg ? msg : "waiting for the OSD map",
						 strerror(-err));
				b->last_open_err = err;
				if (!b->stop)
					be_rbd_sleep_locked(b, BE_RBD_RETRY_MS);
				continue;
			}
			b->opens++;
			if (b->open_streak)
				log_info("rbd %s/%s: client instance open again "
					 "after %u failed attempts", b->pool,
					 b->image, b->open_streak);
			b->open_streak = 0;
			/* It may serve only if nothing started fencing
			 * while it was being opened (step 1 first). */
			if (!b->spare)
				b->spare = in;
			else {
				pthread_mutex_unlock(&b->lock);
				be_rbd_inst_close(in);
				pthread_mutex_lock(&b->lock);
			}
			continue;
		}

		/* 4. Writes wait for a lock another client holds: is it a
		 * dead one (be_rbd_stale_lock)? */
		if (be_rbd_writes_stuck(b)) {
			struct be_rbd_inst *in = b->cur;

			in->inflight++;
			pthread_mutex_unlock(&b->lock);
			be_rbd_stale_lock(b, in);
			be_rbd_unpin(b, in);
			pthread_mutex_lock(&b->lock);
			continue;
		}
		be_rbd_sleep_locked(b, 1000);
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

/* ---- open / close ---- */

static int be_rbd_open(struct backend *be, const struct backend_params *p,
		       const char **errmsg)
{
	struct be_rbd *b = calloc(1, sizeof(*b));
	struct be_rbd_inst *in = NULL;
	pthread_condattr_t ca;
	uint64_t size;
	int err;

	if (!b) {
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	b->op_timeout = BE_RBD_DEFAULT_OP_TIMEOUT;
	err = be_rbd_parse_path(b, p->path, errmsg);
	if (!err)
		err = be_rbd_parse_opts(b, p->opts, errmsg);
	if (err)
		goto err_free;
	if (b->id[0]) {
		/* rados_create2 wants the full entity name */
		char full[sizeof(b->id)];

		if ((size_t)snprintf(full, sizeof(full), "client.%s", b->id) >=
		    sizeof(full)) {
			err = -ENAMETOOLONG;
			*errmsg = "ceph client id too long";
			goto err_free;
		}
		memcpy(b->id, full, sizeof(full));
	}
	err = be_rbd_inst_open(b, &in, errmsg);
	if (err)
		goto err_free;
	err = rbd_get_size(in->image, &size);
	if (err) {
		*errmsg = "cannot read the rbd image's size";
		goto err_inst;
	}
	if (p->size && p->size != size) {
		err = -EINVAL;
		*errmsg = "size differs from the rbd image's size (leave it out)";
		goto err_inst;
	}
	if (p->block_size && size % p->block_size) {
		err = -EINVAL;
		*errmsg = "the rbd image's size is not a multiple of the block size";
		goto err_inst;
	}
	b->opens = 1;
	b->cur = in;
	pthread_mutex_init(&b->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->wake, &ca);
	pthread_condattr_destroy(&ca);
	be->priv = b;
	be->size = size;
	/* No client cache unless asked: a failed write means "not written"
	 * (after the fence) and the hang engine may retry it. */
	be->direct = !b->cache;
	/* librbd compares and writes within one 512-byte sector (and one
	 * stripe unit): enough for the one-block COMPARE AND WRITE that
	 * cluster file systems (VMFS ATS) use on 512-byte LUNs. */
	be->caw_max = BE_RBD_CAW_MAX;
	be->readonly = p->readonly || b->snap[0];
	err = pthread_create(&b->worker, NULL, be_rbd_worker, be);
	if (err) {
		err = -err;
		*errmsg = "cannot start the rbd worker thread";
		pthread_cond_destroy(&b->wake);
		pthread_mutex_destroy(&b->lock);
		be->priv = NULL;
		goto err_inst;
	}
	return 0;

err_inst:
	be_rbd_inst_close(in);
err_free:
	free(b);
	return err;
}

static void be_rbd_close(struct backend *be)
{
	struct be_rbd *b = be->priv;

	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	pthread_cond_signal(&b->wake);
	pthread_mutex_unlock(&b->lock);
	pthread_join(b->worker, NULL);
	/* No I/O is outstanding (backend.h), so nothing is parked. */
	if (b->cur)
		be_rbd_inst_close(b->cur);
	if (b->spare)
		be_rbd_inst_close(b->spare);
	while (b->retired) {
		struct be_rbd_inst *n = b->retired->next;

		be_rbd_inst_close(b->retired);
		b->retired = n;
	}
	pthread_cond_destroy(&b->wake);
	pthread_mutex_destroy(&b->lock);
	free(b);
	be->priv = NULL;
}

/* ---- submit ---- */

/* Cut io's iovec to io->length (the caller's may be longer).  0 or -errno. */
static int be_rbd_trim(struct be_io *io, struct be_rbd_io *rio,
		       const struct iovec **v, int *cnt)
{
	uint64_t total = 0, want = io->length;
	int n = 0;

	for (int i = 0; i < io->iovcnt; i++)
		total += io->iov[i].iov_len;
	*v = io->iov;
	*cnt = io->iovcnt;
	if (total == io->length)
		return 0;
	if (total < io->length)
		return -EINVAL;
	rio->trim = malloc(sizeof(struct iovec) * (size_t)io->iovcnt);
	if (!rio->trim)
		return -ENOMEM;
	for (int i = 0; i < io->iovcnt && want; i++) {
		size_t len = io->iov[i].iov_len;

		if (len > want)
			len = (size_t)want;
		rio->trim[n].iov_base = io->iov[i].iov_base;
		rio->trim[n].iov_len = len;
		want -= len;
		n++;
	}
	*v = rio->trim;
	*cnt = n;
	return 0;
}

/* Compare and write takes two flat buffers: the verify data and the write
 * data, copied from io's iov (2 * length bytes).  0 or -errno. */
static int be_rbd_flatten(struct be_io *io, struct be_rbd_io *rio)
{
	uint64_t want = 2 * io->length, got = 0;

	rio->bounce = malloc((size_t)want);
	if (!rio->bounce)
		return -ENOMEM;
	for (int i = 0; i < io->iovcnt && got < want; i++) {
		size_t len = MIN(io->iov[i].iov_len, (size_t)(want - got));

		memcpy(rio->bounce + got, io->iov[i].iov_base, len);
		got += len;
	}
	return got == want ? 0 : -EINVAL;
}

static void be_rbd_submit(struct backend *be, struct be_io *io,
			  struct reactor *r)
{
	struct be_rbd *b = be->priv;
	struct be_rbd_io *rio = be_rbd_io_of(io);
	struct be_rbd_inst *in;
	int err;

	memset(rio, 0, sizeof(*rio));
	rio->be = be;
	rio->r = r;

	uint64_t size = be_size(be);

	if (io->op != BE_OP_FLUSH &&
	    (io->offset > size || io->length > size - io->offset)) {
		err = -EINVAL;
		goto fail;
	}
	if (io->op != BE_OP_READ && io->op != BE_OP_FLUSH && be->readonly) {
		err = -EROFS;
		goto fail;
	}
	if ((io->op == BE_OP_READ || io->op == BE_OP_WRITE ||
	     io->op == BE_OP_UNMAP || io->op == BE_OP_WRITE_ZEROES) &&
	    !io->length) {
		err = 0;
		goto fail;
	}
	if (io->op == BE_OP_READ || io->op == BE_OP_WRITE) {
		const struct iovec *v;
		int cnt;

		err = be_rbd_trim(io, rio, &v, &cnt);
		if (err)
			goto fail;
	}
	if (io->op == BE_OP_COMPARE_AND_WRITE) {
		err = be_rbd_flatten(io, rio);
		if (err)
			goto fail;
	}

	pthread_mutex_lock(&b->lock);
	in = b->cur;
	if (!in) {
		/* Fencing or reopening: a transient, retryable error that
		 * never reached the cluster. */
		pthread_cond_signal(&b->wake);
		pthread_mutex_unlock(&b->lock);
		err = -ENOTCONN;
		goto fail;
	}
	in->inflight++;
	if (in->efd >= 0 && !in->home) {
		/* The first submission to in picks the reactor that collects
		 * its completions; queued before any of them can be. */
		in->home = r;
		while (reactor_call(r, be_rbd_watch_call, in) != 0)
			usleep(1000);
	}
	pthread_mutex_unlock(&b->lock);
	rio->inst = in;

	err = be_rbd_issue(in, io);
	if (err == 0)
		return;
	pthread_mutex_lock(&b->lock);
	in->inflight--;
	pthread_mutex_unlock(&b->lock);
fail:
	free(rio->trim);
	rio->trim = NULL;
	free(rio->bounce);
	rio->bounce = NULL;
	backend_complete_later(r, io, err);
}

/* ---- block status (GET LBA STATUS) from the image's allocation ---- */

struct be_rbd_diff {
	uint64_t offset, end;
	uint64_t first_data;	/* first allocated byte >= offset, or end */
	uint64_t data_end;	/* end of the run of data starting at offset */
};

static int be_rbd_diff_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct be_rbd_diff *d = arg;
	uint64_t e = off + len;

	if (!exists)
		return 0;
	if (off <= d->offset && e > d->offset) {
		d->first_data = d->offset;
		d->data_end = e;
	} else if (off > d->offset && off < d->first_data) {
		d->first_data = off;
	} else if (d->data_end && off == d->data_end) {
		d->data_end = e;	/* adjacent extent: the run continues */
	}
	return 0;
}

/* Synchronous and bounded by osd_op_timeout; called rarely (GET LBA
 * STATUS). */
static int be_rbd_block_status(struct backend *be, uint64_t offset,
			       uint64_t len, uint64_t *extent)
{
	struct be_rbd *b = be->priv;
	struct be_rbd_diff d;
	struct be_rbd_inst *in;
	int err;

	uint64_t size = be_size(be);

	if (offset >= size)
		return -EINVAL;
	len = MIN(len, size - offset);
	d.offset = offset;
	d.end = offset + len;
	d.first_data = d.end;
	d.data_end = 0;
	pthread_mutex_lock(&b->lock);
	in = b->cur;
	if (in)
		in->inflight++;
	pthread_mutex_unlock(&b->lock);
	if (!in)
		return -ENOTCONN;
	err = rbd_diff_iterate2(in->image, NULL, offset, len, 1, 0,
				be_rbd_diff_cb, &d);
	pthread_mutex_lock(&b->lock);
	in->inflight--;
	pthread_mutex_unlock(&b->lock);
	if (err < 0)
		return err;
	if (d.first_data > offset) {
		*extent = d.first_data - offset;
		return 0;
	}
	*extent = MIN(d.data_end, d.end) - offset;
	return 1;
}

/* ---- online resize (backend.h) ---- */

/* Management thread.  size 0: the size the image has now (resized with
 * `rbd resize` elsewhere: librbd learns of it through the header watch,
 * and rbd_stat refreshes the image first).  Else rbd_resize through the
 * serving instance (which holds the exclusive lock, if the image has one,
 * once it has written; otherwise librbd asks the holder for it). */
static int be_rbd_resize(struct backend *be, uint64_t size,
			 const char **errmsg)
{
	struct be_rbd *b = be->priv;
	struct be_rbd_inst *in;
	rbd_image_info_t info;
	int err = 0;

	if (size && be->readonly) {
		*errmsg = "the LUN is read-only";
		return -EROFS;
	}
	pthread_mutex_lock(&b->lock);
	in = b->cur;
	if (in)
		in->inflight++;
	pthread_mutex_unlock(&b->lock);
	if (!in) {
		*errmsg = "the rbd image is not open right now (fencing or "
			  "reconnecting); try again";
		return -EAGAIN;
	}
	if (size) {
		err = rbd_resize(in->image, size);
		if (err)
			*errmsg = "rbd_resize failed";
	}
	if (!err) {
		err = rbd_stat(in->image, &info, sizeof(info));
		if (err)
			*errmsg = "cannot read the rbd image's size";
		else if (size && info.size != size) {
			err = -EIO;
			*errmsg = "the rbd image did not take the new size";
		}
	}
	pthread_mutex_lock(&b->lock);
	in->inflight--;
	if (in->inflight == 0 && in->fence == BE_RBD_FENCED)
		pthread_cond_signal(&b->wake);
	pthread_mutex_unlock(&b->lock);
	if (err)
		return err;
	__atomic_store_n(&be->size, info.size, __ATOMIC_RELEASE);
	return 0;
}

/* ---- ownership for several gateways (backend.h, scsi_alua.c) ----
 *
 * The image's exclusive lock, taken explicitly (rbd_lock_acquire): unlike
 * librbd's transparent locking, an explicit holder does not hand the lock
 * over when another client asks, so the peer gateway's writes are refused
 * while this one is active.  A forced takeover breaks the holder's lock,
 * which blocklists it (rbd_blocklist_on_break): a dead or cut-off gateway
 * can write nothing after that.  After a fence moved I/O to a new client
 * instance, the next query takes the lock again through it. */

static uint64_t be_rbd_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct be_rbd_inst *be_rbd_pin(struct be_rbd *b)
{
	struct be_rbd_inst *in;

	pthread_mutex_lock(&b->lock);
	in = b->cur;
	if (in)
		in->inflight++;
	pthread_mutex_unlock(&b->lock);
	return in;
}

static void be_rbd_unpin(struct be_rbd *b, struct be_rbd_inst *in)
{
	pthread_mutex_lock(&b->lock);
	in->inflight--;
	if (in->inflight == 0 && in->fence == BE_RBD_FENCED)
		pthread_cond_signal(&b->wake);
	pthread_mutex_unlock(&b->lock);
}

/* A client address without the messenger decoration, so that
 * rados_getaddrs()' "[v2:127.0.0.1:0/123,...]" and a lock owner's
 * "127.0.0.1:0/123" compare: the first address, no brackets, no "vN:". */
static void be_rbd_addr_core(const char *s, char *out, size_t len)
{
	size_t n = 0;

	if (*s == '[')
		s++;
	if (!strncmp(s, "v1:", 3) || !strncmp(s, "v2:", 3))
		s += 3;
	else if (!strncmp(s, "any:", 4))
		s += 4;
	while (*s && *s != ',' && *s != ']' && n + 1 < len)
		out[n++] = *s++;
	out[n] = 0;
}

/* Is owner one of our own instances that we fenced (blocklisted)?
 * Under b->lock. */
static bool be_rbd_fenced_ours(struct be_rbd *b, const char *owner)
{
	char o[128], f[128];

	be_rbd_addr_core(owner, o, sizeof(o));
	if (!o[0])
		return false;
	for (unsigned i = 0; i < BE_RBD_FENCED_KEEP; i++) {
		if (!b->fenced_addr[i][0])
			continue;
		be_rbd_addr_core(b->fenced_addr[i], f, sizeof(f));
		if (!strcmp(o, f))
			return true;
	}
	return false;
}

/* The host part of a client address ("127.0.0.1:0/123" -> "127.0.0.1",
 * "[::1]:0/123" -> "[::1]"): the address without nonce and port. */
static void be_rbd_addr_host(const char *s, char *out, size_t len)
{
	char *slash, *colon;

	be_rbd_addr_core(s, out, len);
	slash = strchr(out, '/');
	if (slash)
		*slash = 0;
	colon = strrchr(out, ':');
	if (colon && (out[0] != '[' || colon > strchr(out, ']')))
		*colon = 0;
}

/* Is addr one of this LUN's own instances (serving, standby, retired)? */
static bool be_rbd_addr_ours(struct be_rbd *b, const char *addr)
{
	struct be_rbd_inst *list[2] = { b->cur, b->spare };
	char a[128], o[128];
	bool ours = false;

	be_rbd_addr_core(addr, a, sizeof(a));
	pthread_mutex_lock(&b->lock);
	for (unsigned i = 0; i < 2 && !ours; i++) {
		if (!list[i])
			continue;
		be_rbd_addr_core(list[i]->addr, o, sizeof(o));
		ours = !strcmp(a, o);
	}
	for (struct be_rbd_inst *in = b->retired; in && !ours; in = in->next) {
		be_rbd_addr_core(in->addr, o, sizeof(o));
		ours = !strcmp(a, o);
	}
	pthread_mutex_unlock(&b->lock);
	return ours;
}

/* Probe the image's watchers: a notification with an empty payload
 * (librbd takes that as "header changed", reloads and answers) on the
 * header object, BE_RBD_PROBE_MS to answer.  silent[i] is set for each
 * watcher w[i] with want[i] that did not answer.  Live clients answer
 * (our own instances, the rbd CLI, a gateway that is up).  0 or -errno
 * (then nothing is known).  On the worker, in pinned. */
static int be_rbd_probe(struct be_rbd_inst *in,
			const rbd_image_watcher_t *w, size_t n,
			const bool *want, bool *silent)
{
	struct notify_timeout_t *to = NULL;
	struct notify_ack_t *acks = NULL;
	size_t nto = 0, nacks = 0;
	char oid[96], id[64], *reply = NULL;
	size_t reply_len = 0;
	int err;

	err = rbd_get_id(in->image, id, sizeof(id));
	if (err < 0)
		return err;
	snprintf(oid, sizeof(oid), "rbd_header.%s", id);
	err = rados_notify2(in->ioctx, oid, "", 0, BE_RBD_PROBE_MS, &reply,
			    &reply_len);
	if ((err < 0 && err != -ETIMEDOUT) || !reply) {
		if (reply)
			rados_buffer_free(reply);
		return err < 0 ? err : -EIO;
	}
	err = rados_decode_notify_response(reply, reply_len, &acks, &nacks,
					   &to, &nto);
	rados_buffer_free(reply);
	if (err < 0)
		return err;
	for (size_t i = 0; i < n; i++) {
		silent[i] = false;
		for (size_t k = 0; want[i] && k < nto && !silent[i]; k++)
			silent[i] = to[k].notifier_id == (uint64_t)w[i].id &&
				    to[k].cookie == w[i].cookie;
	}
	rados_free_notify_response(acks, nacks, to);
	return 0;
}

/* After a forced takeover from owner (now blocklisted): a dead gateway
 * leaves more than its lock holder behind.  Its standby instance (every
 * holdfast LUN keeps one open, top of file) still watches the image
 * header, and until the OSD expires that watch (osd_client_watch_timeout,
 * 30 s) every librbd notification on the image -- each metadata update:
 * reservations, bitmaps -- waits 5 s for it.  So probe (be_rbd_probe)
 * and blocklist every watcher that did not answer and lives on the
 * broken owner's host; watchers on other hosts are left alone whatever
 * they do.  Runs on the worker, in (pinned) being the serving
 * instance. */
static void be_rbd_reap_watchers(struct be_rbd *b, struct be_rbd_inst *in,
				 const char *owner)
{
	rbd_image_watcher_t w[BE_RBD_WATCHERS_MAX];
	size_t n = BE_RBD_WATCHERS_MAX;
	char host[128], whost[128], wcore[128], ocore[128];
	bool cand[BE_RBD_WATCHERS_MAX] = { false };
	bool silent[BE_RBD_WATCHERS_MAX];
	unsigned ncand = 0;
	int err;

	be_rbd_addr_host(owner, host, sizeof(host));
	be_rbd_addr_core(owner, ocore, sizeof(ocore));
	if (!host[0])
		return;
	err = rbd_watchers_list(in->image, w, &n);
	if (err < 0) {
		log_warn("rbd %s/%s: cannot list the image's watchers after "
			 "the takeover: %s", b->pool, b->image, strerror(-err));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		be_rbd_addr_host(w[i].addr, whost, sizeof(whost));
		be_rbd_addr_core(w[i].addr, wcore, sizeof(wcore));
		if (strcmp(whost, host) || !strcmp(wcore, ocore) ||
		    be_rbd_addr_ours(b, w[i].addr))
			continue;
		cand[i] = true;
		ncand++;
	}
	if (!ncand)
		goto out;
	pthread_mutex_lock(&b->lock);
	b->watcher_probes++;
	pthread_mutex_unlock(&b->lock);
	err = be_rbd_probe(in, w, n, cand, silent);
	if (err < 0) {
		log_warn("rbd %s/%s: cannot probe the image's watchers after "
			 "the takeover: %s", b->pool, b->image, strerror(-err));
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!silent[i])
			continue;
		err = rados_blocklist_add(in->cluster, w[i].addr, 0);
		if (err < 0) {
			log_warn("rbd %s/%s: cannot blocklist client.%lld (%s), "
				 "a silent watcher left by the gateway we took "
				 "over from: %s", b->pool, b->image,
				 (long long)w[i].id, w[i].addr, strerror(-err));
			continue;
		}
		log_warn("rbd %s/%s: blocklisted client.%lld (%s), a watcher on "
			 "the host of the gateway we took over from that did not "
			 "answer in %d ms (its standby instance: metadata updates "
			 "would wait for it until the OSD expires its watch)",
			 b->pool, b->image, (long long)w[i].id, w[i].addr,
			 BE_RBD_PROBE_MS);
		pthread_mutex_lock(&b->lock);
		b->watchers_fenced++;
		pthread_mutex_unlock(&b->lock);
	}
out:
	rbd_watchers_list_cleanup(w, n);
}

/* Writes have waited BE_RBD_STUCK_MS (be_rbd_writes_stuck) on a LUN that
 * is no ALUA owner: do they wait for an exclusive lock a dead client
 * holds?  librbd asks the holder to hand the lock over and breaks it only
 * once the holder's watch is gone, which the OSD notices
 * osd_client_watch_timeout (30 s) after a crash: a single gateway
 * restarted after kill -9 had its first write wait 29.8 s.  So probe the
 * holder (be_rbd_probe): one that does not answer in BE_RBD_PROBE_MS is
 * dead or frozen, and its lock is broken, which blocklists it (nothing
 * it might still send lands); then its silent host-mates (its standby
 * instance) are reaped as after a forced takeover.  A holder that
 * answers is alive (a client using the image, the rbd CLI) and is left
 * to librbd's own hand-over; it is not asked again for
 * BE_RBD_STALE_QUIET_MS.  On the worker, in (pinned) the serving
 * instance. */
static void be_rbd_stale_lock(struct be_rbd *b, struct be_rbd_inst *in)
{
	rbd_image_watcher_t w[BE_RBD_WATCHERS_MAX];
	size_t n = BE_RBD_WATCHERS_MAX, nown = 4;
	bool want[BE_RBD_WATCHERS_MAX] = { false };
	bool silent[BE_RBD_WATCHERS_MAX];
	char owner[160], ocore[128], wcore[128], *owners[4];
	rbd_lock_mode_t mode;
	bool watched = false, dead = false, ours;
	int mine = 0, err;

	if (rbd_is_exclusive_lock_owner(in->image, &mine) < 0 || mine)
		return;
	err = rbd_lock_get_owners(in->image, &mode, owners, &nown);
	if (err == -ENOENT || (err == 0 && nown == 0))
		return;		/* nobody holds it (any more) */
	if (err < 0)
		goto quiet;
	snprintf(owner, sizeof(owner), "%s", owners[0]);
	rbd_lock_get_owners_cleanup(owners, nown);
	pthread_mutex_lock(&b->lock);
	ours = be_rbd_fenced_ours(b, owner);
	pthread_mutex_unlock(&b->lock);
	if (ours || be_rbd_addr_ours(b, owner))
		goto quiet;	/* ours: librbd and be_rbd_owner see to it */
	be_rbd_addr_core(owner, ocore, sizeof(ocore));
	if (rbd_watchers_list(in->image, w, &n) < 0)
		goto quiet;
	for (size_t i = 0; i < n; i++) {
		be_rbd_addr_core(w[i].addr, wcore, sizeof(wcore));
		want[i] = !strcmp(wcore, ocore);
		watched |= want[i];
	}
	/* no watch: librbd breaks the lock itself, at once */
	if (watched) {
		pthread_mutex_lock(&b->lock);
		b->stale_probes++;
		pthread_mutex_unlock(&b->lock);
		err = be_rbd_probe(in, w, n, want, silent);
		for (size_t i = 0; err == 0 && i < n; i++)
			dead |= silent[i];
	}
	rbd_watchers_list_cleanup(w, n);
	if (!dead)
		goto quiet;	/* it answered, or could not be asked */
	err = rbd_lock_break(in->image, mode, owner);
	if (err < 0 && err != -ENOENT) {
		log_warn("rbd %s/%s: writes wait for the exclusive lock of %s, "
			 "which did not answer in %d ms, and breaking it "
			 "failed: %s", b->pool, b->image, owner,
			 BE_RBD_PROBE_MS, strerror(-err));
		return;
	}
	log_warn("rbd %s/%s: broke the exclusive lock of %s (blocklisted): "
		 "writes waited for it and it did not answer in %d ms (a "
		 "gateway or client that died; the OSD would have dropped its "
		 "watch only after 30 s)", b->pool, b->image, owner,
		 BE_RBD_PROBE_MS);
	pthread_mutex_lock(&b->lock);
	b->stale_locks_broken++;
	snprintf(b->broken, sizeof(b->broken), "%s", owner);
	b->reap_pending = true;
	pthread_mutex_unlock(&b->lock);
	return;
quiet:
	pthread_mutex_lock(&b->lock);
	b->stale_quiet_until = be_rbd_now_ms() + BE_RBD_STALE_QUIET_MS;
	pthread_mutex_unlock(&b->lock);
}

/* How many others hold the lock (0 or 1), or -errno.  do_break: break
 * every holder's lock (a forced takeover; breaking blocklists it) and
 * return 0.  ours: break only a lock one of our own fenced instances
 * still holds (it is blocklisted already, so this fences nothing new)
 * and count the others. */
static int be_rbd_other_owners(struct be_rbd *b, struct be_rbd_inst *in,
			       bool do_break, bool ours)
{
	rbd_lock_mode_t mode;
	char *owners[4];
	size_t n = 4;
	int err = rbd_lock_get_owners(in->image, &mode, owners, &n);
	int others = 0;

	if (err == -ENOENT)
		return 0;
	if (err < 0)
		return err;
	for (size_t i = 0; i < n && err == 0; i++) {
		bool fenced = false;

		if (!do_break && ours) {
			pthread_mutex_lock(&b->lock);
			fenced = be_rbd_fenced_ours(b, owners[i]);
			pthread_mutex_unlock(&b->lock);
		}
		if (!do_break && !fenced) {
			others++;
			continue;
		}
		err = rbd_lock_break(in->image, mode, owners[i]);
		if (err == -ENOENT)
			err = 0;
		if (err < 0)
			break;
		if (fenced) {
			log_info("rbd %s/%s: took the exclusive lock back from "
				 "our own fenced instance %s", b->pool,
				 b->image, owners[i]);
			continue;
		}
		log_warn("rbd %s/%s: broke the exclusive lock of %s "
			 "(blocklisted) to take over", b->pool, b->image,
			 owners[i]);
		pthread_mutex_lock(&b->lock);
		snprintf(b->broken, sizeof(b->broken), "%s", owners[i]);
		b->reap_pending = true;
		pthread_cond_signal(&b->wake);
		pthread_mutex_unlock(&b->lock);
	}
	rbd_lock_get_owners_cleanup(owners, n);
	if (err < 0)
		return err;
	return others;		/* broken: nobody holds it now */
}

static int be_rbd_owner(struct backend *be, enum be_owner_op op, char *buf,
			unsigned len, const char **errmsg)
{
	struct be_rbd *b = be->priv;
	struct be_rbd_inst *in = be_rbd_pin(b);
	uint64_t features = 0;
	int err = 0, mine = 0;

	if (!in) {
		*errmsg = "the rbd image is not open right now (fencing or "
			  "reconnecting); try again";
		return -EAGAIN;
	}
	switch (op) {
	case BE_OWNER_ID: {
		char id[64];

		err = rbd_get_id(in->image, id, sizeof(id));
		if (err < 0) {
			*errmsg = "cannot read the rbd image's id";
			break;
		}
		snprintf(buf, len, "%s", id);
		break;
	}
	case BE_OWNER_TAKE:
	case BE_OWNER_TAKE_FORCE:
		if (rbd_get_features(in->image, &features) == 0 &&
		    !(features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
			*errmsg = "the rbd image has no exclusive-lock feature "
				  "(needed to serve it from several gateways)";
			err = -EOPNOTSUPP;
			break;
		}
		if (rbd_is_exclusive_lock_owner(in->image, &mine) == 0 &&
		    mine) {
			/* taken transparently by a write: make it explicit */
			err = rbd_lock_acquire(in->image,
					       RBD_LOCK_MODE_EXCLUSIVE);
		} else {
			err = be_rbd_other_owners(b, in,
						  op == BE_OWNER_TAKE_FORCE,
						  false);
			if (err > 0) {
				*errmsg = "the other gateway holds the image's "
					  "exclusive lock (it is active; make it "
					  "standby first, or add force=1 if it "
					  "is dead)";
				err = -EBUSY;
				break;
			}
			if (err == 0)
				err = rbd_lock_acquire(in->image,
						       RBD_LOCK_MODE_EXCLUSIVE);
		}
		if (err < 0) {
			if (!*errmsg)
				*errmsg = err == -EROFS
						  ? "another gateway took the image's "
						    "exclusive lock first"
						  : "rbd_lock_acquire failed";
			if (err == -EROFS)
				err = -EBUSY;
			break;
		}
		pthread_mutex_lock(&b->lock);	/* the worker reads it */
		b->owner_mode = true;
		pthread_mutex_unlock(&b->lock);
		b->peer_valid = false;
		in->locked = true;
		break;
	case BE_OWNER_RELEASE:
		pthread_mutex_lock(&b->lock);
		b->owner_mode = false;
		pthread_mutex_unlock(&b->lock);
		b->peer_valid = false;
		in->locked = false;
		rbd_flush(in->image);
		if (rbd_is_exclusive_lock_owner(in->image, &mine) == 0 &&
		    mine) {
			err = rbd_lock_release(in->image);
			if (err < 0)
				*errmsg = "rbd_lock_release failed";
		} else if (be_rbd_other_owners(b, in, false, true) < 0) {
			/* a fence left the lock with our old instance and
			 * it could not be broken: the peer needs force=1 */
			*errmsg = "cannot break our fenced instance's lock";
		}
		break;
	case BE_OWNER_QUERY:
		err = rbd_is_exclusive_lock_owner(in->image, &mine);
		if (err < 0)
			break;
		if (mine) {
			/* after a fence a write of the new instance may
			 * have taken it transparently: make it explicit,
			 * or librbd hands it to the peer when asked */
			if (b->owner_mode && !in->locked &&
			    rbd_lock_acquire(in->image,
					     RBD_LOCK_MODE_EXCLUSIVE) == 0)
				in->locked = true;
			err = BE_OWNER_MINE;
			break;
		}
		/* A standby gateway's question only feeds the peer state
		 * it reports (RTPG): ask the cluster at most once a
		 * second, not at each watchdog round (every 200 ms, under
		 * the ALUA mutex).  The owner always asks. */
		if (!b->owner_mode && b->peer_valid &&
		    be_rbd_now_ms() - b->peer_asked_ms < BE_RBD_PEER_ASK_MS) {
			err = b->peer_answer;
			break;
		}
		/* After a fence our old, blocklisted instance still holds
		 * the lock: break it, it is ours. */
		err = be_rbd_other_owners(b, in, false, b->owner_mode);
		if (err > 0) {
			err = BE_OWNER_OTHER;
			if (!b->owner_mode) {
				b->peer_answer = err;
				b->peer_valid = true;
				b->peer_asked_ms = be_rbd_now_ms();
			}
			break;
		}
		if (err < 0)
			break;
		/* nobody: after a fence the new instance takes it again */
		err = BE_OWNER_NONE;
		if (!b->owner_mode) {
			b->peer_answer = err;
			b->peer_valid = true;
			b->peer_asked_ms = be_rbd_now_ms();
		}
		if (b->owner_mode) {
			int e = rbd_lock_acquire(in->image,
						 RBD_LOCK_MODE_EXCLUSIVE);

			if (e == 0) {
				in->locked = true;
				err = BE_OWNER_MINE;
			} else if (e == -ETIMEDOUT || e == -ENOTCONN) {
				err = e;	/* cannot tell: see below */
			}
		}
		break;
	}
	/* An OSD that does not answer (frozen, restarting: the op timed
	 * out) says nothing about who holds the lock: "cannot tell now",
	 * ask again (backend.h), and the hang engine holds the I/O
	 * meanwhile.  Staying owner is safe: a peer that takes over by
	 * force breaks the lock, which blocklists this instance, and the
	 * next answer is "not mine". */
	if (op == BE_OWNER_QUERY && (err == -ETIMEDOUT || err == -ENOTCONN)) {
		*errmsg = "the cluster did not answer the lock query in time";
		err = -EAGAIN;
	}
	be_rbd_unpin(b, in);
	return err;
}

/* ---- small values in the image's metadata (backend.h) ---- */

static int be_rbd_meta_get(struct backend *be, const char *key, char **val)
{
	struct be_rbd *b = be->priv;
	struct be_rbd_inst *in = be_rbd_pin(b);
	size_t len = 256;
	char *buf = NULL;
	int err;

	if (!in)
		return -EAGAIN;
	for (;;) {
		char *nb = realloc(buf, len + 1);

		if (!nb) {
			err = -ENOMEM;
			break;
		}
		buf = nb;
		/* len in: the buffer's size; out: the value's, with its
		 * NUL (-ERANGE: too small, len says how big) */
		err = rbd_metadata_get(in->image, key, buf, &len);
		if (err != -ERANGE)
			break;
	}
	be_rbd_unpin(b, in);
	if (err < 0) {
		free(buf);
		return err;
	}
	buf[len] = 0;
	*val = buf;
	return 0;
}

static int be_rbd_meta_set(struct backend *be, const char *key,
			   const char *val)
{
	struct be_rbd *b = be->priv;
	struct be_rbd_inst *in;
	int err;

	if (be->readonly)
		return -EROFS;
	in = be_rbd_pin(b);
	if (!in)
		return -EAGAIN;
	if (val) {
		err = rbd_metadata_set(in->image, key, val);
	} else {
		err = rbd_metadata_remove(in->image, key);
		if (err == -ENOENT)
			err = 0;
	}
	be_rbd_unpin(b, in);
	return err;
}

static int be_rbd_meta_list(struct backend *be, const char *prefix,
			    char ***keysp, unsigned *np)
{
	struct be_rbd *b = be->priv;
	struct be_rbd_inst *in = be_rbd_pin(b);
	size_t klen = 4096, vlen = 64 * 1024, pl = strlen(prefix);
	char *keys = NULL, *vals = NULL, **out = NULL;
	unsigned n = 0, cap = 0;
	int err;

	if (!in)
		return -EAGAIN;
	for (;;) {
		char *nk = realloc(keys, klen + 1), *nv = realloc(vals, vlen + 1);

		if (nk)
			keys = nk;
		if (nv)
			vals = nv;
		if (!nk || !nv) {
			err = -ENOMEM;
			break;
		}
		memset(keys, 0, klen + 1);
		/* every key and value at once (max 0: no limit); -ERANGE
		 * says how big the buffers must be */
		err = rbd_metadata_list(in->image, "", 0, keys, &klen, vals,
					&vlen);
		if (err != -ERANGE)
			break;
	}
	be_rbd_unpin(b, in);
	free(vals);
	for (size_t off = 0; err >= 0 && off < klen && keys[off];) {
		size_t kl = strnlen(keys + off, klen - off);

		if (kl >= pl && !strncmp(keys + off, prefix, pl)) {
			if (n == cap) {
				char **no = realloc(out, (cap = cap ? cap * 2 : 16) *
							 sizeof(*out));

				if (!no) {
					err = -ENOMEM;
					break;
				}
				out = no;
			}
			if (!(out[n] = strndup(keys + off, kl))) {
				err = -ENOMEM;
				break;
			}
			n++;
		}
		off += kl + 1;
	}
	free(keys);
	if (err < 0) {
		while (n)
			free(out[--n]);
		free(out);
		return err;
	}
	*keysp = out;
	*np = n;
	return 0;
}

/* ---- what changed since a snapshot (backend.h changed_since) ---- */

struct be_rbd_since {
	int (*cb)(uint64_t offset, uint64_t len, void *arg);
	void *arg;
};

static int be_rbd_since_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct be_rbd_since *c = arg;

	/* exists 0: discarded or zeroed since the snapshot, which changed
	 * what the blocks read as: a change too */
	(void)exists;
	return c->cb(off, len, c->arg);
}

/* rbd_diff_iterate2 from snapshot snap to the image's head, exact
 * extents (not whole objects: a bitmap seeded from it should not copy
 * 4 MiB for every 4 KiB written).  Each object's question is bounded by
 * the op timeout. */
static int be_rbd_changed_since(struct backend *be, const char *snap,
				int (*cb)(uint64_t offset, uint64_t len,
					  void *arg), void *arg)
{
	struct be_rbd *b = be->priv;
	struct be_rbd_since c = { cb, arg };
	struct be_rbd_inst *in;
	int err;

	if (!snap || !*snap)
		return -EINVAL;
	in = be_rbd_pin(b);
	if (!in)
		return -EAGAIN;
	err = rbd_diff_iterate2(in->image, snap, 0, be_size(be), 1, 0,
				be_rbd_since_cb, &c);
	be_rbd_unpin(b, in);
	return err < 0 ? err : 0;
}

/* The image's own snapshots (backend.h): taken and removed through the
 * serving instance; a view of one is a new rbd node on its own client
 * instances, with this LUN's connection settings. */
static int be_rbd_snapshot(struct backend *be, enum be_snap_op op,
			   const char *name, struct backend **out,
			   const char **errmsg)
{
	struct be_rbd *b = be->priv;
	struct backend_params p = { .readonly = true, .direct = true };
	struct be_rbd_inst *in;
	struct backend *node;
	char path[3 * BE_RBD_NAME_MAX + 2], opts[1024];
	int err;

	if (!name || !*name || strchr(name, '@') || strchr(name, '/') ||
	    strchr(name, ';') || strlen(name) >= BE_RBD_NAME_MAX) {
		*errmsg = "bad rbd snapshot name";
		return -EINVAL;
	}
	if (b->snap[0]) {
		*errmsg = "this LUN is an rbd snapshot already";
		return -EINVAL;
	}
	if (op == BE_SNAP_OPEN) {
		node = calloc(1, sizeof(*node));
		if (!node) {
			*errmsg = "out of memory";
			return -ENOMEM;
		}
		snprintf(path, sizeof(path), "%s/%s@%s", b->pool, b->image,
			 name);
		snprintf(opts, sizeof(opts),
			 "conf=%s;id=%s;cluster=%s;keyring=%s;osd_op_timeout=%u;"
			 "cache=%d", b->conf, b->id, b->cluster_name,
			 b->keyring, b->op_timeout, b->cache ? 1 : 0);
		p.path = path;
		p.opts = opts;
		node->ops = &be_rbd_ops;
		err = be_rbd_open(node, &p, errmsg);
		if (err) {
			free(node);
			return err;
		}
		*out = node;
		return 0;
	}
	in = be_rbd_pin(b);
	if (!in) {
		*errmsg = "the rbd image is not open right now (fencing or "
			  "reconnecting); try again";
		return -EAGAIN;
	}
	if (op == BE_SNAP_CREATE) {
		err = rbd_snap_create(in->image, name);
		if (err == -EEXIST)
			*errmsg = "the rbd image has a snapshot of that name already";
		else if (err)
			*errmsg = "rbd_snap_create failed";
	} else {
		err = rbd_snap_remove(in->image, name);
		if (err == -ENOENT)
			*errmsg = "the rbd image has no snapshot of that name";
		else if (err)
			*errmsg = "rbd_snap_remove failed";
	}
	be_rbd_unpin(b, in);
	return err;
}

static int be_rbd_describe(struct backend *be, char *buf, unsigned len)
{
	struct be_rbd *b = be->priv;
	int n;

	pthread_mutex_lock(&b->lock);
	n = snprintf(buf, len,
		     "rbd %s/%s%s%s conf=%s id=%s osd_op_timeout=%us cache=%s "
		     "completions=%s wakeups=%llu polled=%llu state=%s instance=client.%llu@%s spare=%s fences=%llu "
		     "last_fenced=%s opens=%llu open_failures=%llu timeouts=%llu "
		     "resends=%llu fence_after=%us lock_waits=%llu "
		     "watcher_probes=%llu stale_watchers_fenced=%llu "
		     "stale_lock_probes=%llu stale_locks_broken=%llu",
		     b->pool, b->image, b->snap[0] ? "@" : "", b->snap,
		     b->conf[0] ? b->conf : "(default)",
		     b->id[0] ? b->id : "client.admin", b->op_timeout,
		     b->cache ? "on" : "off",
		     b->cur ? (b->cur->efd >= 0 ? "eventfd" : "callback") : "-",
		     (unsigned long long)atomic_load(&b->wakeups),
		     (unsigned long long)atomic_load(&b->polled),
		     b->cur ? "ok" : (b->retired ? "fencing" : "opening"),
		     (unsigned long long)(b->cur ? b->cur->gid : 0),
		     b->cur ? b->cur->addr : "-",
		     b->spare ? "ready" : "none",
		     (unsigned long long)b->fences,
		     b->last_fenced[0] ? b->last_fenced : "-",
		     (unsigned long long)b->opens,
		     (unsigned long long)b->open_failures,
		     (unsigned long long)b->timeouts,
		     (unsigned long long)b->resends,
		     (be_rbd_resend_max(b) + 1) * b->op_timeout,
		     (unsigned long long)b->lock_waits,
		     (unsigned long long)b->watcher_probes,
		     (unsigned long long)b->watchers_fenced,
		     (unsigned long long)b->stale_probes,
		     (unsigned long long)b->stale_locks_broken);
	pthread_mutex_unlock(&b->lock);
	return n;
}

const struct backend_ops be_rbd_ops = {
	.name = "rbd",
	.open = be_rbd_open,
	.close = be_rbd_close,
	.submit = be_rbd_submit,
	.describe = be_rbd_describe,
	.block_status = be_rbd_block_status,
	.resize = be_rbd_resize,
	.owner = be_rbd_owner,
	.meta_get = be_rbd_meta_get,
	.meta_set = be_rbd_meta_set,
	.meta_list = be_rbd_meta_list,
	.changed_since = be_rbd_changed_since,
	.snapshot = be_rbd_snapshot,
};
