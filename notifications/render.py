"""Turn a notice into a letter: subject, plain text, HTML and the headers that make a retry the same letter.

Each space has its own jinja2 environment that loads only that space's template directory, so the formal
renderer cannot find a protected (learning-space) template, and the learning renderer cannot find a formal
one. ``StrictUndefined`` makes a missing fact an error instead of a blank in a letter; HTML is autoescaped.

The Message-ID is derived from the notice id and the recipient's address, never from the clock, so a letter
sent twice after a crash carries the same Message-ID and the recipient's mail system can drop the copy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import format_datetime
from functools import cache, lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import jinja2
from markupsafe import Markup

from notifications.recipients import ROLE_LABELS, Contact, ResolvedRecipient
from schemas.notices import AnyNotice
from schemas.signals import REGULATOR_ROLES, Assessment
from schemas.vocabulary import Band, Space

TEMPLATE_ROOT = Path(__file__).parent / "templates"
SPACES: tuple[Space, ...] = tuple(Space)
MESSAGE_ID_DOMAIN = "signalbox.local"

# Facts a template states that the notice's own fields do not carry. Checked before rendering so the
# error names the notice and the fact rather than surfacing as a jinja2 traceback.
REQUIRED_FACTS: dict[str, tuple[str, ...]] = {
    "regulator_notice": ("potential_notified_on", "confirmed_on"),
    "reminder": ("stage", "notified_on"),
    "non_compliance": ("confirmed_on", "reminder_sent_on"),
    "case_outcome": ("outcome", "reason", "closed_on"),
}
NEEDS_RESPOND_BY = frozenset(
    {"learning_alert", "potential_alarm", "alarm_confirmation", "regulator_notice", "reminder", "non_compliance"}
)
# Trust-owed stages have their own wording; the audit's own overdue steps share one.
AUDIT_STAGES = frozenset({"data_check", "provider_told", "review", "confirmation"})
REMINDER_STAGES = frozenset({"provider_response", "acknowledgement"}) | AUDIT_STAGES

REGULATORS_BY_COUNTRY: dict[str, str] = {
    "ENG": "NHS England and the Care Quality Commission (CQC)",
    "WLS": "the Welsh Government and Healthcare Inspectorate Wales (HIW)",
}
COUNTRY_NAMES = {"ENG": "England", "WLS": "Wales", "SCO": "Scotland", "NIR": "Northern Ireland"}


class RenderError(ValueError):
    """A notice cannot be rendered as asked: wrong space, unknown template, or a missing fact."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class InlineImage:
    """An image the HTML part shows by ``cid:`` reference (mail clients show no inline SVG and block remote
    images): sent beside the HTML in ``multipart/related``."""

    cid: str  # without angle brackets
    data: bytes
    alt: str
    subtype: str = "png"


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    text: str
    html: str
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)
    images: tuple[InlineImage, ...] = ()


def plot_audience(notice: AnyNotice) -> Literal["trust", "regulator"]:
    """Whose funnel plot a notice's letter embeds (see ``notifications.plot``).

    A notice any regulator receives gets the regulator's plot (the addressee's point and the limits only);
    every other letter goes to the trust itself or the audit, and shows the others neutrally.
    """
    return "regulator" if any(r.role in REGULATOR_ROLES for r in notice.recipients) else "trust"


def plot_cid(notice_id: str) -> str:
    """The Content-ID of a notice's funnel plot: from the notice id, so a retry is the same letter."""
    return f"funnel.{hashlib.sha256(notice_id.encode()).hexdigest()[:16]}@{MESSAGE_ID_DOMAIN}"


def plot_alt(a: Assessment) -> str:
    """The finding in words, for the plot's alt text (what a screen reader or a client blocking images shows):
    "RNQ: 1.67, above the 95% limit of 1.58 for 19.2 expected events"."""
    m = a.measure
    value = _on_scale(a.value, m)
    volume = _volume(a.volume, m)
    if a.band == Band.INSUFFICIENT_DATA or a.value is None:
        return f"{a.ods_code}: {value} for {volume}, too few to judge against the limits"
    high = a.target is None or a.value >= a.target
    lim = a.limits
    if a.band == Band.ALARM:
        level, limit = "99.8%", lim.alarm_upper if high else lim.alarm_lower
    elif a.band == Band.ALERT:
        level, limit = "95%", lim.alert_upper if high else lim.alert_lower
    if a.band in (Band.ALARM, Band.ALERT):
        where = "above" if high else "below"
        return f"{a.ods_code}: {value}, {where} the {level} limit of {_on_scale(limit, m)} for {volume}"
    return (
        f"{a.ods_code}: {value}, inside the 95% limits of {_limits(lim.alert_lower, lim.alert_upper, m)} for {volume}"
    )


def message_id_for(notice_id: str, address: str) -> str:
    """``<{notice_id}.{sha256(address)[:16]}@signalbox.local>``: one letter per notice and recipient."""
    digest = hashlib.sha256(address.strip().lower().encode()).hexdigest()[:16]
    return f"<{notice_id}.{digest}@{MESSAGE_ID_DOMAIN}>"


