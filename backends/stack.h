/* stack.h - a LUN's block stack: a chain of backend nodes changed live.
 *
 * A LUN's storage is a chain of nodes that all speak struct backend_ops:
 * filter nodes (fault, passthrough, later dirty bitmaps, copy-before-write,
 * mirror) above one store node (file, null, later iscsi, rbd).  Each filter
 * forwards to the node below it through be->inner.  The LUN holds one
 * extra node, the *root* (ops "stack", never listed), whose inner is the
 * top of the chain; everything above the backends (the hang engine, the
 * SCSI layer) submits to the root, as to any backend.
 *
 *     lun->be = root ──inner──► fault ──inner──► passthrough ──► file
 *
 * Live changes (management thread only; they may sleep):
 *   be_stack_insert()   open a filter and link it in at a position
 *   be_stack_remove()   unlink a filter
 *   be_stack_set_filters()  make the filters a given list (the LUN key
 *                       `filters`: an update, a reload)
 *   be_stack_replace()  put an open store in place of a node and everything
 *                       below it (a mirror's pivot)
 *
 * How a change is published without a lock on the I/O path (SRCU-like):
 * the root counts the I/O that has entered it and not completed yet in one
 * of two counters, chosen by the parity of an epoch number.  A change
 * links the new nodes in with one atomic pointer store (the root's or a
 * filter's inner), then flips the epoch twice, each time waiting until the
 * counter of the old parity drops to zero.  After that no I/O that could
 * have seen the old pointer is still in the stack, so the unlinked nodes
 * are closed.  Submitting costs one atomic add and one atomic subtract on
 * the root; nothing else on the I/O path changes.
 *
 * Guarantees (what tests/unit/test_stack.c and tests/test_stack.py pin):
 * - I/O submitted after a change returns went through the new chain only.
 * - I/O in flight during a change finishes on the nodes it was submitted
 *   to (a filter whose inner changes hands later steps to the new inner);
 *   an unlinked node is closed only after every I/O that entered the stack
 *   before the change has completed ("drain").
 * - Insert and remove keep the same store, so a write completed before the
 *   change is read back through the new chain, and the store sees writes
 *   in the order they reach it, as before.  Writes in flight across a
 *   change are, like any two SIMPLE commands in flight together, not
 *   ordered against each other by the target; the initiator orders them by
 *   waiting for the first.
 * - replace() does not copy data: the caller guarantees that the new store
 *   holds everything the old one holds, including writes still in flight
 *   (a mirror filter above the old store writes both, then pivots).
 * - If the drain does not finish within the caller's timeout, the change is
 *   still in effect and the unlinked nodes wait on a retired list; the
 *   stack's reaper thread (started then, ended when the list is empty)
 *   closes them as soon as the I/O that may still use them has completed.
 *   A later change, be_stack_reap() or be_stack_close() may close them
 *   first.
 *
 * Writing a filter for the stack:
 * - ops->filter = true; open() gets the node below in p->inner and stores
 *   it in be->inner; copy size/direct/readonly from it.
 * - Read the node below with backend_inner(be) each time (a change may
 *   swap it); never cache it in private state.
 * - A filter that needs the completion saves io->done/io->priv in its own
 *   context and restores them before calling up; after calling up it must
 *   not touch the io or its node again (the node may be closed then).
 * - be_scratch belongs to the node that completes the io (backend.h).
 */
#ifndef HOLDFAST_STACK_H
#define HOLDFAST_STACK_H

#include <stdbool.h>

#include "backend.h"

/* Most nodes in one chain (filters + store), the root not counted. */
#define BE_STACK_MAX_NODES 16
/* Default bound for a change's drain on the management thread. */
#define BE_STACK_DRAIN_MS 5000

/* Where be_stack_insert() links a filter. */
enum be_stack_where {
	BE_STACK_TOP,		/* above every node */
	BE_STACK_ABOVE,		/* directly above the node named ref */
	BE_STACK_BELOW,		/* directly below the filter named ref */
};

/* Open one node: calloc a struct backend and run ops->open.  0 or -errno
 * (*errmsg may say why).  The caller owns *out until it hands it to the
 * stack (be_stack_open/replace) or closes it with be_stack_node_close(). */
int be_stack_node_open(const struct backend_ops *ops,
		       const struct backend_params *p, struct backend **out,
		       const char **errmsg);
