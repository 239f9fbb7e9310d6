/* iscsi_conf.h - what a gateway LUN (backend "iscsi") connects to: the
 * remote LUN's URL plus the backend's options string, parsed into one
 * struct.  Pure text handling, no libiscsi, so it is unit tested on its own
 * (tests/unit/test_iscsi_conf.c).
 *
 * URL:     iscsi://[user[%secret]@]host[:port]/target-iqn/lun
 *          (host may be an [IPv6] literal; port defaults to 3260)
 * Options: items "key=value" separated by ';' (',' separates tgtadm
 *          --params items, so it cannot be used here):
 *   initiator_name=IQN     name holdfast logs in with (default derived
 *                          from the host name)
 *   portals=H:P H:P ...    more portals to the same remote LUN, tried in
 *                          turn after the URL's own (separated by ' ', '|'
 *                          or ',')
 *   remote_timeout=MS      a command unanswered this long = connection lost
 *                          (default 15000)
 *   connect_timeout=MS     one connect + login + identify attempt (5000)
 *   reconnect_max=MS       longest pause between reconnect attempts (2000)
 *   header_digest=none|crc32c
 *   data_digest=none|crc32c  crc32c: CRC32C data digests required, added
 *                          by the relay of iscsi_dd.h (libiscsi cannot)
 *   mutual_user=NAME, mutual_password=SECRET   the SAN's CHAP name and
 *                          secret for mutual CHAP (needs user%secret in
 *                          the URL) */
#ifndef HOLDFAST_ISCSI_CONF_H
#define HOLDFAST_ISCSI_CONF_H

#include <stdbool.h>
#include <stdint.h>

#define BE_ISCSI_MAX_PORTALS 8
#define BE_ISCSI_PORTAL_LEN 272		/* "[ipv6]:port" or "host:port" */
#define BE_ISCSI_NAME_LEN 224		/* iSCSI names: RFC 7143 4.2.7.1 */
#define BE_ISCSI_SECRET_LEN 256

#define BE_ISCSI_REMOTE_TIMEOUT_MS 15000
#define BE_ISCSI_CONNECT_TIMEOUT_MS 5000
#define BE_ISCSI_RECONNECT_MAX_MS 2000
#define BE_ISCSI_DEFAULT_PORT 3260

struct be_iscsi_conf {
	char portals[BE_ISCSI_MAX_PORTALS][BE_ISCSI_PORTAL_LEN];
	unsigned nportals;		/* >= 1: [0] is the URL's */
	char target[BE_ISCSI_NAME_LEN];
	unsigned lun;
	char user[BE_ISCSI_NAME_LEN];
	char password[BE_ISCSI_SECRET_LEN];
	char mutual_user[BE_ISCSI_NAME_LEN];
	char mutual_password[BE_ISCSI_SECRET_LEN];
	char initiator[BE_ISCSI_NAME_LEN];
	bool header_digest;		/* CRC32C required */
	bool data_digest;		/* CRC32C required (iscsi_dd.h) */
	uint32_t remote_timeout_ms;
	uint32_t connect_timeout_ms;
	uint32_t reconnect_max_ms;
};

/* Parse url and opts (may be NULL) into c.  hostname is used for the
 * default initiator name (NULL: gethostname()).  Returns 0, or -EINVAL
 * with *errmsg saying what is wrong (a static string). */
int be_iscsi_conf_parse(const char *url, const char *opts,
			const char *hostname, struct be_iscsi_conf *c,
			const char **errmsg);

/* The URL without its secret, for logs and show. */
void be_iscsi_conf_url(const struct be_iscsi_conf *c, char *buf,
		       unsigned len);

#endif
