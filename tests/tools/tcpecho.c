/* tcpecho.c - the floor for a 4 KiB request/response over loopback TCP.
 *
 * A server thread echoes every byte back; the client sends SIZE bytes,
 * waits for SIZE bytes back, COUNT times, one in flight (QD1: what a 4 KiB
 * QD1 iSCSI read or write round trip is compared against), with
 * TCP_NODELAY on both ends.  Prints one line:
 *   tcpecho size=4096 count=20000 mean_us=... p50_us=... p99_us=...
 *           cpu_us_per_rt=...
 * cpu_us_per_rt is user+system CPU of the whole process (client and
 * server) per round trip, from getrusage().
 *
 * usage: tcpecho [-s SIZE] [-n COUNT] */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static size_t size = 4096;

static int xfer(int fd, char *buf, size_t len, int out)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = out ? send(fd, buf + done, len - done, MSG_NOSIGNAL)
				: recv(fd, buf + done, len - done, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static void *server(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char *buf = malloc(size);

	while (buf && xfer(fd, buf, size, 0) == 0 && xfer(fd, buf, size, 1) == 0)
		;
	free(buf);
	close(fd);
	return NULL;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec +
	       ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	long count = 20000;
	int one = 1, lfd, cfd, sfd, opt;
	pthread_t th;
	uint64_t *rt;
	double cpu0, sum = 0;
	char *buf;

	while ((opt = getopt(argc, argv, "s:n:")) != -1) {
		if (opt == 's')
			size = strtoul(optarg, NULL, 0);
		else if (opt == 'n')
			count = strtol(optarg, NULL, 0);
		else {
			fprintf(stderr, "usage: tcpecho [-s SIZE] [-n COUNT]\n");
			return 2;
		}
	}
	if (!size || count <= 0)
		return 2;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("tcpecho: listen");
		return 1;
	}
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    (sfd = accept(lfd, NULL, NULL)) < 0) {
		perror("tcpecho: connect");
		return 1;
	}
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (pthread_create(&th, NULL, server, (void *)(intptr_t)sfd)) {
		fprintf(stderr, "tcpecho: pthread_create failed\n");
		return 1;
	}
	buf = calloc(1, size);
	rt = calloc((size_t)count, sizeof(*rt));
	if (!buf || !rt)
		return 1;
	for (int i = 0; i < 100; i++)	/* warm up */
		if (xfer(cfd, buf, size, 1) || xfer(cfd, buf, size, 0))
			return 1;
	cpu0 = cpu_us();
	for (long i = 0; i < count; i++) {
		uint64_t t0 = now_ns();

		if (xfer(cfd, buf, size, 1) || xfer(cfd, buf, size, 0)) {
			fprintf(stderr, "tcpecho: connection lost\n");
			return 1;
		}
		rt[i] = now_ns() - t0;
		sum += (double)rt[i];
	}
	cpu0 = cpu_us() - cpu0;
	shutdown(cfd, SHUT_WR);
	pthread_join(th, NULL);
	qsort(rt, (size_t)count, sizeof(*rt), cmp_u64);
	printf("tcpecho size=%zu count=%ld mean_us=%.2f p50_us=%.2f "
	       "p99_us=%.2f cpu_us_per_rt=%.2f\n", size, count,
	       sum / (double)count / 1e3, rt[count / 2] / 1e3,
	       rt[count * 99 / 100] / 1e3, cpu0 / (double)count);
	close(cfd);
	close(lfd);
	free(rt);
	free(buf);
	return 0;
}
