"""The local stack's credentials file (``.local/credentials.json``, written by ``deploy/local/_creds.py``).

It belongs to the local stack and the tests, not to the product: the service is given its own connection settings
(``services.settings``), and ACL provisioning is given a principal → password mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.kafka.acl import safety_leads_in


@dataclass(frozen=True)
class Credentials:
    """Passwords per service and principal, as in ``.local/credentials.json``."""

    kafka: Mapping[str, str]
    redis: Mapping[str, str]
    postgres: Mapping[str, str]

    @classmethod
    def load(cls, path: str | Path) -> Credentials:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a JSON object")

        def section(name: str) -> dict[str, str]:
            raw = data.get(name, {})
            if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
                raise ValueError(f"{path}: section {name!r} must map user -> password")
            return dict(raw)

        return cls(kafka=section("kafka"), redis=section("redis"), postgres=section("postgres"))

    def safety_leads(self) -> list[str]:
        """ODS codes of the safety-lead principals present in the file."""
        return safety_leads_in(self.kafka)
