/*
 * seqfreeze.c - the baseline the benchmark compares against: one process,
 * one thread, FIFREEZE of each mount in turn (what qemu-ga's
 * guest-fsfreeze-freeze and Azure's safefreeze do), then FITHAW of each.
 *
 * Usage: seqfreeze MOUNT...
 *
 * Prints "frozen START_NS END_NS" (CLOCK_MONOTONIC) once every mount is
 * frozen, waits for a line (or EOF) on stdin, thaws, prints
 * "thawed START_NS END_NS" and exits 0.  EOF also thaws, so a dead bench
 * never leaves a mount frozen behind this process.  On a failed FIFREEZE it
 * thaws what it froze, in reverse order, and exits 1.
 *
 * Each mount is opened just before its ioctl and closed after it, as
 * qemu-ga does, so the open is part of the measured window.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Open PATH and apply REQ (FIFREEZE or FITHAW).  Returns 0 or an errno. */
static int ioctl_path(const char *path, unsigned long req)
{
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	/* FIFREEZE blocks while the filesystem syncs its dirty data. */
	if (ioctl(fd, req, 0) != 0)
		rc = errno;
	close(fd);
	return rc;
}

static int thaw_range(char **mounts, int n)
{
	int i, err, failed = 0;

	for (i = 0; i < n; i++) {
		err = ioctl_path(mounts[i], FITHAW);
		if (err) {
			fprintf(stderr, "seqfreeze: FITHAW %s: %s\n", mounts[i],
				strerror(err));
			failed = 1;
		}
	}
	return failed;
}

int main(int argc, char **argv)
{
	char **mounts = argv + 1;
	int n = argc - 1, i, err, c;
	int64_t t0, t1;

	if (n < 1) {
		fprintf(stderr, "usage: seqfreeze MOUNT...\n");
		return 2;
	}
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		err = ioctl_path(mounts[i], FIFREEZE);
		if (err) {
			fprintf(stderr, "seqfreeze: FIFREEZE %s: %s\n",
				mounts[i], strerror(err));
			/* Thaw only what this process froze, newest first. */
			while (i-- > 0)
				ioctl_path(mounts[i], FITHAW);
			return 1;
		}
	}
	t1 = now_ns();
	printf("frozen %lld %lld\n", (long long)t0, (long long)t1);
	fflush(stdout);

	/* Any line or EOF means: thaw now. */
	do
		c = getchar();
	while (c != '\n' && c != EOF);

	t0 = now_ns();
	err = thaw_range(mounts, n);
	t1 = now_ns();
	printf("thawed %lld %lld\n", (long long)t0, (long long)t1);
	fflush(stdout);
	return err;
}
