/* hangclient.c - a scripted libiscsi initiator for timing tests.
 *
 * Usage: hangclient [-i IQN] [-I ISID] [-b BLOCKSIZE] [-t SECONDS] URL [CMD...]
 *
 * Logs in to URL (iscsi://HOST:PORT/TARGET/LUN) with automatic reconnect
 * off, so a dropped connection shows up as a failure instead of a silent
 * retry, then runs a script: the CMD arguments (each may hold several
 * commands separated by ';'), or, without them, lines read from stdin as
 * they arrive (a test can drive the client interactively and use `mark`
 * to synchronise).  SCSI commands and task management are asynchronous:
 * they are sent at once and the script goes on; `wait` and `sleep` let
 * time pass while completions are collected.
 *
 * Commands (LUN defaults to the URL's; "lun=N" overrides it):
 *   write LBA BLOCKS PATTERN [lun=N] [fua]   WRITE(16) of bytes PATTERN
 *   read LBA BLOCKS [expect PATTERN] [lun=N] READ(16); reports the data
 *   unmap LBA BLOCKS [lun=N]                 UNMAP of one range
 *   caw LBA BLOCKS OLD NEW [lun=N]           COMPARE AND WRITE: if the
 *                                            blocks hold OLD, write NEW
 *   writesame LBA BLOCKS PATTERN [unmap] [lun=N]  WRITE SAME(16)
 *   tur | inquiry | readcap | sync [lun=N]   TEST UNIT READY, INQUIRY,
 *                                            READ CAPACITY(16), SYNCHRONIZE
 *                                            CACHE(10)
 *   clearua [lun=N]      TEST UNIT READY until no UNIT ATTENTION (max 8)
 *   prout register KEY | register-aptpl KEY | reserve KEY TYPE |
 *         release KEY TYPE | clear KEY | preempt KEY VICTIM TYPE |
 *         preempt-abort KEY VICTIM TYPE [lun=N]
 *                        PERSISTENT RESERVE OUT
 *   nop                  NOP-Out, answered by a NOP-In
 *   abort ID             ABORT TASK for command ID (RFC 7143 11.5.1)
 *   abortset | clearset | lunreset [lun=N]   ABORT TASK SET, CLEAR TASK SET,
 *                                            LOGICAL UNIT RESET
 *   wait [ID...] [timeout=MS]   until the given (default: all) commands end
 *   sleep MS             keep servicing the connection for MS ms
 *   mark [TEXT]          print a marker line (a synchronisation point)
 *   drop                 close the TCP connection without logging out
 *   logout               log out (after the outstanding commands)
 * A line may start with "LABEL:" to name its command; otherwise its id is
 * its 1-based position in the script.  '#' starts a comment.
 *
 * Output: one JSON object per line on stdout, flushed at once, for every
 * command when it ends:
 *   {"id":"3","op":"write","lun":1,"lba":0,"blocks":8,"start":123.456,
 *    "end":1130.002,"ms":1006.546,"status":"CHECK_CONDITION","sense_key":3,
 *    "asc":12,"ascq":0}
 * start/end are CLOCK_MONOTONIC milliseconds (Python's time.monotonic() *
 * 1000), so several clients can be compared.  Reads add "data" ("0xab" if
 * every byte is that value, else "mixed") and, with expect, "match".  Task
 * management adds "response" (RFC 7143 11.6.1: 0 function complete, 1 task
 * does not exist, ...).  Statuses: GOOD, CHECK_CONDITION, BUSY,
 * RESERVATION_CONFLICT, TASK_SET_FULL, TASK_ABORTED, CANCELLED (the target
 * never answered before a task management function covering it completed),
 * ERROR, LOST (the connection failed), DROPPED (by `drop`), NOCONN (issued
 * after the connection was gone), PENDING (still open at exit).
 *
 * Exit status: 0 after the script ran (whatever the SCSI results), 2 if the
 * login failed, 3 on a script syntax error, 4 if the final wait timed out. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define HC_MAX_LINE 1024
#define HC_SERVICE_TICK_MS 100		/* libiscsi wants iscsi_service(0) now and then */
#define HC_CLEARUA_TRIES 8
#define HC_SENSE_KEY_UNIT_ATTENTION 0x06
#define HC_INQUIRY_ALLOC 255
#define HC_DEFAULT_IQN "iqn.2026-01.io.holdfast:hangclient"

enum hc_state { HC_OPEN, HC_DONE };

