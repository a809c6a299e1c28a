"""The shell's door to loopfs (the demo uses it):

    python -m loopfs make BASEDIR NAME FSTYPE [--size-mb N] [--image-dir D]
    python -m loopfs mount-image IMAGE MOUNTPOINT [-o OPTIONS]
    python -m loopfs sweep DIR

make and mount-image print the loop device; sweep undoes every mount and
loop device below DIR (the cleanup of a script that kept no record).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from typing import List, Optional

import loopfs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loopfs",
                                description="loop filesystems for tests, "
                                            "the bench and the demo")
    sub = p.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="image, loop device, mkfs, mount")
    make.add_argument("basedir")
    make.add_argument("name")
    make.add_argument("fstype", choices=sorted(loopfs.MKFS))
    make.add_argument("--size-mb", type=int)
    make.add_argument("--image-dir")
    image = sub.add_parser("mount-image", help="mount an existing image")
    image.add_argument("image")
    image.add_argument("mountpoint")
    image.add_argument("-o", "--options", default="")
    sweep = sub.add_parser("sweep", help="undo everything below DIR")
    sweep.add_argument("dir")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "make":
            lfs = loopfs.make_loopfs(args.basedir, args.fstype, args.name,
                                     args.size_mb, args.image_dir)
            print(lfs.device)
        elif args.command == "mount-image":
            print(loopfs.mount_image(args.image, args.mountpoint,
                                     args.options).device)
        else:
            problems = loopfs.sweep_under(args.dir)
            for problem in problems:
                print("loopfs: %s" % problem, file=sys.stderr)
            return 1 if problems else 0
    except subprocess.CalledProcessError as e:
        print("loopfs: %s failed (exit %d): %s" % (
            " ".join(e.cmd), e.returncode, (e.stderr or "").strip()),
            file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
