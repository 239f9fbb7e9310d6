/* iscsi_pdu.h - iSCSI PDU layout (RFC 7143 section 11): opcodes, flags and
 * named byte offsets into the 48-byte Basic Header Segment.
 *
 * Headers are decoded and encoded field by field with the util.h
 * accessors; nothing is ever cast over the receive buffer. */
#ifndef HOLDFAST_ISCSI_PDU_H
#define HOLDFAST_ISCSI_PDU_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#define ISCSI_BHS_LEN 48
#define ISCSI_DIGEST_LEN 4
#define ISCSI_RSVD_TAG 0xffffffffu	/* reserved ITT / TTT value */

/* byte 0: I bit and opcode (11.2.1.2) */
#define ISCSI_OP_IMMEDIATE 0x40
#define ISCSI_OP_MASK 0x3f

/* initiator opcodes */
#define ISCSI_OP_NOP_OUT 0x00
#define ISCSI_OP_SCSI_CMD 0x01
#define ISCSI_OP_TMF_REQ 0x02
#define ISCSI_OP_LOGIN_REQ 0x03
#define ISCSI_OP_TEXT_REQ 0x04
#define ISCSI_OP_DATA_OUT 0x05
#define ISCSI_OP_LOGOUT_REQ 0x06
#define ISCSI_OP_SNACK_REQ 0x10
/* target opcodes */
#define ISCSI_OP_NOP_IN 0x20
#define ISCSI_OP_SCSI_RSP 0x21
#define ISCSI_OP_TMF_RSP 0x22
#define ISCSI_OP_LOGIN_RSP 0x23
#define ISCSI_OP_TEXT_RSP 0x24
#define ISCSI_OP_DATA_IN 0x25
#define ISCSI_OP_LOGOUT_RSP 0x26
#define ISCSI_OP_R2T 0x31
#define ISCSI_OP_ASYNC_MSG 0x32
#define ISCSI_OP_REJECT 0x3f

/* common BHS offsets */
#define BHS_OPCODE 0
#define BHS_FLAGS 1
#define BHS_TOTAL_AHS_LEN 4
#define BHS_DATA_SEG_LEN 5	/* 24 bits */
#define BHS_LUN 8
#define BHS_ITT 16
#define BHS_TTT 20
#define BHS_CMD_SN 24		/* requests */
#define BHS_STAT_SN 24		/* responses */
#define BHS_EXP_STAT_SN 28	/* requests */
#define BHS_EXP_CMD_SN 28	/* responses */
#define BHS_MAX_CMD_SN 32	/* responses */

#define ISCSI_FLAG_FINAL 0x80

/* SCSI Command (11.3) */
#define SCSI_CMD_FLAG_READ 0x40
#define SCSI_CMD_FLAG_WRITE 0x20
#define SCSI_CMD_ATTR_MASK 0x07
#define SCSI_CMD_EDTL 20
#define SCSI_CMD_CDB 32
#define SCSI_CMD_CDB_LEN 16
#define ISCSI_AHS_EXTENDED_CDB 1
#define ISCSI_AHS_BIDI_READ_LEN 2

/* SCSI Response (11.4) */
#define SCSI_RSP_FLAG_BIDI_OVERFLOW 0x10
#define SCSI_RSP_FLAG_BIDI_UNDERFLOW 0x08
#define SCSI_RSP_FLAG_OVERFLOW 0x04
#define SCSI_RSP_FLAG_UNDERFLOW 0x02
#define SCSI_RSP_RESPONSE 2
#define SCSI_RSP_STATUS 3
#define SCSI_RSP_EXP_DATA_SN 36
#define SCSI_RSP_BIDI_RESIDUAL 40
#define SCSI_RSP_RESIDUAL 44
#define ISCSI_RESPONSE_COMPLETED 0x00
#define ISCSI_RESPONSE_TARGET_FAILURE 0x01

/* Data-In / Data-Out (11.7) */
#define DATA_FLAG_ACK 0x40
#define DATA_FLAG_OVERFLOW 0x04
#define DATA_FLAG_UNDERFLOW 0x02
#define DATA_FLAG_STATUS 0x01
#define DATA_STATUS 3
#define DATA_DATA_SN 36
#define DATA_BUFFER_OFFSET 40
#define DATA_RESIDUAL 44

