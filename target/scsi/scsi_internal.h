/* scsi_internal.h - shared between target/scsi/; not for other modules.
 *
 * The SCSI layer is split by standard: scsi_cmd.c (dispatch, buffers,
 * abort, unit attentions), scsi_spc.c (SPC-4 primary commands),
 * scsi_sbc.c (SBC-3 block commands) and scsi_sense.c (sense data and the
 * one errno -> status mapper). */
#ifndef HOLDFAST_SCSI_INTERNAL_H
#define HOLDFAST_SCSI_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "hang.h"
#include "scsi.h"

/* ---- operation codes (SPC-4 / SBC-3) ---- */
#define SCSI_OP_TEST_UNIT_READY		0x00
#define SCSI_OP_REQUEST_SENSE		0x03
#define SCSI_OP_READ_6			0x08
#define SCSI_OP_WRITE_6			0x0a
#define SCSI_OP_INQUIRY			0x12
#define SCSI_OP_MODE_SENSE_6		0x1a
#define SCSI_OP_START_STOP_UNIT		0x1b
#define SCSI_OP_PREVENT_ALLOW		0x1e
#define SCSI_OP_READ_CAPACITY_10	0x25
#define SCSI_OP_READ_10			0x28
#define SCSI_OP_WRITE_10		0x2a
#define SCSI_OP_WRITE_VERIFY_10		0x2e
#define SCSI_OP_VERIFY_10		0x2f
#define SCSI_OP_PRE_FETCH_10		0x34
#define SCSI_OP_SYNCHRONIZE_CACHE_10	0x35
#define SCSI_OP_READ_DEFECT_DATA_10	0x37
#define SCSI_OP_WRITE_SAME_10		0x41
#define SCSI_OP_UNMAP			0x42
#define SCSI_OP_MODE_SENSE_10		0x5a
#define SCSI_OP_READ_16			0x88
#define SCSI_OP_COMPARE_AND_WRITE	0x89
#define SCSI_OP_WRITE_16		0x8a
#define SCSI_OP_ORWRITE_16		0x8b
#define SCSI_OP_WRITE_VERIFY_16		0x8e
#define SCSI_OP_VERIFY_16		0x8f
#define SCSI_OP_PRE_FETCH_16		0x90
#define SCSI_OP_SYNCHRONIZE_CACHE_16	0x91
#define SCSI_OP_WRITE_SAME_16		0x93
#define SCSI_OP_WRITE_ATOMIC_16		0x9c
#define SCSI_OP_SERVICE_ACTION_IN_16	0x9e
#define SCSI_OP_REPORT_LUNS		0xa0
#define SCSI_OP_MAINTENANCE_IN		0xa3
#define SCSI_OP_MAINTENANCE_OUT		0xa4
#define SCSI_OP_READ_12			0xa8
#define SCSI_OP_WRITE_12		0xaa
#define SCSI_OP_WRITE_VERIFY_12		0xae
#define SCSI_OP_VERIFY_12		0xaf
#define SCSI_OP_READ_DEFECT_DATA_12	0xb7

/* SERVICE ACTION IN(16) service actions (SBC-3 5.16) */
#define SCSI_SAI_READ_CAPACITY_16	0x10
#define SCSI_SAI_GET_LBA_STATUS		0x12
/* MAINTENANCE IN service actions (SPC-4 6.35) */
#define SCSI_MI_REPORT_SUPPORTED_OPCODES 0x0c
#define SCSI_MI_REPORT_TARGET_PORT_GROUPS 0x0a
#define SCSI_MI_REPORT_SUPPORTED_TMFS	0x0d
/* MAINTENANCE OUT service actions (SPC-4 6.40) */
#define SCSI_MO_SET_TARGET_PORT_GROUPS	0x0a

