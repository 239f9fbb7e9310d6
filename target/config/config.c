/* config.c - targets.conf (libconfig syntax), config.h.
 *
 * Two phases so a bad file never leaves half a configuration behind:
 * config_load() parses and checks every key of the whole file into a plain
 * description (struct cfg_priv) and reports the first problem as
 * "FILE:LINE: key: reason"; config_apply() then creates the targets, ACLs
 * and LUNs and, if any of that fails (a backend cannot open its file),
 * deletes again whatever it created, including backing files it made. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "account.h"
#include "cbt_bitmap.h"
#include "config_internal.h"
#include "iscsi_param.h"
#include "target.h"
#include "util.h"

#define ISCSI_DEFAULT_PORT 3260		/* IANA well-known iSCSI port */
#define CFG_TID_MAX 65535

static const char *cfg_file_of(const struct cfg_ctx *c,
			       const config_setting_t *s)
{
	const char *f = s ? config_setting_source_file(s) : NULL;
	return f ? f : c->file;
}

void cfg_where(const struct cfg_ctx *c, const config_setting_t *s,
	       char *buf, size_t len)
{
	snprintf(buf, len, "%s:%u", cfg_file_of(c, s),
		 s ? config_setting_source_line(s) : 0);
}

int cfg_fail(struct cfg_ctx *c, const config_setting_t *s, const char *key,
	     const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s:%u: %s: %s", cfg_file_of(c, s),
		 s ? config_setting_source_line(s) : 0, key, reason);
	return -EINVAL;
}

int cfg_fail_at(struct cfg_ctx *c, const char *where, const char *key,
		const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s: %s: %s", where, key, reason);
	return -EINVAL;
}

const char *cfg_type_name(int type)
{
	switch (type) {
	case CONFIG_TYPE_GROUP: return "a group { }";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a floating point number";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array [ ]";
	case CONFIG_TYPE_LIST: return "a list ( )";
	}
	return "nothing";
}

/* ---- sizes and portals ---- */


int config_parse_portal(const char *s, struct sockaddr_storage *ss,
			socklen_t *len)
{
	char buf[128], *host = buf, *port = NULL, *end;
	unsigned long pnum = ISCSI_DEFAULT_PORT;

	if (!s || !*s || strlen(s) >= sizeof(buf))
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", s);
	memset(ss, 0, sizeof(*ss));

	if (buf[0] == '[') {
		/* "[v6]" or "[v6]:PORT" (RFC 3986 style, as in RFC 7143
		 * TargetAddress). */
		char *close = strchr(buf, ']');
		if (!close)
			return -EINVAL;
		*close = '\0';
		host = buf + 1;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1])
			return -EINVAL;
	} else {
		char *colon = strchr(buf, ':');
		/* More than one ':' without brackets: a bare IPv6 address. */
		if (colon && !strchr(colon + 1, ':')) {
			*colon = '\0';
			port = colon + 1;
		}
	}
	if (port) {
		if (!isdigit((unsigned char)*port))
			return -EINVAL;
		errno = 0;
		pnum = strtoul(port, &end, 10);
		if (errno || *end || pnum == 0 || pnum > 65535)
			return -EINVAL;
	}

	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (buf[0] != '[' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)pnum);
		*len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)pnum);
		*len = sizeof(*sin6);
	} else {
		return -EINVAL;
	}
	return 0;
}

static bool portal_is_wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr ==
		       htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(
		&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* "ADDR:PORT" with brackets around IPv6, as SendTargets' TargetAddress
 * wants it (RFC 7143 section 13.9). */
static void portal_format(const struct sockaddr_storage *ss, char *buf,
			  size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
		snprintf(buf, len, "%s:%u", a, ntohs(sin->sin_port));
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
		snprintf(buf, len, "[%s]:%u", a, ntohs(sin6->sin6_port));
	}
}

/* One portals[] entry: "LISTEN" or "LISTEN=ADVERTISE". */
static int cfg_portal(struct cfg_ctx *c, const config_setting_t *e,
		      struct config *cfg)
{
	struct portal_config *p;
	const char *text;
	char listen[160], *eq;

