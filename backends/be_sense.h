/* be_sense.h - reading a SCSI device's sense data into struct be_sense
 * (backend.h), for the stores that talk to one (the gateway). */
#ifndef HOLDFAST_BE_SENSE_H
#define HOLDFAST_BE_SENSE_H

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

#endif
