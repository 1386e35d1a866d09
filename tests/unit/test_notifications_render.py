"""Rendering letters: every template for every kind of organisation, escaping, strictness and separation."""

from __future__ import annotations

import re
import time
from html import unescape
from pathlib import Path
from typing import Any

import jinja2
import pytest

from notifications.recipients import Directory
from notifications.render import Renderer, RenderError, message_id_for, plot_alt, plot_cid, renderer_for, trusted_svg
from schemas.notices import AnyNotice
from schemas.signals import Assessment
from schemas.vocabulary import Space
from tests.support.samples import ALL_TEMPLATES, SAMPLE_PNG, sample_assessment, sample_notice

DIRECTORY = Directory.load(Path(__file__).parents[1] / "data" / "recipients.yaml")
REGULATOR_WORDS = ("CQC", "Care Quality Commission", "NHS England", "Welsh Government", "HIW", "Inspectorate")


def _welsh(**kw: Any) -> Assessment:
    return sample_assessment(
        ods_code="7A1", organisation_name="Betsi Cadwaladr University Local Health Board", country="WLS", **kw
    )


# (fixture name, template) -> assessment; None means the sample's own default for the template.
def _fixture(kind: str, template: str) -> Assessment | None:
    favourable = template == "favourable_notice"
    band = "alarm" if template not in ("learning_alert", "cusum_signal", "favourable_notice") else "alert"
    side = "favourable" if favourable else "adverse"
    if kind == "english":
        return None
    if kind == "welsh":
        return _welsh(band=band, side=side, value=0.03 if favourable else 0.16, z=-2.5 if favourable else 3.4)
    if kind == "zero_events":  # O = 0: no deaths at all (favourable), or no patients meeting a standard (adverse)
        if favourable:
            return sample_assessment(band="alarm", side="favourable", value=0.0, volume=61, z=-3.3)
        return sample_assessment(band=band, side="adverse", value=0.0, volume=61, z=-3.4)
    if kind == "ratio_zero":  # observed/expected with O = 0, lower limits undefined
        return sample_assessment(
            band="alert", side="favourable", value=0.0, volume=5.2, z=-2.1, measure="standardised_ratio"
        )
    raise AssertionError(kind)


FIXTURES = ("english", "welsh", "zero_events")


def _render(notice: AnyNotice, role: str | None = None, org_name: str | None = None) -> tuple[str, str, str]:
    recipient = notice.recipients[0] if role is None else next(r for r in notice.recipients if r.role == role)
    resolved = DIRECTORY.recipient(recipient.ods_code, recipient.role, audit=notice.assessment.audit)
    message = renderer_for(notice.space).render(
        notice,
        resolved,
        organisation_name=org_name or notice.assessment.organisation_name,
        funnel_png=SAMPLE_PNG,
        contact=DIRECTORY.reply_contact(notice.assessment.audit),
    )
    return message.subject, message.text, message.html


@pytest.mark.parametrize("kind", FIXTURES)
@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_every_template_states_who_what_numbers_and_deadline(template: str, kind: str) -> None:
    notice = sample_notice(template, _fixture(kind, template))
    a = notice.assessment
    assert a.value is not None and a.z_adjusted is not None
    for recipient in notice.recipients:
        subject, text, html = _render(notice, recipient.role)
        for body in (text, html):
            assert a.organisation_name in body
            assert a.ods_code in body
            assert a.indicator_name in body
            assert a.period.label in body
            assert f"{a.value * 100:.1f}%" in body  # the value, on the indicator's scale
            assert a.target is not None and f"{a.target * 100:.1f}%" in body  # the national figure
            assert f"{a.z_adjusted:.2f}" in body
            assert "412 cases" in body or f"{int(a.volume)} cases" in body
            assert "Alert limits (95%)" in body and "Alarm limits (99.8%)" in body
            assert "6.1% to 11.8%" in body and "4.7% to 13.6%" in body
            assert a.method in body and a.od_method in body
            assert "1.734" in body and "0.0123" in body  # phi and tau²
            if template != "case_outcome":  # an outcome asks nothing more of the trust
                assert "Monday 7 April 2025" in body  # respond_by
            assert notice.notice_id in body
        assert a.ods_code in subject
        assert ("Your result" in text) == (recipient.ods_code == a.ods_code)  # a regulator reads the trust's
        # The plot is a PNG by cid (no inline SVG: mail clients drop it), with the finding in words as alt text.
        assert "<svg" not in html
        cid = plot_cid(notice.notice_id)
        assert f'src="cid:{cid}"' in html and f'alt="{plot_alt(a)}"' in html
        assert plot_alt(a).startswith(f"{a.ods_code}: ") and "limit" in plot_alt(a)
        assert "funnel plot" in text.lower() and plot_alt(a) in text


@pytest.mark.parametrize("kind", FIXTURES)
@pytest.mark.parametrize("template", ["learning_alert", "cusum_signal"])
def test_learning_space_letters_never_mention_a_regulator_by_name(template: str, kind: str) -> None:
    notice = sample_notice(template, _fixture(kind, template) if kind != "zero_events" else None)
    for recipient in notice.recipients:
        for part in _render(notice, recipient.role):
            for word in REGULATOR_WORDS:
                assert word not in part, f"{word!r} appears in a learning-space letter"


@pytest.mark.parametrize("kind", FIXTURES)
def test_good_practice_letters_never_mention_a_regulator(kind: str) -> None:
    for part in _render(sample_notice("favourable_notice", _fixture(kind, "favourable_notice"))):
        for word in (*REGULATOR_WORDS, "regulator"):
            assert word not in part


def test_learning_alert_is_supportive_and_says_it_is_not_shared_and_not_a_sanction() -> None:
    _, text, html = _render(sample_notice("learning_alert"))
    for body in (text, html):
        assert "not shared with regulators" in body
        assert "no sanction" in body
        assert "local learning" in body
        for ask in ("Data quality", "Case mix", "Pathway review"):
            assert ask in body


def test_potential_alarm_is_confidential_asks_for_errors_or_explanation_and_copies_the_md() -> None:
    subject, text, _ = _render(sample_notice("potential_alarm"), "lead_clinician")
    assert subject.startswith("CONFIDENTIAL")
    assert "data errors" in text and "justifiable explanation" in text
    assert "by Monday 7 April 2025" in text
    assert "Copied to: medical director" in text
    assert "nothing has been shared with NHS England and the Care Quality Commission" in text


def test_alarm_confirmation_asks_the_ceo_to_acknowledge_and_start_a_local_review() -> None:
    _, text, _ = _render(sample_notice("alarm_confirmation"), "chief_executive")
    assert "acknowledge this letter in writing" in text
    assert "local review" in text
    assert "By Monday 7 April 2025" in text
    assert "Copied to: lead clinician for the audit, medical director" in text


def test_welsh_formal_letters_name_the_welsh_regulators_not_the_english_ones() -> None:
    notice = sample_notice("regulator_notice", _welsh(band="alarm", value=0.17, z=3.5))
    assert {r.role for r in notice.recipients} == {"welsh_government", "hiw"}
    _, text, _ = _render(notice)
    assert "Healthcare Inspectorate Wales" in text and "Wales" in text
    assert "CQC" not in text and "NHS England" not in text


def test_regulator_notice_states_the_process_followed() -> None:
    _, text, _ = _render(sample_notice("regulator_notice"))
    assert "Monday 6 January 2025" in text  # potential alarm notified
    assert "Monday 10 February 2025" in text  # trust responded
    assert "Friday 28 February 2025" in text  # confirmed


@pytest.mark.parametrize(
    ("stage", "owed"),
    [("provider_response", "written response"), ("acknowledgement", "chief executive's acknowledgement")],
)
def test_reminder_says_what_is_owed_at_its_stage(stage: str, owed: str) -> None:
    notice = sample_notice("reminder", facts={"stage": stage, "notified_on": "2025-01-06"})
    subject, text, _ = _render(notice)
    assert owed in text
    assert "Monday 6 January 2025" in text and "by Monday 7 April 2025" in text
    assert "Monday 7 April 2025" in subject


def test_reminder_with_an_unknown_stage_is_refused() -> None:
    with pytest.raises(RenderError, match="stage"):
        _render(sample_notice("reminder", facts={"stage": "publication", "notified_on": "2025-01-06"}))


def test_non_compliance_tells_regulators_the_trust_did_not_acknowledge() -> None:
    _, text, _ = _render(sample_notice("non_compliance"))
    assert "has not acknowledged" in text
    assert "Monday 17 March 2025" in text  # the reminder


def test_ratio_with_zero_observed_and_no_lower_limit_renders() -> None:
    a = sample_assessment(band="alert", side="favourable", value=0.0, volume=5.2, z=-2.1, measure="standardised_ratio")
    a = a.model_copy(update={"limits": a.limits.model_copy(update={"alert_lower": None, "alarm_lower": None})})
    _, text, _ = _render(sample_notice("favourable_notice", a))
    assert "0.00 (observed/expected ratio), from 5.2 expected events" in text
    assert "not defined to 0.12" in text


def test_a_malicious_organisation_name_is_escaped_in_html() -> None:
    evil = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    for template in ALL_TEMPLATES:
        _, text, html = _render(sample_notice(template), org_name=evil)
        assert "<script>" not in html and "<img src=x" not in html
        assert "&lt;script&gt;" in html and "&amp;" in html
        assert evil in text  # plain text is not HTML: shown as written


