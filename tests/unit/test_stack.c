/* test_stack.c - the block stack (backends/stack.c): insert, remove and
 * replace nodes on a live chain, with a fake in-memory store that can hold
 * I/O until the test releases it, a counting filter that records when it
 * is closed, the real passthrough and fault filters and a real reactor.
 *
 * What is pinned: positions and errors of each change; new I/O takes the
 * new chain at once; an unlinked node is not closed while I/O that entered
 * before the change is in flight (whether the change waits for it or
 * leaves the node retired); a store replaced under held I/O; and a stress
 * run where a management thread changes the chain a thousand times while
 * the reactor keeps 32 requests in flight, each read checked against the
 * last write to its block.
 *
 * stack.c is included so its statics are reachable. */
#include "../../backends/stack.c"
#include "backend_harness.h"

extern const struct backend_ops be_passthrough_ops;

#define BS 4096
#define STORE_BLOCKS 256
#define STORE_SIZE ((uint64_t)STORE_BLOCKS * BS)

/* ---- a fake store: memory, completes later, can hold I/O ---- */

struct fake_store {
	unsigned char *mem;
	uint64_t size;
	bool direct;
	atomic_bool hold;		/* queue I/O instead of completing it */
	struct be_io *held[512];	/* reactor thread only */
	atomic_int nheld;	/* written on the reactor, read by the test */
	atomic_int submitted;
	atomic_bool closed;
};

static void fake_do(struct fake_store *f, struct be_io *io)
{
	uint64_t off = io->offset;

	for (int i = 0; i < io->iovcnt; i++) {
		if (io->op == BE_OP_WRITE)
			memcpy(f->mem + off, io->iov[i].iov_base, io->iov[i].iov_len);
		else if (io->op == BE_OP_READ)
			memcpy(io->iov[i].iov_base, f->mem + off, io->iov[i].iov_len);
		off += io->iov[i].iov_len;
	}
}

static int fake_open(struct backend *be, const struct backend_params *p,
		     const char **errmsg)
{
	/* the test passes its fake_store in opts */
	struct fake_store *f = (struct fake_store *)p->opts;

	(void)errmsg;
	be->priv = f;
	be->size = f->size;
	be->direct = f->direct;
	return 0;
}

static void fake_close(struct backend *be)
{
	struct fake_store *f = be->priv;

	atomic_store(&f->closed, true);
}

static void fake_submit(struct backend *be, struct be_io *io, struct reactor *r)
{
	struct fake_store *f = be->priv;

	atomic_fetch_add(&f->submitted, 1);
	if (atomic_load(&f->hold) && f->nheld < (int)ARRAY_SIZE(f->held)) {
		f->held[atomic_fetch_add(&f->nheld, 1)] = io;
		return;
	}
	fake_do(f, io);
	backend_complete_later(r, io, 0);
}

static const struct backend_ops fake_store_ops = {
	.name = "fakestore",
	.open = fake_open,
	.close = fake_close,
	.submit = fake_submit,
};

static void fake_release_fn(void *arg)
{
	struct fake_store *f = arg;

	for (int i = 0; i < atomic_load(&f->nheld); i++) {
		fake_do(f, f->held[i]);
		f->held[i]->done(f->held[i], 0);
	}
	atomic_store(&f->nheld, 0);
}

/* Wait (at most 10 s) until cond holds: what a reactor does is not
 * timed by a fixed sleep, which a loaded machine outlasts. */
#define WAIT_UNTIL(cond)						\
	do {								\
		for (int wait_i_ = 0; wait_i_ < 10000 && !(cond); wait_i_++) \
			usleep(1000);					\
	} while (0)

static void sync_post_fn(void *arg)
{
	sem_post(arg);
}

/* Return once R has run everything queued to it before the call (and
 * the work that deferred in turn). */
static void reactor_sync(void)
{
	sem_t sem;

	for (int round = 0; round < 2; round++) {
		sem_init(&sem, 0, 0);
		reactor_call(R, sync_post_fn, &sem);
		sem_wait_secs(&sem, 10);
		sem_destroy(&sem);
	}
}

/* Complete every held request on the reactor and wait until it has run. */
static void fake_release(struct fake_store *f)
{
	atomic_store(&f->hold, false);
	reactor_call(R, fake_release_fn, f);
	reactor_sync();
}

