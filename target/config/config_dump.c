/* config_dump.c - write the running configuration back out as a
 * targets.conf (DESIGN.md: run-time changes "can be dumped back to a
 * targets.conf").
 *
 *   tgtadm --op show --mode system --name dump --value config > targets.conf
 *
 * The text loads with config_load() and describes what the target table
 * holds now: targets, ACLs, iSCSI overrides, NOP settings, LUNs with every
 * setting, and CHAP bindings.  CHAP secrets are never written (they do not
 * leave account.c); each account gets an empty password that config_load
 * refuses until the operator fills it in. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "account.h"
#include "cbt_set.h"
#include "config.h"
#include "iscsi.h"
#include "config_internal.h"
#include "scsi.h"
#include "target.h"
#include "util.h"

/* The configuration config_apply() last applied (its portals are not in
 * the target table). */
static const struct config *config_active;

void config_set_active(const struct config *cfg)
{
	config_active = cfg;
}

const struct config *config_get_active(void)
{
	return config_active;
}

/* A libconfig string literal: quotes and backslashes escaped. */
static void dump_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

/* The LUN's dirty bitmaps (their bits live in the sidecar, not here). */
static void dump_bitmaps(FILE *f, struct scsi_lun *lun)
{
	struct cbt_bitmap *bm[CFG_MAX_BITMAPS];
	unsigned n;

	if (!lun->cbt)
		return;
	n = cbt_set_list(lun->cbt, bm, CFG_MAX_BITMAPS);
	if (!n)
		return;
	fprintf(f, "        bitmaps = (\n");
	for (unsigned i = 0; i < n && i < CFG_MAX_BITMAPS; i++) {
		fprintf(f, "          { name = ");
		dump_str(f, bm[i]->name);
		fprintf(f, "; granularity = %" PRIu32 "; persistent = %s; enabled = %s; }%s\n",
			bm[i]->granularity, bm[i]->persistent ? "true" : "false",
			atomic_load(&bm[i]->enabled) ? "true" : "false",
			i + 1 < MIN(n, (unsigned)CFG_MAX_BITMAPS) ? "," : "");
	}
	fprintf(f, "        );\n");
}

/* A libconfig value of the kind the key table gives it: numbers and
 * booleans bare, strings quoted, lists as arrays of strings. */
static void dump_value(FILE *f, enum lun_key_kind kind, char *text)
{
	char *save = NULL, *tok;
	bool first = true;

	switch (kind) {
	case LUN_KIND_NUMBER:
	case LUN_KIND_SIZE:
	case LUN_KIND_BOOL:
		fputs(text, f);
		return;
	case LUN_KIND_STRING:
		dump_str(f, text);
		return;
	case LUN_KIND_LIST:
		fputc('[', f);
		if (strcmp(text, "none") != 0)
			for (tok = strtok_r(text, ",", &save); tok;
			     tok = strtok_r(NULL, ",", &save)) {
				fputs(first ? " " : ", ", f);
				dump_str(f, tok);
				first = false;
			}
		fputs(first ? "]" : " ]", f);
		return;
	}
}

/* Every key of the table, one per line, in the table's order. */
static void dump_lun(FILE *f, struct scsi_lun *lun, bool last)
{
	/* Management requests hold config_lock(): the snapshot is stable. */
	const struct lun_settings *s = lun_settings_get(lun);
	const struct lun_key *k;
	char text[2048];

	fprintf(f, "      {\n");
	for (unsigned i = 0; (k = lun_key_at(i)); i++) {
		if (lun_key_flags(k) & LUN_KEY_ITEM)
			continue;	/* written as part of bsopts */
		if ((lun_key_flags(k) & LUN_KEY_ALUA) && !s->alua_group)
			continue;	/* not shared with another node */
		if (lun_key_flags(k) & LUN_KEY_RESIZE)
			/* the size of what is open (a takeover re-reads it,
			 * scsi_alua.c), so a missing store is recreated
			 * alike */
			snprintf(text, sizeof(text), "%llu",
				 (unsigned long long)(atomic_load(&lun->nblocks) *
						      s->block_size));
		else if (lun_key_flags(k) & LUN_KEY_ALUA &&
			 strcmp(lun_key_name(k), "alua_state") == 0)
			/* the state the LUN is in, as before the key table */
			snprintf(text, sizeof(text), "%s",
				 scsi_alua_standby(lun) ? "standby" : "active");
		else
			lun_key_format(k, s, text, sizeof(text));
		if ((lun_key_flags(k) & LUN_KEY_NONEMPTY) && !text[0])
			continue;
		fprintf(f, "        %s = ", lun_key_name(k));
		dump_value(f, lun_key_kind(k), text);
		fprintf(f, ";\n");
	}
	dump_bitmaps(f, lun);
	fprintf(f, "      }%s\n", last ? "" : ",");
}

struct dump_bound {
	FILE *f;
	bool any_in;
	char out[ACCT_NAME_MAX];
};

static void dump_bound_fn(const char *user, bool outgoing, void *arg)
{
	struct dump_bound *d = arg;

	if (outgoing) {
		snprintf(d->out, sizeof(d->out), "%s", user);
		return;
	}
	fprintf(d->f, "%s", d->any_in ? ", " : "    incoming_users = [ ");
	dump_str(d->f, user);
	d->any_in = true;
}

/* incoming_users / outgoing_user lines of tid (indent: 4 spaces). */
static void dump_auth(FILE *f, int tid)
{
	struct dump_bound d = { .f = f };

	acct_for_each_bound(tid, dump_bound_fn, &d);
	if (d.any_in)
		fprintf(f, " ];\n");
	if (d.out[0]) {
		fprintf(f, "    outgoing_user = ");
		dump_str(f, d.out);
		fprintf(f, ";\n");
	}
}

