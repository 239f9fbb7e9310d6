/* test_buf_pool.c - the per-thread free lists (util.c) and the SCSI data
 * buffer classes built on them (scsi_cmd.c). */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "scsi.h"
#include "util.h"

static bool aligned(const void *p)
{
	return ((uintptr_t)p & 4095) == 0;
}

static void test_free_list(void)
{
	struct free_list fl = { 0 };
	void *a = free_list_zalloc(&fl, 64), *b;

	memset(a, 0xab, 64);
	free_list_put(&fl, a, 1);
#if !defined(__SANITIZE_ADDRESS__)
	CHECK(fl.n == 1);
	b = free_list_zalloc(&fl, 64);
	CHECK(b == a, "a kept object is handed out again");
	CHECK(((unsigned char *)b)[63] == 0, "and zeroed");
	CHECK(fl.n == 0);
	free_list_put(&fl, b, 1);
	free_list_put(&fl, malloc(64), 1);	/* over max: freed */
	CHECK(fl.n == 1);
	free(free_list_pop(&fl));
#else
	CHECK(fl.n == 0, "nothing is kept under ASan");
	(void)b;
#endif
	CHECK(free_list_pop(&fl) == NULL);
}

static void test_scsi_buf(void)
{
	void *a = scsi_buf_alloc(4096), *b;

	CHECK(a && aligned(a));
	memset(a, 0x5a, 4096);
	scsi_buf_free(a);
	b = scsi_buf_alloc(4096);
	CHECK(b && aligned(b));
	CHECK(((unsigned char *)b)[4095] == 0, "scsi_buf_alloc() zeroes");
#if !defined(__SANITIZE_ADDRESS__)
	CHECK(b == a, "a 4 KiB buffer is reused");
#endif
	scsi_buf_free(b);

	/* 5000 bytes come from the 8 KiB class */
	a = scsi_buf_alloc(5000);
	CHECK(a && aligned(a) && malloc_usable_size(a) >= 8192);
	scsi_buf_free(a);

	/* a 1 MiB buffer is not kept as a 128 KiB one */
	a = scsi_buf_alloc(1u << 20);
	CHECK(a && aligned(a));
	scsi_buf_free(a);
	b = scsi_buf_alloc(128u << 10);
	CHECK(b && aligned(b));
	CHECK(malloc_usable_size(b) >= (128u << 10) &&
	      malloc_usable_size(b) < (256u << 10),
	      "not the 1 MiB buffer from the pool");
	scsi_buf_free(b);
	scsi_buf_free(NULL);
}

int main(void)
{
	test_free_list();
	test_scsi_buf();
	return CHECK_SUMMARY("test_buf_pool");
}
