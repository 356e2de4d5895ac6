"""state.py: what is saved reads back equal, and an unchanged state is not saved again."""

from __future__ import annotations

import json
from dataclasses import replace

from register_runner import state
from register_runner.model import Scope, StoredRunner

SCOPE = Scope("instance_type")


def _state() -> state.State:
    return state.State(
        system_id="s_0123456789ab",
        runners={
            "shell": StoredRunner(7, "https://gitlab.example.com", SCOPE, {"paused": False}),
            "docker": StoredRunner(8, "https://gitlab.example.com", SCOPE, {}),
        },
    )


def test_what_is_saved_loads_back_equal(tmp_path):
    saved = _state()
    state.save(tmp_path, "main", saved)
    assert state.load(tmp_path, "main") == saved


def test_a_missing_file_is_written_even_for_an_empty_state(tmp_path):
    empty = state.load(tmp_path, "main")
    state.save(tmp_path, "main", empty)
    assert state.state_path(tmp_path, "main").is_file()


def test_an_unchanged_state_is_not_written_again(tmp_path):
    state.save(tmp_path, "main", _state())
    path = state.state_path(tmp_path, "main")
    # Same value, other bytes: only a save that writes would put its own form back.
    reformatted = json.dumps(json.loads(path.read_text()), indent=4)
    path.write_text(reformatted)
    loaded = state.load(tmp_path, "main")
    state.save(tmp_path, "main", loaded)
    assert path.read_text() == reformatted


def test_each_change_after_loading_is_written(tmp_path):
    state.save(tmp_path, "main", _state())
    loaded = state.load(tmp_path, "main")
    loaded.runners["shell"] = replace(loaded.runners["shell"], applied={"paused": True})
    state.save(tmp_path, "main", loaded)
    assert state.load(tmp_path, "main").runners["shell"].applied == {"paused": True}
    del loaded.runners["docker"]
    state.save(tmp_path, "main", loaded)
    assert set(state.load(tmp_path, "main").runners) == {"shell"}
    loaded.system_id = "s_ba9876543210"
    state.save(tmp_path, "main", loaded)
    assert state.load(tmp_path, "main").system_id == "s_ba9876543210"
