"""One QEMU guest for a test: fresh disk overlays, QMP, the agent channel,
the snapshot channel and (optionally) qemu-ga's channel.

QEMU connects to sockets the harness already listens on, so there is no
start-up race; every wait has a deadline, and stop() always ends QEMU.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.vm.image import GuestImage, load_image  # noqa: E402
from tests.vm.qmp import QMP, GuestAgent, LineChannel  # noqa: E402

DISKS = ("root", "data")            # node names; the guest sees vda, vdb
QGA_PORT = "org.qemu.guest_agent.0"
# KVM is not usable on the CI machines (the device exists, the guest never
# runs), so TCG is the default; VMSNAPSHOT_VM_ACCEL=kvm where it works.
ACCEL = os.environ.get("VMSNAPSHOT_VM_ACCEL", "tcg")
BOOT_TIMEOUT = float(os.environ.get("VMSNAPSHOT_VM_BOOT_TIMEOUT", "180"))
KERNEL_ARGS = ("console=ttyS0 quiet loglevel=4 panic=-1 "
               "rdinit=/init tsc=reliable no_timer_check")


class Machine:
    def __init__(self, image: GuestImage, workdir: str, qga: bool = False,
                 smp: int = 2, memory_mb: int = 768) -> None:
        self.image = image
        self.workdir = workdir
        self.qga_enabled = qga
        self.smp = smp
        self.memory_mb = memory_mb
        self.proc: Optional[subprocess.Popen] = None
        self.qmp: Optional[QMP] = None
        self.agent_chan: Optional[LineChannel] = None
        self.snap: Optional[LineChannel] = None
        self.qga: Optional[GuestAgent] = None
        self.console_log = os.path.join(workdir, "console.log")
        self.top: Dict[str, str] = {}          # disk -> active overlay file
        self.node = {disk: disk for disk in DISKS}   # disk -> its top node
        self.generation = 0
        self.boot_s = 0.0
        self.guest_uptime = 0.0
        self._id = 0
        self._listeners: List[socket.socket] = []

    # ------------------------------------------------------------ life

    def _listen(self, name: str) -> socket.socket:
        path = os.path.join(self.workdir, name + ".sock")
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(1)
        self._listeners.append(sock)
        return sock

    def _accept(self, sock: socket.socket, name: str, deadline: float) -> LineChannel:
        while True:
            sock.settimeout(1)
            try:
                conn, _ = sock.accept()
                return LineChannel(conn, name)
            except socket.timeout:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError("QEMU exited (%s) before connecting %s:\n%s"
                                         % (self.proc.returncode, name, self.stderr_tail()))
                if time.monotonic() > deadline:
                    raise AssertionError("QEMU did not connect %s" % name)

    def _overlay(self, disk: str) -> str:
        """A new qcow2 on top of the disk's current top (or the base)."""
        backing = self.top.get(disk) or getattr(self.image, disk + "_disk")
        path = os.path.join(self.workdir, "%s-%d.qcow2" % (disk, self.generation))
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                        "-b", backing, path], check=True)
        return path

    def qemu_argv(self) -> List[str]:
        argv = ["qemu-system-x86_64", "-accel", ACCEL, "-machine", "pc",
                "-smp", str(self.smp), "-m", str(self.memory_mb),
                "-nodefaults", "-no-user-config", "-display", "none",
                "-no-reboot", "-kernel", self.image.kernel,
                "-initrd", self.image.initrd, "-append", KERNEL_ARGS,
                "-chardev", "file,id=console,path=" + self.console_log,
                "-serial", "chardev:console",
                "-chardev", "socket,id=qmp,path=%s/qmp.sock" % self.workdir,
                "-mon", "chardev=qmp,mode=control",
                "-device", "virtio-rng-pci"]
        for disk in DISKS:
            argv += ["-blockdev", "driver=qcow2,node-name=%s,file.driver=file,"
                     "file.filename=%s" % (disk, self.top[disk]),
                     "-device", "virtio-blk-pci,drive=%s" % disk]
        argv += ["-device", "virtio-serial-pci"]
        ports = [("agent", "vmtest.agent"), ("snap", "vmtest.snap")]
        if self.qga_enabled:
            ports.append(("qga", QGA_PORT))
        for chardev, name in ports:
            argv += ["-chardev", "socket,id=%s,path=%s/%s.sock"
                     % (chardev, self.workdir, chardev),
                     "-device", "virtserialport,chardev=%s,name=%s" % (chardev, name)]
        return argv

    def start(self) -> "Machine":
        for disk in DISKS:
            self.top[disk] = self._overlay(disk)
        socks = {name: self._listen(name)
                 for name in ("qmp", "agent", "snap") + (("qga",) if self.qga_enabled else ())}
        start = time.monotonic()
        self.stderr_path = os.path.join(self.workdir, "qemu.stderr")
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err,
                                         start_new_session=True)
        deadline = start + 60
        self.qmp = QMP(self._accept(socks["qmp"], "qmp", deadline))
        self.agent_chan = self._accept(socks["agent"], "agent", deadline)
        self.snap = self._accept(socks["snap"], "snap", deadline)
        if self.qga_enabled:
            self.qga = GuestAgent(self._accept(socks["qga"], "qga", deadline))
        try:
            ready = self.agent_chan.read(BOOT_TIMEOUT)
        except AssertionError as e:
            raise AssertionError("guest did not boot: %s\n%s" % (e, self.diagnostics()))
        if ready.get("event") != "ready":
            raise AssertionError("unexpected first message from the guest: %r" % ready)
        self.boot_s = time.monotonic() - start
        self.guest_uptime = ready["uptime"]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                if self.qmp is not None:
                    self.qmp.command("quit", timeout=10)
            except (AssertionError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for chan in (self.qmp and self.qmp.chan, self.agent_chan, self.snap,
                     self.qga and self.qga.chan):
            if chan is not None:
                chan.close()
        for sock in self._listeners:
            sock.close()
        self._listeners = []

    def __enter__(self) -> "Machine":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------ agent

    def call(self, op: str, **kw: Any) -> Dict[str, Any]:
        """One request to the guest's agent; its reply.  A "timeout" in kw
        is the agent's (run, wait); the reply may take a minute longer."""
        assert self.agent_chan is not None
        self._id += 1
        self.agent_chan.send(dict(kw, op=op, id=self._id))
        while True:
            try:
                reply = self.agent_chan.read(60 + kw.get("timeout", 0))
            except AssertionError as e:
                raise AssertionError("agent %s: %s\n%s" % (op, e, self.diagnostics()))
            if reply.get("id") == self._id:
                break
        if "error" in reply:
            raise AssertionError("agent %s failed: %s\n%s"
                                 % (op, reply["error"], reply.get("traceback", "")))
        return reply

    def sh(self, script: str, timeout: float = 60, check: bool = True) -> Dict[str, Any]:
        reply = self.call("run", argv=["/bin/sh", "-c", script], timeout=timeout)
        if check and reply["rc"] != 0:
            raise AssertionError("guest: %r: rc=%s\nstdout:\n%s\nstderr:\n%s"
                                 % (script, reply["rc"], reply["out"], reply["err"]))
        return reply

    def read(self, path: str) -> Optional[str]:
        return self.call("read", path=path)["data"]

    def write(self, path: str, data: str, mode: int = 0o644) -> None:
        self.call("write", path=path, data=data, mode=mode)

    # ------------------------------------------------------------ snapshots

    def snapshot(self) -> Dict[str, str]:
        """Snapshot both disks atomically (one QMP transaction); return
        disk -> the image that now holds the snapshot (the old top, which
        becomes read-only backing of a new overlay)."""
        assert self.qmp is not None
        self.generation += 1
        taken = dict(self.top)
        new = {disk: os.path.join(self.workdir, "%s-%d.qcow2" % (disk, self.generation))
               for disk in DISKS}
        nodes = {disk: "%s-%d" % (disk, self.generation) for disk in DISKS}
        self.qmp.transaction([
            {"type": "blockdev-snapshot-sync",
             "data": {"node-name": self.node[disk], "snapshot-file": new[disk],
                      "snapshot-node-name": nodes[disk], "format": "qcow2"}}
            for disk in DISKS])
        self.top, self.node = new, nodes
        return taken

    # ------------------------------------------------------------ debugging

    def stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()[-3000:]
        except (OSError, AttributeError):
            return ""

    def console_tail(self, chars: int = 6000) -> str:
        try:
            with open(self.console_log, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    def diagnostics(self) -> str:
        state = "running" if self.proc and self.proc.poll() is None else \
            "exited %s" % (self.proc.returncode if self.proc else None)
        return "QEMU %s\n--- qemu stderr ---\n%s\n--- guest console ---\n%s" % (
            state, self.stderr_tail(), self.console_tail())


def main(argv: Optional[List[str]] = None) -> int:
    """Boot the image in DIR (from `python3 -m tests.vm.image DIR`), report
    the boot time, show the guest's mounts, stop."""
    args = sys.argv[1:] if argv is None else argv
    imgdir = os.path.abspath(args[0])
    image = load_image(imgdir)
    if image is None:
        print("no image in %s: build one with python3 -m tests.vm.image" % imgdir,
              file=sys.stderr)
        return 2
    work = os.path.join(imgdir, "run")
    os.makedirs(work, exist_ok=True)
    with Machine(image, work, qga="--qga" in args) as vm:
        print("boot %.1f s (guest ready at uptime %.1f s)" % (vm.boot_s, vm.guest_uptime))
        print(vm.sh("cat /proc/mounts; /usr/sbin/vmsnapshot mounts")["out"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
