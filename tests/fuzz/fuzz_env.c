/* fuzz_env.c - the fixture every harness shares (see fuzz_env.h).
 *
 * The daemon's log is replaced here (log.o is then never pulled from the
 * archive): a fuzzer runs millions of inputs and each would print several
 * lines.  HOLDFAST_FUZZ_LOG=1 prints them to stderr when debugging a
 * reproducer. */
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_env.h"
#include "reactor.h"
#include "target.h"
#include "util.h"

static bool fuzz_log_on;
static struct reactor *fuzz_r;
static char fuzz_dir[64], fuzz_conf[128];

void log_init(bool foreground UNUSED, bool debug UNUSED)
{
}

void log_set_debug(bool debug UNUSED)
{
}

bool log_debug_enabled(void)
{
	return fuzz_log_on;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	if (!fuzz_log_on)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "holdfastd[%d]: ", (int)lvl);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Null LUNs only: whatever an input asks, nothing touches a file. */
static const char FUZZ_CONF[] =
	"accounts = (\n"
	"  { user = \"" FUZZ_CHAP_USER "\"; password = \"" FUZZ_CHAP_SECRET "\"; },\n"
	"  { user = \"" FUZZ_CHAP_OUT_USER "\"; password = \"" FUZZ_CHAP_OUT_SECRET "\"; }\n"
	");\n"
	"targets = (\n"
	"  { name = \"" FUZZ_IQN_OPEN "\"; tid = 1; initiators = [ \"ALL\" ];\n"
	"    luns = (\n"
	"      { lun = 1; backend = \"null\"; size = \"64M\"; block_size = 512;\n"
	"        thin_provisioning = true; },\n"
	"      { lun = 2; backend = \"null\"; size = \"16M\"; block_size = 4096;\n"
	"        readonly = true; sense_format = \"descriptor\"; }\n"
	"    );\n"
	"  },\n"
	"  { name = \"" FUZZ_IQN_CHAP "\"; tid = 2; initiators = [ \"ALL\" ];\n"
	"    incoming_users = [ \"" FUZZ_CHAP_USER "\" ];\n"
	"    outgoing_user = \"" FUZZ_CHAP_OUT_USER "\";\n"
	"    luns = ( { lun = 1; backend = \"null\"; size = \"8M\"; } );\n"
	"  }\n"
	");\n";

void fuzz_env_init(bool apply)
{
	static struct config cfg;
	char err[1024];
	FILE *f;

	if (fuzz_r)
		return;
	fuzz_log_on = getenv("HOLDFAST_FUZZ_LOG") != NULL;
	/* as holdfastd: a peer that hung up is an EPIPE, not a signal */
	signal(SIGPIPE, SIG_IGN);
	snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/holdfast-fuzz.XXXXXX");
	if (!mkdtemp(fuzz_dir)) {
		perror("fuzz_env: private directory");
		abort();
	}
	snprintf(fuzz_conf, sizeof(fuzz_conf), "%s/targets.conf", fuzz_dir);
	f = fopen(fuzz_conf, "w");
	if (!f || fputs(FUZZ_CONF, f) < 0 || fclose(f) != 0) {
		perror("fuzz_env: targets.conf");
		abort();
	}
	tgt_table_init();
	if (apply && (config_load(fuzz_conf, &cfg, err, sizeof(err)) < 0 ||
		      config_apply(&cfg, err, sizeof(err)) < 0)) {
		fprintf(stderr, "fuzz_env: %s\n", err);
		abort();
	}
	fuzz_r = reactor_new(0);
	if (!fuzz_r) {
		fprintf(stderr, "fuzz_env: no reactor\n");
		abort();
	}
	/* this thread is the reactor's from now on (reactor_current()) */
	reactor_run_once(fuzz_r, 0);
}

struct reactor *fuzz_reactor(void)
{
	return fuzz_r;
}

const char *fuzz_conf_path(void)
{
	return fuzz_conf;
}

void fuzz_pump(int turns)
{
	for (int i = 0; i < turns; i++)
		reactor_run_once(fuzz_r, 0);
}
