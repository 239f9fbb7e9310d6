/* iscsi_login.c - the login phase (RFC 7143 6, 11.12-11.13) and Text
 * requests (SendTargets, 11.10-11.11, appendix C).
 *
 * Login without CHAP: the security stage accepts AuthMethod=None; the
 * operational stage negotiates keys with iscsi_param.c; the final response
 * assigns the TSIH and moves the connection to full feature phase. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "account.h"
#include "iscsi_chap.h"
#include "iscsi_internal.h"

#define LOGIN_TEXT_MAX 65536
#define LOGIN_RSP_MAX 8192

struct iscsi_login {
	struct iscsi_neg neg;
	int stage;			/* current stage (CSG) */
	bool first_done;		/* first request processed */
	bool discovery;
	char initiator_name[TGT_NAME_MAX];
	char initiator_alias[TGT_NAME_MAX];
	char target_name[TGT_NAME_MAX];
	uint8_t isid[6];
	uint16_t tsih;
	uint32_t itt;
	uint32_t cmd_sn;
	struct target *target;		/* referenced */
	bool tpgt_sent;
	bool auth_done;
	/* CHAP (12.1.3) */
	bool auth_required;
	int auth_tid;			/* account scope: tid or discovery */
	struct chap_state chap;
	char chap_n[ACCT_NAME_MAX];
	uint8_t chap_r[CHAP_MAX_DIGEST];
	int chap_r_len;
	bool chap_have_i;
	uint8_t chap_i;
	uint8_t chap_c[CHAP_MAX_CHALLENGE];
	int chap_c_len;
	uint8_t *text;			/* text accumulated over C bits */
	uint32_t text_len;
};

void iscsi_login_free(struct iscsi_conn *c)
{
	struct iscsi_login *l = c->login;

	if (!l)
		return;
	if (l->target)
		tgt_put(l->target);
	free(l->text);
	free(l);
	c->login = NULL;
}

static struct iscsi_pdu *login_rsp_new(struct iscsi_conn *c,
				       const uint8_t *req)
{
	struct iscsi_pdu *p = iscsi_pdu_new(ISCSI_OP_LOGIN_RSP, 0);

	memcpy(p->bhs + LOGIN_ISID, req + LOGIN_ISID, 6);
	put_be16(p->bhs + LOGIN_TSIH, get_be16(req + LOGIN_TSIH));
	put_be32(p->bhs + BHS_ITT, get_be32(req + BHS_ITT));
	put_be32(p->bhs + BHS_STAT_SN, iscsi_conn_next_stat_sn(c));
	/* 11.13: during login ExpCmdSN = MaxCmdSN = the login's CmdSN */
	put_be32(p->bhs + BHS_EXP_CMD_SN, get_be32(req + BHS_CMD_SN));
	put_be32(p->bhs + BHS_MAX_CMD_SN, get_be32(req + BHS_CMD_SN));
	return p;
}

static void login_fail(struct iscsi_conn *c, const uint8_t *req,
		       uint16_t status, const char *why)
{
	struct iscsi_pdu *p = login_rsp_new(c, req);

	log_warn("conn %lu (%s, %s): login refused (0x%04x): %s",
		 (unsigned long)c->id, c->peer_str,
		 c->login && c->login->initiator_name[0] ?
			 c->login->initiator_name : "unknown initiator",
		 status, why);
	p->bhs[LOGIN_STATUS_CLASS] = (uint8_t)(status >> 8);
	p->bhs[LOGIN_STATUS_DETAIL] = (uint8_t)status;
	p->bhs[BHS_FLAGS] = req[BHS_FLAGS] & (LOGIN_CSG_MASK);
	iscsi_conn_send(c, p);
	/* 6.1: after a login reject the target closes the connection */
	iscsi_conn_close_after_send(c, "login refused");
}

/* Handle one declarative or security key.  Returns 1 if handled, 0 if
 * unknown, -1 with *status set if the login must fail. */
