"""The command line's grammar: every subcommand, its options and their
value checks (usage errors exit 2). vmsnapshot.cli builds it on each call
and dispatches; the commands themselves never see argparse.

parse() builds only the named command's parser (issue 15: all of them
cost `run` several ms); help, usage errors and unknown commands get the
whole grammar, so every message stays the same."""
from __future__ import annotations

import argparse
from typing import Any, NoReturn, Optional, Sequence

from vmsnapshot import __version__
from vmsnapshot import levels

# best first; the one spelling of the levels is vmsnapshot.levels
LEVELS = levels.BEST_FIRST

_EPILOG = """\
configuration: every file found of
  /etc/vmsnapshot/vmsnapshot.toml, /etc/vmsnapshot/conf.d/*.toml,
  /etc/azure/VMSnapshotPluginHost.conf,
  /etc/azure/VMSnapshotScriptPluginConfig.json
is read and merged (--config PATH: that file alone; 'vmsnapshot check'
shows where each plugin and setting comes from).
results: 'vmsnapshot status', 'journalctl -t vmsnapshot'.
See the vmsnapshot(8) manual page: man 8 vmsnapshot"""


def _freeze_timeout(text: str) -> float:
    """--freeze-timeout: the config key's rule, as a usage error (exit 2)."""
    from vmsnapshot.config.model import freeze_timeout_problem
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be a number of seconds, not %r" % text) from None
    problem = freeze_timeout_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            "must be a whole number above 0, not %r" % text)
    return value


class _Retry(Exception):
    """A usage error of the one-command parser: parse again with all."""


