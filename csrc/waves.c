/*
 * waves.c - the workers of a freeze run: one batch per wave, at most
 * max_threads threads each, every thread claiming the next mount of its
 * wave (under run->lock) and making its FIFREEZE or FITHAW (without it).
 * What each ioctl returned is recorded per mount and judged in Python.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "guardian_proto.h"
#include "run.h"
#include "vmsprobe.h"

#include <errno.h>
#include <linux/fs.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>

/*
 * ioctl(fd, req, 0), retried on EINTR.  Returns 0 or the errno; *ns gets the
 * time spent.  Blocks for as long as the ioctl does.
 */
int run_timed_ioctl(int fd, unsigned long req, int64_t *ns)
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

	err = run_timed_ioctl(m->fd, FITHAW, &ns);
	/*
	 * Whatever the errno (Python judges it), the mount counts as thawed:
	 * one FITHAW per freeze of ours, since retrying could thaw a freeze
	 * that is not ours.
	 */
	pthread_mutex_lock(&run->lock);
	m->thaw_ns = ns;
	m->thaw_errno = err;
	m->state = VMS_THAWED;
	m->thawed_by_watchdog = by_watchdog;
	pthread_cond_broadcast(&run->cond);
	pthread_mutex_unlock(&run->lock);
	run_note(run, NOTE_RELEASED, i, err);
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
	if (run_note(run, NOTE_INTENT, i, before) < 0)
		err = errno;
	else
		err = run_timed_ioctl(m->fd, FIFREEZE, &ns);

	pthread_mutex_lock(&run->lock);
	m->freeze_ns = ns;
	m->freeze_errno = err;
	if (err) {
		/* Not frozen by us (whatever the errno means: Python judges
		 * it), so never thawed by us. */
		m->state = VMS_FAILED;
	} else {
		/* Late freeze: the watchdog fired (or vms_thaw ran) while we
		 * were blocked, so nobody else will thaw it: now. */
		late = ending_locked(run);
		m->state = late ? VMS_THAWING : VMS_FROZEN;
		if (!late) {
			/* Under the lock: vms_thaw reads probe_on. */
			probe_go(&run->probe[i]);
			run->probe_on[i] = 1;
		}
	}
	pthread_cond_broadcast(&run->cond);
	pthread_mutex_unlock(&run->lock);
	run_note(run, err ? NOTE_NOT_OURS : NOTE_FROZEN, i, err);
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

	if (b->op == OP_FREEZE && ending_locked(run))
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
void run_batch(struct vms_run *run, struct batch *b)
{
	int from = b->op == OP_FREEZE ? VMS_PENDING : VMS_FROZEN;
	int cap, want, started = 0, err = 0;
	size_t i, k;

	pthread_mutex_lock(&run->lock);
	k = count_locked(run, b->wave, from);
	cap = b->op == OP_THAW ? run->thaw_threads : run->max_threads;
	want = k < (size_t)cap ? (int)k : cap;
	b->active = want;
	run->refs += want;
	pthread_mutex_unlock(&run->lock);
	for (; started < want; started++) {
		err = run_spawn_thread(NULL, 1, batch_worker, b, WORKER_STACK);
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
	while (b->active > 0 && !(b->op == OP_FREEZE && ending_locked(run)))
		pthread_cond_wait(&run->cond, &run->lock);
	pthread_mutex_unlock(&run->lock);
}

/* Thaw every mount still FROZEN, highest wave first. */
void run_thaw_all(struct vms_run *run, int by_watchdog)
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
