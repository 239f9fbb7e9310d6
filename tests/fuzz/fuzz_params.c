/* fuzz_params.c - login and text key=value negotiation (RFC 7143 section
 * 6 and 13): the data segment iterator, every negotiation rule, target
 * overrides (targets.conf params / tgtadm), the declaration that ends a
 * login and the answer buffer.
 *
 * Input: a login or text data segment ("key=value\0..."); its first byte
 * chooses a discovery or normal session and whether digests are offered.
 * Keys whose name starts with 'T' are also applied as target overrides. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "iscsi_param.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char item[8192], out[256], rsp[8192];
	unsigned off = 0, rsp_off = 0;
	struct iscsi_neg n;
	char *key, *value;

	if (size < 1)
		return 0;
	iscsi_neg_init(&n, data[0] & 1);
	n.discovery = data[0] & 2;
	data++;
	size--;
	while ((off = iscsi_text_next(data, (unsigned)size, off, item,
				      sizeof(item), &key, &value)) != 0) {
		if (!key || !value)
			continue;
		if (key[0] == 'T')
			iscsi_neg_set_target(&n, key + 1, value);
		if (iscsi_neg_key(&n, key, value, out, sizeof(out)) == 1) {
			/* the answer must be a string that fits */
			if (memchr(out, '\0', sizeof(out)) == NULL)
				__builtin_trap();
			iscsi_text_add(rsp, sizeof(rsp), &rsp_off, key, out);
		}
	}
	iscsi_neg_declare(&n, rsp, sizeof(rsp), &rsp_off);
	iscsi_neg_finish(&n);
	if (rsp_off > sizeof(rsp) ||
	    n.result[KEY_FIRST_BURST_LENGTH] > n.result[KEY_MAX_BURST_LENGTH])
		__builtin_trap();
	return 0;
}
