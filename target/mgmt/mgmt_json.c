/* mgmt_json.c - the shows as JSON, for scripts (`holdfastadm --json`).
 *
 * A show request whose payload carries the item "format=json" (which the
 * stock tgtadm never sends, so its output stays byte-identical) is
 * answered with one JSON document instead of tgtd's text.  The members
 * carry the same facts as the text show, with numbers as numbers and
 * booleans as booleans; hang state and counters come from hang_describe()
 * and are parsed back into fields. */
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

#define JSON_MB 1000000ull	/* the text show's MB, for size_mb */

/* A JSON string literal (RFC 8259 section 7). */
static void json_str(struct mgmt_buf *b, const char *s)
{
	mgmt_buf_printf(b, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			mgmt_buf_printf(b, "\\%c", *p);
		else if (*p < 0x20)
			mgmt_buf_printf(b, "\\u%04x", *p);
		else
			mgmt_buf_printf(b, "%c", *p);
	}
	mgmt_buf_printf(b, "\"");
}

void mgmt_json_string(struct mgmt_buf *b, const char *s)
{
	json_str(b, s);
}

/* "key": "value" with a leading comma unless first. */
static void json_kv(struct mgmt_buf *b, bool comma, const char *key,
		    const char *value)
{
	mgmt_buf_printf(b, "%s\"%s\": ", comma ? ", " : "", key);
	json_str(b, value);
}

static const char *json_bool(bool v)
{
	return v ? "true" : "false";
}

/* The key=value items of a backend's describe() line as an object, so
 * tools need not parse the text (rbd: instance, fences, osd_op_timeout,
 * ...).  Items without '=' are left to the "backend" string. */
static void json_backend_state(struct mgmt_buf *b, const char *text)
{
	char buf[2048];
	char *save = NULL;
	bool first = true;

	snprintf(buf, sizeof(buf), "%s", text);
	mgmt_buf_printf(b, ", \"backend_state\": {");
	for (char *tok = strtok_r(buf, " ", &save); tok;
	     tok = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(tok, '=');

		if (!eq || eq == tok)
			continue;
		*eq = '\0';
		/* "k=v, more": the comma is the text's, not the value's */
		if (eq[1] && tok[strlen(eq + 1) + (size_t)(eq - tok)] == ',')
			tok[strlen(eq + 1) + (size_t)(eq - tok)] = '\0';
		json_kv(b, !first, tok, eq + 1);
		first = false;
	}
	mgmt_buf_printf(b, "}");
}

/* ---- LUNs ---- */

static void json_lun0(struct mgmt_buf *b, const struct target *t)
{
	char id[64];

	snprintf(id, sizeof(id), "%016" PRIx64, scsi_hash64(t->name, 0));
	mgmt_buf_printf(b, "{\"lun\": 0, \"type\": \"controller\", \"scsi_id\": \"%-8s%s\", \"scsi_sn\": \"%s\", "
			"\"size_bytes\": 0, \"size_mb\": 0, \"block_size\": 1, "
			"\"online\": true, \"removable\": false, \"prevent_removal\": false, "
			"\"readonly\": false, \"swp\": false, \"thin_provisioning\": false, "
			"\"backing_store_type\": \"null\", \"backing_store_path\": null, "
			"\"backing_store_flags\": \"\"}",
			"HOLDFAST", id, id);
}

