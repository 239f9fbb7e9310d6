/* hang.h - the hang engine: per-LUN error policy between the SCSI layer and
 * the backend (DESIGN.md "Hang-on-error").
 *
 * The SCSI layer turns each media command into a struct media_io and hands
 * it to hang_submit().  While the LUN is ok the request goes straight to the
 * backend on the calling reactor; a retryable failure holds it, and later
 * requests queue behind it in arrival order (mio->seq) until a probe
 * succeeds or retry_timeout passes.  complete() is called exactly once, on
 * the reactor that submitted, never from inside hang_submit(). */
#ifndef HOLDFAST_HANG_H
#define HOLDFAST_HANG_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "util.h"

struct reactor;
struct scsi_lun;

struct media_io {
	struct be_io io;		/* op, flags, offset, length, iov */
	uint64_t seq;			/* per-LUN arrival sequence number */
	uint64_t nexus_id;		/* which I_T nexus issued it (TMF scope) */
	uint64_t tag;			/* initiator task tag (ABORT TASK) */
	struct reactor *origin;		/* completion runs here */
	void (*complete)(struct media_io *m, int res);
	void *owner;
	/* hang engine private */
	struct list_head link;
	int hstate;
	uint64_t t_submit_ms;
};

/* Attach hang state to a LUN (called when the LUN is created). 0/-errno. */
int hang_lun_init(struct scsi_lun *lun);
void hang_lun_free(struct scsi_lun *lun);

/* Submit a media request for lun.  res passed to complete() is 0 or the
 * backend's -errno (after the policy gave up), or -ECANCELED if dropped. */
void hang_submit(struct scsi_lun *lun, struct media_io *m);

/* Drop m (ABORT TASK, LUN RESET, session close...).  Must be called on
 * m->origin, before m's complete() has run.  complete(m, -ECANCELED) is
 * called exactly once afterwards: soon if m was held or queued (it never
 * reaches the backend), or when its in-flight backend attempt finishes
 * (that attempt's result is dropped).  If m's completion was already on
 * its way, complete() gets the real result instead. */
void hang_abort(struct scsi_lun *lun, struct media_io *m);

/* ---- additions: states, limits, task management, operator verbs ---- */

/* Contract details for the SCSI layer:
 * - m->seq must come from atomic_fetch_add(&lun->seq, 1) when the command
 *   is decoded, so that seq < lun->seq means "arrived earlier".
 * - m->io.done and m->io.priv belong to the hang engine (it is the caller
 *   of the backend); the SCSI layer keeps its own pointer in m->owner.
 * - hstate must be 0 when m is first submitted (zeroed command). */

enum hang_state {
	HANG_OK = 0,		/* media commands go straight to the backend */
	HANG_HUNG,		/* a retryable error: hold, queue, probe */
	HANG_FAILED,		/* retry_timeout passed: fail fast, probe in background */
};

/* Per-LUN bound on what the engine keeps while hung (held + queued): a
 * held write pins its data buffer (DESIGN.md "Memory is bounded"). */
#define HANG_MAX_HELD_CMDS	1024
#define HANG_MAX_HELD_BYTES	(256ULL << 20)

/* Result passed to complete() when a command arriving at a hung LUN would
 * exceed the limits above: the SCSI layer answers TASK SET FULL (SAM-5
 * 5.3.1), which makes the initiator retry later.  Same value as the
 * backend's ENOMEM, which scsi_set_backend_error() maps to TASK SET FULL
 * (EBUSY and EAGAIN map to BUSY). */
#define HANG_TASK_SET_FULL	(-ENOMEM)

/* hang_abort() details: a hung LUN whose held set an ABORT TASK empties
 * stays hung until the next probe tick, which takes the oldest queued
 * command as its probe, or returns the LUN to ok if nothing is queued
 * either (so aborting a task set one task at a time never dispatches a
 * queued command that the next abort was about to drop).  For LUN RESET,
 * ABORT TASK SET, CLEAR TASK SET and session close prefer
 * hang_abort_nexus(): it drops the whole scope at once and returns a LUN
 * left with nothing held to ok immediately; per-task hang_abort() calls
 * made as well then find nothing and are harmless. */

