/* mgmt.c - the management socket: tgtd's protocol, so the stock tgtadm
 * and tgt-admin drive holdfastd (../shared/docs/tgtadm-wire.md).
 *
 * One thread serves an AF_UNIX stream socket at <base>.<control_port>, one
 * request per connection: a 120-byte header in the host's byte order and
 * layout (tgtadm writes its struct as is), a "key=value,..." payload, and a
 * reply of {u32 err, u32 len} plus an optional NUL-terminated text body.
 * Only peers with our own uid and gid are served (SO_PEERCRED), the socket
 * is mode 0600, and a lockf() lock on <base>.<port>.lock keeps a second
 * daemon (holdfastd or tgtd) off the same control port. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "hang.h"
#include "iscsi.h"
#include "iscsi_param.h"
#include "mgmt.h"
#include "mgmt_internal.h"
#include "scsi.h"
#include "target.h"
#include "util.h"

#define MGMT_DEFAULT_DIR "/var/run/tgtd"
#define MGMT_DEFAULT_BASE MGMT_DEFAULT_DIR "/socket"
#define MGMT_ENV_SOCKET "TGT_IPC_SOCKET"
#define MGMT_TMP_SUFFIX ".new"	/* bound here, renamed when ready */

/* Request header layout (tgtadm's struct tgtadm_req on x86_64). */
#define MGMT_REQ_HDR_LEN 120
#define MGMT_REQ_MAX_LEN 8192
#define MGMT_OFF_MODE 0
#define MGMT_OFF_OP 4
#define MGMT_OFF_LLD 8
#define MGMT_OFF_LEN 72
#define MGMT_OFF_TID 76
#define MGMT_OFF_SID 80
#define MGMT_OFF_LUN 88
#define MGMT_OFF_CID 96
#define MGMT_OFF_HOST_NO 100
#define MGMT_OFF_DEVICE_TYPE 104
#define MGMT_OFF_AC_DIR 108
#define MGMT_OFF_PACK 112
#define MGMT_OFF_FORCE 116
/* Reply header: u32 err, u32 len (8 + body). */
#define MGMT_RSP_HDR_LEN 8

/* Don't let one stuck client hold the management thread forever. */
#define MGMT_IO_TIMEOUT_S 5
/* How long a forced target delete waits for its sessions to go. */
#define MGMT_FORCE_CLOSE_MS 3000

/* `--op update --mode system` keys. */
#define MGMT_SYS_DEBUG "debug"
#define MGMT_SYS_SAVE "save"

enum mgmt_mode {
	MGMT_MODE_SYSTEM = 0,
	MGMT_MODE_TARGET = 1,
	MGMT_MODE_DEVICE = 2,	/* "logicalunit" */
	MGMT_MODE_PORTAL = 3,
	MGMT_MODE_LLD = 4,
	MGMT_MODE_SESSION = 5,
	MGMT_MODE_CONNECTION = 6,
	MGMT_MODE_ACCOUNT = 7,
	/* holdfast's own (holdfastadm only; tgtadm has no such modes) */
	MGMT_MODE_BITMAP = 8,
	MGMT_MODE_JOB = 9,
};


static struct {
	int listen_fd;
	int lock_fd;
	int wake[2];		/* pipe: mgmt_stop() wakes the thread */
	pthread_t thread;
	bool running;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	atomic_int exit_requested;
} mgmt = { .listen_fd = -1, .lock_fd = -1, .wake = { -1, -1 } };

/* ---- reply buffer ---- */

void mgmt_buf_printf(struct mgmt_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t room = b->cap - b->len;
		va_start(ap, fmt);
		n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = 1;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap - b->len <= (size_t)n)
			cap *= 2;
		char *d = realloc(b->data, cap);
		if (!d) {
			b->oom = 1;
			return;
		}
		b->data = d;
		b->cap = cap;
	}
}

