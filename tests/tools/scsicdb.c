/* scsicdb.c - send one raw CDB to a LUN and print what came back, as one
 * JSON line, for tests of the SCSI layer through a real initiator.
 *
 *   scsicdb URL CDB_HEX [-r ALLOC] [-w DATA_HEX] [-n COUNT]
 *
 * -r: Data-In of up to ALLOC bytes.  -w: Data-Out bytes (hex).  -n: send the
 * command COUNT times on the same session (the last answer is printed),
 * e.g. to see a unit attention go away.  Output:
 *   {"status":2,"sense_type":114,"key":5,"asc":36,"ascq":0,
 *    "sks_valid":1,"in_cdb":1,"field":2,"data":"00a1..."}
 * Exit 0 once a command got an answer, 1 on connection failure. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define INITIATOR "iqn.2026-11.org.example:scsicdb"

static int unhex(const char *s, unsigned char *out, int max)
{
	int n = 0;

	while (s[0] && s[1] && n < max) {
		unsigned v;
		if (sscanf(s, "%2x", &v) != 1)
			return -1;
		out[n++] = (unsigned char)v;
		s += 2;
	}
	return s[0] ? -1 : n;
}

int main(int argc, char **argv)
{
	unsigned char cdb[32], *wbuf = NULL;
	int alloc = 0, wlen = 0, count = 1, c;

	while ((c = getopt(argc, argv, "r:w:n:")) != -1) {
		switch (c) {
		case 'r':
			alloc = atoi(optarg);
			break;
		case 'w':
			wbuf = malloc(strlen(optarg) / 2 + 1);
			wlen = unhex(optarg, wbuf, (int)strlen(optarg) / 2);
			if (wlen < 0) {
				fprintf(stderr, "bad -w hex\n");
				return 2;
			}
			break;
		case 'n':
			count = atoi(optarg);
			break;
		default:
			return 2;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "usage: scsicdb URL CDB_HEX [-r ALLOC] "
				"[-w DATA_HEX] [-n COUNT]\n");
		return 2;
	}
	int cdb_len = unhex(argv[optind + 1], cdb, sizeof(cdb));
	if (cdb_len <= 0) {
		fprintf(stderr, "bad CDB hex\n");
		return 2;
	}

	struct iscsi_context *iscsi = iscsi_create_context(INITIATOR);
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

	struct scsi_task *task = NULL;
	for (int i = 0; i < count; i++) {
		if (task)
			scsi_free_scsi_task(task);
		task = calloc(1, sizeof(*task));
		memcpy(task->cdb, cdb, cdb_len);
		task->cdb_size = cdb_len;
		struct iscsi_data d = { .size = wlen, .data = wbuf };
		if (wbuf) {
			task->xfer_dir = SCSI_XFER_WRITE;
			task->expxferlen = wlen;
		} else if (alloc) {
			task->xfer_dir = SCSI_XFER_READ;
			task->expxferlen = alloc;
		} else {
			task->xfer_dir = SCSI_XFER_NONE;
		}
		if (!iscsi_scsi_command_sync(iscsi, url->lun, task,
					     wbuf ? &d : NULL)) {
			fprintf(stderr, "command failed: %s\n",
				iscsi_get_error(iscsi));
			return 1;
		}
	}

	printf("{\"status\":%d,\"sense_type\":%d,\"key\":%d,\"asc\":%d,"
	       "\"ascq\":%d,\"sks_valid\":%d,\"in_cdb\":%d,"
	       "\"field\":%u,\"data\":\"",
	       task->status, task->sense.error_type, task->sense.key,
	       task->sense.ascq >> 8, task->sense.ascq & 0xff,
	       task->sense.sense_specific, task->sense.ill_param_in_cdb,
	       task->sense.field_pointer);
	for (int i = 0; i < task->datain.size; i++)
		printf("%02x", task->datain.data[i]);
	printf("\"}\n");
	scsi_free_scsi_task(task);
	iscsi_logout_sync(iscsi);
	iscsi_destroy_context(iscsi);
	return 0;
}
