/* iscsi_session.c - the table of sessions (shared by all reactors and the
 * management thread), session reinstatement, and the listening portals.
 *
 * A session lives on its connection's reactor.  Other threads never touch
 * it directly: they post a request naming the session id to its reactor,
 * which looks the id up again there (a session still in the table is
 * alive, because it leaves the table before it is freed, on that same
 * reactor). */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "account.h"
#include "iscsi_internal.h"

static pthread_mutex_t sess_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list_head sessions = LIST_HEAD_INIT(sessions);
static uint16_t next_tsih;
static uint64_t next_sid;
static atomic_int live_conns;

int iscsi_session_register(struct iscsi_session *s)
{
	struct iscsi_session *o;
	int tries;

	pthread_mutex_lock(&sess_lock);
	if (!s->discovery) {
		/* max_sessions(_per_target): sessions this login would
		 * reinstate (same initiator, ISID, target) do not count,
		 * nor closing ones */
		uint32_t max = LIMIT(max_sessions);
		uint32_t max_t = LIMIT(max_sessions_per_target);
		uint32_t n = 0, nt = 0;

		list_for_each_entry(o, &sessions, link) {
			if (o->discovery || o->closing ||
			    (o->target == s->target &&
			     memcmp(o->isid, s->isid, 6) == 0 &&
			     strcmp(o->initiator_name, s->initiator_name) == 0))
				continue;
			n++;
			if (o->target == s->target)
				nt++;
		}
		if ((max && n >= max) || (max_t && nt >= max_t)) {
			pthread_mutex_unlock(&sess_lock);
			iscsi_limit_log(LIMIT_LOG_SESSION,
					"login of %s to %s refused: %u "
					"sessions (max_sessions %u), %u on the "
					"target (max_sessions_per_target %u)",
					s->initiator_name,
					s->target ? s->target->name : "?", n,
					max, nt, max_t);
			return -EUSERS;
		}
	}
	for (tries = 0; tries < 65536; tries++) {
		bool used = false;

		if (++next_tsih == 0)
			next_tsih = 1;
		list_for_each_entry(o, &sessions, link)
			if (o->tsih == next_tsih)
				used = true;
		if (!used)
			break;
	}
	if (tries == 65536) {
		pthread_mutex_unlock(&sess_lock);
		return -EBUSY;
	}
	s->tsih = next_tsih;
	s->sid = ++next_sid;
	s->nexus.id = s->sid;
	list_add_tail(&s->link, &sessions);
	pthread_mutex_unlock(&sess_lock);
	return 0;
}

void iscsi_session_closing(struct iscsi_session *s)
{
	pthread_mutex_lock(&sess_lock);
	s->closing = true;
	pthread_mutex_unlock(&sess_lock);
}

void iscsi_session_unregister(struct iscsi_session *s)
{
	pthread_mutex_lock(&sess_lock);
	if (!list_empty(&s->link) && s->link.next)
		list_del(&s->link);
	pthread_mutex_unlock(&sess_lock);
}

enum close_mode { CLOSE_FORCE, CLOSE_ASK_LOGOUT };

struct close_req {
	uint64_t sid;
	enum close_mode mode;
	const char *why;
};

/* A session in the table, closing ones included (closing: its
 * connection is closed but not freed yet). */
static struct iscsi_session *session_find_any_locked(uint64_t sid)
{
	struct iscsi_session *s;

	list_for_each_entry(s, &sessions, link)
		if (s->sid == sid)
			return s;
	return NULL;
}

/* A live session: what management and other threads may act on. */
static struct iscsi_session *session_find_locked(uint64_t sid)
{
	struct iscsi_session *s = session_find_any_locked(sid);

	return s && !s->closing ? s : NULL;
}

/* 11.9: Async Message asking the initiator to log out within secs. */
static void session_ask_logout(struct iscsi_conn *c, uint16_t secs)
{
	struct iscsi_pdu *p = iscsi_pdu_new(ISCSI_OP_ASYNC_MSG, 0);

	p->bhs[BHS_FLAGS] = ISCSI_FLAG_FINAL;
	put_be32(p->bhs + BHS_ITT, ISCSI_RSVD_TAG);
	put_be32(p->bhs + BHS_STAT_SN, iscsi_conn_next_stat_sn(c));
	iscsi_conn_put_sn(c, p->bhs);
	p->bhs[ASYNC_EVENT] = ISCSI_ASYNC_LOGOUT_REQUEST;
	put_be16(p->bhs + ASYNC_PARAM3, secs);
	iscsi_conn_send(c, p);
}

