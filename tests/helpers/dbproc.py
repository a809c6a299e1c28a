"""Processes of the database tests: the OS users and programs they need,
commands that must succeed, children that are always reaped, the server
base class (ours to stop, by pid) and hooks run the way vmsnapshot holds
them."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from tests.helpers.cli import ROOT
from tests.helpers.require import skip_or_fail
from tests.helpers.wait import poll
from vmsnapshot.config import native_toml
from vmsnapshot.config.model import Plugin
from vmsnapshot.config.problems import Problems
from vmsnapshot.errors import Catalogue, ErrorRecord

HOOKS = os.path.join(ROOT, "hooks")
EXAMPLES = os.path.join(ROOT, "etc", "examples")
INSTALLED_HOOKS = "/usr/share/vmsnapshot/hooks/"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 60.0


def example_plugins(name: str) -> Tuple[Plugin, ...]:
    """etc/examples/NAME through the native loader: no problem, and every
    command a shipped hook called with options it knows."""
    path = os.path.join(EXAMPLES, name)
    records: List[ErrorRecord] = []
    with open(path) as f:
        config = native_toml.parse(f.read(), Problems(
            path, Catalogue.INCORRECT_JSON_CONFIG_FILE, records))
    assert config is not None and not records, records
    for plugin in config.plugins:
        for argv in (plugin.pre, plugin.post):
            if argv is None:
                continue
            assert argv[0].startswith(INSTALLED_HOOKS), argv
            with open(os.path.join(HOOKS, argv[0][len(INSTALLED_HOOKS):])
                      ) as f:
                source = f.read()
            assert argv[1] in ("pre", "post"), argv
            unknown = [arg for arg in argv[2:] if arg.startswith("--")
                       and "\t%s)" % arg not in source]
            assert not unknown, (name, unknown)
    return config.plugins


# -- users, programs, processes -------------------------------------------

def need(programs: Sequence[str], user: str) -> pwd.struct_passwd:
    """The OS user and programs a server test needs, or skip (CI: fail)."""
    missing = [p for p in programs if shutil.which(p, path=PATH) is None]
    if missing:
        skip_or_fail("not installed: %s" % ", ".join(missing))
    try:
        return pwd.getpwnam(user)
    except KeyError:
        skip_or_fail("no OS user %r (database server package missing)" % user)
        raise


def as_user(user: str) -> List[str]:
    """argv prefix that runs a program as ``user`` (setpriv execs, so the
    child's pid is the program's)."""
    if user == "root":
        return []
    pw = pwd.getpwnam(user)
    return ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
            "--init-groups", "--"]


def user_env(user: str) -> Dict[str, str]:
    return {"PATH": PATH, "LANG": "C.UTF-8",
            "HOME": pwd.getpwnam(user).pw_dir}


def checked(argv: Sequence[str], timeout: float = 120, **kw
            ) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=timeout,
                         **kw)
    if res.returncode != 0:
        raise AssertionError("%s: exit %d\n%s" % (" ".join(argv),
                                                  res.returncode, res.stdout))
    return res


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a child; SIGKILL it if it overstays (its whole group if it
    leads one: never ours). Always reaped."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        return proc.wait()


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as exc:
        return "(%s)" % exc


class Server:
    """A database server process we started: ours to stop, by pid."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, argv: Sequence[str], user: str, log: str):
        self.log = log
        self.user = user
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                as_user(user) + list(argv), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd="/",
                env=user_env(user), start_new_session=True)

    def ping(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %d while starting:\n%s"
                                     % (self.name, self.proc.returncode,
                                        tail(self.log)))
            return self.ping()
        if not poll(ready, timeout, 0.2):
            raise AssertionError("%s not ready within %gs:\n%s"
                                 % (self.name, timeout, tail(self.log)))

    def stop(self) -> None:
        """Orderly shutdown, escalating to SIGKILL of the whole group; the
        group id cannot be reused while the leader is unreaped."""
        for signum, grace in ((self.stop_signal, 60.0),
                              (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            try:
                if signum == signal.SIGKILL:
                    os.killpg(self.proc.pid, signum)
                else:
                    self.proc.send_signal(signum)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        if self.proc.poll() is None:
            raise AssertionError("%s (pid %d) would not stop"
                                 % (self.name, self.proc.pid))
        try:    # children of a killed leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def read_state(path: str) -> Dict[str, str]:
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f
                    if "=" in line and not line.startswith("#"))


class HeldProcess:
    """A hook run directly, the way vmsnapshot holds it: stdin a pipe,
    READY awaited on stdout, EOF to release."""

    def __init__(self, argv: Sequence[str], timeout: float = 30,
                 env: Optional[Dict[str, str]] = None):
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env=dict({"PATH": PATH, "LANG": "C.UTF-8"}, **(env or {})),
            start_new_session=True)
        self.result: Optional[Tuple[int, str]] = None
        self.ready_line = self._readline(timeout)

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        result: List[str] = []
        reader = threading.Thread(
            target=lambda: result.append(self.proc.stdout.readline()),
            daemon=True)
        reader.start()
        reader.join(timeout)
        return result[0].strip() if result else ""

    def close(self) -> None:
        """Teardown: kill it if a failed test left it holding (idempotent)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.finish()

    def release(self, timeout: float = 60) -> Tuple[int, str]:
        """EOF on its stdin, as vmsnapshot's post phase does."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.finish(timeout)

    def finish(self, timeout: float = 60) -> Tuple[int, str]:
        """Wait for its exit: (exit status, stderr); idempotent."""
        if self.result is None:
            wait_or_kill(self.proc, timeout)
            assert self.proc.stderr is not None
            err = self.proc.stderr.read()
            for pipe in (self.proc.stdin, self.proc.stdout,
                         self.proc.stderr):
                if pipe is not None:
                    pipe.close()
            self.result = (self.proc.returncode, err)
        return self.result
