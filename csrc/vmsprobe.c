/*
 * vmsprobe.c - the thaw probe (see vmsprobe.h).
 *
 * The probe is unlinkat(fd, NAME, 0) with NAME longer than any filesystem
 * allows (300 bytes > NAME_MAX): do_unlinkat() calls mnt_want_write(),
 * which sleeps in sb_start_write() while the superblock is frozen, then
 * locks the directory and fails in the filesystem's lookup with
 * ENAMETOOLONG.  It never removes anything and does no I/O.  (A stuck
 * operation holding the mount root's directory lock also holds it back:
 * that reads as "frozen", the cautious answer.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "vmsprobe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROBE_NAME_LEN	300

enum { REC_BEFORE = 1, REC_AFTER = 2 };

struct probe_rec {
	int32_t kind;
	int32_t err;	/* errno of the unlinkat */
	int64_t ns;	/* probe_now_ns() when it returned */
};

int64_t probe_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void probe_init(struct vms_probe *p)
{
	p->pid = 0;
	p->ctl = -1;
	p->res = -1;
	p->done = 0;
	p->idle = 0;
}

/* Close every fd but keep[0..3), which are sorted; async-signal-safe. */
static void close_all_but(const int keep[3])
{
	unsigned int lo = 0;
	int k;

	for (k = 0; k < 3; k++) {
		if ((unsigned int)keep[k] > lo)
			syscall(SYS_close_range, lo, (unsigned int)keep[k] - 1,
				0);
		lo = (unsigned int)keep[k] + 1;
	}
	syscall(SYS_close_range, lo, ~0U, 0);
}

/* One pass: returns when the mount is not frozen.  Async-signal-safe. */
static void pass(int fd, int res, int kind, const char *name)
{
	struct probe_rec rec;
	int r;

	r = unlinkat(fd, name, 0);
	rec.kind = kind;
	rec.err = r < 0 ? errno : 0;
	rec.ns = probe_now_ns();
	if (write(res, &rec, sizeof(rec)) < 0) {
		/* the supervisor is gone: nobody to tell */
	}
}

/*
 * The child: only async-signal-safe calls (forked from a threaded
 * process).  It waits for 'p' (pass now, and say so), then for 'g' (our
 * freeze is in place: pass when it is thawed); EOF ends it.
 */
static void probe_child(int fd, int ctl, int res, const char *name)
{
	int keep[3] = { fd, ctl, res }, t, i, j;
	char c;
	sigset_t all;

	for (i = 0; i < 3; i++)
		for (j = i + 1; j < 3; j++)
			if (keep[j] < keep[i]) {
				t = keep[i];
				keep[i] = keep[j];
				keep[j] = t;
			}
	/* No handler of the parent's may run here; SIGPIPE -> EPIPE. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	close_all_but(keep);
	if (read(ctl, &c, 1) == 1 && c == 'p')
		pass(fd, res, REC_BEFORE, name);
	if (read(ctl, &c, 1) == 1 && c == 'g')
		pass(fd, res, REC_AFTER, name);
	_exit(0);
}

/* Read one record of kind from res until deadline_ns; 1 if read. */
static int read_rec(int res, int kind, int64_t deadline_ns,
		    struct probe_rec *rec)
{
	struct pollfd pfd;
	int64_t left;
	ssize_t r;

	for (;;) {
		left = deadline_ns - probe_now_ns();
		if (left < 0)
			left = 0;
		pfd.fd = res;
		pfd.events = POLLIN;
		pfd.revents = 0;
		r = poll(&pfd, 1, (int)((left + 999999) / 1000000));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		do
			r = read(res, rec, sizeof(*rec));
		while (r < 0 && errno == EINTR);
		if (r != (ssize_t)sizeof(*rec))
			return 0;	/* EOF: the child is gone */
		if (rec->kind == kind)
			return 1;
	}
}

static int passed(const struct probe_rec *rec)
{
	/* Any other errno (EROFS, ...) did not go through the freeze. */
	return rec->err == ENAMETOOLONG || rec->err == ENOENT;
}

int probe_spawn(struct vms_probe *p, int fd)
{
	char name[PROBE_NAME_LEN + 1];
	int ctl[2], res[2], err;
	pid_t pid;

	memset(name, 'v', PROBE_NAME_LEN);
	name[PROBE_NAME_LEN] = '\0';
	if (pipe2(ctl, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(res, O_CLOEXEC) < 0) {
		err = errno;
		close(ctl[0]);
		close(ctl[1]);
		errno = err;
		return -1;
	}
	pid = fork();
	if (pid == 0)
		probe_child(fd, ctl[0], res[1], name);
	err = errno;
	close(ctl[0]);
	close(res[1]);
	if (pid < 0) {
		close(ctl[1]);
		close(res[0]);
		errno = err;
		return -1;
	}
	p->pid = pid;
	p->ctl = ctl[1];
	p->res = res[0];
	return 0;
}

static int command(struct vms_probe *p, const char *c)
{
	ssize_t r;

	if (p->ctl < 0)
		return -1;
	do
		r = write(p->ctl, c, 1);
	while (r < 0 && errno == EINTR);
	return r == 1 ? 0 : -1;
}

int probe_unfrozen(struct vms_probe *p, int wait_ms)
{
	struct probe_rec rec;

	if (command(p, "p") < 0)
		return -1;
	return read_rec(p->res, REC_BEFORE,
			probe_now_ns() + (int64_t)wait_ms * 1000000, &rec) &&
	       passed(&rec);
}

void probe_go(struct vms_probe *p)
{
	/* Fails only if the child is gone: no thaw will be seen then. */
	(void)command(p, "g");
}

int probe_set_idle(struct vms_probe *p, int idle)
{
	struct sched_param sp;

	if (p->pid <= 0 || p->done || p->idle == idle)
		return 0;
	memset(&sp, 0, sizeof(sp));
	if (sched_setscheduler(p->pid, idle ? SCHED_IDLE : SCHED_OTHER,
			       &sp) == 0) {
		p->idle = idle;
		return 0;
	}
	return errno == ESRCH ? 0 : errno;
}

int probe_thawed_before(struct vms_probe *p, int64_t claim_ns,
			int64_t deadline_ns)
{
	struct probe_rec rec;

	if (p->res < 0 || !read_rec(p->res, REC_AFTER, deadline_ns, &rec))
		return 0;
	p->done = 1;
	return passed(&rec) && rec.ns < claim_ns;
}

void probe_release(struct vms_probe *p)
{
	(void)probe_set_idle(p, 0);	/* a thaw without vms_collect */
	if (p->ctl >= 0)
		close(p->ctl);
	if (p->res >= 0)
		close(p->res);
	p->ctl = p->res = -1;
	/* One that sent its last record is exiting: reaped (it takes a
	 * fraction of a millisecond; vms_collect runs after the thaw).  Any
	 * other may wait on a foreign freeze for ever: reaped only if gone
	 * already, else left as a zombie that init reaps after we exit. */
	if (p->pid > 0)
		while (waitpid(p->pid, NULL, p->done ? 0 : WNOHANG) < 0 &&
		       errno == EINTR)
			;
	p->pid = 0;
	p->done = 0;
	p->idle = 0;
}
