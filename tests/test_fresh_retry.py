"""A fresh host is never left without runners for long, end to end against the fake
GitLab: ``--fresh-deadline`` lets a host with nothing to keep wait out a Retry-After that
``--deadline`` would not, and ``sync --retry-only`` (what register-runner-retry.timer
runs every few minutes) syncs only when the last run left something to try again."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def creates(gitlab) -> list[int]:
    return [q.status for q in gitlab.requests if q.path == "/user/runners"]


def exit_code_metric(path) -> float:
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
        if sample.name == "register_runner_last_run_exit_code"
    ]
    return value


def test_a_fresh_host_waits_out_a_retry_after_longer_than_the_deadline(gitlab, prefix, cli):
    gitlab.fail_next(count=1, status=429, path=r"^/user/runners$", retry_after=2)

    result = cli(prefix, "sync", "--deadline", "1", "--fresh-deadline", "20")

    assert result.returncode == 0, result.stderr
    assert creates(gitlab) == [429, 201]
    assert len(prefix.runners()) == 1


def test_a_host_with_a_config_keeps_the_short_deadline(gitlab, make, cli):
    prefix = make(executors={"a": 'executor = "shell"\n'})
    assert cli(prefix).returncode == 0
    prefix.write_executor("b", 'executor = "shell"\n')
    gitlab.clear_requests()
    gitlab.fail_next(count=1, status=429, path=r"^/user/runners$", retry_after=5)

    # The 429 must come within the deadline; a Retry-After past it is not waited for.
    result = cli(prefix, "sync", "--deadline", "3", "--fresh-deadline", "60")

    # Runner a runs with the config kept; b waits for a later run, not for the 429.
    assert result.returncode == 0, result.stderr
    assert creates(gitlab) == [429]
    assert len(prefix.runners()) == 1


def test_retry_only_does_nothing_after_a_good_run(gitlab, prefix, cli, tmp_path):
    assert cli(prefix).returncode == 0
    record = prefix.root / ".register-runner" / "main.last-run.json"
    before = record.read_bytes(), record.stat().st_mtime_ns
    metrics_file = tmp_path / "rr.prom"
    gitlab.clear_requests()

    result = cli(prefix, "sync", "--retry-only", "--metrics-file", str(metrics_file))

    assert result.returncode == 0, result.stderr
    assert gitlab.requests == []
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before
    assert not metrics_file.exists()


def test_retry_only_syncs_a_fresh_host_that_found_gitlab_failing(gitlab, prefix, cli, tmp_path):
    gitlab.down()
    assert cli(prefix, "sync", "--deadline", "1").returncode == 3
    assert prefix.runners() == []
    gitlab.up()
    metrics_file = tmp_path / "rr.prom"

    result = cli(prefix, "sync", "--retry-only", "--metrics-file", str(metrics_file))

    assert result.returncode == 0, result.stderr
    assert creates(gitlab)[-1] == 201
    assert len(prefix.runners()) == 1
    assert exit_code_metric(metrics_file) == 0
    # Done: the next retry has nothing to do.
    gitlab.clear_requests()
    assert cli(prefix, "sync", "--retry-only").returncode == 0
    assert gitlab.requests == []


def test_retry_only_finishes_a_host_that_gitlab_cut_short(gitlab, make, cli):
    prefix = make(executors={"a": 'executor = "shell"\n'})
    assert cli(prefix).returncode == 0
    prefix.write_executor("b", 'executor = "shell"\n')
    gitlab.fail_next(count=1, status=429, path=r"^/user/runners$", retry_after=60)
    assert cli(prefix, "sync", "--deadline", "1").returncode == 0  # a's config kept

    result = cli(prefix, "sync", "--retry-only")

    assert result.returncode == 0, result.stderr
    assert creates(gitlab)[-1] == 201
    assert len(prefix.runners()) == 2


def test_retry_only_leaves_a_run_that_needs_a_person_to_the_timer(gitlab, prefix, cli):
    prefix.write_executor("broken", "executor = \n")
    assert cli(prefix).returncode == 2
    gitlab.clear_requests()

    assert cli(prefix, "sync", "--retry-only").returncode == 0
    assert gitlab.requests == []


def test_retry_only_decides_under_the_lock(gitlab, prefix, cli):
    """Two retries racing: the one that waited for the lock reads the record the first
    wrote, and finds nothing left to retry (read before the lock, it synced again)."""
    import threading
    import time

    from test_crash import openers

    from register_runner.testing.prefix import start_cli

    gitlab.down()
    assert cli(prefix, "sync", "--deadline", "1").returncode == 3
    gitlab.up()
    block = gitlab.block(method="POST", path=r"^/user/runners$", when="before")
    first = start_cli(["sync", "--retry-only", "--prefix", str(prefix.root)])
    try:
        assert block.reached.wait(30)
        results = {}
        waiter = threading.Thread(
            target=lambda: results.setdefault(
                "second", cli(prefix, "sync", "--retry-only", "--lock-timeout", "30")
            )
        )
        waiter.start()
        lock = prefix.root / ".register-runner" / f"{prefix.instance}.lock"
        waited = time.monotonic()
        while openers(lock) < 2 and time.monotonic() - waited < 30:
            time.sleep(0.02)
    finally:
        block.release()
        first.wait(30)
    waiter.join(60)

    assert first.returncode == 0, first.stderr
    assert results["second"].returncode == 0, results["second"].stderr
    # Only the first run asked GitLab anything: the second found the retry done.
    assert [q.path for q in gitlab.requests].count("/personal_access_tokens/self") == 1
    assert [q.path for q in gitlab.requests if q.path == "/runners/verify"] == []
    assert len(gitlab.runners()) == 1
