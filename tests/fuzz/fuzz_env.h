/* fuzz_env.h - what the libFuzzer harnesses in tests/fuzz/ share: a quiet
 * log, a target table built from a small targets.conf (null LUNs only, so
 * no input can reach a file), and a reactor driven step by step on the
 * fuzzing thread. */
#ifndef HOLDFAST_FUZZ_ENV_H
#define HOLDFAST_FUZZ_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct reactor;

/* The fixture's targets (FUZZ_CONF in fuzz_env.c). */
#define FUZZ_IQN_OPEN "iqn.2026-12.org.example:fuzz"	/* tid 1, no CHAP */
#define FUZZ_IQN_CHAP "iqn.2026-12.org.example:chap"	/* tid 2, CHAP */
#define FUZZ_CHAP_USER "fuzzuser"
#define FUZZ_CHAP_SECRET "fuzz-secret-123"
#define FUZZ_CHAP_OUT_USER "fuzztarget"
#define FUZZ_CHAP_OUT_SECRET "target-secret-9"

/* Once per process: private working directory, target table from
 * FUZZ_CONF (with apply = true) and one reactor.  Aborts on failure. */
void fuzz_env_init(bool apply);
/* The reactor, owned by the environment (NULL before init). */
struct reactor *fuzz_reactor(void);
/* Path of the fixture's targets.conf. */
const char *fuzz_conf_path(void);
/* Run up to turns loop turns without waiting. */
void fuzz_pump(int turns);

#endif
