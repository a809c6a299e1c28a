"""Consistency groups across VMs on Ansible (issue 16), proven on three
"machines" on this box: Debian roots with the freshly built .deb, each with
its own loop filesystem at /data, its own /run and /etc, reached by
ansible-playbook through community.general's chroot connection, with the
collection built by ansible-galaxy and installed from its tarball.

A distributed writer appends record k to A, then B, then C. The group
snapshot copies the three loop images on the controller while every host
holds its freeze; restored, the copies need no journal replay and their
records are prefixes in writer order (equal when pre-scripts quiesce the
writer). Three independent runs a second apart break that (the negative
control). Then the failure table of docs/consistency_groups.md.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from typing import Dict, Iterator, List, Optional

import pytest

from tests.helpers.require import skip_or_fail
from tests.helpers import chroot, fleet
from tests.helpers.fleet import (VMSNAPSHOT, Ansible, Machine, Writer,
                                 prefixes_in_writer_order, restore)
from tests.helpers.loopfs import is_frozen
from tests.helpers.wait import poll, wait_until

pytestmark = pytest.mark.fleet

PLAYBOOK = "vmsnapshot.fleet.consistency_group"
NAMES = ("a", "b", "c")
SCRIPTS = "/etc/vmsnapshot/fleet"
POST_LOG = "/run/fleet-post.log"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tools() -> None:
    if os.geteuid() != 0:
        skip_or_fail("the fleet tests need root (chroot, loop devices)")
    missing = fleet.missing_tools()
    if missing:
        skip_or_fail("fleet tools missing (scripts/fleet-apt-packages.txt): "
                     + " ".join(missing))


@pytest.fixture(scope="module")
def workdir(tools, tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def collection_src(workdir) -> str:
    """ansible/ as a clean clone has it (the files git lists)."""
    src = os.path.join(workdir, "clean", "ansible")
    for name in chroot.pkgbuild.tree_files(chroot.ROOT):
        if name.startswith("ansible/"):
            target = os.path.join(workdir, "clean", name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(chroot.ROOT, name), target)
    return src


@pytest.fixture(scope="module")
def ansible(workdir, collection_src) -> Ansible:
    path = fleet.build_and_install_collection(collection_src, workdir)
    return Ansible(workdir, path)


@pytest.fixture(scope="module")
def deb(workdir) -> str:
    return chroot.build_deb(os.path.join(workdir, "packages"))


@pytest.fixture(scope="module")
def machines(deb, tmp_path_factory) -> Iterator[List[Machine]]:
    base = str(tmp_path_factory.mktemp("machines"))
    made: List[Machine] = []
    try:
        for name in NAMES:
            made.append(fleet.make_machine(
                name, os.path.join(base, name), deb))
        for m in made:
            m.write(SCRIPTS + "/quiesce", QUIESCE, 0o700)
            m.write(SCRIPTS + "/resume", RESUME, 0o700)
            m.write(SCRIPTS + "/fail", "#!/bin/sh\nexit 7\n", 0o700)
        yield made
    finally:
        problems = []
        for m in reversed(made):
            problems += fleet.destroy_machine(m)
        assert not problems, problems


@pytest.fixture
def fresh(machines) -> Iterator[List[Machine]]:
    """Each test starts with no holder, nothing frozen and no post log, and
    leaves the same."""
    for m in machines:
        for name in (POST_LOG, "/run/snapshot-started"):
            if os.path.exists(m.path(name)):
                os.unlink(m.path(name))
    yield machines
    for m in machines:
        if m.holder_pid() is not None:
            m.sh(VMSNAPSHOT, "post", "--failed", check=False)
    fleet.wait_holders_gone(machines, 30)
    for m in machines:
        assert not is_frozen(m.mount), m.name


QUIESCE = """#!/bin/sh
# Quiesce the distributed writer: ask it to pause between two records and
# wait for its answer.
rm -f /run/writer.paused
touch /run/writer.pause
i=0
while [ ! -e /run/writer.paused ]; do
    i=$((i + 1)); [ $i -lt 400 ] || exit 1
    sleep 0.05
