"""transport.Channel, the one HTTP path of every call and page: kept-alive connections
that GitLab closed, one origin, proxies from the environment, and the certificate's name,
over real sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import errno
import gc
import select
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from register_runner import tls
from register_runner.testing.fake_gitlab import FakeGitLab, TLSFiles
from register_runner.testing.prefix import make_prefix, run_cli
from register_runner.testing.scripted import Scripted
from register_runner.testing.tls import make_ca, make_cert
from register_runner.transport import (
    CHUNK,
    MAX_ANSWER_BYTES,
    Channel,
    Deadline,
    NetworkError,
    Oversize,
    Proxy,
    Redirect,
    cleartext,
    environment_proxy,
    network_failure,
)

HEADERS = {"Content-Type": "application/json"}


def channel(url: str, context=None) -> Channel:
    return Channel(
        url, Deadline(10), timeout=5.0, ssl_context=context, proxy=environment_proxy(url)
    )


@contextlib.contextmanager
def raw_server(*answers: bytes):
    """Answers the n-th connection's first request with ``answers[n]`` (nothing: a hang-up
    without an answer) and closes it without saying so first (no ``Connection: close``),
    as a front whose keep-alive timeout passed does. Keeps each request line; each close
    is counted in ``closed`` once done."""
    listener = socket.create_server(("127.0.0.1", 0))
    served: list[bytes] = []
    closed = threading.Semaphore(0)

    def serve():
        with contextlib.suppress(OSError):
            for answer in answers:
                conn, _ = listener.accept()
                with conn:
                    served.append(conn.recv(65536).split(b"\r\n", 1)[0])
                    conn.sendall(answer)
                closed.release()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], served, closed
    finally:
        listener.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def test_after_a_failed_call_the_next_one_gets_a_new_connection():
    with raw_server(b"", OK) as (port, served, _):
        url = f"http://127.0.0.1:{port}"
        path = channel(url)
        with pytest.raises(NetworkError) as raised:
            path.request("POST", url + "/api/v4/user/runners", body=b"{}", headers={})
        assert raised.value.connected is True  # it may have reached GitLab
        assert path.request("GET", url + "/api/v4/version", headers={}).status == 200
    assert served == [b"POST /api/v4/user/runners HTTP/1.1", b"GET /api/v4/version HTTP/1.1"]


def test_a_plain_http_proxy_gets_the_absolute_url_with_an_ipv6_host_bracketed():
    with raw_server(OK) as (port, served, _):
        origin = "http://[fd00::1]:8080"
        path = Channel(origin, Deadline(10), 5.0, proxy=Proxy("127.0.0.1", port, {"X-Proxy": "1"}))
        assert path.request("GET", origin + "/api/v4/version", headers={}).status == 200
    assert served == [b"GET http://[fd00::1]:8080/api/v4/version HTTP/1.1"]


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://gitlab.example", True),
        ("http://10.0.0.5:8080", True),
        ("http://[fd00::1]", True),
        ("http://localhost:3000", False),
        ("http://gitlab.localhost", False),
        ("http://127.0.0.1:9", False),
        ("http://127.0.5.1", False),
        ("http://[::1]:8080", False),
        ("https://gitlab.example", False),
        ("https://10.0.0.5", False),
    ],
)
def test_cleartext_is_plain_http_to_another_host(url, warned):
    """Tokens in the clear over the network are warned about; to this host they are not."""
    assert cleartext(url) is warned


def test_each_call_has_its_timeout_not_only_the_deadline():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        path = Channel(url, Deadline(30), timeout=0.5, proxy=None)
        started = time.monotonic()
        with pytest.raises(NetworkError):
            path.request("GET", url + "/api/v4/version", headers={})
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("size", [MAX_ANSWER_BYTES, MAX_ANSWER_BYTES + 1])
def test_an_answer_is_read_whole_up_to_the_cap(size):
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
    with raw_server(head + body) as (port, _, _):
        url = f"http://127.0.0.1:{port}"
        if size > MAX_ANSWER_BYTES:
            with pytest.raises(Oversize):
                channel(url).request("GET", url + "/api/v4/runners", headers={})
        else:
            assert channel(url).request("GET", url + "/api/v4/runners", headers={}).body == body


def test_an_answer_without_a_length_is_capped_as_it_arrives():
    head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    with raw_server(head + b"x" * (MAX_ANSWER_BYTES + CHUNK)) as (port, _, _):
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(Oversize):
            channel(url).request("GET", url + "/api/v4/runners", headers={})


def test_a_relative_redirect_names_gitlabs_own_host():
    answer = b"HTTP/1.1 302 Found\r\nLocation: /users/sign_in\r\nContent-Length: 0\r\n\r\n"
    with raw_server(answer) as (port, _, _):
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(Redirect) as raised:
            channel(url).request("GET", url + "/api/v4/runners", headers={})
    assert raised.value.target == f"http://127.0.0.1:{port}"


def test_the_watchdog_does_not_hold_the_process_open():
    """The timer sleeps until the deadline: a process whose run is done must not wait."""
    code = (
        "import socket\n"
        "from register_runner.transport import Deadline\n"
        "a, b = socket.socketpair()\n"
        "deadline = Deadline(120)\n"
        "deadline.watch(a)\n"
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert time.monotonic() - started < 30


def test_a_deadline_counts_from_its_start():
    deadline = Deadline(10)
    assert 0 <= deadline.elapsed() < 5 and 5 < deadline.remaining() <= 10


def test_a_socket_watched_after_the_deadline_is_shut_at_once():
    deadline = Deadline(0)
    watched, other = socket.socketpair()
    with watched, other:
        watched.settimeout(5)
        deadline.watch(watched)
        assert watched.recv(1) == b""
    deadline.watch(watched)  # closed by now: nothing to shut, and no error


def test_a_deadline_dropped_before_it_passes_leaves_no_timer_asleep():
    deadline = Deadline(60)
    watched, other = socket.socketpair()
    with watched, other:
        deadline.watch(watched)
        timer = deadline._timer
        del deadline
        gc.collect()
        timer.join(5)
        assert not timer.is_alive()


def test_the_watchdog_shuts_what_it_watches_when_the_deadline_passes():
    deadline = Deadline(0.2)
    watched, other = socket.socketpair()
    with watched, other:
        watched.settimeout(5)  # without the watchdog: a timeout, not a hang
        deadline.watch(watched)
        assert watched.recv(1) == b""  # shut down under the blocked read


def test_a_kept_alive_connection_gitlab_closed_is_replaced_before_a_post():
    with raw_server(OK, OK, OK) as (port, served, closed):
        url = f"http://127.0.0.1:{port}"
        path = channel(url)
        for _ in range(3):
            answer = path.request("POST", url + "/api/v4/user/runners", body=b"{}", headers={})
            assert answer.status == 200 and answer.body == b"{}"
            assert closed.acquire(timeout=10)  # GitLab's end is closed before the next call
    # Each POST went out once, on a new connection: none was lost on a dead one.
    assert served == [b"POST /api/v4/user/runners HTTP/1.1"] * 3


def test_one_connection_serves_every_call_of_a_worker():
    with Scripted() as server:
        server.post("/runners/verify", status_code=200, json={})
        path = channel(server.url)
        sockets = set()
        for _ in range(3):
            path.request("POST", server.url + "/api/v4/runners/verify", body=b"{}", headers={})
            sockets.add(path._connection.sock.getsockname())
    assert len(sockets) == 1 and server.call_count == 3


def test_a_url_on_another_origin_is_refused_before_connecting():
    with pytest.raises(Redirect) as raised:
        channel("http://127.0.0.1:9").request("GET", "http://evil.test/api/v4/x", headers={})
    assert raised.value.target == "http://evil.test:80"


def test_a_link_to_a_next_page_on_another_origin_is_refused():
    elsewhere = '<https://evil.test/api/v4/runners/all?page=2>; rel="next"'
    with Scripted() as server:
        server.get("/runners/all", json=[], headers={"Link": elsewhere, "X-Next-Page": "2"})
        with pytest.raises(Redirect) as raised:
            channel(server.url).request("GET", server.url + "/api/v4/runners/all", headers={})
    assert raised.value.target == "https://evil.test:443" and server.call_count == 1


H = "gitlab.example"
NO_ROUTE = OSError(errno.EHOSTUNREACH, "No route to host")
CLOSED = f"{H}:443 closed the connection before answering in full"


@pytest.mark.parametrize(
    ("error", "url", "connected", "expected"),
    [
        (
            socket.gaierror(-2, "Name or service not known"),
            f"https://{H}",
            False,
            (f"cannot connect: host {H} does not resolve", False, True),
        ),
        (
            ConnectionRefusedError(111, "refused"),
            f"http://{H}",
            False,
            (f"cannot connect: connection refused by {H}:80", False, True),
        ),
        (
            socket.timeout("timed out"),
            f"https://{H}:8443",
            False,
            (f"cannot connect: no connection to {H}:8443 within 2.5 s", False, False),
        ),
        (
            NO_ROUTE,
            f"https://{H}",
            False,
            (f"cannot connect to {H}:443: no route to host", False, True),
        ),
        (
            OSError("no strerror"),
            f"https://{H}",
            False,
            (f"cannot connect to {H}:443: failed", False, True),
        ),
        # A connection stood: the request may have reached GitLab.
        (
            socket.timeout("timed out"),
            f"https://{H}",
            True,
            (f"no answer from {H}:443 within 2.5 s", True, False),
        ),
        (
            ConnectionResetError(104, "reset"),
            f"http://{H}",
            True,
            (f"{H}:80 closed the connection before answering in full", True, False),
        ),
        (
            ConnectionResetError(104, "reset"),
            f"https://{H}",
            True,
            (
                CLOSED + " (if a TLS front requires a client certificate: set tls_cert_file and "
                "tls_key_file)",
                True,
                False,
            ),
        ),
    ],
)
def test_each_network_failure_says_what_and_whether_gitlab_may_have_it(
    error, url, connected, expected
):
    assert network_failure(error, url, 2.5, connected) == expected


def test_a_tls_failure_is_named_as_such_and_not_sent():
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code, error.verify_message = 18, "self-signed certificate"
    reason, sent, unreachable = network_failure(error, f"https://{H}", 2.5, True)
    assert reason.startswith("TLS: ") and (sent, unreachable) == (False, False)


def test_a_refused_connection_is_not_a_sent_request():
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(NetworkError) as raised:
        channel(url).request("POST", url + "/api/v4/user/runners", body=b"{}", headers={})
    assert raised.value.connected is False
    reason, sent, unreachable = network_failure(
        raised.value.cause, url, 5.0, raised.value.connected
    )
    assert (reason, sent, unreachable) == (
        f"cannot connect: connection refused by 127.0.0.1:{port}",
        False,
        True,
    )


# -- proxies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "origin", "expected"),
    [
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, "https://gitlab.example", "proxy.example"),
        ({"https_proxy": "proxy.example:3128"}, "https://gitlab.example", "proxy.example"),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, "https://gitlab.example", None),
        ({"ALL_PROXY": "http://proxy.example:3128"}, "https://gitlab.example", "proxy.example"),
        (
            {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": ".example"},
            "https://gitlab.example",
            None,
        ),
        ({}, "https://gitlab.example", None),
    ],
)
def test_the_proxy_comes_from_the_environment(monkeypatch, environment, origin, expected):
    for name in ("HTTPS", "HTTP", "ALL", "NO"):
        monkeypatch.delenv(f"{name}_PROXY", raising=False)
        monkeypatch.delenv(f"{name.lower()}_proxy", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    proxy = environment_proxy(origin)
    assert (proxy.host if proxy else None) == expected
    if proxy:
        assert proxy.port == 3128 and proxy.headers == {}


def test_proxy_credentials_go_to_the_proxy_only(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://us%40er:p%3Ass@proxy.example:8080")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxy = environment_proxy("https://gitlab.example")
    assert proxy is not None and proxy.port == 8080
    # base64 of "us@er:p:ss"
    assert proxy.headers == {"Proxy-Authorization": "Basic dXNAZXI6cDpzcw=="}


@contextlib.contextmanager
def connect_proxy():
    """A CONNECT proxy on 127.0.0.1 that tunnels to whatever it is asked for and keeps
    each request line it got."""
    listener = socket.create_server(("127.0.0.1", 0))
    asked: list[bytes] = []

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError), a, b:
            while True:
                ready, _, _ = select.select([a, b], [], [], 5)
                if not ready:
                    return
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)

    def serve():
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                head = b""
                while b"\r\n\r\n" not in head:
                    head += client.recv(4096)
                line = head.split(b"\r\n", 1)[0]
                asked.append(line)
                host, port = line.split()[1].decode().rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", asked
    finally:
        listener.close()


def test_https_goes_through_the_proxys_tunnel_and_checks_gitlabs_certificate(monkeypatch, tmp_path):
    ca = make_ca(tmp_path)
    cert, key = make_cert(ca, tmp_path, names=("localhost",))
    with FakeGitLab(tls=TLSFiles(cert, key)) as gitlab, connect_proxy() as (proxy, asked):
        port = gitlab.url.rsplit(":", 1)[1]
        url = f"https://localhost:{port}"
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        path = channel(url, tls.context(str(ca.cert)))
        answer = path.request("GET", url + "/api/v4/version", headers={})
    assert asked == [f"CONNECT localhost:{port} HTTP/1.0".encode()]
    assert answer.status == 401  # GitLab's own answer, from the far end of the tunnel


# -- the certificate's name --------------------------------------------------------------


class Peer:
    def __init__(self, *names: tuple[str, str]) -> None:
        self.names = names

    def getpeercert(self):
        return {"subjectAltName": self.names} if self.names else {}


@pytest.mark.parametrize(
    ("names", "host", "matches"),
    [
        ((("DNS", "gitlab.example"),), "gitlab.example", True),
        ((("DNS", "GitLab.Example"),), "gitlab.example", True),
        ((("DNS", "gitlab.example."),), "gitlab.example", True),
        ((("DNS", "*.example"),), "gitlab.example", False),  # no wildcard over a top label
        ((("DNS", "*.corp.example"),), "gitlab.corp.example", True),
        ((("DNS", "*.corp.example"),), "a.gitlab.corp.example", False),  # one label only
        ((("DNS", "*.corp.example"),), "corp.example", False),
        ((("DNS", "git*.corp.example"),), "gitlab.corp.example", False),  # no partial
        ((("DNS", "other.example"),), "gitlab.example", False),
        ((("IP Address", "127.0.0.1"),), "127.0.0.1", True),
        ((("DNS", "127.0.0.1"),), "127.0.0.1", False),  # an address must be an IP name
        ((("IP Address", "::1"),), "::1", True),
        ((("IP Address", "127.0.0.2"),), "127.0.0.1", False),
        ((), "gitlab.example", False),
    ],
)
def test_the_certificate_must_name_the_host(names, host, matches):
    if matches:
        tls.check_peer_name(Peer(*names), host)
    else:
        with pytest.raises(tls.CertificateError) as raised:
            tls.check_peer_name(Peer(*names), host)
        described = tls.describe(raised.value, host, 443)
        assert described is not None and described.startswith("certificate is for")
        assert described.endswith(f"not {host}")


def test_a_certificate_for_another_name_is_refused_after_the_handshake(tmp_path):
    ca = make_ca(tmp_path)
    cert, key = make_cert(ca, tmp_path, names=("gitlab.other.example",))
    with FakeGitLab(tls=TLSFiles(cert, key)) as gitlab:
        path = channel(gitlab.url, tls.context(str(ca.cert)))
        with pytest.raises(NetworkError) as raised:
            path.request("GET", gitlab.url + "/api/v4/version", headers={})
    assert raised.value.connected is False  # nothing was sent: the token stayed here
    reason, _, _ = network_failure(raised.value.cause, gitlab.url, 5.0, False)
    assert reason == "TLS: certificate is for gitlab.other.example, not 127.0.0.1"
    assert isinstance(raised.value.cause, (tls.CertificateError, ssl.SSLError))


def test_sync_reaches_an_https_gitlab_through_the_proxy_the_unit_names(tmp_path):
    """End to end: the CLI, HTTPS_PROXY as an EnvironmentFile sets it, a CONNECT proxy
    and a GitLab behind it whose certificate the client_config's tls_ca_file trusts."""
    ca = make_ca(tmp_path)
    cert, key = make_cert(ca, tmp_path, names=("localhost",))
    with FakeGitLab(tls=TLSFiles(cert, key)) as gitlab, connect_proxy() as (proxy, asked):
        token = gitlab.add_access_token(
            scopes=("create_runner", "manage_runner", "read_api"), admin=True
        )
        url = "https://localhost:" + gitlab.url.rsplit(":", 1)[1]
        prefix = make_prefix(
            tmp_path / "p", url, token, client_extra=f'tls_ca_file = "{ca.cert}"\n'
        )
        environment = {"HTTPS_PROXY": proxy, "NO_PROXY": "", "no_proxy": ""}
        result = run_cli(["sync", "--prefix", str(prefix.root)], env=environment)
        assert result.returncode == 0, result.stderr
        assert len(gitlab.runners()) == 1 and asked
        assert all(line.startswith(b"CONNECT localhost:") for line in asked)
        assert prefix.runner("shell")["token"].startswith("glrt-")
