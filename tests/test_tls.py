"""TLS end to end: a GitLab behind an https front with certificates made here (openssl),
through the real CLI: the host's trust store, tls_ca_file, client certificates, and one
clear line for each way TLS fails."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from test_security import Recorder, forward_to, send

from register_runner.testing.prefix import make_prefix, run_cli

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "30",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    return cert, key


def make_cert(
    folder: Path,
    ca: tuple[Path, Path],
    name: str,
    *,
    days: int = 30,
    names: str = "IP:127.0.0.1,DNS:localhost",
    client: bool = False,
) -> tuple[Path, Path]:
    cert, key, csr = folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    usage = "clientAuth" if client else "serverAuth"
    ext.write_text(f"subjectAltName={names}\nextendedKeyUsage={usage}\n")
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={name}",
    )
    if days < 0:
        # openssl x509 (3.0) cannot backdate; openssl ca can.
        (folder / "index.txt").write_text("")
        (folder / "serial").write_text("1000\n")
        config = folder / "ca.cnf"
        config.write_text(
            f"[ca]\ndefault_ca = d\n[d]\ndatabase = {folder}/index.txt\n"
            f"new_certs_dir = {folder}\nserial = {folder}/serial\ndefault_md = sha256\n"
            "policy = p\n[p]\ncommonName = supplied\n"
        )
        openssl(
            "ca",
            "-batch",
            "-config",
            str(config),
            "-cert",
            str(ca[0]),
            "-keyfile",
            str(ca[1]),
            "-in",
            str(csr),
            "-out",
            str(cert),
            "-notext",
            "-extfile",
            str(ext),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
        )
    else:
        openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca[0]),
            "-CAkey",
            str(ca[1]),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-extfile",
            str(ext),
            "-days",
            str(days),
        )
    key.chmod(0o600)
    return cert, key


def build_pki(tmp_path: Path) -> dict:
    folder = tmp_path / "pki"
    folder.mkdir(mode=0o700)
    site = make_ca(folder, "site-ca")
    make_cert(folder, site, "server")
    make_cert(folder, site, "expired", days=-1)
    make_cert(folder, site, "other", names="DNS:gitlab.other.example")
    make_cert(folder, site, "client", client=True)
    make_ca(folder, "unknown-ca")
    return pki_files(folder)


def pki_files(folder: Path) -> dict:
    """The (certificate, key) pairs build_pki made in ``folder``, by role."""
    stems = {"site": "site-ca", "server": "server", "expired": "expired"}
    stems.update({"other-name": "other", "client": "client", "unknown": "unknown-ca"})
    pairs = {role: (folder / f"{stem}.pem", folder / f"{stem}.key") for role, stem in stems.items()}
    return {"folder": folder, **pairs}


def copy_pki(pki: dict, tmp_path: Path) -> dict:
    """build_pki's certificates copied under ``tmp_path``, modes kept."""
    folder = tmp_path / "pki"
    shutil.copytree(pki["folder"], folder)
    return {
        name: folder if name == "folder" else tuple(folder / path.name for path in paths)
        for name, paths in pki.items()
    }


class TLSFront:
    """An https front for the fake GitLab; ``client_ca`` set: a client certificate is
    required. ``plain``: answers plain HTTP on the https url."""

    def __init__(self, gitlab_url: str, cert=None, client_ca=None, plain=False):
        self.recorder = Recorder(forward_to(gitlab_url, {}))
        server: ThreadingHTTPServer = self.recorder.server
        if not plain:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            if client_ca:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(str(client_ca))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.url = self.recorder.url.replace("http://", "https://")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.recorder.close()


def sync(prefix, env=None, *args, deadline="3"):
    environment = {"SSL_CERT_FILE": "/nonexistent", "SSL_CERT_DIR": "/nonexistent"}
    environment.update(env or {})
    return run_cli(
        ["sync", "--prefix", str(prefix.root), "--deadline", deadline, *args], env=environment
    )


def bundle(tmp_path: Path, *certs: Path) -> Path:
    path = tmp_path / "bundle.pem"
    path.write_text("".join(c.read_text() for c in certs))
    return path


def test_a_site_ca_in_the_hosts_trust_store_is_trusted(gitlab, pat, pki, tmp_path):
    with TLSFront(gitlab.url, pki["server"]) as front:
        prefix = make_prefix(tmp_path / "p", front.url, pat)
        trust = {"SSL_CERT_FILE": str(bundle(tmp_path, pki["site"][0])), "REQUESTS_CA_BUNDLE": ""}
        result = sync(prefix, trust)
    assert result.returncode == 0, result.stderr
    assert len(gitlab.runners()) == 1