void mgmt_buf_free(struct mgmt_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* ---- payload ---- */

/* Value of key in a "k1=v1,k2=v2" payload, copied into out.  true if
 * present. */
bool mgmt_payload_get(const char *payload, const char *key, char *out,
			size_t len)
{
	size_t klen = strlen(key);
	const char *p = payload;

	while (p && *p) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
			size_t vlen = n - klen - 1;
			if (vlen >= len)
				vlen = len - 1;
			memcpy(out, p + klen + 1, vlen);
			out[vlen] = '\0';
			return true;
		}
		p = end ? end + 1 : NULL;
	}
	return false;
}

/* The items of a payload as separate "key=value" strings in a scratch
 * copy: items[i] points into *copy (free it).  The tgtadm "targetOps "
 * prefix is dropped.  Returns the count or -ENOMEM/-E2BIG. */
int mgmt_payload_split(const char *payload, char **copy, char **items)
{
	int n = 0;

	if (strncmp(payload, MGMT_PARAMS_PREFIX, strlen(MGMT_PARAMS_PREFIX)) == 0)
		payload += strlen(MGMT_PARAMS_PREFIX);
	*copy = strdup(payload);
	if (!*copy)
		return -ENOMEM;
	for (char *p = *copy; p && *p;) {
		char *end = strchr(p, ',');
		if (end)
			*end = '\0';
		if (*p) {
			if (n == MGMT_MAX_ITEMS)
				return -E2BIG;
			items[n++] = p;
		}
		p = end ? end + 1 : NULL;
	}
	return n;
}

/* ---- system ---- */

static int mgmt_dump_config(struct mgmt_buf *b, bool json)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int ret;

	if (!f)
		return MGMT_NOMEM;
	ret = config_dump(f);
	if (fclose(f) != 0 || ret) {
		free(text);
		return MGMT_NOMEM;
	}
	if (json)
		mgmt_json_text("config", text, b);
	else
		mgmt_buf_printf(b, "%s", text);
	free(text);
	return MGMT_SUCCESS;
}

/* system update: "debug=on|off" and "save=1" (write the running
 * configuration back to targets.conf), from `--name K --value V` or
 * holdfastadm's `--params K=V`; all items are checked before any is
 * applied. */
static int mgmt_system_update(const struct mgmt_req *req)
{
	char *copy = NULL, *items[MGMT_MAX_ITEMS], err[1024];
	int n, debug = -1, ret = MGMT_SUCCESS;
	bool save = false;

	n = mgmt_payload_split(req->payload, &copy, items);
	if (n <= 0) {
		free(copy);
		return n == -ENOMEM ? MGMT_NOMEM : MGMT_INVALID_REQUEST;
	}
	for (int i = 0; i < n && ret == MGMT_SUCCESS; i++) {
		char *eq = strchr(items[i], '=');
		if (!eq) {
			ret = MGMT_INVALID_REQUEST;
			break;
		}
		*eq++ = '\0';
		if (strcmp(items[i], MGMT_SYS_DEBUG) == 0 && strcmp(eq, "on") == 0)
			debug = 1;
		else if (strcmp(items[i], MGMT_SYS_DEBUG) == 0 &&
			 strcmp(eq, "off") == 0)
			debug = 0;
		else if (strcmp(items[i], MGMT_SYS_SAVE) == 0 &&
			 strcmp(eq, "1") == 0)
			save = true;
		else
			ret = MGMT_INVALID_REQUEST;
	}
	free(copy);
	if (ret)
		return ret;
	if (debug >= 0) {
		log_set_debug(debug == 1);
		log_info("management: debug %s", debug ? "on" : "off");
	}
	if (save) {
		const struct config *cfg = config_get_active();
		if (!cfg || !cfg->path[0]) {
			log_err("management: save: no configuration file to write");
			return MGMT_INVALID_REQUEST;
		}
		if (config_save(cfg->path, err, sizeof(err))) {
			log_err("management: save refused: %s", err);
			return MGMT_UNKNOWN_ERR;
		}
		log_info("management: running configuration saved to %s",
			 cfg->path);
	}
	return MGMT_SUCCESS;
}

