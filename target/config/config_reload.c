/* config_reload.c - SIGHUP: re-read targets.conf and apply the difference
 * to the running target table (config_reload() in config.h).
 *
 * The file is loaded and validated as a whole first (config_load): a bad
 * file changes nothing and the reason is logged.  The running table, not
 * the file last read, is what the new file is compared with, so changes
 * made with tgtadm since are reconciled too.  Targets are matched by name,
 * LUNs by number.
 *
 * Phase 1 adds what is new (accounts, targets, LUNs) -- the steps the
 * outside world can still refuse (a backing store that does not open).  If
 * one fails, everything phase 1 added is removed again and nothing else
 * was touched.  New targets stay offline until phase 2 has bound their
 * CHAP accounts, so no login slips in unauthenticated.
 *
 * Phase 2 changes and removes.  Per target the order tightens access
 * before loosening it (bind accounts, drop ACL rules, unbind accounts, add
 * ACL rules).  A target with sessions or a LUN with commands in flight
 * that the file removes (or whose store changes) is kept, with a warning:
 * removing it would disturb its initiators; `tgtadm --force` does that on
 * purpose.  Sessions of unchanged targets and LUNs are never touched. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "config.h"
#include "config_internal.h"
#include "hang.h"
#include "scsi.h"
#include "target.h"
#include "util.h"

/* What phase 1 added, for its rollback, and what the reload did. */
struct reload {
	char **accounts;		/* created account names */
	int nr_accounts;
	int *tids;			/* created targets */
	int nr_tids;
	struct { int tid; uint64_t lun; } *luns;	/* added LUNs */
	int nr_luns;
	int added, removed, changed, kept;
};

static void *reload_grow(void *p, int n, size_t size)
{
	void *q = realloc(p, size * (size_t)(n + 1));

	if (!q)
		abort();	/* a few bytes: nothing sane to do */
	return q;
}

static void reload_rollback(struct reload *r)
{
	for (int i = r->nr_luns - 1; i >= 0; i--)
		tgt_lun_del(r->luns[i].tid, r->luns[i].lun, true);
	for (int i = r->nr_tids - 1; i >= 0; i--)
		config_target_delete(r->tids[i], true);
	for (int i = 0; i < r->nr_accounts; i++)
		acct_delete(r->accounts[i]);
}

static void reload_free(struct reload *r)
{
	for (int i = 0; i < r->nr_accounts; i++)
		free(r->accounts[i]);
	free(r->accounts);
	free(r->tids);
	free(r->luns);
}

static bool reload_was_created(const struct reload *r, int tid)
{
	for (int i = 0; i < r->nr_tids; i++)
		if (r->tids[i] == tid)
			return true;
	return false;
}

/* ---- phase 1: additions ---- */

static int reload_add_lun(struct reload *r, int tid, const struct cfg_lun *cl,
			  char *err, unsigned errlen)
{
	const char *why = NULL;
	int ret = tgt_lun_add(tid, &cl->s, &why);

	if (ret) {
		snprintf(err, errlen, "%s: lun %" PRIu64 ": %s%s%s", cl->where,
			 cl->s.lun, why ? why : "", why ? ": " : "",
			 strerror(-ret));
		return ret;
	}
	r->luns = reload_grow(r->luns, r->nr_luns, sizeof(*r->luns));
	r->luns[r->nr_luns].tid = tid;
	r->luns[r->nr_luns++].lun = cl->s.lun;
	r->added++;
	return 0;
}

static int reload_new_target(struct reload *r, const struct cfg_target *ct,
			     char *err, unsigned errlen)
{
	struct target *t = tgt_get_by_tid(ct->tid);
	int tid = ct->tid, ret = 0;

	/* The file's tid may still belong to a target it removes (phase 2):
	 * then take a free one. */
	if (t) {
		tgt_put(t);
		tid = 0;
	}
	tid = tgt_create(tid, ct->name);
	if (tid < 0) {
		snprintf(err, errlen, "%s: target %s: %s", ct->where, ct->name,
			 strerror(-tid));
		return tid;
	}
	if (tid != ct->tid)
		log_warn("reload: %s: tid %d is still in use: target %s gets tid %d",
			 ct->where, ct->tid, ct->name, tid);
	r->tids = reload_grow(r->tids, r->nr_tids, sizeof(*r->tids));
	r->tids[r->nr_tids++] = tid;
	r->added++;
	t = tgt_get_by_tid(tid);
	if (!t)
		return -ENOENT;
	/* No login until phase 2 has bound its accounts. */
	t->offline = true;
	pthread_mutex_lock(&t->lock);
	if (ct->has_nop_interval)
		t->nop_interval = ct->nop_interval;
	if (ct->has_nop_count)
		t->nop_count = ct->nop_count;
	pthread_mutex_unlock(&t->lock);
	for (int k = 0; !ret && k < ct->nr_params; k++) {
		ret = tgt_param_set(t, ct->params[k].key, ct->params[k].value);
		if (ret)
			snprintf(err, errlen, "%s: params: %s: %s", ct->where,
				 ct->params[k].key, strerror(-ret));
	}
	tgt_put(t);
	for (int k = 0; !ret && k < ct->nr_luns; k++)
		ret = reload_add_lun(r, tid, &ct->luns[k], err, errlen);
	return ret;
}

