"""The VM suite's own pieces, tested on the host (no VM boots, so not
under the vm marker): the record checker, the initramfs archive, the
module closure."""
from __future__ import annotations

import subprocess
import zlib

import pytest

from tests.helpers.require import need_tool
from tests.vm import verify
from tests.vm.image import Cpio, module_closure

def rec(seq: int, payload: str) -> bytes:
    body = "%08d %s" % (seq, payload)
    return ("%s %08x\n" % (body, zlib.crc32(body.encode()))).encode()


def test_records_whole_and_checkpoints() -> None:
    data = rec(1, "a") + rec(2, "CHECKPOINT t1") + rec(3, "b") + rec(4, "CHECKPOINT t2")
    records = verify.check_records(data)
    assert records.count == 4
    assert records.last == "CHECKPOINT t2"
    assert records.checkpoints == ["t1", "t2"]


@pytest.mark.parametrize("data, message", [
    (rec(1, "a") + rec(2, "b")[:-5], "torn"),
    (rec(1, "a") + rec(2, "b").replace(b" b ", b" c "), "bad record 2"),
    (rec(1, "a") + rec(3, "b"), "record 2 has sequence 00000003"),
    (b"", "no records"),
])
def test_records_damage_is_found(data: bytes, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        verify.check_records(data)


def test_cpio_is_read_by_cpio(tmp_path) -> None:
    need_tool("cpio")
    archive = Cpio()
    archive.directory("bin")
    archive.file("bin/hello", b"hi\n", 0o755)
    archive.symlink("bin/sh", "hello")
    archive.chardev("console", 5, 1)
    listing = subprocess.run(["cpio", "-itv"], input=archive.finish(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             check=True).stdout.decode()
    lines = listing.splitlines()
    assert [line.split()[-1] for line in lines] == ["bin", "bin/hello", "hello", "console"]
    assert lines[1].startswith("-rwxr-xr-x") and lines[2].startswith("lrwxrwxrwx")
    assert lines[3].startswith("crw-------")


def test_module_closure_puts_dependencies_first(tmp_path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\n"
        "kernel/lib/crc16.ko:\n"
        "kernel/fs/jbd2/jbd2.ko:\n"
        "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz\n"
        "kernel/drivers/virtio/virtio.ko.xz:\n")
    assert module_closure(str(tmp_path), ["virtio_blk", "ext4", "crc16"]) == [
        "kernel/drivers/virtio/virtio.ko.xz", "kernel/drivers/block/virtio_blk.ko.xz",
        "kernel/lib/crc16.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko"]
    with pytest.raises(AssertionError, match="nosuch"):
        module_closure(str(tmp_path), ["nosuch"])
