/* config_auth.c - CHAP accounts in targets.conf.
 *
 *   accounts = ( { user = "alice"; password = "alice-secret-1"; }, ... );
 *   discovery = { incoming_users = [ "alice" ]; outgoing_user = "bob"; };
 *   targets = ( { ...; incoming_users = [ "alice" ]; outgoing_user = "bob"; } );
 *
 * Accounts are defined once and bound by name, the model of tgtadm's
 * account mode (account.h).  An initiator logging in to a target with
 * incoming users must authenticate as one of them (CHAP, RFC 7143 section
 * 12.1.3); with an outgoing user the target authenticates back (mutual
 * CHAP).  Passwords never appear in messages and are wiped when freed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "util.h"

static struct cfg_account *cfg_account_find(struct cfg_priv *pv,
					    const char *user)
{
	for (int i = 0; i < pv->nr_accounts; i++)
		if (strcmp(pv->accounts[i].user, user) == 0)
			return &pv->accounts[i];
	return NULL;
}

/* A CHAP name travels in a login key (CHAP_N) and, through tgtadm, in a
 * comma-separated payload: printable ASCII without ','. */
static bool cfg_chap_name_ok(const char *s)
{
	if (!*s || strlen(s) >= ACCT_NAME_MAX)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s > 0x7e || *s == ',')
			return false;
	return true;
}

static int cfg_string_member(struct cfg_ctx *c, const config_setting_t *v,
			     const char **out)
{
	if (config_setting_type(v) != CONFIG_TYPE_STRING)
		return cfg_fail(c, v, config_setting_name(v),
				"expected a string, not %s",
				cfg_type_name(config_setting_type(v)));
	*out = config_setting_get_string(v);
	return 0;
}

static int cfg_account(struct cfg_ctx *c, const config_setting_t *g,
		       struct cfg_priv *pv)
{
	const char *user = NULL, *password = NULL;
	struct cfg_account *a;
	int ret;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP)
		return cfg_fail(c, g, "accounts",
				"each account is a group { user = \"...\"; password = \"...\"; }, not %s",
				cfg_type_name(config_setting_type(g)));
	for (int i = 0; i < config_setting_length(g); i++) {
		const config_setting_t *v = config_setting_get_elem(g, (unsigned)i);
		const char *key = config_setting_name(v);

		if (strcmp(key, "user") == 0)
			ret = cfg_string_member(c, v, &user);
		else if (strcmp(key, "password") == 0)
			ret = cfg_string_member(c, v, &password);
		else
			ret = cfg_fail(c, v, key, "unknown key");
		if (ret)
			return ret;
	}
	if (!user)
		return cfg_fail(c, g, "user", "missing (every account needs a user name)");
	if (!password)
		return cfg_fail(c, g, "password", "missing (the CHAP secret)");
	const config_setting_t *us = config_setting_get_member(g, "user");
	const config_setting_t *ps = config_setting_get_member(g, "password");
	if (!cfg_chap_name_ok(user))
		return cfg_fail(c, us, "user",
				"\"%s\" is not a CHAP name (1 to %d printable characters, no blanks or ',')",
				user, ACCT_NAME_MAX - 1);
	if (!*password)
		return cfg_fail(c, ps, "password",
				"empty: set the CHAP secret (a dump leaves secrets out)");
	if (strlen(password) >= ACCT_SECRET_MAX)
		return cfg_fail(c, ps, "password",
				"must be 1 to %d characters", ACCT_SECRET_MAX - 1);
	if (cfg_account_find(pv, user))
		return cfg_fail(c, us, "user", "account %s is defined twice",
				user);

	a = realloc(pv->accounts, sizeof(*a) * (size_t)(pv->nr_accounts + 1));
	if (!a)
		return cfg_fail(c, g, "accounts", "out of memory");
	pv->accounts = a;
	a = &pv->accounts[pv->nr_accounts++];
	memset(a, 0, sizeof(*a));
	snprintf(a->user, sizeof(a->user), "%s", user);
	snprintf(a->password, sizeof(a->password), "%s", password);
	cfg_where(c, g, a->where, sizeof(a->where));
	return 0;
}

