/* main.c - holdfastd: parse options, load targets.conf, start reactors,
 * portals and the management socket; stop cleanly on SIGTERM. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbt_job.h"
#include "cbt_set.h"
#include "config.h"
#include "iscsi.h"
#include "mgmt.h"
#include "reactor.h"
#include "target.h"

#define DEFAULT_CONFIG "/etc/holdfast/targets.conf"
#define MAX_REACTORS 64
#define SHUTDOWN_LOGOUT_MS 4000
#define SHUTDOWN_DRAIN_MS 15000

/* --busy-poll's ceiling: a spin longer than 100 ms is a pinned core. */
#define BUSY_POLL_MAX_US 100000

static void usage(FILE *f)
{
	fprintf(f,
		"usage: holdfastd [-f|--foreground] [-c|--config FILE]\n"
		"                 [-C|--control-port N] [-t|--threads N] [-d|--debug]\n"
		"                 [-p|--pid-file FILE] [-b|--busy-poll USEC]\n"
		"\n"
		"  -f, --foreground     stay in the foreground, log to stderr\n"
		"  -p, --pid-file FILE  write the daemon's PID there once it serves\n"
		"  -c, --config FILE    targets.conf to serve (default %s)\n"
		"  -C, --control-port N management socket <base>.N (default 0;\n"
		"                       base from TGT_IPC_SOCKET or /var/run/tgtd/socket)\n"
		"  -t, --threads N      reactor threads (default: one per CPU)\n"
		"  -b, --busy-poll USEC after a wake-up with work, poll up to USEC\n"
		"                       microseconds before sleeping (default 0: off;\n"
		"                       costs CPU, saves the wake-up: QD1 latency)\n"
		"  -d, --debug          debug logging\n",
		DEFAULT_CONFIG);
}

/* Detach before anything starts a thread or opens a store: librados (an
 * RBD LUN), the ALUA and gateway threads all start while config_apply()
 * runs, and no thread survives a fork.  The parent stays until the child
 * reports through a pipe: one byte once it serves (the parent exits 0),
 * or nothing and an exit (the parent exits with the child's status; the
 * child wrote its reason to the stderr both share).  Returns the write
 * end of that pipe in the child; the parent never returns. */
static int daemonize(void)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		perror("holdfastd: pipe");
		exit(1);
	}
	pid = fork();
	if (pid < 0) {
		perror("holdfastd: fork");
		exit(1);
	}
	if (pid > 0) {
		char c;
		ssize_t n;
		int st;

		close(p[1]);
		do
			n = read(p[0], &c, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1)
			_exit(0);
		/* the child gave up (or died) before serving */
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(st) && WEXITSTATUS(st))
			_exit(WEXITSTATUS(st));
		fprintf(stderr, "holdfastd: the daemon %s during startup\n",
			WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exited");
		_exit(1);
	}
	close(p[0]);
	if (setsid() < 0) {
		perror("holdfastd: setsid");
		exit(1);
	}
	return p[1];
}

/* The child serves: tell the parent, drop the terminal. */
static void daemon_ready(int status_fd)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	while (write(status_fd, "R", 1) < 0 && errno == EINTR)
		;
	close(status_fd);
}

static int pid_file_write(const char *path)
{
	char buf[32];
	int fd, n;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (write(fd, buf, (size_t)n) != n) {
		int err = errno ? -errno : -EIO;

		close(fd);
		unlink(path);
		return err;
	}
	close(fd);
	return 0;
}

