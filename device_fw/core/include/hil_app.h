/* The firmware's main loop, shared by every port: read bytes, decode frames, answer them. */
#ifndef HIL_APP_H
#define HIL_APP_H

/* Serves requests until hil_port_read_timeout() reports end of input; returns 0 then. Never returns on a port
 * whose input cannot end (a UART). */
int hil_app_run(void);

#endif
