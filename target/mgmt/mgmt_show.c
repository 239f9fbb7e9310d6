/* mgmt_show.c - the text of `tgtadm --op show`.
 *
 * The layout is tgtd's, line for line (four spaces per level; captured
 * from tgtd 1.0.85), because tgt-admin scrapes it with regexes anchored on
 * "Target N: name", "Backing store path:", "I_T nexus:", "ACL
 * information:" and so on.  holdfast's own per-LUN lines (identity, hang
 * policy and state, backend, counters) come after the standard ones of
 * each LUN so those scrapers still match. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "account.h"
#include "config.h"
#include "hang.h"
#include "iscsi.h"
#include "mgmt_internal.h"
#include "scsi.h"
#include "target.h"
#include "util.h"

#define SHOW_MB 1000000ull		/* tgtd prints sizes in 10^6 bytes, rounded */
#define SHOW_HANG_INDENT "    "	/* hang_describe indents 8; LUN lines 12 */

static const char *yes_no(bool b)
{
	return b ? "Yes" : "No";
}

/* ---- sessions ---- */

struct show_sessions {
	struct mgmt_buf *b;
};

static void show_session(const struct iscsi_session_info *si, void *arg)
{
	struct show_sessions *ss = arg;

	mgmt_buf_printf(ss->b, "        I_T nexus: %" PRIu64 "\n", si->sid);
	mgmt_buf_printf(ss->b, "            Initiator: %s alias: %s\n",
			si->initiator_name,
			si->initiator_alias[0] ? si->initiator_alias : "none");
	for (int i = 0; i < si->nr_conns && i < (int)ARRAY_SIZE(si->conns); i++) {
		mgmt_buf_printf(ss->b, "            Connection: %u\n",
				si->conns[i].cid);
		mgmt_buf_printf(ss->b, "                IP Address: %s\n",
				si->conns[i].peer);
	}
}

/* ---- LUNs ---- */

/* The controller LUN 0 every target has (tgtd shows it the same way). */
static void show_lun0(struct mgmt_buf *b, const struct target *t)
{
	mgmt_buf_printf(b, "        LUN: 0\n");
	mgmt_buf_printf(b, "            Type: controller\n");
	mgmt_buf_printf(b, "            SCSI ID: %-8s%016" PRIx64 "\n", "HOLDFAST",
			scsi_hash64(t->name, 0));
	mgmt_buf_printf(b, "            SCSI SN: %016" PRIx64 "\n",
			scsi_hash64(t->name, 0));
	mgmt_buf_printf(b, "            Size: 0 MB, Block size: 1\n");
	mgmt_buf_printf(b, "            Online: Yes\n");
	mgmt_buf_printf(b, "            Removable media: No\n");
	mgmt_buf_printf(b, "            Prevent removal: No\n");
	mgmt_buf_printf(b, "            Readonly: No\n");
	mgmt_buf_printf(b, "            SWP: No\n");
	mgmt_buf_printf(b, "            Thin-provisioning: No\n");
	mgmt_buf_printf(b, "            Backing store type: null\n");
	mgmt_buf_printf(b, "            Backing store path: None\n");
	mgmt_buf_printf(b, "            Backing store flags: \n");
}

/* The hang-on-error keys of the key table: "Hang policy: k=v, ..." for
 * the scalar ones, in table order, then one "Retry errors:" line per
 * list (names separated by blanks). */
static void show_hang_keys(struct mgmt_buf *b, const struct lun_settings *s)
{
	const struct lun_key *k;
	char text[2048];
	bool first = true;

	mgmt_buf_printf(b, "            Hang policy:");
	for (unsigned i = 0; (k = lun_key_at(i)); i++) {
		if (!(lun_key_flags(k) & LUN_KEY_HANG) ||
		    lun_key_kind(k) == LUN_KIND_LIST)
			continue;
		lun_key_format(k, s, text, sizeof(text));
		mgmt_buf_printf(b, "%s %s=%s%s%s", first ? "" : ",",
				lun_key_name(k), text,
				lun_key_unit(k) ? " " : "",
				lun_key_unit(k) ? lun_key_unit(k) : "");
		first = false;
	}
	mgmt_buf_printf(b, "\n");
	for (unsigned i = 0; (k = lun_key_at(i)); i++) {
		if (!(lun_key_flags(k) & LUN_KEY_HANG) ||
		    lun_key_kind(k) != LUN_KIND_LIST)
			continue;
		lun_key_format(k, s, text, sizeof(text));
		for (char *c = text; *c; c++)
			if (*c == ',')
				*c = ' ';
		/* "retry_errors" -> "Retry errors" */
		const char *name = lun_key_name(k);
		mgmt_buf_printf(b, "            %c", name[0] - 'a' + 'A');
		for (const char *c = name + 1; *c; c++)
			mgmt_buf_printf(b, "%c", *c == '_' ? ' ' : *c);
		mgmt_buf_printf(b, ": %s\n", text);
	}
}

/* Append text whose lines are indented for another level, adding
 * SHOW_HANG_INDENT to each. */
