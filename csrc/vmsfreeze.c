/*
 * vmsfreeze.c - a freeze run's life (vms_prepare .. vms_free), its
 * watchdog and its records to the guardian.  The waves of FIFREEZE/FITHAW
 * workers are in waves.c, the guardian process in guardian.c; the run's
 * private state is in run.h.
 *
 * Threads of a run:
 *  - the caller of vms_freeze(), which starts one batch per wave and waits
 *    for it (or for the watchdog);
 *  - batch workers (detached, waves.c), at most max_threads per wave, each
 *    taking the next mount of its wave until none is left;
 *  - the watchdog (joined by vms_thaw), which polls an eventfd (its
 *    wake-up) and the guardian's socket until the deadline, and then, or
 *    at once when the guardian goes away, thaws what this run froze,
 *    highest wave first;
 *  - and, not a thread: one probe child process per mount (vmsprobe.h),
 *    which tells whether it was frozen before our FIFREEZE and when it
 *    was thawed after.
 *
 * The run's own life is one phase (enum run_phase), and what C records of
 * each mount is its state and the errno of each FIFREEZE/FITHAW: what an
 * errno means is decided once, in Python (vmsnapshot/freeze/errnos.py).
 *
 * Every per-mount state change happens under run->lock, and a mount moves
 * FROZEN -> THAWING exactly once, by whoever claims it: that is what makes
 * "never thaw twice" hold.  No ioctl is made with the lock held.  Every
 * thread that may outlive a call holds a reference on the run, so a worker
 * stuck in FIFREEZE never uses freed memory or a reused fd number.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "vmsfreeze.h"
#include "guardian_proto.h"
#include "run.h"
#include "vmsprobe.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * Start fn(arg) as a thread with every signal blocked, so that signals keep
 * going to the caller's threads (Python handles them in its main thread).
 * Returns 0 or the pthread error.
 */
int run_spawn_thread(pthread_t *tid, int detached, void *(*fn)(void *),
		 void *arg, size_t stack)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t dummy;
	int err;

	err = pthread_attr_init(&attr);
	if (err)
		return err;
	/* A smaller stack is only an optimisation: ignore a refusal. */
	(void)pthread_attr_setstacksize(&attr, stack);
	if (detached)
		(void)pthread_attr_setdetachstate(&attr,
						  PTHREAD_CREATE_DETACHED);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(tid ? tid : &dummy, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return err;
}

static void run_destroy(struct vms_run *run)
{
	size_t i;

	for (i = 0; i < run->n; i++) {
		probe_release(&run->probe[i]);
		if (run->m[i].fd >= 0)
			close(run->m[i].fd);
	}
	if (run->notify_fd >= 0)
		close(run->notify_fd);
	close(run->wake_fd);
	pthread_cond_destroy(&run->cond);
	pthread_mutex_destroy(&run->lock);
	free(run->claim_ns);
	free(run->probe_on);
	free(run->probe);
	free(run->waves);
	free(run->user_fd);
	free(run->m);
	free(run);
}

/* Drop a reference taken with the lock held; the last one frees. */
void run_put_locked(struct vms_run *run)
{
	int last = --run->refs == 0;

	pthread_mutex_unlock(&run->lock);
	if (last)
		run_destroy(run);
}

void run_put(struct vms_run *run)
{
	pthread_mutex_lock(&run->lock);
	run_put_locked(run);
}

/* Mark every mount not attempted yet as skipped.  Lock held. */
void skip_pending_locked(struct vms_run *run)
{
	size_t i;

	for (i = 0; i < run->n; i++)
		if (run->m[i].state == VMS_PENDING)
			run->m[i].state = VMS_SKIPPED;
}