int cfg_accounts(struct cfg_ctx *c, const config_setting_t *s,
		 struct cfg_priv *pv)
{
	int type = config_setting_type(s);

	if (type != CONFIG_TYPE_LIST &&
	    !(type == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0))
		return cfg_fail(c, s, "accounts",
				"expected a list ( { user = ...; password = ...; }, ... ), not %s",
				cfg_type_name(type));
	for (int i = 0; i < config_setting_length(s); i++) {
		int ret = cfg_account(c, config_setting_get_elem(s, (unsigned)i),
				      pv);
		if (ret)
			return ret;
	}
	return 0;
}

int cfg_auth_member(struct cfg_ctx *c, const config_setting_t *v,
		    struct cfg_auth *a)
{
	const char *key = config_setting_name(v);
	const char *user = NULL;
	int type = config_setting_type(v);

	if (strcmp(key, "outgoing_user") == 0) {
		int ret = cfg_string_member(c, v, &user);
		if (ret)
			return ret;
		if (strlen(user) >= ACCT_NAME_MAX)
			return cfg_fail(c, v, key, "name too long");
		snprintf(a->outgoing.user, sizeof(a->outgoing.user), "%s", user);
		cfg_where(c, v, a->outgoing.where, sizeof(a->outgoing.where));
		a->has_outgoing = true;
		return 0;
	}
	if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST)
		return cfg_fail(c, v, key,
				"expected an array of account names [ \"alice\", ... ], not %s",
				cfg_type_name(type));
	for (int i = 0; i < config_setting_length(v); i++) {
		const config_setting_t *e = config_setting_get_elem(v, (unsigned)i);
		struct cfg_account_ref *r;

		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return cfg_fail(c, e, key, "each entry is a string, not %s",
					cfg_type_name(config_setting_type(e)));
		user = config_setting_get_string(e);
		if (strlen(user) >= ACCT_NAME_MAX)
			return cfg_fail(c, e, key, "name too long");
		for (int k = 0; k < a->nr_incoming; k++)
			if (strcmp(a->incoming[k].user, user) == 0)
				return cfg_fail(c, e, key, "%s is listed twice",
						user);
		r = realloc(a->incoming, sizeof(*r) * (size_t)(a->nr_incoming + 1));
		if (!r)
			return cfg_fail(c, e, key, "out of memory");
		a->incoming = r;
		r = &a->incoming[a->nr_incoming++];
		snprintf(r->user, sizeof(r->user), "%s", user);
		cfg_where(c, e, r->where, sizeof(r->where));
	}
	return 0;
}

int cfg_discovery(struct cfg_ctx *c, const config_setting_t *s,
		  struct cfg_priv *pv)
{
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return cfg_fail(c, s, "discovery",
				"expected a group { incoming_users = [ ... ]; outgoing_user = \"...\"; }, not %s",
				cfg_type_name(config_setting_type(s)));
	for (int i = 0; i < config_setting_length(s); i++) {
		const config_setting_t *v = config_setting_get_elem(s, (unsigned)i);
		const char *key = config_setting_name(v);
		int ret;

		if (strcmp(key, "incoming_users") == 0 ||
		    strcmp(key, "outgoing_user") == 0)
			ret = cfg_auth_member(c, v, &pv->discovery);
		else
			ret = cfg_fail(c, v, key, "unknown key");
		if (ret)
			return ret;
	}
	return 0;
}

/* Is user an incoming user of any target or of discovery? */
static bool cfg_used_incoming(const struct cfg_priv *pv, const char *user)
{
	const struct cfg_auth *a = &pv->discovery;

	for (int t = -1; t < pv->nr_targets; t++) {
		if (t >= 0)
			a = &pv->targets[t].auth;
		for (int i = 0; i < a->nr_incoming; i++)
			if (strcmp(a->incoming[i].user, user) == 0)
				return true;
	}
	return false;
}