static int mgmt_system(const struct mgmt_req *req, struct mgmt_buf *b)
{
	char v[32];

	switch (req->op) {
	case MGMT_OP_DELETE:
		/* tgtd: exit only when no target is left, or with --force. */
		if (!req->force && tgt_count() > 0)
			return MGMT_INVALID_REQUEST;
		log_info("management: exit requested");
		atomic_store(&mgmt.exit_requested, 1);
		return MGMT_SUCCESS;
	case MGMT_OP_UPDATE:
		return mgmt_system_update(req);
	case MGMT_OP_SHOW:
		/* `--name dump --value config`: the running configuration as
		 * targets.conf text (holdfast's extension). */
		if (mgmt_payload_get(req->payload, "dump", v, sizeof(v))) {
			if (strcmp(v, "config") != 0)
				return MGMT_INVALID_REQUEST;
			return mgmt_dump_config(b, req->json);
		}
		return req->json ? mgmt_json_system(b) : mgmt_show_system(b);
	case MGMT_OP_STAT:
		return mgmt_stat_targets(-1, b);
	}
	return MGMT_UNSUPPORTED_OPERATION;
}

/* ---- targets ---- */

static int mgmt_target_new(const struct mgmt_req *req)
{
	char name[TGT_NAME_MAX + 1];
	int ret;

	if (!mgmt_payload_get(req->payload, "targetname", name, sizeof(name)))
		return MGMT_INVALID_REQUEST;
	if (req->tid == 0 || req->tid < -1)
		return MGMT_INVALID_REQUEST;
	ret = tgt_create(req->tid, name);
	if (ret == -EEXIST)
		return MGMT_TARGET_EXIST;
	if (ret < 0)
		return MGMT_INVALID_REQUEST;
	return MGMT_SUCCESS;
}

static int mgmt_target_delete(const struct mgmt_req *req)
{
	int ret = config_target_delete(req->tid, req->force != 0);

	if (ret == -ENOENT)
		return MGMT_NO_TARGET;
	if (ret == -EBUSY)
		return MGMT_TARGET_ACTIVE;
	if (ret)
		return MGMT_UNKNOWN_ERR;
	/* Unlinked from the table, so no new login finds it; now ask the
	 * initiators to log out (Async Message, RFC 7143 11.9.1 AsyncEvent 1)
	 * and drop the sessions that are still there after the wait. */
	if (req->force)
		iscsi_sessions_close(req->tid, true, MGMT_FORCE_CLOSE_MS);
	return MGMT_SUCCESS;
}

/* bind / unbind: -I (initiator-address) and -Q (initiator-name), alone or
 * together in one request; both are applied or neither. */