static void session_close_on_reactor(void *arg)
{
	struct close_req *req = arg;
	struct iscsi_session *s;
	struct iscsi_conn *c = NULL;

	pthread_mutex_lock(&sess_lock);
	s = session_find_locked(req->sid);
	if (s)
		c = s->conn;
	pthread_mutex_unlock(&sess_lock);
	if (c && c->state == CONN_STATE_REINSTATE) {
		/* not answered yet: no Async Message can go out */
		iscsi_conn_close(c, req->why);
	} else if (c && c->state == CONN_STATE_FULL_FEATURE) {
		if (req->mode == CLOSE_ASK_LOGOUT && !s->discovery)
			session_ask_logout(c, 2);
		else
			iscsi_conn_close(c, req->why);
	}
	free(req);
}

static void session_post_close(struct iscsi_session *s, enum close_mode m,
			       const char *why)
{
	struct close_req *req = xzalloc(sizeof(*req));

	req->sid = s->sid;
	req->mode = m;
	req->why = why;
	if (reactor_call(s->conn->r, session_close_on_reactor, req) < 0)
		free(req);
}

/* ---- session reinstatement (RFC 7143 6.3.5) ----
 *
 * The new connection N (reactor RN) posts one reinstate_req per old
 * session O to O's reactor, holding N->ntasks for each.  There O's
 * connection is closed (its tasks aborted: a command whose attempt is in
 * the store completes first, its result dropped), every LUN drops what it
 * holds or queues for O's nexus, and the request waits on O's connection
 * until that is freed, i.e. until all of it is done.  Then the request
 * goes back to RN (reinstate_done), which answers N's login when the
 * last old session is gone. */

struct reinstate_req {
	struct list_head link;		/* old conn's reinstate_waiters */
	uint64_t old_sid;
	struct iscsi_conn *nc;		/* the new connection */
	struct reactor *nr;		/* its reactor */
};

/* On the new connection's reactor. */
static void reinstate_done(void *arg)
{
	struct iscsi_conn *c = arg;

	c->ntasks--;
	if (c->state == CONN_STATE_REINSTATE) {
		if (--c->reinstate_waiting == 0)
			iscsi_login_reinstated(c);
		return;
	}
	/* timed out (FULL_FEATURE already) or closed meanwhile */
	iscsi_conn_task_gone(c);
}

static void reinstate_reply(struct reinstate_req *req)
{
	if (reactor_call(req->nr, reinstate_done, req->nc) < 0)
		log_err("conn %lu: cannot report reinstated session %lu gone",
			(unsigned long)req->nc->id,
			(unsigned long)req->old_sid);
	free(req);
}

void iscsi_session_reinstate_notify(struct iscsi_conn *c)
{
	while (!list_empty(&c->reinstate_waiters)) {
		struct reinstate_req *req = list_first_entry(
			&c->reinstate_waiters, struct reinstate_req, link);

		list_del(&req->link);
		reinstate_reply(req);
	}
}

static void reinstate_drop_done(void *arg, unsigned dropped)
{
	struct iscsi_conn *c = arg;

	log_debug("conn %lu: reinstatement dropped %u held/queued "
		  "command(s)", (unsigned long)c->id, dropped);
	c->ntasks--;
	iscsi_conn_task_gone(c);
}

/* On the old session's reactor. */
static void reinstate_on_old_reactor(void *arg)
{
	struct reinstate_req *req = arg;
	struct iscsi_session *s;
	struct iscsi_conn *c = NULL;

	pthread_mutex_lock(&sess_lock);
	s = session_find_any_locked(req->old_sid);
	if (s)
		c = s->conn;
	pthread_mutex_unlock(&sess_lock);
	if (!c) {		/* already freed: nothing left of it */
		reinstate_reply(req);
		return;
	}
	list_add_tail(&req->link, &c->reinstate_waiters);
	if (c->free_scheduled)
		return;		/* no task left; freed (and replied) soon */
	/* keep c while the drops below are issued: closing alone may
	 * schedule its free */
	c->ntasks++;
	iscsi_conn_close(c, "session reinstatement");
	if (s->target) {
		uint64_t luns[TGT_MAX_LUNS];
		int nl = tgt_lun_list(s->target, luns, TGT_MAX_LUNS);

		for (int i = 0; i < nl; i++) {
			struct scsi_lun *lun = tgt_lun_get(s->target, luns[i]);

			if (!lun)
				continue;
			c->ntasks++;	/* until reinstate_drop_done */
			if (scsi_lun_drop_nexus(lun, s->nexus.id, c->r,
						reinstate_drop_done, c) < 0)
				c->ntasks--;
			scsi_lun_put(lun);
		}
	}
	c->ntasks--;
	iscsi_conn_task_gone(c);
}