/* Wake the watchdog to look at the phase again.  Never blocks. */
static void wake_watchdog(struct vms_run *run)
{
	uint64_t one = 1;

	if (write(run->wake_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, it will wake. */
	}
}

/*
 * Have the watchdog fire now, before its deadline, for reason why.
 * Returns 1, or 0 if the run was already ending (or over).  Lock held.
 */
static int end_early_locked(struct vms_run *run, enum run_cause why)
{
	if (run->phase >= PH_ENDING)
		return 0;
	run->phase = PH_ENDING;
	if (run->why == WHY_NONE)
		run->why = why;
	wake_watchdog(run);
	pthread_cond_broadcast(&run->cond);
	return 1;
}

/*
 * The guardian is gone or unreachable: nothing may stay frozen without it,
 * so fire the watchdog now.  Lock held.
 */
void guardian_lost_locked(struct vms_run *run)
{
	run->guardian_lost = 1;
	(void)end_early_locked(run, WHY_GUARDIAN);
}

/*
 * Send one record to the guardian.  Never blocks (MSG_DONTWAIT: the
 * guardian reads at once and a record is 16 bytes, so a full buffer means
 * it is stuck) and never raises SIGPIPE.  On failure the guardian counts
 * as lost.  Returns 0, or -1 with errno.
 */
int run_note(struct vms_run *run, int kind, size_t i, int32_t arg)
{
	struct note rec;
	ssize_t r;
	int err;

	if (run->notify_fd < 0)
		return 0;
	rec.magic = NOTE_MAGIC;
	rec.kind = (uint32_t)kind;
	rec.index = (uint32_t)i;
	rec.arg = arg;
	do
		r = send(run->notify_fd, &rec, sizeof(rec),
			 MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r == (ssize_t)sizeof(rec))
		return 0;
	/* A short send would desynchronise the stream: same as a failure. */
	err = r < 0 ? errno : EIO;
	pthread_mutex_lock(&run->lock);
	guardian_lost_locked(run);
	pthread_mutex_unlock(&run->lock);
	errno = err;
	return -1;
}

/*
 * Sleep until the deadline, vms_thaw, an early end (vms_abort, vms_free) or
 * the guardian's loss, whichever comes first, by polling the wake-up
 * eventfd and the guardian's socket (the guardian never writes: any event
 * on it means it is gone).  Lock held on entry and on return.
 */
static void watchdog_wait_locked(struct vms_run *run)
{
	struct pollfd pfd[2];
	struct timespec pause = { 0, 1000000 };
	uint64_t count;
	int64_t left;
	nfds_t nfds;
	int r, ms, err;

	while (run->phase == PH_RUNNING) {
		left = run->deadline_ns - now_ns();
		if (left <= 0)
			break;
		/* Round up: waking a little late is fine, early loops. */
		left = (left + 999999) / 1000000;
		ms = left > INT32_MAX ? INT32_MAX : (int)left;
		nfds = 1;
		pfd[0].fd = run->wake_fd;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		if (run->notify_fd >= 0 && !run->guardian_lost) {
			pfd[1].fd = run->notify_fd;
			pfd[1].events = POLLIN | POLLRDHUP;
			pfd[1].revents = 0;
			nfds = 2;
		}
		pthread_mutex_unlock(&run->lock);
		r = poll(pfd, nfds, ms);
		err = r < 0 ? errno : 0;
		if (r > 0 && pfd[0].revents &&
		    read(run->wake_fd, &count, sizeof(count)) < 0) {
			/* EAGAIN: another wake-up consumed it. */
		}
		if (r < 0 && err != EINTR && nfds == 1)
			nanosleep(&pause, NULL);	/* the deadline holds */
		pthread_mutex_lock(&run->lock);
		/* A poll error means the guardian cannot be watched: as if
		 * it were gone, nothing may stay frozen without it. */
		if (nfds == 2 && ((r > 0 && pfd[1].revents) ||
				  (r < 0 && err != EINTR)))
			guardian_lost_locked(run);
	}
}

/*
 * The watchdog: waits (see watchdog_wait_locked), and unless vms_thaw took
 * over meanwhile, fires: it ends the freeze and thaws what this run froze;
 * workers still in FIFREEZE thaw their own mount on return.  Blocks only
 * in poll() and FITHAW.
 */
static void *watchdog_main(void *arg)
{
	struct vms_run *run = arg;
	int64_t t;

	pthread_mutex_lock(&run->lock);
	watchdog_wait_locked(run);
	if (run->phase == PH_THAWED) {
		run_put_locked(run);
		return NULL;
	}
	t = now_ns();
	if (run->why == WHY_NONE)
		run->why = WHY_DEADLINE;
	/* A caller's vms_abort thaws the same way but is no timeout. */
	if (run->why != WHY_ABORT || run->guardian_lost ||
	    t >= run->deadline_ns)
		run->fired_after_ns = t - run->start_ns;
	run->phase = PH_FIRED;
	/* Not idle until its thaws are done, though no worker is in an
	 * ioctl yet: a status read now must not pass for the end. */
	run->wd_thawing = 1;
	skip_pending_locked(run);
	pthread_cond_broadcast(&run->cond);
	pthread_mutex_unlock(&run->lock);

	run_thaw_all(run, 1);
	pthread_mutex_lock(&run->lock);
	run->wd_thawing = 0;
	run_put_locked(run);
	return NULL;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/*
 * Allocate a run: copy mounts[], dup every fd (a bad fd or a non-directory
 * fails that mount only), list the distinct waves.  Returns NULL with errno
 * (ENOMEM, or a pthread init error).
 */
static struct vms_run *run_new(const struct vms_mount *mounts, size_t n,
			       int max_threads)
{
	pthread_condattr_t ca;
	struct vms_run *run;
	struct stat st;
	size_t i, j;
	long cpus;
	int err;

	run = calloc(1, sizeof(*run));
	if (!run)
		return NULL;
	err = ENOMEM;
	run->m = calloc(n ? n : 1, sizeof(*run->m));
	run->user_fd = calloc(n ? n : 1, sizeof(*run->user_fd));
	run->waves = calloc(n ? n : 1, sizeof(*run->waves));
	run->probe = calloc(n ? n : 1, sizeof(*run->probe));
	run->probe_on = calloc(n ? n : 1, sizeof(*run->probe_on));
	run->claim_ns = calloc(n ? n : 1, sizeof(*run->claim_ns));
	if (!run->m || !run->user_fd || !run->waves || !run->probe ||
	    !run->probe_on || !run->claim_ns)
		goto fail;
	for (i = 0; i < n; i++)
		probe_init(&run->probe[i]);
	err = pthread_condattr_init(&ca);
	if (err)
		goto fail;
	err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!err)
		err = pthread_mutex_init(&run->lock, NULL);
	if (!err && (err = pthread_cond_init(&run->cond, &ca)))
		pthread_mutex_destroy(&run->lock);
	pthread_condattr_destroy(&ca);
	if (err)
		goto fail;
	/* The watchdog's wake-up, made here so that it can never fail
	 * later, when something is frozen. */
	run->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (run->wake_fd < 0) {
		err = errno;
		pthread_cond_destroy(&run->cond);
		pthread_mutex_destroy(&run->lock);
		goto fail;
	}
	run->refs = 1;
	run->n = n;
	run->notify_fd = -1;
	run->fired_after_ns = -1;
	run->max_threads = max_threads <= 0 || max_threads > VMS_DEFAULT_THREADS
			   ? VMS_DEFAULT_THREADS : max_threads;
	cpus = sysconf(_SC_NPROCESSORS_ONLN);	/* -1: keep max_threads */
	run->thaw_threads = cpus > 0 && cpus * THAW_THREADS_PER_CPU <
				run->max_threads
			    ? (int)cpus * THAW_THREADS_PER_CPU
			    : run->max_threads;
	for (i = 0; i < n; i++) {
		struct vms_mount *m = &run->m[i];

		m->wave = mounts[i].wave;
		m->state = VMS_PENDING;
		run->user_fd[i] = mounts[i].fd;
		run->waves[i] = mounts[i].wave;
		/* Our own fd number: the caller's may be closed and reused
		 * while a worker is still stuck in FIFREEZE. */
		m->fd = fcntl(mounts[i].fd, F_DUPFD_CLOEXEC, 0);
		if (m->fd < 0) {
			m->state = VMS_FAILED;
			m->freeze_errno = errno;
		} else if (fstat(m->fd, &st) < 0) {
			m->state = VMS_FAILED;
			m->freeze_errno = errno;
		} else if (!S_ISDIR(st.st_mode)) {
			/* The contract is a directory fd on the mount point;
			 * anything else is a caller bug, not a mount. */
			m->state = VMS_FAILED;
			m->freeze_errno = ENOTDIR;
		}
	}
	qsort(run->waves, n, sizeof(*run->waves), cmp_int);
	for (i = 0, j = 0; i < n; i++)
		if (j == 0 || run->waves[j - 1] != run->waves[i])
			run->waves[j++] = run->waves[i];
	run->nwaves = j;
	run->fb.run = run;
	run->fb.op = OP_FREEZE;
	return run;

fail:
	free(run->claim_ns);
	free(run->probe_on);
	free(run->probe);
	free(run->waves);
	free(run->user_fd);
	free(run->m);
	free(run);
	errno = err;
	return NULL;
}

int vms_prepare(struct vms_mount *mounts, size_t n, int64_t timeout_ms,
		int max_threads, int notify_fd, struct vms_run **out)
{
	struct vms_run *run;
	size_t i;
	int err;

	if (!out || (n && !mounts) || timeout_ms <= 0 || n > UINT32_MAX) {
		errno = EINVAL;
		return -1;
	}
	*out = NULL;
	run = run_new(mounts, n, max_threads);
	if (!run)
		return -1;
	/* Like the mount fds: a late note must never reach a reused fd. */
	if (notify_fd >= 0) {
		run->notify_fd = fcntl(notify_fd, F_DUPFD_CLOEXEC, 0);
		if (run->notify_fd < 0) {
			err = errno;
			run_destroy(run);
			errno = err;
			return -1;
		}
	}
	/* Clamp so that the deadline cannot overflow. */
	if (timeout_ms > (INT64_MAX / 4) / 1000000)
		timeout_ms = (INT64_MAX / 4) / 1000000;
	run->timeout_ms = timeout_ms;
	/* The probes, before the deadline starts.  Without one, a foreign
	 * thaw is still seen by FITHAW's EINVAL. */
	for (i = 0; i < n; i++)
		if (run->m[i].state == VMS_PENDING)
			(void)probe_spawn(&run->probe[i], run->m[i].fd);
	*out = run;
	return 0;
}

int vms_start(struct vms_run *run)
{
	int64_t start = now_ns();
	size_t w;
	int err;

	if (!run) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&run->lock);
	err = run->wd_owner != WD_UNSTARTED;
	if (!err) {
		run->wd_owner = WD_NONE;
		/* A vms_abort before the start keeps the run ENDING. */
		if (run->phase == PH_PREPARED)
			run->phase = PH_RUNNING;
		run->start_ns = start;
		run->deadline_ns = start + run->timeout_ms * 1000000;
		run->refs++;
	}
	pthread_mutex_unlock(&run->lock);
	if (err) {
		errno = EALREADY;
		return -1;
	}
	err = run_spawn_thread(&run->wd, 0, watchdog_main, run, WORKER_STACK);
	pthread_mutex_lock(&run->lock);
	if (err) {
		run->refs--;
		skip_pending_locked(run);
	} else {
		run->wd_owner = WD_RUNNING;
	}
	pthread_mutex_unlock(&run->lock);
	if (err) {
		errno = err;
		return -1;
	}
	run_note(run, NOTE_START, 0, run->timeout_ms > INT32_MAX
	     ? INT32_MAX : (int32_t)run->timeout_ms);

	for (w = 0; w < run->nwaves; w++) {
		pthread_mutex_lock(&run->lock);
		err = ending_locked(run);
		pthread_mutex_unlock(&run->lock);
		if (err)
			break;
		run->fb.wave = run->waves[w];
		run_batch(run, &run->fb);
	}
	pthread_mutex_lock(&run->lock);
	if (ending_locked(run))
		skip_pending_locked(run);
	pthread_mutex_unlock(&run->lock);
	return 0;
}