static struct fake_store *fake_new(bool direct)
{
	struct fake_store *f = calloc(1, sizeof(*f));

	f->mem = calloc(1, STORE_SIZE);
	f->size = STORE_SIZE;
	f->direct = direct;
	return f;
}

static void fake_free(struct fake_store *f)
{
	free(f->mem);
	free(f);
}

static struct backend *fake_node(struct fake_store *f)
{
	struct backend_params p = { .opts = (const char *)f };
	struct backend *be = NULL;
	const char *msg;

	CHECK(be_stack_node_open(&fake_store_ops, &p, &be, &msg) == 0);
	return be;
}

/* ---- a counting filter that says when it is closed ---- */

struct count_state {
	atomic_int submitted;
	atomic_bool closed;
};

static int count_open(struct backend *be, const struct backend_params *p,
		      const char **errmsg)
{
	(void)errmsg;
	be->inner = p->inner;
	be->size = p->inner->size;
	be->direct = p->inner->direct;
	be->priv = (void *)p->opts;
	return 0;
}

static void count_close(struct backend *be)
{
	struct count_state *c = be->priv;

	atomic_store(&c->closed, true);
}

static void count_submit(struct backend *be, struct be_io *io,
			 struct reactor *r)
{
	struct count_state *c = be->priv;

	atomic_fetch_add(&c->submitted, 1);
	backend_submit(backend_inner(be), io, r);
}

static const struct backend_ops count_ops = {
	.name = "count",
	.filter = true,
	.open = count_open,
	.close = count_close,
	.submit = count_submit,
};

static int insert(struct backend *root, const struct backend_ops *ops,
		  const char *opts, enum be_stack_where where, const char *ref)
{
	struct backend_params p = { .block_size = BS, .opts = opts };
	const char *msg;

	return be_stack_insert(root, ops, &p, where, ref, NULL, &msg);
}

static bool chain_is(struct backend *root, const char *want)
{
	char buf[256];

	be_stack_format(root, buf, sizeof(buf));
	if (strcmp(buf, want) != 0) {
		printf("chain is \"%s\", want \"%s\"\n", buf, want);
		return false;
	}
	return true;
}

/* ---- async submission that does not wait (for held I/O) ---- */

struct aio {
	struct be_io io;
	struct iovec iov;
	struct backend *be;
	atomic_int res;		/* 1 = pending */
};

static void aio_done(struct be_io *io, int res)
{
	struct aio *a = container_of(io, struct aio, io);

	atomic_store(&a->res, res);
}

static void aio_submit_fn(void *arg)
{
	struct aio *a = arg;

	backend_submit(a->be, &a->io, R);
}

static void aio_start(struct aio *a, struct backend *be, enum be_op op,
		      uint64_t off, void *buf)
{
	memset(a, 0, sizeof(*a));
	a->be = be;
	a->io.op = op;
	a->io.offset = off;
	a->io.length = BS;
	a->iov = (struct iovec){ buf, BS };
	a->io.iov = &a->iov;
	a->io.iovcnt = 1;
	a->io.done = aio_done;
	atomic_store(&a->res, 1);
	reactor_call(R, aio_submit_fn, a);
}

/* ---- tests ---- */

