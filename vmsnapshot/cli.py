"""Command line: parse argv and dispatch to vmsnapshot.commands.*.

Each command is a function taking explicit arguments and returning an exit
status; errors are handled once, in vmsnapshot.commands.run and here.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, List, Optional, Sequence

from vmsnapshot import __version__

if TYPE_CHECKING:
    from vmsnapshot.config import FreezeSettings

log = logging.getLogger("vmsnapshot")

EXIT_INTERNAL = 70      # EX_SOFTWARE: a bug, not a failed snapshot


def _parser() -> argparse.ArgumentParser:
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

    sp = sub.add_parser("mounts", help="list mounts and what would be frozen")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--config", metavar="PATH",
                    help="take include/exclude from this configuration")
    selection(sp)

    sp = sub.add_parser("check", help="validate configuration, trust and "
                                      "scripts without running anything")
    sp.add_argument("--config", metavar="PATH")

    sp = sub.add_parser("run", help="the whole cycle")
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

    sp = sub.add_parser("thaw", help="thaw what a killed run left frozen")
    sp.add_argument("--recover", action="store_true", required=True)
    sp.add_argument("--json", action="store_true")

    sp = sub.add_parser(
        "pre", help="split cycle, first half: pre-scripts and the freeze, "
                    "held by a background holder until 'post'")
    sp.add_argument("--config", metavar="PATH")
    selection(sp)
    sp.add_argument("--no-freeze", action="store_true",
                    help="do not freeze (the backup agent freezes itself)")
    sp.add_argument("--freeze-timeout", type=float, metavar="SECONDS",
                    help="deadline for 'post', counted from the freeze start")
    sp.add_argument("--trigger", default="pre/post", metavar="NAME",
                    help=argparse.SUPPRESS)

    sp = sub.add_parser(
        "post", help="split cycle, second half: thaw, release, "
                     "post-scripts, report")
    sp.add_argument("--failed", action="store_true",
                    help="the backup agent took no snapshot")
    sp.add_argument("--json", action="store_true",
                    help="print the status report as JSON on stdout")
    sp.add_argument("--status-file", metavar="PATH",
                    help="also write the JSON report to PATH")
    sp.add_argument("--require", default="filesystem",
                    choices=["application", "filesystem", "crash"],
                    help="exit 1 when the level is below LEVEL "
                         "(default filesystem)")

    sp = sub.add_parser("__holder", help=argparse.SUPPRESS)
    sp.add_argument("--args", required=True)
    sp.add_argument("--notify", required=True)

    sp = sub.add_parser("hook", help="qemu-guest-agent fsfreeze-hook mode")
    sp.add_argument("action", choices=["freeze", "thaw"])
    sp.add_argument("--config", metavar="PATH")

    sp = sub.add_parser("azure", help="let the Azure Backup extension run "
                                      "vmsnapshot (enable) or undo it")
    sp.add_argument("action", choices=["enable", "disable"])
    sp.add_argument("--root", default="", metavar="DIR",
                    help="files under DIR instead of / (images, tests)")
    sp.add_argument("--timeout", type=_azure_timeout, metavar="SECONDS",
                    help="timeoutInSeconds for the wrappers (1-1800)")
    return p


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
    args = _parser().parse_args(argv)
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
    if args.command == "pre":
        from vmsnapshot.commands.split import pre_command
        return pre_command(args.config, args.mount, args.exclude,
                           args.freeze_timeout, args.no_freeze, args.trigger)
    if args.command == "post":
        from vmsnapshot.commands.split import post_command
        return post_command(args.failed, args.require, args.json,
                            args.status_file)
    if args.command == "__holder":     # started by `pre` through systemd-run
        from vmsnapshot.holder import HolderArgs, hold
        return hold(HolderArgs.loads(args.args), args.notify)
    if args.command == "hook":
        from vmsnapshot.commands.hook import hook_command
        return hook_command(args.action, args.config)
    if args.command == "azure":
        from vmsnapshot.commands.azure import azure_command
        return azure_command(args.action, args.root, args.timeout)
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


def _azure_timeout(text: str) -> int:
    # The extension caps timeoutInSeconds at 1800.
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1800:
        raise argparse.ArgumentTypeError("must be 1 to 1800 seconds")
    return value


def _strip_dashdash(argv: List[str]) -> List[str]:
    return argv[1:] if argv[:1] == ["--"] else argv
