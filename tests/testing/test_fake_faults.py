"""The fake GitLab's misbehaviours, exercised with plain HTTP clients."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
import requests

from register_runner.testing.fake_gitlab import FakeGitLab

CREATE = {"runner_type": "instance_type", "description": "marker-42", "run_untagged": "true"}


@pytest.fixture
def gl():
    with FakeGitLab() as fake:
        yield fake


@pytest.fixture
def pat(gl):
    return gl.add_access_token(scopes=("api",), admin=True, token="glpat-faults-secret-0001")


def create(gl, pat, **kwargs):
    return requests.post(
        gl.api_url + "/user/runners",
        headers={"PRIVATE-TOKEN": pat},
        json=CREATE,
        timeout=10,
        **kwargs,
    )


def raw_request(gl, method, path, headers=None, body=b""):
    """(status line, headers, body) read with http.client, no retries, no redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", gl.port, timeout=10)
    try:
        conn.request(method, "/api/v4" + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.reason, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ handled kinds


def test_drop_after_creates_the_runner_and_leaves_the_client_without_answer(gl, pat):
    gl.misbehave("drop_after", method="POST", path="^/user/runners$")
    with pytest.raises(requests.ConnectionError):
        create(gl, pat)
    [runner] = gl.runners()
    assert runner.description == "marker-42"
    assert gl.requests[-1].status == 201  # the log says what GitLab did
    # Once only: the next create is answered.
    assert create(gl, pat).status_code == 201
    assert len(gl.runners()) == 2


def test_drop_after_closes_without_writing_a_byte(gl, pat):
    gl.misbehave("drop_after")
    with socket.create_connection(("127.0.0.1", gl.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v4/version HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: " + pat.encode())
        sock.sendall(b"\r\n\r\n")
        assert sock.recv(100) == b""


@pytest.mark.parametrize(
    ("options", "status", "body", "ctype"),
    [
        ({"body": b'{"id": 5, "tok'}, 201, b'{"id": 5, "tok', "application/json"),
        ({"body": b"", "status": 201}, 201, b"", "application/json"),
        (
            {"body": b"<html>..", "content_type": "text/html"},
            201,
            b"<html>..",
            "text/html",
        ),
        ({"body": b"[1,2]"}, 201, b"[1,2]", "application/json"),
        ({"body": b'{"id": "7", "token": "glrt-x"}'}, 201, b'{"id": "7", "token": "glrt-x"}', None),
        ({"body": b'{"token": "glrt-x"}', "status": 200}, 200, b'{"token": "glrt-x"}', None),
    ],
)
def test_garbage_is_sent_after_the_runner_is_created(gl, pat, options, status, body, ctype):
    gl.misbehave("garbage", path="/user/runners", **options)
    resp = create(gl, pat)
    assert (resp.status_code, resp.content) == (status, body)
    assert resp.headers["Content-Type"] == (ctype or "application/json")
    [runner] = gl.runners()
    assert runner.description == "marker-42"


def test_garbage_without_body_cuts_the_real_answer(gl, pat):
    gl.misbehave("garbage")
    resp = create(gl, pat)
    assert resp.status_code == 201
    [runner] = gl.runners()
    real = json.dumps(
        {"id": runner.id, "token": runner.token, "token_expires_at": None}, separators=(",", ":")
    ).encode()
    assert resp.content == real[: len(real) // 2]


def test_oversize_pads_the_real_answer_to_the_size(gl, pat):
    gl.misbehave("oversize", size=3_000_000)
    resp = create(gl, pat)
    assert resp.status_code == 200
    assert len(resp.content) == 3_000_000
    assert resp.json()["id"] == gl.runners()[0].id


def test_trickle_sends_the_body_slowly_with_the_full_length(gl, pat):
    gl.misbehave("trickle", path="/version", chunk=4, interval=0.05)
    status, _, headers, body = raw_request(gl, "GET", "/version", {"PRIVATE-TOKEN": pat})
    assert status == 200
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body)["version"]


def test_trickle_takes_at_least_chunks_times_interval(gl, pat):
    gl.misbehave("trickle", path="/version", chunk=20, interval=0.05)
    conn = http.client.HTTPConnection("127.0.0.1", gl.port, timeout=10)
    conn.request("GET", "/api/v4/version", headers={"PRIVATE-TOKEN": pat})
    start = time.monotonic()
    resp = conn.getresponse()  # headers=False: the head arrives before the body
    head_at = time.monotonic() - start
    body = resp.read()
    took = time.monotonic() - start
    conn.close()
    chunks = -(-len(body) // 20)
    assert chunks >= 3
    assert took >= chunks * 0.05 * 0.9
    assert head_at < took


def test_trickle_headers_too(gl, pat):
    gl.misbehave("trickle", path="/version", chunk=50, interval=0.05, headers=True)
    with socket.create_connection(("127.0.0.1", gl.port), timeout=10) as sock:
        sock.sendall(
            f"GET /api/v4/version HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: {pat}\r\n\r\n".encode()
        )
        first = sock.recv(1000)
        assert len(first) <= 50  # not even the whole head in one go
        data = first
        while b"\r\n\r\n" not in data:
            data += sock.recv(1000)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")


# -------------------------------------------------------------- replacing kinds


def test_redirect_sends_location_and_changes_nothing(gl, pat):
    gl.misbehave("redirect", status=307, location="http://127.0.0.1:9/api/v4/user/runners")
    resp = create(gl, pat, allow_redirects=False)
    assert resp.status_code == 307
    assert resp.headers["Location"] == "http://127.0.0.1:9/api/v4/user/runners"
    assert gl.runners() == []


def test_redirect_default_goes_to_an_unresolvable_host(gl, pat):
    gl.misbehave("redirect")
    status, reason, headers, _ = raw_request(gl, "GET", "/runners/all?page=2")
    assert (status, reason) == (302, "Found")
    assert headers["Location"] == "http://gitlab.invalid/api/v4/runners/all?page=2"


def test_echo_returns_the_request_with_its_secrets(gl, pat):
    gl.misbehave("echo", path="/user/runners")
    resp = create(gl, pat)
    assert resp.status_code == 500
    message = resp.json()["message"]
    assert message.startswith("POST /api/v4/user/runners HTTP/1.1\n")
    assert "PRIVATE-TOKEN: glpat-faults-secret-0001" in message
    assert '"description": "marker-42"' in message
    assert gl.runners() == []


def test_html_sign_in_page(gl, pat):
    gl.misbehave("html", status=200)
    status, _, headers, body = raw_request(gl, "POST", "/runners/verify", body=b"token=x")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b"Sign in" in body


def test_misbehave_matches_method_path_and_count(gl, pat):
    gl.misbehave("html", method="GET", path="^/version$", count=2)
    headers = {"PRIVATE-TOKEN": pat}
    assert raw_request(gl, "GET", "/user", headers)[2]["Content-Type"] == "application/json"
    assert raw_request(gl, "POST", "/version", headers)[0] == 404
    for _ in range(2):
        assert raw_request(gl, "GET", "/version", headers)[2]["Content-Type"].startswith("text/")
    assert raw_request(gl, "GET", "/version", headers)[2]["Content-Type"] == "application/json"


def test_misbehave_refuses_unknown_kinds_and_options(gl):
    with pytest.raises(ValueError):
        gl.misbehave("explode")
    with pytest.raises(TypeError):
        gl.misbehave("redirect", body=b"x")


def test_fail_next_goes_before_misbehave(gl, pat):
    gl.misbehave("echo")
    gl.fail_next(status=502)
    assert raw_request(gl, "GET", "/version", {"PRIVATE-TOKEN": pat})[0] == 502
    assert raw_request(gl, "GET", "/version", {"PRIVATE-TOKEN": pat})[0] == 500


# --------------------------------------------------------------- other failures


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (408, "Request Timeout"),
        (501, "Not Implemented"),
        (505, "HTTP Version Not Supported"),
        (599, "Network Connect Timeout Error"),
        (555, "Server Error"),
    ],
)
def test_fail_next_any_status_with_its_reason(gl, status, reason):
    gl.fail_next(status=status)
    got, got_reason, _, body = raw_request(gl, "GET", "/version")
    assert (got, got_reason) == (status, reason)
    assert json.loads(body) == {"message": f"{status} {reason}"}


@pytest.mark.parametrize("value", ["0", "-1", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_fail_next_sends_any_retry_after(gl, value):
    gl.fail_next(status=429, retry_after=value)
    assert raw_request(gl, "GET", "/version")[2]["Retry-After"] == value


def test_endless_pagination_always_has_a_next_page(gl, pat):
    gl.add_runner(description="one")
    gl.endless_pagination()
    url = gl.api_url + "/runners/all?per_page=1"
    for page in range(1, 6):
        resp = requests.get(url, headers={"PRIVATE-TOKEN": pat}, timeout=10)
        assert resp.headers["X-Next-Page"] == str(page + 1)
        assert "X-Total" not in resp.headers
        url = resp.links["next"]["url"]
        assert url.startswith(gl.api_url + "/runners/all?")
        assert f"page={page + 1}" in url
    assert resp.json() == []  # past the end


def test_endless_pagination_on_another_origin(gl, pat):
    gl.endless_pagination(origin="http://127.0.0.1:9/")
    resp = requests.get(gl.api_url + "/runners/all", headers={"PRIVATE-TOKEN": pat}, timeout=10)
    assert resp.links["next"]["url"].startswith("http://127.0.0.1:9/api/v4/runners/all?")
    gl.endless_pagination(enabled=False)
    resp = requests.get(gl.api_url + "/runners/all", headers={"PRIVATE-TOKEN": pat}, timeout=10)
    assert "next" not in resp.links and resp.headers["X-Total"] == "0"


def test_reset_ids_reuses_ids_of_forgotten_runners(gl, pat):
    ids = [create(gl, pat).json()["id"] for _ in range(3)]
    assert ids == [1, 2, 3]
    assert gl.forget_runners([1, 2]) == [1, 2]
    gl.reset_ids()
    # 1 and 2 come again; 3 is still there and is skipped.
    assert [create(gl, pat).json()["id"] for _ in range(3)] == [1, 2, 4]
    assert sorted(r.id for r in gl.runners()) == [1, 2, 3, 4]
    assert gl.forget_runners() == [3, 1, 2, 4]
    assert gl.runners() == []


def test_rate_limit_headers_on_every_answer(gl, pat):
    gl.rate_limit(per_minute=3)
    remaining = []
    for _ in range(4):
        status, _, headers, _ = raw_request(gl, "GET", "/version", {"PRIVATE-TOKEN": pat})
        assert headers["RateLimit-Limit"] == "3"
        assert int(headers["RateLimit-Reset"]) >= time.time() - 1
        remaining.append((status, headers["RateLimit-Remaining"]))
    assert remaining == [(200, "2"), (200, "1"), (200, "0"), (429, "0")]
    gl.rate_limit(per_minute=None)
    assert "RateLimit-Limit" not in raw_request(gl, "GET", "/version", {"PRIVATE-TOKEN": pat})[2]


def test_rate_limit_by_token_counts_per_user(gl, pat):
    other = gl.add_access_token(scopes=("api",))
    gl.rate_limit(per_minute=1, key="token")
    assert raw_request(gl, "GET", "/version", {"PRIVATE-TOKEN": pat})[0] == 200
    assert raw_request(gl, "GET", "/version", {"Authorization": f"Bearer {pat}"})[0] == 429
    assert raw_request(gl, "GET", "/version", {"PRIVATE-TOKEN": other})[0] == 200
    # Runner-token endpoints count per runner token.
    for token in ("glrt-a", "glrt-b"):
        assert raw_request(gl, "POST", "/runners/verify", body=f"token={token}".encode())[0] == 403
    assert raw_request(gl, "POST", "/runners/verify", body=b"token=glrt-a")[0] == 429
