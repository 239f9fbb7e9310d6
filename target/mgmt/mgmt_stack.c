/* mgmt_stack.c - `logicalunit update` keys that change a LUN's block stack
 * (backends/stack.h) while it serves I/O:
 *
 *   filter_add=NAME       insert a filter (passthrough, fault) ...
 *   filter_pos=POS        ... at POS: top (default), above:NODE or
 *                         below:NODE (NODE: the topmost node of that name)
 *   filter_remove=NAME    remove the topmost filter named NAME
 *
 * In one request a removal runs before an insertion.  A removal returns
 * once the I/O that may still use the filter has completed, or after
 * BE_STACK_DRAIN_MS with the filter already out of the chain and closed
 * later (logged).  The chain is shown as "Backing store chain:". */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "mgmt_internal.h"
#include "stack.h"
#include "util.h"

#define STACK_POS_ABOVE "above:"
#define STACK_POS_BELOW "below:"

/* A filter name: something backend_find() knows as a filter. */
static bool mgmt_stack_filter_known(const char *name)
{
	const struct backend_ops *ops = backend_find(name);

	return ops && ops->filter;
}

static int mgmt_stack_parse_pos(struct mgmt_stack_change *c, const char *v)
{
	const char *ref = NULL;

	if (strcmp(v, "top") == 0) {
		c->where = BE_STACK_TOP;
	} else if (strncmp(v, STACK_POS_ABOVE, strlen(STACK_POS_ABOVE)) == 0) {
		c->where = BE_STACK_ABOVE;
		ref = v + strlen(STACK_POS_ABOVE);
	} else if (strncmp(v, STACK_POS_BELOW, strlen(STACK_POS_BELOW)) == 0) {
		c->where = BE_STACK_BELOW;
		ref = v + strlen(STACK_POS_BELOW);
	} else {
		return -EINVAL;
	}
	if (ref && (!ref[0] || strlen(ref) >= sizeof(c->ref)))
		return -EINVAL;
	snprintf(c->ref, sizeof(c->ref), "%s", ref ? ref : "");
	return 0;
}

bool mgmt_stack_key(const char *key)
{
	return strcmp(key, "filter_add") == 0 ||
	       strcmp(key, "filter_pos") == 0 ||
	       strcmp(key, "filter_remove") == 0;
}

int mgmt_stack_parse(struct mgmt_stack_change *c, const char *key,
		     const char *val)
{
	if (strcmp(key, "filter_add") == 0) {
		if (c->add[0] || !mgmt_stack_filter_known(val) ||
		    strlen(val) >= sizeof(c->add))
			return -EINVAL;
		snprintf(c->add, sizeof(c->add), "%s", val);
		return 0;
	}
	if (strcmp(key, "filter_pos") == 0) {
		if (c->has_pos)
			return -EINVAL;
		c->has_pos = true;
		return mgmt_stack_parse_pos(c, val);
	}
	if (strcmp(key, "filter_remove") == 0) {
		if (c->remove[0] || !val[0] || strlen(val) >= sizeof(c->remove))
			return -EINVAL;
		snprintf(c->remove, sizeof(c->remove), "%s", val);
		return 0;
	}
	return -ENOENT;
}

int mgmt_stack_check(const struct mgmt_stack_change *c)
{
	return c->has_pos && !c->add[0] ? -EINVAL : 0;
}

int mgmt_stack_apply(int tid, uint64_t lun, uint32_t block_size,
		     struct backend *root, const struct mgmt_stack_change *c)
{
	unsigned long long nr = (unsigned long long)lun;
	char chain[256];

	if (!c->add[0] && !c->remove[0])
		return MGMT_SUCCESS;
	if (!be_stack_is_root(root))
		return MGMT_UNSUPPORTED_OPERATION;
	if (c->remove[0]) {
		int ret = be_stack_remove(root, c->remove, BE_STACK_DRAIN_MS);

		if (ret < 0) {
			log_err("target %d: LUN %llu: filter_remove=%s: %s", tid,
				nr, c->remove,
				ret == -ENOENT ? "no such filter in the chain"
					       : "the store cannot be removed");
			return MGMT_INVALID_REQUEST;
		}
		if (ret == 1)
			log_warn("target %d: LUN %llu: filter %s removed; I/O still in it after %d ms, closed when it completes",
				 tid, nr, c->remove, BE_STACK_DRAIN_MS);
	}
	if (c->add[0]) {
		struct backend_params p = {
			.block_size = block_size,	/* fault's lba= unit */
		};
		const char *why = NULL;
		int ret = be_stack_insert(root, backend_find(c->add), &p,
					  c->has_pos ? c->where : BE_STACK_TOP,
					  c->ref, NULL, &why);

		if (ret) {
			log_err("target %d: LUN %llu: filter_add=%s: %s", tid,
				nr, c->add, why ? why : strerror(-ret));
			return ret == -ENOMEM ? MGMT_NOMEM : MGMT_INVALID_REQUEST;
		}
	}
	be_stack_format(root, chain, sizeof(chain));
	log_info("target %d: LUN %llu: block stack now %s", tid, nr, chain);
	return MGMT_SUCCESS;
}
