"""PostgreSQL for the database tests: a server on a private socket, a
pgbench load whose every acknowledged transaction is known, and what a
restored copy holds."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import threading
import time
from typing import Dict, List, Optional, Sequence

from tests.helpers.dbproc import (START_TIMEOUT, Server, as_user, checked,
                                  tail, user_env, wait_or_kill)
from tests.helpers.dbverdict import Acks
from tests.helpers.require import skip_or_fail
from tests.helpers.wait import poll, wait_until


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
