"""police.uk crime categories, API slugs and a Home Office offence code lookup.

The 14 police.uk street-level crime types are the canonical ``category`` of an
incident. API slugs (``violent-crime``...) and a force's own offence codes are
mapped onto them.
"""
from __future__ import annotations


POLICE_UK_TYPES: tuple[str, ...] = (
    "Anti-social behaviour",
    "Bicycle theft",
    "Burglary",
    "Criminal damage and arson",
    "Drugs",
    "Other crime",
    "Other theft",
    "Possession of weapons",
    "Public order",
    "Robbery",
    "Shoplifting",
    "Theft from the person",
    "Vehicle crime",
    "Violence and sexual offences",
)

API_SLUGS: dict[str, str] = {
    "anti-social-behaviour": "Anti-social behaviour",
    "bicycle-theft": "Bicycle theft",
    "burglary": "Burglary",
    "criminal-damage-arson": "Criminal damage and arson",
    "drugs": "Drugs",
    "other-crime": "Other crime",
    "other-theft": "Other theft",
    "possession-of-weapons": "Possession of weapons",
    "public-order": "Public order",
    "robbery": "Robbery",
    "shoplifting": "Shoplifting",
    "theft-from-the-person": "Theft from the person",
    "vehicle-crime": "Vehicle crime",
    "violent-crime": "Violence and sexual offences",
    # older police.uk slugs (before May 2013) that still turn up in archives
    "violence-and-sexual-offences": "Violence and sexual offences",
    "public-disorder-weapons": "Public order",
}

#: Categories the CCHI treats as proactively found (their count reflects police
#: activity, not victimisation). They weigh 0 by default.
PROACTIVE: frozenset[str] = frozenset({"Drugs", "Possession of weapons", "Anti-social behaviour"})

#: Home Office offence classification codes (main classes) -> police.uk type.
#: Source: Home Office Counting Rules offence classification index; police.uk
#: publishes its grouping of HO codes into crime types. Partial: codes not here
#: need a ``category`` column or a [categories] table in the mapping file.
HO_CODE_TO_TYPE: dict[str, str] = {}
_HO_GROUPS = {
    "Violence and sexual offences": [
        "1", "1/4.1/4.10", "2", "3", "4.1", "4.2", "4.3", "4.4", "4.6", "4.7", "4.8", "4.9", "4.10",
        "5A", "5B", "5C", "5D", "5E", "8L", "8M", "8N", "8O", "8P", "8Q", "8R", "8S", "8T", "105A", "105B",
        "17A", "17B", "19A", "19B", "19C", "19D", "19E", "19F", "19G", "19H", "20", "20A", "20B",
        "21", "22A", "22B", "23", "24", "25", "70", "71", "72", "73", "74", "88A", "88B", "88C", "88D", "88E",
        "11A", "12", "36", "37.1", "37.2", "8A", "8B", "8C", "8D", "8E", "8F", "8G", "8H", "8J", "8K",
    ],
    "Robbery": ["34A", "34B"],
    "Burglary": ["28A", "28B", "28C", "28D", "28E", "28F", "28G", "28H", "29", "30A", "30B", "30C", "31"],
    "Vehicle crime": ["37.2", "45", "48", "126", "130", "131", "132"],
    "Theft from the person": ["39"],
    "Bicycle theft": ["44"],
    "Shoplifting": ["46"],
    "Other theft": ["35", "40", "41", "42", "43", "47", "49", "54"],
    "Criminal damage and arson": ["56A", "56B", "58A", "58B", "58C", "58D", "58E", "58F", "58G", "58H", "58J", "59"],
    "Drugs": ["92A", "92B", "92C", "92D", "92E", "92F", "92G", "92H"],
    "Possession of weapons": ["8A", "8B", "10A", "10B", "10C", "10D", "81", "90"],
    "Public order": ["9A", "9B", "62A", "63", "64", "65", "66", "67"],
    "Other crime": ["13", "14", "15", "16", "26", "27", "38", "60", "61", "68", "75", "76", "78", "79", "80",
                    "82", "83", "84", "85", "86", "87", "89", "91", "95", "99", "802", "814"],
}
for _cat, _codes in _HO_GROUPS.items():
    for _c in _codes:
        HO_CODE_TO_TYPE.setdefault(_c.upper(), _cat)

_LOWER = {t.lower(): t for t in POLICE_UK_TYPES}


def normalise_category(value) -> str | None:
    """Map a police.uk type name (any case) or API slug to the canonical type, else None."""
    if value is None:
        return None
    v = str(value).strip()
    if not v:
        return None
    low = v.lower()
    if low in _LOWER:
        return _LOWER[low]
    if low in API_SLUGS:
        return API_SLUGS[low]
    return None


def category_from_ho_code(code) -> str | None:
    if code is None:
        return None
    c = str(code).strip().upper()
    if not c:
        return None
    if c in HO_CODE_TO_TYPE:
        return HO_CODE_TO_TYPE[c]
    # "008/01" style (class/subclass) -> "8"
    head = c.split("/")[0].lstrip("0") or "0"
    return HO_CODE_TO_TYPE.get(head)


def resolve_categories(names) -> list[str]:
    """Validate user-given category names (types or slugs); raise with the allowed list."""
    from geo.core.errors import HarmspotError

    out = []
    for n in names:
        c = normalise_category(n)
        if c is None:
            raise HarmspotError(
                f"--category {n!r} is not a police.uk crime type or API slug; use one of: "
                + ", ".join(POLICE_UK_TYPES)
            )
        out.append(c)
    return out