int iscsi_session_reinstate(struct iscsi_conn *c)
{
	struct iscsi_session *s = c->sess, *o;
	int n = 0;

	/* 6.3.5: a new session with the same initiator name, ISID and
	 * target replaces the old one, which is closed and its tasks
	 * dropped.  Only older ones: two logins racing must not end each
	 * other. */
	pthread_mutex_lock(&sess_lock);
	list_for_each_entry(o, &sessions, link) {
		struct reinstate_req *req;

		if (o == s || o->sid > s->sid || o->discovery ||
		    o->target != s->target ||
		    memcmp(o->isid, s->isid, 6) != 0 ||
		    strcmp(o->initiator_name, s->initiator_name) != 0)
			continue;
		log_info("session %lu of %s reinstated by session %lu%s",
			 (unsigned long)o->sid, o->initiator_name,
			 (unsigned long)s->sid,
			 o->closing ? " (already closing)" : "");
		req = xzalloc(sizeof(*req));
		req->old_sid = o->sid;
		req->nc = c;
		req->nr = c->r;
		c->ntasks++;	/* c stays until reinstate_done */
		if (reactor_call(o->conn->r, reinstate_on_old_reactor,
				 req) < 0) {
			log_err("session %lu: cannot post its reinstatement",
				(unsigned long)o->sid);
			c->ntasks--;
			free(req);
			continue;
		}
		n++;
	}
	c->reinstate_waiting = n;
	pthread_mutex_unlock(&sess_lock);
	return n;
}

int iscsi_session_for_each(int tid,
			   void (*fn)(const struct iscsi_session_info *si,
				      void *arg),
			   void *arg)
{
	struct iscsi_session_info *infos = NULL;
	struct iscsi_session *s;
	int n = 0, cap = 0;

	pthread_mutex_lock(&sess_lock);
	list_for_each_entry(s, &sessions, link) {
		struct iscsi_session_info *si;

		if (s->discovery || s->closing ||
		    (tid >= 0 && s->target->tid != tid))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			infos = realloc(infos, sizeof(*infos) * (size_t)cap);
			if (!infos)
				break;
		}
		si = &infos[n++];
		memset(si, 0, sizeof(*si));
		si->sid = s->sid;
		si->tid = s->target->tid;
		snprintf(si->initiator_name, sizeof(si->initiator_name), "%s",
			 s->initiator_name);
		snprintf(si->initiator_alias, sizeof(si->initiator_alias),
			 "%s", s->initiator_alias);
		memcpy(si->isid, s->isid, 6);
		si->nr_conns = 1;
		si->conns[0].cid = s->conn->cid;
		snprintf(si->conns[0].peer, sizeof(si->conns[0].peer), "%s",
			 s->conn->peer_str);
		snprintf(si->conns[0].local, sizeof(si->conns[0].local), "%s",
			 s->conn->local_str);
		si->conns[0].data_buffer = __atomic_load_n(
			&s->conn->buf_reserved, __ATOMIC_RELAXED);
		si->conns[0].data_buffer_peak = __atomic_load_n(
			&s->conn->buf_peak, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&sess_lock);
	for (int i = 0; infos && i < n; i++)
		fn(&infos[i], arg);
	free(infos);
	return n;
}

int iscsi_session_stats(uint64_t sid, struct iscsi_lun_stat *luns,
			struct iscsi_conn_stat *conn)
{
	struct iscsi_session *s;
	int ret = -ENOENT;

