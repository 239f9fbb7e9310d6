/* be_scsi.c - what a SCSI device answers, into backend.h's terms.
 *
 * Sense data (SPC-4 4.5) into struct be_sense.  Fixed format (70h): key in byte 2, INFORMATION in bytes 3..6 (valid
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

#include "be_scsi.h"
#include "util.h"

#define SENSE_CURRENT_FIXED 0x70
#define SENSE_CURRENT_DESC 0x72
#define SENSE_CODE_MASK 0x7f
#define SENSE_FIXED_VALID 0x80
#define SENSE_SKSV 0x80
#define SENSE_DESC_INFORMATION 0x00
#define SENSE_DESC_SKS 0x02
/* GET LBA STATUS parameter data (SBC-3 5.16.2) */
#define GLS_HDR 8
#define GLS_DESC 16
#define GLS_DEALLOCATED 0x1

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

/* PROVISIONING STATUS as block_status answers it: anchored (2) is not
 * deallocated, it reads back what was written. */
static int gls_status(const uint8_t *desc)
{
	return (desc[12] & 0x0f) == GLS_DEALLOCATED ? 0 : 1;
}

int be_gls_parse(const uint8_t *d, size_t size, uint32_t bs, uint64_t off,
		 uint64_t *len, struct be_extent *ext, uint16_t ext_max,
		 uint16_t *ext_n)
{
	uint64_t lba = off / bs, end = off + *len, n, ndesc, pos;
	int res;

	*ext_n = 0;
	if (!d || !bs || size < GLS_HDR + GLS_DESC ||
	    get_be32(d) < GLS_HDR + GLS_DESC - 4)
		return -EREMOTEIO;
	/* descriptors both announced and received (an answer is cut to
	 * the allocation length, SBC-3 5.16.2) */
	ndesc = MIN((uint64_t)get_be32(d) + 4, (uint64_t)size);
	ndesc = (ndesc - GLS_HDR) / GLS_DESC;
	d += GLS_HDR;
	/* the first descriptor describes the starting LBA (SBC-3 5.16.2);
	 * anything else is answered as one mapped block */
	n = get_be32(d + 8);
	if (get_be64(d) != lba || n == 0) {
		*len = MIN((uint64_t)bs, *len);
		return 1;
	}
	*len = MIN(n * bs, *len);
	res = gls_status(d);
	/* the rest, while each starts where the one before ended */
	pos = off + *len;
	for (uint64_t i = 1; i < ndesc && *ext_n < ext_max && pos < end; i++) {
		const uint8_t *e = d + i * GLS_DESC;
		uint64_t elen = (uint64_t)get_be32(e + 8) * bs;

		if (get_be64(e) != pos / bs || elen == 0)
			break;
		elen = MIN(elen, end - pos);
		ext[*ext_n].length = elen;
		ext[*ext_n].status = gls_status(e);
		(*ext_n)++;
		pos += elen;
	}
	return res;
}
