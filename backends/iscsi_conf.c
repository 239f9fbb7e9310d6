/* iscsi_conf.c - parse a gateway LUN's URL and options (iscsi_conf.h).
 *
 * The URL syntax is libiscsi's (iscsi://[user[%secret]@]host[:port]/iqn/lun)
 * so operators can paste what iscsi-ls and QEMU take, but it is parsed here:
 * the result must be checked before any context exists, and the parts are
 * needed separately (portal list, identity in show, secret kept out of
 * logs). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "iscsi_conf.h"

#define BE_ISCSI_URL_PREFIX "iscsi://"
#define BE_ISCSI_LUN_MAX 16383		/* SAM-5 flat/peripheral addressing */
#define BE_ISCSI_TIMEOUT_MAX_MS 3600000u
#define BE_ISCSI_DEFAULT_IQN_PREFIX "iqn.2026-11.org.holdfast:gw."

/* Copy [s, s+n) into dst (cap bytes with the NUL); -1 if it does not fit. */
static int conf_copy(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		return -1;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* iSCSI names as RFC 7143 4.2.7.2 allows after stringprep, restricted to
 * what needs no quoting anywhere: letters, digits, '.', '-', ':'. */
static bool conf_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '-' &&
		    *s != ':')
			return false;
	return true;
}

/* "host", "host:port", "[v6]" or "[v6]:port" -> "host:port" / "[v6]:port".
 * Returns 0 or -1. */
static int conf_portal(char *dst, const char *s, size_t n)
{
	char host[BE_ISCSI_PORTAL_LEN];
	const char *port = NULL;
	size_t hlen;
	unsigned long p = BE_ISCSI_DEFAULT_PORT;

	if (n == 0)
		return -1;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', n);

		if (!close || close == s + 1)
			return -1;
		/* an IPv6 literal: hex digits, ':' and '.' (an embedded
		 * IPv4 address), then an optional "%zone" (RFC 6874) */
		for (const char *q = s + 1; q < close; q++) {
			if (*q == '%') {
				if (q + 1 == close)
					return -1;
				for (q++; q < close; q++)
					if (!isalnum((unsigned char)*q) &&
					    *q != '.' && *q != '-' && *q != '_')
						return -1;
				break;
			}
			if (!isxdigit((unsigned char)*q) && *q != ':' &&
			    *q != '.')
				return -1;
		}
		hlen = (size_t)(close - s) + 1;		/* keep the brackets */
		if (hlen < n) {
			if (s[hlen] != ':')
				return -1;
			port = s + hlen + 1;
		}
	} else {
		const char *colon = memchr(s, ':', n);

		hlen = colon ? (size_t)(colon - s) : n;
		if (colon)
			port = colon + 1;
		if (hlen == 0)
			return -1;
		for (size_t i = 0; i < hlen; i++)
			if (!isalnum((unsigned char)s[i]) && s[i] != '.' &&
			    s[i] != '-')
				return -1;
	}
	if (port) {
		size_t plen = (size_t)(s + n - port);
		char digits[8], *end;

		if (plen == 0 || plen >= sizeof(digits))
			return -1;
		memcpy(digits, port, plen);
		digits[plen] = '\0';
		if (!isdigit((unsigned char)digits[0]))
			return -1;
		p = strtoul(digits, &end, 10);
		if (*end || p == 0 || p > 65535)
			return -1;
	}
	if (conf_copy(host, sizeof(host), s, hlen))
		return -1;
	if (snprintf(dst, BE_ISCSI_PORTAL_LEN, "%s:%lu", host, p) >=
	    BE_ISCSI_PORTAL_LEN)
		return -1;
	return 0;
}

