"""The adapter maps GitLab's answers onto outcomes, single calls and the pages of lists,
against a scripted HTTP server on 127.0.0.1. The end-to-end tests cover the same through
the CLI against the fake GitLab."""

from __future__ import annotations

import contextlib
import email.utils
import socket
import threading
import time

import pytest

from register_runner.gitlab import (
    AccessDenied,
    Connection,
    Deadline,
    GitLab,
    Gone,
    NotFound,
    Redirected,
    Rejected,
    Unavailable,
    retry_after,
)
from register_runner.model import ClientConfig, Scope, Verdict
from register_runner.secret import Secret
from register_runner.testing.scripted import Scripted

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def scripted():
    with Scripted() as server:
        yield server


def adapter(server, deadline=5.0):
    """The GitLab adapter for ``server`` (a Scripted server, or a url)."""
    url = server if isinstance(server, str) else server.url
    client = ClientConfig(url, Scope(), access_token=Secret("glpat-unit-test-token"))
    return GitLab(client, Connection(Deadline(deadline), timeout=1.0, system_id="s_0123456789ab"))


def test_retry_after_forms():
    assert retry_after({"Retry-After": "7"}) == 7
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= retry_after({"Retry-After": in_ten}) <= 10
    assert 0 < retry_after({"RateLimit-Reset": str(int(time.time()) + 5)}) <= 5
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, {"id": 1, "token": "glrt-x", "token_expires_at": None}, Verdict.VALID),
        (403, {"message": "403 Forbidden"}, Verdict.INVALID),
        (422, {"message": "422"}, Verdict.UNKNOWN),
    ],
)
def test_verify_verdicts(scripted, status, body, verdict):
    scripted.post("/runners/verify", status_code=status, json=body, headers=JSON)
    assert adapter(scripted).verify(Secret("glrt-x"), "s_0123456789ab")[0] is verdict
    assert scripted.last_request.json() == {"token": "glrt-x", "system_id": "s_0123456789ab"}


def test_verify_of_an_old_gitlab_answering_plain_text(scripted):
    scripted.post("/runners/verify", status_code=200, text="200")
    assert adapter(scripted).verify(Secret("glrt-x"), None) == (Verdict.VALID, None)


def test_verify_5xx_until_the_deadline_is_unknown(scripted):
    scripted.post("/runners/verify", status_code=500, json={})
    started = time.monotonic()
    # Long enough for a retry, which is sent only while half a second is left.
    assert adapter(scripted, deadline=1.5).verify(Secret("glrt-x"), None)[0] is Verdict.UNKNOWN
    assert time.monotonic() - started < 3
    assert scripted.call_count >= 2


def test_create_sends_scope_and_parses_the_answer(scripted):
    scripted.post(
        "/user/runners",
        status_code=201,
        json={"id": 9, "token": "glrt-new", "token_expires_at": "2030-01-01T00:00:00.000Z"},
        headers=JSON,
    )
    issued = adapter(scripted).create_runner(Scope("group_type", group_id=4), {"tag_list": ["a"]})
    assert issued.id == 9 and issued.token.reveal() == "glrt-new"
    assert issued.expires_at.year == 2030
    sent = scripted.last_request
    assert sent.json() == {"tag_list": ["a"], "runner_type": "group_type", "group_id": 4}
    assert sent.headers["PRIVATE-TOKEN"] == "glpat-unit-test-token"
    assert "s_0123456789ab" in sent.headers["User-Agent"]


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (401, {"message": "401 Unauthorized"}, AccessDenied, r"rejected \(401\)"),
        (403, {"error": "insufficient_scope"}, AccessDenied, "lacks the create_runner scope"),
        (403, {"message": "403 Forbidden"}, AccessDenied, "forbidden"),
        (400, {"message": "Tags list can not be empty"}, Rejected, "Tags list can not be empty"),
    ],
)
def test_create_refusals(scripted, status, body, error, text):
    scripted.post("/user/runners", status_code=status, json=body)
    with pytest.raises(error, match=text):
        adapter(scripted).create_runner(Scope(), {})
    assert scripted.call_count == 1


