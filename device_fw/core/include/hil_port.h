/* What a port (host, qemu, esp32s3) provides to the shared core. Each port is one small file. */
#ifndef HIL_PORT_H
#define HIL_PORT_H

#include <stddef.h>
#include <stdint.h>

/* timeout_us of hil_port_read_timeout(): wait until input arrives, however long that takes. */
#define HIL_PORT_FOREVER 0xFFFFFFFFu

/* Waits at most timeout_us for input and returns as soon as any has arrived: the number of bytes read (1..max),
 * 0 when the time ran out with nothing received, -1 at end of input (the host side closed the port). The core
 * uses the timeout to drop a frame cut short by silence on the line (PROTOCOL.md "Receiving and
 * resynchronizing"); a port must honour it to within a few milliseconds. */
int hil_port_read_timeout(uint8_t *buf, size_t max, uint32_t timeout_us);
/* Writes all n bytes. The protocol and the device's console text share this channel (as on a UART): the core
 * never writes text between the bytes of one frame. */
void hil_port_write(const uint8_t *buf, size_t n);
void hil_port_flush(void);

uint64_t hil_port_cycles(void);      /* free-running cycle counter */
uint32_t hil_port_clock_hz(void);    /* rate of hil_port_cycles() */
uint64_t hil_port_time_us(void);     /* microsecond timer, 0 where the port has none */
int hil_port_cycles_deterministic(void);
void hil_port_marker(int on);        /* GPIO marker for the power analyzer; no-op where absent */
const char *hil_port_name(void);
/* Which kernels the firmware was built with, for INFO: "kernels portable", or on the ESP32-S3 with
 * CONFIG_HIL_USE_ESP_NN "kernels esp-nn <version>" (the portable kernels stay the fallback). */
const char *hil_port_kernels(void);

#endif