def test_subject_is_one_line_even_if_the_name_has_newlines() -> None:
    subject, _, _ = _render(sample_notice("potential_alarm"), org_name="Evil\r\nBcc: everyone@example.com")
    assert "\n" not in subject and "\r" not in subject


def test_a_plot_that_is_not_a_png_is_refused() -> None:
    notice = sample_notice("learning_alert")
    resolved = DIRECTORY.recipient("RXF", "patient_safety_lead")
    for bad in (b'<svg onload="alert(1)"></svg>', b"GIF89a", b""):
        with pytest.raises(RenderError, match="PNG"):
            renderer_for("learning").render(
                notice, resolved, organisation_name="x", funnel_png=bad, contact=DIRECTORY.sender
            )


def test_an_svg_with_script_is_refused_for_a_page() -> None:
    for bad in ('<svg onload="alert(1)"></svg>', "<svg><script>alert(1)</script></svg>", "<div>not svg</div>"):
        with pytest.raises(RenderError):
            trusted_svg(bad)


def test_a_letter_without_a_plot_says_so() -> None:
    notice = sample_notice("potential_alarm")
    resolved = DIRECTORY.recipient("RXF", "lead_clinician", audit="nela")
    message = renderer_for("formal").render(
        notice, resolved, organisation_name="x", funnel_png=None, contact=DIRECTORY.sender
    )
    assert message.images == () and "cid:" not in message.html
    assert "could not be drawn" in message.text and "could not be drawn" in message.html


def test_an_undefined_variable_is_an_error_not_a_blank(tmp_path: Path) -> None:
    (tmp_path / "learning").mkdir()
    (tmp_path / "learning" / "learning_alert.txt.j2").write_text(
        "{% block subject %}s{% endblock %}{{ no_such_thing }}"
    )
    (tmp_path / "learning" / "learning_alert.html.j2").write_text("<p>{{ org.name }}</p>")
    renderer = Renderer(Space.LEARNING, root=tmp_path)
    with pytest.raises(RenderError, match="no_such_thing"):
        renderer.render(
            sample_notice("learning_alert"),
            DIRECTORY.recipient("RXF", "patient_safety_lead"),
            organisation_name="x",
            funnel_png=SAMPLE_PNG,
            contact=DIRECTORY.sender,
        )


def test_a_missing_fact_is_named() -> None:
    with pytest.raises(RenderError, match="confirmed_on"):
        _render(sample_notice("regulator_notice", facts={"potential_notified_on": "2025-01-06"}))


def test_the_learning_renderer_cannot_render_or_even_find_formal_templates() -> None:
    learning = renderer_for("learning")
    formal_notice = sample_notice("potential_alarm")
    with pytest.raises(RenderError, match="does not render formal"):
        learning.render(
            formal_notice,
            DIRECTORY.recipient("RXF", "lead_clinician"),
            organisation_name="x",
            funnel_png=SAMPLE_PNG,
            contact=DIRECTORY.sender,
        )
    for name in ("potential_alarm.txt.j2", "../formal/potential_alarm.txt.j2", "formal/potential_alarm.txt.j2"):
        with pytest.raises(jinja2.TemplateNotFound):
            learning.env.get_template(name)
    assert learning.templates == {"learning_alert", "cusum_signal"}


def test_the_formal_renderer_cannot_render_or_even_find_learning_templates() -> None:
    formal = renderer_for("formal")
    with pytest.raises(RenderError, match="does not render learning"):
        formal.render(
            sample_notice("learning_alert"),
            DIRECTORY.recipient("RXF", "patient_safety_lead"),
            organisation_name="x",
            funnel_png=SAMPLE_PNG,
            contact=DIRECTORY.sender,
        )
    for name in ("learning_alert.txt.j2", "../learning/learning_alert.html.j2"):
        with pytest.raises(jinja2.TemplateNotFound):
            formal.env.get_template(name)
    assert "learning_alert" not in formal.templates and "cusum_signal" not in formal.templates


def test_a_recipient_not_on_the_notice_is_refused() -> None:
    with pytest.raises(RenderError, match="not a recipient"):
        renderer_for("formal").render(
            sample_notice("potential_alarm"),
            DIRECTORY.recipient(None, "cqc"),
            organisation_name="x",
            funnel_png=SAMPLE_PNG,
            contact=DIRECTORY.sender,
        )


