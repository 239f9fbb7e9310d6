/* stack.c - a LUN's block stack: the root node and live chain changes
 * (stack.h has the contract, the guarantees and how to write a filter).
 *
 * Why an epoch with two counters and not a reference count per node: a
 * submitter would have to load a node pointer and then take a reference on
 * it, and between the two the node could be closed.  Here a submitter
 * first counts itself in the root (memory that lives as long as the LUN)
 * and only then loads any node pointer; a change that has unlinked a node
 * waits until both counters have been seen at zero after it flipped the
 * epoch past them, which no I/O that loaded the old pointer can escape
 * (the argument is at stack_drain()).  This is sleepable RCU in two
 * counters; the I/O path never takes a lock. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "reactor.h"
#include "stack.h"
#include "util.h"

/* How often a drain looks at the counters again. */
#define STACK_DRAIN_POLL_US 200
/* The reaper drains in slices of this length, letting changes and
 * listings take the lock in between. */
#define STACK_REAP_SLICE_MS 50
#define STACK_REAP_GAP_US 1000
#define STACK_CACHELINE 64

/* A node unlinked by a change whose drain has not finished yet. */
struct stack_retired {
	struct backend *node;
	struct stack_retired *next;
};

/* One in-flight counter on its own cache line: every reactor adds to it
 * on submit and subtracts on completion. */
struct stack_readers {
	atomic_ulong n;
} __attribute__((aligned(STACK_CACHELINE)));

struct be_stack {
	struct stack_readers readers[2];	/* indexed by epoch & 1 */
	atomic_uint epoch;
	/* Serializes changes, listing and closing retired nodes.  Never taken
	 * on the I/O path. */
	pthread_mutex_t lock;
	struct stack_retired *retired;
	/* The reaper thread (stack_reaper()), under lock: started when a
	 * change leaves nodes retired, it closes them as soon as the I/O
	 * they may still carry has completed, with no later change needed;
	 * it ends when nothing is retired.  started: not joined yet. */
	pthread_t reaper;
	bool reaper_started, reaper_running, closing;
};

static const struct backend_ops be_stack_root_ops;

/* ---- nodes ---- */

