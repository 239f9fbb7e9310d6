/* scsi_pr_out.c - PERSISTENT RESERVE OUT (SPC-4 6.16, semantics 5.13.7 -
 * 5.13.11).
 *
 * Every service action runs under the LUN's reservation lock, on a copy of
 * the state taken first: if APTPL is in force and the state file cannot be
 * written, the copy is put back and the command fails, so what initiators
 * were told and what survives a restart never differ. */
#define SCSI_PR_INTERNAL
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reactor.h"
#include "scsi_internal.h"
#include "scsi_pr.h"
#include "util.h"

/* CDB (SPC-4 6.16.1) */
#define PROUT_CDB_SCOPE_TYPE	2
#define PROUT_CDB_PARAM_LEN	5
/* Basic parameter list (6.16.3) */
#define PROUT_PARAM_LEN		24
#define PROUT_RES_KEY		0
#define PROUT_SA_KEY		8
#define PROUT_FLAGS		20
#define PROUT_SPEC_I_PT		0x08
#define PROUT_ALL_TG_PT		0x04
#define PROUT_APTPL		0x01
/* REGISTER AND MOVE parameter list (6.16.4) */
#define MOVE_FLAGS		17
#define MOVE_UNREG		0x02
#define MOVE_APTPL		0x01
#define MOVE_REL_PORT		18
#define MOVE_TPID_LEN		20
#define MOVE_TPID		24

/* ASCs only reservations use (SPC-4 Annex D) */
#define ASC_INVALID_RELEASE_OF_PR		0x2604
#define ASC_INSUFFICIENT_REGISTRATION_RESOURCES	0x5504

struct pr_snapshot {
	struct scsi_pr_reg *regs;
	unsigned nregs;
	uint32_t generation;
	bool reserved, aptpl;
	uint8_t type, scope;
};

static int snap_take(const struct scsi_pr *pr, struct pr_snapshot *s)
{
	s->regs = malloc(sizeof(*s->regs) * (pr->nregs ? pr->nregs : 1));
	if (!s->regs)
		return -ENOMEM;
	if (pr->nregs)	/* regs may still be NULL with no registration */
		memcpy(s->regs, pr->regs, sizeof(*s->regs) * pr->nregs);
	s->nregs = pr->nregs;
	s->generation = pr->generation;
	s->reserved = pr->reserved;
	s->aptpl = pr->aptpl;
	s->type = pr->type;
	s->scope = pr->scope;
	return 0;
}

static void snap_restore(struct scsi_pr *pr, const struct pr_snapshot *s)
{
	/* nregs only shrinks or grows within cap after the snapshot */
	if (s->nregs)
		memcpy(pr->regs, s->regs, sizeof(*s->regs) * s->nregs);
	pr->nregs = s->nregs;
	pr->generation = s->generation;
	pr->reserved = s->reserved;
	pr->aptpl = s->aptpl;
	pr->type = s->type;
	pr->scope = s->scope;
}

/* What one service action decided besides status and sense. */
struct prout_ctx {
	struct scsi_cmd *cmd;
	struct scsi_pr *pr;
	int me;				/* caller's registration or -1 */
	uint64_t res_key, sa_key;
	uint8_t type, scope, flags;
	const uint8_t *param;
	uint32_t param_len;
	/* PREEMPT AND ABORT: sessions whose tasks are dropped */
	uint64_t abort_nexus[PR_MAX_REGISTRATIONS];
	unsigned nabort;
	unsigned pending;		/* hang_abort_nexus callbacks left */
};

static enum scsi_exec_result conflict(struct scsi_cmd *cmd)
{
	cmd->status = SAM_STAT_RESERVATION_CONFLICT;
	cmd->sense_len = 0;
	return SCSI_EXEC_DONE;
}

static enum scsi_exec_result bad_param(struct scsi_cmd *cmd, uint16_t byte,
				       int bit)
{
	scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_PARAMETER_LIST, false,
			 byte, bit);
	return SCSI_EXEC_DONE;
}

