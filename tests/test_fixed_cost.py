"""The fixed cost of `run` (issue 15): a freeze-only run on a clean
filesystem loads no module that only other paths need, and the run id
stays a random UUID without the uuid module."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.helpers.cli import ROOT
from vmsnapshot.cycle import meta

# Loaded only when a plugin is configured, a presync pass runs or a btrfs
# filesystem is probed; shutil only for help and usage errors (argparse's
# terminal width: `run` builds only its own parser); socket only when a
# journald or syslog socket exists; the process runner (subprocess) and
# its records only for a snapshot command; logging (and traceback and
# textwrap: only it needs them) only when a message is emitted, and a
# clean run at the default level emits none (vmsnapshot.logs); string
# stays: tomllib needs it.
NOT_ON_A_CLEAN_FREEZE_ONLY_RUN = (
    "vmsnapshot.scripts.oneshot", "vmsnapshot.scripts.held",
    "vmsnapshot.freeze.syncfs", "ctypes", "uuid", "platform", "shutil",
    "socket", "vmsnapshot.scripts.spawn", "vmsnapshot.scripts.result",
    "subprocess", "selectors", "logging", "traceback", "textwrap")

PROBE = """
import json, sys
from vmsnapshot import cli
code = cli.main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


RUNNER = {"vmsnapshot.scripts.spawn", "vmsnapshot.scripts.result",
          "subprocess", "selectors"}


@pytest.mark.parametrize("snapshot", [["--", "true"], []],
                         ids=["snapshot-command", "freeze-only"])
def test_a_clean_freeze_only_run_loads_only_what_it_needs(
        loopfs_factory, no_config, tmp_path, monkeypatch, snapshot):
    """Before: every run imported the script runners, uuid (and platform
    through it) for the run id, and the presync pool with ctypes; then
    argparse's shutil (every command's parser was built) and socket on a
    machine without journald or syslog."""
    for var in ("VMSNAPSHOT_JOURNAL_SOCKET", "VMSNAPSHOT_SYSLOG_SOCKET"):
        monkeypatch.setenv(var, str(tmp_path / "no-such-socket"))
    a = loopfs_factory("ext4")
    subprocess.run(["sync", "-f", a.mountpoint], check=True)
    out = tmp_path / "modules.json"
    res = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), "run", "--config", no_config,
         "--mount", a.mountpoint, "--json"] + snapshot,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        timeout=120)
    report = json.loads(res.stdout)
    assert report["consistency"] == "filesystem", report["errors"]
    sync = report["freeze"]["presync"]
    seen = json.loads(out.read_text())
    assert seen["code"] == 0
    unexpected = set(NOT_ON_A_CLEAN_FREEZE_ONLY_RUN) & set(seen["modules"])
    if sync["ran"]:     # another device's dirty data made a pass run
        unexpected -= {"vmsnapshot.freeze.syncfs", "ctypes"}
    if snapshot:        # the runner, imported before the freeze
        assert RUNNER <= set(seen["modules"])
        unexpected -= RUNNER
    assert not unexpected, (unexpected, sync)


def test_the_run_id_is_a_random_uuid():
    ids = {meta.new_run_id() for _ in range(64)}
    assert len(ids) == 64
    for run_id in ids:
        u = uuid.UUID(hex=run_id)
        assert u.hex == run_id and u.version == 4
        assert u.variant == uuid.RFC_4122


DOCSTRINGS = """
import dataclasses, inspect, json, sys
import vmsnapshot.cli, vmsnapshot.commands.run, vmsnapshot.results.publishing
generated = []
for name, module in sorted(sys.modules.items()):
    if not name.startswith("vmsnapshot"):
        continue
    for cls in vars(module).values():
        if (inspect.isclass(cls) and cls.__module__ == name
                and dataclasses.is_dataclass(cls)
                and (cls.__doc__ or "").startswith(cls.__name__ + "(")):
            generated.append("%s.%s" % (name, cls.__name__))
print(json.dumps(generated))
"""


def test_every_dataclass_on_the_run_path_has_a_docstring():
    """dataclass() makes a missing docstring from inspect.signature(), at
    import: paid on every run (five had lost theirs).  In a fresh
    interpreter: what `run` imports, nothing other tests loaded."""
    res = subprocess.run([sys.executable, "-c", DOCSTRINGS], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True, check=True,
                         timeout=60)
    assert json.loads(res.stdout) == []


ARGVS = [
    ["run", "--config", "/c", "--mount", "/m", "--json", "--", "true"],
    ["-v", "run", "-vv", "--mount", "/a", "--mount", "/b", "--exclude", "x*",
     "--freeze-timeout", "30", "--require", "crash", "--status-file", "/s"],
    ["mounts", "--json", "--all"], ["check", "--config", "/c"],
    ["thaw", "--recover", "--json"], ["pre", "--no-freeze", "--mount", "/m"],
    ["post", "--failed", "--require", "application"],
    ["__holder", "--args", "{}", "--notify", "/n"],
    ["hook", "freeze"], ["status", "-n", "3"],
    ["azure", "enable", "--timeout", "60"]]

BAD = [["run", "--bogus"], ["run", "--freeze-timeout", "0"],
       ["run", "--require", "best"], ["status", "-n", "0"], ["nosuch"],
       ["-x", "run"], ["hook"], ["azure", "enable", "--timeout", "9999"], []]


def test_one_command_parser_parses_as_the_whole_grammar():
    """`run` builds only its own parser (issue 15): same namespace."""
    from vmsnapshot.commands import parser
    for argv in ARGVS:
        assert parser.parse(argv) == parser.build().parse_args(argv), argv


def test_usage_errors_and_help_come_from_the_whole_grammar(capsys):
    """A usage error of the one-command parser is reported by the whole
    grammar: the same message and status as before the cut."""
    from vmsnapshot.commands import parser
    for argv in BAD + [["--help"], ["run", "--help"], ["--help", "run"]]:
        outs = []
        for parse in (parser.parse, parser.build().parse_args):
            try:
                parse(argv)
                code = None
            except SystemExit as e:
                code = e.code
            outs.append((code, capsys.readouterr()))
        assert outs[0] == outs[1], argv
        assert outs[0][0] is not None, argv
