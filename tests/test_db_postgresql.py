"""hooks/postgresql against a real PostgreSQL server: CHECKPOINT mode, the
held non-exclusive backup, and snapshots taken by ``vmsnapshot run`` under
pgbench that restore, by both documented procedures, to a server that
starts, passes pg_amcheck, holds every transaction acknowledged before the
snapshot and no partial one."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import List, Sequence

import pytest

from tests.helpers.db import DbEnv
from tests.helpers.dbpostgres import PgServer, pg_balances_agree, pg_history
from tests.helpers.dbproc import checked, example_plugins, need, read_state
from tests.helpers.dbverdict import negative_control, verdict
from tests.helpers.loopfs import LoopFS
from tests.helpers.wait import wait_until

pytestmark = [pytest.mark.db, pytest.mark.root]

SETTINGS = ("max_wal_size=64MB", "min_wal_size=32MB", "archive_mode=on")


@dataclass
class Db:
    env: DbEnv
    fs: LoopFS
    server: PgServer
    state: str
    archive: str

    def hook(self, *args: str) -> List[str]:
        return [self.env.hook("postgresql"), *args, "--host",
                self.server.sockdir, "--port", str(self.server.port),
                "--state-dir", self.state]


@pytest.fixture
def db(db_env: DbEnv) -> Db:
    need(("psql", "setpriv"), "postgres")
    fs = db_env.data_fs()
    archive = db_env.dir("archive", "postgres")
    # The archive lives outside the frozen filesystem, as it must.
    server = db_env.postgres(
        os.path.join(fs.mountpoint, "pgdata"), init=True, settings=SETTINGS + (
            "archive_command=test ! -f %s/%%f && cp %%p %s/%%f"
            % (archive, archive),))
    server.tool("pgbench", "-i", "-s", "1", "-q", "postgres")
    return Db(db_env, fs, server, db_env.dir("state"), archive)


def checkpoint_lsn(server: PgServer) -> str:
    return server.sql("SELECT checkpoint_lsn FROM pg_control_checkpoint()")


def test_checkpoint_mode(db: Db):
    before = checkpoint_lsn(db.server)
    db.server.sql("CREATE TABLE t (i int); INSERT INTO t VALUES (1)")
    res = subprocess.run(db.hook("pre"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "checkpoint done" in res.stderr
    assert res.stdout == ""      # unheld: no READY
    assert checkpoint_lsn(db.server) != before

    # Held anyway (hold = true): READY, then it waits for EOF.
    held = db.env.hold(db.hook("pre"), env={"VMSNAPSHOT_HOLD": "1"})
    assert held.ready_line == "READY"
    time.sleep(1.2)
    assert held.proc.poll() is None
    rc, err = held.release()
    assert rc == 0, err


def test_backup_mode_holds_the_backup_until_eof(db: Db):
    held = db.env.hold(db.hook("pre", "--mode", "backup", "--label",
                               "vms-test"))
    assert held.ready_line == "READY"
    info = read_state(os.path.join(db.state, "vms-test", "backup_start"))
    assert info["label"] == "vms-test"
    # The backup lives in the hook's session, idle while held.
    sessions = db.server.sql(
        "SELECT state FROM pg_stat_activity WHERE query LIKE "
        "'SELECT pg_%start_backup(''vms-test''%' OR query LIKE "
        "'SELECT pg_backup_start(''vms-test''%'")
    assert sessions == "idle", sessions
    assert not os.path.exists(os.path.join(db.state, "vms-test",
                                           "backup_label"))
    rc, err = held.release()
    assert rc == 0, err

    label = open(os.path.join(db.state, "latest", "backup_label")).read()
    assert "LABEL: vms-test\n" in label
    assert "START WAL LOCATION: %s " % info["start_lsn"] in label
    stop = read_state(os.path.join(db.state, "vms-test", "backup_stop"))
    assert "backup vms-test stopped at %s" % stop["stop_lsn"] in err


def test_backup_mode_lost_session_is_reported(db: Db):
    held = db.env.hold(db.hook("pre", "--mode", "backup"))
    assert held.ready_line == "READY"
    db.server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE query LIKE 'SELECT pg_backup_start%' "
                  "AND pid <> pg_backend_pid()")
    rc, err = held.finish(timeout=20)
    assert rc == 3, err
    assert "the backup was aborted" in err


def test_backup_mode_refuses_to_run_unheld(db: Db):
    res = subprocess.run(db.hook("pre", "--mode", "backup"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=30)
    assert res.returncode == 1
    assert "configure this plugin with hold = true" in res.stderr


def snapshot_under_load(db: Db, config: str):
    """pgbench, snapshot, pgbench goes on, server stopped:
    (report, copy, acks, start of the run)."""
    load = db.env.pgbench(db.server)
    wait_until(lambda: int(db.server.sql(
        "SELECT count(*) FROM pgbench_history")) >= 30, 30,
        "pgbench's progress")
    started = time.time()
    report, copy = db.env.snapshot(config, db.fs)
    acks = load.stop(after=time.time())
    db.server.stop()
    return report, copy, acks, started


def restore(db: Db, copy: str, settings: Sequence[str] = (),
            prepare=None) -> PgServer:
    """Procedure A by default: start on the restored copy, crash recovery.
    On a restored VM no process has the pid in postmaster.pid; here the
    original server's pid may have been reused, so the file goes."""
    datadir = os.path.join(db.env.mount_copy(copy), "pgdata")
    os.unlink(os.path.join(datadir, "postmaster.pid"))
    if prepare is not None:
        prepare(datadir)
    return db.env.postgres(datadir, settings=("archive_mode=off",)
                           + tuple(settings))