static int conf_parse_url(const char *url, struct be_iscsi_conf *c,
			  const char **errmsg)
{
	const char *p, *at, *slash, *slash2, *end;
	char lunbuf[8], *e;
	unsigned long lun;

	if (!url || strncmp(url, BE_ISCSI_URL_PREFIX,
			    strlen(BE_ISCSI_URL_PREFIX)) != 0) {
		*errmsg = "the path of an iscsi LUN is a URL: "
			  "iscsi://[user%secret@]host[:port]/target-iqn/lun";
		return -EINVAL;
	}
	p = url + strlen(BE_ISCSI_URL_PREFIX);
	end = p + strlen(p);
	slash = strchr(p, '/');
	if (!slash) {
		*errmsg = "iscsi URL: missing /target-iqn/lun after the host";
		return -EINVAL;
	}
	/* credentials: the last '@' before the first '/' (a secret may not
	 * hold '/', but may hold '@') */
	at = NULL;
	for (const char *q = p; q < slash; q++)
		if (*q == '@')
			at = q;
	if (at) {
		const char *pct = memchr(p, '%', (size_t)(at - p));

		if (!pct) {
			*errmsg = "iscsi URL: credentials are user%secret@";
			return -EINVAL;
		}
		if (pct == p || conf_copy(c->user, sizeof(c->user), p,
					  (size_t)(pct - p)) ||
		    pct + 1 == at ||
		    conf_copy(c->password, sizeof(c->password), pct + 1,
			      (size_t)(at - pct - 1))) {
			*errmsg = "iscsi URL: empty or too long CHAP user or secret";
			return -EINVAL;
		}
		p = at + 1;
	}
	if (conf_portal(c->portals[0], p, (size_t)(slash - p))) {
		*errmsg = "iscsi URL: bad host[:port]";
		return -EINVAL;
	}
	c->nportals = 1;
	slash2 = strrchr(slash + 1, '/');
	if (!slash2 || slash2 == slash + 1) {
		*errmsg = "iscsi URL: missing target IQN or LUN (.../target-iqn/lun)";
		return -EINVAL;
	}
	if (conf_copy(c->target, sizeof(c->target), slash + 1,
		      (size_t)(slash2 - slash - 1)) ||
	    !conf_name_ok(c->target)) {
		*errmsg = "iscsi URL: bad target name";
		return -EINVAL;
	}
	if (conf_copy(lunbuf, sizeof(lunbuf), slash2 + 1,
		      (size_t)(end - slash2 - 1)) ||
	    !isdigit((unsigned char)lunbuf[0])) {
		*errmsg = "iscsi URL: the LUN is a number";
		return -EINVAL;
	}
	lun = strtoul(lunbuf, &e, 10);
	if (*e || lun > BE_ISCSI_LUN_MAX) {
		*errmsg = "iscsi URL: the LUN is a number from 0 to 16383";
		return -EINVAL;
	}
	c->lun = (unsigned)lun;
	return 0;
}

static int conf_ms(const char *v, uint32_t min, uint32_t *out)
{
	char *e;
	unsigned long x;

	if (!isdigit((unsigned char)v[0]))
		return -1;
	x = strtoul(v, &e, 10);
	if (*e || x < min || x > BE_ISCSI_TIMEOUT_MAX_MS)
		return -1;
	*out = (uint32_t)x;
	return 0;
}

static int conf_portals(struct be_iscsi_conf *c, const char *v,
			const char **errmsg)
{
	const char *p = v;

	while (*p) {
		size_t n = strcspn(p, " |,");

		if (n) {
			if (c->nportals == BE_ISCSI_MAX_PORTALS) {
				*errmsg = "portals: at most 8 portals in all";
				return -EINVAL;
			}
			if (conf_portal(c->portals[c->nportals], p, n)) {
				*errmsg = "portals: bad host[:port]";
				return -EINVAL;
			}
			c->nportals++;
		}
		p += n;
		if (*p)
			p++;
	}
	return 0;
}

static int conf_item(struct be_iscsi_conf *c, const char *key,
		     const char *v, const char **errmsg)
{
	if (strcmp(key, "initiator_name") == 0) {
		if (conf_copy(c->initiator, sizeof(c->initiator), v,
			      strlen(v)) || !conf_name_ok(c->initiator)) {
			*errmsg = "initiator_name: not an iSCSI name";
			return -EINVAL;
		}
	} else if (strcmp(key, "portals") == 0) {
		return conf_portals(c, v, errmsg);
	} else if (strcmp(key, "remote_timeout") == 0) {
		if (conf_ms(v, 100, &c->remote_timeout_ms)) {
			*errmsg = "remote_timeout: milliseconds, 100 to 3600000";
			return -EINVAL;
		}
	} else if (strcmp(key, "connect_timeout") == 0) {
		if (conf_ms(v, 100, &c->connect_timeout_ms)) {
			*errmsg = "connect_timeout: milliseconds, 100 to 3600000";
			return -EINVAL;
		}
	} else if (strcmp(key, "reconnect_max") == 0) {
		if (conf_ms(v, 10, &c->reconnect_max_ms)) {
			*errmsg = "reconnect_max: milliseconds, 10 to 3600000";
			return -EINVAL;
		}
	} else if (strcmp(key, "header_digest") == 0) {
		if (strcmp(v, "crc32c") == 0 || strcmp(v, "CRC32C") == 0)
			c->header_digest = true;
		else if (strcmp(v, "none") == 0 || strcmp(v, "None") == 0)
			c->header_digest = false;
		else {
			*errmsg = "header_digest: none or crc32c";
			return -EINVAL;
		}
	} else if (strcmp(key, "data_digest") == 0) {
		/* libiscsi 1.19 (Debian 12) offers DataDigest=None only:
		 * crc32c puts the data digest relay (iscsi_dd.c) between
		 * libiscsi and the SAN, and requires the SAN to agree */
		if (strcmp(v, "crc32c") == 0 || strcmp(v, "CRC32C") == 0)
			c->data_digest = true;
		else if (strcmp(v, "none") == 0 || strcmp(v, "None") == 0)
			c->data_digest = false;
		else {
			*errmsg = "data_digest: none or crc32c";
			return -EINVAL;
		}
	} else if (strcmp(key, "mutual_user") == 0) {
		if (!*v || conf_copy(c->mutual_user, sizeof(c->mutual_user), v,
				     strlen(v))) {
			*errmsg = "mutual_user: empty or too long";
			return -EINVAL;
		}
	} else if (strcmp(key, "mutual_password") == 0) {
		if (!*v || conf_copy(c->mutual_password,
				     sizeof(c->mutual_password), v, strlen(v))) {
			*errmsg = "mutual_password: empty or too long";
			return -EINVAL;
		}
	} else {
		*errmsg = "unknown iscsi backend option (initiator_name, portals, "
			  "remote_timeout, connect_timeout, reconnect_max, "
			  "header_digest, data_digest, mutual_user, mutual_password)";
		return -EINVAL;
	}
	return 0;
}

