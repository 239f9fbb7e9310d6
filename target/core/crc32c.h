/* crc32c.h - CRC32C (Castagnoli), shared by the iSCSI digests (RFC 7143
 * 13.1) and the checksums of on-disk metadata (the dirty bitmap sidecar). */
#ifndef HOLDFAST_CRC32C_H
#define HOLDFAST_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC32C over buf: pass 0 to start.  Thread safe. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif
