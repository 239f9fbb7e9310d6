/* scsi_spc.c - SPC-4 primary commands: INQUIRY and its VPD pages, TEST
 * UNIT READY, REQUEST SENSE, MODE SENSE(6/10), REPORT LUNS, START STOP
 * UNIT, PREVENT ALLOW MEDIUM REMOVAL.
 *
 * A command for a LUN that does not exist has cmd->lun == NULL.  LUN 0 is
 * always reported (as tgt does) and answers as a storage array controller
 * when no LUN 0 is configured, so initiators that scan from LUN 0 find the
 * target; any other absent LUN answers peripheral qualifier 011b. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scsi_internal.h"
#include "target.h"
#include "util.h"

/* Peripheral qualifier / device type (SPC-4 6.4.2) */
#define INQ_PQ_CONNECTED	0x00
#define INQ_PQ_NOT_SUPPORTED	0x60	/* 011b: no LU at this LUN */
#define INQ_TYPE_DISK		0x00	/* SBC direct access block device */
#define INQ_TYPE_CONTROLLER	0x0c	/* storage array controller */
#define INQ_TYPE_UNKNOWN	0x1f

/* INQUIRY CDB (SPC-4 6.4.1) */
#define INQ_CDB_EVPD		0x01
#define INQ_CDB_CMDDT		0x02	/* obsolete; must be 0 */

/* Standard INQUIRY data (SPC-4 table 142) */
#define INQ_STD_LEN		96
#define INQ_RMB			0x80
#define INQ_VERSION_SPC4	0x06
#define INQ_HISUP		0x10
#define INQ_RESPONSE_FORMAT	0x02
#define INQ_CMDQUE		0x02
#define INQ_3PC			0x08	/* byte 5: EXTENDED COPY (scsi_xcopy.c) */
#define INQ_TPGS_IMPLICIT	0x10	/* byte 5: implicit ALUA (scsi_maint.c) */
#define INQ_TPGS_BOTH		0x30	/* implicit and explicit (scsi_alua.c) */
#define INQ_VENDOR_OFF		8
#define INQ_PRODUCT_OFF		16
#define INQ_REV_OFF		32
#define INQ_VERSION_DESC_OFF	58
/* Version descriptors (SPC-4 table 147) */
#define VD_SAM5			0x00a0
#define VD_ISCSI		0x0960
#define VD_SPC4			0x0460
#define VD_SBC3			0x04c0

/* VPD page codes */
#define VPD_SUPPORTED_PAGES	0x00
#define VPD_UNIT_SERIAL		0x80
#define VPD_DEVICE_ID		0x83
#define VPD_BLOCK_LIMITS	0xb0
#define VPD_BLOCK_DEV_CHARS	0xb1
#define VPD_LB_PROVISIONING	0xb2

/* Designation descriptors (SPC-4 7.8.6) */
#define DESIG_PROTO_ISCSI	0x50	/* PROTOCOL IDENTIFIER 5 in bits 7:4 */
#define DESIG_CODE_BINARY	0x01
#define DESIG_CODE_ASCII	0x02
#define DESIG_CODE_UTF8		0x03
#define DESIG_PIV		0x80
#define DESIG_ASSOC_LU		0x00
#define DESIG_ASSOC_PORT	0x10
#define DESIG_ASSOC_TARGET	0x20
#define DESIG_TYPE_T10		0x01
#define DESIG_TYPE_NAA		0x03
#define DESIG_TYPE_REL_PORT	0x04
#define DESIG_TYPE_TPG		0x05
#define DESIG_TYPE_SCSI_NAME	0x08
#define NAA_LOCALLY_ASSIGNED	0x3	/* 60 bits of our own (SPC-4 7.8.6.6.3) */

