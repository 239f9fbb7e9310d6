/* config_apply.c - create what a loaded targets.conf describes
 * (config_apply() in config.h).
 *
 * Everything was validated by config_load(); what can still fail here is
 * the outside world (a backing store that cannot be opened or created, a
 * name already in the table).  Then everything this call created is
 * removed again -- targets, LUNs, and the backing files and directories it
 * made -- so holdfastd never serves half a configuration. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "account.h"
#include "cbt_set.h"
#include "config.h"
#include "config_internal.h"
#include "scsi.h"
#include "target.h"
#include "util.h"

/* Paths config_apply created (files, then directories), so a failed
 * apply can remove them again, newest first. */
struct cfg_made {
	char **paths;
	bool *is_dir;
	int nr, cap;
};

static void cfg_made_add(struct cfg_made *m, const char *path, bool is_dir)
{
	if (m->nr == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 8;
		m->paths = realloc(m->paths, sizeof(*m->paths) * (size_t)m->cap);
		m->is_dir = realloc(m->is_dir, sizeof(*m->is_dir) * (size_t)m->cap);
		if (!m->paths || !m->is_dir)
			abort();	/* a few pointers: nothing sane to do */
	}
	m->paths[m->nr] = xstrdup(path);
	m->is_dir[m->nr++] = is_dir;
}

static void cfg_made_free(struct cfg_made *m, bool remove)
{
	for (int i = m->nr - 1; i >= 0; i--) {
		if (remove && m->is_dir[i])
			rmdir(m->paths[i]);
		else if (remove)
			unlink(m->paths[i]);
		free(m->paths[i]);
	}
	free(m->paths);
	free(m->is_dir);
	memset(m, 0, sizeof(*m));
}

