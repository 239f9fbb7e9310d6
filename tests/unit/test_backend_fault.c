/* test_backend_fault.c - the fault-injection backend and LUN creation,
 * driven through a real reactor: spec parsing (valid, invalid, canonical
 * round trip), injection by op, LBA range, skip, count, probability,
 * latency and duration, spec changes from another thread while I/O runs,
 * and scsi_lun_create() / scsi_lun_put().
 *
 * fault.c is included so its statics are reachable. */
#include "../../backends/fault.c"
#include "backend_harness.h"
#include "scsi.h"
#include "stack.h"


/* ---- fault spec parsing ---- */

static void test_fault_parse(void)
{
	static const char *const good[] = {
		"off", "", "none", "  off", "eio", "EIO", "enospc",
		"errno=ETIMEDOUT", "errno=5", "errno=none,latency=10",
		"latency=250", "eio,latency=10",
		"errno=EIO,ops=w|flush,lba=10-20,count=3",
		"ops=r", "ops=rw", "ops=read+write", "ops=all", "ops=u|z|f",
		"lba=7", "lba=0-0", "skip=2,count=1", "count=0",
		"probability=0", "probability=1", "probability=0.25",
		"duration=20000", "EIO,OPS=W", "eio,,", "eio:ops=w:lba=0-99",
		"errno=EREMOTEIO", "ehostunreach", "errno=ENOLINK:count=1",
		"sense=6/29/00", "eio:sense=5/24/00:lba=3", "eio:sense=F/ff/FF",
		"ebusy:sense=b/47/3:ops=w",
	};
	static const char *const bad[] = {
		"bogus", "errno=EFOO", "errno=0", "errno=99999", "ops=",
		"ops=x", "ops=r|x", "lba=20-10", "lba=abc", "lba=-5", "lba=1-",
		"count=-1", "count=1x", "probability=1.5", "probability=-0.1",
		"probability=abc", "probability=", "errno=none", "eio,enospc",
		"eio,errno=EIO", "latency=99999999999", "latency=x", "key=value",
		"=", "none,eio", "duration=", "eio:enospc", "errno=ENOTANERRNO",
		"sense=", "sense=0/29/00", "sense=10/29/00", "sense=6/29",
		"sense=6/129/00", "sense=6/29/00/1", "sense=6/29/00x",
		"sense=6//00", "sense=/29/00", "sense=g/29/00", "sense=6/-1/00",
		"latency=5:sense=6/29/00", "errno=none:latency=5:sense=6/29/00",
	};
	struct fault_spec s, s2;
	char buf[FAULT_SPEC_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		int rc = fault_spec_parse(good[i], &s);

		CHECK(rc == 0, "valid spec \"%s\" refused", good[i]);
		if (rc)
			continue;
		/* round trip through the canonical form */
		fault_spec_format(&s, buf, sizeof(buf));
		memset(&s2, 0xff, sizeof(s2));
		rc = fault_spec_parse(buf, &s2);
		CHECK((rc == 0 && s.enabled == s2.enabled && s.err == s2.err &&
		       s.ops == s2.ops && s.has_lba == s2.has_lba &&
		       s.lba_start == s2.lba_start && s.lba_end == s2.lba_end &&
		       s.skip == s2.skip && s.count == s2.count &&
		       s.probability == s2.probability &&
		       s.latency_ms == s2.latency_ms &&
		       s.duration_ms == s2.duration_ms &&
		       s.has_sense == s2.has_sense &&
		       (!s.has_sense || (s.sense_key == s2.sense_key &&
					 s.sense_asc == s2.sense_asc &&
					 s.sense_ascq == s2.sense_ascq))),
		      "round trip of \"%s\" via \"%s\"", good[i], buf);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		CHECK(fault_spec_parse(bad[i], &s) == -EINVAL,
		      "invalid spec \"%s\" accepted", bad[i]);

	CHECK(fault_spec_parse("off", &s) == 0 && !s.enabled, "off disables");
	CHECK(fault_spec_parse("eio", &s) == 0 && s.enabled && s.err == EIO &&
	      s.ops == FAULT_OP_ALL && s.probability == 1.0 && !s.has_lba,
	      "eio defaults");
	CHECK(fault_spec_parse("latency=250", &s) == 0 && s.err == 0 &&
	      s.latency_ms == 250, "latency alone only delays");
	CHECK(fault_spec_parse("enospc,ops=w|flush,lba=10-20,count=3", &s) == 0 &&
	      s.err == ENOSPC && s.ops == (FAULT_OP_WRITE | FAULT_OP_FLUSH) &&
	      s.has_lba && s.lba_start == 10 && s.lba_end == 20 && s.count == 3,
	      "full spec fields");
	fault_spec_parse("errno=EIO,ops=w|flush,lba=10-20,count=3", &s);
	fault_spec_format(&s, buf, sizeof(buf));
	CHECK(strcmp(buf, "errno=EIO:ops=write|flush:lba=10-20:count=3") == 0,
	      "canonical form: %s", buf);
}

/* ---- fault injection ---- */

static struct backend *open_fault(struct backend *inner, const char *spec,
				  uint32_t bs)
{
	struct backend_params p = { .block_size = bs, .opts = spec,
				    .inner = inner };
	const char *msg;
	int err;
	struct backend *be = open_be(&be_fault_ops, &p, &err, &msg);

	CHECK(be != NULL, "open fault \"%s\": %d", spec ? spec : "", err);
	return be;
}

static uint64_t fault_injected(struct backend *be)
{
	struct fault_state *f = be->priv;
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->injected;
	pthread_mutex_unlock(&f->lock);
	return n;
}

static void test_fault_inject(void)
{
	struct backend_params np = { .block_size = 512, .size = 64 * MIB };
	const char *msg;
	int err;
	struct backend *null = open_be(&be_null_ops, &np, &err, &msg);
	struct backend *be = open_fault(null, NULL, 512);
	char *buf = abuf(64 * KIB, 0);
	char desc[512];
	int fails;

	if (!null || !be)
		return;
	CHECK(be->size == null->size && be->inner == null && be->direct,
	      "fault mirrors its inner backend");
	CHECK(!atomic_load(&((struct fault_state *)be->priv)->active),
	      "idle by default");
	CHECK(run_io(be, BE_OP_WRITE, 0, 4096, buf) == 0, "idle pass-through");

	/* ops + lba range + count */
	CHECK(be->ops->set_param(be, "fault", "eio:ops=w:lba=8-15:count=2") == 0,
	      "set spec");
	CHECK(run_io(be, BE_OP_WRITE, 0, 4096, buf) == 0, "write before range");
	CHECK(run_io(be, BE_OP_WRITE, 16 * 512, 4096, buf) == 0,
	      "write after range");
	CHECK(run_io(be, BE_OP_READ, 8 * 512, 512, buf) == 0, "read not matched");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "flush not matched");
	CHECK(run_io(be, BE_OP_WRITE, 4 * 512, 8 * 512, buf) == -EIO,
	      "write overlapping range start fails");
	CHECK(run_io(be, BE_OP_WRITE, 15 * 512, 512, buf) == -EIO,
	      "write on range end fails");
	CHECK(run_io(be, BE_OP_WRITE, 10 * 512, 512, buf) == 0,
	      "count exhausted: passes");
	CHECK(fault_injected(be) == 2, "two injected");
	CHECK(!atomic_load(&((struct fault_state *)be->priv)->active),
	      "spent spec back on the idle path");
	CHECK(run_io(be, BE_OP_WRITE, 8 * 512, 512, buf) == 0,
	      "spent spec passes");
	be->ops->describe(be, desc, sizeof(desc));
	CHECK(strstr(desc, "fault=errno=EIO:ops=write:lba=8-15:count=2") &&
	      strstr(desc, "injected=2") && strstr(desc, "null"),
	      "describe: %s", desc);

	/* sense= : the SCSI sense comes with the errno; INFORMATION is the
	 * request's first block inside lba=, none for FLUSH; an attempt
	 * that passes has none */
	CHECK(be->ops->set_param(be, "fault", "eio:sense=3/11/00:lba=20-29") == 0,
	      "set sense spec");
	CHECK(run_io(be, BE_OP_READ, 16 * 512, 8 * 512, buf) == -EIO &&
	      tio_last_sense.key == 3 && tio_last_sense.asc == 0x11 &&
	      tio_last_sense.ascq == 0 && tio_last_sense.info_valid &&
	      tio_last_sense.info == 20, "medium error at block 20");
	CHECK(run_io(be, BE_OP_WRITE, 25 * 512, 512, buf) == -EIO &&
	      tio_last_sense.info == 25, "inside the range: its first block");
	CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == 0 &&
	      tio_last_sense.key == 0, "no sense outside the range");
	CHECK(be->ops->set_param(be, "fault", "eio:sense=6/29/00:ops=f") == 0,
	      "set flush sense");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -EIO &&
	      tio_last_sense.key == 6 && !tio_last_sense.info_valid,
	      "flush: sense without INFORMATION");
	be->ops->describe(be, desc, sizeof(desc));
	CHECK(strstr(desc, ":sense=6/29/00"), "describe: %s", desc);
	CHECK(be->ops->set_param(be, "fault", "off") == 0, "off");

	/* lba in 4096-byte blocks */
	{
		struct backend *b4 = open_fault(null, "eio,lba=2", 4096);

		if (b4) {
			CHECK(run_io(b4, BE_OP_READ, 4096, 4096, buf) == 0,
			      "4k block 1 passes");
			CHECK(run_io(b4, BE_OP_READ, 8192, 4096, buf) == -EIO,
			      "4k block 2 fails");
			close_be(b4);
		}
	}

	/* errno choice, flush, skip */
	CHECK(be->ops->set_param(be, "fault", "enospc,ops=flush,skip=2") == 0,
	      "set flush spec");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "skip 1");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == 0, "skip 2");
	CHECK(run_io(be, BE_OP_FLUSH, 0, 0, NULL) == -ENOSPC, "third flush fails");
	CHECK(run_io(be, BE_OP_WRITE, 0, 512, buf) == 0, "write not matched");
	CHECK(!null->flush_failed, "an injected flush error does not latch");

	/* unmap / write zeroes */
	CHECK(be->ops->set_param(be, "fault", "etimedout,ops=u|z") == 0, "set u|z");
	CHECK(run_io(be, BE_OP_UNMAP, 0, 4096, NULL) == -ETIMEDOUT, "unmap fails");
	CHECK(run_io(be, BE_OP_WRITE_ZEROES, 0, 4096, NULL) == -ETIMEDOUT,
	      "write zeroes fails");
	CHECK(run_io(be, BE_OP_READ, 0, 4096, buf) == 0, "read passes");

	/* a bad spec leaves the current one in place */
	CHECK(be->ops->set_param(be, "fault", "ops=bogus") == -EINVAL,
	      "bad spec refused");
	CHECK(run_io(be, BE_OP_UNMAP, 0, 4096, NULL) == -ETIMEDOUT,
	      "old spec still active");
	CHECK(be->ops->set_param(be, "nosuchkey", "1") == -ENOENT,
	      "unknown key: -ENOENT");

	/* probability 0 and 1, and something in between */
	CHECK(be->ops->set_param(be, "fault", "eio,probability=0") == 0, "p=0");
	fails = 0;
	for (int i = 0; i < 200; i++)
		fails += run_io(be, BE_OP_READ, 0, 512, buf) != 0;
	CHECK(fails == 0, "probability 0 never fails (%d)", fails);
	CHECK(be->ops->set_param(be, "fault", "eio,probability=1") == 0, "p=1");
	fails = 0;
	for (int i = 0; i < 200; i++)
		fails += run_io(be, BE_OP_READ, 0, 512, buf) == -EIO;
	CHECK(fails == 200, "probability 1 always fails (%d)", fails);
	CHECK(be->ops->set_param(be, "fault", "eio,probability=0.5") == 0, "p=.5");
	fails = 0;
	for (int i = 0; i < 400; i++)
		fails += run_io(be, BE_OP_READ, 0, 512, buf) == -EIO;
	CHECK(fails > 120 && fails < 280, "probability 0.5: %d of 400", fails);

	/* latency only, latency + error */
	CHECK(be->ops->set_param(be, "fault", "latency=100,ops=r") == 0, "latency");
	{
		uint64_t t0 = clock_ms();

		CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == 0, "delayed read passes");
		CHECK(clock_ms() - t0 >= 95, "read delayed (%llu ms)",
		      (unsigned long long)(clock_ms() - t0));
		t0 = clock_ms();
		CHECK(run_io(be, BE_OP_WRITE, 0, 512, buf) == 0, "write not delayed");
		CHECK(clock_ms() - t0 < 95, "write fast");
	}
	CHECK(be->ops->set_param(be, "fault", "eio,latency=60") == 0, "eio+latency");
	{
		uint64_t t0 = clock_ms();

		CHECK(run_io(be, BE_OP_WRITE, 0, 512, buf) == -EIO,
		      "delayed failure");
		CHECK(clock_ms() - t0 >= 55, "failure delayed");
	}

	/* duration: a fixed-length outage */
	CHECK(be->ops->set_param(be, "fault", "eio,duration=150") == 0, "duration");
	CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == -EIO, "inside the outage");
	usleep(250 * 1000);
	CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == 0, "after the outage");
	CHECK(!atomic_load(&((struct fault_state *)be->priv)->active),
	      "expired spec back on the idle path");
	be->ops->describe(be, desc, sizeof(desc));
	CHECK(strstr(desc, "fault=off"), "describe after expiry: %s", desc);

	CHECK(be->ops->set_param(be, "fault", "off") == 0, "off");
	CHECK(run_io(be, BE_OP_READ, 0, 512, buf) == 0, "off passes");
	be->ops->describe(be, desc, sizeof(desc));
	CHECK(strstr(desc, "fault=off injected=0 total="), "describe off: %s", desc);

	close_be(be);
	close_be(null);
	free(buf);
}

