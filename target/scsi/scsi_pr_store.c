/* scsi_pr_store.c - the APTPL state file (SPC-4 5.13.5: registrations and
 * the persistent reservation survive power loss when the last REGISTER set
 * APTPL).
 *
 * Where: for a LUN with alua_group, with the state both nodes share
 * (lun_shared_state_path: next to the store or in alua_state_dir); else
 * $HOLDFAST_PR_DIR/<target name>.lun<N>.pr when that variable is
 * set, else "<backing file>.pr" next to a file LUN's backing file.  LUNs
 * with neither (null LUNs, block devices under /dev without the variable)
 * report PTPL_C = 0 and refuse APTPL.
 *
 * Format: text, one record per line, written to "<file>.tmp", fsync'ed
 * and renamed over the file (then the directory is fsync'ed), so a crash
 * leaves the old or the new state, never half of one:
 *
 *   holdfast-pr 1
 *   generation <PRgeneration, decimal>
 *   reservation <type 1..8> <scope 0>          (only while reserved)
 *   reg <key 0x16 hex> <isid 12 hex> <rel port> <all_tg_pt 0|1>
 *       <holder 0|1> <iSCSI initiator name>    (one line each)
 *   aptpl 0                                    (state shared with another
 *                                               node, not APTPL)
 *
 * A LUN shared by two nodes (alua_group, scsi_alua.c) writes this file on
 * every change, APTPL or not: it is how the other node learns the
 * registrations and the reservation when it takes over, so a cluster that
 * fenced with PR keeps its fence.  "aptpl 0" says the state was kept for
 * that reason only.
 *
 * A store that keeps small values of its own (backend_ops.meta_get /
 * meta_set: an RBD image's metadata) holds the same text under the key
 * PR_META_KEY instead of a file, unless a shared state file is configured
 * (alua_state_dir): every gateway in front of the image reads it there
 * after a handover, with no shared filesystem.  One meta_set replaces the
 * whole value, so it is as atomic as the rename.  Only the active gateway
 * writes it (a standby one refuses PERSISTENT RESERVE OUT, scsi_alua.c).
 *
 * The file goes away when an initiator clears APTPL.  A file that does not
 * parse is ignored with a log line (the LUN starts with no registrations),
 * never half applied. */
#define SCSI_PR_INTERNAL
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scsi_internal.h"
#include "scsi_pr.h"
#include "stack.h"
#include "target.h"
#include "util.h"

#define PR_STORE_MAGIC		"holdfast-pr 1"
#define PR_STORE_DIR_ENV	"HOLDFAST_PR_DIR"
#define PR_STORE_SUFFIX		".pr"
#define PR_STORE_TMP		".tmp"
#define PR_STORE_LINE_MAX	512
#define PR_META_KEY		"holdfast.pr"

/* The store node under lun's block stack when it keeps values of its own,
 * else NULL. */
static struct backend *pr_meta_store(const struct scsi_lun *lun)
{
	struct backend *store = lun->be ? be_stack_store(lun->be) : NULL;

	return store && store->ops->meta_get && store->ops->meta_set ? store
								     : NULL;
}

/* The label of the metadata state in log lines and pr->path */
static char *pr_meta_label(const struct scsi_lun *lun)
{
	char *p = NULL;

	if (asprintf(&p, "metadata key " PR_META_KEY " of %s",
		     lun->path[0] ? lun->path : "the store") < 0)
		return NULL;
	return p;
}

char *scsi_pr_store_path(const struct scsi_lun *lun, bool *meta)
{
	const char *dir = getenv(PR_STORE_DIR_ENV);
	char *p = NULL;

	*meta = false;

	/* shared with the other node (lun_shared_state_path): from the ALUA
	 * state, without a settings snapshot (the ALUA worker may be the
	 * first to ask); before that is set up, on a reactor or the
	 * management thread, from the snapshot */
	if ((p = scsi_alua_state_file((struct scsi_lun *)lun, PR_STORE_SUFFIX)))
		return p;
	const struct lun_settings *set = lun_settings_get(lun);

	if (set && set->alua_group) {
		char path[PATH_MAX];

		if (lun_shared_state_path(set,
					  lun->target ? lun->target->name
						      : lun->target_name,
					  PR_STORE_SUFFIX, path, sizeof(path))) {
			/* no shared file: the store's own metadata, if it
			 * has some (RBD), else this node's only */
			if (!pr_meta_store(lun))
				return NULL;
			*meta = true;
			return pr_meta_label(lun);
		}
		return strdup(path);
	}
	if (pr_meta_store(lun)) {
		*meta = true;
		return pr_meta_label(lun);
	}
	if (dir && *dir) {
		char name[TGT_NAME_MAX];
		const char *tn = lun->target ? lun->target->name : "target";
		unsigned i;

		/* IQNs may hold ':' and '/'-free punctuation; keep the file
		 * name portable */
		for (i = 0; tn[i] && i < sizeof(name) - 1; i++)
			name[i] = (char)((tn[i] == '/' || tn[i] == ':') ? '_'
								: tn[i]);
		name[i] = 0;
		if (asprintf(&p, "%s/%s.lun%lu" PR_STORE_SUFFIX, dir, name,
			     (unsigned long)lun->id) < 0)
			return NULL;
		return p;
	}
	/* lun->path, not the snapshot's: a takeover on the ALUA worker
	 * may be the first to ask (lun.h) */
	if (!lun->path[0] || !strncmp(lun->path, "/dev/", 5))
		return NULL;
	if (asprintf(&p, "%s" PR_STORE_SUFFIX, lun->path) < 0)
		return NULL;
	return p;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, err = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		err = -errno;
	if (fd >= 0)
		close(fd);
	free(copy);
	return err;
}

