"""The worker's settings, read from environment variables as on Kubernetes.

One table (``VARIABLES``) lists every variable with its default, its check and a line
of help; ``from_env`` reads a mapping (tests pass a dict), validates every value and
fails fast with a ``ConfigError`` that names the variable.  The same table prints
``bounce-consumer run --help`` and is what the deployment manifests are checked
against, so a variable cannot be read without being documented.  Secrets (passwords)
are never echoed: not in errors, not in ``describe``, not in the start-up log.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from consumer.codec import DEFAULT_MAX_BYTES
from consumer.errors import ConfigError

__all__ = [
    "STAGES",
    "VARIABLES",
    "Guarantee",
    "SecurityProtocol",
    "Settings",
    "Variable",
    "describe",
    "from_env",
]


class Guarantee(StrEnum):
    """Processing guarantee of the worker."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class SecurityProtocol(StrEnum):
    """Kafka's ``security.protocol`` values that the worker supports."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_LOG_LEVELS = ("debug", "info", "warning", "error")
# Kafka's legal topic characters; a typo such as a space fails at start, not at produce.
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HOST_PORT = re.compile(r"[A-Za-z0-9._\-\[\]:]+:\d{1,5}")


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable: its name, default, check and help line."""

    name: str
    default: str | None
    help: str
    parse: Callable[[str, str], Any]
    secret: bool = False


def _text(name: str, value: str) -> str:
    if not value.strip():
        raise ConfigError(f"{name} must not be empty")
    return value.strip()


def _optional(name: str, value: str) -> str | None:
    return value.strip() or None


def _bootstrap(name: str, value: str) -> tuple[str, ...]:
    servers = tuple(part.strip() for part in value.split(",") if part.strip())
    if not servers:
        raise ConfigError(f"{name} must list at least one host:port")
    for server in servers:
        if not _HOST_PORT.fullmatch(server):
            raise ConfigError(f"{name}: {server!r} is not host:port")
    return servers


def _topic(name: str, value: str) -> str:
    topic = value.strip()
    if not _TOPIC.fullmatch(topic) or topic in {".", ".."}:
        raise ConfigError(f"{name}: {topic!r} is not a valid Kafka topic name")
    return topic


def _topics(name: str, value: str) -> tuple[str, ...]:
    topics = tuple(_topic(name, part) for part in value.split(",") if part.strip())
    if not topics:
        raise ConfigError(f"{name} must name at least one topic")
    return topics


