"""Who, when and where of one run: the metadata every report carries
(design.md, "Status report"), so a report found in the journal, the history
or a fleet's metrics says which run, host and version it came from."""
from __future__ import annotations

import datetime
import os
from typing import Any, Dict, Optional, Sequence, Tuple

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot import __version__


def rfc3339(when: datetime.datetime) -> str:
    """UTC with milliseconds and a Z: 2026-11-29T20:00:00.123Z."""
    when = when.astimezone(datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (
        when.microsecond // 1000)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@frozen_record
class RunMeta:
    """Which run, host and version a report comes from."""

    run_id: str
    trigger: str                 # "run", "hook", "pre/post", an adapter
    started_at: str              # RFC 3339 UTC
    ended_at: str
    hostname: str
    version: str
    config_sources: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"run_id": self.run_id, "trigger": self.trigger,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "hostname": self.hostname, "version": self.version,
                "config_sources": list(self.config_sources)}


def new_run_id() -> str:
    """A random (version 4) UUID in hex, as uuid.uuid4().hex, without the
    uuid module (it imports platform: ~4 ms of every run, issue 15)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40     # version 4
    b[8] = (b[8] & 0x3F) | 0x80     # RFC 4122 variant
    return b.hex()


def finish(trigger: str, started: datetime.datetime,
           sources: Sequence[str] = (),
           run_id: Optional[str] = None) -> RunMeta:
    """The metadata of a run that started at STARTED, read the
    configuration files SOURCES and ends now."""
    return RunMeta(
        run_id=run_id or new_run_id(), trigger=trigger,
        started_at=rfc3339(started), ended_at=rfc3339(utcnow()),
        hostname=os.uname().nodename, version=__version__,
        config_sources=tuple(sources))
