"""Lazy re-exports for a package's ``__init__``: ``from geo.units import SquareGrid`` works, and
importing one submodule (``geo.units.lattice``) does not import its siblings.

Each package lists which submodule defines each public name; the name is imported the first
time it is asked for (PEP 562 module ``__getattr__``).
"""
from __future__ import annotations

import importlib


def lazy_exports(package: str, where: dict[str, str]):
    """``(__getattr__, __dir__, __all__)`` for ``package`` exporting ``{name: submodule}``."""

    def __getattr__(name: str):
        sub = where.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{sub}"), name)
        return value

    def __dir__():
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