static void test_positions(void)
{
	struct fake_store *f = fake_new(true);
	struct backend *store = fake_node(f), *root = NULL;
	struct backend_params p = { .block_size = BS };
	char *buf = abuf(BS, 0x5a);
	const char *msg;

	CHECK(be_stack_open(store, &root) == 0 && be_stack_is_root(root));
	CHECK(!be_stack_is_root(store));
	CHECK(root->size == STORE_SIZE && root->direct, "root takes the store's size");
	CHECK(chain_is(root, "fakestore"));
	CHECK(run_io(root, BE_OP_WRITE, 0, BS, buf) == 0, "I/O through a bare stack");

	CHECK(insert(root, &be_passthrough_ops, NULL, BE_STACK_TOP, NULL) == 0);
	CHECK(chain_is(root, "passthrough -> fakestore"));
	CHECK(insert(root, &be_fault_ops, NULL, BE_STACK_ABOVE, "fakestore") == 0);
	CHECK(chain_is(root, "passthrough -> fault -> fakestore"));
	CHECK(insert(root, &be_passthrough_ops, NULL, BE_STACK_BELOW, "passthrough") == 0);
	CHECK(chain_is(root, "passthrough -> passthrough -> fault -> fakestore"));
	CHECK(insert(root, &be_fault_ops, NULL, BE_STACK_ABOVE, "passthrough") == 0,
	      "above the topmost node of that name");
	CHECK(chain_is(root, "fault -> passthrough -> passthrough -> fault -> fakestore"));

	/* errors change nothing */
	CHECK(be_stack_insert(root, &be_null_ops, &p, BE_STACK_TOP, NULL, NULL, &msg) == -EINVAL &&
	      msg, "a store is not a filter");
	CHECK(insert(root, &be_passthrough_ops, NULL, BE_STACK_BELOW, "fakestore") == -EINVAL,
	      "nothing below the store");
	CHECK(insert(root, &be_passthrough_ops, NULL, BE_STACK_ABOVE, "nosuch") == -ENOENT);
	CHECK(insert(root, &be_passthrough_ops, NULL, BE_STACK_BELOW, NULL) == -ENOENT);
	CHECK(be_stack_remove(root, "fakestore", 0) == -EINVAL, "the store stays");
	CHECK(be_stack_remove(root, "nosuch", 0) == -ENOENT);
	CHECK(chain_is(root, "fault -> passthrough -> passthrough -> fault -> fakestore"));

	/* the fault filter in the stack: set_param through the root reaches
	 * the topmost fault node */
	CHECK(root->ops->set_param(root, "fault", "eio,ops=r") == 0);
	CHECK(run_io(root, BE_OP_READ, 0, BS, buf) == -EIO, "fault injects through the root");
	CHECK(run_io(root, BE_OP_WRITE, 0, BS, buf) == 0);
	CHECK(be_stack_remove(root, "fault", 1000) == 0, "remove the topmost fault");
	CHECK(chain_is(root, "passthrough -> passthrough -> fault -> fakestore"));
	CHECK(run_io(root, BE_OP_READ, 0, BS, buf) == 0, "its spec left with it");

	/* a job removes its own filter, not the topmost of that name */
	struct backend *mine = NULL, *other = NULL;
	CHECK(be_stack_insert(root, &be_passthrough_ops, &p, BE_STACK_ABOVE,
			      "fakestore", &mine, &msg) == 0 && mine);
	CHECK(chain_is(root, "passthrough -> passthrough -> fault -> passthrough -> fakestore"));
	CHECK(be_stack_remove_node(root, mine, 1000) == 0);
	CHECK(chain_is(root, "passthrough -> passthrough -> fault -> fakestore"),
	      "the lowest passthrough went");
	CHECK(be_stack_remove_node(root, mine, 1000) == -ENOENT, "not in the chain any more");
	CHECK(stack_find(root, "fakestore", &other, &mine) &&
	      be_stack_remove_node(root, mine, 0) == -EINVAL, "the store stays");

	/* the chain is bounded */
	int n = be_stack_names(root, (const char *[1]){ 0 }, 1), err = 0;
	while (n < BE_STACK_MAX_NODES && err == 0) {
		err = insert(root, &be_passthrough_ops, NULL, BE_STACK_TOP, NULL);
		n++;
	}
	CHECK(err == 0 && insert(root, &be_passthrough_ops, NULL, BE_STACK_TOP, NULL) == -E2BIG,
	      "a full chain refuses more");
	while (be_stack_remove(root, "passthrough", 1000) == 0)
		;
	CHECK(chain_is(root, "fault -> fakestore"), "every passthrough removed");
	CHECK(run_io(root, BE_OP_READ, 0, BS, buf) == 0 && all_bytes(buf, BS, 0x5a),
	      "the data written first is still read back");

	be_stack_close(root);
	CHECK(atomic_load(&f->closed), "closing the stack closes the store");
	fake_free(f);
	free(buf);
}

/* A removed node stays open while I/O that entered before the change is in
 * flight, and new I/O does not pass through it. */
