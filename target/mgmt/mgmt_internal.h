/* mgmt_internal.h - shared between mgmt.c (socket, requests) and
 * mgmt_show.c (the show text).  Not for other modules. */
#ifndef HOLDFAST_MGMT_INTERNAL_H
#define HOLDFAST_MGMT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stack.h"

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

enum mgmt_op {
	MGMT_OP_NEW = 0,
	MGMT_OP_DELETE = 1,
	MGMT_OP_SHOW = 2,
	MGMT_OP_BIND = 3,
	MGMT_OP_UNBIND = 4,
	MGMT_OP_UPDATE = 5,
	MGMT_OP_STAT = 6,
	MGMT_OP_START = 7,
	MGMT_OP_STOP = 8,
};

/* Device types of the request (SPC peripheral device types). */
#define MGMT_DEVTYPE_DISK 0

/* The LUN field when --lun was not given. */
#define MGMT_LUN_UNSET UINT64_MAX

/* The prefix tgtadm puts before --params on logicalunit/target update. */
#define MGMT_PARAMS_PREFIX "targetOps "

/* The request header's lld field: a NUL-padded driver name. */
#define MGMT_LLD_LEN 64

/* A decoded request (mgmt.c decodes the wire header). */
struct mgmt_req {
	uint32_t mode, op;
	char lld[MGMT_LLD_LEN + 1];
	uint32_t len;
	int32_t tid;
	uint64_t sid, lun;
	uint32_t cid, host_no, device_type, ac_dir, force;
	char *payload;		/* NUL-terminated, possibly "" */
	bool json;		/* a show with the item "format=json" */
};

/* The payload item holdfastadm --json adds to a show request; the stock
 * tgtadm never sends it, so its output stays tgtd's text. */
#define MGMT_JSON_ITEM_KEY "format"
#define MGMT_JSON_ITEM_VALUE "json"

/* Largest number of key=value items one request may carry. */
#define MGMT_MAX_ITEMS 64

/* Value of key in a "k1=v1,k2=v2" payload, copied into out (truncated to
 * len).  true if present. */
bool mgmt_payload_get(const char *payload, const char *key, char *out,
		      size_t len);
/* Split a payload into its "key=value" items (the tgtadm "targetOps "
 * prefix dropped): items[] point into *copy, which the caller frees.
 * Returns the count (0..MGMT_MAX_ITEMS) or -ENOMEM / -E2BIG. */
int mgmt_payload_split(const char *payload, char **copy, char **items);

/* A payload split into its items (mgmt_payload_split), with the lookups
 * the job and bitmap verbs share (mgmt_cbt.c). */
struct mgmt_items {
	char *copy;
	char *v[MGMT_MAX_ITEMS];
	int n;
};
/* Value of key, or NULL. */
const char *mgmt_item(const struct mgmt_items *it, const char *key);
/* A non-negative decimal/hex/octal number that fills s; false if s is
 * NULL, empty, negative or out of range. */
bool mgmt_parse_u64(const char *s, uint64_t *out);

/* `--mode logicalunit` requests (mgmt_lun.c).  Returns a MGMT_* error. */
int mgmt_lun(const struct mgmt_req *req);

/* Block stack changes in `logicalunit update` (mgmt_stack.c): the keys
 * filter_add=NAME, filter_pos=top|above:NODE|below:NODE and
 * filter_remove=NAME, collected while the request is parsed and applied
 * after it has been validated as a whole. */
struct mgmt_stack_change {
	char add[32];			/* filter to insert, "" = none */
	char remove[32];		/* filter to remove, "" = none */
	bool has_pos;
	enum be_stack_where where;
	char ref[32];			/* node named by above:/below: */
};
/* Is key one of the block stack keys? */
bool mgmt_stack_key(const char *key);
/* Record key=val in c.  0, -EINVAL (bad value, unknown filter, key given
 * twice) or -ENOENT (not a stack key). */
int mgmt_stack_parse(struct mgmt_stack_change *c, const char *key,
		     const char *val);
/* The change as a whole: 0 or -EINVAL (filter_pos without filter_add). */
int mgmt_stack_check(const struct mgmt_stack_change *c);
/* Remove, then insert, on the live stack whose root is the LUN's backend
 * (lun and block_size for log lines and the fault filter's lba= unit).
 * Returns a MGMT_* error. */
int mgmt_stack_apply(int tid, uint64_t lun, uint32_t block_size,
		     struct backend *root, const struct mgmt_stack_change *c);
struct mgmt_buf;
/* `--mode account` requests (mgmt_account.c). */
int mgmt_account(const struct mgmt_req *req, struct mgmt_buf *b);

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
/* tgtadm statistics and driver views (mgmt_stat.c), tgtd's layout:
 * --op stat --mode system|target (tid -1: all); --op stat|show --mode
 * session|conn; --mode lld show/start/stop. */
int mgmt_stat_targets(int tid, struct mgmt_buf *b);
int mgmt_stat_session(int tid, uint64_t sid, int op, bool conn,
		      struct mgmt_buf *b);
int mgmt_lld(int op, struct mgmt_buf *b);

/* `--op show --mode portal`. */
int mgmt_show_portals(struct mgmt_buf *b);
/* `--op show --mode system`. */
int mgmt_show_system(struct mgmt_buf *b);
/* `--op show --mode logicalunit --tid T --lun L` (holdfastadm): the
 * target line and the LUN's lines as in the target show. */
int mgmt_show_lun(int tid, uint64_t lun, struct mgmt_buf *b);

/* `--mode bitmap` and `--mode job` (mgmt_cbt.c, issue 10). */
int mgmt_bitmap(const struct mgmt_req *req, struct mgmt_buf *b);
int mgmt_job(const struct mgmt_req *req, struct mgmt_buf *b);
/* Parse a job new request's common keys (job_req_new) without starting
 * anything: for the fuzz harness, which must not write files. */
int mgmt_job_params_check(const struct mgmt_req *req);
/* Mirror jobs (mgmt_mirror.c): does req name one (new with type=mirror,
 * update/delete with a mirror's id)?  Then mgmt_mirror() handles it.
 * mgmt_mirror_show() appends the mirror jobs to a job show. */
bool mgmt_mirror_claims(const struct mgmt_req *req);
int mgmt_mirror(const struct mgmt_req *req, struct mgmt_buf *b);
void mgmt_mirror_show(struct mgmt_buf *b, bool json, bool first);
/* Parse a `type=mirror` payload's parameters only (fuzz_mgmt): 0 or
 * -errno with *why. */
struct cbt_mirror_params;
int mgmt_mirror_parse(const char *payload, struct cbt_mirror_params *p,
		      const char **why);
/* A JSON string literal of s (RFC 8259 section 7). */
void mgmt_json_string(struct mgmt_buf *b, const char *s);
/* The same shows as JSON documents (mgmt_json.c). */
int mgmt_json_targets(int tid, struct mgmt_buf *b);
int mgmt_json_lun(int tid, uint64_t lun, struct mgmt_buf *b);
int mgmt_json_target_params(int tid, struct mgmt_buf *b);
int mgmt_json_portals(struct mgmt_buf *b);
int mgmt_json_system(struct mgmt_buf *b);
int mgmt_json_accounts(struct mgmt_buf *b);
/* {"key": "text"}: the dumped configuration. */
int mgmt_json_text(const char *key, const char *text, struct mgmt_buf *b);

#endif
