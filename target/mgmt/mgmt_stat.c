/* mgmt_stat.c - tgtadm's statistics and driver views, in tgtd's exact
 * layout: --op stat (system, target, session, connection), --op show
 * --mode conn, and --mode lld show/start/stop. */
#include <stdlib.h>
#include <string.h>

#include "iscsi.h"
#include "mgmt_internal.h"
#include "target.h"

#define STAT_LUN_HEADER                                                       \
	"tgt lun sid rd_subm(bytes,cmds) rd_done(bytes,cmds) "               \
	"wr_subm(bytes,cmds) wr_done(bytes,cmds) errs\n"
#define STAT_CONN_HEADER                                                      \
	"sid cid rxdata_octets txdata_octets dataout_pdus datain_pdus "      \
	"cmd_pdus rsp_pdus\n"

struct stat_walk {
	struct mgmt_buf *b;
	int tid;			/* -1: every target */
	uint64_t sid;			/* 0: every session */
	bool found;
	bool with_conn;			/* stat session: add the conn table */
	bool only_conn;			/* stat conn */
	bool show_conn;			/* show conn */
};

static void stat_lun_row(struct mgmt_buf *b, int tid, uint64_t lun,
			 uint64_t sid, const struct iscsi_lun_stat *x)
{
	mgmt_buf_printf(b, "%3d %3lu %3lu %12lu %6lu %12lu %6lu %12lu %6lu "
			"%12lu %6lu %4lu\n", tid, (unsigned long)lun,
			(unsigned long)sid, (unsigned long)x->rd_subm_bytes,
			(unsigned long)x->rd_subm_cmds,
			(unsigned long)x->rd_done_bytes,
			(unsigned long)x->rd_done_cmds,
			(unsigned long)x->wr_subm_bytes,
			(unsigned long)x->wr_subm_cmds,
			(unsigned long)x->wr_done_bytes,
			(unsigned long)x->wr_done_cmds,
			(unsigned long)x->errs);
}

static void stat_conn_row(struct mgmt_buf *b, uint64_t sid,
			  const struct iscsi_conn_stat *c)
{
	mgmt_buf_printf(b, "%3lu %3u %13lu %13lu %12lu %11lu %8lu %8lu\n",
			(unsigned long)sid, c->cid,
			(unsigned long)c->rx_data_octets,
			(unsigned long)c->tx_data_octets,
			(unsigned long)c->dataout_pdus,
			(unsigned long)c->datain_pdus,
			(unsigned long)c->cmd_pdus, (unsigned long)c->rsp_pdus);
}

static void stat_session_fn(const struct iscsi_session_info *si, void *arg)
{
	struct stat_walk *w = arg;
	struct iscsi_lun_stat *ls;
	struct iscsi_conn_stat cs;
	uint64_t luns[TGT_MAX_LUNS];
	struct target *t;
	int n;

	if (w->sid && si->sid != w->sid)
		return;
	if (w->show_conn) {
		w->found = true;
		mgmt_buf_printf(w->b, "Session: %lu\n", (unsigned long)si->sid);
		for (int i = 0; i < si->nr_conns; i++) {
			mgmt_buf_printf(w->b, "    Connection: %u\n",
					si->conns[i].cid);
			mgmt_buf_printf(w->b, "        Initiator: %s\n",
					si->initiator_name);
			mgmt_buf_printf(w->b, "        IP Address: %s\n",
					si->conns[i].peer);
		}
		return;
	}
	ls = calloc(TGT_MAX_LUNS, sizeof(*ls));
	if (!ls || iscsi_session_stats(si->sid, ls, &cs) < 0) {
		free(ls);
		return;
	}
	w->found = true;
	if (!w->only_conn) {
		t = tgt_get_by_tid(si->tid);
		n = t ? tgt_lun_list(t, luns, TGT_MAX_LUNS) : 0;
		if (t)
			tgt_put(t);
		/* LUN 0, the controller, first: every target has it */
		stat_lun_row(w->b, si->tid, 0, si->sid, &ls[0]);
		for (int i = 0; i < n; i++)
			if (luns[i] && luns[i] < TGT_MAX_LUNS)
				stat_lun_row(w->b, si->tid, luns[i], si->sid,
					     &ls[luns[i]]);
	}
	if (w->with_conn || w->only_conn) {
		if (!w->only_conn)
			mgmt_buf_printf(w->b, "\n");
		mgmt_buf_printf(w->b, STAT_CONN_HEADER);
		stat_conn_row(w->b, si->sid, &cs);
	}
	free(ls);
}

static void stat_target_fn(struct target *t, void *arg)
{
	struct stat_walk *w = arg;

	iscsi_session_for_each(t->tid, stat_session_fn, w);
}

/* --op stat --mode system|target */
int mgmt_stat_targets(int tid, struct mgmt_buf *b)
{
	struct stat_walk w = { .b = b, .tid = tid };

	if (tid != -1) {
		struct target *t = tgt_get_by_tid(tid);

		if (!t)
			return MGMT_NO_TARGET;
		tgt_put(t);
	}
	mgmt_buf_printf(b, STAT_LUN_HEADER);
	if (tid == -1)
		tgt_for_each(stat_target_fn, &w);
	else
		iscsi_session_for_each(tid, stat_session_fn, &w);
	return MGMT_SUCCESS;
}

/* --op stat|show --mode session|conn */
int mgmt_stat_session(int tid, uint64_t sid, int op, bool conn,
		      struct mgmt_buf *b)
{
	struct mgmt_buf tmp;
	struct stat_walk w = { .tid = tid, .sid = sid };
	struct target *t;

	if (op == MGMT_OP_SHOW && !conn)
		return MGMT_INVALID_REQUEST;	/* as tgtd */
	t = tgt_get_by_tid(tid);
	if (!t)
		return MGMT_NO_TARGET;
	tgt_put(t);
	memset(&tmp, 0, sizeof(tmp));
	w.b = &tmp;
	if (op == MGMT_OP_SHOW) {
		/* tgtd answers an unknown sid with an empty show */
		w.show_conn = true;
	} else {
		w.only_conn = conn;
		w.with_conn = !conn;
		if (!conn)
			mgmt_buf_printf(&tmp, STAT_LUN_HEADER);
	}
	iscsi_session_for_each(tid, stat_session_fn, &w);
	if (!w.found && op != MGMT_OP_SHOW) {
		mgmt_buf_free(&tmp);
		return MGMT_NO_SESSION;
	}
	if (tmp.len)
		mgmt_buf_printf(b, "%.*s", (int)tmp.len, tmp.data);
	if (tmp.oom)
		b->oom = 1;
	mgmt_buf_free(&tmp);
	return MGMT_SUCCESS;
}

static void lld_target_fn(struct target *t, void *arg)
{
	mgmt_buf_printf(arg, "        Target %d: %s\n", t->tid, t->name);
}

/* --mode lld: one driver, iscsi, always ready */
int mgmt_lld(int op, struct mgmt_buf *b)
{
	switch (op) {
	case MGMT_OP_SHOW:
		mgmt_buf_printf(b, "LLDs:\n    iscsi: ready\n");
		tgt_for_each(lld_target_fn, b);
		return MGMT_SUCCESS;
	case MGMT_OP_START:
		return MGMT_SUCCESS;
	case MGMT_OP_STOP:
		/* the driver cannot stop under its targets (tgtd: busy) */
		return tgt_count() > 0 ? MGMT_DRIVER_ACTIVE : MGMT_SUCCESS;
	default:
		return MGMT_UNSUPPORTED_OPERATION;
	}
}
