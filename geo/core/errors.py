"""Exceptions raised by harmspot. All are ValueError/TypeError subclasses.

Messages name the file, row and field where they can, say what was given and
suggest the fix (see ../shared/STYLE.md, point 3).
"""
from __future__ import annotations


class HarmspotError(ValueError):
    """Base class: bad input or an impossible request. The CLI exits 2 on these."""


class NotACrimeTableError(HarmspotError):
    """A file that is not a crime table (required columns missing)."""

    def __init__(self, path, missing, found=None, expected_format=None):
        self.path = str(path)
        self.missing = list(missing)
        msg = (
            f"{self.path}: not a {expected_format or 'crime'} table: missing column(s) "
            f"{', '.join(repr(m) for m in self.missing)}"
        )
        if found is not None:
            shown = list(found)[:12]
            msg += f"; found {', '.join(repr(c) for c in shown)}" + (" ..." if len(found) > 12 else "")
        msg += ". Check --format (auto|police-uk|police-api|table) or the --mapping file."
        super().__init__(msg)


class MappingError(HarmspotError):
    """A force-export mapping file is incomplete or inconsistent."""


class WeightTableError(HarmspotError):
    """A harm weight table is malformed or unknown."""


class BoundaryError(HarmspotError):
    """A study-area / unit polygon file is unusable."""


class EmptyInputError(HarmspotError):
    """Nothing to analyse (no incidents in the period/area, empty layer...)."""


class PeriodError(HarmspotError):
    """A period string could not be parsed or is empty."""


class MonthOnlyDataError(HarmspotError):
    """An analysis needs incident times but the data only has months."""


def first_problem(mask, rows=None) -> str:
    """Describe how many rows fail and where the first one is ("3 rows; first: row 12")."""
    import numpy as np

    mask = np.asarray(mask, dtype=bool)
    n = int(mask.sum())
    if n == 0:
        return "no rows"
    idx = int(np.flatnonzero(mask)[0])
    row = rows[idx] if rows is not None else idx + 1
    return f"{n} row{'s' if n != 1 else ''}; first problem: row {row}"
