/* lun_settings.c - default LUN settings (DESIGN.md "Hang-on-error" and
 * "Configuration"). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lun.h"

/* DESIGN.md: the default transient set of retry_errors. */
static const int retry_errors_default[] = {
	EIO, ENOSPC, EDQUOT, ETIMEDOUT, ENOTCONN, ECONNRESET, ECONNREFUSED,
	EHOSTUNREACH, ENETUNREACH, EAGAIN, EBUSY, ENOMEM, ESTALE, EREMOTEIO,
	ENOLINK, ESHUTDOWN,
};

void lun_retry_errors_default(uint64_t *bits)
{
	memset(bits, 0, sizeof(uint64_t) * (LUN_ERRNO_BITS / 64));
	for (size_t i = 0; i < sizeof(retry_errors_default) /
				   sizeof(retry_errors_default[0]); i++) {
		int e = retry_errors_default[i];
		bits[e / 64] |= 1ull << (e % 64);
	}
}

void lun_settings_default(struct lun_settings *s, uint64_t lun)
{
	memset(s, 0, sizeof(*s));
	s->lun = lun;
	snprintf(s->backend, sizeof(s->backend), "%s", "file");
	s->block_size = 512;
	s->direct = true;
	s->write_cache = true;
	s->online = true;
	s->thin_provisioning = false;
	s->readonly = false;
	s->removable = false;
	s->sense_desc = false;
	/* Identity (SPC-4 6.4.2); scsi_id and scsi_sn stay empty so the SCSI
	 * layer derives stable ones from the target name and LUN. */
	snprintf(s->vendor_id, sizeof(s->vendor_id), "%s", "HOLDFAST");
	snprintf(s->product_id, sizeof(s->product_id), "%s", "VIRTUAL-DISK");
	snprintf(s->product_rev, sizeof(s->product_rev), "%s", "0001");
	s->rerror = ERR_POLICY_REPORT;
	s->werror = ERR_POLICY_REPORT;
	s->retry_interval_ms = 1000;
	s->retry_timeout_ms = 0;
	lun_retry_errors_default(s->retry_errors);
}
