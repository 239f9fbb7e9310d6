/* test_lun_keys.c - the LUN key table (target/lun/lun_keys.c): every row
 * parses its own default and its own printed value, refuses bad values
 * without touching the settings, says which keys change at run time,
 * checks whole settings once per rule, diffs and merges by its flags; and
 * a LUN dumped as targets.conf loads back to the same settings
 * (config_dump -> config_load -> config_apply -> config_dump). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "config_internal.h"
#include "lun.h"
#include "reactor.h"
#include "scsi.h"
#include "target.h"
#include "util.h"

static char tmpdir[256];

/* A value other than the default for each kind of key, as text. */
static const struct {
	const char *key, *value;
} other_values[] = {
	{ "lun", "7" },
	{ "backend", "null" },
	{ "path", "/srv/x.img" },
	{ "size", "8M" },
	{ "block_size", "4096" },
	{ "direct", "false" },
	{ "sync", "yes" },
	{ "readonly", "1" },
	{ "removable", "on" },
	{ "thin_provisioning", "true" },
	{ "write_cache", "0" },
	{ "online", "false" },
	{ "sense_format", "descriptor" },
	{ "vendor_id", "ACME" },
	{ "product_id", "ROAD RUNNER" },
	{ "product_rev", "9.1" },
	{ "scsi_id", "my-disk" },
	{ "scsi_sn", "SN-42" },
	{ "rerror", "retry" },
	{ "werror", "retry" },
	{ "retry_interval", "250" },
	{ "retry_timeout", "4000" },
	{ "retry_errors", "EIO:ETIMEDOUT" },
	{ "alua_group", "3" },
	{ "alua_peer_group", "4" },
	{ "alua_state", "standby" },
	{ "alua_state_dir", "/srv/shared-state" },
	{ "alua_lock", "scsi-pr" },
	{ "alua_pr_key", "0x123456789abcdef0" },
	{ "fault", "eio,ops=w,lba=0-7" },
	{ "filters", "passthrough,fault,passthrough" },
	{ "bsopts", "x=1" },
	{ "initiator_name", "iqn.2026-11.org.example:gw" },
	{ "portals", "192.0.2.1,192.0.2.2" },
	{ "remote_timeout", "3000" },
	{ "connect_timeout", "2000" },
	{ "reconnect_max", "5" },
	{ "header_digest", "none" },
	{ "data_digest", "crc32c" },
	{ "mutual_user", "bob" },
	{ "mutual_password", "bob-secret-12" },
	{ "ceph_conf", "/etc/ceph/other.conf" },
	{ "ceph_id", "holdfast" },
	{ "ceph_keyring", "/etc/ceph/k" },
	{ "rbd_osd_op_timeout", "30" },
	{ "rbd_cache", "false" },
};

static void test_table_shape(void)
{
	const struct lun_key *k, *k2;
	unsigned n = 0;

	for (unsigned i = 0; (k = lun_key_at(i)); i++, n++) {
		CHECK(lun_key_find(lun_key_name(k)) == k, "%s found",
		      lun_key_name(k));
		for (unsigned j = i + 1; (k2 = lun_key_at(j)); j++) {
			CHECK(strcmp(lun_key_name(k), lun_key_name(k2)) != 0,
			      "%s twice", lun_key_name(k));
			CHECK(!lun_key_json(k) || !lun_key_json(k2) ||
			      strcmp(lun_key_json(k), lun_key_json(k2)) != 0,
			      "JSON name %s twice", lun_key_json(k));
		}
	}
	CHECK(n == ARRAY_SIZE(other_values), "%u keys, %zu tested", n,
	      ARRAY_SIZE(other_values));
	CHECK(lun_key_find("blocksize") == lun_key_find("block_size"),
	      "tgtadm's blocksize alias");
	CHECK(lun_key_find("colour") == NULL, "unknown key");
}

/* Which keys a live LUN may change: what `logicalunit update` and SIGHUP
 * have always accepted. */
