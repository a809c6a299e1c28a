"""setuptools entry: the cffi extension needs setup.py's cffi_modules."""
from setuptools import setup

setup(
    cffi_modules=["vmsnapshot/_freeze_build.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": "cp38"}},
)