static bool type_valid(uint8_t type)
{
	return type == PR_TYPE_WE || type == PR_TYPE_EA ||
	       type == PR_TYPE_WE_RO || type == PR_TYPE_EA_RO ||
	       type == PR_TYPE_WE_AR || type == PR_TYPE_EA_AR;
}

static void reg_remove(struct scsi_pr *pr, unsigned i)
{
	memmove(&pr->regs[i], &pr->regs[i + 1],
		sizeof(pr->regs[0]) * (pr->nregs - i - 1));
	pr->nregs--;
}

static void reservation_drop(struct scsi_pr *pr)
{
	pr->reserved = false;
	pr->type = 0;
	pr->scope = 0;
	for (unsigned i = 0; i < pr->nregs; i++)
		pr->regs[i].holder = false;
}

/* Remove registration idx (5.13.10.3 unregistering): a WE/EA/RO holder's
 * reservation goes with it, an all-registrants one with the last
 * registrant. */
static void unregister(struct prout_ctx *c, int idx)
{
	struct scsi_pr *pr = c->pr;
	bool was_holder = pr->regs[idx].holder;

	reg_remove(pr, (unsigned)idx);
	if (!pr->reserved)
		return;
	if (scsi_pr_type_all_regs(pr->type)) {
		if (!pr->nregs)
			reservation_drop(pr);
		return;
	}
	if (!was_holder)
		return;
	/* 5.13.11.2.2: releasing a registrants only reservation this way
	 * tells the other registrants. */
	if (pr->type == PR_TYPE_WE_RO || pr->type == PR_TYPE_EA_RO)
		scsi_pr_ua(pr, ASC_RESERVATIONS_RELEASED, -1,
			   c->cmd->nexus ? c->cmd->nexus->id : 0);
	reservation_drop(pr);
}

static enum scsi_exec_result do_register(struct prout_ctx *c, bool ignore)
{
	struct scsi_cmd *cmd = c->cmd;
	struct scsi_pr *pr = c->pr;
	const struct scsi_nexus *n = cmd->nexus;

	/* SPEC_I_PT is not offered (SIP_C = 0 in REPORT CAPABILITIES) */
	if (c->flags & PROUT_SPEC_I_PT)
		return bad_param(cmd, PROUT_FLAGS, 3);
	if ((c->flags & PROUT_APTPL) && !pr->path)
		return bad_param(cmd, PROUT_FLAGS, 0);
	if (c->me < 0) {
		if (!ignore && c->res_key)
			return conflict(cmd);
		if (!c->sa_key)
			return SCSI_EXEC_DONE;	/* nothing to unregister */
		int err = scsi_pr_reserve_slot(pr);
		if (err < 0 || !n) {
			scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
				   ASC_INSUFFICIENT_REGISTRATION_RESOURCES);
			return SCSI_EXEC_DONE;
		}
		struct scsi_pr_reg *r = &pr->regs[pr->nregs++];
		memset(r, 0, sizeof(*r));
		r->key = c->sa_key;
		snprintf(r->iname, sizeof(r->iname), "%s", n->initiator_name);
		memcpy(r->isid, n->isid, sizeof(r->isid));
		r->rel_port_id = n->rel_port_id;
		r->all_tg_pt = c->flags & PROUT_ALL_TG_PT;
		r->nexus_id = n->id;
	} else {
		if (!ignore && c->res_key != pr->regs[c->me].key)
			return conflict(cmd);
		if (c->sa_key)
			pr->regs[c->me].key = c->sa_key;
		else
			unregister(c, c->me);
	}
	/* 5.13.6: the APTPL bit of the last REGISTER in force decides */
	pr->aptpl = c->flags & PROUT_APTPL;
	pr->generation++;
	return SCSI_EXEC_DONE;
}