static int mgmt_target_bind(const struct mgmt_req *req, bool bind)
{
	char addr[TGT_NAME_MAX + 1], name[TGT_NAME_MAX + 1];
	bool has_addr, has_name;
	struct acl_rule r;
	struct target *t;
	int ret = 0, err = MGMT_SUCCESS;

	has_addr = mgmt_payload_get(req->payload, "initiator-address", addr,
			       sizeof(addr));
	has_name = mgmt_payload_get(req->payload, "initiator-name", name,
			       sizeof(name));
	if (!has_addr && !has_name)
		return mgmt_payload_get(req->payload, "user", addr, sizeof(addr)) ?
			       MGMT_UNSUPPORTED_OPERATION : MGMT_INVALID_REQUEST;
	if ((has_addr && tgt_acl_parse(addr, false, &r)) ||
	    (has_name && tgt_acl_parse(name, true, &r)))
		return MGMT_INVALID_REQUEST;
	t = tgt_get_by_tid(req->tid);
	if (!t)
		return MGMT_NO_TARGET;

	if (bind) {
		if (has_addr)
			ret = tgt_acl_add(t, addr, false);
		if (!ret && has_name) {
			ret = tgt_acl_add(t, name, true);
			if (ret && has_addr)
				tgt_acl_del(t, addr, false);
		}
		if (ret == -EEXIST)
			err = MGMT_ACL_EXIST;
	} else {
		/* Check both exist before removing either. */
		if (has_addr && has_name) {
			if (tgt_acl_del(t, addr, false) == 0) {
				ret = tgt_acl_del(t, name, true);
				if (ret)
					tgt_acl_add(t, addr, false);
			} else {
				ret = -ENOENT;
			}
		} else {
			ret = has_addr ? tgt_acl_del(t, addr, false)
				       : tgt_acl_del(t, name, true);
		}
		if (ret == -ENOENT)
			err = MGMT_ACL_NOEXIST;
	}
	if (ret && err == MGMT_SUCCESS)
		err = MGMT_INVALID_REQUEST;
	if (!err)
		log_info("target %d: %s %s%s%s", req->tid,
			 bind ? "allow" : "disallow", has_addr ? addr : "",
			 has_addr && has_name ? " " : "", has_name ? name : "");
	tgt_put(t);
	return err;
}

/* target update: nop_interval, nop_count, state=ready|offline or an iSCSI
 * key override; every item is checked before any is applied. */
static int mgmt_target_update(const struct mgmt_req *req)
{
	char *copy = NULL, *items[MGMT_MAX_ITEMS];
	struct target *t;
	int n, err = MGMT_SUCCESS;

	t = tgt_get_by_tid(req->tid);
	if (!t)
		return MGMT_NO_TARGET;
	n = mgmt_payload_split(req->payload, &copy, items);
	if (n <= 0) {
		err = n == -ENOMEM ? MGMT_NOMEM : MGMT_INVALID_REQUEST;
		goto out;
	}
	for (int pass = 0; pass < 2 && !err; pass++) {
		for (int i = 0; i < n && !err; i++) {
			char *eq = strchr(items[i], '=');
			const char *key = items[i], *val;
			char *end;
			unsigned long v = 0;

			if (!eq) {
				err = MGMT_INVALID_REQUEST;
				break;
			}
			*eq = '\0';
			val = eq + 1;
			if (strcmp(key, "nop_interval") == 0 ||
			    strcmp(key, "nop_count") == 0) {
				errno = 0;
				v = strtoul(val, &end, 10);
				if (!*val || *end || errno || v > 3600)
					err = MGMT_INVALID_REQUEST;
				else if (pass == 1) {
					pthread_mutex_lock(&t->lock);
					if (key[4] == 'i')
						t->nop_interval = (uint32_t)v;
					else
						t->nop_count = (uint32_t)v;
					pthread_mutex_unlock(&t->lock);
				}
			} else if (strcmp(key, "state") == 0) {
				if (strcmp(val, "ready") && strcmp(val, "offline"))
					err = MGMT_INVALID_REQUEST;
				else if (pass == 1)
					t->offline = strcmp(val, "offline") == 0;
			} else if (iscsi_param_override_check(key, val, NULL) == 0) {
				if (pass == 1 && tgt_param_set(t, key, val))
					err = MGMT_UNKNOWN_ERR;
			} else {
				err = MGMT_INVALID_REQUEST;
			}
			*eq = '=';
		}
	}
out:
	free(copy);
	tgt_put(t);
	return err;
}