	if (config_setting_type(e) != CONFIG_TYPE_STRING)
		return cfg_fail(c, e, "portals",
				"each portal is a string \"ADDR:PORT\", not %s",
				cfg_type_name(config_setting_type(e)));
	if (cfg->nr_portals >= CONFIG_MAX_PORTALS)
		return cfg_fail(c, e, "portals", "more than %d portals",
				CONFIG_MAX_PORTALS);
	text = config_setting_get_string(e);
	if (strlen(text) >= sizeof(p->text))
		return cfg_fail(c, e, "portals", "portal text too long");
	p = &cfg->portals[cfg->nr_portals];
	memset(p, 0, sizeof(*p));
	snprintf(p->text, sizeof(p->text), "%s", text);
	snprintf(listen, sizeof(listen), "%s", text);
	eq = strchr(listen, '=');
	if (eq)
		*eq++ = '\0';
	if (config_parse_portal(listen, &p->listen, &p->listen_len))
		return cfg_fail(c, e, "portals",
				"\"%s\" is not ADDR:PORT or [IPv6]:PORT", listen);
	if (eq) {
		struct sockaddr_storage adv;
		socklen_t alen;
		if (config_parse_portal(eq, &adv, &alen))
			return cfg_fail(c, e, "portals",
					"advertised address \"%s\" is not ADDR:PORT or [IPv6]:PORT",
					eq);
		if (portal_is_wildcard(&adv))
			return cfg_fail(c, e, "portals",
					"advertised address \"%s\" must be one initiators can reach, not a wildcard",
					eq);
		portal_format(&adv, p->advertise, sizeof(p->advertise));
	}
	for (int i = 0; i < cfg->nr_portals; i++)
		if (sockaddr_same(&cfg->portals[i].listen, &p->listen))
			return cfg_fail(c, e, "portals",
					"\"%s\" is listed twice", listen);
	cfg->nr_portals++;
	return 0;
}

static int cfg_uint_member(struct cfg_ctx *c, const config_setting_t *v,
			   long long max, uint32_t *out);

/* limits = { max_sessions = 1024; max_data_buffer = "1G"; ... };
 * (README "Limits and slow peers").  Counts and sizes: 0 = unlimited;
 * timeouts in seconds, 0 = none. */
static int cfg_limits(struct cfg_ctx *c, const config_setting_t *s,
		      struct config *cfg)
{
	static const struct {
		const char *name;
		int kind;		/* 0 count, 1 bytes, 2 seconds */
		size_t off;
	} keys[] = {
#define LK(n, k) { #n, k, offsetof(struct iscsi_limits, n) }
		LK(max_sessions, 0),
		LK(max_sessions_per_target, 0),
		LK(max_connections, 0),
		LK(max_connections_per_portal, 0),
		LK(cmdsn_depth, 0),
		LK(max_data_buffer, 1),
		LK(max_data_buffer_per_connection, 1),
		{ "login_timeout", 2,
		  offsetof(struct iscsi_limits, login_timeout_ms) },
		{ "idle_timeout", 2,
		  offsetof(struct iscsi_limits, idle_timeout_ms) },
#undef LK
	};
	struct iscsi_limits *l = &cfg->limits;

	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return cfg_fail(c, s, "limits",
				"expected a group { max_sessions = 1024; ... }, not %s",
				cfg_type_name(config_setting_type(s)));
	for (int i = 0; i < config_setting_length(s); i++) {
		config_setting_t *v = config_setting_get_elem(s, (unsigned)i);
		const char *key = config_setting_name(v);
		size_t k;

		for (k = 0; k < ARRAY_SIZE(keys); k++)
			if (strcmp(key, keys[k].name) == 0)
				break;
		if (k == ARRAY_SIZE(keys))
			return cfg_fail(c, v, key, "unknown key in limits");
		void *field = (char *)l + keys[k].off;
		int type = config_setting_type(v);

		if (keys[k].kind == 1) {
			uint64_t bytes;

			if (type == CONFIG_TYPE_STRING) {
				if (util_parse_size(config_setting_get_string(v),
						    &bytes))
					return cfg_fail(c, v, key,
							"not a size (\"512M\", \"1G\", bytes)");
			} else if (type == CONFIG_TYPE_INT ||
				   type == CONFIG_TYPE_INT64) {
				long long x = config_setting_get_int64(v);

				if (x < 0)
					return cfg_fail(c, v, key,
							"must not be negative");
				bytes = (uint64_t)x;
			} else {
				return cfg_fail(c, v, key,
						"expected a size, not %s",
						cfg_type_name(type));
			}
			*(uint64_t *)field = bytes;
			continue;
		}
		uint32_t x;
		int ret = cfg_uint_member(c, v, keys[k].kind == 2 ? 86400 :
					  1000000, &x);

		if (ret)
			return ret;
		if (keys[k].kind == 2)
			x *= 1000;
		if (strcmp(key, "cmdsn_depth") == 0 && (x < 1 || x > 65536))
			return cfg_fail(c, v, key,
					"%u is out of range 1..65536", x);
		*(uint32_t *)field = x;
	}
	return 0;
}

static int cfg_portals(struct cfg_ctx *c, const config_setting_t *s,
		       struct config *cfg)
{
	int type = config_setting_type(s);

