/* scsi_ops.c - the table of supported commands and REPORT SUPPORTED
 * OPERATION CODES (SPC-4 6.35), which is generated from it.
 *
 * Each row says how to dispatch a command and what REPORT SUPPORTED
 * OPERATION CODES tells initiators about it: CDB length and the CDB usage
 * bitmap (a bit is set where the device server examines the CDB bit).
 * Adding a command is adding a row. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "scsi_internal.h"
#include "scsi_pr.h"
#include "scsi_xcopy.h"
#include "util.h"

/* Control byte usage: NACA is examined (and refused). */
#define CTL 0x04

#define MEDIA_RD (SCSI_OPF_MEDIA | SCSI_OPF_NEEDS_READY)
#define MEDIA_WR (SCSI_OPF_MEDIA | SCSI_OPF_DATA_OUT | SCSI_OPF_WRITE | \
		  SCSI_OPF_NEEDS_READY)

#define OP(opc, sa_, len, fl, handler, nm, ...)                               \
	{ .opcode = (opc), .sa = (sa_), .cdb_len = (len), .flags = (fl),      \
	  .fn = (handler), .name = (nm), .usage = { (opc), __VA_ARGS__ } }

/* Usage bytes 1.. per SPC-4 / SBC-3 CDB layouts.  READ/WRITE byte 1:
 * RDPROTECT/WRPROTECT (checked), DPO, FUA. */
