/* account.c - CHAP accounts and their bindings to targets. */
#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "util.h"

struct acct_binding {
	struct acct_binding *next;
	int tid;
	bool outgoing;
};

struct account {
	struct account *next;
	char user[ACCT_NAME_MAX];
	char secret[ACCT_SECRET_MAX];
	struct acct_binding *bindings;
};

static pthread_mutex_t acct_lock = PTHREAD_MUTEX_INITIALIZER;
static struct account *accounts;

static struct account *acct_find(const char *user)
{
	for (struct account *a = accounts; a; a = a->next)
		if (strcmp(a->user, user) == 0)
			return a;
	return NULL;
}

static void acct_free(struct account *a)
{
	while (a->bindings) {
		struct acct_binding *b = a->bindings;

		a->bindings = b->next;
		free(b);
	}
	OPENSSL_cleanse(a->secret, sizeof(a->secret));
	free(a);
}

int acct_create(const char *user, const char *secret)
{
	struct account *a;

	if (!user[0] || !secret[0] || strlen(user) >= ACCT_NAME_MAX ||
	    strlen(secret) >= ACCT_SECRET_MAX || strchr(user, ','))
		return -EINVAL;
	pthread_mutex_lock(&acct_lock);
	if (acct_find(user)) {
		pthread_mutex_unlock(&acct_lock);
		return -EEXIST;
	}
	a = xzalloc(sizeof(*a));
	strcpy(a->user, user);
	strcpy(a->secret, secret);
	a->next = accounts;
	accounts = a;
	pthread_mutex_unlock(&acct_lock);
	return 0;
}

int acct_delete(const char *user)
{
	struct account **pp, *a;

	pthread_mutex_lock(&acct_lock);
	for (pp = &accounts; (a = *pp); pp = &a->next)
		if (strcmp(a->user, user) == 0)
			break;
	if (!a) {
		pthread_mutex_unlock(&acct_lock);
		return -ENOENT;
	}
	*pp = a->next;
	pthread_mutex_unlock(&acct_lock);
	acct_free(a);
	return 0;
}

int acct_bind(int tid, const char *user, bool outgoing)
{
	struct account *a;
	struct acct_binding *b;
	int ret = 0;

	pthread_mutex_lock(&acct_lock);
	a = acct_find(user);
	if (!a) {
		ret = -ENOENT;
		goto out;
	}
	for (b = a->bindings; b; b = b->next)
		if (b->tid == tid && b->outgoing == outgoing) {
			ret = -EEXIST;
			goto out;
		}
	if (outgoing) {
		/* one outgoing account per target (tgtd error 18) */
		for (struct account *o = accounts; o; o = o->next)
			for (b = o->bindings; b; b = b->next)
				if (b->tid == tid && b->outgoing) {
					ret = -EBUSY;
					goto out;
				}
	}
	b = xzalloc(sizeof(*b));
	b->tid = tid;
	b->outgoing = outgoing;
	b->next = a->bindings;
	a->bindings = b;
out:
	pthread_mutex_unlock(&acct_lock);
	return ret;
}

int acct_unbind(int tid, const char *user, bool outgoing)
{
	struct account *a;
	struct acct_binding **pp, *b;
	int ret = -ENOENT;

	pthread_mutex_lock(&acct_lock);
	a = acct_find(user);
	if (a) {
		for (pp = &a->bindings; (b = *pp); pp = &b->next)
			if (b->tid == tid && b->outgoing == outgoing) {
				*pp = b->next;
				free(b);
				ret = 0;
				break;
			}
	}
	pthread_mutex_unlock(&acct_lock);
	return ret;
}

void acct_unbind_all(int tid)
{
	pthread_mutex_lock(&acct_lock);
	for (struct account *a = accounts; a; a = a->next) {
		struct acct_binding **pp = &a->bindings, *b;

		while ((b = *pp)) {
			if (b->tid == tid) {
				*pp = b->next;
				free(b);
			} else {
				pp = &b->next;
			}
		}
	}
	pthread_mutex_unlock(&acct_lock);
}

