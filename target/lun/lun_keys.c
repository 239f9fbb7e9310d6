/* lun_keys.c - the LUN key table and everything it drives (lun.h): the
 * parser targets.conf and `tgtadm --params` share, defaults, whole-LUN
 * validation, the diff a reload or an update needs, and the canonical
 * text the printers write.
 *
 * A key is described here and nowhere else: name, type, field, limits,
 * default, whether it may change at run time and what a change implies.
 * Everything is parsed from text (the config loader renders libconfig
 * values as text first), and a key's default is text too, run through
 * the same parser, so a default can never break a key's own limits. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "iscsi_conf.h"
#include "lun.h"
#include "util.h"

enum lun_key_type {
	LK_UINT,	/* uint16_t, uint32_t or uint64_t (by the field's size),
			 * min..max */
	LK_POW2,	/* LK_UINT that must also be a power of two */
	LK_SIZE,	/* uint64_t bytes; "1G" and such allowed */
	LK_BOOL,
	LK_SENSE,	/* bool sense_desc: "fixed"/"0" or "descriptor"/"1" */
	LK_POLICY,	/* enum err_policy: "report" or "retry" */
	LK_ALUA,	/* bool alua_standby: "active" or "standby" */
	LK_LOCK,	/* bool alua_lock_pr: "file" or "scsi-pr" */
	LK_PRKEY,	/* uint64_t: hex ("0x...") or decimal, 0 = derived */
	LK_BACKEND,	/* char[]: "file", "null" or "fault" */
	LK_PATH,	/* char[]: not empty */
	LK_SPEC,	/* char[]: any text (the fault spec) */
	LK_ASCII,	/* char[]: printable ASCII (INQUIRY, SPC-4 4.3.1) */
	LK_ERRNOS,	/* uint64_t[LUN_ERRNO_BITS / 64]: errno names */
	LK_FILTERS,	/* char[]: filter names (backend_find()), top first */
	LK_ITEM,	/* an item "name=value" of the store options (bsopts);
			 * the store parses it (backends/iscsi_conf.h) */
};

struct lun_key {
	const char *name;
	const char *alias;	/* an older spelling also accepted */
	enum lun_key_type type;
	size_t offset, size;	/* the field in struct lun_settings */
	uint64_t min, max;	/* LK_UINT, LK_POW2 */
	const char *def;	/* default, as text; NULL = zero / empty */
	unsigned flags;		/* LUN_KEY_* */
	const char *hint;	/* the message for a value it refuses */
	const char *json;	/* member name in `show --json`, or NULL */
	const char *unit;	/* after the value in `show` ("ms"), or NULL */
	enum lun_key_kind item_kind;	/* LK_ITEM: how the value is spelled */
	const char *item;	/* LK_ITEM: its name in bsopts, if not name */
};

#define F(field) .offset = offsetof(struct lun_settings, field), \
		 .size = sizeof(((struct lun_settings *)0)->field)

#define LUN_RETRY_INTERVAL_MAX_MS 3600000u	/* an hour between probes */