static void test_runtime_flags(void)
{
	static const char *const runtime[] = {
		"vendor_id", "product_id", "product_rev", "scsi_id", "scsi_sn",
		"sense_format", "removable", "readonly", "online",
		"thin_provisioning", "write_cache", "rerror", "werror",
		"retry_interval", "retry_timeout", "retry_errors",
		"size", "alua_group", "alua_peer_group", "alua_state",
		"filters",
	};
	static const char *const store[] = {
		"backend", "path", "block_size", "direct", "sync",
		"bsopts", "initiator_name", "portals", "remote_timeout",
		"connect_timeout", "reconnect_max", "header_digest",
		"data_digest", "mutual_user", "mutual_password",
		"ceph_conf", "ceph_id", "ceph_keyring", "rbd_osd_op_timeout",
		"rbd_cache", "alua_state_dir", "alua_lock", "alua_pr_key",
	};
	const struct lun_key *k;

	for (unsigned i = 0; (k = lun_key_at(i)); i++) {
		bool want = false, want_store = false;

		for (size_t j = 0; j < ARRAY_SIZE(runtime); j++)
			want |= strcmp(runtime[j], lun_key_name(k)) == 0;
		for (size_t j = 0; j < ARRAY_SIZE(store); j++)
			want_store |= strcmp(store[j], lun_key_name(k)) == 0;
		CHECK(!!(lun_key_flags(k) & LUN_KEY_RUNTIME) == want,
		      "%s runtime flag", lun_key_name(k));
		CHECK(!!(lun_key_flags(k) & LUN_KEY_STORE) == want_store,
		      "%s store flag", lun_key_name(k));
	}
	CHECK(lun_key_flags(lun_key_find("fault")) & LUN_KEY_PARAM,
	      "fault goes to the store");
	CHECK(lun_key_flags(lun_key_find("filters")) & LUN_KEY_STACK,
	      "filters rebuilds the stack");
	CHECK(lun_key_flags(lun_key_find("rerror")) & LUN_KEY_HANG, "hang");
	CHECK(lun_key_flags(lun_key_find("write_cache")) & LUN_KEY_MODE, "mode");
	CHECK(!(lun_key_flags(lun_key_find("vendor_id")) &
		(LUN_KEY_HANG | LUN_KEY_MODE)), "vendor_id notifies nobody");
}

/* Default and another value of every key: printed, parsed back, equal. */
static void test_format_round_trip(void)
{
	struct lun_settings a, b;
	const struct lun_key *k;
	char text[2048], again[2048], err[256];

	lun_settings_default(&a, 1);
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; (k = lun_key_at(i)); i++) {
			if (pass == 1) {
				CHECK(strcmp(other_values[i].key,
					     lun_key_name(k)) == 0,
				      "other_values[] in table order at %s",
				      lun_key_name(k));
				CHECK(lun_setting_apply(&a, other_values[i].key,
							other_values[i].value, err,
							sizeof(err)) == 0,
				      "%s=%s: %s", other_values[i].key,
				      other_values[i].value, err);
			}
			if (lun_key_flags(k) & LUN_KEY_ITEM)
				continue;	/* printed as part of bsopts */
			lun_key_format(k, &a, text, sizeof(text));
			if ((lun_key_flags(k) & LUN_KEY_NONEMPTY) && !text[0])
				continue;	/* printers omit it */
			/* parsing the printed value changes nothing ... */
			b = a;
			CHECK(lun_setting_apply(&b, lun_key_name(k), text, err,
						sizeof(err)) == 0,
			      "%s=\"%s\" does not parse back: %s",
			      lun_key_name(k), text, err);
			CHECK(memcmp(&a, &b, sizeof(a)) == 0,
			      "%s: \"%s\" parses to another value",
			      lun_key_name(k), text);
			/* ... and sets it on settings that had another one */
			lun_settings_default(&b, 1);
			if (pass == 0)
				lun_setting_apply(&b, other_values[i].key,
						  other_values[i].value, err,
						  sizeof(err));
			lun_setting_apply(&b, lun_key_name(k), text, err,
					  sizeof(err));
			lun_key_format(k, &b, again, sizeof(again));
			CHECK(strcmp(text, again) == 0, "%s: \"%s\" -> \"%s\"",
			      lun_key_name(k), text, again);
		}
	}
	/* the printed forms the printers rely on */
	lun_settings_default(&a, 1);
	lun_key_format(lun_key_find("retry_errors"), &a, text, sizeof(text));
	CHECK(strncmp(text, "EIO,", 4) == 0 && strstr(text, "ESHUTDOWN") &&
	      !strchr(text, ' '), "default set \"%s\"", text);
	lun_setting_apply(&a, "retry_errors", "none", err, sizeof(err));
	lun_key_format(lun_key_find("retry_errors"), &a, text, sizeof(text));
	CHECK(strcmp(text, "none") == 0, "empty set \"%s\"", text);
	lun_key_format(lun_key_find("direct"), &a, text, sizeof(text));
	CHECK(strcmp(text, "true") == 0, "bool \"%s\"", text);
	lun_key_format(lun_key_find("sense_format"), &a, text, sizeof(text));
	CHECK(strcmp(text, "fixed") == 0, "sense \"%s\"", text);
}

