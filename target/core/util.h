/* util.h - small helpers shared by every module: big-endian accessors,
 * intrusive lists, RFC 1982 serial arithmetic, logging.
 *
 * Wire formats are always read and written through get_be / put_be; never
 * cast a struct over a receive buffer. */
#ifndef HOLDFAST_UTIL_H
#define HOLDFAST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
#define UNUSED __attribute__((unused))

/* ---- big-endian accessors ---- */
static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t get_be24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}
static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}
static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void put_be24(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 16);
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)v;
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

/* ---- RFC 1982 serial number arithmetic (32-bit), RFC 7143 section 4.2.2.1 ---- */
static inline bool sn_lt(uint32_t a, uint32_t b)
{
	return a != b && (int32_t)(a - b) < 0;
}
static inline bool sn_le(uint32_t a, uint32_t b)
{
	return a == b || sn_lt(a, b);
}
static inline bool sn_gt(uint32_t a, uint32_t b)
{
	return sn_lt(b, a);
}

/* ---- intrusive doubly linked list ---- */
struct list_head {
	struct list_head *next, *prev;
};
#define LIST_HEAD_INIT(n) { &(n), &(n) }
static inline void list_init(struct list_head *h)
{
	h->next = h->prev = h;
}
static inline bool list_empty(const struct list_head *h)
{
	return h->next == h;
}
static inline void list_insert_(struct list_head *n, struct list_head *prev,
				struct list_head *next)
{
	next->prev = n;
	n->next = next;
	n->prev = prev;
	prev->next = n;
}
static inline void list_add(struct list_head *n, struct list_head *h)
{
	list_insert_(n, h, h->next);
}
static inline void list_add_tail(struct list_head *n, struct list_head *h)
{
	list_insert_(n, h->prev, h);
}
static inline void list_del(struct list_head *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = n;
}
#define list_entry(ptr, type, member) container_of(ptr, type, member)
#define list_first_entry(h, type, member) list_entry((h)->next, type, member)
#define list_for_each_entry(pos, h, member)                                   \
	for (pos = list_entry((h)->next, __typeof__(*pos), member);           \
	     &pos->member != (h);                                             \
	     pos = list_entry(pos->member.next, __typeof__(*pos), member))
#define list_for_each_entry_safe(pos, n, h, member)                           \
	for (pos = list_entry((h)->next, __typeof__(*pos), member),           \
	    n = list_entry(pos->member.next, __typeof__(*pos), member);       \
	     &pos->member != (h);                                             \
	     pos = n, n = list_entry(n->member.next, __typeof__(*n), member))

/* ---- per-thread free lists (util.c) ----
 * The steady-state I/O path allocates and frees the same few object sizes
 * (task, PDU, data buffer) once per command.  A free list per thread and
 * per kind, declared by its user as `static __thread struct free_list`,
 * recycles them without malloc's bookkeeping and without a lock: an object
 * freed on another thread simply joins that thread's list.  At most `max`
 * objects are kept; the rest go back to free().  Under AddressSanitizer
 * nothing is kept, so use-after-free and leak reports stay exact. */
struct free_list {
	void *head;
	unsigned n;
};
/* A zeroed object of `size` bytes (every user of one list passes the same
 * size); aborts when out of memory, like xzalloc(). */
void *free_list_zalloc(struct free_list *fl, size_t size);
/* Pop an object without zeroing it, or NULL when the list is empty. */
void *free_list_pop(struct free_list *fl);
/* Keep p (at least sizeof(void *) bytes) for reuse, or free() it. */
void free_list_put(struct free_list *fl, void *p, unsigned max);

/* ---- logging (log.c) ----
 * One line per event, to stderr (foreground) or syslog (daemon).  Log where
 * the connection, ITT and LUN are known; lower layers return -errno. */
enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };
void log_init(bool foreground, bool debug);
void log_set_debug(bool debug);
bool log_debug_enabled(void);
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                        \
	do {                                                                  \
		if (log_debug_enabled())                                      \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                  \
	} while (0)

/* Allocation that aborts on failure: only for small control structures
 * where there is no sane way to continue.  Data buffers use the fallible
 * calls and turn failure into TASK SET FULL / -ENOMEM. */
void *xzalloc(size_t n);
char *xstrdup(const char *s);

/* Blocking I/O of exactly len bytes (management socket, tools); retries
 * on EINTR.  0, -EPIPE at end of file, or -errno.  Writes use
 * MSG_NOSIGNAL, so fd must be a socket. */
int fd_read_full(int fd, void *buf, size_t len);
int fd_write_full(int fd, const void *buf, size_t len);

/* Monotonic clock in milliseconds / nanoseconds. */
uint64_t clock_ms(void);

/* Parse a size: digits with an optional K/M/G/T/P suffix (binary; "B" or
 * "iB" may follow).  0 / -EINVAL (syntax or overflow). */
int util_parse_size(const char *s, uint64_t *out);

struct sockaddr_storage;
/* Same address family, address and port (portal identity). */
bool sockaddr_same(const struct sockaddr_storage *a,
		   const struct sockaddr_storage *b);
uint64_t clock_ns(void);

#endif