static void test_remove_drains(void)
{
	struct fake_store *f = fake_new(true);
	struct count_state c = { 0 };
	struct backend *root = NULL;
	struct aio held[3], later;
	char *buf = abuf(BS, 1);
	struct be_stack *s;

	be_stack_open(fake_node(f), &root);
	s = root->priv;
	CHECK(insert(root, &count_ops, (const char *)&c, BE_STACK_TOP, NULL) == 0);
	atomic_store(&f->hold, true);
	for (int i = 0; i < 3; i++)
		aio_start(&held[i], root, BE_OP_WRITE, (uint64_t)i * BS, buf);
	WAIT_UNTIL(atomic_load(&c.submitted) == 3 && f->nheld == 3);
	CHECK(atomic_load(&c.submitted) == 3 && f->nheld == 3, "three held in the store");

	CHECK(be_stack_remove(root, "count", 0) == 1, "removed, close pending");
	CHECK(chain_is(root, "fakestore"), "unlinked at once");
	CHECK(!atomic_load(&c.closed), "not closed while its I/O is in flight");
	CHECK(be_stack_reap(root, 0) == 1, "still waiting");

	/* new I/O goes through the new chain */
	aio_start(&later, root, BE_OP_WRITE, 10 * BS, buf);
	WAIT_UNTIL(f->nheld == 4);
	CHECK(atomic_load(&c.submitted) == 3, "new I/O skips the removed filter");
	CHECK(f->nheld == 4, "and reaches the store");

	/* a bounded wait on the management thread gives up and retires */
	uint64_t t0 = clock_ms();
	CHECK(be_stack_reap(root, 60) == 1 && clock_ms() - t0 >= 50,
	      "a bounded drain times out");
	CHECK(!atomic_load(&c.closed));

	fake_release(f);
	for (int i = 0; i < 3; i++)
		CHECK(atomic_load(&held[i].res) == 0, "held I/O %d completed", i);
	CHECK(atomic_load(&later.res) == 0);
	CHECK(be_stack_reap(root, 1000) == 0 && atomic_load(&c.closed),
	      "closed once drained");
	CHECK(atomic_load(&s->readers[0].n) + atomic_load(&s->readers[1].n) == 0,
	      "no I/O counted in the stack");
	be_stack_close(root);
	fake_free(f);
	free(buf);
}

/* A node whose drain timed out is closed once its I/O completes, by the
 * stack itself: no later change, reap or close is needed. */
static void test_retired_reaped_alone(void)
{
	struct fake_store *f = fake_new(true);
	struct count_state c = { 0 };
	struct backend *root = NULL;
	struct aio held;
	char *buf = abuf(BS, 5);
	int i;

	be_stack_open(fake_node(f), &root);
	CHECK(insert(root, &count_ops, (const char *)&c, BE_STACK_TOP, NULL) == 0);
	atomic_store(&f->hold, true);
	aio_start(&held, root, BE_OP_WRITE, 0, buf);
	WAIT_UNTIL(f->nheld == 1);
	CHECK(f->nheld == 1, "one write held in the store");
	CHECK(be_stack_remove(root, "count", 10) == 1, "drain timed out: retired");
	usleep(150000);
	CHECK(!atomic_load(&c.closed), "not closed while its write is held");
	fake_release(f);
	CHECK(atomic_load(&held.res) == 0, "the held write completed");
	for (i = 0; i < 200 && !atomic_load(&c.closed); i++)
		usleep(10000);
	CHECK(atomic_load(&c.closed),
	      "closed on its own after its I/O completed (%d ms)", i * 10);
	CHECK(chain_is(root, "fakestore"));
	be_stack_close(root);
	fake_free(f);
	free(buf);
}

/* be_stack_set_filters(): the chain becomes the list, nodes both share
 * are kept (same node, same state), a node it cannot name (count, like
 * the dirty-tracking node) stays on top, and a named filter above such a
 * node is refused. */
