"""observe and apply are phases over values: a Loaded prefix and a GitLab client passed
beside it. Here the client is a plain object, no HTTP: what each phase asks for and what
it returns (warnings and the state included) are all there is."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import register_runner
from register_runner.answers import Issued
from register_runner.apply import apply
from register_runner.model import Kind, Verdict
from register_runner.observe import known_runners, observe
from register_runner.reconcile import select
from register_runner.secret import Secret
from register_runner.workspace import Loaded, Options, load


class FakeClient:
    """What the phases call on a GitLab: a verdict for every token, and a new token for
    every reset; each call written down."""

    def __init__(self, verdict: Verdict = Verdict.VALID) -> None:
        self.verdict, self.calls = verdict, []
        self.last_failure = "503 from the fake"

    def api(self, url: str) -> FakeClient:
        return self

    def concurrently(self, work, items):
        return [work(item) for item in items]

    def verify(self, token, system_id):
        self.calls.append(("verify", token.reveal()))
        return self.verdict, None

    def access_token_expires_at(self):
        self.calls.append(("access token",))
        return None

    def reset_token(self, runner_id):
        self.calls.append(("reset", runner_id))
        expires = datetime(2030, 1, 1, tzinfo=timezone.utc)
        return Issued(runner_id, Secret(f"glrt-fresh-token-{runner_id:08d}"), expires)


def synced(make) -> Loaded:
    prefix = make(executors={"a": 'executor = "shell"\n'})
    assert register_runner.sync(prefix=prefix.root).exit_status == 0
    return load(Options(prefix=prefix.root), os.environ)


def test_observe_with_a_plain_client_returns_its_warnings(make):
    loaded = synced(make)
    client = FakeClient(Verdict.UNKNOWN)
    known = known_runners(loaded, client)

    observed = observe(loaded, client, known.runners)

    token = known.runners["a"].token
    assert token is not None
    assert client.calls == [("verify", token.reveal()), ("access token",)]
    assert observed.runners["a"].verdict is Verdict.UNKNOWN
    (warning,) = observed.warnings
    assert (
        warning.startswith("could not verify 1 token(s) (a): ") and "503 from the fake" in warning
    )


def test_apply_with_a_plain_client_returns_the_state_it_saved(make):
    loaded = synced(make)
    client = FakeClient()
    known = known_runners(loaded, client)
    runner_id = known.runners["a"].id
    plan = select(Kind.ROTATE, "reset-token", known.runners, loaded.executors, None, "main")
    before = dict(loaded.state.runners)

    outcome = apply(loaded, client, plan, observe(loaded, client, known.runners))

    assert ("reset", runner_id) in client.calls
    assert [(r.kind, r.runner, r.result) for r in outcome.records] == [("rotate", "a", "done")]
    assert outcome.wrote and outcome.warnings == []
    assert f"glrt-fresh-token-{runner_id:08d}" in loaded.output.read_text()
    assert set(outcome.state.runners) == {"a"} and loaded.state.runners == before
