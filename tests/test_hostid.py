"""System ID: gitlab-runner's derivation, storage, and copied-prefix detection."""

from __future__ import annotations

import re

from register_runner import hostid
from register_runner.hostid import ensure_system_id, resolve_system_id, system_id_from_machine_id

MACHINE_ID = "0123456789abcdef0123456789abcdef"


def test_derivation_matches_gitlab_runner():
    # echo -n gitlab-runner | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
    assert system_id_from_machine_id(MACHINE_ID) == "s_ee3af03959fe"
    assert system_id_from_machine_id(MACHINE_ID + "\n") == "s_ee3af03959fe"


def test_machine_id_files_in_order(tmp_path):
    dbus, etc = tmp_path / "dbus", tmp_path / "etc"
    etc.write_text("etc-id\n")
    assert hostid.read_machine_id([dbus, etc]) == "etc-id"
    dbus.write_text("dbus-id\n")
    assert hostid.read_machine_id([dbus, etc]) == "dbus-id"
    assert hostid.read_machine_id([tmp_path / "none"]) is None


def test_created_from_the_machine_id_and_stored(tmp_path):
    machine = tmp_path / "machine-id"
    machine.write_text(MACHINE_ID + "\n")
    assert ensure_system_id(tmp_path, [machine]) == "s_ee3af03959fe"
    assert (tmp_path / ".runner_system_id").read_text() == "s_ee3af03959fe\n"
    assert (tmp_path / ".runner_system_id").stat().st_mode & 0o777 == 0o600


def test_random_when_there_is_no_machine_id(tmp_path):
    value = ensure_system_id(tmp_path, [tmp_path / "missing"])
    assert re.fullmatch(r"r_[A-Za-z0-9]{12}", value)
    assert ensure_system_id(tmp_path, [tmp_path / "missing"]) == value


def test_existing_file_without_fingerprint_is_adopted(tmp_path):
    machine = tmp_path / "machine-id"
    machine.write_text(MACHINE_ID)
    (tmp_path / ".runner_system_id").write_text("r_abcdefABCDEF")
    assert ensure_system_id(tmp_path, [machine]) == "r_abcdefABCDEF"
    assert (tmp_path / ".runner_system_id.fingerprint").exists()
    assert ensure_system_id(tmp_path, [machine]) == "r_abcdefABCDEF"


def test_another_machine_gets_a_new_random_id(tmp_path):
    machine = tmp_path / "machine-id"
    machine.write_text(MACHINE_ID)
    first = ensure_system_id(tmp_path, [machine])
    machine.write_text("another machine")
    second = ensure_system_id(tmp_path, [machine])
    assert second != first and second.startswith("r_")
    assert ensure_system_id(tmp_path, [machine]) == second


def test_resolving_writes_nothing_until_saved(tmp_path):
    machine = tmp_path / "machine-id"
    machine.write_text(MACHINE_ID)
    resolved = resolve_system_id(tmp_path, [machine])
    assert resolved.value == "s_ee3af03959fe"
    assert not (tmp_path / ".runner_system_id").exists()
    resolved.save()
    assert (tmp_path / ".runner_system_id").read_text() == "s_ee3af03959fe\n"


def test_invalid_stored_id_is_replaced(tmp_path):
    machine = tmp_path / "machine-id"
    machine.write_text(MACHINE_ID)
    (tmp_path / ".runner_system_id").write_text("garbage")
    assert ensure_system_id(tmp_path, [machine]) == "s_ee3af03959fe"
