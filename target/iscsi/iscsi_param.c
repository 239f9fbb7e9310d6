/* iscsi_param.c - operational key negotiation, RFC 7143 section 13.
 *
 * The initiator offers, the target answers with the result of the key's
 * rule.  Values outside the legal range are answered "Reject" (6.2.1). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "iscsi_param.h"
#include "util.h"

enum neg_rule { RULE_MIN, RULE_MAX, RULE_AND, RULE_OR, RULE_LIST,
		RULE_DECLARE, RULE_IRRELEVANT };

struct key_def {
	const char *name;
	enum neg_rule rule;
	uint32_t lo, hi;		/* numeric range */
	uint32_t rfc_default;
	uint32_t holdfast;		/* the target's preference */
};

/* Defaults: RFC 7143 section 13; preferences chosen for VM disks: large
 * bursts, immediate and unsolicited data allowed, ERL 0 only. */
static const struct key_def key_defs[KEY_COUNT] = {
	[KEY_HEADER_DIGEST] = { "HeaderDigest", RULE_LIST, 0, 1, DIGEST_NONE, DIGEST_NONE },
	[KEY_DATA_DIGEST] = { "DataDigest", RULE_LIST, 0, 1, DIGEST_NONE, DIGEST_NONE },
	[KEY_MAX_CONNECTIONS] = { "MaxConnections", RULE_MIN, 1, 65535, 1, 1 },
	[KEY_INITIAL_R2T] = { "InitialR2T", RULE_OR, 0, 1, 1, 0 },
	[KEY_IMMEDIATE_DATA] = { "ImmediateData", RULE_AND, 0, 1, 1, 1 },
	[KEY_MAX_RECV_DSL] = { "MaxRecvDataSegmentLength", RULE_DECLARE, 512, 16777215, 8192, 262144 },
	[KEY_MAX_BURST_LENGTH] = { "MaxBurstLength", RULE_MIN, 512, 16777215, 262144, 1048576 },
	[KEY_FIRST_BURST_LENGTH] = { "FirstBurstLength", RULE_MIN, 512, 16777215, 65536, 262144 },
	[KEY_DEFAULT_TIME2WAIT] = { "DefaultTime2Wait", RULE_MAX, 0, 3600, 2, 2 },
	[KEY_DEFAULT_TIME2RETAIN] = { "DefaultTime2Retain", RULE_MIN, 0, 3600, 20, 0 },
	[KEY_MAX_OUTSTANDING_R2T] = { "MaxOutstandingR2T", RULE_MIN, 1, 65535, 1, 16 },
	[KEY_DATA_PDU_IN_ORDER] = { "DataPDUInOrder", RULE_OR, 0, 1, 1, 1 },
	[KEY_DATA_SEQUENCE_IN_ORDER] = { "DataSequenceInOrder", RULE_OR, 0, 1, 1, 1 },
	[KEY_ERROR_RECOVERY_LEVEL] = { "ErrorRecoveryLevel", RULE_MIN, 0, 2, 0, 0 },
	[KEY_OF_MARKER] = { "OFMarker", RULE_AND, 0, 1, 0, 0 },
	[KEY_IF_MARKER] = { "IFMarker", RULE_AND, 0, 1, 0, 0 },
	[KEY_OF_MARK_INT] = { "OFMarkInt", RULE_IRRELEVANT, 1, 65535, 2048, 2048 },
	[KEY_IF_MARK_INT] = { "IFMarkInt", RULE_IRRELEVANT, 1, 65535, 2048, 2048 },
	[KEY_TASK_REPORTING] = { "TaskReporting", RULE_LIST, 0, 0, 0, 0 },
	[KEY_PROTOCOL_LEVEL] = { "iSCSIProtocolLevel", RULE_MIN, 0, 31, 1, 1 },
};

/* Keys only meaningful in a normal session (13.x "Use: LO, Normal"). */
static bool key_normal_only(enum iscsi_key k)
{
	switch (k) {
	case KEY_MAX_CONNECTIONS: case KEY_INITIAL_R2T:
	case KEY_IMMEDIATE_DATA: case KEY_MAX_BURST_LENGTH:
	case KEY_FIRST_BURST_LENGTH: case KEY_MAX_OUTSTANDING_R2T:
	case KEY_DATA_PDU_IN_ORDER: case KEY_DATA_SEQUENCE_IN_ORDER:
		return true;
	default:
		return false;
	}
}

