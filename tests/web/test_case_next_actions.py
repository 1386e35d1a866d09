"""The case page and API offer exactly the actions the case CLI offers (``services.cases.next.next_actions``):
the owed one first, and an override of a superseded release only while a later release awaits review."""

from __future__ import annotations

from urllib.parse import quote

from services.cases.next import next_actions
from services.cases.store import CaseStore
from services.core.calendar import uk_date
from services.db import Database
from tests.web.conftest import OPEN_ODS, Console, case_id_of


def test_the_web_offers_the_clis_next_actions_and_no_override_without_a_later_release(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    body = console.client("nela-lead").get(f"/api/v1/cases/{quote(case_id, safe='')}").json()
    with Database(console.store) as db:
        case = CaseStore(db).get(case_id)
    assert case is not None and case.superseded_by is None
    expected = [a.kind for a in next_actions(case, uk_date(console.clock())) if "audit_clinical_lead" in a.roles]
    assert body["allowed_actions"] == expected and expected
    assert "supersession_override" not in body["allowed_actions"]
    page = console.client("nela-lead").get(f"/cases/{quote(case_id, safe='')}")
    assert page.status_code == 200 and "supersession_override" not in page.text
