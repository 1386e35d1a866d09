"""One vocabulary: every word is defined once in ``schemas/vocabulary.py``, and a sixth copy fails here.

The scan reads the product packages' syntax trees (not their text, so a docstring or a topic name that merely
mentions a word is no copy): a ``Literal[...]``, tuple, list, set or enum body that spells two or more values
of one word is a re-definition, and so is another frozen-and-forbidding base model, another ODS pattern, another
UTC text format or another union of the three notice or decision types.
"""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from notifications.recipients import Directory
from rules.book import IndicatorRule, load_rules
from rules.routing import route, space_for
from schemas.events import Organisation
from schemas.signals import AnyDecision, FormalDecision, GoodPracticeDecision, LearningDecision
from schemas.vocabulary import (
    Adverse,
    Band,
    CrossedLimit,
    Measure,
    Method,
    OdMethod,
    OdPolicy,
    Side,
    Space,
    Stream,
    Trim,
    count_key,
    is_ods_code,
    parse_utc_text,
    slug,
    utc_text,
)
from services.cli.app import app
from services.kafka.topics import validate_ods
from tests.support.samples import sample_assessment

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("schemas", "rules", "notifications", "services")
VOCABULARY = ROOT / "schemas" / "vocabulary.py"
WORDS: tuple[type[StrEnum], ...] = (
    Band, CrossedLimit, Side, Space, Stream, Measure, Method, Adverse, OdMethod, OdPolicy, Trim
)  # fmt: skip
NOTICE_TYPES = frozenset({"LearningNotice", "GoodPracticeNotice", "FormalNotice"})
DECISION_TYPES = frozenset({"LearningDecision", "FormalDecision", "GoodPracticeDecision"})


# ---------------------------------------------------------------------------------------------- the scan


