"""Deliver a notice to a webhook the trust controls (for example its risk register).

A JSON POST with an ``Idempotency-Key`` header equal to the Message-ID, so a retried delivery can be dropped
by the receiver. Only a 2xx reply counts as delivered. 408, 425, 429 and 5xx replies and network errors are
retried; other replies (including redirects) will not change by retrying and are permanent.
"""

from __future__ import annotations

import httpx

from notifications.channels.base import DeliveryError, OutgoingMessage

_RETRYABLE_4XX = frozenset({408, 425, 429})


def webhook_body(message: OutgoingMessage) -> dict[str, object]:
    return {
        "message_id": message.message_id,
        "recipient": {"role": message.recipient.role, "name": message.recipient.name},
        "subject": message.rendered.subject,
        "text": message.rendered.text,
        **message.metadata,
    }


class WebhookTransport:
    def __init__(self, client: httpx.AsyncClient | None = None, *, timeout: float = 30.0) -> None:
        self._client = client
        self._timeout = timeout

    async def send(self, message: OutgoingMessage) -> None:
        url = message.recipient.contact.webhook
        if url is None:
            raise DeliveryError(f"{message.recipient.role} has no webhook URL", permanent=True)
        headers = {"Idempotency-Key": message.message_id, "User-Agent": "signalbox"}
        try:
            if self._client is not None:
                response = await self._client.post(url, json=webhook_body(message), headers=headers)
            else:
                async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                    response = await client.post(url, json=webhook_body(message), headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook {url} failed: {exc!r}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in _RETRYABLE_4XX
        raise DeliveryError(f"webhook {url} replied {status}", permanent=not retryable)
