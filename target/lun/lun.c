/* lun.c - a LUN's reference count (lun.h).
 *
 * The layer that creates a LUN (the SCSI layer, scsi_lun_create()) says
 * how to tear it down in lun->release; everything below it (the hang
 * engine, management) only takes and drops references. */
#include <stdatomic.h>

#include "lun.h"

void scsi_lun_get(struct scsi_lun *l)
{
	atomic_fetch_add_explicit(&l->refcnt, 1, memory_order_relaxed);
}

void scsi_lun_put(struct scsi_lun *l)
{
	if (!l)
		return;
	/* acq_rel: the last putter must see every other user's writes
	 * before it tears the LUN down. */
	if (atomic_fetch_sub_explicit(&l->refcnt, 1, memory_order_acq_rel) != 1)
		return;
	l->release(l);
}