static void test_defaults(void)
{
	struct lun_settings s;

	lun_settings_default(&s, 3);
	CHECK(s.lun == 3 && strcmp(s.backend, "file") == 0, "lun, backend");
	CHECK(s.block_size == 512 && s.direct && !s.sync, "store");
	CHECK(s.write_cache && s.online && !s.readonly && !s.removable &&
	      !s.thin_provisioning && !s.sense_desc, "flags");
	CHECK(strcmp(s.vendor_id, "HOLDFAST") == 0 &&
	      strcmp(s.product_id, "VIRTUAL-DISK") == 0 &&
	      strcmp(s.product_rev, "0001") == 0 && !s.scsi_id[0] &&
	      !s.scsi_sn[0], "identity");
	CHECK(s.rerror == ERR_POLICY_REPORT && s.werror == ERR_POLICY_REPORT &&
	      s.retry_interval_ms == 1000 && s.retry_timeout_ms == 0, "hang");
	CHECK(lun_errno_retryable(s.retry_errors, EIO) &&
	      lun_errno_retryable(s.retry_errors, ESHUTDOWN) &&
	      !lun_errno_retryable(s.retry_errors, EROFS), "retry_errors");
	CHECK(!s.path[0] && !s.backend_opts[0] && s.size == 0, "empty");
}

static void test_parse_errors(void)
{
	static const struct {
		const char *key, *value, *reason;
	} bad[] = {
		{ "lun", "0", "must be 1..255 (LUN 0 is the controller)" },
		{ "lun", "256", "must be 1..255 (LUN 0 is the controller)" },
		{ "path", "", "empty path" },
		{ "retry_interval", "3600001", "milliseconds, 1 to 3600000" },
		{ "retry_interval", "1x", "milliseconds, 1 to 3600000" },
		{ "retry_timeout", "4294967296", "milliseconds, 0 (never) to 4294967295" },
		{ "block_size", "131072", "must be a power of two from 512 to 65536" },
		{ "werror", "", "expected \"report\" or \"retry\"" },
		{ "retry_errors", "EINVAL", "EINVAL is never retried: it reports a bad request, not a failing store" },
		{ "scsi_sn", "\x7f", "scsi_sn must be printable ASCII" },
		{ "filters", "file", "file is not a filter (filter names, top first: fault, passthrough (or none))" },
		{ "filters", "fault,nosuch", "nosuch is not a filter (filter names, top first: fault, passthrough (or none))" },
		{ "filters", "none,fault", "\"none\" names no filter: it stands alone" },
		{ "filters", "fault,fault,fault,fault,fault,fault,fault,fault,fault", "at most 8 filters" },
	};
	struct lun_settings s, before;
	char err[512];

	lun_settings_default(&s, 1);
	before = s;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		err[0] = '\0';
		CHECK(lun_setting_apply(&s, bad[i].key, bad[i].value, err,
					sizeof(err)) == -EINVAL,
		      "%s=%s accepted", bad[i].key, bad[i].value);
		CHECK(strcmp(err, bad[i].reason) == 0, "%s: \"%s\"", bad[i].key,
		      err);
		CHECK(memcmp(&s, &before, sizeof(s)) == 0, "%s changed s",
		      bad[i].key);
	}
	/* filters: any of the separators, stored comma-separated */
	CHECK(lun_setting_apply(&s, "filters", "passthrough:fault | passthrough",
				err, sizeof(err)) == 0 &&
	      strcmp(s.filters, "passthrough,fault,passthrough") == 0,
	      "filters separators: \"%s\"", s.filters);
	CHECK(lun_setting_apply(&s, "filters", "none", err, sizeof(err)) == 0 &&
	      s.filters[0] == '\0', "filters=none");
	s = before;
	CHECK(lun_setting_apply(&s, "nope", "1", err, sizeof(err)) == -ENOENT &&
	      strcmp(err, "unknown key") == 0, "unknown");
	CHECK(lun_setting_apply(&s, "vendor_id", NULL, err, sizeof(err)) ==
	      -EINVAL, "no value");
}