int scsi_pr_store_save(const struct scsi_pr *pr)
{
	size_t cap = 128 + (size_t)pr->nregs * PR_STORE_LINE_MAX;
	char *buf = malloc(cap), *tmp = NULL;
	size_t len;
	int fd = -1, err;

	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(buf, cap, PR_STORE_MAGIC "\ngeneration %u\n",
			       pr->generation);
	if (pr->reserved)
		len += (size_t)snprintf(buf + len, cap - len,
					"reservation %u %u\n", pr->type,
					pr->scope);
	for (unsigned i = 0; i < pr->nregs; i++) {
		const struct scsi_pr_reg *r = &pr->regs[i];

		len += (size_t)snprintf(buf + len, cap - len,
			"reg 0x%016" PRIx64 " %02x%02x%02x%02x%02x%02x %u %d "
			"%d %s\n", r->key, r->isid[0], r->isid[1], r->isid[2],
			r->isid[3], r->isid[4], r->isid[5], r->rel_port_id,
			r->all_tg_pt, r->holder, r->iname);
	}
	if (!pr->aptpl)
		len += (size_t)snprintf(buf + len, cap - len, "aptpl 0\n");
	if (pr->meta) {
		struct backend *store = pr_meta_store(pr->lun);

		err = store ? store->ops->meta_set(store, PR_META_KEY, buf)
			    : -ENODEV;
		goto out;
	}
	if (asprintf(&tmp, "%s" PR_STORE_TMP, pr->path) < 0) {
		err = -ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	err = write_all(fd, buf, len);
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && !err)
		err = -errno;
	fd = -1;
	if (!err && rename(tmp, pr->path) < 0)
		err = -errno;
	if (!err)
		err = fsync_dir_of(pr->path);
	if (err)
		unlink(tmp);
out:
	free(tmp);
	free(buf);
	return err;
}

void scsi_pr_store_remove(const struct scsi_pr *pr)
{
	if (pr->meta) {
		struct backend *store = pr_meta_store(pr->lun);
		int err = store ? store->ops->meta_set(store, PR_META_KEY, NULL)
				: -ENODEV;

		if (err)
			log_warn("LUN %lu: removing the %s: %s",
				 (unsigned long)pr->lun->id, pr->path,
				 strerror(-err));
		return;
	}
	if (unlink(pr->path) < 0 && errno != ENOENT)
		log_warn("LUN %lu: removing %s: %s",
			 (unsigned long)pr->lun->id, pr->path,
			 strerror(errno));
	else
		fsync_dir_of(pr->path);
}

static int parse_isid(const char *s, uint8_t *isid)
{
	if (strlen(s) != 12)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		isid[i] = (uint8_t)v;
	}
	return 0;
}

/* Parse f into pr (called with pr->lock held, pr empty). */
static int load_file(struct scsi_pr *pr, FILE *f, unsigned *lineno)
{
	char line[PR_STORE_LINE_MAX];
	unsigned holders = 0;

	*lineno = 0;
	pr->aptpl = true;
	while (fgets(line, sizeof(line), f)) {
		char isid[16], name[sizeof(pr->regs[0].iname)];
		unsigned type, scope, port, gen;
		int atp, holder;
		uint64_t key;

		(*lineno)++;
		if (*lineno == 1) {
			if (strncmp(line, PR_STORE_MAGIC "\n",
				    sizeof(PR_STORE_MAGIC)))
				return -EINVAL;
			continue;
		}
		if (sscanf(line, "generation %u", &gen) == 1) {
			pr->generation = gen;
		} else if (strcmp(line, "aptpl 0\n") == 0) {
			pr->aptpl = false;
		} else if (sscanf(line, "reservation %u %u", &type,
				  &scope) == 2) {
			if (!type || type > PR_TYPE_EA_AR || scope)
				return -EINVAL;
			pr->reserved = true;
			pr->type = (uint8_t)type;
			pr->scope = (uint8_t)scope;
		} else if (sscanf(line, "reg 0x%" SCNx64 " %15s %u %d %d %223s",
				  &key, isid, &port, &atp, &holder,
				  name) == 6) {
			struct scsi_pr_reg *r;

			if (!key || scsi_pr_reserve_slot(pr) < 0)
				return -EINVAL;
			r = &pr->regs[pr->nregs];
			memset(r, 0, sizeof(*r));
			if (parse_isid(isid, r->isid) < 0)
				return -EINVAL;
			r->key = key;
			r->rel_port_id = (uint16_t)port;
			r->all_tg_pt = atp;
			r->holder = holder;
			holders += holder ? 1 : 0;
			snprintf(r->iname, sizeof(r->iname), "%s", name);
			pr->nregs++;
		} else {
			return -EINVAL;
		}
	}
	if (*lineno == 0)
		return -EINVAL;
	/* one holder for WE/EA/RO, none for all registrants */
	if (pr->reserved &&
	    holders != (scsi_pr_type_all_regs(pr->type) ? 0u : 1u))
		return -EINVAL;
	if (!pr->reserved && holders)
		return -EINVAL;
	return 0;
}