void iscsi_neg_init(struct iscsi_neg *n, bool crc32c_ok)
{
	memset(n, 0, sizeof(*n));
	for (int k = 0; k < KEY_COUNT; k++) {
		n->target[k] = key_defs[k].holdfast;
		n->result[k] = key_defs[k].rfc_default;
	}
	/* the initiator's MRDSL defaults to 8192 until it declares one */
	n->init_max_recv_dsl = key_defs[KEY_MAX_RECV_DSL].rfc_default;
	/* what we accept is declared by us, so it is known from the start */
	n->result[KEY_MAX_RECV_DSL] = n->target[KEY_MAX_RECV_DSL];
	n->crc32c_ok = crc32c_ok;
}

static int key_lookup(const char *name)
{
	for (int k = 0; k < KEY_COUNT; k++)
		if (strcmp(key_defs[k].name, name) == 0)
			return k;
	return -1;
}

static int parse_bool(const char *v, uint32_t *out)
{
	if (strcmp(v, "Yes") == 0)
		*out = 1;
	else if (strcmp(v, "No") == 0)
		*out = 0;
	else
		return -EINVAL;
	return 0;
}

/* Numbers: decimal, or hex with 0x (RFC 7143 5.1 numerical values). */
static int parse_num(const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
	char *end;
	unsigned long long x;

	if (!*v || *v == '-')
		return -EINVAL;
	errno = 0;
	x = strtoull(v, &end, 0);
	if (errno || *end || x < lo || x > hi)
		return -EINVAL;
	*out = (uint32_t)x;
	return 0;
}

int iscsi_neg_set_target(struct iscsi_neg *n, const char *key,
			 const char *value)
{
	int k = key_lookup(key);
	const struct key_def *d;
	uint32_t v;

	if (k < 0)
		return -ENOENT;
	d = &key_defs[k];
	switch (d->rule) {
	case RULE_AND:
	case RULE_OR:
		if (parse_bool(value, &v))
			return -EINVAL;
		break;
	case RULE_LIST:
		if (k == KEY_HEADER_DIGEST || k == KEY_DATA_DIGEST) {
			if (strcasecmp(value, "None") == 0)
				v = DIGEST_NONE;
			else if (strcasecmp(value, "CRC32C") == 0 &&
				 n->crc32c_ok)
				v = DIGEST_CRC32C;
			else
				return -EINVAL;
			break;
		}
		return -EINVAL;
	case RULE_IRRELEVANT:
		return -EINVAL;
	default:
		if (parse_num(value, d->lo, d->hi, &v))
			return -EINVAL;
	}
	n->target[k] = v;
	if (k == KEY_MAX_RECV_DSL)
		n->result[k] = v;
	return 0;
}

/* Digest lists (13.1): the first value in the initiator's order that we
 * support; a target that requires CRC32C (override) refuses None. */
static int neg_digest(struct iscsi_neg *n, int k, const char *value,
		      char *out, unsigned outlen)
{
	char buf[128], *save, *tok;

	snprintf(buf, sizeof(buf), "%s", value);
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (strcmp(tok, "CRC32C") == 0 && n->crc32c_ok) {
			n->result[k] = DIGEST_CRC32C;
			snprintf(out, outlen, "CRC32C");
			return 1;
		}
		if (strcmp(tok, "None") == 0 &&
		    n->target[k] != DIGEST_CRC32C) {
			n->result[k] = DIGEST_NONE;
			snprintf(out, outlen, "None");
			return 1;
		}
	}
	snprintf(out, outlen, "Reject");
	return 1;
}