static int reload_phase1(struct reload *r, const struct cfg_priv *pv,
			 char *err, unsigned errlen)
{
	char secret[ACCT_SECRET_MAX];
	int ret;

	for (int i = 0; i < pv->nr_accounts; i++) {
		const struct cfg_account *ca = &pv->accounts[i];
		if (acct_secret(ca->user, secret, sizeof(secret)) == 0)
			continue;	/* exists; the secret is phase 2's */
		ret = acct_create(ca->user, ca->password);
		if (ret) {
			snprintf(err, errlen, "%s: account %s: %s", ca->where,
				 ca->user, strerror(-ret));
			return ret;
		}
		r->accounts = reload_grow(r->accounts, r->nr_accounts,
					  sizeof(*r->accounts));
		r->accounts[r->nr_accounts++] = xstrdup(ca->user);
		r->added++;
	}
	explicit_bzero(secret, sizeof(secret));

	for (int i = 0; i < pv->nr_targets; i++) {
		const struct cfg_target *ct = &pv->targets[i];
		struct target *t = tgt_get_by_name(ct->name);

		if (!t) {
			ret = reload_new_target(r, ct, err, errlen);
			if (ret)
				return ret;
			continue;
		}
		if (t->tid != ct->tid)
			log_info("reload: %s: target %s keeps its running tid %d",
				 ct->where, ct->name, t->tid);
		for (int k = 0; k < ct->nr_luns; k++) {
			struct scsi_lun *lun = tgt_lun_get(t, ct->luns[k].s.lun);
			if (lun) {
				scsi_lun_put(lun);
				continue;
			}
			ret = reload_add_lun(r, t->tid, &ct->luns[k], err, errlen);
			if (ret) {
				tgt_put(t);
				return ret;
			}
		}
		tgt_put(t);
	}
	return 0;
}

/* ---- phase 2: changes and removals ---- */

/* Does the store differ (what a running LUN cannot change, so the LUN
 * is replaced)?  The key table says which keys those are. */
static bool reload_store_differs(struct scsi_lun *lun,
				 const struct lun_settings *n)
{
	return lun_settings_diff(lun_settings_get(lun), n, NULL) &
	       LUN_KEY_STORE;
}

/* Apply the run-time settings of n to lun (the same update tgtadm
 * makes).  true if something changed. */
static bool reload_lun_settings(int tid, struct scsi_lun *lun,
				const struct lun_settings *n)
{
	const struct lun_settings *cur = lun_settings_get(lun);
	struct lun_settings want = *n;
	char why[512];
	int ret;

	if (cur->alua_group && (want.alua_group != cur->alua_group ||
				want.alua_peer_group != cur->alua_peer_group)) {
		/* as in tgtadm: fixed once set; the rest still applies */
		log_warn("reload: target %d: LUN %" PRIu64 ": alua_group and alua_peer_group are fixed once set; kept",
			 tid, cur->lun);
		want.alua_group = cur->alua_group;
		want.alua_peer_group = cur->alua_peer_group;
	}
	ret = scsi_lun_update(lun, &want, 0, why, sizeof(why));

	if (ret < 0) {
		log_warn("reload: target %d: LUN %" PRIu64 ": settings not changed: %s",
			 tid, n->lun, why);
		return false;
	}
	if (ret > 0)
		log_info("reload: target %d: LUN %" PRIu64 " settings changed",
			 tid, n->lun);
	return ret > 0;
}

static const struct cfg_lun *reload_find_lun(const struct cfg_target *ct,
					     uint64_t nr)
{
	for (int k = 0; k < ct->nr_luns; k++)
		if (ct->luns[k].s.lun == nr)
			return &ct->luns[k];
	return NULL;
}

