/* target.c - the table of targets, their LUNs, ACLs and iSCSI parameter
 * overrides (target.h).
 *
 * Locking: the table (list + tid/name lookups) is a pthread rwlock so that
 * logins on every reactor can look targets up concurrently while the
 * management thread creates and deletes them.  Each target's mutable parts
 * (ACLs, params, LUN slots) are guarded by the target's own mutex, taken
 * only briefly.  Lifetimes are reference counts: the table holds one
 * reference per target; sessions and lookups take more, so a target
 * deleted while a session still uses it is freed by its last user. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hang.h"
#include "reactor.h"
#include "scsi.h"
#include "target.h"

static pthread_rwlock_t tgt_table_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct list_head tgt_table = LIST_HEAD_INIT(tgt_table);

void tgt_table_init(void)
{
	/* The table is statically initialised; nothing to do.  Kept so the
	 * daemon's start-up sequence reads symmetrically with
	 * tgt_table_clear(). */
}

/* ---- names ---- */

/* iSCSI names (RFC 7143 section 4.2.7.2 and RFC 3722 stringprep) are
 * restricted here, as tgtd does, to letters, digits, '.', '-' and ':'.
 * That covers iqn., eui. and naa. names and keeps the show text and the
 * management payload (comma separated) unambiguous. */
static bool tgt_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= TGT_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '.' && c != '-' && c != ':')
			return false;
	}
	return true;
}

/* Caller holds the table lock (read or write). */
static struct target *tgt_find_tid_locked(int tid)
{
	struct target *t;

	list_for_each_entry(t, &tgt_table, link)
		if (t->tid == tid)
			return t;
	return NULL;
}

static struct target *tgt_find_name_locked(const char *name)
{
	struct target *t;

	/* iSCSI names compare case-insensitively (RFC 3722 maps them to
	 * lower case), so "IQN.X" and "iqn.x" are the same target. */
	list_for_each_entry(t, &tgt_table, link)
		if (strcasecmp(t->name, name) == 0)
			return t;
	return NULL;
}

/* ---- create / delete / references ---- */

