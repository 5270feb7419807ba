"""Build the native modules: sources in ext/, compiled into the private
cdrtrace.parsing._parse, cdrtrace.store._index, cdrtrace.service._agi and
cdrtrace.evidence._trace modules.

CDRTRACE_DEBUG=1 builds with line tracing and writes Cython's annotated HTML;
CDRTRACE_ASAN=1 builds with AddressSanitizer (run with LD_PRELOAD=$(gcc -print-file-name=libasan.so)).
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("CDRTRACE_DEBUG") == "1"
asan = os.environ.get("CDRTRACE_ASAN") == "1"

compile_args = ["-O3", "-Wall", "-Wextra", "-Wno-unused-function", "-Wno-unused-parameter"]
link_args = []
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
directives = {"language_level": 3, "embedsignature": True}
if debug:
    compile_args = ["-O0", "-g", "-Wall"]
    directives.update(linetrace=True, binding=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
if asan:
    compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
    link_args += ["-fsanitize=address"]


def native(package, name):
    return Extension(
        f"cdrtrace.{package}.{name}",
        [f"ext/{name}.pyx"],
        depends=["ext/_cdr.pxd", "ext/_scan.h", "ext/_agi.h", "ext/_http.h"],
        include_dirs=["ext", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


setup(
    ext_modules=cythonize(
        [native("parsing", "_parse"), native("store", "_index"), native("service", "_agi"),
         native("evidence", "_trace")],
        compiler_directives=directives,
        annotate=debug,
    ),
)