/* ---- sense keys (SPC-4 4.5.6) ---- */
#define SENSE_KEY_NO_SENSE		0x0
#define SENSE_KEY_RECOVERED_ERROR	0x1
#define SENSE_KEY_NOT_READY		0x2
#define SENSE_KEY_MEDIUM_ERROR		0x3
#define SENSE_KEY_HARDWARE_ERROR	0x4
#define SENSE_KEY_ILLEGAL_REQUEST	0x5
#define SENSE_KEY_UNIT_ATTENTION	0x6
#define SENSE_KEY_DATA_PROTECT		0x7
#define SENSE_KEY_ABORTED_COMMAND	0xb
#define SENSE_KEY_MISCOMPARE		0xe

/* ---- additional sense codes, as ASC << 8 | ASCQ (SPC-4 Annex D) ---- */
#define ASC_NO_ADDITIONAL_SENSE			0x0000
#define ASC_LUN_NOT_READY_MANUAL_INTERVENTION	0x0403
#define ASC_LUN_NOT_ACCESSIBLE_TRANSITION	0x040a	/* ALUA transitioning */
#define ASC_LUN_NOT_ACCESSIBLE_STANDBY		0x040b	/* ALUA standby */
#define ASC_LUN_COMMUNICATION_FAILURE		0x0800
#define ASC_WRITE_ERROR				0x0c00
#define ASC_MISCOMPARE_DURING_VERIFY		0x1d00
#define ASC_UNRECOVERED_READ_ERROR		0x1100
#define ASC_PARAMETER_LIST_LENGTH_ERROR		0x1a00
#define ASC_INVALID_OPCODE			0x2000
#define ASC_LBA_OUT_OF_RANGE			0x2100
#define ASC_INVALID_FIELD_IN_CDB		0x2400
#define ASC_LUN_NOT_SUPPORTED			0x2500
#define ASC_INVALID_FIELD_IN_PARAMETER_LIST	0x2600
#define ASC_WRITE_PROTECTED			0x2700
#define ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT	0x2707
#define ASC_POWER_ON_RESET			0x2900
#define ASC_BUS_DEVICE_RESET_FUNCTION		0x2903
#define ASC_MODE_PARAMETERS_CHANGED		0x2a01
#define ASC_CAPACITY_DATA_CHANGED		0x2a09
#define ASC_ASYMMETRIC_ACCESS_STATE_CHANGED	0x2a06
#define ASC_STPG_FAILED				0x670a
#define ASC_SAVING_PARAMS_NOT_SUPPORTED		0x3900
#define ASC_MEDIUM_NOT_PRESENT			0x3a00
#define ASC_INTERNAL_TARGET_FAILURE		0x4400
#define ASC_MEDIUM_REMOVAL_PREVENTED		0x5302
#define ASC_REPORTED_LUNS_DATA_CHANGED		0x3f0e

/* Is the LUN thin (LBPME; UNMAP, WRITE SAME with UNMAP, GET LBA STATUS)?
 * A store that reports its own provisioning decides (a gateway LUN is
 * thin when the SAN's LUN is, backend.h BE_THIN_*); otherwise the LUN's
 * thin_provisioning setting does. */
static inline bool scsi_lun_thin(const struct scsi_lun *lun)
{
	const struct backend *be = lun ? lun->be : NULL;

	if (be && be->thin != BE_THIN_SETTING)
		return be->thin == BE_THIN_YES;
	return lun && lun_settings_get(lun)->thin_provisioning;
}

/* ---- dispatch table ---- */

/* What a handler returns: the command finished (status and sense set; the
 * dispatcher calls done()), or it went asynchronous and the handler's
 * completion path calls scsi_cmd_complete(). */
enum scsi_exec_result { SCSI_EXEC_DONE = 0, SCSI_EXEC_ASYNC = 1 };

typedef enum scsi_exec_result (*scsi_handler_fn)(struct scsi_cmd *cmd);

/* Descriptor flags */
#define SCSI_OPF_NO_LUN		0x01	/* also served when cmd->lun is NULL */
#define SCSI_OPF_NO_UA		0x02	/* not blocked by a unit attention
					 * (SAM-5 5.14 / SPC-4 7.5.2) */