def test_validation_error_hash_shape_is_flattened(scripted):
    scripted.put(
        "/runners/3",
        status_code=400,
        json={"message": {"tags_list": ["can not be empty when runner is not allowed"]}},
    )
    with pytest.raises(Rejected, match="tags_list can not be empty"):
        adapter(scripted).update_runner(3, {"tag_list": []})


def test_legacy_registration_gone(scripted):
    scripted.post("/runners", status_code=410, json={"message": "410 Gone"})
    with pytest.raises(Gone, match="create_runner"):
        adapter(scripted).register_legacy(Secret("GR1348941x"), {})


MUTATING_CALLS = {
    "create": ("post", "/user/runners", lambda api: api.create_runner(Scope(), {})),
    "legacy register": (
        "post",
        "/runners",
        lambda api: api.register_legacy(Secret("GR1348941x"), {}),
    ),
    "update": ("put", "/runners/5", lambda api: api.update_runner(5, {"paused": True})),
    "delete": ("delete", "/runners/5", lambda api: api.delete_runner(5)),
    "delete by token": ("delete", "/runners", lambda api: api.delete_by_token(Secret("glrt-x"))),
    "reset": (
        "post",
        "/runners/5/reset_authentication_token",
        lambda api: api.reset_token(5),
    ),
    "reset by token": (
        "post",
        "/runners/reset_authentication_token",
        lambda api: api.reset_by_token(Secret("glrt-x")),
    ),
}


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520])
@pytest.mark.parametrize("call", sorted(MUTATING_CALLS))
def test_5xx_to_a_mutating_call_is_an_unknown_outcome_never_retried(scripted, call, status):
    # GitLab (or the proxy in front) may have acted before answering 5xx: a retry could
    # make a duplicate, or reset a token whose successor was never seen.
    verb, path, send = MUTATING_CALLS[call]
    getattr(scripted, verb)(path, status_code=status, json={"message": "boom"})
    with pytest.raises(Unavailable, match=f"answered {status}; it may have acted") as raised:
        send(adapter(scripted))
    assert raised.value.ambiguous and scripted.call_count == 1


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_to_a_read_is_retried(scripted, status):
    scripted.get(
        "/runners/5",
        [{"status_code": status, "json": {}}, {"status_code": 200, "json": {"id": 5}}],
    )
    assert adapter(scripted).get_runner(5) == {"id": 5}
    assert scripted.call_count == 2


def test_429_pauses_for_retry_after(scripted):
    scripted.delete(
        "/runners/5",
        [{"status_code": 429, "headers": {"Retry-After": "1"}, "json": {}}, {"status_code": 204}],
    )
    started = time.monotonic()
    assert adapter(scripted).delete_runner(5) is True
    assert time.monotonic() - started >= 1


@pytest.mark.parametrize("remaining, paced", [("0", True), ("3", True), ("500", False)])
def test_a_running_out_rate_budget_slows_the_pool_down_before_a_429(scripted, remaining, paced):
    reset = str(int(time.time()) + 30)
    scripted.delete(
        "/runners/5",
        status_code=204,
        headers={"RateLimit-Remaining": remaining, "RateLimit-Reset": reset},
    )
    gitlab = adapter(scripted, deadline=1.0)
    assert gitlab.delete_runner(5) is True
    # The next call would wait past the deadline: it gives up instead of being sent.
    if paced:
        with pytest.raises(Unavailable, match="429"):
            gitlab.delete_runner(5)
        assert scripted.call_count == 1
    else:
        assert gitlab.delete_runner(5) is True


def test_delete_of_a_missing_runner_is_not_an_error(scripted):
    scripted.delete("/runners/5", status_code=404, json={"message": "404"})
    assert adapter(scripted).delete_runner(5) is False


