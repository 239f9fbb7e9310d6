/* fault.c - error injection around any other backend (like dm-flakey).
 *
 * Every LUN's block stack (stack.h) starts with a fault filter on top, so
 * an operator or a test can make any LUN fail on command:
 *
 *   tgtadm --op update --mode logicalunit --tid 1 --lun 1 \
 *          --params fault=eio:ops=w:lba=0-1023
 *
 * Spec syntax (items separated by ':' or ','; use ':' with tgtadm, whose
 * --params already splits on ','; names are case-insensitive):
 *
 *   off | none | ""          no injection (the default)
 *   ERRNAME                  shorthand for errno=ERRNAME, e.g. eio, enospc
 *                            (any errno name glibc knows, or a number)
 *   errno=ERRNAME|N|none     error to inject (default EIO; "none" = delay
 *                            only).  A spec with latency= and no errno item
 *                            only delays.
 *   ops=OP[|OP...]           which requests: read (r), write (w), rw,
 *                            flush (f), unmap (u), zeroes (z), all (default:
 *                            these five), status (s: GET LBA STATUS, only
 *                            when named; answered with the error at once)
 *   lba=START[-END]          only requests overlapping blocks START..END
 *                            (inclusive, in the LUN's block size); FLUSH
 *                            has no range and ignores this filter
 *   skip=N                   let the first N matching requests through
 *   count=N                  inject at most N times, then pass (0 = no limit)
 *   probability=P            inject with probability P, 0..1 (default 1)
 *   latency=MS               delay matching requests by MS milliseconds
 *                            (then fail them, or pass them on)
 *   duration=MS              the spec switches itself off MS ms after it
 *                            was set (a SAN outage of fixed length)
 *   sense=KEY/ASC/ASCQ       (hex) fail with this SCSI sense as well, as
 *                            a SCSI device would (backend.h be_sense): the
 *                            SCSI layer reports it as it is instead of the
 *                            errno's sense.  INFORMATION is the first
 *                            block of the request inside lba= (the
 *                            request's first block without lba=); FLUSH
 *                            has none.  With holdfast as a test SAN this
 *                            answers e.g. UNIT ATTENTION (6/29/00) or
 *                            ILLEGAL REQUEST (5/24/00) to a gateway.
 *
 * Thread safety: set_param() runs on the management thread while reactors
 * submit.  The idle path reads one atomic flag and passes the request on;
 * only while a spec is active do submitters take the mutex that guards the
 * spec and its counters. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend.h"
#include "reactor.h"

#define FAULT_SPEC_MAX 256
/* Items may be separated by ':' as well as ',' because tgtadm --params
 * already uses ',' between its own key=value items.  Canonical output uses
 * ':' so that what describe() prints can be pasted into tgtadm. */
#define FAULT_SEPARATORS ",:; \t"
#define FAULT_SEP ":"
#define FAULT_DEFAULT_BLOCK_SIZE 512

/* ops= bits, one per enum be_op */
#define FAULT_OP_READ (1u << BE_OP_READ)
#define FAULT_OP_WRITE (1u << BE_OP_WRITE)
#define FAULT_OP_FLUSH (1u << BE_OP_FLUSH)
#define FAULT_OP_UNMAP (1u << BE_OP_UNMAP)
#define FAULT_OP_ZEROES (1u << BE_OP_WRITE_ZEROES)
#define FAULT_OP_ALL (FAULT_OP_READ | FAULT_OP_WRITE | FAULT_OP_FLUSH | \
		      FAULT_OP_UNMAP | FAULT_OP_ZEROES)
/* GET LBA STATUS (block_status_async): advisory, not I/O, so not in
 * "all"; only when named */
#define FAULT_OP_STATUS (1u << 31)

