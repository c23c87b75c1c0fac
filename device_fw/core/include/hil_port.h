/* What a port (host, qemu, esp32s3) provides to the shared core. Each port is one small file. */
#ifndef HIL_PORT_H
#define HIL_PORT_H

#include <stddef.h>
#include <stdint.h>

/* Blocks until at least one byte is available; returns the number read, 0 at end of input. */
int hil_port_read(uint8_t *buf, size_t max);
void hil_port_write(const uint8_t *buf, size_t n);
void hil_port_flush(void);

uint64_t hil_port_cycles(void);      /* free-running cycle counter */
uint32_t hil_port_clock_hz(void);    /* rate of hil_port_cycles() */
uint64_t hil_port_time_us(void);     /* microsecond timer, 0 where the port has none */
int hil_port_cycles_deterministic(void);
void hil_port_marker(int on);        /* GPIO marker for the power analyzer; no-op where absent */
const char *hil_port_name(void);

#endif
