/*
 * run.h - private to the C core: a freeze run's state, shared by the run's
 * life cycle and watchdog (vmsfreeze.c) and its waves of FIFREEZE/FITHAW
 * workers (waves.c).  Not part of the cffi API.
 */
#ifndef VMS_RUN_H
#define VMS_RUN_H

#include "vmsfreeze.h"
#include "vmsprobe.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/*
 * Why a cap on threads: a host with hundreds of mounts would otherwise
 * start hundreds of threads (stacks, kernel tasks) at the most delicate
 * moment.  Its value (VMS_DEFAULT_THREADS) comes from the bench: dirty
 * data makes the disk the limit whatever the cap, but clean filesystems
 * are latency-bound and kept gaining up to 64 threads.
 */
#define WORKER_STACK	(256 * 1024)
/*
 * The thaw's own cap, per online CPU: FITHAW blocks only for a superblock
 * write, so past a few threads per CPU the threads' start and wake-ups
 * cost more than they overlap.  64 clean ext4 on 2 CPUs (bench, median
 * of 15, interleaved): 64 threads 10.2 ms, 32 9.3, 16 7.0, 8 7.8.
 */
#define THAW_THREADS_PER_CPU	8
#define PREPROBE_MS	100	/* how long "not frozen yet" may take */
#define PROBE_DRAIN_MS	1000	/* vms_thaw waits this long for probes */
#define NS_PER_SEC	1000000000LL

enum batch_op { OP_FREEZE, OP_THAW };

struct vms_run;

/* One wave's work for a set of threads; see run_batch(). */
struct batch {
	struct vms_run *run;
	int op;			/* enum batch_op */
	int wave;
	int by_watchdog;	/* OP_THAW: mark what it thaws */
	int active;		/* threads still working on it */
};

/*
 * The run's life; it only moves forward (PREPARED -> RUNNING -> ENDING ->
 * FIRED -> THAWED, any step but the first may be skipped).  From ENDING
 * on, no FIFREEZE starts and one that returns late thaws its mount at once.
 */
enum run_phase {
	PH_PREPARED,	/* vms_prepare: nothing frozen, no thread */
	PH_RUNNING,	/* vms_start: waves freeze, the watchdog waits */
	PH_ENDING,	/* told to end early: the watchdog fires now */
	PH_FIRED,	/* the watchdog thaws (thawed) what the run froze */
	PH_THAWED	/* vms_thaw took over: the watchdog ends or ended */
};

/* Why the run left RUNNING before vms_thaw; the first reason stays. */
enum run_cause {
	WHY_NONE,
	WHY_DEADLINE,	/* the watchdog's deadline passed */
	WHY_GUARDIAN,	/* the guardian went away */
	WHY_ABORT,	/* vms_abort (a signal): not a timeout */
	WHY_FREE	/* vms_free without vms_thaw */
};

/* Who owns the watchdog thread: it is joined or detached exactly once. */
enum wd_owner {
	WD_UNSTARTED,	/* vms_start not called */
	WD_NONE,	/* vms_start could not start it */
	WD_RUNNING,	/* to be joined (vms_thaw) or detached (vms_free) */
	WD_CLAIMED	/* joined or detached */
};

struct vms_run {
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* mount states, batch ends, phase */
	int refs;
	size_t n;
	struct vms_mount *m;	/* private copy; m[i].fd is our dup or -1 */
	int *user_fd;		/* the caller's fd numbers, for vms_status */
	int *waves;		/* distinct waves, ascending */
	size_t nwaves;
	int max_threads;
	int thaw_threads;	/* max_threads, or less by THAW_THREADS_PER_CPU */
	int notify_fd;		/* our dup of the guardian socket, or -1 */
	int wake_fd;		/* eventfd waking the watchdog */
	int64_t start_ns;
	int64_t deadline_ns;
	int64_t fired_after_ns;	/* -1 unless the watchdog fired */
	int64_t timeout_ms;
	struct vms_probe *probe;	/* per mount */
	int *probe_on;		/* per mount: 1 once probe_go was sent */
	int64_t *claim_ns;	/* per mount: when our thaw claimed it */
	enum run_phase phase;
	enum run_cause why;
	int guardian_lost;	/* a fact to report, whatever the phase */
	int wd_thawing;		/* the watchdog fired and is still thawing */
	enum wd_owner wd_owner;
	pthread_t wd;
	struct batch fb;	/* the freeze batch; may be abandoned */
};

static inline int64_t now_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* No FIFREEZE may start any more.  Lock held. */
static inline int ending_locked(const struct vms_run *run)
{
	return run->phase >= PH_ENDING;
}

/* vmsfreeze.c */
int run_spawn_thread(pthread_t *tid, int detached, void *(*fn)(void *),
		     void *arg, size_t stack);
void run_put_locked(struct vms_run *run);
void run_put(struct vms_run *run);
void skip_pending_locked(struct vms_run *run);
void guardian_lost_locked(struct vms_run *run);
int run_note(struct vms_run *run, int kind, size_t i, int32_t arg);

/* waves.c */
int run_timed_ioctl(int fd, unsigned long req, int64_t *ns);
void run_batch(struct vms_run *run, struct batch *b);
void run_thaw_all(struct vms_run *run, int by_watchdog);

#endif /* VMS_RUN_H */
