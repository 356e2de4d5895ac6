"""Access-token self-information, token expiry and the runner_details.rb option."""

from __future__ import annotations

import datetime

import pytest
import requests

from register_runner.testing.fake_gitlab import FakeGitLab


@pytest.fixture
def gl():
    with FakeGitLab() as fake:
        yield fake


def get(gl, path, token):
    return requests.get(gl.api_url + path, headers={"PRIVATE-TOKEN": token}, timeout=10)


def test_personal_access_token_self(gl):
    pat = gl.add_access_token(scopes=("read_api", "create_runner"), expires_at="2099-01-31")
    resp = get(gl, "/personal_access_tokens/self", pat)
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {
        "id",
        "name",
        "revoked",
        "created_at",
        "scopes",
        "user_id",
        "last_used_at",
        "active",
        "expires_at",
    }
    assert body["scopes"] == ["create_runner", "read_api"]
    assert (body["revoked"], body["active"], body["expires_at"]) == (False, True, "2099-01-31")
    assert body["user_id"] == get(gl, "/user", pat).json()["id"]
    assert body["created_at"].endswith("Z") and body["last_used_at"].endswith("Z")


def test_token_without_expiry(gl):
    pat = gl.add_access_token(scopes=("manage_runner",))
    assert get(gl, "/personal_access_tokens/self", pat).json()["expires_at"] is None


def test_unknown_revoked_and_expired_tokens_get_401(gl):
    revoked = gl.add_access_token()
    gl.revoke_access_token(revoked)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    expired = gl.add_access_token(expires_at=today)
    tomorrow = gl.add_access_token(expires_at=(today + datetime.timedelta(days=1)).isoformat())
    for token in ("glpat-unknown", revoked, expired):
        assert get(gl, "/personal_access_tokens/self", token).status_code == 401
    assert get(gl, "/version", expired).json()["error_description"] == "Token has expired."
    assert get(gl, "/version", tomorrow).status_code == 200


def test_runner_details_token(gl):
    pat = gl.add_access_token(admin=True)
    runner = gl.add_runner(description="x")
    assert "token" not in get(gl, f"/runners/{runner.id}", pat).json()
    gl.runner_details_token = True
    assert get(gl, f"/runners/{runner.id}", pat).json()["token"] == runner.token


def test_runner_token_lifetime(gl):
    gl.runner_token_lifetime = 3600
    pat = gl.add_access_token(admin=True)
    resp = requests.post(
        gl.api_url + "/user/runners",
        headers={"PRIVATE-TOKEN": pat},
        json={"runner_type": "instance_type"},
        timeout=10,
    )
    assert resp.json()["token_expires_at"].endswith("Z")
