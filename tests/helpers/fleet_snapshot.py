"""The group snapshot command of the fleet tests, run once on the
controller: records whether each host's /data is frozen at that moment,
then copies each loop image (the "disk"), while every host holds.

`python -m tests.helpers.fleet_snapshot OUTDIR NAME=MOUNT=IMAGE...`
writes OUTDIR/NAME.img and OUTDIR/frozen.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers.loopfs import is_frozen


def main(outdir: str, specs: list) -> int:
    os.makedirs(outdir, exist_ok=True)
    frozen = {}
    for spec in specs:
        name, mount, _image = spec.split("=", 2)
        frozen[name] = is_frozen(mount)
    for spec in specs:
        name, _mount, image = spec.split("=", 2)
        subprocess.run(["cp", "--sparse=always", image,
                        os.path.join(outdir, name + ".img")], check=True)
    with open(os.path.join(outdir, "frozen.json"), "w") as f:
        json.dump(frozen, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
