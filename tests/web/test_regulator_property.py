"""The separation for people, as a property: for any sequence of releases, case actions and passing deadlines, no
regulator principal ever receives a learning-space item or an unconfirmed alarm from any route.

Each example starts from a private copy of the routed store (``conftest.routed``), then hypothesis draws the steps:
a new NELA release with a planted alarm and alert, an action by an audit or trust user through the API (allowed
or refused by the process), or days passing with the deadline timer fired. After every example each regulator asks
every route; what comes back must hold no learning-space id, no id of a case that is not confirmed, and a case
that is not confirmed must be answered exactly like a case that does not exist.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.book import load_rules
from services.embedded import run_embedded
from services.web.rules import PUBLIC, RULES
from tests.support.builders import jsonl, nela_release, open_english_trusts
from tests.web.conftest import EXAMPLES, Console, _console, quoted, settings_for

ACTORS = ["nela-lead", "nela-analyst", "rfs-lead-clinician", "rfs-chief-executive", "ssnap-lead"]
KINDS = [
    "data_check",
    "provider_told",
    "provider_response",
    "review",
    "confirmation_sent",
    "acknowledgement",
    "publish",
]
OUTCOMES = [None, "case_to_answer", "no_case_to_answer", "confirmed", "downgrade_to_alert"]
TRUSTS = open_english_trusts(40)
REGULATORS = ["cqc", "nhse", "hiw"]

act_step = st.tuples(st.just("act"), st.integers(0, 30), st.sampled_from(KINDS), st.sampled_from(OUTCOMES),
                     st.sampled_from(ACTORS))  # fmt: skip
release_step = st.tuples(st.just("release"), st.sampled_from(TRUSTS), st.sampled_from(TRUSTS))
days_step = st.tuples(st.just("days"), st.integers(1, 40))
steps = st.lists(st.one_of(act_step, act_step, act_step, release_step, days_step), min_size=1, max_size=8)


def _fresh(source: Path, tokens: dict[str, str], folder: Path) -> Console:
    for item in source.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, folder / item.name)
    return _console(folder, settings_for(folder), dict(tokens))


def _run(console: Console, folder: Path, step: tuple[Any, ...], n: int) -> None:
    if step[0] == "act":
        _, index, kind, outcome, user = step
        ids = [r[0] for r in sqlite3.connect(console.store).execute("SELECT case_id FROM cases ORDER BY case_id")]
        case_id = ids[index % len(ids)]
        body = {"kind": kind, "outcome": outcome, "note": "drawn by hypothesis"}
        response = console.client(user).post(f"/api/v1/cases/{quoted(case_id)}/actions", json=body)
        assert response.status_code in (200, 400, 404, 409), response.text
    elif step[0] == "release":
        _, alarm, alert = step
        path = folder / f"release-{n}.jsonl"
        path.write_bytes(jsonl(nela_release(40, alarm=alarm, alert=alert if alert != alarm else None,
                                            release_id=f"NELA-P{n}")))  # fmt: skip
        run_embedded(path, load_rules(), folder / "out", EXAMPLES / "recipients.yaml", deliver=False,
                     settings=console.settings)  # fmt: skip
    else:
        console.clock.offset += timedelta(days=step[1])
        console.app.state.recorder.cases.tick()


def _forbidden(store: Path) -> tuple[set[str], set[str]]:
    """(ids of the learning space, ids of cases not confirmed) in the store now."""
    with sqlite3.connect(store) as db:
        learning = {r[0] for r in db.execute("SELECT decision_id FROM trail_learning WHERE decision_id IS NOT NULL")}
        learning |= {r[0] for r in db.execute("SELECT notice_id FROM outbox WHERE space != 'formal'")}
        unconfirmed = set()
        import json

        for case_id, body in db.execute("SELECT case_id, body FROM cases"):
            if json.loads(body).get("confirmed_at") is None:
                unconfirmed.add(case_id)
    return learning, unconfirmed


def _regulator_sees_nothing_unconfirmed(console: Console) -> None:
    learning, unconfirmed = _forbidden(console.store)
    with sqlite3.connect(console.store) as db:
        all_cases = [r[0] for r in db.execute("SELECT case_id FROM cases")]
    for user in REGULATORS:
        client = console.client(user)
        texts: list[str] = []
        nowhere = client.get(f"/api/v1/cases/{quoted('NELA:NELA-MORT30:2000-01-01..2000-12-31:XXX')}")
        for (method, path), rule in RULES.items():
            if method != "GET" or rule == PUBLIC or "{" in path:
                continue
            response = client.get(path, follow_redirects=False)
            if rule != PUBLIC and "regulator" not in rule:
                assert response.status_code == 404, (user, path)
            texts.append(response.text)
        for case in client.get("/api/v1/cases").json():
            assert case["confirmed_at"] is not None, case
            assert set(case) == {"case_id", "audit", "indicator_id", "period", "ods_code", "country", "status",
                                 "confirmed_at", "policy_version"}  # fmt: skip
        for case_id in all_cases:
            for route in ("/api/v1/cases/{case_id}", "/cases/{case_id}"):
                response = client.get(route.replace("{case_id}", quoted(case_id)))
                texts.append(response.text)
                if case_id in unconfirmed and route.startswith("/api/"):
                    # Indistinguishable from a case that does not exist.
                    assert (response.status_code, response.json()) == (nowhere.status_code, nowhere.json())
            for route in ("/learning/{x}", "/releases/{x}"):
                assert client.get(route.replace("{x}", quoted(case_id))).status_code == 404
        for text in texts:
            assert "signalbox/learning" not in text  # not even the learning log's checkpoint: its size counts alerts
            for ref in learning:
                assert ref not in text, (user, ref)
            for case_id in unconfirmed:
                assert case_id not in text and quoted(case_id) not in text, (user, case_id)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])  # fmt: skip
@given(sequence=steps)
def test_no_regulator_ever_receives_learning_or_an_unconfirmed_alarm(
    routed: tuple[Path, dict[str, str]], sequence: list[tuple[Any, ...]]
) -> None:
    source, tokens = routed
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        console = _fresh(source, tokens, folder)
        try:
            for n, step in enumerate(sequence):
                _run(console, folder, step, n)
            _regulator_sees_nothing_unconfirmed(console)
        finally:
            console.app.state.db.close()


def test_a_confirmed_alarm_does_reach_the_regulator(routed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """The property is not vacuous: the case the fixture confirmed is shown to the English regulators only."""
    source, tokens = routed
    console = _fresh(source, tokens, tmp_path)
    try:
        for user, count in (("cqc", 1), ("nhse", 1), ("hiw", 0)):
            assert len(console.client(user).get("/api/v1/cases").json()) == count, user
        notices = console.client("cqc").get("/api/v1/regulator/notices").json()
        assert [n["template"] for n in notices] == ["regulator_notice"]
        _regulator_sees_nothing_unconfirmed(console)
    finally:
        console.app.state.db.close()
