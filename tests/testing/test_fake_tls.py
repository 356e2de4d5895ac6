"""The fake GitLab over TLS, with certificates from register_runner.testing.tls."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests

from register_runner.testing.fake_gitlab import FakeGitLab, TLSFiles

pytest.importorskip("cryptography")

from register_runner.testing.tls import make_ca, make_cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca = make_ca(d)
    return {
        "ca": ca,
        "server": make_cert(ca, d),
        "client": make_cert(ca, d, client=True),
        "expired": make_cert(ca, d, expired=True),
        "other-name": make_cert(ca, d, names=("gitlab.example.com",)),
        "other-ca": make_ca(d / "other"),
    }


def version(gl, **kwargs):
    pat = gl.add_access_token(scopes=("read_api",))
    return requests.get(
        gl.api_url + "/version", headers={"PRIVATE-TOKEN": pat}, timeout=10, **kwargs
    )


def test_make_cert_never_overwrites(certs, tmp_path):
    first = make_cert(certs["ca"], tmp_path)
    second = make_cert(certs["ca"], tmp_path)
    assert first.cert != second.cert and first.key != second.key
    assert first.cert.read_bytes() != second.cert.read_bytes()
    assert (first.key.stat().st_mode & 0o777) == 0o600


def test_https_verified_with_the_ca_and_refused_without(certs):
    with FakeGitLab(tls=TLSFiles(*certs["server"])) as gl:
        assert gl.url.startswith("https://127.0.0.1:")
        assert version(gl, verify=str(certs["ca"].cert)).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            version(gl, verify=True)  # certifi's CAs do not know the test CA
        with pytest.raises(requests.exceptions.SSLError):
            version(gl, verify=str(certs["other-ca"].cert))


def test_pagination_links_are_https(certs):
    with FakeGitLab(tls=TLSFiles(*certs["server"])) as gl:
        pat = gl.add_access_token(admin=True)
        for _ in range(3):
            gl.add_runner()
        resp = requests.get(
            gl.api_url + "/runners/all?per_page=1",
            headers={"PRIVATE-TOKEN": pat},
            verify=str(certs["ca"].cert),
            timeout=10,
        )
        assert resp.links["next"]["url"].startswith(gl.api_url + "/runners/all?")


def test_expired_certificate_fails_verification(certs):
    with FakeGitLab(tls=TLSFiles(*certs["expired"])) as gl:
        expect = pytest.raises(requests.exceptions.SSLError, match="expired")
        with expect:
            version(gl, verify=str(certs["ca"].cert))


def test_name_mismatch_fails_verification(certs):
    with FakeGitLab(tls=TLSFiles(*certs["other-name"])) as gl:
        expect = pytest.raises(requests.exceptions.SSLError, match=r"match|mismatch")
        with expect:
            version(gl, verify=str(certs["ca"].cert))


def test_client_certificate_required(certs):
    server = certs["server"]
    client = certs["client"]
    with FakeGitLab(tls=TLSFiles(server.cert, server.key, client_ca=certs["ca"].cert)) as gl:
        ok = version(gl, verify=str(certs["ca"].cert), cert=(str(client.cert), str(client.key)))
        assert ok.status_code == 200
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            version(gl, verify=str(certs["ca"].cert))
        # A certificate from a CA the front does not trust is no better.
        stranger = make_cert(certs["other-ca"], client.cert.parent / "stranger", client=True)
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            version(gl, verify=str(certs["ca"].cert), cert=(str(stranger.cert), str(stranger.key)))
        assert [r.status for r in gl.requests] == [200]


def test_plain_http_on_the_tls_port_gets_an_answer_and_the_fake_keeps_serving(certs):
    with FakeGitLab(tls=TLSFiles(*certs["server"])) as gl:
        plain = gl.url.replace("https://", "http://")
        resp = requests.get(plain + "/api/v4/version", timeout=10)
        assert resp.status_code == 400
        assert "plain HTTP request was sent to HTTPS port" in resp.text
        # A client that connects and says nothing does not stall the others (were the
        # handshake done in accept(), this would wait for its 10 s timeout).
        with socket.create_connection(("127.0.0.1", gl.port)):
            pat = gl.add_access_token(scopes=("read_api",))
            resp = requests.get(
                gl.api_url + "/version",
                headers={"PRIVATE-TOKEN": pat},
                verify=str(certs["ca"].cert),
                timeout=8,
            )
            assert resp.status_code == 200


def test_tls_client_sees_drop_after(certs):
    with FakeGitLab(tls=TLSFiles(*certs["server"])) as gl:
        gl.misbehave("drop_after")
        context = ssl.create_default_context(cafile=str(certs["ca"].cert))
        raw = socket.create_connection(("127.0.0.1", gl.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /api/v4/version HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                data = sock.recv(100)
            except (ssl.SSLError, ConnectionError):
                data = b""
            assert data == b""
