"""The declared Python floor (requires-python >= 3.9: RHEL 8's python39) is
tested, not assumed: a copy of the tree is built and its unit tests run
under the oldest interpreter we claim."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys


from tests.helpers.cli import ROOT
from tests.helpers.require import skip_or_fail

FLOOR = (3, 9)
UNIT_TESTS = ["tests/test_policy.py", "tests/test_outcome.py",
              "tests/test_mountinfo.py", "tests/test_config_native.py",
              "tests/test_config_azure_json.py",
              "tests/test_config_pluginhost.py"]


def _floor_python() -> str:
    name = "python%d.%d" % FLOOR
    # pyenv's shims refuse a version that is not selected: take the binary.
    candidates = sorted(glob.glob(os.path.expanduser(
        "~/.pyenv/versions/%d.%d.*/bin/%s" % (FLOOR + (name,)))))
    which = shutil.which(name)
    if which and "/shims/" not in which:
        candidates.insert(0, which)
    found = candidates[0] if candidates else None
    if found is None:
        skip_or_fail("%s is not installed (the floor in pyproject.toml)"
                     % name)
    return found


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600,
                         **kw)
    assert res.returncode == 0, "%s:\n%s" % (" ".join(argv), res.stdout[-4000:])
    return res


def test_unit_tests_pass_on_the_floor_python(tmp_path_factory) -> None:
    python = _floor_python()
    tree = str(tmp_path_factory.mktemp("floor") / "tree")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"],
                           cwd=ROOT, stdout=subprocess.PIPE, text=True,
                           check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(tree, rel)),
                        exist_ok=True)
            shutil.copy2(src, os.path.join(tree, rel))
    venv = os.path.join(tree, ".venv")
    _run(python, "-m", "venv", venv)
    py = os.path.join(venv, "bin", "python")
    _run(py, "-m", "pip", "install", "-q", "-e", ".[test]",
         "--config-settings", "editable_mode=compat", cwd=tree)
    res = _run(py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-k", "not exception_while_frozen", *UNIT_TESTS, cwd=tree,
               env=dict(os.environ, VMSNAPSHOT_REQUIRE_ROOT="0"))
    assert " passed" in res.stdout
    version = _run(py, "-c", "import sys; print(sys.version_info[:2])").stdout
    assert version.strip() == str(FLOOR), version
    assert sys.version_info >= FLOOR
