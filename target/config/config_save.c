/* config_save.c - write the running configuration back to targets.conf
 * (`tgtadm --op update --mode system --name save --value 1`,
 * `holdfastadm --save`).
 *
 * The text is config_dump()'s, with each account's CHAP secret filled in
 * (the dump for display leaves them empty), so holdfastd restarted on the
 * saved file serves the same configuration.  The file is replaced
 * atomically: written to a temporary file in the same directory, fsync'd,
 * loaded with config_load() as a check, renamed over the old one, and the
 * directory fsync'd; a crash leaves either the old or the new file. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "account.h"
#include "config.h"
#include "util.h"

/* The line config_dump() writes for an account, up to the user name. */
#define SAVE_ACCT_LEAD "  { user = "
#define SAVE_ACCT_PREFIX SAVE_ACCT_LEAD "\""
#define SAVE_ACCT_SUFFIX "; password = \"\"; }"
/* config_dump()'s note about the missing secrets, replaced in a save. */
#define SAVE_NOTE_PREFIX "# CHAP passwords are not dumped"

static void save_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

/* If line is an account line of the dump, copy its (unescaped) user name
 * into user and return a pointer to the text after the name's closing
 * quote; else NULL. */
static const char *save_account_line(const char *line, char *user,
				     size_t len)
{
	const char *p = line + strlen(SAVE_ACCT_PREFIX);
	size_t n = 0;

	if (strncmp(line, SAVE_ACCT_PREFIX, strlen(SAVE_ACCT_PREFIX)) != 0)
		return NULL;
	for (; *p && *p != '"'; p++) {
		if (*p == '\\' && p[1])
			p++;
		if (n + 1 >= len)
			return NULL;
		user[n++] = *p;
	}
	user[n] = '\0';
	if (*p != '"' || strncmp(p + 1, SAVE_ACCT_SUFFIX,
				 strlen(SAVE_ACCT_SUFFIX)) != 0)
		return NULL;
	return p + 1 + strlen(SAVE_ACCT_SUFFIX);
}

/* The dump text with the secrets filled in, written to f. */
static int save_fill(const char *text, FILE *f, char *err, unsigned errlen)
{
	char user[ACCT_NAME_MAX], secret[ACCT_SECRET_MAX];
	const char *line = text;

	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t n = nl ? (size_t)(nl - line + 1) : strlen(line);
		char *copy = strndup(line, n);
		const char *rest;

		if (!copy)
			return -ENOMEM;
		if (strncmp(copy, SAVE_NOTE_PREFIX, strlen(SAVE_NOTE_PREFIX)) == 0) {
			fprintf(f, "# Saved with the CHAP secrets: keep this file private.\n");
		} else if ((rest = save_account_line(copy, user, sizeof(user)))) {
			if (acct_secret(user, secret, sizeof(secret))) {
				snprintf(err, errlen, "account %s vanished while saving",
					 user);
				free(copy);
				return -ENOENT;
			}
			fprintf(f, "%s", SAVE_ACCT_LEAD);
			save_str(f, user);
			fprintf(f, "; password = ");
			save_str(f, secret);
			fprintf(f, "; }%s", rest);
			explicit_bzero(secret, sizeof(secret));
		} else {
			fputs(copy, f);
		}
		free(copy);
		line += n;
	}
	return 0;
}

static int save_fsync_dir(const char *path)
{
	char dir[PATH_MAX];
	int fd, ret = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) != 0)
		ret = -errno;
	close(fd);
	return ret;
}

int config_save(const char *path, char *err, unsigned errlen)
{
	char tmp[PATH_MAX], *text = NULL;
	size_t len = 0;
	struct config check;
	FILE *mem, *f = NULL;
	int fd = -1, ret;

	err[0] = '\0';
	mem = open_memstream(&text, &len);
	if (!mem)
		return -ENOMEM;
	ret = config_dump(mem);
	if (fclose(mem) != 0 && !ret)
		ret = -ENOMEM;
	if (ret) {
		snprintf(err, errlen, "cannot render the configuration");
		goto out;
	}

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >=
	    sizeof(tmp)) {
		ret = -ENAMETOOLONG;
		snprintf(err, errlen, "%s: path too long", path);
		goto out;
	}
	/* One fixed name, so a save killed half-way leaves at most this file
	 * (holding CHAP secrets), which the next save replaces; a random name
	 * left one more per crash.  Saves run on the management thread only.
	 * Created anew (O_EXCL) so it is 0600 and ours, whatever was there. */
	if (unlink(tmp) < 0 && errno != ENOENT) {
		ret = -errno;
		snprintf(err, errlen, "cannot remove %s: %s", tmp,
			 strerror(errno));
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create a file next to %s: %s",
			 path, strerror(errno));
		goto out;
	}
	f = fdopen(fd, "w");
	if (!f) {
		ret = -errno;
		close(fd);
		goto fail;
	}
	ret = save_fill(text, f, err, errlen);
	if (!ret && (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0))
		ret = -errno ? -errno : -EIO;
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	if (ret) {
		if (!err[0])
			snprintf(err, errlen, "writing %s: %s", tmp,
				 strerror(-ret));
		goto fail;
	}

	/* The saved file must start holdfastd again: check it the way
	 * startup will read it before it replaces anything. */
	memset(&check, 0, sizeof(check));
	ret = config_load(tmp, &check, err, errlen);
	config_free(&check);
	if (ret) {
		ret = -EINVAL;
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		ret = -errno;
		snprintf(err, errlen, "rename %s to %s: %s", tmp, path,
			 strerror(errno));
		goto fail;
	}
	ret = save_fsync_dir(path);
	if (ret)
		log_warn("save: fsync of the directory of %s: %s", path,
			 strerror(-ret));
	ret = 0;
	goto out;
fail:
	unlink(tmp);
out:
	if (text) {
		explicit_bzero(text, len);
		free(text);
	}
	return ret;
}
