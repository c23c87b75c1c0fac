/* Checksums of the serial protocol (PROTOCOL.md): CRC-8/SMBUS for the header, CRC-32/ISO-HDLC for frames. */
#ifndef HIL_CRC_H
#define HIL_CRC_H

#include <stddef.h>
#include <stdint.h>

/* CRC-8/SMBUS: poly 0x07, init 0x00, no reflection, no final xor. */
uint8_t hil_crc8(const uint8_t *data, size_t n);

/* CRC-32/ISO-HDLC, chained like zlib.crc32(data, crc): start with crc = 0, pass the previous result to
 * continue. Lets a reply be checksummed piece by piece while it is written, without a TX frame buffer. */
uint32_t hil_crc32_update(uint32_t crc, const uint8_t *data, size_t n);

#endif