#define SCSI_OPF_MEDIA		0x04	/* reaches the backend (hang engine) */
#define SCSI_OPF_DATA_OUT	0x08	/* carries Data-Out */
#define SCSI_OPF_WRITE		0x10	/* modifies the medium: read-only LUNs
					 * answer DATA PROTECT */
#define SCSI_OPF_NEEDS_READY	0x20	/* NOT READY while the LUN is offline */
#define SCSI_OPF_HAS_SA		0x40	/* sa field is a service action in
					 * CDB byte 1 bits 4:0 */
#define SCSI_OPF_THIN		0x80	/* only on thin LUNs (LBPU) */

/* One supported command.  The same table serves dispatch and (later)
 * REPORT SUPPORTED OPERATION CODES (SPC-4 6.35), hence cdb_len. */
struct scsi_op_desc {
	uint8_t opcode;
	uint8_t sa;
	uint8_t cdb_len;
	uint8_t flags;
	scsi_handler_fn fn;
	const char *name;
	uint8_t usage[16];	/* CDB usage data (SPC-4 6.35.3) */
};

/* The table (scsi_ops.c), sorted by opcode then service action. */
extern const struct scsi_op_desc scsi_op_table[];
extern const unsigned scsi_op_table_len;
/* The row for cdb as served on lun (NULL lun: an absent LUN). */
const struct scsi_op_desc *scsi_op_lookup(const struct scsi_lun *lun,
					  const uint8_t *cdb);

/* Execution stages of a command (cmd->stage).  The transport hands the
 * SCSI layer a zeroed SCSI-private area, i.e. SCSI_STAGE_NEW. */
enum scsi_stage {
	SCSI_STAGE_NEW = 0,
	SCSI_STAGE_EXEC,	/* being decoded on this reactor */
	SCSI_STAGE_MEDIA,	/* mio handed to hang_submit() */
	SCSI_STAGE_WAIT,	/* queued for the COMPARE AND WRITE lock */
	SCSI_STAGE_RESUMING,	/* given the lock, resume call pending */
	SCSI_STAGE_DONE,	/* done() called */
	SCSI_STAGE_XCOPY,	/* EXTENDED COPY running (scsi_xcopy.c) */
	SCSI_STAGE_ALUA,	/* SET TARGET PORT GROUPS handing over
				 * (scsi_alua.c): completes by itself */
	SCSI_STAGE_STATUS,	/* GET LBA STATUS waiting for the store
				 * (scsi_sbc_status.c): completes by itself
				 * when the store answers */
};

/* Abort an EXTENDED COPY in SCSI_STAGE_XCOPY (scsi_xcopy.c): its chunk in
 * flight, which may be on another LUN, is dropped in the hang engine and
 * the copy then completes cmd with TASK ABORTED. */
void xcopy_abort(struct scsi_cmd *cmd);

/* Finish an asynchronous command: calls cmd->done() exactly once. */
void scsi_cmd_complete(struct scsi_cmd *cmd);

/* Make cmd->buf hold at least len zeroed bytes for Data-In.  0/-ENOMEM. */
int scsi_buf_ensure(struct scsi_cmd *cmd, uint32_t len);

/* Copy a Data-In response of len bytes, cut to the CDB's allocation
 * length alloc_len (SPC-4 4.2.5.6).  Returns SCSI_EXEC_DONE; on allocation
 * failure the status is TASK SET FULL. */
enum scsi_exec_result scsi_data_in(struct scsi_cmd *cmd, const uint8_t *data,
				   uint32_t len, uint32_t alloc_len);

/* COMPARE AND WRITE runs one at a time per LUN (scsi_cmd.c).  lock:
 * true if cmd may go on now; false if it was queued, and start(cmd) will
 * run later on cmd's reactor (its SCSI_EXEC_DONE result completes cmd).
 * The holder calls unlock exactly once when its compare/write is over. */