/* A parsed spec.  Plain data: copied whole under the mutex. */
struct fault_spec {
	bool enabled;
	int err;			/* positive errno, 0 = delay only */
	unsigned ops;			/* FAULT_OP_* */
	bool has_lba;
	uint64_t lba_start, lba_end;	/* inclusive */
	uint64_t skip;
	uint64_t count;			/* 0 = unlimited */
	double probability;
	uint32_t latency_ms;
	uint64_t duration_ms;		/* 0 = until changed */
	bool has_sense;
	uint8_t sense_key, sense_asc, sense_ascq;
};

struct fault_state {
	atomic_bool active;		/* the idle fast path reads only this */
	pthread_mutex_t lock;		/* guards everything below */
	struct fault_spec spec;
	uint64_t set_ms;		/* when spec was set (clock_ms) */
	uint64_t seen;			/* matching requests under this spec */
	uint64_t injected;		/* injections under this spec */
	uint64_t total_injected;	/* since open */
	uint32_t block_size;
};

/* A request being delayed by latency=. */
struct fault_delay {
	struct ev_timer timer;
	struct backend *be;
	struct be_io *io;
	struct reactor *r;
	int err;			/* negative errno, or 0 = pass on */
};

/* Largest errno value accepted by number or looked up by name. */
#define FAULT_ERRNO_MAX 4095

static const struct {
	const char *name;
	unsigned bits;
} fault_opnames[] = {
	{ "all", FAULT_OP_ALL }, { "rw", FAULT_OP_READ | FAULT_OP_WRITE },
	{ "read", FAULT_OP_READ }, { "r", FAULT_OP_READ },
	{ "write", FAULT_OP_WRITE }, { "w", FAULT_OP_WRITE },
	{ "flush", FAULT_OP_FLUSH }, { "f", FAULT_OP_FLUSH },
	{ "unmap", FAULT_OP_UNMAP }, { "u", FAULT_OP_UNMAP },
	{ "zeroes", FAULT_OP_ZEROES }, { "z", FAULT_OP_ZEROES },
	{ "status", FAULT_OP_STATUS }, { "s", FAULT_OP_STATUS },
};

/* ---- spec parsing and printing ---- */

static int fault_parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!*s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	return 0;
}

/* "EIO", "eio", "5" or "none" (0).  Names come from glibc's
 * strerrorname_np(), so every errno the kernel can return is accepted. */
static int fault_parse_errno(const char *s, int *out)
{
	uint64_t n;

	if (strcasecmp(s, "none") == 0) {
		*out = 0;
		return 0;
	}
	if (fault_parse_u64(s, &n) == 0) {
		if (n == 0 || n > FAULT_ERRNO_MAX)
			return -EINVAL;
		*out = (int)n;
		return 0;
	}
	for (int e = 1; e <= FAULT_ERRNO_MAX; e++) {
		const char *name = strerrorname_np(e);

		if (name && strcasecmp(s, name) == 0) {
			*out = e;
			return 0;
		}
	}
	return -EINVAL;
}

static int fault_parse_ops(char *s, unsigned *out)
{
	char *save = NULL;
	unsigned bits = 0;

	for (char *tok = strtok_r(s, "|+", &save); tok;
	     tok = strtok_r(NULL, "|+", &save)) {
		size_t i;

		for (i = 0; i < ARRAY_SIZE(fault_opnames); i++)
			if (strcasecmp(tok, fault_opnames[i].name) == 0)
				break;
		if (i == ARRAY_SIZE(fault_opnames))
			return -EINVAL;
		bits |= fault_opnames[i].bits;
	}
	if (!bits)
		return -EINVAL;
	*out = bits;
	return 0;
}

/* "KEY/ASC/ASCQ" in hex, e.g. 6/29/00; key 1..15 */
static int fault_parse_sense(const char *s, struct fault_spec *sp)
{
	unsigned v[3];
	int n = 0;

	for (int i = 0; i < 3; i++) {
		char *end;
		unsigned long x;

		if (!isxdigit((unsigned char)*s))
			return -EINVAL;
		errno = 0;
		x = strtoul(s, &end, 16);
		if (errno || x > 0xff || end - s > 2)
			return -EINVAL;
		v[n++] = (unsigned)x;
		s = end;
		if (i < 2 && *s++ != '/')
			return -EINVAL;
	}
	if (*s || v[0] == 0 || v[0] > 0x0f)
		return -EINVAL;
	sp->has_sense = true;
	sp->sense_key = (uint8_t)v[0];
	sp->sense_asc = (uint8_t)v[1];
	sp->sense_ascq = (uint8_t)v[2];
	return 0;
}

