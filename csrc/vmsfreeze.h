/*
 * vmsfreeze.h - the C core of vmsnapshot: parallel FIFREEZE/FITHAW in
 * dependency waves, guarded by a watchdog thread.
 *
 * This header is the single source of truth for the C API: the cffi build
 * script (vmsnapshot/_freeze_build.py) reads the part between the cdef
 * markers as its cdef, so nothing is declared twice.
 *
 * The caller opens every mount fd before the first FIFREEZE (opening a path
 * on a frozen filesystem may block); the core never opens paths itself.
 *
 * The core records the errno of every FIFREEZE and FITHAW and judges none:
 * what each errno means (EBUSY: frozen by someone else, EOPNOTSUPP: cannot
 * freeze, ...) is decided in one place, vmsnapshot/freeze/errnos.py.
 */
#ifndef VMSFREEZE_H
#define VMSFREEZE_H

#include <stddef.h>
#include <stdint.h>

/* cdef-begin */

/* Per-mount state, written by the core. */
enum vms_state {
	VMS_PENDING = 0,	/* not attempted (yet) */
	VMS_FREEZING = 1,	/* inside FIFREEZE */
	VMS_FROZEN = 2,		/* frozen by this run */
	VMS_THAWING = 3,	/* inside FITHAW */
	VMS_THAWED = 4,		/* frozen by this run, then thawed */
	VMS_FAILED = 5,		/* FIFREEZE failed: see freeze_errno */
	VMS_SKIPPED = 6		/* never attempted: the watchdog fired first */
};

struct vms_mount {
	int fd;			/* in: O_RDONLY|O_DIRECTORY fd on the mount */
	int wave;		/* in: wave 0 freezes first and thaws last */
	int state;		/* out: enum vms_state */
	int freeze_errno;	/* out: errno of FIFREEZE (or of the fd check
				   or guardian record before it), 0 if none */
	int thaw_errno;		/* out: errno of FITHAW, 0 on success */
	int thawed_by_watchdog;	/* out: 1 if the watchdog (or the late-freeze
				   rule) thawed it rather than vms_thaw() */
	int thawed_early;	/* out: 1 if its probe saw it thawed by
				   someone else before our own thaw (see
				   vms_freeze, vms_collect) */
	int64_t freeze_ns;	/* out: time spent in FIFREEZE */
	int64_t thaw_ns;	/* out: time spent in FITHAW */
};

struct vms_run;

/*
 * Freeze mounts[0..n) wave by wave, each wave in parallel on at most
 * max_threads threads (<= 0: the default cap).  The watchdog's deadline is
 * timeout_ms after the call starts; when it passes, everything this run
 * froze is thawed, even while a worker is still blocked in FIFREEZE, and a
 * mount whose FIFREEZE returns later is thawed at once by its worker.
 *
 * The run copies mounts[] and dup()s every fd (F_DUPFD_CLOEXEC), so the
 * caller may close its fds and free the array at any time; results are
 * read back with vms_status().  A bad fd or one that is not a directory fails
 * that mount (EBADF / ENOTDIR) without a FIFREEZE.
 *
 * Blocks until every wave has been attempted or the watchdog fired
 * (FIFREEZE syncs first and may block for as long as that takes); it never
 * waits for a worker stuck in FIFREEZE past the deadline.  A failed mount
 * does not stop the others: the caller reads each mount's state and
 * decides.  Returns 0 and sets *out on success (even if mounts failed), or
 * -1 with errno set if the run could not be set up (EINVAL: bad arguments,
 * timeout_ms <= 0; ENOMEM; EAGAIN: no watchdog thread), in which case
 * nothing was frozen.
 *
 * notify_fd >= 0 is the supervisor's end of a guardian socket (see
 * vms_guardian_spawn): the run sends a record before each FIFREEZE, after
 * each outcome and after each thaw, and thaws everything at once if the
 * guardian goes away.  -1 for none.
 *
 * Each mount gets a probe: a child process (forked by vms_prepare, so
 * that the freeze does not pay for the fork) that calls unlinkat() with a
 * name longer than any filesystem allows.  That sleeps in
 * sb_start_write() while the superblock is frozen and then fails
 * (ENAMETOOLONG) without touching anything.  Just before our FIFREEZE it
 * tells whether the mount was frozen already (the guardian is told, see
 * vms_guardian_spawn); after our freeze it tells when the mount was
 * thawed: before our own thaw means somebody else thawed it (fsfreeze -u,
 * maybe followed by a refreeze), and vms_collect() then sets
 * thawed_early.  (A FITHAW of ours that finds the mount not frozen
 * records its EINVAL in thaw_errno; Python reads that too.)  A child, not a thread: a thread asleep on a frozen mount
 * would keep this process (and the guardian's socket) alive even after
 * SIGKILL.
 *
 * vms_freeze() is vms_prepare() followed by vms_start().
 */
