"""A throw-away PKI and a local broker with a SASL_SSL (SCRAM + TLS) listener, for tests.

Certificates are made with the ``openssl`` command line (present wherever the test
suite runs a broker; no Python crypto dependency needed): a CA, a server certificate
for ``127.0.0.1`` and ``localhost`` signed by it, and the PKCS12 keystore the broker
reads.  The extensions are the ones a strict verifier wants (critical CA basic
constraints, key usages, subject and authority key ids, SANs), so Python's default
``ssl`` context, which aiokafka uses, accepts the chain with hostname checking on.

:func:`secure_broker` builds the :class:`~kafkatools.LocalBroker` that runs
``local-kafka start`` with ``KAFKA_SASL_SSL_PORT``, ``KAFKA_SSL_KEYSTORE``,
``KAFKA_SSL_KEYSTORE_PASSWORD`` and ``KAFKA_SCRAM_USERS``: its PLAINTEXT listener
(``broker.bootstrap``) stays open for the test's admin helpers, the worker under
test connects to the SASL_SSL address.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kafkatools import HOST, LocalBroker, free_port_pair, port_is_free

__all__ = [
    "CertificateAuthority",
    "SecureBroker",
    "make_ca",
    "make_server_keystore",
    "openssl_available",
    "secure_broker",
]

_DAYS = "2"  # long enough for any test run; an expired test CA is never a concern


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _require_openssl() -> None:
    # Not a skip: like a missing broker, a missing tool must not let TLS tests pass.
    if not openssl_available():
        raise RuntimeError("openssl not found on PATH: the TLS tests make their PKI with it")


def _openssl(*args: str, cwd: Path) -> None:
    _require_openssl()
    result = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({result.returncode}): {result.stderr}")


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA: ``cert`` is the PEM file a client trusts (KAFKA_SSL_CA_FILE)."""

    name: str
    cert: Path
    key: Path


def make_ca(directory: Path, name: str = "bounce-consumer test CA") -> CertificateAuthority:
    """A fresh EC P-256 CA in ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = name.replace(" ", "-").lower()
    key, cert = directory / f"{stem}.key", directory / f"{stem}.pem"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key),
             cwd=directory)  # fmt: skip
    _openssl(
        "req", "-x509", "-new", "-key", str(key), "-sha256", "-days", _DAYS,
        "-subj", f"/O=bounce-consumer tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return CertificateAuthority(name, cert, key)


def make_server_keystore(
    ca: CertificateAuthority, directory: Path, password: str, *, hosts: tuple[str, ...] = ()
) -> Path:
    """A PKCS12 keystore (key + chain) for a broker at 127.0.0.1/localhost, signed by ``ca``.

    ``hosts`` adds DNS names to the subject alternative names.  The key is protected by
    ``password`` too, as ``KAFKA_SSL_KEYSTORE_PASSWORD`` expects.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    names = ", ".join(["IP:127.0.0.1", "DNS:localhost", *(f"DNS:{h}" for h in hosts)])
    extensions.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {names}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n",
        encoding="ascii",
    )
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key),
             cwd=directory)  # fmt: skip
    _openssl("req", "-new", "-key", str(key), "-subj", "/O=bounce-consumer tests/CN=localhost",
             "-out", str(csr), cwd=directory)  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(secrets.randbits(63)), "-days", _DAYS, "-sha256",
        "-extfile", str(extensions), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    keystore = directory / "server.p12"
    _pkcs12(key, cert, ca.cert, keystore, password, directory)
    return keystore


def _pkcs12(key: Path, cert: Path, chain: Path, out: Path, password: str, cwd: Path) -> None:
    # The password goes through the environment, not the command line (ps shows that).
    result = subprocess.run(
        [
            "openssl", "pkcs12", "-export", "-name", "broker", "-inkey", str(key),
            "-in", str(cert), "-certfile", str(chain), "-passout", "env:KEYSTORE_PASSWORD",
            "-out", str(out),
        ],
        cwd=cwd,
        env={**os.environ, "KEYSTORE_PASSWORD": password},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"openssl pkcs12 failed ({result.returncode}): {result.stderr}")


@dataclass
class SecureBroker:
    """A started broker with PLAINTEXT (``broker.bootstrap``) and SASL_SSL listeners."""

    broker: LocalBroker
    sasl_ssl_port: int
    ca: CertificateAuthority
    users: dict[str, str]

    @property
    def bootstrap(self) -> str:
        """PLAINTEXT address, for the test's own admin, produce and consume helpers."""
        return self.broker.bootstrap

    @property
    def secure_bootstrap(self) -> str:
        """SASL_SSL address, for the worker under test."""
        return f"{HOST}:{self.sasl_ssl_port}"

    def client_env(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512",
                   ca_file: Path | None = None) -> dict[str, str]:  # fmt: skip
        """The worker's security variables for ``user`` (any password, right or wrong)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.secure_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": mechanism,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": password,
            "KAFKA_SSL_CA_FILE": str(ca_file or self.ca.cert),
        }


def _free_port(exclude: tuple[int, ...]) -> int:
    for _ in range(100):
        port, _unused = free_port_pair()
        if port not in exclude and port_is_free(port):
            return port
    raise RuntimeError("no free port for the SASL_SSL listener")


def secure_broker(
    directory: Path,
    users: Mapping[str, str],
    *,
    keystore_password: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> SecureBroker:
    """A (not yet started) broker with a SASL_SSL SCRAM listener, its PKI in ``directory``.

    ``users`` (name -> password) get SCRAM-SHA-256 and SCRAM-SHA-512 credentials when
    the storage is formatted.  Call ``.broker.start()`` (or ``start_async``).
    """
    pki = directory / "pki"
    ca = make_ca(pki / "ca")
    password = keystore_password or secrets.token_urlsafe(18)
    keystore = make_server_keystore(ca, pki / "server", password)
    port, controller_port = free_port_pair()
    sasl_ssl_port = _free_port((port, controller_port))
    env = {
        "KAFKA_SASL_SSL_PORT": str(sasl_ssl_port),
        "KAFKA_SSL_KEYSTORE": str(keystore),
        "KAFKA_SSL_KEYSTORE_PASSWORD": password,
        "KAFKA_SCRAM_USERS": ",".join(f"{name}:{pw}" for name, pw in users.items()),
        **(extra_env or {}),
    }
    broker = LocalBroker(
        directory / "kafka", port=port, controller_port=controller_port, extra_env=env
    )
    return SecureBroker(broker, sasl_ssl_port, ca, dict(users))