/* Each whole-LUN rule once, one message, the key to blame. */
static void test_check(void)
{
	struct lun_settings s;
	struct backend buffered = { .direct = false }, direct = { .direct = true };
	const char *key;
	char err[512];

	lun_settings_default(&s, 1);
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "path") == 0 &&
	      strcmp(err, "a file LUN needs a path") == 0, "%s", err);
	snprintf(s.path, sizeof(s.path), "/x.img");
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == 0 &&
	      key == NULL, "%s", err);

	/* the safety rule, from the settings ... */
	s.direct = false;
	s.rerror = ERR_POLICY_RETRY;
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "rerror") == 0 && strstr(err, "needs direct = true"),
	      "%s", err);
	s.werror = ERR_POLICY_RETRY;
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "werror") == 0, "blame werror first");
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", err);
	/* ... and from the store actually open, with the same message */
	s.direct = true;
	CHECK(lun_settings_check(&s, &buffered, &key, err, sizeof(err)) ==
	      -EINVAL && strcmp(err, msg) == 0, "%s", err);
	CHECK(lun_settings_check(&s, &direct, NULL, err, sizeof(err)) == 0,
	      "%s", err);
	/* alua_lock = scsi-pr: a reservation needs a SCSI store; with it a
	 * block device needs no alua_state_dir; EBADE is never held */
	{
		struct lun_settings p = s;

		CHECK(lun_setting_apply(&p, "alua_lock", "nfs", err,
					sizeof(err)) == -EINVAL &&
		      strcmp(err, "file or scsi-pr") == 0, "%s", err);
		CHECK(lun_setting_apply(&p, "alua_pr_key", "0xzz", err,
					sizeof(err)) == -EINVAL, "bad key");
		CHECK(lun_setting_apply(&p, "alua_pr_key", "0xAB", err,
					sizeof(err)) == 0 && p.alua_pr_key == 0xab,
		      "hex key");
		CHECK(lun_setting_apply(&p, "retry_errors", "EIO,EBADE", err,
					sizeof(err)) == -EINVAL,
		      "EBADE (RESERVATION CONFLICT) cannot be retried");
		p.alua_group = 1;
		p.alua_peer_group = 2;
		p.alua_lock_pr = true;
		CHECK(lun_settings_check(&p, NULL, &key, err, sizeof(err)) ==
		      -EINVAL && strcmp(key, "alua_lock") == 0 &&
		      strstr(err, "iscsi store or a SCSI block device"),
		      "scsi-pr on a regular file: %s", err);
		snprintf(p.path, sizeof(p.path), "/dev/sdz");
		CHECK(lun_settings_check(&p, NULL, &key, err, sizeof(err)) == 0,
		      "scsi-pr on a block device, no alua_state_dir: %s", err);
		p.alua_lock_pr = false;
		CHECK(lun_settings_check(&p, NULL, &key, err, sizeof(err)) ==
		      -EINVAL && strcmp(key, "alua_state_dir") == 0,
		      "the lock file on a block device needs alua_state_dir");
	}
	/* a buffered null LUN has no page cache to lose writes in */
	snprintf(s.backend, sizeof(s.backend), "null");
	s.path[0] = '\0';
	s.direct = false;
	CHECK(lun_settings_check(&s, NULL, NULL, err, sizeof(err)) == 0, "%s",
	      err);
	/* the table's limits hold for settings not built by the parser */
	s.block_size = 1000;
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "block_size") == 0 &&
	      strcmp(err, "must be a power of two from 512 to 65536") == 0,
	      "%s", err);
	s.block_size = 512;
	s.retry_interval_ms = 0;
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "retry_interval") == 0, "%s", err);
	s.retry_interval_ms = 1000;
	s.size = 1000;
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "size") == 0 &&
	      strcmp(err, "size 1000 is not a multiple of the block size 512") == 0,
	      "%s", err);
	s.size = 0;
	/* a fault spec needs a fault filter to go to */
	snprintf(s.backend_opts, sizeof(s.backend_opts), "eio");
	snprintf(s.filters, sizeof(s.filters), "passthrough");
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "fault") == 0 &&
	      strcmp(err, "a fault spec needs the fault filter in filters") == 0,
	      "%s", err);
	snprintf(s.filters, sizeof(s.filters), "passthrough,fault");
	CHECK(lun_settings_check(&s, NULL, NULL, err, sizeof(err)) == 0, "%s",
	      err);
}