int be_stack_node_open(const struct backend_ops *ops,
		       const struct backend_params *p, struct backend **out,
		       const char **errmsg)
{
	struct backend *be = calloc(1, sizeof(*be));
	int err;

	if (!be) {
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	be->ops = ops;
	err = ops->open(be, p, errmsg);
	if (err) {
		free(be);
		return err;
	}
	*out = be;
	return 0;
}

void be_stack_node_close(struct backend *node)
{
	if (!node)
		return;
	node->ops->close(node);
	free(node);
}

/* ---- the I/O path ---- */

/* Count the caller in; returns the counter to give back to stack_exit().
 * seq_cst: the increment must be ordered before every node pointer the
 * caller loads afterwards (backend_inner() loads are seq_cst too). */
static atomic_ulong *stack_enter(struct be_stack *s)
{
	unsigned idx = atomic_load_explicit(&s->epoch, memory_order_relaxed) & 1;
	atomic_ulong *n = &s->readers[idx].n;

	atomic_fetch_add_explicit(n, 1, memory_order_seq_cst);
	return n;
}

/* release: everything the I/O did in the nodes happens before a drain
 * sees the counter drop. */
static void stack_exit(atomic_ulong *n)
{
	atomic_fetch_sub_explicit(n, 1, memory_order_release);
}

static void stack_io_done(struct be_io *io, int res)
{
	void (*done)(struct be_io *, int) = io->stack_done;

	io->done = done;
	/* Give the count back before calling up: the caller may drop the
	 * LUN's last reference in done(), which closes the stack. */
	stack_exit(io->stack_ref);
	done(io, res);
}

static void stack_root_submit(struct backend *root, struct be_io *io,
			      struct reactor *r)
{
	io->stack_ref = stack_enter(root->priv);
	io->stack_done = io->done;
	io->done = stack_io_done;
	backend_submit(backend_inner(root), io, r);
}

/* The root's other calls reach into the chain too (GET LBA STATUS from a
 * reactor, show from management), so they are counted like I/O. */
static int stack_root_set_param(struct backend *root, const char *key,
				const char *val)
{
	atomic_ulong *n = stack_enter(root->priv);
	struct backend *top = backend_inner(root);
	int ret = top->ops->set_param ? top->ops->set_param(top, key, val)
				      : -ENOENT;

	stack_exit(n);
	return ret;
}

static int stack_root_describe(struct backend *root, char *buf, unsigned len)
{
	atomic_ulong *n = stack_enter(root->priv);
	struct backend *top = backend_inner(root);
	int ret = top->ops->describe ? top->ops->describe(top, buf, len) : 0;

	stack_exit(n);
	return ret;
}

static int stack_root_block_status(struct backend *root, uint64_t offset,
				   uint64_t len, uint64_t *extent)
{
	atomic_ulong *n = stack_enter(root->priv);
	struct backend *top = backend_inner(root);
	int ret = top->ops->block_status
			  ? top->ops->block_status(top, offset, len, extent)
			  : -EOPNOTSUPP;

	stack_exit(n);
	return ret;
}

/* Block status that waits is counted like I/O until it completes. */
static int stack_root_block_status_async(struct backend *root,
					 struct be_io *io, struct reactor *r)
{
	int ret;

	io->stack_ref = stack_enter(root->priv);
	io->stack_done = io->done;
	io->done = stack_io_done;
	ret = backend_block_status(backend_inner(root), io, r);
	if (ret != -EINPROGRESS) {
		io->done = io->stack_done;
		stack_exit(io->stack_ref);
	}
	return ret;
}

/* Online resize (backend.h): the store changes its size, then every node
 * above it takes the new size, bottom up, the root last.  Filters keep no
 * size of their own, so they need no resize op.  Management thread, like
 * the stack changes it cannot overlap. */
static int stack_root_resize(struct backend *root, uint64_t size,
			     const char **errmsg)
{
	atomic_ulong *n = stack_enter(root->priv);
	struct backend *path[BE_STACK_MAX_NODES + 1];
	int depth = 0, ret;

	for (struct backend *be = root; be && depth < BE_STACK_MAX_NODES + 1;
	     be = backend_inner(be))
		path[depth++] = be;
	struct backend *store = path[depth - 1];

	if (depth < 2 || !store->ops->resize) {
		*errmsg = "the backing store cannot be resized";
		ret = -EOPNOTSUPP;
	} else {
		ret = store->ops->resize(store, size, errmsg);
		for (int i = depth - 2; !ret && i >= 0; i--)
			__atomic_store_n(&path[i]->size, be_size(store),
					 __ATOMIC_RELEASE);
	}
	stack_exit(n);
	return ret;
}

uint32_t be_stack_caw_max(struct backend *be)
{
	atomic_ulong *n;
	struct backend *store = be;
	uint32_t max;
	bool opaque = false;

	if (!be)
		return 0;
	n = be_stack_is_root(be) ? stack_enter(be->priv) : NULL;

	for (int i = 0; i <= BE_STACK_MAX_NODES && backend_inner(store); i++) {
		opaque |= store->caw_opaque;
		store = backend_inner(store);
	}
	max = opaque ? 0 : store->caw_max;
	if (n)
		stack_exit(n);
	return max;
}

struct backend *be_stack_store(struct backend *be)
{
	struct backend *store = be;

	if (!be)
		return NULL;
	for (int i = 0; i <= BE_STACK_MAX_NODES && backend_inner(store); i++)
		store = backend_inner(store);
	return store;
}

static int stack_root_open(struct backend *be, const struct backend_params *p,
			   const char **errmsg)
{
	(void)be;
	(void)p;
	*errmsg = "the block stack's root is made by be_stack_open()";
	return -EINVAL;
}

static void stack_root_close(struct backend *be)
{
	(void)be;	/* be_stack_close() does the work */
}

static const struct backend_ops be_stack_root_ops = {
	.name = "stack",
	.open = stack_root_open,
	.close = stack_root_close,
	.submit = stack_root_submit,
	.set_param = stack_root_set_param,
	.describe = stack_root_describe,
	.block_status = stack_root_block_status,
	.block_status_async = stack_root_block_status_async,
	.resize = stack_root_resize,
};

/* ---- drain ---- */

/* Wait until no I/O that entered the stack before this call is still in
 * it; false if timeout_ms passed first.  Called with s->lock held.
 *
 * Why two flips: an I/O counts itself in readers[e & 1] (e read at any
 * time before) and then loads node pointers.  Take one that loaded a
 * pointer the caller has just replaced: its increment came before that
 * load, so before the caller's store.  Whichever counter it chose, one
 * of the two rounds below flips away from that counter after the store
 * and then waits for it to read zero, which it cannot until that I/O
 * completes.  An I/O that increments a counter after a round saw it at
 * zero loads its pointers after that, so it sees the new ones (all of
 * this is one seq_cst order).  A round always ends: after its flip, new
 * I/O counts itself in the other counter. */
static bool stack_drain(struct be_stack *s, unsigned timeout_ms)
{
	uint64_t deadline = clock_ms() + timeout_ms;

	/* A reactor thread must not sleep here: the I/O it waits for may
	 * complete on that very reactor.  Look once, leave the rest to a
	 * later reap. */
	if (reactor_current())
		timeout_ms = 0;
	for (int round = 0; round < 2; round++) {
		unsigned idx = atomic_fetch_add_explicit(&s->epoch, 1,
							 memory_order_seq_cst) & 1;

		while (atomic_load_explicit(&s->readers[idx].n,
					    memory_order_seq_cst) != 0) {
			if (!timeout_ms || clock_ms() >= deadline)
				return false;
			usleep(STACK_DRAIN_POLL_US);
		}
	}
	return true;
}

static int stack_retire(struct be_stack *s, struct backend *node)
{
	struct stack_retired *r = malloc(sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->node = node;
	r->next = s->retired;
	s->retired = r;
	return 0;
}

static int stack_retired_count(const struct be_stack *s)
{
	int n = 0;

	for (const struct stack_retired *r = s->retired; r; r = r->next)
		n++;
	return n;
}

/* Drain, then close every retired node.  Returns how many still wait.
 * All retired nodes close together: a retired filter may still hand I/O
 * to a node retired after it, and one drain covers both. */
static int stack_reap_locked(struct be_stack *s, unsigned timeout_ms)
{
	if (!s->retired)
		return 0;
	if (!stack_drain(s, timeout_ms))
		return stack_retired_count(s);
	while (s->retired) {
		struct stack_retired *r = s->retired;

		s->retired = r->next;
		be_stack_node_close(r->node);
		free(r);
	}
	return 0;
}

/* The reaper: retired nodes whose drain timed out (a store that holds
 * I/O, a change made on a reactor) are closed here once their I/O is
 * done, not left to the next change. */
static void *stack_reaper(void *arg)
{
	struct be_stack *s = arg;

	pthread_mutex_lock(&s->lock);
	while (s->retired && !s->closing) {
		if (stack_reap_locked(s, STACK_REAP_SLICE_MS) == 0)
			break;
		pthread_mutex_unlock(&s->lock);
		usleep(STACK_REAP_GAP_US);
		pthread_mutex_lock(&s->lock);
	}
	s->reaper_running = false;
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Called with s->lock held after a reap left nodes retired.  If no thread
 * can be made, the nodes wait for the next change or be_stack_reap(), as
 * they would have anyway. */
static void stack_reaper_start(struct be_stack *s)
{
	if (!s->retired || s->reaper_running || s->closing)
		return;
	if (s->reaper_started) {
		/* it has left its loop (running is false) and takes the
		 * lock no more: joining cannot wait on us */
		pthread_join(s->reaper, NULL);
		s->reaper_started = false;
	}
	if (pthread_create(&s->reaper, NULL, stack_reaper, s) == 0)
		s->reaper_started = s->reaper_running = true;
}

/* Reap what can be reaped now (wait up to timeout_ms) and hand the rest
 * to the reaper.  Returns how many still wait. */
static int stack_reap_or_defer(struct be_stack *s, unsigned timeout_ms)
{
	int n = stack_reap_locked(s, timeout_ms);

	if (n)
		stack_reaper_start(s);
	return n;
}

/* ---- building and tearing down ---- */

bool be_stack_is_root(const struct backend *be)
{
	return be && be->ops == &be_stack_root_ops;
}

int be_stack_open(struct backend *chain, struct backend **out)
{
	struct backend *root = calloc(1, sizeof(*root));
	struct be_stack *s = aligned_alloc(STACK_CACHELINE, sizeof(*s));

	if (!root || !s) {
		free(root);
		free(s);
		return -ENOMEM;
	}
	memset(s, 0, sizeof(*s));
	atomic_init(&s->readers[0].n, 0);
	atomic_init(&s->readers[1].n, 0);
	atomic_init(&s->epoch, 0);
	pthread_mutex_init(&s->lock, NULL);
	root->ops = &be_stack_root_ops;
	root->priv = s;
	root->inner = chain;
	root->size = chain->size;
	root->direct = chain->direct;
	root->thin = chain->thin;
	root->readonly = chain->readonly;
	*out = root;
	return 0;
}

void be_stack_close(struct backend *root)
{
	struct be_stack *s;
	struct backend *be;

	if (!root)
		return;
	s = root->priv;
	/* No I/O is outstanding: a running reaper's drain ends at once. */
	pthread_mutex_lock(&s->lock);
	s->closing = true;
	pthread_mutex_unlock(&s->lock);
	if (s->reaper_started)
		pthread_join(s->reaper, NULL);
	be = root->inner;
	while (be) {
		struct backend *inner = be->inner;

		be_stack_node_close(be);
		be = inner;
	}
	while (s->retired) {
		struct stack_retired *r = s->retired;

		s->retired = r->next;
		be_stack_node_close(r->node);
		free(r);
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
	free(root);
}

/* ---- changes ---- */

/* The topmost node named name and the node above it (the root for the
 * top).  NULL name: the store.  false if there is none. */
static bool stack_find(struct backend *root, const char *name,
		       struct backend **parent, struct backend **node)
{
	struct backend *above = root;

	for (struct backend *be = root->inner; be; above = be, be = be->inner) {
		if (name ? strcmp(be->ops->name, name) == 0 : be->inner == NULL) {
			*parent = above;
			*node = be;
			return true;
		}
	}
	return false;
}

static int stack_length(struct backend *root)
{
	int n = 0;

	for (struct backend *be = root->inner; be; be = be->inner)
		n++;
	return n;
}

/* Link node in below parent: the one store that publishes a change. */
static void stack_link(struct backend *parent, struct backend *node)
{
	__atomic_store_n(&parent->inner, node, __ATOMIC_SEQ_CST);
}

int be_stack_insert(struct backend *root, const struct backend_ops *ops,
		    const struct backend_params *p, enum be_stack_where where,
		    const char *ref, struct backend **out,
		    const char **errmsg)
{
	struct be_stack *s = root->priv;
	struct backend_params fp = *p;
	struct backend *parent = root, *below, *node;
	int err;

	*errmsg = NULL;
	if (!ops->filter) {
		*errmsg = "not a filter: only filters can be inserted";
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	if (stack_length(root) >= BE_STACK_MAX_NODES) {
		*errmsg = "the chain is full";
		err = -E2BIG;
		goto out;
	}
	switch (where) {
	case BE_STACK_TOP:
		break;
	case BE_STACK_ABOVE:
	case BE_STACK_BELOW:
		if (!ref || !stack_find(root, ref, &parent, &below)) {
			*errmsg = "no such node in the chain";
			err = -ENOENT;
			goto out;
		}
		if (where == BE_STACK_BELOW) {
			if (!below->ops->filter) {
				*errmsg = "nothing can go below the store";
				err = -EINVAL;
				goto out;
			}
			parent = below;
		}
		break;
	default:
		*errmsg = "bad position";
		err = -EINVAL;
		goto out;
	}
	fp.inner = parent->inner;
	err = be_stack_node_open(ops, &fp, &node, errmsg);
	if (err)
		goto out;
	stack_link(parent, node);
	if (out)
		*out = node;
	/* Nothing was unlinked, so nothing has to drain; but retired nodes
	 * of an earlier change may be closable by now. */
	stack_reap_locked(s, 0);
out:
	pthread_mutex_unlock(&s->lock);
	return err;
}

/* The node above node (the root for the top); false if node is not in the
 * chain. */
static bool stack_find_parent(struct backend *root, struct backend *node,
			      struct backend **parent)
{
	for (struct backend *be = root; be; be = be->inner) {
		if (be->inner == node) {
			*parent = be;
			return true;
		}
	}
	return false;
}

/* Unlink node (below parent), drain, close.  Called with s->lock held. */
static int stack_remove_locked(struct be_stack *s, struct backend *parent,
			       struct backend *node, unsigned timeout_ms)
{
	int err;

	if (!node->ops->filter)
		return -EINVAL;		/* the store stays; replace it instead */
	/* Retire first: if that fails, nothing has changed. */
	err = stack_retire(s, node);
	if (err)
		return err;
	stack_link(parent, node->inner);
	return stack_reap_or_defer(s, timeout_ms) ? 1 : 0;
}

int be_stack_remove(struct backend *root, const char *name,
		    unsigned timeout_ms)
{
	struct be_stack *s = root->priv;
	struct backend *parent, *node;
	int err;

	pthread_mutex_lock(&s->lock);
	if (!name || !stack_find(root, name, &parent, &node))
		err = -ENOENT;
	else
		err = stack_remove_locked(s, parent, node, timeout_ms);
	pthread_mutex_unlock(&s->lock);
	return err;
}

int be_stack_remove_node(struct backend *root, struct backend *node,
			 unsigned timeout_ms)
{
	struct be_stack *s = root->priv;
	struct backend *parent;
	int err;

	pthread_mutex_lock(&s->lock);
	if (!node || !stack_find_parent(root, node, &parent))
		err = -ENOENT;
	else
		err = stack_remove_locked(s, parent, node, timeout_ms);
	pthread_mutex_unlock(&s->lock);
	return err;
}

int be_stack_replace(struct backend *root, const char *name,
		     struct backend *store, unsigned timeout_ms,
		     const char **errmsg)
{
	struct be_stack *s = root->priv;
	struct backend *parent, *node, *old_store, *be;
	int err, n = 0;

	*errmsg = NULL;
	if (store->inner || store->ops->filter) {
		*errmsg = "only a store can take a node's place";
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	if (!stack_find(root, name, &parent, &node)) {
		*errmsg = "no such node in the chain";
		err = -ENOENT;
		goto out;
	}
	for (old_store = node; old_store->inner; old_store = old_store->inner)
		;
	if (store->size != old_store->size) {
		*errmsg = "the new store's size differs from the old one's";
		err = -EINVAL;
		goto out;
	}
	if (old_store->direct && !store->direct) {
		*errmsg = "the new store must bypass the page cache as the old one does";
		err = -EINVAL;
		goto out;
	}
	/* Retire node and everything below it, then link: on ENOMEM undo
	 * the retirements and change nothing. */
	for (be = node; be; be = be->inner, n++) {
		err = stack_retire(s, be);
		if (err) {
			while (n--) {
				struct stack_retired *r = s->retired;

				s->retired = r->next;
				free(r);
			}
			*errmsg = "out of memory";
			goto out;
		}
	}
	/* a fenced store stays fenced under a new one */
	__atomic_store_n(&store->fenced,
			 __atomic_load_n(&old_store->fenced, __ATOMIC_SEQ_CST),
			 __ATOMIC_SEQ_CST);
	stack_link(parent, store);
	if (parent == root) {
		root->direct = store->direct;
		root->thin = store->thin;
		root->readonly = store->readonly;
	}
	err = stack_reap_or_defer(s, timeout_ms) ? 1 : 0;
out:
	pthread_mutex_unlock(&s->lock);
	return err;
}

/* A node be_stack_set_filters() manages: a filter one can name
 * (backend_find()); others (a dirty-tracking node) are pinned. */
static bool stack_managed(const struct backend *be)
{
	return be->ops->filter && backend_find(be->ops->name) == be->ops;
}

int be_stack_set_filters(struct backend *root, const char *const *names,
			 int n, const struct backend_params *p,
			 unsigned timeout_ms, const char **errmsg)
{
	struct be_stack *s = root->priv;
	struct backend *cur[BE_STACK_MAX_NODES], *want[BE_STACK_MAX_NODES + 1];
	struct backend *opened[BE_STACK_MAX_NODES];
	struct backend *base = root, *store = NULL;
	int nc = 0, nopened = 0, err = 0, i, j;
	int lcs[BE_STACK_MAX_NODES + 1][BE_STACK_MAX_NODES + 1];
	bool keep[BE_STACK_MAX_NODES] = { false };

	*errmsg = NULL;
	if (n < 0 || n >= BE_STACK_MAX_NODES) {
		*errmsg = "too many filters";
		return -E2BIG;
	}
	for (i = 0; i < n; i++) {
		const struct backend_ops *ops = backend_find(names[i]);

		if (!ops || !ops->filter) {
			*errmsg = "not a filter";
			return -EINVAL;
		}
	}
	pthread_mutex_lock(&s->lock);
	/* The managed region: everything below the lowest pinned node (or
	 * the root) down to the store.  A managed node above a pinned one
	 * would have to move past it, and I/O in flight could then skip
	 * the pinned node (a write not marked dirty): refused. */
	for (struct backend *be = root->inner; be; be = be->inner) {
		if (!be->inner) {
			store = be;
		} else if (!stack_managed(be)) {
			if (nc) {
				*errmsg = "a filter sits above a tracking node: "
					  "remove it with filter_remove first";
				err = -EBUSY;
				goto out;
			}
			base = be;
		} else {
			cur[nc++] = be;
		}
	}
	/* Keep what both chains share, in order (a longest common
	 * subsequence by name): a kept node keeps its state (a fault
	 * spec) and its I/O in flight. */
	for (i = nc; i >= 0; i--)
		for (j = n; j >= 0; j--)
			lcs[i][j] = i == nc || j == n ? 0 :
				    strcmp(cur[i]->ops->name, names[j]) == 0 ?
				    lcs[i + 1][j + 1] + 1 :
				    MAX(lcs[i + 1][j], lcs[i][j + 1]);
	for (i = 0; i < n; i++)
		want[i] = NULL;
	for (i = 0, j = 0; i < nc && j < n;) {
		if (strcmp(cur[i]->ops->name, names[j]) == 0) {
			want[j++] = cur[i];
			keep[i++] = true;
		} else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
			i++;
		} else {
			j++;
		}
	}
	want[n] = store;
	/* Open the new nodes bottom up, each over its final inner; none is
	 * reachable yet. */
	for (j = n - 1; j >= 0; j--) {
		struct backend_params fp = *p;

		if (want[j])
			continue;
		fp.inner = want[j + 1];
		err = be_stack_node_open(backend_find(names[j]), &fp, &want[j],
					 errmsg);
		if (err) {
			want[j] = NULL;
			goto undo;
		}
		opened[nopened++] = want[j];
	}
	/* Retire the dropped nodes first: if that fails, nothing changed. */
	for (i = 0; i < nc; i++) {
		if (keep[i])
			continue;
		err = stack_retire(s, cur[i]);
		if (err) {
			while (i--)
				if (!keep[i]) {
					struct stack_retired *r = s->retired;

					s->retired = r->next;
					free(r);
				}
			*errmsg = "out of memory";
			goto undo;
		}
	}
	/* Link bottom up: each store points a node at the part below it,
	 * which is final already, so every step is a whole chain down to
	 * the store (no cycle; a node being moved may be skipped by I/O
	 * that passes meanwhile). */
	for (j = n - 1; j >= 0; j--)
		if (backend_inner(want[j]) != want[j + 1])
			stack_link(want[j], want[j + 1]);
	if (backend_inner(base) != want[0])
		stack_link(base, want[0]);
	err = stack_reap_or_defer(s, timeout_ms) ? 1 : 0;
	goto out;
undo:
	while (nopened--)
		be_stack_node_close(opened[nopened]);
out:
	pthread_mutex_unlock(&s->lock);
	return err;
}

int be_stack_drain(struct backend *root, unsigned timeout_ms)
{
	struct be_stack *s = root->priv;
	bool ok;

	pthread_mutex_lock(&s->lock);
	ok = stack_drain(s, timeout_ms);
	if (ok)
		stack_reap_locked(s, 0);
	pthread_mutex_unlock(&s->lock);
	return ok ? 0 : -ETIMEDOUT;
}

int be_stack_reap(struct backend *root, unsigned timeout_ms)
{
	struct be_stack *s = root->priv;
	int n;

	pthread_mutex_lock(&s->lock);
	n = stack_reap_or_defer(s, timeout_ms);
	pthread_mutex_unlock(&s->lock);
	return n;
}

int be_stack_names(struct backend *root, const char **names, int max)
{
	struct be_stack *s = root->priv;
	int n = 0;

	pthread_mutex_lock(&s->lock);
	for (struct backend *be = root->inner; be; be = be->inner) {
		if (n < max)
			names[n] = be->ops->name;
		n++;
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

int be_stack_format(struct backend *root, char *buf, unsigned len)
{
	const char *names[BE_STACK_MAX_NODES];
	int n = be_stack_names(root, names, BE_STACK_MAX_NODES);
	unsigned pos = 0;

	if (len)
		buf[0] = '\0';
	for (int i = 0; i < n && i < BE_STACK_MAX_NODES; i++) {
		int m = snprintf(buf + pos, pos < len ? len - pos : 0, "%s%s",
				 i ? " -> " : "", names[i]);

		if (m > 0)
			pos += (unsigned)m;
	}
	return (int)pos;
}