/* RUN: may change on a live LUN (tgtadm update, SIGHUP). */
#define RUN LUN_KEY_RUNTIME
static const struct lun_key lun_keys[] = {
	{ .name = "lun", .type = LK_UINT, F(lun), .min = 1, .max = 255,
	  .hint = "must be 1..255 (LUN 0 is the controller)", .json = "lun" },
	/* the store: fixed when the LUN is created */
	{ .name = "backend", .type = LK_BACKEND, F(backend), .def = "file",
	  .flags = LUN_KEY_STORE, .json = "backing_store_type" },
	{ .name = "path", .type = LK_PATH, F(path),
	  .flags = LUN_KEY_STORE | LUN_KEY_NONEMPTY,
	  .json = "backing_store_path" },
	/* online resize (README "Resizing a LUN"): scsi_lun_update()
	 * resizes the store */
	{ .name = "size", .type = LK_SIZE, F(size),
	  .flags = RUN | LUN_KEY_RESIZE },
	{ .name = "block_size", .alias = "blocksize", .type = LK_POW2,
	  F(block_size), .min = 512, .max = 65536, .def = "512",
	  .flags = LUN_KEY_STORE,
	  .hint = "must be a power of two from 512 to 65536",
	  .json = "block_size" },
	{ .name = "direct", .type = LK_BOOL, F(direct), .def = "true",
	  .flags = LUN_KEY_STORE },
	{ .name = "sync", .type = LK_BOOL, F(sync), .def = "false",
	  .flags = LUN_KEY_STORE },
	/* what initiators see */
	{ .name = "readonly", .type = LK_BOOL, F(readonly), .def = "false",
	  .flags = RUN | LUN_KEY_MODE, .json = "readonly" },
	{ .name = "removable", .type = LK_BOOL, F(removable), .def = "false",
	  .flags = RUN, .json = "removable" },
	{ .name = "thin_provisioning", .type = LK_BOOL, F(thin_provisioning),
	  .def = "false", .flags = RUN, .json = "thin_provisioning" },
	{ .name = "write_cache", .type = LK_BOOL, F(write_cache), .def = "true",
	  .flags = RUN | LUN_KEY_MODE, .json = "write_cache" },
	{ .name = "online", .type = LK_BOOL, F(online), .def = "true",
	  .flags = RUN, .json = "online" },
	{ .name = "sense_format", .type = LK_SENSE, F(sense_desc),
	  .def = "fixed", .flags = RUN | LUN_KEY_MODE,
	  .hint = "expected \"fixed\" or \"descriptor\"",
	  .json = "sense_format" },
	/* Identity (SPC-4 6.4.2); scsi_id and scsi_sn stay empty so the
	 * SCSI layer derives stable ones from the target name and LUN. */
	{ .name = "vendor_id", .type = LK_ASCII, F(vendor_id),
	  .def = "HOLDFAST", .flags = RUN, .json = "vendor_id" },
	{ .name = "product_id", .type = LK_ASCII, F(product_id),
	  .def = "VIRTUAL-DISK", .flags = RUN, .json = "product_id" },
	{ .name = "product_rev", .type = LK_ASCII, F(product_rev),
	  .def = "0001", .flags = RUN, .json = "product_rev" },
	{ .name = "scsi_id", .type = LK_ASCII, F(scsi_id),
	  .flags = RUN | LUN_KEY_NONEMPTY },
	{ .name = "scsi_sn", .type = LK_ASCII, F(scsi_sn),
	  .flags = RUN | LUN_KEY_NONEMPTY },
	/* hang-on-error (DESIGN.md) */
	{ .name = "rerror", .type = LK_POLICY, F(rerror), .def = "report",
	  .flags = RUN | LUN_KEY_HANG,
	  .hint = "expected \"report\" or \"retry\"", .json = "rerror" },
	{ .name = "werror", .type = LK_POLICY, F(werror), .def = "report",
	  .flags = RUN | LUN_KEY_HANG,
	  .hint = "expected \"report\" or \"retry\"", .json = "werror" },
	{ .name = "retry_interval", .type = LK_UINT, F(retry_interval_ms),
	  .min = 1, .max = LUN_RETRY_INTERVAL_MAX_MS, .def = "1000",
	  .flags = RUN | LUN_KEY_HANG, .hint = "milliseconds, 1 to 3600000",
	  .json = "retry_interval_ms", .unit = "ms" },
	{ .name = "retry_timeout", .type = LK_UINT, F(retry_timeout_ms),
	  .min = 0, .max = UINT32_MAX, .def = "0",
	  .flags = RUN | LUN_KEY_HANG,
	  .hint = "milliseconds, 0 (never) to 4294967295",
	  .json = "retry_timeout_ms", .unit = "ms" },
	{ .name = "retry_errors", .type = LK_ERRNOS, F(retry_errors),
	  .def = "default", .flags = RUN | LUN_KEY_HANG,
	  .json = "retry_errors" },
	/* Two nodes in front of shared storage (target/scsi/scsi_alua.c).
	 * alua_group 0 = off; the groups are fixed once set
	 * (scsi_lun_update()). */
	{ .name = "alua_group", .type = LK_UINT, F(alua_group), .min = 0,
	  .max = UINT16_MAX, .def = "0", .flags = RUN | LUN_KEY_ALUA,
	  .hint = "a target port group number, 1 to 65535 (0 = none)" },
	{ .name = "alua_peer_group", .type = LK_UINT, F(alua_peer_group),
	  .min = 0, .max = UINT16_MAX, .def = "0",
	  .flags = RUN | LUN_KEY_ALUA,
	  .hint = "a target port group number, 1 to 65535 (0 = none)" },
	{ .name = "alua_state", .type = LK_ALUA, F(alua_standby),
	  .def = "active", .flags = RUN | LUN_KEY_ALUA,
	  .hint = "active or standby" },
	/* a directory both nodes share for the lock, reservations and
	 * bitmaps (lun_shared_state_path); moving it means a new LUN */
	{ .name = "alua_state_dir", .type = LK_PATH, F(alua_state_dir),
	  .flags = LUN_KEY_STORE | LUN_KEY_ALUA | LUN_KEY_NONEMPTY },
	/* what the ownership is: a lock file (next to a file store or in
	 * alua_state_dir; an rbd image's exclusive lock) or a SCSI-3
	 * persistent reservation on the store itself (iscsi store, SCSI
	 * disk); and this node's reservation key for the latter */
	{ .name = "alua_lock", .type = LK_LOCK, F(alua_lock_pr),
	  .def = "file", .flags = LUN_KEY_STORE | LUN_KEY_ALUA,
	  .hint = "file or scsi-pr" },
	{ .name = "alua_pr_key", .type = LK_PRKEY, F(alua_pr_key),
	  .def = "0", .flags = LUN_KEY_STORE | LUN_KEY_ALUA,
	  .hint = "a reservation key: 0x and up to 16 hex digits, or a decimal number (0 = derived from the host name and alua_group)" },
	/* Error injection: the spec goes to the fault layer every LUN has on
	 * top of its store (backends/fault.c parses it). */
	{ .name = "fault", .type = LK_SPEC, F(backend_opts),
	  .flags = LUN_KEY_PARAM | LUN_KEY_NONEMPTY },
	/* The block stack's filters above the store, top first (README
	 * "The block stack"): the LUN is created with them, and an update
	 * or a reload rebuilds the live chain to match (scsi_lun_update());
	 * filter_add / filter_remove keep it in step.  A tracking node of
	 * the dirty bitmaps (cbt) is not listed: the bitmaps place it. */
	{ .name = "filters", .type = LK_FILTERS, F(filters), .def = "fault",
	  .flags = RUN | LUN_KEY_STACK,
	  .hint = "filter names, top first: fault, passthrough (or none)" },
	/* Store options (tgtadm --bsopts).  A gateway LUN's keys (backend
	 * "iscsi") are items of it: placed here, parsed by the store
	 * (backends/iscsi_conf.h), printed as part of bsopts. */
	{ .name = "bsopts", .type = LK_SPEC, F(bsopts),
	  .flags = LUN_KEY_STORE | LUN_KEY_NONEMPTY,
	  .hint = "store options too long" },
#define ITEM(n, k) { .name = n, .type = LK_ITEM, F(bsopts), \
		     .flags = LUN_KEY_STORE | LUN_KEY_ITEM, .item_kind = k }
	ITEM("initiator_name", LUN_KIND_STRING),
	ITEM("portals", LUN_KIND_LIST),
	ITEM("remote_timeout", LUN_KIND_NUMBER),
	ITEM("connect_timeout", LUN_KIND_NUMBER),
	ITEM("reconnect_max", LUN_KIND_NUMBER),
	ITEM("header_digest", LUN_KIND_STRING),
	ITEM("data_digest", LUN_KIND_STRING),
	ITEM("mutual_user", LUN_KIND_STRING),
	ITEM("mutual_password", LUN_KIND_STRING),
	/* An rbd LUN's (backend "rbd"): items of bsopts under the names
	 * tgt's bs_rbd and backends/rbd.c use ("conf=...;id=..."). */
