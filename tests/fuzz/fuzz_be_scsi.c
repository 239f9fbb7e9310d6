/* fuzz_be_scsi.c - what a gateway reads from its SAN's answers
 * (backends/be_scsi.c): sense data of a CHECK CONDITION, passed on to the
 * initiator as it is, and the parameter data of a GET LBA STATUS, turned
 * into block_status extents.
 *
 * Input: byte 0 chooses.  Even: the rest is sense data.  Odd: byte 1
 * picks the block size (512 << (b & 3)), bytes 2..5 the starting LBA
 * (big endian, 32 bits), bytes 6..9 the blocks asked about (> 0), byte
 * 10 ext_max, the rest is the GET LBA STATUS answer. */
#include <stdint.h>
#include <string.h>

#include "be_scsi.h"
#include "util.h"

static void fuzz_sense(const uint8_t *d, size_t n)
{
	struct be_sense s;
	int r = be_sense_parse(d, n, &s);

	if (r == 0) {
		/* a current error with a key; INFORMATION only when the
		 * data said it was valid */
		if (s.key == 0 || s.key > 15 || n < 8 ||
		    (!s.info_valid && s.info))
			__builtin_trap();
	} else {
		static const struct be_sense zero;

		if (r != -EINVAL || memcmp(&s, &zero, sizeof(s)))
			__builtin_trap();
	}
}

static void fuzz_gls(const uint8_t *d, size_t n)
{
	struct be_extent ext[256];
	uint32_t bs;
	uint64_t off, len, asked, sum;
	uint16_t max, got = 0xffff;
	int r;

	if (n < 11)
		return;
	bs = 512u << (d[1] & 3);
	off = (uint64_t)get_be32(d + 2) * bs;
	asked = (uint64_t)(get_be32(d + 6) ? get_be32(d + 6) : 1) * bs;
	max = d[10];
	len = asked;
	r = be_gls_parse(d + 11, n - 11, bs, off, &len, ext, max, &got);
	if (r == -EREMOTEIO) {
		if (got != 0)
			__builtin_trap();
		return;
	}
	/* an answer: the first extent within what was asked, the rest
	 * whole blocks, in order, none past the end, no more than room */
	if ((r != 0 && r != 1) || len == 0 || len > asked || got > max)
		__builtin_trap();
	sum = len;
	for (unsigned i = 0; i < got; i++) {
		if (ext[i].length == 0 || ext[i].length % bs ||
		    (ext[i].status != 0 && ext[i].status != 1))
			__builtin_trap();
		sum += ext[i].length;
	}
	if (sum > asked)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_gls(data, size);
	else
		fuzz_sense(data + 1, size - 1);
	return 0;
}