int tgt_create(int tid, const char *name)
{
	struct target *t, *pos;
	int ret;

	if (!name || !tgt_name_valid(name))
		return -EINVAL;

	t = xzalloc(sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	list_init(&t->acls);
	list_init(&t->params);
	list_init(&t->link);
	atomic_init(&t->refcnt, 1);	/* the table's reference */
	atomic_init(&t->nr_sessions, 0);
	pthread_mutex_init(&t->lock, NULL);

	pthread_rwlock_wrlock(&tgt_table_lock);
	if (tgt_find_name_locked(name)) {
		ret = -EEXIST;
		goto fail;
	}
	if (tid > 0) {
		if (tgt_find_tid_locked(tid)) {
			ret = -EEXIST;
			goto fail;
		}
	} else {
		/* Lowest free tid: the list is ordered, so walk it until a
		 * gap appears. */
		tid = 1;
		list_for_each_entry(pos, &tgt_table, link) {
			if (pos->tid == tid)
				tid++;
			else if (pos->tid > tid)
				break;
		}
	}
	t->tid = tid;

	/* Keep the table ordered by tid: show and tgt_for_each rely on it. */
	list_for_each_entry(pos, &tgt_table, link)
		if (pos->tid > tid)
			break;
	list_add_tail(&t->link, &pos->link);
	pthread_rwlock_unlock(&tgt_table_lock);
	log_info("target %d %s created", tid, name);
	return tid;

fail:
	pthread_rwlock_unlock(&tgt_table_lock);
	pthread_mutex_destroy(&t->lock);
	free(t);
	return ret;
}

static void tgt_free(struct target *t)
{
	struct acl_rule *a, *an;
	struct tgt_param *p, *pn;

	for (int i = 0; i < TGT_MAX_LUNS; i++) {
		/* the last reference to the target: no session, so no
		 * reactor, can look a LUN up any more */
		if (t->luns[i]) {
			scsi_lun_put(t->luns[i]);
			__atomic_store_n(&t->luns[i], NULL, __ATOMIC_RELAXED);
		}
	}
	list_for_each_entry_safe(a, an, &t->acls, link) {
		list_del(&a->link);
		free(a);
	}
	list_for_each_entry_safe(p, pn, &t->params, link) {
		list_del(&p->link);
		free(p);
	}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

void tgt_get(struct target *t)
{
	atomic_fetch_add(&t->refcnt, 1);
}

void tgt_put(struct target *t)
{
	if (t && atomic_fetch_sub(&t->refcnt, 1) == 1)
		tgt_free(t);
}

int tgt_delete(int tid, bool force)
{
	struct target *t;

	pthread_rwlock_wrlock(&tgt_table_lock);
	t = tgt_find_tid_locked(tid);
	if (!t) {
		pthread_rwlock_unlock(&tgt_table_lock);
		return -ENOENT;
	}
	if (!force && atomic_load(&t->nr_sessions) > 0) {
		pthread_rwlock_unlock(&tgt_table_lock);
		return -EBUSY;
	}
	/* Unlinked first, so no new login can find it; sessions still
	 * holding a reference keep it alive until they close. */
	list_del(&t->link);
	pthread_rwlock_unlock(&tgt_table_lock);
	log_info("target %d %s deleted%s", tid, t->name,
		 force ? " (forced)" : "");
	tgt_put(t);
	return 0;
}

void tgt_table_clear(void)
{
	struct target *t;

	for (;;) {
		pthread_rwlock_wrlock(&tgt_table_lock);
		if (list_empty(&tgt_table)) {
			pthread_rwlock_unlock(&tgt_table_lock);
			return;
		}
		t = list_first_entry(&tgt_table, struct target, link);
		list_del(&t->link);
		pthread_rwlock_unlock(&tgt_table_lock);
		tgt_put(t);
	}
}

struct target *tgt_get_by_tid(int tid)
{
	struct target *t;

	pthread_rwlock_rdlock(&tgt_table_lock);
	t = tgt_find_tid_locked(tid);
	if (t)
		tgt_get(t);
	pthread_rwlock_unlock(&tgt_table_lock);
	return t;
}

struct target *tgt_get_by_name(const char *name)
{
	struct target *t;

	if (!name)
		return NULL;
	pthread_rwlock_rdlock(&tgt_table_lock);
	t = tgt_find_name_locked(name);
	if (t)
		tgt_get(t);
	pthread_rwlock_unlock(&tgt_table_lock);
	return t;
}

void tgt_for_each(void (*fn)(struct target *t, void *arg), void *arg)
{
	struct target *t;

	pthread_rwlock_rdlock(&tgt_table_lock);
	list_for_each_entry(t, &tgt_table, link)
		fn(t, arg);
	pthread_rwlock_unlock(&tgt_table_lock);
}

int tgt_count(void)
{
	struct target *t;
	int n = 0;

	pthread_rwlock_rdlock(&tgt_table_lock);
	list_for_each_entry(t, &tgt_table, link)
		n++;
	pthread_rwlock_unlock(&tgt_table_lock);
	return n;
}

/* ---- LUNs ---- */

/* The LUN inventory changed: every remaining LUN raises REPORTED LUNS DATA
 * HAS CHANGED (SPC-4 5.14, 3F/0E) so initiators rescan. */
static void tgt_notify_luns_changed(struct target *t)
{
	struct scsi_lun *luns[TGT_MAX_LUNS];
	int n = 0;

	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TGT_MAX_LUNS; i++) {
		if (t->luns[i]) {
			scsi_lun_get(t->luns[i]);
			luns[n++] = t->luns[i];
		}
	}
	pthread_mutex_unlock(&t->lock);
	for (int i = 0; i < n; i++) {
		scsi_lun_notify(luns[i], SCSI_EV_LUNS_CHANGED);
		scsi_lun_put(luns[i]);
	}
}

/* A LUN shared with another node comes up in the state it asks for if
 * it can: active only if the other node does not hold the store
 * (scsi_alua.c); else standby, and the log says why. */
static void tgt_lun_alua_start(struct target *t, const struct lun_settings *s)
{
	struct scsi_lun *lun = tgt_lun_get(t, s->lun);
	const char *why = NULL;

	if (!lun)
		return;
	if (scsi_alua_apply(lun, s, false, &why)) {
		struct lun_settings sb = *s;

		log_warn("target %d: LUN %llu: comes up standby: %s", t->tid,
			 (unsigned long long)s->lun, why ? why : "?");
		sb.alua_standby = true;
		/* run-time state (scsi_alua_state()); the setting keeps
		 * the state asked for, a later update or SIGHUP retries */
		scsi_alua_apply(lun, &sb, false, &why);
	}
	scsi_lun_put(lun);
}

static int tgt_lun_add_store(int tid, const struct lun_settings *s,
			     struct backend *store, const char **errmsg);

/* A store given to tgt_lun_add_on() that never became a LUN's. */
static void tgt_store_close(struct backend *store)
{
	if (store) {
		store->ops->close(store);
		free(store);
	}
}

int tgt_lun_add(int tid, const struct lun_settings *s, const char **errmsg)
{
	return tgt_lun_add_store(tid, s, NULL, errmsg);
}

int tgt_lun_add_on(int tid, const struct lun_settings *s,
		   struct backend *store, const char **errmsg)
{
	return tgt_lun_add_store(tid, s, store, errmsg);
}

static int tgt_lun_add_store(int tid, const struct lun_settings *s,
			     struct backend *store, const char **errmsg)
{
	struct target *t;
	struct scsi_lun *lun = NULL;
	int ret;

	if (errmsg)
		*errmsg = NULL;
	/* LUN 0 is the controller LUN every target has (as in tgtd); media
	 * LUNs are 1..TGT_MAX_LUNS-1 (SAM-5 flat space addressing). */
	if (s->lun == 0 || s->lun >= TGT_MAX_LUNS) {
		if (errmsg)
			*errmsg = s->lun == 0 ? "LUN 0 is the controller LUN"
					      : "LUN number out of range (1..255)";
		tgt_store_close(store);
		return s->lun == 0 ? -EEXIST : -EINVAL;
	}
	t = tgt_get_by_tid(tid);
	if (!t) {
		tgt_store_close(store);
		return -ENOENT;
	}

	pthread_mutex_lock(&t->lock);
	ret = t->luns[s->lun] ? -EEXIST : 0;
	pthread_mutex_unlock(&t->lock);
	if (ret)
		goto out;

	/* Opening the backend may create and size a file: do it without the
	 * target lock so logins and lookups are never stalled by it. */
	ret = store ? scsi_lun_create_on(s, store, &lun, errmsg)
		    : scsi_lun_create(s, &lun, errmsg);
	store = NULL;	/* the LUN owns it now, or closed it */
	if (ret)
		goto out;
	ret = scsi_lun_cbt_init(lun, t->name, errmsg);
	if (ret) {
		scsi_lun_put(lun);
		goto out;
	}

	pthread_mutex_lock(&t->lock);
	if (t->luns[s->lun]) {
		ret = -EEXIST;	/* lost a race with another add */
	} else {
		lun->target = t;
		snprintf(lun->target_name, sizeof(lun->target_name), "%s",
			 t->name);
		__atomic_store_n(&t->luns[s->lun], lun, __ATOMIC_RELEASE);
		lun = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	if (lun)
		scsi_lun_put(lun);
	if (!ret) {
		char shown[sizeof(s->path)];

		log_info("target %d: LUN %llu added (%s %s)", tid,
			 (unsigned long long)s->lun, s->backend,
			 lun_settings_path_shown(s, shown, sizeof(shown)));
		tgt_notify_luns_changed(t);
		if (s->alua_group)
			tgt_lun_alua_start(t, s);
	}
out:
	tgt_store_close(store);
	tgt_put(t);
	return ret;
}

int tgt_lun_del(int tid, uint64_t lun_nr, bool force)
{
	struct target *t;
	struct scsi_lun *lun;
	int ret = 0;

	if (lun_nr == 0 || lun_nr >= TGT_MAX_LUNS)
		return -ENOENT;
	t = tgt_get_by_tid(tid);
	if (!t)
		return -ENOENT;
	pthread_mutex_lock(&t->lock);
	lun = t->luns[lun_nr];
	if (!lun) {
		ret = -ENOENT;
	} else if (!force && atomic_load(&lun->refcnt) > 1) {
		/* Commands are in flight (or held by the hang engine): the
		 * operator must say --force to pull the LUN from under them. */
		ret = -EBUSY;
	} else {
		__atomic_store_n(&t->luns[lun_nr], NULL, __ATOMIC_SEQ_CST);
	}
	pthread_mutex_unlock(&t->lock);
	if (!ret) {
		/* A reactor may have loaded the pointer just before the
		 * store (tgt_lun_get()) and not taken its reference yet: the
		 * table's reference goes once none can be between the two.
		 * Blocks for a reactor loop turn; no lock is held. */
		reactor_synchronize();
		log_info("target %d: LUN %llu deleted%s", tid,
			 (unsigned long long)lun_nr, force ? " (forced)" : "");
		/* Commands held by a hung LUN would keep it (and its store)
		 * alive until the store recovers: report them now so the
		 * last reference goes. */
		if (force && hang_state(lun) != HANG_OK)
			hang_verb(lun, "fail");
		scsi_lun_put(lun);
		tgt_notify_luns_changed(t);
	}
	tgt_put(t);
	return ret;
}

struct scsi_lun *tgt_lun_get(struct target *t, uint64_t lun_nr)
{
	struct scsi_lun *lun;

	if (lun_nr >= TGT_MAX_LUNS)
		return NULL;
	/* Lock-free, as in RCU's QSBR: a reactor that loaded the pointer
	 * takes its reference before its callback returns, and a delete
	 * drops the table's reference only after every reactor has been
	 * between callbacks (tgt_lun_del()), so the LUN is alive
	 * here.  acquire: pairs with the release store that published a
	 * fully built LUN. */
	lun = __atomic_load_n(&t->luns[lun_nr], __ATOMIC_ACQUIRE);
	if (lun)
		scsi_lun_get(lun);
	return lun;
}

int tgt_lun_list(struct target *t, uint64_t *luns, int max)
{
	int n = 0;

	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TGT_MAX_LUNS && n < max; i++)
		if (t->luns[i])
			luns[n++] = (uint64_t)i;
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* ---- ACLs ---- */

/* Parse an address rule: "10.0.0.1", "10.0.0.0/8", "::1", "[fe80::]/10",
 * "fd00::/8".  The prefix defaults to the full address length. */
static int acl_parse_addr(const char *text, struct acl_rule *r)
{
	char buf[TGT_NAME_MAX];
	char *slash, *addr = buf, *end;
	long prefix = -1;
	size_t n;

	snprintf(buf, sizeof(buf), "%s", text);
	slash = strchr(buf, '/');
	if (slash) {
		*slash = '\0';
		errno = 0;
		prefix = strtol(slash + 1, &end, 10);
		if (slash[1] == '\0' || *end || errno || prefix < 0)
			return -EINVAL;
	}
	n = strlen(addr);
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		addr[n - 1] = '\0';
		addr++;
	}
	memset(&r->addr, 0, sizeof(r->addr));
	struct sockaddr_in *sin = (struct sockaddr_in *)&r->addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&r->addr;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		if (prefix > 32)
			return -EINVAL;
		r->prefix = prefix < 0 ? 32 : (int)prefix;
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		if (prefix > 128)
			return -EINVAL;
		r->prefix = prefix < 0 ? 128 : (int)prefix;
	} else {
		return -EINVAL;
	}
	return 0;
}