struct hc_cmd {
	char id[32];
	char op[16];
	int lun;
	uint64_t lba;
	uint32_t blocks;
	int pattern;			/* write: fill byte */
	int expect;			/* read: expected fill byte, -1 = none */
	double start, end;
	enum hc_state state;
	struct scsi_task *task;		/* SCSI commands, kept until exit */
	unsigned char *buf;		/* write data, must outlive the task */
	const char *status;
	int status_code;
	int sense_key, asc, ascq;
	int64_t info;			/* sense INFORMATION, -1 = not valid */
	bool is_tmf;
	struct hc_cmd *ref;		/* abort: the command aborted */
	uint32_t response;		/* task management response */
	int tries;			/* clearua */
	struct scsi_persistent_reserve_out_basic pr; /* prout parameters */
	char data[16];			/* read: "0xab" / "mixed" */
	int match;			/* read with expect: 1/0 */
};

static struct {
	struct iscsi_context *iscsi;
	int default_lun;
	int block_size;
	bool connected;
	struct hc_cmd **cmds;
	size_t nr_cmds, cap_cmds;
	unsigned line_no;
	/* what the script is blocked on */
	bool waiting;
	double wait_deadline;		/* 0 = none */
	struct hc_cmd *wait_cmd;	/* the wait/sleep command itself */
	char wait_ids[16][32];
	int nr_wait_ids;
	bool sleeping;
	double sleep_until;
} hc = { .block_size = 512 };

static double hc_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static const char *hc_status_name(int status)
{
	switch (status) {
	case SCSI_STATUS_GOOD: return "GOOD";
	case SCSI_STATUS_CHECK_CONDITION: return "CHECK_CONDITION";
	case SCSI_STATUS_CONDITION_MET: return "CONDITION_MET";
	case SCSI_STATUS_BUSY: return "BUSY";
	case SCSI_STATUS_RESERVATION_CONFLICT: return "RESERVATION_CONFLICT";
	case SCSI_STATUS_TASK_SET_FULL: return "TASK_SET_FULL";
	case SCSI_STATUS_ACA_ACTIVE: return "ACA_ACTIVE";
	case SCSI_STATUS_TASK_ABORTED: return "TASK_ABORTED";
	case SCSI_STATUS_CANCELLED: return "CANCELLED";
	case SCSI_STATUS_ERROR: return "ERROR";
	case SCSI_STATUS_TIMEOUT: return "TIMEOUT";
	default: return "OTHER";
	}
}

static void hc_print(struct hc_cmd *c)
{
	printf("{\"id\":\"%s\",\"op\":\"%s\"", c->id, c->op);
	if (c->lun >= 0)
		printf(",\"lun\":%d", c->lun);
	if (!strcmp(c->op, "read") || !strcmp(c->op, "write") ||
	    !strcmp(c->op, "unmap") || !strcmp(c->op, "writesame") ||
	    !strcmp(c->op, "caw"))
		printf(",\"lba\":%" PRIu64 ",\"blocks\":%u", c->lba, c->blocks);
	printf(",\"start\":%.3f,\"end\":%.3f,\"ms\":%.3f,\"status\":\"%s\","
	       "\"status_code\":%d", c->start, c->end, c->end - c->start,
	       c->status, c->status_code);
	if (c->task || !strcmp(c->op, "clearua"))
		printf(",\"sense_key\":%d,\"asc\":%d,\"ascq\":%d", c->sense_key,
		       c->asc, c->ascq);
	if (c->info >= 0)
		printf(",\"info\":%" PRId64, c->info);
	if (c->is_tmf)
		printf(",\"response\":%u", c->response);
	if (c->ref)
		printf(",\"ref\":\"%s\"", c->ref->id);
	if (c->data[0])
		printf(",\"data\":\"%s\"", c->data);
	if (c->match >= 0)
		printf(",\"match\":%s", c->match ? "true" : "false");
	printf("}\n");
	fflush(stdout);
}

static void hc_finish(struct hc_cmd *c, const char *status, int code)
{
	if (c->state == HC_DONE)
		return;
	c->state = HC_DONE;
	c->end = hc_now();
	c->status = status;
	c->status_code = code;
	hc_print(c);
}

static void hc_event(const char *what, const char *detail)
{
	printf("{\"op\":\"%s\",\"t\":%.3f,\"detail\":\"", what, hc_now());
	for (const char *p = detail; p && *p; p++)
		if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
			putchar(*p);
	printf("\"}\n");
	fflush(stdout);
}

static struct hc_cmd *hc_find(const char *id)
{
	for (size_t i = 0; i < hc.nr_cmds; i++)
		if (!strcmp(hc.cmds[i]->id, id))
			return hc.cmds[i];
	return NULL;
}

/* The INFORMATION field of a CHECK CONDITION's sense, when valid (libiscsi
 * keeps SenseLength and the sense data in datain; SPC-4 4.5). */
