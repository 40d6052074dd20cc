/* proc_child.h: the set-up steps a new child shares, whether the host forked
 * it (proc.c) or the fork server did (forksrv.c). Internal to src/. */
#ifndef CP_PROC_CHILD_H
#define CP_PROC_CHILD_H

/* Every signal back to its default disposition, and an empty mask. */
void cp_child_reset_signals(void);
/* Close every fd >= 3 except keep_a and keep_b (-1: none). */
void cp_child_close_fds(int keep_a, int keep_b);
/* A worker's connection: a close-on-exec stream socketpair clear of 0-2,
 * with large buffers (fewer wake-ups for big values). 0, or -1 errno. */
int  cp_child_conn_pair(int sv[2]);

#endif
