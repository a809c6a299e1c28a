"""Real PostgreSQL and MariaDB servers for the database quiescer tests.

Each server runs as its own user (postgres / mysql) on a private socket in
the test's temporary directory, is started by us as a child in its own
session and is always stopped (SIGKILL to its group as a last resort), so
nothing is left running. Everything is registered on one ExitStack that
unwinds before the loop filesystems are destroyed: servers stop first, then
the restored copies are unmounted and detached.

The snapshot under test is the one the issue asks for: ``vmsnapshot run
--mount DATA -- cp --sparse=always IMAGE COPY``, the copy of the disk image
made while frozen standing in for a hypervisor snapshot. The copy is then
loop-mounted and a second server is started on it.

The fixture `db_env` reaches every test through tests/conftest.py.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Callable, Dict, Iterator, List, Optional, Sequence, Set,
                    Tuple)

import pytest

from tests.helpers.cli import ROOT, run_json
from tests.helpers.loopfs import LoopFS, destroy_loopfs, run
from tests.helpers.require import skip_or_fail
from tests.helpers.scripts import make_dir
from tests.helpers.wait import poll, wait_until
from vmsnapshot.config import native_toml
from vmsnapshot.config.model import Plugin
from vmsnapshot.config.problems import Problems
from vmsnapshot.errors import Catalogue, ErrorRecord

HOOKS = os.path.join(ROOT, "hooks")
EXAMPLES = os.path.join(ROOT, "etc", "examples")
INSTALLED_HOOKS = "/usr/share/vmsnapshot/hooks/"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DATA_FS_MB = 512      # sparse; room for WAL/redo growth under load
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


# -- PostgreSQL -------------------------------------------------------------

def pg_bindir() -> str:
    """Newest Debian server installation (/usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[4]) if
                   p.split("/")[4].isdigit() else 0)
    if not found:
        skip_or_fail("PostgreSQL server not installed (postgresql package)")
    return os.path.dirname(found[-1])