static void hc_sense_info(struct hc_cmd *c, const struct scsi_task *task)
{
	const unsigned char *b = task->datain.data;
	int n = task->datain.size;

	if (!b || n < 2 + 8)
		return;
	b += 2;
	n -= 2;
	if ((b[0] & 0x7f) == 0x70 && (b[0] & 0x80)) {
		c->info = (int64_t)((uint32_t)b[3] << 24 | (uint32_t)b[4] << 16 |
				    (uint32_t)b[5] << 8 | b[6]);
	} else if ((b[0] & 0x7f) == 0x72) {
		for (int i = 8; i + 12 <= n; i += b[i + 1] + 2) {
			if (b[i] == 0 && (b[i + 2] & 0x80)) {
				uint64_t v = 0;

				for (int k = 0; k < 8; k++)
					v = v << 8 | b[i + 4 + k];
				c->info = (int64_t)v;
				break;
			}
		}
	}
}

/* Record sense and data of a finished SCSI task in c. */
static void hc_take_task_result(struct hc_cmd *c, struct scsi_task *task,
				int status)
{
	c->sense_key = c->asc = c->ascq = 0;	/* clearua: the last try counts */
	c->info = -1;
	if (status == SCSI_STATUS_CHECK_CONDITION) {
		c->sense_key = task->sense.key;
		c->asc = (task->sense.ascq >> 8) & 0xff;
		c->ascq = task->sense.ascq & 0xff;
		hc_sense_info(c, task);
	}
	if (!strcmp(c->op, "read") && status == SCSI_STATUS_GOOD) {
		const unsigned char *d = task->datain.data;
		int n = task->datain.size;
		bool uniform = n > 0 && d;

		for (int i = 1; uniform && i < n; i++)
			if (d[i] != d[0])
				uniform = false;
		if (uniform)
			snprintf(c->data, sizeof(c->data), "0x%02x", d[0]);
		else
			snprintf(c->data, sizeof(c->data), "mixed");
		if (c->expect >= 0)
			c->match = uniform && d[0] == c->expect &&
				   (uint64_t)n == (uint64_t)c->blocks * hc.block_size;
	} else if (c->expect >= 0) {
		c->match = 0;
	}
}

static int hc_issue_tur(struct hc_cmd *c);

static void hc_scsi_cb(struct iscsi_context *iscsi, int status,
		       void *command_data, void *private_data)
{
	struct hc_cmd *c = private_data;
	struct scsi_task *task = command_data;

	(void)iscsi;
	if (c->state == HC_DONE)
		return;
	if (task)
		hc_take_task_result(c, task, status);
	if (!strcmp(c->op, "clearua") && status == SCSI_STATUS_CHECK_CONDITION &&
	    c->sense_key == HC_SENSE_KEY_UNIT_ATTENTION &&
	    ++c->tries < HC_CLEARUA_TRIES) {
		if (hc_issue_tur(c) == 0)
			return;
	}
	hc_finish(c, hc_status_name(status), status);
}

static void hc_tmf_cb(struct iscsi_context *iscsi, int status,
		      void *command_data, void *private_data)
{
	struct hc_cmd *c = private_data;

	if (command_data)
		c->response = *(uint32_t *)command_data;
	/* A task the TMF covered that the target never answered: libiscsi
	 * still waits for it, so cancel it locally (RFC 7143 11.5.1: the
	 * target does not answer an aborted task after the TMF response). */
	if (status == SCSI_STATUS_GOOD) {
		for (size_t i = 0; i < hc.nr_cmds; i++) {
			struct hc_cmd *t = hc.cmds[i];
			bool covered;

			if (t->state == HC_DONE || !t->task)
				continue;
			if (!strcmp(c->op, "abort"))
				covered = t == c->ref;
			else
				covered = t->lun == c->lun;
			if (covered)
				iscsi_scsi_cancel_task(iscsi, t->task);
		}
	}
	hc_finish(c, hc_status_name(status), status);
}

static void hc_nop_cb(struct iscsi_context *iscsi, int status,
		      void *command_data, void *private_data)
{
	(void)iscsi; (void)command_data;
	hc_finish(private_data, hc_status_name(status), status);
}

static int hc_issue_tur(struct hc_cmd *c)
{
	c->task = iscsi_testunitready_task(hc.iscsi, c->lun, hc_scsi_cb, c);
	return c->task ? 0 : -1;
}

/* Parse "0xab" / "171" into a byte value. */
static int hc_parse_byte(const char *s)
{
	char *end;
	long v = strtol(s, &end, 0);

	if (!*s || *end || v < 0 || v > 255)
		return -1;
	return (int)v;
}

static int hc_parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	return (!*s || *end || errno) ? -1 : 0;
}

static struct hc_cmd *hc_new_cmd(const char *id, const char *op)
{
	struct hc_cmd *c = calloc(1, sizeof(*c));