/* The hang lines (hang_describe) as fields. */
static void json_hang(struct mgmt_buf *b, struct scsi_lun *lun)
{
	char text[2048], state[256] = "", err[256] = "", longest[64] = "",
	     probing[32] = "";
	unsigned held = 0, queued = 0;
	unsigned long long bytes = 0, ep = 0, re = 0, rc = 0, to = 0;

	mgmt_buf_printf(b, "{\"state\": ");
	json_str(b, hang_state_name(hang_state(lun)));
	if (hang_describe(lun, text, sizeof(text)) <= 0) {
		mgmt_buf_printf(b, "}");
		return;
	}
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		while (*line == ' ')
			line++;
		if (sscanf(line, "Hang state: %255[^\n]", state) == 1 ||
		    sscanf(line, "Hang last error: %255[^\n]", err) == 1 ||
		    sscanf(line, "Hang probing: %31s", probing) == 1)
			continue;
		if (sscanf(line, "Hang held: %u, queued: %u, bytes: %llu", &held,
			   &queued, &bytes) == 3)
			continue;
		sscanf(line, "Hang counters: episodes %llu, retries %llu, recoveries %llu, timeouts %llu, longest hang %63[^\n]",
		       &ep, &re, &rc, &to, longest);
	}
	json_kv(b, true, "description", state);
	mgmt_buf_printf(b, ", \"held\": %u, \"queued\": %u, \"held_bytes\": %llu",
			held, queued, bytes);
	json_kv(b, true, "last_error", err);
	mgmt_buf_printf(b, ", \"episodes\": %llu, \"retries\": %llu, \"recoveries\": %llu, \"timeouts\": %llu",
			ep, re, rc, to);
	json_kv(b, true, "longest", longest);
	mgmt_buf_printf(b, ", \"paused\": %s}",
			json_bool(strcmp(probing, "paused") == 0));
}

/* Two nodes in front of shared storage: the LUN's ALUA state as it is
 * now (alua_state among the keys is the state asked for); null without
 * alua_group. */
static void json_alua(struct mgmt_buf *b, struct scsi_lun *lun)
{
	struct scsi_alua_info ai;

	if (!scsi_alua_info(lun, &ai)) {
		mgmt_buf_printf(b, ", \"alua\": null");
		return;
	}
	mgmt_buf_printf(b, ", \"alua\": {\"group\": %u, \"peer_group\": %u",
			ai.group, ai.peer_group);
	json_kv(b, true, "state", ai.state);
	json_kv(b, true, "peer_state", ai.peer_state);
	mgmt_buf_printf(b, ", \"owner\": %s, \"fenced\": %s, \"identity\": ",
			json_bool(ai.owner), json_bool(ai.fenced));
	if (ai.identity)
		json_str(b, ai.identity);
	else
		mgmt_buf_printf(b, "null");
	mgmt_buf_printf(b, ", \"lock\": ");
	if (ai.lock_path)
		json_str(b, ai.lock_path);
	else
		mgmt_buf_printf(b, "null");
	mgmt_buf_printf(b, "}");
}

/* ", "name": value" for one key of the key table, typed by its kind; an
 * empty optional string is null. */
static void json_key(struct mgmt_buf *b, const struct lun_key *k,
		     const struct lun_settings *s)
{
	const char *name = lun_key_json(k);
	char text[2048], *save = NULL, *tok;
	bool first = true;

	lun_key_format(k, s, text, sizeof(text));
	switch (lun_key_kind(k)) {
	case LUN_KIND_NUMBER:
	case LUN_KIND_SIZE:
	case LUN_KIND_BOOL:
		mgmt_buf_printf(b, ", \"%s\": %s", name, text);
		return;
	case LUN_KIND_STRING:
		if ((lun_key_flags(k) & LUN_KEY_NONEMPTY) && !text[0])
			mgmt_buf_printf(b, ", \"%s\": null", name);
		else
			json_kv(b, true, name, text);
		return;
	case LUN_KIND_LIST:
		mgmt_buf_printf(b, ", \"%s\": [", name);
		if (strcmp(text, "none") != 0)
			for (tok = strtok_r(text, ",", &save); tok;
			     tok = strtok_r(NULL, ",", &save)) {
				if (!first)
					mgmt_buf_printf(b, ", ");
				json_str(b, tok);
				first = false;
			}
		mgmt_buf_printf(b, "]");
		return;
	}
}

