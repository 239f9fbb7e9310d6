/* be_sense.c - sense data (SPC-4 4.5) into struct be_sense.
 *
 * Fixed format (70h): key in byte 2, INFORMATION in bytes 3..6 (valid
 * when bit 7 of byte 0 is set), ADDITIONAL SENSE LENGTH in byte 7,
 * ASC/ASCQ in bytes 12/13, sense-key specific in 15..17 (SKSV, bit 7 of
 * byte 15).  Descriptor format (72h): key, ASC, ASCQ in bytes 1..3,
 * ADDITIONAL SENSE LENGTH in byte 7, then descriptors (type, additional
 * length, ...): 00h INFORMATION (VALID bit 7 of byte 2, 8 bytes from
 * byte 4) and 02h sense-key specific (3 bytes from byte 4, SKSV bit 7
 * of the first).  The additional length bounds what is read as much as
 * len does. */
#include <errno.h>
#include <string.h>

#include "be_sense.h"
#include "util.h"

#define SENSE_CURRENT_FIXED 0x70
#define SENSE_CURRENT_DESC 0x72
#define SENSE_CODE_MASK 0x7f
#define SENSE_FIXED_VALID 0x80
#define SENSE_SKSV 0x80
#define SENSE_DESC_INFORMATION 0x00
#define SENSE_DESC_SKS 0x02

static int be_sense_fixed(const uint8_t *b, size_t len, struct be_sense *o)
{
	/* the 8-byte header always counts; past it, only what the
	 * additional length says is there */
	size_t end;

	if (len < 8)
		return -EINVAL;
	end = MIN(len, (size_t)8 + b[7]);
	o->key = b[2] & 0x0f;
	if (b[0] & SENSE_FIXED_VALID) {
		o->info_valid = true;
		o->info = get_be32(b + 3);
	}
	if (end >= 14) {
		o->asc = b[12];
		o->ascq = b[13];
	} else if (end >= 13) {
		o->asc = b[12];
	}
	if (end >= 18 && (b[15] & SENSE_SKSV)) {
		o->sks_valid = true;
		memcpy(o->sks, b + 15, 3);
	}
	return 0;
}

static int be_sense_desc(const uint8_t *b, size_t len, struct be_sense *o)
{
	size_t end, i;

	if (len < 8)
		return -EINVAL;
	end = MIN(len, (size_t)8 + b[7]);
	o->key = b[1] & 0x0f;
	o->asc = b[2];
	o->ascq = b[3];
	for (i = 8; i + 2 <= end;) {
		const uint8_t *d = b + i;
		size_t dl = (size_t)d[1] + 2;

		if (i + dl > end)
			break;
		if (d[0] == SENSE_DESC_INFORMATION && dl >= 12 &&
		    (d[2] & SENSE_FIXED_VALID)) {
			o->info_valid = true;
			o->info = get_be64(d + 4);
		} else if (d[0] == SENSE_DESC_SKS && dl >= 7 &&
			   (d[4] & SENSE_SKSV)) {
			o->sks_valid = true;
			memcpy(o->sks, d + 4, 3);
		}
		i += dl;
	}
	return 0;
}

int be_sense_parse(const uint8_t *b, size_t len, struct be_sense *out)
{
	int r = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!b || len < 1)
		return -EINVAL;
	switch (b[0] & SENSE_CODE_MASK) {
	case SENSE_CURRENT_FIXED:
		r = be_sense_fixed(b, len, out);
		break;
	case SENSE_CURRENT_DESC:
		r = be_sense_desc(b, len, out);
		break;
	}
	if (r == 0 && out->key == 0)
		r = -EINVAL;	/* NO SENSE: nothing to repeat */
	if (r)
		memset(out, 0, sizeof(*out));
	return r;
}