done
"""

RESUME = """#!/bin/sh
rm -f /run/writer.pause
echo post >> %s
""" % POST_LOG


def config(m: Machine, name: str, pre: Optional[str], post: bool = True,
           stop_on_failure: bool = False) -> str:
    lines = []
    if stop_on_failure:
        lines += ["[policy]", "continue_on_failure = false", ""]
    if pre or post:
        lines += ["[[plugin]]", 'name = "app"']
        if pre:
            lines.append('pre = ["%s/%s"]' % (SCRIPTS, pre))
        if post:
            lines.append('post = ["%s/resume"]' % SCRIPTS)
    return m.write("/etc/vmsnapshot/%s.toml" % name, "\n".join(lines) + "\n")


def group_vars(ansible: Ansible, name: str, snapshot: List[str],
               timeout: float = 30, **extra) -> str:
    values = dict({"vmsnapshot_group_snapshot": snapshot,
                   "vmsnapshot_freeze_timeout": timeout,
                   "vmsnapshot_group_report": os.path.join(
                       ansible.workdir, name + "-report.json")}, **extra)
    return ansible.vars_file(values, name + "-vars.json")


def host_vars(machines: List[Machine], configs: Dict[str, str]
              ) -> Dict[str, Dict[str, object]]:
    return {m.name: {"vmsnapshot_pre_args": [
        "--config", configs[m.name], "--mount", "/data"]} for m in machines}


def snapshot_argv(machines: List[Machine], outdir: str) -> List[str]:
    return ["/usr/bin/env", "PYTHONPATH=" + chroot.ROOT,
            __import__("sys").executable, "-m",
            "tests.helpers.fleet_snapshot", outdir] + [
        "%s=%s=%s" % (m.name, m.mount, m.image) for m in machines]


def report_file(ansible: Ansible, name: str) -> Dict:
    with open(os.path.join(ansible.workdir, name + "-report.json")) as f:
        return json.load(f)


def post_ran(m: Machine) -> int:
    try:
        with open(m.path(POST_LOG)) as f:
            return f.read().split().count("post")
    except FileNotFoundError:
        return 0


def restored(machines: List[Machine], outdir: str, tmp_path) -> List:
    return [restore(os.path.join(outdir, m.name + ".img"),
                    str(tmp_path / ("restore-" + m.name)), m.name)
            for m in machines]


def group_cycle(ansible, machines, tmp_path, name: str, pre: Optional[str]):
    configs = {m.name: config(m, name, pre) for m in machines}
    inventory = ansible.inventory(machines, host_vars(machines, configs),
                                  name + "-inventory.json")
    outdir = str(tmp_path / "snap")
    writer = Writer(machines)
    try:
        writer.wait_acked(30)
        res = ansible.playbook(inventory, PLAYBOOK, "-e", "@" + group_vars(
            ansible, name, snapshot_argv(machines, outdir)))
        writer.wait_acked(writer.acked() + 10)   # it resumed everywhere
    finally:
        writer.stop()
    return res, outdir


def check(res: subprocess.CompletedProcess) -> str:
    return "rc=%d\n%s\n%s" % (res.returncode, res.stdout[-6000:],
                              res.stderr[-3000:])


# ---------------------------------------------------------------- build

def test_collection_version_follows_the_package(collection_src) -> None:
    with open(os.path.join(collection_src, "galaxy.yml")) as f:
        version = [line.split(":", 1)[1].strip() for line in f
                   if line.startswith("version:")][0]
    assert version == chroot.pkgbuild.upstream_version(chroot.ROOT)


def test_built_collection_has_role_playbook_module_docs(ansible) -> None:
    base = os.path.join(ansible.collections, "ansible_collections",
                        "vmsnapshot", "fleet")
    for name in ("playbooks/consistency_group.yml", "roles/agent/tasks/main.yml",
                 "plugins/modules/status.py", "plugins/filter/group_report.py",
                 "docs/consistency_groups.md", "MANIFEST.json"):
        assert os.path.exists(os.path.join(base, name)), name


# ---------------------------------------------------------------- guard

def test_freeze_guard_holds_inside_the_machines(fresh) -> None:
    """Inside a root the suite's guard becomes "/" (only filesystems
    mounted inside the root, never the one holding it); the chroot refuses
    to run without a guard or for a root outside it."""
    m = fresh[0]
    res = m.sh("sh", "-c", 'echo "$VMSNAPSHOT_FREEZE_GUARD"')
    assert res.stdout.strip() == "/"
    res = chroot.run([fleet.CHROOT_EXE, m.root, "true"], check=False)
    assert res.returncode == 126 and "is not set" in res.stderr
    res = chroot.run([fleet.CHROOT_EXE, "/", "true"], check=False,
                     env=fleet.guard_env())
    assert res.returncode == 126 and "is not under" in res.stderr


# ---------------------------------------------------------------- role

ROLE_PLAY = """- hosts: app
  gather_facts: false
  roles:
    - role: vmsnapshot.fleet.agent