	pthread_mutex_lock(&sess_lock);
	s = session_find_locked(sid);
	if (s) {
		for (int i = 0; i < TGT_MAX_LUNS; i++) {
			const struct iscsi_lun_stat *x = &s->lun_stats[i];
			struct iscsi_lun_stat *y = &luns[i];

			y->rd_subm_bytes = STAT_GET(x->rd_subm_bytes);
			y->rd_subm_cmds = STAT_GET(x->rd_subm_cmds);
			y->rd_done_bytes = STAT_GET(x->rd_done_bytes);
			y->rd_done_cmds = STAT_GET(x->rd_done_cmds);
			y->wr_subm_bytes = STAT_GET(x->wr_subm_bytes);
			y->wr_subm_cmds = STAT_GET(x->wr_subm_cmds);
			y->wr_done_bytes = STAT_GET(x->wr_done_bytes);
			y->wr_done_cmds = STAT_GET(x->wr_done_cmds);
			y->errs = STAT_GET(x->errs);
		}
		conn->cid = s->conn->stat.cid;
		conn->rx_data_octets = STAT_GET(s->conn->stat.rx_data_octets);
		conn->tx_data_octets = STAT_GET(s->conn->stat.tx_data_octets);
		conn->dataout_pdus = STAT_GET(s->conn->stat.dataout_pdus);
		conn->datain_pdus = STAT_GET(s->conn->stat.datain_pdus);
		conn->cmd_pdus = STAT_GET(s->conn->stat.cmd_pdus);
		conn->rsp_pdus = STAT_GET(s->conn->stat.rsp_pdus);
		ret = 0;
	}
	pthread_mutex_unlock(&sess_lock);
	return ret;
}

int iscsi_session_close(uint64_t sid, bool ask_logout)
{
	struct iscsi_session *s;
	int ret = -ENOENT;

	pthread_mutex_lock(&sess_lock);
	s = session_find_locked(sid);
	if (s) {
		session_post_close(s, ask_logout ? CLOSE_ASK_LOGOUT
						 : CLOSE_FORCE,
				   "closed by management");
		ret = 0;
	}
	pthread_mutex_unlock(&sess_lock);
	return ret;
}

static int sessions_count(int tid)
{
	struct iscsi_session *s;
	int n = 0;

	pthread_mutex_lock(&sess_lock);
	list_for_each_entry(s, &sessions, link)
		if (!s->closing &&
		    (tid < 0 || (s->target && s->target->tid == tid)))
			n++;
	pthread_mutex_unlock(&sess_lock);
	return n;
}

void iscsi_sessions_close(int tid, bool ask_logout, unsigned timeout_ms)
{
	struct iscsi_session *s;
	uint64_t deadline = clock_ms() + timeout_ms;

	pthread_mutex_lock(&sess_lock);
	list_for_each_entry(s, &sessions, link)
		if (tid < 0 || (s->target && s->target->tid == tid))
			session_post_close(s, ask_logout ? CLOSE_ASK_LOGOUT
							 : CLOSE_FORCE,
					   "target shutting down");
	pthread_mutex_unlock(&sess_lock);
	if (ask_logout) {
		/* give initiators half the time to log out by themselves */
		uint64_t ask_deadline = clock_ms() + timeout_ms / 2;

		while (sessions_count(tid) && clock_ms() < ask_deadline)
			usleep(10000);
		pthread_mutex_lock(&sess_lock);
		list_for_each_entry(s, &sessions, link)
			if (tid < 0 || (s->target && s->target->tid == tid))
				session_post_close(s, CLOSE_FORCE,
						   "did not log out in time");
		pthread_mutex_unlock(&sess_lock);
	}
	while (sessions_count(tid) && clock_ms() < deadline)
		usleep(10000);
}

/* ---- portals ----
 *
 * The live list of listening portals.  Portals come from targets.conf at
 * start and can be added or removed at run time (tgtadm --mode portal).
 * The list is guarded by portal_lock; each portal's watcher lives on
 * reactor 0 and is added and removed there.  Removing a portal stops
 * new connections through it; sessions already logged in stay. */

struct portal {
	struct list_head link;
	int fd;
	struct ev_fd w;
	struct iscsi_portal_count *count;
	struct ev_timer pause;		/* out of fds: accept again later */
	struct sockaddr_storage listen;
	char text[160];
	char advertise[128];
};

static pthread_mutex_t portal_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list_head portal_list = LIST_HEAD_INIT(portal_list);
static struct reactor **portal_reactors;
static int portal_nr_reactors;
static atomic_uint next_reactor;

struct new_conn {
	int fd;
	char advertise[128];
	struct iscsi_portal_count *count;	/* a reference and a conn */
};

/* live_conns and the portal's count were raised at accept */
static void conn_adopt(void *arg)
{
	struct new_conn *nc = arg;
	struct iscsi_conn *c = iscsi_conn_new(reactor_current(), nc->fd,
					      nc->advertise);

	if (!c) {
		close(nc->fd);
		atomic_fetch_sub(&live_conns, 1);
		iscsi_portal_count_put(nc->count);
	} else {
		c->portal_count = nc->count;
	}
	free(nc);
}