int iscsi_neg_key(struct iscsi_neg *n, const char *key, const char *value,
		  char *out, unsigned outlen)
{
	int k = key_lookup(key);
	const struct key_def *d;
	uint32_t v;

	if (k < 0)
		return 0;
	d = &key_defs[k];
	n->answered[k] = true;
	if (n->discovery && key_normal_only(k)) {
		/* 6.2: keys outside their session type are "Irrelevant" */
		snprintf(out, outlen, "Irrelevant");
		return 1;
	}
	switch (d->rule) {
	case RULE_LIST:
		if (k == KEY_TASK_REPORTING) {
			/* only RFC3720 semantics (no iSER/FastAbort) */
			snprintf(out, outlen, strstr(value, "RFC3720") ?
				 "RFC3720" : "Reject");
			return 1;
		}
		return neg_digest(n, k, value, out, outlen);
	case RULE_AND:
	case RULE_OR:
		if (parse_bool(value, &v)) {
			snprintf(out, outlen, "Reject");
			return 1;
		}
		v = d->rule == RULE_AND ? (v && n->target[k])
					: (v || n->target[k]);
		n->result[k] = v;
		snprintf(out, outlen, "%s", v ? "Yes" : "No");
		return 1;
	case RULE_IRRELEVANT:
		snprintf(out, outlen, "Irrelevant");
		return 1;
	case RULE_DECLARE:
		/* MaxRecvDataSegmentLength: the initiator declares what it
		 * can receive; we answer with what we can receive. */
		if (parse_num(value, d->lo, d->hi, &v)) {
			snprintf(out, outlen, "Reject");
			return 1;
		}
		n->init_max_recv_dsl = v;
		snprintf(out, outlen, "%u", n->target[k]);
		return 1;
	case RULE_MIN:
	case RULE_MAX:
		if (parse_num(value, d->lo, d->hi, &v)) {
			snprintf(out, outlen, "Reject");
			return 1;
		}
		if (d->rule == RULE_MIN)
			v = MIN(v, n->target[k]);
		else
			v = MAX(v, n->target[k]);
		n->result[k] = v;
		snprintf(out, outlen, "%u", v);
		return 1;
	}
	return 0;
}

void iscsi_neg_declare(struct iscsi_neg *n, char *buf, unsigned len,
		       unsigned *off)
{
	char v[16];

	if (n->answered[KEY_MAX_RECV_DSL])
		return;
	n->answered[KEY_MAX_RECV_DSL] = true;
	snprintf(v, sizeof(v), "%u", n->target[KEY_MAX_RECV_DSL]);
	iscsi_text_add(buf, len, off, "MaxRecvDataSegmentLength", v);
}

void iscsi_neg_finish(struct iscsi_neg *n)
{
	/* 13.14: FirstBurstLength must not exceed MaxBurstLength */
	if (n->result[KEY_FIRST_BURST_LENGTH] > n->result[KEY_MAX_BURST_LENGTH])
		n->result[KEY_FIRST_BURST_LENGTH] =
			n->result[KEY_MAX_BURST_LENGTH];
}

unsigned iscsi_text_next(const uint8_t *data, unsigned len, unsigned off,
			 char *item, unsigned itemlen, char **key,
			 char **value)
{
	unsigned end = off, n;
	char *eq;

	while (off < len && data[off] == 0)	/* skip padding / empty */
		off++;
	if (off >= len)
		return 0;
	end = off;
	while (end < len && data[end])
		end++;
	n = MIN(end - off, itemlen - 1);
	memcpy(item, data + off, n);
	item[n] = 0;
	eq = strchr(item, '=');
	if (eq) {
		*eq = 0;
		*value = eq + 1;
	} else {
		*value = NULL;
	}
	*key = item;
	return end + 1;
}

int iscsi_text_add(char *buf, unsigned len, unsigned *off, const char *key,
		   const char *value)
{
	int n = snprintf(buf + *off, len - *off, "%s=%s", key, value);

	if (n < 0 || (unsigned)n + 1 > len - *off)
		return -ENOSPC;
	*off += (unsigned)n + 1;	/* keep the NUL separator */
	return 0;
}

/* Whether a key is an overridable operational key, and which values it
 * takes, is the iSCSI layer's knowledge (RFC 7143 section 13 ranges, what
 * this build can negotiate): ask it on a scratch negotiation, so that
 * targets.conf, tgtadm and the login code can never disagree. */
int iscsi_param_override_check(const char *key, const char *value,
			       const char **canon)
{
	struct iscsi_neg n;

	if (!key || !value || strlen(key) > ISCSI_PARAM_OVERRIDE_KEY_MAX ||
	    strlen(value) > ISCSI_PARAM_OVERRIDE_VALUE_MAX)
		return -EINVAL;
	iscsi_neg_init(&n, true);
	int ret = iscsi_neg_set_target(&n, key, value);
	if (ret)
		return ret == -ENOENT ? -ENOENT : -EINVAL;
	if (canon)
		*canon = key;	/* iSCSI keys are case sensitive (RFC 7143 6.1) */
	return 0;
}