#define RBD(n, i, k) { .name = n, .type = LK_ITEM, F(bsopts), \
		       .flags = LUN_KEY_STORE | LUN_KEY_ITEM, .item_kind = k, \
		       .item = i }
	RBD("ceph_conf", "conf", LUN_KIND_STRING),
	RBD("ceph_id", "id", LUN_KIND_STRING),
	RBD("ceph_keyring", "keyring", LUN_KIND_STRING),
	RBD("rbd_osd_op_timeout", "osd_op_timeout", LUN_KIND_NUMBER),
	RBD("rbd_cache", "cache", LUN_KIND_BOOL),
#undef RBD
#undef ITEM
};
#undef RUN
#undef F

const struct lun_key *lun_key_at(unsigned i)
{
	return i < ARRAY_SIZE(lun_keys) ? &lun_keys[i] : NULL;
}

const struct lun_key *lun_key_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(lun_keys); i++)
		if (strcmp(name, lun_keys[i].name) == 0 ||
		    (lun_keys[i].alias && strcmp(name, lun_keys[i].alias) == 0))
			return &lun_keys[i];
	return NULL;
}

const char *lun_key_name(const struct lun_key *k)
{
	return k->name;
}

unsigned lun_key_flags(const struct lun_key *k)
{
	return k->flags;
}

const char *lun_key_json(const struct lun_key *k)
{
	return k->json;
}

const char *lun_key_unit(const struct lun_key *k)
{
	return k->unit;
}

enum lun_key_kind lun_key_kind(const struct lun_key *k)
{
	switch (k->type) {
	case LK_UINT:
	case LK_POW2:
		return LUN_KIND_NUMBER;
	case LK_SIZE:
		return LUN_KIND_SIZE;
	case LK_BOOL:
		return LUN_KIND_BOOL;
	case LK_ERRNOS:
	case LK_FILTERS:
		return LUN_KIND_LIST;
	case LK_ITEM:
		return k->item_kind;
	default:
		return LUN_KIND_STRING;
	}
}

/* ---- field access ---- */

static void *key_field(const struct lun_key *k, struct lun_settings *s)
{
	return (char *)s + k->offset;
}