static int cfg_auth_check_one(struct cfg_ctx *c, struct cfg_priv *pv,
			      const struct cfg_auth *a)
{
	for (int i = 0; i < a->nr_incoming; i++)
		if (!cfg_account_find(pv, a->incoming[i].user))
			return cfg_fail_at(c, a->incoming[i].where,
					   "incoming_users",
					   "no account \"%s\" (define it in accounts)",
					   a->incoming[i].user);
	if (!a->has_outgoing)
		return 0;
	const struct cfg_account *out = cfg_account_find(pv, a->outgoing.user);
	if (!out)
		return cfg_fail_at(c, a->outgoing.where, "outgoing_user",
				   "no account \"%s\" (define it in accounts)",
				   a->outgoing.user);
	/* RFC 7143's CHAP rules: a secret that authenticates initiators must
	 * never authenticate the target, or a captured exchange in one
	 * direction could be replayed in the other. */
	if (cfg_used_incoming(pv, out->user))
		return cfg_fail_at(c, a->outgoing.where, "outgoing_user",
				   "%s also authenticates initiators (incoming_users): one CHAP secret must not be used in both directions",
				   out->user);
	for (int i = 0; i < pv->nr_accounts; i++) {
		const struct cfg_account *in = &pv->accounts[i];
		if (in != out && cfg_used_incoming(pv, in->user) &&
		    strcmp(in->password, out->password) == 0)
			return cfg_fail_at(c, a->outgoing.where, "outgoing_user",
					   "%s has the same password as incoming account %s: one CHAP secret must not be used in both directions",
					   out->user, in->user);
	}
	return 0;
}

int cfg_auth_check(struct cfg_ctx *c, struct cfg_priv *pv)
{
	int ret = cfg_auth_check_one(c, pv, &pv->discovery);

	for (int t = 0; !ret && t < pv->nr_targets; t++)
		ret = cfg_auth_check_one(c, pv, &pv->targets[t].auth);
	return ret;
}

void cfg_auth_free(struct cfg_priv *pv)
{
	for (int i = 0; i < pv->nr_accounts; i++)
		explicit_bzero(pv->accounts[i].password,
			       sizeof(pv->accounts[i].password));
	free(pv->accounts);
	pv->accounts = NULL;
	pv->nr_accounts = 0;
	free(pv->discovery.incoming);
	pv->discovery.incoming = NULL;
	for (int t = 0; t < pv->nr_targets; t++) {
		free(pv->targets[t].auth.incoming);
		pv->targets[t].auth.incoming = NULL;
	}
}

/* ---- apply ---- */

int cfg_auth_apply(const struct cfg_priv *pv, char *err, unsigned errlen,
		   char ***made, int *nr_made)
{
	*made = xzalloc(sizeof(**made) * (size_t)(pv->nr_accounts + 1));
	*nr_made = 0;
	for (int i = 0; i < pv->nr_accounts; i++) {
		const struct cfg_account *a = &pv->accounts[i];
		int ret = acct_create(a->user, a->password);

		if (ret) {
			snprintf(err, errlen, "%s: account %s: %s", a->where,
				 a->user,
				 ret == -EEXIST ? "an account with this name already exists"
						: strerror(-ret));
			return ret;
		}
		(*made)[(*nr_made)++] = xstrdup(a->user);
	}
	return 0;
}

int cfg_auth_bind(const struct cfg_auth *a, int tid, char *err,
		  unsigned errlen)
{
	for (int i = 0; i <= a->nr_incoming; i++) {
		bool outgoing = i == a->nr_incoming;
		const struct cfg_account_ref *r = outgoing ? &a->outgoing
							   : &a->incoming[i];
		if (outgoing && !a->has_outgoing)
			break;
		int ret = acct_bind(tid, r->user, outgoing);
		if (ret) {
			snprintf(err, errlen, "%s: %s: %s: %s", r->where,
				 outgoing ? "outgoing_user" : "incoming_users",
				 r->user,
				 ret == -EBUSY ? "the target already has an outgoing account"
					       : strerror(-ret));
			return ret;
		}
	}
	return 0;
}