static void reload_luns(struct reload *r, struct target *t,
			const struct cfg_target *ct)
{
	uint64_t nrs[TGT_MAX_LUNS];
	int n = tgt_lun_list(t, nrs, TGT_MAX_LUNS);

	for (int i = 0; i < n; i++) {
		const struct cfg_lun *cl = reload_find_lun(ct, nrs[i]);
		struct scsi_lun *lun = tgt_lun_get(t, nrs[i]);
		bool replace;
		int ret;

		if (!lun)
			continue;
		replace = cl && reload_store_differs(lun, &cl->s);
		if (cl && !replace) {
			if (reload_lun_settings(t->tid, lun, &cl->s))
				r->changed++;
			scsi_lun_put(lun);
			continue;
		}
		/* reload holds config_lock(): the snapshot is stable */
		struct lun_settings old = *lun_settings_get(lun);
		scsi_lun_put(lun);
		ret = tgt_lun_del(t->tid, nrs[i], false);
		if (ret == -EBUSY) {
			log_warn("reload: target %d: LUN %" PRIu64 " is in use: kept as it is (delete it with --force)",
				 t->tid, nrs[i]);
			r->kept++;
			continue;
		}
		if (!replace) {
			r->removed++;
			continue;
		}
		const char *why = NULL;
		ret = tgt_lun_add(t->tid, &cl->s, &why);
		if (ret) {
			log_err("reload: target %d: LUN %" PRIu64 ": new store refused (%s%s%s); the old one is kept",
				t->tid, nrs[i], why ? why : "", why ? ": " : "",
				strerror(-ret));
			if (tgt_lun_add(t->tid, &old, &why))
				log_err("reload: target %d: LUN %" PRIu64 " lost: the old store no longer opens",
					t->tid, nrs[i]);
			r->kept++;
			continue;
		}
		r->changed++;
	}
}

struct reload_bound {
	char users[64][ACCT_NAME_MAX];
	bool outgoing[64];
	int n;
};

static void reload_bound_fn(const char *user, bool outgoing, void *arg)
{
	struct reload_bound *b = arg;

	if (b->n == (int)ARRAY_SIZE(b->users))
		return;
	snprintf(b->users[b->n], sizeof(b->users[0]), "%s", user);
	b->outgoing[b->n++] = outgoing;
}

static bool reload_auth_has(const struct cfg_auth *a, const char *user,
			    bool outgoing)
{
	if (outgoing)
		return a->has_outgoing && strcmp(a->outgoing.user, user) == 0;
	for (int i = 0; i < a->nr_incoming; i++)
		if (strcmp(a->incoming[i].user, user) == 0)
			return true;
	return false;
}

static bool reload_bound_has(const struct reload_bound *b, const char *user,
			     bool outgoing)
{
	for (int i = 0; i < b->n; i++)
		if (b->outgoing[i] == outgoing && strcmp(b->users[i], user) == 0)
			return true;
	return false;
}

/* Bind what a adds (bind=true) or unbind what it drops (bind=false). */
static void reload_bindings(struct reload *r, int tid,
			    const struct cfg_auth *a, bool bind)
{
	struct reload_bound *cur = xzalloc(sizeof(*cur));

	acct_for_each_bound(tid, reload_bound_fn, cur);
	if (!bind) {
		for (int i = 0; i < cur->n; i++)
			if (!reload_auth_has(a, cur->users[i], cur->outgoing[i]) &&
			    acct_unbind(tid, cur->users[i], cur->outgoing[i]) == 0)
				r->changed++;
	} else {
		for (int i = 0; i < a->nr_incoming; i++)
			if (!reload_bound_has(cur, a->incoming[i].user, false)) {
				if (acct_bind(tid, a->incoming[i].user, false))
					log_err("reload: %s: cannot bind %s",
						a->incoming[i].where,
						a->incoming[i].user);
				else
					r->changed++;
			}
		if (a->has_outgoing &&
		    !reload_bound_has(cur, a->outgoing.user, true)) {
			/* one outgoing account per target: drop the old one */
			for (int i = 0; i < cur->n; i++)
				if (cur->outgoing[i])
					acct_unbind(tid, cur->users[i], true);
			if (acct_bind(tid, a->outgoing.user, true))
				log_err("reload: %s: cannot bind %s (outgoing)",
					a->outgoing.where, a->outgoing.user);
			else
				r->changed++;
		}
	}
	free(cur);
}