static int login_key(struct iscsi_login *l,
		     const char *key, const char *value, char *rsp,
		     unsigned rsplen, unsigned *rspoff, uint16_t *status)
{
	char out[256];

	if (strcmp(key, "InitiatorName") == 0) {
		snprintf(l->initiator_name, sizeof(l->initiator_name), "%s",
			 value);
		return 1;
	}
	if (strcmp(key, "InitiatorAlias") == 0) {
		snprintf(l->initiator_alias, sizeof(l->initiator_alias), "%s",
			 value);
		return 1;
	}
	if (strcmp(key, "TargetName") == 0) {
		snprintf(l->target_name, sizeof(l->target_name), "%s", value);
		return 1;
	}
	if (strcmp(key, "SessionType") == 0) {
		if (strcmp(value, "Discovery") == 0) {
			l->discovery = true;
		} else if (strcmp(value, "Normal") == 0) {
			l->discovery = false;
		} else {
			*status = LOGIN_STATUS_SESSION_TYPE;
			return -1;
		}
		l->neg.discovery = l->discovery;
		return 1;
	}
	if (strcmp(key, "AuthMethod") == 0) {
		/* 12.1: CHAP when the target (or discovery) has incoming
		 * accounts, else None; either must be in the offer */
		bool none = false, chap = false;
		char buf[256], *save, *tok;

		snprintf(buf, sizeof(buf), "%s", value);
		for (tok = strtok_r(buf, ",", &save); tok;
		     tok = strtok_r(NULL, ",", &save)) {
			if (strcmp(tok, "None") == 0)
				none = true;
			else if (strcmp(tok, "CHAP") == 0)
				chap = true;
		}
		if (l->auth_required ? !chap : !none) {
			*status = LOGIN_STATUS_AUTH_FAILED;
			return -1;
		}
		if (l->auth_required) {
			iscsi_text_add(rsp, rsplen, rspoff, key, "CHAP");
			l->chap.stage = CHAP_WAIT_A;
		} else {
			iscsi_text_add(rsp, rsplen, rspoff, key, "None");
			l->auth_done = true;
		}
		return 1;
	}
	if (strcmp(key, "CHAP_A") == 0) {
		char v[2 * CHAP_MAX_DIGEST + 8];

		if (l->chap.stage != CHAP_WAIT_A) {
			*status = LOGIN_STATUS_INIT_ERR;
			return -1;
		}
		l->chap.alg = chap_pick_alg(value);
		if (l->chap.alg < 0 || chap_new_challenge(&l->chap) < 0) {
			*status = LOGIN_STATUS_AUTH_FAILED;
			return -1;
		}
		snprintf(v, sizeof(v), "%d", l->chap.alg);
		iscsi_text_add(rsp, rsplen, rspoff, "CHAP_A", v);
		snprintf(v, sizeof(v), "%u", l->chap.id);
		iscsi_text_add(rsp, rsplen, rspoff, "CHAP_I", v);
		chap_encode_hex(l->chap.challenge, l->chap.challenge_len, v,
				sizeof(v));
		iscsi_text_add(rsp, rsplen, rspoff, "CHAP_C", v);
		l->chap.stage = CHAP_WAIT_R;
		return 1;
	}
	if (strcmp(key, "CHAP_N") == 0 || strcmp(key, "CHAP_R") == 0 ||
	    strcmp(key, "CHAP_I") == 0 || strcmp(key, "CHAP_C") == 0) {
		if (l->chap.stage != CHAP_WAIT_R) {
			*status = LOGIN_STATUS_INIT_ERR;
			return -1;
		}
		if (key[5] == 'N') {
			snprintf(l->chap_n, sizeof(l->chap_n), "%s", value);
		} else if (key[5] == 'R') {
			l->chap_r_len = chap_decode(value, l->chap_r,
						    sizeof(l->chap_r));
		} else if (key[5] == 'I') {
			char *end;
			long id = strtol(value, &end, 0);

			if (*end || id < 0 || id > 255) {
				*status = LOGIN_STATUS_AUTH_FAILED;
				return -1;
			}
			l->chap_i = (uint8_t)id;
			l->chap_have_i = true;
		} else {
			l->chap_c_len = chap_decode(value, l->chap_c,
						    sizeof(l->chap_c));
			if (l->chap_c_len <= 0) {
				*status = LOGIN_STATUS_AUTH_FAILED;
				return -1;
			}
		}
		return 1;
	}
	if (iscsi_neg_key(&l->neg, key, value, out, sizeof(out)) == 1) {
		iscsi_text_add(rsp, rsplen, rspoff, key, out);
		return 1;
	}
	return 0;
}

