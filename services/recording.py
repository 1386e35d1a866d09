"""Recording what was decided: the audit trail, alarm cases and letters, in one transaction per batch.

The pipeline decides; this module makes it durable. For each batch of ``Outputs`` it appends to the trail
(one log per audience), opens alarm cases for potential alarms, turns decisions and case steps into notices
and puts their letters in the outbox — all in one database transaction, so a decision, its trail entry and its
letters exist together or not at all. Delivery is separate (``deliver``): the relay sends what the outbox holds.

What goes in which log. The *learning* log is never shown to a regulator, so everything that reveals an
alert lives there: the assessment of every release (it holds every organisation's band), learning-space and
good-practice decisions, release reports and dead letters. The *formal* log holds only the formal space:
potential alarms, case transitions and events, formal letters. Its size says nothing about alerts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from notifications.channels.base import Transport
from notifications.channels.eml import EmlTransport
from notifications.channels.smtp import SmtpSettings, SmtpTransport
from notifications.channels.webhook import WebhookTransport
from notifications.plot import funnel_view, render_funnel_svg
from notifications.recipients import Directory
from notifications.render import plot_audience, renderer_for
from rules.book import RuleBook, load_rules
from rules.stats import FunnelResult, FunnelSpec
from schemas.canonical import Canonical, canonical_text
from schemas.cases import CaseOutcome
from schemas.notices import GoodPracticeNotice, LearningNotice, notice_id_for
from schemas.signals import Assessment, FormalDecision, GoodPracticeDecision, LearningDecision, stable_id
from services.cases.calendar import add_working_days
from services.cases.machine import CaseError
from services.cases.replay import open_in_trail, replay_case
from services.cases.service import CaseService
from services.core.assess import AssessedRelease
from services.core.pipeline import Outputs
from services.db import Database, is_postgres_url
from services.letters import outbox
from services.letters.relay import DeliveryReport, deliver_due
from services.settings import Settings
from services.trail.checkpoint import CheckpointError, service_checkpointer
from services.trail.store import NewEntry, Trail, table_for

# A learning-space notice suggests when the trust might have looked into it: a date for its own planning,
# not a deadline anybody enforces (the learning space carries no sanction).
LEARNING_REVIEW_WORKING_DAYS = 25
log = logging.getLogger(__name__)
EMPTY_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


def release_ref(audit: str, release_id: str, indicator_id: str) -> str:
    """The trail reference of a release's assessment, used to redraw its funnel plot for letters."""
    return stable_id("rel", audit, release_id, indicator_id)


def _entry(kind: str, record: Any, *, case_id: str | None = None, decision_id: str | None = None) -> NewEntry:
    data = record.model_dump(mode="json") if hasattr(record, "model_dump") else record  # Canonical passes as is
    return NewEntry(kind=kind, record=data, case_id=case_id, decision_id=decision_id)


DEFAULT_RECIPIENTS = Path(__file__).resolve().parent.parent / "notifications" / "recipients.example.yaml"


def recipients_for(store: str, configured: Path | None) -> Path:
    """The recipient directory for a store: the configured one (``SIGNALBOX_RECIPIENTS``), else the copy `route`
    left beside it, else the example directory."""
    if configured is not None:
        return configured
    beside = Path(store).parent / "recipients.yaml"
    return beside if not is_postgres_url(store) and beside.is_file() else DEFAULT_RECIPIENTS


def open_recorder(db: Database, now: datetime | None = None, *, settings: Settings) -> Recorder:
    """A recorder for a store opened by a command (``cases act``, ``cases tick``, ``deliver``)."""
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    directory = Directory.load(recipients_for(db.target, settings.recipients))
    return Recorder(db, load_rules(), directory, clock=clock, key_path=settings.trail_key_path)