int vms_freeze(struct vms_mount *mounts, size_t n, int64_t timeout_ms,
	       int max_threads, int notify_fd, struct vms_run **out)
{
	struct vms_run *run;
	int err;

	if (vms_prepare(mounts, n, timeout_ms, max_threads, notify_fd,
			&run) < 0)
		return -1;
	if (vms_start(run) < 0) {
		err = errno;
		vms_free(run);
		errno = err;
		return -1;
	}
	*out = run;
	return 0;
}

int vms_abort(struct vms_run *run)
{
	int r;

	if (!run)
		return 0;
	pthread_mutex_lock(&run->lock);
	r = end_early_locked(run, WHY_ABORT);
	pthread_mutex_unlock(&run->lock);
	return r;
}

int vms_thaw(struct vms_run *run)
{
	int join, err = 0;
	size_t i;

	if (!run)
		return EINVAL;
	pthread_mutex_lock(&run->lock);
	run->phase = PH_THAWED;
	wake_watchdog(run);
	skip_pending_locked(run);
	pthread_cond_broadcast(&run->cond);
	join = run->wd_owner == WD_RUNNING;
	if (join)
		run->wd_owner = WD_CLAIMED;
	pthread_mutex_unlock(&run->lock);
	/* If the watchdog already fired, this waits for its thaws, so that
	 * the reverse wave order holds across both. */
	if (join)
		pthread_join(run->wd, NULL);

	/* The probes our FITHAWs wake wait for vms_collect (their records
	 * only matter for a thaw before ours).  A failure costs speed only.
	 * Under the lock: only a probe_on probe is ours to touch (a worker
	 * back from a stuck FIFREEZE releases its probe otherwise). */
	pthread_mutex_lock(&run->lock);
	for (i = 0; i < run->n; i++)
		if (run->probe_on[i])
			(void)probe_set_idle(&run->probe[i], 1);
	pthread_mutex_unlock(&run->lock);
	run_thaw_all(run, 0);

	pthread_mutex_lock(&run->lock);
	for (i = 0; i < run->n && !err; i++)
		err = run->m[i].thaw_errno;
	pthread_mutex_unlock(&run->lock);
	return err;
}