static enum scsi_exec_result do_reserve(struct prout_ctx *c)
{
	struct scsi_pr *pr = c->pr;

	if (c->me < 0 || c->res_key != pr->regs[c->me].key)
		return conflict(c->cmd);
	if (pr->reserved) {
		/* the holder may repeat it; anything else conflicts */
		if (scsi_pr_is_holder(pr, c->me) && pr->type == c->type &&
		    pr->scope == c->scope)
			return SCSI_EXEC_DONE;
		return conflict(c->cmd);
	}
	pr->reserved = true;
	pr->type = c->type;
	pr->scope = c->scope;
	if (!scsi_pr_type_all_regs(c->type))
		pr->regs[c->me].holder = true;
	return SCSI_EXEC_DONE;
}

static enum scsi_exec_result do_release(struct prout_ctx *c)
{
	struct scsi_pr *pr = c->pr;
	uint8_t type = pr->type;

	if (c->me < 0 || c->res_key != pr->regs[c->me].key)
		return conflict(c->cmd);
	if (!scsi_pr_is_holder(pr, c->me))
		return SCSI_EXEC_DONE;		/* 5.13.11.2.1: no effect */
	if (pr->type != c->type || pr->scope != c->scope) {
		scsi_sense(c->cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_INVALID_RELEASE_OF_PR);
		return SCSI_EXEC_DONE;
	}
	reservation_drop(pr);
	if (scsi_pr_type_regs_access(type))
		scsi_pr_ua(pr, ASC_RESERVATIONS_RELEASED, c->me,
			   c->cmd->nexus ? c->cmd->nexus->id : 0);
	return SCSI_EXEC_DONE;
}

static enum scsi_exec_result do_clear(struct prout_ctx *c)
{
	struct scsi_pr *pr = c->pr;

	if (c->me < 0 || c->res_key != pr->regs[c->me].key)
		return conflict(c->cmd);
	/* 5.13.11.4.? CLEAR: everyone else hears RESERVATIONS PREEMPTED */
	scsi_pr_ua(pr, ASC_RESERVATIONS_PREEMPTED, c->me,
		   c->cmd->nexus ? c->cmd->nexus->id : 0);
	reservation_drop(pr);
	pr->nregs = 0;
	pr->generation++;
	return SCSI_EXEC_DONE;
}

/* Remove every registration with key `key` except the caller's (5.13.11.4:
 * preempting); returns how many went.  Each removed session hears
 * REGISTRATIONS PREEMPTED and, for PREEMPT AND ABORT, loses its tasks. */
static unsigned preempt_key(struct prout_ctx *c, uint64_t key, bool all)
{
	struct scsi_pr *pr = c->pr;
	uint64_t self = c->cmd->nexus ? c->cmd->nexus->id : 0;
	unsigned removed = 0;
	int i = 0;

	while (i < (int)pr->nregs) {
		struct scsi_pr_reg *r = &pr->regs[i];

		if (i == c->me || (!all && r->key != key)) {
			i++;
			continue;
		}
		if (r->nexus_id && r->nexus_id != self) {
			scsi_ua_raise_nexus(pr->lun,
					    ASC_REGISTRATIONS_PREEMPTED,
					    r->nexus_id);
			c->abort_nexus[c->nabort++] = r->nexus_id;
		}
		reg_remove(pr, (unsigned)i);
		if (c->me > i)
			c->me--;
		removed++;
	}
	return removed;
}

static enum scsi_exec_result do_preempt(struct prout_ctx *c)
{
	struct scsi_pr *pr = c->pr;
	uint64_t self = c->cmd->nexus ? c->cmd->nexus->id : 0;
	bool holder_preempted = false;