void acct_clear(void)
{
	pthread_mutex_lock(&acct_lock);
	while (accounts) {
		struct account *a = accounts;

		accounts = a->next;
		acct_free(a);
	}
	pthread_mutex_unlock(&acct_lock);
}

static bool bound(const struct account *a, int tid, bool outgoing)
{
	for (const struct acct_binding *b = a->bindings; b; b = b->next)
		if (b->tid == tid && b->outgoing == outgoing)
			return true;
	return false;
}

bool acct_required(int tid)
{
	bool req = false;

	pthread_mutex_lock(&acct_lock);
	for (struct account *a = accounts; a && !req; a = a->next)
		req = bound(a, tid, false);
	pthread_mutex_unlock(&acct_lock);
	return req;
}

int acct_incoming_secret(int tid, const char *user, char *secret, size_t len)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&acct_lock);
	for (struct account *a = accounts; a; a = a->next)
		if (strcmp(a->user, user) == 0 && bound(a, tid, false) &&
		    strlen(a->secret) < len) {
			strcpy(secret, a->secret);
			ret = 0;
		}
	pthread_mutex_unlock(&acct_lock);
	return ret;
}

int acct_set_secret(const char *user, const char *secret)
{
	struct account *a;
	int ret = -ENOENT;

	if (!secret[0] || strlen(secret) >= ACCT_SECRET_MAX)
		return -EINVAL;
	pthread_mutex_lock(&acct_lock);
	a = acct_find(user);
	if (a) {
		OPENSSL_cleanse(a->secret, sizeof(a->secret));
		strcpy(a->secret, secret);
		ret = 0;
	}
	pthread_mutex_unlock(&acct_lock);
	return ret;
}

int acct_secret(const char *user, char *secret, size_t len)
{
	struct account *a;
	int ret = -ENOENT;

	pthread_mutex_lock(&acct_lock);
	a = acct_find(user);
	if (a && strlen(a->secret) < len) {
		strcpy(secret, a->secret);
		ret = 0;
	}
	pthread_mutex_unlock(&acct_lock);
	return ret;
}

int acct_outgoing(int tid, char *user, size_t ulen, char *secret,
		  size_t slen)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&acct_lock);
	for (struct account *a = accounts; a; a = a->next)
		if (bound(a, tid, true) && strlen(a->user) < ulen &&
		    strlen(a->secret) < slen) {
			strcpy(user, a->user);
			strcpy(secret, a->secret);
			ret = 0;
		}
	pthread_mutex_unlock(&acct_lock);
	return ret;
}

void acct_for_each(void (*fn)(const char *user, void *arg), void *arg)
{
	char (*names)[ACCT_NAME_MAX] = NULL;
	int n = 0;

	pthread_mutex_lock(&acct_lock);
	for (struct account *a = accounts; a; a = a->next)
		n++;
	names = calloc((size_t)n + 1, sizeof(*names));
	n = 0;
	for (struct account *a = accounts; names && a; a = a->next)
		strcpy(names[n++], a->user);
	pthread_mutex_unlock(&acct_lock);
	/* oldest first, like tgtd */
	for (int i = n - 1; names && i >= 0; i--)
		fn(names[i], arg);
	free(names);
}

void acct_for_each_bound(int tid,
			 void (*fn)(const char *user, bool outgoing, void *arg),
			 void *arg)
{
	struct { char user[ACCT_NAME_MAX]; bool out; } *list = NULL;
	int n = 0, cap = 0;

	pthread_mutex_lock(&acct_lock);
	for (struct account *a = accounts; a; a = a->next)
		for (struct acct_binding *b = a->bindings; b; b = b->next)
			if (b->tid == tid)
				cap++;
	list = calloc((size_t)cap + 1, sizeof(*list));
	for (struct account *a = accounts; list && a; a = a->next)
		for (struct acct_binding *b = a->bindings; b; b = b->next)
			if (b->tid == tid) {
				strcpy(list[n].user, a->user);
				list[n++].out = b->outgoing;
			}
	pthread_mutex_unlock(&acct_lock);
	for (int i = n - 1; list && i >= 0; i--)
		fn(list[i].user, list[i].out, arg);
	free(list);
}