/* MODE SENSE (SPC-4 6.11 / 6.12) */
#define MS_CDB_DBD		0x08
#define MS_CDB_LLBAA		0x10
#define MS_PC_CURRENT		0
#define MS_PC_CHANGEABLE	1
#define MS_PC_DEFAULT		2
#define MS_PC_SAVED		3
#define MS_DEVSPEC_WP		0x80	/* SBC-3 6.4.1 */
#define MS_DEVSPEC_DPOFUA	0x10
#define MS_LONGLBA		0x01
#define MS_SHORT_BD_LEN		8
#define MS_LONG_BD_LEN		16
#define MODE_PAGE_RW_ERROR	0x01
#define MODE_PAGE_CACHING	0x08
#define MODE_PAGE_CONTROL	0x0a
#define MODE_PAGE_INFO_EXCEPT	0x1c
#define MODE_PAGE_ALL		0x3f
#define MODE_SUBPAGE_ALL	0xff
#define CACHING_WCE		0x04
#define CONTROL_D_SENSE		0x04
#define CONTROL_QAM_UNRESTRICTED 0x10
#define CONTROL_TAS		0x40	/* byte 5: TASK ABORTED status */
#define INFO_EXCEPT_DEXCPT	0x08

/* REPORT LUNS (SPC-4 6.33) */
#define RL_SELECT_ALL_LOGICAL	0x00
#define RL_SELECT_WELL_KNOWN	0x01
#define RL_SELECT_ALL		0x02
#define RL_MIN_ALLOC		16
#define LUN_ADDR_FLAT		0x40	/* SAM-5 4.7.7: flat space addressing */

/* Identity defaults (lun_settings_default() fills the same values). */
#define DEFAULT_VENDOR		"HOLDFAST"
#define DEFAULT_PRODUCT		"VIRTUAL-DISK"
#define DEFAULT_REV		"0001"

#define SPC_BUF 1024

uint64_t scsi_hash64(const char *s, uint64_t lun)
{
	uint64_t h = 0xcbf29ce484222325ull;	/* FNV-1a 64 */

	for (; s && *s; s++) {
		h ^= (uint8_t)*s;
		h *= 0x100000001b3ull;
	}
	for (int i = 0; i < 8; i++) {
		h ^= (uint8_t)(lun >> (8 * i));
		h *= 0x100000001b3ull;
	}
	return h;
}

static const char *cmd_target_name(const struct scsi_cmd *cmd)
{
	if (cmd->lun && cmd->lun->target)
		return cmd->lun->target->name;
	if (cmd->target)
		return cmd->target->name;
	if (cmd->nexus && cmd->nexus->target_name)
		return cmd->nexus->target_name;
	return "";
}

/* Copy s into a fixed-width, space-padded ASCII field (SPC-4 4.4.1). */
static void put_ascii(uint8_t *dst, const char *s, size_t width,
		      const char *dflt)
{
	if (!s || !*s)
		s = dflt;
	size_t n = strnlen(s, width);
	memset(dst, ' ', width);
	memcpy(dst, s, n);
}

/* The unit serial number: configured, or derived from target name and LUN
 * so it is stable across restarts. */
static void lun_serial(const struct scsi_cmd *cmd, char *out, size_t len)
{
	const struct lun_settings *s = lun_settings_get(cmd->lun);

	const char *shared = scsi_alua_identity(cmd->lun);

	if (s->scsi_sn[0])
		snprintf(out, len, "%s", s->scsi_sn);
	else if (shared)	/* the same on both nodes (scsi_alua.c) */
		snprintf(out, len, "%s", shared);
	else
		snprintf(out, len, "%016llx",
			 (unsigned long long)scsi_hash64(cmd_target_name(cmd),
							 s->lun));
}

static uint64_t lun_naa(const struct scsi_cmd *cmd)
{
	const struct lun_settings *s = lun_settings_get(cmd->lun);
	const char *shared = scsi_alua_identity(cmd->lun);
	uint64_t h = s->scsi_id[0] ? scsi_hash64(s->scsi_id, 0)
		   : shared	   ? scsi_hash64(shared, 0)
				   : scsi_hash64(cmd_target_name(cmd), s->lun);

	return (uint64_t)NAA_LOCALLY_ASSIGNED << 60 | (h & ((1ull << 60) - 1));
}

static uint8_t inq_peripheral(const struct scsi_cmd *cmd)
{
	if (cmd->lun)
		return INQ_PQ_CONNECTED | INQ_TYPE_DISK;
	if (cmd->lun_id == 0)
		return INQ_PQ_CONNECTED | INQ_TYPE_CONTROLLER;
	return INQ_PQ_NOT_SUPPORTED | INQ_TYPE_UNKNOWN;
}

