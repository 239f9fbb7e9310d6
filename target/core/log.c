/* log.c - one line per event to stderr (foreground) or syslog (daemon). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "util.h"

static bool log_foreground = true;
static atomic_bool log_debug_on;

void log_init(bool foreground, bool debug)
{
	log_foreground = foreground;
	atomic_store(&log_debug_on, debug);
	if (!foreground)
		openlog("holdfastd", LOG_PID, LOG_DAEMON);
}

void log_set_debug(bool debug)
{
	atomic_store(&log_debug_on, debug);
}

bool log_debug_enabled(void)
{
	return atomic_load_explicit(&log_debug_on, memory_order_relaxed);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info",
					     "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO,
				    LOG_DEBUG };
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (!log_foreground) {
		syslog(prio[lvl], "%s", line);
		return;
	}
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	/* one fprintf per line: stdio locks the stream, lines never mix */
	fprintf(stderr, "%02d:%02d:%02d.%03ld holdfastd: %s: %s\n", tm.tm_hour,
		tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, names[lvl], line);
}