/* Management thread flips the spec while the reactor submits. */
struct flip_arg {
	struct backend *be;
	atomic_bool stop;
};

static void *flipper(void *arg)
{
	struct flip_arg *a = arg;
	static const char *const specs[] = {
		"eio", "off", "enospc,ops=w", "off", "eio,probability=0.5",
	};

	for (unsigned i = 0; !atomic_load(&a->stop); i++) {
		a->be->ops->set_param(a->be, "fault", specs[i % ARRAY_SIZE(specs)]);
		usleep(100);
	}
	return NULL;
}

static void test_fault_concurrent(void)
{
	struct backend *be = open_file("conc.img", 4 * MIB, true);
	struct backend *fb = be ? open_fault(be, NULL, 512) : NULL;
	struct flip_arg a = { .be = fb };
	char *buf = abuf(4096, 3);
	pthread_t th;
	int ok = 0, bad = 0, other = 0;

	if (!fb)
		return;
	pthread_create(&th, NULL, flipper, &a);
	for (int i = 0; i < 1000; i++) {
		int rc = run_io(fb, i & 1 ? BE_OP_READ : BE_OP_WRITE,
				(uint64_t)(i % 64) * 4096, 4096, buf);

		if (rc == 0)
			ok++;
		else if (rc == -EIO || rc == -ENOSPC)
			bad++;
		else
			other++;
	}
	atomic_store(&a.stop, true);
	pthread_join(th, NULL);
	CHECK(other == 0 && ok + bad == 1000,
	      "concurrent spec changes: %d ok, %d injected, %d other", ok, bad,
	      other);
	close_be(fb);
	close_be(be);
	free(buf);
}

