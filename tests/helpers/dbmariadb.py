"""MariaDB for the database tests: a server on a private socket, writers
whose every acknowledged transaction is known, and what a restored copy
holds."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from tests.helpers.dbproc import Server, checked, tail
from tests.helpers.dbverdict import Acks


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
