/* iscsi.h - the iSCSI layer's public interface (daemon and management).
 *
 * The rest of holdfast sees sessions only through these calls. */
#ifndef HOLDFAST_ISCSI_H
#define HOLDFAST_ISCSI_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct reactor;

/* One portal: where to listen and what SendTargets advertises. */
struct portal_config {
	struct sockaddr_storage listen;	/* address and port to listen on */
	socklen_t listen_len;
	char advertise[128];		/* "ADDR:PORT" for SendTargets, "" = the
					 * address the initiator connected to */
	char text[160];			/* as written */
};


/* Start listening on the configured portals, handing connections to the
 * reactors round robin.  0 / -errno. */
int iscsi_portals_start(const struct portal_config *portals, int nr_portals,
			struct reactor **reactors,
			int nr_reactors);
void iscsi_portals_stop(void);

/* Run-time portals (tgtadm --op new/delete --mode portal).  Thread safe.
 * add: 0, -EEXIST, or the socket/bind/listen -errno. del: 0 / -ENOENT. */
int iscsi_portal_add(const struct portal_config *pc);
int iscsi_portal_del(const struct sockaddr_storage *listen);

struct iscsi_portal_info {
	char text[160];			/* as configured, "LISTEN[=ADVERTISE]" */
	char advertise[128];
	struct sockaddr_storage listen;
};
/* Copy up to max live portals into out; returns how many there are. */
int iscsi_portal_list(struct iscsi_portal_info *out, int max);

/* Information about one I_T nexus, for show. */
struct iscsi_session_info {
	uint64_t sid;			/* target session identifying handle */
	int tid;
	char initiator_name[224];
	char initiator_alias[224];
	uint8_t isid[6];
	int nr_conns;
	struct {
		uint32_t cid;
		char peer[64];		/* IP address text */
		char local[80];
		uint64_t data_buffer;	/* bytes of command buffers */
		uint64_t data_buffer_peak;
	} conns[4];
};

/* Call fn for each session of target tid (tid -1: all).  Runs fn on the
 * calling thread with a snapshot.  Returns the number of sessions. */
int iscsi_session_for_each(int tid,
			   void (*fn)(const struct iscsi_session_info *si,
				      void *arg),
			   void *arg);

/* Close every session of target tid (-1: all), asking initiators to log
 * out first (Async Message) when ask_logout; waits up to timeout_ms for
 * them to go.  Thread safe. */
void iscsi_sessions_close(int tid, bool ask_logout, unsigned timeout_ms);

/* Counters for tgtadm --op stat (tgtd's columns).  LUN counters are per
 * session and LUN, by data direction; bytes are expected transfer
 * lengths; errs counts commands that did not end GOOD. */
struct iscsi_lun_stat {
	uint64_t rd_subm_bytes, rd_subm_cmds, rd_done_bytes, rd_done_cmds;
	uint64_t wr_subm_bytes, wr_subm_cmds, wr_done_bytes, wr_done_cmds;
	uint64_t errs;
};
struct iscsi_conn_stat {
	uint32_t cid;
	uint64_t rx_data_octets, tx_data_octets;
	uint64_t dataout_pdus, datain_pdus, cmd_pdus, rsp_pdus;
};
/* Snapshot of session sid's counters: luns[] has 256 entries indexed by
 * LUN number.  0 / -ENOENT.  Thread safe. */
int iscsi_session_stats(uint64_t sid, struct iscsi_lun_stat *luns,
			struct iscsi_conn_stat *conn);

/* Close one session (tgtadm --op delete --mode conn / session), asking
 * the initiator to log out first when ask_logout.  Returns 0, or -ENOENT
 * if no session has that sid.  Thread safe; does not wait. */
int iscsi_session_close(uint64_t sid, bool ask_logout);

/* Log a warning for every target that admits ALL initiators without
 * CHAP while a portal listens on a non-loopback address (startup and
 * reload).  Returns how many were found.  Thread safe. */
int iscsi_portals_warn_open(void);

/* Connections still alive (including closing ones waiting for their
 * commands); shutdown waits for 0. */
int iscsi_conn_count(void);

/* Resource limits (targets.conf "limits", README "Limits and slow
 * peers").  0 in a count or size means unlimited.  Set at start and on
 * reload; read by the reactors with relaxed atomic loads. */
struct iscsi_limits {
	uint32_t max_sessions;		/* normal sessions, all targets */
	uint32_t max_sessions_per_target;
	uint32_t max_connections;	/* all portals; over it: closed */
	uint32_t max_connections_per_portal;
	uint32_t cmdsn_depth;		/* MaxCmdSN window per session */
	uint64_t max_data_buffer;	/* bytes of command buffers, total */
	uint64_t max_data_buffer_per_connection;
	uint32_t login_timeout_ms;	/* whole login phase */
	uint32_t idle_timeout_ms;	/* a started PDU with no progress */
};
#define ISCSI_LIMITS_DEFAULT {						\
	.max_sessions = 1024, .max_sessions_per_target = 256,		\
	.max_connections = 2048, .max_connections_per_portal = 1024,	\
	.cmdsn_depth = 128, .max_data_buffer = 1ull << 30,		\
	.max_data_buffer_per_connection = 64ull << 20,			\
	.login_timeout_ms = 15000, .idle_timeout_ms = 30000 }
void iscsi_limits_set(const struct iscsi_limits *l);
void iscsi_limits_get(struct iscsi_limits *l);
/* Bytes of command buffers reserved now (all connections). */
uint64_t iscsi_data_buffer_used(void);
/* The same with the most it has been since start and how many commands
 * were answered TASK SET FULL because their buffer did not fit. */
struct iscsi_buffer_stat {
	uint64_t used, peak, refused;
};
void iscsi_data_buffer_stat(struct iscsi_buffer_stat *st);

#endif
