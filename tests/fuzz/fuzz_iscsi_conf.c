/* fuzz_iscsi_conf.c - a gateway LUN's URL and store options
 * (backends/iscsi_conf.c): credentials, host[:port] and [IPv6] portals,
 * the target name and LUN, every option item and the checks across them,
 * the default initiator name derived from a host name, and the URL shown
 * without its secret.
 *
 * Input: NUL-separated fields: the URL, the options string, the host
 * name (an empty one: gethostname()). */
#include <stdint.h>
#include <string.h>

#include "iscsi_conf.h"

static const char *field(const uint8_t **p, const uint8_t *end, char *buf,
			 size_t len)
{
	size_t n = 0;

	while (*p < end && **p && n + 1 < len)
		buf[n++] = (char)*(*p)++;
	buf[n] = '\0';
	if (*p < end)
		(*p)++;
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char url[4096], opts[4096], host[256], shown[2048];
	const uint8_t *p = data, *end = data + size;
	struct be_iscsi_conf c;
	const char *err = NULL;
	int r;

	field(&p, end, url, sizeof(url));
	field(&p, end, opts, sizeof(opts));
	field(&p, end, host, sizeof(host));
	r = be_iscsi_conf_parse(url, opts, host[0] ? host : NULL, &c, &err);
	if (r != 0) {
		/* every refusal says why */
		if (!err || !*err)
			__builtin_trap();
		return 0;
	}
	/* what a success promises: at least one portal, strings that end,
	 * a LUN in range, mutual CHAP only on top of one-way CHAP */
	if (c.nportals < 1 || c.nportals > BE_ISCSI_MAX_PORTALS ||
	    c.lun > 16383 || !c.target[0] || !c.initiator[0] ||
	    (c.mutual_user[0] && (!c.user[0] || !c.mutual_password[0])))
		__builtin_trap();
	for (unsigned i = 0; i < c.nportals; i++)
		if (!memchr(c.portals[i], '\0', sizeof(c.portals[i])) ||
		    !strchr(c.portals[i], ':'))
			__builtin_trap();
	be_iscsi_conf_url(&c, shown, sizeof(shown));
	/* the shown URL never carries the CHAP secret: it is "iscsi://",
	 * the user (which holds no '%') and '@', then the portal */
	if (c.user[0] &&
	    (strchr(c.user, '%') ||
	     strncmp(shown, "iscsi://", 8) != 0 ||
	     strncmp(shown + 8, c.user, strlen(c.user)) != 0 ||
	     shown[8 + strlen(c.user)] != '@' ||
	     strncmp(shown + 9 + strlen(c.user), c.portals[0],
		     strlen(c.portals[0])) != 0))
		__builtin_trap();
	return 0;
}