	if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST)
		return cfg_fail(c, s, "portals",
				"expected an array of strings [ \"ADDR:PORT\" ], not %s",
				cfg_type_name(type));
	if (config_setting_length(s) == 0)
		return cfg_fail(c, s, "portals", "no portal given");
	for (int i = 0; i < config_setting_length(s); i++) {
		int ret = cfg_portal(c, config_setting_get_elem(s, (unsigned)i),
				     cfg);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- LUNs ---- */

enum {
	T_STR = 1 << 0,
	T_INT = 1 << 1,
	T_BOOL = 1 << 2,
	T_STR_ARRAY = 1 << 3,
};

/* An rbd LUN's path is POOL/IMAGE, not a file relative to the config. */
static bool lun_cfg_path_is_rbd(const config_setting_t *g)
{
	const char *b = NULL;

	return config_setting_lookup_string(g, "backend", &b) == CONFIG_TRUE &&
	       strcmp(b, "rbd") == 0;
}

/* The libconfig types a LUN key accepts, by how the key table spells
 * its value. */
static unsigned cfg_lun_key_types(const struct lun_key *k)
{
	switch (lun_key_kind(k)) {
	case LUN_KIND_NUMBER: return T_INT;
	case LUN_KIND_SIZE: return T_STR | T_INT;
	case LUN_KIND_BOOL: return T_BOOL;
	case LUN_KIND_LIST: return T_STR_ARRAY | T_STR;
	case LUN_KIND_STRING: return T_STR;
	}
	return 0;
}

static const char *cfg_types_text(unsigned types)
{
	switch (types) {
	case T_STR: return "a string";
	case T_INT: return "an integer";
	case T_BOOL: return "a boolean (true or false)";
	case T_STR | T_INT: return "an integer or a string such as \"1G\"";
	case T_STR_ARRAY | T_STR: return "an array of errno names [ \"EIO\", ... ]";
	}
	return "another type";
}

/* Render a scalar (or an array of strings) as the text lun_setting_apply
 * takes; -EINVAL if its type is not one of types. */
static int cfg_value_text(const config_setting_t *v, unsigned types,
			  char *buf, size_t len)
{
	switch (config_setting_type(v)) {
	case CONFIG_TYPE_STRING:
		if (!(types & T_STR))
			return -EINVAL;
		if (strlen(config_setting_get_string(v)) >= len)
			return -E2BIG;
		snprintf(buf, len, "%s", config_setting_get_string(v));
		return 0;
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		if (!(types & T_INT))
			return -EINVAL;
		if (config_setting_get_int64(v) < 0)
			return -ERANGE;
		snprintf(buf, len, "%lld", config_setting_get_int64(v));
		return 0;
	case CONFIG_TYPE_BOOL:
		if (!(types & T_BOOL))
			return -EINVAL;
		snprintf(buf, len, "%s",
			 config_setting_get_bool(v) ? "true" : "false");
		return 0;
	case CONFIG_TYPE_ARRAY:
	case CONFIG_TYPE_LIST: {
		size_t off = 0;
		if (!(types & T_STR_ARRAY))
			return -EINVAL;
		buf[0] = '\0';
		for (int i = 0; i < config_setting_length(v); i++) {
			const config_setting_t *e =
				config_setting_get_elem(v, (unsigned)i);
			if (config_setting_type(e) != CONFIG_TYPE_STRING)
				return -EINVAL;
			int n = snprintf(buf + off, len - off, "%s%s",
					 i ? "," : "",
					 config_setting_get_string(e));
			if (n < 0 || (size_t)n >= len - off)
				return -E2BIG;
			off += (size_t)n;
		}
		if (config_setting_length(v) == 0)
			snprintf(buf, len, "none");
		return 0;
	}
	}
	return -EINVAL;
}

/* bitmaps = ( { name = "daily"; granularity = 65536; persistent = true;
 * enabled = true; }, ... ); in a LUN (issue 10). */
static int cfg_lun_bitmaps(struct cfg_ctx *c, const config_setting_t *list,
			   struct cfg_lun *l)
{
	if (config_setting_type(list) != CONFIG_TYPE_LIST &&
	    config_setting_type(list) != CONFIG_TYPE_ARRAY)
		return cfg_fail(c, list, "bitmaps",
				"expected a list ( { name = ...; }, ... ), not %s",
				cfg_type_name(config_setting_type(list)));
	for (int i = 0; i < config_setting_length(list); i++) {
		const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
		struct cfg_bitmap *b;
		const char *name = NULL;
		long long gran = CBT_GRANULARITY_DEFAULT;
		int persistent = 0, enabled = 1;

		if (config_setting_type(g) != CONFIG_TYPE_GROUP)
			return cfg_fail(c, g, "bitmaps",
					"each bitmap is a group { name = ...; }");
		if (l->nr_bitmaps >= CFG_MAX_BITMAPS)
			return cfg_fail(c, g, "bitmaps", "at most %d bitmaps per LUN",
					CFG_MAX_BITMAPS);
		for (int k = 0; k < config_setting_length(g); k++) {
			const config_setting_t *v = config_setting_get_elem(g, (unsigned)k);
			const char *key = config_setting_name(v);

			if (!strcmp(key, "name") &&
			    config_setting_type(v) == CONFIG_TYPE_STRING)
				name = config_setting_get_string(v);
			else if (!strcmp(key, "granularity") &&
				 (config_setting_type(v) == CONFIG_TYPE_INT ||
				  config_setting_type(v) == CONFIG_TYPE_INT64))
				gran = config_setting_get_int64(v);
			else if (!strcmp(key, "persistent") &&
				 config_setting_type(v) == CONFIG_TYPE_BOOL)
				persistent = config_setting_get_bool(v);
			else if (!strcmp(key, "enabled") &&
				 config_setting_type(v) == CONFIG_TYPE_BOOL)
				enabled = config_setting_get_bool(v);
			else
				return cfg_fail(c, v, key, "unknown key or wrong type "
						"(name: string, granularity: integer, "
						"persistent/enabled: boolean)");
		}
		if (!name || !*name || strlen(name) > CBT_NAME_MAX)
			return cfg_fail(c, g, "name", "every bitmap needs a name of 1..%d characters",
					CBT_NAME_MAX);
		if (!cbt_granularity_valid((uint64_t)gran))
			return cfg_fail(c, g, "granularity",
					"%lld is not a power of two from 4096 to 67108864",
					gran);
		for (int k = 0; k < l->nr_bitmaps; k++)
			if (!strcmp(l->bitmaps[k].name, name))
				return cfg_fail(c, g, "name", "bitmap %s is declared twice", name);
		b = &l->bitmaps[l->nr_bitmaps++];
		snprintf(b->name, sizeof(b->name), "%s", name);
		b->granularity = (uint32_t)gran;
		b->persistent = persistent;
		b->enabled = enabled;
	}
	return 0;
}

/* LUN keys that may also stand at the top level of the file, as the
 * default for every LUN of that backend that does not set them itself:
 * one Ceph cluster connection for all RBD LUNs, one initiator name (and
 * SAN timeouts and digests) for all gateway LUNs. */
static const struct {
	const char *key, *backend;
} cfg_lun_global_keys[] = {
	{ "ceph_conf", "rbd" },
	{ "ceph_id", "rbd" },
	{ "ceph_keyring", "rbd" },
	{ "rbd_osd_op_timeout", "rbd" },
	{ "rbd_cache", "rbd" },
	{ "initiator_name", "iscsi" },
	{ "remote_timeout", "iscsi" },
	{ "connect_timeout", "iscsi" },
	{ "reconnect_max", "iscsi" },
	{ "header_digest", "iscsi" },
	{ "data_digest", "iscsi" },
};

static bool cfg_is_lun_global(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(cfg_lun_global_keys); i++)
		if (strcmp(cfg_lun_global_keys[i].key, key) == 0)
			return true;
	return false;
}