	if (!c) {
		perror("calloc");
		exit(1);
	}
	snprintf(c->id, sizeof(c->id), "%s", id);
	snprintf(c->op, sizeof(c->op), "%s", op);
	c->lun = -1;
	c->expect = -1;
	c->match = -1;
	c->info = -1;
	c->start = hc_now();
	if (hc.nr_cmds == hc.cap_cmds) {
		hc.cap_cmds = hc.cap_cmds ? hc.cap_cmds * 2 : 64;
		hc.cmds = realloc(hc.cmds, hc.cap_cmds * sizeof(*hc.cmds));
		if (!hc.cmds) {
			perror("realloc");
			exit(1);
		}
	}
	hc.cmds[hc.nr_cmds++] = c;
	return c;
}

static void hc_syntax(const char *line, const char *why)
{
	fprintf(stderr, "hangclient: line %u: %s: '%s'\n", hc.line_no, why, line);
	exit(3);
}

static void hc_syntax(const char *line, const char *why);

/* PERSISTENT RESERVE OUT (SPC-4 6.16):
 *   prout register KEY | register-aptpl KEY | reserve KEY TYPE |
 *         release KEY TYPE | clear KEY | preempt KEY VICTIM TYPE |
 *         preempt-abort KEY VICTIM TYPE
 * (register-aptpl sets APTPL: the registrations persist).  TYPE is the SPC-4 table 211 number (1 write exclusive, 3 exclusive
 * access, 5/6 registrants only, 7/8 all registrants). */
static void hc_issue_prout(struct hc_cmd *c, int lun, int argc, char **argv,
			   const char *orig)
{
	static const struct {
		const char *name;
		int sa, nargs;		/* nargs after the action */
	} actions[] = {
		{ "register", SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 1 },
		{ "register-aptpl", SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 1 },
		{ "reserve", SCSI_PERSISTENT_RESERVE_RESERVE, 2 },
		{ "release", SCSI_PERSISTENT_RESERVE_RELEASE, 2 },
		{ "clear", SCSI_PERSISTENT_RESERVE_CLEAR, 1 },
		{ "preempt", SCSI_PERSISTENT_RESERVE_PREEMPT, 3 },
		{ "preempt-abort", SCSI_PERSISTENT_RESERVE_PREEMPT_AND_ABORT, 3 },
	};
	uint64_t v[3] = { 0, 0, 0 };
	int type = 0;

	if (argc < 2)
		hc_syntax(orig, "prout ACTION KEY ...");
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
		if (strcmp(argv[1], actions[i].name))
			continue;
		if (argc != 2 + actions[i].nargs)
			hc_syntax(orig, "wrong number of prout arguments");
		for (int j = 0; j < actions[i].nargs; j++)
			if (hc_parse_u64(argv[2 + j], &v[j]))
				hc_syntax(orig, "bad prout number");
		memset(&c->pr, 0, sizeof(c->pr));
		if (actions[i].sa == SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY) {
			c->pr.service_action_reservation_key = v[0];
			/* Activate Persist Through Power Loss (SPC-4 6.16.3) */
			c->pr.aptpl = !strcmp(actions[i].name,
					      "register-aptpl");
		} else {
			c->pr.reservation_key = v[0];
			if (actions[i].nargs == 3) {
				c->pr.service_action_reservation_key = v[1];
				type = (int)v[2];
			} else if (actions[i].nargs == 2) {
				type = (int)v[1];
			}
		}
		c->task = iscsi_persistent_reserve_out_task(
			hc.iscsi, lun, actions[i].sa,
			SCSI_PERSISTENT_RESERVE_SCOPE_LU, type, &c->pr,
			hc_scsi_cb, c);
		return;
	}
	hc_syntax(orig, "unknown prout action");
}

/* Run one script line.  Returns once the command is issued (or, for
 * wait/sleep, once the blocking condition is set up). */
