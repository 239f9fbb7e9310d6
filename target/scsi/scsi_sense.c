/* scsi_sense.c - sense data and the one backend-errno -> SCSI status mapper.
 *
 * Every CHECK CONDITION of the SCSI layer goes through scsi_sense_write(),
 * which produces fixed format (SPC-4 4.5.3) or descriptor format (SPC-4
 * 4.5.2) sense data according to the LUN's D_SENSE setting (control mode
 * page, the settings snapshot's sense_desc). */
#include <errno.h>
#include <string.h>

#include "scsi_internal.h"
#include "util.h"

/* Response codes (SPC-4 4.5.1) */
#define SENSE_RESP_FIXED_CURRENT	0x70
#define SENSE_RESP_DESC_CURRENT		0x72

/* Fixed format layout (SPC-4 table 48) */
#define SENSE_FIXED_VALID		0x80	/* byte 0: INFORMATION valid */
#define SENSE_FIXED_KEY			2
#define SENSE_FIXED_INFO		3
#define SENSE_FIXED_ADD_LEN		7
#define SENSE_FIXED_ASC			12
#define SENSE_FIXED_ASCQ		13
#define SENSE_FIXED_SKS			15
#define SENSE_FIXED_LEN			18

/* Descriptor format layout (SPC-4 table 27) */
#define SENSE_DESC_KEY			1
#define SENSE_DESC_ASC			2
#define SENSE_DESC_ASCQ			3
#define SENSE_DESC_ADD_LEN		7
#define SENSE_DESC_HDR_LEN		8

/* Sense data descriptor types (SPC-4 4.5.2.1) */
#define SENSE_DTYPE_INFORMATION		0x00
#define SENSE_DTYPE_SENSE_KEY_SPECIFIC	0x02
#define SENSE_DINFO_LEN			12	/* type, len 0x0a, VALID, rsvd, 8 */
#define SENSE_DSKS_LEN			8	/* type, len 0x06, 2 rsvd, 3 SKS, rsvd */

/* Sense-key-specific field pointer bits (SPC-4 4.5.2.4.2) */
#define SKS_VALID			0x80
#define SKS_CD				0x40	/* error is in the CDB */
#define SKS_BPV				0x08	/* BIT POINTER valid */

struct sense_extra {
	bool has_info;
	uint64_t info;
	bool has_sks;
	uint8_t sks[3];
};

static uint32_t sense_write(uint8_t *buf, bool desc, uint8_t key,
			    uint16_t asc_ascq, const struct sense_extra *x)
{
	memset(buf, 0, SCSI_SENSE_MAX);
	if (!desc) {
		buf[0] = SENSE_RESP_FIXED_CURRENT;
		buf[SENSE_FIXED_KEY] = key & 0x0f;
		buf[SENSE_FIXED_ADD_LEN] = SENSE_FIXED_LEN - 8;
		buf[SENSE_FIXED_ASC] = (uint8_t)(asc_ascq >> 8);
		buf[SENSE_FIXED_ASCQ] = (uint8_t)asc_ascq;
		/* The fixed INFORMATION field holds 32 bits; a larger value
		 * cannot be reported there (SPC-4 4.5.3), VALID stays 0. */
		if (x && x->has_info && x->info <= UINT32_MAX) {
			buf[0] |= SENSE_FIXED_VALID;
			put_be32(buf + SENSE_FIXED_INFO, (uint32_t)x->info);
		}
		if (x && x->has_sks)
			memcpy(buf + SENSE_FIXED_SKS, x->sks, 3);
		return SENSE_FIXED_LEN;
	}

	uint32_t len = SENSE_DESC_HDR_LEN;
	buf[0] = SENSE_RESP_DESC_CURRENT;
	buf[SENSE_DESC_KEY] = key & 0x0f;
	buf[SENSE_DESC_ASC] = (uint8_t)(asc_ascq >> 8);
	buf[SENSE_DESC_ASCQ] = (uint8_t)asc_ascq;
	if (x && x->has_info) {
		uint8_t *d = buf + len;
		d[0] = SENSE_DTYPE_INFORMATION;
		d[1] = SENSE_DINFO_LEN - 2;
		d[2] = 0x80;		/* VALID */
		put_be64(d + 4, x->info);
		len += SENSE_DINFO_LEN;
	}
	if (x && x->has_sks) {
		uint8_t *d = buf + len;
		d[0] = SENSE_DTYPE_SENSE_KEY_SPECIFIC;
		d[1] = SENSE_DSKS_LEN - 2;
		memcpy(d + 4, x->sks, 3);
		len += SENSE_DSKS_LEN;
	}
	buf[SENSE_DESC_ADD_LEN] = (uint8_t)(len - SENSE_DESC_HDR_LEN);
	return len;
}

bool scsi_cmd_sense_desc(const struct scsi_cmd *cmd)
{
	return cmd->lun && lun_settings_get(cmd->lun)->sense_desc;
}

static void sense_set(struct scsi_cmd *cmd, uint8_t key, uint16_t asc_ascq,
		      const struct sense_extra *x)
{
	cmd->status = SAM_STAT_CHECK_CONDITION;
	cmd->sense_len = sense_write(cmd->sense, scsi_cmd_sense_desc(cmd), key,
				     asc_ascq, x);
	/* SAM-5 5.3: no Data-In is returned with CHECK CONDITION here. */
	cmd->in_len = 0;
}