int vms_freeze(struct vms_mount *mounts, size_t n, int64_t timeout_ms,
	       int max_threads, int notify_fd, struct vms_run **out);

/*
 * The two halves of vms_freeze(), so that another thread can hold the run
 * (and call vms_abort) while vms_start() blocks.  vms_prepare() freezes
 * nothing and starts no thread, but forks the probes (a fraction of a
 * millisecond each) and makes the watchdog's eventfd (EMFILE...), so that
 * nothing can fail for want of a descriptor once something is frozen;
 * vms_start() is called at most once and
 * returns 0, or -1 with errno (EALREADY, EAGAIN: no watchdog thread, in
 * which case nothing was frozen).  The deadline counts from vms_start().
 * A prepared run that is never started is released with vms_free().
 */
int vms_prepare(struct vms_mount *mounts, size_t n, int64_t timeout_ms,
		int max_threads, int notify_fd, struct vms_run **out);
int vms_start(struct vms_run *run);

/*
 * Stop the freeze now, from any thread (a signal arrived): no further
 * FIFREEZE starts, everything this run froze is thawed (by the watchdog,
 * in reverse waves) and vms_start() returns; a worker stuck in FIFREEZE
 * thaws its mount when it returns.  Unlike the deadline, it does not count
 * as the watchdog firing (vms_status's fired stays 0).  Never blocks.
 * Returns 1 if it stopped a freeze in progress, 0 if it came too late
 * (vms_thaw ran, the watchdog fired, or the run was already ending because
 * its guardian went away).
 */
int vms_abort(struct vms_run *run);

/*
 * Thaw every mount this run froze, waves in reverse order, each wave in
 * parallel, and stop the watchdog (waiting for it if it is thawing).  Never
 * thaws a mount this run did not freeze; never thaws twice.  A worker still
 * blocked in FIFREEZE thaws its mount itself when the call returns.
 * Blocks in FITHAW (normally short).  Returns 0, or the first FITHAW errno
 * of the run (in mount order).
 */
int vms_thaw(struct vms_run *run);

/*
 * After vms_thaw(): read the probes (see vms_freeze), which pass as soon
 * as their mount is thawed; one that passed before our thaw claimed the
 * mount saw somebody else's thaw, and sets thawed_early.  Waits at most
 * a second in all (a probe whose FITHAW failed never passes).  Kept apart
 * from vms_thaw so that the thaw's own timing does not include it.
 * Returns the number of mounts its probes found thawed early.  Idempotent.
 */
int vms_collect(struct vms_run *run);

/* The run as one consistent snapshot, taken under one lock. */
struct vms_status {
	int fired;		/* the watchdog fired: its deadline passed, the
				   guardian went away or vms_free came first
				   (not a plain vms_abort) */
	int64_t fired_after_ns;	/* from vms_start to the firing, or -1 */
	int guardian_lost;	/* the guardian went away (socket closed or a
				   record could not be sent) before vms_thaw:
				   the watchdog then fired at once */
	int idle;		/* no worker of the run is inside FIFREEZE or
				   FITHAW, and a fired watchdog has finished
				   its thaws */
	size_t n;		/* records copied into mounts[] */
};

/*
 * Fill *out and mounts[0..min(n, the run's mount count)) with the run's
 * state and every mount's record (state, errnos, timings; fd is the
 * caller's original fd number), all read under the run's lock at once, so
 * that a decision taken from it (is anything left frozen? is any worker
 * still inside an ioctl?) sees one moment.  Never blocks on a filesystem.
 * Returns 0, or -1 (EINVAL).
 */
int vms_status(struct vms_run *run, struct vms_status *out,
	       struct vms_mount *mounts, size_t n);

/*
 * Release the run.  Workers still blocked in FIFREEZE keep their own
 * reference and free it when they return, so this never blocks.  If
 * vms_thaw() was not called, the watchdog is told to fire now and thaws
 * in the background.
 */