static int mgmt_target(const struct mgmt_req *req, struct mgmt_buf *b)
{
	switch (req->op) {
	case MGMT_OP_NEW:
		return mgmt_target_new(req);
	case MGMT_OP_DELETE:
		return mgmt_target_delete(req);
	case MGMT_OP_SHOW:
		if (req->tid != -1)
			return req->json ? mgmt_json_target_params(req->tid, b)
					 : mgmt_show_target_params(req->tid, b);
		return req->json ? mgmt_json_targets(-1, b)
				 : mgmt_show_targets(-1, b);
	case MGMT_OP_BIND:
		return mgmt_target_bind(req, true);
	case MGMT_OP_UNBIND:
		return mgmt_target_bind(req, false);
	case MGMT_OP_UPDATE:
		return mgmt_target_update(req);
	case MGMT_OP_STAT:
		return mgmt_stat_targets(req->tid, b);
	}
	return MGMT_UNSUPPORTED_OPERATION;
}

/* ---- sessions and connections ---- */

struct mgmt_find_session {
	uint64_t sid;
	uint32_t cid;
	bool found, conn_found;
};

static void mgmt_find_session_fn(const struct iscsi_session_info *si,
				 void *arg)
{
	struct mgmt_find_session *f = arg;

	if (si->sid != f->sid)
		return;
	f->found = true;
	for (int i = 0; i < si->nr_conns && i < (int)ARRAY_SIZE(si->conns); i++)
		if (si->conns[i].cid == f->cid)
			f->conn_found = true;
}

/* `--op delete --mode session --tid T --sid S` and `--mode conn ... --cid
 * C`: ask the initiator to log out (Async Message) and close the session
 * ("I_T nexus: S" in show).  A connection is closed with its session:
 * holdfast's sessions have one connection (MaxConnections=1). */
static int mgmt_session(const struct mgmt_req *req, bool conn,
			struct mgmt_buf *b)
{
	struct mgmt_find_session f = { .sid = req->sid, .cid = req->cid };
	struct target *t;

	if (req->op == MGMT_OP_SHOW || req->op == MGMT_OP_STAT)
		return mgmt_stat_session(req->tid, req->sid, (int)req->op,
					 conn, b);
	if (req->op != MGMT_OP_DELETE)
		return MGMT_UNSUPPORTED_OPERATION;
	t = tgt_get_by_tid(req->tid);
	if (!t)
		return MGMT_NO_TARGET;
	tgt_put(t);
	iscsi_session_for_each(req->tid, mgmt_find_session_fn, &f);
	if (!f.found)
		return MGMT_NO_SESSION;
	if (conn && !f.conn_found)
		return MGMT_NO_CONNECTION;
	if (iscsi_session_close(req->sid, true) == -ENOENT)
		return MGMT_NO_SESSION;
	log_info("target %d: session %llu closed by management", req->tid,
		 (unsigned long long)req->sid);
	return MGMT_SUCCESS;
}

/* tgtadm --op new|delete --mode portal --param portal=ADDR[:PORT]: the
 * payload is "portalOps portal=...,".  "LISTEN=ADVERTISE" works as in
 * targets.conf. */
static int mgmt_portal(const struct mgmt_req *req)
{
	const char *payload = req->payload;
	struct portal_config pc;
	char v[128], *eq;
	int ret;

	if (strncmp(payload, "portalOps ", 10) == 0)
		payload += 10;
	if (!mgmt_payload_get(payload, "portal", v, sizeof(v)) || !v[0])
		return MGMT_INVALID_REQUEST;
	memset(&pc, 0, sizeof(pc));
	snprintf(pc.text, sizeof(pc.text), "%s", v);
	eq = strchr(v, '=');
	if (eq) {
		struct sockaddr_storage adv;
		socklen_t alen;

		*eq++ = '\0';
		if (config_parse_portal(eq, &adv, &alen) < 0)
			return MGMT_INVALID_REQUEST;
		snprintf(pc.advertise, sizeof(pc.advertise), "%s", eq);
	}
	if (config_parse_portal(v, &pc.listen, &pc.listen_len) < 0)
		return MGMT_INVALID_REQUEST;
	switch (req->op) {
	case MGMT_OP_NEW:
		ret = iscsi_portal_add(&pc);
		if (ret < 0)
			return MGMT_INVALID_REQUEST;
		iscsi_portals_warn_open();
		return MGMT_SUCCESS;
	case MGMT_OP_DELETE:
		return iscsi_portal_del(&pc.listen) < 0 ? MGMT_INVALID_REQUEST
							: MGMT_SUCCESS;
	default:
		return MGMT_UNSUPPORTED_OPERATION;
	}
}

