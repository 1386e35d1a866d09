"""Red team: input text in a letter's subject line.

The period label (and the indicator and organisation names beside it) reach every letter's subject. Header
injection was already impossible (the subject is one line, and the mail library encodes it), but control and
invisible formatting characters went through as they were: a right-to-left override reversed what the reader
saw of the subject, ESC and NUL reached mail clients and terminals. A subject is now one line of printable text.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.recipients import Contact, ResolvedRecipient
from notifications.render import render
from schemas.events import Period
from tests.support.samples import ALL_TEMPLATES, SAMPLE_PNG, sample_notice

HOSTILE = ["\u202e", "\u2066", "\u200b", "\x1b[31m", "\x00", "\r\nBcc: x@cqc.org.uk", "\u2028", "\x85", "\ufeff"]
CONTACT = Contact(name="NELA team", email="nela@example.nhs.uk")


def _subject(template: str, label: str) -> str:
    notice = sample_notice(template)
    period = Period(start=date(2023, 12, 1), end=date(2024, 11, 30), label=label)
    notice = notice.model_copy(update={"assessment": notice.assessment.model_copy(update={"period": period})})
    role = notice.recipients[0].role
    recipient = ResolvedRecipient(role=role, ods_code=notice.ods_code, contact=CONTACT)
    rendered = render(notice, recipient, organisation_name="Mid Yorkshire", funnel_png=SAMPLE_PNG, contact=CONTACT)
    return rendered.subject


@pytest.mark.parametrize("piece", HOSTILE)
@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_a_subject_is_one_line_of_printable_text(template: str, piece: str) -> None:
    subject = _subject(template, f"Year{piece}11")
    assert subject.isprintable() and "\n" not in subject


NAMES_THE_PERIOD = [t for t in ALL_TEMPLATES if t not in ("reminder", "cusum_signal")]


@settings(max_examples=300, deadline=None)
@given(label=st.text(min_size=1, max_size=80), template=st.sampled_from(NAMES_THE_PERIOD))
def test_any_label_gives_a_printable_subject_that_keeps_its_printable_words(label: str, template: str) -> None:
    subject = _subject(template, label)
    assert subject.isprintable()
    assert all(word in subject for word in "".join(c if c.isprintable() else " " for c in label).split())
