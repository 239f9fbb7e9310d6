/* iscsiqd1.c - the round trip of one 4 KiB iSCSI command at a time, from
 * the leanest initiator at hand, to set beside tcpecho's floor.
 *
 * qemu-img bench's QD1 latency carries QEMU's own block layer, coroutines
 * and event loop on top of the target's cost; this program logs in with
 * libiscsi and issues READ(10) (or WRITE(10) with -w) of SIZE bytes, one
 * in flight, COUNT times, with libiscsi's synchronous calls (a poll() and
 * the socket's send/recv per command, nothing else).  Blocks walk the LUN
 * in order and wrap.  Prints one line:
 *   iscsiqd1 op=read size=4096 count=20000 mean_us=... p50_us=...
 *            p99_us=... cpu_us_per_io=...
 * cpu_us_per_io is this process's user+system CPU per command (the
 * initiator's side only; the target's is measured from outside).
 *
 * usage: iscsiqd1 URL [-w] [-s SIZE] [-n COUNT]
 * Exit 0 when every command answered GOOD, 1 otherwise. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define INITIATOR "iqn.2026-11.org.example:iscsiqd1"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* One command; true if it came back GOOD.  A first unit attention
 * (power on, a reported LUN change) is answered by sending it again. */
static int one(struct iscsi_context *iscsi, int lun, int write, uint32_t lba,
	       unsigned char *buf, uint32_t len, uint32_t bs)
{
	for (int tries = 0; tries < 3; tries++) {
		struct scsi_task *t = write ?
			iscsi_write10_sync(iscsi, lun, lba, buf, len, bs,
					   0, 0, 0, 0, 0) :
			iscsi_read10_sync(iscsi, lun, lba, len, bs,
					  0, 0, 0, 0, 0);
		int st = t ? t->status : -1;
		int ua = t && st == SCSI_STATUS_CHECK_CONDITION &&
			 t->sense.key == SCSI_SENSE_UNIT_ATTENTION;

		if (t)
			scsi_free_scsi_task(t);
		if (st == SCSI_STATUS_GOOD)
			return 1;
		if (!ua)
			return 0;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int write = 0, count = 20000, c;
	uint32_t size = 4096;

	while ((c = getopt(argc, argv, "ws:n:")) != -1) {
		switch (c) {
		case 'w':
			write = 1;
			break;
		case 's':
			size = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'n':
			count = atoi(optarg);
			break;
		default:
			return 2;
		}
	}
	if (argc - optind != 1 || count < 1 || size == 0) {
		fprintf(stderr, "usage: iscsiqd1 URL [-w] [-s SIZE] "
				"[-n COUNT]\n");
		return 2;
	}

	struct iscsi_context *iscsi = iscsi_create_context(INITIATOR);
	struct iscsi_url *url = iscsi ?
		iscsi_parse_full_url(iscsi, argv[optind]) : NULL;
	if (!url) {
		fprintf(stderr, "iscsiqd1: bad URL %s\n", argv[optind]);
		return 1;
	}
	iscsi_set_targetname(iscsi, url->target);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE);
	if (iscsi_full_connect_sync(iscsi, url->portal, url->lun) != 0) {
		fprintf(stderr, "iscsiqd1: login failed: %s\n",
			iscsi_get_error(iscsi));
		return 1;
	}

	struct scsi_task *cap = iscsi_readcapacity10_sync(iscsi, url->lun, 0, 0);
	struct scsi_readcapacity10 *rc10 = NULL;
	if (cap && cap->status != SCSI_STATUS_GOOD) {	/* unit attention */
		scsi_free_scsi_task(cap);
		cap = iscsi_readcapacity10_sync(iscsi, url->lun, 0, 0);
	}
	if (cap && cap->status == SCSI_STATUS_GOOD)
		rc10 = scsi_datain_unmarshall(cap);
	if (!rc10 || rc10->block_size == 0 || size % rc10->block_size) {
		fprintf(stderr, "iscsiqd1: READ CAPACITY failed or size %u "
			"not a multiple of the block size\n", size);
		return 1;
	}
	uint32_t bs = rc10->block_size;
	uint64_t blocks = (uint64_t)rc10->lba + 1, per = size / bs;
	scsi_free_scsi_task(cap);
	if (blocks < per) {
		fprintf(stderr, "iscsiqd1: LUN smaller than one command\n");
		return 1;
	}

	unsigned char *buf = calloc(1, size);
	uint64_t *lat = calloc((size_t)count, sizeof(*lat));
	if (!buf || !lat)
		return 1;
	/* warm-up (and the unit attention out of the way) */
	for (int i = 0; i < 100; i++)
		if (!one(iscsi, url->lun, write, 0, buf, size, bs)) {
			fprintf(stderr, "iscsiqd1: command failed: %s\n",
				iscsi_get_error(iscsi));
			return 1;
		}

	double c0 = cpu_us();
	uint64_t t0 = now_ns(), lba = 0;
	for (int i = 0; i < count; i++) {
		uint64_t s = now_ns();

		if (lba + per > blocks)
			lba = 0;
		if (!one(iscsi, url->lun, write, (uint32_t)lba, buf, size,
			 bs)) {
			fprintf(stderr, "iscsiqd1: command %d failed: %s\n", i,
				iscsi_get_error(iscsi));
			return 1;
		}
		lba += per;
		lat[i] = now_ns() - s;
	}
	uint64_t total = now_ns() - t0;
	double cpu = cpu_us() - c0;

	qsort(lat, (size_t)count, sizeof(*lat), cmp_u64);
	printf("iscsiqd1 op=%s size=%u count=%d mean_us=%.2f p50_us=%.2f "
	       "p99_us=%.2f cpu_us_per_io=%.2f\n", write ? "write" : "read",
	       size, count, (double)total / count / 1000.0,
	       (double)lat[count / 2] / 1000.0,
	       (double)lat[(size_t)count * 99 / 100] / 1000.0, cpu / count);
	iscsi_logout_sync(iscsi);
	iscsi_destroy_url(url);
	iscsi_destroy_context(iscsi);
	free(buf);
	free(lat);
	return 0;
}