/* CHAP_N and CHAP_R arrived: check the initiator's answer and, for mutual
 * CHAP, answer its challenge (12.1.3).  0, or -1 with *why set. */
static int login_chap_verify(struct iscsi_conn *c, struct iscsi_login *l,
			     char *rsp, unsigned rsplen, unsigned *rspoff,
			     const char **why)
{
	char secret[ACCT_SECRET_MAX], out_user[ACCT_NAME_MAX];
	char out_secret[ACCT_SECRET_MAX], v[2 * CHAP_MAX_DIGEST + 8];
	uint8_t want[CHAP_MAX_DIGEST];
	int n, ret = -1;

	if (acct_incoming_secret(l->auth_tid, l->chap_n, secret,
				 sizeof(secret)) < 0) {
		*why = "CHAP: unknown user";
		goto out;
	}
	n = chap_response(l->chap.alg, l->chap.id, secret, l->chap.challenge,
			  l->chap.challenge_len, want);
	if (n <= 0 || l->chap_r_len != n ||
	    !chap_equal(want, l->chap_r, (unsigned)n)) {
		*why = "CHAP: wrong response";
		goto out;
	}
	if (l->chap_have_i || l->chap_c_len > 0) {
		/* mutual CHAP */
		if (!l->chap_have_i || l->chap_c_len <= 0) {
			*why = "CHAP: incomplete mutual challenge";
			goto out;
		}
		if ((unsigned)l->chap_c_len == l->chap.challenge_len &&
		    chap_equal(l->chap_c, l->chap.challenge,
			       l->chap.challenge_len)) {
			*why = "CHAP: reflected challenge";
			goto out;
		}
		if (acct_outgoing(l->auth_tid, out_user, sizeof(out_user),
				  out_secret, sizeof(out_secret)) < 0) {
			*why = "CHAP: mutual authentication requested but no "
			       "outgoing account";
			goto out;
		}
		if (strcmp(out_secret, secret) == 0) {
			/* RFC 7143 12.1.3: the two directions must use
			 * different secrets */
			*why = "CHAP: outgoing secret equals incoming secret";
			goto out;
		}
		n = chap_response(l->chap.alg, l->chap_i, out_secret,
				  l->chap_c, (unsigned)l->chap_c_len, want);
		if (n <= 0) {
			*why = "CHAP: digest failed";
			goto out;
		}
		iscsi_text_add(rsp, rsplen, rspoff, "CHAP_N", out_user);
		chap_encode_hex(want, (unsigned)n, v, sizeof(v));
		iscsi_text_add(rsp, rsplen, rspoff, "CHAP_R", v);
	}
	log_info("conn %lu (%s): CHAP user %s authenticated%s",
		 (unsigned long)c->id, c->peer_str, l->chap_n,
		 l->chap_have_i ? " (mutual)" : "");
	l->chap.stage = CHAP_DONE;
	l->auth_done = true;
	ret = 0;
out:
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(out_secret, sizeof(out_secret));
	return ret;
}