static void json_lun(struct mgmt_buf *b, const struct target *t,
		     struct scsi_lun *lun)
{
	/* Management requests hold config_lock(): the snapshot is stable. */
	const struct lun_settings *s = lun_settings_get(lun);
	const struct lun_key *k;
	char serial[64], id[128], text[1024], shown[PATH_MAX];

	if (s->scsi_sn[0])
		snprintf(serial, sizeof(serial), "%s", s->scsi_sn);
	else
		snprintf(serial, sizeof(serial), "%016" PRIx64,
			 scsi_hash64(t->name, s->lun));
	if (s->scsi_id[0])
		snprintf(id, sizeof(id), "%s", s->scsi_id);
	else
		snprintf(id, sizeof(id), "%-8s%s", s->vendor_id, serial);

	/* What tgtd shows that is not a key of its own, then the keys. */
	mgmt_buf_printf(b, "{\"lun\": %" PRIu64 ", \"type\": \"disk\"", s->lun);
	json_kv(b, true, "scsi_id", id);
	json_kv(b, true, "scsi_sn", serial);
	mgmt_buf_printf(b, ", \"size_bytes\": %llu, \"size_mb\": %llu",
			(unsigned long long)(lun->nblocks * s->block_size),
			(unsigned long long)((lun->nblocks * s->block_size +
					      JSON_MB / 2) / JSON_MB));
	mgmt_buf_printf(b, ", \"prevent_removal\": false, \"swp\": false");
	json_kv(b, true, "backing_store_flags", s->direct ? "direct" : "");
	for (unsigned i = 0; (k = lun_key_at(i)); i++) {
		if (!lun_key_json(k) || strcmp(lun_key_name(k), "lun") == 0)
			continue;
		if (strcmp(lun_key_name(k), "path") == 0 && s->path[0])
			/* never a URL's CHAP secret */
			json_kv(b, true, lun_key_json(k),
				lun_settings_path_shown(s, shown, sizeof(shown)));
		else
			json_key(b, k, s);
	}
	if (be_stack_is_root(lun->be)) {
		const char *chain[BE_STACK_MAX_NODES];
		int n = be_stack_names(lun->be, chain, BE_STACK_MAX_NODES);

		mgmt_buf_printf(b, ", \"chain\": [");
		for (int i = 0; i < n && i < BE_STACK_MAX_NODES; i++) {
			mgmt_buf_printf(b, "%s", i ? ", " : "");
			json_str(b, chain[i]);
		}
		mgmt_buf_printf(b, "]");
	}
	mgmt_buf_printf(b, ", \"hang\": ");
	json_hang(b, lun);
	json_alua(b, lun);
	if (lun->be && lun->be->ops->describe &&
	    lun->be->ops->describe(lun->be, text, sizeof(text)) > 0) {
		text[strcspn(text, "\n")] = '\0';
		json_kv(b, true, "backend", text);
		json_backend_state(b, text);
	}
	mgmt_buf_printf(b, ", \"io\": {\"reads\": %llu, \"read_bytes\": %llu, \"writes\": %llu, \"write_bytes\": %llu}}",
			(unsigned long long)atomic_load(&lun->reads),
			(unsigned long long)atomic_load(&lun->read_bytes),
			(unsigned long long)atomic_load(&lun->writes),
			(unsigned long long)atomic_load(&lun->write_bytes));
}

int mgmt_json_lun(int tid, uint64_t lunid, struct mgmt_buf *b)
{
	struct target *t = tgt_get_by_tid(tid);
	struct scsi_lun *lun;

	if (!t)
		return MGMT_NO_TARGET;
	if (lunid == 0) {
		json_lun0(b, t);
		mgmt_buf_printf(b, "\n");
		tgt_put(t);
		return MGMT_SUCCESS;
	}
	lun = lunid == MGMT_LUN_UNSET ? NULL : tgt_lun_get(t, lunid);
	if (!lun) {
		tgt_put(t);
		return MGMT_NO_LUN;
	}
	json_lun(b, t, lun);
	mgmt_buf_printf(b, "\n");
	scsi_lun_put(lun);
	tgt_put(t);
	return MGMT_SUCCESS;
}

