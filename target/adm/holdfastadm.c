/* holdfastadm.c - holdfast's management client.
 *
 * Speaks tgtd's management protocol (../shared/docs/tgtadm-wire.md) with
 * tgtadm's options and short flags, so holdfastd can be managed without
 * the tgt package, and prints the same error texts for the daemon's error
 * numbers.  It adds what tgtadm lacks:
 *
 *   --op show --mode logicalunit --tid T --lun L   one LUN with hang state
 *   --hang VERB --tid T --lun L                    pause|resume|retry|fail
 *   --json                                         any show, as JSON
 *   --dump                                         the running targets.conf
 *   --save                                         write it to targets.conf
 *   --mode bitmap --tid T --lun L [--name N]       dirty bitmaps (issue 10)
 *   --mode job [--params id=J,...]                 backup jobs
 *
 * --json adds the payload item "format=json", which the stock tgtadm never
 * sends; the daemon then renders the show as one JSON document. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

#define ADM_DEFAULT_BASE "/var/run/tgtd/socket"
#define ADM_ENV_SOCKET "TGT_IPC_SOCKET"

/* Request header (tgtadm-wire.md): 120 bytes, host byte order. */
#define ADM_HDR_LEN 120
#define ADM_OFF_MODE 0
#define ADM_OFF_OP 4
#define ADM_OFF_LLD 8
#define ADM_LLD_LEN 64
#define ADM_OFF_LEN 72
#define ADM_OFF_TID 76
#define ADM_OFF_SID 80
#define ADM_OFF_LUN 88
#define ADM_OFF_CID 96
#define ADM_OFF_HOST_NO 100
#define ADM_OFF_DEVICE_TYPE 104
#define ADM_OFF_AC_DIR 108
#define ADM_OFF_FORCE 116
#define ADM_RSP_HDR_LEN 8
#define ADM_PAYLOAD_MAX (8192 - ADM_HDR_LEN)

/* The largest reply body we accept (a show of many targets). */
#define ADM_BODY_MAX (64u << 20)

/* tgtadm's exit code when the daemon answers with an error. */
#define ADM_EXIT_DAEMON_ERR 22

#define ADM_LUN_UNSET UINT64_MAX
#define ADM_AC_DIR_OUTGOING 1

/* Long-only options. */
enum { OPT_JSON = 0x100, OPT_DUMP, OPT_HANG, OPT_SAVE };

static const char *const adm_modes[] = {
	"system", "target", "logicalunit", "portal", "lld", "session",
	"connection", "account", "bitmap", "job",
};
enum { MODE_SYSTEM, MODE_TARGET, MODE_LUN, MODE_PORTAL, MODE_LLD,
       MODE_SESSION, MODE_CONN, MODE_ACCOUNT, MODE_BITMAP, MODE_JOB };

static const char *const adm_ops[] = {
	"new", "delete", "show", "bind", "unbind", "update", "stat", "start",
	"stop",
};
enum { OP_NEW, OP_DELETE, OP_SHOW, OP_BIND, OP_UNBIND, OP_UPDATE };

/* The texts tgtadm prints for the daemon's error numbers 0..24. */
static const char *const adm_errors[] = {
	"success",
	"unknown error",
	"out of memory",
	"can't find the driver",
	"can't find the target",
	"can't find the logical unit",
	"can't find the session",
	"can't find the connection",
	"can't find the binding",
	"this target already exists",
	"this logical unit number already exists",
	"this binding already exists",
	"this access control rule already exists",
	"this access control rule does not exist",
	"this account already exists",
	"can't find the account",
	"too many accounts",
	"invalid request",
	"this target already has an outgoing account",
	"this target is still active",
	"this logical unit is still active",
	"this driver is busy",
	"this operation isn't supported",
	"unknown parameter",
	"this device has Prevent Removal set",
};

/* SPC peripheral device types by tgtadm's names. */
static const struct { const char *name; uint32_t type; } adm_devtypes[] = {
	{ "disk", 0x00 }, { "tape", 0x01 }, { "ssc", 0x01 }, { "cd", 0x05 },
	{ "changer", 0x08 }, { "osd", 0x11 }, { "pt", 0xff },
};

