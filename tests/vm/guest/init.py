#!/usr/bin/python3 -B
"""PID 1 of the test guest, and the host's agent inside it.

Sets the guest up (pseudo filesystems, /data, /dev/virtio-ports links), starts
the application, then serves JSON lines on the virtio port vmtest.agent:
one request {"id": N, "op": ..., ...} in, one reply {"id": N, ...} out.

It must keep answering while / and /data are frozen, so it never writes to
them: child output goes to /run (tmpfs, never frozen), every module is
imported up front and no bytecode is written (-B).  As PID 1 it reaps every
process, orphans included; a child's status is kept by name.
"""
import json
import os
import select
import signal
import time
import traceback

RUN = "/run/vmtest"
PORTS = "/dev/virtio-ports"
AGENT_PORT = PORTS + "/vmtest.agent"
CHILD_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
OUTPUT_LIMIT = 256 * 1024


def console(msg):
    os.write(1, ("vmtest-init: %s\n" % msg).encode())


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


class Children:
    """Processes started by name; PID 1 reaps them and every orphan."""

    def __init__(self):
        self.pids = {}      # pid -> name
        self.status = {}    # name -> [pid, returncode or None]

    def spawn(self, name, argv, env=None):
        out, err = self.paths(name)
        actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
        for fd, path in ((1, out), (2, err)):
            actions.append((os.POSIX_SPAWN_OPEN, fd, path,
                            os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        pid = os.posix_spawnp(argv[0], argv, dict(CHILD_ENV, **(env or {})),
                              file_actions=actions, setsid=True)
        self.pids[pid] = name
        self.status[name] = [pid, None]
        return pid

    @staticmethod
    def paths(name):
        return "%s/%s.out" % (RUN, name), "%s/%s.err" % (RUN, name)

    def reap(self):
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            name = self.pids.pop(pid, None)
            if name is not None and self.status[name][0] == pid:
                self.status[name][1] = os.waitstatus_to_exitcode(st)

    def wait(self, name, timeout):
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            rc = self.status[name][1]
            if rc is not None or time.monotonic() >= deadline:
                return rc
            time.sleep(0.05)

    def result(self, name, rc):
        reply = {"pid": self.status[name][0], "rc": rc, "running": rc is None}
        for key, path in zip(("out", "err"), self.paths(name)):
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - OUTPUT_LIMIT))
                reply[key] = f.read().decode("utf-8", "replace")
        return reply


children = Children()
_seq = [0]


def op_ping(req):
    return {"uptime": uptime()}


def op_run(req):
    """Run argv to completion or timeout.  On timeout the process group is
    SIGKILLed but not waited for: a process stuck on a frozen filesystem
    cannot die until the thaw, and the agent must stay responsive."""
    _seq[0] += 1
    name = "run%d" % _seq[0]
    children.spawn(name, req["argv"], req.get("env"))
    rc = children.wait(name, req.get("timeout", 60))
    if rc is None:
        try:
            os.killpg(children.status[name][0], signal.SIGKILL)
        except OSError:
            pass
    reply = children.result(name, rc)
    reply["timed_out"] = rc is None
    return reply


def op_spawn(req):
    return {"pid": children.spawn(req["name"], req["argv"], req.get("env"))}


def op_wait(req):
    name = req["name"]
    return children.result(name, children.wait(name, req.get("timeout", 0)))


def op_kill(req):
    pid = children.status[req["name"]][0]
    sig = req.get("signal", signal.SIGTERM)
    if req.get("group"):
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)
    return {"pid": pid}


def op_read(req):
    try:
        with open(req["path"], "rb") as f:
            return {"data": f.read().decode("utf-8", "replace")}
    except OSError as e:
        return {"data": None, "errno": e.errno}


def op_write(req):
    """Write a file (before a freeze: configuration, test modes)."""
    path = req["path"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, req.get("mode", 0o644))
    try:
        os.fchmod(fd, req.get("mode", 0o644))
        os.write(fd, req["data"].encode())
    finally:
        os.close(fd)
    return {}


OPS = {"ping": op_ping, "run": op_run, "spawn": op_spawn, "wait": op_wait,
       "kill": op_kill, "read": op_read, "write": op_write}


def send(fd, obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def handle(line):
    try:
        req = json.loads(line)
    except ValueError:
        return {"error": "bad request: %r" % line[:200]}
    try:
        reply = OPS[req["op"]](req)
    except Exception as e:  # the agent must survive any request
        reply = {"error": "%s: %s" % (type(e).__name__, e),
                 "traceback": traceback.format_exc()}
    reply["id"] = req.get("id")
    return reply


def serve():
    fd = os.open(AGENT_PORT, os.O_RDWR)
    send(fd, {"event": "ready", "uptime": uptime(), "kernel": os.uname().release})
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        children.reap()
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:        # host side not connected
            time.sleep(0.2)
            continue
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                send(fd, handle(line.decode("utf-8", "replace")))


def sh(*argv):
    pid = os.posix_spawnp(argv[0], argv, CHILD_ENV)
    _, st = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(st)
    if rc != 0:
        console("%s: exit %d" % (" ".join(argv), rc))
    return rc


def link_ports(deadline):
    """What udev would do: /dev/virtio-ports/NAME -> /dev/vportNpM."""
    os.makedirs(PORTS, exist_ok=True)
    while True:
        for port in os.listdir("/sys/class/virtio-ports"):
            with open("/sys/class/virtio-ports/%s/name" % port) as f:
                name = f.read().strip()
            link = os.path.join(PORTS, name)
            if name and not os.path.lexists(link):
                os.symlink("../" + port, link)
        if os.path.exists(AGENT_PORT) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def setup():
    os.environ.update(CHILD_ENV)
    sh("mount", "-t", "proc", "proc", "/proc")
    sh("mount", "-t", "sysfs", "sysfs", "/sys")
    for point in ("/run", "/tmp"):
        sh("mount", "-t", "tmpfs", "-o", "mode=1777" if point == "/tmp" else "mode=755",
           "tmpfs", point)
    os.makedirs(RUN)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        if not os.path.lexists("/dev/" + name):
            os.symlink(target, "/dev/" + name)
    sh("hostname", "vmtest")
    sh("modprobe", "-a", "virtio_console", "xfs")
    sh("mount", "-t", "xfs", "-o", "noatime", "/dev/vdb", "/data")
    link_ports(time.monotonic() + 10)
    children.spawn("app", ["/data/app/recwriter", "/data/app/records.log"])


def main():
    try:
        setup()
        console("up after %.1f s" % uptime())
        serve()
    except BaseException:
        console("agent failed:\n" + traceback.format_exc())
    # PID 1 must not exit (the kernel would panic): keep reaping.
    while True:
        children.reap()
        time.sleep(1)


if __name__ == "__main__":
    main()
