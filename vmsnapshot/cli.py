"""Command line: parse argv and dispatch to vmsnapshot.commands.*.

Each command is a function taking explicit arguments and returning an exit
status; errors are handled once, in vmsnapshot.commands.run and here.
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

from vmsnapshot import __version__

if TYPE_CHECKING:
    from vmsnapshot.config import FreezeSettings

log = logging.getLogger("vmsnapshot")

EXIT_INTERNAL = 70      # EX_SOFTWARE: a bug, not a failed snapshot
COMMANDS = ("mounts", "check", "run", "thaw", "hook")


def _command_in(argv: Sequence[str]) -> Optional[str]:
    """The command named in argv (the first word that is not an option),
    if it is one of ours: only its parser is built then."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line, or with ONLY just that command's parser
    (building all five costs `run` ~5 ms of its fixed cost); usage
    errors and --help without a command see every command."""
    p = argparse.ArgumentParser(
        prog="vmsnapshot",
        description="Application-consistent snapshots: pre-scripts, "
                    "filesystem freeze, snapshot, thaw, post-scripts.")
    p.add_argument("--version", action="version",
                   version="vmsnapshot " + __version__)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output on stderr (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def selection(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--mount", action="append", default=[],
                        metavar="PATH",
                        help="freeze only this mount point (repeatable)")
        sp.add_argument("--exclude", action="append", default=[],
                        metavar="GLOB",
                        help="never freeze mounts matching GLOB (repeatable)")

    def wanted(name: str) -> bool:
        return only is None or only == name

    if wanted("mounts"):
        sp = sub.add_parser("mounts",
                            help="list mounts and what would be frozen")
        sp.add_argument("--json", action="store_true")
        sp.add_argument("--config", metavar="PATH",
                        help="take include/exclude from this configuration")
        selection(sp)

    if wanted("check"):
        sp = sub.add_parser("check", help="validate configuration, trust "
                            "and scripts without running anything")
        sp.add_argument("--config", metavar="PATH")

    if wanted("run"):
        _run_parser(sub.add_parser("run", help="the whole cycle"), selection)

    if wanted("thaw"):
        sp = sub.add_parser("thaw", help="thaw what a killed run left frozen")
        sp.add_argument("--recover", action="store_true", required=True)
        sp.add_argument("--json", action="store_true")

    if wanted("hook"):
        sp = sub.add_parser("hook", help="qemu-guest-agent fsfreeze-hook mode")
        sp.add_argument("action", choices=["freeze", "thaw"])
        sp.add_argument("--config", metavar="PATH")
    return p


def _run_parser(sp: argparse.ArgumentParser,
                selection: Callable[[argparse.ArgumentParser], None]
                ) -> None:
    sp.add_argument("--config", metavar="PATH")
    selection(sp)
    sp.add_argument("--freeze-timeout", type=float, metavar="SECONDS",
                    help="watchdog deadline, counted from the freeze start")
    sp.add_argument("--json", action="store_true",
                    help="print the status report as JSON on stdout")
    sp.add_argument("--status-file", metavar="PATH",
                    help="also write the JSON report to PATH (after thaw)")
    sp.add_argument("snapshot", nargs=argparse.REMAINDER,
                    metavar="-- SNAPSHOT_COMMAND",
                    help="command that takes the snapshot while frozen")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("vmsnapshot: %(levelname)s: "
                                           "%(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Nothing may be written while filesystems are frozen, not even .pyc.
    sys.dont_write_bytecode = True
    words = sys.argv[1:] if argv is None else argv
    args = _parser(_command_in(words)).parse_args(words)
    _setup_logging(args.verbose)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `vmsnapshot mounts | head`: the reader left; say nothing more and
        # keep Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:  # a bug: short message, traceback only in the log
        log.debug("internal error", exc_info=True)
        print("vmsnapshot: internal error: %s (run with -vv for the "
              "traceback)" % (sys.exc_info()[1],), file=sys.stderr)
        return EXIT_INTERNAL


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
        freeze = _freeze_settings(args.config)
        return mounts_command(args.json, args.mount,
                              list(freeze.exclude) + args.exclude,
                              include=freeze.include)
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
                           snapshot=_strip_dashdash(args.snapshot))
    if args.command == "thaw":
        from vmsnapshot.commands.thaw import thaw_command
        return thaw_command(json_output=args.json)
    if args.command == "hook":
        from vmsnapshot.commands.hook import hook_command
        return hook_command(args.action, args.config)
    raise AssertionError(args.command)


def _freeze_settings(config_path: Optional[str]) -> "FreezeSettings":
    """The configured include/exclude, so `mounts` shows what `run` would
    freeze; a broken configuration only costs a warning here."""
    from vmsnapshot.config import FreezeSettings, load_config
    from vmsnapshot.errors import VmsnapshotError
    try:
        return load_config(config_path).freeze
    except VmsnapshotError as e:
        log.warning("configuration ignored: %s", e.record())
        return FreezeSettings()


def _strip_dashdash(argv: List[str]) -> List[str]:
    return argv[1:] if argv[:1] == ["--"] else argv
