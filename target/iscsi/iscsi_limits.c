/* iscsi_limits.c - the resource limits (README "Limits and slow
 * peers"): their values, the count of command buffer bytes, the
 * per-portal connection counts and the rate-limited log line when a
 * limit is hit.  Apart from iscsi_session.c so the unit tests, which
 * substitute the session table, link it as it is. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "iscsi_internal.h"

struct iscsi_limits iscsi_lim = ISCSI_LIMITS_DEFAULT;
uint64_t iscsi_buf_total, iscsi_buf_peak, iscsi_buf_refused;

void iscsi_limits_set(const struct iscsi_limits *l)
{
#define LSET(f) __atomic_store_n(&iscsi_lim.f, l->f, __ATOMIC_RELAXED)
	LSET(max_sessions);
	LSET(max_sessions_per_target);
	LSET(max_connections);
	LSET(max_connections_per_portal);
	LSET(cmdsn_depth);
	LSET(max_data_buffer);
	LSET(max_data_buffer_per_connection);
	LSET(login_timeout_ms);
	LSET(idle_timeout_ms);
#undef LSET
}

void iscsi_limits_get(struct iscsi_limits *l)
{
	l->max_sessions = LIMIT(max_sessions);
	l->max_sessions_per_target = LIMIT(max_sessions_per_target);
	l->max_connections = LIMIT(max_connections);
	l->max_connections_per_portal = LIMIT(max_connections_per_portal);
	l->cmdsn_depth = LIMIT(cmdsn_depth);
	l->max_data_buffer = LIMIT(max_data_buffer);
	l->max_data_buffer_per_connection =
		LIMIT(max_data_buffer_per_connection);
	l->login_timeout_ms = LIMIT(login_timeout_ms);
	l->idle_timeout_ms = LIMIT(idle_timeout_ms);
}

uint64_t iscsi_data_buffer_used(void)
{
	return __atomic_load_n(&iscsi_buf_total, __ATOMIC_RELAXED);
}

void iscsi_data_buffer_stat(struct iscsi_buffer_stat *st)
{
	st->used = __atomic_load_n(&iscsi_buf_total, __ATOMIC_RELAXED);
	st->peak = __atomic_load_n(&iscsi_buf_peak, __ATOMIC_RELAXED);
	st->refused = __atomic_load_n(&iscsi_buf_refused, __ATOMIC_RELAXED);
}

static pthread_mutex_t limit_log_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t limit_log_last[LIMIT_LOG_KINDS];
static unsigned limit_log_missed[LIMIT_LOG_KINDS];

void iscsi_limit_log(int kind, const char *fmt, ...)
{
	uint64_t now = clock_ms();
	unsigned missed;
	char msg[512];
	va_list ap;

	pthread_mutex_lock(&limit_log_lock);
	if (limit_log_last[kind] && now - limit_log_last[kind] < 10000) {
		limit_log_missed[kind]++;
		pthread_mutex_unlock(&limit_log_lock);
		return;
	}
	limit_log_last[kind] = now;
	missed = limit_log_missed[kind];
	limit_log_missed[kind] = 0;
	pthread_mutex_unlock(&limit_log_lock);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (missed)
		log_warn("limit: %s (and %u more times in the last 10 s)", msg,
			 missed);
	else
		log_warn("limit: %s", msg);
}

/* Connections accepted on one portal.  Shared by the portal and its
 * connections (refs), so a portal can go while its connections stay. */
struct iscsi_portal_count *iscsi_portal_count_new(void)
{
	struct iscsi_portal_count *pc = xzalloc(sizeof(*pc));

	atomic_init(&pc->refs, 1);
	return pc;
}

void iscsi_portal_count_unref(struct iscsi_portal_count *pc)
{
	if (atomic_fetch_sub(&pc->refs, 1) == 1)
		free(pc);
}

/* A connection of the portal is gone. */
void iscsi_portal_count_put(struct iscsi_portal_count *pc)
{
	atomic_fetch_sub(&pc->conns, 1);
	iscsi_portal_count_unref(pc);
}

