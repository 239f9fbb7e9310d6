/* ackwriter.c - a stream of writes that logs what the target acknowledged
 * as durable, for crash-consistency tests (tests/test_crash.py).
 *
 * Usage: ackwriter [-m fua|sync|plain] [-B BATCH] [-r REGION] [-b BLOCKSIZE]
 *                  [-n COUNT] [-i IQN] [-s SEED] URL
 *
 * Writes one block at a time, each filled with 32-byte records
 * { "HFACKREC", seq, lba, ~seq } (little-endian), seq = 1, 2, 3, ... and
 * lba = a pseudo-random block of the first REGION blocks (default 1024),
 * so later writes overwrite earlier ones (the same sequence of blocks in
 * every run unless -s SEED picks another).
 *   -m fua   WRITE(16) with FUA; each GOOD status is an acknowledgement.
 *   -m sync  BATCH (default 8) plain WRITE(16)s, then SYNCHRONIZE CACHE(10);
 *            its GOOD status acknowledges the whole batch.
 *   -m plain WRITE(16) without FUA, each GOOD status logged as "ack": durable
 *            only with the LUN's write cache off (WCE=0); with it on, the
 *            power-loss test expects some of these to be lost.
 * Runs COUNT writes (default: until the connection fails).  Output, flushed
 * per line: "ack SEQ LBA" for every write acknowledged as durable,
 * "sent SEQ LBA" before each write goes out, and a final "end REASON".
 * Automatic reconnect is off: a killed target ends the stream. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define ACK_MAGIC "HFACKREC"
#define ACK_MAX_BATCH 256

static void fill(uint8_t *buf, int bs, uint64_t seq, uint64_t lba)
{
	for (int off = 0; off + 32 <= bs; off += 32) {
		uint64_t inv = ~seq;

		memcpy(buf + off, ACK_MAGIC, 8);
		memcpy(buf + off + 8, &seq, 8);		/* little-endian host */
		memcpy(buf + off + 16, &lba, 8);
		memcpy(buf + off + 24, &inv, 8);
	}
}

static int good(struct iscsi_context *iscsi, struct scsi_task *t,
		const char *what)
{
	if (t && t->status == SCSI_STATUS_GOOD) {
		scsi_free_scsi_task(t);
		return 1;
	}
	if (t)
		printf("end %s status %d key %d asc 0x%04x\n", what, t->status,
		       t->sense.key, t->sense.ascq);
	else
		printf("end %s: %s\n", what, iscsi_get_error(iscsi));
	fflush(stdout);
	if (t)
		scsi_free_scsi_task(t);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = "fua", *iqn = "iqn.2026-12.org.example:ackwriter";
	uint64_t region = 1024, count = 0, rnd = 0x9e3779b97f4a7c15ull;
	uint64_t batch_seq[ACK_MAX_BATCH], batch_lba[ACK_MAX_BATCH];
	int bs = 512, batch = 8, c, n = 0;
	uint8_t *buf;

	while ((c = getopt(argc, argv, "m:B:r:b:n:i:s:")) != -1) {
		switch (c) {
		case 'm': mode = optarg; break;
		case 'B': batch = atoi(optarg); break;
		case 'r': region = strtoull(optarg, NULL, 0); break;
		case 'b': bs = atoi(optarg); break;
		case 'n': count = strtoull(optarg, NULL, 0); break;
		case 'i': iqn = optarg; break;
		case 's': rnd ^= strtoull(optarg, NULL, 0); break;
		default: return 2;
		}
	}
	if (argc - optind != 1 || region == 0 || bs < 32 || batch < 1 ||
	    rnd == 0 ||
	    batch > ACK_MAX_BATCH ||
	    (strcmp(mode, "fua") != 0 && strcmp(mode, "sync") != 0 &&
	     strcmp(mode, "plain") != 0)) {
		fprintf(stderr, "usage: ackwriter [-m fua|sync|plain] [-B BATCH] "
				"[-r REGION] [-b BLOCKSIZE] [-n COUNT] [-i IQN] "
				"[-s SEED] URL\n");
		return 2;
	}
	struct iscsi_context *iscsi = iscsi_create_context(iqn);
	struct iscsi_url *url = iscsi_parse_full_url(iscsi, argv[optind]);
	if (!url) {
		fprintf(stderr, "bad URL: %s\n", iscsi_get_error(iscsi));
		return 1;
	}
	iscsi_set_targetname(iscsi, url->target);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE);
	iscsi_set_noautoreconnect(iscsi, 1);
	if (iscsi_connect_sync(iscsi, url->portal) ||
	    iscsi_login_sync(iscsi)) {
		fprintf(stderr, "login failed: %s\n", iscsi_get_error(iscsi));
		return 1;
	}
	/* the power-on unit attention */
	for (int i = 0; i < 4; i++) {
		struct scsi_task *t = iscsi_testunitready_sync(iscsi, url->lun);

		if (t && t->status == SCSI_STATUS_GOOD) {
			scsi_free_scsi_task(t);
			break;
		}
		if (t)
			scsi_free_scsi_task(t);
	}
	printf("ready\n");
	fflush(stdout);
	buf = malloc((size_t)bs);
	for (uint64_t seq = 1; count == 0 || seq <= count; seq++) {
		int fua = strcmp(mode, "fua") == 0;
		int plain = strcmp(mode, "plain") == 0;
		uint64_t lba;

		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		lba = rnd % region;
		fill(buf, bs, seq, lba);
		printf("sent %llu %llu\n", (unsigned long long)seq,
		       (unsigned long long)lba);
		fflush(stdout);
		if (!good(iscsi, iscsi_write16_sync(iscsi, url->lun, lba, buf,
						    (uint32_t)bs, bs, 0, 0,
						    fua, 0, 0), "write"))
			return 1;
		if (fua || plain) {
			printf("ack %llu %llu\n", (unsigned long long)seq,
			       (unsigned long long)lba);
			fflush(stdout);
			continue;
		}
		batch_seq[n] = seq;
		batch_lba[n++] = lba;
		if (n < batch)
			continue;
		if (!good(iscsi, iscsi_synchronizecache10_sync(iscsi, url->lun,
							       0, 0, 0, 0),
			  "sync"))
			return 1;
		for (int i = 0; i < n; i++)
			printf("ack %llu %llu\n",
			       (unsigned long long)batch_seq[i],
			       (unsigned long long)batch_lba[i]);
		fflush(stdout);
		n = 0;
	}
	printf("end done\n");
	iscsi_logout_sync(iscsi);
	iscsi_destroy_context(iscsi);
	free(buf);
	return 0;
}