static uint32_t inquiry_standard(const struct scsi_cmd *cmd, uint8_t *b)
{
	const struct lun_settings *s = cmd->lun ? lun_settings_get(cmd->lun) : NULL;

	b[0] = inq_peripheral(cmd);
	b[1] = s && s->removable ? INQ_RMB : 0;
	b[2] = INQ_VERSION_SPC4;
	b[3] = INQ_HISUP | INQ_RESPONSE_FORMAT;
	b[4] = INQ_STD_LEN - 5;
	if (s)		/* a copy manager serves every real LUN */
		b[5] |= INQ_3PC;
	/* one implicit ALUA group, REPORT TARGET PORT GROUPS answers it
	 * (SPC-4 6.36); Linux's scsi_dh_alua and multipath use this */
	if (s)
		b[5] |= s->alua_group ? INQ_TPGS_BOTH : INQ_TPGS_IMPLICIT;
	b[7] = INQ_CMDQUE;
	put_ascii(b + INQ_VENDOR_OFF, s ? s->vendor_id : NULL, 8,
		  DEFAULT_VENDOR);
	put_ascii(b + INQ_PRODUCT_OFF, s ? s->product_id : NULL, 16,
		  s ? DEFAULT_PRODUCT : "CONTROLLER");
	put_ascii(b + INQ_REV_OFF, s ? s->product_rev : NULL, 4, DEFAULT_REV);
	put_be16(b + INQ_VERSION_DESC_OFF, VD_SAM5);
	put_be16(b + INQ_VERSION_DESC_OFF + 2, VD_ISCSI);
	put_be16(b + INQ_VERSION_DESC_OFF + 4, VD_SPC4);
	if (s)
		put_be16(b + INQ_VERSION_DESC_OFF + 6, VD_SBC3);
	return INQ_STD_LEN;
}

static uint32_t vpd_supported(const struct scsi_cmd *cmd, uint8_t *b)
{
	static const uint8_t pages[] = {
		VPD_SUPPORTED_PAGES, VPD_UNIT_SERIAL, VPD_DEVICE_ID,
		VPD_BLOCK_LIMITS, VPD_BLOCK_DEV_CHARS, VPD_LB_PROVISIONING,
	};
	uint32_t n = cmd->lun ? ARRAY_SIZE(pages) : 1;

	memcpy(b + 4, pages, n);
	return 4 + n;
}

static uint32_t vpd_serial(const struct scsi_cmd *cmd, uint8_t *b)
{
	char sn[65];

	lun_serial(cmd, sn, sizeof(sn));
	uint32_t n = (uint32_t)strlen(sn);
	memcpy(b + 4, sn, n);
	return 4 + n;
}

/* Append one designation descriptor; returns its total length. */
static uint32_t desig(uint8_t *d, uint8_t proto_code, uint8_t piv_assoc_type,
		      const uint8_t *id, uint32_t len)
{
	d[0] = proto_code;
	d[1] = piv_assoc_type;
	d[3] = (uint8_t)len;
	memcpy(d + 4, id, len);
	return 4 + len;
}

/* A SCSI name string designator: NUL terminated, padded to a multiple of
 * four bytes (SPC-4 7.8.6.11). */
static uint32_t desig_name(uint8_t *d, uint8_t assoc, const char *name)
{
	uint8_t id[256];
	uint32_t n = (uint32_t)strnlen(name, 250);

	memset(id, 0, sizeof(id));
	memcpy(id, name, n);
	n = (n + 1 + 3) & ~3u;
	return desig(d, DESIG_PROTO_ISCSI | DESIG_CODE_UTF8,
		     DESIG_PIV | assoc | DESIG_TYPE_SCSI_NAME, id, n);
}

