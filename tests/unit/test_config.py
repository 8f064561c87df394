"""Settings from environment variables: defaults, checks naming the variable, secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consumer.config import VARIABLES, Guarantee, describe, from_env
from consumer.errors import ConfigError


def test_defaults_give_a_working_local_setup() -> None:
    """With no variable set the worker targets the local broker and the default topics."""
    settings = from_env({})
    assert settings.kafka_bootstrap_servers == ("127.0.0.1:9092",)
    assert settings.input_topics == ("mail.raw",)
    assert (settings.events_topic, settings.suppressions_topic, settings.dlq_topic) == (
        "mail.events",
        "mail.suppressions",
        "mail.dlq",
    )
    assert settings.guarantee is Guarantee.AT_LEAST_ONCE
    assert settings.max_batch_records == 500


def test_values_are_parsed_and_trimmed() -> None:
    """Lists split on commas, numbers parse, enumerations fold case."""
    settings = from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": " k1:9092, k2:9093 ",
            "INPUT_TOPICS": "a.raw,b.raw",
            "PROCESSING_GUARANTEE": "EXACTLY_ONCE",
            "MAX_BATCH_RECORDS": "1000",
            "SHUTDOWN_GRACE_SECONDS": "12.5",
            "LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.kafka_bootstrap_servers == ("k1:9092", "k2:9093")
    assert settings.input_topics == ("a.raw", "b.raw")
    assert settings.guarantee is Guarantee.EXACTLY_ONCE
    assert settings.max_batch_records == 1000
    assert settings.shutdown_grace_seconds == 12.5
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "no-port"),
        ("KAFKA_BOOTSTRAP_SERVERS", " , "),
        ("INPUT_TOPICS", "has space"),
        ("EVENTS_TOPIC", ".."),
        ("MAX_BATCH_RECORDS", "many"),
        ("MAX_BATCH_RECORDS", "0"),
        ("POLL_TIMEOUT_MS", "-5"),
        ("HTTP_PORT", "70000"),
        ("SHUTDOWN_GRACE_SECONDS", "soon"),
        ("PROCESSING_GUARANTEE", "twice"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("LOG_LEVEL", "loud"),
        ("KAFKA_SSL_CA_FILE", "/nonexistent/ca.pem"),
        ("KAFKA_GROUP_ID", "  "),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    """Every invalid value stops start-up with an error that names the variable."""
    with pytest.raises(ConfigError, match=re.escape(name)):
        from_env({name: value})


def test_sasl_needs_mechanism_and_credentials() -> None:
    """SASL_SSL without a mechanism or without a password is refused."""
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM"):
        from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ConfigError, match="KAFKA_SASL_PASSWORD"):
        from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                  "KAFKA_SASL_USERNAME": "worker"})
    settings = from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                         "KAFKA_SASL_MECHANISM": "scram-sha-256",
                         "KAFKA_SASL_USERNAME": "worker", "KAFKA_SASL_PASSWORD": "s3cret"})
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-256"


def test_tls_files_must_fit_the_protocol(tmp_path: Path) -> None:
    """A certificate without its key, or TLS files with PLAINTEXT, are refused."""
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="KAFKA_SSL_KEY_FILE"):
        from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERT_FILE": str(cert)})
    with pytest.raises(ConfigError, match="PLAINTEXT"):
        from_env({"KAFKA_SSL_CA_FILE": str(cert)})


def test_topics_must_not_loop_or_collide() -> None:
    """Reading an output topic, or two outputs on one topic, is refused."""
    with pytest.raises(ConfigError, match="INPUT_TOPICS"):
        from_env({"INPUT_TOPICS": "mail.raw,mail.events"})
    with pytest.raises(ConfigError, match="must differ"):
        from_env({"DLQ_TOPIC": "mail.events"})


def test_secrets_never_appear_in_errors_logs_or_help() -> None:
    """The password is masked in redacted(), absent from describe() and from errors."""
    settings = from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                         "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "worker",
                         "KAFKA_SASL_PASSWORD": "hunter2-secret"})
    assert "hunter2-secret" not in repr(settings.redacted())
    assert settings.redacted()["KAFKA_SASL_PASSWORD"] == "***"  # noqa: S105 - the mask, not a password
    assert "hunter2" not in describe()
    assert "(secret)" in describe()


def test_describe_lists_every_variable_with_its_default() -> None:
    """`run --help` shows each variable once, with its default."""
    text = describe()
    for variable in VARIABLES:
        assert text.count(f"  {variable.name} ") == 1
    assert "[default: mail.raw]" in text


def test_transactional_id_is_stable_per_worker() -> None:
    """The transactional id follows the static member id, so a restarted pod fences its zombie."""
    settings = from_env({"KAFKA_GROUP_ID": "g", "KAFKA_GROUP_INSTANCE_ID": "worker-0"})
    assert settings.transactional_id() == "g-worker-0"
    assert settings.transactional_id("suppression") == "g-worker-0-suppression"
    explicit = from_env({"KAFKA_TRANSACTIONAL_ID": "tx-1"})
    assert explicit.transactional_id() == "tx-1"
    assert explicit.transactional_id("suppression") == "tx-1-suppression"


def test_settings_fields_match_the_variable_table() -> None:
    """Every variable has a field and every field a variable (no hidden settings)."""
    fields = set(from_env({}).__dataclass_fields__)
    assert fields == {variable.name.lower() for variable in VARIABLES}