/* hang_abort_nexus() scope meaning "every I_T nexus" (LUN RESET, CLEAR
 * TASK SET with TST=000b, target reset). */
#define HANG_NEXUS_ALL		UINT64_MAX

/* Current state (atomic read; any thread). */
enum hang_state hang_state(struct scsi_lun *lun);
const char *hang_state_name(enum hang_state s);

/* Drop every held and queued command of I_T nexus `nexus_id` (or all, with
 * HANG_NEXUS_ALL) that arrived before this call (seq < lun->seq now):
 * ABORT TASK SET, CLEAR TASK SET, LUN RESET, session close and
 * reinstatement, PREEMPT AND ABORT.  Each dropped command completes with
 * -ECANCELED on its own reactor and never reaches the backend; those of
 * the scope whose attempt is in flight complete with -ECANCELED when it
 * finishes (result dropped); those still on their way to the LUN's home
 * reactor are dropped when they get there.  If the LUN was hung and nothing
 * is held afterwards it returns to ok and the remaining queued commands
 * are dispatched.  Any thread.  done (may be NULL) then runs on reactor r
 * (required when done is set) with the number of commands dropped, never
 * from inside this call; the TMF is answered from there.  0 or -ENOMEM. */
int hang_abort_nexus(struct scsi_lun *lun, uint64_t nexus_id,
		     struct reactor *r,
		     void (*done)(void *arg, unsigned dropped), void *arg);

/* Run-time verb (`tgtadm --params hang=VERB`, `holdfastadm`):
 *   pause   stop probing (a hung LUN stays hung; retry_timeout still runs)
 *   resume  probe again at retry_interval
 *   retry   probe now (also while paused)
 *   fail    report every held and queued command now; a hung LUN enters
 *           failed
 * Any thread; the effect is applied on the LUN's home reactor right after.
 * 0, or -EINVAL for an unknown verb. */
int hang_verb(struct scsi_lun *lun, const char *verb);

/* The show lines for this LUN, each indented with 8 spaces and ending in
 * '\n' (state, since when, held / queued counts, last error, counters).
 * Any thread.  Returns the length written or -ENOSPC if buf is too small. */
int hang_describe(struct scsi_lun *lun, char *buf, unsigned len);

/* Settings of lun changed at run time (rerror/werror/retry_*): apply
 * them to an episode in progress (new timeout, policy now report -> fail
 * the held commands).  Any thread. */
void hang_settings_changed(struct scsi_lun *lun);

/* Start over after this node took a shared store over from another node
 * (README "Two nodes in front of shared storage": going active resets
 * hang state).  Whatever the engine held or queued is dropped (complete()
 * gets -ECANCELED; it was accepted before the node went standby and is
 * never sent), an attempt still in the backend has its result dropped,
 * the probe and retry_timeout timers stop, and the LUN is ok with no last
 * error, probing not paused and no "unproven" writes: an episode this node
 * had before the handover (hung, or failed after retry_timeout) does not
 * outlive it, so the first error after the takeover starts a new hang
 * instead of failing fast.  The counters (episodes, retries, recoveries,
 * timeouts, longest hang) are history and stay.  Any thread; done(arg)
 * runs once the reset is complete, on the LUN's home reactor, or from
 * inside this call if the LUN never needed one.  why (logged) must
 * outlive the call: a string literal.  0 or -ENOMEM (nothing done, done()
 * not called). */
int hang_reset(struct scsi_lun *lun, const char *why,
	       void (*done)(void *arg), void *arg);

/* Let the SCSI layer look at a command that waited (held or queued) once
 * more, just before the engine sends it to the backend: recheck runs on
 * the LUN's home reactor (not m->origin) and returns 0 to go ahead, or a
 * negative code that complete() then receives instead (e.g. -EACCES for a
 * reservation taken meanwhile, SPC-4 5.13; the SCSI layer maps its own
 * code).  NULL (the default) checks nothing.  Any thread. */
void hang_set_recheck(struct scsi_lun *lun,
		      int (*recheck)(struct media_io *m));

#endif