static void test_diff_merge(void)
{
	struct lun_settings a, b;
	const struct lun_key *first;
	char err[256];

	lun_settings_default(&a, 1);
	a.size = 1 << 20;
	b = a;
	CHECK(lun_settings_diff(&a, &b, &first) == 0 && !first, "equal");
	b.size = 0;	/* "the store's size" */
	CHECK(lun_settings_diff(&a, &b, NULL) == 0, "size 0 matches");
	lun_setting_apply(&b, "vendor_id", "X", err, sizeof(err));
	lun_setting_apply(&b, "retry_interval", "5", err, sizeof(err));
	unsigned f = lun_settings_diff(&a, &b, &first);
	CHECK((f & LUN_KEY_CHANGED) && (f & LUN_KEY_RUNTIME) &&
	      (f & LUN_KEY_HANG) && !(f & LUN_KEY_MODE) &&
	      !(f & LUN_KEY_STORE) && !first, "flags %#x", f);
	lun_setting_apply(&b, "write_cache", "false", err, sizeof(err));
	CHECK(lun_settings_diff(&a, &b, NULL) & LUN_KEY_MODE, "mode");
	lun_setting_apply(&b, "block_size", "4096", err, sizeof(err));
	lun_setting_apply(&b, "direct", "false", err, sizeof(err));
	f = lun_settings_diff(&a, &b, &first);
	CHECK((f & LUN_KEY_STORE) && first &&
	      strcmp(lun_key_name(first), "block_size") == 0,
	      "first fixed key %s", first ? lun_key_name(first) : "-");

	/* merge takes the run-time keys only */
	struct lun_settings m = a;
	lun_settings_merge(&m, &b, LUN_KEY_RUNTIME);
	CHECK(strcmp(m.vendor_id, "X") == 0 && m.retry_interval_ms == 5 &&
	      !m.write_cache, "runtime keys copied");
	CHECK(m.block_size == 512 && m.direct, "store keys kept");
}

/* ---- scsi_lun_update(): the one update ---- */

