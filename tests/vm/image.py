"""The guest image for the VM tests, built from scratch once per test session.

A Debian minbase root (tests/helpers/chroot.py) gets the kernel, python3,
qemu-guest-agent and the freshly built vmsnapshot .deb through apt, the way
an image pipeline bakes a golden image, plus our guest files (tests/vm/guest:
an init that is also the test agent, the application, the scripts and an
Azure-format config).  Then, without any loop device:

- the root disk: ext4 populated straight from the directory (mke2fs -d);
- the data disk: xfs, holding the application (mkfs.xfs -p protofile);
- a tiny initramfs of our own (busybox + the five modules the root disk
  needs).  Debian's own initramfs runs udev, which takes a minute under TCG.

Run it by hand with `python3 -m tests.vm.image OUTDIR` to get an image to
boot with `python3 -m tests.vm.machine OUTDIR`.
"""
from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import stat
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.helpers import chroot  # noqa: E402

GUEST_DIR = os.path.join(HERE, "guest")
GUEST_PACKAGES = ("linux-image-amd64", "python3", "qemu-guest-agent",
                  "busybox-static", "procps")
# Load order matters only through modules.dep, which is followed; these are
# what it takes to find and mount an ext4 /dev/vda.  The rest (xfs,
# virtio_console) is loaded by the guest's own modprobe after switch_root.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
ROOT_SIZE = 2 << 30
DATA_SIZE = 512 << 20        # xfsprogs refuses below 300 MiB; sparse anyway
# Host tools the image and the tests need, and the Debian packages that
# bring them (for .ci/run and for the skip message).
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_repair": "xfsprogs",
    "debootstrap": "debootstrap",
    "unshare": "util-linux",
    "zstd": "zstd",
}

# (file under tests/vm/guest, path in the guest, mode).  Scripts at 700 and
# the config at 600: vmsnapshot's trust rules refuse anything looser.
GUEST_FILES: Tuple[Tuple[str, str, int], ...] = (
    ("init.py", "/usr/local/sbin/vmtest-init", 0o755),
    ("snapshot-cmd", "/usr/local/sbin/vmtest-snapshot", 0o755),
    ("pre.sh", "/etc/vmtest/pre.sh", 0o700),
    ("post.sh", "/etc/vmtest/post.sh", 0o700),
    ("hold.sh", "/etc/vmtest/hold.sh", 0o700),
    ("VMSnapshotScriptPluginConfig.json",
     "/etc/azure/VMSnapshotScriptPluginConfig.json", 0o600),
    ("fsfreeze-hook", "/etc/qemu/vmsnapshot-fsfreeze-hook", 0o755),
    ("qemu-ga.conf", "/etc/qemu/qemu-ga.conf", 0o644),
)
# Installed on the data disk, not the root disk.
APP_FILE = ("recwriter.py", "app/recwriter", 0o755)


@dataclass(frozen=True)
class GuestImage:
    kernel: str
    initrd: str
    root_disk: str     # qcow2, ext4: the base every VM's overlay starts from
    data_disk: str     # qcow2, xfs
    kernel_version: str
    build_s: float


def save_image(image: GuestImage, workdir: str) -> None:
    with open(os.path.join(workdir, "image.json"), "w") as f:
        json.dump(image.__dict__, f)


def load_image(workdir: str) -> Optional[GuestImage]:
    """The image built into workdir earlier, or None."""
    try:
        with open(os.path.join(workdir, "image.json")) as f:
            return GuestImage(**json.load(f))
    except FileNotFoundError:
        return None


def missing_host_tools() -> List[str]:
    return sorted({pkg for tool, pkg in HOST_TOOLS.items()
                   if shutil.which(tool, path=chroot.CLEAN_ENV["PATH"]) is None})


# ---------------------------------------------------------------- root

def _install_guest_files(root: str) -> None:
    for name, dest, mode in GUEST_FILES:
        target = root + dest
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        shutil.copyfile(os.path.join(GUEST_DIR, name), target)
        os.chown(target, 0, 0)
        os.chmod(target, mode)
    for d in ("/data", "/var/lib/vmtest"):
        os.makedirs(root + d, mode=0o755, exist_ok=True)
    with open(root + "/etc/hostname", "w") as f:
        f.write("vmtest\n")
    with open(root + "/etc/fstab", "w") as f:
        f.write("/dev/vda / ext4 rw 0 1\n/dev/vdb /data xfs rw 0 2\n")


def build_root(root: str, deb: str) -> str:
    """Fill directory root with the guest system; return the kernel version."""
    chroot.make_debian_root(root)
    # The kernel's postinst would build Debian's initramfs, which we do not
    # boot (see the module doc): divert update-initramfs to a no-op first,
    # as Debian's live-build does.
    chroot.chroot_run(root, ["dpkg-divert", "--local", "--rename", "--add",
                             "/usr/sbin/update-initramfs"])
    stub = os.path.join(root, "usr/sbin/update-initramfs")
    with open(stub, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(stub, 0o755)
    chroot.apt_get(root, "install", *GUEST_PACKAGES, timeout=900)
    chroot.install_debs(root, deb)
    # The image uses the Azure-format file; the native one, which the
    # package installs as a template, would be searched first.
    native = os.path.join(root, "etc/vmsnapshot/vmsnapshot.toml")
    if os.path.exists(native):
        os.unlink(native)
    _install_guest_files(root)
    chroot.chroot_run(root, ["apt-get", "clean"])
    for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale",
                 "var/lib/apt/lists"):
        shutil.rmtree(os.path.join(root, junk), ignore_errors=True)
    versions = sorted(os.listdir(os.path.join(root, "lib/modules")))
    if len(versions) != 1:
        raise AssertionError("expected one kernel in the guest, found %s" % versions)
    return versions[0]