static uint32_t vpd_device_id(const struct scsi_cmd *cmd, uint8_t *b)
{
	const struct lun_settings *s = lun_settings_get(cmd->lun);
	uint32_t off = 4;
	uint8_t id[80];
	char text[300];

	/* Logical unit: NAA and T10 vendor ID (SPC-4 7.8.6.4 / 7.8.6.6). */
	put_be64(id, lun_naa(cmd));
	off += desig(b + off, DESIG_CODE_BINARY, DESIG_ASSOC_LU | DESIG_TYPE_NAA,
		     id, 8);

	put_ascii(id, s->vendor_id, 8, DEFAULT_VENDOR);
	if (s->scsi_id[0]) {
		snprintf(text, sizeof(text), "%s", s->scsi_id);
	} else {
		lun_serial(cmd, text, sizeof(text));
	}
	uint32_t n = MIN((uint32_t)strlen(text), (uint32_t)sizeof(id) - 8);
	memcpy(id + 8, text, n);
	off += desig(b + off, DESIG_CODE_ASCII, DESIG_ASSOC_LU | DESIG_TYPE_T10,
		     id, 8 + n);

	/* Target port: relative port and port group (SPC-4 7.8.6.7/8). */
	uint16_t rel = scsi_alua_rel_port(cmd);
	uint16_t tpg = scsi_alua_group(cmd);
	memset(id, 0, 4);
	put_be16(id + 2, rel);
	off += desig(b + off, DESIG_PROTO_ISCSI | DESIG_CODE_BINARY,
		     DESIG_PIV | DESIG_ASSOC_PORT | DESIG_TYPE_REL_PORT, id, 4);
	memset(id, 0, 4);
	put_be16(id + 2, tpg);
	off += desig(b + off, DESIG_PROTO_ISCSI | DESIG_CODE_BINARY,
		     DESIG_PIV | DESIG_ASSOC_PORT | DESIG_TYPE_TPG, id, 4);

	/* iSCSI names of the target port and the target device
	 * (RFC 7143 13.26: "<iqn>,t,0x<tpgt>"). */
	const char *tname = cmd_target_name(cmd);
	if (tname[0]) {
		snprintf(text, sizeof(text), "%s,t,0x%04x", tname,
			 cmd->nexus && cmd->nexus->tpgt ? cmd->nexus->tpgt : 1);
		off += desig_name(b + off, DESIG_ASSOC_PORT, text);
		off += desig_name(b + off, DESIG_ASSOC_TARGET, tname);
	}
	return off;
}

/* Block Limits (SBC-3 6.5.3) */
#define VPD_B0_LEN 0x40
#define B0_WSNZ 0x01	/* WRITE SAME with 0 blocks is refused */
#define B0_UGAVALID 0x80
static uint32_t vpd_block_limits(const struct scsi_cmd *cmd, uint8_t *b)
{
	uint32_t bs = lun_settings_get(cmd->lun)->block_size ? lun_settings_get(cmd->lun)->block_size : 512;
	uint32_t gran = bs < 4096 ? 4096 / bs : 1;

	b[4] = B0_WSNZ;
	b[5] = SBC_MAX_CAW_BLOCKS;	/* maximum COMPARE AND WRITE length */
	put_be16(b + 6, (uint16_t)gran);	/* optimal xfer granularity */
	put_be32(b + 8, SBC_MAX_TRANSFER_BYTES / bs);	/* maximum xfer */
	put_be32(b + 12, SBC_MAX_TRANSFER_BYTES / bs);	/* optimal xfer */
	if (scsi_lun_thin(cmd->lun)) {
		put_be32(b + 20, SBC_MAX_UNMAP_LBA_COUNT);
		put_be32(b + 24, SBC_MAX_UNMAP_DESCRIPTORS);
		put_be32(b + 28, gran);		/* optimal unmap granularity */
		b[32] = B0_UGAVALID;		/* aligned at LBA 0 */
	}
	put_be64(b + 36, SBC_MAX_TRANSFER_BYTES / bs);	/* max WRITE SAME */
	/* WRITE ATOMIC(16) (SBC-4 6.6.4): MAXIMUM ATOMIC TRANSFER LENGTH;
	 * ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY 0 (none
	 * required); no atomic boundaries (bytes 56..63 stay 0). */
	put_be32(b + 44, sbc_max_atomic_blocks(bs));
	return VPD_B0_LEN;
}

/* Block Device Characteristics (SBC-3 6.5.2) */
#define VPD_B1_LEN 0x40
#define MEDIUM_NON_ROTATING 0x0001
static uint32_t vpd_block_chars(const struct scsi_cmd *cmd UNUSED, uint8_t *b)
{
	put_be16(b + 4, MEDIUM_NON_ROTATING);
	return VPD_B1_LEN;
}

/* Logical Block Provisioning (SBC-3 6.5.4): a thin LUN deallocates with
 * UNMAP and WRITE SAME(10/16) with the UNMAP bit, and deallocated blocks
 * read back as zeroes. */
