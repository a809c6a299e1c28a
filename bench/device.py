"""The physical floor: how fast the disk under the loop images takes
writes, measured through loop devices set up exactly like the bench's
filesystems (same image directory, direct-io); and the machine's facts."""
from __future__ import annotations

import mmap
import os
import platform
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import loopfs
from bench import loops

BLOCK = 1024 * 1024


def _direct(device: str, mib: int, first: int = 0) -> None:
    buf = mmap.mmap(-1, BLOCK)       # page-aligned, as O_DIRECT requires
    buf.write(os.urandom(BLOCK))
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        for i in range(first, first + mib):
            os.pwrite(fd, buf, i * BLOCK)
        # A freeze ends with a cache flush too.
        os.fdatasync(fd)
    finally:
        os.close(fd)
        buf.close()


def _buffered(fd: int, mib: int, pattern: bytes) -> None:
    for i in range(mib):
        os.pwrite(fd, pattern, i * BLOCK)


def _writeback(devs: List[str], per: int, pattern: bytes) -> float:
    """Dirty PER MiB of each device's page cache, then fsync all in
    parallel; MiB/s of what really went out during the fsyncs (0 if the
    kernel wrote much of it back early).  The fds stay open throughout: the
    last close of a block device writes its cache back."""
    fds = [os.open(d, os.O_WRONLY | os.O_CLOEXEC) for d in devs]
    try:
        _parallel([(_buffered, (fd, per, pattern)) for fd in fds])
        w0 = loops.written_mib(devs)
        elapsed = _parallel([(os.fsync, (fd,)) for fd in fds])
        written = loops.written_mib(devs) - w0
    finally:
        for fd in fds:
            os.close(fd)
    return written / elapsed if written >= 0.9 * per * len(devs) else 0.0


def _parallel(jobs: List[Tuple[Callable[..., None], tuple]]) -> float:
    """Run the jobs in threads (the writes release the GIL); seconds."""
    threads = [threading.Thread(target=f, args=a) for f, a in jobs]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def measure(workdir: str, mib: int, devices: int) -> Dict[str, Any]:
    """Three ways to put MIB MiB on the disk under the images, through loop
    devices set up like the bench's own, each the best of two passes over
    blocks already allocated (the cycles overwrite allocated blocks too):

    - seq: one stream of 1 MiB O_DIRECT writes to one device;
    - direct_parallel: one such stream per device, DEVICES devices;
    - writeback: MIB MiB dirtied in the page cache of DEVICES devices, then
      fsync of all in parallel: the path a freeze's sync takes, whose deep
      queues a virtual disk rewards.

    The floor is total dirty / the fastest of the three."""
    per = max(mib // devices, 1)
    pattern = os.urandom(BLOCK)
    devs: List[str] = []
    try:
        for i in range(devices):
            image = os.path.join(workdir, "bandwidth%d.img" % i)
            loopfs.make_image(image, per)
            devs.append(loopfs.attach(image, direct_io=True))
        total = per * len(devs)
        first = total / _parallel([(_direct, (d, per)) for d in devs])
        seq = max(per / _parallel([(_direct, (devs[0], per))])
                  for _ in range(2))
        par = max(total / _parallel([(_direct, (d, per)) for d in devs])
                  for _ in range(2))
        wb = max(_writeback(devs, per, pattern) for _ in range(2))
        dio = loopfs.direct_io_active(devs[0])
    finally:
        for d in devs:
            loopfs.detach(d)
        for i in range(devices):
            try:
                os.unlink(os.path.join(workdir, "bandwidth%d.img" % i))
            except OSError:
                pass
    return {"mib": total, "devices": len(devs), "block_bytes": BLOCK,
            "loop_direct_io": dio, "first_pass_mib_s": round(first, 1),
            "seq_mib_s": round(seq, 1), "direct_parallel_mib_s": round(par, 1),
            "writeback_mib_s": round(wb, 1),
            "floor_mib_s": round(max(seq, par, wb), 1)}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _disk_of(path: str) -> Dict[str, str]:
    st = os.stat(path)
    sysdev = "/sys/dev/block/%d:%d" % (os.major(st.st_dev),
                                       os.minor(st.st_dev))
    real = os.path.realpath(sysdev)
    # A partition's queue settings live on its parent disk.
    disk = real if os.path.exists(real + "/queue") else os.path.dirname(real)
    return {"device": os.path.basename(real),
            "model": _read(disk + "/device/model"),
            "rotational": _read(disk + "/queue/rotational"),
            "write_cache": _read(disk + "/queue/write_cache")}


def machine(workdir: str) -> Dict[str, Any]:
    cpu = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    virt = subprocess.run(["systemd-detect-virt"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, check=False
                          ) if shutil.which("systemd-detect-virt") else None
    ul = subprocess.run(["fsfreeze", "--version"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True, check=False)
    return {"kernel": platform.release(), "cpu": cpu,
            "cpus": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1),
            "virtualization": virt.stdout.strip() if virt else "",
            "python": platform.python_version(),
            "util_linux": ul.stdout.strip(),
            "image_disk": _disk_of(workdir)}