class _OneCommand(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        raise _Retry(message)


class _Unprinted(argparse.RawDescriptionHelpFormatter):
    """The one-command parser never prints (help goes to the whole
    grammar): a fixed width spares argparse's shutil import and terminal
    query (add_argument makes a formatter to check each metavar)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=80)


def _command_in(argv: Sequence[str]) -> Optional[str]:
    """The command named in ARGV: the first word that is not an option
    (the top level has no option taking a value)."""
    for word in argv:
        if not word.startswith("-"):
            return word
        if word == "--":
            return None
    return None


def parse(argv: Sequence[str]) -> argparse.Namespace:
    only = _command_in(argv)
    if only is not None and only in COMMANDS and not any(
            w in ("-h", "--help") for w in argv):
        try:
            return build(only).parse_args(argv)
        except _Retry:
            pass
    return build().parse_args(argv)


COMMANDS = ("mounts", "check", "run", "thaw", "pre", "post", "__holder",
            "hook", "status", "azure")


def build(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole grammar, or with ONLY a parser knowing just that command,
    whose usage errors raise _Retry."""
    cls = argparse.ArgumentParser if only is None else _OneCommand
    fmt = (argparse.RawDescriptionHelpFormatter if only is None
           else _Unprinted)
    # -v is accepted before and after the subcommand; both counts add up.
    common = cls(add_help=False, formatter_class=fmt)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        dest="sub_verbose",
                        help="more log output on stderr (-vv for debug)")
    p = cls(
        prog="vmsnapshot",
        formatter_class=fmt,
        description="Application-consistent snapshots: pre-scripts, "
                    "filesystem freeze, snapshot, thaw,\npost-scripts.",
        epilog=_EPILOG)
    p.add_argument("--version", action="version",
                   version="vmsnapshot " + __version__)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output on stderr (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, help_text: str, description: str = "") -> Any:
        if only is not None and name != only:
            return _SKIP
        return sub.add_parser(
            name, help=help_text, parents=[common],
            description=description or help_text, formatter_class=fmt)

    def selection(sp: Any) -> None:
        sp.add_argument("--mount", action="append", default=[],
                        metavar="PATH",
                        help="freeze only this mount point (repeatable); "
                             "without it every eligible filesystem is "
                             "frozen, / included")
        sp.add_argument("--exclude", action="append", default=[],
                        metavar="GLOB",
                        help="never freeze mounts matching GLOB (repeatable)")

    def report_options(sp: Any) -> None:
        """What `run` and `post` share: the report and the exit status."""
        sp.add_argument("--require", choices=LEVELS, default="filesystem",
                        metavar="LEVEL",
                        help="exit non-zero when the consistency level is "
                             "below LEVEL: application, filesystem "
                             "(default) or crash")
        sp.add_argument("--json", action="store_true",
                        help="print the status report as JSON on stdout")
        sp.add_argument("--status-file", metavar="PATH",
                        help="also write the JSON report to PATH (after "
                             "the thaw)")

    def config(sp: Any) -> None:
        sp.add_argument("--config", metavar="PATH",
                        help="this configuration file instead of the search "
                             "path (see vmsnapshot --help)")

    sp = add("mounts", "list mounts and what would be frozen",
             "List the mounts that matter: whether a run would freeze each, "
             "why not, its\nfreeze wave. Pseudo filesystems (proc, sysfs, "
             "tmpfs...) only with --all.")
    sp.add_argument("--json", action="store_true",
                    help="print the list as JSON")
    sp.add_argument("--all", action="store_true",
                    help="also list pseudo filesystems")
    config(sp)
    selection(sp)

    sp = add("check", "validate configuration, trust and scripts without "
                      "running anything")
    config(sp)

    sp = add("run", "the whole cycle: pre-scripts, freeze, snapshot, thaw, "
                    "post-scripts, report",
             "Run the whole cycle in one process.\n\n"
             "Without --mount, EVERY eligible filesystem is frozen, / "
             "included: every writer\non the machine waits until the thaw. "
             "'vmsnapshot mounts' lists them.")
    config(sp)
    selection(sp)
    sp.add_argument("--freeze-timeout", type=_freeze_timeout,
                    metavar="SECONDS",
                    help="watchdog deadline, counted from the freeze start "
                         "(above 0, at most 3600; default: the "
                         "configuration's, else 60)")
    report_options(sp)
    sp.add_argument("snapshot", nargs=argparse.REMAINDER,
                    metavar="-- SNAPSHOT_COMMAND",
                    help="command that takes the snapshot while frozen")

    sp = add("thaw", "thaw what a killed run left frozen (--recover)",
             "Thaw what a killed vmsnapshot run left frozen, as listed in "
             "its state file in\n/run/vmsnapshot; never a freeze of another "
             "process.")
    sp.add_argument("--recover", action="store_true",
                    help="do it (a reminder that only a killed run's "
                         "freeze is thawed)")
    sp.add_argument("--json", action="store_true",
                    help="print what was done as JSON")

    sp = add("pre", "split cycle, first half: pre-scripts and the freeze, "
                    "held until 'post'",
             "For backup agents that take the snapshot themselves: run the "
             "pre-scripts and,\nunless --no-freeze, freeze; a background "
             "holder keeps the lock, the held\nscripts and the freeze until "
             "'vmsnapshot post' or the freeze deadline.\nExit 0: take the "
             "snapshot now; 3: refused, everything undone.\n\nWithout "
             "--mount, EVERY eligible filesystem is frozen, / included.")
    config(sp)
    selection(sp)
    sp.add_argument("--no-freeze", action="store_true",
                    help="do not freeze (the backup agent freezes itself)")
    sp.add_argument("--freeze-timeout", type=_freeze_timeout,
                    metavar="SECONDS",
                    help="deadline for 'post', counted from the freeze start "
                         "(above 0, at most 3600)")
    sp.add_argument("--trigger", default="pre/post", metavar="NAME",
                    help=argparse.SUPPRESS)

    sp = add("post", "split cycle, second half: thaw, release, "
                     "post-scripts, report",
             "Finish what 'vmsnapshot pre' holds: thaw, release the held "
             "pre-scripts, run the\npost-scripts, print the report. Exit "
             "status as for 'run'.")
    sp.add_argument("--failed", action="store_true",
                    help="the backup agent took no snapshot")
    report_options(sp)

    # Internal: how `pre` starts its holder as a systemd transient unit.
    if only in (None, "__holder"):
        sp = sub.add_parser("__holder", help=argparse.SUPPRESS,
                            formatter_class=(argparse.HelpFormatter
                                             if only is None else fmt))
        sp.add_argument("--args", required=True,
                        help="the holder's arguments")
        sp.add_argument("--notify", required=True,
                        help="the socket of the waiting `pre`")

    sp = add("hook", "qemu-guest-agent fsfreeze-hook mode",
             "qemu-guest-agent's fsfreeze-hook convention: 'freeze' runs the "
             "pre phase (the\nagent freezes), 'thaw' the post phase and the "
             "report.")
    sp.add_argument("action", choices=["freeze", "thaw"],
                    help="freeze: pre-scripts; thaw: post-scripts, report")
    config(sp)

    sp = add("status", "the last runs from the history, newest first",
             "The last runs saved in /var/lib/vmsnapshot/runs, newest first: "
             "when, trigger,\nlevel, snapshot, freeze window, errors.")
    sp.add_argument("--json", action="store_true",
                    help="print the full reports as JSON")
    sp.add_argument("-n", type=_positive, default=10, metavar="N",
                    help="how many runs (default 10)")

    sp = add("azure", "let the Azure Backup extension run vmsnapshot "
                      "(enable) or undo it",
             "Point /etc/azure/VMSnapshotScriptPluginConfig.json at "
             "vmsnapshot's wrappers,\nmoving the plugin it named into "
             "/etc/vmsnapshot/conf.d (enable), or put it back (disable).")
    sp.add_argument("action", choices=["enable", "disable"],
                    help="enable or disable Azure-extension mode")
    sp.add_argument("--root", default="", metavar="DIR",
                    help="files under DIR instead of / (images, tests)")
    sp.add_argument("--timeout", type=_azure_timeout, metavar="SECONDS",
                    help="timeoutInSeconds for the wrappers (1-1800)")
    return p


class _Skipped:
    """Stands for the parser of a command not built: takes and drops."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        pass


_SKIP = _Skipped()


def _azure_timeout(text: str) -> int:
    # The extension caps timeoutInSeconds at 1800.
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1800:
        raise argparse.ArgumentTypeError("must be 1 to 1800 seconds")
    return value
