"""Rule sets: one YAML file per audit, saying how each indicator is assessed and where its signals go.

A rule set is configuration an audit owns and versions (its outlier policy), never constants in code: the
measure type, the adverse direction, the method, the limit levels, the minimum volume, the policy version,
the alarm-process deadlines and the recipients by role. Loading validates everything and names the file and
the field when something is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.events import MeasureType
from schemas.signals import LearningRole, RuleRef, TrustRole
from services.assessment import FunnelSpec

DEFAULT_RULES_DIR = Path(__file__).parent / "sets"

Method = Literal["shmi", "cqc", "poisson-ci", "exact", "normal", "arcsine", "log", "sqrt"]


class RuleSetError(ValueError):
    """A rule set that cannot be used, with the file and field that are wrong."""


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(Strict):
    """Two-sided coverage of the alert (≈2 SD) and alarm (≈3 SD) limits."""

    alert: float = Field(0.95, gt=0.5, lt=1)
    alarm: float = Field(0.998, gt=0.5, lt=1)

    @model_validator(mode="after")
    def _alarm_beyond_alert(self) -> Limits:
        if self.alarm <= self.alert:
            raise ValueError(f"the alarm level {self.alarm} must be wider than the alert level {self.alert}")
        return self


class Deadlines(Strict):
    """Working days allowed at each stage of the alarm case process (outlier-process.md §3 defaults)."""

    data_check: int = Field(10, ge=1, le=120)
    provider_told: int = Field(5, ge=1, le=120)
    provider_response: int = Field(25, ge=1, le=120)
    review: int = Field(30, ge=1, le=120)
    confirmation: int = Field(5, ge=1, le=120)
    acknowledgement: int = Field(10, ge=1, le=120)
    non_response: int = Field(10, ge=1, le=120)


class Recipients(Strict):
    """Who is told, by role, in each space. The learning space can only name roles inside the trust."""

    learning: tuple[LearningRole, ...] = ("patient_safety_lead", "lead_clinician")
    formal: tuple[TrustRole, ...] = ("lead_clinician", "medical_director")
    good_practice: tuple[TrustRole, ...] = ("lead_clinician",)


class Overdispersion(Strict):
    method: Literal["none", "additive", "multiplicative"] | None = None
    trim: Literal["winsorise", "truncate"] | None = None
    trim_fraction: float | None = Field(None, ge=0, lt=0.5)
    policy: Literal["phi", "chisq", "always"] = "phi"


class Plausible(Strict):
    """What a real result for this indicator can be. A result outside is a data error, dead-lettered at ingest
    with the bound it broke, so one absurd organisation cannot drag a pooled national target (a proportion's
    ΣO/Σn, a mean's Σ(mean·n)/Σn) and turn the rest of its release into alarms."""

    min_value: float | None = Field(None, allow_inf_nan=False)
    max_value: float | None = Field(None, allow_inf_nan=False)
    max_volume: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Plausible:
        if self.min_value is not None and self.max_value is not None and self.min_value >= self.max_value:
            raise ValueError(f"min_value {self.min_value} must be below max_value {self.max_value}")
        return self


class Indicator(Strict):
    name: str = Field(min_length=3)
    measure: MeasureType
    adverse: Literal["high", "low"]
    method: Method
    unit: str = ""
    min_volume: float = Field(0, ge=0)
    target: float | None = None
    limits: Limits = Limits()
    plausible: Plausible = Plausible()
    overdispersion: Overdispersion = Overdispersion()
    deadlines: Deadlines | None = None
    recipients: Recipients | None = None


class Policy(Strict):
    hqip_guidance: str = Field(min_length=3)
    audit_policy: str = Field(min_length=3)
    version: str = Field(min_length=1)


class RuleSet(Strict):
    rule_set: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    version: str = Field(min_length=1)
    audit: str = Field(min_length=1)
    name: str = Field(min_length=3)
    policy: Policy
    deadlines: Deadlines = Deadlines()
    recipients: Recipients = Recipients()
    indicators: dict[str, Indicator] = Field(min_length=1)

    @property
    def ref(self) -> RuleRef:
        return RuleRef(rule_set=self.rule_set, version=self.version, policy_version=self.policy.version)


class IndicatorRule(BaseModel):
    """One indicator's rules with the rule set's defaults resolved: what the pipeline works from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    audit: str
    indicator_id: str
    indicator: Indicator
    deadlines: Deadlines
    recipients: Recipients
    ref: RuleRef
    spec: FunnelSpec


def funnel_spec(indicator: Indicator) -> FunnelSpec:
    od = indicator.overdispersion
    overrides: dict[str, object] = {
        "adverse": indicator.adverse,
        "alert_level": indicator.limits.alert,
        "alarm_level": indicator.limits.alarm,
        "min_volume": indicator.min_volume,
        "target": indicator.target,
        "od_policy": od.policy,
    }
    if od.method is not None:
        overrides["overdispersion"] = od.method
    if od.trim is not None:
        overrides["trim"] = od.trim
    if od.trim_fraction is not None:
        overrides["trim_fraction"] = od.trim_fraction
    return FunnelSpec.preset(indicator.measure, indicator.method, **overrides)


class RuleBook:
    """All loaded rule sets, looked up by (audit, indicator)."""

    def __init__(self, rule_sets: list[RuleSet]) -> None:
        self.rule_sets = rule_sets
        self._rules: dict[tuple[str, str], IndicatorRule] = {}
        for rs in rule_sets:
            for indicator_id, indicator in rs.indicators.items():
                key = (rs.audit, indicator_id)
                if key in self._rules:
                    raise RuleSetError(f"indicator {indicator_id} of audit {rs.audit} is defined twice")
                self._rules[key] = IndicatorRule(
                    audit=rs.audit,
                    indicator_id=indicator_id,
                    indicator=indicator,
                    deadlines=indicator.deadlines or rs.deadlines,
                    recipients=indicator.recipients or rs.recipients,
                    ref=rs.ref,
                    spec=funnel_spec(indicator),
                )

    def get(self, audit: str, indicator_id: str) -> IndicatorRule | None:
        return self._rules.get((audit, indicator_id))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._rules.values())

    def __len__(self) -> int:
        return len(self._rules)


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'top level'}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors(include_url=False)
    )


def parse_rule_set(data: Mapping[str, object], source: str) -> RuleSet:
    try:
        rule_set = RuleSet.model_validate(data)
    except ValidationError as exc:
        raise RuleSetError(f"{source}: {_describe(exc)}") from None
    for indicator_id, indicator in rule_set.indicators.items():
        try:
            funnel_spec(indicator)
        except ValueError as exc:
            # The statistics core checks that the method fits the measure and the options fit the method.
            raise RuleSetError(f"{source}: indicators.{indicator_id}: {exc}") from None
    return rule_set


def load_rule_set(path: Path) -> RuleSet:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RuleSetError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping):
        raise RuleSetError(f"{path}: a rule set must be a mapping at the top level")
    return parse_rule_set(data, str(path))


def load_rules(directory: Path | None = None) -> RuleBook:
    """Load every ``*.yaml`` rule set in ``directory`` (default: the shipped ``rules/sets``)."""
    directory = directory or DEFAULT_RULES_DIR
    if not directory.is_dir():
        raise RuleSetError(f"{directory}: the rules directory does not exist")
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise RuleSetError(f"{directory}: the rules directory holds no *.yaml rule set")
    return RuleBook([load_rule_set(f) for f in files])