	if (c->me < 0 || c->res_key != pr->regs[c->me].key)
		return conflict(c->cmd);
	if (!pr->reserved) {
		/* 5.13.11.4.2: only registrations go */
		if (!c->sa_key)
			return bad_param(c->cmd, PROUT_SA_KEY, -1);
		if (!preempt_key(c, c->sa_key, false))
			return conflict(c->cmd);
		pr->generation++;
		return SCSI_EXEC_DONE;
	}
	if (!type_valid(c->type) || c->scope != PR_SCOPE_LU) {
		scsi_sense_field(c->cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 PROUT_CDB_SCOPE_TYPE, -1);
		return SCSI_EXEC_DONE;
	}
	if (scsi_pr_type_all_regs(pr->type)) {
		/* 5.13.11.4.4: key 0 preempts every other registrant and
		 * the reservation; another key only registrations */
		if (c->sa_key) {
			if (!preempt_key(c, c->sa_key, false))
				return conflict(c->cmd);
			pr->generation++;
			return SCSI_EXEC_DONE;
		}
		preempt_key(c, 0, true);
		holder_preempted = true;
	} else {
		uint64_t holder_key = 0;

		for (unsigned i = 0; i < pr->nregs; i++)
			if (pr->regs[i].holder)
				holder_key = pr->regs[i].key;
		if (c->sa_key != holder_key) {
			/* 5.13.11.4.3 c): not the holder's key */
			if (!c->sa_key)
				return bad_param(c->cmd, PROUT_SA_KEY, -1);
			if (!preempt_key(c, c->sa_key, false))
				return conflict(c->cmd);
			pr->generation++;
			return SCSI_EXEC_DONE;
		}
		preempt_key(c, c->sa_key, false);
		holder_preempted = true;
	}
	if (holder_preempted) {
		bool changed = pr->type != c->type || pr->scope != c->scope;

		reservation_drop(pr);
		pr->reserved = true;
		pr->type = c->type;
		pr->scope = c->scope;
		if (!scsi_pr_type_all_regs(c->type))
			pr->regs[c->me].holder = true;
		/* 5.13.11.4.3: a new type or scope is news to the remaining
		 * registrants */
		if (changed)
			scsi_pr_ua(pr, ASC_RESERVATIONS_RELEASED, c->me, self);
	}
	pr->generation++;
	return SCSI_EXEC_DONE;
}

static enum scsi_exec_result do_register_and_move(struct prout_ctx *c)
{
	struct scsi_cmd *cmd = c->cmd;
	struct scsi_pr *pr = c->pr;
	struct scsi_pr_reg dst;
	uint32_t tlen, used;
	int di = -1;

	if (c->me < 0 || c->res_key != pr->regs[c->me].key)
		return conflict(cmd);
	/* 5.13.8: only the holder of a reservation that has one holder */
	if (!pr->reserved || scsi_pr_type_all_regs(pr->type) ||
	    !pr->regs[c->me].holder)
		return conflict(cmd);
	if (!c->sa_key)
		return bad_param(cmd, PROUT_SA_KEY, -1);
	if (c->param_len < MOVE_TPID)
		goto len_error;
	tlen = get_be32(c->param + MOVE_TPID_LEN);
	if (MOVE_TPID + (uint64_t)tlen > c->param_len)
		goto len_error;
	if (scsi_pr_transport_id_parse(c->param + MOVE_TPID, tlen, &dst,
				       &used) < 0)
		return bad_param(cmd, MOVE_TPID, -1);
	dst.rel_port_id = get_be16(c->param + MOVE_REL_PORT);
	if (!cmd->nexus || dst.rel_port_id != cmd->nexus->rel_port_id)
		return bad_param(cmd, MOVE_REL_PORT, -1);
	if ((c->param[MOVE_FLAGS] & MOVE_APTPL) && !pr->path)
		return bad_param(cmd, MOVE_FLAGS, 0);
	for (unsigned i = 0; i < pr->nregs; i++) {
		const struct scsi_pr_reg *r = &pr->regs[i];

		if (!strcmp(r->iname, dst.iname) &&
		    !memcmp(r->isid, dst.isid, sizeof(r->isid)) &&
		    (r->all_tg_pt || r->rel_port_id == dst.rel_port_id))
			di = (int)i;
	}
	if (di == c->me)	/* moving to oneself (5.13.8 b) */
		return bad_param(cmd, MOVE_TPID, -1);
	if (di < 0) {
		if (scsi_pr_reserve_slot(pr) < 0) {
			scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
				   ASC_INSUFFICIENT_REGISTRATION_RESOURCES);
			return SCSI_EXEC_DONE;
		}
		di = (int)pr->nregs++;
		dst.key = c->sa_key;
		pr->regs[di] = dst;
	}
	pr->regs[c->me].holder = false;
	pr->regs[di].holder = true;
	if (c->param[MOVE_FLAGS] & MOVE_UNREG)
		reg_remove(pr, (unsigned)c->me);
	pr->aptpl = c->param[MOVE_FLAGS] & MOVE_APTPL;
	pr->generation++;
	return SCSI_EXEC_DONE;

