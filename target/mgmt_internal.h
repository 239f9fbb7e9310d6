/* mgmt_internal.h - shared between mgmt.c (socket, requests) and
 * mgmt_show.c (the show text).  Not for other modules. */
#ifndef HOLDFAST_MGMT_INTERNAL_H
#define HOLDFAST_MGMT_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Error numbers of tgtd's management protocol (tgtadm-wire.md).  The
 * daemon sends only the number; the stock tgtadm holds the texts. */
enum mgmt_err {
	MGMT_SUCCESS = 0,
	MGMT_UNKNOWN_ERR = 1,
	MGMT_NOMEM = 2,
	MGMT_NO_DRIVER = 3,
	MGMT_NO_TARGET = 4,
	MGMT_NO_LUN = 5,
	MGMT_NO_SESSION = 6,
	MGMT_NO_CONNECTION = 7,
	MGMT_NO_BINDING = 8,
	MGMT_TARGET_EXIST = 9,
	MGMT_LUN_EXIST = 10,
	MGMT_BINDING_EXIST = 11,
	MGMT_ACL_EXIST = 12,
	MGMT_ACL_NOEXIST = 13,
	MGMT_USER_EXIST = 14,
	MGMT_NO_USER = 15,
	MGMT_TOO_MANY_USER = 16,
	MGMT_INVALID_REQUEST = 17,
	MGMT_OUTACCOUNT_EXIST = 18,
	MGMT_TARGET_ACTIVE = 19,
	MGMT_LUN_ACTIVE = 20,
	MGMT_DRIVER_ACTIVE = 21,
	MGMT_UNSUPPORTED_OPERATION = 22,
	MGMT_UNKNOWN_PARAM = 23,
	MGMT_PREVENT_REMOVAL = 24,
};

/* A growing text buffer for reply bodies. */
struct mgmt_buf {
	char *data;
	size_t len, cap;
	int oom;		/* an append failed: reply MGMT_NOMEM */
};

void mgmt_buf_printf(struct mgmt_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void mgmt_buf_free(struct mgmt_buf *b);

/* `--op show --mode target` (tid -1: all targets) into b.  Returns a
 * MGMT_* error. */
int mgmt_show_targets(int tid, struct mgmt_buf *b);
/* `--op show --mode target --tid N`: the target's parameters. */
int mgmt_show_target_params(int tid, struct mgmt_buf *b);
/* `--op show --mode system`. */
int mgmt_show_system(struct mgmt_buf *b);

#endif
