"""The suite's root: the tree on sys.path and the fixture plugins.

Fixtures live in tests/helpers/ and reach every test through
pytest_plugins; test modules never import fixtures (or anything) from
here.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

pytest_plugins = [
    "tests.helpers.fixtures",       # freeze guard, run dirs, loop filesystems
    "tests.helpers.scripts",        # scripts, no_leaks
    "tests.helpers.mounter",        # mounter
    "tests.helpers.hungdev",        # hung_device
    "tests.helpers.db",             # db_env
]
