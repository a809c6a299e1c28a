"""Merging the configuration sources (design.md, "Configuration").

Plugins are the union of all sources; two with one name are ConfigConflict
(132), an error: the report, the log and the post phase tell plugins apart
by name. A setting given by several sources must agree: a disagreement is
ConfigConflict for ``check``, while ``run`` applies the safer value, chosen
per key below. Only what a source states counts (model.Setting): a default
never disagrees with anything.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Callable, Dict, List, Sequence, Tuple

from vmsnapshot import logs
from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.config.model import Config, FreezeSettings, Plugin, Setting
from vmsnapshot.errors import Catalogue, ErrorRecord

log = logs.get(__name__)


def _union(values: Sequence[Tuple[str, ...]]) -> Tuple[str, ...]:
    out: List[str] = []
    for value in values:
        out += [v for v in value if v not in out]
    return tuple(out)


_PRESYNC_RANK = {True: 2, "true": 2, "auto": 1, False: 0, "false": 0}


@frozen_record
class Rule:
    """How one setting is combined across configuration files."""

    combine: Callable[[Sequence[Any]], Any]
    why: str                        # how run chooses, for the message
    conflicts: bool = True          # False: values add up, never disagree
    same: Callable[[Any], Any] = lambda v: v   # what "agree" compares


RULES: Dict[str, Rule] = {
    # An application owner who cannot stand a freeze, or wants a failure
    # to stop the backup, must not be overruled by another file.
    "freeze.enabled": Rule(all, "false wins: a source asked for no freeze"),
    "policy.continue_on_failure": Rule(
        all, "false wins: a failed pre-script stops the run"),
    # Every writer of the machine waits while frozen, and an application
    # may be fenced by its cluster past its own limit; a snapshot that
    # outlives the shorter deadline is reported crash-consistent
    # (FsFreezeTimeout), never passed off as more.
    "freeze.timeout": Rule(min, "the shorter deadline wins"),
    # Leaving out a mount some source wants frozen would make its
    # application's data merely crash-consistent.
    "freeze.include": Rule(_union, "every mount any source includes",
                           same=frozenset),
    # Each source may keep its mounts out (as --exclude adds to it).
    "freeze.exclude": Rule(_union, "all exclusions apply", conflicts=False),
    # A presync only shortens the time writers are blocked.
    "freeze.presync": Rule(
        lambda vs: max(vs, key=lambda v: _PRESYNC_RANK.get(v, 1)),
        "a presync wins over none"),
}
# A key without a rule (added by a newer loader): the first source wins.
_FIRST = Rule(lambda vs: vs[0], "the first source wins")


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "%g" % value
    if isinstance(value, tuple):
        return "[%s]" % ", ".join('"%s"' % v for v in value)
    if isinstance(value, str):
        return '"%s"' % value
    return str(value)


def show_key(key: str) -> str:
    """freeze.timeout -> [freeze] timeout, as the native file spells it."""
    table, _, name = key.partition(".")
    return "[%s] %s" % (table, name)


def merged_value(config: Config, key: str) -> Any:
    """The value a merged Config uses for a setting key."""
    table, _, name = key.partition(".")
    if table == "freeze":
        return getattr(config.freeze, name)
    if key == "policy.continue_on_failure":
        return config.continue_on_failure
    raise KeyError(key)


@frozen_record
class Merged:
    """The merged configuration and what merging it found."""

    config: Config
    conflicts: Tuple[ErrorRecord, ...]   # settings: check fails, run warns
    errors: Tuple[ErrorRecord, ...]      # duplicate plugin names


def _settings(given: Sequence[Setting]) -> Tuple[Dict[str, Any],
                                                  List[ErrorRecord]]:
    by_key: Dict[str, List[Setting]] = {}
    for s in given:
        by_key.setdefault(s.key, []).append(s)
    values: Dict[str, Any] = {}
    conflicts: List[ErrorRecord] = []
    for key, items in by_key.items():
        rule = RULES.get(key, _FIRST)
        value = rule.combine([s.value for s in items])
        values[key] = value
        if rule.conflicts and len({rule.same(s.value) for s in items}) > 1:
            conflicts.append(ErrorRecord(
                Catalogue.CONFIG_CONFLICT,
                "%s disagrees between sources: %s; a run uses %s (%s)" % (
                    show_key(key), ", ".join(
                        "%s in %s" % (show_value(s.value), s.origin)
                        for s in items),
                    show_value(value), rule.why)))
    return values, conflicts


def _plugins(configs: Sequence[Config]) -> Tuple[Tuple[Plugin, ...],
                                                 List[ErrorRecord]]:
    first: Dict[str, Plugin] = {}
    errors: List[ErrorRecord] = []
    for config in configs:
        for plugin in config.plugins:
            if plugin.name not in first:
                first[plugin.name] = plugin
                continue
            errors.append(ErrorRecord(
                Catalogue.CONFIG_CONFLICT,
                "plugin name %r is given twice: %s and %s; rename one or "
                "remove one (plugins are told apart by name in the run, "
                "the report and the log)" % (
                    plugin.name, first[plugin.name].origin
                    or first[plugin.name].source,
                    plugin.origin or plugin.source)))
    return tuple(first.values()), errors


def merge(configs: Sequence[Config]) -> Merged:
    """One Config from the sources' Configs, in source order."""
    given = tuple(s for c in configs for s in c.settings)
    values, conflicts = _settings(given)
    plugins, errors = _plugins(configs)
    freeze = FreezeSettings()
    freeze = replace(freeze, **{
        f.name: values["freeze." + f.name] for f in fields(FreezeSettings)
        if "freeze." + f.name in values})
    sources: List[str] = []
    for c in configs:
        sources += [s for s in c.sources if s not in sources]
    config = Config(freeze=freeze,
                    continue_on_failure=values.get(
                        "policy.continue_on_failure", True),
                    plugins=plugins, sources=tuple(sources), settings=given)
    return Merged(config, tuple(conflicts), tuple(errors))
