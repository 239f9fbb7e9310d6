/* fuzz_config.c - the targets.conf loader: libconfig parsing and every
 * check config_load() makes (portals, accounts, discovery, targets, ACLs,
 * iSCSI params, LUN settings and their consistency).  Only loads: applying
 * would create backing files wherever an input points.
 *
 * Input: a targets.conf. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[160];
	struct config cfg;
	char err[1024];
	FILE *f;

	fuzz_env_init(false);
	if (!path[0])
		snprintf(path, sizeof(path), "%s.input", fuzz_conf_path());
	f = fopen(path, "w");
	if (!f)
		abort();
	if (size && fwrite(data, 1, size, f) != size)
		abort();
	if (fclose(f) != 0)
		abort();
	memset(&cfg, 0, sizeof(cfg));
	err[0] = '\0';
	if (config_load(path, &cfg, err, sizeof(err)) == 0)
		config_free(&cfg);
	else if (!err[0])
		__builtin_trap();	/* a refusal always says why */
	return 0;
}