/* Apply the value of v (a LUN key, in a LUN or at the top level) to s. */
static int cfg_lun_key_apply(struct cfg_ctx *c, const config_setting_t *v,
			     const char *key, struct lun_settings *s)
{
	const struct lun_key *k = lun_key_find(key);
	char reason[512], text[1024];
	unsigned types;
	int ret;

	/* targets.conf spells a key one way (no tgtadm alias) */
	if (!k || strcmp(lun_key_name(k), key) != 0)
		return cfg_fail(c, v, key, "unknown key");
	types = cfg_lun_key_types(k);
	ret = cfg_value_text(v, types, text, sizeof(text));
	if (ret == -E2BIG)
		return cfg_fail(c, v, key, "value too long");
	if (ret == -ERANGE)
		return cfg_fail(c, v, key, "must not be negative");
	if (ret)
		return cfg_fail(c, v, key, "expected %s, not %s",
				cfg_types_text(types),
				cfg_type_name(config_setting_type(v)));
	ret = lun_setting_apply(s, key, text, reason, sizeof(reason));
	if (ret)
		return cfg_fail(c, v, key, "%s", reason);
	return 0;
}

/* A top-level LUN default: checked where it stands, even if no LUN
 * takes it. */
static int cfg_lun_global(struct cfg_ctx *c, const config_setting_t *v)
{
	struct lun_settings s;

	lun_settings_default(&s, 1);
	for (size_t i = 0; i < ARRAY_SIZE(cfg_lun_global_keys); i++)
		if (strcmp(cfg_lun_global_keys[i].key,
			   config_setting_name(v)) == 0)
			snprintf(s.backend, sizeof(s.backend), "%s",
				 cfg_lun_global_keys[i].backend);
	return cfg_lun_key_apply(c, v, config_setting_name(v), &s);
}