bool scsi_caw_lock(struct scsi_cmd *cmd, scsi_handler_fn start);
void scsi_caw_unlock(struct scsi_lun *lun);
/* The write gate (scsi_cmd.c): every media write that does not hold the
 * COMPARE AND WRITE lock enters shared.  enter: true = go on; false =
 * queued (cmd->mio is later handed to hang_submit() on cmd's reactor).
 * exit when the write completes. */
bool scsi_write_gate_enter(struct scsi_cmd *cmd);
void scsi_write_gate_exit(struct scsi_lun *lun);

/* Removable medium state of a LUN (scsi_cmd.c).  load_eject: -EBUSY
 * (nothing changes) while any I_T nexus prevents medium removal.
 * nexus_lost: that nexus's PREVENT ends (SPC-4 6.13) and its unit
 * attention registration is dropped; a LUN reset ends every PREVENT. */
bool scsi_medium_present(struct scsi_lun *lun);
int scsi_medium_load_eject(struct scsi_lun *lun, bool load);
void scsi_medium_prevent(struct scsi_lun *lun, uint64_t nexus_id,
			 bool prevent);
void scsi_medium_nexus_lost(struct scsi_lun *lun, uint64_t nexus_id);

/* ---- sense (scsi_sense.c) ---- */
/* CHECK CONDITION with sense key and ASC<<8|ASCQ (the ASC_* constants). */
void scsi_sense(struct scsi_cmd *cmd, uint8_t key, uint16_t asc_ascq);
/* ILLEGAL REQUEST with a sense-key-specific field pointer (SPC-4
 * 4.5.2.4.2): byte `byte`, bit `bit` (-1: whole byte) of the CDB (in_cdb)
 * or of the parameter list. */
void scsi_sense_field(struct scsi_cmd *cmd, uint16_t asc_ascq, bool in_cdb,
		      uint16_t byte, int bit);
/* Like scsi_sense() with the INFORMATION field (e.g. the failing LBA). */
void scsi_sense_info(struct scsi_cmd *cmd, uint8_t key, uint16_t asc_ascq,
		     uint64_t info);
/* Build sense bytes into buf (SCSI_SENSE_MAX) without touching status;
 * returns the length.  For REQUEST SENSE and unit attentions. */
uint32_t scsi_sense_build(uint8_t *buf, bool desc, uint8_t key,
			  uint16_t asc_ascq);
/* Is the LUN set to descriptor format sense (control page D_SENSE)? */
bool scsi_cmd_sense_desc(const struct scsi_cmd *cmd);

/* ---- unit attentions (scsi_cmd.c) ---- */
/* Take the oldest pending unit attention of cmd's nexus on cmd's LUN
 * (registering the nexus first).  Returns true and *asc_ascq if one was
 * pending. */
bool scsi_ua_take(struct scsi_lun *lun, uint64_t nexus_id,
		  uint16_t *asc_ascq);
/* Queue a unit attention for every nexus known to lun except `except`
 * (0 = none). */
void scsi_ua_raise(struct scsi_lun *lun, uint16_t asc_ascq, uint64_t except);
/* Queue a unit attention for the one I_T nexus nexus_id (reservations:
 * SPC-4 5.13.11 tells particular registrants). */
void scsi_ua_raise_nexus(struct scsi_lun *lun, uint16_t asc_ascq,
			 uint64_t nexus_id);
/* Where the LUN's reservation state (scsi_pr.c) hangs in the SCSI layer's
 * LUN state; NULL if that state cannot be allocated. */
struct scsi_pr;
struct scsi_pr **scsi_lun_pr_slot(struct scsi_lun *lun);

/* The write gate holds no media write and no COMPARE AND WRITE
 * (scsi_cmd.c): a handover's drain waits for it (scsi_alua.c). */
