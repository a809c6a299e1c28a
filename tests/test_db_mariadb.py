"""hooks/mariadb against a real MariaDB server: the lock really holds until
EOF, and a snapshot taken by ``vmsnapshot run`` under a write load restores
to a server that starts, passes mariadb-check, holds every transaction
acknowledged before READY and no partial one, and whose binary log ends at
the position the hook recorded."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import List

import pytest

from tests.helpers.cli import ROOT, vmsnapshot_cmd
from tests.helpers.db import DbEnv
from tests.helpers.dbmariadb import MARIADB_SCHEMA, MariaServer, mariadb_rows
from tests.helpers.dbproc import (checked, example_plugins, need, read_state,
                                  wait_or_kill)
from tests.helpers.dbverdict import negative_control, verdict
from tests.helpers.loopfs import LoopFS, is_frozen
from tests.helpers.scripts import child_pids
from tests.helpers.wait import wait_until

pytestmark = [pytest.mark.db, pytest.mark.root]

TOOLS = ("mariadbd", "mariadb", "mariadb-install-db", "mariadb-admin",
         "mariadb-check", "setpriv")


@dataclass
class Db:
    env: DbEnv
    fs: LoopFS
    server: MariaServer
    state: str

    def hook(self, *args: str) -> list:
        return [self.env.hook("mariadb"), *args, "--socket",
                self.server.socket, "--state-dir", self.state]


@pytest.fixture
def db(db_env: DbEnv) -> Db:
    need(TOOLS, "mysql")
    fs = db_env.data_fs()
    server = db_env.mariadb(os.path.join(fs.mountpoint, "mysql"), init=True)
    server.sql(MARIADB_SCHEMA)
    return Db(db_env, fs, server, db_env.dir("state"))


def test_lock_holds_until_eof(db: Db):
    held = db.env.hold(db.hook("pre"))
    assert held.ready_line == "READY"
    recorded = read_state(os.path.join(db.state, "binlog-position"))
    status = db.server.sql("SHOW MASTER STATUS").split("\t")
    assert (recorded["binlog_file"], recorded["binlog_position"]) == \
        (status[0], status[1])
    assert recorded["gtid"] == db.server.sql("SELECT @@gtid_binlog_pos")

    writer = subprocess.Popen(db.server.client(
        "-e", "INSERT INTO vms.counters VALUES (99, 1)"))
    try:
        time.sleep(1.5)
        assert writer.poll() is None, "a write went through the lock"
        waiting = db.server.sql("SELECT state FROM information_schema."
                                "processlist WHERE info LIKE 'INSERT%'")
        assert "lock" in waiting.lower(), waiting
        rc, err = held.release()
        assert rc == 0, err
        assert writer.wait(10) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert "released" in err
    assert db.server.sql("SELECT total FROM vms.counters WHERE writer = 99") \
        == "1"


def test_lost_session_is_reported(db: Db):
    held = db.env.hold(db.hook("pre"))
    assert held.ready_line == "READY"
    ids = db.server.sql("SELECT id FROM information_schema.processlist WHERE"
                        " command = 'Sleep' AND id <> CONNECTION_ID()")
    for session in ids.split():
        db.server.sql("KILL %s" % session)
    rc, err = held.finish(timeout=20)    # noticed by the next ping
    assert rc == 3, err
    assert "the lock was lost" in err


def test_refuses_to_run_unheld(db: Db):
    res = subprocess.run(db.hook("pre"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=30)
    assert res.returncode == 1
    assert "READY" not in res.stdout
    assert "configure this plugin with hold = true" in res.stderr


def test_credentials_file_never_on_the_command_line(db: Db):
    secret = "s3cret-vms-%d" % os.getpid()
    db.server.sql("CREATE USER vmsbackup@localhost IDENTIFIED BY '%s'; "
                  "GRANT RELOAD, BINLOG MONITOR ON *.* TO vmsbackup@localhost"
                  % secret)
    creds = os.path.join(db.state, "client.cnf")
    with open(creds, "w") as f:
        f.write("[client]\nuser=vmsbackup\npassword=%s\n" % secret)
    os.chmod(creds, 0o644)
    res = subprocess.run(db.hook("pre", "--credentials", creds),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=30)
    assert res.returncode == 1 and "chmod 600" in res.stderr, res.stderr

    os.chmod(creds, 0o600)
    held = db.env.hold(db.hook("pre", "--credentials", creds))
    assert held.ready_line == "READY"
    cmdlines = all_command_lines()
    rc, err = held.release()
    assert rc == 0, err
    assert "--defaults-extra-file=" + creds in cmdlines
    assert secret not in cmdlines


def command_line(pid: int) -> str:
    """What ps shows of a process, untruncated ("" once gone)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8",
                                                         "replace").strip()
    except OSError:
        return ""


