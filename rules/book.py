"""Rule sets: one YAML file per audit, saying how each indicator is assessed and where its signals go.

A rule set is configuration an audit owns and versions (its outlier policy), never constants in code: the
measure type, the adverse direction, the method, the limit levels, the minimum volume, the policy version,
the alarm-process deadlines and the recipients by role. Loading validates everything and names the file and
the field when something is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rules.monitoring import Monitoring
from rules.stats import FunnelSpec, critical_z
from schemas.config_files import ConfigFileError, load_yaml
from schemas.signals import LearningRole, RuleRef, TrustRole
from schemas.vocabulary import Adverse, Measure, Method, OdMethod, OdPolicy, Record, Trim

DEFAULT_RULES_DIR = Path(__file__).parent / "sets"


class RuleSetError(ConfigFileError):
    """A rule set that cannot be used, with the file and field that are wrong."""


class Strict(Record):
    # Numbers must be written as numbers: `alert: "0.95"` or `data_check: true` is a typo, not a value.
    model_config = ConfigDict(allow_inf_nan=False)


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Days = Annotated[int, Field(strict=True, ge=1, le=120)]

# Outlier policy puts the alert at about 2 SD and the alarm at about 3 SD (HQIP: 95% and 99.8%). Levels below
# these floors flag a large share of every release (an alarm level of 0.6 is beyond the limits for 40% of
# trusts), and limits closer than MIN_LIMIT_GAP_SD make nearly every alert an alarm: either way the learning
# space loses its meaning and the formal space fills with false alarms.
MIN_ALERT_LEVEL = 0.9
MIN_ALARM_LEVEL = 0.99
MAX_LEVEL = 0.999999  # beyond ≈ 4.9 SD a limit is no longer a limit anyone can reach
MIN_LIMIT_GAP_SD = 0.5


class Limits(Strict):
    """Two-sided coverage of the alert (≈2 SD) and alarm (≈3 SD) limits."""

    alert: Number = Field(0.95, ge=MIN_ALERT_LEVEL, le=MAX_LEVEL)
    alarm: Number = Field(0.998, ge=MIN_ALARM_LEVEL, le=MAX_LEVEL)

    @model_validator(mode="after")
    def _alarm_beyond_alert(self) -> Limits:
        if self.alarm <= self.alert:
            raise ValueError(f"the alarm level {self.alarm} must be wider than the alert level {self.alert}")
        gap = critical_z(self.alarm) - critical_z(self.alert)
        if not math.isfinite(gap) or gap < MIN_LIMIT_GAP_SD:
            raise ValueError(
                f"the alarm level {self.alarm} is only {gap:.2f} SD beyond the alert level {self.alert}; at least "
                f"{MIN_LIMIT_GAP_SD} SD is needed, or nearly every alert would be an alarm (policy: 0.95 and 0.998)"
            )
        return self


class Deadlines(Strict):
    """Working days allowed at each stage of the alarm case process (docs/outlier-process.md §3 defaults)."""

    data_check: Days = 10
    provider_told: Days = 5
    provider_response: Days = 25
    review: Days = 30
    confirmation: Days = 5
    acknowledgement: Days = 10
    non_response: Days = 10


class Recipients(Strict):
    """Who is told, by role, in each space. The learning space can only name roles inside the trust.

    A space with nobody in it would decide and record a signal that no one is ever told of, so an empty
    list is refused, and so is a role named twice (a sign the list was edited carelessly).
    """

    learning: tuple[LearningRole, ...] = Field(("patient_safety_lead", "lead_clinician"), min_length=1)
    formal: tuple[TrustRole, ...] = Field(("lead_clinician", "medical_director"), min_length=1)
    good_practice: tuple[TrustRole, ...] = Field(("lead_clinician",), min_length=1)

    @field_validator("learning", "formal", "good_practice", mode="before")
    @classmethod
    def _a_list_of_roles(cls, value: object) -> object:
        if value is None:
            raise ValueError("names nobody; list at least one role")
        if isinstance(value, str):
            raise ValueError(f"must be a list of roles, e.g. [{value}], not a single string")
        return value

    @field_validator("learning", "formal", "good_practice")
    @classmethod
    def _each_role_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({r for r in value if value.count(r) > 1})
        if twice:
            raise ValueError(f"names {', '.join(twice)} more than once")
        return value


class Overdispersion(Strict):
    method: OdMethod | None = None
    trim: Trim | None = None
    trim_fraction: Number | None = Field(None, ge=0, lt=0.5)
    policy: OdPolicy = OdPolicy.PHI


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
    measure: Measure
    adverse: Adverse
    method: Method
    unit: str = ""
    min_volume: Number = Field(0, ge=0)
    target: Number | None = None
    limits: Limits = Limits()
    plausible: Plausible = Plausible()
    overdispersion: Overdispersion = Overdispersion()
    deadlines: Deadlines | None = None
    recipients: Recipients | None = None
    monitoring: Monitoring | None = None  # continuous risk-adjusted CUSUM on patient outcomes (rules/monitoring.py)


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
        + (f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden", "value_error") else "")
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
        data = load_yaml(path, "rule set")
    except ConfigFileError as exc:
        raise RuleSetError(str(exc)) from None
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