def amcheck(server: PgServer) -> None:
    server.tool("pg_amcheck", "--all", "--heapallindexed",
                "--install-missing", timeout=300)


def check_restored(db: Db, server: PgServer, acks, cutoff: float,
                   what: str) -> None:
    amcheck(server)
    assert pg_balances_agree(server), "a transaction was applied in part"
    v = verdict(acks, pg_history(server), cutoff)
    print("postgresql %s: %s" % (what, v.summary()))
    assert v.acked_before_cutoff > 0 and v.acked_after_cutoff > 0, \
        "the load did not span the snapshot: " + v.summary()
    assert v.exact, v.summary()


def test_snapshot_checkpoint_mode_restores_by_crash_recovery(db: Db):
    config = db.env.config([{"name": "postgresql", "pre": db.hook("pre"),
                             "post": db.hook("post"), "timeout": 60}])
    report, copy, acks, started = snapshot_under_load(db, config)
    assert report["consistency"] == "application", report
    assert report["snapshot"]["finished_while_frozen"], report
    server = restore(db, copy)
    # No READY without hold: every transaction acknowledged before the run
    # started (so before the freeze) must be there.
    check_restored(db, server, acks, started, "checkpoint mode")


def test_snapshot_backup_mode_restores_from_label_and_archive(db: Db):
    """Procedure B, for volumes snapshotted one after the other: the WAL
    in the snapshot is not trusted (removed here), the saved backup_label
    is put back and recovery replays the archive up to the end of the
    backup (recovery_target = 'immediate': the state of the snapshot)."""
    config = db.env.config([{
        "name": "postgresql", "pre": db.hook("pre", "--mode", "backup"),
        "post": db.hook("post"), "hold": True, "timeout": 60}])
    report, copy, acks, _ = snapshot_under_load(db, config)
    assert report["consistency"] == "application", report
    assert report["snapshot"]["finished_while_frozen"], report
    label_dir = os.path.realpath(os.path.join(db.state, "latest"))
    # Written right before READY.
    cutoff = os.stat(os.path.join(label_dir, "backup_start")).st_mtime

    def prepare(datadir: str) -> None:
        wal = os.path.join(datadir, "pg_wal")
        for name in os.listdir(wal):
            if name != "archive_status":
                os.unlink(os.path.join(wal, name))
        for name in ("backup_label", "tablespace_map"):
            if os.path.exists(os.path.join(label_dir, name)):
                shutil.copyfile(os.path.join(label_dir, name),
                                os.path.join(datadir, name))
        open(os.path.join(datadir, "recovery.signal"), "w").close()
        checked(["chown", "-R", "postgres:postgres", datadir])

    server = restore(db, copy, settings=(
        "restore_command=cp %s/%%f %%p" % db.archive,
        "recovery_target=immediate", "recovery_target_action=promote"),
        prepare=prepare)
    server.wait_primary()
    check_restored(db, server, acks, cutoff, "backup mode")


def test_postgresql_negative_control_without_quiescer_or_freeze(db: Db):
    """No hook, fsFreezeEnabled false: the copy is taken while the server
    writes. Reported, not asserted: what breaks depends on timing."""
    config = db.env.config([], freeze=False)
    report, copy, acks, started = snapshot_under_load(db, config)

    def inspect(server: PgServer) -> List[str]:
        try:
            amcheck(server)
            findings = ["pg_amcheck: OK"]
        except AssertionError as exc:
            findings = ["pg_amcheck: %s" % str(exc).splitlines()[1:3]]
        return findings + [
            "balances agree: %s" % pg_balances_agree(server),
            verdict(acks, pg_history(server), started).summary()
            + " (cutoff: start of the run)"]

    negative_control("postgresql", report, lambda: restore(db, copy),
                     inspect)


@pytest.mark.parametrize("name, hold", [("postgresql.toml", False),
                                        ("postgresql-backup.toml", True)])
def test_postgresql_example_config(name: str, hold: bool):
    plugins = example_plugins(name)
    assert [p.hold for p in plugins] == [hold]
    pre = list(plugins[0].pre or ())
    assert pre[pre.index("--mode") + 1] == ("backup" if hold else "checkpoint")
