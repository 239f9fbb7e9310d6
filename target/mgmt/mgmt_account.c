/* mgmt_account.c - `tgtadm --mode account`: CHAP accounts and their
 * bindings to targets (account.h holds them; the login code uses them).
 *
 *   --op new    --user U --password P        payload "user=U,password=P"
 *   --op delete --user U
 *   --op bind   --tid N --user U [--outgoing]  ac_dir 1 = outgoing; tid -1
 *   --op unbind --tid N --user U [--outgoing]  binds discovery sessions
 *   --op show                                  "Account list:" + users
 *
 * Error numbers are tgtd's (checked against tgtd 1.0.85): a second binding
 * of the same account answers 14 like a duplicate account, a second
 * outgoing account 18, a missing account or binding 15. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "account.h"
#include "mgmt_internal.h"
#include "target.h"
#include "util.h"

#define MGMT_AC_DIR_OUTGOING 1

static void show_account(const char *user, void *arg)
{
	mgmt_buf_printf(arg, "    %s\n", user);
}

static int mgmt_account_new(const struct mgmt_req *req, const char *user)
{
	char password[ACCT_SECRET_MAX + 1];
	int ret;

	if (!mgmt_payload_get(req->payload, "password", password,
			      sizeof(password)))
		return MGMT_INVALID_REQUEST;
	ret = acct_create(user, password);
	explicit_bzero(password, sizeof(password));
	if (ret == -EEXIST)
		return MGMT_USER_EXIST;
	if (ret)
		return MGMT_INVALID_REQUEST;
	log_info("account %s created", user);	/* never the secret */
	return MGMT_SUCCESS;
}

static int mgmt_account_bind(const struct mgmt_req *req, const char *user,
			     bool bind)
{
	bool outgoing = req->ac_dir == MGMT_AC_DIR_OUTGOING;
	int ret;

	/* tid -1 (no --tid) is the discovery session's binding. */
	if (req->tid != ACCT_DISCOVERY_TID) {
		struct target *t = tgt_get_by_tid(req->tid);
		if (!t)
			return MGMT_NO_TARGET;
		tgt_put(t);
	}
	ret = bind ? acct_bind(req->tid, user, outgoing)
		   : acct_unbind(req->tid, user, outgoing);
	switch (ret) {
	case 0:
		log_info("account %s %s %s %d%s", user,
			 bind ? "bound to" : "unbound from",
			 req->tid == ACCT_DISCOVERY_TID ? "discovery" : "target",
			 req->tid == ACCT_DISCOVERY_TID ? 0 : req->tid,
			 outgoing ? " (outgoing)" : "");
		return MGMT_SUCCESS;
	case -ENOENT:
		return MGMT_NO_USER;
	case -EEXIST:
		return MGMT_USER_EXIST;
	case -EBUSY:
		return MGMT_OUTACCOUNT_EXIST;
	}
	return MGMT_INVALID_REQUEST;
}

static void show_account_header(const char *user, void *arg)
{
	struct mgmt_buf *b = arg;

	if (b->len == 0 || !strstr(b->data, "Account list:\n"))
		mgmt_buf_printf(b, "Account list:\n");
	show_account(user, arg);
}

int mgmt_account(const struct mgmt_req *req, struct mgmt_buf *b)
{
	char user[ACCT_NAME_MAX + 1];
	bool has_user = mgmt_payload_get(req->payload, "user", user,
					 sizeof(user));

	if (req->op == MGMT_OP_SHOW) {
		if (req->json)
			return mgmt_json_accounts(b);
		/* tgtd prints nothing at all when there is no account */
		acct_for_each(show_account_header, b);
		return MGMT_SUCCESS;
	}
	if (!has_user)
		return MGMT_INVALID_REQUEST;
	switch (req->op) {
	case MGMT_OP_NEW:
		return mgmt_account_new(req, user);
	case MGMT_OP_DELETE:
		if (acct_delete(user))
			return MGMT_NO_USER;
		log_info("account %s deleted", user);
		return MGMT_SUCCESS;
	case MGMT_OP_BIND:
		return mgmt_account_bind(req, user, true);
	case MGMT_OP_UNBIND:
		return mgmt_account_bind(req, user, false);
	}
	return MGMT_UNSUPPORTED_OPERATION;
}
