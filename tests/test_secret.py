"""secret.scrub: every known secret, in every escaping, longest first."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from register_runner import secret
from register_runner.secret import Secret, mask, scrub


@pytest.fixture(autouse=True)
def _only_this_tests_secrets(monkeypatch):
    """scrub masks every secret the process has seen: those of tests that ran before in
    the same worker (a hypothesis test's "a", say) would mask parts of these texts too."""
    monkeypatch.setattr(secret, "_known", secret._Known())


@pytest.mark.parametrize(
    "printed",
    [
        lambda v: v,
        lambda v: json.dumps(v),
        lambda v: repr(v),
        lambda v: repr(v.encode()),
        lambda v: urllib.parse.quote(v, safe=""),
        lambda v: urllib.parse.quote_plus(v),
    ],
)
def test_a_known_secret_is_masked_in_any_escaping(printed):
    value = 'x-secret "with" spaces/slashes\\and+plus'
    Secret(value)
    text = f"answer: {printed(value)} end"
    assert value not in scrub(text) and printed(value) not in scrub(text)
    assert mask(value) in scrub(text)


def test_a_secret_that_contains_another_is_masked_whole():
    short = Secret("abcdefgh-short-secret")
    long = Secret("prefix-abcdefgh-short-secret-suffix")
    scrubbed = scrub(f"{long.reveal()} and {short.reveal()}")
    assert scrubbed == f"{long.masked} and {short.masked}"


def test_a_token_shaped_string_never_seen_is_masked_too():
    assert scrub("PRIVATE-TOKEN: glpat-neverseenbefore1234") == "PRIVATE-TOKEN: glpat-…1234"


def test_many_secrets_each_masked():
    secrets = [Secret(f"glrt-many-secrets-{i:04d}-abcdef") for i in range(300)]
    text = " ".join(s.reveal() for s in secrets)
    assert scrub(text) == " ".join(s.masked for s in secrets)
