/* iscsi_param.h - login key negotiation (RFC 7143 sections 6.2, 13).
 *
 * Each operational key has its negotiation rule (minimum, maximum, boolean
 * AND / OR, list, declarative).  A struct iscsi_neg holds the target's own
 * values (defaults plus per-target overrides) and the results so far. */
#ifndef HOLDFAST_ISCSI_PARAM_H
#define HOLDFAST_ISCSI_PARAM_H

#include <stdbool.h>
#include <stdint.h>

enum iscsi_key {
	KEY_HEADER_DIGEST,		/* list: CRC32C / None */
	KEY_DATA_DIGEST,
	KEY_MAX_CONNECTIONS,		/* min */
	KEY_INITIAL_R2T,		/* OR */
	KEY_IMMEDIATE_DATA,		/* AND */
	KEY_MAX_RECV_DSL,		/* declarative, per direction */
	KEY_MAX_BURST_LENGTH,		/* min */
	KEY_FIRST_BURST_LENGTH,		/* min */
	KEY_DEFAULT_TIME2WAIT,		/* max */
	KEY_DEFAULT_TIME2RETAIN,	/* min */
	KEY_MAX_OUTSTANDING_R2T,	/* min */
	KEY_DATA_PDU_IN_ORDER,		/* OR */
	KEY_DATA_SEQUENCE_IN_ORDER,	/* OR */
	KEY_ERROR_RECOVERY_LEVEL,	/* min */
	KEY_OF_MARKER,			/* AND */
	KEY_IF_MARKER,			/* AND */
	KEY_OF_MARK_INT,		/* irrelevant when markers are off */
	KEY_IF_MARK_INT,
	KEY_TASK_REPORTING,		/* list: RFC3720 */
	KEY_PROTOCOL_LEVEL,		/* min (RFC 7144) */
	KEY_COUNT
};

#define DIGEST_NONE 0
#define DIGEST_CRC32C 1

struct iscsi_neg {
	uint32_t target[KEY_COUNT];	/* what the target offers / allows */
	uint32_t result[KEY_COUNT];	/* negotiated (defaults until then) */
	uint32_t init_max_recv_dsl;	/* initiator's declared MRDSL */
	bool answered[KEY_COUNT];
	bool crc32c_ok;			/* digests supported by this build */
	bool discovery;
};

/* RFC defaults for result[], holdfast's preferences for target[]. */
void iscsi_neg_init(struct iscsi_neg *n, bool crc32c_ok);

/* Apply a target-side override (targets.conf params, tgtadm).  key is the
 * RFC name; 0, -ENOENT (not an operational key), -EINVAL (bad value). */
int iscsi_neg_set_target(struct iscsi_neg *n, const char *key,
			 const char *value);

/* Negotiate one key offered by the initiator.  Writes the response value
 * into out (without "key=").  Returns 1 when the key is an operational key
 * handled here, 0 when it is not (the caller handles declaratives such as
 * InitiatorName, or answers NotUnderstood). */
int iscsi_neg_key(struct iscsi_neg *n, const char *key, const char *value,
		  char *out, unsigned outlen);

/* Keys the target must still declare in its last login response (our
 * MaxRecvDataSegmentLength).  Appends "k=v\0" items to buf at *off. */
void iscsi_neg_declare(struct iscsi_neg *n, char *buf, unsigned len,
		       unsigned *off);

/* Fix results at the end of login (FirstBurstLength <= MaxBurstLength). */
void iscsi_neg_finish(struct iscsi_neg *n);

/* Text helpers: iterate "key=value\0" items in a data segment.  Returns
 * the next offset, or 0 at the end; key/value point into a copy in item. */
unsigned iscsi_text_next(const uint8_t *data, unsigned len, unsigned off,
			 char *item, unsigned itemlen, char **key,
			 char **value);
/* Append "key=value\0" to buf; -ENOSPC when it does not fit. */
int iscsi_text_add(char *buf, unsigned len, unsigned *off, const char *key,
		   const char *value);

/* Per-target overrides of operational keys (targets.conf, tgtadm
 * --op update --mode target): the longest key and value stored. */
#define ISCSI_PARAM_OVERRIDE_KEY_MAX 63
#define ISCSI_PARAM_OVERRIDE_VALUE_MAX 255
/* Is key a known overridable iSCSI key (case-insensitive) and value valid
 * for it?  0, -ENOENT (unknown key), -EINVAL; *canon (may be NULL) gets
 * the key's RFC 7143 spelling. */
int iscsi_param_override_check(const char *key, const char *value, const char **canon);
#endif
