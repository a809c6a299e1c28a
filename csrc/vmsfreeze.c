/*
 * vmsfreeze.c - parallel FIFREEZE/FITHAW in dependency waves, guarded by a
 * watchdog thread whose deadline counts from the start of the freeze.
 *
 * Threads of a run:
 *  - the caller of vms_freeze(), which starts one batch per wave and waits
 *    for it (or for the watchdog);
 *  - batch workers (detached), at most max_threads per wave, each taking
 *    the next mount of its wave until none is left;
 *  - the watchdog (joined by vms_thaw), which at the deadline thaws what
 *    this run froze, highest wave first;
 *  - with a guardian, a monitor (detached) that fires the watchdog at once
 *    when the guardian's socket closes;
 *  - and, not a thread: one probe child process per mount (vmsprobe.h),
 *    which tells whether it was frozen before our FIFREEZE and when it
 *    was thawed after.
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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/*
 * Why a cap on threads: a host with hundreds of mounts would otherwise
 * start hundreds of threads (stacks, kernel tasks) at the most delicate
 * moment.  Its value (VMS_DEFAULT_THREADS) comes from the bench: dirty
 * data makes the disk the limit whatever the cap, but clean filesystems
 * are latency-bound and kept gaining up to 64 threads.
 */
#define WORKER_STACK	(256 * 1024)
#define PREPROBE_MS	100	/* how long "not frozen yet" may take */
#define PROBE_DRAIN_MS	1000	/* vms_thaw waits this long for probes */
#define NS_PER_SEC	1000000000LL

/* Records sent to the guardian (see vms_guardian_spawn). */
#define NOTE_MAGIC	0x564d5346u	/* "VMSF" */
enum note_kind {
	NOTE_START = 1,		/* freeze begins; arg = timeout_ms */
	NOTE_INTENT = 2,	/* about to FIFREEZE mount index; arg = 1 if a
				   probe found it not frozen just before */
	NOTE_FROZEN = 3,	/* FIFREEZE of index succeeded */
	NOTE_NOT_OURS = 4,	/* FIFREEZE failed: never thaw index */
	NOTE_RELEASED = 5,	/* index was thawed (FITHAW attempted) */
	NOTE_END = 6,		/* clean end: exit without thawing */
	NOTE_CHILD = 7,		/* arg = a process group to kill on EOF */
	NOTE_CHILD_GONE = 8	/* arg = that group's leader was reaped */
};

struct note {
	uint32_t magic;
	uint32_t kind;
	uint32_t index;
	int32_t arg;
};

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

struct vms_run {
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* mount states, batch ends, abort */
	pthread_cond_t wd_cond;	/* wakes the watchdog (CLOCK_MONOTONIC) */
	int refs;
	size_t n;
	struct vms_mount *m;	/* private copy; m[i].fd is our dup or -1 */
	int *user_fd;		/* the caller's fd numbers, for vms_get */
	int *waves;		/* distinct waves, ascending */
	size_t nwaves;
	int max_threads;
	int notify_fd;		/* our dup of the guardian socket, or -1 */
	int wake_fd;		/* eventfd waking the monitor, or -1 */
	int64_t start_ns;
	int64_t deadline_ns;
	int64_t fired_after_ns;
	int fired;		/* the watchdog fired (and thaws/thawed) */
	int fire_now;		/* fire before the deadline */
	int aborted;		/* vms_abort: fire now, but not a timeout */
	int started;		/* vms_start was called */
	int64_t timeout_ms;
	struct vms_probe *probe;	/* per mount */
	int *probe_on;		/* per mount: 1 once probe_go was sent */
	int64_t *claim_ns;	/* per mount: when our thaw claimed it */
	int abort;		/* no new FIFREEZE; late freezes thaw at once */
	int stop;		/* vms_thaw: the watchdog ends without firing */
	int freed;		/* vms_free was called */
	int guardian_lost;
	int wd_started;
	int wd_claimed;		/* somebody joins (or detached) the watchdog */
	pthread_t wd;
	struct batch fb;	/* the freeze batch; may be abandoned */
};

static int64_t now_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static struct timespec ns_to_ts(int64_t ns)
{
	struct timespec ts;

	ts.tv_sec = ns / NS_PER_SEC;
	ts.tv_nsec = ns % NS_PER_SEC;
	return ts;
}

/*
 * Start fn(arg) as a thread with every signal blocked, so that signals keep
 * going to the caller's threads (Python handles them in its main thread).
 * Returns 0 or the pthread error.
 */
