"""What the tool sends where and prints, against hostile servers, through the real CLI.

Until the fake GitLab's misbehaviours are on main, the hostile servers are small local
ones defined here: each records what reached it, so "did the token leave?" is checked
on the wire, not guessed.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from register_runner import files
from register_runner.errors import InputError
from register_runner.testing.prefix import make_prefix, run_cli

TOKEN = "glpat-security-test-token-0123456789"
COMMANDS = (["sync"], ["plan"], ["verify"], ["unregister"])


class Recorder:
    """A local HTTP server: ``answer(handler)`` decides each answer; every request is
    recorded (method, path, headers, body)."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, bytes], None]) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append((self.command, self.path, dict(self.headers), body))
                answer(self, body)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # close() waits for the loop to see the shutdown: up to poll_interval (0.5 s by
        # default), in every test.
        serve = functools.partial(self.server.serve_forever, poll_interval=0.01)
        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def send(handler, status: int, body: bytes = b"{}", **headers: str) -> None:
    handler.send_response(status)
    headers.setdefault("Content-Type", "application/json")
    for key, value in headers.items():
        handler.send_header(key.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def escapings(secret: str) -> list[str]:
    return [
        secret,
        json.dumps(secret)[1:-1],
        repr(secret),
        urllib.parse.quote(secret, safe=""),
        str(secret.encode()),
        secret[6:],  # the token without its prefix
    ]


def assert_no_token(result, *secrets: str) -> None:
    text = result.stdout + result.stderr
    for secret in secrets:
        for form in escapings(secret):
            assert form not in text, f"{form!r} printed:\n{text}"


def run(prefix, *args: str, **kwargs):
    return run_cli([*args, "--prefix", str(prefix.root)], **kwargs)


# -- the token never leaves for another host ----------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_an_error_and_the_token_stays_home(tmp_path, status):
    with Recorder(lambda h, b: send(h, 201, b'{"id": 1, "token": "glrt-stolen"}')) as elsewhere:
        target = elsewhere.url + "/api/v4/user/runners"
        with Recorder(lambda h, b: send(h, status, Location=target)) as front:
            prefix = make_prefix(tmp_path / "p", front.url, TOKEN)
            result = run(prefix, "sync", "--json", "--deadline", "5")
    assert result.returncode == 1, result.stderr
    assert f"redirect to {elsewhere.url.replace('http://', 'http://')}" in result.stderr
    assert "put the final url in the client_config" in result.stderr
    assert elsewhere.requests == []
    assert_no_token(result, TOKEN)


def lister(pages: Callable[[BaseHTTPRequestHandler], None]):
    """A GitLab whose create answers 502 (so the run journals a create that may have
    happened, and the next run lists runners to find it) and whose lists are ``pages``."""

    def answer(handler, body):
        if handler.command == "GET":
            pages(handler)
        else:
            send(handler, 502)

    return answer


def test_a_pagination_link_elsewhere_is_not_followed(tmp_path):
    with Recorder(lambda h, b: send(h, 200, b"[]")) as elsewhere:

        def pages(handler):
            link = f'<{elsewhere.url}/api/v4/runners/all?page=2>; rel="next"'
            send(handler, 200, b"[]", Link=link, X_Next_Page="2")

        with Recorder(lister(pages)) as gitlab:
            prefix = make_prefix(tmp_path / "p", gitlab.url, TOKEN)
            run(prefix, "sync")
            result = run(prefix, "sync", "--deadline", "5")
    assert any(method == "GET" for method, *_ in gitlab.requests), result.stderr
    assert elsewhere.requests == []
    assert "another origin" in result.stderr, result.stderr


def test_endless_pagination_ends_at_the_deadline(tmp_path):
    def pages(handler):
        # As GitLab pages: X-Next-Page and a Link to the next page, here without end.
        parts = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parts.query)
        following = int(query.get("page", ["1"])[0]) + 1
        link = f"http://{handler.headers['Host']}{parts.path}?page={following}&per_page=100"
        send(handler, 200, b"[]", X_Next_Page=str(following), Link=f'<{link}>; rel="next"')

    with Recorder(lister(pages)) as gitlab:
        prefix = make_prefix(tmp_path / "p", gitlab.url, TOKEN)
        journaled = run(prefix, "sync")  # a 502 to the create: journaled, not retried
        assert "502" in journaled.stderr, journaled.stderr
        started = time.monotonic()
        result = run(prefix, "sync", "--deadline", "2", timeout=60)
    assert time.monotonic() - started < 45  # loose: without the bound it never ends
    assert "deadline" in result.stderr, result.stderr
    assert sum(method == "GET" for method, *_ in gitlab.requests) > 2, result.stderr


# -- nothing secret is printed ----------------------------------------------------------