/* ---- targets ---- */

struct json_ctx {
	struct mgmt_buf *b;
	int tid;
	int found;
	bool comma;
};

static void json_session(const struct iscsi_session_info *si, void *arg)
{
	struct json_ctx *c = arg;
	struct mgmt_buf *b = c->b;

	mgmt_buf_printf(b, "%s{\"sid\": %" PRIu64, c->comma ? ", " : "", si->sid);
	json_kv(b, true, "initiator", si->initiator_name);
	json_kv(b, true, "alias", si->initiator_alias);
	mgmt_buf_printf(b, ", \"connections\": [");
	for (int i = 0; i < si->nr_conns && i < (int)ARRAY_SIZE(si->conns); i++) {
		mgmt_buf_printf(b, "%s{\"cid\": %u", i ? ", " : "",
				si->conns[i].cid);
		json_kv(b, true, "address", si->conns[i].peer);
		mgmt_buf_printf(b, ", \"data_buffer\": %" PRIu64
				", \"data_buffer_peak\": %" PRIu64 "}",
				si->conns[i].data_buffer,
				si->conns[i].data_buffer_peak);
	}
	mgmt_buf_printf(b, "]}");
	c->comma = true;
}

static void json_account(const char *user, bool outgoing, void *arg)
{
	struct json_ctx *c = arg;

	mgmt_buf_printf(c->b, "%s{", c->comma ? ", " : "");
	json_kv(c->b, false, "user", user);
	mgmt_buf_printf(c->b, ", \"outgoing\": %s}", json_bool(outgoing));
	c->comma = true;
}

static void json_target(struct target *t, void *arg)
{
	struct json_ctx *c = arg, sub = { .b = c->b };
	struct mgmt_buf *b = c->b;
	uint64_t luns[TGT_MAX_LUNS];
	struct acl_rule *a;
	bool first = true;
	int n;

	if (c->tid != -1 && t->tid != c->tid)
		return;
	mgmt_buf_printf(b, "%s\n  {\"tid\": %d", c->found++ ? "," : "", t->tid);
	json_kv(b, true, "name", t->name);
	json_kv(b, true, "driver", "iscsi");
	json_kv(b, true, "state", t->offline ? "offline" : "ready");
	mgmt_buf_printf(b, ",\n   \"sessions\": [");
	iscsi_session_for_each(t->tid, json_session, &sub);
	mgmt_buf_printf(b, "],\n   \"luns\": [\n    ");
	json_lun0(b, t);
	n = tgt_lun_list(t, luns, TGT_MAX_LUNS);
	for (int i = 0; i < n; i++) {
		struct scsi_lun *lun = tgt_lun_get(t, luns[i]);
		if (!lun)
			continue;
		mgmt_buf_printf(b, ",\n    ");
		json_lun(b, t, lun);
		scsi_lun_put(lun);
	}
	mgmt_buf_printf(b, "],\n   \"accounts\": [");
	sub.comma = false;
	acct_for_each_bound(t->tid, json_account, &sub);
	mgmt_buf_printf(b, "],\n   \"acls\": [");
	pthread_mutex_lock(&t->lock);
	list_for_each_entry(a, &t->acls, link) {
		mgmt_buf_printf(b, "%s", first ? "" : ", ");
		json_str(b, a->text);
		first = false;
	}
	pthread_mutex_unlock(&t->lock);
	mgmt_buf_printf(b, "]}");
}

int mgmt_json_targets(int tid, struct mgmt_buf *b)
{
	struct json_ctx c = { .b = b, .tid = tid };

	mgmt_buf_printf(b, "{\"targets\": [");
	tgt_for_each(json_target, &c);
	mgmt_buf_printf(b, "%s]}\n", c.found ? "\n" : "");
	if (tid != -1 && !c.found)
		return MGMT_NO_TARGET;
	return MGMT_SUCCESS;
}