"""


def test_agent_role_installs_validates_and_enables(ansible, fresh, deb,
                                                  workdir) -> None:
    machines = fresh
    inventory = ansible.inventory(machines, name="role-inventory.json")
    play = os.path.join(workdir, "role.yml")
    with open(play, "w") as f:
        f.write(ROLE_PLAY)
    good = {"vmsnapshot_package_file": deb, "vmsnapshot_adapter": "vmware",
            "vmsnapshot_dropins": [{"name": "app.toml", "content":
                                    '[[plugin]]\nname = "app"\npre = ["%s/quiesce"]\n'
                                    % SCRIPTS}]}
    res = ansible.playbook(inventory, play, "-e",
                           "@" + ansible.vars_file(good, "role-good.json"))
    assert res.returncode == 0, check(res)
    for m in machines:
        dropin = m.path("/etc/vmsnapshot/conf.d/app.toml")
        assert oct(os.stat(dropin).st_mode & 0o777) == "0o600"
        assert 'name = "app"' in open(dropin).read()
        script = m.path("/etc/vmware-tools/backupScripts.d/vmsnapshot")
        assert "pre --no-freeze" in open(script).read()
        assert os.stat(script).st_mode & 0o777 == 0o700
    # A broken drop-in is refused by `vmsnapshot check` and never lands.
    bad = dict(good, vmsnapshot_dropins=[{"name": "app.toml",
                                          "content": "[[plugin]\nname = 1\n"}])
    res = ansible.playbook(inventory, play, "-e",
                           "@" + ansible.vars_file(bad, "role-bad.json"))
    assert res.returncode != 0
    assert "failed to validate" in res.stdout, check(res)
    for m in machines:
        assert 'name = "app"' in open(
            m.path("/etc/vmsnapshot/conf.d/app.toml")).read()
    # Bad input: a clear message naming the variable and what to do.
    wrong = dict(good, vmsnapshot_package_file="/tmp/vmsnapshot.tar")
    res = ansible.playbook(inventory, play, "-e",
                           "@" + ansible.vars_file(wrong, "role-wrong.json"))
    assert res.returncode != 0
    assert "is neither a .deb nor a .rpm" in res.stdout, check(res)
    for m in machines:
        os.unlink(m.path("/etc/vmsnapshot/conf.d/app.toml"))


# ---------------------------------------------------------------- proofs

def test_group_quiesced_by_pre_scripts_is_equal_and_application(
        ansible, fresh, tmp_path) -> None:
    machines = fresh
    res, outdir = group_cycle(ansible, machines, tmp_path, "quiesced",
                              "quiesce")
    assert res.returncode == 0, check(res)
    report = report_file(ansible, "quiesced")
    assert report["level"] == "application", report
    assert report["snapshot_taken"] is True
    assert sorted(report["hosts"]) == list(NAMES)
    with open(os.path.join(outdir, "frozen.json")) as f:
        assert json.load(f) == {n: True for n in NAMES}
    a, b, c = restored(machines, outdir, tmp_path)
    assert a.clean and b.clean and c.clean, "a copy needs journal replay"
    assert a.records, "the writer wrote nothing before the snapshot"
    assert a.records == b.records == c.records, (
        len(a.records), len(b.records), len(c.records))
    assert prefixes_in_writer_order(a, b, c)
    assert [post_ran(m) for m in machines] == [1, 1, 1]


def test_group_without_scripts_keeps_prefixes_in_writer_order(
        ansible, fresh, tmp_path) -> None:
    machines = fresh
    res, outdir = group_cycle(ansible, machines, tmp_path, "prefix", None)
    assert res.returncode == 0, check(res)
    report = report_file(ansible, "prefix")
    assert report["level"] == "filesystem", report
    a, b, c = restored(machines, outdir, tmp_path)
    assert a.clean and b.clean and c.clean, "a copy needs journal replay"
    assert prefixes_in_writer_order(a, b, c), (
        len(a.records), len(b.records), len(c.records))


def test_negative_control_independent_runs_break_the_prefixes(
        fresh, tmp_path) -> None:
    """Three `vmsnapshot run`s a second apart, each copying its own image
    from inside its machine: the copies never existed together, and the
    prefix property breaks (which shows the check above can fail)."""
    machines = fresh
    for m in machines:
        config(m, "independent", None, post=False)
    broken = []
    for round_no in range(1, 5):
        writer = Writer(machines)
        try:
            writer.wait_acked(30)
            for m in machines:
                res = m.sh(VMSNAPSHOT, "run", "--config",
                           "/etc/vmsnapshot/independent.toml", "--mount",
                           "/data", "--", "cp", "--sparse=always",
                           "/" + fleet.IMAGE_DIR + "/data.img",
                           "/" + fleet.IMAGE_DIR + "/copy.img", check=False)
                assert res.returncode == 0, res.stderr
                time.sleep(1)
        finally:
            writer.stop()
        copies = [restore(m.path(fleet.IMAGE_DIR + "/copy.img"),
                          str(tmp_path / ("r%d%s" % (round_no, m.name))),
                          m.name) for m in machines]
        for m in machines:
            os.unlink(m.path(fleet.IMAGE_DIR + "/copy.img"))
        assert all(r.clean for r in copies)
        ok = prefixes_in_writer_order(*copies)
        print("negative control round %d: records a=%d b=%d c=%d, prefix "
              "property %s" % (round_no, *(len(r.records) for r in copies),
                               "holds" if ok else "broken"))
        if not ok:
            broken.append(round_no)
        if len(broken) >= 1 and round_no >= 2:
            break
    assert broken, "independent runs never broke the prefix property"


# ---------------------------------------------------------------- failures

def test_pre_failing_on_one_host_takes_no_snapshot(ansible, fresh,
                                                   tmp_path) -> None:
    machines = fresh
    configs = {m.name: config(m, "prefail", "fail" if m.name == "b" else None,
                              stop_on_failure=True) for m in machines}
    inventory = ansible.inventory(machines, host_vars(machines, configs),
                                  "prefail-inventory.json")
    outdir = str(tmp_path / "snap")
    res = ansible.playbook(inventory, PLAYBOOK, "-e", "@" + group_vars(
        ansible, "prefail", snapshot_argv(machines, outdir)))
    assert res.returncode != 0, check(res)
    assert not os.path.exists(outdir), "a snapshot was taken"
    report = report_file(ansible, "prefail")
    assert report["level"] == "failed" and not report["snapshot_taken"]
    hosts = report["hosts"]
    assert hosts["b"]["fleet"]["pre_rc"] == 3
    assert "Pre-ScriptExecutionFailed" in [
        e["name"] for e in hosts["b"]["errors"]]
    for name in ("a", "c"):      # they prepared: post --failed released them
        assert hosts[name]["fleet"]["pre_rc"] == 0
        assert hosts[name]["consistency"] == "failed"
        assert hosts[name]["snapshot_taken"] is False
    assert [post_ran(m) for m in machines] == [1, 1, 1]
    for m in machines:
        assert not is_frozen(m.mount)


def test_killed_controller_every_host_thaws_by_its_watchdog(
        ansible, fresh, tmp_path) -> None:
    machines = fresh
    configs = {m.name: config(m, "killed", None) for m in machines}
    inventory = ansible.inventory(machines, host_vars(machines, configs),
                                  "killed-inventory.json")
    started = os.path.join(ansible.workdir, "snapshot-started")
    if os.path.exists(started):
        os.unlink(started)
    timeout = 15   # covers pre + ansible overhead under CI load
    proc = ansible.start(inventory, PLAYBOOK, "-e", "@" + group_vars(
        ansible, "killed", ["sh", "-c", "touch %s; exec sleep 600" % started],
        timeout=timeout))
    try:
        def snapshot_started() -> bool:
            assert proc.poll() is None, "the playbook ended early"
            return os.path.exists(started)
        wait_until(snapshot_started, 120, "a snapshot started")
        assert all(is_frozen(m.mount) for m in machines)
        killed_at = time.monotonic()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)      # the controller dies
        proc.wait()
    thawed = {}

    def all_thawed() -> bool:
        for m in machines:
            if m.name not in thawed and not is_frozen(m.mount):
                thawed[m.name] = time.monotonic() - killed_at
        return len(thawed) == len(machines)
    assert poll(all_thawed, timeout + 20 - (time.monotonic() - killed_at),
                0.1), "still frozen: %s" % [m.name for m in machines
                                            if m.name not in thawed]
    fleet.wait_holders_gone(machines, 30)
    assert [post_ran(m) for m in machines] == [1, 1, 1]
    for m in machines:    # a later post collects what the holder judged
        res = m.sh(VMSNAPSHOT, "post", "--json", check=False)
        report = json.loads(res.stdout)
        assert res.returncode == 1, res.stdout
        assert report["consistency"] == "crash"
        assert "FsFreezeTimeout" in [e["name"] for e in report["errors"]]


def test_failing_snapshot_command_is_failed_and_releases_all(
        ansible, fresh, tmp_path) -> None:
    machines = fresh
    configs = {m.name: config(m, "snapfail", "quiesce") for m in machines}
    inventory = ansible.inventory(machines, host_vars(machines, configs),
                                  "snapfail-inventory.json")
    writer = Writer(machines)
    try:
        writer.wait_acked(10)
        res = ansible.playbook(inventory, PLAYBOOK, "-e", "@" + group_vars(
            ansible, "snapfail", ["sh", "-c", "echo no quota >&2; exit 4"]))
        writer.wait_acked(writer.acked() + 10)
    finally:
        writer.stop()
    assert res.returncode != 0, check(res)
    assert "below the required filesystem" in res.stdout, check(res)
    report = report_file(ansible, "snapfail")
    assert report["level"] == "failed" and not report["snapshot_taken"]
    assert report["snapshot"]["returncode"] == 4
    assert "no quota" in report["snapshot"]["stderr"]
    for name, host in report["hosts"].items():
        assert host["consistency"] == "failed", name
        assert "SnapshotCommandFailed" in [e["name"] for e in host["errors"]]
    assert [post_ran(m) for m in machines] == [1, 1, 1]
    for m in machines:
        assert not is_frozen(m.mount)


def test_host_unreachable_mid_way_counts_as_crash(ansible, fresh,
                                                  tmp_path) -> None:
    """C answers pre, then drops off before post: A and B are released,
    C thaws by its watchdog and keeps its report for a later post; the
    group claims only crash for C, so the play fails."""
    machines = fresh
    configs = {m.name: config(m, "midway", None) for m in machines}
    inventory = ansible.inventory(machines, host_vars(machines, configs),
                                  "midway-inventory.json")
    c = machines[2]
    down = c.root + ".down"
    outdir = str(tmp_path / "snap")
    snapshot = ["sh", "-c", 'touch "$0" && exec "$@"', down] + snapshot_argv(
        machines, outdir)
    timeout = 15   # covers pre + ansible overhead under CI load
    try:
        res = ansible.playbook(inventory, PLAYBOOK, "-e", "@" + group_vars(
            ansible, "midway", snapshot, timeout=timeout))
        assert res.returncode != 0, check(res)
        assert "UNREACHABLE" in res.stdout, check(res)
        report = report_file(ansible, "midway")
        assert report["snapshot_taken"] is True
        assert report["level"] == "crash", report
        assert report["hosts"]["c"]["consistency"] == "crash"
        assert report["hosts"]["c"]["fleet"]["post_rc"] is None
        for name in ("a", "b"):
            assert report["hosts"][name]["consistency"] == "filesystem"
        assert not is_frozen(machines[0].mount)
        assert not is_frozen(machines[1].mount)
        fleet.wait_holders_gone([c], timeout + 30)     # its watchdog
        assert not is_frozen(c.mount)
    finally:
        if os.path.exists(down):
            os.unlink(down)
    assert [post_ran(m) for m in machines] == [1, 1, 1]
    res = c.sh(VMSNAPSHOT, "post", "--json", check=False)
    assert res.returncode == 1
    assert json.loads(res.stdout)["consistency"] == "crash"


def test_host_unreachable_for_pre_takes_no_snapshot(ansible, fresh,
                                                    tmp_path) -> None:
    machines = fresh
    configs = {m.name: config(m, "downpre", None) for m in machines}
    inventory = ansible.inventory(machines, host_vars(machines, configs),
                                  "downpre-inventory.json")
    down = machines[1].root + ".down"
    outdir = str(tmp_path / "snap")
    open(down, "w").close()
    try:
        res = ansible.playbook(inventory, PLAYBOOK, "-e", "@" + group_vars(
            ansible, "downpre", snapshot_argv(machines, outdir)))
    finally:
        os.unlink(down)
    assert res.returncode != 0, check(res)
    assert not os.path.exists(outdir), "a snapshot was taken"
    report = report_file(ansible, "downpre")
    assert report["level"] == "failed" and not report["snapshot_taken"]
    assert "unreachable" in report["hosts"]["b"]["fleet"]["note"]
    for name in ("a", "c"):
        assert report["hosts"][name]["consistency"] == "failed"
        assert report["hosts"][name]["fleet"]["post_rc"] == 3
    assert [post_ran(m) for m in machines] == [1, 0, 1]


def test_bad_group_variables_freeze_nothing(ansible, fresh) -> None:
    machines = fresh
    inventory = ansible.inventory(machines, name="bad-inventory.json")
    res = ansible.playbook(inventory, PLAYBOOK, "-e", "@" + group_vars(
        ansible, "bad", "snapshot-all-disks"))      # a string, not an argv
    assert res.returncode != 0
    assert "vmsnapshot_group_snapshot to the snapshot command as an argv " \
           "list" in res.stdout, check(res)
    assert all(m.holder_pid() is None for m in machines)


# ---------------------------------------------------------------- status

STATUS_PLAY = """- hosts: app
  gather_facts: false
  tasks:
    - vmsnapshot.fleet.status:
        count: 2
    - copy:
        content: "{{ vmsnapshot_runs | to_json }}"
        dest: "%s/status-{{ inventory_hostname }}.json"
      delegate_to: localhost
