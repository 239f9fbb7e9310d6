/* registry.c - the table of backends and the shared "complete later" helper.
 *
 * Every backend is one `static const`-like function table defined in its own
 * file and listed here by hand: no constructors, no registration order to
 * get wrong, and `grep be_.*_ops` finds them all. */
#include <errno.h>
#include <string.h>

#include "backend.h"
#include "reactor.h"

/* Defined in file.c, null.c, fault.c, passthrough.c, iscsi.c and rbd.c.  Only
 * this file needs them.  (The block stack's root, stack.c, is not a
 * backend one can name, so it is not listed.) */
extern const struct backend_ops be_file_ops;
extern const struct backend_ops be_null_ops;
extern const struct backend_ops be_fault_ops;
extern const struct backend_ops be_passthrough_ops;
extern const struct backend_ops be_iscsi_ops;
extern const struct backend_ops be_rbd_ops;

static const struct backend_ops *const backend_table[] = {
	&be_file_ops,
	&be_null_ops,
	&be_fault_ops,
	&be_passthrough_ops,
	&be_iscsi_ops,
	&be_rbd_ops,
};

const struct backend_ops *backend_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(backend_table); i++)
		if (strcmp(backend_table[i]->name, name) == 0)
			return backend_table[i];
	return NULL;
}

/* ---- backend_complete_later ----
 *
 * A backend that knows the answer at submit time (null, a range error, an
 * injected fault) must still call done() from the reactor loop and not from
 * inside submit(), so callers never recurse into themselves.  The result
 * travels in the io's own scratch area: the backend that completes an io
 * owns its be_scratch, and nothing else runs on this io until done(). */

/* Scratch layout used only while a completion is pending.  On the io's own
 * reactor (the normal case) the completion is deferred work: no lock, no
 * allocation, no eventfd wake-up.  From another thread it goes through
 * reactor_call(), and the timer is the fallback when that cannot allocate.
 * may_alias: this is a second view of be_scratch's uint64_t storage. */
struct __attribute__((may_alias)) be_later {
	int res;
	struct reactor *r;
	union {
		struct ev_timer timer;
		struct ev_defer defer;
	};
};
_Static_assert(sizeof(struct be_later) <=
		       sizeof(((struct be_io *)0)->be_scratch),
	       "be_later must fit in be_io.be_scratch");

static void be_later_call(void *arg)
{
	struct be_io *io = arg;
	struct be_later *l = (struct be_later *)io->be_scratch;

	io->done(io, l->res);
}

static void be_later_defer(struct ev_defer *d)
{
	be_later_call(d->arg);
}

static void be_later_timer(struct ev_timer *t)
{
	be_later_call(t->arg);
}

void backend_complete_later(struct reactor *r, struct be_io *io, int res)
{
	struct be_later *l = (struct be_later *)io->be_scratch;

	memset(l, 0, sizeof(*l));
	l->res = res;
	l->r = r;
	if (r == reactor_current()) {
		reactor_defer(r, &l->defer, be_later_defer, io);
		return;
	}
	if (reactor_call(r, be_later_call, io) == 0)
		return;
	/* Out of memory for the call queue: a zero-delay timer embedded in
	 * the io fires on the next loop turn without allocating. */
	reactor_timer_add(r, &l->timer, 0, be_later_timer, io);
}
