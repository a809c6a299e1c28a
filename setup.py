"""setuptools entry: the cffi extension needs setup.py's cffi_modules."""
import warnings

from setuptools import setup

# setuptools < 68 calls [tool.setuptools] in pyproject.toml "beta"; the
# table has been stable since, and the warning is the only noise of a build.
warnings.filterwarnings("ignore",
                        message=r"Support for `\[tool\.setuptools\]`")

setup(
    cffi_modules=["vmsnapshot/_freeze_build.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": "cp38"}},
)
