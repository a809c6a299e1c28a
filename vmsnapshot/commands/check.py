"""`vmsnapshot check`: validate the configuration, its trust and every
configured script without running anything (think `nginx -t`).

Exit status: 0 when nothing is wrong, whatever level the configuration
asks for (no plugin configured is valid and says "filesystem"); 1 when at
least one problem was found.  The summary line says which level a run would
reach as configured, assuming every selected mount freezes in time.
"""
from __future__ import annotations

import fnmatch
import shlex
from typing import List, Optional, Tuple

from vmsnapshot import exitstatus
from vmsnapshot import trust
from vmsnapshot.freeze import native
from vmsnapshot.mounts import mountinfo
from vmsnapshot.mounts import plan
from vmsnapshot.cycle import policy
from vmsnapshot.config import merge
from vmsnapshot.config.model import Config
from vmsnapshot.config.problems import under_root
from vmsnapshot.config.search import (
    CONF_D, FORMAT_NAMES, NATIVE_PATH, SEARCH_ORDER, Sources, read_sources)
from vmsnapshot.errors import Catalogue, ErrorRecord, VmsnapshotError
from vmsnapshot.errtext import error_lines


def _describe_files(found: Sources, root: str) -> List[str]:
    """Every file read, what it brought in, and what was passed over."""
    read = [f for f in found.files if not f.skipped]
    if not found.files:
        return ["configuration: none (searched %s): freeze only, no "
                "scripts" % ", ".join(
                    [under_root(NATIVE_PATH, root),
                     under_root(CONF_D, root) + "/*.toml"]
                    + [under_root(f, root) for f in SEARCH_ORDER[1:]])]
    lines = []
    for f in read:
        lines.append("configuration: %s (%s)" % (f.path,
                                                 FORMAT_NAMES[f.fmt]))
        lines += ["  also read: %s" % s for s in f.also]
    lines += ["  not used: %s (%s)" % (f.path, f.skipped)
              for f in found.files if f.skipped]
    return lines


def _provenance(config: Config) -> List[str]:
    """Where each setting and plugin came from (file -> key)."""
    lines = []
    for key in dict.fromkeys(s.key for s in config.settings):
        given = [s for s in config.settings if s.key == key]
        origins = given[0].origin if len(given) == 1 else "; ".join(
            "%s (%s)" % (s.origin, merge.show_value(s.value)) for s in given)
        lines.append("setting %s = %s: from %s" % (
            merge.show_key(key),
            merge.show_value(merge.merged_value(config, key)), origins))
    lines += ["plugin %s: from %s" % (p.name, p.origin or p.source)
              for p in config.plugins]
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
                # A refused pre-script is a failed pre phase; so is a
                # refused post-script of a plugin with a pre-script (run
                # then starts neither, as Microsoft's extension does).
                pre_ok = pre_ok and not plugin.pre
            else:
                out.append("%s: ok" % label)
    return pre_ok


def _check_freeze_module(problems: List[ErrorRecord], out: List[str]
                         ) -> bool:
    try:
        native.load()
    except VmsnapshotError as e:
        problems.append(e.record())
        out.append("freeze module: %s" % e.entry.error_name)
        return False
    out.append("freeze module: ok")
    return True


def _check_mount_plan(config: Config, problems: List[ErrorRecord],
                      out: List[str]) -> bool:
    """The mounts a run would freeze, as `run` without --mount plans them;
    False when freezing is enabled and that plan freezes nothing."""
    if not config.freeze.enabled:
        out.append("mount plan: freezing disabled by configuration")
        return True
    settings = config.freeze
    infos = mountinfo.read_mountinfo()
    decisions = plan.plan(infos, include=settings.include,
                            exclude=settings.exclude)
    for glob in settings.include:
        if not any(fnmatch.fnmatchcase(m.mount_point, glob) for m in infos):
            problems.append(ErrorRecord(
                Catalogue.NOTHING_FROZEN if len(settings.include) == 1
                else Catalogue.INCORRECT_JSON_CONFIG_FILE,
                "[freeze] include '%s' matches no mount point" % glob))
    chosen = [d for d in decisions if d.freeze]
    for d in chosen:
        out.append("mount plan: freeze %s (%s, wave %s)" % (
            plan.printable(d.path), d.info.fstype, d.wave))
    if not chosen:
        out.append("mount plan: nothing would be frozen")
        if not any(r.entry is Catalogue.NOTHING_FROZEN for r in problems):
            problems.append(ErrorRecord(
                Catalogue.NOTHING_FROZEN,
                "freezing is enabled but no mount of this machine would be "
                "frozen (see 'vmsnapshot mounts')"))
        return False
    return True


def _prediction(config: Optional[Config], config_ok: bool, pre_ok: bool,
                module_ok: bool, plan_ok: bool) -> Tuple[str, str]:
    """(level, why) of a run as configured, assuming every selected mount
    freezes and the snapshot ends within the freeze timeout."""
    freeze_ok = module_ok and plan_ok
    if not config_ok or config is None:
        # run ignores a broken configuration: no script, default freeze.
        if not freeze_ok:
            return policy.CRASH, ("the configuration would be ignored and "
                                  + _no_freeze(module_ok))
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
        return level, _no_freeze(module_ok)
    return level, ("no pre-script would quiesce anything and the freeze is "
                   "disabled")


def _no_freeze(module_ok: bool) -> str:
    return ("the freeze module is missing" if not module_ok
            else "nothing would be frozen")


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
    found = read_sources(config_path, root)
    config = found.config
    # Conflicting settings fail check, but run uses the safer value: the
    # configuration is still the one a run would use.
    config_ok = not found.errors and config is not None
    problems = list(found.errors) + list(found.conflicts)
    out = _describe_files(found, root)
    pre_ok = False
    if config is not None:
        out += _provenance(config)
        out.append(_settings(config))
        pre_ok = _check_scripts(config, problems, out)
    module_ok = True
    if config is None or not config_ok or config.freeze.enabled:
        module_ok = _check_freeze_module(problems, out)
    plan_ok = _check_mount_plan(config if config_ok and config else
                                Config(), problems, out)
    for line in out:
        print(line)
    for line in error_lines(problems):
        print(line)
    level, why = _prediction(config, config_ok, pre_ok, module_ok, plan_ok)
    print(_summary(level, why, len(problems)))
    return exitstatus.OK if not problems else exitstatus.PROBLEMS
