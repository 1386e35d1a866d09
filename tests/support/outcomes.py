"""A synthetic stream of patient outcomes (NELA-like case mix, in event-date order) for the benchmark and the
fault tests: lines built with f-strings from numpy arrays, so generating them is not what is measured."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from services.core.organisations import organisations


def stream(
    outcomes: int, units: int, seed: int = 7, *, odds_ratio: float = 1.0, affected: float = 0.0
) -> tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray]:
    """``outcomes`` over ``units`` trusts; the first ``affected`` fraction of the units have their outcomes' odds
    multiplied by ``odds_ratio`` throughout (a deterioration, so the charts signal), the others are in control."""
    rng = np.random.default_rng(seed)
    codes = sorted(c for c, o in organisations().items() if o.closed is None and o.country == "ENG")[:units]
    unit = rng.integers(0, len(codes), outcomes)
    day = np.sort(rng.integers(0, 365, outcomes))
    risk = np.clip(rng.beta(0.18, 1.82, outcomes), 0.001, 0.95).round(4)
    odds = np.where(unit < affected * len(codes), odds_ratio, 1.0)
    y = (rng.random(outcomes) < odds * risk / (1 - risk + odds * risk)).astype(int)
    start = date(2024, 12, 1)
    lines = [
        (f'{{"kind":"patient_outcome","schema_version":1,"event_id":"B:{codes[u]}:E{i:07d}","audit":"NELA",'
         f'"indicator_id":"NELA-MORT30","organisation":{{"ods_code":"{codes[u]}","country":"ENG"}},'
         f'"episode_id":"E{i:07d}","event_date":"{start + timedelta(days=int(d))}","predicted_risk":{p},'
         f'"outcome":{o},"risk_model_version":"RM-1","published_at":"2026-01-01T00:00:00Z"}}').encode()
        for i, (u, d, p, o) in enumerate(zip(unit.tolist(), day.tolist(), risk.tolist(), y.tolist(), strict=True))
    ]  # fmt: skip
    return lines, unit, risk, y