static bool reload_acl_in_cfg(const struct cfg_target *ct,
			      const struct acl_rule *a)
{
	for (int k = 0; k < ct->nr_acls; k++)
		if ((ct->acls[k].is_name == (a->kind == ACL_NAME)) &&
		    strcmp(ct->acls[k].text, a->text) == 0)
			return true;
	return false;
}

static void reload_acls(struct reload *r, struct target *t,
			const struct cfg_target *ct, bool add)
{
	struct acl_rule *a, *tmp;
	char texts[64][TGT_NAME_MAX];
	bool is_name[64];
	int n = 0;

	if (add) {
		for (int k = 0; k < ct->nr_acls; k++)
			if (tgt_acl_add(t, ct->acls[k].text, ct->acls[k].is_name) == 0)
				r->changed++;
		return;
	}
	/* collect under the lock, delete after (tgt_acl_del locks) */
	pthread_mutex_lock(&t->lock);
	list_for_each_entry_safe(a, tmp, &t->acls, link)
		if (!reload_acl_in_cfg(ct, a) && n < (int)ARRAY_SIZE(texts)) {
			snprintf(texts[n], sizeof(texts[0]), "%s", a->text);
			is_name[n++] = a->kind == ACL_NAME;
		}
	pthread_mutex_unlock(&t->lock);
	for (int i = 0; i < n; i++)
		if (tgt_acl_del(t, texts[i], is_name[i]) == 0)
			r->changed++;
}

static void reload_params(struct reload *r, struct target *t,
			  const struct cfg_target *ct)
{
	struct tgt_param *p, *tmp;
	char cur[256];

	for (int k = 0; k < ct->nr_params; k++) {
		if (tgt_param_get(t, ct->params[k].key, cur, sizeof(cur)) == 0 &&
		    strcmp(cur, ct->params[k].value) == 0)
			continue;
		if (tgt_param_set(t, ct->params[k].key, ct->params[k].value) == 0)
			r->changed++;
	}
	/* Overrides the file no longer has go back to the defaults (for
	 * the next login; sessions keep what they negotiated). */
	pthread_mutex_lock(&t->lock);
	list_for_each_entry_safe(p, tmp, &t->params, link) {
		bool keep = false;
		for (int k = 0; k < ct->nr_params && !keep; k++)
			keep = strcasecmp(p->key, ct->params[k].key) == 0;
		if (!keep) {
			list_del(&p->link);
			free(p);
			r->changed++;
		}
	}
	pthread_mutex_unlock(&t->lock);
}

static const struct cfg_target *reload_find_target(const struct cfg_priv *pv,
						   const char *name)
{
	for (int i = 0; i < pv->nr_targets; i++)
		if (strcmp(pv->targets[i].name, name) == 0)
			return &pv->targets[i];
	return NULL;
}

struct reload_names {
	int tids[1024];
	char names[1024][TGT_NAME_MAX];
	int n;
};

static void reload_list_target(struct target *t, void *arg)
{
	struct reload_names *rn = arg;

	if (rn->n == (int)ARRAY_SIZE(rn->tids))
		return;
	rn->tids[rn->n] = t->tid;
	snprintf(rn->names[rn->n++], TGT_NAME_MAX, "%s", t->name);
}

static void reload_list_account(const char *user, void *arg)
{
	struct reload_names *rn = arg;

	if (rn->n < (int)ARRAY_SIZE(rn->names))
		snprintf(rn->names[rn->n++], TGT_NAME_MAX, "%s", user);
}

