/* check.h - the assertion every unit test uses: count, and on failure
 * print where, the condition and a message, then go on (one run shows
 * every failure).  main() ends with CHECK_SUMMARY(name), which prints
 * the "N passed, N failed" line and returns the exit status. */
#ifndef HOLDFAST_TEST_CHECK_H
#define HOLDFAST_TEST_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (cond) {                                                   \
			passed++;                                             \
		} else {                                                      \
			failed++;                                             \
			printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);\
			printf(__VA_ARGS__);                                  \
			printf("\n");                                         \
		}                                                             \
	} while (0)

#define CHECK_SUMMARY(name)                                                   \
	(printf("%s: %d passed, %d failed\n", (name), passed, failed),        \
	 failed ? 1 : 0)

#endif