bool scsi_write_gate_idle(struct scsi_lun *lun);
/* Count a write in the gate without waiting for an exclusive holder
 * (EXTENDED COPY's chunks, which COMPARE AND WRITE does not order today);
 * scsi_write_gate_exit() when it completes. */
void scsi_write_gate_join(struct scsi_lun *lun);

/* ---- ALUA (scsi_alua.c) ---- */
/* Asymmetric access states (SPC-4 6.36.2), as in RTPG byte 0 */
#define ALUA_AO			0x0	/* active/optimized */
#define ALUA_STANDBY		0x2
#define ALUA_TRANSITIONING	0xf
struct scsi_alua;
/* Where the LUN's ALUA state hangs (scsi_cmd.c); NULL without memory. */
struct scsi_alua **scsi_lun_alua_slot(struct scsi_lun *lun);
void scsi_alua_free(struct scsi_alua *a);
/* The node gives a shared store up (scsi_lun.c): save the persistent
 * bitmaps to their shared sidecar first if save, then stop writing it
 * until scsi_lun_refresh(SCSI_REFRESH_SHARED) re-reads it. */
void scsi_lun_shared_release(struct scsi_lun *lun, bool save);
/* The file <base><suffix> of the state the LUN shares with the other node
 * (lun_shared_state_path, fixed when ALUA was set up; reads no settings
 * snapshot), malloc'd; NULL before ALUA is set up. */
char *scsi_alua_state_file(struct scsi_lun *lun, const char *suffix);
/* This node's and the other node's state; the RTPG status code of the
 * last change.  A LUN without alua_group is always active/optimized. */
uint8_t scsi_alua_state(struct scsi_lun *lun);
uint8_t scsi_alua_peer_state(struct scsi_lun *lun);
/* Does this node serve the LUN's medium (no ALUA set up for it, or
 * active/optimized)?  Reads no settings snapshot: any thread. */
bool scsi_alua_serving(struct scsi_lun *lun);
uint8_t scsi_alua_status(struct scsi_lun *lun);
/* A resize of the LUN's store and a change of this node's ALUA state
 * (handover, SET TARGET PORT GROUPS, a lost lock) exclude each other
 * (README "Resizing a LUN").  scsi_alua_resize_begin() waits for a
 * transition in progress, then answers: 1 = this node owns the shared
 * store and keeps it until scsi_alua_resize_end() (transitions wait),
 * 0 = no ALUA on this LUN (nothing held; do not call _end), or -EBUSY
 * with *errmsg when the node is not active or no longer holds the
 * ownership lock.  Management thread, never from inside a transition. */
int scsi_alua_resize_begin(struct scsi_lun *lun, const char **errmsg);
void scsi_alua_resize_end(struct scsi_lun *lun);
/* The identity shared by both nodes (16 hex digits), or NULL. */
const char *scsi_alua_identity(struct scsi_lun *lun);
/* Relative target port identifier and target port group of cmd's port. */
uint16_t scsi_alua_rel_port(const struct scsi_cmd *cmd);
uint16_t scsi_alua_group(const struct scsi_cmd *cmd);
/* Dispatch: true (NOT READY 04/0B or 04/0A set) if this port's state
 * refuses cmd, whose table row has flags. */
bool scsi_alua_refuse(struct scsi_cmd *cmd, unsigned flags);
/* A media write counted in the write gate: true (sense set) if the LUN
 * is no longer active/optimized. */
bool scsi_alua_media_refused(struct scsi_cmd *cmd);
/* The store answered res to a media command of this node.  EBADE
 * (RESERVATION CONFLICT) on a LUN owned by persistent reservation means
 * another node preempted this one: the LUN stops serving at once (the
 * ALUA watchdog finishes the change to standby and logs why) and true is
 * returned; cmd then gets NOT READY 04/0A from scsi_alua_media_refused().
 * Any reactor; takes no lock. */
bool scsi_alua_store_lost(struct scsi_lun *lun, int res);
enum scsi_exec_result spc_set_target_port_groups(struct scsi_cmd *cmd);

