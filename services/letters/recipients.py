"""Which recipient directory a store's letters use.

``signalbox route`` copies the directory it was given beside the store it writes (``recipients.yaml`` in
``--out``), so later commands on that store (``cases act``, ``cases tick``, ``deliver``) and a worker find the
same contacts. A configured path (``SIGNALBOX_RECIPIENTS``, read by the caller's settings) wins; a PostgreSQL
store has no folder, so it uses the configured path or the shipped example.
"""

from __future__ import annotations

from pathlib import Path

from services.db import is_postgres_url

DEFAULT_RECIPIENTS = Path(__file__).resolve().parents[2] / "notifications" / "recipients.example.yaml"
BESIDE_STORE = "recipients.yaml"


def recipients_for(store: str, configured: str | Path | None) -> Path:
    """The recipient directory for ``store``: ``configured`` (``Settings.recipients``) when set, else the copy
    beside a SQLite store, else the shipped example."""
    if isinstance(configured, Path):
        return configured
    if configured is not None and configured.strip():
        return Path(configured.strip())
    beside = Path(store.removeprefix("sqlite:///")).parent / BESIDE_STORE
    return beside if not is_postgres_url(store) and beside.is_file() else DEFAULT_RECIPIENTS