static void test_set_filters(void)
{
	struct fake_store *f = fake_new(true);
	struct count_state c = { 0 };
	struct backend *root = NULL, *fault_node;
	const char *msg = NULL;
	const char *l1[] = { "passthrough", "fault" };
	const char *l2[] = { "fault", "passthrough", "passthrough" };
	const char *l3[] = { "nosuch" };
	struct backend_params p = { .block_size = BS };
	char *buf = abuf(BS, 6);
	struct aio a;

	be_stack_open(fake_node(f), &root);
	CHECK(insert(root, &be_fault_ops, NULL, BE_STACK_TOP, NULL) == 0);
	fault_node = root->inner;
	CHECK(insert(root, &count_ops, (const char *)&c, BE_STACK_TOP, NULL) == 0);
	CHECK(be_stack_set_filters(root, l1, 2, &p, 1000, &msg) == 0, "%s",
	      msg ? msg : "");
	CHECK(chain_is(root, "count -> passthrough -> fault -> fakestore"));
	CHECK(root->inner->inner->inner == fault_node, "the fault node is kept");
	CHECK(be_stack_set_filters(root, l2, 3, &p, 1000, &msg) == 0);
	CHECK(chain_is(root, "count -> fault -> passthrough -> passthrough -> fakestore"));
	CHECK(be_stack_set_filters(root, NULL, 0, &p, 1000, &msg) == 0);
	CHECK(chain_is(root, "count -> fakestore"));
	CHECK(be_stack_set_filters(root, l3, 1, &p, 1000, &msg) == -EINVAL);
	CHECK(chain_is(root, "count -> fakestore"), "a refused list changes nothing");
	/* I/O still reaches the store through the kept node */
	aio_start(&a, root, BE_OP_WRITE, 0, buf);
	WAIT_UNTIL(atomic_load(&a.res) == 0 && atomic_load(&c.submitted) == 1);
	CHECK(atomic_load(&a.res) == 0 && atomic_load(&c.submitted) == 1);
	CHECK(insert(root, &be_passthrough_ops, NULL, BE_STACK_TOP, NULL) == 0);
	CHECK(be_stack_set_filters(root, l1, 2, &p, 1000, &msg) == -EBUSY,
	      "a named filter above the tracking node: refused");
	CHECK(chain_is(root, "passthrough -> count -> fakestore"));
	be_stack_close(root);
	fake_free(f);
	free(buf);
}

struct remover {
	struct backend *root;
	atomic_int ret;
	atomic_bool finished;
};

static void *remover_thread(void *arg)
{
	struct remover *m = arg;

	atomic_store(&m->ret, be_stack_remove(m->root, "count", 5000));
	atomic_store(&m->finished, true);
	return NULL;
}

/* remove() on the management thread waits for the drain, then closes. */
static void test_remove_waits(void)
{
	struct fake_store *f = fake_new(true);
	struct count_state c = { 0 };
	struct remover m = { 0 };
	struct backend *root = NULL;
	struct aio held;
	char *buf = abuf(BS, 2);
	pthread_t th;

	be_stack_open(fake_node(f), &root);
	insert(root, &count_ops, (const char *)&c, BE_STACK_TOP, NULL);
	atomic_store(&f->hold, true);
	aio_start(&held, root, BE_OP_WRITE, 0, buf);
	WAIT_UNTIL(f->nheld == 1);
	m.root = root;
	pthread_create(&th, NULL, remover_thread, &m);
	usleep(100000);
	CHECK(!atomic_load(&m.finished), "remove waits for the drain");
	CHECK(!atomic_load(&c.closed), "the node is open while it waits");
	fake_release(f);
	pthread_join(th, NULL);
	CHECK(atomic_load(&m.ret) == 0 && atomic_load(&c.closed),
	      "closed when the held write completed: ret %d", atomic_load(&m.ret));
	CHECK(atomic_load(&held.res) == 0);
	be_stack_close(root);
	fake_free(f);
	free(buf);
}

/* Replace the store under held I/O: new I/O goes to the new store, the old
 * one closes after its I/O completed. */
