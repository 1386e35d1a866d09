"""Generate / read the local credentials file (stdlib only; used by deploy/local/*).

Format (JSON, mode 600, generated once; new principals are added without touching existing ones)::

    {"version": 1,
     "kafka":    {"admin": "...", "signalbox": "...", "audit-platform": "...", "regulator": "...",
                  "safety-lead-RXF": "...", "safety-lead-RJ1": "..."},
     "redis":    {"admin": "...", "signalbox": "...", "formal-notifier": "...", "learning-notifier": "..."},
     "postgres": {"signalbox": "..."}}

Usage: _creds.py ensure PATH [--safety-lead ODS ...] | _creds.py get PATH SECTION USER
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile

DEFAULT_SAFETY_LEADS = ("RXF", "RJ1")
PRINCIPALS: dict[str, tuple[str, ...]] = {
    "kafka": ("admin", "signalbox", "audit-platform", "regulator"),
    "redis": ("admin", "signalbox", "formal-notifier", "learning-notifier"),
    "postgres": ("signalbox",),
}


def _load(path: str) -> dict[str, object]:
    if not os.path.exists(path):
        return {"version": 1}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: not a JSON object")
    return data


def _save(path: str, data: dict[str, object]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".credentials.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def ensure(path: str, safety_leads: list[str]) -> None:
    data = _load(path)
    changed = not os.path.exists(path)
    wanted = {k: list(v) for k, v in PRINCIPALS.items()}
    wanted["kafka"] += [f"safety-lead-{ods}" for ods in (*DEFAULT_SAFETY_LEADS, *safety_leads)]
    for section, users in wanted.items():
        sec = data.setdefault(section, {})
        if not isinstance(sec, dict):
            raise SystemExit(f"{path}: section {section!r} is not an object")
        for user in users:
            if user not in sec:
                # token_urlsafe: [A-Za-z0-9_-] only, so it is safe in URLs, JAAS strings and redis.conf.
                sec[user] = secrets.token_urlsafe(24)
                changed = True
    if changed:
        _save(path, data)
    os.chmod(path, 0o600)


def get(path: str, section: str, user: str) -> str:
    data = _load(path)
    sec = data.get(section)
    if not isinstance(sec, dict) or not isinstance(sec.get(user), str):
        raise SystemExit(f"{path}: no {section}/{user} credential")
    return str(sec[user])


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "ensure":
        leads = argv[2:]
        if leads[:1] == ["--safety-lead"]:
            leads = leads[1:]
        ensure(argv[1], leads)
    elif len(argv) == 4 and argv[0] == "get":
        print(get(argv[1], argv[2], argv[3]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