void vms_free(struct vms_run *run);

/*
 * One FITHAW on fd, outside any run (for `thaw --recover`).  Blocks in
 * FITHAW.  Returns 0 or the errno (EINVAL: it was not frozen).
 */
int vms_thaw_fd(int fd);

/*
 * What tells a mounted filesystem apart from a later one on the same
 * device number, for `thaw --recover`: the mount's 64-bit id that is never
 * reused (statx STATX_MNT_ID_UNIQUE, Linux 6.8+) and the filesystem's UUID
 * (FS_IOC_GETFSUUID, Linux 6.5+).  A field the kernel or filesystem does
 * not provide is 0 (uuid_len 0).  Never blocks on a frozen filesystem.
 * Returns 0, or -1 with errno (EINVAL, EBADF).
 */
struct vms_identity {
	uint64_t mnt_id_unique;
	uint8_t uuid_len;
	uint8_t uuid[16];
};
int vms_identity(int fd, struct vms_identity *out);

/*
 * Fork the guardian: a tiny process (pure C, no Python) that outlives the
 * supervisor.  fds[i]/waves[i] must be the mounts, in the same order, that
 * vms_freeze() is then given with notify_fd = *sock.  The guardian keeps
 * its own copies of those fds and the socket, closes every other fd, and
 * tracks the run's records: on EOF (the supervisor died: SIGKILL, OOM,
 * segfault), on a broken record, or grace_ms after the run's own deadline
 * (the supervisor is alive but stuck), it thaws every mount whose FIFREEZE
 * was announced and not released nor failed, highest wave first -- one
 * whose FIFREEZE was never confirmed only if the run's probe found it
 * not frozen just before (else the FIFREEZE may have failed with EBUSY
 * on somebody else's freeze, its result lost with the supervisor) -- and
 * exits; after a thaw on EOF where every FITHAW succeeded it also unlinks
 * state_path (the run's state file; NULL for none), so the next run does
 * not ask for a recovery that already happened.  On vms_guardian_end() it
 * exits without thawing.  It ignores
 * SIGINT/SIGTERM/SIGHUP (a new session; EOF is what ends it).
 *
 * Returns the guardian's pid (reap it with waitpid) and sets *sock to the
 * supervisor's end (close-on-exec), or -1 with errno (nothing forked).
 * Blocks only in fork().
 */
int vms_guardian_spawn(const int *fds, const int *waves, size_t n,
		       int64_t grace_ms, const char *state_path, int *sock);

/*
 * Tell the guardian the run is over and nothing it froze is left frozen:
 * it exits with VMS_GUARDIAN_CLEAN without thawing.  Send it only once
 * vms_thaw() returned and vms_status() says idle.  Returns 0, or -1 with
 * errno (EPIPE: the guardian is gone).  Never blocks.
 */
int vms_guardian_end(int sock);

/*
 * Name a process group (the snapshot command's session) that the guardian
 * kills with SIGKILL if the supervisor dies, so nothing of the run
 * outlives it; gone = 1 withdraws it once its leader was reaped (its pgid
 * may be reused).  Up to 8 at a time.  Returns 0, or -1 with errno.
 * Never blocks.
 */
int vms_guardian_child(int sock, int pgid, int gone);

/* The guardian's exit statuses. */
#define VMS_GUARDIAN_CLEAN 0	/* clean end: thawed nothing */
#define VMS_GUARDIAN_EOF 3	/* supervisor vanished: thawed what was left */
#define VMS_GUARDIAN_DEADLINE 4	/* deadline + grace: thawed what was left */
#define VMS_GUARDIAN_PROTOCOL 5	/* unreadable record: thawed what was left */

/*
 * The default and hard cap on worker threads per wave (presync, in Python,
 * uses it for its syncfs threads too).  Chosen by measurement (bench/README.md, "The thread
 * cap"): freezing clean filesystems is bound by per-filesystem latency
 * (journal commit, cache flush), so 64 mounts froze in ~90 ms with 64
 * workers, ~120 ms with 32 and ~230 ms with 16; with dirty data the disk
 * is the limit and the cap makes no difference.  Stacks are 256 KiB.
 */
#define VMS_DEFAULT_THREADS 64

/* cdef-end */

#endif /* VMSFREEZE_H */