/* The top-level defaults a LUN g of its backend does not set itself. */
static int cfg_lun_globals(struct cfg_ctx *c, const config_setting_t *g,
			   struct lun_settings *s)
{
	for (size_t i = 0; c->root && i < ARRAY_SIZE(cfg_lun_global_keys);
	     i++) {
		const char *key = cfg_lun_global_keys[i].key;
		const config_setting_t *v =
			config_setting_get_member(c->root, key);
		int ret;

		if (!v || config_setting_get_member(g, key) ||
		    strcmp(s->backend, cfg_lun_global_keys[i].backend) != 0)
			continue;
		ret = cfg_lun_key_apply(c, v, key, s);
		if (ret)
			return ret;
	}
	return 0;
}

static int cfg_lun(struct cfg_ctx *c, const config_setting_t *g,
		   struct cfg_target *t)
{
	const config_setting_t *ln = config_setting_get_member(g, "lun");
	struct cfg_lun *l;
	char reason[512];
	long long nr;
	int ret;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP)
		return cfg_fail(c, g, "luns",
				"each LUN is a group { lun = N; ... }, not %s",
				cfg_type_name(config_setting_type(g)));
	if (!ln)
		return cfg_fail(c, g, "lun", "missing (every LUN needs a number)");
	if (config_setting_type(ln) != CONFIG_TYPE_INT &&
	    config_setting_type(ln) != CONFIG_TYPE_INT64)
		return cfg_fail(c, ln, "lun", "expected an integer, not %s",
				cfg_type_name(config_setting_type(ln)));
	nr = config_setting_get_int64(ln);
	if (nr < 1 || nr >= TGT_MAX_LUNS)
		return cfg_fail(c, ln, "lun",
				"%lld is out of range 1..%d (LUN 0 is the controller)",
				nr, TGT_MAX_LUNS - 1);
	for (int i = 0; i < t->nr_luns; i++)
		if (t->luns[i].s.lun == (uint64_t)nr)
			return cfg_fail(c, ln, "lun",
					"LUN %lld is defined twice in target %s",
					nr, t->name);

	t->luns = realloc(t->luns, sizeof(*t->luns) * (size_t)(t->nr_luns + 1));
	if (!t->luns)
		return cfg_fail(c, g, "luns", "out of memory");
	l = &t->luns[t->nr_luns];
	memset(l, 0, sizeof(*l));
	lun_settings_default(&l->s, (uint64_t)nr);
	cfg_where(c, g, l->where, sizeof(l->where));

	for (int i = 0; i < config_setting_length(g); i++) {
		const config_setting_t *v = config_setting_get_elem(g, (unsigned)i);
		const char *key = config_setting_name(v);

		if (strcmp(key, "lun") == 0)
			continue;
		if (strcmp(key, "bitmaps") == 0) {
			ret = cfg_lun_bitmaps(c, v, l);
			if (ret)
				return ret;
			continue;
		}
		ret = cfg_lun_key_apply(c, v, key, &l->s);
		if (ret)
			return ret;
		if (strcmp(key, "path") == 0 && l->s.path[0] != '/' &&
		    !strstr(l->s.path, "://") && !lun_cfg_path_is_rbd(g)) {
			/* Relative to the file, so a config and its images
			 * can move together. */
			char abs[PATH_MAX];
			int n = snprintf(abs, sizeof(abs), "%s/%s", c->dir,
					 l->s.path);
			if (n < 0 || (size_t)n >= sizeof(abs))
				return cfg_fail(c, v, key, "path too long");
			memcpy(l->s.path, abs, (size_t)n + 1);
		}
	}

	ret = cfg_lun_globals(c, g, &l->s);
	if (ret)
		return ret;
	/* Point whole-LUN problems at the line that causes them. */
	if (strcmp(l->s.backend, "file") == 0 && !l->s.path[0])
		return cfg_fail(c, g, "path", "missing (a file LUN needs one)");
	if (strcmp(l->s.backend, "rbd") == 0 && !l->s.path[0])
		return cfg_fail(c, g, "path", "missing (an rbd LUN needs POOL/IMAGE)");
	const char *blame;
	if (lun_settings_check(&l->s, NULL, &blame, reason, sizeof(reason))) {
		const config_setting_t *at = config_setting_get_member(g, blame);
		return cfg_fail(c, at ? at : g, blame, "%s", reason);
	}

	if (lun_settings_is_file(&l->s)) {
		struct stat st;
		const config_setting_t *ps = config_setting_get_member(g, "path");
		if (stat(l->s.path, &st) == 0) {
			if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
				return cfg_fail(c, ps, "path",
						"%s is neither a regular file nor a block device",
						l->s.path);
		} else if (errno != ENOENT && errno != ENOTDIR) {
			return cfg_fail(c, ps, "path", "%s: %s", l->s.path,
					strerror(errno));
		} else if (l->s.size == 0) {
			return cfg_fail(c, ps, "path",
					"%s does not exist and no size is given to create it",
					l->s.path);
		} else {
			/* The file (and missing directories above it) will be
			 * created at apply time; the nearest existing ancestor
			 * must be a directory. */
			char dir[PATH_MAX], tmp[PATH_MAX];
			bool found;
			snprintf(dir, sizeof(dir), "%s", l->s.path);
			do {
				snprintf(tmp, sizeof(tmp), "%s", dir);
				snprintf(dir, sizeof(dir), "%s", dirname(tmp));
				found = stat(dir, &st) == 0;
			} while (!found && strcmp(dir, "/") != 0);
			if (!found || !S_ISDIR(st.st_mode))
				return cfg_fail(c, ps, "path",
						"cannot create %s: %s is not a directory",
						l->s.path, dir);
		}
	}
	t->nr_luns++;
	return 0;
}