static void test_replace_store(void)
{
	struct fake_store *a = fake_new(true), *b = fake_new(true);
	struct fake_store *small = fake_new(true), *cached = fake_new(false);
	struct backend *root = NULL, *nb, *ns, *nc;
	struct aio held, later;
	char *buf = abuf(BS, 3);
	const char *msg;

	be_stack_open(fake_node(a), &root);
	insert(root, &be_fault_ops, NULL, BE_STACK_TOP, NULL);
	insert(root, &be_passthrough_ops, NULL, BE_STACK_ABOVE, "fakestore");
	CHECK(chain_is(root, "fault -> passthrough -> fakestore"));

	small->size = STORE_SIZE / 2;
	ns = fake_node(small);
	nc = fake_node(cached);
	CHECK(be_stack_replace(root, NULL, ns, 0, &msg) == -EINVAL && msg,
	      "size must match");
	CHECK(be_stack_replace(root, NULL, nc, 0, &msg) == -EINVAL && msg,
	      "direct must not be lost");
	CHECK(be_stack_replace(root, "passthrough", root->inner, 0, &msg) == -EINVAL,
	      "a filter cannot take a node's place");
	nb = fake_node(b);
	CHECK(be_stack_replace(root, "nosuch", nb, 0, &msg) == -ENOENT);
	be_stack_node_close(ns);
	be_stack_node_close(nc);

	atomic_store(&a->hold, true);
	aio_start(&held, root, BE_OP_WRITE, 0, buf);
	/* poll rather than sleep a fixed time: a loaded machine may take
	 * longer than 20 ms to get the write through the reactor */
	for (int i = 0; i < 5000 && atomic_load(&a->nheld) < 1; i++)
		usleep(1000);
	CHECK(a->nheld == 1);
	/* the mirror's pivot: the new store already holds the data */
	memcpy(b->mem, a->mem, STORE_SIZE);
	CHECK(be_stack_replace(root, NULL, nb, 0, &msg) == 1, "replaced, old store pending");
	CHECK(chain_is(root, "fault -> passthrough -> fakestore"));
	CHECK(backend_inner(backend_inner(root->inner)) == nb, "the new store is linked");
	aio_start(&later, root, BE_OP_WRITE, BS, buf);
	for (int i = 0; i < 5000 && atomic_load(&later.res) == 1; i++)
		usleep(1000);
	CHECK(atomic_load(&later.res) == 0 && atomic_load(&b->submitted) == 1,
	      "new I/O goes to the new store");
	CHECK(!atomic_load(&a->closed), "old store open while its write is held");
	fake_release(a);
	CHECK(atomic_load(&held.res) == 0);
	CHECK(be_stack_reap(root, 1000) == 0 && atomic_load(&a->closed),
	      "old store closed once drained");

	/* replacing a filter and everything below it with a store */
	struct fake_store *c = fake_new(true);
	CHECK(be_stack_replace(root, "passthrough", fake_node(c), 1000, &msg) == 0);
	CHECK(chain_is(root, "fault -> fakestore") && atomic_load(&b->closed),
	      "the subtree below went with it");
	CHECK(run_io(root, BE_OP_READ, 0, BS, buf) == 0);
	be_stack_close(root);
	CHECK(atomic_load(&c->closed));
	fake_free(a);
	fake_free(b);
	fake_free(c);
	fake_free(small);
	fake_free(cached);
	free(buf);
}

/* ---- stress: changes from a management thread while I/O runs ---- */

#define WORKERS 32
#define STRESS_CHANGES 1000

struct worker {
	struct be_io io;
	struct iovec iov;
	unsigned char *buf;
	unsigned id;
	unsigned block;		/* current block (worker owns id, id+WORKERS...) */
	unsigned gen;
	bool reading;
};

static struct backend *stress_root;
static atomic_bool stress_stop;
static atomic_int stress_running, stress_errors, stress_bad_data;
static atomic_ulong stress_ios;
static unsigned char expect_gen[STORE_BLOCKS];

static void worker_next(struct worker *w);

static void worker_done(struct be_io *io, int res)
{
	struct worker *w = container_of(io, struct worker, io);

	if (reactor_current() != R)
		atomic_fetch_add(&stress_errors, 1);
	if (res)
		atomic_fetch_add(&stress_errors, 1);
	atomic_fetch_add(&stress_ios, 1);
	if (w->reading) {
		if (!all_bytes(w->buf, BS, expect_gen[w->block]))
			atomic_fetch_add(&stress_bad_data, 1);
		w->block += WORKERS;
		if (w->block >= STORE_BLOCKS)
			w->block = w->id;
	} else {
		expect_gen[w->block] = (unsigned char)w->gen;
	}
	w->reading = !w->reading;
	if (atomic_load(&stress_stop)) {
		atomic_fetch_sub(&stress_running, 1);
		return;
	}
	worker_next(w);
}

static void worker_next(struct worker *w)
{
	memset(&w->io, 0, sizeof(w->io));
	if (!w->reading)
		memset(w->buf, (unsigned char)++w->gen, BS);
	w->io.op = w->reading ? BE_OP_READ : BE_OP_WRITE;
	w->io.offset = (uint64_t)w->block * BS;
	w->io.length = BS;
	w->iov = (struct iovec){ w->buf, BS };
	w->io.iov = &w->iov;
	w->io.iovcnt = 1;
	w->io.done = worker_done;
	backend_submit(stress_root, &w->io, R);
}

