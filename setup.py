"""Builds the optional oneDNN convolution extension; everything else is in setup.cfg.

`cyclejax/csrc/onednn_conv.cc` becomes `cyclejax/_onednn_conv*.so` (XLA FFI handlers, loaded
with ctypes by `cyclejax.onednn`). It is built on Linux x86-64 against the headers of jaxlib
and of `onednn-devel-cpu-gomp` (both build requirements in pyproject.toml); where that
fails (no C++ compiler), the install goes on without it and `conv_impl='auto'` uses the
pure-JAX convolutions. CYCLEJAX_BUILD_ONEDNN=0 skips it.
"""
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

from setuptools import Extension, setup


def _distribution_dir(name: str, marker: str) -> str | None:
    """The directory that holds `marker` (a path suffix) in the installed distribution `name`."""
    try:
        files = importlib.metadata.distribution(name).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        path = str(f).replace("\\", "/")
        if path == marker or path.endswith("/" + marker):
            return str(Path(f.locate()).resolve().parents[len(Path(marker).parts) - 1])
    return None


def _onednn_extension() -> list[Extension]:
    if os.environ.get("CYCLEJAX_BUILD_ONEDNN", "1") == "0":
        return []
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return []
    jaxlib = importlib.util.find_spec("jaxlib")
    include = _distribution_dir("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp")
    lib = _distribution_dir("onednn-cpu-gomp", "libdnnl.so")
    if jaxlib is None or include is None or lib is None:
        print("cyclejax: jaxlib or oneDNN not found at build time; building without the oneDNN extension",
              file=sys.stderr)
        return []
    ffi_include = os.path.join(list(jaxlib.submodule_search_locations)[0], "include")
    return [Extension(
        "cyclejax._onednn_conv",
        sources=["cyclejax/csrc/onednn_conv.cc"],
        include_dirs=[ffi_include, include],
        library_dirs=[lib],
        libraries=["dnnl"],
        language="c++",
        extra_compile_args=["-std=c++17", "-O2", "-Wno-return-type"],
        optional=True,  # a failed compile leaves the pure-JAX convolutions, not a failed install
    )]


setup(ext_modules=_onednn_extension())