/* ---- LUN creation ---- */

static void test_lun(void)
{
	struct lun_settings s;
	struct scsi_lun *l = NULL;
	const char *msg = NULL;
	char *buf = abuf(4096, 9);
	int err;

	lun_settings_default(&s, 1);
	snprintf(s.backend, sizeof(s.backend), "null");
	s.size = 64 * MIB;
	s.block_size = 4096;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == 0 && l, "null LUN: %d %s", err, msg ? msg : "");
	if (l) {
		CHECK(l->nblocks == 64 * MIB / 4096, "nblocks");
		CHECK(be_stack_is_root(l->be) && l->be->inner &&
		      l->be->inner->ops == &be_fault_ops &&
		      l->be->inner->inner &&
		      l->be->inner->inner->ops == &be_null_ops,
		      "a block stack: fault on top of null");
		CHECK(atomic_load(&l->refcnt) == 1, "one reference");
		CHECK(l->be->ops->set_param(l->be, "fault", "eio,ops=r") == 0,
		      "fault settable on any LUN");
		CHECK(run_io(l->be, BE_OP_READ, 0, 4096, buf) == -EIO,
		      "LUN read fails on command");
		scsi_lun_get(l);
		scsi_lun_put(l);
		CHECK(atomic_load(&l->refcnt) == 1, "get/put balance");
		scsi_lun_put(l);
	}

	/* file LUN, created sparse, initial fault spec from backend_opts */
	lun_settings_default(&s, 2);
	tpath(s.path, sizeof(s.path), "lun2.img");
	s.size = 8 * MIB;
	snprintf(s.backend_opts, sizeof(s.backend_opts), "eio,ops=w");
	l = NULL;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == 0 && l, "file LUN: %d %s", err, msg ? msg : "");
	if (l) {
		CHECK(l->nblocks == 8 * MIB / 512, "file nblocks");
		CHECK(run_io(l->be, BE_OP_WRITE, 0, 4096, buf) == -EIO,
		      "initial spec active");
		CHECK(run_io(l->be, BE_OP_READ, 0, 4096, buf) == 0, "read ok");
		scsi_lun_put(l);
	}

	/* size not a multiple of the block size */
	lun_settings_default(&s, 3);
	snprintf(s.backend, sizeof(s.backend), "null");
	s.size = 4096 * 3;
	s.block_size = 8192;
	l = NULL;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == -EINVAL && !l && msg, "size %% block size refused: %s",
	      msg ? msg : "");

	/* retry on a buffered LUN is refused */
	lun_settings_default(&s, 4);
	tpath(s.path, sizeof(s.path), "lun4.img");
	s.size = 1 * MIB;
	s.direct = false;
	s.werror = ERR_POLICY_RETRY;
	l = NULL;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == -EINVAL && !l, "werror=retry on buffered refused: %s",
	      msg ? msg : "");

	/* bad fault spec, bad block size, unknown backend */
	lun_settings_default(&s, 5);
	snprintf(s.backend, sizeof(s.backend), "null");
	snprintf(s.backend_opts, sizeof(s.backend_opts), "fault=nonsense");
	CHECK(scsi_lun_create(&s, &l, &msg) == -EINVAL, "bad fault spec");
	snprintf(s.backend_opts, sizeof(s.backend_opts), "fault=eio");
	l = NULL;
	CHECK(scsi_lun_create(&s, &l, &msg) == 0 && l, "fault= prefix accepted");
	if (l)
		scsi_lun_put(l);
	s.block_size = 1000;
	CHECK(scsi_lun_create(&s, &l, &msg) == -EINVAL, "block size 1000");
	s.block_size = 512;
	snprintf(s.backend, sizeof(s.backend), "rbd");
	CHECK(scsi_lun_create(&s, &l, &msg) == -EINVAL, "unknown backend");
	free(buf);
}

