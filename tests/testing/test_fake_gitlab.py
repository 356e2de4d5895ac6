"""The fake GitLab, exercised over real HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import gitlab
import pytest
import requests

from register_runner.testing.fake_gitlab import FakeGitLab, main

TAGS_EMPTY = "Tags list can not be empty when runner is not allowed to pick untagged jobs"
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def gl():
    with FakeGitLab() as fake:
        yield fake


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


class Api:
    """Small client: ``api.post("/user/runners", token=pat, json={...})``."""

    def __init__(self, fake: FakeGitLab, session: requests.Session):
        self.fake = fake
        self.session = session

    def call(self, method, path, token=None, bearer=False, **kwargs):
        headers = kwargs.pop("headers", {})
        if token is not None:
            if bearer:
                headers["Authorization"] = f"Bearer {token}"
            else:
                headers["PRIVATE-TOKEN"] = token
        url = self.fake.url + "/api/v4" + path
        return self.session.request(method, url, headers=headers, timeout=10, **kwargs)

    def get(self, path, token=None, **kw):
        return self.call("GET", path, token, **kw)

    def post(self, path, token=None, **kw):
        return self.call("POST", path, token, **kw)

    def put(self, path, token=None, **kw):
        return self.call("PUT", path, token, **kw)

    def delete(self, path, token=None, **kw):
        return self.call("DELETE", path, token, **kw)


@pytest.fixture
def api(gl, http):
    return Api(gl, http)


@pytest.fixture
def admin(gl):
    return gl.add_access_token(scopes=("api",), admin=True)


def create(api, token, **fields):
    fields.setdefault("runner_type", "instance_type")
    return api.post("/user/runners", token, json=fields)


def insufficient(resp, scope_word):
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert body["error"] == "insufficient_scope"
    assert "higher privileges" in body["error_description"]
    assert scope_word in body["scope"].split()


# ------------------------------------------------------------------------ auth


def test_auth_missing_unknown_revoked_and_both_header_styles(gl, api):
    pat = gl.add_access_token(scopes=("api",), admin=True)
    assert api.get("/version").status_code == 401
    assert api.get("/version").json() == {"message": "401 Unauthorized"}
    assert api.get("/version", "glpat-nope").status_code == 401
    resp = api.get("/version", pat)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json()["version"] == "17.5.0-fake"
    assert api.get("/version", pat, bearer=True).status_code == 200
    user = api.get("/user", pat, bearer=True).json()
    assert user["is_admin"] is True and user["username"] and isinstance(user["id"], int)
    assert pat.startswith("glpat-") and len(pat) == len("glpat-") + 20

    gl.revoke_access_token(pat)
    assert api.get("/user", pat).status_code == 401
    assert api.get("/user", pat, bearer=True).status_code == 401
    assert create(api, pat).status_code == 401


def test_scope_create_runner_only_creates(gl, api):
    pat = gl.add_access_token(scopes=("create_runner",), admin=True)
    resp = create(api, pat)
    assert resp.status_code == 201
    rid = resp.json()["id"]
    insufficient(api.get("/runners", pat), "read_api")
    insufficient(api.get("/runners/all", pat), "read_api")
    insufficient(api.get(f"/runners/{rid}", pat), "manage_runner")
    insufficient(api.put(f"/runners/{rid}", pat, json={"description": "x"}), "manage_runner")
    insufficient(api.delete(f"/runners/{rid}", pat), "manage_runner")
    insufficient(api.get("/user", pat), "read_api")


def test_scope_manage_runner_cannot_list_or_create(gl, api, admin):
    rid = create(api, admin).json()["id"]
    pat = gl.add_access_token(scopes=("manage_runner",), admin=True)
    assert api.get(f"/runners/{rid}", pat).status_code == 200
    assert api.put(f"/runners/{rid}", pat, json={"description": "d"}).status_code == 200
    assert api.get(f"/runners/{rid}/managers", pat).status_code == 200
    assert api.post(f"/runners/{rid}/reset_authentication_token", pat).status_code == 201
    insufficient(api.get("/runners", pat), "read_api")
    insufficient(api.get("/runners/all", pat), "read_api")
    insufficient(api.get("/groups/1/runners", pat), "read_api")
    insufficient(create(api, pat), "create_runner")
    insufficient(api.get("/user", pat), "read_api")
    assert api.delete(f"/runners/{rid}", pat).status_code == 204


def test_scope_read_api_lists_but_does_not_write(gl, api, admin):
    rid = create(api, admin).json()["id"]
    pat = gl.add_access_token(scopes=("read_api",), admin=True)
    assert api.get("/runners", pat).status_code == 200
    assert api.get("/runners/all", pat).status_code == 200
    assert api.get(f"/runners/{rid}", pat).status_code == 200
    assert api.get("/user", pat).status_code == 200
    insufficient(create(api, pat), "create_runner")
    insufficient(api.put(f"/runners/{rid}", pat, json={"description": "x"}), "manage_runner")
    insufficient(api.delete(f"/runners/{rid}", pat), "api")
    insufficient(api.post(f"/runners/{rid}/reset_authentication_token", pat), "api")


# ----------------------------------------------------------------------- roles


def test_roles(gl, api, admin):
    owner = gl.add_access_token(scopes=("api",), groups=(42,))
    maint = gl.add_access_token(scopes=("api",), projects=(7,))
    forbidden = {"message": "403 Forbidden"}

    resp = create(api, owner, runner_type="group_type", group_id=42)
    assert resp.status_code == 201
    group_runner = resp.json()["id"]
    resp = create(api, owner, runner_type="group_type", group_id=43)
    assert (resp.status_code, resp.json()) == (403, forbidden)
    assert create(api, owner, runner_type="instance_type").status_code == 403
    assert create(api, owner, runner_type="project_type", project_id=7).status_code == 403
    assert create(api, maint, runner_type="project_type", project_id="7").status_code == 201
    assert create(api, maint, runner_type="project_type", project_id=8).status_code == 403
    instance = create(api, admin).json()["id"]
    assert gl.runner(group_runner).group_id == 42

    # /runners/all is for admins; /runners never lists instance runners
    assert api.get("/runners/all", owner).json() == forbidden
    assert {r["id"] for r in api.get("/runners/all", admin).json()} == {1, 2, 3}
    assert [r["id"] for r in api.get("/runners", admin).json()] == [group_runner, 2]
    assert [r["id"] for r in api.get("/runners", owner).json()] == [group_runner]
    assert [r["id"] for r in api.get("/runners", maint).json()] == [2]
    assert api.get("/runners", admin, params={"type": "instance_type"}).json() == []

    # group and project lists
    assert [r["id"] for r in api.get("/groups/42/runners", owner).json()] == [1, instance]
    assert api.get("/groups/43/runners", owner).status_code == 403
    # A project's list has the instance runners too, as GitLab's (owned_or_instance_wide).
    assert [r["id"] for r in api.get("/projects/7/runners", maint).json()] == [2, instance]
    params = {"type": "project_type"}
    assert [r["id"] for r in api.get("/projects/7/runners", maint, params=params).json()] == [2]
    assert api.get("/projects/7/runners", owner).status_code == 403

    # details, update, delete need the role; instance runners are readable by anyone
    assert api.get(f"/runners/{group_runner}", maint).status_code == 403
    assert api.get(f"/runners/{instance}", maint).status_code == 200
    assert api.put(f"/runners/{instance}", owner, json={"paused": True}).status_code == 403
    assert api.delete(f"/runners/{instance}", owner).status_code == 403
    assert api.post(f"/runners/{instance}/reset_authentication_token", owner).status_code == 403
    assert api.put(f"/runners/{group_runner}", owner, json={"paused": True}).status_code == 200
    assert api.delete(f"/runners/{group_runner}", admin).status_code == 204
    assert gl.runner(group_runner) is None


# ------------------------------------------------------------- POST /user/runners


def test_create_runner_response_and_attributes(gl, api, admin):
    resp = create(
        api,
        admin,
        description="ci-1",
        tag_list=["linux", "shell"],
        run_untagged="false",
        locked=True,
        paused="true",
        access_level="ref_protected",
        maximum_timeout=3600,
        maintenance_note="marker",
    )
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {"id", "token", "token_expires_at"}
    assert body["id"] == 1 and body["token_expires_at"] is None
    assert re.match(r"^glrt-[A-Za-z0-9_-]{20,}$", body["token"])
    r = gl.runner(1)
    assert r.token == body["token"] and r.description == "ci-1"
    assert r.tag_list == ["linux", "shell"]
    assert (r.run_untagged, r.locked, r.paused) == (False, True, True)
    assert (r.access_level, r.maximum_timeout, r.maintenance_note) == (
        "ref_protected",
        3600,
        "marker",
    )
    assert r.runner_type == "instance_type" and r.contacted_at is None and r.managers == {}

    defaults = gl.runner(create(api, admin).json()["id"])
    assert (defaults.run_untagged, defaults.locked, defaults.paused) == (True, False, False)
    assert defaults.id == 2

    gl.runner_token_lifetime = 3600
    body = create(api, admin).json()
    assert ISO_RE.match(body["token_expires_at"])
    assert gl.runner(body["id"]).token_expires_at == body["token_expires_at"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"runner_type": None}, {"error": "runner_type is missing"}),
        ({"runner_type": "shared"}, {"error": "runner_type does not have a valid value"}),
        ({"runner_type": "group_type"}, None),
        ({"runner_type": "project_type"}, None),
        ({"access_level": "everything"}, {"error": "access_level does not have a valid value"}),
        ({"paused": "maybe"}, {"error": "paused is invalid"}),
        (
            {"run_untagged": False},
            {"message": TAGS_EMPTY},
        ),
        (
            {"run_untagged": False, "tag_list": []},
            {"message": TAGS_EMPTY},
        ),
        ({"tag_list": [f"t{i}" for i in range(51)]}, None),
        ({"maximum_timeout": 599}, {"message": "Maximum timeout needs to be at least 10 minutes"}),
        ({"maintenance_note": "x" * 1025}, None),
    ],
)
def test_create_runner_validation(gl, api, admin, fields, message):
    payload = {"runner_type": "instance_type", **fields}
    payload = {k: v for k, v in payload.items() if v is not None}
    resp = api.post("/user/runners", admin, json=payload)
    assert resp.status_code == 400, resp.text
    if message is not None:
        assert resp.json() == message
    else:
        assert isinstance(resp.json().get("message", resp.json().get("error")), str)
    assert gl.runners() == []


def test_create_runner_ignores_the_deprecated_active(gl, api, admin):
    # POST /user/runners declares paused only (not PUT's and legacy POST /runners'
    # deprecated active): Grape drops an undeclared parameter, with or without paused.
    for fields in ({"active": False}, {"active": False, "paused": False}):
        resp = create(api, admin, **fields)
        assert resp.status_code == 201, resp.text
        assert gl.runner(resp.json()["id"]).paused is False
    resp = create(api, admin, active=True, paused=True)
    assert resp.status_code == 201, resp.text
    assert gl.runner(resp.json()["id"]).paused is True


def test_create_runner_boundaries_are_accepted(gl, api, admin):
    tags = [f"t{i}" for i in range(50)]
    ok = create(api, admin, tag_list=tags, maximum_timeout=600, maintenance_note="x" * 1024)
    assert ok.status_code == 201
    assert len(gl.runner(ok.json()["id"]).tag_list) == 50


# ----------------------------------------------------------------- legacy register


def test_legacy_register(gl, api):
    reg = gl.registration_token()
    assert reg.startswith("GR1348941") and gl.registration_token() == reg
    resp = api.post("/runners", data={"token": reg, "description": "old", "tag_list": "a,b"})
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {"id", "token", "token_expires_at"}
    assert body["token"].startswith("glrtr-")
    assert gl.runner(body["id"]).tag_list == ["a", "b"]
    assert gl.runner(body["id"]).runner_type == "instance_type"

    greg = gl.registration_token("group_type", group_id=5)
    assert greg != reg
    r = gl.runner(api.post("/runners", json={"token": greg}).json()["id"])
    assert (r.runner_type, r.group_id) == ("group_type", 5)

    resp = api.post("/runners", json={"token": "GR1348941nope"})
    assert (resp.status_code, resp.json()) == (403, {"message": "403 Forbidden"})

    resp = api.post("/runners", json={"token": reg, "run_untagged": False})
    assert resp.status_code == 400
    assert resp.json() == {
        "message": {
            "tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"]
        }
    }
    resp = api.post("/runners", json={"token": reg, "maximum_timeout": 5})
    assert resp.json() == {"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}}

    gl.allow_registration_tokens = False
    resp = api.post("/runners", json={"token": reg})
    assert (resp.status_code, resp.json()) == (410, {"message": "410 Gone"})
    assert api.post("/runners", json={"token": "unknown"}).status_code == 410
    assert len(gl.runners()) == 2


# ------------------------------------------------------------ runner-token calls


def test_verify_records_managers(gl, api):
    r = gl.add_runner(description="foreign")
    resp = api.post("/runners/verify", json={"token": r.token, "system_id": "s_0123456789ab"})
    assert resp.status_code == 200
    assert resp.json() == {"id": r.id, "token": r.token, "token_expires_at": None}
    snap = gl.runner(r.id)
    assert set(snap.managers) == {"s_0123456789ab"}
    assert snap.contacted_at is not None
    assert snap.managers["s_0123456789ab"]["contacted_at"] == snap.contacted_at

    assert api.post("/runners/verify", data={"token": r.token}).status_code == 200
    assert set(gl.runner(r.id).managers) == {"s_0123456789ab", "<legacy>"}

    resp = api.post("/runners/verify", json={"token": "glrt-unknown"})
    assert (resp.status_code, resp.json()) == (403, {"message": "403 Forbidden"})
    assert api.post("/runners/verify", json={}).status_code == 400

    gl.revoke_runner_token(r.id)
    assert api.post("/runners/verify", json={"token": r.token}).status_code == 403
    assert gl.runner(r.id) is not None and gl.runner(r.id).token_valid is False


def test_expired_runner_token_is_refused(gl, api):
    gl.runner_token_lifetime = 3600
    r = gl.add_runner()
    assert r.token_expires_at is not None
    assert api.post("/runners/verify", json={"token": r.token}).status_code == 200
    gl.expire_runner_token(r.id)
    assert api.post("/runners/verify", json={"token": r.token}).status_code == 403
    assert api.post("/jobs/request", json={"token": r.token}).status_code == 403


def test_delete_runner_by_token(gl, api):
    r = gl.add_runner()
    assert api.delete("/runners", json={"token": "glrt-nope"}).status_code == 403
    resp = api.delete("/runners", json={"token": r.token})
    assert resp.status_code == 204 and resp.content == b""
    assert gl.runner(r.id) is None
    assert api.post("/runners/verify", json={"token": r.token}).status_code == 403


def test_delete_runner_manager(gl, api):
    r = gl.add_runner()
    for sid in ("s_aaaaaaaaaaaa", "s_bbbbbbbbbbbb"):
        api.post("/runners/verify", json={"token": r.token, "system_id": sid})
    path = "/runners/managers"
    assert api.delete(path, params={"token": r.token}).status_code == 400
    assert (
        api.delete(path, params={"token": "bad", "system_id": "s_aaaaaaaaaaaa"}).status_code == 403
    )
    assert (
        api.delete(path, params={"token": r.token, "system_id": "s_cccccccccccc"}).status_code
        == 404
    )
    resp = api.delete(path, params={"token": r.token, "system_id": "s_aaaaaaaaaaaa"})
    assert resp.status_code == 204
    snap = gl.runner(r.id)
    assert set(snap.managers) == {"s_bbbbbbbbbbbb"} and snap.contacted_at is not None
    resp = api.delete(path, json={"token": r.token, "system_id": "s_bbbbbbbbbbbb"})
    assert resp.status_code == 204
    snap = gl.runner(r.id)
    assert snap.managers == {} and snap.contacted_at is None
    assert api.post("/runners/verify", json={"token": r.token}).status_code == 200


def test_reset_token_by_token_and_by_id(gl, api, admin):
    r = gl.add_runner()
    resp = api.post("/runners/reset_authentication_token", json={"token": r.token})
    assert resp.status_code == 201
    new = resp.json()
    assert set(new) == {"token", "token_expires_at"} and new["token"].startswith("glrt-")
    assert new["token"] != r.token
    assert api.post("/runners/verify", json={"token": r.token}).status_code == 403
    assert api.post("/runners/verify", json={"token": new["token"]}).status_code == 200
    assert (
        api.post("/runners/reset_authentication_token", json={"token": r.token}).status_code == 403
    )

    resp = api.post(f"/runners/{r.id}/reset_authentication_token", admin)
    assert resp.status_code == 201
    newer = resp.json()["token"]
    assert api.post("/runners/verify", json={"token": new["token"]}).status_code == 403
    assert gl.runner(r.id).token == newer
    assert api.post("/runners/999/reset_authentication_token", admin).status_code == 404

    rotated = gl.rotate_runner_token(r.id)
    assert api.post("/runners/verify", json={"token": newer}).status_code == 403
    assert api.post("/runners/verify", json={"token": rotated}).status_code == 200

    legacy = api.post("/runners", json={"token": gl.registration_token()}).json()
    resp = api.post("/runners/reset_authentication_token", json={"token": legacy["token"]})
    assert resp.json()["token"].startswith("glrtr-")


def test_jobs_request(gl, api):
    r = gl.add_runner()
    resp = api.post("/jobs/request", json={"token": r.token, "system_id": "s_aaaaaaaaaaaa"})
    assert resp.status_code == 204 and resp.headers["X-GitLab-Last-Update"]
    assert api.post("/jobs/request", json={"token": "nope"}).status_code == 403


# ------------------------------------------------------------- PAT runner calls


def test_get_runner_details_never_have_the_token(gl, api, admin):
    rid = create(api, admin, tag_list="a, b", maintenance_note="note").json()["id"]
    resp = api.get(f"/runners/{rid}", admin)
    assert resp.status_code == 200
    body = resp.json()
    assert "token" not in body and "token_expires_at" not in body
    expected = {
        *("id", "description", "ip_address", "active", "paused", "is_shared", "runner_type"),
        *("name", "online", "status", "tag_list", "run_untagged", "locked", "maximum_timeout"),
        *("access_level", "version", "revision", "platform", "architecture", "contacted_at"),
        *("maintenance_note", "projects", "groups"),
    }
    assert expected <= set(body)
    assert body["tag_list"] == ["a", "b"] and body["is_shared"] is True
    assert body["status"] == "never_contacted" and body["online"] is False
    assert body["maintenance_note"] == "note" and body["active"] is True
    other = gl.add_access_token(scopes=("api",))
    assert api.get(f"/runners/{rid}", other).json()["maintenance_note"] is None
    resp = api.get("/runners/999", admin)
    assert (resp.status_code, resp.json()) == (404, {"message": "404 Runner Not Found"})


def test_get_runner_include_projects_false_leaves_the_projects_out(gl, api, admin):
    rid = gl.add_runner("project_type", project_id=7).id
    assert api.get(f"/runners/{rid}", admin).json()["projects"][0]["id"] == 7
    assert api.get(f"/runners/{rid}", admin, params={"include_projects": "true"}).json()["projects"]
    body = api.get(f"/runners/{rid}", admin, params={"include_projects": "false"}).json()
    assert "projects" not in body and body["id"] == rid and body["groups"] == []
    resp = api.get(f"/runners/{rid}", admin, params={"include_projects": "maybe"})
    assert (resp.status_code, resp.json()) == (400, {"error": "include_projects is invalid"})


def test_put_runner(gl, api, admin):
    rid = create(api, admin, tag_list=["a", "b"], run_untagged=False).json()["id"]
    resp = api.put(f"/runners/{rid}", admin, json={"tag_list": ["c"], "description": "new"})
    assert resp.status_code == 200
    assert resp.json()["tag_list"] == ["c"] and resp.json()["description"] == "new"
    assert gl.runner(rid).tag_list == ["c"]
    assert "token" not in resp.json()

    resp = api.put(f"/runners/{rid}", admin, json={"tag_list": []})
    assert resp.status_code == 400
    assert resp.json() == {
        "message": {
            "tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"]
        }
    }
    resp = api.put(f"/runners/{rid}", admin, json={"maximum_timeout": 10})
    assert resp.json() == {"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}}
    assert gl.runner(rid).tag_list == ["c"]
    assert api.put(f"/runners/{rid}", admin, json={}).status_code == 400
    assert api.put(f"/runners/{rid}", admin, json={"access_level": "x"}).status_code == 400

    resp = api.put(f"/runners/{rid}", admin, data={"active": "false", "tag_list[]": ["x", "y"]})
    assert resp.status_code == 200
    snap = gl.runner(rid)
    assert snap.paused is True and snap.tag_list == ["x", "y"]
    assert api.put("/runners/999", admin, json={"paused": True}).status_code == 404


def test_put_runner_active_and_paused_are_mutually_exclusive(gl, api, admin):
    r = gl.add_runner()
    for body in ({"active": True, "paused": False}, {"active": False, "paused": False}):
        resp = api.put(f"/runners/{r.id}", admin, json=body)
        assert (resp.status_code, resp.json()) == (
            400,
            {"error": "active, paused are mutually exclusive"},
        )
    resp = api.put(f"/runners/{r.id}", admin, data={"active": "false", "paused": "true"})
    assert resp.status_code == 400
    assert gl.runner(r.id).paused is False
    reg = gl.registration_token()
    resp = api.post("/runners", json={"token": reg, "active": True, "paused": True})
    assert (resp.status_code, resp.json()) == (
        400,
        {"error": "active, paused are mutually exclusive"},
    )
    assert [x.id for x in gl.runners()] == [r.id]
    assert api.put(f"/runners/{r.id}", admin, json={"active": False}).json()["paused"] is True
    assert api.delete("/runners/999", admin).status_code == 404


def test_runner_managers_endpoint(gl, api, admin):
    r = gl.add_runner()
    api.post(
        "/runners/verify",
        json={"token": r.token, "system_id": "s_aaaaaaaaaaaa", "info": {"version": "17.5.0"}},
    )
    resp = api.get(f"/runners/{r.id}/managers", admin)
    assert resp.status_code == 200 and "X-Total" not in resp.headers
    (mgr,) = resp.json()
    assert mgr["system_id"] == "s_aaaaaaaaaaaa" and mgr["status"] == "online"
    assert ISO_RE.match(mgr["contacted_at"]) and mgr["version"] == "17.5.0"
    assert api.get(f"/runners/{r.id}", admin).json()["version"] == "17.5.0"


# ------------------------------------------------------------------- pagination


def test_pagination_headers(gl, api, admin):
    for i in range(45):
        gl.add_runner(runner_type="project_type", project_id=1, description=f"r{i}")
    resp = api.get("/runners", admin)
    assert [r["id"] for r in resp.json()] == list(range(1, 21))
    h = resp.headers
    assert (h["X-Page"], h["X-Per-Page"], h["X-Next-Page"], h["X-Prev-Page"]) == (
        "1",
        "20",
        "2",
        "",
    )
    assert (h["X-Total"], h["X-Total-Pages"]) == ("45", "3")
    assert resp.links["next"]["url"].startswith(gl.url + "/api/v4/runners?")
    assert "page=2" in resp.links["next"]["url"] and "prev" not in resp.links
    assert "page=3" in resp.links["last"]["url"] and "page=1" in resp.links["first"]["url"]

    page2 = api.get(resp.links["next"]["url"][len(gl.url + "/api/v4") :], admin)
    assert [r["id"] for r in page2.json()] == list(range(21, 41))
    assert page2.headers["X-Prev-Page"] == "1" and "prev" in page2.links

    last = api.get("/runners", admin, params={"page": 3, "type": "project_type"})
    assert [r["id"] for r in last.json()] == list(range(41, 46))
    assert last.headers["X-Next-Page"] == "" and "next" not in last.links
    assert "type=project_type" in last.links["first"]["url"]

    big = api.get("/runners", admin, params={"per_page": 500})
    assert len(big.json()) == 45 and big.headers["X-Per-Page"] == "100"
    assert big.headers["X-Total-Pages"] == "1" and "next" not in big.links
    assert api.get("/runners", admin, params={"page": "x"}).status_code == 400


def test_python_gitlab_follows_the_pagination(gl, admin):
    for _ in range(45):
        gl.add_runner(runner_type="group_type", group_id=3)
    gl.add_runner(runner_type="instance_type")
    client = gitlab.Gitlab(gl.url, private_token=admin)
    assert len(client.runners.list(get_all=True)) == 45
    assert len(list(client.runners.list(iterator=True))) == 45
    assert len(client.runners.all(get_all=True)) == 46
    assert len(client.runners.all(type="instance_type", get_all=True)) == 1
    assert len(client.groups.get(3, lazy=True).runners.list(get_all=True)) == 46
    client.runners.delete(1)
    assert gl.runner(1) is None


# ---------------------------------------------------------------------- filters


def test_list_version_prefix_matches_whole_components_of_a_manager_version(gl, api, admin):
    def runner_with(*versions):
        r = gl.add_runner("project_type", project_id=1)
        for n, version in enumerate(versions):
            api.post(
                "/runners/verify",
                json={"token": r.token, "system_id": f"s_{n:012d}", "info": {"version": version}},
            )
        return r.id

    v1751 = runner_with("17.5.1")
    v17500 = runner_with("17.50.0")
    v16 = runner_with("16.11.3")
    both = runner_with("15.0.0", "17.5.0~beta.1")
    silent = gl.add_runner("project_type", project_id=1).id

    def ids(prefix, path="/runners"):
        resp = api.get(path, admin, params={"version_prefix": prefix})
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()]

    assert ids("17") == ids("17.") == [v1751, v17500, both]
    assert ids("17.5") == ids("17.5.") == [v1751, both]
    assert ids("17.5.1") == [v1751]
    assert ids("15.0.0", "/runners/all") == [both]
    assert ids("16.11", "/projects/1/runners") == [v16]
    assert silent not in ids("1") and ids("18") == []
    # Grape checks the value against /^[\d+.]+/, only its start: accepted, matches nothing.
    assert ids("17.x") == []
    for bad in ("x17", "", "v17"):
        resp = api.get("/runners", admin, params={"version_prefix": bad})
        assert resp.json() == {"error": "version_prefix is invalid"}, bad


def test_list_deprecated_scope_filters_and_refuses_what_the_endpoint_does_not_know(gl, api, admin):
    now = time.time()
    online = gl.add_runner("project_type", project_id=1, contacted_at=now)
    offline = gl.add_runner("project_type", project_id=1, contacted_at=now - 3 * 3600)
    stale = gl.add_runner("project_type", project_id=1, created_at=now - 8 * 86400)
    paused = gl.add_runner("group_type", group_id=2, paused=True)
    shared = gl.add_runner("instance_type", contacted_at=now)

    def ids(path, scope, **params):
        resp = api.get(path, admin, params={"scope": scope, **params})
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()]

    owned = "/runners"
    assert ids(owned, "online") == [online.id]
    assert ids(owned, "offline") == [offline.id]
    assert ids(owned, "stale") == [stale.id]
    assert ids(owned, "never_contacted") == [paused.id]
    assert ids(owned, "paused") == [paused.id]
    assert ids(owned, "active") == [online.id, offline.id, stale.id]
    assert ids(owned, "active", type="group_type") == []

    every = "/runners/all"
    assert ids(every, "shared") == ids(every, "instance_type") == [shared.id]
    assert ids(every, "specific") == [online.id, offline.id, stale.id, paused.id]
    assert ids(every, "group_type") == [paused.id]
    assert ids(every, "project_type", status="online") == [online.id]
    assert ids(every, "online") == [online.id, shared.id]
    assert ids("/projects/1/runners", "stale") == [stale.id]
    assert ids("/projects/1/runners", "group_type") == []
    # The group list has no scope parameter: Grape drops it, nothing is filtered.
    assert ids("/groups/2/runners", "online") == [paused.id, shared.id]
    assert ids("/groups/2/runners", "sleepy") == [paused.id, shared.id]

    for path in (owned, every, "/projects/1/runners"):
        resp = api.get(path, admin, params={"scope": "sleepy"})
        assert (resp.status_code, resp.json()) == (
            400,
            {"error": "scope does not have a valid value"},
        ), path
    # GET /runners declares every scope, then filters by the statuses only.
    for scope in ("specific", "shared", "instance_type", "project_type"):
        resp = api.get(owned, admin, params={"scope": scope})
        assert (resp.status_code, resp.json()) == (
            400,
            {"message": "Scope contains invalid value"},
        ), scope


def test_list_filters(gl, api, admin):
    now = time.time()
    online = gl.add_runner("project_type", project_id=1, tag_list=("a", "b"), contacted_at=now)
    offline = gl.add_runner(
        "project_type", project_id=1, tag_list=("a",), contacted_at=now - 3 * 3600
    )
    stale = gl.add_runner("project_type", project_id=1, created_at=now - 8 * 86400)
    never = gl.add_runner("project_type", project_id=1, tag_list=("b", "c"), paused=True)
    group = gl.add_runner("group_type", group_id=2, tag_list=("a", "b", "c"))

    def ids(**params):
        resp = api.get("/runners", admin, params=params)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()]

    assert ids() == [online.id, offline.id, stale.id, never.id, group.id]
    assert ids(type="group_type") == [group.id]
    assert ids(status="online") == [online.id]
    assert ids(status="offline") == [offline.id]
    assert ids(status="stale") == [stale.id]
    assert ids(status="never_contacted") == [never.id, group.id]
    assert ids(paused="true") == [never.id]
    assert ids(paused="false", type="project_type") == [online.id, offline.id, stale.id]
    assert ids(tag_list="a") == [online.id, offline.id, group.id]
    assert ids(tag_list="a,b") == [online.id, group.id]
    assert ids(tag_list="b,c") == [never.id, group.id]
    items = api.get("/runners", admin, params={"status": "online"}).json()
    assert items[0]["online"] is True and items[0]["status"] == "online"
    for bad in ({"type": "shared"}, {"status": "sleepy"}, {"paused": "maybe"}):
        resp = api.get("/runners", admin, params=bad)
        assert resp.status_code == 400, bad
        assert api.get("/runners/all", admin, params=bad).status_code == 400


def test_an_aged_runner_is_offline_then_stale_in_lists_details_and_managers(gl, api, admin):
    r = create(api, admin).json()
    assert api.post("/runners/verify", json={"token": r["token"], "system_id": "s_1"}).ok
    statuses = lambda: [x["status"] for x in api.get("/runners/all", admin).json()]  # noqa: E731
    assert statuses() == ["online"]
    gl.age_runner(r["id"], days=3)
    assert statuses() == ["offline"]
    gl.age_runner(r["id"], days=5)
    assert statuses() == ["stale"]
    details = api.get(f"/runners/{r['id']}", admin).json()
    contacted = datetime.fromisoformat(details["contacted_at"].replace("Z", "+00:00"))
    assert 7.9 < (datetime.now(timezone.utc) - contacted).total_seconds() / 86400 < 8.1
    assert details["created_at"] <= details["contacted_at"]
    assert api.get(f"/runners/{r['id']}/managers", admin).json()[0]["status"] == "stale"
    never = create(api, admin).json()["id"]
    gl.age_runner(never, days=8)
    assert api.get(f"/runners/{never}", admin).json()["contacted_at"] is None
    assert [x["id"] for x in api.get("/runners/all", admin, params={"status": "stale"}).json()] == [
        r["id"],
        never,
    ]


# ----------------------------------------------------------------- bodies, log


def test_form_json_and_query_fields(gl, api, admin):
    r1 = create(api, admin, tag_list="x, y ,z").json()["id"]
    resp = api.post(
        "/user/runners",
        admin,
        data={"runner_type": "instance_type", "tag_list[]": ["p", "q"], "run_untagged": "false"},
    )
    assert resp.status_code == 201
    r2 = resp.json()["id"]
    resp = api.post(
        "/user/runners", admin, params={"runner_type": "instance_type", "tag_list": "m"}
    )
    assert resp.status_code == 201
    r3 = resp.json()["id"]
    assert gl.runner(r1).tag_list == ["x", "y", "z"]
    assert gl.runner(r2).tag_list == ["p", "q"] and gl.runner(r2).run_untagged is False
    assert gl.runner(r3).tag_list == ["m"]
    resp = api.post(
        "/user/runners", admin, data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400


def test_request_log_and_mutating_requests(gl, api, admin):
    r = gl.add_runner()
    api.get("/version", admin, params={"a": "1"})
    api.post("/runners/verify", json={"token": r.token, "system_id": "s_aaaaaaaaaaaa"})
    api.post("/jobs/request", json={"token": r.token})
    created = create(api, admin, description="d").json()
    api.put(f"/runners/{created['id']}", admin, json={"paused": True})
    api.post("/runners/reset_authentication_token", json={"token": r.token})
    api.delete("/runners/managers", params={"token": "x", "system_id": "y"})
    api.get("/nowhere", admin)

    log = gl.requests
    assert [(q.method, q.path, q.status) for q in log] == [
        ("GET", "/version", 200),
        ("POST", "/runners/verify", 200),
        ("POST", "/jobs/request", 204),
        ("POST", "/user/runners", 201),
        ("PUT", f"/runners/{created['id']}", 200),
        ("POST", "/runners/reset_authentication_token", 201),
        ("DELETE", "/runners/managers", 403),
        ("GET", "/nowhere", 404),
    ]
    assert log[0].query == {"a": "1"} and log[0].headers["PRIVATE-TOKEN"] == admin
    assert log[1].form == {"token": r.token, "system_id": "s_aaaaaaaaaaaa"}
    assert log[6].query == {"token": "x", "system_id": "y"}
    assert [(q.method, q.path) for q in gl.mutating_requests()] == [
        ("POST", "/user/runners"),
        ("PUT", f"/runners/{created['id']}"),
        ("POST", "/runners/reset_authentication_token"),
        ("DELETE", "/runners/managers"),
    ]
    stats = gl.stats
    assert stats["requests"] == 8 and stats["200"] == 3 and stats["404"] == 1
    gl.clear_requests()
    assert gl.requests == [] and gl.mutating_requests() == []


def test_unknown_paths_are_404(gl, api, admin, http):
    # GitLab's catch-all API route answers with Grape's "error" key, not "message".
    resp = api.get("/projects/1/variables", admin)
    assert (resp.status_code, resp.json()) == (404, {"error": "404 Not Found"})
    resp = api.call("PATCH", "/runners/1", admin)
    assert (resp.status_code, resp.json()) == (404, {"error": "404 Not Found"})
    assert http.get(gl.url + "/users/sign_in", timeout=5).status_code == 404


# ----------------------------------------------------------------------- faults


def test_latency(gl, api, admin):
    gl.latency = 0.2
    start = time.monotonic()
    assert api.get("/version", admin).status_code == 200
    assert time.monotonic() - start >= 0.2
    # requests overlap: latency is not serialised behind the state lock
    with ThreadPoolExecutor(8) as pool:
        start = time.monotonic()
        codes = list(
            pool.map(
                lambda _: requests.get(gl.url + "/api/v4/version", timeout=5).status_code, range(8)
            )
        )
    assert codes == [401] * 8
    assert time.monotonic() - start < 1.2
    assert gl.stats["max_in_flight"] >= 2


def test_fail_next(gl, api, admin):
    r = gl.add_runner()
    gl.fail_next(count=2, status=503, method="POST", path=r"^/runners/verify$", retry_after=7)
    assert api.get("/version", admin).status_code == 200  # does not match
    assert api.post("/jobs/request", json={"token": r.token}).status_code == 204
    for _ in range(2):
        resp = api.post("/runners/verify", json={"token": r.token, "system_id": "s_aaaaaaaaaaaa"})
        assert resp.status_code == 503
        assert resp.headers["Retry-After"] == "7"
        assert resp.json() == {"message": "503 Service Unavailable"}
    assert "s_aaaaaaaaaaaa" not in gl.runner(r.id).managers  # no side effects
    assert api.post("/runners/verify", json={"token": r.token}).status_code == 200

    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    gl.fail_next(status=429, retry_after=date)
    resp = create(api, admin)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == date
    assert len(gl.runners()) == 1
    gl.fail_next(status=500, path="user/runners")
    assert create(api, admin).status_code == 500
    assert "Retry-After" not in api.get("/version", admin).headers
    assert create(api, admin).status_code == 201


def test_down_and_up_on_the_same_port(gl, api, admin):
    r = gl.add_runner()
    port = gl.port
    assert api.get("/version", admin).status_code == 200  # a kept-alive connection
    gl.down()
    with pytest.raises(requests.ConnectionError):
        api.get("/version", admin)
    with pytest.raises(requests.ConnectionError):
        requests.get(gl.url + "/api/v4/version", timeout=2)
    gl.up()
    assert gl.port == port
    assert api.get("/version", admin).status_code == 200
    assert api.post("/runners/verify", json={"token": r.token}).status_code == 200


def test_a_fake_that_is_down_keeps_its_port():
    """No other server (another test's fake, in another pytest-xdist worker) is given the
    port meanwhile, to be sent this one's requests: the kernel hands out no port that a
    socket is bound to, listening or not."""
    with FakeGitLab() as fake:
        fake.down()
        other = socket.socket()
        with pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", fake.port))
        other.close()
        fake.up()
    other = socket.socket()
    other.bind(("127.0.0.1", fake.port))  # stopped: the port is free
    other.close()


def test_block_after_changes_state_before_answering(gl, admin):
    block = gl.block(method="POST", path=r"^/user/runners$", when="after")
    result = {}

    def client():
        resp = requests.post(
            gl.url + "/api/v4/user/runners",
            headers={"PRIVATE-TOKEN": admin},
            json={"runner_type": "instance_type"},
            timeout=10,
        )
        result["status"] = resp.status_code

    thread = threading.Thread(target=client)
    thread.start()
    assert block.reached.wait(5)
    assert len(gl.runners()) == 1  # created in GitLab ...
    time.sleep(0.05)
    assert thread.is_alive() and "status" not in result  # ... but not answered yet
    assert gl.requests[-1].status == 201
    block.release()
    thread.join(5)
    assert result["status"] == 201
    # released blocks are gone
    assert (
        requests.post(
            gl.url + "/api/v4/user/runners",
            headers={"PRIVATE-TOKEN": admin},
            json={"runner_type": "instance_type"},
            timeout=5,
        ).status_code
        == 201
    )


def test_block_before_holds_state_changes(gl, admin):
    block = gl.block(path=r"^/user/runners$", when="before")
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                requests.post,
                gl.url + "/api/v4/user/runners",
                headers={"PRIVATE-TOKEN": admin},
                json={"runner_type": "instance_type"},
                timeout=10,
            )
            for _ in range(2)
        ]
        assert block.wait_hits(2, 30)  # both held, neither acted on
        assert gl.runners() == [] and block.hits == 2
        block.release()
        assert [f.result().status_code for f in futures] == [201, 201]
    assert len(gl.runners()) == 2


def test_rate_limit(gl, api, admin, http):
    gl.rate_limit(per_minute=3)
    for _ in range(3):
        assert api.get("/version", admin).status_code == 200
    resp = api.get("/version", admin)
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.headers["RateLimit-Limit"] == "3"
    assert resp.headers["RateLimit-Remaining"] == "0"
    assert int(resp.headers["RateLimit-Reset"]) > time.time()
    assert gl.stats["429"] == 1

    gl.rate_limit(per_minute=1, key="user-agent")
    assert http.get(gl.url + "/api/v4/version", headers={"User-Agent": "a"}).status_code == 401
    assert http.get(gl.url + "/api/v4/version", headers={"User-Agent": "a"}).status_code == 429
    assert http.get(gl.url + "/api/v4/version", headers={"User-Agent": "b"}).status_code == 401

    gl.rate_limit(per_minute=None)
    assert all(api.get("/version", admin).status_code == 200 for _ in range(5))


def test_concurrent_clients(gl, admin):
    gl.latency = 0.02
    tokens = [gl.add_runner().token for _ in range(60)]

    def verify(token):
        with requests.Session() as s:
            url = gl.url + "/api/v4/runners/verify"
            return [
                s.post(url, json={"token": token, "system_id": "s_x"}).status_code for _ in range(2)
            ]

    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(verify, tokens))
    assert results == [[200, 200]] * 60
    assert gl.stats["200"] == 120
    assert all(set(r.managers) == {"s_x"} for r in gl.runners())


# ------------------------------------------------------------------ command line


def test_command_line():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "register_runner.testing.fake_gitlab",
            "--port",
            "0",
            "--token",
            "glpat-cli-token-12345678",
            "--scopes",
            "api,read_api",
            "--disallow-registration-tokens",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    try:
        lines = dict(proc.stdout.readline().rstrip("\n").split(": ", 1) for _ in range(4))
        assert lines["access_token"] == "glpat-cli-token-12345678"
        assert lines["scopes"] == "api,read_api"
        assert lines["registration_token"].startswith("GR1348941")
        url = lines["url"]
        assert re.match(r"^http://127\.0\.0\.1:\d+$", url)
        user = requests.get(
            url + "/api/v4/user", headers={"PRIVATE-TOKEN": "glpat-cli-token-12345678"}, timeout=5
        )
        assert user.json()["is_admin"] is True
        resp = requests.post(
            url + "/api/v4/runners", json={"token": lines["registration_token"]}, timeout=5
        )
        assert resp.status_code == 410
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_main_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--latency", "-1"])
    assert exc.value.code == 2


def test_keep_alive_reuses_connections(gl, api, admin):
    for _ in range(5):
        resp = api.get("/version", admin)
        assert resp.raw.version == 11 and "close" not in resp.headers.get("Connection", "")
    assert gl.stats["connections"] == 1


def test_stop_releases_held_requests():
    fake = FakeGitLab().start()
    block = fake.block(path="^/version$", when="before")
    errors = []

    def client():
        try:
            requests.get(fake.url + "/api/v4/version", timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    assert block.reached.wait(5)
    start = time.monotonic()
    fake.stop()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - start < 3
    assert block.released


def test_out_of_band_runner_helpers(gl):
    with pytest.raises(TypeError):
        gl.add_runner(colour="blue")
    with pytest.raises(ValueError):
        gl.add_runner(runner_type="group_type")
    r = gl.add_runner("group_type", "foreign", ("a", "b"), group_id=9, locked=True)
    assert (r.id, r.description, r.tag_list, r.group_id, r.locked) == (
        1,
        "foreign",
        ["a", "b"],
        9,
        True,
    )
    assert [x.id for x in gl.runners()] == [1]
    assert gl.runner(2) is None
    snap = gl.runner(1)
    snap.tag_list.append("mutated")
    assert gl.runner(1).tag_list == ["a", "b"]  # snapshots are copies