/* First request: find the target, check ACLs, apply its overrides. */
static int login_resolve(struct iscsi_conn *c, struct iscsi_login *l,
			 uint16_t *status, const char **why)
{
	struct tgt_param *tp;

	if (!l->initiator_name[0]) {
		*status = LOGIN_STATUS_MISSING_PARAM;
		*why = "no InitiatorName";
		return -1;
	}
	if (l->discovery) {
		l->auth_tid = ACCT_DISCOVERY_TID;
		l->auth_required = acct_required(ACCT_DISCOVERY_TID);
		return 0;
	}
	if (!l->target_name[0]) {
		*status = LOGIN_STATUS_MISSING_PARAM;
		*why = "no TargetName";
		return -1;
	}
	l->target = tgt_get_by_name(l->target_name);
	if (!l->target) {
		*status = LOGIN_STATUS_TGT_NOT_FOUND;
		*why = "no such target";
		return -1;
	}
	if (!tgt_acl_allows(l->target, (struct sockaddr *)&c->peer,
			    l->initiator_name)) {
		/* 11.13.5: "authorization failure" */
		*status = LOGIN_STATUS_TGT_FORBIDDEN;
		*why = "initiator not allowed by the target's ACL";
		return -1;
	}
	if (l->target->offline) {
		*status = LOGIN_STATUS_SVC_UNAVAIL;
		*why = "target offline";
		return -1;
	}
	pthread_mutex_lock(&l->target->lock);
	list_for_each_entry(tp, &l->target->params, link)
		if (iscsi_neg_set_target(&l->neg, tp->key, tp->value) < 0)
			log_warn("target %s: ignoring parameter %s=%s",
				 l->target->name, tp->key, tp->value);
	l->auth_tid = l->target->tid;
	l->auth_required = acct_required(l->target->tid);
	c->nop_interval_ms = l->target->nop_interval * 1000;
	c->nop_count = l->target->nop_count;
	pthread_mutex_unlock(&l->target->lock);
	return 0;
}

/* The final login response went out: enter full feature phase.
 * 0, -EUSERS (max_sessions(_per_target)) or -1. */
static int login_complete(struct iscsi_conn *c, struct iscsi_login *l)
{
	int ret;

	struct iscsi_session *s = xzalloc(sizeof(*s));
	struct iscsi_neg *n = &l->neg;

	iscsi_neg_finish(n);
	list_init(&s->pending);
	s->lun_stats = calloc(TGT_MAX_LUNS, sizeof(*s->lun_stats));
	if (!s->lun_stats) {
		free(s);
		return -1;
	}
	memcpy(s->isid, l->isid, 6);
	s->discovery = l->discovery;
	snprintf(s->initiator_name, sizeof(s->initiator_name), "%s",
		 l->initiator_name);
	snprintf(s->initiator_alias, sizeof(s->initiator_alias), "%s",
		 l->initiator_alias);
	s->target = l->target;
	l->target = NULL;
	s->conn = c;
	s->exp_cmd_sn = l->cmd_sn;
	s->cmd_window = LIMIT(cmdsn_depth);
	s->max_burst = n->result[KEY_MAX_BURST_LENGTH];
	s->first_burst = n->result[KEY_FIRST_BURST_LENGTH];
	s->max_r2t = MIN(n->result[KEY_MAX_OUTSTANDING_R2T], ISCSI_MAX_R2T);
	s->initial_r2t = n->result[KEY_INITIAL_R2T];
	s->immediate_data = n->result[KEY_IMMEDIATE_DATA];
	c->max_send_dsl = n->init_max_recv_dsl;
	c->max_recv_dsl = n->target[KEY_MAX_RECV_DSL];
	snprintf(s->nexus.initiator_name, sizeof(s->nexus.initiator_name),
		 "%s", s->initiator_name);
	memcpy(s->nexus.isid, s->isid, 6);
	s->nexus.tpgt = ISCSI_TPGT;
	s->nexus.rel_port_id = 1;
	s->nexus.target_name = s->target ? s->target->name : "";
	ret = iscsi_session_register(s);
	if (ret < 0) {
		l->target = s->target;	/* its reference goes with the login */
		free(s->lun_stats);
		free(s);
		return ret == -EUSERS ? ret : -1;
	}
	c->stat.cid = c->cid;
	c->sess = s;
	if (s->target)
		atomic_fetch_add(&s->target->nr_sessions, 1);
	return 0;
}

/* Send the final login response p and enter full feature phase. */
static void login_enter_full_feature(struct iscsi_conn *c,
				    struct iscsi_pdu *p)
{
	struct iscsi_login *l = c->login;

