"""Three "machines" on this box for the fleet tests: Debian roots with the
freshly built .deb installed, each with its own loop filesystem at /data
(its image inside the root, at /var/lib/fleet/data.img, so a snapshot
command inside the root can copy it too), its own /run and /etc, and /proc
mounted for vmsnapshot. Ansible reaches them through community.general's
chroot connection, whose chroot is tests/helpers/fleet-chroot (it maps the
suite's freeze guard into the root).

Also: the collection built and installed as a user would, ansible-playbook
with a private configuration, and the restore check of snapshot copies.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from tests.helpers import chroot
from tests.helpers.loopfs import (LoopFS, destroy_loopfs, make_loopfs,
                                  mount_image, run)
from tests.helpers.wait import poll, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
CHROOT_EXE = os.path.join(HERE, "fleet-chroot")
ANSIBLE_BINS = ("/usr/bin/ansible-playbook", "/usr/bin/ansible-galaxy",
                "/usr/bin/ansible")
VMSNAPSHOT = "/usr/sbin/vmsnapshot"
IMAGE_DIR = "var/lib/fleet"


@dataclass
class Machine:
    name: str
    root: str
    data: LoopFS

    @property
    def mount(self) -> str:
        return self.data.mountpoint

    @property
    def image(self) -> str:
        return self.data.image

    def path(self, inside: str) -> str:
        return os.path.join(self.root, inside.lstrip("/"))

    def write(self, inside: str, text: str, mode: int = 0o600) -> str:
        full = self.path(inside)
        os.makedirs(os.path.dirname(full), mode=0o700, exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(full, mode)
        return inside

    def sh(self, *argv: str, check: bool = True, timeout: float = 120
           ) -> subprocess.CompletedProcess:
        """A command inside the machine, the way Ansible runs it."""
        return chroot.run([CHROOT_EXE, self.root] + list(argv), check=check,
                          timeout=timeout, env=guard_env())

    def holder_pid(self) -> Optional[int]:
        try:
            with open(self.path("/run/vmsnapshot/holder.json")) as f:
                return int(json.load(f)["pid"])
        except (FileNotFoundError, ValueError):
            return None


def guard_env() -> Dict[str, str]:
    return {"VMSNAPSHOT_FREEZE_GUARD": os.environ["VMSNAPSHOT_FREEZE_GUARD"]}


def missing_tools() -> List[str]:
    missing = [b for b in ANSIBLE_BINS if not os.path.exists(b)]
    found = subprocess.run(
        ["/usr/bin/ansible-doc", "-t", "connection", "-l"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(chroot.CLEAN_ENV, ANSIBLE_NOCOLOR="1")) if not missing else None
    if found is not None and "community.general.chroot" not in found.stdout:
        missing.append("community.general.chroot (Debian package ansible)")
    return missing + chroot.missing_host_tools()


def make_machine(name: str, root: str, deb: str) -> Machine:
    chroot.make_debian_root(root)
    chroot.install_debs(root, deb)
    os.makedirs(os.path.join(root, IMAGE_DIR), exist_ok=True)
    data = make_loopfs(root, "ext4", name="data",
                       image_dir=os.path.join(root, IMAGE_DIR))
    try:
        run("mount", "-t", "proc", "proc", os.path.join(root, "proc"))
    except BaseException:
        destroy_loopfs(data)
        raise
    return Machine(name, root, data)


def wait_holders_gone(machines: Sequence[Machine], timeout: float) -> None:
    if not poll(lambda: all(m.holder_pid() is None for m in machines),
                timeout, 0.1):
        raise AssertionError("holders still running: %s" % [
            (m.name, m.holder_pid()) for m in machines])


def destroy_machine(m: Machine) -> List[str]:
    """Thaw, finish any holder, unmount /proc and /data, delete the root."""
    problems = []
    run("fsfreeze", "-u", m.mount, check=False)
    if m.holder_pid() is not None:
        m.sh(VMSNAPSHOT, "post", "--failed", check=False)
        try:
            wait_holders_gone([m], 30)
        except AssertionError as e:
            problems.append(str(e))
    res = run("umount", m.path("/proc"), check=False)
    if res.returncode != 0:
        problems.append("umount %s: %s" % (m.path("/proc"), res.stderr))
    problems += destroy_loopfs(m.data)
    if not problems:
        chroot.remove_root(m.root)
    return problems


# ---------------------------------------------------------------- ansible

class Ansible:
    """ansible-playbook with the collection installed from its built
    tarball, a private configuration, and an inventory of machines."""

    def __init__(self, workdir: str, collections: str) -> None:
        self.workdir = workdir
        self.collections = collections
        os.makedirs(os.path.join(workdir, "home"), exist_ok=True)

    def env(self) -> Dict[str, str]:
        return dict(guard_env(),
                    ANSIBLE_HOME=os.path.join(self.workdir, "home"),
                    ANSIBLE_LOCAL_TEMP=os.path.join(self.workdir, "tmp"),
                    ANSIBLE_COLLECTIONS_PATH=self.collections,
                    ANSIBLE_NOCOLOR="1", ANSIBLE_FORKS="10",
                    ANSIBLE_RETRY_FILES_ENABLED="0",
                    ANSIBLE_HOST_KEY_CHECKING="0",
                    ANSIBLE_DEPRECATION_WARNINGS="0")

    def inventory(self, machines: Sequence[Machine],
                  host_vars: Optional[Dict[str, Dict[str, object]]] = None,
                  name: str = "inventory.json") -> str:
        hosts = {}
        for m in machines:
            hosts[m.name] = dict({
                "ansible_host": m.root,
                "ansible_connection": "community.general.chroot",
                "ansible_chroot_exe": CHROOT_EXE,
                "ansible_python_interpreter": "/usr/bin/python3"},
                **(host_vars or {}).get(m.name, {}))
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            json.dump({"all": {"children": {"app": {"hosts": hosts}}}}, f)
        return path

    def vars_file(self, values: Dict[str, object], name: str) -> str:
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            json.dump(values, f)
        return path

    def argv(self, inventory: str, *args: str) -> List[str]:
        return ["/usr/bin/ansible-playbook", "-i", inventory] + list(args)

    def playbook(self, inventory: str, *args: str, timeout: float = 180
                 ) -> subprocess.CompletedProcess:
        return chroot.run(self.argv(inventory, *args), check=False,
                          timeout=timeout, env=self.env(), cwd=self.workdir)

    def start(self, inventory: str, *args: str) -> subprocess.Popen:
        """ansible-playbook in its own process group (to kill it whole)."""
        log = open(os.path.join(self.workdir, "killed-run.log"), "w")
        return subprocess.Popen(
            self.argv(inventory, *args), stdout=log, stderr=subprocess.STDOUT,
            env=dict(chroot.CLEAN_ENV, **self.env()), cwd=self.workdir,
            start_new_session=True)


def build_and_install_collection(src: str, workdir: str) -> str:
    """ansible-galaxy collection build, then install from the tarball, as a
    user would; returns the collections path."""
    out = os.path.join(workdir, "build")
    chroot.run(["/usr/bin/ansible-galaxy", "collection", "build", src,
                "--output-path", out], timeout=120)
    tarballs = glob.glob(os.path.join(out, "vmsnapshot-fleet-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    path = os.path.join(workdir, "collections")
    chroot.run(["/usr/bin/ansible-galaxy", "collection", "install", "-p",
                path, tarballs[0]], timeout=120)
    return path


# ---------------------------------------------------------------- restore

@dataclass
class Restored:
    name: str
    clean: bool            # no journal replay needed (needs_recovery unset)
    records: List[int]


def restore(image: str, mountpoint: str, name: str) -> Restored:
    """Mount a snapshot copy read-only, after checking that its journal
    needs no replay, and read its records."""
    features = run("dumpe2fs", "-h", image).stdout
    line = [x for x in features.splitlines()
            if x.startswith("Filesystem features:")][0]
    clean = "needs_recovery" not in line
    # noload: a journal that needed replay could not sneak past the check
    # above by being replayed here.
    lfs = mount_image(image, mountpoint, "ro,noload", "ext4")
    try:
        with open(os.path.join(mountpoint, "records")) as f:
            records = [int(x) for x in f.read().split()]
    except FileNotFoundError:
        records = []
    finally:
        problems = destroy_loopfs(lfs, keep_image=True)
    assert not problems, problems
    return Restored(name, clean, records)


def is_prefix(records: List[int]) -> bool:
    return records == list(range(1, len(records) + 1))


def prefixes_in_writer_order(a: Restored, b: Restored, c: Restored) -> bool:
    """C's records ⊆ B's ⊆ A's, each a prefix of the writer's sequence."""
    return (all(is_prefix(r.records) for r in (a, b, c))
            and len(c.records) <= len(b.records) <= len(a.records))


# ---------------------------------------------------------------- writer

class Writer:
    def __init__(self, machines: Sequence[Machine]) -> None:
        self.machines = machines
        for m in machines:
            for name in ("run/writer.pause", "run/writer.paused",
                         "run/writer.acked", "data/records"):
                try:
                    os.unlink(m.path(name))
                except FileNotFoundError:
                    pass
        root = os.path.dirname(os.path.dirname(HERE))
        self.proc = subprocess.Popen(
            [sys.executable, "-m",
             "tests.helpers.fleet_writer"] + [m.root for m in machines],
            cwd=root, start_new_session=True)

    def acked(self) -> int:
        from tests.helpers.fleet_writer import acked
        return acked(self.machines[0].root)

    def wait_acked(self, n: int, timeout: float = 30) -> None:
        def done() -> bool:
            assert self.proc.poll() is None, "the writer died"
            return self.acked() >= n
        wait_until(done, timeout, "%d records acknowledged" % n)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
