/*
 * vmsprobe.h - private to the C core (not part of the cffi API): the
 * thaw probe, a child process that tells whether a mount is frozen.
 *
 * Why a child process and not a thread: the probe sleeps uninterruptibly
 * (in sb_start_write) while the mount is frozen, and a thread doing so
 * keeps the whole supervisor from exiting, even on SIGKILL -- and with it
 * every fd it holds, the guardian's socket among them, so the guardian
 * would wait for an EOF that never comes while the probe waits for a thaw
 * that only the guardian would do.  A child keeps only the mount fd and
 * its two pipes (it closes everything else first), so a stuck probe
 * delays nobody.
 */
#ifndef VMSPROBE_H
#define VMSPROBE_H

#include <stdint.h>
#include <sys/types.h>

struct vms_probe {
	pid_t pid;	/* 0: none */
	int ctl;	/* our end: one byte = "watch for a thaw", EOF = exit */
	int res;	/* our end: the child's records */
	int done;	/* its last record was read */
	int idle;	/* set to SCHED_IDLE by probe_set_idle */
};

/* CLOCK_MONOTONIC now, in ns: comparable across processes. */
int64_t probe_now_ns(void);

void probe_init(struct vms_probe *p);

/*
 * Fork the probe of fd (before the freeze: forking a big process takes
 * a fraction of a millisecond that the freeze itself should not pay).
 * Returns 0, or -1 with errno (no probe: p stays empty).  Never blocks.
 */
int probe_spawn(struct vms_probe *p, int fd);

/*
 * Just before our FIFREEZE: have the probe pass once and wait up to
 * wait_ms for it.  Returns 1 if it passed (the mount was not frozen), 0 if
 * not within wait_ms (frozen, by somebody else since we have not frozen
 * it yet, or its root directory is locked by a stuck operation), -1 if
 * there is no probe.  Blocks up to wait_ms.
 */
int probe_unfrozen(struct vms_probe *p, int wait_ms);

/* Our FIFREEZE succeeded: the probe now waits for the next thaw. */
void probe_go(struct vms_probe *p);

/*
 * idle=1: the probe runs only on a CPU nobody else wants (SCHED_IDLE),
 * idle=0: back to the normal policy.  Our thaw wakes every probe at once:
 * 64 woken children on 2 CPUs took the CPUs from the FITHAW workers (a
 * thaw of 64 filesystems took 30 ms instead of 5).  Returns 0 or an
 * errno; ESRCH (the probe is gone) is 0.  The caller keeps the probe
 * from being released meanwhile (the run's lock, with probe_on set).
 */
int probe_set_idle(struct vms_probe *p, int idle);

/*
 * Our thaw was claimed at claim_ns: wait until deadline_ns for the
 * probe's second pass.  Returns 1 if it passed before claim_ns (somebody
 * else thawed the mount), 0 otherwise (also when it did not report).
 */
int probe_thawed_before(struct vms_probe *p, int64_t claim_ns,
			int64_t deadline_ns);

/* Close our ends (the child exits once it is not frozen) and reap it if
 * it is gone already.  Never blocks. */
void probe_release(struct vms_probe *p);

#endif /* VMSPROBE_H */