def _integer(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ConfigError(f"{name}: {value.strip()!r} is not an integer") from None
        if not low <= number <= high:
            raise ConfigError(f"{name}: {number} is outside {low}..{high}")
        return number

    return parse


def _seconds(low: float, high: float) -> Callable[[str, str], float]:
    def parse(name: str, value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(f"{name}: {value.strip()!r} is not a number of seconds") from None
        if not low <= number <= high:
            raise ConfigError(f"{name}: {number} is outside {low}..{high} seconds")
        return number

    return parse


def _choice(options: tuple[str, ...], fold: Callable[[str], str] = str.lower) -> Callable[
    [str, str], str
]:
    def parse(name: str, value: str) -> str:
        folded = fold(value.strip())
        if folded not in options:
            raise ConfigError(f"{name}: {value.strip()!r} is not one of {', '.join(options)}")
        return folded

    return parse


def _file(name: str, value: str) -> Path | None:
    if not value.strip():
        return None
    path = Path(value.strip())
    if not path.is_file():
        raise ConfigError(f"{name}: no readable file at {path}")
    return path


#: Values of STAGE: one stage per process, or both ("all").
STAGES = ("classify", "suppression", "all")

VARIABLES: tuple[Variable, ...] = (
    Variable("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", "brokers, host:port[,host:port...]",
             _bootstrap),
    Variable("KAFKA_GROUP_ID", "bounce-consumer", "consumer group of the workers", _text),
    Variable("KAFKA_GROUP_INSTANCE_ID", "", "static group membership (e.g. the pod name); "
             "a restart within the session timeout causes no rebalance", _optional),
    Variable("KAFKA_CLIENT_ID", "", "client id shown in broker logs and quotas "
             "[bounce-consumer-<hostname>]", _optional),
    Variable("INPUT_TOPICS", "mail.raw", "raw delivery events, comma-separated", _topics),
    Variable("EVENTS_TOPIC", "mail.events", "normalized events, keyed by email", _topic),
    Variable("SUPPRESSIONS_TOPIC", "mail.suppressions",
             "suppression updates (compacted), keyed by email", _topic),
    Variable("DLQ_TOPIC", "mail.dlq", "dead letters: original bytes plus error headers", _topic),
    Variable("STAGE", "classify", "classify (raw events in) | suppression (the stateful "
             "stage: normalized events in) | all (both in this process, one HTTP port); "
             "`run --stage` overrides it", _choice(STAGES)),
    Variable("SUPPRESSION_GROUP_ID", "", "consumer group of the suppression stage "
             "[<KAFKA_GROUP_ID>-suppression]", _optional),
    Variable("CONTROL_TOPIC", "mail.control", "operator commands (suppression clear), keyed by "
             "email; as many partitions as EVENTS_TOPIC", _topic),
    Variable("STATE_TOPIC", "mail.suppression-state", "the suppression stage's compacted "
             "changelog of per-address state; as many partitions as EVENTS_TOPIC", _topic),
    Variable("PROCESSING_GUARANTEE", "at_least_once", "at_least_once | exactly_once "
             "(outputs and offsets in one Kafka transaction)",
             _choice(tuple(g.value for g in Guarantee))),
    Variable("KAFKA_TRANSACTIONAL_ID", "", "exactly_once only: stable per worker; the "
             "suppression stage appends -suppression [<group>-<instance id or hostname>]",
             _optional),
    Variable("MAX_BATCH_RECORDS", "500", "records per poll, the unit of produce and commit",
             _integer(1, 100_000)),
    Variable("MAX_BATCH_BYTES", str(16 * 1024 * 1024),
             "bytes fetched per poll (all partitions); bounds memory", _integer(1024, 1 << 30)),
    Variable("POLL_TIMEOUT_MS", "500", "longest wait for a batch when the topic is idle",
             _integer(1, 60_000)),
    Variable("MAX_PAYLOAD_BYTES", str(DEFAULT_MAX_BYTES),
             "larger records go to the dead-letter topic", _integer(1024, 64 << 20)),
    Variable("KAFKA_REQUEST_TIMEOUT_MS", "30000", "a produce or commit not answered in this "
             "time fails and the batch is retried", _integer(1000, 600_000)),
    Variable("KAFKA_SESSION_TIMEOUT_MS", "30000", "the group drops a silent worker after this",
             _integer(6000, 300_000)),
    Variable("RETRY_BACKOFF_MAX_SECONDS", "30", "cap of the exponential backoff while the "
             "broker is unreachable", _seconds(0.1, 600)),
    Variable("SHUTDOWN_GRACE_SECONDS", "25", "SIGTERM: time to finish the batch and commit; "
             "keep it below the pod's terminationGracePeriodSeconds", _seconds(1, 3600)),
    Variable("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT | SSL | SASL_PLAINTEXT | "
             "SASL_SSL", _choice(tuple(p.value for p in SecurityProtocol), str.upper)),
    Variable("KAFKA_SASL_MECHANISM", "", "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (SASL_*)",
             lambda name, value: _choice(_SASL_MECHANISMS, str.upper)(name, value)
             if value.strip() else None),
    Variable("KAFKA_SASL_USERNAME", "", "SASL user", _optional),
    Variable("KAFKA_SASL_PASSWORD", "", "SASL password", _optional, secret=True),
    Variable("KAFKA_SSL_CA_FILE", "", "PEM file of the CA that signed the brokers' "
             "certificates [system trust store]", _file),
    Variable("KAFKA_SSL_CERT_FILE", "", "PEM client certificate (mutual TLS)", _file),
    Variable("KAFKA_SSL_KEY_FILE", "", "PEM private key of the client certificate", _file),
    Variable("KAFKA_SSL_KEY_PASSWORD", "", "password of the private key", _optional,
             secret=True),
    Variable("HTTP_HOST", "0.0.0.0", "address of the /metrics /healthz /readyz server",  # noqa: S104 - a pod must be scraped from outside
             _text),
    Variable("HTTP_PORT", "9400", "port of the /metrics /healthz /readyz server (0: none)",
             _integer(0, 65535)),
    Variable("HEALTH_STALL_SECONDS", "60", "/healthz fails when the loop has not polled for "
             "this long", _seconds(1, 3600)),
    Variable("LOG_LEVEL", "info", "debug | info | warning | error", _choice(_LOG_LEVELS)),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings; field names are the variable names in lower case."""

    kafka_bootstrap_servers: tuple[str, ...]
    kafka_group_id: str
    kafka_group_instance_id: str | None
    kafka_client_id: str | None
    input_topics: tuple[str, ...]
    events_topic: str
    suppressions_topic: str
    dlq_topic: str
    stage: str
    suppression_group_id: str | None
    control_topic: str
    state_topic: str
    processing_guarantee: str
    kafka_transactional_id: str | None
    max_batch_records: int
    max_batch_bytes: int
    poll_timeout_ms: int
    max_payload_bytes: int
    kafka_request_timeout_ms: int
    kafka_session_timeout_ms: int
    retry_backoff_max_seconds: float
    shutdown_grace_seconds: float
    kafka_security_protocol: str
    kafka_sasl_mechanism: str | None
    kafka_sasl_username: str | None
    kafka_sasl_password: str | None = field(repr=False)
    kafka_ssl_ca_file: Path | None
    kafka_ssl_cert_file: Path | None
    kafka_ssl_key_file: Path | None
    kafka_ssl_key_password: str | None = field(repr=False)
    http_host: str
    http_port: int
    health_stall_seconds: float
    log_level: str

    @property
    def guarantee(self) -> Guarantee:
        return Guarantee(self.processing_guarantee)

    @property
    def stage_group_id(self) -> str:
        return self.suppression_group_id or f"{self.kafka_group_id}-suppression"

    @property
    def client_id(self) -> str:
        return self.kafka_client_id or f"bounce-consumer-{socket.gethostname()}"

    def transactional_id(self, stage: str = "classify") -> str:
        """Stable across restarts of one worker, so a zombie's transaction is fenced.

        Each stage has its own (the suppression stage's ends in ``-suppression``): two
        stages on one host must not fence each other's producers.
        """
        member = self.kafka_group_instance_id or socket.gethostname()
        base = self.kafka_transactional_id or f"{self.kafka_group_id}-{member}"
        return base if stage == "classify" else f"{base}-{stage}"

    def redacted(self) -> dict[str, Any]:
        """Every setting for the start-up log, secrets replaced by ``***`` when set."""
        out: dict[str, Any] = {}
        for variable in VARIABLES:
            value = getattr(self, variable.name.lower())
            if variable.secret and value:
                value = "***"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = ",".join(value)
            out[variable.name] = value
        return out


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every variable; the first bad one raises ``ConfigError``."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for variable in VARIABLES:
        raw = env.get(variable.name)
        if raw is None:
            raw = variable.default or ""
        try:
            values[variable.name.lower()] = variable.parse(variable.name, raw)
        except ConfigError as exc:
            if variable.secret:
                raise ConfigError(f"{variable.name} is invalid") from None
            raise ConfigError(str(exc)) from None
    settings = Settings(**values)
    _check_combinations(settings)
    return settings


def _check_combinations(settings: Settings) -> None:
    """Settings that are each valid but do not fit together."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL"):
        if settings.kafka_sasl_mechanism is None:
            raise ConfigError(f"KAFKA_SASL_MECHANISM is required with {protocol}")
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            raise ConfigError(
                f"KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required with {protocol}"
            )
    elif settings.kafka_sasl_mechanism is not None:
        raise ConfigError(f"KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL is {protocol}")
    if (settings.kafka_ssl_cert_file is None) != (settings.kafka_ssl_key_file is None):
        raise ConfigError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE must be set together")
    uses_tls = protocol in {"SSL", "SASL_SSL"}
    if not uses_tls and (settings.kafka_ssl_ca_file or settings.kafka_ssl_cert_file):
        raise ConfigError(f"KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL is {protocol}")
    outputs = {settings.events_topic, settings.suppressions_topic, settings.dlq_topic}
    if len(outputs) < 3:
        raise ConfigError("EVENTS_TOPIC, SUPPRESSIONS_TOPIC and DLQ_TOPIC must differ")
    if len(outputs | {settings.control_topic, settings.state_topic}) < 5:
        raise ConfigError("CONTROL_TOPIC and STATE_TOPIC must differ from the other topics")
    loop = outputs.intersection(settings.input_topics)
    if loop:
        raise ConfigError(f"INPUT_TOPICS must not include an output topic ({', '.join(loop)})")


def describe() -> str:
    """The help text of ``bounce-consumer run``: every variable, its default and meaning."""
    width = max(len(variable.name) for variable in VARIABLES)
    lines = []
    for variable in VARIABLES:
        default = "(secret)" if variable.secret else (variable.default or "-")
        lines.append(f"  {variable.name:<{width}}  {variable.help} [default: {default}]")
    return "\n".join(lines)