/* mkdir -p the directory holding path, remembering what it made. */
static int cfg_make_parents(const char *path, struct cfg_made *m)
{
	char dir[PATH_MAX];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (stat(dir, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	int ret = cfg_make_parents(dir, m);
	if (ret)
		return ret;
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return -errno;
	cfg_made_add(m, dir, true);
	return 0;
}

static void cfg_rollback(const struct cfg_priv *pv, int nr_created,
			 struct cfg_made *made)
{
	for (int i = nr_created - 1; i >= 0; i--)
		config_target_delete(pv->targets[i].tid, true);
	cfg_made_free(made, true);
}

/* Free the names of the accounts config_apply created; with remove, delete
 * the accounts too (and with them their bindings). */
static void cfg_accounts_free(char **names, int n, bool remove)
{
	for (int i = 0; i < n; i++) {
		if (remove)
			acct_delete(names[i]);
		free(names[i]);
	}
	free(names);
}

/* The bitmaps the configuration declared, as last applied (at start or
 * by a reload): what a reload may remove.  Guarded by config_lock() (and
 * only written at start before any management request). */
struct cfg_declared {
	char target[TGT_NAME_MAX];
	uint64_t lun;
	char name[64];
};
static struct cfg_declared *declared;
static int nr_declared;

static void cfg_declared_set(const struct cfg_priv *pv)
{
	int n = 0;

	for (int i = 0; i < pv->nr_targets; i++)
		for (int k = 0; k < pv->targets[i].nr_luns; k++)
			n += pv->targets[i].luns[k].nr_bitmaps;
	free(declared);
	declared = n ? xzalloc(sizeof(*declared) * (size_t)n) : NULL;
	nr_declared = 0;
	for (int i = 0; i < pv->nr_targets; i++)
		for (int k = 0; k < pv->targets[i].nr_luns; k++) {
			const struct cfg_lun *cl = &pv->targets[i].luns[k];

			for (int m = 0; m < cl->nr_bitmaps; m++) {
				struct cfg_declared *d = &declared[nr_declared++];

				snprintf(d->target, sizeof(d->target), "%s",
					 pv->targets[i].name);
				d->lun = cl->s.lun;
				snprintf(d->name, sizeof(d->name), "%s",
					 cl->bitmaps[m].name);
			}
		}
}

static bool cfg_declares(const struct cfg_priv *pv, const struct cfg_declared *d)
{
	for (int i = 0; i < pv->nr_targets; i++) {
		if (strcmp(pv->targets[i].name, d->target))
			continue;
		for (int k = 0; k < pv->targets[i].nr_luns; k++) {
			const struct cfg_lun *cl = &pv->targets[i].luns[k];

			if (cl->s.lun != d->lun)
				continue;
			for (int m = 0; m < cl->nr_bitmaps; m++)
				if (!strcmp(cl->bitmaps[m].name, d->name))
					return true;
		}
	}
	return false;
}

/* Declared bitmaps: a persistent one already loaded from the LUN's
 * sidecar keeps its bits (only its enabled state follows the file).
 * With reload, what cannot change (another granularity, a busy bitmap)
 * is kept with a warning instead of failing; *changed counts changes. */
static int cfg_lun_bitmaps(int tid, const struct cfg_lun *cl, bool reload,
			   int *changed, const char **why)
{
	struct target *t;
	struct scsi_lun *lun;
	int ret = 0;

	*why = NULL;
	if (!cl->nr_bitmaps)
		return 0;
	t = tgt_get_by_tid(tid);
	lun = t ? tgt_lun_get(t, cl->s.lun) : NULL;
	tgt_put(t);
	if (!lun || !lun->cbt) {
		scsi_lun_put(lun);
		*why = "the LUN has no changed-block tracking";
		return -EINVAL;
	}
	ret = scsi_lun_cbt_attach(lun, why);
	for (int i = 0; i < cl->nr_bitmaps && !ret; i++) {
		const struct cfg_bitmap *b = &cl->bitmaps[i];
		struct cbt_bitmap *have = cbt_set_find(lun->cbt, b->name);

		if (have && have->persistent == b->persistent &&
		    have->granularity == b->granularity) {
			if (reload && atomic_load(&have->enabled) == b->enabled)
				continue;
			ret = cbt_set_enable(lun->cbt, b->name, b->enabled);
			if (!ret && reload) {
				log_info("reload: target %d: LUN %" PRIu64 ": bitmap %s %s",
					 tid, cl->s.lun, b->name,
					 b->enabled ? "enabled" : "disabled");
				(*changed)++;
			}
		} else if (have) {
			*why = "a bitmap of that name with other settings is in the sidecar";
			ret = -EEXIST;
		} else {
			ret = cbt_set_add(lun->cbt, b->name, b->granularity,
					  b->persistent, b->enabled);
			if (!ret && reload) {
				log_info("reload: target %d: LUN %" PRIu64 ": bitmap %s added",
					 tid, cl->s.lun, b->name);
				(*changed)++;
			}
		}
		if (ret && reload) {
			log_warn("reload: %s: bitmap %s kept as it is: %s", cl->where,
				 b->name, *why ? *why : strerror(-ret));
			*why = NULL;
			ret = 0;
		}
		if (ret && !*why)
			*why = b->name;
	}
	scsi_lun_put(lun);
	return ret;
}

static int cfg_apply_bitmaps(int tid, const struct cfg_lun *cl,
			     const char **why)
{
	int changed = 0;

	return cfg_lun_bitmaps(tid, cl, false, &changed, why);
}

int cfg_bitmaps_reload(const struct cfg_priv *pv)
{
	int changed = 0;

	for (int i = 0; i < pv->nr_targets; i++) {
		struct target *t = tgt_get_by_name(pv->targets[i].name);
		int tid = t ? t->tid : 0;

		tgt_put(t);
		for (int k = 0; t && k < pv->targets[i].nr_luns; k++) {
			const struct cfg_lun *cl = &pv->targets[i].luns[k];
			const char *why = NULL;

			if (cfg_lun_bitmaps(tid, cl, true, &changed, &why))
				log_warn("reload: %s: bitmaps not applied: %s",
					 cl->where, why ? why : "?");
		}
	}
	for (int i = 0; i < nr_declared; i++) {
		const struct cfg_declared *d = &declared[i];
		struct target *t;
		struct scsi_lun *lun;
		int ret;

		if (cfg_declares(pv, d))
			continue;
		t = tgt_get_by_name(d->target);
		lun = t ? tgt_lun_get(t, d->lun) : NULL;
		tgt_put(t);
		if (!lun)
			continue;	/* went with its LUN or target */
		ret = lun->cbt ? cbt_set_remove(lun->cbt, d->name) : -ENOENT;
		if (!ret) {
			log_info("reload: target %s: LUN %" PRIu64 ": bitmap %s removed",
				 d->target, d->lun, d->name);
			changed++;
		} else if (ret == -EBUSY) {
			log_warn("reload: target %s: LUN %" PRIu64 ": bitmap %s is used by a job: kept",
				 d->target, d->lun, d->name);
		}
		scsi_lun_put(lun);
	}
	cfg_declared_set(pv);
	return changed;
}

int config_apply(struct config *cfg, char *err, unsigned errlen)
{
	struct cfg_priv *pv = cfg->priv;
	struct cfg_made made = { 0 };
	char **accounts = NULL;
	int nr_accounts = 0, done = 0, ret = 0;

	if (!pv)
		return 0;

	/* Accounts first: targets bind them as they are created. */
	ret = cfg_auth_apply(pv, err, errlen, &accounts, &nr_accounts);
	if (ret)
		goto fail;

	for (done = 0; done < pv->nr_targets; done++) {
		const struct cfg_target *ct = &pv->targets[done];
		struct target *t;

		ret = tgt_create(ct->tid, ct->name);
		if (ret < 0) {
			snprintf(err, errlen, "%s: target %s (tid %d): %s",
				 ct->where, ct->name, ct->tid,
				 ret == -EEXIST ? "a target with this tid or name already exists"
						: strerror(-ret));
			goto fail;
		}
		ret = 0;
		t = tgt_get_by_tid(ct->tid);
		if (!t) {
			ret = -ENOENT;
			snprintf(err, errlen, "%s: target %s vanished", ct->where,
				 ct->name);
			done++;
			goto fail;
		}
		pthread_mutex_lock(&t->lock);
		if (ct->has_nop_interval)
			t->nop_interval = ct->nop_interval;
		if (ct->has_nop_count)
			t->nop_count = ct->nop_count;
		pthread_mutex_unlock(&t->lock);
		for (int k = 0; !ret && k < ct->nr_acls; k++) {
			ret = tgt_acl_add(t, ct->acls[k].text, ct->acls[k].is_name);
			if (ret == -EEXIST)
				ret = 0;	/* a repeated rule changes nothing */
			else if (ret)
				snprintf(err, errlen, "%s: initiators: %s: %s",
					 ct->where, ct->acls[k].text,
					 strerror(-ret));
		}
		for (int k = 0; !ret && k < ct->nr_params; k++) {
			ret = tgt_param_set(t, ct->params[k].key,
					    ct->params[k].value);
			if (ret)
				snprintf(err, errlen, "%s: params: %s: %s",
					 ct->where, ct->params[k].key,
					 strerror(-ret));
		}
		tgt_put(t);
		if (!ret)
			ret = cfg_auth_bind(&ct->auth, ct->tid, err, errlen);
		if (ret) {
			done++;
			goto fail;
		}

		for (int k = 0; k < ct->nr_luns; k++) {
			const struct cfg_lun *cl = &ct->luns[k];
			const char *why = NULL;
			bool existed = true;
			struct stat st;

			if (cl->s.path[0] && stat(cl->s.path, &st) != 0) {
				existed = false;
				ret = cfg_make_parents(cl->s.path, &made);
				if (ret) {
					snprintf(err, errlen,
						 "%s: lun %" PRIu64 ": cannot create the directory for %s: %s",
						 cl->where, cl->s.lun,
						 cl->s.path, strerror(-ret));
					done++;
					goto fail;
				}
			}
			ret = tgt_lun_add(ct->tid, &cl->s, &why);
			if (!existed && access(cl->s.path, F_OK) == 0)
				cfg_made_add(&made, cl->s.path, false);
			if (ret) {
				snprintf(err, errlen, "%s: lun %" PRIu64 ": %s%s%s",
					 cl->where, cl->s.lun,
					 why ? why : "", why ? ": " : "",
					 strerror(-ret));
				done++;
				goto fail;
			}
			ret = cfg_apply_bitmaps(ct->tid, cl, &why);
			if (ret) {
				snprintf(err, errlen, "%s: lun %" PRIu64 ": bitmaps: %s%s%s",
					 cl->where, cl->s.lun,
					 why ? why : "", why ? ": " : "",
					 strerror(-ret));
				done++;
				goto fail;
			}
		}
	}
	ret = cfg_auth_bind(&pv->discovery, ACCT_DISCOVERY_TID, err, errlen);
	if (ret)
		goto fail;
	cfg_made_free(&made, false);
	cfg_accounts_free(accounts, nr_accounts, false);
	cfg_declared_set(pv);
	config_set_active(cfg);
	return 0;

fail:
	log_err("configuration %s not applied: %s", cfg->path, err);
	cfg_rollback(pv, done, &made);
	cfg_accounts_free(accounts, nr_accounts, true);
	return ret < 0 ? ret : -EINVAL;
}