static void portal_resume(struct ev_timer *t)
{
	struct portal *p = t->arg;

	reactor_fd_mod(&p->w, EPOLLIN);
}

/* Over max_connections(_per_portal): closed at once, before anything
 * is allocated for it (answering a login would need the resources the
 * limit protects).  true if fd was refused (and closed). */
static bool portal_over_limit(struct portal *p, int fd)
{
	uint32_t max = LIMIT(max_connections);
	uint32_t max_p = LIMIT(max_connections_per_portal);
	int n = atomic_load(&live_conns), np = atomic_load(&p->count->conns);

	if ((!max || n < (int)max) && (!max_p || np < (int)max_p))
		return false;
	close(fd);
	iscsi_limit_log(LIMIT_LOG_CONN,
			"portal %s: connection refused: %d connections "
			"(max_connections %u), %d on this portal "
			"(max_connections_per_portal %u)",
			p->text, n, max, np, max_p);
	return true;
}

static void portal_accept(struct ev_fd *w, uint32_t events UNUSED)
{
	struct portal *p = w->arg;

	for (;;) {
		int fd = accept4(p->fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct new_conn *nc;
		struct reactor *r;

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				/* the pending connection stays queued and
				 * epoll would report it again at once:
				 * stop listening for 100 ms instead of
				 * spinning */
				iscsi_limit_log(LIMIT_LOG_CONN,
						"portal %s: accept: %s; "
						"pausing 100 ms", p->text,
						strerror(errno));
				reactor_fd_mod(&p->w, 0);
				reactor_timer_add(reactor_current(), &p->pause,
						  100, portal_resume, p);
			} else if (errno != EAGAIN && errno != EINTR &&
				   errno != ECONNABORTED) {
				log_warn("accept: %s", strerror(errno));
			}
			return;
		}
		if (portal_over_limit(p, fd))
			continue;
		atomic_fetch_add(&live_conns, 1);
		atomic_fetch_add(&p->count->conns, 1);
		atomic_fetch_add(&p->count->refs, 1);
		/* round robin: a connection stays on its reactor for life */
		r = portal_reactors[atomic_fetch_add(&next_reactor, 1) %
				    (unsigned)portal_nr_reactors];
		nc = xzalloc(sizeof(*nc));
		nc->fd = fd;
		snprintf(nc->advertise, sizeof(nc->advertise), "%s",
			 p->advertise);
		nc->count = p->count;
		if (reactor_call(r, conn_adopt, nc) < 0) {
			close(fd);
			free(nc);
			atomic_fetch_sub(&live_conns, 1);
			iscsi_portal_count_put(p->count);
		}
	}
}

static void portal_watch_on_reactor(void *arg)
{
	struct portal *p = arg;

	if (reactor_fd_add(reactor_current(), &p->w, p->fd, EPOLLIN,
			   portal_accept, p) < 0)
		log_err("portal %s: cannot watch: %s", p->text,
			strerror(errno));
}

static void portal_close_on_reactor(void *arg)
{
	struct portal *p = arg;

	reactor_fd_del(&p->w);
	reactor_timer_del(reactor_current(), &p->pause);
	close(p->fd);
	iscsi_portal_count_unref(p->count);
	free(p);
}

int iscsi_portal_add(const struct portal_config *pc)
{
	struct portal *p, *o;
	int one = 1, fd, err;

	pthread_mutex_lock(&portal_lock);
	list_for_each_entry(o, &portal_list, link)
		if (sockaddr_same(&o->listen, &pc->listen)) {
			pthread_mutex_unlock(&portal_lock);
			return -EEXIST;
		}
	fd = socket(pc->listen.ss_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto err;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (pc->listen.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&pc->listen, pc->listen_len) < 0 ||
	    listen(fd, 128) < 0)
		goto err;
	p = xzalloc(sizeof(*p));
	p->fd = fd;
	p->count = iscsi_portal_count_new();
	p->listen = pc->listen;
	snprintf(p->text, sizeof(p->text), "%s", pc->text);
	snprintf(p->advertise, sizeof(p->advertise), "%s", pc->advertise);
	if (reactor_call(portal_reactors[0], portal_watch_on_reactor, p) < 0) {
		iscsi_portal_count_unref(p->count);
		free(p);
		errno = ENOMEM;
		goto err;
	}
	list_add_tail(&p->link, &portal_list);
	pthread_mutex_unlock(&portal_lock);
	log_info("listening on %s%s%s", pc->text,
		 pc->advertise[0] ? ", advertised as " : "", pc->advertise);
	return 0;
err:
	err = -errno;
	log_err("portal %s: %s", pc->text, strerror(-err));
	if (fd >= 0)
		close(fd);
	pthread_mutex_unlock(&portal_lock);
	return err;
}