#define VPD_B2_LEN 8
#define LBP_LBPU 0x80
#define LBP_LBPWS 0x40
#define LBP_LBPWS10 0x20
#define LBP_LBPRZ 0x04
#define LBP_TYPE_THIN 0x02
static uint32_t vpd_lb_provisioning(const struct scsi_cmd *cmd, uint8_t *b)
{
	if (scsi_lun_thin(cmd->lun)) {
		b[5] = LBP_LBPU | LBP_LBPWS | LBP_LBPWS10 | LBP_LBPRZ;
		b[6] = LBP_TYPE_THIN;
	}
	return VPD_B2_LEN;
}

enum scsi_exec_result spc_inquiry(struct scsi_cmd *cmd)
{
	uint8_t b[SPC_BUF];
	uint32_t len;
	const uint8_t *cdb = cmd->cdb;
	uint32_t alloc = get_be16(cdb + 3);

	memset(b, 0, sizeof(b));
	if (cdb[1] & INQ_CDB_CMDDT) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 1);
		return SCSI_EXEC_DONE;
	}
	if (!(cdb[1] & INQ_CDB_EVPD)) {
		if (cdb[2]) {
			/* SPC-4 6.4.1: PAGE CODE must be 0 without EVPD. */
			scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
					 2, -1);
			return SCSI_EXEC_DONE;
		}
		len = inquiry_standard(cmd, b);
		return scsi_data_in(cmd, b, len, alloc);
	}

	b[0] = inq_peripheral(cmd);
	b[1] = cdb[2];
	if (!cmd->lun && cdb[2] != VPD_SUPPORTED_PAGES)
		goto bad_page;
	switch (cdb[2]) {
	case VPD_SUPPORTED_PAGES:
		len = vpd_supported(cmd, b);
		break;
	case VPD_UNIT_SERIAL:
		len = vpd_serial(cmd, b);
		break;
	case VPD_DEVICE_ID:
		len = vpd_device_id(cmd, b);
		break;
	case VPD_BLOCK_LIMITS:
		len = vpd_block_limits(cmd, b);
		break;
	case VPD_BLOCK_DEV_CHARS:
		len = vpd_block_chars(cmd, b);
		break;
	case VPD_LB_PROVISIONING:
		len = vpd_lb_provisioning(cmd, b);
		break;
	default:
		goto bad_page;
	}
	put_be16(b + 2, (uint16_t)(len - 4));
	return scsi_data_in(cmd, b, len, alloc);

bad_page:
	scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 2, -1);
	return SCSI_EXEC_DONE;
}

enum scsi_exec_result spc_test_unit_ready(struct scsi_cmd *cmd)
{
	/* The controller at LUN 0 is always ready; readiness of a real LUN
	 * (online) was checked by the dispatcher. */
	if (!cmd->lun && cmd->lun_id != 0) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_LUN_NOT_SUPPORTED);
		return SCSI_EXEC_DONE;
	}
	cmd->status = SAM_STAT_GOOD;
	return SCSI_EXEC_DONE;
}

/* REQUEST SENSE (SPC-4 6.39): a pending unit attention is reported (and
 * cleared); otherwise NO SENSE, or LOGICAL UNIT NOT SUPPORTED for an
 * absent LUN, always with status GOOD. */
#define RS_CDB_DESC 0x01
enum scsi_exec_result spc_request_sense(struct scsi_cmd *cmd)
{
	uint8_t b[SCSI_SENSE_MAX];
	bool desc = cmd->cdb[1] & RS_CDB_DESC;
	uint16_t asc = ASC_NO_ADDITIONAL_SENSE;
	uint8_t key = SENSE_KEY_NO_SENSE;

	if (!cmd->lun) {
		if (cmd->lun_id != 0) {
			key = SENSE_KEY_ILLEGAL_REQUEST;
			asc = ASC_LUN_NOT_SUPPORTED;
		}
	} else if (scsi_ua_take(cmd->lun, cmd->nexus ? cmd->nexus->id : 0,
				&asc)) {
		key = SENSE_KEY_UNIT_ATTENTION;
	}
	uint32_t len = scsi_sense_build(b, desc, key, asc);
	return scsi_data_in(cmd, b, len, cmd->cdb[4]);
}

/* ---- MODE SENSE ---- */

