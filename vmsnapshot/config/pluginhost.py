"""Azure's plugin host file, /etc/azure/VMSnapshotPluginHost.conf.

    [pre_post]
    timeoutInSeconds: 1800
    numberOfPlugins: 1
    pluginName0: ScriptRunner
    pluginPath0: /etc/azure
    pluginConfigPath0: /etc/azure/VMSnapshotScriptPluginConfig.json

Each pluginConfigPath<i> is a script plugin JSON file (azure_json); its
problems are IncorrectJSONConfigFile (305) naming that file, this file's are
IncorrectPluginhostFile (304).  timeoutInSeconds caps every plugin's
timeout.  pluginPath<i> is where Azure imported its Python ScriptRunner
module from; vmsnapshot runs scripts itself, so it is only recorded
(Plugin.plugin_path) and never executed or required.  Key names are
case-insensitive, as with Azure's ConfigParser.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from vmsnapshot import logs
from vmsnapshot.config import azure_json
from vmsnapshot.config.azuremark import is_extension_wrapper
from vmsnapshot.config.model import Config, FreezeSettings, Plugin, Setting
from vmsnapshot.config.problems import Problems, read_config_file, under_root
from vmsnapshot.errors import Catalogue, ErrorRecord

log = logs.get(__name__)

SECTION = "pre_post"
_NUMBER = re.compile(r"\d+(\.\d+)?\Z")
_INDEXED = re.compile(r"(pluginname|pluginpath|pluginconfigpath)(\d+)\Z")
_SPELLING = {"pluginname": "pluginName", "pluginpath": "pluginPath",
             "pluginconfigpath": "pluginConfigPath"}


def _parse(text: str, p: Problems) -> Optional[Dict[str, str]]:
    """The [pre_post] section, keys lower-cased, or None."""
    # Imported here: most machines have no plugin host file, and `run`'s
    # fixed cost counts every import.
    import ast
    import configparser
    # No interpolation: a '%' in a path must stay a '%'.  A [DEFAULT]
    # section must not leak keys into [pre_post]: make it an ordinary name.
    parser = configparser.ConfigParser(
        interpolation=None, strict=True, default_section="\0no default")
    try:
        parser.read_string(text, source=p.path)
    except configparser.MissingSectionHeaderError as e:
        p.add(("line %d" % e.lineno,), "%r comes before any section"
              % e.line.strip(), "[pre_post] as the first line")
        return None
    except configparser.DuplicateSectionError as e:
        p.add(("[%s]" % e.section,), "section given twice (line %s)"
              % e.lineno, "one [pre_post] section")
        return None
    except configparser.DuplicateOptionError as e:
        p.add(("[%s]" % e.section, e.option), "key given twice (line %s)"
              % e.lineno, "each key once")
        return None
    except configparser.ParsingError as e:
        for lineno, line in e.errors:
            try:    # ConfigParser keeps repr(line)
                line = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                pass
            p.add(("line %d" % lineno,), "cannot parse %r" % str(line).strip(),
                  "'key: value' or 'key = value'")
        return None
    except configparser.Error as e:
        p.add((), "not a valid INI file: %s" % e.message,
              "the [pre_post] layout of the template")
        return None
    if not parser.has_section(SECTION):
        p.add((), "no [pre_post] section",
              "a [pre_post] section with numberOfPlugins and "
              "pluginName0/pluginPath0/pluginConfigPath0")
        return None
    return dict(parser.items(SECTION))


def _positive(p: Problems, key: str, value: str, integer: bool
              ) -> Optional[float]:
    text = value.strip()
    if not _NUMBER.match(text) or (integer and "." in text) \
            or not math.isfinite(float(text)) or float(text) <= 0:
        p.add(("[pre_post]", key), "got %r" % value,
              "a whole number, 1 or more" if integer
              else "a positive number of seconds")
        return None
    return float(text)


def _entry(p: Problems, section: Dict[str, str], i: int
           ) -> Optional[Tuple[str, str]]:
    """(name, JSON path) of plugin ``i``, or None after saying why not."""
    values = []
    for base, expected in (("pluginName", "the plugin's name"),
                           ("pluginConfigPath",
                            "the absolute path of its JSON file")):
        value = section.get((base + str(i)).lower(), "").strip()
        if not value:
            p.add(("[pre_post]", base + str(i)), "missing or empty",
                  expected)
        values.append(value)
    name, json_path = values
    if not name or not json_path:
        return None
    if not json_path.startswith("/"):
        p.add(("[pre_post]", "pluginConfigPath%d" % i),
              "got %r, not an absolute path" % json_path,
              "the absolute path of the plugin's JSON file")
        return None
    return name, json_path


def _count(p: Problems, section: Dict[str, str]) -> Optional[int]:
    """numberOfPlugins; keys indexed beyond it are mistakes Azure would
    silently ignore."""
    if "numberofplugins" not in section:
        p.add(("[pre_post]", "numberOfPlugins"), "missing key",
              "the number of plugins, 1 or more")
        return None
    count = _positive(p, "numberOfPlugins", section["numberofplugins"],
                      integer=True)
    if count is None:
        return None
    n = int(count)
    for key in section:
        m = _INDEXED.match(key)
        if m and int(m.group(2)) >= n:
            p.add(("[pre_post]", _SPELLING[m.group(1)] + m.group(2)),
                  "index %s is not below numberOfPlugins = %d"
                  % (m.group(2), n),
                  "numberOfPlugins raised, or this key removed")
    return n


def load(path: str, records: List[ErrorRecord], root: str = "/"
         ) -> Optional[Config]:
    p = Problems(path, Catalogue.INCORRECT_PLUGINHOST_FILE, records)
    text = read_config_file(p)
    section = None if text is None else _parse(text, p)
    if section is None:
        return None
    cap = None
    if "timeoutinseconds" in section:
        cap = _positive(p, "timeoutInSeconds", section["timeoutinseconds"],
                        integer=False)
    n = _count(p, section)
    if n is None:
        return None
    plugins: List[Plugin] = []
    settings: List[Setting] = []
    freeze = keep_going = True
    sources = [path]
    seen: Dict[str, int] = {}
    for i in range(n):
        if i > len(section):
            # Keys cannot cover more indices than there are keys.
            p.add(("[pre_post]", "numberOfPlugins"),
                  "is %d but only %d keys are given" % (n, len(section)),
                  "one pluginName/pluginConfigPath pair per plugin")
            break
        entry = _entry(p, section, i)
        if entry is None:
            continue
        name, json_path = entry
        if json_path in seen:
            p.add(("[pre_post]", "pluginConfigPath%d" % i),
                  "same file as pluginConfigPath%d" % seen[json_path],
                  "one JSON file per plugin (its scripts would run twice)")
            continue
        seen[json_path] = i
        sources.append(under_root(json_path, root))
        parsed = azure_json.read(Problems(
            sources[-1], Catalogue.INCORRECT_JSON_CONFIG_FILE, records))
        if parsed is None or is_extension_wrapper(parsed.plugin):
            continue    # broken, or Azure-extension mode's own JSON
        settings.extend(parsed.settings)
        # Azure ANDs the plugins' answers: one application that cannot
        # stand a freeze, or wants failures to stop the backup, wins.
        freeze = freeze and parsed.fs_freeze_enabled
        keep_going = keep_going and parsed.continue_on_failure
        if parsed.plugin is not None:
            taken = {q.name for q in plugins}
            plugins.append(replace(
                parsed.plugin,
                name=name if name not in taken else "%s[%d]" % (name, i),
                timeout=min(parsed.plugin.timeout, cap or math.inf),
                plugin_path=section.get("pluginpath%d" % i, "").strip(),
                origin="%s -> [pre_post] -> pluginName%d (%s)"
                % (path, i, sources[-1])))
    return Config(freeze=FreezeSettings(enabled=freeze),
                  continue_on_failure=keep_going, plugins=tuple(plugins),
                  sources=tuple(sources), settings=tuple(settings))