static int spawn(pthread_t *tid, int detached, void *(*fn)(void *),
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
	if (run->wake_fd >= 0)
		close(run->wake_fd);
	pthread_cond_destroy(&run->wd_cond);
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
static void run_put_locked(struct vms_run *run)
{
	int last = --run->refs == 0;

	pthread_mutex_unlock(&run->lock);
	if (last)
		run_destroy(run);
}

static void run_put(struct vms_run *run)
{
	pthread_mutex_lock(&run->lock);
	run_put_locked(run);
}

/* Mark every mount not attempted yet as skipped.  Lock held. */
static void skip_pending_locked(struct vms_run *run)
{
	size_t i;

	for (i = 0; i < run->n; i++)
		if (run->m[i].state == VMS_PENDING)
			run->m[i].state = VMS_SKIPPED;
}

/*
 * The guardian is gone or unreachable: nothing may stay frozen without it,
 * so fire the watchdog now.  Lock held.
 */
static void guardian_lost_locked(struct vms_run *run)
{
	if (run->guardian_lost)
		return;
	run->guardian_lost = 1;
	if (!run->stop) {
		run->fire_now = 1;
		run->abort = 1;
		pthread_cond_signal(&run->wd_cond);
		pthread_cond_broadcast(&run->cond);
	}
}

/*
 * Send one record to the guardian.  Never blocks (MSG_DONTWAIT: the
 * guardian reads at once and a record is 16 bytes, so a full buffer means
 * it is stuck) and never raises SIGPIPE.  On failure the guardian counts
 * as lost.  Returns 0, or -1 with errno.
 */
static int note(struct vms_run *run, int kind, size_t i, int32_t arg)
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
 * ioctl(fd, req, 0), retried on EINTR.  Returns 0 or the errno; *ns gets the
 * time spent.  Blocks for as long as the ioctl does.
 */
static int timed_ioctl(int fd, unsigned long req, int64_t *ns)
{
	int64_t t0 = now_ns();
	int r;

	do
		r = ioctl(fd, req, 0);
	while (r < 0 && errno == EINTR);
	r = r < 0 ? errno : 0;
	*ns = now_ns() - t0;
	return r;
}

/*
 * FITHAW mount i, which the caller claimed (state THAWING).  Blocks in
 * FITHAW, which normally takes microseconds.
 */
static void thaw_one(struct vms_run *run, size_t i, int by_watchdog)
{
	struct vms_mount *m = &run->m[i];
	int64_t ns;
	int err;

	err = timed_ioctl(m->fd, FITHAW, &ns);
	/*
	 * EINVAL: it was no longer frozen (someone ran fsfreeze -u behind
	 * our back); the freeze ended all the same.  Any other errno is
	 * reported as is.  Either way the mount counts as thawed: retrying
	 * could thaw a freeze that is not ours.
	 */
	pthread_mutex_lock(&run->lock);
	m->thaw_ns = ns;
	m->thaw_errno = err;
	m->state = VMS_THAWED;
	if (err == EINVAL)
		m->thawed_early = 1;
	m->thawed_by_watchdog = by_watchdog;
	pthread_cond_broadcast(&run->cond);
	pthread_mutex_unlock(&run->lock);
	note(run, NOTE_RELEASED, i, err);
}

/*
 * FIFREEZE mount i, which the caller claimed (state FREEZING).  Blocks in
 * FIFREEZE for as long as the sync of its dirty data takes, possibly for
 * ever (a loop image on a frozen filesystem): that is what the watchdog is
 * for.  If the run was aborted meanwhile, thaws at once.
 */
static void freeze_one(struct vms_run *run, size_t i)
{
	struct vms_mount *m = &run->m[i];
	int64_t ns = 0;
	int err, late = 0, before;

	/*
	 * Was it frozen already (by somebody else)?  The guardian must know:
	 * a SIGKILL that arrives while this thread is inside FIFREEZE kills
	 * it on its return from the ioctl, so the outcome record below is
	 * never sent, and the guardian then thaws an announced freeze only
	 * if the mount was not frozen before (else it would be thawing the
	 * other freeze that made our FIFREEZE fail with EBUSY).  Residual
	 * window: another freeze that starts between the probe's pass and
	 * our FIFREEZE's own check (freeze_super() tests "already frozen"
	 * first, under s_umount) -- a pipe write, a poll wake-up and one
	 * guardian record.  Measured from the probe's return to our ioctl
	 * (20 mounts x 3 runs, 16 workers on the 2-core CI machine under
	 * load): min 10 us, median 81 us, p90 349 us, max 7 ms (scheduling
	 * delays).  Only a foreign FIFREEZE landing inside that window AND a
	 * SIGKILL of the supervisor during our FIFREEZE can still make the
	 * guardian thaw a foreign freeze.  Without a probe
	 * (fork failed) the guardian assumes "not frozen before", as it
	 * always did.  The probe child was forked by vms_prepare().
	 */
	before = probe_unfrozen(&run->probe[i], PREPROBE_MS) != 0;
	/* The guardian must know before the ioctl, or it could miss it. */
	if (note(run, NOTE_INTENT, i, before) < 0)
		err = errno;
	else
		err = timed_ioctl(m->fd, FIFREEZE, &ns);

	pthread_mutex_lock(&run->lock);
	m->freeze_ns = ns;
	switch (err) {
	case 0:
		/* Late freeze: the watchdog fired (or vms_thaw ran) while we
		 * were blocked, so nobody else will thaw it: now. */
		late = run->abort;
		m->state = late ? VMS_THAWING : VMS_FROZEN;
		if (!late) {
			/* Under the lock: vms_thaw reads probe_on. */
			probe_go(&run->probe[i]);
			run->probe_on[i] = 1;
		}
		break;
	case EBUSY:
		/* Already frozen.  The caller dedupes superblocks, so this is
		 * someone else's freeze: report it, never thaw it. */
	case EOPNOTSUPP:
		/* The filesystem has no freeze support: it cannot be frozen
		 * (the caller reports it as skipped). */
	case EPERM:
		/* FIFREEZE needs CAP_SYS_ADMIN. */
	default:
		/* EINVAL (superblock going away), EIO, a failed guardian
		 * record (EPIPE, ...): not frozen, so nothing to thaw. */
		m->state = VMS_FAILED;
		m->freeze_errno = err;
		break;
	}
	pthread_cond_broadcast(&run->cond);
	pthread_mutex_unlock(&run->lock);
	note(run, err ? NOTE_NOT_OURS : NOTE_FROZEN, i, err);
	if (late)
		thaw_one(run, i, 1);
	if (!run->probe_on[i])
		probe_release(&run->probe[i]);
}

/*
 * Claim the next mount of b's wave for b's operation and return its index,
 * or run->n if none is left.  Lock held.
 */
static size_t claim_locked(struct vms_run *run, struct batch *b)
{
	int from = b->op == OP_FREEZE ? VMS_PENDING : VMS_FROZEN;
	size_t i;

	if (b->op == OP_FREEZE && run->abort)
		return run->n;
	for (i = 0; i < run->n; i++) {
		if (run->m[i].wave != b->wave || run->m[i].state != from)
			continue;
		run->m[i].state = b->op == OP_FREEZE ? VMS_FREEZING
						     : VMS_THAWING;
		if (b->op == OP_THAW)
			run->claim_ns[i] = now_ns();
		return i;
	}
	return run->n;
}

static size_t count_locked(struct vms_run *run, int wave, int state)
{
	size_t i, k = 0;

	for (i = 0; i < run->n; i++)
		if (run->m[i].wave == wave && run->m[i].state == state)
			k++;
	return k;
}

/* Work on b until nothing is left to claim. */
static void batch_drain(struct batch *b)
{
	struct vms_run *run = b->run;
	size_t i;

	for (;;) {
		pthread_mutex_lock(&run->lock);
		i = claim_locked(run, b);
		pthread_mutex_unlock(&run->lock);
		if (i == run->n)
			return;
		if (b->op == OP_FREEZE)
			freeze_one(run, i);
		else
			thaw_one(run, i, b->by_watchdog);
	}
}

static void *batch_worker(void *arg)
{
	struct batch *b = arg;
	struct vms_run *run = b->run;

	batch_drain(b);
	/* After this section b may be gone (a thaw batch lives on its
	 * waiter's stack): touch only run, which our reference keeps. */
	pthread_mutex_lock(&run->lock);
	b->active--;
	pthread_cond_broadcast(&run->cond);
	run_put_locked(run);
	return NULL;
}

/*
 * Run one wave's batch on up to max_threads threads and wait for it.  A
 * freeze batch is abandoned when the run aborts (its workers may be stuck
 * in FIFREEZE); a thaw batch is always waited for.  Without any thread, a
 * thaw runs in the calling thread and a freeze fails its mounts.
 */
static void run_batch(struct vms_run *run, struct batch *b)
{
	int from = b->op == OP_FREEZE ? VMS_PENDING : VMS_FROZEN;
	int want, started = 0, err = 0;
	size_t i, k;

	pthread_mutex_lock(&run->lock);
	k = count_locked(run, b->wave, from);
	want = k < (size_t)run->max_threads ? (int)k : run->max_threads;
	b->active = want;
	run->refs += want;
	pthread_mutex_unlock(&run->lock);
	for (; started < want; started++) {
		err = spawn(NULL, 1, batch_worker, b, WORKER_STACK);
		if (err)
			break;
	}
	if (started < want) {
		pthread_mutex_lock(&run->lock);
		b->active -= want - started;
		run->refs -= want - started;
		pthread_mutex_unlock(&run->lock);
	}
	if (started == 0 && k > 0) {
		if (b->op == OP_THAW) {
			batch_drain(b);
		} else {
			/* Freezing inline could block past the deadline. */
			pthread_mutex_lock(&run->lock);
			for (i = 0; i < run->n; i++) {
				if (run->m[i].wave == b->wave &&
				    run->m[i].state == VMS_PENDING) {
					run->m[i].state = VMS_FAILED;
					run->m[i].freeze_errno = err;
				}
			}
			pthread_mutex_unlock(&run->lock);
		}
	}
	pthread_mutex_lock(&run->lock);
	while (b->active > 0 && !(b->op == OP_FREEZE && run->abort))
		pthread_cond_wait(&run->cond, &run->lock);
	pthread_mutex_unlock(&run->lock);
}

/* Thaw every mount still FROZEN, highest wave first. */
static void thaw_all(struct vms_run *run, int by_watchdog)
{
	struct batch b;
	size_t w;

	for (w = run->nwaves; w-- > 0;) {
		memset(&b, 0, sizeof(b));
		b.run = run;
		b.op = OP_THAW;
		b.wave = run->waves[w];
		b.by_watchdog = by_watchdog;
		run_batch(run, &b);
	}
}

/*
 * The watchdog: sleeps until the deadline (CLOCK_MONOTONIC, counted from
 * the start of vms_freeze), an early fire (guardian lost, vms_free) or
 * vms_thaw's stop.  When it fires it aborts the freeze and thaws what this
 * run froze; workers still in FIFREEZE thaw their own mount on return.
 * Blocks only in FITHAW.
 */
static void *watchdog_main(void *arg)
{
	struct vms_run *run = arg;
	struct timespec ts = ns_to_ts(run->deadline_ns);
	int64_t t;

	pthread_mutex_lock(&run->lock);
	while (!run->stop && !run->fire_now && now_ns() < run->deadline_ns)
		pthread_cond_timedwait(&run->wd_cond, &run->lock, &ts);
	if (run->stop) {
		run_put_locked(run);
		return NULL;
	}
	t = now_ns();
	/* A caller's vms_abort thaws the same way but is no timeout. */
	if (!run->aborted || run->guardian_lost || t >= run->deadline_ns) {
		run->fired = 1;
		run->fired_after_ns = t - run->start_ns;
	}
	run->abort = 1;
	skip_pending_locked(run);
	pthread_cond_broadcast(&run->cond);
	pthread_mutex_unlock(&run->lock);

	thaw_all(run, 1);
	run_put(run);
	return NULL;
}

/*
 * With a guardian: wait for its socket to close (the guardian died) and
 * then fire the watchdog at once; run->wake_fd ends the wait when the run
 * is thawed or freed.
 */
static void *monitor_main(void *arg)
{
	struct vms_run *run = arg;
	struct pollfd pfd[2];
	int r, done;

	for (;;) {
		pthread_mutex_lock(&run->lock);
		done = run->stop || run->freed || run->guardian_lost;
		pthread_mutex_unlock(&run->lock);
		if (done)
			break;
		pfd[0].fd = run->notify_fd;
		pfd[0].events = POLLIN | POLLRDHUP;
		pfd[1].fd = run->wake_fd;
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		r = poll(pfd, 2, -1);
		if ((r < 0 && errno == EINTR) || (r > 0 && !pfd[0].revents))
			continue;
		/* The guardian never writes: any event on its socket (or a
		 * poll error) means it is gone. */
		pthread_mutex_lock(&run->lock);
		guardian_lost_locked(run);
		pthread_mutex_unlock(&run->lock);
		break;
	}
	run_put(run);
	return NULL;
}

/* Wake the monitor (if any) to re-check the run's flags. */
static void wake_monitor(struct vms_run *run)
{
	uint64_t one = 1;

	if (run->wake_fd >= 0 && write(run->wake_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, it will wake. */
	}
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
	if (!err && (err = pthread_cond_init(&run->wd_cond, &ca))) {
		pthread_cond_destroy(&run->cond);
		pthread_mutex_destroy(&run->lock);
	}
	pthread_condattr_destroy(&ca);
	if (err)
		goto fail;
	run->refs = 1;
	run->n = n;
	run->notify_fd = -1;
	run->wake_fd = -1;
	run->fired_after_ns = -1;
	run->max_threads = max_threads <= 0 || max_threads > VMS_DEFAULT_THREADS
			   ? VMS_DEFAULT_THREADS : max_threads;
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
		if (run->notify_fd >= 0)
			run->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (run->notify_fd < 0 || run->wake_fd < 0) {
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
	err = run->started;
	run->started = 1;
	pthread_mutex_unlock(&run->lock);
	if (err) {
		errno = EALREADY;
		return -1;
	}
	run->start_ns = start;
	run->deadline_ns = start + run->timeout_ms * 1000000;

	pthread_mutex_lock(&run->lock);
	run->refs++;
	pthread_mutex_unlock(&run->lock);
	err = spawn(&run->wd, 0, watchdog_main, run, WORKER_STACK);
	if (err) {
		pthread_mutex_lock(&run->lock);
		run->refs--;
		skip_pending_locked(run);
		pthread_mutex_unlock(&run->lock);
		errno = err;
		return -1;
	}
	pthread_mutex_lock(&run->lock);
	run->wd_started = 1;
	pthread_mutex_unlock(&run->lock);
	if (run->notify_fd >= 0) {
		pthread_mutex_lock(&run->lock);
		run->refs++;
		pthread_mutex_unlock(&run->lock);
		err = spawn(NULL, 1, monitor_main, run, WORKER_STACK);
		if (err) {
			/* Without a monitor a dead guardian goes unnoticed:
			 * do not freeze at all. */
			pthread_mutex_lock(&run->lock);
			run->refs--;
			guardian_lost_locked(run);
			pthread_mutex_unlock(&run->lock);
		}
	}
	note(run, NOTE_START, 0, run->timeout_ms > INT32_MAX
	     ? INT32_MAX : (int32_t)run->timeout_ms);

	for (w = 0; w < run->nwaves; w++) {
		pthread_mutex_lock(&run->lock);
		err = run->abort;
		pthread_mutex_unlock(&run->lock);
		if (err)
			break;
		run->fb.wave = run->waves[w];
		run_batch(run, &run->fb);
	}
	pthread_mutex_lock(&run->lock);
	if (run->abort)
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
	r = !run->stop && !run->fired && !run->aborted;
	if (r) {
		run->aborted = 1;
		run->fire_now = 1;
		run->abort = 1;
		pthread_cond_signal(&run->wd_cond);
		pthread_cond_broadcast(&run->cond);
	}
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
	run->stop = 1;
	run->abort = 1;
	wake_monitor(run);
	skip_pending_locked(run);
	pthread_cond_signal(&run->wd_cond);
	pthread_cond_broadcast(&run->cond);
	join = run->wd_started && !run->wd_claimed;
	run->wd_claimed = 1;
	pthread_mutex_unlock(&run->lock);
	/* If the watchdog already fired, this waits for its thaws, so that
	 * the reverse wave order holds across both. */
	if (join)
		pthread_join(run->wd, NULL);

	thaw_all(run, 0);

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
		found += run->m[i].thawed_early;
		pthread_mutex_unlock(&run->lock);
	}
	return found;
}

/* Read one flag of the run under its lock. */
static int read_flag(struct vms_run *run, const int *flag)
{
	int r;

	pthread_mutex_lock(&run->lock);
	r = *flag;
	pthread_mutex_unlock(&run->lock);
	return r;
}

int vms_watchdog_fired(struct vms_run *run)
{
	return read_flag(run, &run->fired);
}

int64_t vms_watchdog_fired_after_ns(struct vms_run *run)
{
	int64_t r;

	pthread_mutex_lock(&run->lock);
	r = run->fired ? run->fired_after_ns : -1;
	pthread_mutex_unlock(&run->lock);
	return r;
}

int vms_guardian_lost(struct vms_run *run)
{
	return read_flag(run, &run->guardian_lost);
}

int vms_get(struct vms_run *run, size_t i, struct vms_mount *out)
{
	if (!run || !out || i >= run->n) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&run->lock);
	*out = run->m[i];
	out->fd = run->user_fd[i];
	pthread_mutex_unlock(&run->lock);
	return 0;
}

void vms_free(struct vms_run *run)
{
	int detach;

	if (!run)
		return;
	pthread_mutex_lock(&run->lock);
	run->freed = 1;
	wake_monitor(run);
	detach = run->wd_started && !run->wd_claimed;
	run->wd_claimed = 1;
	if (detach) {
		/* Freed without vms_thaw: thaw in the background now rather
		 * than leave the freeze to the deadline. */
		run->fire_now = 1;
		pthread_cond_signal(&run->wd_cond);
	}
	pthread_mutex_unlock(&run->lock);
	if (detach)
		pthread_detach(run->wd);
	run_put(run);
}

int vms_run_idle(struct vms_run *run)
{
	size_t i;
	int idle = 1;

	pthread_mutex_lock(&run->lock);
	for (i = 0; i < run->n; i++)
		if (run->m[i].state == VMS_FREEZING ||
		    run->m[i].state == VMS_THAWING)
			idle = 0;
	pthread_mutex_unlock(&run->lock);
	return idle;
}

int vms_thaw_fd(int fd)
{
	int64_t ns;

	return timed_ioctl(fd, FITHAW, &ns);
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

struct presync {
	pthread_mutex_t lock;
	const int *fds;
	int *errnos;
	size_t n;
	size_t next;
};

/* Take fds from the job until none is left; syncfs() blocks. */
static void *presync_worker(void *arg)
{
	struct presync *job = arg;
	size_t i;
	int r;

	for (;;) {
		pthread_mutex_lock(&job->lock);
		i = job->next < job->n ? job->next++ : job->n;
		pthread_mutex_unlock(&job->lock);
		if (i == job->n)
			return NULL;
		do
			r = syncfs(job->fds[i]);
		while (r < 0 && errno == EINTR);
		job->errnos[i] = r < 0 ? errno : 0;
	}
}

int vms_presync(const int *fds, size_t n, int max_threads, int *errnos)
{
	pthread_t tids[VMS_DEFAULT_THREADS];
	struct presync job;
	int want, started = 0, failed = 0;
	size_t i;

	if ((n && (!fds || !errnos))) {
		errno = EINVAL;
		return -1;
	}
	if (max_threads <= 0 || max_threads > VMS_DEFAULT_THREADS)
		max_threads = VMS_DEFAULT_THREADS;
	want = n < (size_t)max_threads ? (int)n : max_threads;
	job.fds = fds;
	job.errnos = errnos;
	job.n = n;
	job.next = 0;
	if (pthread_mutex_init(&job.lock, NULL)) {
		errno = ENOMEM;
		return -1;
	}
	while (started < want && !spawn(&tids[started], 0, presync_worker,
					&job, WORKER_STACK))
		started++;
	/* No thread at all: sync here, nothing is frozen yet. */
	if (started == 0)
		presync_worker(&job);
	while (started > 0)
		pthread_join(tids[--started], NULL);
	pthread_mutex_destroy(&job.lock);
	for (i = 0; i < n; i++)
		failed += errnos[i] != 0;
	return failed;
}

/*
 * The guardian (see vms_guardian_spawn).  Everything it needs is prepared
 * before fork(); after it, only async-signal-safe calls are made (the fork
 * of a multithreaded process may inherit locks held by other threads,
 * malloc's among them) and the child never returns to the caller.
 */
#define G_INTENT	0x1	/* FIFREEZE announced */
#define G_FROZEN	0x2	/* FIFREEZE succeeded */
#define G_NOT_OURS	0x4	/* FIFREEZE failed: never thaw */
#define G_RELEASED	0x8	/* thawed, by the run or by us */
#define G_UNFROZEN	0x10	/* it was not frozen just before FIFREEZE */
#define G_MAX_CHILDREN	8	/* snapshot commands of one run: one */

struct guardian {
	size_t n;
	int sock;
	int64_t grace_ms;
	int *fds;		/* the caller's mount fds, inherited */
	size_t *order;		/* mount indices, highest wave first */
	unsigned char *flags;	/* G_* per mount */
	int *keep;		/* fds to keep open, ascending, unique */
	size_t nkeep;
	int maxfd;		/* bound for closing without close_range */
	char *state_path;	/* the run's state file, or NULL */
	int thaw_failed;	/* a FITHAW failed: keep the state file */
	pid_t children[G_MAX_CHILDREN];	/* groups to kill on EOF, 0 = free */
};

static void guardian_free(struct guardian *g)
{
	free(g->fds);
	free(g->order);
	free(g->flags);
	free(g->keep);
	free(g->state_path);
	free(g);
}

/* Close fds lo..hi (inclusive); async-signal-safe. */
static void close_span(unsigned int lo, unsigned int hi, int maxfd)
{
	unsigned int fd;

#ifdef SYS_close_range
	if (syscall(SYS_close_range, lo, hi, 0) == 0)
		return;
#endif
	for (fd = lo; fd <= hi && fd <= (unsigned int)maxfd; fd++)
		close((int)fd);
}

/* Close every fd but g->keep[]; async-signal-safe. */
static void close_others(const struct guardian *g)
{
	unsigned int lo = 0;
	size_t k;

	for (k = 0; k < g->nkeep; k++) {
		if ((unsigned int)g->keep[k] > lo)
			close_span(lo, (unsigned int)g->keep[k] - 1, g->maxfd);
		lo = (unsigned int)g->keep[k] + 1;
	}
	close_span(lo, ~0U, g->maxfd);
}

/*
 * Thaw every mount announced and neither released nor failed, highest wave
 * first, confirmed freezes before merely announced ones: an announced
 * FIFREEZE may still be blocked behind a confirmed one, and its FITHAW
 * then waits for that freeze to end, which thawing the others allows.
 * A mount thawed here (or found thawed) is marked released; only an
 * announced one whose FITHAW found it not frozen (EINVAL: its FIFREEZE may
 * not have finished) stays a candidate for a later pass.  An announced,
 * unconfirmed freeze is thawed only if the run's probe found the mount not
 * frozen just before its FIFREEZE (G_UNFROZEN): otherwise that FIFREEZE
 * may have failed with EBUSY on somebody else's freeze, whose result died
 * with the supervisor.  Blocks in FITHAW.
 */
static void guardian_thaw(struct guardian *g)
{
	unsigned char f;
	size_t k, i;
	int pass, r;

	for (pass = 0; pass < 2; pass++) {
		for (k = 0; k < g->n; k++) {
			i = g->order[k];
			f = g->flags[i];
			if (!(f & G_INTENT) || (f & (G_RELEASED | G_NOT_OURS)))
				continue;
			if (((f & G_FROZEN) != 0) != (pass == 0))
				continue;
			if (!(f & G_FROZEN) && !(f & G_UNFROZEN))
				continue;
			do
				r = ioctl(g->fds[i], FITHAW, 0);
			while (r < 0 && errno == EINTR);
			if (r < 0 && errno != EINVAL)
				g->thaw_failed = 1;
			if (r == 0 || errno != EINVAL || (f & G_FROZEN))
				g->flags[i] |= G_RELEASED;
		}
	}
}

/* Remember (or forget) a process group to kill if the supervisor dies. */
static void guardian_child(struct guardian *g, int add, int32_t pgid)
{
	size_t k;

	if (pgid <= 1)
		return;
	for (k = 0; k < G_MAX_CHILDREN; k++) {
		if (add && g->children[k] == 0) {
			g->children[k] = pgid;
			return;
		}
		if (!add && g->children[k] == pgid) {
			g->children[k] = 0;
			return;
		}
	}
}

/*
 * The supervisor died: its snapshot command (a session of its own, so no
 * terminal or parent death reaches it) must not outlive the run.
 */
static void guardian_kill_children(const struct guardian *g)
{
	size_t k;

	for (k = 0; k < G_MAX_CHILDREN; k++)
		if (g->children[k] > 1)
			kill(-g->children[k], SIGKILL);
}

/* Apply one record; returns 1 on END, -1 if it makes no sense. */
static int guardian_record(struct guardian *g, const struct note *rec,
			   int64_t *deadline)
{
	static const unsigned char flag_of[] = {
		[NOTE_INTENT] = G_INTENT,
		[NOTE_FROZEN] = G_FROZEN,
		[NOTE_NOT_OURS] = G_NOT_OURS,
		[NOTE_RELEASED] = G_RELEASED,
	};

	if (rec->magic != NOTE_MAGIC)
		return -1;
	if (rec->kind == NOTE_END)
		return 1;
	if (rec->kind == NOTE_CHILD || rec->kind == NOTE_CHILD_GONE) {
		guardian_child(g, rec->kind == NOTE_CHILD, rec->arg);
		return 0;
	}
	if (rec->kind == NOTE_START) {
		*deadline = now_ns() +
			    ((int64_t)rec->arg + g->grace_ms) * 1000000;
		return 0;
	}
	if (rec->kind >= sizeof(flag_of) || !flag_of[rec->kind] ||
	    rec->index >= g->n)
		return -1;
	g->flags[rec->index] |= flag_of[rec->kind];
	if (rec->kind == NOTE_INTENT && rec->arg)
		g->flags[rec->index] |= G_UNFROZEN;
	return 0;
}

/* Become a quiet, separate process: signals, session, name, fds, OOM. */
static void guardian_detach(const struct guardian *g)
{
	static const int ignored[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT,
				       SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU,
				       SIGUSR1, SIGUSR2 };
	struct sigaction sa;
	sigset_t none;
	size_t k;
	int sig, fd;

	/* The parent's handlers are Python's: never run them here. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (sig = 1; sig < NSIG; sig++)
		sigaction(sig, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	for (k = 0; k < sizeof(ignored) / sizeof(ignored[0]); k++)
		sigaction(ignored[k], &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Out of the terminal's process group: a ^C aimed at the supervisor
	 * must not take the guardian with it. */
	setsid();
	prctl(PR_SET_NAME, "vms-guardian", 0, 0, 0);
	close_others(g);
	/* Tiny and vital: the OOM killer should take the supervisor first
	 * (its death is what the guardian is for).  Best effort; /proc is
	 * never frozen. */
	fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "-1000", 5) < 0) {
			/* not root: keep the default */
		}
		close(fd);
	}
}

