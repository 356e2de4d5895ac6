"""Certificates for TLS tests: a throw-away CA and certificates it signs.

::

    ca = make_ca(tmp_path)
    server = make_cert(ca, tmp_path)                      # for 127.0.0.1 and localhost
    client = make_cert(ca, tmp_path, client=True)
    with FakeGitLab(tls=TLSFiles(server.cert, server.key, client_ca=ca.cert)) as gl:
        requests.get(gl.url, verify=str(ca.cert), cert=(str(client.cert), str(client.key)))

Uses the ``cryptography`` package (a test dependency, in dev-requirements.txt), imported
only when a function here is called: the zipapp and ``demo`` never need it.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import os
from pathlib import Path
from typing import Any, NamedTuple, Union

__all__ = ["KeyPair", "make_ca", "make_cert"]

PathLike = Union[str, "os.PathLike[str]"]


class KeyPair(NamedTuple):
    """PEM files: a certificate and its private key (unpacks as ``cert, key``)."""

    cert: Path
    key: Path


def make_ca(directory: PathLike, name: str = "register-runner test CA") -> KeyPair:
    """A self-signed CA certificate valid from yesterday for ten years."""
    x509, hashes, ec, NameOID = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        _builder(subject, subject, key.public_key(), now, now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(x509, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return _write(Path(directory), "ca", cert, key)


def make_cert(
    ca: KeyPair,
    directory: PathLike,
    names: Any = ("127.0.0.1", "localhost"),
    expired: bool = False,
    client: bool = False,
) -> KeyPair:
    """A certificate signed by ``ca`` for ``names`` (IP addresses or DNS names):
    a server certificate, or a client one with ``client=True``. ``expired=True``:
    valid only in the past (until yesterday)."""
    x509, hashes, ec, NameOID = _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert = x509.load_pem_x509_certificate(Path(ca.cert).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(ca.key).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [names] if isinstance(names, str) else list(names)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "client")])
    now = _now()
    if expired:
        start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    else:
        start, end = now, now + datetime.timedelta(days=365)
    purpose = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(x509, cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(x509, n) for n in names]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    stem = ("client" if client else "server") + ("-expired" if expired else "")
    return _write(Path(directory), stem, cert, key)


def _crypto() -> tuple:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "register_runner.testing.tls needs the 'cryptography' package "
            "(pip install -r dev-requirements.txt)"
        ) from exc
    return x509, hashes, ec, NameOID


def _now() -> datetime.datetime:
    # A minute back, so that a clock a little behind still accepts a new certificate.
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)


def _builder(
    subject: Any, issuer: Any, public_key: Any, start: datetime.datetime, end: datetime.datetime
) -> Any:
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _usage(x509: Any, cert_sign: bool) -> Any:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(x509: Any, name: str) -> Any:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write(directory: Path, stem: str, cert: Any, key: Any) -> KeyPair:
    """Write ``stem[-N].pem`` and ``stem[-N].key``, never over an earlier pair."""
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        base = directory / (stem if n == 1 else f"{stem}-{n}")
        cert_path, key_path = base.with_suffix(".pem"), base.with_suffix(".key")
        if not cert_path.exists() and not key_path.exists():
            break
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return KeyPair(cert_path, key_path)