	iscsi_conn_send(c, p);
	if (c->state == CONN_STATE_CLOSING)
		return;		/* the send failed */
	/* digests start with the first PDU after the final login
	 * response (13.1) */
	c->hdr_digest = l->neg.result[KEY_HEADER_DIGEST] == DIGEST_CRC32C;
	c->data_digest = l->neg.result[KEY_DATA_DIGEST] == DIGEST_CRC32C;
	iscsi_conn_set_state(c, CONN_STATE_FULL_FEATURE);
	if (!c->sess->discovery)
		log_info("conn %lu: login from %s (%s) to %s, tsih %u",
			 (unsigned long)c->id, c->sess->initiator_name,
			 c->peer_str, c->sess->target->name, c->sess->tsih);
	iscsi_login_free(c);
	iscsi_conn_start_nop(c);
}

void iscsi_login_reinstated(struct iscsi_conn *c)
{
	struct iscsi_pdu *p = c->login_rsp_held;

	if (c->state != CONN_STATE_REINSTATE || !p)
		return;
	c->login_rsp_held = NULL;
	reactor_timer_del(c->r, &c->reinstate_timer);
	login_enter_full_feature(c, p);
}

/* REINSTATE gave up: turn the held final response into a reject. */
static void login_refuse_held(struct iscsi_conn *c, uint16_t status)
{
	struct iscsi_pdu *p = c->login_rsp_held;

	c->login_rsp_held = NULL;
	if (iscsi_conn_set_state(c, CONN_STATE_FLUSH) < 0) {
		iscsi_pdu_free(p);
		iscsi_conn_close(c, "reinstatement timed out");
		return;
	}
	c->flush_why = "reinstatement timed out";
	/* a reject: no keys, no transit, no TSIH (11.13) */
	if (p->data_owned)
		free(p->data);
	p->data = NULL;
	p->data_len = 0;
	p->data_owned = false;
	p->bhs[BHS_FLAGS] &= LOGIN_CSG_MASK;
	put_be16(p->bhs + LOGIN_TSIH, 0);
	p->bhs[LOGIN_STATUS_CLASS] = (uint8_t)(status >> 8);
	p->bhs[LOGIN_STATUS_DETAIL] = (uint8_t)status;
	iscsi_conn_send(c, p);
	iscsi_conn_close_after_send(c, "reinstatement timed out");
}

static void login_reinstate_timeout(struct ev_timer *t)
{
	struct iscsi_conn *c = t->arg;

	if (c->state != CONN_STATE_REINSTATE)
		return;
	/* An attempt of the old session is still in the store: answering
	 * now could let it land after the initiator saw the new session
	 * begin.  Refuse with "service unavailable" (11.13.5: a transient
	 * target condition); the initiator logs in again later. */
	log_warn("conn %lu (%s): %d reinstated session(s) of %s not gone "
		 "after %d ms: login refused (0x%04x), the initiator may "
		 "retry", (unsigned long)c->id, c->peer_str,
		 c->reinstate_waiting, c->sess->initiator_name,
		 ISCSI_REINSTATE_TIMEOUT_MS, LOGIN_STATUS_SVC_UNAVAIL);
	login_refuse_held(c, LOGIN_STATUS_SVC_UNAVAIL);
}