/*
 * The guardian's life: read records until END (exit clean), EOF or an
 * unreadable record (thaw, exit), or the run's deadline plus grace (thaw,
 * then wait for EOF or END to retry what may have been mid-freeze).
 */
static void guardian_main(struct guardian *g)
{
	unsigned char buf[sizeof(struct note) * 64];
	int64_t deadline = -1, left;
	int status = VMS_GUARDIAN_CLEAN;
	size_t have = 0, off;
	struct pollfd pfd;
	struct note rec;
	ssize_t r;
	int timeout, end;

	guardian_detach(g);
	for (;;) {
		timeout = -1;
		if (deadline >= 0) {
			left = deadline - now_ns();
			if (left <= 0) {
				guardian_thaw(g);
				status = VMS_GUARDIAN_DEADLINE;
				deadline = -1;
				continue;
			}
			left = (left + 999999) / 1000000;
			timeout = left > INT32_MAX ? INT32_MAX : (int)left;
		}
		pfd.fd = g->sock;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, timeout) == 0)
			continue;
		r = read(g->sock, buf + have, sizeof(buf) - have);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0) {
			/* EOF: every copy of the supervisor's end is closed,
			 * so no FIFREEZE of the run is still in flight. */
			guardian_thaw(g);
			/* Everything is thawed: the state file would only make
			 * the next run ask for a recovery that has happened.
			 * It lives on /run (tmpfs), never frozen. */
			if (g->state_path && !g->thaw_failed)
				unlink(g->state_path);
			guardian_kill_children(g);
			_exit(status == VMS_GUARDIAN_CLEAN ? VMS_GUARDIAN_EOF
							   : status);
		}
		have += (size_t)r;
		for (off = 0; have - off >= sizeof(rec); off += sizeof(rec)) {
			memcpy(&rec, buf + off, sizeof(rec));
			end = guardian_record(g, &rec, &deadline);
			if (end > 0)
				_exit(status);
			if (end < 0) {
				guardian_thaw(g);
				_exit(VMS_GUARDIAN_PROTOCOL);
			}
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
}