int vms_collect(struct vms_run *run)
{
	int64_t limit;
	int on, early, found = 0;
	size_t i;

	if (!run)
		return 0;
	/* A probe passes as soon as its mount is thawed: one that passed
	 * before our thaw claimed the mount saw somebody else's thaw.  The
	 * wait is bounded in case a FITHAW failed. */
	pthread_mutex_lock(&run->lock);
	for (i = 0; i < run->n; i++)
		if (run->probe_on[i])
			(void)probe_set_idle(&run->probe[i], 0);
	pthread_mutex_unlock(&run->lock);
	limit = now_ns() + PROBE_DRAIN_MS * 1000000LL;
	for (i = 0; i < run->n; i++) {
		pthread_mutex_lock(&run->lock);
		on = run->probe_on[i] && run->m[i].state == VMS_THAWED;
		run->probe_on[i] = 0;
		pthread_mutex_unlock(&run->lock);
		if (!on)
			continue;
		early = probe_thawed_before(&run->probe[i], run->claim_ns[i],
					    limit);
		probe_release(&run->probe[i]);
		pthread_mutex_lock(&run->lock);
		run->m[i].thawed_early |= early;
		found += early;
		pthread_mutex_unlock(&run->lock);
	}
	return found;
}

int vms_status(struct vms_run *run, struct vms_status *out,
	       struct vms_mount *mounts, size_t n)
{
	size_t i;

