"""The JSON Schema shipped for editors and configuration management
(etc/schema/vmsnapshot.schema.json, installed under /usr/share/vmsnapshot)
agrees with the native loader: the shipped templates and examples pass
both, and what the loader refuses the schema refuses too.

The validator is Debian's python3-jsonschema, a test-only dependency: used
in-process when the test interpreter has it, else through /usr/bin/python3.
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from typing import Any, List

import pytest

from tests.helpers.require import skip_or_fail
from tests.helpers.cli import ROOT
from tests.helpers.configfiles import TEMPLATE_TOML, write_file
from vmsnapshot.config import validate_config
from vmsnapshot.config import native_toml

SCHEMA = os.path.join(ROOT, "etc", "schema", "vmsnapshot.schema.json")
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "etc", "examples", "*.toml")))

# Reads {"schema": ..., "instances": [...]} on stdin, prints one list of
# error messages per instance.
_VALIDATE = """
import json, sys
import jsonschema
job = json.load(sys.stdin)
jsonschema.Draft7Validator.check_schema(job["schema"])
v = jsonschema.Draft7Validator(job["schema"])
print(json.dumps([[e.message for e in v.iter_errors(i)]
                  for i in job["instances"]]))
"""


def _interpreter() -> str:
    try:
        import jsonschema  # noqa: F401
        return sys.executable
    except ImportError:
        pass
    probe = subprocess.run(["/usr/bin/python3", "-c", "import jsonschema"],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) \
        if os.path.exists("/usr/bin/python3") else None
    if probe is None or probe.returncode != 0:
        skip_or_fail("no JSON Schema validator: apt-get install "
                     "python3-jsonschema")
    return "/usr/bin/python3"


def schema_errors(*instances: Any) -> List[List[str]]:
    with open(SCHEMA) as f:
        schema = json.load(f)
    res = subprocess.run([_interpreter(), "-c", _VALIDATE],
                         input=json.dumps({"schema": schema,
                                           "instances": list(instances)}),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def toml_file(path: str) -> Any:
    with open(path, "rb") as f:
        return native_toml.tomllib.load(f)


def uncommented_template() -> Any:
    # Every setting of the template is shipped as "# key = value".
    with open(TEMPLATE_TOML) as f:
        text = f.read()
    return native_toml.tomllib.loads(
        re.sub(r"(?m)^# (?=\[|\w+ = )", "", text))


def test_shipped_files_are_valid():
    assert EXAMPLES
    files = [TEMPLATE_TOML] + EXAMPLES
    instances = [toml_file(p) for p in files] + [uncommented_template()]
    assert schema_errors(*instances) == [[] for _ in instances]


def test_schema_knows_exactly_the_loader_keys():
    with open(SCHEMA) as f:
        schema = json.load(f)
    props = schema["properties"]
    assert sorted(props) == sorted(native_toml.TOP_KEYS)
    assert sorted(props["freeze"]["properties"]) == \
        sorted(native_toml.FREEZE_KEYS)
    assert sorted(props["policy"]["properties"]) == \
        sorted(native_toml.POLICY_KEYS)
    assert sorted(schema["definitions"]["plugin"]["properties"]) == \
        sorted(native_toml.PLUGIN_KEYS)


PLUGIN = '[[plugin]]\nname = "db"\npre = ["/usr/bin/db", "x"]\n'

BAD = [
    "colour = 1\n",
    "[freeze]\ntimout = 5\n",
    "[freeze]\nenabled = \"no\"\n",
    "[freeze]\ntimeout = 0\n",
    "[freeze]\ntimeout = -1\n",
    '[freeze]\ninclude = ["data"]\n',
    "[policy]\ncontinue_on_failure = 1\n",
    "minimum_version = 0.2\n",
    'minimum_version = "soon"\n',
    '[[plugin]]\npre = ["/usr/bin/db"]\n',
    '[[plugin]]\nname = "db"\n',
    '[[plugin]]\nname = ""\npre = ["/usr/bin/db"]\n',
    '[[plugin]]\nname = "db"\npre = "/usr/bin/db x"\n',
    '[[plugin]]\nname = "db"\npre = []\n',
    '[[plugin]]\nname = "db"\npre = ["db"]\n',
    '[[plugin]]\nname = "db"\npre = ["/usr/bin/db", 3]\n',
    PLUGIN + "retries = -1\n",
    PLUGIN + "retries = 1.5\n",
    PLUGIN + "timeout = 0\n",
    PLUGIN + "hold = 1\n",
    '[[plugin]]\nname = "db"\npost = ["/usr/bin/db"]\nhold = true\n',
    PLUGIN + "extra = 1\n",
]

GOOD = [
    "",
    PLUGIN,
    'minimum_version = "0.1"\n' + PLUGIN,
    '[[plugin]]\nname = "db"\npost = ["/usr/bin/db"]\n',
    PLUGIN + "hold = true\nretries = 2\ntimeout = 0.5\n",
    '[freeze]\nenabled = false\ntimeout = 30\ninclude = ["/srv/*"]\n'
    'exclude = ["/mnt/resource"]\npresync = true\n'
    '[policy]\ncontinue_on_failure = false\n',
]


def test_schema_and_loader_agree(tmp_path):
    texts = BAD + GOOD
    results = schema_errors(*[native_toml.tomllib.loads(t) for t in texts])
    for i, (text, errors) in enumerate(zip(texts, results)):
        path = write_file(str(tmp_path / ("%d.toml" % i)), text)
        _, records = validate_config(path)
        assert bool(errors) == bool(records) == (text in BAD), (
            text, errors, [r.message for r in records])


@pytest.mark.parametrize("path", [TEMPLATE_TOML] + EXAMPLES,
                         ids=os.path.basename)
def test_shipped_files_pass_the_loader_too(path):
    _, records = validate_config(path)
    # Trust problems only: the tree's files are not root-owned 600.
    assert all("not trusted" in r.message for r in records), records