/* ops->close and free one node (not the nodes below it).  NULL allowed. */
void be_stack_node_close(struct backend *node);

/* Make the root of a new stack over chain (its top node; the stack takes
 * ownership of chain and every node below it).  0, or -ENOMEM with the
 * chain left to the caller. */
int be_stack_open(struct backend *chain, struct backend **root);
/* Close the root, every node of the chain and the retired nodes.  No I/O
 * may be outstanding (the LUN's last reference is gone).  NULL allowed. */
void be_stack_close(struct backend *root);
/* Is be the root of a stack? */
bool be_stack_is_root(const struct backend *be);

/* Open a filter with ops and p (p->inner is set here) and link it in at
 * where / ref.  A name ref means the topmost node with that ops->name.
 * Nothing is unlinked, so nothing drains.  *node (node may be NULL) gets
 * the new node, e.g. for a job that reads the filter's state through
 * node->priv; it stays valid until it is removed.  0, -EINVAL (not a
 * filter, bad position), -ENOENT (no node ref), -E2BIG (chain full), or
 * the open's error with *errmsg set. */
int be_stack_insert(struct backend *root, const struct backend_ops *ops,
		    const struct backend_params *p, enum be_stack_where where,
		    const char *ref, struct backend **node,
		    const char **errmsg);

/* Unlink the topmost filter named name, wait up to timeout_ms for the I/O
 * that may still use it, then close it.  0 (closed), 1 (unlinked; closed
 * later, see the header comment), -ENOENT, -EINVAL (name is the store). */
int be_stack_remove(struct backend *root, const char *name,
		    unsigned timeout_ms);
/* The same for the filter node itself (as be_stack_insert() returned it):
 * for a job that must remove its own filter and no other of that name. */
int be_stack_remove_node(struct backend *root, struct backend *node,
			 unsigned timeout_ms);

/* Put store (open, no inner) in place of the topmost node named name (NULL:
 * the store) and every node below it; those are drained and closed like a
 * removed filter.  store must have the old store's size and must not lose
 * its direct flag (the hang engine's safety rule depends on it).  0 / 1 as
 * for remove; -ENOENT, -EINVAL with *errmsg set (store untouched, still the
 * caller's).  On 0 or 1 the stack owns store. */
int be_stack_replace(struct backend *root, const char *name,
		     struct backend *store, unsigned timeout_ms,
		     const char **errmsg);

/* Make the filters between the store and the lowest node not named by
 * backend_find() (a tracking node; else the root) be names[0..n-1], top
 * first.  Nodes both chains share (by name, in order) are kept with their
 * state; new ones are opened with p (p->inner set here); dropped ones are
 * unlinked, drained up to timeout_ms and closed as by remove.  0 / 1 as
 * for remove; -EINVAL (not a filter), -E2BIG, -EBUSY (a named filter sits
 * above a tracking node), or an open's error, with *errmsg set and the
 * chain unchanged. */
int be_stack_set_filters(struct backend *root, const char *const *names,
			 int n, const struct backend_params *p,
			 unsigned timeout_ms, const char **errmsg);

/* Wait up to timeout_ms until every I/O that entered the stack before this
 * call has completed (e.g. after inserting a dirty-tracking filter: from
 * then on every write in the stack passes through it).  0 or -ETIMEDOUT.
 * Management thread; on a reactor thread it only looks once. */
int be_stack_drain(struct backend *root, unsigned timeout_ms);

/* Wait up to timeout_ms for the retired nodes' I/O and close them.
 * Returns how many are still waiting. */
int be_stack_reap(struct backend *root, unsigned timeout_ms);

/* The chain's node names, top first (static strings: ops->name), at most
 * max.  Returns the number of nodes. */
int be_stack_names(struct backend *root, const char **names, int max);
/* "fault -> passthrough -> file" into buf.  Returns the length. */
int be_stack_format(struct backend *root, char *buf, unsigned len);

/* The store's backend.caw_max (backend.h) under be, a stack root or a
 * plain node: how many bytes of COMPARE AND WRITE it does itself. */
uint32_t be_stack_caw_max(struct backend *be);

/* The store at the bottom of be (a stack root or a plain node).  The
 * store of a LUN never changes, so the pointer stays valid for the
 * LUN's life. */
struct backend *be_stack_store(struct backend *be);

#endif