static void hc_run_line(char *line)
{
	char orig[HC_MAX_LINE], id[32], *argv[32], *save = NULL, *tok, *colon;
	int argc = 0, lun;
	struct hc_cmd *c;

	if ((tok = strchr(line, '#')))
		*tok = '\0';
	snprintf(orig, sizeof(orig), "%s", line);
	for (tok = strtok_r(line, " \t\r\n", &save); tok && argc < 31;
	     tok = strtok_r(NULL, " \t\r\n", &save))
		argv[argc++] = tok;
	if (!argc)
		return;
	hc.line_no++;
	snprintf(id, sizeof(id), "%u", hc.line_no);
	colon = strchr(argv[0], ':');
	if (colon && colon[1] == '\0') {
		*colon = '\0';
		snprintf(id, sizeof(id), "%s", argv[0]);
		memmove(argv, argv + 1, (size_t)(argc - 1) * sizeof(argv[0]));
		argc--;
		if (!argc)
			hc_syntax(orig, "label without command");
	}
	/* options anywhere on the line */
	lun = hc.default_lun;
	bool fua = false, unmap = false;
	int n = 1;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "lun=", 4))
			lun = atoi(argv[i] + 4);
		else if (!strcmp(argv[i], "fua"))
			fua = true;
		else if (!strcmp(argv[i], "unmap"))
			unmap = true;
		else
			argv[n++] = argv[i];
	}
	argc = n;

	c = hc_new_cmd(id, argv[0]);
	if (!strcmp(argv[0], "mark")) {
		c->lun = -1;
		hc_finish(c, "GOOD", 0);
		return;
	}
	if (!strcmp(argv[0], "sleep")) {
		uint64_t ms;

		if (argc != 2 || hc_parse_u64(argv[1], &ms))
			hc_syntax(orig, "sleep MS");
		hc.sleeping = true;
		hc.sleep_until = hc_now() + (double)ms;
		hc.wait_cmd = c;
		return;
	}
	if (!strcmp(argv[0], "wait")) {
		hc.waiting = true;
		hc.nr_wait_ids = 0;
		hc.wait_deadline = 0;
		hc.wait_cmd = c;
		for (int i = 1; i < argc; i++) {
			if (!strncmp(argv[i], "timeout=", 8)) {
				hc.wait_deadline = hc_now() + atof(argv[i] + 8);
			} else if (hc.nr_wait_ids < 16) {
				if (!hc_find(argv[i]))
					hc_syntax(orig, "wait for an unknown id");
				snprintf(hc.wait_ids[hc.nr_wait_ids++], 32, "%s",
					 argv[i]);
			}
		}
		return;
	}
	if (!hc.connected) {
		hc_finish(c, "NOCONN", -1);
		return;
	}
	if (!strcmp(argv[0], "drop")) {
		/* A connection failure as the target sees it: no logout. */
		hc.connected = false;
		for (size_t i = 0; i < hc.nr_cmds; i++)
			if (hc.cmds[i] != c)
				hc_finish(hc.cmds[i], "DROPPED", -1);
		iscsi_disconnect(hc.iscsi);
		hc_finish(c, "GOOD", 0);
		return;
	}
	if (!strcmp(argv[0], "logout")) {
		/* iscsi_logout_sync waits for the answer; run it after every
		 * outstanding command like a careful initiator would. */
		int ret = iscsi_logout_sync(hc.iscsi);

		hc.connected = false;
		iscsi_disconnect(hc.iscsi);
		hc_finish(c, ret == 0 ? "GOOD" : "ERROR", ret);
		return;
	}
	if (!strcmp(argv[0], "nop")) {
		if (iscsi_nop_out_async(hc.iscsi, hc_nop_cb, NULL, 0, c) < 0)
			hc_finish(c, "ERROR", -1);
		return;
	}
	if (!strcmp(argv[0], "abort")) {
		struct hc_cmd *t;

		if (argc != 2 || !(t = hc_find(argv[1])) || !t->task)
			hc_syntax(orig, "abort ID of an earlier SCSI command");
		c->ref = t;
		c->lun = t->lun;
		c->is_tmf = true;
		if (iscsi_task_mgmt_async(hc.iscsi, t->lun, ISCSI_TM_ABORT_TASK,
					  t->task->itt, t->task->cmdsn,
					  hc_tmf_cb, c) < 0)
			hc_finish(c, "ERROR", -1);
		return;
	}
	c->lun = lun;
	if (!strcmp(argv[0], "abortset") || !strcmp(argv[0], "clearset") ||
	    !strcmp(argv[0], "lunreset")) {
		enum iscsi_task_mgmt_funcs f =
			!strcmp(argv[0], "abortset") ? ISCSI_TM_ABORT_TASK_SET :
			!strcmp(argv[0], "clearset") ? ISCSI_TM_CLEAR_TASK_SET :
			ISCSI_TM_LUN_RESET;

		c->is_tmf = true;
		/* RFC 7143 11.5: RTT is reserved (0xffffffff) for these. */
		if (iscsi_task_mgmt_async(hc.iscsi, lun, f, 0xffffffff, 0,
					  hc_tmf_cb, c) < 0)
			hc_finish(c, "ERROR", -1);
		return;
	}
	if (!strcmp(argv[0], "write") || !strcmp(argv[0], "read")) {
		bool wr = argv[0][0] == 'w';
		uint64_t lba, blocks;

		if (argc < 3 || hc_parse_u64(argv[1], &lba) ||
		    hc_parse_u64(argv[2], &blocks) || !blocks ||
		    blocks > 65536)
			hc_syntax(orig, wr ? "write LBA BLOCKS PATTERN" :
					     "read LBA BLOCKS [expect PATTERN]");
		c->lba = lba;
		c->blocks = (uint32_t)blocks;
		if (wr) {
			size_t len = (size_t)blocks * (size_t)hc.block_size;

			if (argc != 4 || (c->pattern = hc_parse_byte(argv[3])) < 0)
				hc_syntax(orig, "write LBA BLOCKS PATTERN");
			c->buf = malloc(len);
			if (!c->buf) {
				perror("malloc");
				exit(1);
			}
			memset(c->buf, c->pattern, len);
			c->task = iscsi_write16_task(hc.iscsi, lun, lba, c->buf,
						     (uint32_t)len, hc.block_size,
						     0, 0, fua, 0, 0, hc_scsi_cb, c);
		} else {
			if (argc == 5 && !strcmp(argv[3], "expect"))
				c->expect = hc_parse_byte(argv[4]);
			else if (argc != 3)
				hc_syntax(orig, "read LBA BLOCKS [expect PATTERN]");
			if (argc == 5 && c->expect < 0)
				hc_syntax(orig, "bad expect pattern");
			c->task = iscsi_read16_task(hc.iscsi, lun, lba,
						    c->blocks * (uint32_t)hc.block_size,
						    hc.block_size, 0, 0, fua, 0, 0,
						    hc_scsi_cb, c);
		}
	} else if (!strcmp(argv[0], "unmap")) {
		uint64_t lba, blocks;
		/* copied into the parameter list by libiscsi (SBC-4 5.30) */
		struct unmap_list range;

		if (argc != 3 || hc_parse_u64(argv[1], &lba) ||
		    hc_parse_u64(argv[2], &blocks) || !blocks ||
		    blocks > UINT32_MAX)
			hc_syntax(orig, "unmap LBA BLOCKS");
		c->lba = lba;
		c->blocks = (uint32_t)blocks;
		range.lba = lba;
		range.num = (uint32_t)blocks;
		c->task = iscsi_unmap_task(hc.iscsi, lun, 0, 0, &range, 1,
					   hc_scsi_cb, c);
	} else if (!strcmp(argv[0], "writesame")) {
		uint64_t lba, blocks;

		if (argc != 4 || hc_parse_u64(argv[1], &lba) ||
		    hc_parse_u64(argv[2], &blocks) || !blocks ||
		    blocks > UINT32_MAX ||
		    (c->pattern = hc_parse_byte(argv[3])) < 0)
			hc_syntax(orig, "writesame LBA BLOCKS PATTERN [unmap]");
		c->lba = lba;
		c->blocks = (uint32_t)blocks;
		c->buf = malloc((size_t)hc.block_size);
		if (!c->buf) {
			perror("malloc");
			exit(1);
		}
		memset(c->buf, c->pattern, (size_t)hc.block_size);
		/* WRITE SAME(16), SBC-4 5.50: one block of data, repeated */
		c->task = iscsi_writesame16_task(hc.iscsi, lun, lba, c->buf,
						 (uint32_t)hc.block_size,
						 (uint32_t)blocks, 0, unmap, 0, 0,
						 hc_scsi_cb, c);
	} else if (!strcmp(argv[0], "caw")) {
		uint64_t lba, blocks;
		int old_byte, new_byte;
		size_t half;

		if (argc != 5 || hc_parse_u64(argv[1], &lba) ||
		    hc_parse_u64(argv[2], &blocks) || !blocks || blocks > 255 ||
		    (old_byte = hc_parse_byte(argv[3])) < 0 ||
		    (new_byte = hc_parse_byte(argv[4])) < 0)
			hc_syntax(orig, "caw LBA BLOCKS OLD NEW");
		c->lba = lba;
		c->blocks = (uint32_t)blocks;
		/* SBC-4 5.3: the Data-Out buffer is the verify data followed by
		 * the write data, each BLOCKS blocks long */
		half = (size_t)blocks * (size_t)hc.block_size;
		c->buf = malloc(2 * half);
		if (!c->buf) {
			perror("malloc");
			exit(1);
		}
		memset(c->buf, old_byte, half);
		memset(c->buf + half, new_byte, half);
		c->task = iscsi_compareandwrite_task(hc.iscsi, lun, lba, c->buf,
						     (uint32_t)(2 * half),
						     hc.block_size, 0, 0, fua, 0, 0,
						     hc_scsi_cb, c);
	} else if (!strcmp(argv[0], "prout")) {
		hc_issue_prout(c, lun, argc, argv, orig);
	} else if (!strcmp(argv[0], "tur") || !strcmp(argv[0], "clearua")) {
		hc_issue_tur(c);
	} else if (!strcmp(argv[0], "inquiry")) {
		c->task = iscsi_inquiry_task(hc.iscsi, lun, 0, 0, HC_INQUIRY_ALLOC,
					     hc_scsi_cb, c);
	} else if (!strcmp(argv[0], "readcap")) {
		c->task = iscsi_readcapacity16_task(hc.iscsi, lun, hc_scsi_cb, c);
	} else if (!strcmp(argv[0], "sync")) {
		c->task = iscsi_synchronizecache10_task(hc.iscsi, lun, 0, 0, 0, 0,
							hc_scsi_cb, c);
	} else {
		hc_syntax(orig, "unknown command");
	}
	if (!c->task)
		hc_finish(c, "ERROR", -1);
}