static void test_update(void)
{
	struct lun_settings s, want;
	const struct lun_settings *before, *after;
	struct scsi_lun *l = NULL;
	const char *msg = NULL;
	char err[512];
	int ret;

	lun_settings_default(&s, 4);
	snprintf(s.backend, sizeof(s.backend), "null");
	s.size = 1 << 20;
	ret = scsi_lun_create(&s, &l, &msg);
	CHECK(ret == 0 && l, "create: %s", msg ? msg : "");
	if (!l)
		return;
	before = lun_settings_get(l);
	CHECK(before->size == 1 << 20, "snapshot has the open size");

	/* nothing to change: same snapshot */
	want = *before;
	CHECK(scsi_lun_update(l, &want, 0, err, sizeof(err)) == 0, "%s", err);
	CHECK(lun_settings_get(l) == before, "no new snapshot");

	/* run-time keys: a new snapshot, store keys untouched */
	lun_setting_apply(&want, "vendor_id", "NEWVEND", err, sizeof(err));
	lun_setting_apply(&want, "werror", "retry", err, sizeof(err));
	want.size = 0;	/* "the store's size", as a reload sends it */
	CHECK(scsi_lun_update(l, &want, 0, err, sizeof(err)) == 1, "%s", err);
	after = lun_settings_get(l);
	CHECK(after != before && strcmp(after->vendor_id, "NEWVEND") == 0 &&
	      after->werror == ERR_POLICY_RETRY && after->size == 1 << 20,
	      "installed");

	/* a fixed key is refused with its name, nothing changes */
	want = *after;
	lun_setting_apply(&want, "vendor_id", "OTHER", err, sizeof(err));
	lun_setting_apply(&want, "block_size", "4096", err, sizeof(err));
	ret = scsi_lun_update(l, &want, 0, err, sizeof(err));
	CHECK(ret == -EPERM &&
	      strcmp(err, "block_size: fixed when the LUN is created") == 0,
	      "%d %s", ret, err);
	CHECK(lun_settings_get(l) == after, "refused update kept the snapshot");

	/* the store refuses a bad fault spec: nothing changes */
	want = *after;
	lun_setting_apply(&want, "vendor_id", "OTHER", err, sizeof(err));
	lun_setting_apply(&want, "fault", "ops=bogus", err, sizeof(err));
	ret = scsi_lun_update(l, &want, 0, err, sizeof(err));
	CHECK(ret < 0 && strncmp(err, "fault=ops=bogus: ", 17) == 0, "%d %s",
	      ret, err);
	CHECK(lun_settings_get(l) == after &&
	      strcmp(lun_settings_get(l)->vendor_id, "NEWVEND") == 0,
	      "refused fault kept the snapshot");
	/* the same spec again is handed to the store when forced */
	lun_setting_apply(&want, "fault", "eio,ops=r", err, sizeof(err));
	CHECK(scsi_lun_update(l, &want, 0, err, sizeof(err)) == 1, "%s", err);
	CHECK(scsi_lun_update(l, &want, LUN_KEY_PARAM, err, sizeof(err)) == 1,
	      "%s", err);
	scsi_lun_put(l);
}

/* ---- the grace period: an old snapshot outlives every reader ---- */

static struct scsi_lun grace_lun;
static atomic_int grace_phase;
static char grace_seen[2][16];

/* A reactor callback that holds the snapshot for a while, as a slow
 * command step would. */
static void grace_reader(void *arg)
{
	const struct lun_settings *s = lun_settings_get(&grace_lun);

	(void)arg;
	snprintf(grace_seen[0], sizeof(grace_seen[0]), "%s", s->vendor_id);
	atomic_store(&grace_phase, 1);
	usleep(200 * 1000);
	/* still the same, still allocated (ASan/TSan would see a free) */
	snprintf(grace_seen[1], sizeof(grace_seen[1]), "%s", s->vendor_id);
	atomic_store(&grace_phase, 2);
}

static void *grace_thread(void *arg)
{
	reactor_run(arg);
	return NULL;
}