def _strings(nodes: list[ast.expr]) -> set[str]:
    return {n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _union_names(node: ast.expr) -> set[str]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union_names(node.left) | _union_names(node.right)
    return {node.id} if isinstance(node, ast.Name) else set()


#: The one place each union of the notice and decision types is written.
UNION_HOMES = {"AnyNotice": "schemas/notices.py", "AnyDecision": "schemas/signals.py"}
#: The trail keeps two logs named after two of the spaces (the good-practice space is logged with learning):
#: its ``Audience`` is its own word, a subset, not a copy of ``Space``.
ALLOWED = {("services/trail/store.py", 'Audience = Literal["learning", "formal"]')}


def redefinitions(source: str, path: str = "<test>") -> list[str]:
    """Every place in ``source`` (the file at ``path``) that defines a vocabulary word again, as ``line: what``."""
    found: list[str] = []
    lines = source.splitlines()
    allowed = {n for n, line in enumerate(lines, start=1) if (path, line.strip()) in ALLOWED}

    def spelled(line: int, values: set[str], what: str) -> None:
        for word in WORDS:
            hits = values & {m.value for m in word}
            if len(hits) >= 2:
                found.append(f"{line}: {what} spells {word.__name__} again ({', '.join(sorted(hits))})")

    for node in ast.walk(ast.parse(source)):
        if getattr(node, "lineno", None) in allowed:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal":
            items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            spelled(node.lineno, _strings(items), "a Literal")
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            spelled(node.lineno, _strings(node.elts), "a collection")
        elif isinstance(node, ast.ClassDef):
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)} | {
                b.attr for b in node.bases if isinstance(b, ast.Attribute)
            }
            if bases & {"Enum", "StrEnum"}:
                values = [s.value for s in node.body if isinstance(s, ast.Assign)]
                spelled(node.lineno, _strings(values), f"the enum {node.name}")
                if node.name in {w.__name__ for w in WORDS}:
                    found.append(f"{node.lineno}: the enum {node.name} is defined again")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ConfigDict":
            config = {k.arg: k.value for k in node.keywords}
            frozen, extra = config.get("frozen"), config.get("extra")
            forbids = isinstance(extra, ast.Constant) and extra.value == "forbid"
            if isinstance(frozen, ast.Constant) and frozen.value is True and forbids:
                found.append(f"{node.lineno}: another frozen, extra-forbidding base model (use Record)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "[A-Z0-9]" in node.value:
                found.append(f"{node.lineno}: another ODS code pattern (use OdsCode / is_ods_code)")
            if "%Y-%m-%dT%H:%M:%S" in node.value:
                found.append(f"{node.lineno}: another UTC text format (use utc_text / parse_utc_text)")
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            names = _union_names(node.value)
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if UNION_HOMES.get(getattr(target, "id", "")) == path:
                continue
            for kind, types in (("notice", NOTICE_TYPES), ("decision", DECISION_TYPES)):
                if len(names & types) >= 2:
                    found.append(f"{node.lineno}: another union of the {kind} types (use Any{kind.title()})")
    return found


def product_files() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py") if p != VOCABULARY)


def test_the_product_packages_define_no_word_a_second_time() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{problem}"
        for path in product_files()
        for problem in redefinitions(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    ]
    assert not problems, "\n".join(problems)


def test_the_scan_reads_every_product_package() -> None:
    scanned = {p.relative_to(ROOT).parts[0] for p in product_files()}
    assert scanned == set(PRODUCT)
    assert len(product_files()) > 50


COPIES = [
    'Band = Literal["alarm", "alert", "within", "insufficient_data"]',
    'Side = Literal["adverse", "favourable"]',
    'from typing import Literal as L\nx: "L[1]"\nMethod = Literal["poisson-ci", "exact"]',
    'if a.band in ("within", "insufficient_data"):\n    pass',
    'SPACES = ["learning", "good_practice", "formal"]',
    'STREAMS = {"good-practice", "dead-letters"}',
    'class Band(StrEnum):\n    ALARM = "alarm"',
    'class Choice(enum.StrEnum):\n    a = "high"\n    b = "low"',
    'class Opt(Enum):\n    x = "winsorise"\n    y = "truncate"',
    'class M(BaseModel):\n    model_config = ConfigDict(extra="forbid", frozen=True)',
    '_ODS = re.compile(r"^[A-Z0-9]{3,6}$")',
    'ods: str = Field(pattern=r"^[A-Z0-9]+$")',
    '_TS = "%Y-%m-%dT%H:%M:%S.%fZ"',
    "AnyNotice = LearningNotice | GoodPracticeNotice | FormalNotice",
    "Routed: TypeAlias = FormalDecision | LearningDecision",
    'policy: Literal["phi", "chisq"] = "phi"',
    'x = tuple(["none", "additive", "multiplicative"])',
]


@pytest.mark.parametrize("source", COPIES)
def test_the_scan_finds_a_copy(source: str) -> None:
    assert redefinitions(source), source


USES = [
    'type: Literal["proportion"]',  # one tag of a discriminated union is a use of the word, not its definition
    "space: Literal[Space.LEARNING] = Space.LEARNING",
    'for label, level in (("alert", 0.95), ("alarm", 0.998)):\n    pass',
    'TOPIC = "signalbox.good-practice.v1"',
    '"""Bands are alarm, alert, within or insufficient_data."""',
    'x = np.where(high, "high", np.where(low, "low", d))',
    "class M(BaseModel):\n    model_config = ConfigDict(frozen=True)",
    "Either = LearningNotice | Assessment",
]


def test_a_union_is_at_home_only_in_its_module() -> None:
    union = "AnyNotice = LearningNotice | GoodPracticeNotice | FormalNotice"
    assert redefinitions(union, "schemas/notices.py") == []
    assert redefinitions(union, "services/letters/outbox.py")
    assert redefinitions("Audience = Literal['learning', 'formal']", "services/trail/checkpoint.py")


@pytest.mark.parametrize("source", USES)
def test_the_scan_lets_a_use_of_a_word_pass(source: str) -> None:
    assert redefinitions(source) == []


# ---------------------------------------------------------------------------------------------- the words


#: Words that share values by design: a stream is named after its space; a chart's alert and alarm limits after
#: the bands their crossings route like.
SHARED = ({"Space", "Stream"}, {"Band", "CrossedLimit"})


def test_each_value_belongs_to_one_word_except_where_words_are_named_after_each_other() -> None:
    seen: dict[str, str] = {}
    for word in WORDS:
        for member in word:
            if member.value in seen and {seen[member.value], word.__name__} not in SHARED:
                pytest.fail(f"{member.value!r} is both a {seen[member.value]} and a {word.__name__}")
            seen[member.value] = word.__name__


def test_streams_spell_the_spaces_as_file_and_topic_names_do() -> None:
    assert {s.slug for s in Space} <= {s.value for s in Stream}
    assert Space.GOOD_PRACTICE.slug == "good-practice" == slug("good_practice")


def test_the_contract_tags_of_the_measure_union_are_the_measures() -> None:
    from schemas.events import MeanMeasure, ProportionMeasure, StandardisedRatioMeasure

    tags = {
        get_args(m.model_fields["type"].annotation)[0]
        for m in (ProportionMeasure, StandardisedRatioMeasure, MeanMeasure)
    }
    assert tags == set(Measure)


@pytest.mark.parametrize(("band", "side", "key"), [
    ("within", None, "within"), ("insufficient_data", None, "insufficient_data"), ("alert", "adverse", "alert_adverse"),
    ("alarm", "favourable", "alarm_favourable"), (Band.ALARM, Side.ADVERSE, "alarm_adverse"),
])  # fmt: skip
def test_count_keys(band: str, side: str | None, key: str) -> None:
    assert count_key(band, side) == key


def test_records_keep_the_plain_text_of_a_word() -> None:
    """What is written, hashed and signed must not depend on whether a caller passed a member or a string."""
    for band in (Band.ALERT, "alert"):
        assessment = sample_assessment(band=band, side=Side.ADVERSE)
        assert type(assessment.band) is str and type(assessment.side) is str
        assert type(assessment.measure) is str
    decision = route(sample_assessment(band="alert"), _rule(), datetime(2025, 1, 1, tzinfo=UTC))
    assert decision is not None and type(decision.space) is str
    assert decision.model_dump()["space"] == "learning"


# ---------------------------------------------------------------------------------------------- routing


def _rule() -> IndicatorRule:
    rule: IndicatorRule = next(iter(load_rules(None)))
    return rule


SPACE_TYPES: dict[Space, type[AnyDecision]] = {
    Space.LEARNING: LearningDecision,
    Space.FORMAL: FormalDecision,
    Space.GOOD_PRACTICE: GoodPracticeDecision,
}
RESULTS = [(band, side) for band in Band for side in (*Side, None)]


@pytest.mark.parametrize(("band", "side"), RESULTS)
def test_route_goes_where_the_routing_rule_says(band: Band, side: Side | None) -> None:
    assessment = sample_assessment(band=band, side=side)
    expected = space_for(band, side)
    if expected is not None and side is None:  # a flagged band without a side is no result the engine makes
        with pytest.raises(ValidationError):
            route(assessment, _rule(), datetime(2025, 1, 1, tzinfo=UTC))
        return
    decision = route(assessment, _rule(), datetime(2025, 1, 1, tzinfo=UTC))
    assert (decision.space if decision else None) == expected


@pytest.mark.parametrize(("band", "side"), RESULTS)
@pytest.mark.parametrize("space", list(Space))
def test_each_decision_type_accepts_exactly_the_results_the_rule_sends_it(
    band: Band, side: Side | None, space: Space
) -> None:
    """The types and the rule cannot disagree: a decision type refuses every result the rule sends elsewhere."""
    assessment = sample_assessment(band=band, side=side)
    fields: dict[str, Any] = {
        "decision_id": "d",
        "assessment": assessment,
        "decided_at": datetime(2025, 1, 1, tzinfo=UTC),
    }
    recipient = {"role": "lead_clinician", "ods_code": assessment.ods_code}
    if space is Space.FORMAL:
        fields["case_id"] = "c"
    kind = SPACE_TYPES[space]
    # A flagged band without a side is no result the engine makes: every type refuses it (route raises).
    if space_for(band, side) is space and side is not None:
        assert kind.model_validate({**fields, "recipients": [recipient]}).space == space
    else:
        with pytest.raises(ValidationError):
            kind.model_validate({**fields, "recipients": [recipient]})


def test_the_cli_route_summary_does_not_restate_the_routing_rule() -> None:
    source = (ROOT / "services" / "cli" / "app.py").read_text(encoding="utf-8")
    assert "space_for(" in source
    assert re.search(r"""["']good practice["']\s+if""", source) is None


# ---------------------------------------------------------------------------------------------- the CLI


ARGS = {"assess": ["x.csv", "--measure", "mean", "--method", "normal"], "tail": ["--space", "learning"]}


def _choices_offered(command: str, option: str) -> str:
    """What the command line says its choices are, when given one that is not."""
    args = list(ARGS[command])
    args[args.index(f"--{option}") + 1] = "bogus"
    result = CliRunner().invoke(app, [command, *args], terminal_width=400)
    assert result.exit_code == 2
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


@pytest.mark.parametrize(
    ("command", "option", "word"),
    [("assess", "measure", Measure), ("assess", "method", Method), ("tail", "space", Stream)],
)
def test_cli_choices_are_the_vocabulary(command: str, option: str, word: type[StrEnum]) -> None:
    offered = _choices_offered(command, option)
    assert all(f"'{value}'" in offered for value in word), offered


# ---------------------------------------------------------------------------------------------- ODS codes


ODS_HOSTILE = [
    "", "RX", "rxf", "RXf", "RXF\n", "\nRXF", " RXF", "RXF ", "RX F", "RXF0123456", "ＲＸＦ", "RX٣", "RXF-1",
    "RXF.1", "RXF\x00", "RXＦ", "R\u0307XF", "ǅXF",
]  # fmt: skip


@pytest.mark.parametrize("text", ODS_HOSTILE)
def test_hostile_ods_codes_are_refused_by_every_check(text: str) -> None:
    assert not is_ods_code(text)
    with pytest.raises(ValueError):
        validate_ods(text)
    with pytest.raises(ValidationError):
        Organisation.model_validate({"ods_code": text})


@pytest.mark.parametrize("value", [None, 123, b"RXF", ["RXF"], 1.5])
def test_an_ods_code_is_text(value: object) -> None:
    assert not is_ods_code(value)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=12), st.from_regex(r"[A-Z0-9]{1,11}", fullmatch=True)))