/* Is the script still blocked on wait/sleep?  Finishes the wait or sleep
 * command when its condition is met. */
static bool hc_blocked(void)
{
	double now = hc_now();

	if (hc.sleeping) {
		if (now < hc.sleep_until)
			return true;
		hc.sleeping = false;
		hc_finish(hc.wait_cmd, "GOOD", 0);
		return false;
	}
	if (!hc.waiting)
		return false;
	bool open = false;
	for (size_t i = 0; i < hc.nr_cmds && !open; i++) {
		struct hc_cmd *t = hc.cmds[i];

		if (t == hc.wait_cmd || t->state == HC_DONE)
			continue;
		if (!hc.nr_wait_ids) {
			open = true;
			continue;
		}
		for (int j = 0; j < hc.nr_wait_ids; j++)
			if (!strcmp(t->id, hc.wait_ids[j]))
				open = true;
	}
	if (open && (!hc.wait_deadline || now < hc.wait_deadline))
		return true;
	hc.waiting = false;
	hc_finish(hc.wait_cmd, open ? "TIMEOUT" : "GOOD", open ? -1 : 0);
	return false;
}

static void hc_connection_lost(const char *why)
{
	if (!hc.connected)
		return;
	hc.connected = false;
	hc_event("connection_lost", why);
	for (size_t i = 0; i < hc.nr_cmds; i++)
		if (hc.cmds[i] != hc.wait_cmd)
			hc_finish(hc.cmds[i], "LOST", -1);
}