class PgServer(Server):
    name = "postgres"
    stop_signal = signal.SIGINT     # "fast" shutdown

    def __init__(self, bindir: str, datadir: str, sockdir: str, port: int,
                 log: str, settings: Sequence[str] = ()):
        self.bindir = bindir
        self.datadir = datadir
        self.sockdir = sockdir
        self.port = port
        argv = [os.path.join(bindir, "postgres"), "-D", datadir, "-k",
                sockdir, "-p", str(port), "-c", "listen_addresses="]
        for setting in settings:
            argv += ["-c", setting]
        super().__init__(argv, "postgres", log)

    def conn_args(self) -> List[str]:
        return ["-h", self.sockdir, "-p", str(self.port), "-U", "postgres"]

    def tool(self, name: str, *args: str, timeout: float = 120
             ) -> subprocess.CompletedProcess:
        return checked(as_user("postgres") + [os.path.join(self.bindir, name)]
                       + self.conn_args() + list(args), timeout=timeout,
                       env=user_env("postgres"), cwd="/")

    def sql(self, query: str) -> str:
        return self.tool("psql", "-X", "-A", "-t", "-q", "-v",
                         "ON_ERROR_STOP=1", "-d", "postgres",
                         "-c", query).stdout.strip()

    def ping(self) -> bool:
        res = subprocess.run(
            as_user("postgres") + [os.path.join(self.bindir, "psql"), "-X",
                                   "-A", "-t", "-d", "postgres", "-c",
                                   "SELECT 1"] + self.conn_args(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=user_env("postgres"), cwd="/", timeout=30)
        return res.returncode == 0 and res.stdout.strip() == "1"

    def wait_primary(self, timeout: float = START_TIMEOUT) -> None:
        """Until archive recovery has ended and the server was promoted."""
        if not poll(lambda: self.sql("SELECT pg_is_in_recovery()") == "f",
                    timeout, 0.2):
            raise AssertionError("still in recovery after %gs:\n%s"
                                 % (timeout, tail(self.log)))


# Tpcb-like, plus identity: pgbench keeps \set variables per client across
# transactions, so history's filler records "round-client-n" for the n-th
# transaction of a client in a round, which pgbench's log (-l) lists once
# it saw the commit acknowledged.
PGBENCH_SCRIPT = r"""\set n :n + 1
\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler)
  VALUES (:tid, :bid, :aid, :delta, now(),
          :r || '-' || :client_id || '-' || :n);
END;
"""
ROUND_WRITERS = 100     # writer id = round * 100 + client

Acks = Dict[int, List[Tuple[int, float]]]   # writer -> [(n, ack time)]


class PgbenchLoad(threading.Thread):
    """pgbench in one-second rounds until stopped: pgbench itself cannot
    be stopped early without losing its log, and rounds let the load last
    exactly as long as the snapshot needs, however slow the machine."""

    def __init__(self, pg: PgServer, workdir: str, clients: int = 4):
        super().__init__(name="pgbench", daemon=True)
        self.pg = pg
        self.workdir = workdir
        self.clients = clients
        self.script = os.path.join(workdir, "load.sql")
        with open(self.script, "w") as f:
            f.write(PGBENCH_SCRIPT)
        self.out = os.path.join(workdir, "pgbench.out")
        self.stop_event = threading.Event()
        self.rounds: List[float] = []     # start time of each finished one
        self.error: Optional[str] = None
        self.start()

    def run(self) -> None:
        r = 0
        while not self.stop_event.is_set():
            r += 1
            started = time.time()
            with open(self.out, "ab") as out:
                proc = subprocess.Popen(
                    as_user("postgres") + [
                        os.path.join(self.pg.bindir, "pgbench"), "-n", "-c",
                        str(self.clients), "-j", "1", "-T", "1", "-D", "n=0",
                        "-D", "r=%d" % r, "-f", self.script, "-l",
                        "--log-prefix", os.path.join(self.workdir,
                                                     "txlog-%d" % r)]
                    + self.pg.conn_args() + ["postgres"], stdout=out,
                    stderr=subprocess.STDOUT, env=user_env("postgres"),
                    cwd=self.workdir, start_new_session=True)
            if wait_or_kill(proc, 120) != 0:
                self.error = tail(self.out)
                return
            self.rounds.append(started)

    def halt(self, timeout: float = 120) -> None:
        """No new round; wait for the running one (idempotent)."""
        self.stop_event.set()
        self.join(timeout)

    def stop(self, after: float, timeout: float = 120) -> Acks:
        """Once a round that started after ``after`` has finished."""
        wait_until(lambda: self.error is not None
                   or any(t > after for t in self.rounds), timeout,
                   "a pgbench round after the snapshot")
        self.halt(timeout)
        assert self.error is None, self.error
        acks: Acks = {}
        for path in glob.glob(os.path.join(self.workdir, "txlog-*")):
            r = int(os.path.basename(path).split("-")[1].split(".")[0])
            with open(path) as f:
                for line in f:
                    client, n, _lat, _script, sec, usec = line.split()[:6]
                    writer = r * ROUND_WRITERS + int(client)
                    acks.setdefault(writer, []).append(
                        (int(n), int(sec) + int(usec) / 1e6))
        return acks


def pg_history(pg: PgServer) -> Dict[int, List[int]]:
    """Restored transactions: writer -> every n found in pgbench_history."""
    found: Dict[int, List[int]] = {}
    rows = pg.sql("SELECT trim(filler) FROM pgbench_history")
    for item in rows.split():
        r, client, n = (int(x) for x in item.split("-"))
        found.setdefault(r * ROUND_WRITERS + client, []).append(n)
    return found


def pg_balances_agree(pg: PgServer) -> bool:
    """TPC-B invariant: no transaction applied in part."""
    sums = pg.sql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
        " (SELECT sum(tbalance) FROM pgbench_tellers),"
        " (SELECT sum(bbalance) FROM pgbench_branches),"
        " (SELECT coalesce(sum(delta), 0) FROM pgbench_history)")
    return len(set(sums.split("|"))) == 1


