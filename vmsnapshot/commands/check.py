"""`vmsnapshot check`: validate the configuration, its trust and every
configured script without running anything (think `nginx -t`).

Exit status: 0 when nothing is wrong, whatever level the configuration
asks for (no plugin configured is valid and says "filesystem"); 1 when at
least one problem was found.  The summary line says which level a run would
reach as configured, assuming every selected mount freezes in time.
"""
from __future__ import annotations

import shlex
from typing import List, Optional, Tuple

from vmsnapshot import freezer, policy, trust
from vmsnapshot.config import config_file, found_configs, validate_config
from vmsnapshot.config.model import Config
from vmsnapshot.config.problems import under_root
from vmsnapshot.config.search import FORMAT_NAMES, SEARCH_ORDER
from vmsnapshot.errors import ErrorRecord, VmsnapshotError
from vmsnapshot.errtext import error_lines

EXIT_OK = 0
EXIT_PROBLEMS = 1


def _describe_files(config_path: Optional[str], root: str,
                    config: Optional[Config]) -> List[str]:
    path, fmt = config_file(config_path, root)
    if path is None or fmt is None:
        return ["configuration: none (searched %s): freeze only, no scripts"
                % ", ".join(under_root(f, root) for f in SEARCH_ORDER)]
    lines = ["configuration: %s (%s)" % (path, FORMAT_NAMES[fmt])]
    used = set(config.sources) if config else {path}
    lines += ["  also read: %s" % s for s in (config.sources[1:]
                                              if config else ())]
    if config_path is None:
        lines += ["  not used: %s (an earlier file in the search order "
                  "wins)" % f for f in found_configs(root) if f not in used]
    return lines


def _settings(config: Config) -> str:
    freeze = ("enabled, timeout %g s" % config.freeze.timeout
              if config.freeze.enabled else "disabled by configuration")
    return "freeze: %s; on script failure: %s" % (
        freeze, "continue" if config.continue_on_failure
        else "stop, no snapshot")


def _check_scripts(config: Config, problems: List[ErrorRecord],
                   out: List[str]) -> bool:
    """Trust-check every script as run would; True when every pre-script
    would be allowed to run."""
    pre_ok = True
    for plugin in config.plugins:
        for phase in ("pre", "post"):
            argv = getattr(plugin, phase)
            if not argv:
                continue
            label = "plugin %s: %s %s" % (plugin.name, phase,
                                          shlex.join(argv))
            try:
                trust.check_script(argv[0], phase)
            except VmsnapshotError as e:
                problems.append(e.record())
                out.append("%s: %s" % (label, e.entry.error_name))
                # A refused post-script costs only itself (run adds its
                # error); a refused pre-script is a failed pre phase.
                pre_ok = pre_ok and phase != "pre"
            else:
                out.append("%s: ok" % label)
    return pre_ok


def _check_freeze_module(problems: List[ErrorRecord], out: List[str]
                         ) -> bool:
    try:
        freezer.load()
    except VmsnapshotError as e:
        problems.append(e.record())
        out.append("freeze module: %s" % e.entry.error_name)
        return False
    out.append("freeze module: ok")
    return True


def _prediction(config: Optional[Config], config_ok: bool, pre_ok: bool,
                freeze_ok: bool) -> Tuple[str, str]:
    """(level, why) of a run as configured, assuming every selected mount
    freezes and the snapshot ends within the freeze timeout."""
    if not config_ok or config is None:
        # run ignores a broken configuration: no script, default freeze.
        if not freeze_ok:
            return policy.CRASH, ("the configuration would be ignored and "
                                  "the freeze module is missing")
        return policy.FILESYSTEM, ("the configuration would be ignored: no "
                                   "script would run, default freeze")
    pres = sum(1 for p in config.plugins if p.pre)
    pre = policy.PreOutcome(
        scripts_configured=pres > 0, scripts_ok=pre_ok, config_ok=True,
        continue_on_failure=config.continue_on_failure,
        freeze_enabled=config.freeze.enabled)
    if not policy.may_proceed(pre):
        return policy.FAILED, (
            "a pre-script would fail and %s, so no snapshot"
            % ("continueBackupOnFailure is false"
               if not config.continue_on_failure
               else "the freeze is disabled"))
    level = policy.level(pre, policy.FreezeOutcome(freeze_ok, freeze_ok,
                                                   True))
    if level == policy.APPLICATION:
        return level, "%d pre-script%s, freeze %s" % (
            pres, "" if pres == 1 else "s",
            "enabled" if config.freeze.enabled else "disabled")
    if level == policy.FILESYSTEM:
        return level, ("no pre-script configured" if not pres
                       else "a pre-script would fail")
    if config.freeze.enabled:
        return level, "the freeze module is missing"
    return level, ("no pre-script would quiesce anything and the freeze is "
                   "disabled")


def _summary(level: str, why: str, problems: int) -> str:
    head = "OK" if not problems else "%d problem%s" % (
        problems, "" if problems == 1 else "s")
    if level == policy.FAILED:
        return "summary: %s: a run would fail (%s)" % (head, why)
    return "summary: %s: a run would be %s-consistent at best (%s)" % (
        head, level, why)


def check_command(config_path: Optional[str], root: str = "/") -> int:
    """Print every problem as NAME (code): message / action, then a summary
    line; 0 when there is none, 1 otherwise."""
    config, problems = validate_config(config_path, root)
    config_ok = not problems and config is not None
    out = _describe_files(config_path, root, config)
    pre_ok = False
    if config is not None:
        out.append(_settings(config))
        pre_ok = _check_scripts(config, problems, out)
    freeze_ok = True
    if config is None or not config_ok or config.freeze.enabled:
        freeze_ok = _check_freeze_module(problems, out)
    for line in out:
        print(line)
    for line in error_lines(problems):
        print(line)
    level, why = _prediction(config, config_ok, pre_ok, freeze_ok)
    print(_summary(level, why, len(problems)))
    return EXIT_OK if not problems else EXIT_PROBLEMS
