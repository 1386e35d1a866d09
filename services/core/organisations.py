"""The organisations signalbox knows: NHS trusts in England (ODS ``etr`` file) and the Welsh health boards.

ODS codes are validated against this list, never by their shape (a newer trust has a five-character code
such as G6V2S). Codes are never reused; a closed code is rejected with the date it closed.
Data: NHS England Organisation Data Service, Open Government Licence (``services/data/``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Organisation:
    ods_code: str
    name: str
    country: str
    opened: date | None
    closed: date | None
    postcode: str = ""

    @property
    def is_open(self) -> bool:
        return self.closed is None


def _date(text: str) -> date | None:
    text = text.strip()
    return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if text else None


def _title(name: str) -> str:
    small = {"and", "of", "the", "for", "upon", "on", "in"}
    words = name.lower().split()
    out = [w if (i and w in small) else w.capitalize() for i, w in enumerate(words)]
    return " ".join(out).replace("Nhs", "NHS")


@cache
def organisations() -> dict[str, Organisation]:
    orgs: dict[str, Organisation] = {}
    with (DATA_DIR / "ods-etr.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            orgs[row[0]] = Organisation(
                ods_code=row[0],
                name=_title(row[1]),
                country="ENG",
                opened=_date(row[10]),
                closed=_date(row[11]),
                postcode=row[9],
            )
    with (DATA_DIR / "welsh-health-boards.csv").open(newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            orgs[rec["ods_code"]] = Organisation(rec["ods_code"], rec["name"], "WLS", None, None)
    return orgs


def lookup(ods_code: str) -> Organisation | None:
    return organisations().get(ods_code)


@lru_cache(maxsize=4096)
def check_ods_code(ods_code: str, country: str) -> str | None:
    """Why this ODS code cannot be used, or None when it can. Remembered per (code, country) for the hot path,
    bounded: a stream of well-shaped codes that are no organisation must not grow the process without limit."""
    org = lookup(ods_code)
    if org is None:
        return f"organisation.ods_code: {ods_code!r} is not in the ODS list of NHS trusts and Welsh health boards"
    if org.closed is not None:
        return f"organisation.ods_code: {ods_code} ({org.name}) closed on {org.closed.isoformat()}"
    if org.country != country:
        return f"organisation.country: {ods_code} ({org.name}) is in {org.country}, not {country}"
    return None


def display_name(ods_code: str) -> str:
    org = lookup(ods_code)
    return org.name if org else ods_code