def page(runners, following="", **headers):
    """One page of a list as GitLab answers it: ``following`` is its X-Next-Page."""
    return {"json": runners, "headers": {"X-Next-Page": following, **headers}}


def test_list_follows_pagination(scripted):
    scripted.get("/groups/4/runners", [page([{"id": 1}, {"id": 2}], "2"), page([{"id": 3}])])
    found = adapter(scripted).list_runners(Scope("group_type", group_id=4), status="stale")
    assert [r["id"] for r in found] == [1, 2, 3]
    assert [r.query for r in scripted.request_history] == [
        "type=group_type&status=stale&per_page=100&page=1",
        "type=group_type&status=stale&per_page=100&page=2",
    ]
    assert scripted.last_request.headers["PRIVATE-TOKEN"] == "glpat-unit-test-token"


def test_a_failing_page_is_retried_alone(scripted):
    scripted.get(
        "/groups/4/runners",
        [page([{"id": 1}], "2"), {"status_code": 503, "json": {"message": "x"}}, page([{"id": 2}])],
    )
    found = adapter(scripted).list_runners(Scope("group_type", group_id=4))
    assert [r["id"] for r in found] == [1, 2]
    assert [r.query[-6:] for r in scripted.request_history] == ["page=1", "page=2", "page=2"]


def test_a_page_that_is_not_a_list_is_not_an_answer(scripted):
    scripted.get("/groups/4/runners", json={"message": "a list, honest"})
    with pytest.raises(Unavailable, match="not a list"):
        adapter(scripted).list_runners(Scope("group_type", group_id=4))


# -- a hostile network: redirects, misclassified answers, the deadline -------------------


@pytest.mark.parametrize("status", [300, 301, 302, 307, 308])
def test_a_redirect_is_refused_and_not_followed(scripted, status):
    scripted.post(
        "/user/runners", status_code=status, headers={"Location": "http://evil.test:81/x"}
    )
    with pytest.raises(Redirected) as raised:
        adapter(scripted).create_runner(Scope(), {})
    assert raised.value.exit_status == 1 and raised.value.location_host == "http://evil.test:81"
    assert "put the final url in the client_config" in str(raised.value)
    assert [r.path for r in scripted.request_history] == ["/user/runners"]


@pytest.mark.parametrize("status", [408, 500, 501, 503, 505, 599])
def test_408_and_every_5xx_are_transient(scripted, status):
    scripted.get("/runners/5", status_code=status, json={"message": "x"})
    with pytest.raises(Unavailable):
        adapter(scripted, deadline=1.5).get_runner(5)  # time for a retry
    assert scripted.call_count >= 2


def test_an_html_login_page_is_transient_not_an_answer(scripted):
    page = "<html><body>Sign in</body></html>"
    scripted.get("/runners/5", text=page, headers={"Content-Type": "text/html"})
    scripted.post("/runners/verify", text=page, headers={"Content-Type": "text/html"})
    # Retried until the deadline; the reason given is the last try's. (No retry is sent
    # so late that the deadline cuts it short and names itself instead: seen in CI.)
    with pytest.raises(Unavailable, match="HTML page"):
        adapter(scripted, deadline=1.0).get_runner(5)
    assert scripted.call_count >= 1
    assert adapter(scripted, deadline=1.0).verify(Secret("glrt-x"), None)[0] is Verdict.UNKNOWN


def test_any_json_200_to_verify_means_valid(scripted):
    scripted.post("/runners/verify", status_code=200, json={})
    assert adapter(scripted).verify(Secret("glrt-x"), None) == (Verdict.VALID, None)


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": 1, "tok',
        b"",
        b"[]",
        b'{"token": "glrt-z"}',
        b'{"id": "1", "token": "glrt-z"}',
        b'{"id": 1}',
        b"<html>ok</html>",
    ],
)
def test_an_unreadable_answer_to_a_create_is_ambiguous(scripted, body):
    scripted.post("/user/runners", status_code=201, content=body, headers=JSON)
    with pytest.raises(Unavailable) as raised:
        adapter(scripted).create_runner(Scope(), {})
    assert raised.value.ambiguous and scripted.call_count == 1


