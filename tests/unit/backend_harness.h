/* backend_harness.h - shared by the backend unit tests: a real reactor on
 * its own thread, one-request-at-a-time submission with contract checks
 * (done() exactly once, on the reactor, never inside submit()), a CHECK
 * macro and a private temporary directory. */
#ifndef HOLDFAST_BACKEND_HARNESS_H
#define HOLDFAST_BACKEND_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "reactor.h"
#include "util.h"

extern const struct backend_ops be_file_ops, be_null_ops, be_fault_ops;

#include "check.h"


#define KIB 1024ULL
#define MIB (1024ULL * 1024)

static struct reactor *R;
/* the sense the last run_io() completed with (struct be_sense) */
static struct be_sense tio_last_sense __attribute__((unused));
static pthread_t reactor_th;
static char tmpdir[256];

/* ---- running one request on the reactor thread ---- */

struct tio {
	struct be_io io;
	struct backend *be;
	struct iovec iov[4];
	sem_t sem;
	int res;
	int ncalls;
	bool in_submit;
	bool done_in_submit;
	bool done_off_reactor;
};

static inline void tio_done(struct be_io *io, int res)
{
	struct tio *t = container_of(io, struct tio, io);

	if (t->in_submit)
		t->done_in_submit = true;
	if (reactor_current() != R)
		t->done_off_reactor = true;
	t->res = res;
	t->ncalls++;
	sem_post(&t->sem);
}

static inline void tio_submit_fn(void *arg)
{
	struct tio *t = arg;

	t->in_submit = true;
	backend_submit(t->be, &t->io, R);
	t->in_submit = false;
}

/* Wait for s at most secs (times 6: a sanitizer build on a loaded 2-core
 * machine runs an order of magnitude slower, and a longer wait only costs
 * time when something is already wrong). */
static inline int sem_wait_secs(sem_t *s, int secs)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 6 * secs;
	while (sem_timedwait(s, &ts) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Submit op on the reactor and wait.  buf may be split into two iovecs
 * (split = bytes in the first) to exercise vectors.  Returns res, or
 * -ETIME if no completion came. */
static inline int run_io_split(struct backend *be, enum be_op op, unsigned flags,
			uint64_t off, uint64_t len, void *buf, uint64_t split)
{
	struct tio t;

	memset(&t, 0, sizeof(t));
	sem_init(&t.sem, 0, 0);
	t.be = be;
	t.io.op = op;
	t.io.flags = flags;
	t.io.offset = off;
	t.io.length = len;
	t.io.done = tio_done;
	if (buf) {
		if (split && split < len) {
			t.iov[0] = (struct iovec){ buf, split };
			t.iov[1] = (struct iovec){ (char *)buf + split, len - split };
			t.io.iovcnt = 2;
		} else {
			t.iov[0] = (struct iovec){ buf, len };
			t.io.iovcnt = 1;
		}
		t.io.iov = t.iov;
	}
	reactor_call(R, tio_submit_fn, &t);
	if (sem_wait_secs(&t.sem, 10) < 0) {
		CHECK(0, "op %d off %llu: no completion in 60 s", op,
		      (unsigned long long)off);
		/* t lives on this stack and the request may still complete
		 * into it: stop here rather than run on over a dead frame */
		fflush(NULL);
		abort();
	}
	usleep(1000);		/* let a wrong second completion show up */
	CHECK(t.ncalls == 1, "done() called %d times", t.ncalls);
	CHECK(!t.done_in_submit, "done() ran inside submit()");
	CHECK(!t.done_off_reactor, "done() ran off the reactor thread");
	sem_destroy(&t.sem);
	tio_last_sense = t.io.sense;
	return t.res;
}

static inline int run_io(struct backend *be, enum be_op op, uint64_t off,
		  uint64_t len, void *buf)
{
	return run_io_split(be, op, 0, off, len, buf, 0);
}

static inline void *reactor_thread(void *arg UNUSED)
{
	reactor_run(R);
	return NULL;
}

static inline void *abuf(size_t len, int fill)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, len))
		abort();
	memset(p, fill, len);
	return p;
}

static inline bool all_bytes(const void *p, size_t len, int val)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i] != (unsigned char)val)
			return false;
	return true;
}

static inline struct backend *open_be(const struct backend_ops *ops,
			       const struct backend_params *p, int *err,
			       const char **msg)
{
	struct backend *be = calloc(1, sizeof(*be));

	be->ops = ops;
	*msg = NULL;
	*err = ops->open(be, p, msg);
	if (*err) {
		free(be);
		return NULL;
	}
	return be;
}

static inline void close_be(struct backend *be)
{
	if (!be)
		return;
	be->ops->close(be);
	free(be);
}

static inline void tpath(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", tmpdir, name);
}


static inline struct backend *open_file(const char *name, uint64_t size, bool direct)
{
	struct backend_params p = {
		.block_size = 512, .direct = direct, .size = size,
	};
	char path[512];
	const char *msg;
	struct backend *be;
	int err;

	tpath(path, sizeof(path), name);
	p.path = path;
	be = open_be(&be_file_ops, &p, &err, &msg);
	CHECK(be != NULL, "open %s: %d %s", name, err, msg ? msg : "");
	return be;
}

static inline struct backend *open_path(const char *path, uint64_t size, bool direct)
{
	struct backend_params p = {
		.path = path, .block_size = 512, .direct = direct, .size = size,
	};
	const char *msg;
	int err;
	struct backend *be = open_be(&be_file_ops, &p, &err, &msg);

	CHECK(be != NULL, "open %s: %d %s", path, err, msg ? msg : "");
	return be;
}


/* Start the reactor thread and make the temporary directory. */
static inline int harness_start(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/holdfast-be-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return -1;
	}
	R = reactor_new(0);
	if (!R) {
		fprintf(stderr, "reactor_new failed\n");
		return -1;
	}
	return pthread_create(&reactor_th, NULL, reactor_thread, NULL) ? -1 : 0;
}

/* Stop the reactor, remove the directory, print the summary line and
 * return the exit status. */
static inline int harness_finish(void)
{
	char cmd[300];

	reactor_stop(R);
	pthread_join(reactor_th, NULL);
	reactor_free(R);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return CHECK_SUMMARY("test_backend");
}

#endif