int tgt_acl_parse(const char *rule, bool is_name, struct acl_rule *out)
{
	memset(out, 0, sizeof(*out));
	list_init(&out->link);
	if (!rule || !*rule || strlen(rule) >= sizeof(out->text))
		return -EINVAL;
	snprintf(out->text, sizeof(out->text), "%s", rule);
	if (strcasecmp(rule, "ALL") == 0) {
		/* tgtd takes ALL from both -I and -Q; so do we. */
		out->kind = ACL_ALL;
		snprintf(out->text, sizeof(out->text), "ALL");
		return 0;
	}
	if (is_name) {
		out->kind = ACL_NAME;
		return tgt_name_valid(rule) ? 0 : -EINVAL;
	}
	out->kind = ACL_ADDR;
	return acl_parse_addr(rule, out);
}

static bool acl_same(const struct acl_rule *a, const struct acl_rule *b)
{
	if (a->kind != b->kind)
		return false;
	switch (a->kind) {
	case ACL_ALL:
		return true;
	case ACL_NAME:
		return strcasecmp(a->text, b->text) == 0;
	case ACL_ADDR:
		/* "10.0.0.1" and "10.0.0.1/32" are the same rule. */
		if (a->prefix != b->prefix ||
		    a->addr.ss_family != b->addr.ss_family)
			return false;
		if (a->addr.ss_family == AF_INET)
			return ((const struct sockaddr_in *)&a->addr)->sin_addr.s_addr ==
			       ((const struct sockaddr_in *)&b->addr)->sin_addr.s_addr;
		return memcmp(&((const struct sockaddr_in6 *)&a->addr)->sin6_addr,
			      &((const struct sockaddr_in6 *)&b->addr)->sin6_addr,
			      16) == 0;
	}
	return false;
}