static void workers_start_fn(void *arg)
{
	struct worker *ws = arg;

	for (unsigned i = 0; i < WORKERS; i++)
		worker_next(&ws[i]);
}

static void test_stress(void)
{
	struct fake_store *f = fake_new(true);
	struct worker *ws = calloc(WORKERS, sizeof(*ws));
	static const char *const names[] = { "passthrough", "fault" };
	int changes = 0, deferred = 0, bad = 0;
	struct be_stack *s;

	be_stack_open(fake_node(f), &stress_root);
	s = stress_root->priv;
	insert(stress_root, &be_fault_ops, NULL, BE_STACK_TOP, NULL);
	for (unsigned i = 0; i < WORKERS; i++) {
		ws[i].id = ws[i].block = i;
		ws[i].buf = abuf(BS, 0);
	}
	atomic_store(&stress_running, WORKERS);
	reactor_call(R, workers_start_fn, ws);

	for (int i = 0; i < STRESS_CHANGES; i++) {
		const struct backend_ops *ops = i & 1 ? &be_fault_ops
						      : &be_passthrough_ops;
		enum be_stack_where where = (enum be_stack_where)(i % 3);
		const char *ref = where == BE_STACK_TOP ? NULL
			: where == BE_STACK_ABOVE ? "fakestore" : "fault";
		int rc = insert(stress_root, ops, NULL, where, ref);

		if (rc)
			bad++;
		rc = be_stack_remove(stress_root, names[i & 1], 1000);
		if (rc == 1)
			deferred++;
		else if (rc)
			bad++;
		changes += 2;
		if (i % 100 == 0)
			usleep(1000);
	}
	atomic_store(&stress_stop, true);
	for (int i = 0; i < 500 && atomic_load(&stress_running); i++)
		usleep(10000);
	CHECK(atomic_load(&stress_running) == 0, "every worker stopped");
	CHECK(bad == 0, "%d changes refused", bad);
	CHECK(atomic_load(&stress_errors) == 0, "%d I/O errors",
	      atomic_load(&stress_errors));
	CHECK(atomic_load(&stress_bad_data) == 0,
	      "%d reads did not return the last write",
	      atomic_load(&stress_bad_data));
	CHECK(atomic_load(&stress_ios) > 1000, "I/O ran: %lu",
	      (unsigned long)atomic_load(&stress_ios));
	CHECK(be_stack_reap(stress_root, 1000) == 0);
	CHECK(atomic_load(&s->readers[0].n) + atomic_load(&s->readers[1].n) == 0,
	      "counters back at zero");
	CHECK(chain_is(stress_root, "fault -> fakestore"));
	printf("stress: %d changes (%d closed later), %lu I/Os\n", changes,
	       deferred, (unsigned long)atomic_load(&stress_ios));
	be_stack_close(stress_root);
	for (unsigned i = 0; i < WORKERS; i++)
		free(ws[i].buf);
	free(ws);
	fake_free(f);
}

/* A drain called on a reactor thread must not sleep (its own I/O could
 * never complete). */
struct on_reactor {
	struct backend *root;
	sem_t sem;
	int ret;
	uint64_t ms;
};

static void on_reactor_fn(void *arg)
{
	struct on_reactor *o = arg;
	uint64_t t0 = clock_ms();

	o->ret = be_stack_remove(o->root, "count", 5000);
	o->ms = clock_ms() - t0;
	sem_post(&o->sem);
}

static void test_reactor_no_sleep(void)
{
	struct fake_store *f = fake_new(true);
	struct count_state c = { 0 };
	struct on_reactor o = { 0 };
	struct aio held;
	char *buf = abuf(BS, 4);

	be_stack_open(fake_node(f), &o.root);
	insert(o.root, &count_ops, (const char *)&c, BE_STACK_TOP, NULL);
	atomic_store(&f->hold, true);
	aio_start(&held, o.root, BE_OP_READ, 0, buf);
	WAIT_UNTIL(f->nheld == 1);
	sem_init(&o.sem, 0, 0);
	reactor_call(R, on_reactor_fn, &o);
	sem_wait_secs(&o.sem, 10);
	CHECK(o.ret == 1 && o.ms < 1000, "on a reactor: retired, no wait (%d, %llu ms)",
	      o.ret, (unsigned long long)o.ms);
	fake_release(f);
	CHECK(be_stack_reap(o.root, 1000) == 0 && atomic_load(&c.closed));
	be_stack_close(o.root);
	fake_free(f);
	free(buf);
}

