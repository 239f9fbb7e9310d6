/* hang_env.c - the hang engine's outside world for real: reactors, their
 * timers, the LUN's backend and the monotonic clock (hang_internal.h).
 * Unit tests replace this table with a fake clock and a fake backend. */
#include "hang_internal.h"

static uint64_t hang_env_now(struct reactor *r)
{
	return reactor_now_ms(r);	/* clock_ms() when r is NULL */
}

static void hang_env_submit(struct scsi_lun *lun, struct be_io *io,
			    struct reactor *r)
{
	backend_submit(lun->be, io, r);
}

static bool hang_env_tryget(struct scsi_lun *lun)
{
	int v = atomic_load(&lun->refcnt);

	while (v > 0)
		if (atomic_compare_exchange_weak(&lun->refcnt, &v, v + 1))
			return true;
	return false;
}

static const struct hang_env hang_env_reactor = {
	.now_ms = hang_env_now,
	.call = reactor_call,
	.timer_add = reactor_timer_add,
	.timer_del = reactor_timer_del,
	.submit = hang_env_submit,
	.lun_get = scsi_lun_get,
	.lun_put = scsi_lun_put,
	.lun_tryget = hang_env_tryget,
};

const struct hang_env *hang_env_real(void)
{
	return &hang_env_reactor;
}
