"""TLS trust and TLS failures, standard library only.

Certificates are checked against what the host trusts (OpenSSL's default verify paths,
which honour SSL_CERT_FILE and SSL_CERT_DIR), plus a client_config's ``tls_ca_file``, as
gitlab-runner and curl do: a site CA installed with update-ca-certificates just works.
certifi's bundled list is only the fallback on a host with no trust store at all.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .errors import InputError
from .files import stat_regular

# OpenSSL's X509_V_ERR_* codes that mean "this chain does not end at a CA we trust".
UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21, 27})
EXPIRED = 10
NOT_YET_VALID = 9
HOSTNAME_MISMATCH = 62


def has_trust_store() -> bool:
    """Whether OpenSSL's default verify paths hold any CA certificate."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile) and os.path.getsize(paths.cafile) > 0:
        return True
    return bool(paths.capath and os.path.isdir(paths.capath) and os.listdir(paths.capath))


def context(
    ca_file: Optional[str] = None,
    cert_file: Optional[str] = None,
    key_file: Optional[str] = None,
) -> ssl.SSLContext:
    """A verifying client context: the host's trust store (certifi if it has none), the
    given CA file, and a client certificate when one is given."""
    ctx = ssl.create_default_context()
    if not has_trust_store():
        import certifi  # only here: in the zipapp where() extracts a file on every run

        ctx.load_verify_locations(cafile=certifi.where())
    _load(ctx.load_verify_locations, ca_file, "tls_ca_file", "a PEM CA certificate")
    if cert_file:
        _load(
            lambda path: ctx.load_cert_chain(path, key_file),
            cert_file,
            "tls_cert_file",
            "a PEM certificate whose key is in tls_key_file (or in the file itself)",
        )
    # The name is checked after the handshake (check_peer_name), so that the error can say
    # what the certificate is for; the chain is checked here.
    ctx.check_hostname = False
    ctx.hostname_checks_common_name = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _load(loader, path: Optional[str], key: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    if not path:
        return
    try:
        stat_regular(Path(path))  # OpenSSL would wait on a FIFO for ever
        loader(path)
    except (ssl.SSLError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or "unusable"
        raise InputError(f"{path} ({key}): not {expected} ({reason})") from None


class CertificateError(ValueError):
    """The server's certificate is for other names than the host asked for."""


def check_peer_name(sock: ssl.SSLSocket, host: str) -> None:
    """Raise CertificateError unless ``sock``'s verified certificate is for ``host``: an
    IP address must be one of its IP addresses, a name one of its DNS names, where a
    leading ``*.`` stands for exactly one label (RFC 6125; the subject's common name is
    not used, as browsers and urllib3 do)."""
    # Plain dict: typeshed's union of value types hides subjectAltName's pairs.
    cert: dict = sock.getpeercert() or {}
    names = [(kind, value) for kind, value in cert.get("subjectAltName", ())]
    try:
        address: Optional[object] = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for kind, value in names:
        if address is not None and kind == "IP Address":
            if ipaddress.ip_address(value.strip()) == address:
                return
        elif address is None and kind == "DNS" and _dns_match(value, host):
            return
    listed = ", ".join(repr(value) for _, value in names) or "no names"
    raise CertificateError(f"hostname {host!r} doesn't match {listed}")


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and "*" not in pattern[2:] and rest == pattern[2:] and "." in rest
    return "*" not in pattern and pattern == host


def describe(error: BaseException, host: str, port: int) -> Optional[str]:
    """One full line for a TLS failure found in ``error``'s causes, else None."""
    for cause in causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _verification(cause, host, port)
        text = str(cause)
        if type(cause).__name__ == "CertificateError" or "doesn't match" in text:
            names = re.findall(r"'([^']*)'", text.split("match", 1)[-1])
            return f"certificate is for {', '.join(names) or 'other names'}, not {host}"
        if isinstance(cause, ssl.SSLError):
            reason = (cause.reason or "").upper()
            if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST") or (
                "WRONG_VERSION_NUMBER" in text or "record layer failure" in text
            ):
                return (
                    f"plain HTTP answered on an https url by {host}:{port} "
                    "(https to a plain-http server: check the url's scheme)"
                )
            if "CERTIFICATE_REQUIRED" in reason or "certificate required" in text:
                return (
                    f"{host}:{port} requires a client certificate: set tls_cert_file and "
                    "tls_key_file in the client_config"
                )
            if reason:
                return f"TLS handshake with {host}:{port} failed ({cause.reason})"
    return None


def _verification(error: ssl.SSLCertVerificationError, host: str, port: int) -> str:
    code = error.verify_code
    if code in UNKNOWN_ISSUER:
        return (
            f"certificate of {host} is signed by an unknown issuer (set tls_ca_file, or add "
            "the CA to the host's trust store)"
        )
    if code in (EXPIRED, NOT_YET_VALID):
        not_after = peer_not_after(host, port) if code == EXPIRED else None
        if code == NOT_YET_VALID:
            return f"certificate of {host} is not valid yet (check this host's clock)"
        when = f"on {not_after:%Y-%m-%d %H:%M} UTC" if not_after else "already"
        return f"certificate of {host} expired {when}"
    if code == HOSTNAME_MISMATCH:
        return f"certificate is for other names, not {host}"
    return f"certificate of {host} was refused: {error.verify_message}"


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and everything it wraps: its cause, its context, and errors in its args."""
    found: list[BaseException] = []
    pending: list[object] = [error]
    while pending:
        item = pending.pop(0)
        if not isinstance(item, BaseException) or any(item is seen for seen in found):
            continue
        found.append(item)
        pending += [item.__cause__, item.__context__]
        pending += list(item.args)
    return found


def peer_not_after(host: str, port: int, timeout: float = 3.0) -> Optional[datetime]:
    """When the server's certificate expires, read without verifying it: only to say
    when an expired certificate expired. None when that cannot be found out."""
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            unverified.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    return not_after(der) if der else None


def not_after(der: bytes) -> Optional[datetime]:
    """The notAfter time of a DER certificate: Certificate > TBSCertificate > validity."""
    try:
        _, body, _ = _tlv(der, 0)  # Certificate
        _, tbs, _ = _tlv(der, body)  # TBSCertificate: its content starts at tbs
        offset = tbs
        tag, _start, end = _tlv(der, offset)
        if tag == 0xA0:  # [0] version
            offset = end
        for _ in range(3):  # serialNumber, signature, issuer
            offset = _tlv(der, offset)[2]
        _, validity, _ = _tlv(der, offset)
        after = _tlv(der, _tlv(der, validity)[2])
        text = der[after[1] : after[2]].decode("ascii")
        form = "%y%m%d%H%M%SZ" if after[0] == 0x17 else "%Y%m%d%H%M%SZ"
        return datetime.strptime(text, form).replace(tzinfo=timezone.utc)
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """DER tag, content start and content end of the element at ``offset``."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated")
    return tag, start, start + length