def test_the_ods_checks_agree_everywhere(text: str) -> None:
    """The contract, the recipient directory and the Kafka principals judge an ODS code by one rule."""
    expected = re.fullmatch(r"[A-Z0-9]{3,9}", text, flags=re.ASCII) is not None
    assert is_ods_code(text) is expected
    try:
        Organisation.model_validate({"ods_code": text})
        contract = True
    except ValidationError:
        contract = False
    try:
        validate_ods(text)
        kafka = True
    except ValueError:
        kafka = False
    assert contract is expected and kafka is expected


def test_the_directory_refuses_an_organisation_key_that_is_no_ods_code(tmp_path: Path) -> None:
    path = tmp_path / "recipients.yaml"
    path.write_text(
        "version: 1\nsender: {name: S, email: s@example.org}\norganisations:\n  'RXF\\n': {name: X}\n", encoding="utf-8"
    )
    with pytest.raises(Exception, match="is not an ODS code"):
        Directory.load(path)


# ---------------------------------------------------------------------------------------------- UTC text

MOMENTS = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.timezones())


@settings(max_examples=300, deadline=None)
@given(MOMENTS)
def test_utc_text_round_trips(moment: datetime) -> None:
    text = utc_text(moment)
    assert text.endswith("Z") and len(text) == 27
    assert parse_utc_text(text) == moment.astimezone(UTC)  # the same instant (a DST-gap wall time included)


@settings(max_examples=300, deadline=None)
@given(MOMENTS, MOMENTS)
def test_utc_text_sorts_as_time_does(a: datetime, b: datetime) -> None:
    assert (utc_text(a) < utc_text(b)) == (a < b)


@pytest.mark.parametrize("moment", [datetime(2025, 1, 1), datetime.now(), datetime(2025, 6, 1, 12, 0, 0, 1)])
def test_a_naive_moment_is_refused(moment: datetime) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        utc_text(moment)


def test_an_offset_moment_is_written_in_utc() -> None:
    moment = datetime(2025, 3, 30, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert utc_text(moment) == "2025-03-29T20:00:00.000000Z"
