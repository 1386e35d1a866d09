"""Generate / read the local credentials file (stdlib only; used by deploy/local/*).

Format (JSON, mode 600, generated once; new principals are added without touching existing ones)::

    {"version": 1,
     "kafka":    {"admin": "...", "signalbox": "...", "audit-platform": "...", "regulator": "...",
                  "safety-lead-RXF": "...", "safety-lead-RJ1": "..."},
     "redis":    {"admin": "...", "signalbox": "...", "formal-notifier": "...", "learning-notifier": "..."},
     "postgres": {"signalbox": "..."}}

Usage: _creds.py ensure PATH [--safety-lead ODS ...] | _creds.py get PATH SECTION USER
       _creds.py section PATH SECTION | _creds.py url PATH SCHEME SECTION USER HOST:PORT/DB | _creds.py cluster-id

``section`` prints one section as a JSON object (user -> password) for ``python -m services.kafka.acl provision
--passwords -``: the product never reads this file's format.

Every value that reaches a command line, a config file or a URL is made safe here, not by luck: passwords are
``token_urlsafe`` and any stored one must stay in that alphabet (it is written into JAAS strings, redis.conf and
URLs), URLs percent-encode user and password, and a generated cluster id never starts with ``-`` (one random
base64url id in 64 does, and ``kafka-storage format -t -…`` read it as an option).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import sys
import tempfile
import uuid
from urllib.parse import quote

DEFAULT_SAFETY_LEADS = ("RXF", "RJ1")
PRINCIPALS: dict[str, tuple[str, ...]] = {
    "kafka": ("admin", "signalbox", "audit-platform", "regulator"),
    "redis": ("admin", "signalbox", "formal-notifier", "learning-notifier"),
    "postgres": ("signalbox",),
}

# token_urlsafe's alphabet; at least 16 characters. Anything else could break a JAAS string ("), a properties
# file (\\), redis.conf (space, #) or a command line (a leading "-" is allowed: no password is ever an argument).
SAFE_SECRET = re.compile(r"[A-Za-z0-9_-]{16,}")
CLUSTER_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}")


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
    value = str(sec[user])
    if not SAFE_SECRET.fullmatch(value):
        raise SystemExit(
            f"{path}: the {section}/{user} password must be 16 or more of A-Z a-z 0-9 _ - (it is written into "
            "config files and URLs); delete the entry and run deploy/local/up to generate a new one"
        )
    return value


def section(path: str, name: str) -> str:
    """The section ``name`` as a JSON object, every password checked as ``get`` checks it."""
    data = _load(path)
    sec = data.get(name)
    if not isinstance(sec, dict):
        raise SystemExit(f"{path}: no {name} section")
    return json.dumps({str(user): get(path, name, str(user)) for user in sec}, sort_keys=True)


def url(path: str, scheme: str, section: str, user: str, location: str) -> str:
    """``scheme://user:password@location`` with user and password percent-encoded."""
    return f"{scheme}://{quote(user, safe='')}:{quote(get(path, section, user), safe='')}@{location}"


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in unpadded base64url (Kafka's own form) that never starts with
    ``-``, like Kafka's ``Uuid.randomUuid``."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if CLUSTER_ID.fullmatch(value):
            return value


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "ensure":
        leads = argv[2:]
        if leads[:1] == ["--safety-lead"]:
            leads = leads[1:]
        ensure(argv[1], leads)
    elif len(argv) == 4 and argv[0] == "get":
        print(get(argv[1], argv[2], argv[3]))
    elif len(argv) == 3 and argv[0] == "section":
        print(section(argv[1], argv[2]))
    elif len(argv) == 6 and argv[0] == "url":
        print(url(argv[1], argv[2], argv[3], argv[4], argv[5]))
    elif argv == ["cluster-id"]:
        print(cluster_id())
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
