/* fuzz_pr_owner.c - what a SCSI device answers to the persistent
 * reservation logic (backends/pr_owner.c): READ RESERVATION data, sense
 * (fixed and descriptor), statuses and unit attentions in any order,
 * through every ownership operation and the identity.
 *
 * Input: the first byte picks the operation; then, per command the logic
 * sends, a status byte (its low 2 bits: GOOD, CHECK CONDITION,
 * RESERVATION CONFLICT, a transport error), a length byte and that many
 * bytes, which are the data-in for a data-in command and the sense data
 * for CHECK CONDITION.  The rest of the input also goes to the sense
 * parser as is. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "pr_owner.h"

struct feed {
	const uint8_t *p, *end;
};

static int fuzz_exec(void *ctx, struct pr_xfer *x)
{
	struct feed *f = ctx;
	uint8_t st, n;

	if (f->p + 2 > f->end)
		return -EIO;
	st = *f->p++ & 3;
	n = *f->p++;
	if (n > f->end - f->p)
		n = (uint8_t)(f->end - f->p);
	if (st == 3) {
		f->p += n;
		return -EIO;
	}
	x->status = st == 0 ? PR_STATUS_GOOD : st == 1
			? PR_STATUS_CHECK_CONDITION : PR_STATUS_RESERVATION_CONFLICT;
	if (st == 1 && !pr_parse_sense(f->p, n, &x->sense_key, &x->asc))
		x->sense_key = 0;
	if (st == 0 && x->dir == PR_DIR_IN) {
		uint32_t m = n < x->len ? n : x->len;

		memcpy(x->buf, f->p, m);
		x->in_len = m;
	}
	f->p += n;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct feed f = { data, data + size };
	struct pr_owner p = { .exec = fuzz_exec, .ctx = &f, .key = 0x11 };
	const char *msg = NULL;
	char id[32];
	uint8_t key = 0, type = 0;
	uint16_t asc = 0;
	uint64_t holder = 0;

	if (!size)
		return 0;
	pr_parse_sense(data, (uint32_t)size, &key, &asc);
	pr_parse_reservation(data, (uint32_t)size, &holder, &type);
	f.p++;
	p.owner_mode = data[0] & 0x80;
	switch (data[0] % 6) {
	case 0: pr_owner_op(&p, BE_OWNER_TAKE, &msg); break;
	case 1: pr_owner_op(&p, BE_OWNER_TAKE_FORCE, &msg); break;
	case 2: pr_owner_op(&p, BE_OWNER_RELEASE, &msg); break;
	case 3: pr_owner_op(&p, BE_OWNER_QUERY, &msg); break;
	case 4: pr_owner_id(&p, id, sizeof(id), &msg); break;
	default:
		/* a whole take, then queries, on the same answers */
		pr_owner_op(&p, BE_OWNER_TAKE_FORCE, &msg);
		pr_owner_op(&p, BE_OWNER_QUERY, &msg);
		break;
	}
	return 0;
}
