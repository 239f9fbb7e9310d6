/* fuzz_mgmt.c - the management request decoder and dispatcher: tgtd's
 * wire format as the stock tgtadm writes it (120-byte header, payload;
 * see docs/tgtadm-wire.md) with holdfastadm's additions (format=json,
 * dump=config, hang verbs), served by the real mgmt_serve() over a
 * socketpair against the fixture's target table.
 *
 * Input: the bytes a client writes (header then payload).  The requests
 * are dispatched for real, so state carries over between inputs like a
 * long-lived daemon's; except that a LUN new/update whose payload names a
 * path only has its parameters parsed (lun_setting_apply): dispatched, it
 * would create a backing file wherever the input points, or (a gateway
 * or RBD LUN) connect to whatever the input names; a portal new is not
 * served (it would listen on an address the input picks), and a job new
 * only has its common parameters parsed (job_req_new: bitmap, bitmap_mode,
 * on_target_error, retry_interval, retry_timeout): started, it would write
 * a backup or scratch file wherever the input points (a mirror's
 * parameters: mgmt_mirror_parse()). */
#include "mgmt.c"

#include "cbt_mirror.h"
#include "fuzz_env.h"

/* LUN parameters as tgtadm --params sends them, parsed without creating
 * anything. */
static void fuzz_lun_params(const char *payload)
{
	char *copy = NULL, *items[MGMT_MAX_ITEMS], err[512];
	struct lun_settings s;
	int n;

	n = mgmt_payload_split(payload, &copy, items);
	lun_settings_default(&s, 1);
	for (int i = 0; i < n; i++) {
		char *eq = strchr(items[i], '=');

		if (!eq)
			continue;
		*eq++ = '\0';
		lun_setting_apply(&s, items[i], eq, err, sizeof(err));
	}
	lun_settings_check(&s, NULL, NULL, err, sizeof(err));
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2], big = 1 << 22;
	struct mgmt_req req;

	if (size < MGMT_REQ_HDR_LEN || size > MGMT_REQ_MAX_LEN + 64)
		return 0;
	fuzz_env_init(true);
	mgmt_req_decode(data, &req);
	/* no listening on addresses an input picks (and no reactors to
	 * accept on: the fixture starts no portal) */
	if (req.mode == MGMT_MODE_PORTAL && req.op == MGMT_OP_NEW)
		return 0;
	/* a new job writes its destination (target=, scratch=) wherever the
	 * input points: only its parameters are parsed */
	if (req.mode == MGMT_MODE_JOB && req.op == MGMT_OP_NEW) {
		struct cbt_mirror_params *mp = calloc(1, sizeof(*mp));
		const char *why;

		req.payload = strndup((const char *)data + MGMT_REQ_HDR_LEN,
				      size - MGMT_REQ_HDR_LEN);
		if (!req.payload || !mp)
			abort();
		if (mgmt_mirror_claims(&req))
			mgmt_mirror_parse(req.payload, mp, &why);
		else
			mgmt_job_params_check(&req);
		free(mp);
		free(req.payload);
		return 0;
	}
	if (req.mode == MGMT_MODE_DEVICE &&
	    (req.op == MGMT_OP_NEW || req.op == MGMT_OP_UPDATE)) {
		char *payload = strndup((const char *)data + MGMT_REQ_HDR_LEN,
					size - MGMT_REQ_HDR_LEN);

		if (!payload)
			abort();
		if (strcasestr(payload, "path")) {
			fuzz_lun_params(payload);
			free(payload);
			return 0;
		}
		free(payload);
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	/* the whole request and answer fit in the socket buffers: one
	 * thread can play both sides */
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	if (write(sv[1], data, size) != (ssize_t)size)
		abort();
	shutdown(sv[1], SHUT_WR);
	mgmt_serve(sv[0]);
	close(sv[0]);
	close(sv[1]);
	/* requests may close sessions or queue calls on the reactor */
	fuzz_pump(4);
	return 0;
}
