/* check.h - the assertion every unit test uses: count, and on failure
 * print where and the condition (plus an optional printf-style message),
 * then go on, so one run shows every failure.  main() ends with
 * CHECK_SUMMARY(name), which prints the "N passed, N failed" line and
 * returns the exit status. */
#ifndef HOLDFAST_TEST_CHECK_H
#define HOLDFAST_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int passed __attribute__((unused)), failed __attribute__((unused));

static void __attribute__((unused))
check_failed(const char *file, int line, const char *func, const char *cond,
	     const char *fmt, ...)
{
	va_list ap;

	printf("FAIL %s:%d: %s: %s%s", file, line, func, cond,
	       fmt[0] ? ": " : "");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* CHECK(cond) or CHECK(cond, "fmt", args...) */
#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (cond) {                                                   \
			passed++;                                             \
		} else {                                                      \
			failed++;                                             \
			check_failed(__FILE__, __LINE__, __func__, #cond,     \
				     "" __VA_ARGS__);                         \
		}                                                             \
	} while (0)

#define CHECK_SUMMARY(name)                                                   \
	(printf("%s: %d passed, %d failed\n", (name), passed, failed),        \
	 failed ? 1 : 0)

#endif