/* One poll round: wait until the connection or stdin (if >= 0) is ready,
 * or until `until` (monotonic ms; 0 = none), at most HC_SERVICE_TICK_MS,
 * then service the connection.  The caller reads stdin. */
static void hc_poll(int stdin_fd, double until)
{
	struct pollfd pfd[2] = { { .fd = -1 }, { .fd = -1 } };
	int nfds = 0, iscsi_idx = -1;
	double now = hc_now();
	int timeout = HC_SERVICE_TICK_MS;

	if (until > 0) {
		double left = until - now;

		timeout = left <= 0 ? 0 : left < HC_SERVICE_TICK_MS ? (int)left + 1 :
			  HC_SERVICE_TICK_MS;
	}
	if (hc.connected) {
		pfd[nfds].fd = iscsi_get_fd(hc.iscsi);
		pfd[nfds].events = (short)iscsi_which_events(hc.iscsi);
		iscsi_idx = nfds++;
	}
	if (stdin_fd >= 0) {
		pfd[nfds].fd = stdin_fd;
		pfd[nfds].events = POLLIN;
		nfds++;
	}
	if (poll(pfd, (nfds_t)nfds, timeout) < 0 && errno != EINTR) {
		perror("poll");
		exit(1);
	}
	if (hc.connected && iscsi_idx >= 0) {
		if (iscsi_service(hc.iscsi, pfd[iscsi_idx].revents) < 0)
			hc_connection_lost(iscsi_get_error(hc.iscsi));
	}
}

/* Split a buffer of commands on ';' and newlines and queue them. */
struct hc_queue {
	char **lines;
	size_t head, n, cap;
};

static void hc_queue_text(struct hc_queue *q, const char *text)
{
	const char *p = text;

	while (*p) {
		size_t len = strcspn(p, ";\n");

		if (q->n == q->cap) {
			q->cap = q->cap ? q->cap * 2 : 64;
			q->lines = realloc(q->lines, q->cap * sizeof(*q->lines));
			if (!q->lines) {
				perror("realloc");
				exit(1);
			}
		}
		q->lines[q->n++] = strndup(p, len < HC_MAX_LINE - 1 ? len : HC_MAX_LINE - 1);
		p += len;
		if (*p)
			p++;
	}
}

static void hc_usage(void)
{
	fprintf(stderr, "usage: hangclient [-i IQN] [-I ISID_QUALIFIER] [-b BLOCKSIZE] "
		"[-t SECONDS] iscsi://HOST:PORT/TARGET/LUN [CMD...]\n");
}

