"""The physical floor: how fast the disk under the loop images takes
sequential direct writes, measured through a loop device set up exactly like
the bench's filesystems (same image directory, direct-io)."""
from __future__ import annotations

import mmap
import os
import platform
import shutil
import subprocess
import threading
import time
from typing import Any, Dict

from bench import loops

BLOCK = 1024 * 1024


def _write_region(fd: int, buf: mmap.mmap, first: int, count: int) -> None:
    for i in range(first, first + count):
        os.pwrite(fd, buf, i * BLOCK)


def _pass(device: str, mib: int, streams: int) -> float:
    """Write MIB MiB in STREAMS parallel regions with O_DIRECT, then
    fdatasync (a freeze ends with a cache flush too); returns MiB/s."""
    buf = mmap.mmap(-1, BLOCK)       # page-aligned, as O_DIRECT requires
    buf.write(os.urandom(BLOCK))
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        per = mib // streams
        threads = [threading.Thread(target=_write_region,
                                    args=(fd, buf, s * per, per))
                   for s in range(streams)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        os.fdatasync(fd)
        elapsed = time.monotonic() - t0
    finally:
        os.close(fd)
        buf.close()
    return per * streams / elapsed


def measure(workdir: str, mib: int, streams: int) -> Dict[str, Any]:
    """Sequential (1 stream) and parallel (STREAMS) bandwidth, each the best
    of two passes over blocks already allocated in the sparse image (as the
    bench's own cycles overwrite allocated blocks)."""
    image = os.path.join(workdir, "bandwidth.img")
    loops.make_image(image, mib)
    device = loops.attach(image)
    try:
        dio = loops.direct_io_active(device)
        first = _pass(device, mib, 1)      # allocates the image's blocks
        seq = max(_pass(device, mib, 1) for _ in range(2))
        par = max(_pass(device, mib, streams) for _ in range(2))
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
        os.unlink(image)
    return {"mib": mib, "block_bytes": BLOCK, "loop_direct_io": dio,
            "first_pass_mib_s": round(first, 1),
            "seq_mib_s": round(seq, 1),
            "parallel_streams": streams, "parallel_mib_s": round(par, 1),
            "floor_mib_s": round(max(seq, par), 1)}


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
