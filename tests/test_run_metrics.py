"""What the metrics say about each run, end to end: the real CLI against the fake GitLab,
the file read with Prometheus's own parser. A kept config, the changes made, the 429s met
and the seconds waited for them, the version."""

from __future__ import annotations

import errno
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

import register_runner
from register_runner.files import exclusive_lock
from register_runner.workspace import Options, lock_path

MAIN = ("instance", "main")


def metrics(path) -> dict:
    """{(name, frozenset(labels)): value} as Prometheus parses the file."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def value(values: dict, name: str, **labels: str) -> float:
    return values[(name, frozenset({MAIN, *labels.items()}))]


def changes(values: dict) -> dict:
    return {
        kind: value(values, "register_runner_changes_total", kind=kind)
        for kind in ("create", "update", "rotate", "recreate", "delete")
    }


def test_429s_and_the_wait_for_them_are_counted(gitlab, prefix, cli, tmp_path):
    gitlab.fail_next(count=1, status=429, path=r"^/user/runners$", retry_after=1)
    metrics_file = tmp_path / "rr.prom"

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 0, result.stderr
    values = metrics(metrics_file)
    assert value(values, "register_runner_rate_limited_requests") == 1
    assert value(values, "register_runner_rate_limit_wait_seconds") >= 1.0
    assert value(values, "register_runner_config_kept") == 0
    assert changes(values)["create"] == 1

    # The next run met no limit: the counts are the last run's, not a sum.
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0
    values = metrics(metrics_file)
    assert value(values, "register_runner_rate_limited_requests") == 0
    assert value(values, "register_runner_rate_limit_wait_seconds") == 0


def test_changes_are_a_counter_carried_over_runs(gitlab, make, cli, tmp_path):
    prefix = make(executors={"a": 'executor = "shell"\n', "b": 'executor = "shell"\n'})
    metrics_file = tmp_path / "rr.prom"
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0
    assert changes(metrics(metrics_file)) == {
        "create": 2,
        "update": 0,
        "rotate": 0,
        "recreate": 0,
        "delete": 0,
    }

    prefix.write_executor("a", 'executor = "shell"\ntags = ["new"]\n')
    prefix.remove_executor("b")
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0

    assert changes(metrics(metrics_file)) == {
        "create": 2,
        "update": 1,
        "rotate": 0,
        "recreate": 0,
        "delete": 1,
    }
    # Nothing to do: the totals stay, an idle host's counter does not reset.
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0
    assert changes(metrics(metrics_file))["create"] == 2


def test_a_kept_config_is_flagged(gitlab, prefix, cli, tmp_path):
    metrics_file = tmp_path / "rr.prom"
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0
    assert value(metrics(metrics_file), "register_runner_config_kept") == 0
    gitlab.fail_next(status=503, count=1000)

    result = cli(prefix, "sync", "--deadline", "1", "--metrics-file", str(metrics_file))

    assert result.returncode == 0  # the runners go on with the config of the last run
    assert value(metrics(metrics_file), "register_runner_config_kept") == 1


def test_a_fresh_host_has_no_config_to_keep(gitlab, prefix, cli, tmp_path):
    gitlab.fail_next(status=503, count=1000)
    metrics_file = tmp_path / "rr.prom"

    result = cli(prefix, "sync", "--deadline", "1", "--metrics-file", str(metrics_file))

    assert result.returncode == 3
    values = metrics(metrics_file)
    assert value(values, "register_runner_config_kept") == 0
    assert value(values, "register_runner_last_run_exit_code") == 3


def test_build_info_names_the_version(prefix, cli, tmp_path):
    metrics_file = tmp_path / "rr.prom"
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0
    values = metrics(metrics_file)
    assert value(values, "register_runner_build_info", version=register_runner.__version__) == 1


def test_the_python_api_result_has_the_rate_limit_counts(gitlab, prefix):
    gitlab.fail_next(count=2, status=429, path=r"^/user/runners$", retry_after=1)

    result = register_runner.sync(prefix.root, prefix.instance)

    assert result.exit_status == 0
    assert result.rate_limits.limited == 2
    assert result.rate_limits.waited >= 2.0


def test_a_metrics_folder_that_is_missing_does_not_fail_the_run(gitlab, prefix, cli, tmp_path):
    # The shipped units name node_exporter's folder, which a host without it lacks.
    metrics_file = tmp_path / "no-node-exporter" / "register-runner-main.prom"

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 0
    assert len(prefix.runners()) == 1
    (line,) = [line for line in result.stderr.splitlines() if "metrics not written" in line]
    assert str(metrics_file) in line
    status = cli(prefix, "status")
    assert status.returncode == 0, status.stdout


@pytest.mark.parametrize("words", [["--metrics-file="], ["--metrics-file", ""]])
def test_an_empty_metrics_file_writes_none(gitlab, prefix, cli, words):
    # What the units pass with REGISTER_RUNNER_METRICS= (empty): no metrics, no complaint.
    result = cli(prefix, "sync", *words)

    assert result.returncode == 0, result.stderr
    assert "metrics file" not in result.stderr and "not written" not in result.stderr


def test_a_recreate_counts_once(gitlab, prefix, cli, tmp_path):
    metrics_file = tmp_path / "rr.prom"
    assert cli(prefix).returncode == 0
    (runner,) = prefix.runners()
    gitlab.revoke_runner_token(runner["id"])

    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0

    # New runner made, old one deleted: one recreate, not a recreate and a delete.
    assert changes(metrics(metrics_file)) == {
        "create": 1,
        "update": 0,
        "rotate": 0,
        "recreate": 1,
        "delete": 0,
    }


def test_a_command_that_ended_with_bad_input_kept_no_config(gitlab, prefix, cli, tmp_path):
    # Mutation testing: record_run's default for config_kept was never seen.
    metrics_file = tmp_path / "rr.prom"
    assert cli(prefix, "sync").returncode == 0
    refused = cli(prefix, "reset-token", "--runner", "nosuch", "--metrics-file", str(metrics_file))
    assert refused.returncode == 2, refused.stderr
    values = metrics(metrics_file)
    assert value(values, "register_runner_last_run_exit_code") == 2
    assert value(values, "register_runner_config_kept") == 0


def test_a_full_disk_under_the_metrics_file_does_not_fail_the_run(
    gitlab, prefix, cli, tmp_path, monkeypatch
):
    # A full disk is "may heal" (TransientError), not bad input: the metrics still only
    # report on the run, whatever the reason they cannot be written.
    from register_runner import files, health

    metrics_file = tmp_path / "register-runner-main.prom"
    real = health.atomic_write

    def disk_full_for_metrics(path, data, **kwargs):
        if path == metrics_file:
            raise files.filesystem_error(path, OSError(errno.ENOSPC, "No space left on device"))
        return real(path, data, **kwargs)

    monkeypatch.setattr(health, "atomic_write", disk_full_for_metrics)

    result = cli(prefix, "sync", "--metrics-file", str(metrics_file))

    assert result.returncode == 0, result.stderr
    assert len(prefix.runners()) == 1
    (line,) = [line for line in result.stderr.splitlines() if "metrics not written" in line]
    assert "No space left on device" in line


def test_unregister_and_reset_token_count_their_changes(gitlab, make, cli, tmp_path):
    prefix = make(executors={"a": 'executor = "shell"\n', "b": 'executor = "shell"\n'})
    metrics_file = tmp_path / "rr.prom"
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 0

    rotated = cli(prefix, "reset-token", "--runner", "a", "--metrics-file", str(metrics_file))

    assert rotated.returncode == 0, rotated.stderr
    assert changes(metrics(metrics_file)) == {
        "create": 2,
        "update": 0,
        "rotate": 1,
        "recreate": 0,
        "delete": 0,
    }
    assert value(metrics(metrics_file), "register_runner_healthy") == 1

    removed = cli(prefix, "unregister", "--runner", "b", "--metrics-file", str(metrics_file))

    assert removed.returncode == 0, removed.stderr
    assert changes(metrics(metrics_file)) == {
        "create": 2,
        "update": 0,
        "rotate": 1,
        "recreate": 0,
        "delete": 1,
    }


def gauges_agree_with_status(cli, prefix, metrics_file) -> dict:
    """The metrics file's verdict and exit code are what ``status --json`` says; returns
    the document."""
    status = cli(prefix, "status", "--json")
    document = json.loads(status.stdout)
    values = metrics(metrics_file)
    assert value(values, "register_runner_healthy") == int(document["healthy"])
    exit_status = document["last_run"]["exit_status"]
    assert value(values, "register_runner_last_run_exit_code") == exit_status
    return document


def test_the_python_api_writes_the_metrics_of_the_run_that_fixed_or_broke_the_host(
    gitlab, prefix, cli, tmp_path, pat
):
    """An Ansible task (the API) after the units' runs (the CLI): the metrics describe
    the task's run, as status does, not the units' older one."""
    metrics_file = tmp_path / "register-runner-main.prom"
    prefix.write_executor("shell", "executor = \n")
    assert cli(prefix, "sync", "--metrics-file", str(metrics_file)).returncode == 2
    assert gauges_agree_with_status(cli, prefix, metrics_file)["healthy"] is False

    prefix.write_executor("shell", 'executor = "shell"\n')
    fixed = register_runner.sync(prefix.root, prefix.instance, metrics_file=metrics_file)

    assert fixed.exit_status == 0 and fixed.healthy
    document = gauges_agree_with_status(cli, prefix, metrics_file)
    assert document["healthy"] is True and document["last_run"]["exit_status"] == 0

    gitlab.revoke_access_token(pat)
    prefix.write_executor("docker", 'executor = "docker"\n')
    broken = register_runner.sync(prefix.root, prefix.instance, metrics_file=str(metrics_file))

    assert broken.exit_status == 1 and not broken.healthy
    document = gauges_agree_with_status(cli, prefix, metrics_file)
    assert document["healthy"] is False and document["last_run"]["exit_status"] == 1


def test_a_python_api_sync_that_raises_writes_the_metrics_of_the_last_run_recorded(
    gitlab, prefix, cli, tmp_path
):
    """As --metrics-file, on every exit: a busy lock records no run through the API, so
    the metrics say what status says, the run before."""
    metrics_file = tmp_path / "register-runner-main.prom"
    assert register_runner.sync(prefix.root, prefix.instance).exit_status == 0

    lock = exclusive_lock(lock_path(Options(prefix.root)), 0)
    with lock, pytest.raises(register_runner.TransientError):
        register_runner.sync(prefix.root, lock_timeout=0, metrics_file=metrics_file)

    document = gauges_agree_with_status(cli, prefix, metrics_file)
    assert document["healthy"] is True


def test_metrics_the_python_api_cannot_write_are_a_warning_of_the_result(gitlab, prefix, tmp_path):
    metrics_file = tmp_path / "no-node-exporter" / "register-runner-main.prom"

    result = register_runner.sync(prefix.root, prefix.instance, metrics_file=metrics_file)

    assert result.exit_status == 0 and result.healthy
    (warning,) = [w for w in result.warnings if "metrics not written" in w]
    assert str(metrics_file) in warning
    assert register_runner.status(prefix.root).exit_status == 0


def test_a_python_api_retry_not_needed_writes_no_metrics(gitlab, prefix, tmp_path):
    """As sync --retry-only: it ran nothing, so the metrics go on describing the run that
    did (here: none were asked for then)."""
    metrics_file = tmp_path / "register-runner-main.prom"
    assert register_runner.sync(prefix.root, prefix.instance).exit_status == 0

    result = register_runner.sync(prefix.root, retry_only=True, metrics_file=metrics_file)

    assert result.exit_status == 0 and result.recorded is None
    assert not metrics_file.exists()