def test_a_404_names_the_url(scripted):
    scripted.put("/runners/5", status_code=404, json={"message": "404 Not Found"})
    with pytest.raises(NotFound) as raised:
        adapter(scripted).update_runner(5, {"paused": True})
    assert raised.value.url == scripted.url and raised.value.exit_status == 1
    assert f"GitLab at {scripted.url} answered 404" in str(raised.value)


@pytest.mark.parametrize(("value", "seconds"), [("0", 0), ("-1", 0), ("nan", None), ("soon", None)])
def test_a_useless_retry_after_reads_as_none_or_zero(value, seconds):
    assert retry_after({"Retry-After": value}) == seconds


# One value for each reading above: the wait that follows depends only on that.
@pytest.mark.parametrize("value", ["0", "nan"])
def test_a_useless_retry_after_still_waits_a_second(scripted, value):
    scripted.delete(
        "/runners/5",
        [{"status_code": 429, "headers": {"Retry-After": value}}, {"status_code": 204}],
    )
    started = time.monotonic()
    assert adapter(scripted).delete_runner(5) is True
    assert time.monotonic() - started >= 1
    assert retry_after({"Retry-After": value}) in (None, 0)


def test_an_oversized_answer_is_refused(scripted):
    scripted.get("/runners/5", content=b"[" + b" " * (5 * 2**20) + b"]")
    with pytest.raises(Unavailable, match="larger than 4 MiB"):
        adapter(scripted, deadline=0.5).get_runner(5)


def test_error_bodies_are_scrubbed_and_kept_on_one_line(scripted):
    secret = Secret("glpat-echoed-back-secret-value")
    scripted.put(
        "/runners/5",
        status_code=422,
        json={"message": f"bad request\nPRIVATE-TOKEN: {secret.reveal()}"},
    )
    with pytest.raises(Rejected) as raised:
        adapter(scripted).update_runner(5, {})
    assert secret.reveal() not in str(raised.value) and "\n" not in str(raised.value)


@contextlib.contextmanager
def trickling_server(headers_too: bool):
    """A server that answers one byte every 0.2 s, forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        with contextlib.suppress(OSError):
            while not stop.is_set():
                conn, _ = listener.accept()
                conn.recv(65536)
                if not headers_too:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(b"H" if headers_too else b" ")
                    time.sleep(0.2)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("headers_too", [False, True])
def test_the_deadline_bounds_a_trickling_answer(headers_too):
    with trickling_server(headers_too) as url:
        client = ClientConfig(url, Scope(), access_token=Secret("glpat-unit-test-token"))
        # The timeout not below the deadline: a stall on a loaded machine ends there too.
        api = GitLab(client, Connection(Deadline(1.0), timeout=1.0))
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            api.create_runner(Scope(), {})
    # Loose: the machine is shared; without the bound this runs forever.
    assert time.monotonic() - started < 20
    assert raised.value.ambiguous and "deadline" in str(raised.value)


def test_a_refused_connection_is_given_up_on_early_when_asked():
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    client = ClientConfig(f"http://127.0.0.1:{port}", Scope(), access_token=Secret("glpat-x"))
    api = GitLab(client, Connection(Deadline(60), give_up_unreachable_after=1.0))
    started = time.monotonic()
    with pytest.raises(Unavailable, match=f"connection refused by 127.0.0.1:{port}"):
        api.get_runner(5)
    with pytest.raises(Unavailable, match="connection refused"):
        api.get_runner(6)  # the next call does not start over
    assert time.monotonic() - started < 30
