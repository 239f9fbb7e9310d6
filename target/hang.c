/* hang.c - the hang engine (DESIGN.md "Hang-on-error").
 *
 * Step 0: a pass-through so the daemon links.  Every request goes straight
 * to the backend; hang_abort() only marks the request so its completion
 * reports -ECANCELED. */
#include <errno.h>

#include "hang.h"
#include "lun.h"
#include "reactor.h"

enum { HANG_M_NEW = 0, HANG_M_INFLIGHT, HANG_M_DROPPED };

int hang_lun_init(struct scsi_lun *lun)
{
	lun->hang = NULL;
	return 0;
}

void hang_lun_free(struct scsi_lun *lun)
{
	lun->hang = NULL;
}

static void hang_io_done(struct be_io *io, int res)
{
	struct media_io *m = container_of(io, struct media_io, io);

	if (m->hstate == HANG_M_DROPPED)
		res = -ECANCELED;
	m->hstate = HANG_M_NEW;
	m->complete(m, res);
}

void hang_submit(struct scsi_lun *lun, struct media_io *m)
{
	m->hstate = HANG_M_INFLIGHT;
	m->io.done = hang_io_done;
	backend_submit(lun->be, &m->io, m->origin);
}

void hang_abort(struct scsi_lun *lun UNUSED, struct media_io *m)
{
	if (m->hstate == HANG_M_INFLIGHT)
		m->hstate = HANG_M_DROPPED;
}