static void test_grace(void)
{
	struct reactor *r = reactor_new(0);
	struct lun_settings *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	pthread_t th;

	CHECK(r && a && b, "setup");
	if (!r || !a || !b)
		return;
	lun_settings_default(a, 1);
	*b = *a;
	snprintf(b->vendor_id, sizeof(b->vendor_id), "NEW");
	atomic_init(&grace_lun.set, a);
	pthread_create(&th, NULL, grace_thread, r);
	reactor_call(r, grace_reader, NULL);
	while (atomic_load(&grace_phase) < 1)
		usleep(1000);
	uint64_t t0 = clock_ms();
	lun_settings_retire(lun_settings_publish(&grace_lun, b));
	CHECK(atomic_load(&grace_phase) == 2,
	      "old snapshot freed while a reactor held it");
	CHECK(clock_ms() - t0 >= 100, "retire waited %llu ms",
	      (unsigned long long)(clock_ms() - t0));
	CHECK(strcmp(grace_seen[0], "HOLDFAST") == 0 &&
	      strcmp(grace_seen[1], "HOLDFAST") == 0, "reader saw one snapshot");
	CHECK(strcmp(lun_settings_get(&grace_lun)->vendor_id, "NEW") == 0,
	      "new one published");
	/* an idle reactor (blocked in epoll_wait) does not hold retire up */
	t0 = clock_ms();
	reactor_synchronize();
	CHECK(clock_ms() - t0 < 100, "idle reactor delayed synchronize");
	reactor_stop(r);
	pthread_join(th, NULL);
	reactor_free(r);
	lun_settings_release(&grace_lun);
}

/* ---- dump -> load round trip ---- */

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

/* The dump of the running table without its timestamp line. */
static char *dump_text(void)
{
	char *text = NULL, *nl;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	CHECK(config_dump(f) == 0, "dump");
	fclose(f);
	nl = strchr(text, '\n');
	memmove(text, nl + 1, strlen(nl + 1) + 1);
	return text;
}

static int load_apply(const char *path)
{
	struct config cfg;
	char err[1024];
	int ret = config_load(path, &cfg, err, sizeof(err));

	CHECK(ret == 0, "load %s: %s", path, err);
	if (ret)
		return ret;
	ret = config_apply(&cfg, err, sizeof(err));
	CHECK(ret == 0, "apply %s: %s", path, err);
	config_free(&cfg);
	return ret;
}

static void test_dump_load(void)
{
	char path[512], path2[512], img[512];
	char *one, *two;
	const struct lun_settings *s;
	struct target *t;
	struct scsi_lun *l;

	snprintf(path, sizeof(path), "%s/one.conf", tmpdir);
	snprintf(path2, sizeof(path2), "%s/dumped.conf", tmpdir);
	snprintf(img, sizeof(img), "%s/d.img", tmpdir);
	write_file(path,
		"targets = ( { name = \"iqn.2026-11.org.example:keys\";\n"
		"  luns = (\n"
		"    { lun = 1; path = \"d.img\"; size = \"4M\"; block_size = 4096;\n"
		"      vendor_id = \"ACME \\\"Q\\\"\"; product_id = \"ROAD RUNNER\";\n"
		"      scsi_sn = \"SN-1\"; sense_format = \"descriptor\";\n"
		"      write_cache = false; thin_provisioning = true;\n"
		"      rerror = \"retry\"; werror = \"retry\"; retry_interval = 250;\n"
		"      retry_timeout = 4000; retry_errors = [ \"EIO\", \"ENOSPC\" ];\n"
		"      fault = \"eio,ops=w,lba=0-7\"; },\n"
		"    { lun = 2; backend = \"null\"; size = \"8M\"; retry_errors = [];\n"
		"      readonly = true; online = false; removable = true; }\n"
		"  ); } );\n");
	tgt_table_init();
	if (load_apply(path))
		return;
	one = dump_text();
	tgt_table_clear();
	/* No portal runs in a unit test, and an empty list does not load:
	 * drop the line (the default portal applies). */
	char *p = strstr(one, "portals = [ ];\n");
	CHECK(p != NULL, "portals line");
	if (p)
		memmove(p, p + 15, strlen(p + 15) + 1);
	write_file(path2, one);

	tgt_table_init();
	if (load_apply(path2)) {
		printf("%s", one);
		free(one);
		return;
	}
	two = dump_text();
	p = strstr(two, "portals = [ ];\n");
	if (p)
		memmove(p, p + 15, strlen(p + 15) + 1);
	CHECK(strcmp(one, two) == 0, "dump of the loaded dump differs:\n%s\n---\n%s",
	      one, two);

	t = tgt_get_by_tid(1);
	l = t ? tgt_lun_get(t, 1) : NULL;
	CHECK(l != NULL, "LUN 1 back");
	if (l) {
		s = lun_settings_get(l);
		CHECK(strcmp(s->vendor_id, "ACME \"Q\"") == 0 &&
		      strcmp(s->path, img) == 0 && s->block_size == 4096 &&
		      s->size == 4 << 20 && s->sense_desc && !s->write_cache &&
		      s->retry_interval_ms == 250 &&
		      lun_errno_retryable(s->retry_errors, ENOSPC) &&
		      !lun_errno_retryable(s->retry_errors, ETIMEDOUT) &&
		      strcmp(s->backend_opts, "eio,ops=w,lba=0-7") == 0,
		      "LUN 1 settings");
		scsi_lun_put(l);
	}
	l = t ? tgt_lun_get(t, 2) : NULL;
	if (l) {
		s = lun_settings_get(l);
		CHECK(s->readonly && !s->online && s->removable &&
		      !lun_errno_retryable(s->retry_errors, EIO), "LUN 2");
		scsi_lun_put(l);
	}
	if (t)
		tgt_put(t);
	tgt_table_clear();
	free(one);
	free(two);
}