/* ---- command handlers ---- */
/* scsi_spc.c */
enum scsi_exec_result spc_test_unit_ready(struct scsi_cmd *cmd);
enum scsi_exec_result spc_request_sense(struct scsi_cmd *cmd);
enum scsi_exec_result spc_inquiry(struct scsi_cmd *cmd);
enum scsi_exec_result spc_mode_sense(struct scsi_cmd *cmd);
enum scsi_exec_result spc_report_luns(struct scsi_cmd *cmd);
enum scsi_exec_result spc_start_stop_unit(struct scsi_cmd *cmd);
enum scsi_exec_result spc_prevent_allow(struct scsi_cmd *cmd);
/* scsi_ops.c */
enum scsi_exec_result spc_report_supported_opcodes(struct scsi_cmd *cmd);
/* scsi_maint.c */
enum scsi_exec_result spc_report_target_port_groups(struct scsi_cmd *cmd);
enum scsi_exec_result spc_report_supported_tmfs(struct scsi_cmd *cmd);

/* scsi_sbc.c */
enum scsi_exec_result sbc_read_write(struct scsi_cmd *cmd);
enum scsi_exec_result sbc_read_capacity_10(struct scsi_cmd *cmd);
enum scsi_exec_result sbc_read_capacity_16(struct scsi_cmd *cmd);
enum scsi_exec_result sbc_synchronize_cache(struct scsi_cmd *cmd);
enum scsi_exec_result sbc_verify(struct scsi_cmd *cmd);
enum scsi_exec_result sbc_pre_fetch(struct scsi_cmd *cmd);

/* Shared by the SBC files: range check, and media I/O through the hang
 * engine.  complete NULL: the default completion (status from res, read
 * length, counters).  sbc_media_finish() is that default's common tail,
 * for completions that did their own part first. */
bool sbc_lba_range_ok(const struct scsi_lun *lun, uint64_t lba, uint64_t n);
enum scsi_exec_result sbc_media_submit(struct scsi_cmd *cmd, enum be_op op,
				       unsigned flags, uint64_t offset,
				       uint64_t length, void *data,
				       void (*complete)(struct media_io *m,
							int res));
void sbc_media_finish(struct scsi_cmd *cmd, int res);

/* Largest transfer one command may ask for, in bytes (reported in the
 * Block Limits VPD page; bounds the Data-In buffer and WRITE SAME). */
#define SBC_MAX_TRANSFER_BYTES (8u << 20)
/* UNMAP limits (Block Limits VPD page). */
#define SBC_MAX_UNMAP_DESCRIPTORS 256
#define SBC_MAX_UNMAP_LBA_COUNT 0xffffffffu	/* no limit */

/* MAXIMUM COMPARE AND WRITE LENGTH (Block Limits VPD page), blocks. */
#define SBC_MAX_CAW_BLOCKS 128

/* scsi_sbc_caw.c */
enum scsi_exec_result sbc_compare_and_write(struct scsi_cmd *cmd);

/* scsi_sbc_lbp.c */
enum scsi_exec_result sbc_unmap(struct scsi_cmd *cmd);
enum scsi_exec_result sbc_write_same(struct scsi_cmd *cmd);

/* scsi_sbc_status.c */
enum scsi_exec_result sbc_get_lba_status(struct scsi_cmd *cmd);
enum scsi_exec_result sbc_read_defect_data(struct scsi_cmd *cmd);

/* scsi_sbc_atomic.c */
enum scsi_exec_result sbc_orwrite(struct scsi_cmd *cmd);
enum scsi_exec_result sbc_write_atomic(struct scsi_cmd *cmd);
/* MAXIMUM ATOMIC TRANSFER LENGTH (Block Limits VPD page) in blocks of
 * block_size: what one WRITE ATOMIC may write as one backend request. */
uint32_t sbc_max_atomic_blocks(uint32_t block_size);


#endif