/* ---- targets ---- */

static int cfg_uint_member(struct cfg_ctx *c, const config_setting_t *v,
			   long long max, uint32_t *out)
{
	const char *key = config_setting_name(v);
	long long x;

	if (config_setting_type(v) != CONFIG_TYPE_INT &&
	    config_setting_type(v) != CONFIG_TYPE_INT64)
		return cfg_fail(c, v, key, "expected an integer, not %s",
				cfg_type_name(config_setting_type(v)));
	x = config_setting_get_int64(v);
	if (x < 0 || x > max)
		return cfg_fail(c, v, key, "%lld is out of range 0..%lld", x,
				max);
	*out = (uint32_t)x;
	return 0;
}

static int cfg_initiators(struct cfg_ctx *c, const config_setting_t *s,
			  struct cfg_target *t)
{
	int type = config_setting_type(s);

	if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST)
		return cfg_fail(c, s, "initiators",
				"expected an array of strings [ \"ALL\", \"10.0.0.0/8\", \"iqn...\" ], not %s",
				cfg_type_name(type));
	for (int i = 0; i < config_setting_length(s); i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		struct acl_rule r;
		const char *text;
		bool is_name;

		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return cfg_fail(c, e, "initiators",
					"each entry is a string, not %s",
					cfg_type_name(config_setting_type(e)));
		text = config_setting_get_string(e);
		/* RFC 7143 section 4.2.7.1: iSCSI names start with their type
		 * ("iqn.", "eui.", "naa."); anything else is an address. */
		is_name = strncasecmp(text, "iqn.", 4) == 0 ||
			  strncasecmp(text, "eui.", 4) == 0 ||
			  strncasecmp(text, "naa.", 4) == 0;
		if (tgt_acl_parse(text, is_name, &r))
			return cfg_fail(c, e, "initiators",
					is_name ? "\"%s\" is not a valid initiator name"
						: "\"%s\" is not ALL, an IPv4/IPv6 address, a CIDR or an iqn./eui./naa. name",
					text);
		t->acls = realloc(t->acls, sizeof(*t->acls) * (size_t)(t->nr_acls + 1));
		if (!t->acls)
			return cfg_fail(c, e, "initiators", "out of memory");
		snprintf(t->acls[t->nr_acls].text, TGT_NAME_MAX, "%s", text);
		t->acls[t->nr_acls].is_name = is_name;
		t->nr_acls++;
	}
	return 0;
}

static int cfg_params(struct cfg_ctx *c, const config_setting_t *s,
		      struct cfg_target *t)
{
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return cfg_fail(c, s, "params",
				"expected a group { Key = value; ... }, not %s",
				cfg_type_name(config_setting_type(s)));
	for (int i = 0; i < config_setting_length(s); i++) {
		const config_setting_t *v = config_setting_get_elem(s, (unsigned)i);
		const char *key = config_setting_name(v);
		char text[256];
		int ret;

		/* Booleans are iSCSI's "Yes"/"No" (RFC 7143 section 6.2). */
		if (config_setting_type(v) == CONFIG_TYPE_BOOL)
			snprintf(text, sizeof(text), "%s",
				 config_setting_get_bool(v) ? "Yes" : "No");
		else if (cfg_value_text(v, T_STR | T_INT, text, sizeof(text)))
			return cfg_fail(c, v, key,
					"expected a number or a string, not %s",
					cfg_type_name(config_setting_type(v)));
		ret = iscsi_param_override_check(key, text, NULL);
		if (ret == -ENOENT)
			return cfg_fail(c, v, key,
					"unknown iSCSI key (RFC 7143 section 13 operational keys only)");
		if (ret)
			return cfg_fail(c, v, key, "bad value \"%s\"", text);
		t->params = realloc(t->params,
				    sizeof(*t->params) * (size_t)(t->nr_params + 1));
		if (!t->params)
			return cfg_fail(c, v, key, "out of memory");
		snprintf(t->params[t->nr_params].key, 64, "%s", key);
		snprintf(t->params[t->nr_params].value, 256, "%s", text);
		t->nr_params++;
	}
	return 0;
}

