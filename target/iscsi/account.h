/* account.h - CHAP accounts (tgtd's "account" mode).
 *
 * An account is a user name and secret.  Bound to a target it is either
 * incoming (the initiator authenticates to the target; many per target) or
 * outgoing (the target authenticates back for mutual CHAP; one per target).
 * Binding to tid ACCT_DISCOVERY_TID protects discovery sessions.
 * Thread safe.  Secrets never leave this module except to the CHAP code. */
#ifndef HOLDFAST_ACCOUNT_H
#define HOLDFAST_ACCOUNT_H

#include <stdbool.h>
#include <stddef.h>

#define ACCT_DISCOVERY_TID (-1)
#define ACCT_NAME_MAX 256
#define ACCT_SECRET_MAX 256

/* -EEXIST, -EINVAL (empty name/secret, too long). */
int acct_create(const char *user, const char *secret);
/* -ENOENT.  Also removes its bindings. */
int acct_delete(const char *user);
/* -ENOENT (no such account), -EEXIST (already bound), -EBUSY (target
 * already has an outgoing account). */
int acct_bind(int tid, const char *user, bool outgoing);
int acct_unbind(int tid, const char *user, bool outgoing);
/* Remove every binding of tid (target deleted). */
void acct_unbind_all(int tid);
void acct_clear(void);

/* Does tid (or discovery) require CHAP, i.e. has incoming accounts? */
bool acct_required(int tid);
/* Copy the secret of incoming account user bound to tid.  0 / -ENOENT. */
int acct_incoming_secret(int tid, const char *user, char *secret,
			 size_t len);
/* The outgoing account of tid.  0 / -ENOENT. */
int acct_outgoing(int tid, char *user, size_t ulen, char *secret,
		  size_t slen);

/* Replace the secret of account user in place, keeping its bindings
 * (config_reload(): a target never goes without CHAP meanwhile).
 * 0 / -ENOENT / -EINVAL. */
int acct_set_secret(const char *user, const char *secret);
/* The secret of account user, for config_save() (the saved targets.conf
 * must restart with the same accounts).  0 / -ENOENT. */
int acct_secret(const char *user, char *secret, size_t len);

/* For show: call fn for every account with its bindings (no secrets). */
void acct_for_each(void (*fn)(const char *user, void *arg), void *arg);
/* For show per target: fn(user, outgoing). */
void acct_for_each_bound(int tid,
			 void (*fn)(const char *user, bool outgoing, void *arg),
			 void *arg);

#endif
