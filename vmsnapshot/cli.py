"""Command line: parse argv and dispatch to vmsnapshot.commands.*.

Each command is a function taking explicit arguments and returning an exit
status; errors are handled once, in vmsnapshot.commands.run and here.
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
from typing import Any, List, Optional, Sequence

from vmsnapshot import logs

log = logs.get("vmsnapshot")


def _parser() -> argparse.ArgumentParser:
    """The whole grammar (tests, docs)."""
    from vmsnapshot.commands.parser import build
    return build()


def _setup_logging(verbose: int) -> None:
    """Recorded, not applied: logging is imported only when a message at
    or above the level is emitted (vmsnapshot.logs)."""
    level = logs.WARNING - 10 * min(verbose, 2)
    stream = sys.stderr

    def setup(logging: Any) -> None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("vmsnapshot: %(levelname)s: "
                                               "%(message)s"))
        root = logging.getLogger()
        root.handlers = [handler]
        root.setLevel(level)

    logs.configure(level, setup)


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Nothing may be written while filesystems are frozen, not even .pyc.
    sys.dont_write_bytecode = True
    from vmsnapshot.commands.parser import parse
    args = parse(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.verbose + args.sub_verbose)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        from vmsnapshot import exitstatus
        return exitstatus.INTERRUPTED
    except BrokenPipeError:
        # `vmsnapshot mounts | head`: the reader left; say nothing more and
        # keep Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        from vmsnapshot import exitstatus
        return exitstatus.BROKEN_PIPE
    except Exception as e:  # a bug: one short line, the traceback logged
        from vmsnapshot import exitstatus
        from vmsnapshot.results import internal_error
        where = internal_error(e, "vmsnapshot " + args.command)
        print("vmsnapshot: internal error: %s: %s (traceback %s)" % (
            type(e).__name__, e,
            {"journal": "in the journal: journalctl -t vmsnapshot",
             "syslog": "in syslog (vmsnapshot)"}.get(where, "above")),
            file=sys.stderr)
        return exitstatus.INTERNAL


def entry() -> None:
    """The console script and `python -m vmsnapshot`: main(), then leave
    without the interpreter's teardown (10-15 ms of freeing modules that
    nothing needs: the report is written, every file closed).  atexit
    handlers still run (logging's flush among them); a normal exit is kept
    when another non-daemon thread is alive, since it would wait for it."""
    code = main()
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    import threading
    if run_exitfuncs is None or any(
            t.is_alive() and not t.daemon for t in threading.enumerate()
            if t is not threading.main_thread()):
        raise SystemExit(code)
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            code = code or 1
    os._exit(code)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "mounts":
        from vmsnapshot.commands.mounts import mounts_command
        return mounts_command(args.json, args.mount, args.exclude,
                              show_all=args.all, config_path=args.config)
    if args.command == "check":
        from vmsnapshot.commands.check import check_command
        return check_command(args.config)
    if args.command == "run":
        from vmsnapshot.commands.run import run_command
        return run_command(config_path=args.config, mounts=args.mount,
                           exclude=args.exclude,
                           freeze_timeout=args.freeze_timeout,
                           json_output=args.json,
                           status_file=args.status_file,
                           snapshot=_strip_dashdash(args.snapshot),
                           require=args.require)
    if args.command == "thaw":
        from vmsnapshot.commands.thaw import thaw_command
        return thaw_command(args.recover, json_output=args.json)
    if args.command == "pre":
        from vmsnapshot.commands.split import pre_command
        return pre_command(args.config, args.mount, args.exclude,
                           args.freeze_timeout, args.no_freeze, args.trigger)
    if args.command == "post":
        from vmsnapshot.commands.split import post_command
        return post_command(args.failed, args.require, args.json,
                            args.status_file)
    if args.command == "__holder":     # started by `pre` through systemd-run
        from vmsnapshot.cycle.holder import HolderArgs, hold
        return hold(HolderArgs.loads(args.args), args.notify)
    if args.command == "hook":
        from vmsnapshot.commands.hook import hook_command
        return hook_command(args.action, args.config)
    if args.command == "status":
        from vmsnapshot.commands.status import status_command
        return status_command(args.json, args.n)
    if args.command == "azure":
        from vmsnapshot.commands.azure import azure_command
        return azure_command(args.action, args.root, args.timeout)
    raise AssertionError(args.command)


def _strip_dashdash(argv: List[str]) -> List[str]:
    return argv[1:] if argv[:1] == ["--"] else argv
