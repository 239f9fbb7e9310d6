/* config_internal.h - the parsed form of targets.conf, shared by
 * config.c (load and validate) and config_apply.c (create what it
 * describes).  Not for other modules. */
#ifndef HOLDFAST_CONFIG_INTERNAL_H
#define HOLDFAST_CONFIG_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "lun.h"
#include "target.h"

#define CFG_WHERE_MAX (PATH_MAX + 32)

struct cfg_param {
	char key[64];
	char value[256];
};

struct cfg_acl {
	char text[TGT_NAME_MAX];
	bool is_name;
};

struct cfg_lun {
	struct lun_settings s;
	char where[CFG_WHERE_MAX];	/* "FILE:LINE" of the LUN's group */
};

struct cfg_target {
	char name[TGT_NAME_MAX];
	int tid;
	char where[CFG_WHERE_MAX];
	bool has_nop_interval, has_nop_count;
	uint32_t nop_interval, nop_count;
	struct cfg_acl *acls;
	int nr_acls;
	struct cfg_param *params;
	int nr_params;
	struct cfg_lun *luns;
	int nr_luns;
};

struct cfg_priv {
	struct cfg_target *targets;
	int nr_targets;
};

void cfg_priv_free(struct cfg_priv *pv);

#endif