static const void *key_cfield(const struct lun_key *k,
			      const struct lun_settings *s)
{
	return (const char *)s + k->offset;
}

static uint64_t key_get_uint(const struct lun_key *k,
			     const struct lun_settings *s)
{
	const void *p = key_cfield(k, s);

	if (k->size == sizeof(uint16_t))
		return *(const uint16_t *)p;
	return k->size == sizeof(uint32_t) ? *(const uint32_t *)p
					   : *(const uint64_t *)p;
}

/* ---- parsing ---- */

static int fail(char *err, unsigned errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, unsigned errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return ret;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* Unsigned decimal in [min, max]. */
static int parse_u64(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long x;

	if (!isdigit((unsigned char)v[0]))
		return -EINVAL;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (errno || *end || x < min || x > max)
		return -EINVAL;
	*out = x;
	return 0;
}

/* Errors the hang engine must never hold (DESIGN.md): they describe the
 * request, not a passing failure of the store, so retrying cannot help. */
static bool errno_never_retried(int e)
{
	return e == EINVAL || e == EROFS || e == EPERM || e == EACCES ||
	       e == EBADE /* RESERVATION CONFLICT: lost ownership */ ||
	       e == ECANCELED || e == EOPNOTSUPP || e == EFBIG;
}

/* DESIGN.md: the default transient set of retry_errors. */
static const int retry_errors_default[] = {
	EIO, ENOSPC, EDQUOT, ETIMEDOUT, ENOTCONN, ECONNRESET, ECONNREFUSED,
	EHOSTUNREACH, ENETUNREACH, EAGAIN, EBUSY, ENOMEM, ESTALE, EREMOTEIO,
	ENOLINK, ESHUTDOWN,
};

void lun_retry_errors_default(uint64_t *bits)
{
	memset(bits, 0, sizeof(uint64_t) * (LUN_ERRNO_BITS / 64));
	for (size_t i = 0; i < ARRAY_SIZE(retry_errors_default); i++) {
		int e = retry_errors_default[i];
		bits[e / 64] |= 1ull << (e % 64);
	}
}

/* "EIO,ENOSPC" (also ':', '|' or blanks between names, since ',' already
 * separates tgtadm --params items), "default" or "none". */
static int retry_errors_parse(const char *v, uint64_t *bits, char *err,
			      unsigned errlen)
{
	uint64_t out[LUN_ERRNO_BITS / 64] = { 0 };
	char buf[1024], *save = NULL, *tok;

	if (strcmp(v, "default") == 0) {
		lun_retry_errors_default(bits);
		return 0;
	}
	if (strlen(v) >= sizeof(buf))
		return fail(err, errlen, -EINVAL, "list too long");
	snprintf(buf, sizeof(buf), "%s", v);
	for (tok = strtok_r(buf, ",:| \t", &save); tok;
	     tok = strtok_r(NULL, ",:| \t", &save)) {
		int e = 0;

		if (strcmp(tok, "none") == 0)
			continue;
		for (int i = 1; i < LUN_ERRNO_BITS; i++) {
			const char *name = strerrorname_np(i);
			if (name && strcasecmp(name, tok) == 0) {
				e = i;
				break;
			}
		}
		if (strcasecmp(tok, "EWOULDBLOCK") == 0)
			e = EAGAIN;
		if (!e)
			return fail(err, errlen, -EINVAL,
				    "%s is not an errno name (e.g. EIO, ENOSPC)",
				    tok);
		if (errno_never_retried(e))
			return fail(err, errlen, -EINVAL,
				    "%s is never retried: it reports a bad request, not a failing store",
				    tok);
		out[e / 64] |= 1ULL << (e % 64);
	}
	memcpy(bits, out, sizeof(out));
	return 0;
}

/* Separators of a filters value: ',' as in targets.conf, and ':', '|' or
 * blanks, since ',' also separates tgtadm --params items. */
#define FILTERS_SEP ",:| \t"

int lun_filters_split(const char *filters, char (*names)[LUN_FILTER_NAME_MAX],
		      int max)
{
	int n = 0;

	for (const char *c = filters; *c && n < max;) {
		size_t len;

		c += strspn(c, FILTERS_SEP);
		len = strcspn(c, FILTERS_SEP);
		if (!len)
			break;
		if (len < LUN_FILTER_NAME_MAX && strncmp(c, "none", len)) {
			memcpy(names[n], c, len);
			names[n++][len] = '\0';
		}
		c += len;
	}
	return n;
}

/* "fault,passthrough" (or "none"): each a filter backend_find() knows,
 * at most LUN_FILTERS_MAX; stored comma-separated. */
#define LUN_FILTERS_MAX 8
static int filters_parse(const struct lun_key *k, const char *v, char *out,
			 char *err, unsigned errlen)
{
	char names[LUN_FILTERS_MAX + 1][LUN_FILTER_NAME_MAX];
	char buf[sizeof(((struct lun_settings *)0)->filters)] = "";
	size_t off = 0, total = 0;
	int n;

	for (const char *c = v; *c;) {
		size_t len;

		c += strspn(c, FILTERS_SEP);
		len = strcspn(c, FILTERS_SEP);
		if (!len)
			break;
		if (len >= LUN_FILTER_NAME_MAX)
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		total++;
		c += len;
	}
	if (total > LUN_FILTERS_MAX)
		return fail(err, errlen, -EINVAL, "at most %d filters",
			    LUN_FILTERS_MAX);
	n = lun_filters_split(v, names, LUN_FILTERS_MAX + 1);
	if (n && (size_t)n != total)
		return fail(err, errlen, -EINVAL, "\"none\" names no filter: "
			    "it stands alone");
	for (int i = 0; i < n; i++) {
		const struct backend_ops *ops = backend_find(names[i]);

		if (!ops || !ops->filter)
			return fail(err, errlen, -EINVAL,
				    "%s is not a filter (%s)", names[i],
				    k->hint);
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s",
					i ? "," : "", names[i]);
	}
	memcpy(out, buf, off + 1);
	return 0;
}