"""


def test_status_module_gives_last_runs_as_facts(ansible, fresh,
                                                workdir) -> None:
    machines = fresh
    probe = machines[0].sh(VMSNAPSHOT, "status", "--help", check=False)
    if probe.returncode != 0:
        skip_or_fail("`vmsnapshot status` is missing from the installed "
                     "package: the status module needs it")
    for m in machines:
        config(m, "status", None, post=False)
        m.sh(VMSNAPSHOT, "run", "--config", "/etc/vmsnapshot/status.toml",
             "--mount", "/data")
    inventory = ansible.inventory(machines, name="status-inventory.json")
    play = os.path.join(workdir, "status.yml")
    with open(play, "w") as f:
        f.write(STATUS_PLAY % workdir)
    res = ansible.playbook(inventory, play)
    assert res.returncode == 0, check(res)
    for m in machines:
        with open(os.path.join(workdir, "status-%s.json" % m.name)) as f:
            runs = json.load(f)
        assert 1 <= len(runs) <= 2
        assert runs[0]["consistency"] in ("application", "filesystem",
                                          "crash", "failed"), runs[0]


FAKE_STATUS = """#!/bin/sh
# A stand-in for `vmsnapshot status` (issue 14) with its contract: JSON
# {"runs": [reports, newest first]}.
[ "$1 $2 $3" = "status --json -n" ] || { echo "usage" >&2; exit 2; }
echo '{"runs": [{"consistency": "application", "run_id": "2"},
                {"consistency": "crash", "run_id": "1"}]}'