static int fault_parse_range(char *s, uint64_t *start, uint64_t *end)
{
	char *dash = strchr(s, '-');

	if (dash)
		*dash = '\0';
	if (fault_parse_u64(s, start) < 0)
		return -EINVAL;
	if (!dash) {
		*end = *start;
		return 0;
	}
	if (fault_parse_u64(dash + 1, end) < 0 || *end < *start)
		return -EINVAL;
	return 0;
}

/* Parse text into *spec.  0 or -EINVAL; nothing is changed on error. */
static int fault_spec_parse(const char *text, struct fault_spec *out)
{
	struct fault_spec s = {
		.enabled = true, .err = EIO, .ops = FAULT_OP_ALL,
		.probability = 1.0,
	};
	char buf[FAULT_SPEC_MAX];
	char *save = NULL;
	bool have_err = false, have_latency = false;
	uint64_t n;

	if (!text)
		text = "";
	while (isspace((unsigned char)*text))
		text++;
	if (!*text || strcasecmp(text, "off") == 0 ||
	    strcasecmp(text, "none") == 0) {
		memset(out, 0, sizeof(*out));
		return 0;
	}
	if (strlen(text) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, text);

	for (char *item = strtok_r(buf, FAULT_SEPARATORS, &save); item;
	     item = strtok_r(NULL, FAULT_SEPARATORS, &save)) {
		char *val = strchr(item, '=');
		int err = 0;

		if (!val) {
			/* a bare error name */
			err = fault_parse_errno(item, &s.err);
			if (err || s.err == 0 || have_err)
				return -EINVAL;
			have_err = true;
			continue;
		}
		*val++ = '\0';
		if (strcasecmp(item, "errno") == 0) {
			if (have_err)
				return -EINVAL;
			err = fault_parse_errno(val, &s.err);
			have_err = true;
		} else if (strcasecmp(item, "ops") == 0) {
			err = fault_parse_ops(val, &s.ops);
		} else if (strcasecmp(item, "lba") == 0) {
			err = fault_parse_range(val, &s.lba_start, &s.lba_end);
			s.has_lba = true;
		} else if (strcasecmp(item, "skip") == 0) {
			err = fault_parse_u64(val, &s.skip);
		} else if (strcasecmp(item, "count") == 0) {
			err = fault_parse_u64(val, &s.count);
		} else if (strcasecmp(item, "probability") == 0) {
			char *end;

			errno = 0;
			s.probability = strtod(val, &end);
			if (errno || end == val || *end ||
			    !(s.probability >= 0.0 && s.probability <= 1.0))
				err = -EINVAL;
		} else if (strcasecmp(item, "latency") == 0) {
			err = fault_parse_u64(val, &n);
			if (!err && n > UINT32_MAX)
				err = -EINVAL;
			s.latency_ms = (uint32_t)n;
			have_latency = true;
		} else if (strcasecmp(item, "duration") == 0) {
			err = fault_parse_u64(val, &s.duration_ms);
		} else if (strcasecmp(item, "sense") == 0) {
			err = fault_parse_sense(val, &s);
		} else {
			err = -EINVAL;
		}
		if (err)
			return -EINVAL;
	}
	/* "latency=200" alone slows I/O down without failing it. */
	if (have_latency && !have_err)
		s.err = 0;
	if (s.err == 0 && s.latency_ms == 0)
		return -EINVAL;		/* would do nothing: say so */
	if (s.has_sense && s.err == 0)
		return -EINVAL;		/* a sense comes with a failure */
	*out = s;
	return 0;
}

