/* fuzz_cbt_sidecar.c - libFuzzer harness for the persistent bitmap
 * sidecar parser (target/cbt/cbt_sidecar.c), which reads a file from disk
 * at LUN start.  Whatever it accepts must re-encode to the same bytes
 * (modulo a poisoned magic) and yield bitmaps whose geometry is sane.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Itarget/core -Itarget/cbt -Ibackends tests/fuzz/fuzz_cbt_sidecar.c \
 *     target/cbt/cbt_sidecar.c target/cbt/cbt_bitmap.c target/core/crc32c.c \
 *     -o build/fuzz/fuzz_cbt_sidecar
 *   build/fuzz/fuzz_cbt_sidecar tests/fuzz/corpus/cbt_sidecar */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cbt_bitmap.h"
#include "cbt_sidecar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

static void check_one(const uint8_t *data, size_t size)
{
	struct cbt_bitmap **bms;
	unsigned n;
	uint64_t lun_size;
	const char *why;
	uint8_t *again;
	size_t len;

	if (cbt_sidecar_decode(data, size, &bms, &n, &lun_size, &why) != 0)
		return;
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = 0, elen, total = 0;

		if (bms[i]->size != lun_size)
			__builtin_trap();
		while (cbt_bitmap_next_extent(bms[i], &off, &elen, true)) {
			total += elen;
			off += elen;
		}
		if (total != cbt_bitmap_dirty_bytes(bms[i]))
			__builtin_trap();
	}
	if (cbt_sidecar_encode(bms, n, lun_size, &again, &len) == 0) {
		/* a poisoned input re-encodes with the good magic and the
		 * inconsistent flag set, so compare only clean inputs */
		if (!memcmp(data, "HFCBTMAP", 8) &&
		    (len != size || memcmp(again, data, size)))
			__builtin_trap();
		free(again);
	}
	for (unsigned i = 0; i < n; i++)
		cbt_bitmap_free(bms[i]);
	free(bms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;
	uint32_t crc;

	check_one(data, size);
	/* Again with the checksum made right, so mutations get past it and
	 * reach the field checks behind it. */
	if (size < 12 || !(fixed = malloc(size)))
		return 0;
	memcpy(fixed, data, size);
	crc = crc32c(0, fixed + 8, size - 12);
	fixed[size - 4] = (uint8_t)(crc >> 24);
	fixed[size - 3] = (uint8_t)(crc >> 16);
	fixed[size - 2] = (uint8_t)(crc >> 8);
	fixed[size - 1] = (uint8_t)crc;
	check_one(fixed, size);
	free(fixed);
	return 0;
}