/* ---- block status that waits (a gateway) through the root ---- */
static struct be_io *bs_pending;
static int bs_done_res = 99;

static int fake_bs_async(struct backend *be UNUSED, struct be_io *io,
			 struct reactor *r UNUSED)
{
	if (io->offset >= STORE_SIZE / 2) {	/* known at once */
		io->length = BS;
		return 0;
	}
	bs_pending = io;
	return -EINPROGRESS;
}

static const struct backend_ops fake_bs_ops = {
	.name = "fakestore",
	.open = fake_open,
	.close = fake_close,
	.submit = fake_submit,
	.block_status_async = fake_bs_async,
};

static void bs_done(struct be_io *io UNUSED, int res)
{
	bs_done_res = res;
}

/* The root counts a question the store answers later like I/O (a stack
 * change waits for it), through the filters, and not one answered at
 * once; the filters and the root copy the store's provisioning. */
static void test_block_status_async(void)
{
	struct fake_store *f = fake_new(true);
	struct backend_params p = { .opts = (const char *)f };
	struct backend *store = NULL, *root = NULL;
	struct be_io io = { 0 };
	const char *msg;
	struct be_stack *s;

	CHECK(be_stack_node_open(&fake_bs_ops, &p, &store, &msg) == 0);
	store->thin = BE_THIN_YES;
	be_stack_open(store, &root);
	s = root->priv;
	CHECK(insert(root, &be_passthrough_ops, NULL, BE_STACK_TOP, NULL) == 0);
	CHECK(root->thin == BE_THIN_YES && backend_inner(root)->thin == BE_THIN_YES,
	      "the store's provisioning reaches the root");
	io.offset = 0;
	io.length = STORE_SIZE;
	io.done = bs_done;
	CHECK(backend_block_status(root, &io, R) == -EINPROGRESS && bs_pending == &io);
	CHECK(atomic_load(&s->readers[0].n) + atomic_load(&s->readers[1].n) == 1,
	      "a pending question is counted in the stack");
	CHECK(be_stack_reap(root, 0) == 0);
	io.length = 3 * BS;
	bs_pending->done(bs_pending, 1);
	CHECK(bs_done_res == 1 && io.length == 3 * BS && io.done == bs_done,
	      "the answer and the caller's done() come back");
	CHECK(atomic_load(&s->readers[0].n) + atomic_load(&s->readers[1].n) == 0);
	io.offset = STORE_SIZE / 2;
	io.length = BS;
	bs_done_res = 99;
	CHECK(backend_block_status(root, &io, R) == 0 && bs_done_res == 99 &&
	      io.done == bs_done, "an answer at once calls no done()");
	CHECK(atomic_load(&s->readers[0].n) + atomic_load(&s->readers[1].n) == 0);
	be_stack_close(root);
	fake_free(f);
}

/* A node that must see COMPARE AND WRITE as a write (the mirror) turns
 * the store's own compare-and-write off for the whole stack. */
static void test_caw_opaque(void)
{
	struct fake_store *f = fake_new(true);
	struct backend *store = fake_node(f), *root = NULL;

	store->caw_max = 512;
	CHECK(be_stack_open(store, &root) == 0);
	CHECK(be_stack_caw_max(root) == 512, "the store's caw_max");
	CHECK(insert(root, &be_passthrough_ops, NULL, BE_STACK_TOP, NULL) == 0);
	CHECK(be_stack_caw_max(root) == 512, "a plain filter passes it on");
	backend_inner(root)->caw_opaque = true;
	CHECK(be_stack_caw_max(root) == 0, "an opaque filter turns it off");
	backend_inner(root)->caw_opaque = false;
	CHECK(be_stack_caw_max(root) == 512);
	be_stack_close(root);
	fake_free(f);
}

int main(void)
{
	if (harness_start())
		return 1;
	test_block_status_async();
	test_positions();
	test_caw_opaque();
	test_remove_drains();
	test_retired_reaped_alone();
	test_set_filters();
	test_remove_waits();
	test_replace_store();
	test_reactor_no_sleep();
	test_stress();
	return harness_finish();
}