def echo(handler, body):
    """A proxy that echoes the request in a 422 error body, headers and all."""
    said = {"message": f"{handler.requestline} {dict(handler.headers)!r} {body!r}"}
    send(handler, 422, json.dumps(said).encode())


def forward_to(url: str, mode: dict) -> Callable[[BaseHTTPRequestHandler, bytes], None]:
    """Pass requests on to ``url`` (the fake GitLab), or misbehave as ``mode["fault"]``
    says: a front that the test turns hostile once the runners exist."""
    target = urllib.parse.urlsplit(url)

    def answer(handler, body):
        fault = mode.get("fault")
        if fault is not None:
            return fault(handler, body)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        connection.request(handler.command, handler.path, body or None, headers)
        response = connection.getresponse()
        kept = {k: v for k, v in response.getheaders() if k.lower() == "content-type"}
        send(handler, response.status, response.read(), **kept)
        connection.close()

    return answer


def garbage(handler, body):
    send(handler, 201, b'{"id": 1, "token": "glrt-trunc')


def html(handler, body):
    send(handler, 200, b"<html>Sign in</html>", Content_Type="text/html")


def redirect(handler, body):
    send(handler, 307, Location="http://127.0.0.1:9/api/v4/runners")


FAULTS = {"echo": echo, "garbage": garbage, "html": html, "redirect": redirect}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_no_command_prints_a_token_under_any_fault(gitlab, pat, tmp_path, fault):
    mode: dict = {}
    with Recorder(forward_to(gitlab.url, mode)) as front:
        prefix = make_prefix(
            tmp_path / "p",
            front.url,
            pat,
            executors={"shell": 'executor = "shell"\n', "docker": 'executor = "docker"\n'},
        )
        assert run(prefix, "sync").returncode == 0
        runner_tokens = [r["token"] for r in prefix.runners()]
        prefix.write_executor("extra", 'executor = "shell"\ntags = ["x"]\n')
        mode["fault"] = FAULTS[fault]
        for command in COMMANDS:
            # A second: the html fault is retried up to the deadline, saying the same.
            result = run(prefix, *command, "--verbose", "--json", "--deadline", "1")
            assert "internal error" not in result.stderr, result.stderr
            assert_no_token(result, pat, *runner_tokens)
    assert len(front.requests) > 3


def test_a_token_file_with_a_second_line_is_refused_unprinted(tmp_path):
    prefix = make_prefix(tmp_path / "p", "http://127.0.0.1:9", TOKEN)
    secret_file = prefix.root / "secrets" / "gitlab.pat"
    secret_file.write_text(TOKEN + "\n# expires 2027-01-31\n")
    result = run(prefix, "sync", "--verbose", "--json")
    assert result.returncode == 2
    assert str(secret_file) in result.stderr and "more than one line" in result.stderr
    assert_no_token(result, TOKEN)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xef\xbb\xbf" + TOKEN.encode(), "byte-order mark"),
        (b"", "empty"),
        (TOKEN.encode() + b"\0", "NUL"),
        (TOKEN.encode() + b"\r\n", None),
    ],
)
def test_a_token_file_is_one_token(tmp_path, content, problem):
    with Recorder(lambda h, b: send(h, 503)) as gitlab:
        prefix = make_prefix(tmp_path / "p", gitlab.url, TOKEN)
        (prefix.root / "secrets" / "gitlab.pat").write_bytes(content)
        result = run(prefix, "sync", "--deadline", "1")
        if problem is None:
            assert result.returncode == 3, result.stderr  # read, then GitLab failing
            assert gitlab.requests[0][2].get("PRIVATE-TOKEN") == TOKEN
        else:
            assert result.returncode == 2 and problem in result.stderr, result.stderr
            assert gitlab.requests == []
    assert "Traceback" not in result.stderr


def test_a_url_with_a_password_is_refused_unprinted(tmp_path):
    prefix = make_prefix(tmp_path / "p", "https://admin:hunter2-secret@gitlab.example", TOKEN)
    result = run(prefix, "sync", "--json")
    assert result.returncode == 2
    assert "user name or password" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("mode", [0o622, 0o660])
def test_a_token_file_others_can_write_is_refused(tmp_path, mode):
    prefix = make_prefix(tmp_path / "p", "http://127.0.0.1:9", TOKEN)
    secret_file = prefix.root / "secrets" / "gitlab.pat"
    secret_file.chmod(mode)
    result = run(prefix, "plan")
    assert result.returncode == 2 and str(secret_file) in result.stderr, result.stderr
    assert "writable by group or others" in result.stderr


def test_plain_http_to_another_host_is_warned_about(tmp_path):
    prefix = make_prefix(tmp_path / "p", "http://gitlab.invalid", TOKEN)
    result = run(prefix, "sync", "--deadline", "1")
    assert result.stderr.count("plain_http") == 1, result.stderr