# ---------------------------------------------------------------- initramfs

class Cpio:
    """A minimal newc ("070701") archive writer: all the kernel needs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: Tuple[int, int] = (0, 0)) -> None:
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % v for v in fields))
        self.buf.write(name.encode() + b"\0")
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def module_closure(moddir: str, wanted: Sequence[str]) -> List[str]:
    """Paths (relative to moddir) of the wanted modules and their
    dependencies, dependencies first, from the kernel's modules.dep."""
    deps: Dict[str, List[str]] = {}
    by_name: Dict[str, str] = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            name = os.path.basename(path).split(".ko")[0].replace("-", "_")
            by_name[name] = path
    order: List[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps[path]:
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise AssertionError("module %s not in %s/modules.dep" % (name, moddir))
        visit(by_name[name])
    return order


def _module_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if not path.endswith(".ko"):
        raise AssertionError("cannot unpack module %s" % path)
    return data


def make_initramfs(root: str, kver: str, out: str) -> None:
    moddir = os.path.join(root, "lib/modules", kver)
    archive = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib"):
        archive.directory(d)
    archive.chardev("dev/console", 5, 1)
    with open(os.path.join(root, "bin/busybox"), "rb") as f:
        archive.file("bin/busybox", f.read(), 0o755)
    archive.symlink("bin/sh", "busybox")
    with open(os.path.join(GUEST_DIR, "initramfs-init"), "rb") as f:
        archive.file("init", f.read(), 0o755)
    names = []
    for rel in module_closure(moddir, INITRD_MODULES):
        name = os.path.basename(rel).split(".ko")[0] + ".ko"
        archive.file("lib/" + name, _module_bytes(os.path.join(moddir, rel)))
        names.append(name)
    archive.file("lib/load-order", ("\n".join(names) + "\n").encode())
    with open(out, "wb") as f:
        f.write(archive.finish())


# ---------------------------------------------------------------- disks

def _sparse(path: str, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _to_qcow2(raw: str, out: str) -> None:
    chroot.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, out])
    os.unlink(raw)


def make_root_disk(root: str, out: str) -> None:
    raw = out + ".raw"
    _sparse(raw, ROOT_SIZE)
    chroot.run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", root, raw])
    _to_qcow2(raw, out)


def make_data_disk(workdir: str, out: str) -> None:
    """xfs with the application on it, through mkfs.xfs's prototype file
    (no mount needed)."""
    src, dest, mode = APP_FILE
    proto = os.path.join(workdir, "data.proto")
    with open(proto, "w") as f:
        # boot image line, block/inode counts, then the tree, each level
        # closed by '$'; a mode is type, setuid, setgid flags, then octal.
        f.write("/dev/null\n0 0\nd--755 0 0\n%s d--755 0 0\n  %s ---%03o 0 0 %s\n  $\n$\n"
                % (os.path.dirname(dest), os.path.basename(dest), mode,
                   os.path.join(GUEST_DIR, src)))
    raw = out + ".raw"
    _sparse(raw, DATA_SIZE)
    chroot.run(["mkfs.xfs", "-q", "-f", "-L", "vmdata", "-p", proto, raw])
    _to_qcow2(raw, out)


# ---------------------------------------------------------------- all

def build_image(workdir: str, deb: str) -> GuestImage:
    """Build the guest into workdir (kept: kernel, initrd, two base disks;
    the root directory is removed once the disk holds it)."""
    start = time.monotonic()
    os.makedirs(workdir, exist_ok=True)
    rootdir = os.path.join(workdir, "rootfs")
    chroot.remove_root(rootdir)
    kver = build_root(rootdir, deb)
    kernel = os.path.join(workdir, "vmlinuz")
    shutil.copyfile(os.path.join(rootdir, "boot", "vmlinuz-" + kver), kernel)
    initrd = os.path.join(workdir, "initrd.cpio")
    make_initramfs(rootdir, kver, initrd)
    root_disk = os.path.join(workdir, "root.qcow2")
    make_root_disk(rootdir, root_disk)
    data_disk = os.path.join(workdir, "data.qcow2")
    make_data_disk(workdir, data_disk)
    chroot.remove_root(rootdir)
    image = GuestImage(kernel, initrd, root_disk, data_disk, kver,
                       time.monotonic() - start)
    save_image(image, workdir)
    return image


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python3 -m tests.vm.image OUTDIR [VMSNAPSHOT_DEB]",
              file=sys.stderr)
        return 2
    outdir = os.path.abspath(args[0])
    deb = (os.path.abspath(args[1]) if len(args) == 2
           else chroot.build_deb(os.path.join(outdir, "deb")))
    image = build_image(outdir, deb)
    print(image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