/* R2T (11.8) */
#define R2T_R2T_SN 36
#define R2T_BUFFER_OFFSET 40
#define R2T_DESIRED_LEN 44

/* Task Management (11.5, 11.6) */
#define TMF_FUNC_MASK 0x7f
#define TMF_REF_TASK_TAG 20
#define TMF_REF_CMD_SN 32
#define TMF_EXP_DATA_SN 36
#define TMF_RSP_RESPONSE 2
enum iscsi_tmf_func {
	ISCSI_TMF_ABORT_TASK = 1,
	ISCSI_TMF_ABORT_TASK_SET = 2,
	ISCSI_TMF_CLEAR_ACA = 3,
	ISCSI_TMF_CLEAR_TASK_SET = 4,
	ISCSI_TMF_LUN_RESET = 5,
	ISCSI_TMF_TARGET_WARM_RESET = 6,
	ISCSI_TMF_TARGET_COLD_RESET = 7,
	ISCSI_TMF_TASK_REASSIGN = 8,
};
enum iscsi_tmf_response {
	ISCSI_TMF_RSP_COMPLETE = 0,
	ISCSI_TMF_RSP_NO_TASK = 1,
	ISCSI_TMF_RSP_NO_LUN = 2,
	ISCSI_TMF_RSP_TASK_ALLEGIANT = 3,
	ISCSI_TMF_RSP_NO_REASSIGN = 4,
	ISCSI_TMF_RSP_NOT_SUPPORTED = 5,
	ISCSI_TMF_RSP_AUTH_FAILED = 6,
	ISCSI_TMF_RSP_REJECTED = 255,
};

/* Login (11.12, 11.13) */
#define LOGIN_FLAG_TRANSIT 0x80
#define LOGIN_FLAG_CONTINUE 0x40
#define LOGIN_CSG_SHIFT 2
#define LOGIN_CSG_MASK 0x0c
#define LOGIN_NSG_MASK 0x03
#define LOGIN_VERSION_MAX 2
#define LOGIN_VERSION_MIN 3	/* request; response: VersionActive */
#define LOGIN_ISID 8
#define LOGIN_TSIH 14
#define LOGIN_CID 20
#define LOGIN_STATUS_CLASS 36	/* response */
#define LOGIN_STATUS_DETAIL 37
enum iscsi_login_stage {
	ISCSI_STAGE_SECURITY = 0,
	ISCSI_STAGE_OPERATIONAL = 1,
	ISCSI_STAGE_FULL_FEATURE = 3,
};
/* Login status class/detail (11.13.5) as one 16-bit value */
#define LOGIN_STATUS_SUCCESS 0x0000
#define LOGIN_STATUS_INIT_ERR 0x0200
#define LOGIN_STATUS_AUTH_FAILED 0x0201
#define LOGIN_STATUS_TGT_FORBIDDEN 0x0202
#define LOGIN_STATUS_TGT_NOT_FOUND 0x0203
#define LOGIN_STATUS_TGT_REMOVED 0x0204
#define LOGIN_STATUS_NO_VERSION 0x0205
#define LOGIN_STATUS_TOO_MANY_CONN 0x0206
#define LOGIN_STATUS_MISSING_PARAM 0x0207
#define LOGIN_STATUS_CANT_INCLUDE 0x0208
#define LOGIN_STATUS_SESSION_TYPE 0x0209
#define LOGIN_STATUS_NO_SESSION 0x020a
#define LOGIN_STATUS_INVALID_REQ 0x020b
#define LOGIN_STATUS_TARGET_ERROR 0x0300
#define LOGIN_STATUS_SVC_UNAVAIL 0x0301
#define LOGIN_STATUS_NO_RESOURCES 0x0302

/* Text (11.10, 11.11) */
#define TEXT_FLAG_CONTINUE 0x40