class Recorder:
    """Persists pipeline outputs and case outcomes. One instance per database connection."""

    def __init__(
        self,
        db: Database,
        rules: RuleBook,
        directory: Directory,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        key_path: Path | None = None,
    ) -> None:
        self.db = db
        self.key_path = key_path  # the trail's signing key (Settings.trail_key_path), for ``checkpoint``
        self.rules = rules
        self.directory = directory
        self.clock = clock
        self.trail = Trail(db, clock=clock)
        outbox.ensure_schema(db)
        self.cases = CaseService(db, self._deadlines, clock, on_outcome=self.record_case_outcome, trail=self.trail)
        self._funnels: dict[tuple[str, str, str], tuple[FunnelResult, list[str]]] = {}
        self._svgs: dict[tuple[str, str, str, str, str], str] = {}

    def _deadlines(self, audit: str, indicator_id: str) -> Any:
        rule = self.rules.get(audit, indicator_id)
        if rule is None:
            raise LookupError(f"no rule set for {audit} {indicator_id}")
        return rule.deadlines

    def _recorded(self, audience: str, ids: list[str]) -> set[str]:
        """Which of these decision ids the trail already holds: a re-run of the same input adds nothing."""
        found: set[str] = set()
        table = table_for(audience)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.query(f"SELECT decision_id FROM {table} WHERE decision_id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def record(self, out: Outputs) -> None:
        now = self.clock()
        with self.db.transaction():
            refs = [release_ref(*r.summary_key) for r in out.releases]
            known = self._recorded("learning", refs + [d.decision_id for d in out.decisions if d.space != "formal"])
            known |= self._recorded("formal", [d.decision_id for d in out.decisions if d.space == "formal"])
            learning: list[NewEntry] = []
            for release, ref in zip(out.releases, refs, strict=True):
                if ref in known:
                    continue
                # JCS of {"assessments": [...], "summary": {...}}, built from the already canonical lines.
                record = Canonical(
                    '{"assessments":['
                    + ",".join(release.lines)
                    + '],"summary":'
                    + canonical_text(release.summary.model_dump(mode="json"))
                    + "}"
                )
                learning.append(_entry("release_assessed", record, decision_id=ref))
            formal_decisions: list[FormalDecision] = []
            notices: list[LearningNotice | GoodPracticeNotice] = []
            for decision in out.decisions:
                if decision.decision_id in known:
                    continue
                if isinstance(decision, FormalDecision):
                    formal_decisions.append(decision)
                    continue
                learning.append(_entry(f"{decision.space}_decision", decision, decision_id=decision.decision_id))
                notices.append(self.notice_for(decision, now))  # learning or good practice
            learning += [_entry("release_report", r) for r in out.reports]
            learning += [_entry("dead_letter", d) for d in out.dead_letters]
            for notice in notices:
                outbox.enqueue(self.db, notice, self.directory, now=now)
                learning.append(_entry("notice", notice, decision_id=notice.decision_id))
            if learning:
                self.trail.append_many("learning", learning)
            self._open_and_supersede(out, formal_decisions)

    def _open_and_supersede(self, out: Outputs, formal_decisions: list[FormalDecision]) -> None:
        """Release by release, in order: open (or join) the cases of its potential alarms, then tell the open
        cases of the same key that this release no longer shows their alarm (``CaseService.supersede``)."""
        pending = list(formal_decisions)
        for release in out.releases:
            audit, release_id, indicator_id = release.summary_key
            mine = [d for d in pending if (d.assessment.audit, d.assessment.release_id) == (audit, release_id)]
            mine = [d for d in mine if d.assessment.indicator_id == indicator_id]
            pending = [d for d in pending if d not in mine]
            for decision in mine:
                self.cases.open_from_decision(decision)  # writes the decision and its case to the formal trail
            self._supersede(release)
        for decision in pending:
            self.cases.open_from_decision(decision)

    def _supersede(self, release: AssessedRelease) -> None:
        audit, release_id, indicator_id = release.summary_key
        # The key's open cases as the trail has them: a row closed (or garbled) by SQL does not hide its case
        # from a later release; superseding a tampered case is refused below and logged.
        ids = {c.case_id for c in self.cases.store.open_cases(audit)} | set(open_in_trail(self.trail))
        opened = [replay_case(self.trail, case_id).case for case_id in sorted(ids)]
        candidates = [
            c
            for c in opened
            if c is not None
            and not c.is_closed
            and c.audit == audit
            and c.indicator_id == indicator_id
            and c.assessment.release_id != release_id
        ]
        if not candidates:
            return
        # A release for the case's period that no longer shows the alarm supersedes it, whether the trust's
        # result there is no alarm or is absent (withdrawn, or excluded by the platform): either way the data
        # the alarm rests on no longer say so. A release for another period says nothing about the case.
        periods: set[tuple[str, str]] = set()
        alarms: set[tuple[str, str, str]] = set()
        for line in release.lines:
            a = json.loads(line)
            period = (a["period"]["start"], a["period"]["end"])
            periods.add(period)
            if a["band"] == "alarm" and a["side"] == "adverse":
                alarms.add((a["ods_code"], *period))
        for case in candidates:
            period = (case.period.start.isoformat(), case.period.end.isoformat())
            if period not in periods or (case.ods_code, *period) in alarms:
                continue
            try:
                self.cases.supersede(case.case_id, release_id)
            except CaseError as exc:  # a tampered case: `trail verify` names it; the release is still recorded
                log.error("release %s could not supersede %s: %s", release_id, case.case_id, exc)

    def record_case_outcome(self, outcome: CaseOutcome) -> None:
        """The case service's hook: runs inside the case's own transaction, after the service wrote the
        transitions and events to the formal trail; puts the letters in the outbox and the trail."""
        now = self.clock()
        entries: list[NewEntry] = []
        for notice in outcome.notices:
            outbox.enqueue(self.db, notice, self.directory, now=now)
            entries.append(_entry("notice", notice, case_id=notice.case_id, decision_id=notice.decision_id))
        if entries:
            self.trail.append_many("formal", entries)

    def notice_for(
        self, decision: LearningDecision | GoodPracticeDecision, now: datetime
    ) -> LearningNotice | GoodPracticeNotice:
        a = decision.assessment
        if isinstance(decision, LearningDecision):
            return LearningNotice(
                notice_id=notice_id_for(decision.decision_id, "learning_alert"),
                ods_code=a.ods_code,
                assessment=a,
                decision_id=decision.decision_id,
                created_at=now,
                respond_by=add_working_days(now.date(), LEARNING_REVIEW_WORKING_DAYS, a.country),
                template="learning_alert",
                recipients=decision.recipients,
            )
        assert isinstance(decision, GoodPracticeDecision)
        return GoodPracticeNotice(
            notice_id=notice_id_for(decision.decision_id, "favourable_notice"),
            ods_code=a.ods_code,
            assessment=a,
            decision_id=decision.decision_id,
            created_at=now,
            template="favourable_notice",
            recipients=decision.recipients,
        )

    def checkpoint(self) -> str | None:
        """Sign a checkpoint of both logs as they are now, and refresh the exported copies beside a file store.

        Called after every case action, timer tick and delivery batch, so nothing the formal log records waits
        unprotected for the next `route`. Returns None when done, or the sentence saying why it could not be.
        """
        if self.key_path is None:
            return "the trail was not checkpointed: this recorder was given no signing key"
        try:
            service_checkpointer(self.trail, self.db.target, self.key_path).checkpoint_all()
        except (OSError, CheckpointError) as exc:
            return f"the trail was not checkpointed: {exc}"
        return None

    # ------------------------------------------------------------------------------------------ delivery

    def funnel_for(self, notice: Any) -> str:
        """The release's funnel plot as the notice's readers may see it, redrawn from the trail.

        Only the addressee's own band is shown: other organisations are neutral in a trust's letter and absent
        from a regulator's (``notifications.plot.funnel_view``, ``notifications.render.plot_audience``).
        """
        a: Assessment = notice.assessment
        key = (a.audit, a.release_id, a.indicator_id)
        if key not in self._funnels:
            found = self.trail.find(release_ref(*key), "learning")
            rule = self.rules.get(a.audit, a.indicator_id)
            if not found or rule is None:
                return EMPTY_SVG
            stored = found[-1].data()["assessments"]
            self._funnels[key] = funnel_result([Assessment.model_validate(x) for x in stored], rule.spec)
        audience = plot_audience(notice)
        svg_key = (*key, a.ods_code, audience)
        if svg_key not in self._svgs:
            result, labels = self._funnels[key]
            if a.ods_code not in labels:
                return EMPTY_SVG
            title = f"{a.audit} {a.indicator_id}, {a.release_id}"
            view = funnel_view(result, labels, audience=audience, addressee=a.ods_code)
            svg = render_funnel_svg(view, title=title)
            self._svgs[svg_key] = svg[svg.find("<svg") :]  # inline in a letter: no XML prolog or DOCTYPE
        return self._svgs[svg_key]

    def deliver(
        self, mail_dir: Path, transports: dict[str, Transport] | None = None, *, smtp: SmtpSettings | None
    ) -> DeliveryReport:
        """Send every letter that is due: by SMTP when ``smtp`` is given (``Settings.smtp``), else ``.eml`` files."""
        if transports is None:
            transports = {
                "email": SmtpTransport(smtp) if smtp else EmlTransport(mail_dir),
                "webhook": WebhookTransport(),
            }
        total = DeliveryReport()

        async def run() -> None:
            while True:
                report = await deliver_due(
                    self.db, self.directory, renderer_for, transports, funnel_for=self.funnel_for,
                    clock=self.clock, rng=random.Random(), limit=500,
                )  # fmt: skip
                total.add(report)
                if report.sent + report.failed + report.dead + report.held == 0:
                    return

        asyncio.run(run())
        return total


def _nan(x: float | None) -> float:
    """A release statistic recorded as null (no eligible unit, or not finite) is NaN in a ``FunnelResult``."""
    return float("nan") if x is None else x


def funnel_result(assessments: Iterable[Assessment], spec: FunnelSpec) -> tuple[FunnelResult, list[str]]:
    """Rebuild a release's ``FunnelResult`` from its stored assessments, to redraw its funnel plot."""
    rows = list(assessments)

    def col(get: Callable[[Assessment], float | None]) -> np.ndarray:
        return np.array([np.nan if (v := get(a)) is None else v for a in rows], dtype=float)

    first = rows[0]
    result = FunnelResult(
        value=col(lambda a: a.value), volume=col(lambda a: a.volume), z=col(lambda a: a.z),
        z_adjusted=col(lambda a: a.z_adjusted),
        ll_alert=col(lambda a: a.limits.alert_lower), ul_alert=col(lambda a: a.limits.alert_upper),
        ll_alarm=col(lambda a: a.limits.alarm_lower), ul_alarm=col(lambda a: a.limits.alarm_upper),
        ll_alert_unadjusted=col(lambda a: a.limits_unadjusted.alert_lower),
        ul_alert_unadjusted=col(lambda a: a.limits_unadjusted.alert_upper),
        ll_alarm_unadjusted=col(lambda a: a.limits_unadjusted.alarm_lower),
        ul_alarm_unadjusted=col(lambda a: a.limits_unadjusted.alarm_upper),
        band=np.array([a.band for a in rows]), side=np.array([a.side or "favourable" for a in rows]),
        target=_nan(first.target), phi=_nan(first.phi), tau2=_nan(first.tau2), n_kept=first.n_kept, n_units=len(rows),
        od_applied=first.od_applied, od_method=first.od_method, chisq_p=None, spec=spec,
    )  # fmt: skip
    return result, [a.ods_code for a in rows]
