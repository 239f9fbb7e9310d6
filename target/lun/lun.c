/* lun.c - a LUN's reference count and its settings snapshots (lun.h).
 *
 * The layer that creates a LUN (the SCSI layer, scsi_lun_create()) says
 * how to tear it down in lun->release; everything below it (the hang
 * engine, management) only takes and drops references. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "lun.h"
#include "reactor.h"

void lun_fixed_init(struct scsi_lun *l, const struct lun_settings *s)
{
	l->id = s->lun;
	l->block_size = s->block_size;
	snprintf(l->path, sizeof(l->path), "%s", s->path);
}

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

struct lun_settings *lun_settings_publish(struct scsi_lun *l,
					  struct lun_settings *s)
{
	/* seq_cst: ordered against reactor_synchronize()'s loads of the
	 * reactors' quiescent-state counters (reactor.c). */
	return atomic_exchange_explicit(&l->set, s, memory_order_seq_cst);
}

void lun_settings_retire(struct lun_settings *old)
{
	if (!old)
		return;
	reactor_synchronize();
	free(old);
}

void lun_settings_release(struct scsi_lun *l)
{
	/* The last reference is gone: no command, so no reader, is left. */
	free(atomic_exchange_explicit(&l->set, NULL, memory_order_acquire));
}