static uint32_t mode_page(const struct scsi_cmd *cmd, uint8_t page, int pc,
			  uint8_t *p)
{
	const struct lun_settings *s = lun_settings_get(cmd->lun);
	uint32_t len;

	switch (page) {
	case MODE_PAGE_RW_ERROR:
		len = 12;
		break;
	case MODE_PAGE_CACHING:
		len = 20;
		if (pc == MS_PC_CURRENT && s->write_cache)
			p[2] |= CACHING_WCE;
		if (pc == MS_PC_DEFAULT)
			p[2] |= CACHING_WCE;
		break;
	case MODE_PAGE_CONTROL:
		len = 12;
		if (pc == MS_PC_CURRENT && s->sense_desc)
			p[2] |= CONTROL_D_SENSE;
		if (pc != MS_PC_CHANGEABLE) {
			p[3] = CONTROL_QAM_UNRESTRICTED;
			/* SAM-5 5.6: commands aborted because of another
			 * I_T nexus (LUN RESET, CLEAR TASK SET, PREEMPT AND
			 * ABORT) end with TASK ABORTED status, which is what
			 * the iSCSI layer sends, rather than silently with a
			 * COMMANDS CLEARED BY ANOTHER INITIATOR attention */
			p[5] = CONTROL_TAS;
			put_be16(p + 8, 0xffff);	/* busy timeout: unlimited */
		}
		break;
	case MODE_PAGE_INFO_EXCEPT:
		len = 12;
		if (pc != MS_PC_CHANGEABLE)
			p[2] = INFO_EXCEPT_DEXCPT;
		break;
	default:
		return 0;
	}
	p[0] = page;
	p[1] = (uint8_t)(len - 2);
	return len;
}

enum scsi_exec_result spc_mode_sense(struct scsi_cmd *cmd)
{
	static const uint8_t all_pages[] = {
		MODE_PAGE_RW_ERROR, MODE_PAGE_CACHING, MODE_PAGE_CONTROL,
		MODE_PAGE_INFO_EXCEPT,
	};
	const uint8_t *cdb = cmd->cdb;
	bool ten = cdb[0] == SCSI_OP_MODE_SENSE_10;
	bool dbd = cdb[1] & MS_CDB_DBD;
	bool llbaa = ten && (cdb[1] & MS_CDB_LLBAA);
	int pc = cdb[2] >> 6;
	uint8_t page = cdb[2] & 0x3f, subpage = cdb[3];
	uint32_t alloc = ten ? get_be16(cdb + 7) : cdb[4];
	uint32_t hdr = ten ? 8 : 4;
	struct scsi_lun *lun = cmd->lun;
	uint8_t b[SPC_BUF];
	uint32_t off;

	memset(b, 0, sizeof(b));
	if (pc == MS_PC_SAVED) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_SAVING_PARAMS_NOT_SUPPORTED);
		return SCSI_EXEC_DONE;
	}

	/* Block descriptor (SBC-3 6.4.2), unless DBD. */
	off = hdr;
	if (!dbd) {
		uint64_t nb = lun->nblocks;
		uint32_t bs = lun_settings_get(lun)->block_size;
		if (llbaa) {
			put_be64(b + off, nb);
			put_be32(b + off + 12, bs);
			off += MS_LONG_BD_LEN;
		} else {
			put_be32(b + off, nb > UINT32_MAX ? UINT32_MAX
							  : (uint32_t)nb);
			put_be24(b + off + 5, bs);
			off += MS_SHORT_BD_LEN;
		}
	}
	uint32_t bd_len = off - hdr;

	if (page == MODE_PAGE_ALL &&
	    (subpage == 0 || subpage == MODE_SUBPAGE_ALL)) {
		for (unsigned i = 0; i < ARRAY_SIZE(all_pages); i++)
			off += mode_page(cmd, all_pages[i], pc, b + off);
	} else {
		uint32_t n = subpage ? 0 : mode_page(cmd, page, pc, b + off);
		if (!n) {
			scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
					 subpage ? 3 : 2, subpage ? -1 : 5);
			return SCSI_EXEC_DONE;
		}
		off += n;
	}

	/* Mode parameter header (SPC-4 7.5.5); MODE DATA LENGTH excludes
	 * itself. */
	uint8_t devspec = MS_DEVSPEC_DPOFUA;
	if (lun_settings_get(lun)->readonly || (lun->be && lun->be->readonly))
		devspec |= MS_DEVSPEC_WP;
	if (ten) {
		put_be16(b, (uint16_t)(off - 2));
		b[3] = devspec;
		if (llbaa && !dbd)
			b[4] = MS_LONGLBA;
		put_be16(b + 6, (uint16_t)bd_len);
	} else {
		b[0] = (uint8_t)(off - 1);
		b[2] = devspec;
		b[3] = (uint8_t)bd_len;
	}
	return scsi_data_in(cmd, b, off, alloc);
}