def test_tls_ca_file_is_trusted_and_written_to_each_runner(gitlab, pat, pki, tmp_path):
    with TLSFront(gitlab.url, pki["server"]) as front:
        extra = f'tls_ca_file = "{pki["site"][0]}"\n'
        prefix = make_prefix(tmp_path / "p", front.url, pat, client_extra=extra)
        result = sync(prefix)
    assert result.returncode == 0, result.stderr
    assert prefix.runner("shell")["tls-ca-file"] == str(pki["site"][0])


def test_a_client_certificate_is_sent_and_written_to_each_runner(gitlab, pat, pki, tmp_path):
    cert, key = pki["client"]
    with TLSFront(gitlab.url, pki["server"], client_ca=pki["site"][0]) as front:
        base = f'tls_ca_file = "{pki["site"][0]}"\n'
        without = make_prefix(tmp_path / "without", front.url, pat, client_extra=base)
        refused = sync(without)
        extra = base + f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
        prefix = make_prefix(tmp_path / "p", front.url, pat, client_extra=extra)
        result = sync(prefix)
    # The alert, or (TLS 1.3, racing the close) the hang-up with the hint: both name TLS.
    assert refused.returncode == 3 and "TLS" in refused.stderr, refused.stderr
    assert "client certificate" in refused.stderr, refused.stderr
    assert result.returncode == 0, result.stderr
    entry = prefix.runner("shell")
    assert (entry["tls-cert-file"], entry["tls-key-file"]) == (str(cert), str(key))


@pytest.mark.parametrize(
    ("certificate", "trusted", "expected"),
    [
        ("server", "unknown", "is signed by an unknown issuer (set tls_ca_file, or add the CA"),
        ("expired", "site", "expired on 2020-02-01"),
        ("other-name", "site", "certificate is for gitlab.other.example, not 127.0.0.1"),
    ],
)
def test_each_tls_failure_has_its_own_full_line(pki, tmp_path, certificate, trusted, expected):
    with (
        Recorder(lambda h, b: send(h, 200)) as backend,
        TLSFront(backend.url, pki[certificate]) as front,
    ):
        extra = f'tls_ca_file = "{pki[trusted][0]}"\n'
        prefix = make_prefix(
            tmp_path / "p", front.url, "glpat-tls-test-token-01", client_extra=extra
        )
        result = sync(prefix)
    assert result.returncode == 3, result.stderr
    assert expected in result.stderr, result.stderr
    assert "..." not in result.stderr and result.stderr.count("\n") <= 2


def test_plain_http_on_an_https_url_says_so(gitlab, tmp_path):
    with TLSFront(gitlab.url, plain=True) as front:
        prefix = make_prefix(tmp_path / "p", front.url, "glpat-tls-test-token-01")
        result = sync(prefix)
    assert result.returncode == 3
    assert "plain HTTP answered on an https url" in result.stderr, result.stderr


def test_a_tls_file_others_can_write_is_refused(pki, tmp_path):
    pki["site"][0].chmod(0o666)
    extra = f'tls_ca_file = "{pki["site"][0]}"\n'
    prefix = make_prefix(tmp_path / "p", "https://127.0.0.1:9", "glpat-x-0123", client_extra=extra)
    result = sync(prefix)
    assert result.returncode == 2 and "writable by group or others" in result.stderr


def test_the_deadline_watchdog_also_ends_a_tls_read(pki, tmp_path):
    """A TLS front that accepts the handshake, then trickles an answer that never ends:
    each byte comes well within --timeout, so only the deadline's watchdog, which shuts
    the socket under the blocked read, ends the call."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki["server"][0]), str(pki["server"][1]))
    import socket
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle(conn):
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)  # the request
            tls.sendall(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
            while not stop.wait(0.05):
                tls.sendall(b"x")

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    extra = f'tls_ca_file = "{pki["site"][0]}"\n'
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    prefix = make_prefix(tmp_path / "p", url, "glpat-tls-test-token-01", client_extra=extra)
    threading.Timer(15, stop.set).start()  # without the watchdog: a failure, not a hang
    started = time.monotonic()
    try:
        result = sync(prefix, None, "--timeout", "30", deadline="1")
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 8
    assert result.returncode == 3 and "deadline" in result.stderr, result.stderr
