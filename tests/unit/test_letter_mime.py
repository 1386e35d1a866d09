"""Every letter kind, sent through the real relay to ``.eml`` files, parses with the ``email`` package as a
letter NHSmail / Outlook / Gmail can show: ``multipart/related`` at the top, its root the text/HTML
``multipart/alternative`` and beside it the funnel plot as a PNG referenced by ``cid:``, alt text stating the
finding, replies to the audit team, an automatic letter, the Message-ID in the sender's domain,
and the other recipients shown as ``Cc:``."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, MIMEPart
from pathlib import Path

import numpy as np
import pytest

from notifications.channels.eml import EmlTransport
from notifications.plot import LETTER_WIDTH_PX, PNG_SCALE, funnel_view, render_funnel_png
from notifications.recipients import Directory
from notifications.render import PNG_SIGNATURE, plot_alt, plot_cid, renderer_for
from rules.stats import FunnelSpec, assess_ratios
from schemas.vocabulary import Measure, Method
from services.db import Database
from services.letters import outbox
from services.letters.relay import deliver_due
from tests.support.samples import ALL_TEMPLATES, sample_notice
from tests.support.vouched import enqueue_vouched

DIRECTORY = Directory.load(Path(__file__).parents[1] / "data" / "recipients.yaml")
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
OBSERVED = np.array([100.0, 150, 180, 80, 120, 225, 3, 0, 40, 61, 12])
EXPECTED = np.array([108.0, 112, 165, 95, 100, 220, 2.5, 0.6, 35.2, 60, 20.3])
LABELS = ["RXF", "RAE", "RCF", "RWY", "RXL", "RR8", "RJL", "RP5", "RFF", "RHQ", "RCU"]
PLOT = render_funnel_png(
    funnel_view(
        assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC), OBSERVED, EXPECTED),
        LABELS, audience="trust", addressee="RXF",
    ),
    title="30-day mortality after emergency laparotomy, Dec 2023 to Nov 2024",
)  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with Database(tmp_path / "letters.sqlite") as database:
        outbox.ensure_schema(database)
        yield database


def _sent(db: Database, template: str, mail: Path) -> list[EmailMessage]:
    notice = sample_notice(template)
    enqueue_vouched(db, notice, DIRECTORY, now=NOW)
    report = asyncio.run(
        deliver_due(
            db, DIRECTORY, renderer_for, {"email": EmlTransport(mail), "webhook": EmlTransport(mail / "hooks")},
            plot_for=lambda _n: PLOT, clock=lambda: NOW, rng=random.Random(1),
        )
    )  # fmt: skip
    assert report.dead == report.held == 0, (template, report)
    letters = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(mail.glob("*.eml"))]
    assert letters and report.sent >= len(letters), template
    return [m for m in letters if isinstance(m, EmailMessage)]


def test_the_letter_plot_is_a_png_at_twice_the_width_it_is_shown_at() -> None:
    assert PLOT.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(PLOT[16:20], "big"), int.from_bytes(PLOT[20:24], "big")
    assert width == LETTER_WIDTH_PX * PNG_SCALE and 0.5 < height / width < 1.0


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_every_letter_kind_parses_as_related_html_with_a_png_plot(db: Database, tmp_path: Path, template: str) -> None:
    notice = sample_notice(template)
    letters = _sent(db, template, tmp_path / "mail")
    team = DIRECTORY.reply_contact(notice.assessment.audit)
    sender_domain = (DIRECTORY.sender.email or "").rsplit("@", 1)[1]
    for letter in letters:
        # related { alternative { text/plain, text/html }, image/png }: the root named by start and type.
        assert letter.get_content_type() == "multipart/related", template
        alternative, image = _parts(letter)
        assert letter.get_param("type") == "multipart/alternative" == alternative.get_content_type()
        assert letter.get_param("start") == alternative["Content-ID"] and alternative["Content-ID"].startswith("<")
        text_part, html_part = _parts(alternative)
        assert text_part.get_content_type() == "text/plain"
        assert html_part.get_content_type() == "text/html"
        assert image.get_content_type() == "image/png" and image.get_content_disposition() == "inline"
        assert image.get_payload(decode=True) == PLOT
        cid = image["Content-ID"].strip("<>")
        assert cid == plot_cid(notice.notice_id)
        html = html_part.get_content()
        img = re.search(r'<img src="cid:([^"]+)" alt="([^"]+)"', html)
        assert img is not None and img.group(1) == cid, template
        alt = plot_alt(notice.assessment)
        assert img.group(2) == alt.replace("&", "&amp;") and notice.ods_code in alt
        assert "<svg" not in html
        assert alt in text_part.get_content()
        # Replies go to the audit team, not the service's own sender; an automatic letter; our own domain.
        assert letter["Reply-To"].addresses[0].addr_spec == team.email
        assert letter["From"].addresses[0].addr_spec == DIRECTORY.sender.email
        assert letter["Auto-Submitted"] == "auto-generated"
        assert letter["Message-ID"].endswith(f"@{sender_domain}>")
        # Each recipient gets its own letter; the others the policy copies in are named in Cc, never itself.
        to = letter["To"].addresses[0].addr_spec
        cc = {a.addr_spec for a in letter["Cc"].addresses} if letter["Cc"] else set()
        assert to not in cc
        if len({r.role for r in notice.recipients}) > 1:
            assert cc, (template, to)


def test_a_copied_regulator_never_appears_on_a_trust_letter(db: Database, tmp_path: Path) -> None:
    regulators = {"outliers@england.example.nhs.uk", "outliers@cqc.example.nhs.uk"}
    for template in ("learning_alert", "potential_alarm", "favourable_notice"):
        for letter in _sent(db, template, tmp_path / template):
            shown = {a.addr_spec for h in ("To", "Cc") if letter[h] for a in letter[h].addresses}
            assert not shown & regulators, template


def test_the_same_letter_is_the_same_bytes(db: Database, tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in _mail(db, tmp_path / "one")}
    with Database(tmp_path / "again.sqlite") as again:
        outbox.ensure_schema(again)
        second = {p.name: p.read_bytes() for p in _mail(again, tmp_path / "two")}
    assert first == second and first


def _parts(message: EmailMessage | MIMEPart) -> list[MIMEPart]:
    return list(message.iter_parts())


def _mail(db: Database, mail: Path) -> list[Path]:
    _sent(db, "potential_alarm", mail)
    return sorted(mail.glob("*.eml"))
