/* scsi_alua.c - two nodes in front of one shared store: ALUA target port
 * groups (SPC-4 5.15), the ownership lock that lives with the storage, and
 * the handover between the nodes (README "Two nodes in front of shared
 * storage").
 *
 * Each node is its own target port group (alua_group) with one target port
 * (relative target port identifier = the group number); alua_peer_group
 * names the other node's.  A node is active/optimized only while it holds
 * the ownership lock: an OFD write lock (fcntl F_OFD_SETLK) on the sidecar
 * "<store>" ALUA_LOCK_SUFFIX next to the file or device.  OFD locks belong
 * to an open file, not a process, so two LUNs or two daemons on one
 * machine exclude each other as two machines do over NFS, and the kernel
 * drops the lock when a node dies.
 *
 * Going standby: new media commands answer NOT READY 04/0A, commands held
 * by the hang engine are dropped and answered 04/0A too (the initiator
 * retries them; after the transition it learns the path is standby and
 * sends them down the other one), writes in flight are waited for (the
 * write gate counts them), the store is flushed, the reservation state is
 * written next to the store (scsi_pr_store.c does so on every change
 * already) and then the lock is released.  Nothing this node accepted can
 * reach the store after that.
 *
 * Going active: take the lock (refused while the other node holds it;
 * force=1 replaces the sidecar and takes a fresh lock, for a node known
 * dead), then scsi_lun_refresh(SCSI_REFRESH_SHARED) re-reads everything
 * the other node may have changed, and starts the hang engine over (an
 * episode of this node's from before it went standby must not outlive
 * the handover), before the first command is served.
 *
 * A resize of the shared store holds alua_mutex (scsi_alua_resize_begin)
 * so it never interleaves with a transition: see scsi_lun_refresh().
 *
 * A node that loses the lock under it notices within ALUA_WATCH_MS (the
 * watchdog: the sidecar replaced or removed by a forced takeover, the
 * lock not re-assertable or the sidecar unreadable, as on NFS once the
 * lease is gone), fences its store, goes standby at once and logs why.
 * Fencing: while a node is not active its store node refuses every write
 * as it reaches the store (be_fence), so writes that a filter or
 * the hang engine still held never land; and a node that took the lock by
 * force waits ALUA_FENCE_MS before it serves, so the old owner's watchdog
 * has fenced first.  Only a write the old owner had already handed to the
 * kernel before that can land later (when its store answers).
 *
 * A store with an ownership lock of its own (backend_ops.owner: an RBD
 * image's exclusive lock) needs no sidecar: that lock is the ownership,
 * a forced takeover breaks (and fences) the other holder's, the watchdog
 * asks the store whether it still holds it, and the identity comes from
 * the store (the image id).
 *
 * A store owned by SCSI-3 persistent reservation (alua_lock = "scsi-pr":
 * an iscsi store, a SCSI disk; backends/pr_owner.c) goes the same way
 * through backend_ops.owner: this node registers its key (alua_pr_key,
 * or one derived from the host name and alua_group) and the active node
 * holds the reservation; force=1 preempts the other node's key, which
 * fences it at the storage.  A node whose own I/O the store answers with
 * RESERVATION CONFLICT (EBADE) was preempted: scsi_alua_store_lost()
 * stops it serving at once and wakes the watchdog, which makes it
 * standby and logs why.
 *
 * The sidecar also holds the LUN's identity (a random 64-bit id written by
 * the first node that creates it), from which both nodes derive the same
 * NAA, serial number and device identification when scsi_id / scsi_sn are
 * not configured. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "reactor.h"
#include "scsi_internal.h"
#include "scsi_pr.h"
#include "scsi_xcopy.h"
#include "stack.h"
#include "util.h"

#define ALUA_LOCK_SUFFIX	".holdfast-owner"
#define ALUA_ID_MAGIC		"holdfast-owner 1"
#define ALUA_WATCH_MS		200
/* After a forced takeover the new owner serves only this long after it
 * took the lock: the old owner's watchdog (every ALUA_WATCH_MS) has seen
 * the loss and fenced its store by then, with a margin for a watchdog
 * round that ran late. */
#define ALUA_FENCE_MS		(2 * ALUA_WATCH_MS + 100)
#define ALUA_DRAIN_TIMEOUT_MS	30000
#define ALUA_DRAIN_POLL_MS	2
#define ALUA_ID_READ_TRIES	50

/* RTPG status codes (SPC-4 6.36.2) */
#define RTPG_STATUS_NONE	0x00
#define RTPG_STATUS_STPG	0x01
#define RTPG_STATUS_IMPLICIT	0x02

struct scsi_alua {
	struct scsi_lun *lun;	/* not a reference: freed with the LUN */
	_Atomic uint8_t state;	/* this group's ALUA_* state */
	_Atomic uint8_t peer_state;
	_Atomic uint8_t status;	/* RTPG status of the last change */
	int fd;			/* the sidecar, -1 if it cannot be opened */
	struct backend *store;	/* a store with its own lock, or NULL */
	bool owner;		/* holds the lock on fd */
	char *path;		/* the sidecar */
	char *base;		/* the shared state's files without their
				 * suffix (lun_shared_state_path), fixed at
				 * creation: the workers read no snapshot */
	/* The threads that run outside a reactor and without config_lock()
	 * (the SET TARGET PORT GROUPS worker, the lock watchdog) read the
	 * LUN's number and store path from lun->id and lun->path (fixed at
	 * creation), never from a settings snapshot an update may free
	 * under them. */
	char id[17];		/* identity: 16 hex digits, "" if unknown */
	unsigned group;		/* alua_group, fixed once set */
	uint64_t pr_key;	/* owned by reservation with this key, or 0 */
	_Atomic bool conflict;	/* the store refused our I/O: preempted */
	struct scsi_alua *next;	/* on alua_list */
};

