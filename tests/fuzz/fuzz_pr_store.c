/* fuzz_pr_store.c - libFuzzer harness for the reservation state parser
 * (target/scsi/scsi_pr_store.c).  Its input is a state file, or on an RBD
 * LUN the image's metadata key holdfast.pr, which any client allowed to
 * open the image can set.  Whatever it accepts must be a consistent
 * state: non-zero keys, at most one holder (none for the all-registrants
 * types, none without a reservation), a valid type, and initiator names
 * that are NUL-terminated. */
#define SCSI_PR_INTERNAL
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_internal.h"
#include "scsi_pr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct scsi_lun lun;
	struct scsi_pr pr;
	unsigned holders = 0;

	memset(&pr, 0, sizeof(pr));
	pr.lun = &lun;
	if (scsi_pr_store_parse(&pr, (const char *)data, size) == 0) {
		if (pr.nregs > pr.cap)
			__builtin_trap();
		for (unsigned i = 0; i < pr.nregs; i++) {
			if (!pr.regs[i].key ||
			    !memchr(pr.regs[i].iname, 0,
				    sizeof(pr.regs[i].iname)))
				__builtin_trap();
			holders += pr.regs[i].holder;
		}
		if (pr.reserved && (!pr.type || pr.type > PR_TYPE_EA_AR))
			__builtin_trap();
		if (holders > (pr.reserved && !scsi_pr_type_all_regs(pr.type)))
			__builtin_trap();
	}
	free(pr.regs);
	return 0;
}