struct adm {
	int mode, op;
	char lld[ADM_LLD_LEN + 1];
	int32_t tid;
	uint64_t sid, lun;
	uint32_t cid, device_type, ac_dir, force;
	int control_port;
	const char *name, *value, *path, *bstype, *bsopts, *bsoflags,
		*blocksize, *targetname, *iaddr, *iname, *user, *password,
		*params;
	bool json;
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: holdfastadm --op OP --mode MODE [options]\n"
"       holdfastadm --dump | --save [-C N]\n"
"       holdfastadm --hang pause|resume|retry|fail --tid T --lun L [-C N]\n"
"\n"
"  -L, --lld DRIVER            iscsi (the only driver)\n"
"  -o, --op OP                 new delete show bind unbind update stat start stop\n"
"  -m, --mode MODE             system target logicalunit portal lld session\n"
"                              connection account bitmap job\n"
"  -t, --tid N   -s, --sid N   -c, --cid N   -l, --lun N\n"
"  -n, --name KEY  -v, --value VALUE\n"
"  -b, --backing-store PATH  -E, --bstype TYPE  -S, --bsopts OPTS\n"
"  -f, --bsoflags FLAGS  -y, --blocksize N  -Y, --device-type TYPE\n"
"  -T, --targetname IQN\n"
"  -I, --initiator-address ADDR  -Q, --initiator-name IQN\n"
"  -u, --user USER  -p, --password SECRET  -O, --outgoing\n"
"  -P, --params K=V,...        -F, --force\n"
"  -C, --control-port N        socket <base>.N (base: $TGT_IPC_SOCKET or\n"
"                              " ADM_DEFAULT_BASE ")\n"
"      --json                  print a show as JSON\n"
"      --dump                  print the running configuration\n"
"      --save                  write it back to holdfastd's targets.conf\n"
"      --hang VERB             pause, resume, retry or fail a LUN's hang\n"
"  -h, --help\n"
"\n"
"Block stack of a live LUN (--op update --mode logicalunit -P ...):\n"
"  filter_add=passthrough|fault[,filter_pos=top|above:NODE|below:NODE]\n"
"  filter_remove=NAME          (show prints \"Backing store chain:\")\n");
}

static int lookup(const char *const *names, int n, const char *s)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

static int parse_mode(const char *s)
{
	/* tgtadm's short spellings */
	if (strcmp(s, "sys") == 0)
		return MODE_SYSTEM;
	if (strcmp(s, "sess") == 0)
		return MODE_SESSION;
	if (strcmp(s, "conn") == 0)
		return MODE_CONN;
	if (strcmp(s, "lu") == 0)
		return MODE_LUN;
	return lookup(adm_modes, (int)(sizeof(adm_modes) / sizeof(adm_modes[0])),
		      s);
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	return *s && *s != '-' && !*end && !errno;
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "holdfastadm: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(EXIT_FAILURE);
}

/* Append "key=value" to the payload, comma separated. */
static void add_item(char *buf, size_t *len, const char *key,
		     const char *value)
{
	int n = snprintf(buf + *len, ADM_PAYLOAD_MAX - *len, "%s%s=%s",
			 *len ? "," : "", key, value);

	if (n < 0 || (size_t)n >= ADM_PAYLOAD_MAX - *len)
		die("%s: request too long", key);
	*len += (size_t)n;
}

/* The payload, in tgtadm's order (tgtadm-wire.md "Payload"). */
static size_t build_payload(const struct adm *a, char *buf)
{
	size_t len = 0;

	buf[0] = '\0';
	/* --mode bitmap: --name is the bitmap's name */
	if (a->name && a->mode == MODE_BITMAP)
		add_item(buf, &len, "name", a->name);
	else if (a->name)
		add_item(buf, &len, a->name, a->value ? a->value : "");
	if (a->path)
		add_item(buf, &len, "path", a->path);
	if (a->bstype)
		add_item(buf, &len, "bstype", a->bstype);
	if (a->bsopts)
		add_item(buf, &len, "bsopts", a->bsopts);
	if (a->bsoflags)
		add_item(buf, &len, "bsoflags", a->bsoflags);
	if (a->blocksize)
		add_item(buf, &len, "blocksize", a->blocksize);
	if (a->targetname)
		add_item(buf, &len, "targetname", a->targetname);
	if (a->iaddr)
		add_item(buf, &len, "initiator-address", a->iaddr);
	if (a->iname)
		add_item(buf, &len, "initiator-name", a->iname);
	if (a->user)
		add_item(buf, &len, "user", a->user);
	if (a->password)
		add_item(buf, &len, "password", a->password);
	if (a->params) {
		/* tgtadm's prefixes; system requests take the items bare. */
		const char *prefix = a->mode == MODE_PORTAL ? "portalOps " :
				     a->mode == MODE_SYSTEM ||
				     a->mode == MODE_BITMAP ||
				     a->mode == MODE_JOB ? "" : "targetOps ";
		int n = snprintf(buf + len, ADM_PAYLOAD_MAX - len, "%s%s%s%s",
				 len ? "," : "", prefix, a->params,
				 *prefix ? "," : "");
		if (n < 0 || (size_t)n >= ADM_PAYLOAD_MAX - len)
			die("%s: request too long", "--params");
		len += (size_t)n;
	}
	if (a->json && a->op == OP_SHOW)
		add_item(buf, &len, "format", "json");
	return len;
}

