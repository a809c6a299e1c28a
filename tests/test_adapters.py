"""The backup-agent adapters (adapters/*), each called exactly as its agent
calls it (tests/helpers/agents.py).

Two layers: with a recording stand-in for vmsnapshot, what each agent
operation runs and how the exit status reaches the agent; with the real
command and real loop filesystems, the split cycle through each adapter.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Dict, List

import pytest

from tests.helpers.require import skip_or_fail
from tests.helpers.agents import (
    azure_plugin_host, google_agent, qemu_ga_hook, shell_runner,
    vmware_tools)
from tests.helpers.cli import ROOT
from tests.helpers.configfiles import write_file, write_script
from tests.helpers.loopfs import is_frozen

ADAPTERS = os.path.join(ROOT, "adapters")
SCRIPTS = sorted(
    os.path.join(top, name) for top, _dirs, names in os.walk(ADAPTERS)
    for name in names if not name.endswith((".json", ".md")))


def adapter(*parts: str) -> str:
    return os.path.join(ADAPTERS, *parts)


# ---------------------------------------------------------------- the shell

@pytest.mark.parametrize("script", SCRIPTS,
                         ids=[os.path.relpath(s, ADAPTERS) for s in SCRIPTS])
def test_posix_sh_only(script) -> None:
    """Debian's /bin/sh is dash, and Azure runs `sh SCRIPT` whatever its #!."""
    dash = shutil.which("dash")
    if dash is None:
        skip_or_fail("dash not installed")
    res = subprocess.run([dash, "-n", script], stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert res.returncode == 0, res.stderr
    checker = shutil.which("checkbashisms")
    if checker:
        res = subprocess.run([checker, "-p", "-f", script],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True)
        assert res.returncode == 0, res.stdout
    if not script.endswith("adapter.sh"):
        with open(script) as f:
            assert f.readline() == "#!/bin/sh\n"
        assert os.access(script, os.X_OK)


def test_ssm_document_is_valid_and_runs_the_adapter() -> None:
    with open(adapter("aws", "vmsnapshot-ssm-document.json")) as f:
        doc = json.load(f)
    assert doc["schemaVersion"] == "2.2"
    command = doc["parameters"]["command"]
    assert command["allowedValues"] == ["pre-script", "post-script",
                                        "dry-run"]
    step, = doc["mainSteps"]
    assert step["action"] == "aws:runShellScript"
    assert step["inputs"]["runCommand"] == [
        "/usr/share/vmsnapshot/adapters/aws/vmsnapshot-ssm '{{ command }}'"]


# ------------------------------------------- what each agent operation runs

class Recorder:
    """Stands in for vmsnapshot: records its argv and stdin, exits FAKE_RC."""

    def __init__(self, base: str) -> None:
        self.log = os.path.join(base, "record")
        fake = write_script(os.path.join(base, "fake-vmsnapshot"),
                            'echo "$* <$(readlink /proc/self/fd/0)" >> "%s"\n'
                            'exit "${FAKE_RC:-0}"\n' % self.log)
        self.env = dict(os.environ, VMSNAPSHOT="sh " + fake,
                        VMSNAPSHOT_ADAPTERS=ADAPTERS)

    def calls(self) -> List[str]:
        try:
            with open(self.log) as f:
                calls = f.read().splitlines()
        except FileNotFoundError:
            return []
        os.unlink(self.log)
        for call in calls:
            assert call.endswith(" </dev/null"), call
        return [c[:-len(" </dev/null")] for c in calls]


@pytest.fixture
def rec(tmp_path) -> Recorder:
    return Recorder(str(tmp_path))


def backup_scripts_d(base: str) -> str:
    """A backupScripts.d holding the adapter as an admin links it."""
    scripts = os.path.join(base, "backupScripts.d")
    os.makedirs(scripts, exist_ok=True)
    link = os.path.join(scripts, "50-vmsnapshot")
    if not os.path.lexists(link):
        os.symlink(adapter("vmware", "vmsnapshot"), link)
    return scripts


def test_vmware_with_its_sync_driver(rec, tmp_path) -> None:
    scripts = backup_scripts_d(str(tmp_path))
    rec.env["VMSNAPSHOT_VMWARE_TOOLS_CONF"] = str(tmp_path / "no-tools.conf")
    for op, want in (("freeze", "pre --no-freeze --trigger vmware"),
                     ("thaw", "post"),
                     ("freezeFail", "post --failed")):
        results = vmware_tools(scripts, op, rec.env)
        assert [r.returncode for r in results] == [0]
        assert rec.calls() == [want]
    rec.env["FAKE_RC"] = "3"
    assert [r.verdict for r in vmware_tools(scripts, "freeze", rec.env)] == [
        "failed"]
    res = subprocess.run([adapter("vmware", "vmsnapshot"), "bogus"],
                         env=rec.env, stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert res.returncode == 2 and "freeze|thaw|freezeFail" in res.stderr


@pytest.mark.parametrize("setting", ["false", "FALSE", "0"])
def test_vmware_without_its_sync_driver_vmsnapshot_freezes(
        rec, tmp_path, setting) -> None:
    conf = write_file(str(tmp_path / "tools.conf"),
                      "[logging]\nenableSyncDriver = true\n"
                      "[vmbackup]\n# comment\nenableSyncDriver = %s\n"
                      "timeout = 900\n" % setting)
    rec.env["VMSNAPSHOT_VMWARE_TOOLS_CONF"] = conf
    vmware_tools(backup_scripts_d(str(tmp_path)), "freeze", rec.env)
    assert rec.calls() == ["pre --trigger vmware"]


def test_vmware_legacy_script_names(rec) -> None:
    env = rec.env
    for argv, want in (
            ([adapter("vmware", "pre-freeze-script")],
             "pre --no-freeze --trigger vmware"),
            ([adapter("vmware", "pre-freeze-script"), "freeze"],
             "pre --no-freeze --trigger vmware"),
            ([adapter("vmware", "post-thaw-script")], "post"),
            ([adapter("vmware", "post-thaw-script"), "thaw"],
             "post"),
            ([adapter("vmware", "post-thaw-script"), "freezeFail"],
             "post --failed")):
        assert shell_runner(argv, env).returncode == 0
        assert rec.calls() == [want], argv


@pytest.mark.parametrize("disks", ["", "1/2,3/4"])
def test_google_agent_calls(rec, tmp_path, disks) -> None:
    cfg = write_file(str(tmp_path / "instance_configs.cfg"),
                     "[Snapshots]\nenabled = true\ntimeout_in_seconds = 45\n")
    rec.env["VMSNAPSHOT_GOOGLE_CONFIG"] = cfg
    pre = google_agent(adapter("google", "pre.sh"), disks, rec.env)
    post = google_agent(adapter("google", "post.sh"), disks, rec.env)
    assert (pre.verdict, post.verdict) == ("NO_ERROR", "NO_ERROR")
    assert rec.calls() == ["pre --trigger google --freeze-timeout 45",
                           "post"]


def test_google_timeout_default_and_bounds(rec, tmp_path) -> None:
    for text, want in (("", "60"), ("[Snapshots]\ntimeout_in_seconds = x\n",
                                    "60"),
                       ("[Snapshots]\ntimeout_in_seconds: 7200\n", "3600")):
        rec.env["VMSNAPSHOT_GOOGLE_CONFIG"] = write_file(
            str(tmp_path / "cfg"), text)
        google_agent(adapter("google", "pre.sh"), "", rec.env)
        assert rec.calls() == ["pre --trigger google --freeze-timeout " + want]


def test_google_failures_are_script_errors(rec) -> None:
    for rc in ("1", "2", "3", "70"):
        rec.env["FAKE_RC"] = rc
        res = google_agent(adapter("google", "pre.sh"), "", rec.env)
        assert res.verdict == "UNHANDLED_SCRIPT_ERROR", (rc, res)


def test_google_agent_kill_reaches_vmsnapshot(tmp_path) -> None:
    """The agent SIGKILLs only the script at its timeout: the script must
    be vmsnapshot itself (exec), not a shell that leaves it running with
    the agent's pipes open."""
    pids = str(tmp_path / "pids")
    fake = write_script(str(tmp_path / "slow-vmsnapshot"),
                        'echo $$ > "%s"\nexec sleep 60\n' % pids)
    env = dict(os.environ, VMSNAPSHOT="sh " + fake,
               VMSNAPSHOT_ADAPTERS=ADAPTERS,
               VMSNAPSHOT_GOOGLE_CONFIG=str(tmp_path / "none"))
    res = google_agent(adapter("google", "pre.sh"), "", env, timeout_s=2)
    assert res.verdict == "SCRIPT_TIMED_OUT"
    assert res.eof_wait_s < 5
    with open(pids) as f:
        assert int(f.read()) == res.pid


def test_qemu_hook_entry(rec) -> None:
    for op in ("freeze", "thaw"):
        assert qemu_ga_hook(adapter("qemu", "vmsnapshot"), op,
                            rec.env).returncode == 0
        assert rec.calls() == ["hook " + op]


def test_veeam_scripts(rec) -> None:
    assert shell_runner([adapter("veeam", "pre-freeze.sh")],
                        rec.env).verdict == "Success"
    assert shell_runner([adapter("veeam", "post-thaw.sh")],
                        rec.env).verdict == "Success"
    assert rec.calls() == ["pre --no-freeze --trigger veeam",
                           "post"]


def test_aws_ssm_commands(rec) -> None:
    ssm = adapter("aws", "vmsnapshot-ssm")
    for command, want in (("pre-script", ["pre --trigger aws"]),
                          ("post-script", ["post"]),
                          ("dry-run", ["check", "mounts"])):
        res = shell_runner(["sh", "-c", "%s '%s'" % (ssm, command)], rec.env)
        assert res.verdict == "Success"
        assert rec.calls() == want
    rec.env["FAKE_RC"] = "1"
    res = shell_runner([ssm, "dry-run"], rec.env)
    assert res.returncode == 1 and rec.calls() == ["check", "mounts"]
    res = shell_runner([ssm, "snapshot"], rec.env)
    assert res.returncode == 2 and b"pre-script|post-script|dry-run" in \
        res.output


# ------------------------------------ the real split cycle through adapters

class RealCycle:
    """The real CLI behind the adapters, confined to one loop filesystem:
    a stand-in VMSNAPSHOT adds --config (no plugin) and --mount to pre and
    check/mounts, as an administrator's configuration would."""

    def __init__(self, base: str, mountpoint: str, run_dir: str) -> None:
        # One application plugin whose scripts leave a trace.
        self.trace = os.path.join(base, "trace")
        app = [write_script(os.path.join(base, "app", phase),
                            'echo %s >> "%s"\n' % (phase, self.trace))
               for phase in ("pre", "post")]
        config = write_file(os.path.join(base, "vmsnapshot.toml"),
                            '[freeze]\ninclude = ["%s"]\n'
                            '[[plugin]]\nname = "app"\npre = ["%s"]\n'
                            'post = ["%s"]\n' % (mountpoint, app[0], app[1]))
        self.status = os.path.join(base, "status.json")
        shim = write_script(os.path.join(base, "vmsnapshot-shim"), """\
cmd=$1; shift
case $cmd in
pre) set -- pre --config '{config}' --mount '{mount}' "$@" ;;
post) set -- post --status-file '{status}' "$@" ;;
check) set -- check --config '{config}' "$@" ;;
mounts) set -- mounts --mount '{mount}' "$@" ;;
*) set -- "$cmd" "$@" ;;
esac
cd '{root}' && exec '{python}' -m vmsnapshot "$@"
""".format(config=config, mount=mountpoint, status=self.status, root=ROOT,
           python=sys.executable))
        self.mountpoint = mountpoint
        self.env = dict(os.environ, VMSNAPSHOT="sh " + shim,
                        VMSNAPSHOT_ADAPTERS=ADAPTERS,
                        VMSNAPSHOT_RUN_DIR=run_dir)

    def traces(self) -> List[str]:
        try:
            with open(self.trace) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def report(self) -> Dict:
        with open(self.status) as f:
            return json.load(f)


@pytest.fixture
def cycle(tmp_path, loopfs_factory, run_dir) -> RealCycle:
    lfs = loopfs_factory("ext4")
    yield RealCycle(str(tmp_path), lfs.mountpoint, run_dir)
    # Whatever happened, nothing stays frozen (the guardian or post thawed).
    if is_frozen(lfs.mountpoint):
        subprocess.run(["fsfreeze", "-u", lfs.mountpoint])
        raise AssertionError("left frozen")


def test_google_real_cycle(cycle) -> None:
    """The agent reads pre.sh's pipes to EOF: the holder must not keep them;
    pre freezes, post thaws."""
    pre = google_agent(adapter("google", "pre.sh"), "1/2", cycle.env,
                       timeout_s=60)
    assert pre.verdict == "NO_ERROR", pre
    assert pre.eof_wait_s < 5
    assert is_frozen(cycle.mountpoint)
    post = google_agent(adapter("google", "post.sh"), "1/2", cycle.env)
    assert post.verdict == "NO_ERROR", post
    assert not is_frozen(cycle.mountpoint)
    report = cycle.report()
    assert report["consistency"] == "application"
    assert cycle.traces() == ["pre", "post"]
    assert [(m["path"], m["frozen"]) for m in report["mounts"]] == [
        (cycle.mountpoint, True)]


def test_aws_real_cycle_and_dry_run(cycle) -> None:
    ssm = adapter("aws", "vmsnapshot-ssm")
    dry = shell_runner([ssm, "dry-run"], cycle.env)
    assert dry.verdict == "Success", dry
    assert cycle.mountpoint.encode() in dry.output
    assert not is_frozen(cycle.mountpoint)
    pre = shell_runner([ssm, "pre-script"], cycle.env)
    assert pre.verdict == "Success", pre
    assert is_frozen(cycle.mountpoint)
    post = shell_runner([ssm, "post-script"], cycle.env)
    assert post.verdict == "Success", post
    assert not is_frozen(cycle.mountpoint)
    assert cycle.report()["consistency"] == "application"


def test_vmware_real_cycle_sync_driver_and_freeze_fail(cycle, tmp_path) -> None:
    """With the sync driver vmtoolsd freezes: pre must not; freezeFail
    reports that no snapshot was taken."""
    cycle.env["VMSNAPSHOT_VMWARE_TOOLS_CONF"] = str(tmp_path / "none")
    entry = backup_scripts_d(str(tmp_path))
    results = vmware_tools(entry, "freeze", cycle.env)
    assert results[0].returncode == 0, results
    assert not is_frozen(cycle.mountpoint)
    results = vmware_tools(entry, "freezeFail", cycle.env)
    assert cycle.report()["snapshot_taken"] is False
    assert not is_frozen(cycle.mountpoint)


def test_vmware_real_cycle_without_sync_driver(cycle, tmp_path) -> None:
    cycle.env["VMSNAPSHOT_VMWARE_TOOLS_CONF"] = write_file(
        str(tmp_path / "tools.conf"), "[vmbackup]\nenableSyncDriver = false\n")
    script = adapter("vmware", "vmsnapshot")
    assert shell_runner([script, "freeze"], cycle.env).returncode == 0
    assert is_frozen(cycle.mountpoint)
    assert shell_runner([script, "thaw"], cycle.env).returncode == 0
    assert not is_frozen(cycle.mountpoint)
    assert cycle.report()["consistency"] == "application"


def test_veeam_real_cycle(cycle) -> None:
    pre = shell_runner([adapter("veeam", "pre-freeze.sh")], cycle.env)
    assert pre.verdict == "Success", pre
    assert not is_frozen(cycle.mountpoint)   # Veeam's driver freezes
    post = shell_runner([adapter("veeam", "post-thaw.sh")], cycle.env)
    assert post.verdict == "Success", post


def test_post_without_pre_is_a_failure_for_every_agent(cycle) -> None:
    """Each agent must see a post with nothing to finish as a failure, in
    its own terms (never Azure's "warning" 2, never Google's 124)."""
    res = google_agent(adapter("google", "post.sh"), "", cycle.env)
    assert res.verdict == "UNHANDLED_SCRIPT_ERROR", res
    res = shell_runner([adapter("aws", "vmsnapshot-ssm"), "post-script"],
                       cycle.env)
    assert res.verdict == "Failed", res


def test_azure_real_cycle(cycle, tmp_path) -> None:
    """azure enable, then Microsoft's plugin host runs the wrappers: the
    application is quiesced, the extension freezes (not vmsnapshot)."""
    root = str(tmp_path / "azroot")
    from tests.helpers.cli import run_vmsnapshot
    assert run_vmsnapshot("azure", "enable", "--root", root,
                          env=cycle.env).returncode == 0
    json_path = os.path.join(root, "etc/azure/VMSnapshotScriptPluginConfig.json")
    pre = azure_plugin_host(json_path, "pre", cycle.env, poll_s=0.2)
    assert pre.verdict == "success", pre
    assert not is_frozen(cycle.mountpoint)
    assert cycle.traces() == ["pre"]
    post = azure_plugin_host(json_path, "post", cycle.env, poll_s=0.2)
    assert post.verdict == "success", post
    assert cycle.traces() == ["pre", "post"]
    assert cycle.report()["snapshot_taken"] is True