static void show_reindent(struct mgmt_buf *b, const char *text)
{
	while (*text) {
		const char *nl = strchr(text, '\n');
		int n = nl ? (int)(nl - text) : (int)strlen(text);
		mgmt_buf_printf(b, SHOW_HANG_INDENT "%.*s\n", n, text);
		text += n + (nl ? 1 : 0);
	}
}

static void show_lun(struct mgmt_buf *b, const struct target *t,
		     struct scsi_lun *lun)
{
	/* Management requests hold config_lock(): the snapshot is stable. */
	const struct lun_settings *s = lun_settings_get(lun);
	char text[2048], shown[PATH_MAX];

	char serial[64];
	if (s->scsi_sn[0])
		snprintf(serial, sizeof(serial), "%s", s->scsi_sn);
	else
		snprintf(serial, sizeof(serial), "%016" PRIx64,
			 scsi_hash64(t->name, s->lun));

	/* tgtd's lines, in tgtd's order. */
	mgmt_buf_printf(b, "        LUN: %" PRIu64 "\n", s->lun);
	mgmt_buf_printf(b, "            Type: disk\n");
	if (s->scsi_id[0])
		mgmt_buf_printf(b, "            SCSI ID: %s\n", s->scsi_id);
	else	/* the T10 vendor designator INQUIRY reports (SPC-4 7.8.6.4) */
		mgmt_buf_printf(b, "            SCSI ID: %-8s%s\n", s->vendor_id,
				serial);
	mgmt_buf_printf(b, "            SCSI SN: %s\n", serial);
	mgmt_buf_printf(b, "            Size: %llu MB, Block size: %u\n",
			(unsigned long long)((lun->nblocks * s->block_size +
					      SHOW_MB / 2) / SHOW_MB),
			s->block_size);
	mgmt_buf_printf(b, "            Online: %s\n", yes_no(s->online));
	mgmt_buf_printf(b, "            Removable media: %s\n",
			yes_no(s->removable));
	mgmt_buf_printf(b, "            Prevent removal: No\n");
	/* a store may be read-only by nature (an rbd snapshot) */
	mgmt_buf_printf(b, "            Readonly: %s\n",
			yes_no(s->readonly || (lun->be && lun->be->readonly)));
	mgmt_buf_printf(b, "            SWP: No\n");
	mgmt_buf_printf(b, "            Thin-provisioning: %s\n",
			yes_no(s->thin_provisioning));
	mgmt_buf_printf(b, "            Backing store type: %s\n", s->backend);
	mgmt_buf_printf(b, "            Backing store path: %s\n",
			lun_settings_path_shown(s, shown, sizeof(shown)));
	/* tgtd's spelling: "sync:direct", "sync", "direct" or empty */
	mgmt_buf_printf(b, "            Backing store flags: %s%s%s\n",
			s->sync ? "sync" : "", s->sync && s->direct ? ":" : "",
			s->direct ? "direct" : "");

	/* holdfast's lines. */
	if (be_stack_is_root(lun->be)) {
		be_stack_format(lun->be, text, sizeof(text));
		mgmt_buf_printf(b, "            Backing store chain: %s\n", text);
	}
	mgmt_buf_printf(b, "            Vendor: %s, Product: %s, Revision: %s\n",
			s->vendor_id, s->product_id, s->product_rev);
	lun_key_format(lun_key_find("sense_format"), s, text, sizeof(text));
	mgmt_buf_printf(b, "            Write cache: %s, Sense format: %s\n",
			yes_no(s->write_cache), text);
	show_hang_keys(b, s);
	if (hang_describe(lun, text, sizeof(text)) > 0)
		show_reindent(b, text);
	if (scsi_alua_describe(lun, text, sizeof(text)) > 0)
		show_reindent(b, text);
	if (lun->be && lun->be->ops->describe &&
	    lun->be->ops->describe(lun->be, text, sizeof(text)) > 0) {
		text[strcspn(text, "\n")] = '\0';
		mgmt_buf_printf(b, "            Backend: %s\n", text);
	}
	mgmt_buf_printf(b, "            I/O: reads %llu (%llu bytes), writes %llu (%llu bytes)\n",
			(unsigned long long)atomic_load(&lun->reads),
			(unsigned long long)atomic_load(&lun->read_bytes),
			(unsigned long long)atomic_load(&lun->writes),
			(unsigned long long)atomic_load(&lun->write_bytes));
}

/* ---- targets ---- */

static void show_bound_account(const char *user, bool outgoing, void *arg)
{
	mgmt_buf_printf(arg, "        %s%s\n", user,
			outgoing ? " (outgoing)" : "");
}

struct show_targets {
	struct mgmt_buf *b;
	int tid;
	int found;
};