int mgmt_json_target_params(int tid, struct mgmt_buf *b)
{
	struct target *t = tgt_get_by_tid(tid);
	struct tgt_param *p;

	if (!t)
		return MGMT_NO_TARGET;
	pthread_mutex_lock(&t->lock);
	mgmt_buf_printf(b, "{\"tid\": %d, \"nop_interval\": %u, \"nop_count\": %u, \"params\": {",
			t->tid, t->nop_interval, t->nop_count);
	list_for_each_entry(p, &t->params, link) {
		mgmt_buf_printf(b, "%s\"%s\": ",
				p->link.prev == &t->params ? "" : ", ", p->key);
		json_str(b, p->value);
	}
	pthread_mutex_unlock(&t->lock);
	mgmt_buf_printf(b, "}}\n");
	tgt_put(t);
	return MGMT_SUCCESS;
}

int mgmt_json_portals(struct mgmt_buf *b)
{
	struct iscsi_portal_info pi[CONFIG_MAX_PORTALS * 4];
	int n = iscsi_portal_list(pi, (int)ARRAY_SIZE(pi));
	char a[INET6_ADDRSTRLEN];

	mgmt_buf_printf(b, "{\"portals\": [");
	for (int i = 0; i < n && i < (int)ARRAY_SIZE(pi); i++) {
		const struct sockaddr_storage *ss = &pi[i].listen;
		unsigned port;
		if (ss->ss_family == AF_INET) {
			const struct sockaddr_in *sin = (const void *)ss;
			inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
			port = ntohs(sin->sin_port);
		} else {
			const struct sockaddr_in6 *sin6 = (const void *)ss;
			inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
			port = ntohs(sin6->sin6_port);
		}
		mgmt_buf_printf(b, "%s{", i ? ", " : "");
		json_kv(b, false, "address", a);
		mgmt_buf_printf(b, ", \"port\": %u, \"tpgt\": 1}", port);
	}
	mgmt_buf_printf(b, "]}\n");
	return MGMT_SUCCESS;
}

int mgmt_json_system(struct mgmt_buf *b)
{
	struct iscsi_buffer_stat bs;
	struct iscsi_limits lim;

	iscsi_data_buffer_stat(&bs);
	iscsi_limits_get(&lim);
	mgmt_buf_printf(b, "{\"state\": \"ready\", \"debug\": %s, \"llds\": {\"iscsi\": \"ready\"}, "
			"\"backing_stores\": [\"file\", \"null\", \"fault\"], \"device_types\": [\"disk\"], "
			"\"data_buffers\": {\"used\": %" PRIu64 ", \"peak\": %" PRIu64
			", \"refused\": %" PRIu64 ", \"max\": %" PRIu64
			", \"max_per_connection\": %" PRIu64 "}}\n",
			json_bool(log_debug_enabled()), bs.used, bs.peak,
			bs.refused, lim.max_data_buffer,
			lim.max_data_buffer_per_connection);
	return MGMT_SUCCESS;
}

static void json_account_name(const char *user, void *arg)
{
	struct json_ctx *c = arg;

	mgmt_buf_printf(c->b, "%s", c->comma ? ", " : "");
	json_str(c->b, user);
	c->comma = true;
}

int mgmt_json_accounts(struct mgmt_buf *b)
{
	struct json_ctx c = { .b = b };

	mgmt_buf_printf(b, "{\"accounts\": [");
	acct_for_each(json_account_name, &c);
	mgmt_buf_printf(b, "]}\n");
	return MGMT_SUCCESS;
}

/* The configuration text as one JSON string member. */
int mgmt_json_text(const char *key, const char *text, struct mgmt_buf *b)
{
	mgmt_buf_printf(b, "{");
	json_kv(b, false, key, text);
	mgmt_buf_printf(b, "}\n");
	return MGMT_SUCCESS;
}