int tgt_acl_add(struct target *t, const char *rule, bool is_name)
{
	struct acl_rule parsed, *a;
	int ret = 0;

	if (tgt_acl_parse(rule, is_name, &parsed))
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	list_for_each_entry(a, &t->acls, link) {
		if (acl_same(a, &parsed)) {
			ret = -EEXIST;
			break;
		}
	}
	if (!ret) {
		a = xzalloc(sizeof(*a));
		*a = parsed;
		list_add_tail(&a->link, &t->acls);
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

int tgt_acl_del(struct target *t, const char *rule, bool is_name)
{
	struct acl_rule parsed, *a, *n;
	int ret = -ENOENT;

	if (tgt_acl_parse(rule, is_name, &parsed))
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	list_for_each_entry_safe(a, n, &t->acls, link) {
		if (acl_same(a, &parsed)) {
			list_del(&a->link);
			free(a);
			ret = 0;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* Does the first `prefix` bits of a and b agree? */
static bool prefix_match(const uint8_t *a, const uint8_t *b, int prefix)
{
	int bytes = prefix / 8, bits = prefix % 8;

	if (memcmp(a, b, (size_t)bytes) != 0)
		return false;
	if (bits == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - bits));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

static bool acl_addr_match(const struct acl_rule *r,
			   const struct sockaddr *peer)
{
	const uint8_t *pa;
	uint8_t v4[4];

	if (!peer)
		return false;
	if (r->addr.ss_family == AF_INET) {
		const struct sockaddr_in *rin = (const struct sockaddr_in *)&r->addr;
		if (peer->sa_family == AF_INET) {
			pa = (const uint8_t *)
			     &((const struct sockaddr_in *)peer)->sin_addr;
		} else if (peer->sa_family == AF_INET6) {
			/* A dual-stack listener sees IPv4 initiators as
			 * ::ffff:a.b.c.d; IPv4 rules must still match them. */
			const struct in6_addr *a6 =
				&((const struct sockaddr_in6 *)peer)->sin6_addr;
			if (!IN6_IS_ADDR_V4MAPPED(a6))
				return false;
			memcpy(v4, &a6->s6_addr[12], 4);
			pa = v4;
		} else {
			return false;
		}
		return prefix_match(pa, (const uint8_t *)&rin->sin_addr,
				    r->prefix);
	}
	if (peer->sa_family != AF_INET6)
		return false;
	return prefix_match(((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr,
			    ((const struct sockaddr_in6 *)&r->addr)->sin6_addr.s6_addr,
			    r->prefix);
}

bool tgt_acl_allows(struct target *t, const struct sockaddr *peer,
		    const char *initiator_name)
{
	struct acl_rule *a;
	bool ok = false;

	/* Rules are OR-ed; an empty list admits nobody (deny by default). */
	pthread_mutex_lock(&t->lock);
	list_for_each_entry(a, &t->acls, link) {
		switch (a->kind) {
		case ACL_ALL:
			ok = true;
			break;
		case ACL_NAME:
			ok = initiator_name &&
			     strcasecmp(a->text, initiator_name) == 0;
			break;
		case ACL_ADDR:
			ok = acl_addr_match(a, peer);
			break;
		}
		if (ok)
			break;
	}
	pthread_mutex_unlock(&t->lock);
	return ok;
}

/* ---- per-target iSCSI parameter overrides ---- */

int tgt_param_set(struct target *t, const char *key, const char *value)
{
	struct tgt_param *p;

	if (!key || !value || strlen(key) >= sizeof(p->key) ||
	    strlen(value) >= sizeof(p->value))
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	list_for_each_entry(p, &t->params, link) {
		if (strcmp(p->key, key) == 0) {
			snprintf(p->value, sizeof(p->value), "%s", value);
			pthread_mutex_unlock(&t->lock);
			return 0;
		}
	}
	p = xzalloc(sizeof(*p));
	snprintf(p->key, sizeof(p->key), "%s", key);
	snprintf(p->value, sizeof(p->value), "%s", value);
	list_add_tail(&p->link, &t->params);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

int tgt_param_get(struct target *t, const char *key, char *buf, unsigned len)
{
	struct tgt_param *p;
	int ret = -ENOENT;

	pthread_mutex_lock(&t->lock);
	list_for_each_entry(p, &t->params, link) {
		if (strcmp(p->key, key) == 0) {
			snprintf(buf, len, "%s", p->value);
			ret = 0;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}