/* Where two nodes keep their shared state (lun_shared_state_path) and the
 * refusal of a block device without alua_state_dir. */
static void test_shared_state_path(void)
{
	struct lun_settings s;
	const char *key = NULL;
	char err[512], out[PATH_MAX];

	lun_settings_default(&s, 3);
	snprintf(s.path, sizeof(s.path), "%s/vm.img", tmpdir);
	s.alua_group = 1;
	s.alua_peer_group = 2;
	CHECK(lun_shared_state_path(&s, "iqn.2026-11.org.example:t", ".pr", out,
				    sizeof(out)) == 0 &&
	      strcmp(out + strlen(tmpdir), "/vm.img.pr") == 0,
	      "next to a file store: %s", out);
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == 0,
	      "a file store needs no alua_state_dir: %s", err);
	snprintf(s.alua_state_dir, sizeof(s.alua_state_dir), "/srv/state");
	CHECK(lun_shared_state_path(&s, "iqn.2026-11.org.example:t",
				    ".holdfast-owner", out, sizeof(out)) == 0 &&
	      strcmp(out, "/srv/state/iqn.2026-11.org.example_t.lun3.holdfast-owner") == 0,
	      "in alua_state_dir: %s", out);
	snprintf(s.path, sizeof(s.path), "/dev/mapper/san-vm1");
	CHECK(lun_shared_state_path(&s, "t", ".pr", out, sizeof(out)) == 0,
	      "a block device with alua_state_dir");
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == 0,
	      "a block device with alua_state_dir is fine: %s", err);
	s.alua_state_dir[0] = '\0';
	CHECK(lun_shared_state_path(&s, "t", ".pr", out, sizeof(out)) == -ENOENT,
	      "a block device has no place next to it");
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "alua_state_dir") == 0 && strstr(err, "shared"),
	      "a block device without alua_state_dir is refused: %s", err);
	snprintf(s.alua_state_dir, sizeof(s.alua_state_dir), "relative/dir");
	CHECK(lun_settings_check(&s, NULL, &key, err, sizeof(err)) == -EINVAL &&
	      strcmp(key, "alua_state_dir") == 0,
	      "a relative alua_state_dir is refused");
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/holdfast-test-keys-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	log_init(true, false);
	test_table_shape();
	test_runtime_flags();
	test_defaults();
	test_format_round_trip();
	test_parse_errors();
	test_check();
	test_diff_merge();
	test_update();
	test_grace();
	test_dump_load();
	test_shared_state_path();

	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return CHECK_SUMMARY("test_lun_keys");
}