/* Serializes transitions, the watchdog and LUN release. */
static pthread_mutex_t alua_mutex = PTHREAD_MUTEX_INITIALIZER;
/* Wakes the watchdog before its next round (scsi_alua_store_lost). */
static pthread_cond_t alua_wake = PTHREAD_COND_INITIALIZER;
static struct scsi_alua *alua_list;
static bool alua_watchdog_running;

static const char *alua_state_name(uint8_t st)
{
	switch (st) {
	case ALUA_AO: return "active/optimized";
	case ALUA_STANDBY: return "standby";
	case ALUA_TRANSITIONING: return "transitioning";
	}
	return "?";
}

static struct scsi_alua *alua_of(struct scsi_lun *lun)
{
	struct scsi_alua **slot = scsi_lun_alua_slot(lun);

	return slot ? __atomic_load_n(slot, __ATOMIC_ACQUIRE) : NULL;
}

/* ---- what the rest of the SCSI layer asks (any thread) ---- */

uint8_t scsi_alua_state(struct scsi_lun *lun)
{
	struct scsi_alua *a;

	if (!lun || !lun_settings_get(lun)->alua_group)
		return ALUA_AO;
	a = alua_of(lun);
	/* configured but not set up yet: not serving until it owns the
	 * store */
	return a ? atomic_load(&a->state) : ALUA_TRANSITIONING;
}

bool scsi_alua_serving(struct scsi_lun *lun)
{
	/* The state exists from the first update that set alua_group
	 * (scsi_alua_apply(), before the settings are published), and the
	 * group is fixed once set: no state, no ALUA. */
	struct scsi_alua *a = alua_of(lun);

	return !a || atomic_load(&a->state) == ALUA_AO;
}

uint8_t scsi_alua_peer_state(struct scsi_lun *lun)
{
	struct scsi_alua *a = alua_of(lun);

	return a ? atomic_load(&a->peer_state) : ALUA_STANDBY;
}

uint8_t scsi_alua_status(struct scsi_lun *lun)
{
	struct scsi_alua *a = alua_of(lun);

	return a ? atomic_load(&a->status) : RTPG_STATUS_NONE;
}

const char *scsi_alua_identity(struct scsi_lun *lun)
{
	struct scsi_alua *a;

	if (!lun || !lun_settings_get(lun)->alua_group)
		return NULL;
	a = alua_of(lun);
	return a && a->id[0] ? a->id : NULL;
}

/* SPC-4 5.15.2.4.4 / 5.15.2.4.5: what a standby or transitioning port
 * still serves.  Everything that reads or changes the medium, or the
 * reservation state that lives with the store, is refused. */
static bool alua_cmd_allowed(const struct scsi_cmd *cmd, unsigned flags)
{
	switch (cmd->cdb[0]) {
	case SCSI_OP_EXTENDED_COPY:
	case SCSI_OP_PERSISTENT_RESERVE_OUT:
	case SCSI_OP_RESERVE_6:
	case SCSI_OP_RELEASE_6:
	case SCSI_OP_RESERVE_10:
	case SCSI_OP_RELEASE_10:
		return false;
	}
	return !(flags & (SCSI_OPF_MEDIA | SCSI_OPF_WRITE));
}

bool scsi_alua_refuse(struct scsi_cmd *cmd, unsigned flags)
{
	uint8_t st = scsi_alua_state(cmd->lun);

	if (st == ALUA_AO || alua_cmd_allowed(cmd, flags))
		return false;
	scsi_sense(cmd, SENSE_KEY_NOT_READY,
		   st == ALUA_STANDBY ? ASC_LUN_NOT_ACCESSIBLE_STANDBY
				      : ASC_LUN_NOT_ACCESSIBLE_TRANSITION);
	return true;
}

bool scsi_alua_media_refused(struct scsi_cmd *cmd)
{
	uint8_t st = scsi_alua_state(cmd->lun);

	if (st == ALUA_AO)
		return false;
	scsi_sense(cmd, SENSE_KEY_NOT_READY,
		   st == ALUA_STANDBY ? ASC_LUN_NOT_ACCESSIBLE_STANDBY
				      : ASC_LUN_NOT_ACCESSIBLE_TRANSITION);
	cmd->in_len = 0;
	return true;
}

bool scsi_alua_store_lost(struct scsi_lun *lun, int res)
{
	struct scsi_alua *a;

	if (res != -EBADE)
		return false;
	a = alua_of(lun);
	if (!a || !a->pr_key)
		return false;
	/* not one more command of ours reaches the store; the watchdog
	 * (woken here, without alua_mutex: a transition holding it may be
	 * waiting for this reactor) does the rest */
	uint8_t ao = ALUA_AO;

	/* only an active LUN changes here: one the watchdog already made
	 * standby (it asked the store first) stays so */
	if (!atomic_compare_exchange_strong(&a->state, &ao,
					    ALUA_TRANSITIONING))
		return true;
	if (lun->be)
		be_fence(lun->be, true);
	if (!atomic_exchange(&a->conflict, true))
		pthread_cond_signal(&alua_wake);
	return true;
}

