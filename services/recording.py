"""Recording what was decided: one batch's trail entries, cases and outbox rows, in one transaction.

The pipeline decides; this module makes it durable, and does nothing else. For each batch of ``Outputs`` it
appends to the trail (one log per audience), opens alarm cases for potential alarms, puts the letters of the
decisions' notices (``services/core/notices.py`` decides which) in the outbox — all in one database transaction,
so a decision, its trail entry and its letters exist together or not at all. The case service's outcomes come
back through ``record_case_outcome``, inside the case change's own transaction. Sending the letters is
``services/letters/delivery.py``; drawing their plots ``services/letters/plot.py``; signing the trail
``services/trail/checkpoint.py``.

What goes in which log. The *learning* log is never shown to a regulator, so everything that reveals an
alert lives there: the assessment of every release (it holds every organisation's band), learning-space and
good-practice decisions, release reports and dead letters. The *formal* log holds only the formal space:
potential alarms, case transitions and events, formal letters. Its size says nothing about alerts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notifications.recipients import Directory
from rules.book import Recipients, RuleBook
from schemas.canonical import Canonical, canonical_text
from schemas.cases import Case, CaseOutcome
from schemas.notices import GoodPracticeNotice, LearningNotice
from schemas.signals import FormalDecision, LearningDecision, LearningRecipient, stable_id
from schemas.trail_records import RecordTexts
from schemas.vocabulary import Band
from services.cases.machine import CaseError
from services.cases.replay import Replayed, replay_case, untouched
from services.cases.service import CaseService
from services.core.assess import AssessedRelease
from services.core.notices import notice_for
from services.core.pipeline import Outputs
from services.db import Database, in_lists
from services.letters import outbox
from services.letters.plot import release_ref
from services.trail.store import CASE_KINDS_SQL, NewEntry, Trail, table_for

log = logging.getLogger(__name__)
REPLAY_CACHE = 50_000  # replayed cases kept between batches (bounded: cleared when full)


def _entry(
    kind: str,
    record: Any,
    *,
    case_id: str | None = None,
    decision_id: str | None = None,
    lines: Mapping[int, Canonical] | None = None,
) -> NewEntry:
    """``lines``: the canonical line of each flagged assessment of the batch, by the model's ``id``. A decision or
    notice about one of them embeds that text as its ``assessment`` instead of dumping and encoding the same 35
    fields again (the same JCS bytes: ``canonical_lines`` is held to the model's encoding by the unit tests)."""
    line = lines.get(id(record.assessment)) if lines and hasattr(record, "assessment") else None
    if line is not None:
        data = record.model_dump(mode="json", exclude={"assessment"})
        data["assessment"] = line
    else:
        data = record.model_dump(mode="json") if hasattr(record, "model_dump") else record  # Canonical as is
    return NewEntry(kind=kind, record=data, case_id=case_id, decision_id=decision_id)


def _release_record(release: AssessedRelease) -> Canonical:
    """JCS of ``{"assessments": [...], "summary": {...}}``, from the release's canonical lines: joined once, with
    the object's opening and closing on the first and last lines (a release's record is hundreds of kilobytes, and
    concatenating the parts copied all of it once per part)."""
    summary = canonical_text(release.summary.model_dump(mode="json"))
    if not release.lines:
        return Canonical(f'{{"assessments":[],"summary":{summary}}}')
    parts: list[str] = list(release.lines)
    parts[0] = '{"assessments":[' + parts[0]
    parts[-1] = f'{parts[-1]}],"summary":{summary}}}'
    return Canonical(",".join(parts))


def _key_of(case_id: str) -> str:
    """The key prefix ``audit:indicator:start..end:`` of a case id (ODS codes have no colon)."""
    return case_id.rpartition(":")[0] + ":"


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
        self.key_path = key_path  # the trail's signing key (Settings.trail_key_path), for ``checkpoint_now``
        self.rules = rules
        self.directory = directory
        self.clock = clock
        self.trail = Trail(db, clock=clock)
        outbox.ensure_schema(db)
        self.cases = CaseService(
            db,
            self._deadlines,
            clock,
            on_outcome=self.record_case_outcome,
            trail=self.trail,
            replay=self._replayed,
            on_opened=self._remember,
        )
        self._replays: dict[str, tuple[tuple[int, str], Replayed]] = {}  # case id -> (trail stamp, replay)
        # The cases the formal trail holds open, by key prefix ``audit:indicator:start..end:``: read in full once,
        # then kept up to date from the entries appended after ``_seen`` (the log's head at the last read), so a
        # batch reads only what was appended since, by this process or any other writer of the trail.
        self._open: dict[str, set[str]] | None = None
        self._closed: set[str] = set()
        # The open cases whose newest supersession in the trail has not been overridden: awaiting its review, so
        # no later release can act on them (``machine.supersede`` changes nothing) and none replays them again.
        self._awaiting: set[str] = set()
        self._seen = -1
        self._texts = RecordTexts()  # the learning decisions' and notices' records, written from their fields

    def _deadlines(self, audit: str, indicator_id: str) -> Any:
        rule = self.rules.get(audit, indicator_id)
        if rule is None:
            raise LookupError(f"no rule set for {audit} {indicator_id}")
        return rule.deadlines

    def _recorded(self, audience: str, ids: list[str]) -> set[str]:
        """Which of these decision ids the trail already holds: a re-run of the same input adds nothing."""
        found: set[str] = set()
        table = table_for(audience)
        for chunk, marks in in_lists(ids):
            rows = self.db.query(f"SELECT decision_id FROM {table} WHERE decision_id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def record(self, out: Outputs) -> None:
        try:
            self._record(out)
        except BaseException:
            # The index may hold entries that were rolled back, and their seqs are used again: read it afresh.
            self._open = None
            raise

    def _record(self, out: Outputs) -> None:
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
                record = _release_record(release)
                learning.append(_entry("release_assessed", record, decision_id=ref))
            lines = {id(a): line for r in out.releases for a, line in zip(r.flagged, r.flagged_lines, strict=True)}
            formal_decisions: list[FormalDecision] = []
            notices: list[LearningNotice | GoodPracticeNotice] = []
            for decision in out.decisions:
                if decision.decision_id in known:
                    continue
                if isinstance(decision, FormalDecision):
                    formal_decisions.append(decision)
                    continue
                kind = f"{decision.space}_decision"
                text = self._texts.decision(decision, lines.get(id(decision.assessment)))
                if text is None:
                    learning.append(_entry(kind, decision, decision_id=decision.decision_id, lines=lines))
                else:
                    learning.append(NewEntry(kind, text, decision_id=decision.decision_id))
                notices.append(notice_for(decision, now))  # learning or good practice
            learning += [_entry("release_report", r) for r in out.reports]
            learning += [_entry("dead_letter", d) for d in out.dead_letters]
            outbox.enqueue_many(self.db, notices, self.directory, now=now)  # one executemany, no read-back
            for n in notices:
                text = self._texts.notice(n, lines.get(id(n.assessment)))
                if text is None:
                    learning.append(_entry("notice", n, decision_id=n.decision_id, lines=lines))
                else:
                    learning.append(NewEntry("notice", text, decision_id=n.decision_id))
            self._open_and_supersede(out, formal_decisions, lines)
            # The learning log last: on PostgreSQL its first append takes the log's write lock, held to the commit,
            # so every other writer of the log waits for the rest of this transaction; nothing after it now but
            # the hashing and the insert (HAZ-61). Formal before learning is also the order a case change takes
            # (its formal transitions, then ``_into_learning_space``), so two writers never wait on each other.
            if learning:
                self.trail.append_many("learning", learning)

    def _open_and_supersede(
        self, out: Outputs, formal_decisions: list[FormalDecision], lines: Mapping[int, Canonical] | None = None
    ) -> None:
        """Release by release, in order: open (or join) the cases of its potential alarms, then tell the open
        cases of the same key that this release no longer shows their alarm (``CaseService.supersede``)."""
        self._sync_open()  # the entries appended since the last batch; ``_supersede`` reads again what it needs
        # Once a batch each, until this batch changes the case; by key prefix (``_key_of``), so an opening forgets
        # the replays of its key's cases without a walk over every case the batch replayed.
        replayed: dict[str, dict[str, Case | None]] = {}
        # The batch's potential alarms by release key, in their order (one pass; comparing models is slow).
        pending: dict[tuple[str, str, str], list[FormalDecision]] = {}
        for d in formal_decisions:
            pending.setdefault((d.assessment.audit, d.assessment.release_id, d.assessment.indicator_id), []).append(d)
        for release in out.releases:
            audit, release_id, indicator_id = release.summary_key
            mine = pending.pop((audit, release_id, indicator_id), [])
            for decision in mine:
                self._open_case(decision, lines)  # writes the decision and its case to the formal trail
                of_key = replayed.get(_key_of(decision.case_id), {})
                for case_id in [i for i in of_key if i.startswith(decision.case_id)]:
                    del of_key[case_id]
            self._supersede(release, replayed)
        left = {id(d) for group in pending.values() for d in group}  # of no release in this batch
        for decision in [d for d in formal_decisions if id(d) in left]:
            self._open_case(decision, lines)

    def _open_case(self, decision: FormalDecision, lines: Mapping[int, Canonical] | None) -> None:
        """``CaseService.open_from_decision``, the decision's record embedding its assessment's canonical line.

        A case it opened goes into the index of open cases at once (its opening transition is in the trail now,
        and no transition of a new case closes it), so the release's ``_supersede`` finds its key without a read
        of the trail after every opening; its own ``_sync_open`` then reads the entries, this opening's among them
        (adding a case twice changes nothing). A batch that fails rebuilds the index from the trail (``record``)."""
        outcome = self.cases.open_from_decision(decision, lines.get(id(decision.assessment)) if lines else None)
        if outcome.transitions and self._open is not None:
            case_id = outcome.cases[0].case_id
            self._open.setdefault(_key_of(case_id), set()).add(case_id)

    def _sync_open(self) -> None:
        """Bring the index of open cases up to the trail: the whole formal log the first time (and after a
        rolled-back batch), then only the entries appended after the log's head at the last read.

        The same rule as ``open_in_trail``: a case is open once the trail holds a transition of it and none to
        the closed stage (records are RFC 8785 text, so ``"to_stage":"closed"`` cannot match inside a note).

        A case awaits the review of a supersession from its ``superseded`` transition until a
        ``supersession_override`` one: the only transitions that set and clear ``Case.superseded_by`` (see
        ``machine.supersede`` and ``machine.apply``). A trail that does not replay to a valid case makes no
        candidate either way (``_supersede`` skips a case with no replay), so skipping an awaiting case without
        replaying it supersedes exactly the cases the replay would."""
        if self._open is None:
            self._open, self._closed, self._awaiting, self._seen = {}, set(), set(), -1
        # The log's head first, then the transitions up to it, and the next read starts after the head: not
        # after the newest transition, or every read scans again all the other entries appended since (a
        # long run appends thousands of formal decisions joining open cases and no transition: that scan grew
        # with the store, HAZ-60). Head before rows: a writer committing in between appends above the head
        # (seqs are taken under the log's lock and held to commit), so the next read finds its entries.
        head = self.trail.size("formal") - 1
        rows = self.db.query(
            'SELECT seq, case_id, record LIKE \'%"to_stage":"closed"%\', record LIKE \'%"kind":"superseded"%\','
            ' record LIKE \'%"kind":"supersession_override"%\' FROM trail_formal'
            " WHERE seq > ? AND seq <= ? AND kind = 'case_transition' AND case_id IS NOT NULL ORDER BY seq",
            (self._seen, head),
        )
        self._seen = max(self._seen, head)
        for _seq, raw_id, closed, superseded, overridden in rows:
            case_id = str(raw_id)
            key = _key_of(case_id)
            if superseded:
                self._awaiting.add(case_id)
            elif overridden:
                self._awaiting.discard(case_id)
            if closed:
                self._closed.add(case_id)
                held = self._open.get(key)
                if held is not None:
                    held.discard(case_id)
                    if not held:
                        del self._open[key]
            elif case_id not in self._closed:
                self._open.setdefault(key, set()).add(case_id)

    def _replayed(self, case_id: str) -> Replayed:
        """The case as its formal trail makes it, replayed again only when the trail holds a newer entry for it.

        Every later release for the same key (audit, indicator, period) replays the key's open cases, and every
        supersession and opening checks them, so without this a long run replays the same cases thousands of
        times. The stamp is the case's newest formal entry (seq and leaf hash): the log is append-only and every
        leaf hashes a fresh random salt, so a new entry, or one rolled back and appended again, always changes
        it. The stored row is still compared with this replay on every action (``CaseService.checked``).

        Only the entries a replay reads make the stamp (``REPLAYED_KINDS``: the case's transitions and events; the
        potential alarm that opened it is appended with its opening transition, in the same transaction), so a
        later alarm joining the case does not replay it again."""
        return self._replayed_many([case_id])[case_id]

    def _replayed_many(self, case_ids: list[str]) -> dict[str, Replayed]:
        """``_replayed`` of many cases, their stamps read in one query per 500 (not one per case)."""
        stamps: dict[str, tuple[int, str]] = {}
        for chunk, marks in in_lists(case_ids):
            rows = self.db.query(  # the kinds as literals: the trail's partial index {log}_replayed is theirs
                "SELECT case_id, seq, leaf_hash FROM trail_formal WHERE seq IN (SELECT MAX(seq) FROM trail_formal"
                f" WHERE case_id IN ({marks}) AND kind IN ({CASE_KINDS_SQL}) GROUP BY case_id)",
                chunk,
            )
            stamps.update((str(c), (int(seq), str(leaf))) for c, seq, leaf in rows)
        return {case_id: self._replayed_at(case_id, stamps.get(case_id)) for case_id in case_ids}

    def _replayed_at(self, case_id: str, stamp: tuple[int, str] | None) -> Replayed:
        if stamp is None:  # no transition or event: what a replay makes of it without reading (every opening and
            return untouched(case_id)  # joining alarm looks up the key's next unused case id)
        cached = self._replays.get(case_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        replayed = replay_case(self.trail, case_id)
        self._remember(replayed, stamp)
        return replayed

    def _remember(self, replayed: Replayed, stamp: tuple[int, str]) -> None:
        """A case the service just opened, with the replay its own writes make, cached under their stamp: the next
        release of its key does not replay the opening it wrote a moment ago (one replay per opened case was most
        of the replays of a run). Safe as the cache is: the stamp is the newest case entry's seq and leaf hash, so
        any later entry, or a rolled-back batch appended again (a fresh salt), misses it and replays. The unit
        tests hold this replay to ``replay_case`` of the same trail, on generated and hostile decisions."""
        if len(self._replays) >= REPLAY_CACHE:
            self._replays.clear()
        self._replays[replayed.case_id] = (stamp, replayed)

    def _replay(self, case_id: str) -> Case | None:
        return self._replayed(case_id).case

    def _supersede(self, release: AssessedRelease, by_key: dict[str, dict[str, Case | None]]) -> None:
        audit, release_id, indicator_id = release.summary_key
        if not release.lines:
            return
        # Only the cases of this release's key (audit, indicator, period) are replayed: their ids start with it.
        first = json.loads(release.lines[0])["period"]
        prefix = f"{audit}:{indicator_id}:{first['start']}..{first['end']}:"
        # The key's open cases as the trail has them (the index, by key): a row closed (or garbled) by SQL does
        # not hide its case from a later release; superseding a tampered case is refused below and logged. A row
        # the trail does not vouch for (inserted by SQL) replays to no case, so the table adds no candidate.
        # Cases this batch opened are in the index already (``_open_case`` adds each one it opens). A case awaiting
        # the review of a supersession is not replayed: no release can act on it (see ``_sync_open``), and there
        # are ever more of them as a long run re-releases a key.
        assert self._open is not None
        if prefix not in self._open:
            return
        self._sync_open()  # what the trail holds now (another writer may have overridden a supersession)
        ids = {i for i in self._open.get(prefix, ()) if i not in self._awaiting}
        if not ids:
            return
        replayed = by_key.setdefault(prefix, {})
        replayed.update((i, r.case) for i, r in self._replayed_many(sorted(ids - replayed.keys())).items())
        opened = [replayed[case_id] for case_id in sorted(ids)]
        candidates = [
            c
            for c in opened
            if c is not None
            and not c.is_closed
            and c.audit == audit
            and c.indicator_id == indicator_id
            and c.assessment.release_id != release_id
            # Already awaiting review of a supersession, or this release overridden: ``machine.supersede`` changes
            # nothing (the replay is the trail's, which the stored row must equal), so the stored row is not read,
            # parsed and compared for every open case of the key on every later release (that grew with the run).
            and c.superseded_by is None
            and release_id not in c.overridden_releases
        ]
        if not candidates:
            return
        # A release for the case's period that no longer shows the alarm supersedes it, whether the trust's
        # result there is no alarm or is absent (withdrawn, or excluded by the platform): either way the data
        # the alarm rests on no longer say so. A release for another period says nothing about the case.
        # Every adverse alarm is among the release's flagged assessments (models already, so no line is parsed
        # again), and an assessed release has one period (``release_problem`` reports any other, unassessed).
        periods = {(first["start"], first["end"])}
        alarms = {
            (a.ods_code, a.period.start.isoformat(), a.period.end.isoformat())
            for a in release.flagged
            if a.band == "alarm" and a.side == "adverse"
        }
        for case in candidates:
            period = (case.period.start.isoformat(), case.period.end.isoformat())
            if period not in periods or (case.ods_code, *period) in alarms:
                continue
            replayed.pop(case.case_id, None)
            try:
                outcome = self.cases.supersede(case.case_id, release_id)
            except CaseError as exc:  # a tampered case: `trail verify` names it; the release is still recorded
                log.error("release %s could not supersede %s: %s", release_id, case.case_id, exc)
                continue
            # The index as ``_sync_open`` would make it from the transition just written (it reads the entry again
            # before the key's next release; marking a case awaiting twice changes nothing).
            if any(t.kind == "superseded" for t in outcome.transitions):
                self._awaiting.add(case.case_id)

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
        for transition in outcome.transitions:
            if transition.outcome == "downgrade_to_alert":
                case = next(c for c in outcome.cases if c.case_id == transition.case_id)
                self._into_learning_space(case, transition.seq, now)

    def _into_learning_space(self, case: Case, seq: int, now: datetime) -> None:
        """A case the review downgraded to an alert enters the protected learning space, as the policy intends:
        a learning decision for the trust's own learning recipients and the learning letter, in the learning log
        (never the formal one, which a regulator may read), in the case change's own transaction. The letter
        states the re-analysed value when the review recorded one."""
        rule = self.rules.get(case.audit, case.indicator_id)
        roles = rule.recipients.learning if rule is not None else Recipients().learning
        update: dict[str, Any] = {"band": Band.ALERT}
        if case.reanalysed_value is not None:
            update["value"] = case.reanalysed_value
        decision = LearningDecision(
            decision_id=stable_id("dec", case.case_id, "downgraded", str(seq)),
            assessment=case.assessment.model_copy(update=update),
            decided_at=now,
            recipients=tuple(LearningRecipient(role=role, ods_code=case.ods_code) for role in roles),
        )
        notice = notice_for(decision, now)
        outbox.enqueue(self.db, notice, self.directory, now=now)
        self.trail.append_many(
            "learning",
            [
                _entry("learning_decision", decision, decision_id=decision.decision_id),
                _entry("notice", notice, decision_id=notice.decision_id),
            ],
        )