len_error:
	scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
		   ASC_PARAMETER_LIST_LENGTH_ERROR);
	return SCSI_EXEC_DONE;
}

/* PREEMPT AND ABORT: answered once the hang engine has dropped what the
 * preempted sessions had held or queued (DESIGN.md). */
static void abort_done(void *arg, unsigned dropped)
{
	struct prout_ctx *c = arg;

	(void)dropped;
	if (--c->pending)
		return;
	scsi_cmd_complete(c->cmd);
	free(c);
}

static enum scsi_exec_result abort_preempted(struct prout_ctx *c)
{
	struct reactor *r = reactor_current();
	unsigned n = c->nabort;

	if (!n) {
		free(c);
		return SCSI_EXEC_DONE;
	}
	c->pending = n + 1;	/* +1: ours, so no callback completes early */
	for (unsigned i = 0; i < n; i++) {
		if (hang_abort_nexus(c->pr->lun, c->abort_nexus[i], r,
				     r ? abort_done : NULL, c) < 0 || !r)
			c->pending--;
	}
	if (--c->pending == 0) {
		free(c);
		return SCSI_EXEC_DONE;
	}
	return SCSI_EXEC_ASYNC;
}

static uint8_t prout_sa(const struct scsi_cmd *cmd)
{
	return cmd->cdb[1] & 0x1f;
}

enum scsi_exec_result spc_pr_out(struct scsi_cmd *cmd)
{
	struct scsi_pr *pr = scsi_pr_state(cmd->lun);
	uint8_t sa = prout_sa(cmd);
	uint32_t plen = get_be32(cmd->cdb + PROUT_CDB_PARAM_LEN);
	struct pr_snapshot snap;
	struct prout_ctx *c;
	enum scsi_exec_result res;
	bool was_aptpl;
	int err;