/* Print spec in the syntax fault_spec_parse() reads (round trip). */
static int fault_spec_format(const struct fault_spec *s, char *buf,
			     unsigned len)
{
	unsigned pos = 0;

#define FAULT_PUT(...)                                                        \
	do {                                                                  \
		int n_ = snprintf(buf + pos, pos < len ? len - pos : 0,       \
				  __VA_ARGS__);                               \
		if (n_ > 0)                                                   \
			pos += (unsigned)n_;                                  \
	} while (0)

	if (len)
		buf[0] = '\0';
	if (!s->enabled) {
		FAULT_PUT("off");
		return (int)pos;
	}
	if (s->err == 0) {
		FAULT_PUT("errno=none");
	} else {
		const char *name = strerrorname_np(s->err);

		if (name)
			FAULT_PUT("errno=%s", name);
		else
			FAULT_PUT("errno=%d", s->err);
	}
	if (s->ops != FAULT_OP_ALL) {
		static const char *const names[] = {
			[BE_OP_READ] = "read", [BE_OP_WRITE] = "write",
			[BE_OP_FLUSH] = "flush", [BE_OP_UNMAP] = "unmap",
			[BE_OP_WRITE_ZEROES] = "zeroes",
		};
		const char *sep = FAULT_SEP "ops=";

		for (unsigned i = 0; i < ARRAY_SIZE(names); i++) {
			if (s->ops & (1u << i)) {
				FAULT_PUT("%s%s", sep, names[i]);
				sep = "|";
			}
		}
		if (s->ops & FAULT_OP_STATUS)
			FAULT_PUT("%sstatus", sep);
	}
	if (s->has_lba)
		FAULT_PUT(FAULT_SEP "lba=%llu-%llu", (unsigned long long)s->lba_start,
			  (unsigned long long)s->lba_end);
	if (s->skip)
		FAULT_PUT(FAULT_SEP "skip=%llu", (unsigned long long)s->skip);
	if (s->count)
		FAULT_PUT(FAULT_SEP "count=%llu", (unsigned long long)s->count);
	if (s->probability < 1.0)
		FAULT_PUT(FAULT_SEP "probability=%g", s->probability);
	if (s->latency_ms)
		FAULT_PUT(FAULT_SEP "latency=%u", s->latency_ms);
	if (s->duration_ms)
		FAULT_PUT(FAULT_SEP "duration=%llu", (unsigned long long)s->duration_ms);
	if (s->has_sense)
		FAULT_PUT(FAULT_SEP "sense=%x/%02x/%02x", s->sense_key,
			  s->sense_asc, s->sense_ascq);
#undef FAULT_PUT
	return (int)pos;
}

/* ---- decision ---- */

/* Per-thread xorshift64* generator: probability draws must not share
 * state (or a lock) between reactors. */