def all_command_lines() -> str:
    return "\n".join(command_line(int(pid)) for pid in os.listdir("/proc")
                     if pid.isdigit())


def test_killed_supervisor_never_leaves_the_server_locked(db: Db):
    """SIGKILL to vmsnapshot in the middle of the snapshot: the hook reads
    EOF on its stdin and unlocks; the guardian thaws the filesystem."""
    config = db.env.config([{"name": "mariadb", "pre": db.hook("pre"),
                             "hold": True, "timeout": 60}])
    run = subprocess.Popen(vmsnapshot_cmd(
        "run", "--config", config, "--mount", db.fs.mountpoint, "--",
        "sleep", "60"), cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    snapshot: List[int] = []

    def snapshot_started() -> bool:
        snapshot[:] = [pid for pid in child_pids(run.pid)
                       if command_line(pid) == "sleep 60"]
        return bool(snapshot)

    try:
        wait_until(snapshot_started, 30, "the snapshot command")
        assert is_frozen(db.fs.mountpoint)
        writer = subprocess.Popen(db.server.client(
            "-e", "INSERT INTO vms.counters VALUES (99, 1)"))
        time.sleep(1)
        assert writer.poll() is None, "a write went through the lock"
        run.kill()
        assert wait_or_kill(writer, 20) == 0
    finally:
        run.kill()
        run.wait()
        for pid in snapshot:    # in its own session: not killed with us
            if command_line(pid) == "sleep 60":
                os.kill(pid, signal.SIGKILL)
    assert not is_frozen(db.fs.mountpoint)
    assert db.server.sql("SELECT total FROM vms.counters WHERE writer = 99") \
        == "1"


def snapshot_under_load(db: Db, config: str):
    """Load, snapshot, more load, stop: (report, copy, acks, run start)."""
    load = db.env.row_load(db.server)
    wait_until(lambda: min(len(w.acks) for w in load.writers) >= 20, 30,
               "the load")
    started = time.time()
    report, copy = db.env.snapshot(config, db.fs)
    count = sum(len(w.acks) for w in load.writers)
    wait_until(lambda: sum(len(w.acks) for w in load.writers) >= count + 20,
               30, "acknowledgements after the snapshot")
    acks = load.stop()
    db.server.stop()
    return report, copy, acks, started


def restore(db: Db, copy: str) -> MariaServer:
    mountpoint = db.env.mount_copy(copy)
    return db.env.mariadb(os.path.join(mountpoint, "mysql"))


def check_tables(server: MariaServer) -> str:
    """mariadb-check --extended; returns the lines that are not OK."""
    out = checked(["mariadb-check", "--no-defaults", "--socket=" +
                   server.socket, "--all-databases", "--extended"]).stdout
    return "\n".join(line for line in out.splitlines()
                     if not line.rstrip().endswith("OK"))


def test_snapshot_under_load_restores_acknowledged_transactions(db: Db):
    hook = db.env.hook("mariadb")
    config = db.env.config([{
        "name": "mariadb", "pre": db.hook("pre"), "post": db.hook("post"),
        "hold": True, "timeout": 60}])
    report, copy, acks, _ = snapshot_under_load(db, config)
    assert report["consistency"] == "application", report
    assert report["snapshot"]["finished_while_frozen"], report
    pre = [s for s in report["scripts"] if s["phase"] == "pre"]
    assert pre and pre[0]["path"] == hook and pre[0]["returncode"] == 0

    state = os.path.join(db.state, "binlog-position")
    recorded = read_state(state)
    # Written after FLUSH TABLES WITH READ LOCK, just before READY (its
    # coarse mtime is never later than the write itself).
    cutoff = os.stat(state).st_mtime

    restored = restore(db, copy)
    assert check_tables(restored) == ""
    found, partial = mariadb_rows(restored)
    assert partial == []
    v = verdict(acks, found, cutoff)
    print("mariadb snapshot under load: " + v.summary())
    assert v.acked_before_cutoff > 0 and v.acked_after_cutoff > 0, \
        "the load did not span the snapshot: " + v.summary()
    assert v.exact, v.summary()

    # The copy ends exactly where the lock was taken: the recorded binlog
    # file's last event ends at the recorded position, and the restored
    # server's GTID state is the recorded one.
    events = restored.sql("SHOW BINLOG EVENTS IN '%s'"
                          % recorded["binlog_file"]).splitlines()
    last_end = events[-1].split("\t")[4]
    assert last_end == recorded["binlog_position"], events[-3:]
    assert restored.sql("SELECT @@gtid_binlog_pos") == recorded["gtid"]


def test_mariadb_negative_control_without_quiescer_or_freeze(db: Db):
    """No hook, fsFreezeEnabled false: the copy is taken while the server
    writes. Reported, not asserted: what breaks depends on timing."""
    config = db.env.config([], freeze=False)
    report, copy, acks, started = snapshot_under_load(db, config)

    def inspect(restored: MariaServer) -> List[str]:
        found, partial = mariadb_rows(restored)
        return ["mariadb-check: %s" % (check_tables(restored) or "all OK"),
                "partial transactions: %d" % len(partial),
                verdict(acks, found, started).summary()
                + " (cutoff: start of the run)"]

    negative_control("mariadb", report, lambda: restore(db, copy), inspect)


def sql_thread(server: MariaServer) -> str:
    status = checked(server.client("--column-names", "-e",
                                   "SHOW SLAVE STATUS\\G")).stdout
    return [line.split(":", 1)[1].strip() for line in status.splitlines()
            if line.strip().startswith("Slave_SQL_Running:")][0]


def test_replica_mode_stops_and_restarts_the_sql_thread(db: Db):
    # A replica whose primary is unreachable still runs its SQL thread.
    db.server.sql("CHANGE MASTER TO MASTER_HOST = '127.0.0.1', "
                  "MASTER_PORT = 9; START SLAVE SQL_THREAD")
    wait_until(lambda: sql_thread(db.server) == "Yes", 30, "the SQL thread")
    marker = os.path.join(db.state, "sql-thread-stopped")

    held = db.env.hold(db.hook("pre", "--replica"))
    assert held.ready_line == "READY"
    assert sql_thread(db.server) == "No"
    assert os.path.exists(marker)
    with open(os.path.join(db.state, "replica-status")) as f:
        assert "Slave_SQL_Running: No" in f.read()
    rc, err = held.release()
    assert rc == 0, err
    assert sql_thread(db.server) == "Yes"
    assert not os.path.exists(marker)

    # A held pre killed outright: its session dies (the lock with it), the
    # SQL thread stays stopped, and post starts it again.
    held = db.env.hold(db.hook("pre", "--replica"))
    assert held.ready_line == "READY"
    os.killpg(held.proc.pid, signal.SIGKILL)
    held.finish()
    assert sql_thread(db.server) == "No"
    checked(db.hook("post", "--replica"))
    assert sql_thread(db.server) == "Yes"
    assert not os.path.exists(marker)
    db.server.sql("STOP SLAVE; RESET SLAVE ALL")


@pytest.mark.parametrize("name", ["mariadb.toml", "mariadb-replica.toml"])
def test_mariadb_example_config(name: str):
    plugins = example_plugins(name)
    assert [p.hold for p in plugins] == [True]