static int cmp_size_by_wave_desc(const void *a, const void *b, void *waves)
{
	int x = ((const int *)waves)[*(const size_t *)a];
	int y = ((const int *)waves)[*(const size_t *)b];

	return (x < y) - (x > y);
}

/* Everything the guardian will need, allocated before fork. */
static struct guardian *guardian_new(const int *fds, const int *waves,
				     size_t n, int64_t grace_ms, int sock,
				     const char *state_path)
{
	struct guardian *g;
	struct rlimit rl;
	size_t i, j;

	g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->fds = calloc(n ? n : 1, sizeof(*g->fds));
	g->order = calloc(n ? n : 1, sizeof(*g->order));
	g->flags = calloc(n ? n : 1, sizeof(*g->flags));
	g->keep = calloc(n + 1, sizeof(*g->keep));
	if (state_path)
		g->state_path = strdup(state_path);
	if (!g->fds || !g->order || !g->flags || !g->keep ||
	    (state_path && !g->state_path)) {
		guardian_free(g);
		errno = ENOMEM;
		return NULL;
	}
	g->n = n;
	g->sock = sock;
	g->grace_ms = grace_ms;
	for (i = 0; i < n; i++) {
		g->fds[i] = fds[i];
		g->order[i] = i;
		g->keep[i] = fds[i];
	}
	g->keep[n] = sock;
	qsort_r(g->order, n, sizeof(*g->order), cmp_size_by_wave_desc,
		(void *)waves);
	qsort(g->keep, n + 1, sizeof(*g->keep), cmp_int);
	for (i = 0, j = 0; i < n + 1; i++)
		if (j == 0 || g->keep[j - 1] != g->keep[i])
			g->keep[j++] = g->keep[i];
	g->nkeep = j;
	g->maxfd = 65535;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
	    && rl.rlim_cur < (rlim_t)INT32_MAX)
		g->maxfd = (int)rl.rlim_cur;
	return g;
}