static void reload_phase2(struct reload *r, const struct cfg_priv *pv)
{
	struct reload_names *rn = xzalloc(sizeof(*rn));
	char secret[ACCT_SECRET_MAX];

	/* Changed secrets, in place (the bindings stay). */
	for (int i = 0; i < pv->nr_accounts; i++) {
		const struct cfg_account *ca = &pv->accounts[i];
		if (acct_secret(ca->user, secret, sizeof(secret)) == 0 &&
		    strcmp(secret, ca->password) != 0 &&
		    acct_set_secret(ca->user, ca->password) == 0) {
			log_info("reload: account %s: secret changed", ca->user);
			r->changed++;
		}
	}
	explicit_bzero(secret, sizeof(secret));

	tgt_for_each(reload_list_target, rn);
	for (int i = 0; i < rn->n; i++) {
		const struct cfg_target *ct = reload_find_target(pv, rn->names[i]);
		struct target *t = tgt_get_by_tid(rn->tids[i]);
		bool created = reload_was_created(r, rn->tids[i]);

		if (!t)
			continue;
		if (!ct) {
			tgt_put(t);
			int ret = config_target_delete(rn->tids[i], false);
			if (ret == -EBUSY) {
				log_warn("reload: target %d (%s) has sessions: kept (delete it with --force)",
					 rn->tids[i], rn->names[i]);
				r->kept++;
			} else if (ret == 0) {
				log_info("reload: target %d (%s) removed",
					 rn->tids[i], rn->names[i]);
				r->removed++;
			}
			continue;
		}
		if (!created) {
			pthread_mutex_lock(&t->lock);
			if (ct->has_nop_interval && t->nop_interval != ct->nop_interval) {
				t->nop_interval = ct->nop_interval;
				r->changed++;
			}
			if (ct->has_nop_count && t->nop_count != ct->nop_count) {
				t->nop_count = ct->nop_count;
				r->changed++;
			}
			pthread_mutex_unlock(&t->lock);
			reload_params(r, t, ct);
			reload_luns(r, t, ct);
		}
		/* tighten, then loosen */
		reload_bindings(r, t->tid, &ct->auth, true);
		reload_acls(r, t, ct, false);
		reload_bindings(r, t->tid, &ct->auth, false);
		reload_acls(r, t, ct, true);
		if (created) {
			t->offline = false;
			log_info("reload: target %d (%s) added", t->tid, t->name);
		}
		tgt_put(t);
	}
	reload_bindings(r, ACCT_DISCOVERY_TID, &pv->discovery, true);
	reload_bindings(r, ACCT_DISCOVERY_TID, &pv->discovery, false);

	/* Accounts the file no longer has (their bindings go with them). */
	rn->n = 0;
	acct_for_each(reload_list_account, rn);
	for (int i = 0; i < rn->n; i++) {
		bool keep = false;
		for (int k = 0; k < pv->nr_accounts && !keep; k++)
			keep = strcmp(pv->accounts[k].user, rn->names[i]) == 0;
		if (!keep && acct_delete(rn->names[i]) == 0) {
			log_info("reload: account %s removed", rn->names[i]);
			r->removed++;
		}
	}
	free(rn);
}

static bool reload_portals_differ(const struct config *a,
				  const struct config *b)
{
	if (!a || a->nr_portals != b->nr_portals)
		return true;
	for (int i = 0; i < a->nr_portals; i++)
		if (strcmp(a->portals[i].text, b->portals[i].text) != 0)
			return true;
	return false;
}

/* New logins, connections and commands follow the new limits; what is
 * already there stays (a session keeps its CmdSN window). */
static void reload_limits(const struct iscsi_limits *l)
{
	struct iscsi_limits cur;

	iscsi_limits_get(&cur);
	if (memcmp(&cur, l, sizeof(cur)) == 0)
		return;
	iscsi_limits_set(l);
	log_info("reload: limits changed");
}

int config_reload(const char *path)
{
	struct config *cfg = xzalloc(sizeof(*cfg));
	struct reload r = { 0 };
	char err[CFG_WHERE_MAX + 2 * ACCT_NAME_MAX + 1024];
	int ret;

	log_info("SIGHUP: reloading %s", path);
	ret = config_load(path, cfg, err, sizeof(err));
	if (ret) {
		log_err("reload refused, nothing changed: %s", err);
		free(cfg);
		return ret;
	}
	if (reload_portals_differ(config_get_active(), cfg))
		log_warn("reload: portals changed in %s: they take effect at the next start",
			 path);

	config_lock();
	ret = reload_phase1(&r, cfg->priv, err, sizeof(err));
	if (ret) {
		reload_rollback(&r);
		config_unlock();
		log_err("reload refused, nothing changed: %s", err);
	} else {
		reload_phase2(&r, cfg->priv);
		r.changed += cfg_bitmaps_reload(cfg->priv);
		config_unlock();
		reload_limits(&cfg->limits);
		log_info("reload of %s done: %d added, %d removed, %d changed, %d kept in use",
			 path, r.added, r.removed, r.changed, r.kept);
	}
	reload_free(&r);
	config_free(cfg);
	free(cfg);
	return ret;
}

/* Serializes management requests with a SIGHUP reload. */
static pthread_mutex_t config_change_lock = PTHREAD_MUTEX_INITIALIZER;

void config_lock(void)
{
	pthread_mutex_lock(&config_change_lock);
}

void config_unlock(void)
{
	pthread_mutex_unlock(&config_change_lock);
}
