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

#include <stdbool.h>
#include <stdint.h>

#include "../backends/backend.h"
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

#endif
