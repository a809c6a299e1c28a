"""cffi build script for vmsnapshot._freeze (out-of-line API mode, abi3).

The cdef is read from csrc/vmsfreeze.h between its cdef markers, so the C
API is declared in exactly one place.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")
HEADER = os.path.join(CSRC, "vmsfreeze.h")


def _cdef_text() -> str:
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    start = text.index("/* cdef-begin */") + len("/* cdef-begin */")
    end = text.index("/* cdef-end */")
    return text[start:end]


ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
ffibuilder.set_source(
    "vmsnapshot._freeze",
    '#include "vmsfreeze.h"',
    sources=[os.path.relpath(os.path.join(CSRC, name))
             for name in ("vmsfreeze.c", "waves.c", "guardian.c",
                          "vmsprobe.c")],
    include_dirs=[os.path.relpath(CSRC)],
    extra_compile_args=["-std=c99", "-Wall", "-Wextra", "-D_GNU_SOURCE"],
    libraries=["pthread"],
    py_limited_api=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
