/* mgmt.h - the management socket (tgtd's protocol, ../shared/docs/tgtadm-wire.md).
 *
 * Runs on its own thread; changes the target table while reactors serve
 * I/O. */
#ifndef HOLDFAST_MGMT_H
#define HOLDFAST_MGMT_H

/* Bind <base>.<control_port> (base from TGT_IPC_SOCKET or
 * /var/run/tgtd/socket) and start the management thread.  0 / -errno with
 * a message logged. */
int mgmt_start(int control_port);
void mgmt_stop(void);

/* Set by mgmt when a client asks the daemon to exit (--op delete --mode
 * system); the main loop polls it. */
int mgmt_exit_requested(void);

#endif
