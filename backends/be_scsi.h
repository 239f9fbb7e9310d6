/* be_scsi.h - reading what a SCSI device answers (its sense data, its GET
 * LBA STATUS parameter data) into backend.h's terms, for the stores that
 * talk to one (the gateway).  Pure functions of the bytes received:
 * unit tested (tests/unit/test_be_scsi.c) and fuzzed
 * (tests/fuzz/fuzz_be_scsi.c). */
#ifndef HOLDFAST_BE_SCSI_H
#define HOLDFAST_BE_SCSI_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Parse sense data (SPC-4 4.5: fixed format 70h, descriptor format 72h)
 * of len bytes.  0 with *out filled, or -EINVAL (and *out zeroed) when
 * it is no current error with a sense key: deferred errors (71h/73h)
 * describe an earlier command, vendor formats nothing we can repeat.
 * Fields the data is too short for, or does not mark valid, stay
 * unset; nothing past len is read. */
int be_sense_parse(const uint8_t *b, size_t len, struct be_sense *out);

/* GET LBA STATUS parameter data (SBC-3 5.16.2) of size bytes, the answer
 * to the question about [off, off + *len) in bs-byte blocks (off a
 * multiple of bs).  Returns 1 mapped / 0 deallocated for the first
 * descriptor, with *len cut to its extent (> 0), and the descriptors
 * that continue it in ext[0 .. *ext_n) (at most ext_max, each starting
 * where the one before ends, the last cut at off + the original *len);
 * a first descriptor that is not about off is answered as one mapped
 * block.  -EREMOTEIO when the data holds no descriptor.  Only the
 * descriptors both announced (PARAMETER DATA LENGTH) and received are
 * read. */
int be_gls_parse(const uint8_t *d, size_t size, uint32_t bs, uint64_t off,
		 uint64_t *len, struct be_extent *ext, uint16_t ext_max,
		 uint16_t *ext_n);

#endif
