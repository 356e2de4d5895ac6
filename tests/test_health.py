"""health.py and report.config_diff without a GitLab: the metrics text, the record, the
plan's diff."""

from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client.parser import text_string_to_metric_families

from register_runner import health, model
from register_runner.cli import command_first
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