int main(int argc, char **argv)
{
	const char *iqn = HC_DEFAULT_IQN;
	struct iscsi_url *url;
	struct hc_queue q = { 0 };
	char inbuf[64 * 1024];
	size_t inlen = 0;
	int stdin_fd = -1, opt, exit_code = 0;
	long isid = -1;
	double final_timeout_ms = 120000;

	while ((opt = getopt(argc, argv, "i:I:b:t:h")) != -1) {
		switch (opt) {
		case 'i': iqn = optarg; break;
		case 'I': isid = strtol(optarg, NULL, 0); break;
		case 'b': hc.block_size = atoi(optarg); break;
		case 't': final_timeout_ms = atof(optarg) * 1000.0; break;
		default: hc_usage(); return opt == 'h' ? 0 : 3;
		}
	}
	if (optind >= argc || hc.block_size <= 0) {
		hc_usage();
		return 3;
	}
	hc.iscsi = iscsi_create_context(iqn);
	if (!hc.iscsi) {
		fprintf(stderr, "hangclient: cannot create context\n");
		return 2;
	}
	url = iscsi_parse_full_url(hc.iscsi, argv[optind]);
	if (!url) {
		fprintf(stderr, "hangclient: bad URL: %s\n", iscsi_get_error(hc.iscsi));
		return 3;
	}
	/* Distinct ISIDs for concurrent clients (or a chosen one to provoke
	 * session reinstatement, RFC 7143 4.3.5). */
	iscsi_set_isid_random(hc.iscsi, isid >= 0 ? (uint32_t)isid :
			      (uint32_t)(getpid() ^ (uint32_t)time(NULL)), 0);
	iscsi_set_noautoreconnect(hc.iscsi, 1);
	iscsi_set_targetname(hc.iscsi, url->target);
	iscsi_set_session_type(hc.iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(hc.iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	hc.default_lun = url->lun;
	if (iscsi_full_connect_sync(hc.iscsi, url->portal, url->lun) != 0) {
		fprintf(stderr, "hangclient: login failed: %s\n",
			iscsi_get_error(hc.iscsi));
		printf("{\"op\":\"login\",\"status\":\"ERROR\"}\n");
		return 2;
	}
	hc.connected = true;
	hc_event("login", url->portal);

	if (optind + 1 < argc) {
		for (int i = optind + 1; i < argc; i++)
			hc_queue_text(&q, argv[i]);
	} else {
		stdin_fd = STDIN_FILENO;
	}

	for (;;) {
		/* run queued lines until one blocks */
		while (!hc_blocked() && q.head < q.n) {
			char *line = q.lines[q.head++];

			hc_run_line(line);
			free(line);
		}
		if (!hc_blocked() && q.head == q.n && stdin_fd < 0)
			break;
		hc_poll(stdin_fd, hc.sleeping ? hc.sleep_until :
				  hc.waiting ? hc.wait_deadline : 0);
		if (stdin_fd >= 0) {
			struct pollfd p = { .fd = stdin_fd, .events = POLLIN };

			while (poll(&p, 1, 0) > 0) {
				ssize_t r = read(stdin_fd, inbuf + inlen,
						 sizeof(inbuf) - 1 - inlen);
				char *nl;

				if (r <= 0) {
					stdin_fd = -1;	/* EOF: run the rest */
					inbuf[inlen] = '\0';
					hc_queue_text(&q, inbuf);
					inlen = 0;
					break;
				}
				inlen += (size_t)r;
				inbuf[inlen] = '\0';
				nl = strrchr(inbuf, '\n');
				if (nl) {
					*nl = '\0';
					hc_queue_text(&q, inbuf);
					inlen -= (size_t)(nl + 1 - inbuf);
					memmove(inbuf, nl + 1, inlen);
				} else if (inlen == sizeof(inbuf) - 1) {
					hc_syntax(inbuf, "line too long");
				}
			}
		}
	}

	/* implicit final wait for everything still open */
	{
		double deadline = hc_now() + final_timeout_ms;
		bool open = true;

		while (open && hc_now() < deadline) {
			open = false;
			for (size_t i = 0; i < hc.nr_cmds; i++)
				if (hc.cmds[i]->state != HC_DONE)
					open = true;
			if (open && hc.connected)
				hc_poll(-1, deadline);
			else if (open)
				break;
		}
		for (size_t i = 0; i < hc.nr_cmds; i++) {
			if (hc.cmds[i]->state != HC_DONE) {
				hc_finish(hc.cmds[i], "PENDING", -1);
				exit_code = 4;
			}
		}
	}
	if (hc.connected && exit_code == 0) {
		iscsi_set_timeout(hc.iscsi, 5);
		iscsi_logout_sync(hc.iscsi);
		iscsi_disconnect(hc.iscsi);
	}
	hc_event("exit", exit_code ? "pending" : "ok");
	iscsi_destroy_url(url);
	/* tasks and buffers are left to the exit: a task libiscsi still
	 * references must not be freed under it */
	return exit_code;
}