static int cfg_target(struct cfg_ctx *c, const config_setting_t *g,
		      struct cfg_priv *pv)
{
	const config_setting_t *name = NULL, *luns = NULL;
	struct cfg_target *t;
	int ret;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP)
		return cfg_fail(c, g, "targets",
				"each target is a group { name = \"iqn...\"; ... }, not %s",
				cfg_type_name(config_setting_type(g)));
	pv->targets = realloc(pv->targets,
			      sizeof(*pv->targets) * (size_t)(pv->nr_targets + 1));
	if (!pv->targets)
		return cfg_fail(c, g, "targets", "out of memory");
	t = &pv->targets[pv->nr_targets++];
	memset(t, 0, sizeof(*t));
	cfg_where(c, g, t->where, sizeof(t->where));

	name = config_setting_get_member(g, "name");
	if (!name)
		return cfg_fail(c, g, "name", "missing (every target needs an IQN)");
	if (config_setting_type(name) != CONFIG_TYPE_STRING)
		return cfg_fail(c, name, "name", "expected a string, not %s",
				cfg_type_name(config_setting_type(name)));
	if (!*config_setting_get_string(name) ||
	    strlen(config_setting_get_string(name)) >= TGT_NAME_MAX ||
	    strspn(config_setting_get_string(name),
		   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:") !=
		    strlen(config_setting_get_string(name)))
		return cfg_fail(c, name, "name",
				"\"%s\" is not a valid iSCSI name (letters, digits, '.', '-', ':')",
				config_setting_get_string(name));
	snprintf(t->name, sizeof(t->name), "%s", config_setting_get_string(name));
	for (int i = 0; i < pv->nr_targets - 1; i++)
		if (strcasecmp(pv->targets[i].name, t->name) == 0)
			return cfg_fail(c, name, "name",
					"target %s is defined twice", t->name);

	for (int i = 0; i < config_setting_length(g); i++) {
		const config_setting_t *v = config_setting_get_elem(g, (unsigned)i);
		const char *key = config_setting_name(v);
		uint32_t x;

		ret = 0;
		if (strcmp(key, "name") == 0) {
			continue;
		} else if (strcmp(key, "tid") == 0) {
			ret = cfg_uint_member(c, v, CFG_TID_MAX, &x);
			if (!ret && x == 0)
				ret = cfg_fail(c, v, key, "tid must be 1 or more");
			if (!ret)
				t->tid = (int)x;
			for (int k = 0; !ret && k < pv->nr_targets - 1; k++)
				if (pv->targets[k].tid == t->tid)
					ret = cfg_fail(c, v, key,
						       "tid %d is already used by %s",
						       t->tid, pv->targets[k].name);
		} else if (strcmp(key, "initiators") == 0) {
			ret = cfg_initiators(c, v, t);
		} else if (strcmp(key, "nop_interval") == 0) {
			ret = cfg_uint_member(c, v, 3600, &t->nop_interval);
			t->has_nop_interval = true;
		} else if (strcmp(key, "nop_count") == 0) {
			ret = cfg_uint_member(c, v, 1000, &t->nop_count);
			t->has_nop_count = true;
		} else if (strcmp(key, "params") == 0) {
			ret = cfg_params(c, v, t);
		} else if (strcmp(key, "incoming_users") == 0 ||
			   strcmp(key, "outgoing_user") == 0) {
			ret = cfg_auth_member(c, v, &t->auth);
		} else if (strcmp(key, "luns") == 0) {
			luns = v;
		} else {
			ret = cfg_fail(c, v, key, "unknown key");
		}
		if (ret)
			return ret;
	}

	if (luns) {
		int type = config_setting_type(luns);
		if (type != CONFIG_TYPE_LIST && type != CONFIG_TYPE_GROUP)
			return cfg_fail(c, luns, "luns",
					"expected a list ( { lun = 1; ... } ), not %s",
					cfg_type_name(type));
		if (type == CONFIG_TYPE_GROUP)	/* a single LUN without ( ) */
			return cfg_lun(c, luns, t);
		for (int i = 0; i < config_setting_length(luns); i++) {
			ret = cfg_lun(c, config_setting_get_elem(luns, (unsigned)i), t);
			if (ret)
				return ret;
		}
	}
	return 0;
}