# -- the deadline is a wall-clock bound --------------------------------------------------


@contextlib.contextmanager
def trickling(headers_too: bool):
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def talk(conn):
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)
            if not headers_too:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not stop.is_set():
                conn.sendall(b"H" if headers_too else b" ")
                time.sleep(0.1)

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=talk, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_trickling_answer_ends_at_the_deadline(tmp_path, headers_too):
    with trickling(headers_too) as url:
        prefix = make_prefix(tmp_path / "p", url, TOKEN)
        started = time.monotonic()
        # --timeout not below --deadline: a read stalled by a loaded machine also ends at
        # the deadline, never with a timeout of its own.
        result = run(prefix, "sync", "--deadline", "1", "--timeout", "2", timeout=60)
    assert result.returncode == 3, result.stderr  # a fresh host: nothing to keep
    assert "deadline" in result.stderr
    assert time.monotonic() - started < 45  # loose: without the bound it never ends


# "0" and "nan": Retry-After read as 0 and as nothing ("-1" reads as 0: test_gitlab.py).
@pytest.mark.parametrize("value", ["0", "nan"])
def test_a_useless_retry_after_is_no_tight_loop(tmp_path, value):
    with Recorder(lambda h, b: send(h, 429, Retry_After=value)) as gitlab:
        prefix = make_prefix(tmp_path / "p", gitlab.url, TOKEN)
        result = run(prefix, "sync", "--deadline", "3")
    assert result.returncode == 3, result.stderr
    assert len(gitlab.requests) <= 3, len(gitlab.requests)  # a second and more apart


@pytest.mark.parametrize("status", [408, 501, 505, 599])
def test_odd_server_errors_are_transient(tmp_path, status):
    def answer(handler, body):
        # The create answers the odd status; the access token's expiry is not known (404),
        # so that its check does not spend the deadline the create is judged by.
        send(handler, status if handler.command == "POST" else 404)

    with Recorder(answer) as gitlab:
        prefix = make_prefix(tmp_path / "p", gitlab.url, TOKEN)
        # 408: time for a retry, which is sent only while half a second is left.
        result = run(prefix, "sync", "--deadline", "2")
    assert result.returncode == 3, result.stderr
    assert f"create shell: {gitlab.url}: create runner: " in result.stderr
    creates = [r for r in gitlab.requests if r[:2] == ("POST", "/api/v4/user/runners")]
    if status == 408:
        # The request never reached GitLab: sent again while the deadline allows.
        assert f"GitLab answered {status}; gave up after" in result.stderr
        assert len(creates) >= 2
    else:  # GitLab may have acted: never sent again in the run, journaled for the next
        assert f"GitLab answered {status}; it may have acted" in result.stderr
        assert "looks for the runner by its marker" in result.stderr and len(creates) == 1
    assert not prefix.output.exists()


def test_an_html_sign_in_page_is_transient(tmp_path):
    page = b"<!DOCTYPE html><html><body>Sign in</body></html>"
    with Recorder(lambda h, b: send(h, 200, page, Content_Type="text/html")) as gitlab:
        prefix = make_prefix(tmp_path / "p", gitlab.url, TOKEN)
        result = run(prefix, "sync", "--deadline", "2")
    assert result.returncode == 3 and "HTML page" in result.stderr, result.stderr


# -- names and files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [b"bad\nname.toml", b"caf\xe9.toml"])
def test_an_executor_file_name_that_is_not_text_is_refused_and_never_printed_raw(tmp_path, name):
    """Its runner is held like any bad file's; the name, whatever bytes it has, cannot
    break the one error line (nor start a log line of its own)."""
    with Recorder(lambda h, b: send(h, 200, b"{}")) as gitlab:
        prefix = make_prefix(tmp_path / "p", gitlab.url, TOKEN, executors={})
        path = os.path.join(os.fsencode(prefix.executor_dir), name)
        Path(os.fsdecode(path)).write_text('executor = "shell"\n')
        result = run(prefix, "sync")
    assert result.returncode == 2 and "rename the file" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert [r for r in gitlab.requests if r[0] != "GET"] == []


def test_a_dangling_lock_symlink_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    lock = tmp_path / "lock"
    lock.symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link"), files.exclusive_lock(lock, 1):
        pass
    assert not outside.exists()


@pytest.mark.parametrize("name", ["../../evil", "..", "a/b", ".hidden", "", "x\ny"])
def test_an_instance_name_must_be_a_plain_name(name):
    with pytest.raises(InputError):
        files.check_instance_name(name)
    files.check_instance_name("main")


def test_writing_where_a_folder_stands_names_the_path(tmp_path):
    (tmp_path / "config.main.toml").mkdir()
    with pytest.raises(InputError, match=r"config\.main\.toml"):
        files.atomic_write(tmp_path / "config.main.toml", b"x")
