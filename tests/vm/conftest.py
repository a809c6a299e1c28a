"""Fixtures of the VM suite: the guest image (built once per session, from
the freshly built .deb) and machines that are always stopped."""
from __future__ import annotations

import hashlib
import os
import shutil
from typing import Callable, Iterator, List, Tuple

import pytest

from tests.helpers.require import skip_or_fail
from tests.helpers import chroot
from tests.vm import image as vmimage
from tests.vm.machine import Machine

# Developers may keep the image between runs: set VMSNAPSHOT_VM_CACHE to a
# directory; the image is reused while the .deb and the builder are
# unchanged.  CI does not set it, so every CI run builds the guest anew.
CACHE = os.environ.get("VMSNAPSHOT_VM_CACHE")
# ... and VMSNAPSHOT_VM_DEB to a .deb to bake instead of building one.
PREBUILT_DEB = os.environ.get("VMSNAPSHOT_VM_DEB")
# (what, seconds) for the closing summary: image build and boot times.
TIMINGS: List[Tuple[str, float]] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "VM suite timings")
        for what, seconds in TIMINGS:
            terminalreporter.write_line("%-40s %6.1f s" % (what, seconds))


def _builder_digest(deb: str) -> str:
    h = hashlib.sha256()
    files = [deb, vmimage.__file__] + sorted(
        os.path.join(vmimage.GUEST_DIR, f) for f in os.listdir(vmimage.GUEST_DIR))
    for path in files:
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + f.read())
    return h.hexdigest()[:24]


@pytest.fixture(scope="session")
def vm_image(tmp_path_factory: pytest.TempPathFactory) -> vmimage.GuestImage:
    if os.geteuid() != 0:
        skip_or_fail("the VM tests need root (chroot, apt in the guest root)")
    missing = vmimage.missing_host_tools() + chroot.missing_host_tools()
    if missing:
        skip_or_fail("VM test tools missing (apt packages): %s" % " ".join(sorted(set(missing))))
    base = str(tmp_path_factory.mktemp("vm-image"))
    deb = PREBUILT_DEB or chroot.build_deb(os.path.join(base, "deb"))
    if CACHE:
        workdir = os.path.join(CACHE, _builder_digest(deb))
        cached = vmimage.load_image(workdir)
        if cached is not None:
            return cached
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        workdir = os.path.join(base, "image")
    image = vmimage.build_image(workdir, deb)
    TIMINGS.append(("guest image build (kernel %s)" % image.kernel_version, image.build_s))
    return image


@pytest.fixture(scope="module")
def machine_factory(vm_image: vmimage.GuestImage, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Callable[..., Machine]]:
    """Start guests; each is stopped when the module is done, also on
    failure (tests stop theirs earlier with Machine.stop)."""
    started: List[Machine] = []

    def factory(name: str, **kw) -> Machine:
        vm = Machine(vm_image, str(tmp_path_factory.mktemp(name)), **kw)
        started.append(vm)
        vm.start()
        TIMINGS.append(("boot %s (guest ready at uptime %.1f s)" % (name, vm.guest_uptime),
                        vm.boot_s))
        return vm

    yield factory
    for vm in reversed(started):
        vm.stop()