static int conf_parse_opts(const char *opts, struct be_iscsi_conf *c,
			   const char **errmsg)
{
	char buf[2048], *save = NULL;

	if (!opts || !*opts)
		return 0;
	if (strlen(opts) >= sizeof(buf)) {
		*errmsg = "iscsi backend options too long";
		return -EINVAL;
	}
	strcpy(buf, opts);
	for (char *it = strtok_r(buf, ";", &save); it;
	     it = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(it, '=');
		int err;

		while (*it == ' ')
			it++;
		if (!*it)
			continue;
		if (!eq) {
			*errmsg = "iscsi backend options are key=value items "
				  "separated by ';'";
			return -EINVAL;
		}
		*eq = '\0';
		err = conf_item(c, it, eq + 1, errmsg);
		if (err)
			return err;
	}
	return 0;
}

int be_iscsi_conf_parse(const char *url, const char *opts,
			const char *hostname, struct be_iscsi_conf *c,
			const char **errmsg)
{
	char host[64] = "localhost";
	int err;

	memset(c, 0, sizeof(*c));
	c->remote_timeout_ms = BE_ISCSI_REMOTE_TIMEOUT_MS;
	c->connect_timeout_ms = BE_ISCSI_CONNECT_TIMEOUT_MS;
	c->reconnect_max_ms = BE_ISCSI_RECONNECT_MAX_MS;
	err = conf_parse_url(url, c, errmsg);
	if (err)
		return err;
	err = conf_parse_opts(opts, c, errmsg);
	if (err)
		return err;
	if (c->mutual_user[0] != '\0' && c->mutual_password[0] == '\0') {
		*errmsg = "mutual_user needs mutual_password";
		return -EINVAL;
	}
	if (c->mutual_user[0] && !c->user[0]) {
		*errmsg = "mutual CHAP needs one-way CHAP too (user%secret@ in the URL)";
		return -EINVAL;
	}
	if (!c->initiator[0]) {
		/* Default: one name per host, so the SAN's ACL can name the
		 * gateway.  Host names may hold '_' which iSCSI names may
		 * not: anything else becomes '-'. */
		size_t n;

		if (hostname)
			snprintf(host, sizeof(host), "%s", hostname);
		else if (gethostname(host, sizeof(host) - 1) < 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		n = (size_t)snprintf(c->initiator, sizeof(c->initiator), "%s%s",
				     BE_ISCSI_DEFAULT_IQN_PREFIX, host);
		for (size_t i = strlen(BE_ISCSI_DEFAULT_IQN_PREFIX); i < n; i++) {
			char ch = c->initiator[i];

			if (isupper((unsigned char)ch))
				c->initiator[i] = (char)tolower((unsigned char)ch);
			else if (!isalnum((unsigned char)ch) && ch != '.' &&
				 ch != '-')
				c->initiator[i] = '-';
		}
	}
	return 0;
}

void be_iscsi_conf_url(const struct be_iscsi_conf *c, char *buf, unsigned len)
{
	snprintf(buf, len, "iscsi://%s%s%s/%s/%u", c->user,
		 c->user[0] ? "@" : "", c->portals[0], c->target, c->lun);
}