static void show_target(struct target *t, void *arg)
{
	struct show_targets *st = arg;
	struct mgmt_buf *b = st->b;
	struct show_sessions ss = { .b = b };
	uint64_t luns[TGT_MAX_LUNS];
	struct acl_rule *a;
	int n;

	if (st->tid != -1 && t->tid != st->tid)
		return;
	st->found++;
	mgmt_buf_printf(b, "Target %d: %s\n", t->tid, t->name);
	mgmt_buf_printf(b, "    System information:\n");
	mgmt_buf_printf(b, "        Driver: iscsi\n");
	mgmt_buf_printf(b, "        State: %s\n", t->offline ? "offline" : "ready");
	mgmt_buf_printf(b, "    I_T nexus information:\n");
	iscsi_session_for_each(t->tid, show_session, &ss);
	mgmt_buf_printf(b, "    LUN information:\n");
	show_lun0(b, t);
	n = tgt_lun_list(t, luns, TGT_MAX_LUNS);
	for (int i = 0; i < n; i++) {
		struct scsi_lun *lun = tgt_lun_get(t, luns[i]);
		if (!lun)
			continue;	/* deleted meanwhile */
		show_lun(b, t, lun);
		scsi_lun_put(lun);
	}
	mgmt_buf_printf(b, "    Account information:\n");
	acct_for_each_bound(t->tid, show_bound_account, b);
	mgmt_buf_printf(b, "    ACL information:\n");
	pthread_mutex_lock(&t->lock);
	list_for_each_entry(a, &t->acls, link)
		mgmt_buf_printf(b, "        %s\n", a->text);
	pthread_mutex_unlock(&t->lock);
}

int mgmt_show_targets(int tid, struct mgmt_buf *b)
{
	struct show_targets st = { .b = b, .tid = tid };

	tgt_for_each(show_target, &st);
	if (tid != -1 && !st.found)
		return MGMT_NO_TARGET;
	return MGMT_SUCCESS;
}

/* `--op show --mode target --tid N`: like tgtd, the target's parameters
 * as key=value lines (here: the NOP settings and the iSCSI key overrides;
 * keys not overridden take the iSCSI layer's defaults). */
int mgmt_show_target_params(int tid, struct mgmt_buf *b)
{
	struct target *t = tgt_get_by_tid(tid);
	struct tgt_param *p;

	if (!t)
		return MGMT_NO_TARGET;
	pthread_mutex_lock(&t->lock);
	mgmt_buf_printf(b, "nop_interval=%u\n", t->nop_interval);
	mgmt_buf_printf(b, "nop_count=%u\n", t->nop_count);
	list_for_each_entry(p, &t->params, link)
		mgmt_buf_printf(b, "%s=%s\n", p->key, p->value);
	pthread_mutex_unlock(&t->lock);
	tgt_put(t);
	return MGMT_SUCCESS;
}

/* `--op show --mode portal`: "Portal: ADDR:PORT,TPGT" like tgtd (one
 * target portal group, tag 1). */
int mgmt_show_portals(struct mgmt_buf *b)
{
	struct iscsi_portal_info pi[CONFIG_MAX_PORTALS * 4];
	int n = iscsi_portal_list(pi, (int)ARRAY_SIZE(pi));
	char a[INET6_ADDRSTRLEN];

	for (int i = 0; i < n && i < (int)ARRAY_SIZE(pi); i++) {
		const struct sockaddr_storage *ss = &pi[i].listen;
		if (ss->ss_family == AF_INET) {
			const struct sockaddr_in *sin = (const void *)ss;
			inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
			mgmt_buf_printf(b, "Portal: %s:%u,1\n", a,
					ntohs(sin->sin_port));
		} else {
			const struct sockaddr_in6 *sin6 = (const void *)ss;
			inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
			mgmt_buf_printf(b, "Portal: [%s]:%u,1\n", a,
					ntohs(sin6->sin6_port));
		}
	}
	return MGMT_SUCCESS;
}

int mgmt_show_system(struct mgmt_buf *b)
{
	mgmt_buf_printf(b, "System:\n");
	mgmt_buf_printf(b, "    State: ready\n");
	mgmt_buf_printf(b, "    debug: %s\n", log_debug_enabled() ? "on" : "off");
	mgmt_buf_printf(b, "LLDs:\n");
	mgmt_buf_printf(b, "    iscsi: ready\n");
	mgmt_buf_printf(b, "Backing stores:\n");
	mgmt_buf_printf(b, "    file\n");
	mgmt_buf_printf(b, "    null\n");
	mgmt_buf_printf(b, "    fault\n");
	mgmt_buf_printf(b, "Device types:\n");
	mgmt_buf_printf(b, "    disk\n");
	return MGMT_SUCCESS;
}

int mgmt_show_lun(int tid, uint64_t lunid, struct mgmt_buf *b)
{
	struct target *t = tgt_get_by_tid(tid);
	struct scsi_lun *lun = NULL;

	if (!t)
		return MGMT_NO_TARGET;
	if (lunid != 0 && lunid != MGMT_LUN_UNSET)
		lun = tgt_lun_get(t, lunid);
	if (lunid != 0 && !lun) {
		tgt_put(t);
		return MGMT_NO_LUN;
	}
	mgmt_buf_printf(b, "Target %d: %s\n", t->tid, t->name);
	if (lun) {
		show_lun(b, t, lun);
		scsi_lun_put(lun);
	} else {
		show_lun0(b, t);
	}
	tgt_put(t);
	return MGMT_SUCCESS;
}
