"""Build hook for the optional compiled binning kernel (everything else is in pyproject.toml).

``geo.units._binning`` fuses "coordinates -> square cell -> count" in one pass (see geo/units/_binning.c).
It is optional: where no C compiler is available the install still succeeds and geo.units.lattice
falls back to its numpy path, which gives identical results.
"""
import sys

from setuptools import Extension, setup

# -fno-trapping-math lets the compiler vectorise the branch-free code loop; it changes no value
# (no reciprocal division, no reassociation), only what may happen to floating-point flags.
FLAGS = [] if sys.platform == "win32" else ["-fno-trapping-math"]

setup(ext_modules=[Extension("geo.units._binning", ["geo/units/_binning.c"], extra_compile_args=FLAGS, optional=True)])