static int mgmt_dispatch(const struct mgmt_req *req, struct mgmt_buf *b)
{
	/* Only the iSCSI driver exists; tgtadm sends "" when --lld is left
	 * out. */
	if (req->lld[0] && strcmp(req->lld, "iscsi") != 0)
		return MGMT_NO_DRIVER;
	switch (req->mode) {
	case MGMT_MODE_SYSTEM:
		return mgmt_system(req, b);
	case MGMT_MODE_TARGET:
		return mgmt_target(req, b);
	case MGMT_MODE_DEVICE:
		/* show: holdfastadm's one-LUN view (tgtadm never sends it) */
		if (req->op == MGMT_OP_SHOW)
			return req->json ? mgmt_json_lun(req->tid, req->lun, b)
					 : mgmt_show_lun(req->tid, req->lun, b);
		return mgmt_lun(req);
	case MGMT_MODE_ACCOUNT:
		return mgmt_account(req, b);
	case MGMT_MODE_PORTAL:
		if (req->op == MGMT_OP_SHOW)
			return req->json ? mgmt_json_portals(b)
					 : mgmt_show_portals(b);
		return mgmt_portal(req);
	case MGMT_MODE_SESSION:
		return mgmt_session(req, false, b);
	case MGMT_MODE_CONNECTION:
		return mgmt_session(req, true, b);
	case MGMT_MODE_LLD:
		return mgmt_lld((int)req->op, b);
	case MGMT_MODE_BITMAP:
		return mgmt_bitmap(req, b);
	case MGMT_MODE_JOB:
		return mgmt_job(req, b);
	}
	return MGMT_UNSUPPORTED_OPERATION;
}

/* ---- wire ---- */

static uint32_t hdr_u32(const uint8_t *h, size_t off)
{
	uint32_t v;
	memcpy(&v, h + off, sizeof(v));	/* host order, as tgtadm wrote it */
	return v;
}

static uint64_t hdr_u64(const uint8_t *h, size_t off)
{
	uint64_t v;
	memcpy(&v, h + off, sizeof(v));
	return v;
}

static void mgmt_req_decode(const uint8_t *h, struct mgmt_req *r)
{
	memset(r, 0, sizeof(*r));
	r->mode = hdr_u32(h, MGMT_OFF_MODE);
	r->op = hdr_u32(h, MGMT_OFF_OP);
	memcpy(r->lld, h + MGMT_OFF_LLD, MGMT_LLD_LEN);
	r->lld[MGMT_LLD_LEN] = '\0';
	r->len = hdr_u32(h, MGMT_OFF_LEN);
	r->tid = (int32_t)hdr_u32(h, MGMT_OFF_TID);
	r->sid = hdr_u64(h, MGMT_OFF_SID);
	r->lun = hdr_u64(h, MGMT_OFF_LUN);
	r->cid = hdr_u32(h, MGMT_OFF_CID);
	r->host_no = hdr_u32(h, MGMT_OFF_HOST_NO);
	r->device_type = hdr_u32(h, MGMT_OFF_DEVICE_TYPE);
	r->ac_dir = hdr_u32(h, MGMT_OFF_AC_DIR);
	r->force = hdr_u32(h, MGMT_OFF_FORCE);
}

static bool mgmt_peer_allowed(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return false;
	return cred.uid == geteuid() && cred.gid == getegid();
}

