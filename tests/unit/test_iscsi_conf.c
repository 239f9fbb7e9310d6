/* test_iscsi_conf.c - the gateway backend's URL and options parser
 * (backends/iscsi_conf.c), and how targets.conf / --params keys land in a
 * LUN's store options (target/lun/lun_setting.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "config.h"
#include "iscsi_conf.h"
#include "lun.h"

#define IQN "iqn.2001-05.com.example:san.pool1"

static int parse(const char *url, const char *opts, struct be_iscsi_conf *c,
		 const char **why)
{
	*why = NULL;
	return be_iscsi_conf_parse(url, opts, "gw-host_01", c, why);
}

static void test_url(void)
{
	struct be_iscsi_conf c;
	const char *why;
	char buf[512];

	CHECK(parse("iscsi://192.0.2.20/" IQN "/1", NULL, &c, &why) == 0, "%s", why);
	CHECK(c.nportals == 1 && strcmp(c.portals[0], "192.0.2.20:3260") == 0,
	      "%s", c.portals[0]);
	CHECK(strcmp(c.target, IQN) == 0 && c.lun == 1);
	CHECK(!c.user[0] && !c.password[0]);
	CHECK(c.remote_timeout_ms == 15000 && c.connect_timeout_ms == 5000 &&
	      c.reconnect_max_ms == 2000 && !c.header_digest);
	/* default initiator name from the host name, made a valid iSCSI name */
	CHECK(strcmp(c.initiator, "iqn.2026-11.org.holdfast:gw.gw-host-01") == 0,
	      "%s", c.initiator);

	CHECK(parse("iscsi://alice%s3cr%40t@san.example:3261/" IQN "/0", NULL,
		    &c, &why) == 0, "%s", why);
	CHECK(strcmp(c.user, "alice") == 0 && strcmp(c.password, "s3cr%40t") == 0,
	      "%s %s", c.user, c.password);
	CHECK(strcmp(c.portals[0], "san.example:3261") == 0 && c.lun == 0);
	/* the secret never shows */
	be_iscsi_conf_url(&c, buf, sizeof(buf));
	CHECK(strstr(buf, "s3cr") == NULL && strstr(buf, "alice@") != NULL,
	      "%s", buf);

	/* a secret with '@' in it: the last '@' before the path counts */
	CHECK(parse("iscsi://bob%a@b@10.0.0.1/" IQN "/2", NULL, &c, &why) == 0);
	CHECK(strcmp(c.password, "a@b") == 0 && strcmp(c.portals[0], "10.0.0.1:3260") == 0);

	CHECK(parse("iscsi://[2001:db8::1]:3262/" IQN "/3", NULL, &c, &why) == 0,
	      "%s", why);
	CHECK(strcmp(c.portals[0], "[2001:db8::1]:3262") == 0, "%s", c.portals[0]);
	CHECK(parse("iscsi://[2001:db8::1]/" IQN "/3", NULL, &c, &why) == 0);
	CHECK(strcmp(c.portals[0], "[2001:db8::1]:3260") == 0, "%s", c.portals[0]);
	CHECK(parse("iscsi://[fe80::1%eth0]/" IQN "/3", NULL, &c, &why) == 0,
	      "zone: %s", why);
}

static void test_bad_urls(void)
{
	static const char *const bad[] = {
		NULL,
		"",
		"/dev/sdb",
		"iscsi:/192.0.2.1/" IQN "/1",
		"iscsi://192.0.2.1",			/* no path */
		"iscsi://192.0.2.1/" IQN,		/* no LUN */
		"iscsi://192.0.2.1//1",			/* no target */
		"iscsi://192.0.2.1/" IQN "/",
		"iscsi://192.0.2.1/" IQN "/x",
		"iscsi://192.0.2.1/" IQN "/16384",	/* beyond SAM LUNs */
		"iscsi://192.0.2.1/" IQN "/1a",
		"iscsi://192.0.2.1:0/" IQN "/1",
		"iscsi://192.0.2.1:65536/" IQN "/1",
		"iscsi://192.0.2.1:/" IQN "/1",
		"iscsi://192.0.2.1:32a/" IQN "/1",
		"iscsi:///" IQN "/1",			/* no host */
		"iscsi://[2001:db8::1/" IQN "/1",
		"iscsi://[2001:db8::1]x/" IQN "/1",
		"iscsi://[2001 db8::1]/" IQN "/1",
		"iscsi://[fe80::1%]/" IQN "/1",
		"iscsi://alice@192.0.2.1/" IQN "/1",	/* no secret */
		"iscsi://%secret@192.0.2.1/" IQN "/1",	/* no user */
		"iscsi://alice%@192.0.2.1/" IQN "/1",	/* empty secret */
		"iscsi://192.0.2.1/iqn with space/1",
		"iscsi://ho_st/" IQN "/1",
	};
	struct be_iscsi_conf c;
	const char *why;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = parse(bad[i], NULL, &c, &why);

		CHECK(r == -EINVAL && why && *why, "accepted %s",
		      bad[i] ? bad[i] : "(null)");
	}
}