void iscsi_login_rx(struct iscsi_conn *c, const uint8_t *bhs,
		    const uint8_t *data, uint32_t len)
{
	struct iscsi_login *l = c->login;
	uint8_t flags = bhs[BHS_FLAGS];
	int csg = (flags & LOGIN_CSG_MASK) >> LOGIN_CSG_SHIFT;
	int nsg = flags & LOGIN_NSG_MASK;
	bool transit = flags & LOGIN_FLAG_TRANSIT;
	char *rsp, item[1024], *key, *value;
	unsigned rspoff = 0, off = 0;
	uint16_t status = LOGIN_STATUS_SUCCESS;
	const char *why = "bad key";
	struct iscsi_pdu *p;

	if (!l) {
		l = c->login = xzalloc(sizeof(*l));
		iscsi_neg_init(&l->neg, true);
		l->stage = csg;
		memcpy(l->isid, bhs + LOGIN_ISID, 6);
		l->tsih = get_be16(bhs + LOGIN_TSIH);
		l->itt = get_be32(bhs + BHS_ITT);
		l->cmd_sn = get_be32(bhs + BHS_CMD_SN);
		c->cid = get_be16(bhs + LOGIN_CID);
		/* the target picks its first StatSN; follow the initiator's
		 * expectation so both agree from the start */
		c->stat_sn = get_be32(bhs + BHS_EXP_STAT_SN);
		if (bhs[LOGIN_VERSION_MIN] > 0) {
			login_fail(c, bhs, LOGIN_STATUS_NO_VERSION,
				   "unsupported version");
			return;
		}
		if (l->tsih != 0) {
			/* adding a connection to a session (MC/S) is not
			 * supported: MaxConnections=1 */
			login_fail(c, bhs, LOGIN_STATUS_NO_SESSION,
				   "connection to an existing session");
			return;
		}
	}
	if (csg != l->stage || csg == 2 || csg == ISCSI_STAGE_FULL_FEATURE ||
	    (transit && nsg <= csg) || (transit && nsg == 2)) {
		login_fail(c, bhs, LOGIN_STATUS_INIT_ERR, "bad stage");
		return;
	}
	/* collect text spread over PDUs with the C bit (11.12.2) */
	if (len) {
		uint8_t *t;

		if (l->text_len + len > LOGIN_TEXT_MAX) {
			login_fail(c, bhs, LOGIN_STATUS_INIT_ERR,
				   "login text too long");
			return;
		}
		t = realloc(l->text, l->text_len + len);
		if (!t) {
			login_fail(c, bhs, LOGIN_STATUS_NO_RESOURCES, "oom");
			return;
		}
		memcpy(t + l->text_len, data, len);
		l->text = t;
		l->text_len += len;
	}
	if (flags & LOGIN_FLAG_CONTINUE) {
		p = login_rsp_new(c, bhs);
		p->bhs[BHS_FLAGS] = (uint8_t)(csg << LOGIN_CSG_SHIFT);
		iscsi_conn_send(c, p);
		return;
	}

	rsp = xzalloc(LOGIN_RSP_MAX);
	if (!l->first_done) {
		/* Resolve the target from the declaratives first, so its
		 * parameter overrides are in force when the operational keys
		 * of this same PDU are negotiated. */
		while ((off = iscsi_text_next(l->text, l->text_len, off, item,
					      sizeof(item), &key, &value))) {
			if (value && (!strcmp(key, "InitiatorName") ||
				      !strcmp(key, "InitiatorAlias") ||
				      !strcmp(key, "TargetName") ||
				      !strcmp(key, "SessionType")) &&
			    login_key(l, key, value, rsp, LOGIN_RSP_MAX,
				      &rspoff, &status) < 0) {
				why = key;
				break;
			}
		}
		off = 0;
		l->first_done = true;
		if (status == LOGIN_STATUS_SUCCESS &&
		    login_resolve(c, l, &status, &why) == 0 && !l->discovery) {
			char v[16];

			/* 13.9: returned in the first response of a
			 * normal session */
			snprintf(v, sizeof(v), "%d", ISCSI_TPGT);
			iscsi_text_add(rsp, LOGIN_RSP_MAX, &rspoff,
				       "TargetPortalGroupTag", v);
		}
	}
	while (status == LOGIN_STATUS_SUCCESS &&
	       (off = iscsi_text_next(l->text, l->text_len, off, item,
				      sizeof(item), &key, &value)) != 0) {
		int r;

		if (!value) {
			status = LOGIN_STATUS_INIT_ERR;
			why = "key without value";
			break;
		}
		r = login_key(l, key, value, rsp, LOGIN_RSP_MAX, &rspoff,
			      &status);
		if (r < 0) {
			why = key;
			break;
		}
		if (r == 0)	/* 6.2.1: unknown keys are NotUnderstood */
			iscsi_text_add(rsp, LOGIN_RSP_MAX, &rspoff, key,
				       "NotUnderstood");
	}
	free(l->text);
	l->text = NULL;
	l->text_len = 0;
	if (status != LOGIN_STATUS_SUCCESS) {
		free(rsp);
		login_fail(c, bhs, status, why);
		return;
	}
	if (l->chap.stage == CHAP_WAIT_R && l->chap_n[0] &&
	    l->chap_r_len > 0 &&
	    login_chap_verify(c, l, rsp, LOGIN_RSP_MAX, &rspoff, &why) < 0) {
		free(rsp);
		login_fail(c, bhs, LOGIN_STATUS_AUTH_FAILED, why);
		return;
	}
	if (l->auth_required && !l->auth_done) {
		/* 12.1: no leaving the security stage before CHAP is done;
		 * while it is under way the target keeps T clear */
		if (csg != ISCSI_STAGE_SECURITY ||
		    l->chap.stage == CHAP_NONE) {
			free(rsp);
			login_fail(c, bhs, LOGIN_STATUS_AUTH_FAILED,
				   "authentication required");
			return;
		}
		transit = false;
	} else if (csg == ISCSI_STAGE_SECURITY && transit) {
		/* AuthMethod=None is implied when no CHAP is needed */
		l->auth_done = true;
	}
	if (csg == ISCSI_STAGE_OPERATIONAL ||
	    (transit && nsg == ISCSI_STAGE_FULL_FEATURE))
		iscsi_neg_declare(&l->neg, rsp, LOGIN_RSP_MAX, &rspoff);

	p = login_rsp_new(c, bhs);
	p->bhs[BHS_FLAGS] = (uint8_t)(csg << LOGIN_CSG_SHIFT);
	if (transit) {
		p->bhs[BHS_FLAGS] |= (uint8_t)(LOGIN_FLAG_TRANSIT | nsg);
		l->stage = nsg;
	}
	if (rspoff) {
		p->data = (uint8_t *)rsp;
		p->data_len = rspoff;
		p->data_owned = true;
	} else {
		free(rsp);
	}
	if (transit && nsg == ISCSI_STAGE_FULL_FEATURE) {
		int ret = login_complete(c, l);

		if (ret < 0) {
			iscsi_pdu_free(p);
			/* 11.13.5: out of resources, for a session limit
			 * too: the initiator may retry later */
			login_fail(c, bhs, LOGIN_STATUS_NO_RESOURCES,
				   ret == -EUSERS ? "too many sessions "
						    "(max_sessions, "
						    "max_sessions_per_target)"
						  : "no free TSIH");
			return;
		}
		put_be16(p->bhs + LOGIN_TSIH, c->sess->tsih);
		/* 6.3.5: an older session with this initiator name, ISID
		 * and target ends before the new one starts: the answer is
		 * held until it is gone, so nothing of it (a held write, an
		 * attempt in the store) can land after the initiator saw
		 * the new session begin */
		if (!c->sess->discovery && iscsi_session_reinstate(c) > 0) {
			/* the replies come later, on this reactor */
			iscsi_conn_set_state(c, CONN_STATE_REINSTATE);
			c->login_rsp_held = p;
			reactor_timer_add(c->r, &c->reinstate_timer,
					  ISCSI_REINSTATE_TIMEOUT_MS,
					  login_reinstate_timeout, c);
			return;
		}
		login_enter_full_feature(c, p);
		return;
	}
	iscsi_conn_send(c, p);
}