static void mgmt_serve(int fd)
{
	uint8_t hdr[MGMT_REQ_HDR_LEN], rsp[MGMT_RSP_HDR_LEN];
	struct timeval tv = { .tv_sec = MGMT_IO_TIMEOUT_S };
	struct mgmt_buf body = { 0 };
	struct mgmt_req req;
	uint32_t err, len;

	if (!mgmt_peer_allowed(fd)) {
		log_warn("management: refused a peer with another uid/gid");
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (fd_read_full(fd, hdr, sizeof(hdr)))
		return;
	mgmt_req_decode(hdr, &req);
	if (req.len < MGMT_REQ_HDR_LEN || req.len > MGMT_REQ_MAX_LEN) {
		log_warn("management: request of %u bytes refused", req.len);
		return;
	}
	req.payload = calloc(1, req.len - MGMT_REQ_HDR_LEN + 1);
	if (!req.payload)
		return;
	if (fd_read_full(fd, req.payload, req.len - MGMT_REQ_HDR_LEN)) {
		free(req.payload);
		return;
	}
	log_debug("management: mode %u op %u tid %d lun %llu \"%s\"", req.mode,
		  req.op, req.tid, (unsigned long long)req.lun, req.payload);

	if (req.op == MGMT_OP_SHOW) {
		char fmt[8];
		req.json = mgmt_payload_get(req.payload, MGMT_JSON_ITEM_KEY, fmt,
					    sizeof(fmt)) &&
			   strcmp(fmt, MGMT_JSON_ITEM_VALUE) == 0;
	}
	config_lock();
	err = (uint32_t)mgmt_dispatch(&req, &body);
	config_unlock();
	if (body.oom)
		err = MGMT_NOMEM;
	/* tgtadm prints the body with fputs: it must end in a NUL that the
	 * length counts.  Errors and empty shows carry no body. */
	len = MGMT_RSP_HDR_LEN;
	if (err == MGMT_SUCCESS && body.len)
		len += (uint32_t)body.len + 1;
	memcpy(rsp, &err, sizeof(err));
	memcpy(rsp + 4, &len, sizeof(len));
	if (fd_write_full(fd, rsp, sizeof(rsp)) == 0 && len > MGMT_RSP_HDR_LEN)
		fd_write_full(fd, body.data, body.len + 1);
	mgmt_buf_free(&body);
	free(req.payload);
}

static void *mgmt_thread(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = mgmt.listen_fd, .events = POLLIN },
			{ .fd = mgmt.wake[0], .events = POLLIN },
		};
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("management: poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		int fd = accept4(mgmt.listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		mgmt_serve(fd);
		close(fd);
	}
	return NULL;
}

/* ---- start / stop ---- */