# -- MariaDB ----------------------------------------------------------------

MARIADB_OPTIONS = (
    "--skip-networking", "--skip-name-resolve", "--log-bin=binlog",
    "--server-id=1", "--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1",
    "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=32M")


class MariaServer(Server):
    name = "mariadbd"

    def __init__(self, datadir: str, sockdir: str, log: str,
                 options: Sequence[str] = MARIADB_OPTIONS):
        self.datadir = datadir
        self.socket = os.path.join(sockdir, "mysqld.sock")
        assert len(self.socket) < 100, "socket path too long: " + self.socket
        # Started as root like the packaged service; --user drops to mysql.
        self.argv = ["mariadbd", "--no-defaults", "--user=mysql",
                     "--datadir=" + datadir, "--socket=" + self.socket,
                     "--pid-file=" + os.path.join(sockdir, "mysqld.pid")
                     ] + list(options)
        super().__init__(self.argv, "root", log)

    def client(self, *args: str) -> List[str]:
        return ["mariadb", "--no-defaults", "--socket=" + self.socket,
                "--batch", "--skip-column-names"] + list(args)

    def sql(self, query: str, timeout: float = 120) -> str:
        return checked(self.client("-e", query),
                       timeout=timeout).stdout.strip()

    def ping(self) -> bool:
        return subprocess.run(
            ["mariadb-admin", "--no-defaults", "--socket=" + self.socket,
             "ping"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=30).returncode == 0


def mariadb_install(datadir: str, log: str) -> None:
    with open(log, "ab") as out:
        res = subprocess.run(
            ["mariadb-install-db", "--no-defaults", "--user=mysql",
             "--datadir=" + datadir,
             "--auth-root-authentication-method=socket",
             "--skip-test-db", "--innodb-log-file-size=32M"],
            stdout=out, stderr=subprocess.STDOUT, cwd="/", timeout=120)
    assert res.returncode == 0, tail(log)


MARIADB_SCHEMA = """
CREATE DATABASE vms;
CREATE TABLE vms.txrows (writer INT, seq INT, part INT, payload VARCHAR(200),
  PRIMARY KEY (writer, seq, part)) ENGINE=InnoDB;
CREATE TABLE vms.counters (writer INT PRIMARY KEY, total INT) ENGINE=InnoDB;
"""
ROWS_PER_TX = 3


class RowWriter(threading.Thread):
    """One client session inserting numbered transactions: ROWS_PER_TX rows
    plus a counter update, then a SELECT that only answers once COMMIT has
    returned: that answer is the acknowledgement we record."""

    def __init__(self, server: MariaServer, writer: int):
        super().__init__(name="writer-%d" % writer, daemon=True)
        self.writer = writer
        self.acks: List[Tuple[int, float]] = []
        self.error: Optional[str] = None
        self.stop_event = threading.Event()
        self.proc = subprocess.Popen(
            server.client("--unbuffered", "--skip-reconnect"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1)

    def run(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        w = self.writer
        n = 0
        try:
            while not self.stop_event.is_set():
                n += 1
                values = ", ".join("(%d, %d, %d, REPEAT('x', 150))" % (w, n, p)
                                   for p in range(1, ROWS_PER_TX + 1))
                self.proc.stdin.write(
                    "START TRANSACTION;\n"
                    "INSERT INTO vms.txrows VALUES %s;\n"
                    "INSERT INTO vms.counters VALUES (%d, 1) ON DUPLICATE KEY"
                    " UPDATE total = total + 1;\n"
                    "COMMIT;\nSELECT 'ack %d';\n" % (values, w, n))
                line = self.proc.stdout.readline()
                if line.strip() != "ack %d" % n:
                    self.error = "unexpected reply %r" % line
                    return
                self.acks.append((n, time.time()))
        except (OSError, ValueError) as exc:
            self.error = str(exc)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(60)
        try:
            self.proc.communicate(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if self.error is None and self.is_alive():
            self.error = "writer did not stop"


class RowLoad:
    def __init__(self, server: MariaServer, writers: int = 3):
        self.writers = [RowWriter(server, w) for w in range(1, writers + 1)]
        self.halted = False
        for writer in self.writers:
            writer.start()

    def halt(self) -> None:
        """Stop every writer (idempotent)."""
        if not self.halted:
            self.halted = True
            for writer in self.writers:
                writer.finish()

    def stop(self) -> Acks:
        self.halt()
        errors = [w.error for w in self.writers if w.error]
        assert not errors, errors
        return {w.writer: w.acks for w in self.writers}


def mariadb_rows(server: MariaServer) -> Tuple[Dict[int, List[int]],
                                               List[str]]:
    """Restored transactions (writer -> seqs) and every sign of a partial
    one: a transaction with a missing row, or a counter that disagrees."""
    found: Dict[int, List[int]] = {}
    partial: List[str] = []
    for line in server.sql("SELECT writer, seq, COUNT(*) FROM vms.txrows "
                           "GROUP BY writer, seq").splitlines():
        w, n, parts = (int(x) for x in line.split())
        found.setdefault(w, []).append(n)
        if parts != ROWS_PER_TX:
            partial.append("writer %d tx %d has %d rows" % (w, n, parts))
    for line in server.sql("SELECT writer, total FROM vms.counters"
                           ).splitlines():
        w, total = (int(x) for x in line.split())
        if total != len(found.get(w, [])):
            partial.append("writer %d: counter %d, %d transactions"
                           % (w, total, len(found.get(w, []))))
    return found, partial


def read_state(path: str) -> Dict[str, str]:
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f
                    if "=" in line and not line.startswith("#"))


# -- what a restore must contain ---------------------------------------------

@dataclass
class Verdict:
    """Restored transactions against acknowledged ones. ``cutoff``: every
    transaction acknowledged before it must be there."""

    acked: int
    acked_before_cutoff: int
    acked_after_cutoff: int
    restored: int
    missing: List[Tuple[int, int]] = field(default_factory=list)
    unacknowledged: List[Tuple[int, int]] = field(default_factory=list)
    duplicates: List[Tuple[int, int]] = field(default_factory=list)
    gaps: List[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unacknowledged or self.duplicates
                    or self.gaps)

    def summary(self) -> str:
        return ("acknowledged %d (%d before the cutoff, %d after), restored "
                "%d; missing %d, never acknowledged %d, duplicated %d, "
                "gaps %d" % (self.acked, self.acked_before_cutoff,
                             self.acked_after_cutoff, self.restored,
                             len(self.missing), len(self.unacknowledged),
                             len(self.duplicates), len(self.gaps)))


def verdict(acks: Acks, restored: Dict[int, List[int]], cutoff: float
            ) -> Verdict:
    acked: Set[Tuple[int, int]] = {(w, n) for w, items in acks.items()
                                   for n, _ in items}
    before = {(w, n) for w, items in acks.items() for n, t in items
              if t < cutoff}
    after = {(w, n) for w, items in acks.items() for n, t in items
             if t >= cutoff}
    found = [(w, n) for w, ns in restored.items() for n in ns]
    found_set = set(found)
    v = Verdict(len(acked), len(before), len(after), len(found_set))
    v.missing = sorted(before - found_set)
    v.unacknowledged = sorted(found_set - acked)
    v.duplicates = sorted({x for x in found if found.count(x) > 1}) \
        if len(found) != len(found_set) else []
    # Each writer commits in order: what survives is 1..k, never a hole.
    for w, ns in restored.items():
        if sorted(set(ns)) != list(range(1, len(set(ns)) + 1)):
            v.gaps.append("writer %d: %d transactions, highest %d"
                          % (w, len(set(ns)), max(ns)))
    return v


def negative_control(db_name: str, report: dict,
                     restore: Callable[[], Server],
                     inspect: Callable[[Server], List[str]]) -> str:
    """Restore a snapshot taken without quiescer or freeze and say what
    came of it (printed, never asserted: it depends on timing)."""
    findings = ["report: consistency %s" % report.get("consistency")]
    try:
        server = restore()
    except AssertionError as exc:
        lines = str(exc).splitlines()
        errors = [line for line in lines
                  if any(m in line for m in ("ERROR", "FATAL", "PANIC"))]
        findings.append("restored server did not start: %s"
                        % " | ".join(errors[-3:] or lines[:1]))
    else:
        findings += inspect(server)
    line = "NEGATIVE CONTROL %s: %s" % (db_name, "; ".join(findings))
    print(line)
    return line


# -- the environment of one test ----------------------------------------------

class DbEnv:
    """Directories, servers, hooks, configs and snapshot copies of one test,
    all undone by ``stack`` in reverse order."""

    def __init__(self, tmp: Path, stack: ExitStack,
                 loopfs_factory: Callable[..., LoopFS]):
        self.tmp = tmp
        self.stack = stack
        self.loopfs_factory = loopfs_factory
        self.ports = iter(range(20000 + (os.getpid() % 5000) * 2, 65000))
        self.hooks = ""

    def dir(self, name: str, user: str = "root", mode: int = 0o700) -> str:
        pw = pwd.getpwnam(user)
        path = make_dir(self.tmp / name, mode, pw.pw_uid)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        return path

    def traversable(self, path: str) -> None:
        """Let the database users reach ``path``: search (x) permission for
        others on its ancestors (pytest makes them 0700); modes restored at
        teardown."""
        parts = Path(path).resolve().parents
        for parent in reversed(list(parts)):
            st = os.stat(parent)
            if st.st_uid == 0 and not st.st_mode & stat.S_IXOTH:
                self.stack.callback(os.chmod, str(parent),
                                    stat.S_IMODE(st.st_mode))
                os.chmod(str(parent), stat.S_IMODE(st.st_mode) | 0o011)

    def data_fs(self) -> LoopFS:
        fs = self.loopfs_factory("ext4", size_mb=DATA_FS_MB)
        self.traversable(os.path.join(fs.mountpoint, "x"))
        return fs

    def install_hooks(self) -> str:
        """The shipped hooks copied where vmsnapshot trusts them (root,
        0700), as the packages install them under /usr/share."""
        if self.hooks:
            return self.hooks
        self.hooks = self.dir("hooks")
        make_dir(os.path.join(self.hooks, "lib"), 0o700)
        for name in ("postgresql", "mariadb", "lib/session.sh"):
            dest = os.path.join(self.hooks, name)
            shutil.copyfile(os.path.join(HOOKS, name), dest)
            os.chmod(dest, 0o700)
        return self.hooks

    def hook(self, name: str) -> str:
        return os.path.join(self.install_hooks(), name)

    def config(self, plugins: Sequence[Dict[str, object]],
               freeze: bool = True) -> str:
        """A native TOML config (root, 0600); TOML basic strings accept
        JSON's escapes, so json.dumps quotes values."""
        lines = ["[freeze]", "enabled = %s" % str(freeze).lower(),
                 "timeout = 60", ""]
        for plugin in plugins:
            lines.append("[[plugin]]")
            for key, value in plugin.items():
                lines.append("%s = %s" % (key, json.dumps(value)))
            lines.append("")
        path = str(self.tmp / ("vmsnapshot-%d.toml" % len(list(
            self.tmp.glob("vmsnapshot-*.toml")))))
        with open(path, "w") as f:
            f.write("\n".join(lines))
        os.chmod(path, 0o600)
        return path

    def snapshot(self, config: str, fs: LoopFS) -> Tuple[dict, str]:
        """The cycle under test; the image copy lives outside the frozen
        filesystem. Returns the JSON report and the copy."""
        copy = str(self.tmp / "snapshot.img")
        if os.path.exists(copy):
            os.unlink(copy)
        report = run_json("run", "--config", config, "--mount", fs.mountpoint,
                          "--json", "--", "cp", "--sparse=always", fs.image,
                          copy, timeout=300)
        return report, copy

    def mount_copy(self, image: str) -> str:
        """Attach the copy to a new loop device and mount it (journal replay
        included, as a restored VM would); undone at teardown."""
        mountpoint = os.path.join(str(self.tmp), "restored")
        os.makedirs(mountpoint, exist_ok=True)
        device = run("losetup", "--find", "--show", image).stdout.strip()
        lfs = LoopFS("ext4", image, device, mountpoint)
        self.stack.callback(destroy_loopfs, lfs)
        run("mount", "-t", "ext4", device, mountpoint)
        self.traversable(os.path.join(mountpoint, "x"))
        return mountpoint

    def fresh_datadir(self, kind: str, datadir: str, owner: str,
                      make: Callable[[str], None]) -> None:
        """A newly initialised data directory at ``datadir``: made once per
        session by ``make`` and copied (owners kept), as initdb and
        mariadb-install-db take seconds each."""
        template = os.path.join(str(self.tmp.parent), "db-templates", kind)
        if not os.path.isdir(template):
            os.makedirs(os.path.dirname(template), mode=0o711, exist_ok=True)
            self.traversable(template)
            shutil.rmtree(template + ".new", ignore_errors=True)
            pw = pwd.getpwnam(owner)
            os.mkdir(template + ".new", 0o700)
            os.chown(template + ".new", pw.pw_uid, pw.pw_gid)
            make(template + ".new")
            os.rename(template + ".new", template)
        checked(["cp", "-a", "--", template, datadir])

    def hold(self, argv: Sequence[str], **kw) -> "HeldProcess":
        """Run a hook as vmsnapshot holds it; killed at teardown if a test
        fails while it holds."""
        held = HeldProcess(argv, **kw)
        self.stack.callback(held.close)
        return held

    def pgbench(self, pg: PgServer) -> PgbenchLoad:
        load = PgbenchLoad(pg, self.dir("pgbench", "postgres"))
        self.stack.callback(load.halt)
        return load

    def row_load(self, server: MariaServer) -> RowLoad:
        load = RowLoad(server)
        self.stack.callback(load.halt)
        return load

    # -- servers
    def start(self, server: Server) -> Server:
        self.stack.callback(server.stop)
        server.wait_ready()
        return server

    def postgres(self, datadir: str, settings: Sequence[str] = (),
                 init: bool = False) -> PgServer:
        bindir = pg_bindir()
        if init:
            initdb = [os.path.join(bindir, "initdb"), "-U", "postgres",
                      "--auth-local=peer", "--auth-host=scram-sha-256",
                      "--no-sync", "-D"]
            self.fresh_datadir("postgres", datadir, "postgres", lambda path:
                               checked(as_user("postgres") + initdb + [path],
                                       env=user_env("postgres"), cwd="/"))
        n = next(self.ports)
        sockdir = self.dir("pgsock%d" % n, "postgres")
        log = str(self.tmp / ("postgres-%d.log" % n))
        server = PgServer(bindir, datadir, sockdir, n, log, settings)
        self.start(server)
        return server

    def mariadb(self, datadir: str, init: bool = False) -> MariaServer:
        n = next(self.ports)
        log = str(self.tmp / ("mariadb-%d.log" % n))
        if init:
            self.fresh_datadir("mariadb", datadir, "mysql",
                               lambda path: mariadb_install(path, log))
        sockdir = self.dir("mysock%d" % n, "mysql", 0o755)
        server = MariaServer(datadir, sockdir, log)
        self.start(server)
        return server


@pytest.fixture
def db_env(loopfs_factory, tmp_path: Path) -> Iterator[DbEnv]:
    """Requires loopfs_factory first, so this unwinds (servers stopped,
    copies unmounted) before the loop filesystems are destroyed."""
    with ExitStack() as stack:
        yield DbEnv(tmp_path, stack, loopfs_factory)


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