int vms_guardian_spawn(const int *fds, const int *waves, size_t n,
		       int64_t grace_ms, const char *state_path, int *sock)
{
	struct guardian *g;
	struct stat st;
	int sv[2], err;
	pid_t pid;
	size_t i;

	if ((n && (!fds || !waves)) || !sock || grace_ms < 0 ||
	    grace_ms > INT32_MAX || n > UINT32_MAX) {
		errno = EINVAL;
		return -1;
	}
	/* Every fd must be open now: the guardian keeps them by number. */
	for (i = 0; i < n; i++)
		if (fstat(fds[i], &st) < 0)
			return -1;
	/* A stream socket, not a pipe: no SIGPIPE (MSG_NOSIGNAL), and the
	 * supervisor can poll its end for the guardian's death. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	g = guardian_new(fds, waves, n, grace_ms, sv[1], state_path);
	if (!g) {
		err = errno;
		goto fail;
	}
	pid = fork();
	if (pid == 0)
		guardian_main(g);	/* never returns */
	err = errno;
	guardian_free(g);
	if (pid < 0)
		goto fail;
	close(sv[1]);
	*sock = sv[0];
	return (int)pid;

fail:
	close(sv[0]);
	close(sv[1]);
	errno = err;
	return -1;
}

static int guardian_send(int sock, uint32_t kind, int32_t arg)
{
	struct note rec = { NOTE_MAGIC, kind, 0, arg };
	ssize_t r;

	do
		r = send(sock, &rec, sizeof(rec), MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r == (ssize_t)sizeof(rec))
		return 0;
	if (r >= 0)
		errno = EIO;
	return -1;
}

int vms_guardian_end(int sock)
{
	return guardian_send(sock, NOTE_END, 0);
}

int vms_guardian_child(int sock, int pgid, int gone)
{
	if (pgid <= 1) {
		errno = EINVAL;
		return -1;
	}
	return guardian_send(sock, gone ? NOTE_CHILD_GONE : NOTE_CHILD, pgid);
}