/* Logout (11.14, 11.15) */
#define LOGOUT_REASON_MASK 0x7f
#define LOGOUT_CID 20
#define LOGOUT_RSP_RESPONSE 2
#define LOGOUT_RSP_TIME2WAIT 40
#define LOGOUT_RSP_TIME2RETAIN 42
enum iscsi_logout_reason {
	ISCSI_LOGOUT_CLOSE_SESSION = 0,
	ISCSI_LOGOUT_CLOSE_CONNECTION = 1,
	ISCSI_LOGOUT_REMOVE_FOR_RECOVERY = 2,
};

/* Async Message (11.9) */
#define ASYNC_EVENT 36
#define ASYNC_VCODE 37
#define ASYNC_PARAM1 38
#define ASYNC_PARAM2 40
#define ASYNC_PARAM3 42
#define ISCSI_ASYNC_LOGOUT_REQUEST 1
#define ISCSI_ASYNC_DROP_CONNECTION 2
#define ISCSI_ASYNC_DROP_ALL 3

/* Reject (11.17) */
#define REJECT_REASON 2
#define REJECT_DATA_SN 36
enum iscsi_reject_reason {
	ISCSI_REJECT_DIGEST_ERROR = 0x02,
	ISCSI_REJECT_SNACK_REJECT = 0x03,
	ISCSI_REJECT_PROTOCOL_ERROR = 0x04,
	ISCSI_REJECT_CMD_NOT_SUPPORTED = 0x05,
	ISCSI_REJECT_IMM_CMD_REJECT = 0x06,
	ISCSI_REJECT_TASK_IN_PROGRESS = 0x07,
	ISCSI_REJECT_INVALID_DATA_ACK = 0x08,
	ISCSI_REJECT_INVALID_PDU_FIELD = 0x09,
	ISCSI_REJECT_OUT_OF_RESOURCES = 0x0a,
	ISCSI_REJECT_NEGOTIATION_RESET = 0x0b,
	ISCSI_REJECT_WAITING_FOR_LOGOUT = 0x0c,
};

/* A PDU being sent: the BHS, optional data and bookkeeping.  data is
 * freed with the PDU when data_owned, else it points into a task buffer
 * that outlives the PDU. */
struct iscsi_pdu {
	struct list_head link;		/* connection's tx queue */
	uint8_t bhs[ISCSI_BHS_LEN];
	uint8_t *data;
	uint32_t data_len;		/* DataSegmentLength (unpadded) */
	bool data_owned;
	bool hd, dd;			/* sent with header / data digest */
	uint8_t hdr_digest[4];		/* filled when digests are on */
	uint8_t data_digest[4];
	uint32_t sent;			/* bytes of the wire image already sent */
	struct iscsi_task *task;	/* Data-In: the task whose buffer it is */
};

static inline uint8_t pdu_opcode(const uint8_t *bhs)
{
	return bhs[BHS_OPCODE] & ISCSI_OP_MASK;
}
static inline uint32_t pdu_data_len(const uint8_t *bhs)
{
	return get_be24(bhs + BHS_DATA_SEG_LEN);
}
static inline uint32_t pdu_ahs_len(const uint8_t *bhs)
{
	return (uint32_t)bhs[BHS_TOTAL_AHS_LEN] * 4;
}
static inline uint32_t pdu_pad(uint32_t len)
{
	return (4 - (len & 3)) & 3;
}

/* Decode the 8-byte LUN field (SAM-5 single level: peripheral or flat
 * addressing) into a LUN number; the encoder is its inverse. */
static inline uint64_t iscsi_lun_decode(const uint8_t *p)
{
	switch (p[0] >> 6) {
	case 0:	/* peripheral device addressing, bus 0 */
		return p[1];
	case 1:	/* flat space addressing */
		return (uint64_t)(p[0] & 0x3f) << 8 | p[1];
	default:
		return UINT64_MAX;
	}
}
static inline void iscsi_lun_encode(uint8_t *p, uint64_t lun)
{
	for (int i = 0; i < 8; i++)
		p[i] = 0;
	if (lun < 256) {
		p[1] = (uint8_t)lun;
	} else {
		p[0] = (uint8_t)(0x40 | ((lun >> 8) & 0x3f));
		p[1] = (uint8_t)lun;
	}
}

#endif