"""

NO_HISTORY = """#!/bin/sh
echo '{"runs": []}'
exit 1
"""

OLD_VMSNAPSHOT = """#!/bin/sh
echo "vmsnapshot: error: argument command: invalid choice: 'status'" >&2
exit 2
"""

MODULE_PLAY = """- hosts: app
  gather_facts: false
  tasks:
    - vmsnapshot.fleet.status:
        count: 2
        executable: %s
    - copy:
        content: "{{ vmsnapshot_last_run | to_json }}"
        dest: "%s/last-{{ inventory_hostname }}.json"
      delegate_to: localhost
"""


def test_status_module_facts_and_its_errors(ansible, fresh, workdir) -> None:
    """The module against the contract of `vmsnapshot status --json -n N`
    (a stand-in, so this holds before issue 14 lands), and its message for
    a vmsnapshot without `status`."""
    machines = fresh
    for m in machines:
        m.write("/usr/local/bin/fake-status", FAKE_STATUS, 0o755)
        m.write("/usr/local/bin/old-vmsnapshot", OLD_VMSNAPSHOT, 0o755)
        m.write("/usr/local/bin/no-history", NO_HISTORY, 0o755)
    inventory = ansible.inventory(machines, name="module-inventory.json")
    play = os.path.join(workdir, "module.yml")
    with open(play, "w") as f:
        f.write(MODULE_PLAY % ("/usr/local/bin/fake-status", workdir))
    res = ansible.playbook(inventory, play)
    assert res.returncode == 0, check(res)
    for m in machines:
        with open(os.path.join(workdir, "last-%s.json" % m.name)) as f:
            assert json.load(f) == {"consistency": "application",
                                    "run_id": "2"}
    with open(play, "w") as f:        # no run yet: no facts, no failure
        f.write(MODULE_PLAY % ("/usr/local/bin/no-history", workdir))
    res = ansible.playbook(inventory, play)
    assert res.returncode == 0, check(res)
    for m in machines:
        with open(os.path.join(workdir, "last-%s.json" % m.name)) as f:
            assert json.load(f) is None
    with open(play, "w") as f:
        f.write(MODULE_PLAY % ("/usr/local/bin/old-vmsnapshot", workdir))
    res = ansible.playbook(inventory, play)
    assert res.returncode != 0
    assert "has no `status` command: upgrade it" in res.stdout, check(res)
