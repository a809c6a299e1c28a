"""Run the CLI with extra files in /etc, seen by that process only.

Merging reads fixed paths (/etc/vmsnapshot, /etc/azure), and a test must
never write the machine's /etc. So the child runs in a private mount
namespace where an overlay puts the test's files over /etc; the overlay
vanishes with the namespace, and the parent never sees it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict

from tests.helpers.require import skip_or_fail
from tests.helpers.cli import ROOT, vmsnapshot_cmd
from tests.helpers.configfiles import write_file

_MOUNT = ('mount -t overlay vmsnapshot-test-etc '
          '-o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && shift 2 && '
          'exec "$@"')


class EtcOverlay:
    def __init__(self, base: str) -> None:
        if shutil.which("unshare") is None:
            skip_or_fail("unshare (util-linux) not installed")
        self.upper = os.path.join(base, "etc-upper")
        self.work = os.path.join(base, "etc-work")
        for d in (self.upper, self.work):
            os.makedirs(d, mode=0o755, exist_ok=True)

    def write(self, path: str, text: str, mode: int = 0o600) -> str:
        """Put TEXT at /etc/PATH for the child; returns the /etc path."""
        assert path.startswith("/etc/"), path
        write_file(os.path.join(self.upper, path[len("/etc/"):]), text, mode)
        return path

    def files(self, files: Dict[str, str]) -> None:
        for path, text in files.items():
            self.write(path, text)

    def vmsnapshot(self, *args: str, timeout: float = 120
                   ) -> subprocess.CompletedProcess:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                _MOUNT, "sh", self.upper, self.work] + vmsnapshot_cmd(*args)
        res = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             timeout=timeout)
        if res.returncode != 0 and "vmsnapshot-test-etc" in res.stderr:
            skip_or_fail("cannot overlay /etc: " + res.stderr.strip())
        return res