/* Set item key=value in the ';'-separated opts, replacing an earlier one. */
static int bsopts_set(char *opts, size_t cap, const char *key,
		      const char *value, char *err, unsigned errlen)
{
	char out[sizeof(((struct lun_settings *)0)->bsopts)] = "";
	char buf[sizeof(out)], *save = NULL;
	size_t klen = strlen(key), off = 0;
	int n;

	if (strchr(value, ';'))
		return fail(err, errlen, -EINVAL, "must not contain ';'");
	snprintf(buf, sizeof(buf), "%s", opts);
	for (char *it = strtok_r(buf, ";", &save); it;
	     it = strtok_r(NULL, ";", &save)) {
		if (strncmp(it, key, klen) == 0 && it[klen] == '=')
			continue;
		n = snprintf(out + off, sizeof(out) - off, "%s;", it);
		if (n < 0 || (size_t)n >= sizeof(out) - off)
			return fail(err, errlen, -EINVAL, "store options too long");
		off += (size_t)n;
	}
	n = snprintf(out + off, sizeof(out) - off, "%s=%s", key, value);
	if (n < 0 || (size_t)n >= sizeof(out) - off || off + (size_t)n >= cap)
		return fail(err, errlen, -EINVAL, "store options too long");
	memcpy(opts, out, off + (size_t)n + 1);
	return 0;
}