static void *reactor_thread(void *arg)
{
	reactor_run(arg);
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "config", required_argument, NULL, 'c' },
		{ "control-port", required_argument, NULL, 'C' },
		{ "threads", required_argument, NULL, 't' },
		{ "debug", no_argument, NULL, 'd' },
		{ "pid-file", required_argument, NULL, 'p' },
		{ "busy-poll", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = DEFAULT_CONFIG;
	const char *pid_path = NULL;
	char pid_abs[4096];
	int status_fd = -1;
	bool foreground = false, debug = false;
	int control_port = 0, nthreads = 0, opt, ret;
	long busy_us = 0;
	char *end;
	struct reactor *reactors[MAX_REACTORS];
	pthread_t threads[MAX_REACTORS];
	static struct config cfg;
	char err[1024];
	sigset_t sigs;

	while ((opt = getopt_long(argc, argv, "fc:C:t:dp:b:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'f': foreground = true; break;
		case 'c': config_path = optarg; break;
		case 'C': control_port = atoi(optarg); break;
		case 't': nthreads = atoi(optarg); break;
		case 'd': debug = true; break;
		case 'p': pid_path = optarg; break;
		case 'b':
			errno = 0;
			busy_us = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || busy_us < 0 ||
			    busy_us > BUSY_POLL_MAX_US) {
				fprintf(stderr, "holdfastd: --busy-poll: "
					"microseconds, 0..%d\n",
					BUSY_POLL_MAX_US);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || control_port < 0 || nthreads < 0 ||
	    nthreads > MAX_REACTORS) {
		usage(stderr);
		return 2;
	}
	/* Command buffers up to a few MiB come and go at line rate.  Above
	 * glibc's default mmap threshold each one would be a fresh mmap that
	 * page-faults on every use (measured: ~256 faults per 1 MiB read);
	 * keeping them on the heap lets freed buffers be reused. */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	if (nthreads == 0)
		nthreads = (int)MIN(MAX(sysconf(_SC_NPROCESSORS_ONLN), 1),
				    MAX_REACTORS);
	log_init(true, debug);
	tgt_table_init();

	/* Signals are taken by the main thread only (sigtimedwait below);
	 * every other thread inherits the blocked mask, including the ones
	 * libraries start while config_apply() opens the stores (librados
	 * starts its own when an RBD LUN opens): a SIGTERM delivered to one
	 * of those would kill the process instead of stopping it cleanly. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* the whole file is validated before anything is served */
	if (config_load(config_path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "holdfastd: %s\n", err);
		return 1;
	}
	/* persistent dirty bitmaps live beside the configuration */
	{
		char dir[sizeof(cfg.path)];
		char *slash;

		snprintf(dir, sizeof(dir), "%s", cfg.path);
		slash = strrchr(dir, '/');
		if (slash) {
			*slash = '\0';
			cbt_state_dir_set(dir[0] ? dir : "/");
		}
	}
	if (pid_path && pid_path[0] != '/') {
		/* the daemon leaves the working directory */
		if (!getcwd(pid_abs, sizeof(pid_abs)) ||
		    strlen(pid_abs) + strlen(pid_path) + 2 > sizeof(pid_abs)) {
			fprintf(stderr, "holdfastd: pid file path too long\n");
			return 1;
		}
		strcat(pid_abs, "/");
		strcat(pid_abs, pid_path);
		pid_path = pid_abs;
	}
	/* Detach now, while this is the only thread: the stores open in
	 * the daemon, with the threads their libraries start. */
	if (!foreground)
		status_fd = daemonize();
	if (config_apply(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "holdfastd: %s\n", err);
		return 1;
	}
	if (!foreground && chdir("/") < 0) {
		perror("holdfastd: chdir /");
		return 1;
	}

	for (int i = 0; i < nthreads; i++) {
		reactors[i] = reactor_new(i);
		if (!reactors[i]) {
			fprintf(stderr, "holdfastd: cannot create reactor %d\n",
				i);
			return 1;
		}
		reactor_set_busy_poll(reactors[i], (unsigned)busy_us);
	}
	cbt_job_reactors_set(reactors, nthreads);
	/* management first: once the portal accepts, tgtadm works too */
	ret = mgmt_start(control_port);
	if (ret < 0) {
		fprintf(stderr,
			"holdfastd: cannot start management on control port %d: %s\n",
			control_port, strerror(-ret));
		return 1;
	}
	{
		/* every connection is an fd: allow what the hard limit does
		 * (Debian's soft limit of 1024 is below max_connections) */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		    rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				log_warn("cannot raise the open file limit: %s",
					 strerror(errno));
		}
	}
	iscsi_limits_set(&cfg.limits);
	ret = iscsi_portals_start(cfg.portals, cfg.nr_portals, reactors,
				  nthreads);
	if (ret < 0) {
		fprintf(stderr, "holdfastd: cannot listen: %s\n",
			strerror(-ret));
		mgmt_stop();
		return 1;
	}
	if (pid_path && (ret = pid_file_write(pid_path)) < 0) {
		fprintf(stderr, "holdfastd: cannot write the pid file %s: %s\n",
			pid_path, strerror(-ret));
		iscsi_portals_stop();
		mgmt_stop();
		return 1;
	}
	iscsi_portals_warn_open();
	for (int i = 0; i < nthreads; i++)
		pthread_create(&threads[i], NULL, reactor_thread, reactors[i]);
	if (!foreground) {
		/* from here on messages go to syslog */
		log_init(false, debug);
		daemon_ready(status_fd);
	}
	log_info("holdfastd ready: %d reactor thread%s, control port %d, config %s",
		 nthreads, nthreads == 1 ? "" : "s", control_port, cfg.path);

	for (;;) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		int sig = sigtimedwait(&sigs, NULL, &ts);

		if (sig == SIGTERM || sig == SIGINT) {
			log_info("signal %d: shutting down", sig);
			break;
		}
		if (sig == SIGHUP && config_reload(cfg.path) == 0)
			iscsi_portals_warn_open();
		if (mgmt_exit_requested()) {
			log_info("shutdown requested through management");
			break;
		}
	}

	/* Stop accepting, ask initiators to log out, then close what is
	 * left; a closing connection waits for its commands in the backend,
	 * so nothing is left written half. */
	iscsi_portals_stop();
	iscsi_sessions_close(-1, true, SHUTDOWN_LOGOUT_MS);
	for (uint64_t end = clock_ms() + SHUTDOWN_DRAIN_MS;
	     iscsi_conn_count() > 0 && clock_ms() < end;)
		usleep(10000);
	if (iscsi_conn_count() > 0)
		log_warn("%d connection(s) still busy at exit",
			 iscsi_conn_count());
	mgmt_stop();
	/* LUNs go while the reactors still run: a gateway LUN's session
	 * belongs to a reactor, which must unhook it (backends/iscsi.c). */
	tgt_table_clear();
	for (int i = 0; i < nthreads; i++) {
		reactor_stop(reactors[i]);
		pthread_join(threads[i], NULL);
		reactor_free(reactors[i]);
	}
	config_free(&cfg);
	if (pid_path)
		unlink(pid_path);
	log_info("holdfastd stopped");
	return 0;
}