/* ---- Text requests ---- */

struct sendtargets_ctx {
	struct iscsi_conn *c;
	const char *only;		/* a name, or NULL for All */
	char *buf;
	unsigned len, off;
};

static void sendtargets_one(struct target *t, void *arg)
{
	struct sendtargets_ctx *x = arg;
	char addr[200];

	if (x->only && strcmp(x->only, t->name) != 0)
		return;
	if (!tgt_acl_allows(t, (struct sockaddr *)&x->c->peer,
			    x->c->sess->initiator_name))
		return;
	/* Appendix C: the address the initiator can reach us at: the
	 * portal's advertised address, else the one it connected to */
	snprintf(addr, sizeof(addr), "%s,%d",
		 x->c->advertise[0] ? x->c->advertise : x->c->local_str,
		 ISCSI_TPGT);
	if (iscsi_text_add(x->buf, x->len, &x->off, "TargetName", t->name) ||
	    iscsi_text_add(x->buf, x->len, &x->off, "TargetAddress", addr))
		log_warn("SendTargets answer truncated");
}

static void text_send_chunk(struct iscsi_conn *c, const uint8_t *req)
{
	uint32_t left = c->text_rsp_len - c->text_rsp_off;
	uint32_t n = MIN(left, c->max_send_dsl);
	struct iscsi_pdu *p = iscsi_pdu_new(ISCSI_OP_TEXT_RSP, n);
	bool last = n == left;

	/* an empty answer (a Text Request without keys) has no data
	 * segment: p->data is NULL then */
	if (n)
		memcpy(p->data, c->text_rsp + c->text_rsp_off, n);
	c->text_rsp_off += n;
	memcpy(p->bhs + BHS_LUN, req + BHS_LUN, 8);
	put_be32(p->bhs + BHS_ITT, get_be32(req + BHS_ITT));
	if (last) {
		p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
		put_be32(p->bhs + BHS_TTT, ISCSI_RSVD_TAG);
		free(c->text_rsp);
		c->text_rsp = NULL;
	} else {
		/* 11.11: more to come; the initiator asks with our TTT */
		p->bhs[BHS_FLAGS] = TEXT_FLAG_CONTINUE;
		c->text_ttt = iscsi_conn_new_ttt(c);
		c->text_itt = get_be32(req + BHS_ITT);
		put_be32(p->bhs + BHS_TTT, c->text_ttt);
	}
	put_be32(p->bhs + BHS_STAT_SN, iscsi_conn_next_stat_sn(c));
	iscsi_conn_put_sn(c, p->bhs);
	iscsi_conn_send(c, p);
}