	if (!run || !out || (n && !mounts)) {
		errno = EINVAL;
		return -1;
	}
	if (n > run->n)
		n = run->n;
	pthread_mutex_lock(&run->lock);
	out->fired = run->fired_after_ns >= 0;
	out->fired_after_ns = run->fired_after_ns;
	out->guardian_lost = run->guardian_lost;
	out->idle = !run->wd_thawing;
	for (i = 0; i < run->n; i++)
		if (run->m[i].state == VMS_FREEZING ||
		    run->m[i].state == VMS_THAWING)
			out->idle = 0;
	for (i = 0; i < n; i++) {
		mounts[i] = run->m[i];
		mounts[i].fd = run->user_fd[i];
	}
	out->n = n;
	pthread_mutex_unlock(&run->lock);
	return 0;
}

void vms_free(struct vms_run *run)
{
	int detach;

	if (!run)
		return;
	pthread_mutex_lock(&run->lock);
	detach = run->wd_owner == WD_RUNNING;
	if (detach) {
		run->wd_owner = WD_CLAIMED;
		/* Freed without vms_thaw: thaw in the background now rather
		 * than leave the freeze to the deadline. */
		(void)end_early_locked(run, WHY_FREE);
	}
	pthread_mutex_unlock(&run->lock);
	if (detach)
		pthread_detach(run->wd);
	run_put(run);
}

int vms_thaw_fd(int fd)
{
	int64_t ns;

	return run_timed_ioctl(fd, FITHAW, &ns);
}

#ifndef FS_IOC_GETFSUUID
struct fsuuid2 {
	uint8_t len;
	uint8_t uuid[16];
};
#define FS_IOC_GETFSUUID _IOR(0x15, 0, struct fsuuid2)
#endif
#define VMS_STATX_MNT_ID_UNIQUE 0x4000U

int vms_identity(int fd, struct vms_identity *out)
{
	struct fsuuid2 u;
	struct statx stx;

	if (!out) {
		errno = EINVAL;
		return -1;
	}
	memset(out, 0, sizeof(*out));
	memset(&stx, 0, sizeof(stx));
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
		  VMS_STATX_MNT_ID_UNIQUE, &stx) < 0)
		return -1;
	if (stx.stx_mask & VMS_STATX_MNT_ID_UNIQUE)
		out->mnt_id_unique = stx.stx_mnt_id;
	memset(&u, 0, sizeof(u));
	if (ioctl(fd, FS_IOC_GETFSUUID, &u) == 0 && u.len <= sizeof(u.uuid)) {
		out->uuid_len = u.len;
		memcpy(out->uuid, u.uuid, u.len);
	}
	return 0;
}
