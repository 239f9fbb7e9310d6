/* scsi_maint.c - MAINTENANCE IN reports that describe the target rather
 * than the medium: REPORT TARGET PORT GROUPS (SPC-4 6.36: one implicit
 * ALUA group, active/optimized, or with alua_group this node's group and
 * the other node's, scsi_alua.c) and REPORT SUPPORTED TASK MANAGEMENT
 * FUNCTIONS (SPC-4 6.35).  REPORT SUPPORTED OPERATION CODES lives with the
 * command table in scsi_ops.c. */
#include <string.h>

#include "scsi_internal.h"

/* REPORT TARGET PORT GROUPS */
#define RTPG_FORMAT_MASK	0xe0	/* CDB byte 1: PARAMETER DATA FORMAT */
#define RTPG_FORMAT_EXTENDED	0x20
#define RTPG_EXT_FORMAT_TYPE	0x10	/* extended header byte 4 */
#define RTPG_PREF		0x80	/* descriptor byte 0 */
#define ALUA_STATE_OPTIMIZED	0x00
#define ALUA_AO_SUP		0x01	/* descriptor byte 1: supported states */
#define ALUA_S_SUP		0x04
#define ALUA_T_SUP		0x80
#define ALUA_SUP		(ALUA_T_SUP | ALUA_S_SUP | ALUA_AO_SUP)
#define RTPG_STATUS_NONE	0x00
#define RTPG_TRANSITION_SECS	0

/* REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, byte 0 */
#define TMF_ATS			0x80	/* ABORT TASK */
#define TMF_ATSS		0x40	/* ABORT TASK SET */
#define TMF_CACAS		0x20	/* CLEAR ACA */
#define TMF_CTSS		0x10	/* CLEAR TASK SET */
#define TMF_LURS		0x08	/* LOGICAL UNIT RESET */
#define TMF_TRS			0x02	/* TARGET RESET */
#define TMF_REPD		0x80	/* CDB byte 2: extended parameter data */
#define TMF_EXT_ADDITIONAL_LEN	0x0c

/* One target port group descriptor with one target port. */
static unsigned rtpg_desc(uint8_t *d, uint8_t state, uint8_t byte0_flags,
			  uint8_t supported, uint16_t group, uint8_t status,
			  uint16_t rel)
{
	d[0] = byte0_flags | state;
	d[1] = supported;
	put_be16(d + 2, group);
	d[5] = status;
	d[7] = 1;			/* target port count */
	put_be16(d + 8 + 2, rel);
	return 12;
}

enum scsi_exec_result spc_report_target_port_groups(struct scsi_cmd *cmd)
{
	uint8_t b[40];
	uint32_t alloc = get_be32(cmd->cdb + 6);
	bool ext = (cmd->cdb[1] & RTPG_FORMAT_MASK) == RTPG_FORMAT_EXTENDED;
	unsigned hdr = ext ? 8 : 4, off;
	struct scsi_lun *lun = cmd->lun;

	if ((cmd->cdb[1] & RTPG_FORMAT_MASK) > RTPG_FORMAT_EXTENDED) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 7);
		return SCSI_EXEC_DONE;
	}
	memset(b, 0, sizeof(b));
	if (ext) {
		b[4] = RTPG_EXT_FORMAT_TYPE;
		b[5] = RTPG_TRANSITION_SECS;
	}
	off = hdr;
	if (!lun || !lun_settings_get(lun)->alua_group) {
		/* one group, one port: every path is active/optimized,
		 * which is what an initiator's ALUA handler expects of a
		 * single target */
		off += rtpg_desc(b + off, ALUA_STATE_OPTIMIZED, RTPG_PREF,
				 ALUA_AO_SUP, scsi_alua_group(cmd),
				 RTPG_STATUS_NONE, scsi_alua_rel_port(cmd));
	} else {
		/* two nodes, a group each (scsi_alua.c); the port of a group
		 * is numbered like the group */
		off += rtpg_desc(b + off, scsi_alua_state(lun), 0, ALUA_SUP,
				 lun_settings_get(lun)->alua_group, scsi_alua_status(lun),
				 lun_settings_get(lun)->alua_group);
		if (lun_settings_get(lun)->alua_peer_group)
			off += rtpg_desc(b + off, scsi_alua_peer_state(lun), 0,
					 ALUA_SUP, lun_settings_get(lun)->alua_peer_group,
					 RTPG_STATUS_NONE,
					 lun_settings_get(lun)->alua_peer_group);
	}
	put_be32(b, off - 4);		/* RETURN DATA LENGTH */
	return scsi_data_in(cmd, b, off, alloc);
}

enum scsi_exec_result spc_report_supported_tmfs(struct scsi_cmd *cmd)
{
	uint8_t b[16];
	uint32_t alloc = get_be32(cmd->cdb + 6);
	bool repd = cmd->cdb[2] & TMF_REPD;

	memset(b, 0, sizeof(b));
	/* what iscsi_scsi.c answers FUNCTION COMPLETE for (RFC 7143 11.5) */
	b[0] = TMF_ATS | TMF_ATSS | TMF_CACAS | TMF_CTSS | TMF_LURS | TMF_TRS;
	if (repd)
		b[3] = TMF_EXT_ADDITIONAL_LEN;
	return scsi_data_in(cmd, b, repd ? 16 : 4, alloc);
}