/* ---- the sidecar: lock and identity ---- */

static int alua_lock_op(int fd, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET };

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Is the lock on fd's file held by someone else (not through fd)? */
static bool alua_lock_held_elsewhere(int fd)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return false;
	return fl.l_type != F_UNLCK;
}

static int alua_open_sidecar(const char *path, bool excl)
{
	return open(path, O_RDWR | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : 0),
		    0600);
}

/* Read the identity from fd into id (17 bytes); 0 or -ENOENT if none. */
static int alua_id_read(int fd, char *id)
{
	char buf[64];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	char *p;

	if (n <= 0)
		return -ENOENT;
	buf[n] = '\0';
	p = strstr(buf, "\nid ");
	if (strncmp(buf, ALUA_ID_MAGIC, strlen(ALUA_ID_MAGIC)) || !p ||
	    strlen(p + 4) < 16)
		return -ENOENT;
	memcpy(id, p + 4, 16);
	id[16] = '\0';
	return 0;
}

/* Write id to fd (the caller holds the lock). */
static int alua_id_write(int fd, const char *id)
{
	char buf[64];
	int n = snprintf(buf, sizeof(buf), ALUA_ID_MAGIC "\nid %s\n", id);

	if (pwrite(fd, buf, (size_t)n, 0) != n || fsync(fd) < 0)
		return -EIO;
	return 0;
}

/* Make sure a->id is known: read it, or (holding the lock, perhaps just
 * for this) create it. */