struct dump_targets {
	FILE *f;
	int left;
};

static void dump_target(struct target *t, void *arg)
{
	struct dump_targets *dt = arg;
	FILE *f = dt->f;
	uint64_t luns[TGT_MAX_LUNS];
	struct acl_rule *a;
	struct tgt_param *p;
	bool first = true;
	int n;

	fprintf(f, "  { name = ");
	dump_str(f, t->name);
	fprintf(f, "; tid = %d;\n", t->tid);
	pthread_mutex_lock(&t->lock);
	fprintf(f, "    initiators = [");
	list_for_each_entry(a, &t->acls, link) {
		fprintf(f, "%s", first ? " " : ", ");
		dump_str(f, a->text);
		first = false;
	}
	fprintf(f, "%s];\n", first ? "" : " ");
	fprintf(f, "    nop_interval = %u; nop_count = %u;\n", t->nop_interval,
		t->nop_count);
	if (!list_empty(&t->params)) {
		fprintf(f, "    params = {");
		list_for_each_entry(p, &t->params, link) {
			fprintf(f, " %s = ", p->key);
			dump_str(f, p->value);
			fprintf(f, ";");
		}
		fprintf(f, " };\n");
	}
	pthread_mutex_unlock(&t->lock);
	dump_auth(f, t->tid);

	n = tgt_lun_list(t, luns, TGT_MAX_LUNS);
	/* a snapshot export lives as long as its job, not in the file */
	for (int i = 0, k = 0; i < n; i++) {
		struct scsi_lun *lun = tgt_lun_get(t, luns[i]);

		if (lun && strcmp(lun_settings_get(lun)->backend, "snapshot") != 0)
			luns[k++] = luns[i];
		if (i == n - 1)
			n = k;
		scsi_lun_put(lun);
	}
	fprintf(f, "    luns = (%s", n ? "\n" : " ");
	for (int i = 0; i < n; i++) {
		struct scsi_lun *lun = tgt_lun_get(t, luns[i]);
		if (!lun)
			continue;
		dump_lun(f, lun, i == n - 1);
		scsi_lun_put(lun);
	}
	fprintf(f, "%s);\n", n ? "    " : "");
	fprintf(f, "  }%s\n", --dt->left > 0 ? "," : "");
}

static void dump_account_fn(const char *user, void *arg)
{
	FILE *f = ((struct dump_targets *)arg)->f;

	fprintf(f, "%s  { user = ", ((struct dump_targets *)arg)->left++ ? ",\n" : "");
	dump_str(f, user);
	fprintf(f, "; password = \"\"; }");
}

int config_dump(FILE *f)
{
	struct dump_targets dt = { .f = f };
	char when[64];
	time_t now = time(NULL);
	struct tm tm;

	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC",
		 gmtime_r(&now, &tm));
	fprintf(f, "# holdfastd running configuration, dumped %s.\n", when);
	fprintf(f, "# CHAP passwords are not dumped: fill them in before use.\n");

	/* the live portals (tgtadm may have added or removed some) */
	struct iscsi_portal_info pi[CONFIG_MAX_PORTALS];
	int np = iscsi_portal_list(pi, CONFIG_MAX_PORTALS);

	fprintf(f, "portals = [");
	for (int i = 0; i < np && i < CONFIG_MAX_PORTALS; i++) {
		fprintf(f, "%s", i ? ", " : " ");
		dump_str(f, pi[i].text);
	}
	fprintf(f, " ];\n");

	/* limits, when any differs from the default */
	struct iscsi_limits lim, def = ISCSI_LIMITS_DEFAULT;

	iscsi_limits_get(&lim);
	if (memcmp(&lim, &def, sizeof(lim)) != 0)
		fprintf(f, "limits = {\n"
			"    max_sessions = %u;\n"
			"    max_sessions_per_target = %u;\n"
			"    max_connections = %u;\n"
			"    max_connections_per_portal = %u;\n"
			"    cmdsn_depth = %u;\n"
			"    max_data_buffer = \"%llu\";\n"
			"    max_data_buffer_per_connection = \"%llu\";\n"
			"    login_timeout = %u;\n"
			"    idle_timeout = %u;\n"
			"};\n", lim.max_sessions, lim.max_sessions_per_target,
			lim.max_connections, lim.max_connections_per_portal,
			lim.cmdsn_depth,
			(unsigned long long)lim.max_data_buffer,
			(unsigned long long)lim.max_data_buffer_per_connection,
			lim.login_timeout_ms / 1000, lim.idle_timeout_ms / 1000);

	fprintf(f, "accounts = (\n");
	acct_for_each(dump_account_fn, &dt);
	fprintf(f, "%s);\n", dt.left ? "\n" : "");

	struct dump_bound d = { .f = f };
	fprintf(f, "discovery = {\n");
	acct_for_each_bound(ACCT_DISCOVERY_TID, dump_bound_fn, &d);
	if (d.any_in)
		fprintf(f, " ];\n");
	if (d.out[0]) {
		fprintf(f, "    outgoing_user = ");
		dump_str(f, d.out);
		fprintf(f, ";\n");
	}
	fprintf(f, "};\n");

	dt.left = tgt_count();
	fprintf(f, "targets = (\n");
	tgt_for_each(dump_target, &dt);
	fprintf(f, ");\n");
	return ferror(f) ? -EIO : 0;
}
