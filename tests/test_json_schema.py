"""``--json`` is a stable interface (``"schema": 1``): plan, sync, gc and prune-legacy print
the same summary keys for the same command family and the same row shape for every kind of
row, the config row in plan and sync alike. What a machine reads is held here, key by key
and type by type."""

from __future__ import annotations

import json
from pathlib import Path

from register_runner.model import Identity
from register_runner.tags import legacy_hostname

SHELL = 'executor = "shell"\ntags = ["linux"]\n'
OPTIONAL_INT = (int, type(None))
OPTIONAL_STR = (str, type(None))
ROW = {
    "action": str,
    "runner": str,
    "id": OPTIONAL_INT,
    "new_id": OPTIONAL_INT,
    "reason": str,
    "result": str,
    "error": OPTIONAL_STR,
    "changes": list,
    "token": OPTIONAL_STR,
}
CONFIG_ROW = {**ROW, "diff": OPTIONAL_STR}
RUN = {
    "schema": int,
    "command": str,
    "exit_status": int,
    "changed": bool,
    "config": str,
    "config_written": bool,
    "system_id": str,
    "errors": list,
    "seconds": (int, float),
    "actions": list,
    "warnings": list,
}
PLAN = {key: kind for key, kind in RUN.items() if key not in ("config_written", "seconds")}
DELETIONS = {
    "schema": int,
    "command": str,
    "exit_status": int,
    "dry_run": bool,
    "deleted": int,
    "actions": list,
    "warnings": list,
}
GC = {**DELETIONS, "changed": bool, "older_than_seconds": int, "seconds": (int, float)}


def shaped(value: dict, shape: dict) -> None:
    assert set(value) == set(shape), sorted(set(value) ^ set(shape))
    for key, kind in shape.items():
        assert (isinstance(value[key], kind) and not isinstance(value[key], bool)) or (
            kind is bool and isinstance(value[key], bool)
        ), (key, value[key])


def document(result, summary: dict) -> tuple[set[tuple[str, str]], list[dict]]:
    """Checks the whole document; the (action, result) pairs its rows show."""
    assert result.stdout, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == 1
    shaped(doc, summary)
    assert all(isinstance(w, str) for w in doc["warnings"])
    for row in doc["actions"]:
        shaped(row, CONFIG_ROW if row["runner"] == "(config)" else ROW)
        for change in row["changes"]:
            assert set(change) == {"attribute", "old", "new"}
            assert isinstance(change["attribute"], str)
    return {(row["action"], row["result"]) for row in doc["actions"]}, doc["actions"]


def test_every_row_kind_has_the_one_shape_in_plan_sync_gc_and_prune_legacy(
    gitlab, make, cli, tmp_path: Path
):
    folder = tmp_path / "custom-runner"
    folder.mkdir(mode=0o700)
    custom = f'credentials_file = "{folder / "rust.env"}"\ntags = ["rust"]\n'
    prefix = make(executors={"a": SHELL, "b": SHELL, "c": SHELL, "rust": custom})
    seen: set[tuple[str, str]] = set()

    kinds, rows = document(cli(prefix, "plan", "--json"), PLAN)
    assert kinds == {("create", "planned"), ("write", "planned")}
    seen |= kinds
    kinds, rows = document(cli(prefix, "sync", "--json"), RUN)
    assert ("create", "done") in kinds and ("write", "done") in kinds
    assert all(row["new_id"] and row["token"] for row in rows if row["action"] == "create")
    assert rows[-1]["runner"] == "(config)" and rows[-1]["diff"] is None
    seen |= kinds

    prefix.write_executor("b", SHELL.replace('"linux"', '"linux", "x"'))
    prefix.write_executor("d", SHELL)
    gitlab.revoke_runner_token(prefix.runner("c")["id"])
    prefix.remove_executor("a")
    gitlab.add_runner(description=f"{legacy_hostname()} main shell Runner")
    kinds, rows = document(cli(prefix, "plan", "--json"), PLAN)
    assert {"update", "recreate", "delete", "keep", "create", "leftover"} <= {k for k, _ in kinds}
    (update,) = [row for row in rows if row["action"] == "update"]
    assert update["changes"] == [{"attribute": "tag_list", "old": ["linux"], "new": ["linux", "x"]}]
    seen |= kinds
    kinds, rows = document(cli(prefix, "sync", "--json"), RUN)
    assert {("update", "done"), ("recreate", "done"), ("delete", "done")} <= kinds
    seen |= kinds
    kinds, rows = document(cli(prefix, "sync", "--json"), RUN)
    assert {row["runner"]: row["action"] for row in rows}["(config)"] == "keep"
    prefix.write_template(prefix.template.read_text().replace("concurrent = 4", "concurrent = 5"))
    kinds, rows = document(cli(prefix, "plan", "--json"), PLAN)
    assert ("write", "planned") in kinds and "+concurrent = 5" in rows[-1]["diff"]
    seen |= kinds

    dead = gitlab.add_runner(maintenance_note=Identity("gone", "main", "s_1").marker("a"))
    gitlab.age_runner(dead.id, 40)
    for flags in ((), ("--yes",)):
        kinds, rows = document(cli(prefix, "gc", "--json", *flags), GC)
        assert [row["id"] for row in rows] == [dead.id]
        seen |= kinds
        kinds, rows = document(cli(prefix, "prune-legacy", "--json", *flags), DELETIONS)
        assert len(rows) == 1
        seen |= kinds
    assert {("delete", "planned"), ("delete", "done"), ("leftover", "listed")} <= seen

    failed = cli(prefix, "gc", "--json", "--older-than", "1h")
    assert json.loads(failed.stdout) == {
        "schema": 1,
        "exit_status": 2,
        "error": json.loads(failed.stdout)["error"],
    }


def test_plan_and_sync_on_bad_input_still_carry_the_schema(gitlab, make, cli):
    """Bad host-wide input (the template) is the failed run's document; a bad executor
    file is the whole document, its runner held and named in ``errors``."""
    prefix = make()
    prefix.write_template("concurrent = \n")
    for command in ("plan", "sync"):
        failed = cli(prefix, command, "--json")
        assert failed.returncode == 2
        doc = json.loads(failed.stdout)
        assert doc == {"schema": 1, "exit_status": 2, "error": doc["error"]}
        assert "config.template.main.toml:1" in doc["error"]

    prefix = make()
    prefix.write_executor("broken", "executor = [\n")
    for command, summary in (("plan", PLAN), ("sync", RUN)):
        result = cli(prefix, command, "--json")
        assert result.returncode == 2
        document(result, summary)
        doc = json.loads(result.stdout)
        assert doc["exit_status"] == 2 and "broken.toml:1" in doc["errors"][0]
        assert doc["actions"][-1]["runner"] == "(config)"
