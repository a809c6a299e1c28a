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

The fixture `db_env` reaches every test through tests/conftest.py; the
servers, loads and verdicts live in dbproc, dbpostgres, dbmariadb and
dbverdict.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Dict, Iterator, Sequence, Tuple

import pytest

from tests.helpers.cli import run_json
from tests.helpers.dbmariadb import MariaServer, RowLoad, mariadb_install
from tests.helpers.dbpostgres import PgbenchLoad, PgServer, pg_bindir
from tests.helpers.dbproc import (HOOKS, HeldProcess, Server, as_user,
                                  checked, user_env)
from tests.helpers.loopfs import LoopFS, destroy_loopfs, mount_image
from tests.helpers.scripts import make_dir

DATA_FS_MB = 512      # sparse; room for WAL/redo growth under load


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
        lfs = mount_image(image, mountpoint, fstype="ext4")
        self.stack.callback(destroy_loopfs, lfs)
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