static void alua_id_ensure(struct scsi_alua *a)
{
	uint64_t r;

	if (a->id[0])
		return;
	if (a->store) {
		char sid[64];
		const char *why = NULL;
		uint64_t h = 0xcbf29ce484222325ull;	/* FNV-1a */

		if (a->store->ops->owner(a->store, BE_OWNER_ID, sid,
					 sizeof(sid), &why) < 0)
			return;
		for (const char *c = sid; *c; c++)
			h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
		snprintf(a->id, sizeof(a->id), "%016" PRIx64, h);
		return;
	}
	if (a->fd < 0)
		return;
	for (int i = 0; i < ALUA_ID_READ_TRIES; i++) {
		if (alua_id_read(a->fd, a->id) == 0)
			return;
		if (a->owner || alua_lock_op(a->fd, F_WRLCK) == 0) {
			if (alua_id_read(a->fd, a->id) == 0)
				goto out;
			if (getrandom(&r, sizeof(r), 0) != sizeof(r))
				r = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
			snprintf(a->id, sizeof(a->id), "%016" PRIx64, r);
			if (alua_id_write(a->fd, a->id))
				log_warn("%s: cannot write the LUN identity",
					 a->path);
out:
			if (!a->owner)
				alua_lock_op(a->fd, F_UNLCK);
			return;
		}
		/* the other node holds the lock and is writing it */
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static void alua_fsync_dir(const char *path)
{
	char dir[PATH_MAX];
	int fd;

	snprintf(dir, sizeof(dir), "%s", path);
	fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* Is fd still the file at a->path (a forced takeover replaces it)? */
static bool alua_sidecar_current(const struct scsi_alua *a)
{
	struct stat s1, s2;

	if (a->fd < 0 || fstat(a->fd, &s1) < 0 || stat(a->path, &s2) < 0)
		return false;
	return s1.st_dev == s2.st_dev && s1.st_ino == s2.st_ino;
}

/* Do we (still) hold the ownership?  A store that cannot tell right now
 * (-EAGAIN: not answering) leaves it as it was, as in the watchdog. */
static bool alua_holds(struct scsi_alua *a)
{
	const char *why = NULL;

	if (a->store) {
		int o;

		if (!a->owner)
			return false;
		o = a->store->ops->owner(a->store, BE_OWNER_QUERY, NULL, 0,
					 &why);
		return o == BE_OWNER_MINE || o == -EAGAIN;
	}
	return a->owner && alua_sidecar_current(a);
}

static void alua_unlock(struct scsi_alua *a)
{
	const char *why = NULL;

	if (a->store) {
		if (a->store->ops->owner(a->store, BE_OWNER_RELEASE, NULL, 0,
					 &why) < 0)
			log_warn("target %s: LUN %" PRIu64 ": %s",
				 a->lun->target_name, a->lun->id,
				 why ? why : "cannot release the store's lock");
	} else {
		alua_lock_op(a->fd, F_UNLCK);
	}
	a->owner = false;
}

static void alua_reopen(struct scsi_alua *a)
{
	if (a->fd >= 0)
		close(a->fd);
	a->owner = false;
	a->fd = alua_open_sidecar(a->path, false);
}

/* Take the ownership lock.  force: replace a sidecar someone else locks
 * (its holder is known dead, or must lose). */
static int alua_lock_take(struct scsi_alua *a, bool force, bool *forced,
			  const char **errmsg)
{
	char tmp[PATH_MAX];
	int err, fd;

	*forced = false;
	if (a->store) {
		if (alua_holds(a))
			return 0;
		err = a->store->ops->owner(a->store,
					   force ? BE_OWNER_TAKE_FORCE
						 : BE_OWNER_TAKE,
					   NULL, 0, errmsg);
		if (err < 0)
			return err;
		a->owner = true;
		/* breaking the other holder's lock blocklisted it, a
		 * preempted key gets RESERVATION CONFLICT: that is the
		 * fence, no interval to wait out */
		if (force)
			log_warn("target %s: LUN %" PRIu64 ": ownership taken by "
				 "force (%s)", a->lun->target_name, a->lun->id,
				 a->pr_key ? "the other node's reservation key "
					     "preempted"
					   : "the other gateway's lock broken");
		return 0;
	}
	if (a->owner && alua_sidecar_current(a))
		return 0;
	if (!alua_sidecar_current(a))
		alua_reopen(a);
	if (a->fd < 0) {
		*errmsg = "cannot open the ownership lock file";
		return -errno;
	}
	err = alua_lock_op(a->fd, F_WRLCK);
	if (!err) {
		a->owner = true;
		return 0;
	}
	if (err != -EAGAIN && err != -EACCES) {
		*errmsg = "cannot lock the ownership lock file";
		return err;
	}
	if (!force) {
		*errmsg = "the other node holds the ownership lock (it is "
			  "active; make it standby first, or add force=1 if "
			  "it is dead)";
		return -EBUSY;
	}
	alua_id_ensure(a);
	/* The new file is locked and given the identity (the LUN's NAA)
	 * before a rename puts it in place: a crash at any point leaves a
	 * lock file that holds the identity, never none or an empty one
	 * (which the next start would fill with a new identity: a new LU to
	 * the initiators).  Named after our group: the two nodes never
	 * share it, and a crash leaves at most one per node. */
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.g%u.tmp", a->path,
			     a->group) >= sizeof(tmp)) {
		*errmsg = "cannot replace the ownership lock file";
		return -ENAMETOOLONG;
	}
	unlink(tmp);
	fd = alua_open_sidecar(tmp, true);
	if (fd < 0) {
		*errmsg = "cannot create a new ownership lock file";
		return -errno;
	}
	err = alua_lock_op(fd, F_WRLCK);
	if (!err && a->id[0] && alua_id_write(fd, a->id))
		err = -EIO;
	if (!err && rename(tmp, a->path) < 0)
		err = -errno;
	if (err) {
		close(fd);
		unlink(tmp);
		*errmsg = "cannot replace the ownership lock file";
		return err;
	}
	alua_fsync_dir(a->path);
	close(a->fd);
	a->fd = fd;
	a->owner = true;
	*forced = true;
	log_warn("%s: ownership taken by force from the node that held it",
		 a->path);
	return 0;
}

/* ---- transitions (alua_mutex held) ---- */

/* Fence the LUN's store (README: a node that is not active never writes
 * to it) or lift the fence. */
static void alua_fence(struct scsi_lun *lun, bool on)
{
	if (lun->be)
		be_fence(lun->be, on);
}

/* Drop what the hang engine holds or queues for the LUN: each is answered
 * NOT READY by sbc_media_finish() and never sent. */
static void alua_drop_held(struct scsi_lun *lun)
{
	hang_abort_nexus(lun, HANG_NEXUS_ALL, NULL, NULL, NULL);
}

/* End a transition that started in state `before`. */
static void alua_set(struct scsi_alua *a, uint8_t before, uint8_t st,
		     uint8_t status)
{
	atomic_store(&a->state, st);
	if (st == ALUA_AO)
		atomic_store(&a->peer_state, ALUA_STANDBY);
	if (before == st)
		return;
	atomic_store(&a->status, status);
	if (st != ALUA_TRANSITIONING)
		/* SPC-4 5.15.2.3: every I_T nexus learns of it */
		scsi_ua_raise(a->lun, ASC_ASYMMETRIC_ACCESS_STATE_CHANGED, 0);
}

/* Flush what the store may cache (SYNCHRONIZE CACHE of everything).
 * fsync applies to the file, through any descriptor. */
static int alua_flush_store(const struct scsi_alua *a)
{
	int fd, err = 0;

	if (a->store)
		return 0;	/* releasing its lock flushes it */
	fd = open(a->lun->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fdatasync(fd) < 0)
		err = -errno;
	close(fd);
	return err;
}

static uint64_t alua_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int alua_go_standby(struct scsi_alua *a, uint8_t status,
			   const char **errmsg)
{
	struct scsi_lun *lun = a->lun;
	uint8_t before = atomic_load(&a->state);
	uint64_t t0 = alua_now_ms();
	int err;

	if (before == ALUA_STANDBY && !a->owner)
		return 0;
	/* New media commands answer 04/0A from here on; the write gate
	 * check after this store (sbc_media_submit) sees it. */
	atomic_store(&a->state, ALUA_TRANSITIONING);
	/* Held and queued commands: answered 04/0A, never sent. */
	alua_drop_held(lun);
	while (!scsi_write_gate_idle(lun)) {
		if (alua_now_ms() - t0 > ALUA_DRAIN_TIMEOUT_MS) {
			atomic_store(&a->state, before);
			*errmsg = "writes still in flight after 30 s: the "
				  "store does not answer; kept the lock";
			return -EBUSY;
		}
		struct timespec ts = { 0, ALUA_DRAIN_POLL_MS * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	err = alua_flush_store(a);
	if (err)
		log_warn("target %s: LUN %" PRIu64 ": flush before handover: %s",
			 lun->target_name, a->lun->id, strerror(-err));
	/* The shared state is already next to the store: the reservation
	 * file is written on every change (scsi_pr_store.c). */
	/* The persistent bitmaps go to their shared sidecar (or the
	 * store's metadata) for the other node (the writes were saved ahead already; this catches clears
	 * and merges in flight), then the file is the other node's. */
	scsi_lun_shared_release(lun, a->owner);
	/* Nothing of this node's may reach the store from here on, not even
	 * a write some path sends without the write gate. */
	alua_fence(lun, true);
	bool was_owner = a->owner;
	if (a->owner)
		alua_unlock(a);
	alua_set(a, before, ALUA_STANDBY, status);
	if (was_owner)
		log_info("target %s: LUN %" PRIu64 ": standby (drained and "
			 "flushed, ownership lock released; drain took %" PRIu64
			 " ms)", lun->target_name, a->lun->id,
			 alua_now_ms() - t0);
	else
		log_info("target %s: LUN %" PRIu64 ": standby",
			 lun->target_name, a->lun->id);
	return 0;
}

static int alua_go_active(struct scsi_alua *a, bool force, uint8_t status,
			  const char **errmsg)
{
	struct scsi_lun *lun = a->lun;
	uint8_t before = atomic_load(&a->state);
	const char *why = NULL;
	bool forced;
	int err;

	if (before == ALUA_AO && alua_holds(a))
		return 0;
	atomic_store(&a->state, ALUA_TRANSITIONING);
	atomic_store(&a->conflict, false);
	err = alua_lock_take(a, force, &forced, errmsg);
	if (err) {
		alua_set(a, before == ALUA_AO ? ALUA_TRANSITIONING : before,
			 ALUA_STANDBY, status);
		if (err == -EBUSY)
			atomic_store(&a->peer_state, ALUA_AO);
		return err;
	}
	alua_id_ensure(a);
	if (forced) {
		/* The old owner may still be alive: wait until its watchdog
		 * has seen the new lock file and fenced its store, so no
		 * write of its can land after one of ours (README "Two
		 * nodes in front of shared storage": the fencing bound). */
		struct timespec ts = { ALUA_FENCE_MS / 1000,
				       (ALUA_FENCE_MS % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	/* Everything the other node may have changed, before the first
	 * command is served. */
	err = scsi_lun_refresh(lun, 0, SCSI_REFRESH_SHARED, &why);
	if (err) {
		alua_unlock(a);
		alua_set(a, before, ALUA_STANDBY, status);
		*errmsg = why ? why : "cannot re-read the LUN's state";
		return err;
	}
	alua_fence(lun, false);
	alua_set(a, before, ALUA_AO, status);
	log_info("target %s: LUN %" PRIu64 ": active/optimized (ownership "
		 "lock %s taken%s)", lun->target_name, a->lun->id,
		 a->pr_key ? "(persistent reservation) of the store"
		 : a->store ? "of the store" : a->path,
		 forced ? " by force, after the fencing interval"
			: force ? " by force" : "");
	return 0;
}

/* ---- a resize of the shared store (scsi_lun_refresh) ---- */

static const char *alua_lock_lost(struct scsi_alua *a, int *err);

int scsi_alua_resize_begin(struct scsi_lun *lun, const char **errmsg)
{
	struct scsi_alua *a = alua_of(lun);
	const char *why = NULL;
	int err;

	if (!a)
		return 0;
	/* A handover holds alua_mutex from its first step (transitioning)
	 * to its last (lock released): a resize never starts in the middle
	 * of one, and none starts while this one runs. */
	pthread_mutex_lock(&alua_mutex);
	if (atomic_load(&a->state) != ALUA_AO) {
		*errmsg = "this node is not active for the LUN: resize it on "
			  "the node that is";
		goto refuse;
	}
	/* Owning the store now, not only having owned it at the last
	 * watchdog round: a forced takeover may have happened since. */
	if (a->store ? !alua_holds(a)
		     : !a->owner || (why = alua_lock_lost(a, &err))) {
		*errmsg = "this node no longer holds the ownership lock (another "
			  "node took over): not resized";
		goto refuse;
	}
	return 1;

refuse:
	pthread_mutex_unlock(&alua_mutex);
	return -EBUSY;
}

void scsi_alua_resize_end(struct scsi_lun *lun)
{
	(void)lun;
	pthread_mutex_unlock(&alua_mutex);
}

/* ---- watchdog: lost locks and the peer's state ---- */

/* Does this node still own the store?  NULL if so, else why not.  The
 * lock file replaced or removed (a forced takeover), the lock gone (on
 * NFS, a lease the server let expire: re-asserting it fails with ENOLCK
 * or EIO), or the lock file no longer readable through our descriptor
 * (NFS answers I/O on a file whose lock was lost with EIO). */
static const char *alua_lock_lost(struct scsi_alua *a, int *err)
{
	char c;

	*err = 0;
	if (!alua_sidecar_current(a))
		return "the lock file was replaced or removed: another node "
		       "took over with force=1";
	*err = alua_lock_op(a->fd, F_WRLCK);
	if (*err)
		return "the lock cannot be re-asserted";
	if (pread(a->fd, &c, 1, 0) < 0) {
		*err = -errno;
		return "the lock file cannot be read";
	}
	return NULL;
}

/* This node lost the store under it: fence the store first (writes that
 * filters still hold, or that the hang engine retries, never reach it),
 * stop serving, drop what is held, give up the lock. */
static void alua_lose(struct scsi_alua *a, const char *why, int err)
{
	alua_fence(a->lun, true);
	scsi_lun_shared_release(a->lun, false);
	atomic_store(&a->state, ALUA_TRANSITIONING);
	alua_drop_held(a->lun);
	alua_reopen(a);
	alua_set(a, ALUA_AO, ALUA_STANDBY, RTPG_STATUS_IMPLICIT);
	atomic_store(&a->peer_state, ALUA_AO);
	log_err("target %s: LUN %" PRIu64 ": lost the ownership lock %s (%s%s%s); "
		"store fenced, now standby", a->lun->target_name, a->lun->id,
		a->path, why, err ? ": " : "", err ? strerror(-err) : "");
}

/* The store (not a lock file) says another node owns the LUN now:
 * fence it first, stop serving, drop what is held, go standby.  The
 * caller says why. */
static void alua_store_lost(struct scsi_alua *a)
{
	alua_fence(a->lun, true);
	scsi_lun_shared_release(a->lun, false);
	atomic_store(&a->state, ALUA_TRANSITIONING);
	alua_drop_held(a->lun);
	a->owner = false;
	alua_set(a, ALUA_AO, ALUA_STANDBY, RTPG_STATUS_IMPLICIT);
	atomic_store(&a->peer_state, ALUA_AO);
}

static void *alua_watchdog(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&alua_mutex);
	for (;;) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += ALUA_WATCH_MS * 1000 * 1000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&alua_wake, &alua_mutex, &until);
		for (struct scsi_alua *a = alua_list; a; a = a->next) {
			if (a->store && atomic_exchange(&a->conflict, false) &&
			    a->owner) {
				/* the store itself said so: no need to ask */
				alua_store_lost(a);
				log_err("target %s: LUN %" PRIu64 ": the store "
					"answered RESERVATION CONFLICT to this "
					"node's I/O: another node preempted its "
					"reservation (key 0x%" PRIx64 ") and owns "
					"the LUN; store fenced, now standby",
					a->lun->target_name, a->lun->id,
					a->pr_key);
				continue;
			}
			if (a->store) {
				const char *why = NULL;
				int o = a->store->ops->owner(a->store,
							     BE_OWNER_QUERY,
							     NULL, 0, &why);

				if (a->owner && o != BE_OWNER_MINE &&
				    o != -EAGAIN) {
					alua_store_lost(a);
					log_err("target %s: LUN %" PRIu64 ": lost "
						"the store's %s (%s); "
						"now standby", a->lun->target_name,
						a->lun->id,
						a->pr_key ? "persistent reservation"
							  : "ownership lock",
						o < 0 ? strerror(-o)
						: a->pr_key ? "another node holds it"
						: "another gateway took it");
				} else if (!a->owner) {
					atomic_store(&a->peer_state,
						     o == BE_OWNER_OTHER
							     ? ALUA_AO
							     : ALUA_STANDBY);
				}
				continue;
			}
			const char *why;
			int err;

			if (a->owner && (why = alua_lock_lost(a, &err))) {
				alua_lose(a, why, err);
				continue;
			}
			if (a->owner)
				continue;
			if (!alua_sidecar_current(a))
				alua_reopen(a);
			atomic_store(&a->peer_state,
				     a->fd >= 0 && alua_lock_held_elsewhere(a->fd)
					     ? ALUA_AO : ALUA_STANDBY);
		}
	}
	pthread_mutex_unlock(&alua_mutex);
	return NULL;
}

static void alua_watchdog_start(void)
{
	pthread_t th;

	if (alua_watchdog_running)
		return;
	if (pthread_create(&th, NULL, alua_watchdog, NULL) == 0) {
		pthread_detach(th);
		alua_watchdog_running = true;
	}
}

/* ---- set-up, management, release ---- */

/* This node's reservation key: alua_pr_key, or "hf" + a hash of the
 * host name + alua_group, so two nodes (different groups or hosts)
 * differ, the same node keeps its key across restarts, and READ KEYS
 * shows whose a key is (the group in the low 16 bits). */
static uint64_t alua_pr_key_of(const struct lun_settings *s)
{
	char host[256] = "";
	uint32_t h = 0x811c9dc5u;	/* FNV-1a, 32 bits */

	if (s->alua_pr_key)
		return s->alua_pr_key;
	gethostname(host, sizeof(host) - 1);
	for (const char *c = host; *c; c++)
		h = (h ^ (uint8_t)*c) * 0x01000193u;
	return (uint64_t)0x6866 << 48 | (uint64_t)h << 16 | s->alua_group;
}

static struct scsi_alua *alua_create(struct scsi_lun *lun,
				     const struct lun_settings *s,
				     const char **errmsg)
{
	struct scsi_alua **slot = scsi_lun_alua_slot(lun);
	struct scsi_alua *a;
	uint64_t pr_key = 0;

	if (!slot)
		return NULL;
	if (*slot)
		return *slot;
	char base[PATH_MAX];
	struct backend *store = be_stack_store(lun->be);
	bool shared;

	if (s->alua_lock_pr) {
		char text[24];

		/* lun_settings_check() allowed it for an iscsi store or a
		 * block device; the store says whether it can */
		pr_key = alua_pr_key_of(s);
		snprintf(text, sizeof(text), "0x%" PRIx64, pr_key);
		if (!store || !store->ops->owner || !store->ops->owner_opt_in ||
		    !store->ops->set_param ||
		    store->ops->set_param(store, "pr_key", text)) {
			*errmsg = "alua_lock = scsi-pr: the store cannot take a "
				  "persistent reservation (an iscsi store or a "
				  "SCSI block device can)";
			return NULL;
		}
	} else if (store && (!store->ops->owner || store->ops->owner_opt_in)) {
		store = NULL;	/* the lock file */
	}
	/* lun_settings_check() refused a store without a place for its
	 * lock; a store with a lock of its own (RBD) needs no place, and
	 * without alua_state_dir it has no shared files (reservations and
	 * persistent bitmaps live in its metadata: scsi_pr_store.c,
	 * cbt_meta.h) */
	shared = !lun_shared_state_path(s, lun->target_name, "", base,
					sizeof(base));
	if (!shared && !store)
		return NULL;
	a = calloc(1, sizeof(*a));
	if (!a || (shared && (!(a->base = strdup(base)) ||
			      asprintf(&a->path, "%s" ALUA_LOCK_SUFFIX,
				       base) < 0))) {
		if (a)
			free(a->base);
		free(a);
		return NULL;
	}
	a->lun = lun;
	a->group = s->alua_group;
	a->pr_key = pr_key;
	atomic_init(&a->conflict, false);
	atomic_init(&a->state, ALUA_TRANSITIONING);
	atomic_init(&a->peer_state, ALUA_STANDBY);
	atomic_init(&a->status, RTPG_STATUS_NONE);
	a->store = store;
	a->fd = a->store ? -1 : alua_open_sidecar(a->path, false);
	alua_id_ensure(a);
	a->next = alua_list;
	alua_list = a;
	__atomic_store_n(slot, a, __ATOMIC_RELEASE);
	alua_watchdog_start();
	return a;
}

/* Called with alua_mutex held. */
static int alua_apply_locked(struct scsi_lun *lun,
			     const struct lun_settings *s, bool force,
			     uint8_t status, const char **errmsg)
{
	struct scsi_alua *a;

	if (!s->alua_group) {
		a = alua_of(lun);
		if (a && a->owner)
			alua_unlock(a);
		if (a)
			atomic_store(&a->state, ALUA_AO);
		alua_fence(lun, false);
		return 0;
	}
	a = alua_create(lun, s, errmsg);
	if (!a) {
		if (*errmsg)
			return -EOPNOTSUPP;
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	if (s->alua_standby)
		return alua_go_standby(a, status, errmsg);
	return alua_go_active(a, force, status, errmsg);
}

int scsi_alua_apply(struct scsi_lun *lun, const struct lun_settings *s,
		    bool force, const char **errmsg)
{
	int err;

	*errmsg = NULL;
	pthread_mutex_lock(&alua_mutex);
	err = alua_apply_locked(lun, s, force, RTPG_STATUS_IMPLICIT, errmsg);
	pthread_mutex_unlock(&alua_mutex);
	return err;
}

void scsi_alua_free(struct scsi_alua *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&alua_mutex);
	for (struct scsi_alua **pp = &alua_list; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	pthread_mutex_unlock(&alua_mutex);
	if (a->fd >= 0)
		close(a->fd);	/* releases the lock */
	free(a->path);
	free(a->base);
	free(a);
}

char *scsi_alua_state_file(struct scsi_lun *lun, const char *suffix)
{
	struct scsi_alua *a = alua_of(lun);
	char *p;

	if (!a || !a->base || asprintf(&p, "%s%s", a->base, suffix) < 0)
		return NULL;
	return p;
}

bool scsi_alua_info(struct scsi_lun *lun, struct scsi_alua_info *out)
{
	const struct lun_settings *s = lun_settings_get(lun);
	struct scsi_alua *a;

	memset(out, 0, sizeof(*out));
	if (!s->alua_group)
		return false;
	a = alua_of(lun);
	out->group = s->alua_group;
	out->peer_group = s->alua_peer_group;
	out->state = alua_state_name(scsi_alua_state(lun));
	out->peer_state = alua_state_name(scsi_alua_peer_state(lun));
	out->owner = a && a->owner;
	out->fenced = lun->be && be_fenced(lun->be);
	out->identity = a && a->id[0] ? a->id : NULL;
	out->lock_path = a ? a->path : NULL;
	return true;
}

bool scsi_alua_standby(struct scsi_lun *lun)
{
	return scsi_alua_state(lun) != ALUA_AO;
}

int scsi_alua_describe(struct scsi_lun *lun, char *buf, unsigned len)
{
	struct scsi_alua *a;
	char pr_text[80];

	if (!lun_settings_get(lun)->alua_group)
		return 0;
	a = alua_of(lun);
	snprintf(pr_text, sizeof(pr_text), "SCSI-3 persistent reservation "
		 "of the store, key 0x%" PRIx64, a ? a->pr_key : 0);
	return snprintf(buf, len, "        ALUA: group %u %s%s, peer group %u "
			"%s, identity %s%s\n        ALUA lock: %s\n",
			lun_settings_get(lun)->alua_group,
			alua_state_name(scsi_alua_state(lun)),
			a && a->owner ? " (owner)" : "",
			lun_settings_get(lun)->alua_peer_group,
			alua_state_name(scsi_alua_peer_state(lun)),
			a && a->id[0] ? a->id : "-",
			lun->be && be_fenced(lun->be) ? ", store fenced" : "",
			!a ? "-" : a->pr_key ? pr_text
			: a->store ? "the store's own (exclusive lock)"
				   : a->path);
}

/* ---- REPORT / SET TARGET PORT GROUPS (SPC-4 6.36, 6.40) ---- */

uint16_t scsi_alua_rel_port(const struct scsi_cmd *cmd)
{
	if (cmd->lun && lun_settings_get(cmd->lun)->alua_group)
		return lun_settings_get(cmd->lun)->alua_group;
	return cmd->nexus && cmd->nexus->rel_port_id ? cmd->nexus->rel_port_id
						     : 1;
}

uint16_t scsi_alua_group(const struct scsi_cmd *cmd)
{
	if (cmd->lun && lun_settings_get(cmd->lun)->alua_group)
		return lun_settings_get(cmd->lun)->alua_group;
	return cmd->nexus && cmd->nexus->tpgt ? cmd->nexus->tpgt : 1;
}

/* SET TARGET PORT GROUPS parameter list */
#define STPG_HDR_LEN		4
#define STPG_DESC_LEN		4
#define STPG_STATE_MASK		0x0f

struct alua_stpg_job {
	struct scsi_cmd *cmd;
	struct reactor *r;
	bool want_active;
	struct lun_settings set;	/* copied on the reactor */
};

static void alua_stpg_done(void *arg)
{
	struct alua_stpg_job *j = arg;
	struct scsi_cmd *cmd = j->cmd;

	free(j);
	scsi_cmd_complete(cmd);
}

/* The handover waits for writes and flushes: off the reactor. */
static void *alua_stpg_thread(void *arg)
{
	struct alua_stpg_job *j = arg;
	struct scsi_cmd *cmd = j->cmd;
	struct scsi_lun *lun = cmd->lun;
	struct lun_settings s;
	const char *why = NULL;
	int err;

	/* the snapshot the reactor copied for this job (this thread holds
	 * neither a reactor callback nor config_lock()) */
	s = j->set;
	s.alua_standby = !j->want_active;
	pthread_mutex_lock(&alua_mutex);
	err = alua_apply_locked(lun, &s, false, RTPG_STATUS_STPG, &why);
	pthread_mutex_unlock(&alua_mutex);
	if (err) {
		log_err("target %s: LUN %" PRIu64 ": SET TARGET PORT GROUPS "
			"refused: %s", lun->target_name, lun->id,
			why ? why : strerror(-err));
		scsi_sense(cmd, SENSE_KEY_HARDWARE_ERROR, ASC_STPG_FAILED);
	}
	/* The state the LUN is in is run-time state (a->state), not a
	 * setting: no snapshot is written; alua_state keeps the state asked
	 * for by the operator. */
	if (reactor_call(j->r, alua_stpg_done, j) < 0) {
		/* cannot happen short of memory; complete here */
		free(j);
		scsi_cmd_complete(cmd);
	}
	return NULL;
}

enum scsi_exec_result spc_set_target_port_groups(struct scsi_cmd *cmd)
{
	struct scsi_lun *lun = cmd->lun;
	uint32_t len = get_be32(cmd->cdb + 6);
	int want = -1;	/* -1 nothing asked, 0 standby, 1 active */
	const struct lun_settings *set = lun_settings_get(lun);
	pthread_t th;

	cmd->out_want = len;
	if (!set->alua_group) {
		/* one implicit group: nothing may be set (TPGS = 01b) */
		scsi_sense_field(cmd, ASC_INVALID_OPCODE, true, 0, -1);
		return SCSI_EXEC_DONE;
	}
	if (len > cmd->out_len || len < STPG_HDR_LEN ||
	    (len - STPG_HDR_LEN) % STPG_DESC_LEN) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_PARAMETER_LIST_LENGTH_ERROR);
		return SCSI_EXEC_DONE;
	}
	for (uint32_t off = STPG_HDR_LEN; off < len; off += STPG_DESC_LEN) {
		uint8_t st = cmd->buf[off] & STPG_STATE_MASK;
		uint16_t g = get_be16(cmd->buf + off + 2);
		int w;

		/* Only one group can be active: making the peer active
		 * means this one goes standby. */
		if (g == set->alua_group && st == ALUA_AO)
			w = 1;
		else if (g == set->alua_group && st == ALUA_STANDBY)
			w = 0;
		else if (g == set->alua_peer_group && st == ALUA_AO)
			w = 0;
		else if (g == set->alua_peer_group && st == ALUA_STANDBY)
			continue;	/* the other node decides for itself */
		else {
			scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_PARAMETER_LIST,
					 false, (uint16_t)off, -1);
			return SCSI_EXEC_DONE;
		}
		if (want >= 0 && want != w) {
			scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_PARAMETER_LIST,
					 false, (uint16_t)off, -1);
			return SCSI_EXEC_DONE;
		}
		want = w;
	}
	if (want < 0)
		return SCSI_EXEC_DONE;
	struct alua_stpg_job *j = calloc(1, sizeof(*j));
	if (!j) {
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	j->cmd = cmd;
	j->r = reactor_current();
	j->want_active = want;
	j->set = *set;
	cmd->stage = SCSI_STAGE_ALUA;
	if (pthread_create(&th, NULL, alua_stpg_thread, j)) {
		free(j);
		cmd->stage = SCSI_STAGE_EXEC;
		scsi_set_backend_error(cmd, -ENOMEM, false);
		return SCSI_EXEC_DONE;
	}
	pthread_detach(th);
	return SCSI_EXEC_ASYNC;
}