/* Parse value for k into s (s untouched on failure). */
static int key_parse(const struct lun_key *k, struct lun_settings *s,
		     const char *value, char *err, unsigned errlen)
{
	void *p = key_field(k, s);
	uint64_t u;
	bool b;

	switch (k->type) {
	case LK_UINT:
	case LK_POW2:
		if (parse_u64(value, k->min, k->max, &u) ||
		    (k->type == LK_POW2 && (u & (u - 1))))
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		if (k->size == sizeof(uint16_t))
			*(uint16_t *)p = (uint16_t)u;
		else if (k->size == sizeof(uint32_t))
			*(uint32_t *)p = (uint32_t)u;
		else
			*(uint64_t *)p = u;
		return 0;
	case LK_SIZE:
		if (util_parse_size(value, &u))
			return fail(err, errlen, -EINVAL,
				    "bad size \"%s\" (bytes, or a number with K, M, G or T)",
				    value);
		*(uint64_t *)p = u;
		return 0;
	case LK_BOOL:
		if (parse_bool(value, &b))
			return fail(err, errlen, -EINVAL,
				    "expected a boolean (true/false, yes/no, 1/0)");
		*(bool *)p = b;
		return 0;
	case LK_SENSE:
		/* tgtd spells it 0 (fixed) / 1 (descriptor); SPC-4 4.5. */
		if (strcmp(value, "fixed") == 0 || strcmp(value, "0") == 0)
			*(bool *)p = false;
		else if (strcmp(value, "descriptor") == 0 ||
			 strcmp(value, "1") == 0)
			*(bool *)p = true;
		else
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		return 0;
	case LK_POLICY:
		if (strcmp(value, "report") == 0)
			*(enum err_policy *)p = ERR_POLICY_REPORT;
		else if (strcmp(value, "retry") == 0)
			*(enum err_policy *)p = ERR_POLICY_RETRY;
		else
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		return 0;
	case LK_ALUA:
		if (strcmp(value, "active") == 0)
			*(bool *)p = false;
		else if (strcmp(value, "standby") == 0)
			*(bool *)p = true;
		else
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		return 0;
	case LK_LOCK:
		if (strcmp(value, "file") == 0)
			*(bool *)p = false;
		else if (strcmp(value, "scsi-pr") == 0)
			*(bool *)p = true;
		else
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		return 0;
	case LK_PRKEY: {
		char *end;
		bool hex = value[0] == '0' && (value[1] == 'x' || value[1] == 'X');

		if (!isxdigit((unsigned char)value[hex ? 2 : 0]))
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		errno = 0;
		u = strtoull(value, &end, hex ? 16 : 10);
		if (errno || *end)
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		*(uint64_t *)p = u;
		return 0;
	}
	case LK_BACKEND:
		/* "fault" names the injection layer every LUN has on top;
		 * as a backend it means "file if there is a path, else
		 * null" (target/scsi/scsi_lun.c). */
		if (strcmp(value, "file") && strcmp(value, "null") &&
		    strcmp(value, "fault") && strcmp(value, "iscsi") &&
		    strcmp(value, "rbd"))
			return fail(err, errlen, -EINVAL,
				    "unknown backend \"%s\" (file, null, iscsi or rbd)",
				    value);
		snprintf(p, k->size, "%s", value);
		return 0;
	case LK_PATH:
		if (!*value)
			return fail(err, errlen, -EINVAL, "empty path");
		if (strlen(value) >= k->size)
			return fail(err, errlen, -EINVAL, "path too long");
		snprintf(p, k->size, "%s", value);
		return 0;
	case LK_SPEC:
		if (strlen(value) >= k->size)
			return k->hint ? fail(err, errlen, -EINVAL, "%s", k->hint)
				       : fail(err, errlen, -EINVAL,
					      "%s spec too long", k->name);
		snprintf(p, k->size, "%s", value);
		return 0;
	case LK_ITEM:
		return bsopts_set(p, k->size, k->item ? k->item : k->name,
				  value, err, errlen);
	case LK_ASCII:
		if (strlen(value) >= k->size)
			return fail(err, errlen, -EINVAL,
				    "longer than %zu characters", k->size - 1);
		for (const char *c = value; *c; c++)
			if (*c < 0x20 || *c > 0x7e)
				return fail(err, errlen, -EINVAL,
					    "%s must be printable ASCII",
					    k->name);
		memcpy(p, value, strlen(value) + 1);
		return 0;
	case LK_ERRNOS:
		return retry_errors_parse(value, p, err, errlen);
	case LK_FILTERS:
		return filters_parse(k, value, p, err, errlen);
	}
	return fail(err, errlen, -EINVAL, "unhandled key type");
}

int lun_setting_apply(struct lun_settings *s, const char *key,
		      const char *value, char *err, unsigned errlen)
{
	const struct lun_key *k;

	if (!key || !value)
		return fail(err, errlen, -EINVAL, "missing value");
	k = lun_key_find(key);
	if (!k)
		return fail(err, errlen, -ENOENT, "unknown key");
	return key_parse(k, s, value, err, errlen);
}

void lun_settings_default(struct lun_settings *s, uint64_t lun)
{
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < ARRAY_SIZE(lun_keys); i++)
		if (lun_keys[i].def &&
		    key_parse(&lun_keys[i], s, lun_keys[i].def, NULL, 0))
			abort();	/* a default outside its own limits */
	s->lun = lun;
}

/* ---- printing ---- */

int lun_key_format(const struct lun_key *k, const struct lun_settings *s,
		   char *buf, size_t len)
{
	const void *p = key_cfield(k, s);
	size_t off = 0;

	switch (k->type) {
	case LK_UINT:
	case LK_POW2:
	case LK_SIZE:
		return snprintf(buf, len, "%" PRIu64, key_get_uint(k, s));
	case LK_BOOL:
		return snprintf(buf, len, "%s", *(const bool *)p ? "true" : "false");
	case LK_SENSE:
		return snprintf(buf, len, "%s",
				*(const bool *)p ? "descriptor" : "fixed");
	case LK_POLICY:
		return snprintf(buf, len, "%s",
				*(const enum err_policy *)p == ERR_POLICY_RETRY ?
				"retry" : "report");
	case LK_ALUA:
		return snprintf(buf, len, "%s",
				*(const bool *)p ? "standby" : "active");
	case LK_LOCK:
		return snprintf(buf, len, "%s",
				*(const bool *)p ? "scsi-pr" : "file");
	case LK_PRKEY:
		return snprintf(buf, len, "0x%" PRIx64, *(const uint64_t *)p);
	case LK_BACKEND:
	case LK_PATH:
	case LK_SPEC:
	case LK_ASCII:
		return snprintf(buf, len, "%s", (const char *)p);
	case LK_ITEM: {
		/* the item's value in bsopts, "" if absent */
		const char *it = p, *item = k->item ? k->item : k->name;
		size_t klen = strlen(item);

		while (it && *it) {
			if (strncmp(it, item, klen) == 0 && it[klen] == '=')
				return snprintf(buf, len, "%.*s",
						(int)strcspn(it + klen + 1, ";"),
						it + klen + 1);
			it = strchr(it, ';');
			it = it ? it + 1 : NULL;
		}
		return snprintf(buf, len, "%s", "");
	}
	case LK_FILTERS:
		return snprintf(buf, len, "%s", *(const char *)p ? (const char *)p
							      : "none");
	case LK_ERRNOS:
		if (len)
			buf[0] = '\0';
		for (int e = 1; e < LUN_ERRNO_BITS; e++) {
			const char *name = strerrorname_np(e);
			int n;

			if (!lun_errno_retryable(p, e) || !name)
				continue;
			n = snprintf(buf + MIN(off, len), len - MIN(off, len),
				     "%s%s", off ? "," : "", name);
			off += (size_t)n;
		}
		if (!off)
			return snprintf(buf, len, "none");
		return (int)off;
	}
	return snprintf(buf, len, "?");
}

