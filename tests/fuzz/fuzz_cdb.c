/* fuzz_cdb.c - the SCSI command dispatcher over null LUNs: every opcode
 * and service action with any CDB, any transfer length and direction,
 * and any parameter list (PERSISTENT RESERVE OUT, UNMAP, EXTENDED COPY,
 * WRITE SAME, COMPARE AND WRITE, MODE SELECT, ...), from four I_T nexuses
 * so reservations and unit attentions conflict.  The LUNs (a thin 512-byte
 * LUN and a read-only 4096-byte one with descriptor sense) live in a real
 * target table; media I/O goes through the real hang engine to the null
 * backend on a reactor driven here.
 *
 * Input: byte 0 picks LUN, nexus, direction and task attribute; byte 1
 * the CDB length; then the CDB (always 32 bytes taken); then 2 bytes of
 * expected length scale; the rest is the Data-Out buffer.  Every command
 * must complete exactly once, with a sane answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_env.h"
#include "reactor.h"
#include "scsi.h"
#include "target.h"

#define FUZZ_CDB_TURNS 200

static struct scsi_nexus nexus[4] = {
	{ .id = 1001, .initiator_name = "iqn.2026-12.org.example:a",
	  .isid = { 0x80, 0, 0, 0, 0, 1 }, .tpgt = 1, .rel_port_id = 1,
	  .target_name = FUZZ_IQN_OPEN },
	{ .id = 1002, .initiator_name = "iqn.2026-12.org.example:b",
	  .isid = { 0x80, 0, 0, 0, 0, 2 }, .tpgt = 1, .rel_port_id = 1,
	  .target_name = FUZZ_IQN_OPEN },
	{ .id = 1003, .initiator_name = "iqn.2026-12.org.example:a",
	  .isid = { 0x80, 0, 0, 0, 0, 3 }, .tpgt = 1, .rel_port_id = 1,
	  .target_name = FUZZ_IQN_OPEN },
	{ .id = 1004, .initiator_name = "iqn.2026-12.org.example:c",
	  .isid = { 0x80, 0, 0, 0, 0, 4 }, .tpgt = 1, .rel_port_id = 1,
	  .target_name = FUZZ_IQN_OPEN },
};

static int done_calls;

static void on_done(struct scsi_cmd *cmd)
{
	(void)cmd;
	done_calls++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t cdb_lens[4] = { 6, 10, 16, 32 };
	struct scsi_cmd cmd;
	struct target *t;
	uint32_t exp;
	int turns;

	if (size < 2 + SCSI_CDB_MAX + 2)
		return 0;
	fuzz_env_init(true);
	t = tgt_get_by_tid(1);
	if (!t)
		abort();
	memset(&cmd, 0, sizeof(cmd));
	cmd.target = t;
	cmd.lun_id = (data[0] & 1) ? 2 : 1;
	if ((data[0] & 0x30) == 0x30)
		cmd.lun_id = 7;		/* no such LUN */
	cmd.lun = tgt_lun_get(t, cmd.lun_id);
	cmd.nexus = &nexus[(data[0] >> 1) & 3];
	cmd.attr = (enum scsi_task_attr)((data[0] >> 6) % 5);
	cmd.cdb_len = cdb_lens[data[1] & 3];
	memcpy(cmd.cdb, data + 2, SCSI_CDB_MAX);
	exp = (uint32_t)data[2 + SCSI_CDB_MAX] << 8 | data[3 + SCSI_CDB_MAX];
	data += 4 + SCSI_CDB_MAX;
	size -= 4 + SCSI_CDB_MAX;
	cmd.dir_write = size > 0;
	cmd.dir_read = !cmd.dir_write || (exp & 0x8000);
	if (cmd.dir_write) {
		/* what the transport does: all Data-Out in one buffer */
		cmd.exp_len = (uint32_t)size;
		cmd.buf = scsi_buf_alloc(cmd.exp_len);
		if (!cmd.buf)
			abort();
		memcpy(cmd.buf, data, size);
		cmd.buf_len = cmd.out_len = cmd.exp_len;
	} else {
		cmd.exp_len = (exp & 0x7fff) << (exp >> 15 ? 4 : 0);
	}
	cmd.done = on_done;
	done_calls = 0;
	scsi_cmd_exec(&cmd);
	for (turns = 0; done_calls == 0 && turns < FUZZ_CDB_TURNS; turns++)
		reactor_run_once(fuzz_reactor(), turns < 50 ? 0 : 10);
	if (done_calls != 1) {
		fprintf(stderr, "fuzz_cdb: command completed %d times\n",
			done_calls);
		abort();
	}
	/* the transport sends MIN(in_len, EDTL) bytes of buf */
	if (cmd.sense_len > SCSI_SENSE_MAX ||
	    (cmd.in_len && cmd.exp_len &&
	     (!cmd.buf || (cmd.in_len < cmd.exp_len ? cmd.in_len : cmd.exp_len) >
			       cmd.buf_len)))
		__builtin_trap();
	scsi_buf_free(cmd.buf);
	if (cmd.lun)
		scsi_lun_put(cmd.lun);
	tgt_put(t);
	return 0;
}