int scsi_pr_store_parse(struct scsi_pr *pr, const char *text, size_t len)
{
	FILE *f = len ? fmemopen((void *)text, len, "r") : NULL;
	unsigned lineno;
	int err;

	if (!f)
		return -EINVAL;
	err = load_file(pr, f, &lineno);
	fclose(f);
	return err;
}

int scsi_pr_store_load(struct scsi_pr *pr)
{
	char *text = NULL;
	unsigned lineno;
	FILE *f;
	int err;

	if (pr->meta) {
		struct backend *store = pr_meta_store(pr->lun);

		err = store ? store->ops->meta_get(store, PR_META_KEY, &text)
			    : -ENODEV;
		pr->unread = err < 0 && err != -ENOENT;
		if (err == -ENOENT)
			return 0;
		if (err < 0) {
			log_err("LUN %lu: reading the %s: %s (read again "
				"before the next PERSISTENT RESERVE OUT)",
				(unsigned long)pr->lun->id, pr->path,
				strerror(-err));
			return err;
		}
		f = fmemopen(text, strlen(text), "r");
	} else {
		f = fopen(pr->path, "re");
	}
	if (!f) {
		err = errno == ENOENT ? 0 : -errno;
		free(text);
		return err;
	}
	err = load_file(pr, f, &lineno);
	fclose(f);
	free(text);
	if (err < 0) {
		log_err("LUN %lu: %s:%u: not a reservation state file; "
			"starting with no registrations",
			(unsigned long)pr->lun->id, pr->path, lineno);
		pr->nregs = 0;
		pr->reserved = false;
		pr->type = pr->scope = 0;
		pr->generation = 0;
		return err;
	}
	log_info("LUN %lu: restored %u registration(s)%s from %s (%s)",
		 (unsigned long)pr->lun->id, pr->nregs,
		 pr->reserved ? " and a reservation" : "", pr->path,
		 pr->aptpl ? "APTPL" : "shared with the other node");
	return 0;
}

int scsi_pr_store_reload_locked(struct scsi_pr *pr)
{
	int err = 0;

	pr->nregs = 0;
	pr->reserved = false;
	pr->type = pr->scope = 0;
	pr->generation = 0;
	pr->aptpl = false;
	pr->spc2_reserved = false;
	if (pr->path)
		err = scsi_pr_store_load(pr);
	scsi_pr_update_active(pr);
	return err;
}

int scsi_pr_reload(struct scsi_lun *lun)
{
	struct scsi_pr *pr = scsi_pr_state(lun);
	int err;

	if (!pr)
		return -ENOMEM;
	pthread_mutex_lock(&pr->lock);
	err = scsi_pr_store_reload_locked(pr);
	pthread_mutex_unlock(&pr->lock);
	return err;
}

int scsi_pr_store_moved(struct scsi_lun *lun, const char *store_path)
{
	/* the state as it is now, loaded from the old store's file if no
	 * command asked for it yet: after this no reactor computes the
	 * file's name from lun->path again */
	struct scsi_pr *pr = lun->scsi ? scsi_pr_state(lun) : NULL;
	char *old, *path;
	bool old_meta, meta;
	int err = 0;

	/* a state kept in a store's metadata is not moved: only files
	 * follow a pivot */
	if (!pr) {
		old = scsi_pr_store_path(lun, &old_meta);
		snprintf(lun->path, sizeof(lun->path), "%s", store_path);
		path = scsi_pr_store_path(lun, &meta);
		if (old && path && !old_meta && !meta && strcmp(old, path) &&
		    access(old, F_OK) == 0 &&
		    rename(old, path) < 0)
			err = -errno;
		free(old);
		free(path);
		return err;
	}
	pthread_mutex_lock(&pr->lock);
	snprintf(lun->path, sizeof(lun->path), "%s", store_path);
	path = scsi_pr_store_path(lun, &meta);
	old = pr->path;
	old_meta = pr->meta;
	if (old && path && !strcmp(old, path)) {
		free(path);	/* HOLDFAST_PR_DIR: named after the LUN */
		goto out;
	}
	pr->path = path;
	pr->meta = meta;
	if (old && path && !old_meta && !meta && access(old, F_OK) == 0) {
		err = scsi_pr_store_save(pr);
		if (!err && unlink(old) < 0 && errno != ENOENT)
			err = -errno;
	}
	free(old);
out:
	pthread_mutex_unlock(&pr->lock);
	return err;
}
