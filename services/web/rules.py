"""Which audiences may use which route: the one table every request is checked against.

A route that is not in ``RULES`` answers 500 to everyone and fails ``tests/web/test_authorisation.py``: a new
route cannot ship without saying who may use it. ``PUBLIC`` routes need no login. Within an allowed route, what a
principal may see of a resource is ``notifications.views``; a resource they may not see is a 404, the same
answer as for one that does not exist.
"""

from __future__ import annotations

from services.users.principals import Audience

TRUST: frozenset[Audience] = frozenset({"trust"})
AUDIT: frozenset[Audience] = frozenset({"audit"})
REGULATOR: frozenset[Audience] = frozenset({"regulator"})
PEOPLE_WHO_ACT: frozenset[Audience] = frozenset({"trust", "audit"})
EVERYONE: frozenset[Audience] = frozenset({"trust", "audit", "regulator"})
PUBLIC = "public"

RULES: dict[tuple[str, str], frozenset[Audience] | str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/static"): PUBLIC,
    ("GET", "/assets"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("GET", "/login/oidc"): PUBLIC,
    ("GET", "/login/oidc/callback"): PUBLIC,
    ("POST", "/logout"): EVERYONE,
    ("GET", "/"): EVERYONE,
    ("GET", "/trail"): EVERYONE,
    ("GET", "/cases"): PEOPLE_WHO_ACT,
    ("GET", "/cases/{case_id}"): EVERYONE,
    ("POST", "/cases/{case_id}/actions"): PEOPLE_WHO_ACT,
    ("GET", "/learning"): TRUST,
    ("GET", "/learning/{notice_id}"): TRUST,
    ("GET", "/access-log"): TRUST,
    ("GET", "/releases"): AUDIT,
    ("GET", "/releases/{ref}"): AUDIT,
    ("GET", "/regulator"): REGULATOR,
    ("GET", "/api/v1/cases"): EVERYONE,
    ("GET", "/api/v1/cases/{case_id}"): EVERYONE,
    ("POST", "/api/v1/cases/{case_id}/actions"): PEOPLE_WHO_ACT,
    ("GET", "/api/v1/learning"): TRUST,
    ("GET", "/api/v1/good-practice"): TRUST,
    ("GET", "/api/v1/access-log"): TRUST,
    ("GET", "/api/v1/regulator/notices"): REGULATOR,
}
