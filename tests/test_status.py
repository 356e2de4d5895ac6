"""`status` and `--metrics-file`, end to end: the real CLI against the fake GitLab."""

from __future__ import annotations

import json
import stat
from datetime import date, timedelta

from prometheus_client.parser import text_string_to_metric_families

from register_runner.testing.prefix import run_cli


def metrics(path) -> dict:
    """{(name, frozenset(labels)): value} as Prometheus parses the file."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def test_status_reports_the_last_sync(gitlab, make, cli):
    gitlab.runner_token_lifetime = 3600 * 24 * 30
    prefix = make(executors={"shell": 'executor = "shell"\n', "docker": 'executor = "docker"\n'})
    assert cli(prefix).returncode == 0

    result = cli(prefix, "status", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"last_run", "runners", "warnings"}
    assert report["last_run"]["exit_status"] == 0
    assert report["last_run"]["time"].endswith("Z")
    assert [r["runner"] for r in report["runners"]] == ["docker", "shell"]
    ids = {r.id for r in gitlab.runners()}
    for row in report["runners"]:
        assert row["verdict"] == "valid" and row["id"] in ids
        assert row["token_expires_at"] and row["token_expires_at"].endswith("Z")
    human = cli(prefix, "status")
    assert human.returncode == 0
    assert "exit status 0" in human.stdout and "docker" in human.stdout
    record = prefix.root / ".register-runner" / "main.last-run.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    for runner in prefix.runners():
        assert runner["token"] not in record.read_text() + human.stdout + result.stdout


def test_status_without_a_run_exits_3_and_calls_no_api(gitlab, prefix, cli):
    result = cli(prefix, "status", "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["exit_status"] == 3
    assert "no run recorded" in result.stderr
    assert gitlab.requests == []


def test_status_shows_why_the_last_start_failed(gitlab, prefix, cli):
    assert cli(prefix).returncode == 0
    before = prefix.snapshot()
    prefix.write_executor("broken", "executor = [\n")

    assert cli(prefix).returncode == 2
    result = cli(prefix, "status", "--json")

    # Bad input needs a person: status says so (1), and which exit the run had.
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["last_run"]["exit_status"] == 2
    assert any("broken.toml" in w and "end of file" in w for w in report["warnings"])
    # The bad file held only its own runner (it has none): shell was checked as usual.
    assert [(r["runner"], r["verdict"]) for r in report["runners"]] == [("shell", "valid")]
    # The record (which snapshot() leaves out) is the only thing the run changed.
    after = prefix.snapshot()
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {"main/broken.toml"}


def test_metrics_written_when_nothing_can_be_recorded(tmp_path):
    missing = tmp_path / "no-such-prefix"
    metrics_file = tmp_path / "rr.prom"

    result = run_cli(["sync", "--prefix", str(missing), "--metrics-file", str(metrics_file)])

    assert result.returncode == 2
    assert not missing.exists()
    values = metrics(metrics_file)
    assert values[("register_runner_last_run_exit_code", frozenset({("instance", "main")}))] == 2


def test_metrics_file_parses_and_counts_runners(gitlab, make, cli, tmp_path):
    gitlab.runner_token_lifetime = 3600 * 24 * 30
    prefix = make(executors={"a": 'executor = "shell"\n', "b": 'executor = "shell"\n'})
    metrics_file = tmp_path / "textfile" / "register-runner.prom"
    metrics_file.parent.mkdir()

    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0

    values = metrics(metrics_file)
    main = ("instance", "main")
    assert values[("register_runner_last_run_exit_code", frozenset({main}))] == 0
    assert values[("register_runner_last_run_timestamp_seconds", frozenset({main}))] > 1.6e9
    for state, count in (("valid", 2), ("invalid", 0), ("unknown", 0)):
        key = ("register_runner_runners", frozenset({main, ("state", state)}))
        assert values[key] == count
    for stem in ("a", "b"):
        key = (
            "register_runner_token_expires_timestamp_seconds",
            frozenset({main, ("runner", stem)}),
        )
        assert values[key] > 1.6e9
    assert stat.S_IMODE(metrics_file.stat().st_mode) == 0o644
    assert [p.name for p in metrics_file.parent.iterdir()] == ["register-runner.prom"]


def test_metrics_written_when_gitlab_is_down(gitlab, prefix, cli, tmp_path):
    assert cli(prefix).returncode == 0
    gitlab.fail_next(status=503, count=1000)
    metrics_file = tmp_path / "rr.prom"

    result = cli(prefix, "sync", "--deadline", "1", "--metrics-file", str(metrics_file))

    assert result.returncode == 0  # the last good config is kept
    values = metrics(metrics_file)
    main = ("instance", "main")
    assert values[("register_runner_runners", frozenset({main, ("state", "unknown")}))] == 1
    assert values[("register_runner_runners", frozenset({main, ("state", "valid")}))] == 0


def test_runners_whose_tokens_gitlab_refuses_while_listing_them_are_held(
    gitlab, make, cli, tmp_path
):
    prefix = make(executors={"a": 'executor = "shell"\n', "b": 'executor = "shell"\n'})
    assert cli(prefix).returncode == 0
    for runner in prefix.runners():
        gitlab.revoke_runner_token(runner["id"])
    metrics_file = tmp_path / "rr.prom"

    # Every token refused at once, the runners still listed: the guard keeps them.
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 3

    status = cli(prefix, "status", "--json")
    report = json.loads(status.stdout)
    assert status.returncode == 1 and report["healthy"] is False
    assert {r["runner"]: r["verdict"] for r in report["runners"]} == {"a": "held", "b": "held"}
    values = metrics(metrics_file)
    main = ("instance", "main")
    assert values[("register_runner_runners", frozenset({main, ("state", "held")}))] == 2
    assert values[("register_runner_runners", frozenset({main, ("state", "invalid")}))] == 0
    assert values[("register_runner_healthy", frozenset({main}))] == 0


def test_access_token_expiring_soon_is_warned_and_exported(gitlab, make, cli, tmp_path):
    soon = date.today() + timedelta(days=10)
    token = gitlab.add_access_token(
        scopes=("create_runner", "manage_runner", "read_api"), admin=True, expires_at=soon
    )
    prefix = make(access_token=token)
    metrics_file = tmp_path / "rr.prom"

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 0, result.stderr
    assert f"access token for {gitlab.url} expires on {soon.isoformat()}" in result.stderr
    key = (
        "register_runner_access_token_expires_timestamp_seconds",
        frozenset({("instance", "main"), ("url", gitlab.url)}),
    )
    assert metrics(metrics_file)[key] > 1.6e9
    report = json.loads(cli(prefix, "status", "--json").stdout)
    assert report["access_tokens"] == [
        {"url": gitlab.url, "expires_at": soon.isoformat(), "rejected": False}
    ]
    assert any("expires on" in w for w in report["warnings"])


def test_access_token_far_from_expiry_is_not_warned(gitlab, make, cli):
    later = date.today() + timedelta(days=100)
    token = gitlab.add_access_token(
        scopes=("create_runner", "manage_runner", "read_api"), admin=True, expires_at=later
    )
    result = cli(make(access_token=token))
    assert result.returncode == 0 and "expires on" not in result.stderr


def test_unknown_access_token_expiry_changes_nothing(gitlab, prefix, cli):
    gitlab.fail_next(status=403, path=r"^/personal_access_tokens/self$")
    result = cli(prefix, "sync", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == []


def test_unregister_is_recorded(gitlab, make, cli):
    prefix = make(executors={"a": 'executor = "shell"\n', "b": 'executor = "shell"\n'})
    assert cli(prefix).returncode == 0
    prefix.remove_executor("a")

    assert cli(prefix, "unregister", "--runner", "a").returncode == 0

    report = json.loads(cli(prefix, "status", "--json").stdout)
    assert [r["runner"] for r in report["runners"]] == ["b"]
    assert report["runners"][0]["verdict"] == "valid"  # carried over: same runner