static void test_opts(void)
{
	struct be_iscsi_conf c;
	const char *why;
	const char *url = "iscsi://u%p@192.0.2.20/" IQN "/1";

	CHECK(parse(url, "initiator_name=iqn.2026-11.org.example:gw1;"
		    "portals=192.0.2.21:3260 192.0.2.22|[2001:db8::2],192.0.2.23:3999;"
		    "remote_timeout=5000;connect_timeout=700;reconnect_max=100;"
		    "header_digest=crc32c;data_digest=none;"
		    "mutual_user=san;mutual_password=sanpw", &c, &why) == 0,
	      "%s", why);
	CHECK(strcmp(c.initiator, "iqn.2026-11.org.example:gw1") == 0);
	CHECK(c.nportals == 5, "%u", c.nportals);
	CHECK(strcmp(c.portals[1], "192.0.2.21:3260") == 0 &&
	      strcmp(c.portals[2], "192.0.2.22:3260") == 0 &&
	      strcmp(c.portals[3], "[2001:db8::2]:3260") == 0 &&
	      strcmp(c.portals[4], "192.0.2.23:3999") == 0);
	CHECK(c.remote_timeout_ms == 5000 && c.connect_timeout_ms == 700 &&
	      c.reconnect_max_ms == 100 && c.header_digest);
	CHECK(!c.data_digest);
	CHECK(strcmp(c.mutual_user, "san") == 0 &&
	      strcmp(c.mutual_password, "sanpw") == 0);
	CHECK(parse(url, "data_digest=crc32c", &c, &why) == 0 && c.data_digest,
	      "%s", why);
	CHECK(parse(url, "data_digest=CRC32C;data_digest=None", &c, &why) == 0 &&
	      !c.data_digest, "%s", why);
	CHECK(parse(url, "data_digest=sha1", &c, &why) == -EINVAL &&
	      strcmp(why, "data_digest: none or crc32c") == 0, "%s", why);
	/* empty items and blanks are fine */
	CHECK(parse(url, ";; remote_timeout=100;", &c, &why) == 0, "%s", why);
	CHECK(c.remote_timeout_ms == 100);

	static const char *const bad[] = {
		"remote_timeout=99",
		"remote_timeout=3600001",
		"remote_timeout=",
		"remote_timeout=1s",
		"connect_timeout=-1",
		"reconnect_max=5",
		"header_digest=md5",
		"data_digest=md5",
		"initiator_name=not a name",
		"initiator_name=",
		"portals=192.0.2.1:70000",
		"portals=a b c d e f g h",	/* 9 in all */
		"mutual_user=san",		/* no password */
		"nonsense=1",
		"remote_timeout",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(parse(url, bad[i], &c, &why) == -EINVAL && why,
		      "accepted %s", bad[i]);
	/* mutual CHAP needs one-way CHAP */
	CHECK(parse("iscsi://192.0.2.20/" IQN "/1",
		    "mutual_user=san;mutual_password=x", &c, &why) == -EINVAL);
}

/* targets.conf / --params keys become items of bsopts; a later value of
 * a key replaces the earlier one; the LUN validates through the parser. */
static void test_lun_keys(void)
{
	struct lun_settings s;
	char err[256];

	lun_settings_default(&s, 1);
	CHECK(lun_setting_apply(&s, "backend", "iscsi", err, sizeof(err)) == 0, "%s", err);
	CHECK(lun_setting_apply(&s, "path", "iscsi://192.0.2.20/" IQN "/1", err,
				sizeof(err)) == 0);
	CHECK(lun_setting_apply(&s, "remote_timeout", "3000", err, sizeof(err)) == 0);
	CHECK(lun_setting_apply(&s, "portals", "192.0.2.21,192.0.2.22", err,
				sizeof(err)) == 0);
	CHECK(lun_setting_apply(&s, "remote_timeout", "4000", err, sizeof(err)) == 0);
	CHECK(strcmp(s.bsopts, "portals=192.0.2.21,192.0.2.22;remote_timeout=4000") == 0,
	      "%s", s.bsopts);
	CHECK(lun_settings_check(&s, NULL, NULL, err, sizeof(err)) == 0, "%s", err);
	CHECK(lun_setting_apply(&s, "header_digest", "a;b", err, sizeof(err)) == -EINVAL);
	CHECK(lun_setting_apply(&s, "header_digest", "sha1", err, sizeof(err)) == 0);
	CHECK(lun_settings_check(&s, NULL, NULL, err, sizeof(err)) == -EINVAL &&
	      strstr(err, "header_digest"), "%s", err);
	CHECK(lun_setting_apply(&s, "bsopts", "remote_timeout=200", err, sizeof(err)) == 0);
	CHECK(lun_settings_check(&s, NULL, NULL, err, sizeof(err)) == 0, "%s", err);
	CHECK(lun_setting_apply(&s, "path", "/dev/sdb", err, sizeof(err)) == 0);
	CHECK(lun_settings_check(&s, NULL, NULL, err, sizeof(err)) == -EINVAL &&
	      strstr(err, "URL"), "%s", err);
	CHECK(lun_setting_apply(&s, "backend", "iscsi2", err, sizeof(err)) == -EINVAL);
}

/* show, JSON and the log never carry a URL's CHAP secret */
static void test_path_shown(void)
{
	struct lun_settings s;
	char buf[512];

	lun_settings_default(&s, 1);
	snprintf(s.path, sizeof(s.path), "iscsi://alice%%s3c@r3t@192.0.2.1/" IQN "/1");
	CHECK(strcmp(lun_settings_path_shown(&s, buf, sizeof(buf)),
		     "iscsi://alice@192.0.2.1/" IQN "/1") == 0, "%s", buf);
	snprintf(s.path, sizeof(s.path), "iscsi://192.0.2.1/" IQN "/1");
	CHECK(strcmp(lun_settings_path_shown(&s, buf, sizeof(buf)), s.path) == 0);
	snprintf(s.path, sizeof(s.path), "/var/lib/a%%b@c");
	CHECK(strcmp(lun_settings_path_shown(&s, buf, sizeof(buf)), s.path) == 0);
	s.path[0] = '\0';
	CHECK(strcmp(lun_settings_path_shown(&s, buf, sizeof(buf)), "None") == 0);
}

int main(void)
{
	test_url();
	test_bad_urls();
	test_opts();
	test_lun_keys();
	test_path_shown();
	return CHECK_SUMMARY("test_iscsi_conf");
}
