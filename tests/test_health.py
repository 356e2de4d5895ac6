"""health.py and report.config_diff without a GitLab: the metrics text, the record, the
plan's diff."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from register_runner import health, model
from register_runner.cli import command_first
from register_runner.errors import InputError
from register_runner.model import AccessTokenCheck, RateLimits
from register_runner.report import config_diff
from register_runner.secret import Secret


def test_metrics_have_every_family_with_help_type_and_instance():
    run = model.Run(
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        1,
        [
            {
                "runner": "a",
                "id": 1,
                "verdict": "valid",
                "token_expires_at": "2030-02-01T00:00:00Z",
            },
            {"runner": 'we"ird', "id": 2, "verdict": "invalid", "token_expires_at": None},
        ],
        ["something"],
        {"https://gitlab.example.com": "2030-03-01", "https://other.example.com": None},
    )
    families = {
        f.name: f for f in text_string_to_metric_families(health.render_metrics("gpu", run))
    }

    assert {f.type for f in families.values()} == {"gauge", "counter"}
    assert all(f.documentation for f in families.values())
    samples = {s.name: [] for f in families.values() for s in f.samples}
    for family in families.values():
        for sample in family.samples:
            assert sample.labels["instance"] == "gpu"
            samples[sample.name].append((sample.labels, sample.value))
    assert samples["register_runner_last_run_exit_code"][0][1] == 1
    assert samples["register_runner_last_run_timestamp_seconds"][0][1] == run.time.timestamp()
    states = {labels["state"]: value for labels, value in samples["register_runner_runners"]}
    assert states == {"valid": 1, "invalid": 1, "unknown": 0, "held": 0}
    assert samples["register_runner_healthy"] == [({"instance": "gpu"}, 0)]
    (expiring,) = samples["register_runner_token_expires_timestamp_seconds"]
    assert expiring[0]["runner"] == "a"
    assert expiring[1] == datetime(2030, 2, 1, tzinfo=timezone.utc).timestamp()
    (access,) = samples["register_runner_access_token_expires_timestamp_seconds"]
    assert access[0]["url"] == "https://gitlab.example.com"


def test_metrics_without_a_recorded_run_still_count_runners():
    families = list(text_string_to_metric_families(health.render_metrics("main", None)))
    samples = [s for f in families for s in f.samples]
    counts = {s.labels["state"]: s.value for s in samples if s.name == "register_runner_runners"}
    assert counts == {"valid": 0, "invalid": 0, "unknown": 0, "held": 0}
    assert [s.value for s in samples if s.name == "register_runner_healthy"] == [0]


def test_record_is_written_only_into_an_existing_state_folder(tmp_path):
    run = health.record_run(
        tmp_path, "main", exit_status=2, runners=None, warnings=["bad"], access_tokens=None
    )
    assert run.exit_status == 2 and not (tmp_path / ".register-runner").exists()
    (tmp_path / ".register-runner").mkdir()
    health.record_run(
        tmp_path,
        "main",
        exit_status=0,
        runners=[],
        warnings=["w", "w"],
        access_tokens={},
    )
    again = health.read_last_run(tmp_path, "main")
    assert again is not None and again.exit_status == 0 and again.warnings == ["w"]


def test_config_diff_masks_tokens():
    token = "glrt-" + "x" * 20
    secret = Secret("glpat-" + "y" * 20)
    old = f'concurrent = 1\n[[runners]]\n  token = "{token}"\n  limit = 1\n'
    new = old.replace("limit = 1", "limit = 2") + f"# {secret.reveal()}\n"

    diff = config_diff(old, new, "config.main.toml")

    assert diff.startswith("--- config.main.toml (now)\n+++ config.main.toml (after sync)\n")
    assert "-  limit = 1\n+  limit = 2\n" in diff
    assert token not in diff and secret.reveal() not in diff
    assert config_diff(old, old) == ""


def test_command_word_may_follow_global_options():
    assert command_first(["-v", "plan"]) == ["plan", "-v"]
    assert command_first(["--prefix", "plan", "status"]) == ["status", "--prefix", "plan"]
    assert command_first(["--prefix=/p", "-q"]) == ["sync", "--prefix=/p", "-q"]
    assert command_first(["--version"]) == ["--version"]
    assert command_first(["frobnicate"]) == ["frobnicate"]


def test_status_of_is_the_one_verdict_and_a_run_that_did_not_ask_keeps_a_rejection(tmp_path):
    from register_runner.model import AccessTokenCheck

    (tmp_path / ".register-runner").mkdir()
    url = "https://gitlab.example.com"
    valid = [{"runner": "a", "id": 1, "verdict": "valid", "token_expires_at": None}]

    def record(exit_status, runners=valid, access_tokens=None):
        return health.record_run(
            tmp_path,
            "main",
            exit_status=exit_status,
            runners=runners,
            warnings=[],
            access_tokens=access_tokens,
        )

    assert health.status_of(None) == 3
    assert health.status_of(record(0, access_tokens={url: AccessTokenCheck(True)})) == 0
    assert health.status_of(record(0, [dict(valid[0], verdict="held")])) == 1
    assert health.status_of(record(0, [dict(valid[0], verdict="unknown")])) == 3
    assert health.status_of(record(3)) == 3
    assert health.status_of(record(2)) == 1
    rejected = record(1, access_tokens={url: AccessTokenCheck(False, rejected=True)})
    assert rejected.rejected_access_tokens == [url] and health.status_of(rejected) == 1
    # A busy lock's run asked nothing: the token is still the one GitLab rejected.
    assert health.status_of(record(3, runners=None)) == 1
    assert health.status_of(record(0, access_tokens={url: AccessTokenCheck(True)})) == 0


# -- what mutation testing found unchecked -------------------------------------------------


def _samples(run, instance="main"):
    text = health.render_metrics(instance, run)
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "instance"))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_a_runner_gitlab_rejected_needs_a_person():
    rows = [{"runner": "a", "id": 1, "verdict": "invalid", "token_expires_at": None}]
    run = model.Run(datetime(2030, 1, 2, tzinfo=timezone.utc), 0, rows)
    assert health.status_of(run) == 1 and not health.healthy(run)


def test_a_verdict_this_release_does_not_know_counts_as_unknown():
    rows = [
        {"runner": "a", "id": 1, "verdict": "valid"},
        {"runner": "b", "id": 2, "verdict": "paused"},
        {"runner": "c", "id": 3, "verdict": None},
    ]
    samples = _samples(model.Run(datetime(2030, 1, 2, tzinfo=timezone.utc), 0, rows))
    counts = {k[1][0][1]: v for k, v in samples.items() if k[0] == "register_runner_runners"}
    assert counts == {"valid": 1, "invalid": 0, "unknown": 2, "held": 0}


def test_a_record_round_trips_what_the_metrics_show_and_an_older_one_reads_as_none_met(
    tmp_path,
):
    (tmp_path / ".register-runner").mkdir()
    health.record_run(
        tmp_path,
        "main",
        exit_status=0,
        runners=[],
        warnings=[],
        access_tokens={},
        config_kept=True,
        changes=["create", "create", "delete"],
        rate_limits=RateLimits(3, 1.5),
    )
    samples = _samples(health.read_last_run(tmp_path, "main"))
    assert samples[("register_runner_config_kept", ())] == 1
    assert samples[("register_runner_rate_limited_requests", ())] == 3
    assert samples[("register_runner_rate_limit_wait_seconds", ())] == 1.5
    assert samples[("register_runner_changes_total", (("kind", "create"),))] == 2
    assert samples[("register_runner_changes_total", (("kind", "update"),))] == 0
    path = health.last_run_path(tmp_path, "main")
    assert json.loads(path.read_text())["version"] == 1

    # A record an earlier release wrote, before these keys: nothing kept, limited, changed.
    path.write_text(json.dumps({"time": "2030-01-02T00:00:00Z", "exit_status": 0}))
    older = health.read_last_run(tmp_path, "main")
    assert (older.config_kept, older.rate_limits) == (False, RateLimits())
    assert (older.runners, older.warnings, older.access_tokens) == ([], [], {})
    assert older.rejected_access_tokens == [] and older.changes_total == {}
    samples = _samples(older)
    assert samples[("register_runner_config_kept", ())] == 0
    assert samples[("register_runner_changes_total", (("kind", "rotate"),))] == 0


def test_a_run_that_learned_nothing_keeps_the_last_runners_as_unknown_and_the_expiries(
    tmp_path,
):
    (tmp_path / ".register-runner").mkdir()
    url = "https://gitlab.example.com"
    row = {"runner": "a", "id": 1, "verdict": "valid", "token_expires_at": None}

    def record(runners, access_tokens):
        return health.record_run(
            tmp_path,
            "main",
            exit_status=0,
            runners=runners,
            warnings=[],
            access_tokens=access_tokens,
        )

    record([row], {url: AccessTokenCheck(True, date(2030, 3, 1))})
    unasked = record(None, None)
    assert unasked.runners == [dict(row, verdict="unknown")]
    assert unasked.access_tokens == {url: "2030-03-01"}
    # GitLab could not be asked about the token this run: its expiry is the last one known.
    unanswered = record([row], {url: AccessTokenCheck(False)})
    assert unanswered.access_tokens == {url: "2030-03-01"}
    assert unanswered.time.tzinfo is not None and unanswered.time.microsecond == 0


def test_an_access_token_expiring_in_exactly_two_weeks_is_warned_about():
    url = "https://gitlab.example.com"
    expires = date.today() + timedelta(days=14)
    assert health.expiry_notice(url, expires) == (
        f"access token for {url} expires on {expires.isoformat()}; create a new one and "
        "replace it before then"
    )
    assert health.expiry_notice(url, expires + timedelta(days=1)) is None


def test_each_metric_says_what_it_means():
    run = model.Run(datetime(2030, 1, 2, tzinfo=timezone.utc), 0)
    helps = [line for line in health.render_metrics("main", run).splitlines() if "# HELP" in line]
    assert helps == [
        "# HELP register_runner_last_run_timestamp_seconds When the last register-runner run "
        "ended (Unix time).",
        "# HELP register_runner_last_run_exit_code Exit status of the last run: 0 done, 1 a "
        "person must act, 2 bad input, 3 try again later.",
        "# HELP register_runner_healthy 1 when every runner of this host can take jobs (status "
        "would exit 0), else 0.",
        "# HELP register_runner_runners Runners of this host by the last run's verdict on "
        "their token.",
        "# HELP register_runner_token_expires_timestamp_seconds When each runner's token "
        "expires (Unix time); runners whose token does not expire are left out.",
        "# HELP register_runner_access_token_expires_timestamp_seconds When each GitLab access "
        "token expires (Unix time), as GitLab reports it.",
        "# HELP register_runner_config_kept 1 when GitLab failed in the last run and the "
        "config of an earlier run was kept (the runners run, unchecked), else 0.",
        "# HELP register_runner_changes_total Changes made to runners in GitLab (sync, "
        "unregister, reset-token), by kind, over the runs recorded here.",
        "# HELP register_runner_rate_limited_requests Requests GitLab answered 429 (too many "
        "requests) in the last run.",
        "# HELP register_runner_rate_limit_wait_seconds Seconds the last run waited for "
        "GitLab's rate limit (Retry-After, or pacing as the budget ran low).",
        "# HELP register_runner_build_info The register-runner version that wrote these "
        "metrics; always 1.",
    ]


def test_an_unwritable_metrics_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "missing" / "register_runner.prom"
    with pytest.raises(InputError) as refused:
        health.write_metrics(path, "main", None)
    assert str(refused.value) == f"{path}: cannot write: No such file or directory"
