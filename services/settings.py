"""signalbox's settings: the only module that reads the environment.

Everything the service is told by its environment is a field of ``Settings``, read by ``get_settings()`` when a
command or worker starts (never at import, so a test may set variables first). Libraries take the values they
need as parameters; ``tests/unit/test_settings.py`` fails on any other ``os.environ`` or ``getenv`` in the
product packages. ``eval "$(deploy/local/up)"`` exports the connection settings for the local stack.

=================================  ======================================================================
``SIGNALBOX_KAFKA``                bootstrap servers, comma separated (default ``127.0.0.1:19092``)
``SIGNALBOX_KAFKA_USER``           SASL/SCRAM-SHA-512 user; unset means a PLAINTEXT broker without security
``SIGNALBOX_KAFKA_PASSWORD``       its password
``SIGNALBOX_REDIS``                ``redis://user:password@host:port/db`` (the worker's dedup fast path)
``SIGNALBOX_POSTGRES``             ``postgresql://user:password@host:port/db`` (the worker's store)
``SIGNALBOX_CREDENTIALS``          path of the local stack's credentials file (tests and benchmarks only)
``SIGNALBOX_RECIPIENTS``           the recipient directory (YAML) for a store's letters
``SIGNALBOX_SMTP_HOST``            SMTP server; unset means letters are written as ``.eml`` files
``SIGNALBOX_SMTP_PORT``            its port (587)
``SIGNALBOX_SMTP_STARTTLS``        upgrade with STARTTLS, true or false (true)
``SIGNALBOX_SMTP_USER``            login name, if the server wants one (with ``SIGNALBOX_SMTP_PASSWORD``)
``SIGNALBOX_SMTP_PASSWORD``        its password
``SIGNALBOX_SMTP_TIMEOUT``         seconds per SMTP operation (30)
``SIGNALBOX_TRAIL_KEY``            the trail's signing key; else ``$XDG_CONFIG_HOME/signalbox/`` or
                                   ``~/.config/signalbox/`` ``trail-signing-key.pem``
``SIGNALBOX_APP_ID``               the worker's Faust app id: consumer group and internal topics (``signalbox``)
``SIGNALBOX_WORKER_ID``            this worker's static group member id (default: derived from its data folder)
``SIGNALBOX_TOPIC_NAMESPACE``      moves every output topic under a private namespace (tests, benchmarks)
``SIGNALBOX_TEST_SERVICES``        the tests' backing services: ``local`` (default: the ones the environment
                                   names, from ``deploy/local/up``) or ``containers`` (started by the tests)
``SIGNALBOX_WEB_SECRET``           the key that signs ``signalbox serve`` session cookies (default: one kept in
                                   the store)
``SIGNALBOX_WEB_TLS``              true when ``serve`` is reached over HTTPS (a TLS proxy): cookies are ``Secure``
``SIGNALBOX_OIDC_ISSUER``          OpenID Connect issuer URL for ``serve`` logins (with the two below; unset means
                                   the local user store's passwords)
``SIGNALBOX_OIDC_CLIENT_ID``       its client id
``SIGNALBOX_OIDC_CLIENT_SECRET``   its client secret
``SIGNALBOX_OIDC_USERNAME_CLAIM``  the ID-token claim naming the signalbox user (``preferred_username``)
``SIGNALBOX_METRICS_PORT``         the worker's /metrics, /healthz, /readyz port (unset: not served)
``SIGNALBOX_LOG_FORMAT``           ``json`` or ``console`` (default: json when stderr is not a terminal)
=================================  ======================================================================

A value that is empty or only spaces counts as unset; other values are stripped of surrounding spaces (not the
SMTP password). A value that cannot be used is a ``SettingsError``: one sentence naming the variable, never the
value of a secret.

The helpers below build the client settings of kafka-python, aiokafka and Faust from one place, so every
client (the service, the CLI, ACL provisioning) uses the same security protocol and SASL mechanism.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from notifications.channels.smtp import SmtpSettings
from services.kafka.topics import SERVICE_PREFIX, OutputTopics, validate_namespace

DEFAULT_KAFKA = "127.0.0.1:19092"
SCRAM_MECHANISM = "SCRAM-SHA-512"
TRAIL_KEY_SETTING = "SIGNALBOX_TRAIL_KEY"
TRAIL_KEY_FILE = "trail-signing-key.pem"
APP_ID = "signalbox"
_UNSTRIPPED = {"smtp_password", "SIGNALBOX_SMTP_PASSWORD"}
# The app id names a consumer group, Faust's internal topics and a folder under the data folder; the worker id
# a static group member. Both stay in a file- and topic-safe alphabet.
_APP_ID_RE = re.compile(r"signalbox[A-Za-z0-9._-]{0,190}")
_WORKER_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")


class SettingsError(ValueError):
    """A setting that cannot be used; the message is one sentence naming the variable."""


class Settings(BaseSettings):
    """Every setting, as values. ``Settings(...)`` uses only what it is given; ``get_settings()`` reads the
    environment."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    kafka_bootstrap: str = Field(DEFAULT_KAFKA, validation_alias="SIGNALBOX_KAFKA")
    kafka_user: str | None = Field(None, validation_alias="SIGNALBOX_KAFKA_USER")
    kafka_password: SecretStr | None = Field(None, validation_alias="SIGNALBOX_KAFKA_PASSWORD")
    redis_url: SecretStr | None = Field(None, validation_alias="SIGNALBOX_REDIS")
    postgres_url: SecretStr | None = Field(None, validation_alias="SIGNALBOX_POSTGRES")
    credentials_path: str | None = Field(None, validation_alias="SIGNALBOX_CREDENTIALS")
    recipients: Path | None = Field(None, validation_alias="SIGNALBOX_RECIPIENTS")
    smtp_host: str | None = Field(None, validation_alias="SIGNALBOX_SMTP_HOST")
    smtp_port: int = Field(587, ge=1, le=65535, validation_alias="SIGNALBOX_SMTP_PORT")
    smtp_starttls: bool = Field(True, validation_alias="SIGNALBOX_SMTP_STARTTLS")
    smtp_user: str | None = Field(None, validation_alias="SIGNALBOX_SMTP_USER")
    smtp_password: SecretStr | None = Field(None, validation_alias="SIGNALBOX_SMTP_PASSWORD")
    smtp_timeout: float = Field(30.0, gt=0, le=3600, allow_inf_nan=False, validation_alias="SIGNALBOX_SMTP_TIMEOUT")
    trail_key: Path | None = Field(None, validation_alias=TRAIL_KEY_SETTING)
    config_home: Path | None = Field(None, validation_alias="XDG_CONFIG_HOME")
    app_id: str = Field(APP_ID, validation_alias="SIGNALBOX_APP_ID")
    worker_id: str | None = Field(None, validation_alias="SIGNALBOX_WORKER_ID")
    topic_namespace: str | None = Field(None, validation_alias="SIGNALBOX_TOPIC_NAMESPACE")
    test_services: Literal["local", "containers"] = Field("local", validation_alias="SIGNALBOX_TEST_SERVICES")
    web_secret: SecretStr | None = Field(None, validation_alias="SIGNALBOX_WEB_SECRET")
    web_tls: bool = Field(False, validation_alias="SIGNALBOX_WEB_TLS")
    oidc_issuer: str | None = Field(None, validation_alias="SIGNALBOX_OIDC_ISSUER")
    oidc_client_id: str | None = Field(None, validation_alias="SIGNALBOX_OIDC_CLIENT_ID")
    oidc_client_secret: SecretStr | None = Field(None, validation_alias="SIGNALBOX_OIDC_CLIENT_SECRET")
    oidc_username_claim: str = Field("preferred_username", validation_alias="SIGNALBOX_OIDC_USERNAME_CLAIM")
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="SIGNALBOX_METRICS_PORT")
    log_format: Literal["json", "console"] | None = Field(None, validation_alias="SIGNALBOX_LOG_FORMAT")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        cleaned: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str):
                if not value.strip():
                    continue
                value = value if key in _UNSTRIPPED else value.strip()
            cleaned[key] = value
        return cleaned

    @field_validator("kafka_bootstrap")
    @classmethod
    def _servers(cls, value: str) -> str:
        if not [s for s in value.split(",") if s.strip()]:
            raise ValueError("must name at least one host:port")
        return value

    @field_validator("app_id")
    @classmethod
    def _app_id(cls, value: str) -> str:
        if not _APP_ID_RE.fullmatch(value):
            raise ValueError(
                f"must start with {SERVICE_PREFIX!r} (the service principal's ACL prefix) followed by at most 190 "
                "of A-Z a-z 0-9 . _ -"
            )
        return value

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str | None) -> str | None:
        if value is not None and not _WORKER_ID_RE.fullmatch(value):
            raise ValueError("must be 1 to 100 of A-Z a-z 0-9 . _ -")
        return value

    @field_validator("topic_namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return validate_namespace(value)

    @model_validator(mode="after")
    def _smtp_login(self) -> Settings:
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ValueError("set both SIGNALBOX_SMTP_USER and SIGNALBOX_SMTP_PASSWORD, or neither")
        return self

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        given = [self.oidc_issuer, self.oidc_client_id, self.oidc_client_secret]
        if any(v is not None for v in given) and not all(v is not None for v in given):
            raise ValueError(
                "set SIGNALBOX_OIDC_ISSUER, SIGNALBOX_OIDC_CLIENT_ID and SIGNALBOX_OIDC_CLIENT_SECRET together, or none"
            )
        if self.oidc_issuer is not None and not self.oidc_issuer.startswith(("https://", "http://127.0.0.1")):
            raise ValueError("SIGNALBOX_OIDC_ISSUER must be an https:// URL (http only for 127.0.0.1)")
        return self

    # --------------------------------------------------------------------------------------------- Kafka

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    @property
    def kafka_secured(self) -> bool:
        return self.kafka_user is not None

    def kafka_password_value(self) -> str:
        if self.kafka_password is None:
            raise SettingsError("SIGNALBOX_KAFKA_USER is set but SIGNALBOX_KAFKA_PASSWORD is not")
        return self.kafka_password.get_secret_value()

    def as_user(self, user: str, password: str) -> Settings:
        """The same broker, another principal (tests, provisioning)."""
        return self.model_copy(update={"kafka_user": user, "kafka_password": SecretStr(password)})

    @property
    def output_topics(self) -> OutputTopics:
        """Where the worker writes: the contract's topics, or the same under ``SIGNALBOX_TOPIC_NAMESPACE``."""
        return OutputTopics(self.topic_namespace)

    # ------------------------------------------------------------------------------------- letters, trail

    @property
    def smtp(self) -> SmtpSettings | None:
        """The SMTP server's settings, or None when ``SIGNALBOX_SMTP_HOST`` is unset (letters go to files)."""
        if self.smtp_host is None:
            return None
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            starttls=self.smtp_starttls,
            user=self.smtp_user,
            password=self.smtp_password.get_secret_value() if self.smtp_password else None,
            timeout=self.smtp_timeout,
        )

    @property
    def trail_key_path(self) -> Path:
        """Where the trail's signing key lives: ``SIGNALBOX_TRAIL_KEY``, else the user's configuration folder."""
        if self.trail_key is not None:
            return self.trail_key.expanduser()
        return (self.config_home or Path.home() / ".config") / "signalbox" / TRAIL_KEY_FILE

    @property
    def oidc_metadata_url(self) -> str | None:
        """The issuer's discovery document, or None when OpenID Connect login is not configured."""
        if self.oidc_issuer is None:
            return None
        return self.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"


class _FromEnvironment(Settings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def get_settings() -> Settings:
    """The settings in the environment now. Raises ``SettingsError`` naming the first variable that cannot be used."""
    try:
        return _FromEnvironment()
    except ValidationError as exc:
        raise SettingsError(_sentence(exc)) from None


def _sentence(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["loc"]:
        return f"{error['loc'][0]} {message[:1].lower()}{message[1:]}."
    return f"{message}."


# ------------------------------------------------------------------------------------------- client settings


def _sasl_kwargs(settings: Settings) -> dict[str, Any]:
    if not settings.kafka_secured:
        return {"security_protocol": "PLAINTEXT"}
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": SCRAM_MECHANISM,
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
        mechanism=SCRAM_MECHANISM,
    )
