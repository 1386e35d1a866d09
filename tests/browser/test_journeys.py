"""The four journeys of issue 11 in a real headless Chromium, with axe-core on every page type.

1. An audit clinical lead moves a case from the data check to confirmation on the web.
2. The trust's chief executive acknowledges it.
3. A regulator sees the confirmed alarm, but not another trust's alert.
4. Another trust's safety lead finds nothing of the first trust.

Screenshots of each page are written under the test's output folder (``tmp_path/screenshots``); axe-core
(``tests/support/axe``, vendored from npm) runs on each page type and fails the test on any serious or critical
WCAG 2.2 A/AA violation.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from services.users.store import UserStore
from tests.browser.conftest import Served
from tests.web.conftest import OPEN_ODS, PASSWORD, case_id_of

AXE = Path(__file__).resolve().parents[1] / "support" / "axe" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


class Session:
    """One person's browser context: log in, visit, check accessibility, take screenshots."""

    def __init__(self, browser: Any, served: Served, shots: Path, who: str) -> None:
        # bypass_csp: axe-core is injected as an inline script, which the console's CSP (rightly) refuses.
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        self.page = self.context.new_page()
        self.served = served
        self.shots = shots
        self.who = who
        self.checked: set[str] = set()

    def goto(self, path: str) -> Any:
        return self.page.goto(self.served.url + path)

    def login(self) -> None:
        self.goto("/login")
        self.page.fill("#username", self.who)
        self.page.fill("#password", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()
        assert "/login" not in self.page.url, self.page.content()[:2000]

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{self.who}-{name}.png"), full_page=True)

    def axe(self, page_type: str) -> None:
        """axe-core on this page: no serious or critical violation of WCAG 2.2 A/AA."""
        self.page.add_script_tag(path=str(AXE))
        result = self.page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS)
        bad = [
            (v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert not bad, f"{page_type}: {bad}"
        self.checked.add(page_type)

    def close(self) -> None:
        self.context.close()


def test_the_four_journeys(browser: Any, served: Served, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    console = served.console
    users = UserStore(console.app.state.db)
    users.add("rmp-chief-executive", "chief_executive", PASSWORD, org=OPEN_ODS)
    case_id = case_id_of(console.store, OPEN_ODS)
    case_path = f"/cases/{quote(case_id, safe='')}"
    checked: set[str] = set()

    # 1. The audit clinical lead: data check -> provider told -> (the trust's deadline passes) review -> confirmation.
    lead = Session(browser, served, shots, "nela-lead")
    lead.goto("/")
    lead.axe("login")
    lead.shot("login")
    lead.login()
    assert lead.page.locator("#case-board").is_visible()
    lead.axe("case board")
    lead.shot("board")
    lead.page.click(f'a[href="{case_path}"]')
    lead.axe("case")
    lead.shot("case-data-check")

    def record(kind: str, outcome: str | None = None) -> str:
        form = lead.page.locator(f"#action-{kind}")
        if outcome:
            form.locator("select[name=outcome]").select_option(outcome)
        form.locator("textarea[name=note]").fill(f"{kind} on the web")
        form.locator("button[type=submit]").click()
        lead.page.wait_for_load_state()
        done = lead.page.locator("#done-message")
        assert done.is_visible(), lead.page.content()[:3000]
        text: str = done.inner_text()
        return text

    assert "provider told" in record("data_check", "case_to_answer")
    assert "provider response" in record("provider_told")
    console.clock.offset += timedelta(days=60)  # the trust's deadline to respond passes
    lead.goto(case_path)
    assert "confirmation" in record("review", "confirmed")
    assert "acknowledgement" in record("confirmation_sent")
    lead.shot("case-confirmed")
    assert lead.page.locator('[data-field="status"]').inner_text().strip() == "confirmed"
    lead.goto("/releases")
    lead.axe("releases")
    lead.shot("releases")
    lead.page.locator("#releases a").first.click()
    lead.axe("release")
    lead.shot("release")
    lead.goto("/trail")
    assert "Verified" in lead.page.inner_text("#verify-formal")
    lead.axe("trail")
    lead.shot("trail")
    checked |= lead.checked
    lead.close()

    # 2. The trust's chief executive acknowledges it.
    chief = Session(browser, served, shots, "rmp-chief-executive")
    chief.login()
    chief.goto("/cases")
    chief.page.click(f'a[href="{case_path}"]')
    form = chief.page.locator("#action-acknowledgement")
    form.locator("textarea[name=note]").fill("Acknowledged; a local review is under way.")
    form.locator("button[type=submit]").click()
    chief.page.wait_for_load_state()
    assert "acknowledged" in chief.page.inner_text("#done-message")
    chief.shot("case-acknowledged")
    history = chief.page.inner_text("#timeline")
    assert "rmp-chief-executive (chief executive)" in history
    assert "data check" not in history.split("\n", 1)[1]  # the audit's internal check is not the trust's business
    chief.close()

    # 3. A regulator sees the confirmed alarm, not another trust's alert.
    rbn_alert = console.client("rbn-safety").get("/api/v1/learning").json()[0]
    regulator = Session(browser, served, shots, "cqc")
    regulator.login()
    assert regulator.page.url.endswith("/regulator")
    table = regulator.page.inner_text("#confirmed")
    assert OPEN_ODS in table and "RBN" not in regulator.page.content()
    regulator.axe("regulator")
    regulator.shot("regulator")
    regulator.page.click(f'a[href="{case_path}"]')
    regulator.shot("case")
    assert "Timeline" not in regulator.page.content()  # no history before confirmation
    response = regulator.goto(f"/learning/{quote(rbn_alert['notice_id'], safe='')}")
    assert response.status == 404
    regulator.axe("not found")
    regulator.shot("not-found")
    checked |= regulator.checked
    regulator.close()

    # 4. Another trust's safety lead finds nothing of the first trust.
    other = Session(browser, served, shots, "rbn-safety")
    other.login()
    assert other.page.url.endswith("/learning")
    other.axe("learning")
    other.shot("learning")
    assert OPEN_ODS not in other.page.content()
    other.page.locator("#learning-items a").first.click()
    assert other.page.locator(".signalbox-plot svg").count() == 1
    other.axe("learning item")
    other.shot("learning-item")
    other.goto("/cases")
    assert OPEN_ODS not in other.page.content() and case_id not in other.page.content()
    other.axe("trust case list")
    other.shot("cases")
    assert other.goto(case_path).status == 404
    other.goto("/access-log")
    assert "rbn-safety" in other.page.inner_text("#access-log")
    other.axe("access log")
    other.shot("access-log")
    checked |= other.checked
    other.close()

    assert checked >= {"login", "case board", "case", "releases", "release", "trail", "regulator", "not found",
                       "learning", "learning item", "access log"}  # fmt: skip
    assert len(list(shots.glob("*.png"))) >= 15
    if os.environ.get("SIGNALBOX_DOCS_SCREENSHOTS"):  # refresh the README's pictures: scripts/screenshots
        DOCS.mkdir(parents=True, exist_ok=True)
        for name in ("nela-lead-board", "nela-lead-case-confirmed", "rbn-safety-learning-item", "cqc-regulator"):
            shutil.copy2(shots / f"{name}.png", DOCS / f"{name}.png")