	cmd->out_want = plen;
	if (!pr) {
		scsi_set_backend_error(cmd, -ENOMEM, true);
		return SCSI_EXEC_DONE;
	}
	/* 6.16.3: 24 bytes unless SPEC_I_PT (not offered) or a move */
	if (sa == PR_OUT_REGISTER_AND_MOVE ? plen < MOVE_TPID
					   : plen != PROUT_PARAM_LEN) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_PARAMETER_LIST_LENGTH_ERROR);
		return SCSI_EXEC_DONE;
	}
	if (cmd->out_len < plen || !cmd->buf) {
		scsi_sense(cmd, SENSE_KEY_ILLEGAL_REQUEST,
			   ASC_PARAMETER_LIST_LENGTH_ERROR);
		return SCSI_EXEC_DONE;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		scsi_set_backend_error(cmd, -ENOMEM, true);
		return SCSI_EXEC_DONE;
	}
	c->cmd = cmd;
	c->pr = pr;
	c->param = cmd->buf;
	c->param_len = plen;
	c->res_key = get_be64(cmd->buf + PROUT_RES_KEY);
	c->sa_key = get_be64(cmd->buf + PROUT_SA_KEY);
	c->type = cmd->cdb[PROUT_CDB_SCOPE_TYPE] & 0x0f;
	c->scope = cmd->cdb[PROUT_CDB_SCOPE_TYPE] >> 4;
	c->flags = sa == PR_OUT_REGISTER_AND_MOVE ? 0
						  : cmd->buf[PROUT_FLAGS];
	cmd->status = SAM_STAT_GOOD;

	if ((sa == PR_OUT_RESERVE || sa == PR_OUT_RELEASE) &&
	    (!type_valid(c->type) || c->scope != PR_SCOPE_LU)) {
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true,
				 PROUT_CDB_SCOPE_TYPE, -1);
		free(c);
		return SCSI_EXEC_DONE;
	}

	pthread_mutex_lock(&pr->lock);
	/* SPC-3 5.6.3: an SPC-2 RESERVE of another nexus blocks us (the
	 * dispatcher already checked; it may have changed since). */
	if (pr->spc2_reserved &&
	    pr->spc2_nexus != (cmd->nexus ? cmd->nexus->id : 0)) {
		pthread_mutex_unlock(&pr->lock);
		free(c);
		return conflict(cmd);
	}
	/* the state in the store's metadata could not be read (the store
	 * was reconnecting): a change made without it would overwrite
	 * registrations this node does not know */
	if (pr->unread) {
		err = scsi_pr_store_reload_locked(pr);
		if (pr->unread) {
			pthread_mutex_unlock(&pr->lock);
			free(c);
			scsi_set_backend_error(cmd, err < 0 ? err : -EIO, true);
			return SCSI_EXEC_DONE;
		}
	}
	if (snap_take(pr, &snap) < 0) {
		pthread_mutex_unlock(&pr->lock);
		free(c);
		scsi_set_backend_error(cmd, -ENOMEM, true);
		return SCSI_EXEC_DONE;
	}
	was_aptpl = pr->aptpl;
	c->me = scsi_pr_find(pr, cmd->nexus);
	switch (sa) {
	case PR_OUT_REGISTER:
		res = do_register(c, false);
		break;
	case PR_OUT_REGISTER_AND_IGNORE:
		res = do_register(c, true);
		break;
	case PR_OUT_RESERVE:
		res = do_reserve(c);
		break;
	case PR_OUT_RELEASE:
		res = do_release(c);
		break;
	case PR_OUT_CLEAR:
		res = do_clear(c);
		break;
	case PR_OUT_PREEMPT:
	case PR_OUT_PREEMPT_AND_ABORT:
		res = do_preempt(c);
		break;
	case PR_OUT_REGISTER_AND_MOVE:
		res = do_register_and_move(c);
		break;
	default:
		scsi_sense_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, 1, 4);
		res = SCSI_EXEC_DONE;
		break;
	}
	/* Persist what changed (5.13.5): the new state while APTPL is in
	 * force; dropping APTPL removes the file. */
	if (cmd->status == SAM_STAT_GOOD && pr->path) {
		/* a LUN shared with another node keeps it there always
		 * (scsi_pr_store.c) */
		if (pr->aptpl || lun_settings_get(pr->lun)->alua_group) {
			err = scsi_pr_store_save(pr);
			if (err < 0) {
				log_err("LUN %lu: saving reservations to %s: "
					"%s", (unsigned long)lun_settings_get(pr->lun)->lun,
					pr->path, strerror(-err));
				snap_restore(pr, &snap);
				c->nabort = 0;
				scsi_set_backend_error(cmd, err, true);
			}
		} else if (was_aptpl) {
			scsi_pr_store_remove(pr);
		}
	}
	scsi_pr_update_active(pr);
	pthread_mutex_unlock(&pr->lock);
	free(snap.regs);

	if (sa == PR_OUT_PREEMPT_AND_ABORT && cmd->status == SAM_STAT_GOOD)
		return abort_preempted(c);
	free(c);
	return res;
}