static double fault_random(void)
{
	static __thread uint64_t state;

	if (!state)
		state = clock_ns() ^ ((uint64_t)(uintptr_t)&state << 16) ^
			0x9e3779b97f4a7c15ULL;
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return (double)((state * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
}

/* The ops= bit of a request (submit). */
static unsigned fault_op_bit(const struct be_io *io)
{
	/* a COMPARE AND WRITE the store does itself is a write here */
	return io->op == BE_OP_COMPARE_AND_WRITE ? FAULT_OP_WRITE
						 : 1u << io->op;
}

static bool fault_matches(const struct fault_state *f, const struct be_io *io,
			  unsigned op)
{
	const struct fault_spec *s = &f->spec;
	uint64_t lo, hi;

	if (!(s->ops & op))
		return false;
	if (!s->has_lba || op == FAULT_OP_FLUSH)
		return true;
	lo = s->lba_start * f->block_size;
	hi = (s->lba_end + 1) * f->block_size;	/* exclusive */
	return io->offset < hi && io->offset + io->length > lo;
}

/* Decide what to do with io: *err_out gets a negative errno or 0 and
 * *latency_out a delay; both 0 = pass through untouched. */
/* The injected sense for io (spec s matched it). */
static void fault_sense(const struct fault_state *f,
			const struct fault_spec *s, struct be_io *io,
			unsigned op)
{
	uint64_t first = io->offset / f->block_size;

	memset(&io->sense, 0, sizeof(io->sense));
	io->sense.key = s->sense_key;
	io->sense.asc = s->sense_asc;
	io->sense.ascq = s->sense_ascq;
	if (op == FAULT_OP_FLUSH)
		return;
	/* the failing block: the first one of the request in lba= */
	io->sense.info_valid = true;
	io->sense.info = s->has_lba ? MAX(first, s->lba_start) : first;
}

static void fault_decide(struct fault_state *f, struct be_io *io,
			 unsigned op, uint64_t now_ms, int *err_out,
			 uint32_t *latency_out)
{
	const struct fault_spec *s = &f->spec;

	*err_out = 0;
	*latency_out = 0;
	pthread_mutex_lock(&f->lock);
	if (!s->enabled)
		goto out;
	if (s->duration_ms && now_ms >= f->set_ms + s->duration_ms) {
		/* The outage is over: back to the idle fast path. */
		memset(&f->spec, 0, sizeof(f->spec));
		atomic_store_explicit(&f->active, false, memory_order_release);
		goto out;
	}
	if (!fault_matches(f, io, op))
		goto out;
	if (f->seen++ < s->skip)
		goto out;
	if (s->count && f->injected >= s->count)
		goto out;
	if (s->probability < 1.0 &&
	    (s->probability <= 0.0 || fault_random() >= s->probability))
		goto out;
	f->injected++;
	f->total_injected++;
	*err_out = -s->err;
	*latency_out = s->latency_ms;
	if (s->has_sense && s->err)
		fault_sense(f, s, io, op);
	/* Spent: the spec stays for describe(), I/O goes back to the
	 * lock-free path. */
	if (s->count && f->injected >= s->count)
		atomic_store_explicit(&f->active, false, memory_order_release);
out:
	pthread_mutex_unlock(&f->lock);
}

/* ---- backend ops ---- */

static int be_fault_set_spec(struct fault_state *f, const char *text)
{
	struct fault_spec s;

	if (fault_spec_parse(text, &s) < 0)
		return -EINVAL;
	pthread_mutex_lock(&f->lock);
	f->spec = s;
	f->set_ms = clock_ms();
	f->seen = 0;
	f->injected = 0;
	atomic_store_explicit(&f->active, s.enabled, memory_order_release);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static int be_fault_open(struct backend *be, const struct backend_params *p,
			 const char **errmsg)
{
	struct fault_state *f;

	if (!p->inner) {
		*errmsg = "the fault backend needs an inner backend to wrap";
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		*errmsg = "out of memory";
		return -ENOMEM;
	}
	pthread_mutex_init(&f->lock, NULL);
	f->block_size = p->block_size ? p->block_size : FAULT_DEFAULT_BLOCK_SIZE;
	if (be_fault_set_spec(f, p->opts) < 0) {
		pthread_mutex_destroy(&f->lock);
		free(f);
		*errmsg = "bad fault spec (see README: fault=errno,ops=,lba=,count=,...)";
		return -EINVAL;
	}
	be->inner = p->inner;
	be->size = p->inner->size;
	be->direct = p->inner->direct;
	be->thin = p->inner->thin;
	be->readonly = p->inner->readonly;
	be->priv = f;
	return 0;
}

static void be_fault_close(struct backend *be)
{
	struct fault_state *f = be->priv;

	if (!f)
		return;
	pthread_mutex_destroy(&f->lock);
	free(f);
	be->priv = NULL;
}

static void be_fault_delay_fire(struct ev_timer *t)
{
	struct fault_delay *d = t->arg;
	struct backend *be = d->be;
	struct be_io *io = d->io;
	struct reactor *r = d->r;
	int err = d->err;

	free(d);
	if (err)
		io->done(io, err);	/* on the reactor, not inside submit */
	else
		backend_submit(backend_inner(be), io, r);
}

static void be_fault_submit(struct backend *be, struct be_io *io,
			    struct reactor *r)
{
	struct fault_state *f = be->priv;
	struct fault_delay *d;
	uint32_t latency;
	int err;

	/* a sense this filter gave an earlier attempt of io is not this
	 * attempt's (the hang engine resubmits the same io) */
	io->sense.key = 0;
	/* Idle path: one atomic load, then the inner backend owns io
	 * (including be_scratch) and completes it directly to the caller. */
	if (!atomic_load_explicit(&f->active, memory_order_acquire)) {
		backend_submit(backend_inner(be), io, r);
		return;
	}
	fault_decide(f, io, fault_op_bit(io), reactor_now_ms(r), &err,
		     &latency);
	if (latency) {
		d = malloc(sizeof(*d));
		if (d) {
			d->be = be;
			d->io = io;
			d->r = r;
			d->err = err;
			memset(&d->timer, 0, sizeof(d->timer));
			reactor_timer_add(r, &d->timer, latency,
					  be_fault_delay_fire, d);
			return;
		}
		/* No memory for the delay: inject without it. */
	}
	if (err)
		backend_complete_later(r, io, err);
	else
		backend_submit(backend_inner(be), io, r);
}

static int be_fault_set_param(struct backend *be, const char *key,
			      const char *val)
{
	if (strcmp(key, "fault") == 0)
		return be_fault_set_spec(be->priv, val);
	struct backend *inner = backend_inner(be);

	if (inner && inner->ops->set_param)
		return inner->ops->set_param(inner, key, val);
	return -ENOENT;
}

static int be_fault_describe(struct backend *be, char *buf, unsigned len)
{
	struct fault_state *f = be->priv;
	struct backend *inner = backend_inner(be);
	char spec[FAULT_SPEC_MAX];
	uint64_t injected, total;
	int n;

	pthread_mutex_lock(&f->lock);
	fault_spec_format(&f->spec, spec, sizeof(spec));
	injected = f->injected;
	total = f->total_injected;
	pthread_mutex_unlock(&f->lock);

	n = snprintf(buf, len, "fault=%s injected=%llu total=%llu", spec,
		     (unsigned long long)injected, (unsigned long long)total);
	if (n >= 0 && (unsigned)n + 3 < len && inner &&
	    inner->ops->describe) {
		int m;

		n += snprintf(buf + n, len - (unsigned)n, "; ");
		m = inner->ops->describe(inner, buf + n,
					     len - (unsigned)n);
		if (m > 0)
			n += m;
	}
	return n;
}

static int be_fault_block_status(struct backend *be, uint64_t offset,
				 uint64_t len, uint64_t *extent)
{
	struct backend *inner = backend_inner(be);

	if (!inner->ops->block_status)
		return -EOPNOTSUPP;
	return inner->ops->block_status(inner, offset, len, extent);
}

/* GET LBA STATUS passes through (the store's answer, sync or async),
 * unless ops= names status: then the error (and sense=) is the answer,
 * at once (latency= does not apply to it). */
static int be_fault_block_status_async(struct backend *be, struct be_io *io,
				  struct reactor *r)
{
	struct fault_state *f = be->priv;
	uint32_t latency;
	int err;

	io->sense.key = 0;
	if (atomic_load_explicit(&f->active, memory_order_acquire)) {
		fault_decide(f, io, FAULT_OP_STATUS, reactor_now_ms(r), &err,
			     &latency);
		if (err)
			return err;
	}
	return backend_block_status(backend_inner(be), io, r);
}

const struct backend_ops be_fault_ops = {
	.name = "fault",
	.filter = true,
	.open = be_fault_open,
	.close = be_fault_close,
	.submit = be_fault_submit,
	.set_param = be_fault_set_param,
	.describe = be_fault_describe,
	.block_status = be_fault_block_status,
	.block_status_async = be_fault_block_status_async,
};
