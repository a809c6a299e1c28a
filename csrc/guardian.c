/*
 * guardian.c - the guardian: a tiny process (pure C, no Python) forked by
 * vms_guardian_spawn() that outlives the supervisor and thaws what a run
 * left frozen if the supervisor dies or gets stuck.  It shares only the
 * record protocol (guardian_proto.h) with the freeze run (vmsfreeze.c).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "vmsfreeze.h"
#include "guardian_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
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
