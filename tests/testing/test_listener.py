"""RecordingListener: the second local server that records what reaches it."""

from __future__ import annotations

import pytest
import requests

from register_runner.testing.fake_gitlab import FakeGitLab
from register_runner.testing.listener import RecordingListener


@pytest.fixture
def gl_with_token():
    with FakeGitLab() as gl:
        yield gl, gl.add_access_token(scopes=("api",), admin=True)


def test_records_every_request_and_answers_200():
    with RecordingListener() as other:
        assert other.url.startswith("http://127.0.0.1:")
        resp = requests.post(
            other.url + "/api/v4/user/runners?x=1",
            headers={"PRIVATE-TOKEN": "glpat-leaked"},
            data=b"token=glrt-secret",
            timeout=10,
        )
        assert (resp.status_code, resp.json()) == (200, {})
        requests.delete(other.url + "/api/v4/runners/7", timeout=10)
        first, second = other.requests
    assert (first.method, first.path) == ("POST", "/api/v4/user/runners?x=1")
    assert first.headers["PRIVATE-TOKEN"] == "glpat-leaked"
    assert first.body == b"token=glrt-secret"
    assert (second.method, second.path, second.body) == ("DELETE", "/api/v4/runners/7", b"")


def test_a_redirect_from_the_fake_reaches_the_listener(gl_with_token):
    gl, pat = gl_with_token
    with RecordingListener() as other:
        gl.misbehave("redirect", status=307, location=other.url + "/api/v4/version")
        # requests keeps custom headers across hosts: exactly the leak the tests look for.
        requests.get(gl.api_url + "/version", headers={"PRIVATE-TOKEN": pat}, timeout=10)
        [leaked] = other.requests
    assert leaked.headers["PRIVATE-TOKEN"] == pat


def test_stopped_listener_refuses_connections():
    other = RecordingListener().start()
    url = other.url
    other.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
