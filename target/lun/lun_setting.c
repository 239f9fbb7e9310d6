/* lun_setting.c - one LUN setting as text: lun_setting_apply() (lun.h).
 *
 * targets.conf and `tgtadm --params` share this parser so a key means the
 * same thing, with the same limits, in both places.  Everything is parsed
 * from text (the config loader renders libconfig values as text first). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "iscsi_conf.h"
#include "lun.h"
#include "util.h"

#define LUN_BLOCK_SIZE_MIN 512
#define LUN_BLOCK_SIZE_MAX 65536
#define LUN_RETRY_INTERVAL_MAX_MS 3600000u	/* an hour between probes */

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

/* INQUIRY strings (SPC-4 section 4.3.1): printable ASCII only, and they
 * must fit the field. */
static int set_ascii(char *dst, size_t cap, const char *v, const char *key,
		     char *err, unsigned errlen)
{
	if (strlen(v) >= cap)
		return fail(err, errlen, -EINVAL, "longer than %zu characters",
			    cap - 1);
	for (const char *p = v; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return fail(err, errlen, -EINVAL,
				    "%s must be printable ASCII", key);
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

static int policy_parse(const char *v, enum err_policy *out)
{
	if (strcmp(v, "report") == 0)
		*out = ERR_POLICY_REPORT;
	else if (strcmp(v, "retry") == 0)
		*out = ERR_POLICY_RETRY;
	else
		return -EINVAL;
	return 0;
}

/* Errors the hang engine must never hold (DESIGN.md): they describe the
 * request, not a passing failure of the store, so retrying cannot help. */
static bool errno_never_retried(int e)
{
	return e == EINVAL || e == EROFS || e == EPERM || e == EACCES ||
	       e == ECANCELED || e == EOPNOTSUPP || e == EFBIG;
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

/* ---- gateway LUNs (backend "iscsi") ----
 * Their keys are items of the store's options string (bsopts), which the
 * backend parses (backends/iscsi_conf.h): here they are only placed, so a
 * key exists in this table, target/config/config.c's key list and the backend. */
static const char *const lun_remote_keys[] = {
	"initiator_name", "portals", "remote_timeout", "connect_timeout",
	"reconnect_max", "header_digest", "data_digest", "mutual_user",
	"mutual_password",
};

static bool lun_remote_key(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(lun_remote_keys); i++)
		if (strcmp(key, lun_remote_keys[i]) == 0)
			return true;
	return false;
}

/* ---- RBD LUNs (backend "rbd") ----
 * Their keys are items of bsopts too, under the names tgt's bs_rbd and
 * backends/rbd.c use ("conf=...;id=..."). */
static const struct {
	const char *key;	/* targets.conf / --params name */
	const char *opt;	/* item name in bsopts */
} lun_rbd_keys[] = {
	{ "ceph_conf", "conf" },
	{ "ceph_id", "id" },
	{ "ceph_keyring", "keyring" },
	{ "rbd_osd_op_timeout", "osd_op_timeout" },
	{ "rbd_cache", "cache" },
};

static const char *lun_rbd_opt(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(lun_rbd_keys); i++)
		if (strcmp(key, lun_rbd_keys[i].key) == 0)
			return lun_rbd_keys[i].opt;
	return NULL;
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

int lun_setting_apply(struct lun_settings *s, const char *key,
		      const char *value, char *err, unsigned errlen)
{
	uint64_t u;
	bool b;

	if (!key || !value)
		return fail(err, errlen, -EINVAL, "missing value");

	if (strcmp(key, "lun") == 0) {
		if (parse_u64(value, 1, 255, &u))
			return fail(err, errlen, -EINVAL,
				    "must be 1..255 (LUN 0 is the controller)");
		s->lun = u;
	} else if (strcmp(key, "backend") == 0) {
		/* "fault" names the injection layer every LUN has on top;
		 * as a backend it means "file if there is a path, else
		 * null" (target/scsi/scsi_lun.c). */
		if (strcmp(value, "file") && strcmp(value, "null") &&
		    strcmp(value, "fault") && strcmp(value, "iscsi") &&
		    strcmp(value, "rbd"))
			return fail(err, errlen, -EINVAL,
				    "unknown backend \"%s\" (file, null, iscsi or rbd)",
				    value);
		snprintf(s->backend, sizeof(s->backend), "%s", value);
	} else if (strcmp(key, "path") == 0) {
		if (!*value)
			return fail(err, errlen, -EINVAL, "empty path");
		if (strlen(value) >= sizeof(s->path))
			return fail(err, errlen, -EINVAL, "path too long");
		snprintf(s->path, sizeof(s->path), "%s", value);
	} else if (strcmp(key, "size") == 0) {
		if (util_parse_size(value, &u))
			return fail(err, errlen, -EINVAL,
				    "bad size \"%s\" (bytes, or a number with K, M, G or T)",
				    value);
		s->size = u;
	} else if (strcmp(key, "block_size") == 0 ||
		   strcmp(key, "blocksize") == 0) {
		if (parse_u64(value, LUN_BLOCK_SIZE_MIN, LUN_BLOCK_SIZE_MAX, &u) ||
		    (u & (u - 1)))
			return fail(err, errlen, -EINVAL,
				    "must be a power of two from 512 to 65536");
		s->block_size = (uint32_t)u;
	} else if (strcmp(key, "direct") == 0 ||
		   strcmp(key, "sync") == 0 ||
		   strcmp(key, "readonly") == 0 ||
		   strcmp(key, "removable") == 0 ||
		   strcmp(key, "thin_provisioning") == 0 ||
		   strcmp(key, "write_cache") == 0 ||
		   strcmp(key, "online") == 0) {
		if (parse_bool(value, &b))
			return fail(err, errlen, -EINVAL,
				    "expected a boolean (true/false, yes/no, 1/0)");
		if (strcmp(key, "direct") == 0)
			s->direct = b;
		else if (strcmp(key, "sync") == 0)
			s->sync = b;
		else if (strcmp(key, "readonly") == 0)
			s->readonly = b;
		else if (strcmp(key, "removable") == 0)
			s->removable = b;
		else if (strcmp(key, "thin_provisioning") == 0)
			s->thin_provisioning = b;
		else if (strcmp(key, "write_cache") == 0)
			s->write_cache = b;
		else
			s->online = b;
	} else if (strcmp(key, "sense_format") == 0) {
		/* tgtd spells it 0 (fixed) / 1 (descriptor); SPC-4 4.5. */
		if (strcmp(value, "fixed") == 0 || strcmp(value, "0") == 0)
			s->sense_desc = false;
		else if (strcmp(value, "descriptor") == 0 ||
			 strcmp(value, "1") == 0)
			s->sense_desc = true;
		else
			return fail(err, errlen, -EINVAL,
				    "expected \"fixed\" or \"descriptor\"");
	} else if (strcmp(key, "vendor_id") == 0) {
		return set_ascii(s->vendor_id, sizeof(s->vendor_id), value, key,
				 err, errlen);
	} else if (strcmp(key, "product_id") == 0) {
		return set_ascii(s->product_id, sizeof(s->product_id), value,
				 key, err, errlen);
	} else if (strcmp(key, "product_rev") == 0) {
		return set_ascii(s->product_rev, sizeof(s->product_rev), value,
				 key, err, errlen);
	} else if (strcmp(key, "scsi_id") == 0) {
		return set_ascii(s->scsi_id, sizeof(s->scsi_id), value, key,
				 err, errlen);
	} else if (strcmp(key, "scsi_sn") == 0) {
		return set_ascii(s->scsi_sn, sizeof(s->scsi_sn), value, key,
				 err, errlen);
	} else if (strcmp(key, "rerror") == 0 || strcmp(key, "werror") == 0) {
		enum err_policy p;
		if (policy_parse(value, &p))
			return fail(err, errlen, -EINVAL,
				    "expected \"report\" or \"retry\"");
		if (key[0] == 'r')
			s->rerror = p;
		else
			s->werror = p;
	} else if (strcmp(key, "retry_interval") == 0) {
		if (parse_u64(value, 1, LUN_RETRY_INTERVAL_MAX_MS, &u))
			return fail(err, errlen, -EINVAL,
				    "milliseconds, 1 to %u", LUN_RETRY_INTERVAL_MAX_MS);
		s->retry_interval_ms = (uint32_t)u;
	} else if (strcmp(key, "retry_timeout") == 0) {
		if (parse_u64(value, 0, UINT32_MAX, &u))
			return fail(err, errlen, -EINVAL,
				    "milliseconds, 0 (never) to %u", UINT32_MAX);
		s->retry_timeout_ms = (uint32_t)u;
	} else if (strcmp(key, "retry_errors") == 0) {
		return retry_errors_parse(value, s->retry_errors, err, errlen);
	} else if (strcmp(key, "alua_state") == 0) {
		if (strcmp(value, "active") && strcmp(value, "standby"))
			return fail(err, errlen, -EINVAL, "active or standby");
		s->alua_standby = strcmp(value, "standby") == 0;
	} else if (strcmp(key, "alua_group") == 0 ||
		   strcmp(key, "alua_peer_group") == 0) {
		if (parse_u64(value, 0, UINT16_MAX, &u))
			return fail(err, errlen, -EINVAL,
				    "a target port group number, 1 to 65535 (0 = none)");
		*(key[5] == 'g' ? &s->alua_group : &s->alua_peer_group) =
			(uint16_t)u;
	} else if (strcmp(key, "fault") == 0) {
		/* Error injection: the spec goes to the fault backend, which
		 * wraps the LUN's store (backends/fault.c parses it). */
		if (strlen(value) >= sizeof(s->backend_opts))
			return fail(err, errlen, -EINVAL, "fault spec too long");
		snprintf(s->backend_opts, sizeof(s->backend_opts), "%s", value);
	} else if (strcmp(key, "bsopts") == 0) {
		if (strlen(value) >= sizeof(s->bsopts))
			return fail(err, errlen, -EINVAL, "store options too long");
		snprintf(s->bsopts, sizeof(s->bsopts), "%s", value);
	} else if (lun_rbd_opt(key)) {
		return bsopts_set(s->bsopts, sizeof(s->bsopts), lun_rbd_opt(key),
				  value, err, errlen);
	} else if (lun_remote_key(key)) {
		return bsopts_set(s->bsopts, sizeof(s->bsopts), key, value, err,
				  errlen);
	} else {
		return fail(err, errlen, -ENOENT, "unknown key");
	}
	return 0;
}

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

bool lun_settings_is_file(const struct lun_settings *s)
{
	/* "fault" as a backend means a file when a path is given
	 * (target/scsi/scsi_lun.c). */
	return strcmp(s->backend, "file") == 0 ||
	       (strcmp(s->backend, "fault") == 0 && s->path[0]);
}

int lun_settings_validate(const struct lun_settings *s, char *err,
			  unsigned errlen)
{
	bool retry = s->rerror == ERR_POLICY_RETRY ||
		     s->werror == ERR_POLICY_RETRY;

	if (strcmp(s->backend, "file") == 0 && !s->path[0])
		return fail(err, errlen, -EINVAL,
			    "a file LUN needs a path");
	if (strcmp(s->backend, "rbd") == 0 && !s->path[0])
		return fail(err, errlen, -EINVAL,
			    "an rbd LUN needs a path: POOL/IMAGE");
	if (strcmp(s->backend, "iscsi") == 0) {
		/* the backend's own parser, so a bad URL or option is
		 * refused with the file's line, before anything connects */
		struct be_iscsi_conf c;
		const char *why = NULL;

		if (be_iscsi_conf_parse(s->path, s->bsopts, "localhost", &c,
					&why))
			return fail(err, errlen, -EINVAL, "%s", why);
	}
	/* DESIGN.md safety rule: a retried write is only honest when a failed
	 * write means "not written".  Through the page cache a write that
	 * failed may already have been dropped or partly written back, so a
	 * retry could silently lose or reorder data. */
	if (retry && lun_settings_is_file(s) && !s->direct)
		return fail(err, errlen, -EINVAL,
			    "rerror/werror = retry needs direct = true: through the page cache a failed write may already be lost, so retrying it would hide data loss");
	if (s->alua_group && s->alua_group == s->alua_peer_group)
		return fail(err, errlen, -EINVAL,
			    "alua_group and alua_peer_group must differ");
	if (s->alua_group && !lun_settings_is_file(s))
		return fail(err, errlen, -EINVAL,
			    "alua_group needs a file or block-device store (the ownership lock lives next to it)");
	if (s->block_size && s->size % s->block_size)
		return fail(err, errlen, -EINVAL,
			    "size %" PRIu64 " is not a multiple of the block size %u",
			    s->size, s->block_size);
	return 0;
}