uint32_t scsi_sense_build(uint8_t *buf, bool desc, uint8_t key,
			  uint16_t asc_ascq)
{
	return sense_write(buf, desc, key, asc_ascq, NULL);
}

void scsi_sense(struct scsi_cmd *cmd, uint8_t key, uint16_t asc_ascq)
{
	sense_set(cmd, key, asc_ascq, NULL);
}

void scsi_set_sense(struct scsi_cmd *cmd, uint8_t key, uint8_t asc,
		    uint8_t ascq)
{
	sense_set(cmd, key, (uint16_t)(asc << 8 | ascq), NULL);
}

void scsi_sense_field(struct scsi_cmd *cmd, uint16_t asc_ascq, bool in_cdb,
		      uint16_t byte, int bit)
{
	struct sense_extra x = { .has_sks = true };

	x.sks[0] = SKS_VALID | (in_cdb ? SKS_CD : 0);
	if (bit >= 0 && bit <= 7)
		x.sks[0] |= SKS_BPV | (uint8_t)bit;
	put_be16(x.sks + 1, byte);
	sense_set(cmd, SENSE_KEY_ILLEGAL_REQUEST, asc_ascq, &x);
}

void scsi_sense_info(struct scsi_cmd *cmd, uint8_t key, uint16_t asc_ascq,
		     uint64_t info)
{
	struct sense_extra x = { .has_info = true, .info = info };

	sense_set(cmd, key, asc_ascq, &x);
}

/* Errors of the storage medium itself.  The kernel reports BLK_STS_MEDIUM
 * as ENODATA and BLK_STS_PROTECTION as EILSEQ; EREMOTEIO is what a remote
 * target's own failed I/O becomes. */
static bool errno_is_media(int err)
{
	switch (err) {
	case EIO:
	case ENODATA:
	case EBADMSG:
	case EILSEQ:
	case EREMOTEIO:
		return true;
	default:
		return false;
	}
}

/* Lost contact with remote storage (iSCSI/NFS backends, multipath). */
static bool errno_is_link(int err)
{
	switch (err) {
	case ENOTCONN:
	case ECONNRESET:
	case ECONNREFUSED:
	case ECONNABORTED:
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case EHOSTDOWN:
	case ENETUNREACH:
	case ENETDOWN:
	case ENETRESET:
	case ENOLINK:
	case ESHUTDOWN:
	case EPIPE:
	case EBADE:		/* BLK_STS_NEXUS */
		return true;
	default:
		return false;
	}
}

/* DESIGN.md "Sense data on reporting an error".  The LBA of a failed read
 * or write goes into the INFORMATION field (SBC-3 4.18.1). */
void scsi_set_backend_error(struct scsi_cmd *cmd, int err, bool is_write)
{
	if (err < 0)
		err = -err;
	cmd->in_len = 0;

	switch (err) {
	case ENOMEM:
		cmd->status = SAM_STAT_TASK_SET_FULL;
		cmd->sense_len = 0;
		return;
	case EAGAIN:
	case EBUSY:
		cmd->status = SAM_STAT_BUSY;
		cmd->sense_len = 0;
		return;
	case EACCES:	/* SCSI_PR_ERR_CONFLICT: reservation taken while the
			 * command waited in the hang engine */
		cmd->status = SAM_STAT_RESERVATION_CONFLICT;
		cmd->sense_len = 0;
		return;
	}
	if (errno_is_media(err)) {
		scsi_sense_info(cmd, SENSE_KEY_MEDIUM_ERROR,
				is_write ? ASC_WRITE_ERROR
					 : ASC_UNRECOVERED_READ_ERROR,
				cmd->lba);
		return;
	}
	if (errno_is_link(err)) {
		scsi_sense(cmd, SENSE_KEY_HARDWARE_ERROR,
			   ASC_LUN_COMMUNICATION_FAILURE);
		return;
	}
	if (is_write && (err == ENOSPC || err == EDQUOT)) {
		scsi_sense(cmd, SENSE_KEY_DATA_PROTECT,
			   ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT);
		return;
	}
	if (is_write && err == EROFS) {
		scsi_sense(cmd, SENSE_KEY_DATA_PROTECT, ASC_WRITE_PROTECTED);
		return;
	}
	scsi_sense(cmd, SENSE_KEY_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
}

/* A store that is a SCSI device said why (the gateway's SAN LUN, or the
 * fault filter playing one): that sense goes to the initiator as it is,
 * in the LUN's sense format; otherwise the errno decides as above. */
void scsi_set_store_error(struct scsi_cmd *cmd, int err,
			  const struct be_io *io, bool is_write)
{
	const struct be_sense *s = &io->sense;
	struct sense_extra x = {
		.has_info = s->info_valid, .info = s->info,
		.has_sks = s->sks_valid,
	};

	if (!s->key) {
		scsi_set_backend_error(cmd, err, is_write);
		return;
	}
	memcpy(x.sks, s->sks, sizeof(x.sks));
	sense_set(cmd, s->key, (uint16_t)(s->asc << 8 | s->ascq), &x);
}
