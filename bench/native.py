"""The bench's two C helpers: built with cc into the work directory, and
driven over pipes."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = ("seqfreeze", "stallwriter")


def build(outdir: str) -> str:
    """Compile the helpers into OUTDIR/bin; returns that directory."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (install build-essential)")
    bindir = os.path.join(outdir, "bin")
    os.makedirs(bindir, exist_ok=True)
    for name in PROGRAMS:
        subprocess.run([cc, "-O2", "-Wall", "-std=c99", "-o",
                        os.path.join(bindir, name),
                        os.path.join(HERE, name + ".c")], check=True)
    return bindir


@dataclass(frozen=True)
class WriterSample:
    max_ns: int
    max_start_ns: int
    count: int


class Writer:
    """One stallwriter process on one mount."""

    def __init__(self, bindir: str, path: str, interval_us: int) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [os.path.join(bindir, "stallwriter"), path, str(interval_us)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def _ask(self, cmd: bytes) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(cmd)
        line = self.proc.stdout.readline().decode()
        if not line:
            raise RuntimeError("stallwriter on %s died (rc=%s)"
                               % (self.path, self.proc.poll()))
        return line

    def reset(self) -> None:
        self._ask(b"r")

    def sample(self) -> WriterSample:
        max_ns, start, count = (int(x) for x in self._ask(b"d").split())
        return WriterSample(max_ns, start, count)

    def stop(self) -> None:
        """Call only while nothing is frozen: a writer blocked on a frozen
        filesystem cannot die before the thaw."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class Writers:
    """A writer per mount; reset before a cycle, sample after the thaw."""

    def __init__(self, bindir: str, files: Sequence[str],
                 interval_us: int) -> None:
        self.writers: List[Writer] = []
        try:
            for f in files:
                self.writers.append(Writer(bindir, f, interval_us))
        except BaseException:
            self.stop()
            raise

    def reset(self) -> None:
        for w in self.writers:
            w.reset()

    def samples(self) -> List[WriterSample]:
        return [w.sample() for w in self.writers]

    def stop(self) -> None:
        for w in self.writers:
            w.stop()
        self.writers = []


class SeqFreeze:
    """seqfreeze: FIFREEZE each mount in turn in one thread, then FITHAW."""

    def __init__(self, bindir: str, mounts: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            [os.path.join(bindir, "seqfreeze"), *mounts],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, bufsize=0)

    def _times(self, word: str) -> Optional[List[int]]:
        assert self.proc.stdout
        parts = self.proc.stdout.readline().decode().split()
        if len(parts) != 3 or parts[0] != word:
            return None
        return [int(parts[1]), int(parts[2])]

    def frozen(self) -> List[int]:
        """Blocks until all are frozen: [start_ns, end_ns]."""
        times = self._times("frozen")
        if times is None:
            self.proc.wait()
            raise RuntimeError("seqfreeze failed: %s" % self._stderr())
        return times

    def thaw(self) -> List[int]:
        assert self.proc.stdin
        self.proc.stdin.write(b"\n")
        times = self._times("thawed")
        rc = self.proc.wait()
        if times is None or rc != 0:
            raise RuntimeError("seqfreeze thaw failed: %s" % self._stderr())
        self.close()
        return times

    def _stderr(self) -> str:
        assert self.proc.stderr
        return self.proc.stderr.read().decode().strip()

    def close(self) -> None:
        """EOF on stdin makes seqfreeze thaw; always reap it."""
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        self.proc.wait()
