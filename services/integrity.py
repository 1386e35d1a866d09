"""``trail verify`` in full: the trail's own checks, then every record that the trail vouches for.

The trail package knows logs, leaves and checkpoints, not what the entries mean (it imports neither cases nor
letters). What the logs vouch for is composed here, one level up: every alarm case is replayed from its
transitions (``services/cases/replay.py::check_cases``) and any disagreement is a problem of the formal log;
every letter in the outbox is checked against its log's notice entry (``services/letters/vouch.py::check_outbox``)
and any row that is not vouched for is a problem of the log of its space. And the store's append-only protections
(``services/protections.py``: triggers dropped or disabled, privileges granted back to PUBLIC) are each a problem of
the log they guard, read before the trail opens the store (on SQLite opening it puts the triggers back).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from services.cases.replay import check_cases
from services.db import Database
from services.letters.vouch import check_outbox
from services.protections import missing_protections
from services.trail.checkpoint import TrustedKey
from services.trail.store import Trail
from services.trail.verify import Problem, Report
from services.trail.verify import verify as verify_trail


def verify(
    db: Database | str | Path,
    public_key: TrustedKey | Sequence[TrustedKey] | None = None,
    *,
    external: Iterable[tuple[str, str]] = (),
    exported: Path | None = None,
    require_checkpoint: bool = False,
) -> Report:
    """Verify both logs of a store (``services.trail.verify.verify``, same arguments), replay every case against
    the formal log, check every outbox letter against its log's notice entry, and name every append-only
    protection the store lacks."""
    database = db if isinstance(db, Database) else Database(db)
    try:
        missing = missing_protections(database)  # first: opening the trail on SQLite recreates its triggers
        report = verify_trail(
            database, public_key, external=external, exported=exported, require_checkpoint=require_checkpoint
        )
        # Case state is vouched for by the formal log: replay every case.
        report.logs["formal"].problems += [Problem(None, problem) for problem in check_cases(Trail(database))]
        # Every letter in the outbox is vouched for by its log's notice entry.
        for audience, problem in check_outbox(database):
            report.logs[audience].problems.append(Problem(None, problem))
        for gone in missing:
            for audience in gone.audiences:
                report.logs[audience].problems.append(Problem(None, gone.detail))
        return report
    finally:
        if database is not db:
            database.close()