static void put32(uint8_t *h, size_t off, uint32_t v)
{
	memcpy(h + off, &v, sizeof(v));	/* host order, like tgtadm */
}

static void put64(uint8_t *h, size_t off, uint64_t v)
{
	memcpy(h + off, &v, sizeof(v));
}

/* Send the request, print the reply body; returns the exit code. */
static int adm_send(const struct adm *a)
{
	const char *base = getenv(ADM_ENV_SOCKET);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	uint8_t hdr[ADM_HDR_LEN] = { 0 }, rsp[ADM_RSP_HDR_LEN];
	char payload[ADM_PAYLOAD_MAX];
	uint32_t err, len;
	size_t plen;
	int fd, ret;

	if (!base || !*base)
		base = ADM_DEFAULT_BASE;
	if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s.%d", base,
			     a->control_port) >= sizeof(sun.sun_path))
		die("socket path %s is too long", base);

	plen = build_payload(a, payload);
	put32(hdr, ADM_OFF_MODE, (uint32_t)a->mode);
	put32(hdr, ADM_OFF_OP, (uint32_t)a->op);
	memcpy(hdr + ADM_OFF_LLD, a->lld, strlen(a->lld));
	put32(hdr, ADM_OFF_LEN, (uint32_t)(ADM_HDR_LEN + plen + 1));
	put32(hdr, ADM_OFF_TID, (uint32_t)a->tid);
	put64(hdr, ADM_OFF_SID, a->sid);
	put64(hdr, ADM_OFF_LUN, a->lun);
	put32(hdr, ADM_OFF_CID, a->cid);
	put32(hdr, ADM_OFF_HOST_NO, 0);
	put32(hdr, ADM_OFF_DEVICE_TYPE, a->device_type);
	put32(hdr, ADM_OFF_AC_DIR, a->ac_dir);
	put32(hdr, ADM_OFF_FORCE, a->force);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		ret = errno;
		fprintf(stderr, "holdfastadm: cannot connect to %s: %s (is holdfastd running on control port %d?)\n",
			sun.sun_path, strerror(ret), a->control_port);
		return ret;
	}
	if ((ret = fd_write_full(fd, hdr, sizeof(hdr))) ||
	    (ret = fd_write_full(fd, payload, plen + 1)) ||
	    (ret = fd_read_full(fd, rsp, sizeof(rsp)))) {
		fprintf(stderr, "holdfastadm: request to %s failed: %s\n",
			sun.sun_path, strerror(-ret));
		close(fd);
		return -ret;
	}
	memcpy(&err, rsp, sizeof(err));
	memcpy(&len, rsp + 4, sizeof(len));
	if (err) {
		close(fd);
		if (err < sizeof(adm_errors) / sizeof(adm_errors[0]))
			fprintf(stderr, "holdfastadm: %s\n", adm_errors[err]);
		else
			fprintf(stderr, "holdfastadm: (unknown tgtadm_errno)\n");
		return ADM_EXIT_DAEMON_ERR;
	}
	if (len > ADM_RSP_HDR_LEN) {
		size_t blen = len - ADM_RSP_HDR_LEN;
		char *body;

		if (blen > ADM_BODY_MAX || !(body = malloc(blen + 1))) {
			close(fd);
			fprintf(stderr, "holdfastadm: reply too large\n");
			return ENOMEM;
		}
		if ((ret = fd_read_full(fd, body, blen))) {
			fprintf(stderr, "holdfastadm: reading the reply: %s\n",
				strerror(-ret));
			free(body);
			close(fd);
			return -ret;
		}
		body[blen] = '\0';	/* the daemon sends one, but be safe */
		fputs(body, stdout);
		free(body);
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lld", required_argument, NULL, 'L' },
		{ "op", required_argument, NULL, 'o' },
		{ "mode", required_argument, NULL, 'm' },
		{ "tid", required_argument, NULL, 't' },
		{ "sid", required_argument, NULL, 's' },
		{ "cid", required_argument, NULL, 'c' },
		{ "lun", required_argument, NULL, 'l' },
		{ "name", required_argument, NULL, 'n' },
		{ "value", required_argument, NULL, 'v' },
		{ "backing-store", required_argument, NULL, 'b' },
		{ "bstype", required_argument, NULL, 'E' },
		{ "bsopts", required_argument, NULL, 'S' },
		{ "bsoflags", required_argument, NULL, 'f' },
		{ "blocksize", required_argument, NULL, 'y' },
		{ "targetname", required_argument, NULL, 'T' },
		{ "initiator-address", required_argument, NULL, 'I' },
		{ "initiator-name", required_argument, NULL, 'Q' },
		{ "user", required_argument, NULL, 'u' },
		{ "password", required_argument, NULL, 'p' },
		{ "params", required_argument, NULL, 'P' },
		{ "force", no_argument, NULL, 'F' },
		{ "outgoing", no_argument, NULL, 'O' },
		{ "control-port", required_argument, NULL, 'C' },
		{ "device-type", required_argument, NULL, 'Y' },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "dump", no_argument, NULL, OPT_DUMP },
		{ "save", no_argument, NULL, OPT_SAVE },
		{ "hang", required_argument, NULL, OPT_HANG },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct adm a = { .mode = -1, .op = -1, .tid = -1, .lun = ADM_LUN_UNSET };
	char hang_params[64];
	const char *hang = NULL;
	bool dump = false, save = false, bad;
	uint64_t v;
	int opt;

	while ((opt = getopt_long(argc, argv,
				  "L:o:m:t:s:c:l:n:v:b:E:S:f:y:T:I:Q:u:p:P:FOC:Y:h",
				  opts, NULL)) != -1) {
		switch (opt) {
		case 'L':
			if (strlen(optarg) > ADM_LLD_LEN)
				die("driver name too long: %s", optarg);
			snprintf(a.lld, sizeof(a.lld), "%s", optarg);
			break;
		case 'o':
			a.op = lookup(adm_ops, (int)(sizeof(adm_ops) / sizeof(adm_ops[0])),
				      optarg);
			if (a.op < 0)
				die("unknown operation: %s", optarg);
			break;
		case 'm':
			a.mode = parse_mode(optarg);
			if (a.mode < 0)
				die("unknown mode: %s", optarg);
			break;
		case 't': {
			char *end;
			long t;
			errno = 0;
			t = strtol(optarg, &end, 0);
			if (!*optarg || *end || errno || t < -1 || t > INT32_MAX)
				die("bad tid: %s", optarg);
			a.tid = (int32_t)t;
			break;
		}
		case 's':
			if (!parse_u64(optarg, &a.sid))
				die("bad sid: %s", optarg);
			break;
		case 'c':
			if (!parse_u64(optarg, &v) || v > UINT32_MAX)
				die("bad cid: %s", optarg);
			a.cid = (uint32_t)v;
			break;
		case 'l':
			if (!parse_u64(optarg, &a.lun))
				die("bad lun: %s", optarg);
			break;
		case 'n': a.name = optarg; break;
		case 'v': a.value = optarg; break;
		case 'b': a.path = optarg; break;
		case 'E': a.bstype = optarg; break;
		case 'S': a.bsopts = optarg; break;
		case 'f': a.bsoflags = optarg; break;
		case 'y': a.blocksize = optarg; break;
		case 'T': a.targetname = optarg; break;
		case 'I': a.iaddr = optarg; break;
		case 'Q': a.iname = optarg; break;
		case 'u': a.user = optarg; break;
		case 'p': a.password = optarg; break;
		case 'P': a.params = optarg; break;
		case 'F': a.force = 1; break;
		case 'O': a.ac_dir = ADM_AC_DIR_OUTGOING; break;
		case 'C':
			if (!parse_u64(optarg, &v) || v > INT32_MAX)
				die("bad control port: %s", optarg);
			a.control_port = (int)v;
			break;
		case 'Y':
			bad = true;
			for (size_t i = 0; i < sizeof(adm_devtypes) / sizeof(adm_devtypes[0]); i++)
				if (strcmp(optarg, adm_devtypes[i].name) == 0) {
					a.device_type = adm_devtypes[i].type;
					bad = false;
				}
			if (bad)
				die("unknown device type: %s", optarg);
			break;
		case OPT_JSON: a.json = true; break;
		case OPT_DUMP: dump = true; break;
		case OPT_SAVE: save = true; break;
		case OPT_HANG: hang = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_FAILURE;
		}
	}
	if (optind < argc)
		die("unexpected argument: %s", argv[optind]);

	if (dump + save + (hang != NULL) > 1)
		die("%s", "--dump, --save and --hang exclude each other");
	if (dump) {
		/* tgtadm --op show --mode system --name dump --value config */
		a.mode = MODE_SYSTEM;
		a.op = OP_SHOW;
		a.name = "dump";
		a.value = "config";
	} else if (save) {
		a.mode = MODE_SYSTEM;
		a.op = OP_UPDATE;
		a.name = "save";
		a.value = "1";
	} else if (hang) {
		if (a.tid < 0 || a.lun == ADM_LUN_UNSET)
			die("%s", "--hang needs --tid and --lun");
		snprintf(hang_params, sizeof(hang_params), "hang=%s", hang);
		a.mode = MODE_LUN;
		a.op = OP_UPDATE;
		a.params = hang_params;
	}
	if (a.op < 0)
		die("%s", "specify the operation type");
	if (a.mode < 0)
		die("%s", "specify the mode");
	return adm_send(&a);
}