const struct scsi_op_desc scsi_op_table[] = {
	OP(SCSI_OP_TEST_UNIT_READY, 0, 6,
	   SCSI_OPF_NO_LUN | SCSI_OPF_NEEDS_READY, spc_test_unit_ready,
	   "TEST UNIT READY", 0, 0, 0, 0, CTL),
	OP(SCSI_OP_REQUEST_SENSE, 0, 6, SCSI_OPF_NO_LUN | SCSI_OPF_NO_UA,
	   spc_request_sense, "REQUEST SENSE", 0x01, 0, 0, 0xff, CTL),
	OP(SCSI_OP_READ_6, 0, 6, MEDIA_RD, sbc_read_write, "READ(6)",
	   0x1f, 0xff, 0xff, 0xff, CTL),
	OP(SCSI_OP_WRITE_6, 0, 6, MEDIA_WR, sbc_read_write, "WRITE(6)",
	   0x1f, 0xff, 0xff, 0xff, CTL),
	OP(SCSI_OP_INQUIRY, 0, 6, SCSI_OPF_NO_LUN | SCSI_OPF_NO_UA,
	   spc_inquiry, "INQUIRY", 0x03, 0xff, 0xff, 0xff, CTL),
	/* SPC-2 reservations (scsi_pr.c); third-party ones are refused */
	OP(SCSI_OP_RESERVE_6, 0, 6, 0, spc_reserve, "RESERVE(6)",
	   0, 0, 0, 0, CTL),
	OP(SCSI_OP_RELEASE_6, 0, 6, 0, spc_release, "RELEASE(6)",
	   0, 0, 0, 0, CTL),
	OP(SCSI_OP_MODE_SENSE_6, 0, 6, 0, spc_mode_sense, "MODE SENSE(6)",
	   0x08, 0xff, 0xff, 0xff, CTL),
	OP(SCSI_OP_START_STOP_UNIT, 0, 6, 0, spc_start_stop_unit,
	   "START STOP UNIT", 0, 0, 0, 0, CTL),
	OP(SCSI_OP_PREVENT_ALLOW, 0, 6, 0, spc_prevent_allow,
	   "PREVENT ALLOW MEDIUM REMOVAL", 0, 0, 0, 0, CTL),
	OP(SCSI_OP_READ_CAPACITY_10, 0, 10, SCSI_OPF_NEEDS_READY,
	   sbc_read_capacity_10, "READ CAPACITY(10)",
	   0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, CTL),
	OP(SCSI_OP_READ_10, 0, 10, MEDIA_RD, sbc_read_write, "READ(10)",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_WRITE_10, 0, 10, MEDIA_WR, sbc_read_write, "WRITE(10)",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_WRITE_VERIFY_10, 0, 10, MEDIA_WR, sbc_read_write,
	   "WRITE AND VERIFY(10)",
	   0xf6, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_VERIFY_10, 0, 10, MEDIA_RD | SCSI_OPF_DATA_OUT, sbc_verify,
	   "VERIFY(10)", 0xf6, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_PRE_FETCH_10, 0, 10, SCSI_OPF_NEEDS_READY, sbc_pre_fetch,
	   "PRE-FETCH(10)", 0, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_SYNCHRONIZE_CACHE_10, 0, 10, MEDIA_RD,
	   sbc_synchronize_cache, "SYNCHRONIZE CACHE(10)",
	   0, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_READ_DEFECT_DATA_10, 0, 10, SCSI_OPF_NEEDS_READY,
	   sbc_read_defect_data, "READ DEFECT DATA(10)",
	   0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_WRITE_SAME_10, 0, 10, MEDIA_WR, sbc_write_same,
	   "WRITE SAME(10)", 0xf8, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_UNMAP, 0, 10, MEDIA_WR | SCSI_OPF_THIN, sbc_unmap, "UNMAP",
	   0x01, 0, 0, 0, 0, 0, 0xff, 0xff, CTL),
	OP(SCSI_OP_RESERVE_10, 0, 10, 0, spc_reserve, "RESERVE(10)",
	   0x12, 0, 0, 0, 0, 0, 0, 0, CTL),
	OP(SCSI_OP_RELEASE_10, 0, 10, 0, spc_release, "RELEASE(10)",
	   0x12, 0, 0, 0, 0, 0, 0, 0, CTL),
	OP(SCSI_OP_MODE_SENSE_10, 0, 10, 0, spc_mode_sense, "MODE SENSE(10)",
	   0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, CTL),
	/* Persistent reservations (scsi_pr.c, scsi_pr_out.c) */
#define PRIN(sa_, nm)                                                         \
	OP(SCSI_OP_PERSISTENT_RESERVE_IN, sa_, 10, SCSI_OPF_HAS_SA,           \
	   spc_pr_in, "PERSISTENT RESERVE IN(" nm ")",                        \
	   0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, CTL)
#define PROUT(sa_, nm)                                                        \
	OP(SCSI_OP_PERSISTENT_RESERVE_OUT, sa_, 10,                           \
	   SCSI_OPF_HAS_SA | SCSI_OPF_DATA_OUT, spc_pr_out,                   \
	   "PERSISTENT RESERVE OUT(" nm ")",                                  \
	   0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, CTL)
	PRIN(PR_IN_READ_KEYS, "READ KEYS"),
	PRIN(PR_IN_READ_RESERVATION, "READ RESERVATION"),
	PRIN(PR_IN_REPORT_CAPABILITIES, "REPORT CAPABILITIES"),
	PRIN(PR_IN_READ_FULL_STATUS, "READ FULL STATUS"),
	PROUT(PR_OUT_REGISTER, "REGISTER"),
	PROUT(PR_OUT_RESERVE, "RESERVE"),
	PROUT(PR_OUT_RELEASE, "RELEASE"),
	PROUT(PR_OUT_CLEAR, "CLEAR"),
	PROUT(PR_OUT_PREEMPT, "PREEMPT"),
	PROUT(PR_OUT_PREEMPT_AND_ABORT, "PREEMPT AND ABORT"),
	PROUT(PR_OUT_REGISTER_AND_IGNORE, "REGISTER AND IGNORE EXISTING KEY"),
	PROUT(PR_OUT_REGISTER_AND_MOVE, "REGISTER AND MOVE"),
#undef PRIN
#undef PROUT
	/* Copy manager (scsi_xcopy.c).  The destination's write protection
	 * is checked there: the command may be sent to the source LUN. */
	OP(SCSI_OP_EXTENDED_COPY, XCOPY_SA_LID1, 16,
	   SCSI_OPF_HAS_SA | SCSI_OPF_DATA_OUT | SCSI_OPF_NEEDS_READY,
	   spc_extended_copy, "EXTENDED COPY(LID1)",
	   0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_RECEIVE_COPY_RESULTS, RCR_SA_COPY_STATUS, 16, SCSI_OPF_HAS_SA,
	   spc_receive_copy_results, "RECEIVE COPY RESULTS(COPY STATUS)",
	   0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_RECEIVE_COPY_RESULTS, RCR_SA_RECEIVE_DATA, 16, SCSI_OPF_HAS_SA,
	   spc_receive_copy_results, "RECEIVE COPY RESULTS(RECEIVE DATA)",
	   0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_RECEIVE_COPY_RESULTS, RCR_SA_OPERATING_PARAMETERS, 16,
	   SCSI_OPF_HAS_SA, spc_receive_copy_results,
	   "RECEIVE COPY RESULTS(OPERATING PARAMETERS)",
	   0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_RECEIVE_COPY_RESULTS, RCR_SA_FAILED_SEGMENT_DETAILS, 16,
	   SCSI_OPF_HAS_SA, spc_receive_copy_results,
	   "RECEIVE COPY RESULTS(FAILED SEGMENT DETAILS)",
	   0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_READ_16, 0, 16, MEDIA_RD, sbc_read_write, "READ(16)",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_COMPARE_AND_WRITE, 0, 16, MEDIA_WR, sbc_compare_and_write,
	   "COMPARE AND WRITE",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0, 0, 0, 0xff, 0, CTL),
	OP(SCSI_OP_WRITE_16, 0, 16, MEDIA_WR, sbc_read_write, "WRITE(16)",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	/* ORWRITE(16) byte 1: ORPROTECT (checked), DPO, FUA */
	OP(SCSI_OP_ORWRITE_16, 0, 16, MEDIA_WR, sbc_orwrite, "ORWRITE(16)",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_WRITE_VERIFY_16, 0, 16, MEDIA_WR, sbc_read_write,
	   "WRITE AND VERIFY(16)",
	   0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_VERIFY_16, 0, 16, MEDIA_RD | SCSI_OPF_DATA_OUT, sbc_verify,
	   "VERIFY(16)",
	   0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_PRE_FETCH_16, 0, 16, SCSI_OPF_NEEDS_READY, sbc_pre_fetch,
	   "PRE-FETCH(16)",
	   0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_SYNCHRONIZE_CACHE_16, 0, 16, MEDIA_RD,
	   sbc_synchronize_cache, "SYNCHRONIZE CACHE(16)",
	   0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_WRITE_SAME_16, 0, 16, MEDIA_WR, sbc_write_same,
	   "WRITE SAME(16)",
	   0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	/* WRITE ATOMIC(16): ATOMIC BOUNDARY (10..11) must be 0 */
	OP(SCSI_OP_WRITE_ATOMIC_16, 0, 16, MEDIA_WR, sbc_write_atomic,
	   "WRITE ATOMIC(16)",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_SERVICE_ACTION_IN_16, SCSI_SAI_READ_CAPACITY_16, 16,
	   SCSI_OPF_HAS_SA | SCSI_OPF_NEEDS_READY, sbc_read_capacity_16,
	   "READ CAPACITY(16)",
	   0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_SERVICE_ACTION_IN_16, SCSI_SAI_GET_LBA_STATUS, 16,
	   SCSI_OPF_HAS_SA | SCSI_OPF_NEEDS_READY, sbc_get_lba_status,
	   "GET LBA STATUS",
	   0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	   0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_REPORT_LUNS, 0, 12, SCSI_OPF_NO_LUN | SCSI_OPF_NO_UA,
	   spc_report_luns, "REPORT LUNS",
	   0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_MAINTENANCE_IN, SCSI_MI_REPORT_SUPPORTED_OPCODES, 12,
	   SCSI_OPF_HAS_SA, spc_report_supported_opcodes,
	   "REPORT SUPPORTED OPERATION CODES",
	   0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_MAINTENANCE_IN, SCSI_MI_REPORT_TARGET_PORT_GROUPS, 12,
	   SCSI_OPF_HAS_SA | SCSI_OPF_NO_UA, spc_report_target_port_groups,
	   "REPORT TARGET PORT GROUPS",
	   0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_MAINTENANCE_IN, SCSI_MI_REPORT_SUPPORTED_TMFS, 12,
	   SCSI_OPF_HAS_SA, spc_report_supported_tmfs,
	   "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
	   0x1f, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	/* SET TARGET PORT GROUPS: explicit ALUA, LUNs with alua_group */
	OP(SCSI_OP_MAINTENANCE_OUT, SCSI_MO_SET_TARGET_PORT_GROUPS, 12,
	   SCSI_OPF_HAS_SA | SCSI_OPF_DATA_OUT, spc_set_target_port_groups,
	   "SET TARGET PORT GROUPS",
	   0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_READ_12, 0, 12, MEDIA_RD, sbc_read_write, "READ(12)",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_WRITE_12, 0, 12, MEDIA_WR, sbc_read_write, "WRITE(12)",
	   0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_WRITE_VERIFY_12, 0, 12, MEDIA_WR, sbc_read_write,
	   "WRITE AND VERIFY(12)",
	   0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_VERIFY_12, 0, 12, MEDIA_RD | SCSI_OPF_DATA_OUT, sbc_verify,
	   "VERIFY(12)",
	   0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, CTL),
	OP(SCSI_OP_READ_DEFECT_DATA_12, 0, 12, SCSI_OPF_NEEDS_READY,
	   sbc_read_defect_data, "READ DEFECT DATA(12)",
	   0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, CTL),
};
const unsigned scsi_op_table_len = ARRAY_SIZE(scsi_op_table);

#define CDB_SA_MASK 0x1f

/* Is row d served for this LUN?  UNMAP only on thin LUNs, SET TARGET
 * PORT GROUPS only on LUNs shared by two nodes. */
static bool op_available(const struct scsi_op_desc *d,
			 const struct scsi_lun *lun)
{
	/* SET TARGET PORT GROUPS: only where there is a group to set
	 * (alua_group, scsi_alua.c); elsewhere TPGS says implicit only */
	if (d->opcode == SCSI_OP_MAINTENANCE_OUT)
		return lun && lun_settings_get(lun)->alua_group;
	return !(d->flags & SCSI_OPF_THIN) || scsi_lun_thin(lun);
}

/* op_find() runs for every command: chains of the table's rows per
 * opcode, in table order, replace a scan of the whole table.  Built once;
 * read-only afterwards. */
#define OP_NONE UINT16_MAX
static uint16_t op_first[256];
static uint16_t op_next[ARRAY_SIZE(scsi_op_table)];
static pthread_once_t op_index_once = PTHREAD_ONCE_INIT;

static void op_index_build(void)
{
	uint16_t *tail[256];

	for (unsigned o = 0; o < 256; o++) {
		op_first[o] = OP_NONE;
		tail[o] = &op_first[o];
	}
	for (unsigned i = 0; i < ARRAY_SIZE(scsi_op_table); i++) {
		uint8_t o = scsi_op_table[i].opcode;

		op_next[i] = OP_NONE;
		*tail[o] = (uint16_t)i;
		tail[o] = &op_next[i];
	}
}

static const struct scsi_op_desc *op_find(const struct scsi_lun *lun,
					  uint8_t opcode, uint16_t sa,
					  bool match_sa)
{
	pthread_once(&op_index_once, op_index_build);
	for (unsigned i = op_first[opcode]; i != OP_NONE; i = op_next[i]) {
		const struct scsi_op_desc *d = &scsi_op_table[i];

		if (d->opcode != opcode || !op_available(d, lun))
			continue;
		if (match_sa && (d->flags & SCSI_OPF_HAS_SA) && d->sa != sa)
			continue;
		return d;
	}
	return NULL;
}

/* Does opcode use service actions (any row for it has one)? */
static bool op_has_sa(uint8_t opcode)
{
	const struct scsi_op_desc *d = op_find(NULL, opcode, 0, false);

	return d && (d->flags & SCSI_OPF_HAS_SA);
}

const struct scsi_op_desc *scsi_op_lookup(const struct scsi_lun *lun,
					  const uint8_t *cdb)
{
	return op_find(lun, cdb[0], cdb[1] & CDB_SA_MASK, true);
}

/* ---- REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) ---- */

#define RSOC_CDB_RCTD		0x80
#define RSOC_OPTIONS_MASK	0x07
#define RSOC_ALL		0x0	/* every command */
#define RSOC_ONE_OPCODE		0x1	/* opcode without service action */
#define RSOC_ONE_SA		0x2	/* opcode + service action */
#define RSOC_ONE_EITHER		0x3	/* opcode, + service action if any */
#define RSOC_DESC_CTDP		0x02	/* all-commands descriptor byte 5 */
#define RSOC_DESC_SERVACTV	0x01
#define RSOC_ONE_CTDP		0x80	/* one-command byte 1 */
#define RSOC_SUPPORT_NO		0x1
#define RSOC_SUPPORT_YES	0x3
#define RSOC_TIMEOUTS_LEN	12	/* length 0x0a, no timeouts given */

static uint32_t put_timeouts(uint8_t *p)
{
	memset(p, 0, RSOC_TIMEOUTS_LEN);
	put_be16(p, RSOC_TIMEOUTS_LEN - 2);
	return RSOC_TIMEOUTS_LEN;
}

enum scsi_exec_result spc_report_supported_opcodes(struct scsi_cmd *cmd)
{
	const uint8_t *cdb = cmd->cdb;
	bool rctd = cdb[2] & RSOC_CDB_RCTD;
	uint8_t options = cdb[2] & RSOC_OPTIONS_MASK;
	uint8_t req_op = cdb[3];
	uint16_t req_sa = get_be16(cdb + 4);
	uint32_t alloc = get_be32(cdb + 6);
	uint8_t b[4 + ARRAY_SIZE(scsi_op_table) * (8 + RSOC_TIMEOUTS_LEN)];
	uint32_t off = 0;
	const struct scsi_op_desc *d;

	memset(b, 0, sizeof(b));
	switch (options) {
	case RSOC_ALL:
		off = 4;
		for (unsigned i = 0; i < scsi_op_table_len; i++) {
			d = &scsi_op_table[i];
			if (!op_available(d, cmd->lun))
				continue;
			b[off] = d->opcode;
			if (d->flags & SCSI_OPF_HAS_SA) {
				put_be16(b + off + 2, d->sa);
				b[off + 5] |= RSOC_DESC_SERVACTV;
			}
			if (rctd)
				b[off + 5] |= RSOC_DESC_CTDP;
			put_be16(b + off + 6, d->cdb_len);
			off += 8;
			if (rctd)
				off += put_timeouts(b + off);
		}
		put_be32(b, off - 4);
		return scsi_data_in(cmd, b, off, alloc);
	case RSOC_ONE_OPCODE:
		/* Only for opcodes without service actions. */
		if (op_has_sa(req_op))
			goto bad_field;
		d = op_find(cmd->lun, req_op, 0, false);
		break;
	case RSOC_ONE_SA:
		if (!op_has_sa(req_op))
			goto bad_field;
		d = op_find(cmd->lun, req_op, req_sa, true);
		break;
	case RSOC_ONE_EITHER:
		d = op_find(cmd->lun, req_op, req_sa, true);
		break;
	default:
		goto bad_field;
	}

	if (!d) {
		b[1] = RSOC_SUPPORT_NO;
		return scsi_data_in(cmd, b, 4, alloc);
	}
	b[1] = RSOC_SUPPORT_YES | (rctd ? RSOC_ONE_CTDP : 0);
	put_be16(b + 2, d->cdb_len);
	memcpy(b + 4, d->usage, d->cdb_len);
	off = 4 + d->cdb_len;
	if (rctd)
		off += put_timeouts(b + off);
	return scsi_data_in(cmd, b, off, alloc);

bad_field:
	scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 2, 2);
	return SCSI_EXEC_DONE;
}
