"""Connection settings for signalbox's backing services, read from the environment.

``eval "$(deploy/local/up)"`` exports these for the local stack:

* ``SIGNALBOX_KAFKA``            bootstrap servers, comma separated (``127.0.0.1:19092``)
* ``SIGNALBOX_KAFKA_USER``       SASL/SCRAM-SHA-512 user; unset means a PLAINTEXT broker without security
* ``SIGNALBOX_KAFKA_PASSWORD``   its password
* ``SIGNALBOX_REDIS``            ``redis://user:password@host:port/db``
* ``SIGNALBOX_POSTGRES``         ``postgresql://user:password@host:port/db``
* ``SIGNALBOX_CREDENTIALS``      path of the local credentials file (other principals; tests and provisioning)

The helpers build client kwargs for kafka-python, aiokafka and Faust from one place, so every client
uses the same security protocol and mechanism.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

DEFAULT_KAFKA = "127.0.0.1:19092"
SCRAM_MECHANISM = "SCRAM-SHA-512"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    kafka_bootstrap: str = DEFAULT_KAFKA
    kafka_user: str | None = None
    kafka_password: SecretStr | None = None
    kafka_mechanism: str = SCRAM_MECHANISM
    redis_url: SecretStr | None = None
    postgres_url: SecretStr | None = None
    credentials_path: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        password = get("SIGNALBOX_KAFKA_PASSWORD")
        redis_url = get("SIGNALBOX_REDIS")
        postgres_url = get("SIGNALBOX_POSTGRES")
        return cls(
            kafka_bootstrap=get("SIGNALBOX_KAFKA") or DEFAULT_KAFKA,
            kafka_user=get("SIGNALBOX_KAFKA_USER"),
            kafka_password=SecretStr(password) if password is not None else None,
            redis_url=SecretStr(redis_url) if redis_url is not None else None,
            postgres_url=SecretStr(postgres_url) if postgres_url is not None else None,
            credentials_path=get("SIGNALBOX_CREDENTIALS"),
        )

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    @property
    def kafka_secured(self) -> bool:
        return self.kafka_user is not None

    def kafka_password_value(self) -> str:
        if self.kafka_password is None:
            raise ValueError("SIGNALBOX_KAFKA_USER is set but SIGNALBOX_KAFKA_PASSWORD is not")
        return self.kafka_password.get_secret_value()

    def as_user(self, user: str, password: str) -> Settings:
        """The same broker, another principal (tests, provisioning)."""
        return self.model_copy(update={"kafka_user": user, "kafka_password": SecretStr(password)})


def _sasl_kwargs(settings: Settings) -> dict[str, Any]:
    if not settings.kafka_secured:
        return {"security_protocol": "PLAINTEXT"}
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": settings.kafka_mechanism,
        "sasl_plain_username": settings.kafka_user,
        "sasl_plain_password": settings.kafka_password_value(),
    }


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """kwargs for kafka-python 3 ``KafkaProducer``/``KafkaConsumer``/``KafkaAdminClient``."""
    return {"bootstrap_servers": settings.kafka_servers, **_sasl_kwargs(settings)}


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """kwargs for aiokafka 0.14 ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``.

    aiokafka uses the same keyword names as kafka-python for SASL; over SASL_PLAINTEXT no ``ssl_context``.
    """
    return {"bootstrap_servers": ",".join(settings.kafka_servers), **_sasl_kwargs(settings)}


def faust_broker_url(settings: Settings) -> str:
    """``kafka://h1:p1;h2:p2`` for ``faust.App(broker=...)``."""
    return "kafka://" + ";".join(settings.kafka_servers)


def faust_broker_credentials(settings: Settings) -> Any:
    """``faust.SASLCredentials`` (SASL_PLAINTEXT, SCRAM-SHA-512) for ``faust.App(broker_credentials=...)``.

    ``None`` when no user is configured (plain PLAINTEXT broker). Faust is imported lazily: it is heavy
    and only the stream workers need it.
    """
    if not settings.kafka_secured:
        return None
    import faust

    return faust.SASLCredentials(
        username=settings.kafka_user,
        password=settings.kafka_password_value(),
        mechanism=settings.kafka_mechanism,
    )
