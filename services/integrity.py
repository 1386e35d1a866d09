"""``trail verify`` in full: the trail's own checks, then every record that the trail vouches for.

The trail package knows logs, leaves and checkpoints, not what the entries mean (it imports neither cases nor
letters). What the formal log vouches for is composed here, one level up: every alarm case is replayed from
its transitions (``services/cases/replay.py::check_cases``) and any disagreement is a problem of the formal log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from services.cases.replay import check_cases
from services.db import Database
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
    """Verify both logs of a store (``services.trail.verify.verify``, same arguments) and replay every case
    against the formal log."""
    database = db if isinstance(db, Database) else Database(db)
    try:
        report = verify_trail(
            database, public_key, external=external, exported=exported, require_checkpoint=require_checkpoint
        )
        # Case state is vouched for by the formal log: replay every case.
        report.logs["formal"].problems += [Problem(None, problem) for problem in check_cases(Trail(database))]
        return report
    finally:
        if database is not db:
            database.close()
