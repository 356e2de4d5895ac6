"""The Python API, in-process: what the CLI does, as values."""

from __future__ import annotations

import gc
import warnings

import pytest

import register_runner
from register_runner import Kind

SHELL = 'executor = "shell"\ntags = ["linux"]\n'


def test_check_mode_then_sync_then_nothing_to_do(gitlab, make):
    prefix = make(executors={"a": SHELL, "b": SHELL})

    planned = register_runner.plan(prefix=prefix.root, instance=prefix.instance)

    assert planned.exit_status == 0 and planned.changed
    assert [(a.kind, a.runner, a.result) for a in planned.actions] == [
        ("create", "a", "planned"),
        ("create", "b", "planned"),
        ("write", "(config)", "planned"),
    ]
    assert gitlab.mutating_requests() == [] and not prefix.output.exists()

    synced = register_runner.sync(prefix=prefix.root, instance=prefix.instance)

    assert synced.exit_status == 0 and synced.changed and synced.config_written
    created = {a.runner: a.new_id for a in synced.actions if a.kind == "create"}
    assert created == {stem: prefix.runner(stem)["id"] for stem in ("a", "b")}

    again = register_runner.sync(prefix=prefix.root)
    assert not again.changed and {a.kind for a in again.actions} == {"keep"}
    assert not register_runner.plan(prefix=prefix.root, detailed_exitcode=True).changed


def test_detailed_exit_status_and_options_as_keywords(gitlab, make):
    prefix = make()
    assert register_runner.sync(prefix=prefix.root).exit_status == 0
    prefix.write_executor("shell", SHELL + "locked = true\n")

    planned = register_runner.plan(prefix=prefix.root, detailed_exitcode=True, jobs=1)

    assert planned.exit_status == 4
    (update,) = [a for a in planned.actions if a.kind == "update"]
    assert update.runner == "shell" and update.changes == (("locked", None, True),)


def test_bad_host_wide_input_raises_input_error_with_exit_status_2(gitlab, make):
    prefix = make()
    prefix.write_template("concurrent = \n")
    before = prefix.snapshot()

    with pytest.raises(register_runner.InputError) as raised:
        register_runner.sync(prefix=prefix.root)

    assert raised.value.exit_status == 2
    assert isinstance(raised.value, register_runner.Error)
    assert "config.template.main.toml:1" in str(raised.value)
    assert prefix.snapshot() == before and gitlab.requests == []


def test_a_bad_executor_file_is_in_the_result_errors_with_exit_status_2(gitlab, make):
    """The run goes on for the other runners, so it returns what it did instead of
    raising; the bad file's runner is held (here: never created)."""
    prefix = make(executors={"good": SHELL})
    prefix.write_executor("shell", "executor = \n")

    result = register_runner.sync(prefix=prefix.root)

    assert result.exit_status == 2
    (error,) = result.errors
    assert error.startswith(f"{prefix.executor_dir / 'shell.toml'}:1:")
    assert [r.description.split("-")[-1] for r in gitlab.runners()] == ["good"]
    assert [r["name"].split("-")[-1] for r in prefix.runners()] == ["good"]
    (held,) = [a for a in result.actions if a.runner == "shell"]
    assert (held.kind, held.result, held.id) == ("keep", "kept", None)
    assert held.reason == f"held: {error}"


def test_unknown_option_is_a_type_error(make):
    with pytest.raises(TypeError):
        register_runner.plan(prefix=make().root, no_such_option=True)


def test_a_run_leaves_no_connection_open(gitlab, make):
    """A library call closes what it opened: every worker's kept-alive connection, those
    that paged through lists too (a leaked socket is a ResourceWarning when collected)."""
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL})
    prefix.write_executor("gone", SHELL)
    register_runner.sync(prefix=prefix.root)
    prefix.remove_executor("gone")  # the next run lists runners to delete one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for run in (register_runner.plan, register_runner.sync, register_runner.sync):
            assert run(prefix=prefix.root).exit_status == 0
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert {r.method for r in gitlab.requests} >= {"GET", "POST", "DELETE"}


def test_every_command_is_a_function_with_a_typed_result(gitlab, make):
    prefix = make(executors={"a": SHELL, "b": SHELL})
    synced = register_runner.sync(prefix=prefix.root)
    assert synced.exit_status == 0
    assert {a.kind for a in synced.actions} == {Kind.CREATE, Kind.WRITE}

    status = register_runner.status(prefix.root)
    assert (status.exit_status, status.healthy) == (0, True)
    assert sorted(r["runner"] for r in status.run.runners) == ["a", "b"]

    checked = register_runner.verify(prefix.root)
    assert checked.exit_status == 0
    assert [(a.kind, a.runner, a.result) for a in checked.actions] == [
        (Kind.VERIFY, "a", "valid"),
        (Kind.VERIFY, "b", "valid"),
    ]
    gitlab.revoke_runner_token(prefix.runner("b")["id"])
    one = register_runner.verify(url=gitlab.url, token=prefix.runner("b")["token"])
    assert (one.exit_status, [a.result for a in one.actions]) == (1, ["invalid"])

    old = prefix.runner("a")["token"]
    rotated = register_runner.reset_token(prefix.root, runners=["a"])
    assert rotated.exit_status == 0 and rotated.config_written
    assert prefix.runner("a")["token"] != old

    assert register_runner.system_id(prefix.root) == synced.system_id
    leftovers = register_runner.prune_legacy(prefix.root)
    assert (leftovers.exit_status, leftovers.actions, leftovers.dry_run) == (0, (), True)

    gone = register_runner.unregister(prefix.root)
    assert gone.exit_status == 0
    assert sorted((a.kind, a.runner, a.result) for a in gone.actions)[:2] == [
        (Kind.DELETE, "a", "done"),
        (Kind.DELETE, "b", "done"),
    ]
    assert gitlab.runners() == []