int iscsi_portal_del(const struct sockaddr_storage *listen)
{
	struct portal *p;

	pthread_mutex_lock(&portal_lock);
	list_for_each_entry(p, &portal_list, link) {
		if (!sockaddr_same(&p->listen, listen))
			continue;
		list_del(&p->link);
		pthread_mutex_unlock(&portal_lock);
		log_info("portal %s removed", p->text);
		if (reactor_call(portal_reactors[0], portal_close_on_reactor,
				 p) < 0)
			log_err("portal %s: cannot stop watching", p->text);
		return 0;
	}
	pthread_mutex_unlock(&portal_lock);
	return -ENOENT;
}

int iscsi_portal_list(struct iscsi_portal_info *out, int max)
{
	struct portal *p;
	int n = 0;

	pthread_mutex_lock(&portal_lock);
	list_for_each_entry(p, &portal_list, link) {
		if (n < max) {
			snprintf(out[n].text, sizeof(out[n].text), "%s",
				 p->text);
			snprintf(out[n].advertise, sizeof(out[n].advertise),
				 "%s", p->advertise);
			out[n].listen = p->listen;
		}
		n++;
	}
	pthread_mutex_unlock(&portal_lock);
	return n;
}

int iscsi_portals_start(const struct portal_config *portals, int nr_portals,
			struct reactor **reactors,
			int nr_reactors)
{
	portal_reactors = reactors;
	portal_nr_reactors = nr_reactors;
	for (int i = 0; i < nr_portals; i++) {
		int ret = iscsi_portal_add(&portals[i]);

		if (ret < 0)
			return ret;
	}
	return 0;
}

void iscsi_portals_stop(void)
{
	pthread_mutex_lock(&portal_lock);
	while (!list_empty(&portal_list)) {
		struct portal *p = list_first_entry(&portal_list, struct portal,
						    link);

		list_del(&p->link);
		if (reactor_call(portal_reactors[0], portal_close_on_reactor,
				 p) < 0)
			close(p->fd);
	}
	pthread_mutex_unlock(&portal_lock);
}

/* A listening address reachable only from this host: 127.0.0.0/8, ::1
 * and ::ffff:127.0.0.0/104.  The wildcards 0.0.0.0 and :: are not. */
static bool portal_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;

		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;

		if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) &&
		       s6->sin6_addr.s6_addr[12] == 127;
	}
	return false;
}

struct open_target_scan {
	const char *portal;	/* a non-loopback portal */
	int count;
};

static void warn_open_target(struct target *t, void *arg)
{
	struct open_target_scan *scan = arg;
	struct acl_rule *a;
	bool all = false;

	pthread_mutex_lock(&t->lock);
	list_for_each_entry(a, &t->acls, link)
		if (a->kind == ACL_ALL)
			all = true;
	pthread_mutex_unlock(&t->lock);
	if (!all || acct_required(t->tid))
		return;
	scan->count++;
	log_warn("target %d %s admits ALL initiators without CHAP and portal %s "
		 "is not a loopback address: anyone who reaches it can read "
		 "and write its LUNs (list initiator addresses or names and "
		 "set incoming_users, see targets.conf)",
		 t->tid, t->name, scan->portal);
}

int iscsi_portals_warn_open(void)
{
	struct open_target_scan scan = { 0 };
	char text[sizeof(((struct portal *)0)->text)] = "";
	struct portal *p;

	pthread_mutex_lock(&portal_lock);
	list_for_each_entry(p, &portal_list, link)
		if (!portal_is_loopback(&p->listen)) {
			snprintf(text, sizeof(text), "%s", p->text);
			break;
		}
	pthread_mutex_unlock(&portal_lock);
	if (!text[0])
		return 0;
	scan.portal = text;
	tgt_for_each(warn_open_target, &scan);
	return scan.count;
}

/* Connections not yet freed (shutdown waits for them so no write is
 * left half done). */
int iscsi_conn_count(void)
{
	return atomic_load(&live_conns);
}

void iscsi_conn_freed(void)
{
	atomic_fetch_sub(&live_conns, 1);
}