# Template variables are attribute namespaces, not dicts: jinja2 tries getattr first, and a failed getattr
# on a dict (an exception per lookup) was the dearest part of a render.

# -- filters: numbers and dates are formatted here once, so every template states them the same way --------


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("", "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip


def _long_date(value: date | datetime | str | None) -> str:
    """ "Monday 7 April 2025": unambiguous, and independent of the process locale."""
    if value is None:
        return "not recorded"
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    return f"{_DAYS[value.weekday()]} {value.day} {_MONTHS[value.month]} {value.year}"


def _num(value: float | None, places: int = 2) -> str:
    if value is None:
        return "not defined"
    return f"{value:.{places}f}"


def _on_scale(value: float | None, measure: str) -> str:
    """A value on the indicator's own scale: proportions as percentages."""
    if value is None:
        return "not defined"
    if measure == "proportion":
        return f"{value * 100:.1f}%"
    return f"{value:.2f}"


def _limits(lower: float | None, upper: float | None, measure: str) -> str:
    return f"{_on_scale(lower, measure)} to {_on_scale(upper, measure)}"


def _volume(value: float, measure: str) -> str:
    if measure == "standardised_ratio":
        return f"{value:.1f} expected events"
    if float(value).is_integer():
        return f"{int(value):,} cases"
    return f"{value:,.1f} cases"


_MEASURES = {"proportion": "proportion", "standardised_ratio": "observed/expected ratio", "mean": "mean"}


def _numbers(a: Assessment, reanalysed: float | None = None) -> SimpleNamespace:
    """The figures a letter states. A value re-analysed from the trust's corrected data (recorded at review)
    replaces the original, which is still stated beside it."""
    m = a.measure
    original = a.value
    if reanalysed is not None:
        a = a.model_copy(update={"value": float(reanalysed)})
    z = a.z_adjusted if a.z_adjusted is not None else a.z
    relation = "at"
    if a.value is not None and a.target is not None and a.value != a.target:
        relation = "above" if a.value > a.target else "below"
    return SimpleNamespace(
        value=_on_scale(a.value, m),
        volume=_volume(a.volume, m),
        target=_on_scale(a.target, m),
        z=_num(z),
        z_unadjusted=_num(a.z),
        alert_limits=_limits(a.limits.alert_lower, a.limits.alert_upper, m),
        alarm_limits=_limits(a.limits.alarm_lower, a.limits.alarm_upper, m),
        phi=_num(a.phi, 3),
        tau2=_num(a.tau2, 4),
        od_method=a.od_method,
        od_applied=a.od_applied,
        relation=relation,
        level="99.8% (alarm)" if a.band == "alarm" else "95% (alert)",
        measure=_MEASURES[m],
        reanalysed=reanalysed is not None,
        original_value=_on_scale(original, m),
    )


_SVG_START = re.compile(r"^\s*(<\?xml[^>]*>\s*)?<svg[\s>]", re.IGNORECASE)
_SVG_HANDLER = re.compile(r"\son[a-z]+\s*=")


@lru_cache(maxsize=1024)
def trusted_svg(svg: str) -> Markup:
    """The funnel plot comes from our own plotting code; refuse anything that is not a plain SVG image.

    Cached: a notice's plot is embedded once per recipient, and the check is the dearest part of a render.
    """
    if not _SVG_START.match(svg):
        raise RenderError("a funnel plot SVG must be an <svg> document")
    lowered = svg.lower()
    if "<script" in lowered or "<foreignobject" in lowered or "javascript:" in lowered or _SVG_HANDLER.search(lowered):
        raise RenderError("funnel_svg contains script or event handlers; refusing to embed it")
    return Markup(svg)


def _one_line(text: str) -> str:
    """A subject: one line of printable text. Input text (a period label, a release id) can carry control and
    invisible formatting characters (a right-to-left override that reorders what the reader sees, ESC, NUL);
    they become spaces, as in the plot's title (``notifications.plot.printable``)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


class Renderer:
    """Renders the notices of one space, from that space's template directory only."""

    def __init__(self, space: Space, root: Path = TEMPLATE_ROOT) -> None:
        if space not in SPACES:
            raise RenderError(f"unknown space {space!r}")
        self.space = space
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(root / space),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.env.filters.update(long_date=_long_date, num=_num)
        self.env.globals["AUDIT_STAGES"] = AUDIT_STAGES
        self._templates: dict[str, tuple[jinja2.Template, jinja2.Template]] = {}
        for path in sorted((root / space).glob("*.txt.j2")):
            name = path.name.removesuffix(".txt.j2")
            if name == "base" or name.startswith("_"):
                continue
            self._templates[name] = (
                self.env.get_template(f"{name}.txt.j2"),
                self.env.get_template(f"{name}.html.j2"),
            )

    @property
    def templates(self) -> frozenset[str]:
        return frozenset(self._templates)

    def render(
        self,
        notice: AnyNotice,
        recipient: ResolvedRecipient,
        *,
        organisation_name: str,
        funnel_png: bytes | None,
        contact: Contact,
        audit_name: str | None = None,
        signatory: Contact | None = None,
    ) -> RenderedMessage:
        """Render ``notice`` for one of its recipients. ``contact`` is who the reader should reply to;
        ``audit_name`` the audit's full name and ``signatory`` who signs (its clinical lead), from the directory;
        ``funnel_png`` the release's plot as this notice's readers may see it (None: the letter says so)."""
        if notice.space != self.space:
            raise RenderError(f"the {self.space} renderer does not render {notice.space} notices ({notice.notice_id})")
        pair = self._templates.get(notice.template)
        if pair is None:
            raise RenderError(f"no {notice.template!r} template in the {self.space} space")
        roles = [r.role for r in notice.recipients]
        if recipient.role not in roles:
            raise RenderError(f"{recipient.role} is not a recipient of notice {notice.notice_id}")
        self._check_facts(notice)
        text_t, html_t = pair
        a = notice.assessment
        plot = None
        if funnel_png is not None:
            if not funnel_png.startswith(PNG_SIGNATURE):
                raise RenderError("the funnel plot must be a PNG image")
            plot = InlineImage(cid=plot_cid(notice.notice_id), data=funnel_png, alt=plot_alt(a))
        context: dict[str, Any] = {
            "notice": notice,
            "facts": notice.facts,
            "a": a,
            "audit_name": str(notice.facts.get("audit_name") or audit_name or a.audit.upper()),
            "signatory": signatory,
            # A reader at the trust reads about their own result; a regulator or the audit about the trust's.
            "result_label": "Your result" if recipient.ods_code == notice.ods_code else f"{organisation_name}'s result",
            "n": _numbers(a, notice.facts.get("reanalysed_value")),
            "org": SimpleNamespace(name=organisation_name, ods_code=notice.ods_code, country=a.country),
            "country_name": COUNTRY_NAMES.get(a.country, a.country),
            "period": f"{a.period.label} ({_long_date(a.period.start)} to {_long_date(a.period.end)})",
            "recipient": recipient,
            "copied": [ROLE_LABELS.get(role, role) for role in roles if role != recipient.role],
            "respond_by": _long_date(notice.respond_by) if notice.respond_by else None,
            "contact": contact,
            "plot": plot,
            "plot_missing": "The funnel plot could not be drawn for this letter; the figures above are complete.",
            "plot_shows_others": plot_audience(notice) == "trust",
            "case_id": notice.case_id,
            "sent_on": _long_date(notice.created_at),
        }
        if self.space == "formal":
            context["regulators"] = REGULATORS_BY_COUNTRY.get(a.country, REGULATORS_BY_COUNTRY["ENG"])
        try:
            # One pass over the text template yields both the body and the `subject` it sets.
            module = text_t.make_module(context)
            subject = _one_line(str(getattr(module, "subject", "")))
            if not subject:
                raise RenderError(f"{self.space}/{notice.template} sets no subject")
            text = str(module)
            context["subject"] = subject
            html = html_t.render(context)
        except jinja2.UndefinedError as exc:
            raise RenderError(f"{self.space}/{notice.template} for {notice.notice_id}: {exc.message}") from exc
        message_id = message_id_for(notice.notice_id, recipient.address)
        headers = {
            "Message-ID": message_id,
            "Date": format_datetime(notice.created_at),
            "X-Signalbox-Notice-Id": notice.notice_id,
            "X-Signalbox-Space": self.space,
            "X-Signalbox-Template": notice.template,
        }
        images = (plot,) if plot is not None else ()
        return RenderedMessage(
            subject=subject, text=text, html=html, message_id=message_id, headers=headers, images=images
        )

    def _check_facts(self, notice: AnyNotice) -> None:
        missing = [k for k in REQUIRED_FACTS.get(notice.template, ()) if notice.facts.get(k) in (None, "")]
        if missing:
            raise RenderError(
                f"{notice.template} notice {notice.notice_id} is missing the fact(s) {', '.join(missing)}"
            )
        if notice.template in NEEDS_RESPOND_BY and notice.respond_by is None:
            raise RenderError(f"{notice.template} notice {notice.notice_id} needs a respond_by date")
        if notice.template == "reminder" and notice.facts["stage"] not in REMINDER_STAGES:
            raise RenderError(
                f"reminder {notice.notice_id}: stage {notice.facts['stage']!r} is not one of {sorted(REMINDER_STAGES)}"
            )


@cache
def renderer_for(space: Space) -> Renderer:
    """The one renderer per space, compiled once per process."""
    if space not in SPACES:
        raise RenderError(f"unknown space {space!r}")
    return Renderer(space)


def render(
    notice: AnyNotice,
    recipient: ResolvedRecipient,
    *,
    organisation_name: str,
    funnel_png: bytes | None,
    contact: Contact,
    audit_name: str | None = None,
    signatory: Contact | None = None,
) -> RenderedMessage:
    """Render with the renderer of the notice's own space (the only one that has its templates)."""
    return renderer_for(notice.space).render(
        notice,
        recipient,
        organisation_name=organisation_name,
        funnel_png=funnel_png,
        contact=contact,
        audit_name=audit_name,
        signatory=signatory,
    )