def test_message_id_is_deterministic_per_notice_and_recipient() -> None:
    notice = sample_notice("potential_alarm")
    first = renderer_for("formal").render(
        notice,
        DIRECTORY.recipient("RXF", "lead_clinician"),
        organisation_name="x",
        funnel_png=SAMPLE_PNG,
        contact=DIRECTORY.sender,
    )
    again = renderer_for("formal").render(
        notice,
        DIRECTORY.recipient("RXF", "lead_clinician"),
        organisation_name="x",
        funnel_png=SAMPLE_PNG,
        contact=DIRECTORY.sender,
    )
    md = renderer_for("formal").render(
        notice,
        DIRECTORY.recipient("RXF", "medical_director"),
        organisation_name="x",
        funnel_png=SAMPLE_PNG,
        contact=DIRECTORY.sender,
    )
    assert first == again
    assert first.message_id != md.message_id
    assert re.fullmatch(rf"<{notice.notice_id}\.[0-9a-f]{{16}}@signalbox\.local>", first.message_id)
    assert first.message_id == message_id_for(notice.notice_id, "lead@rxf.example.nhs.uk")
    assert first.headers["Message-ID"] == first.message_id
    assert first.headers["Date"] == "Mon, 03 Mar 2025 09:30:00 +0000"


def test_render_rate_is_at_least_two_thousand_a_second() -> None:
    notices = [sample_notice(t) for t in ALL_TEMPLATES]
    jobs = []
    for notice in notices:
        r = notice.recipients[0]
        jobs.append((notice, DIRECTORY.recipient(r.ods_code, r.role, audit="nela")))
    contact = DIRECTORY.reply_contact("nela")

    def batch(size: int) -> float:
        n = 0
        start = time.process_time()  # CPU time: other processes on a busy machine do not count against us
        while n < size:
            for notice, resolved in jobs:
                renderer_for(notice.space).render(
                    notice,
                    resolved,
                    organisation_name=notice.assessment.organisation_name,
                    funnel_png=SAMPLE_PNG,
                    contact=contact,
                )
                n += 1
        return n / (time.process_time() - start)

    rate = max(batch(1_000) for _ in range(3))  # best of three: the capability, not the noise
    print(f"render rate: {rate:,.0f} letters/s")
    assert rate >= 2_000


def test_module_level_render_uses_the_notices_own_space() -> None:
    from notifications.render import render

    notice = sample_notice("cusum_signal")
    message = render(
        notice,
        DIRECTORY.recipient("RXF", "lead_clinician", audit="nela"),
        organisation_name="Mid Yorkshire Teaching NHS Trust",
        funnel_png=SAMPLE_PNG,
        contact=DIRECTORY.sender,
    )
    assert message.headers["X-Signalbox-Space"] == "learning"
    assert "CUSUM" in message.text and "4.5" in message.text and "Thursday 27 February 2025" in message.text


def test_letters_name_the_audit_in_full_and_are_signed_by_its_clinical_lead() -> None:
    notice = sample_notice("regulator_notice")
    resolved = DIRECTORY.recipient(None, "nhs_england")
    lead = DIRECTORY.resolve(None, "audit_clinical_lead", audit="nela")
    message = renderer_for("formal").render(
        notice, resolved, organisation_name="Mid Yorkshire Teaching NHS Trust", funnel_png=None,
        contact=DIRECTORY.sender, audit_name=DIRECTORY.audit_name("nela"), signatory=lead,
    )  # fmt: skip
    for body in (message.text, unescape(message.html)):
        assert "The National Emergency Laparotomy Audit has confirmed" in body and "The NELA" not in body
        assert lead.name in body and "Clinical lead, National Emergency Laparotomy Audit" in body
        assert "Your result" not in body and "Mid Yorkshire Teaching NHS Trust's result" in body


def test_a_learning_letter_addresses_each_reader_by_role_and_promises_no_secrecy_it_cannot_keep() -> None:
    notice = sample_notice("learning_alert")
    for role, other in (("patient_safety_lead", "lead clinician"), ("lead_clinician", "patient-safety lead")):
        _, text, page = _render(notice, role)
        for body in (text, unescape(page)):
            assert f"confidential to you and the trust's {other}" in body
            assert "not published" not in body and "signalbox sends it to no regulator" in body


TECHNICAL = ("z-score", "Method", "Overdispersion", "1.734", "0.0123", "Spiegelhalter")


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_plain_english_first_and_the_technical_details_in_an_appendix_at_the_end(template: str) -> None:
    notice = sample_notice(template)
    a = notice.assessment
    assert a.z_adjusted is not None
    for recipient in notice.recipients:
        _subject, text, html = _render(notice, recipient.role)
        for body, heading in ((text, "APPENDIX: TECHNICAL DETAILS"), (unescape(html), "Appendix: technical details")):
            assert body.count(heading) == 1, (template, recipient.role)
            letter, appendix = body.split(heading)
            assert notice.notice_id in letter  # the appendix follows the whole letter, reference and all
            for word in TECHNICAL:
                assert word not in letter, (template, recipient.role, word)
                assert word in appendix, (template, recipient.role, word)
            assert f"{a.z_adjusted:.2f}" not in letter and f"{a.z_adjusted:.2f}" in appendix
            assert "φ" not in letter and "τ²" not in letter