void iscsi_text_rx(struct iscsi_conn *c, const uint8_t *bhs,
		   const uint8_t *data, uint32_t len)
{
	uint32_t ttt = get_be32(bhs + BHS_TTT);
	char item[1024], *key, *value;
	unsigned off = 0;
	struct sendtargets_ctx x = { .c = c, .len = 32768 };

	if (ttt != ISCSI_RSVD_TAG) {
		/* continuation of a long answer */
		if (c->text_rsp && ttt == c->text_ttt &&
		    get_be32(bhs + BHS_ITT) == c->text_itt)
			text_send_chunk(c, bhs);
		else
			iscsi_conn_reject(c, bhs,
					  ISCSI_REJECT_INVALID_PDU_FIELD);
		return;
	}
	free(c->text_rsp);
	c->text_rsp = NULL;
	x.buf = xzalloc(x.len);
	while ((off = iscsi_text_next(data, len, off, item, sizeof(item),
				      &key, &value)) != 0) {
		char out[256];

		if (strcmp(key, "SendTargets") == 0 && value) {
			if (strcmp(value, "All") == 0) {
				if (!c->sess->discovery) {
					/* 12.6/App. C: only in discovery */
					x.only = c->sess->target->name;
				}
			} else if (value[0]) {
				x.only = value;
			} else if (!c->sess->discovery) {
				x.only = c->sess->target->name;
			}
			if (!x.only && !c->sess->discovery)
				continue;
			tgt_for_each(sendtargets_one, &x);
			x.only = NULL;
		} else if (value && iscsi_neg_key(&(struct iscsi_neg){ 0 },
						   key, value, out,
						   sizeof(out)) == 1) {
			/* operational keys cannot change in full feature
			 * phase here: answer with what is in force */
			iscsi_text_add(x.buf, x.len, &x.off, key, "Reject");
		} else {
			iscsi_text_add(x.buf, x.len, &x.off, key,
				       "NotUnderstood");
		}
	}
	c->text_rsp = x.buf;
	c->text_rsp_len = x.off;
	c->text_rsp_off = 0;
	text_send_chunk(c, bhs);
}