/* ---- REPORT LUNS ---- */

enum scsi_exec_result spc_report_luns(struct scsi_cmd *cmd)
{
	uint64_t luns[TGT_MAX_LUNS];
	uint8_t b[8 + 8 * (TGT_MAX_LUNS + 1)];
	struct target *t = cmd->target;
	uint32_t alloc = get_be32(cmd->cdb + 6);
	uint8_t select = cmd->cdb[2];
	int n = 0;

	if (select != RL_SELECT_ALL_LOGICAL && select != RL_SELECT_WELL_KNOWN &&
	    select != RL_SELECT_ALL) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 2, -1);
		return SCSI_EXEC_DONE;
	}
	if (alloc < RL_MIN_ALLOC) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 6, -1);
		return SCSI_EXEC_DONE;
	}
	if (!t && cmd->lun)
		t = cmd->lun->target;

	memset(b, 0, sizeof(b));
	uint32_t off = 8;
	if (select != RL_SELECT_WELL_KNOWN) {
		if (t)
			n = tgt_lun_list(t, luns, TGT_MAX_LUNS);
		else if (cmd->lun)
			luns[n++] = lun_settings_get(cmd->lun)->lun;
		/* LUN 0 is always reported (the controller if not
		 * configured), so initiators find every other LUN. */
		if (n == 0 || luns[0] != 0)
			off += 8;
		for (int i = 0; i < n; i++, off += 8) {
			uint64_t l = luns[i];
			if (l < 256) {
				b[off + 1] = (uint8_t)l;
			} else {
				b[off] = LUN_ADDR_FLAT | (uint8_t)(l >> 8 & 0x3f);
				b[off + 1] = (uint8_t)l;
			}
		}
	}
	put_be32(b, off - 8);
	return scsi_data_in(cmd, b, off, alloc);
}

/* START STOP UNIT (SBC-3 5.25).  A virtual disk has no motor: START and
 * power conditions are accepted as they are.  On a removable LUN, LOEJ
 * ejects (START 0) or loads (START 1) the medium; either fails while an
 * I_T nexus prevents removal. */
#define SSU_CDB_POWER_SHIFT	4
#define SSU_CDB_LOEJ		0x02
#define SSU_CDB_START		0x01
enum scsi_exec_result spc_start_stop_unit(struct scsi_cmd *cmd)
{
	uint8_t b4 = cmd->cdb[4];

	cmd->status = SAM_STAT_GOOD;
	/* A POWER CONDITION other than START_VALID (0) ignores LOEJ. */
	if ((b4 >> SSU_CDB_POWER_SHIFT) || !(b4 & SSU_CDB_LOEJ) ||
	    !lun_settings_get(cmd->lun)->removable)
		return SCSI_EXEC_DONE;
	/* Loading too is refused while removal is prevented (libiscsi
	 * PreventAllow.Eject expects it; the tray must not move). */
	if (scsi_medium_load_eject(cmd->lun, b4 & SSU_CDB_START) == -EBUSY)
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_MEDIUM_REMOVAL_PREVENTED);
	return SCSI_EXEC_DONE;
}

/* PREVENT ALLOW MEDIUM REMOVAL (SBC-3 5.11): PREVENT 00b allows, 01b
 * prevents removal for this I_T nexus; 1xb are obsolete here. */
#define PA_CDB_PREVENT_MASK	0x03
#define PA_PREVENT		0x01
enum scsi_exec_result spc_prevent_allow(struct scsi_cmd *cmd)
{
	uint8_t prevent = cmd->cdb[4] & PA_CDB_PREVENT_MASK;

	if (prevent > PA_PREVENT) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 4, 1);
		return SCSI_EXEC_DONE;
	}
	if (lun_settings_get(cmd->lun)->removable)
		scsi_medium_prevent(cmd->lun, cmd->nexus ? cmd->nexus->id : 0,
				    prevent == PA_PREVENT);
	cmd->status = SAM_STAT_GOOD;
	return SCSI_EXEC_DONE;
}