/* A takeover runs scsi_lun_refresh() on the ALUA worker, a thread that
 * may not read a settings snapshot (an update may free it meanwhile):
 * with no snapshot at all it must still work, from what was fixed at
 * creation (lun->id, block_size, path).  A read of the snapshot would
 * dereference NULL here. */
static void test_refresh_reads_no_snapshot(void)
{
	struct lun_settings s, *set;
	struct scsi_lun *l = NULL;
	const char *msg = NULL;
	int err;

	lun_settings_default(&s, 3);
	tpath(s.path, sizeof(s.path), "lun3.img");
	s.size = 4 * MIB;
	s.block_size = 4096;
	err = scsi_lun_create(&s, &l, &msg);
	CHECK(err == 0 && l, "file LUN: %d %s", err, msg ? msg : "");
	if (!l)
		return;
	CHECK(l->id == 3 && l->block_size == 4096 &&
	      strcmp(l->path, s.path) == 0, "fixed values copied at creation");
	set = atomic_exchange(&l->set, NULL);
	msg = NULL;
	err = scsi_lun_refresh(l, 0, SCSI_REFRESH_SHARED, &msg);
	CHECK(err == 0, "a takeover's refresh without a snapshot: %d %s", err,
	      msg ? msg : "");
	CHECK(l->nblocks == 4 * MIB / 4096, "capacity re-read in 4096 blocks");
	atomic_store(&l->set, set);
	scsi_lun_put(l);
}

int main(void)
{
	if (harness_start() < 0)
		return 1;
	test_fault_parse();
	test_fault_inject();
	test_fault_concurrent();
	test_lun();
	test_refresh_reads_no_snapshot();
	return harness_finish();
}
