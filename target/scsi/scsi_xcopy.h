/* scsi_xcopy.h - EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4,
 * 6.18): the copy manager for block-to-block copies between LUNs this
 * daemon serves (VMware "full copy" / clone offload).
 *
 * Part of the SCSI layer (target/scsi/); the dispatch table rows live in
 * scsi_ops.c, the standard INQUIRY 3PC bit in scsi_spc.c.  The Third-party
 * Copy VPD page (8Fh) is encoded here (xcopy_vpd_page) but not yet listed
 * by scsi_spc.c: libiscsi 1.19 does not ask for it. */
#ifndef HOLDFAST_SCSI_XCOPY_H
#define HOLDFAST_SCSI_XCOPY_H

#include <stdbool.h>
#include <stdint.h>

#include "scsi_internal.h"

/* Operation codes (SPC-4 table E.2) */
#define SCSI_OP_EXTENDED_COPY		0x83
#define SCSI_OP_RECEIVE_COPY_RESULTS	0x84

/* EXTENDED COPY service actions: LID1 is the SPC-3 form (SPC-4 6.4) */
#define XCOPY_SA_LID1			0x00
/* RECEIVE COPY RESULTS service actions (SPC-4 6.18) */
#define RCR_SA_COPY_STATUS		0x00
#define RCR_SA_RECEIVE_DATA		0x01
#define RCR_SA_OPERATING_PARAMETERS	0x03
#define RCR_SA_FAILED_SEGMENT_DETAILS	0x04

/* Third-party Copy VPD page code (SPC-4 7.8.17) */
#define VPD_THIRD_PARTY_COPY		0x8f

/* Limits reported in OPERATING PARAMETERS and enforced by the parser. */
#define XCOPY_MAX_CSCD			16
#define XCOPY_MAX_SEGMENTS		64
#define XCOPY_MAX_DESC_LIST_LEN		2048	/* CSCD + segment bytes */
/* NUMBER OF BLOCKS is 16 bits and blocks are at most 64 KiB. */
#define XCOPY_MAX_SEGMENT_BYTES		0xffff0000u
/* Bytes moved per backend request; one buffer per running copy. */
#define XCOPY_CHUNK_BYTES		(1u << 20)
/* Copy results held per daemon (in progress + finished), SPC-4 6.18. */
#define XCOPY_HELD_MAX			64

/* Sizes on the wire (SPC-4 6.4.3.1, 6.4.5.1, 6.4.6.2) */
#define XCOPY_HDR_LEN			16
#define XCOPY_CSCD_LEN			32
#define XCOPY_SEG_B2B_LEN		28
#define XCOPY_DESIG_MAX			20

/* Descriptor type codes */
#define XCOPY_SEG_BLOCK_TO_BLOCK	0x02
#define XCOPY_CSCD_IDENTIFICATION	0xe4

/* ---- parsed parameter list (host order, decoded once) ---- */

struct xcopy_cscd {
	uint8_t lu_id_type;		/* 0 = LUN (the only one supported) */
	bool nul;			/* NUL bit: a null device */
	uint8_t pdt;			/* peripheral device type */
	uint8_t code_set;		/* designator as in VPD page 0x83 */
	uint8_t assoc;
	uint8_t desig_type;
	uint8_t desig_len;
	uint8_t desig[XCOPY_DESIG_MAX];
	uint32_t block_len;		/* 0 = whatever the LUN has */
};

struct xcopy_seg {
	bool dc;			/* NUMBER OF BLOCKS counts dest blocks */
	bool cat;
	uint16_t src, dst;		/* CSCD indexes */
	uint16_t nblocks;
	uint64_t src_lba, dst_lba;
};

struct xcopy_list {
	uint8_t list_id;
	uint8_t list_id_usage;		/* XCOPY_USAGE_* */
	uint8_t priority;
	unsigned ncscd, nseg;
	struct xcopy_cscd cscd[XCOPY_MAX_CSCD];
	struct xcopy_seg seg[XCOPY_MAX_SEGMENTS];
};

/* LIST ID USAGE (SPC-4 6.4.3.2 table 107) */
#define XCOPY_USAGE_HOLD		0	/* hold results, list id unique */
#define XCOPY_USAGE_NO_HOLD		2	/* list id unique, hold nothing */
#define XCOPY_USAGE_NONE		3	/* no list id (must be 0) */

/* Why a parameter list was refused: sense key, ASC/ASCQ and (for ILLEGAL
 * REQUEST) a field pointer into the parameter list, byte -1 for none. */
struct xcopy_err {
	uint8_t key;
	uint16_t asc;
	int32_t byte;
	int8_t bit;
};

/* Decode an EXTENDED COPY(LID1) parameter list of len bytes (the whole
 * Data-Out) into *out.  Returns 1 for an empty list (nothing to do, GOOD),
 * 0 on success, or -EINVAL with *err saying why.  Only checks what the
 * list itself says; copy targets are resolved when the copy starts. */
int xcopy_parse(const uint8_t *p, uint32_t len, struct xcopy_list *out,
		struct xcopy_err *err);

/* Encode the RECEIVE COPY RESULTS OPERATING PARAMETERS data into b
 * (at least 64 bytes); returns its length. */
uint32_t xcopy_op_params(uint8_t *b);

/* Fill the Third-party Copy VPD page (SPC-4 7.8.17: Supported Commands,
 * Parameter Data, Supported Descriptors, Supported CSCD IDs) into b (room
 * for 1024 bytes, b[0] b[1] already set); returns the page length
 * including the 4-byte header. */
uint32_t xcopy_vpd_page(const struct scsi_cmd *cmd, uint8_t *b);

/* The NAA IEEE Registered designator the Device Identification VPD page
 * reports for lun (same value as scsi_spc.c computes). */
uint64_t xcopy_lun_naa(const struct scsi_lun *lun);

/* Command handlers (rows in scsi_ops.c). */
enum scsi_exec_result spc_extended_copy(struct scsi_cmd *cmd);
enum scsi_exec_result spc_receive_copy_results(struct scsi_cmd *cmd);

#endif