int mgmt_start(int control_port)
{
	const char *base = getenv(MGMT_ENV_SOCKET);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char lock_path[sizeof(mgmt.sock_path) + 8];
	char tmp_path[sizeof(mgmt.sock_path) + 8];
	int ret;

	if (!base || !*base) {
		/* tgtd's default place; created like tgtd does. */
		base = MGMT_DEFAULT_BASE;
		if (mkdir(MGMT_DEFAULT_DIR, 0755) != 0 && errno != EEXIST) {
			ret = -errno;
			log_err("management: cannot create %s: %s",
				MGMT_DEFAULT_DIR, strerror(errno));
			return ret;
		}
	}
	if ((size_t)snprintf(mgmt.sock_path, sizeof(mgmt.sock_path), "%s.%d",
			     base, control_port) >= sizeof(mgmt.sock_path)) {
		log_err("management: socket path %s.%d is too long", base,
			control_port);
		return -ENAMETOOLONG;
	}
	snprintf(lock_path, sizeof(lock_path), "%s.lock", mgmt.sock_path);

	/* The lock, not the socket file, says whether the port is in use: a
	 * socket left by a crashed daemon is stale and simply replaced. */
	mgmt.lock_fd = open(lock_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (mgmt.lock_fd < 0) {
		ret = -errno;
		log_err("management: cannot open %s: %s", lock_path,
			strerror(errno));
		return ret;
	}
	if (lockf(mgmt.lock_fd, F_TLOCK, 1) != 0) {
		ret = -EADDRINUSE;
		log_err("management: control port %d is in use by another holdfastd or tgtd (%s is locked)",
			control_port, lock_path);
		goto err_lock;
	}
	/* Bind under a temporary name and rename it into place once the
	 * socket listens and is served: a client that sees <base>.<port>
	 * can connect at once.  rename() also replaces a stale socket left
	 * by a crashed daemon. */
	if ((size_t)snprintf(tmp_path, sizeof(tmp_path), "%s%s", mgmt.sock_path,
			     MGMT_TMP_SUFFIX) >= sizeof(sun.sun_path)) {
		ret = -ENAMETOOLONG;
		log_err("management: socket path %s is too long", mgmt.sock_path);
		goto err_lock;
	}
	unlink(tmp_path);
	mgmt.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (mgmt.listen_fd < 0) {
		ret = -errno;
		log_err("management: socket: %s", strerror(errno));
		goto err_lock;
	}
	memcpy(sun.sun_path, tmp_path, strlen(tmp_path) + 1);	/* length checked */
	if (bind(mgmt.listen_fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		ret = -errno;
		log_err("management: bind %s: %s", tmp_path, strerror(errno));
		goto err_sock;
	}
	/* Owner only (tgtadm runs as root; so does holdfastd). */
	if (chmod(tmp_path, 0600) != 0 || listen(mgmt.listen_fd, 32) != 0) {
		ret = -errno;
		log_err("management: %s: %s", tmp_path, strerror(errno));
		goto err_unlink;
	}
	if (pipe2(mgmt.wake, O_CLOEXEC) != 0) {
		ret = -errno;
		goto err_unlink;
	}
	atomic_store(&mgmt.exit_requested, 0);
	ret = -pthread_create(&mgmt.thread, NULL, mgmt_thread, NULL);
	if (ret) {
		log_err("management: cannot start thread: %s", strerror(-ret));
		goto err_pipe;
	}
	mgmt.running = true;
	if (rename(tmp_path, mgmt.sock_path) != 0) {
		ret = -errno;
		log_err("management: rename %s: %s", mgmt.sock_path,
			strerror(errno));
		mgmt_stop();
		unlink(tmp_path);
		return ret;
	}
	log_info("management socket %s", mgmt.sock_path);
	return 0;

err_pipe:
	close(mgmt.wake[0]);
	close(mgmt.wake[1]);
	mgmt.wake[0] = mgmt.wake[1] = -1;
err_unlink:
	unlink(tmp_path);
err_sock:
	close(mgmt.listen_fd);
	mgmt.listen_fd = -1;
err_lock:
	close(mgmt.lock_fd);
	mgmt.lock_fd = -1;
	return ret;
}

void mgmt_stop(void)
{
	if (!mgmt.running)
		return;
	if (write(mgmt.wake[1], "x", 1) < 0)
		log_warn("management: cannot wake thread: %s", strerror(errno));
	pthread_join(mgmt.thread, NULL);
	mgmt.running = false;
	close(mgmt.wake[0]);
	close(mgmt.wake[1]);
	mgmt.wake[0] = mgmt.wake[1] = -1;
	/* The socket file stays, as tgtd leaves it: after `--op delete
	 * --mode system` tgtadm reconnects until it gets ECONNREFUSED (a
	 * socket nobody listens on) and would spin forever on ENOENT.  The
	 * next daemon replaces the stale file. */
	close(mgmt.listen_fd);
	mgmt.listen_fd = -1;
	close(mgmt.lock_fd);	/* releases the lockf lock */
	mgmt.lock_fd = -1;
}

int mgmt_exit_requested(void)
{
	return atomic_load(&mgmt.exit_requested);
}