/* Targets without a tid get 1, 2, ... in file order, skipping tids that
 * other targets ask for explicitly. */
static void cfg_assign_tids(struct cfg_priv *pv)
{
	int next = 1;

	for (int i = 0; i < pv->nr_targets; i++) {
		if (pv->targets[i].tid)
			continue;
		for (;;) {
			bool used = false;
			for (int k = 0; k < pv->nr_targets; k++)
				if (pv->targets[k].tid == next)
					used = true;
			if (!used)
				break;
			next++;
		}
		pv->targets[i].tid = next++;
	}
}

void cfg_priv_free(struct cfg_priv *pv)
{
	if (!pv)
		return;
	cfg_auth_free(pv);
	for (int i = 0; i < pv->nr_targets; i++) {
		free(pv->targets[i].acls);
		free(pv->targets[i].params);
		free(pv->targets[i].luns);
	}
	free(pv->targets);
	free(pv);
}

int config_load(const char *path, struct config *cfg, char *err,
		unsigned errlen)
{
	struct cfg_ctx c = { .file = path, .err = err, .errlen = errlen };
	struct cfg_priv *pv;
	config_setting_t *root, *targets = NULL;
	config_t lc;
	char dir[PATH_MAX];
	int ret = 0;

	memset(cfg, 0, sizeof(*cfg));
	cfg->limits = (struct iscsi_limits)ISCSI_LIMITS_DEFAULT;
	if (err && errlen)
		err[0] = '\0';
	if (!realpath(path, cfg->path)) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	snprintf(dir, sizeof(dir), "%s", cfg->path);
	snprintf(c.dir, sizeof(c.dir), "%s", dirname(dir));

	config_init(&lc);
	config_set_include_dir(&lc, c.dir);
	if (config_read_file(&lc, path) != CONFIG_TRUE) {
		if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
			snprintf(err, errlen, "%s: cannot read the file", path);
		else
			snprintf(err, errlen, "%s:%d: syntax: %s",
				 config_error_file(&lc) ? config_error_file(&lc)
							: path,
				 config_error_line(&lc), config_error_text(&lc));
		config_destroy(&lc);
		return -EINVAL;
	}

	pv = xzalloc(sizeof(*pv));
	root = config_root_setting(&lc);
	c.root = root;
	for (int i = 0; !ret && i < config_setting_length(root); i++) {
		config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
		const char *key = config_setting_name(s);

		if (strcmp(key, "portals") == 0)
			ret = cfg_portals(&c, s, cfg);
		else if (strcmp(key, "limits") == 0)
			ret = cfg_limits(&c, s, cfg);
		else if (strcmp(key, "accounts") == 0)
			ret = cfg_accounts(&c, s, pv);
		else if (strcmp(key, "discovery") == 0)
			ret = cfg_discovery(&c, s, pv);
		else if (strcmp(key, "targets") == 0)
			targets = s;
		else if (cfg_is_lun_global(key))
			ret = cfg_lun_global(&c, s);
		else
			ret = cfg_fail(&c, s, key, "unknown key");
	}
	if (!ret && targets) {
		int type = config_setting_type(targets);
		/* An empty "[ ]" is an array to libconfig; no targets either
		 * way (they can be added later with tgtadm). */
		if (type != CONFIG_TYPE_LIST &&
		    !(type == CONFIG_TYPE_ARRAY && config_setting_length(targets) == 0))
			ret = cfg_fail(&c, targets, "targets",
				       "expected a list ( { name = ...; }, ... ), not %s",
				       cfg_type_name(type));
		for (int i = 0; !ret && i < config_setting_length(targets); i++)
			ret = cfg_target(&c, config_setting_get_elem(targets,
								     (unsigned)i),
					 pv);
	}
	if (!ret)
		ret = cfg_auth_check(&c, pv);
	if (!ret && cfg->nr_portals == 0) {
		/* No portals key: listen on the iSCSI port everywhere. */
		struct portal_config *p = &cfg->portals[0];
		config_parse_portal("0.0.0.0:3260", &p->listen, &p->listen_len);
		snprintf(p->text, sizeof(p->text), "0.0.0.0:3260");
		cfg->nr_portals = 1;
	}
	config_destroy(&lc);
	if (ret) {
		cfg_priv_free(pv);
		return ret;
	}
	cfg_assign_tids(pv);
	cfg->priv = pv;
	return 0;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	cfg_priv_free(cfg->priv);
	cfg->priv = NULL;
}

int config_target_delete(int tid, bool force)
{
	int ret = tgt_delete(tid, force);

	/* A later target with the same tid must not inherit its CHAP
	 * accounts. */
	if (ret == 0)
		acct_unbind_all(tid);
	return ret;
}
