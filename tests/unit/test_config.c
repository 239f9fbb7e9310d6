/* test_config.c - targets.conf loading (target/config/config.c), sizes, portals,
 * lun_setting_apply() and the target table it fills.
 *
 * Bad files are checked against their exact "FILE:LINE: key: reason"
 * message, because that message is the user interface of a typo. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "account.h"
#include "config.h"
#include "iscsi_param.h"
#include "target.h"
#include "util.h"

static char tmpdir[256];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

/* Write text as NAME in the temp dir; returns the path (static buffer). */
static const char *conf(const char *name, const char *text)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	write_file(path, text);
	return path;
}

/* ---- sizes ---- */
static void test_sizes(void)
{
	static const struct {
		const char *text;
		int ret;
		uint64_t bytes;
	} cases[] = {
		{ "4096", 0, 4096 },
		{ "0", 0, 0 },
		{ "10k", 0, 10240 },
		{ "10K", 0, 10240 },
		{ "512M", 0, 512ull << 20 },
		{ "1G", 0, 1ull << 30 },
		{ "1GiB", 0, 1ull << 30 },
		{ "1GB", 0, 1ull << 30 },
		{ "2T", 0, 2ull << 40 },
		{ "", -EINVAL, 0 },
		{ "G", -EINVAL, 0 },
		{ "1X", -EINVAL, 0 },
		{ "1Gx", -EINVAL, 0 },
		{ "-1", -EINVAL, 0 },
		{ " 1G", -EINVAL, 0 },
		{ "1.5G", -EINVAL, 0 },
		{ "99999999999999P", -EINVAL, 0 },
		{ "18446744073709551616", -EINVAL, 0 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t v = 12345;
		int ret = util_parse_size(cases[i].text, &v);
		CHECK(ret == cases[i].ret, "size \"%s\": ret %d", cases[i].text,
		      ret);
		if (ret == 0)
			CHECK(v == cases[i].bytes, "size \"%s\" = %llu",
			      cases[i].text, (unsigned long long)v);
	}
}

/* ---- portals ---- */
static void test_portals(void)
{
	static const struct {
		const char *text;
		int ret, family;
		const char *addr;
		int port;
	} cases[] = {
		{ "0.0.0.0:3260", 0, AF_INET, "0.0.0.0", 3260 },
		{ "127.0.0.1:13260", 0, AF_INET, "127.0.0.1", 13260 },
		{ "10.1.2.3", 0, AF_INET, "10.1.2.3", 3260 },
		{ "[::1]:3261", 0, AF_INET6, "::1", 3261 },
		{ "[::]", 0, AF_INET6, "::", 3260 },
		{ "[fe80::1:2]:999", 0, AF_INET6, "fe80::1:2", 999 },
		{ "::1", 0, AF_INET6, "::1", 3260 },
		{ "1.2.3.4:0", -EINVAL, 0, NULL, 0 },
		{ "1.2.3.4:65536", -EINVAL, 0, NULL, 0 },
		{ "1.2.3.4:", -EINVAL, 0, NULL, 0 },
		{ "1.2.3.4:x", -EINVAL, 0, NULL, 0 },
		{ "localhost:3260", -EINVAL, 0, NULL, 0 },
		{ "[::1", -EINVAL, 0, NULL, 0 },
		{ "[::1]x", -EINVAL, 0, NULL, 0 },
		{ "[1.2.3.4]:5", -EINVAL, 0, NULL, 0 },
		{ "", -EINVAL, 0, NULL, 0 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		char a[64] = "";
		int port = 0;
		int ret = config_parse_portal(cases[i].text, &ss, &len);

		CHECK(ret == cases[i].ret, "portal \"%s\": ret %d", cases[i].text,
		      ret);
		if (ret || cases[i].ret)
			continue;
		CHECK(ss.ss_family == cases[i].family, "portal \"%s\" family",
		      cases[i].text);
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *s = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
			port = ntohs(s->sin_port);
			CHECK(len == sizeof(*s), "len");
		} else {
			struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
			port = ntohs(s->sin6_port);
			CHECK(len == sizeof(*s), "len");
		}
		CHECK(strcmp(a, cases[i].addr) == 0 && port == cases[i].port,
		      "portal \"%s\" -> %s port %d", cases[i].text, a, port);
	}
}

/* ---- lun_setting_apply ---- */
static void test_lun_settings(void)
{
	struct lun_settings s, before;
	char err[512];
	int ret;

	lun_settings_default(&s, 1);
	CHECK(lun_setting_apply(&s, "vendor_id", "ACME", err, sizeof(err)) == 0,
	      "%s", err);
	CHECK(strcmp(s.vendor_id, "ACME") == 0, "vendor_id %s", s.vendor_id);
	CHECK(lun_setting_apply(&s, "thin_provisioning", "1", err,
				sizeof(err)) == 0 && s.thin_provisioning,
	      "thin");
	CHECK(lun_setting_apply(&s, "sense_format", "descriptor", err,
				sizeof(err)) == 0 && s.sense_desc, "sense");
	CHECK(lun_setting_apply(&s, "sense_format", "0", err, sizeof(err)) == 0 &&
	      !s.sense_desc, "sense 0");
	CHECK(lun_setting_apply(&s, "rerror", "retry", err, sizeof(err)) == 0 &&
	      s.rerror == ERR_POLICY_RETRY, "rerror");
	CHECK(lun_setting_apply(&s, "retry_interval", "250", err,
				sizeof(err)) == 0 && s.retry_interval_ms == 250,
	      "interval");
	CHECK(lun_setting_apply(&s, "retry_timeout", "0", err, sizeof(err)) == 0 &&
	      s.retry_timeout_ms == 0, "timeout");
	CHECK(lun_setting_apply(&s, "blocksize", "4096", err, sizeof(err)) == 0 &&
	      s.block_size == 4096, "blocksize");
	CHECK(lun_setting_apply(&s, "size", "1G", err, sizeof(err)) == 0 &&
	      s.size == 1ull << 30, "size");

	ret = lun_setting_apply(&s, "retry_errors", "EIO:ENOSPC", err,
				sizeof(err));
	CHECK(ret == 0, "retry_errors: %s", err);
	CHECK(lun_errno_retryable(s.retry_errors, EIO) &&
	      lun_errno_retryable(s.retry_errors, ENOSPC) &&
	      !lun_errno_retryable(s.retry_errors, ETIMEDOUT), "bits");
	CHECK(lun_setting_apply(&s, "retry_errors", "EIO,ETIMEDOUT", err,
				sizeof(err)) == 0 &&
	      lun_errno_retryable(s.retry_errors, ETIMEDOUT), "comma list");
	CHECK(lun_setting_apply(&s, "retry_errors", "default", err,
				sizeof(err)) == 0 &&
	      lun_errno_retryable(s.retry_errors, ESTALE), "default");

	/* A failed apply leaves the settings exactly as they were. */
	before = s;
	static const struct {
		const char *key, *value, *reason;
		int ret;
	} bad[] = {
		{ "colour", "red", "unknown key", -ENOENT },
		{ "block_size", "1000", "must be a power of two from 512 to 65536", -EINVAL },
		{ "block_size", "256", "must be a power of two from 512 to 65536", -EINVAL },
		{ "retry_errors", "EIO,EBOGUS", "EBOGUS is not an errno name (e.g. EIO, ENOSPC)", -EINVAL },
		{ "retry_errors", "EIO,EROFS", "EROFS is never retried: it reports a bad request, not a failing store", -EINVAL },
		{ "rerror", "ignore", "expected \"report\" or \"retry\"", -EINVAL },
		{ "retry_interval", "0", "milliseconds, 1 to 3600000", -EINVAL },
		{ "retry_timeout", "-5", "milliseconds, 0 (never) to 4294967295", -EINVAL },
		{ "vendor_id", "TOOLONGVENDOR", "longer than 8 characters", -EINVAL },
		{ "product_id", "a\tb", "product_id must be printable ASCII", -EINVAL },
		{ "readonly", "maybe", "expected a boolean (true/false, yes/no, 1/0)", -EINVAL },
		{ "size", "1Q", "bad size \"1Q\" (bytes, or a number with K, M, G or T)", -EINVAL },
		{ "backend", "sheepdog", "unknown backend \"sheepdog\" (file, null, iscsi or rbd)", -EINVAL },
		{ "rbd_osd_op_timeout", "1;id=x", "must not contain ';'", -EINVAL },
		{ "sense_format", "2", "expected \"fixed\" or \"descriptor\"", -EINVAL },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		err[0] = '\0';
		ret = lun_setting_apply(&s, bad[i].key, bad[i].value, err,
					sizeof(err));
		CHECK(ret == bad[i].ret, "%s=%s ret %d", bad[i].key,
		      bad[i].value, ret);
		CHECK(strcmp(err, bad[i].reason) == 0, "%s=%s: \"%s\"",
		      bad[i].key, bad[i].value, err);
		CHECK(memcmp(&s, &before, sizeof(s)) == 0,
		      "%s=%s changed the settings", bad[i].key, bad[i].value);
	}

	/* rbd keys are items of one store options string (tgt's bsopts
	 * spelling): a key replaces its own item, bsopts replaces the whole
	 * string. */
	lun_settings_default(&s, 1);
	CHECK(lun_setting_apply(&s, "ceph_conf", "/c.conf", err, sizeof(err)) == 0, "%s", err);
	CHECK(lun_setting_apply(&s, "ceph_id", "a", err, sizeof(err)) == 0, "%s", err);
	CHECK(lun_setting_apply(&s, "ceph_id", "b", err, sizeof(err)) == 0, "%s", err);
	CHECK(lun_setting_apply(&s, "rbd_cache", "1", err, sizeof(err)) == 0, "%s", err);
	CHECK(strcmp(s.bsopts, "conf=/c.conf;id=b;cache=1") == 0, "%s", s.bsopts);
	CHECK(lun_setting_apply(&s, "bsopts", "conf=/d;id=x", err, sizeof(err)) == 0, "%s", err);
	CHECK(strcmp(s.bsopts, "conf=/d;id=x") == 0, "%s", s.bsopts);

	/* The safety rule: retry on a buffered file LUN is refused. */
	lun_settings_default(&s, 1);
	snprintf(s.path, sizeof(s.path), "/x");
	s.direct = false;
	s.werror = ERR_POLICY_RETRY;
	ret = lun_settings_check(&s, NULL, NULL, err, sizeof(err));
	CHECK(ret == -EINVAL && strstr(err, "needs direct = true"), "%s", err);
	s.direct = true;
	CHECK(lun_settings_check(&s, NULL, NULL, err, sizeof(err)) == 0, "%s", err);
}

/* ---- the target table itself ---- */
static void count_fn(struct target *t, void *arg)
{
	int *last = arg;
	CHECK(t->tid > *last, "tgt_for_each out of tid order: %d after %d",
	      t->tid, *last);
	*last = t->tid;
}

static void test_table(void)
{
	struct lun_settings s;
	const char *why;
	char v[64];

	CHECK(tgt_create(5, "iqn.2026-11.org.example:five") == 5, "tid 5");
	CHECK(tgt_create(0, "iqn.2026-11.org.example:auto1") == 1, "auto 1");
	CHECK(tgt_create(-1, "iqn.2026-11.org.example:auto2") == 2, "auto 2");
	CHECK(tgt_create(3, "IQN.2026-11.ORG.EXAMPLE:FIVE") == -EEXIST,
	      "names compare case-insensitively");
	CHECK(tgt_create(5, "iqn.2026-11.org.example:other") == -EEXIST,
	      "tid taken");
	CHECK(tgt_create(6, "iqn.bad name") == -EINVAL, "bad name");
	CHECK(tgt_create(6, "") == -EINVAL, "empty name");
	int last = 0;
	tgt_for_each(count_fn, &last);
	CHECK(tgt_count() == 3 && last == 5, "count %d last %d", tgt_count(),
	      last);

	struct target *t = tgt_get_by_name("iqn.2026-11.org.example:five");
	CHECK(t && t->tid == 5, "by name");
	if (!t)
		return;

	/* LUN slots: 0 is the controller, 1..255 media LUNs. */
	lun_settings_default(&s, 0);
	snprintf(s.backend, sizeof(s.backend), "null");
	s.size = 1 << 20;
	CHECK(tgt_lun_add(5, &s, &why) == -EEXIST, "LUN 0");
	s.lun = 256;
	CHECK(tgt_lun_add(5, &s, &why) == -EINVAL, "LUN 256");
	s.lun = 7;
	CHECK(tgt_lun_add(99, &s, &why) == -ENOENT, "no target");
	CHECK(tgt_lun_add(5, &s, &why) == 0, "add: %s", why ? why : "");
	CHECK(tgt_lun_add(5, &s, &why) == -EEXIST, "dup LUN");
	struct scsi_lun *l = tgt_lun_get(t, 7);
	CHECK(l && l->target == t, "lun get");
	/* A command in flight holds a reference: delete needs force. */
	CHECK(tgt_lun_del(5, 7, false) == -EBUSY, "busy LUN");
	if (l)
		scsi_lun_put(l);
	CHECK(tgt_lun_del(5, 7, false) == 0, "del");
	CHECK(tgt_lun_del(5, 7, false) == -ENOENT, "del again");
	CHECK(tgt_lun_get(t, 7) == NULL, "gone");

	/* iSCSI overrides are checked by the iSCSI layer's table. */
	CHECK(tgt_param_set(t, "MaxRecvDataSegmentLength", "65536") == 0, "set");
	CHECK(tgt_param_set(t, "MaxRecvDataSegmentLength", "131072") == 0, "reset");
	CHECK(tgt_param_get(t, "MaxRecvDataSegmentLength", v, sizeof(v)) == 0 &&
	      strcmp(v, "131072") == 0, "get %s", v);
	CHECK(iscsi_param_override_check("MaxRecvDataSegmentLength", "12",
					 NULL) == -EINVAL, "range");
	CHECK(iscsi_param_override_check("ImmediateData", "maybe", NULL) ==
	      -EINVAL, "bool");
	CHECK(iscsi_param_override_check("NoSuchKey", "1", NULL) == -ENOENT,
	      "unknown");
	CHECK(iscsi_param_override_check("ImmediateData", "No", NULL) == 0,
	      "valid");
	CHECK(tgt_param_get(t, "ImmediateData", v, sizeof(v)) == -ENOENT,
	      "unset");

	/* A target with sessions is deleted only by force; the last reference
	 * frees it. */
	atomic_store(&t->nr_sessions, 1);
	CHECK(tgt_delete(5, false) == -EBUSY, "busy target");
	CHECK(tgt_delete(5, true) == 0, "forced");
	CHECK(tgt_get_by_tid(5) == NULL, "unlinked");
	CHECK(strcmp(t->name, "iqn.2026-11.org.example:five") == 0,
	      "still readable through our reference");
	tgt_put(t);
	CHECK(tgt_delete(5, false) == -ENOENT, "deleted twice");
	CHECK(tgt_create(0, "iqn.2026-11.org.example:auto3") == 3, "lowest free");
	tgt_table_clear();
	CHECK(tgt_count() == 0, "cleared");
}

/* ---- good file ---- */
static void test_good_file(void)
{
	struct config cfg;
	char err[1024], img[512];
	const char *path;
	int ret;

	snprintf(img, sizeof(img), "%s/exists.img", tmpdir);
	write_file(img, "");
	truncate(img, 1 << 20);
	path = conf("good.conf",
		"# a good file\n"
		"portals = [ \"127.0.0.1:13260\", \"[::1]:13261\",\n"
		"            \"0.0.0.0:13262=10.0.2.100:3260\" ];\n"
		"targets = (\n"
		"  { name = \"iqn.2026-11.org.example:one\";\n"
		"    initiators = [ \"ALL\" ];\n"
		"    nop_interval = 5; nop_count = 3;\n"
		"    params = { MaxRecvDataSegmentLength = 262144; ImmediateData = \"No\"; InitialR2T = true; };\n"
		"    luns = (\n"
		"      { lun = 1; backend = \"file\"; path = \"var/d1.img\"; size = \"1G\";\n"
		"        block_size = 512; rerror = \"retry\"; werror = \"retry\";\n"
		"        retry_interval = 200; retry_timeout = 5000;\n"
		"        retry_errors = [ \"EIO\", \"ENOSPC\" ]; vendor_id = \"ACME\"; },\n"
		"      { lun = 2; backend = \"null\"; size = 67108864; block_size = 4096; }\n"
		"    ); },\n"
		"  { name = \"iqn.2026-11.org.example:two\"; tid = 1;\n"
		"    initiators = [ \"127.0.0.1\", \"10.0.0.0/8\", \"::1\", \"fd00::/8\", \"iqn.1994-05.com.example:host\" ];\n"
		"    luns = ( { lun = 3; path = \"exists.img\"; direct = false; } ); },\n"
		"  { name = \"iqn.2026-11.org.example:three\";\n"
		"    incoming_users = [ \"alice\", \"carol\" ]; outgoing_user = \"bob\"; }\n"
		");\n"
		"accounts = ( { user = \"alice\"; password = \"alice-secret-1\"; },\n"
		"             { user = \"bob\"; password = \"bob-secret-12\"; },\n"
		"             { user = \"carol\"; password = \"carol-secret-1\"; } );\n"
		"discovery = { incoming_users = [ \"carol\" ]; };\n");
	char sub[512];
	snprintf(sub, sizeof(sub), "%s/var", tmpdir);
	mkdir(sub, 0755);

	ret = config_load(path, &cfg, err, sizeof(err));
	CHECK(ret == 0, "good file refused: %s", err);
	if (ret)
		return;
	CHECK(cfg.nr_portals == 3, "%d portals", cfg.nr_portals);
	CHECK(cfg.portals[1].listen.ss_family == AF_INET6, "v6 portal");
	CHECK(strcmp(cfg.portals[2].advertise, "10.0.2.100:3260") == 0,
	      "advertise \"%s\"", cfg.portals[2].advertise);
	CHECK(cfg.portals[0].advertise[0] == '\0', "no advertise");
	CHECK(strcmp(cfg.portals[2].text, "0.0.0.0:13262=10.0.2.100:3260") == 0,
	      "text %s", cfg.portals[2].text);

	tgt_table_init();
	ret = config_apply(&cfg, err, sizeof(err));
	CHECK(ret == 0, "apply: %s", err);
	config_free(&cfg);
	if (ret)
		return;

	/* The explicit tid 1 goes to "two"; "one" and "three" take 2 and 3. */
	struct target *t1 = tgt_get_by_tid(1), *t2 = tgt_get_by_tid(2),
		      *t3 = tgt_get_by_tid(3);
	CHECK(t1 && strcmp(t1->name, "iqn.2026-11.org.example:two") == 0, "tid 1");
	CHECK(t2 && strcmp(t2->name, "iqn.2026-11.org.example:one") == 0, "tid 2");
	CHECK(t3 && strcmp(t3->name, "iqn.2026-11.org.example:three") == 0, "tid 3");
	if (!t1 || !t2 || !t3)
		return;
	CHECK(t2->nop_interval == 5 && t2->nop_count == 3, "nop");
	char v[64];
	CHECK(tgt_param_get(t2, "MaxRecvDataSegmentLength", v, sizeof(v)) == 0 &&
	      strcmp(v, "262144") == 0, "param %s", v);
	CHECK(tgt_param_get(t2, "InitialR2T", v, sizeof(v)) == 0 &&
	      strcmp(v, "Yes") == 0, "bool param %s", v);

	struct scsi_lun *l1 = tgt_lun_get(t2, 1), *l2 = tgt_lun_get(t2, 2);
	CHECK(l1 != NULL && l2 != NULL, "luns");
	if (l1) {
		char want[600];
		snprintf(want, sizeof(want), "%s/var/d1.img", tmpdir);
		CHECK(strcmp(lun_settings_get(l1)->path, want) == 0, "relative path -> %s",
		      lun_settings_get(l1)->path);
		CHECK(l1->nblocks == (1ull << 30) / 512, "nblocks %llu",
		      (unsigned long long)l1->nblocks);
		CHECK(lun_settings_get(l1)->rerror == ERR_POLICY_RETRY &&
		      lun_settings_get(l1)->retry_interval_ms == 200 &&
		      lun_settings_get(l1)->retry_timeout_ms == 5000, "hang settings");
		CHECK(lun_errno_retryable(lun_settings_get(l1)->retry_errors, ENOSPC) &&
		      !lun_errno_retryable(lun_settings_get(l1)->retry_errors, ETIMEDOUT),
		      "retry_errors");
		CHECK(strcmp(lun_settings_get(l1)->vendor_id, "ACME") == 0, "vendor");
		struct stat st;
		CHECK(stat(want, &st) == 0 && st.st_size == 1 << 30 &&
		      st.st_blocks < 1024, "sparse file created");
		scsi_lun_put(l1);
	}
	if (l2) {
		CHECK(l2->nblocks == 67108864 / 4096, "null nblocks");
		scsi_lun_put(l2);
	}
	uint64_t luns[8];
	CHECK(tgt_lun_list(t1, luns, 8) == 1 && luns[0] == 3, "t1 luns");
	CHECK(tgt_lun_list(t3, luns, 8) == 0, "t3 no luns");

	/* ACLs: OR of address and name rules; none = nobody. */
	struct sockaddr_in a4 = { .sin_family = AF_INET };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
	inet_pton(AF_INET, "127.0.0.1", &a4.sin_addr);
	CHECK(tgt_acl_allows(t1, (struct sockaddr *)&a4, "iqn.x:y"), "127.0.0.1");
	inet_pton(AF_INET, "10.200.3.4", &a4.sin_addr);
	CHECK(tgt_acl_allows(t1, (struct sockaddr *)&a4, "iqn.x:y"), "CIDR");
	inet_pton(AF_INET, "11.0.0.1", &a4.sin_addr);
	CHECK(!tgt_acl_allows(t1, (struct sockaddr *)&a4, "iqn.x:y"), "outside");
	CHECK(tgt_acl_allows(t1, (struct sockaddr *)&a4,
			     "IQN.1994-05.com.example:host"), "by name");
	inet_pton(AF_INET6, "fd12::5", &a6.sin6_addr);
	CHECK(tgt_acl_allows(t1, (struct sockaddr *)&a6, NULL), "v6 CIDR");
	inet_pton(AF_INET6, "::ffff:10.1.1.1", &a6.sin6_addr);
	CHECK(tgt_acl_allows(t1, (struct sockaddr *)&a6, NULL), "v4-mapped");
	inet_pton(AF_INET6, "fe80::1", &a6.sin6_addr);
	CHECK(!tgt_acl_allows(t1, (struct sockaddr *)&a6, NULL), "v6 outside");
	CHECK(tgt_acl_allows(t2, (struct sockaddr *)&a6, NULL), "ALL");
	CHECK(!tgt_acl_allows(t3, (struct sockaddr *)&a4, "iqn.x:y"),
	      "no rules = nobody");
	CHECK(tgt_acl_add(t1, "10.0.0.0/8", false) == -EEXIST, "dup rule");
	CHECK(tgt_acl_del(t1, "10.9.9.9", false) == -ENOENT, "missing rule");
	CHECK(tgt_acl_add(t1, "10.0.0.300", false) == -EINVAL, "bad addr");
	CHECK(tgt_acl_del(t1, "127.0.0.1/32", false) == 0, "del /32 alias");

	/* CHAP: accounts defined after the targets that use them. */
	char secret[64], user[64];
	CHECK(!acct_required(1) && acct_required(3) &&
	      acct_required(ACCT_DISCOVERY_TID), "acct_required");
	CHECK(acct_incoming_secret(3, "alice", secret, sizeof(secret)) == 0 &&
	      strcmp(secret, "alice-secret-1") == 0, "alice");
	CHECK(acct_incoming_secret(3, "bob", secret, sizeof(secret)) == -ENOENT,
	      "bob is outgoing only");
	CHECK(acct_outgoing(3, user, sizeof(user), secret, sizeof(secret)) == 0 &&
	      strcmp(user, "bob") == 0, "outgoing %s", user);
	CHECK(acct_incoming_secret(ACCT_DISCOVERY_TID, "carol", secret,
				   sizeof(secret)) == 0, "discovery");

	tgt_put(t1);
	tgt_put(t2);
	tgt_put(t3);

	/* Applying the same file again collides and leaves the table as it
	 * was. */
	ret = config_load(path, &cfg, err, sizeof(err));
	CHECK(ret == 0, "%s", err);
	ret = config_apply(&cfg, err, sizeof(err));
	CHECK(ret != 0, "second apply succeeded");
	CHECK(tgt_count() == 3, "table changed by a failed apply: %d",
	      tgt_count());
	config_free(&cfg);
	CHECK(acct_incoming_secret(3, "alice", secret, sizeof(secret)) == 0,
	      "a failed apply removed accounts it did not create");
	/* Deleting a target drops its bindings, so a new target with the
	 * same tid starts without CHAP. */
	CHECK(config_target_delete(3, false) == 0, "delete 3");
	CHECK(!acct_required(3), "bindings of a deleted target remain");
	tgt_table_clear();
	acct_clear();
	CHECK(tgt_count() == 0, "clear");
}

/* ---- apply rolls back ---- */
static void test_apply_rollback(void)
{
	struct config cfg;
	char err[1024], made[512], blocker[512];
	const char *path;
	int ret;

	/* LUN 2's store is a 1000-byte file: not a whole number of blocks, so
	 * opening it fails after target one and LUN 1 were created. */
	snprintf(blocker, sizeof(blocker), "%s/odd.img", tmpdir);
	write_file(blocker, "");
	truncate(blocker, 1000);
	snprintf(made, sizeof(made), "%s/newdir/made.img", tmpdir);
	unlink(made);
	path = conf("rollback.conf",
		"targets = (\n"
		"  { name = \"iqn.2026-11.org.example:a\"; luns = ( { lun = 1; path = \"newdir/made.img\"; size = \"1M\"; } ); },\n"
		"  { name = \"iqn.2026-11.org.example:b\";\n"
		"    luns = ( { lun = 2; path = \"odd.img\"; } ); }\n"
		");\n"
		"accounts = ( { user = \"rb\"; password = \"rb-secret-123\"; } );\n");
	ret = config_load(path, &cfg, err, sizeof(err));
	CHECK(ret == 0, "%s", err);
	ret = config_apply(&cfg, err, sizeof(err));
	CHECK(ret != 0, "apply of an odd-sized store succeeded");
	char want[600];
	snprintf(want, sizeof(want), "%s:4: lun 2: ", path);
	CHECK(strncmp(err, want, strlen(want)) == 0, "\"%s\"", err);
	CHECK(tgt_count() == 0, "targets left behind: %d", tgt_count());
	CHECK(access(made, F_OK) != 0, "created backing file left behind");
	*strrchr(made, '/') = '\0';
	CHECK(access(made, F_OK) != 0, "created directory left behind");
	CHECK(acct_delete("rb") == -ENOENT, "created account left behind");
	config_free(&cfg);
}

/* ---- bad files ---- */
static void test_bad_files(void)
{
	static const struct {
		const char *text;
		const char *msg;	/* after "FILE:" */
	} cases[] = {
		{ "portals = [ \"1.2.3.4:3260\" \n",
		  "2: syntax: syntax error" },
		{ "portals = [ \"1.2.3.4:3260\" ];\nfoo = 1;\n",
		  "2: foo: unknown key" },
		{ "portals = [ \"1.2.3.4:99999\" ];\n",
		  "1: portals: \"1.2.3.4:99999\" is not ADDR:PORT or [IPv6]:PORT" },
		{ "portals = [ \"127.0.0.1:3260\",\n  \"127.0.0.1:3260\" ];\n",
		  "2: portals: \"127.0.0.1:3260\" is listed twice" },
		{ "portals = [ \"0.0.0.0:3260=0.0.0.0:3260\" ];\n",
		  "1: portals: advertised address \"0.0.0.0:3260\" must be one initiators can reach, not a wildcard" },
		{ "portals = \"1.2.3.4\";\n",
		  "1: portals: expected an array of strings [ \"ADDR:PORT\" ], not a string" },
		{ "targets = ( { tid = 1; } );\n",
		  "1: name: missing (every target needs an IQN)" },
		{ "targets = ( { name = \"iqn.x:a b\"; } );\n",
		  "1: name: \"iqn.x:a b\" is not a valid iSCSI name (letters, digits, '.', '-', ':')" },
		{ "targets = ( { name = \"iqn.x:a\"; },\n { name = \"iqn.x:a\"; } );\n",
		  "2: name: target iqn.x:a is defined twice" },
		{ "targets = ( { name = \"iqn.x:a\"; tid = 4; },\n { name = \"iqn.x:b\";\n tid = 4; } );\n",
		  "3: tid: tid 4 is already used by iqn.x:a" },
		{ "targets = ( { name = \"iqn.x:a\";\n  colour = \"red\"; } );\n",
		  "2: colour: unknown key" },
		{ "targets = ( { name = \"iqn.x:a\";\n  initiators = [ \"10.0.0.0/33\" ]; } );\n",
		  "2: initiators: \"10.0.0.0/33\" is not ALL, an IPv4/IPv6 address, a CIDR or an iqn./eui./naa. name" },
		{ "targets = ( { name = \"iqn.x:a\";\n  params = { MaxBurstLength = 100; }; } );\n",
		  "2: MaxBurstLength: bad value \"100\"" },
		{ "targets = ( { name = \"iqn.x:a\";\n  params = { Colour = 1; }; } );\n",
		  "2: Colour: unknown iSCSI key (RFC 7143 section 13 operational keys only)" },
		{ "targets = ( { name = \"iqn.x:a\";\n  nop_interval = -1; } );\n",
		  "2: nop_interval: -1 is out of range 0..3600" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { backend = \"null\"; } ); } );\n",
		  "2: lun: missing (every LUN needs a number)" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 0; backend = \"null\"; } ); } );\n",
		  "2: lun: 0 is out of range 1..255 (LUN 0 is the controller)" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"null\"; },\n  { lun = 1; backend = \"null\"; } ); } );\n",
		  "3: lun: LUN 1 is defined twice in target iqn.x:a" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"null\";\n    colour = 1; } ); } );\n",
		  "3: colour: unknown key" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"null\";\n    size = \"1Q\"; } ); } );\n",
		  "3: size: bad size \"1Q\" (bytes, or a number with K, M, G or T)" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"null\";\n    block_size = 1000; } ); } );\n",
		  "3: block_size: must be a power of two from 512 to 65536" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"null\";\n    block_size = \"512\"; } ); } );\n",
		  "3: block_size: expected an integer, not a string" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"null\";\n    direct = 1; } ); } );\n",
		  "3: direct: expected a boolean (true or false), not an integer" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"sheepdog\"; } ); } );\n",
		  "2: backend: unknown backend \"sheepdog\" (file, null, iscsi or rbd)" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"rbd\"; } ); } );\n",
		  "2: path: missing (an rbd LUN needs POOL/IMAGE)" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"null\";\n    retry_errors = [ \"EIO\", \"EPERM\" ]; } ); } );\n",
		  "3: retry_errors: EPERM is never retried: it reports a bad request, not a failing store" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"null\";\n    size = \"1000\"; } ); } );\n",
		  "3: size: size 1000 is not a multiple of the block size 512" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; backend = \"file\"; } ); } );\n",
		  "2: path: missing (a file LUN needs one)" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1;\n    path = \"nonexistent.img\"; } ); } );\n",
		  "3: path: @DIR@/nonexistent.img does not exist and no size is given to create it" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1;\n    path = \"exists.img/sub/x.img\"; size = \"1M\"; } ); } );\n",
		  "3: path: cannot create @DIR@/exists.img/sub/x.img: @DIR@/exists.img is not a directory" },
		{ "accounts = ( { user = \"alice\"; password = \"s1\"; },\n  { user = \"alice\"; password = \"s2\"; } );\n",
		  "2: user: account alice is defined twice" },
		{ "accounts = ( { user = \"alice\"; } );\n",
		  "1: password: missing (the CHAP secret)" },
		{ "accounts = ( { user = \"al ice\"; password = \"s\"; } );\n",
		  "1: user: \"al ice\" is not a CHAP name (1 to 255 printable characters, no blanks or ',')" },
		{ "accounts = ( { user = \"alice\"; password = \"s\";\n  role = \"admin\"; } );\n",
		  "2: role: unknown key" },
		{ "targets = ( { name = \"iqn.x:a\";\n  incoming_users = [ \"mallory\" ]; } );\n",
		  "2: incoming_users: no account \"mallory\" (define it in accounts)" },
		{ "targets = ( { name = \"iqn.x:a\"; incoming_users = [ \"alice\" ];\n  outgoing_user = \"alice\"; } );\naccounts = ( { user = \"alice\"; password = \"s\"; } );\n",
		  "2: outgoing_user: alice also authenticates initiators (incoming_users): one CHAP secret must not be used in both directions" },
		{ "accounts = ( { user = \"alice\"; password = \"same-secret\"; },\n { user = \"bob\"; password = \"same-secret\"; } );\ndiscovery = { incoming_users = [ \"alice\" ];\n  outgoing_user = \"bob\"; };\n",
		  "4: outgoing_user: bob has the same password as incoming account alice: one CHAP secret must not be used in both directions" },
		{ "discovery = { incoming_users = \"alice\"; };\n",
		  "1: incoming_users: expected an array of account names [ \"alice\", ... ], not a string" },
		{ "targets = ( { name = \"iqn.x:a\"; luns = (\n  { lun = 1; path = \"d.img\"; size = \"1M\";\n    direct = false;\n    werror = \"retry\"; } ); } );\n",
		  "4: werror: rerror/werror = retry needs direct = true: through the page cache a failed write may already be lost, so retrying it would hide data loss" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct config cfg;
		char err[1024], want[2048], name[32];
		const char *path;
		int ret;

		snprintf(name, sizeof(name), "bad%zu.conf", i);
		path = conf(name, cases[i].text);
		/* @DIR@ in the expectation stands for the temp directory. */
		char msg[1024];
		const char *m = cases[i].msg;
		size_t o = 0;
		while (*m && o < sizeof(msg) - 300) {
			if (strncmp(m, "@DIR@", 5) == 0) {
				o += (size_t)snprintf(msg + o, sizeof(msg) - o,
						      "%s", tmpdir);
				m += 5;
			} else {
				msg[o++] = *m++;
			}
		}
		msg[o] = '\0';
		snprintf(want, sizeof(want), "%s:%s", path, msg);
		ret = config_load(path, &cfg, err, sizeof(err));
		CHECK(ret == -EINVAL, "bad file %zu accepted", i);
		CHECK(strcmp(err, want) == 0, "bad file %zu:\n   got  \"%s\"\n   want \"%s\"",
		      i, err, want);
		if (ret == 0)
			config_free(&cfg);
	}

	/* A file that does not exist. */
	struct config cfg;
	char err[512];
	CHECK(config_load("/nonexistent/holdfast.conf", &cfg, err,
			  sizeof(err)) == -ENOENT, "missing file");
	CHECK(strcmp(err, "/nonexistent/holdfast.conf: No such file or directory") == 0,
	      "%s", err);
}

/* The bundled targets.conf must load (its LUN path is relative to it). */
static void test_bundled(void)
{
	struct config cfg;
	char err[1024];
	const char *path = "targets.conf";

	if (access(path, R_OK) != 0) {
		printf("skip bundled targets.conf (run from the repo root)\n");
		return;
	}
	int ret = config_load(path, &cfg, err, sizeof(err));
	CHECK(ret == 0 || strstr(err, "var/disk1.img"), "%s", err);
	if (ret == 0) {
		/* loopback only: 127.0.0.1 and ::1 (safe defaults) */
		CHECK(cfg.nr_portals == 2, "portals");
		for (int i = 0; i < cfg.nr_portals; i++) {
			const struct sockaddr_storage *ss = &cfg.portals[i].listen;

			CHECK((ss->ss_family == AF_INET &&
			       ((const struct sockaddr_in *)ss)->sin_addr.s_addr ==
				       htonl(INADDR_LOOPBACK)) ||
			      (ss->ss_family == AF_INET6 &&
			       IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)
							    ->sin6_addr)),
			      "portal %s is not loopback", cfg.portals[i].text);
		}
		config_free(&cfg);
	}
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/holdfast-test-config-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	log_init(true, false);
	test_sizes();
	test_portals();
	test_lun_settings();
	test_table();
	test_good_file();
	test_apply_rollback();
	test_bad_files();
	test_bundled();

	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return CHECK_SUMMARY("test_config");
}