/* ---- whole settings ---- */

const char *lun_settings_path_shown(const struct lun_settings *s, char *buf,
				    size_t len)
{
	const char *scheme = strstr(s->path, "://");
	const char *host, *at = NULL, *pct;

	if (!s->path[0])
		return "None";
	if (!scheme) {
		snprintf(buf, len, "%s", s->path);
		return buf;
	}
	host = scheme + 3;
	for (const char *q = host; *q && *q != '/'; q++)
		if (*q == '@')
			at = q;
	pct = at ? memchr(host, '%', (size_t)(at - host)) : NULL;
	if (!pct) {
		snprintf(buf, len, "%s", s->path);
		return buf;
	}
	snprintf(buf, len, "%.*s%s", (int)(pct - s->path), s->path, at);
	return buf;
}

bool lun_settings_is_blockdev(const struct lun_settings *s)
{
	struct stat st;

	if (!lun_settings_is_file(s))
		return false;
	return strncmp(s->path, "/dev/", 5) == 0 ||
	       (stat(s->path, &st) == 0 && S_ISBLK(st.st_mode));
}

int lun_shared_state_path(const struct lun_settings *s,
			  const char *target_name, const char *suffix,
			  char *out, size_t len)
{
	char name[256];
	unsigned i;
	int n;

	if (!s->alua_state_dir[0]) {
		if (!lun_settings_is_file(s) || lun_settings_is_blockdev(s))
			return -ENOENT;
		n = snprintf(out, len, "%s%s", s->path, suffix);
		return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
	}
	/* IQNs hold ':'; keep the file name portable */
	for (i = 0; target_name[i] && i < sizeof(name) - 1; i++)
		name[i] = (char)(target_name[i] == '/' || target_name[i] == ':'
					 ? '_' : target_name[i]);
	name[i] = '\0';
	n = snprintf(out, len, "%s/%s.lun%" PRIu64 "%s", s->alua_state_dir,
		     name, s->lun, suffix);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

bool lun_settings_is_file(const struct lun_settings *s)
{
	/* "fault" as a backend means a file when a path is given. */
	return strcmp(s->backend, "file") == 0 ||
	       (strcmp(s->backend, "fault") == 0 && s->path[0]);
}

int lun_settings_check(const struct lun_settings *s, const struct backend *be,
		       const char **key, char *err, unsigned errlen)
{
	bool retry = s->rerror == ERR_POLICY_RETRY ||
		     s->werror == ERR_POLICY_RETRY;
	const char *dummy;

	if (!key)
		key = &dummy;
	*key = NULL;
	/* Limits of each number, for settings not built by the parser. */
	for (size_t i = 0; i < ARRAY_SIZE(lun_keys); i++) {
		const struct lun_key *k = &lun_keys[i];
		uint64_t v;

		if (k->type != LK_UINT && k->type != LK_POW2)
			continue;
		v = key_get_uint(k, s);
		if ((v < k->min || v > k->max ||
		     (k->type == LK_POW2 && (v & (v - 1))))) {
			*key = k->name;
			return fail(err, errlen, -EINVAL, "%s", k->hint);
		}
	}
	if (strcmp(s->backend, "file") == 0 && !s->path[0]) {
		*key = "path";
		return fail(err, errlen, -EINVAL, "a file LUN needs a path");
	}
	if (strcmp(s->backend, "rbd") == 0 && !s->path[0]) {
		*key = "path";
		return fail(err, errlen, -EINVAL,
			    "an rbd LUN needs a path: POOL/IMAGE");
	}
	if (strcmp(s->backend, "iscsi") == 0) {
		/* the backend's own parser, so a bad URL or option is
		 * refused with the file's line, before anything connects */
		struct be_iscsi_conf c;
		const char *why = NULL;

		if (be_iscsi_conf_parse(s->path, s->bsopts, "localhost", &c,
					&why)) {
			*key = "path";
			return fail(err, errlen, -EINVAL, "%s", why);
		}
	}
	/* DESIGN.md safety rule: a retried write is only honest when a failed
	 * write means "not written".  Through the page cache a write that
	 * failed may already have been dropped or partly written back, so a
	 * retry could silently lose or reorder data.  Checked against what
	 * the settings ask for and, once it is open, what the store is. */
	if (retry && ((lun_settings_is_file(s) && !s->direct) ||
		      (be && !be->direct))) {
		*key = s->werror == ERR_POLICY_RETRY ? "werror" : "rerror";
		return fail(err, errlen, -EINVAL,
			    "rerror/werror = retry needs direct = true: through the page cache a failed write may already be lost, so retrying it would hide data loss");
	}
	if (s->alua_group && s->alua_group == s->alua_peer_group) {
		*key = "alua_peer_group";
		return fail(err, errlen, -EINVAL,
			    "alua_group and alua_peer_group must differ");
	}
	if (s->alua_lock_pr && !lun_settings_is_blockdev(s) &&
	    strcmp(s->backend, "iscsi") != 0) {
		*key = "alua_lock";
		return fail(err, errlen, -EINVAL,
			    "alua_lock = scsi-pr needs an iscsi store or a SCSI block device (the reservation is taken on the store itself)");
	}
	if (s->alua_group && !lun_settings_is_file(s) &&
	    strcmp(s->backend, "rbd") != 0 && !s->alua_lock_pr) {
		*key = "alua_group";
		return fail(err, errlen, -EINVAL,
			    "alua_group needs a file, block-device or rbd store (the ownership lock lives next to it, or is the image's exclusive lock)");
	}
	if (s->alua_group && !s->alua_state_dir[0] &&
	    lun_settings_is_blockdev(s) && !s->alua_lock_pr) {
		*key = "alua_state_dir";
		return fail(err, errlen, -EINVAL,
			    "alua_group on a block device needs alua_state_dir, a directory both nodes share (the ownership lock, reservations and bitmaps live there; /dev is not shared between machines)");
	}
	if (s->alua_state_dir[0] && s->alua_state_dir[0] != '/') {
		*key = "alua_state_dir";
		return fail(err, errlen, -EINVAL,
			    "alua_state_dir must be an absolute path");
	}
	if (s->backend_opts[0] && strcmp(s->backend_opts, "off") &&
	    strcmp(s->backend_opts, "fault=off") &&
	    !strstr(s->filters, "fault")) {
		*key = "fault";
		return fail(err, errlen, -EINVAL,
			    "a fault spec needs the fault filter in filters");
	}
	if (s->block_size && s->size % s->block_size) {
		*key = "size";
		return fail(err, errlen, -EINVAL,
			    "size %" PRIu64 " is not a multiple of the block size %u",
			    s->size, s->block_size);
	}
	return 0;
}

static bool key_equal(const struct lun_key *k, const struct lun_settings *a,
		      const struct lun_settings *b)
{
	switch (k->type) {
	case LK_ITEM:
		return true;	/* part of bsopts, which its own row compares */
	case LK_SIZE:
		/* 0 asks for "whatever size the store has". */
		return key_get_uint(k, b) == 0 ||
		       key_get_uint(k, a) == key_get_uint(k, b);
	case LK_BACKEND:
	case LK_PATH:
	case LK_SPEC:
	case LK_ASCII:
		return strcmp(key_cfield(k, a), key_cfield(k, b)) == 0;
	default:
		return memcmp(key_cfield(k, a), key_cfield(k, b), k->size) == 0;
	}
}

unsigned lun_settings_diff(const struct lun_settings *a,
			   const struct lun_settings *b,
			   const struct lun_key **first)
{
	unsigned flags = 0;

	if (first)
		*first = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(lun_keys); i++) {
		const struct lun_key *k = &lun_keys[i];

		if (key_equal(k, a, b))
			continue;
		/* every changed key counts, even one with no flags */
		flags |= k->flags | LUN_KEY_CHANGED;
		if (first && !*first &&
		    !(k->flags & (LUN_KEY_RUNTIME | LUN_KEY_PARAM)))
			*first = k;
	}
	return flags;
}

void lun_settings_merge(struct lun_settings *dst, const struct lun_settings *src,
			unsigned flags)
{
	for (size_t i = 0; i < ARRAY_SIZE(lun_keys); i++)
		if (lun_keys[i].flags & flags)
			memcpy(key_field(&lun_keys[i], dst),
			       key_cfield(&lun_keys[i], src), lun_keys[i].size);
}
