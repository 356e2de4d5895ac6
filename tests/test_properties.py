"""Property-based tests: the planner (reconcile) over random desired x observed states, and
the input parser over random executor files and random garbage."""

from __future__ import annotations

import dataclasses
import datetime as dt
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from register_runner import inputs
from register_runner.errors import InputError
from register_runner.model import (
    Executor,
    Identity,
    Kind,
    Observed,
    PendingDelete,
    Plan,
    RunnerState,
    Scope,
    Verdict,
)
from register_runner.reconcile import reconcile
from register_runner.secret import Secret

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)
STEMS = ("a", "b", "c", "d", "e", "f")
URLS = ("https://gitlab.one.example", "https://gitlab.two.example")
SCOPES = (Scope(), Scope("group_type", group_id=42), Scope("project_type", project_id=7))
TAGS = ("linux", "docker", "gpu", "arm64")
NO_GUARD = 10**6
CREATING = (Kind.CREATE, Kind.RECREATE)

# -- strategies: the planner --------------------------------------------------------------

attributes_st = st.fixed_dictionaries(
    {"description": st.sampled_from(("h-main-x", "other description"))},
    optional={
        "tag_list": st.lists(st.sampled_from(TAGS), unique=True, max_size=3),
        "run_untagged": st.booleans(),
        "locked": st.booleans(),
        "paused": st.booleans(),
        "access_level": st.sampled_from(("not_protected", "ref_protected")),
        "maximum_timeout": st.integers(600, 7 * 86400),
        "maintenance_note": st.sampled_from(("[register-runner host=h]", "note\n[marker]")),
    },
)


@st.composite
def token_times(draw) -> tuple[Any, Any]:
    """None, never expiring, or a lifetime whose 75% point lies before or after NOW."""
    kind = draw(st.sampled_from(("none", "never", "timed")))
    if kind == "none":
        return None, None
    obtained = NOW - dt.timedelta(days=draw(st.integers(0, 400)))
    if kind == "never":
        return obtained, None
    return obtained, obtained + dt.timedelta(days=draw(st.integers(1, 800)))


@st.composite
def scenario(draw) -> tuple[list[Executor], Observed]:
    desired_stems = draw(st.lists(st.sampled_from(STEMS), unique=True, max_size=5))
    desired = [
        Executor(
            stem,
            f"/prefix/main/{stem}.toml",
            draw(st.sampled_from(URLS)),
            draw(st.sampled_from(SCOPES)),
            f"h-main-{stem}",
            draw(attributes_st),
            {"executor": "shell"},
        )
        for stem in desired_stems
    ]
    by_stem = {e.stem: e for e in desired}
    observed = Observed()
    next_id = 1
    for stem in draw(st.lists(st.sampled_from(STEMS), unique=True, max_size=6)):
        executor = by_stem.get(stem)
        if executor is not None and draw(st.booleans()):
            url, scope = executor.url, executor.scope  # where the file wants it
        else:
            url, scope = draw(st.sampled_from(URLS)), draw(st.sampled_from(SCOPES))
        if executor is not None and draw(st.booleans()):
            applied = dict(executor.attributes)
            if "tag_list" in applied and draw(st.booleans()):
                applied["tag_list"] = list(reversed(applied["tag_list"]))  # GitLab's order
        else:
            applied = draw(attributes_st)
        obtained, expires = draw(token_times())
        observed.runners[stem] = RunnerState(
            stem,
            next_id,
            url,
            scope,
            applied,
            draw(st.sampled_from((None, Secret(f"glrt-token-of-{stem}-{next_id}")))),
            obtained,
            expires,
            draw(st.sampled_from(list(Verdict))),
        )
        next_id += 1
    for stem in draw(st.lists(st.sampled_from(STEMS), max_size=3)):
        token = draw(st.sampled_from((None, Secret(f"glrt-old-{next_id}"))))
        observed.pending_deletes.append(
            PendingDelete(next_id, draw(st.sampled_from(URLS)), stem, token)
        )
        next_id += 1
    return desired, observed


def plan_for(desired, observed, **options) -> Plan:
    options.setdefault("max_deletions", NO_GUARD)
    return reconcile(desired, observed, now=NOW, **options)


def simulate(desired: list[Executor], observed: Observed, plan: Plan) -> Observed:
    """What GitLab and the config hold once ``plan`` has been applied, every token then
    checked and VALID."""
    by_stem = {e.stem: e for e in desired}
    runners = dict(observed.runners)
    new_id = 10_000
    for action in plan.actions:
        current = runners.get(action.stem)
        if action.kind in CREATING:
            executor = by_stem[action.stem]
            new_id += 1
            runners[action.stem] = RunnerState(
                action.stem,
                new_id,
                executor.url,
                executor.scope,
                dict(executor.attributes),
                Secret(f"glrt-new-{new_id}"),
                NOW,
                None,
                Verdict.VALID,
            )
        elif action.kind in (Kind.UPDATE, Kind.ROTATE):
            # A ROTATE carries the attribute changes due at the same time.
            applied = dict(current.applied)
            applied.update((key, new) for key, _, new in action.changes)
            current = runners[action.stem] = dataclasses.replace(current, applied=applied)
            if action.kind is Kind.ROTATE:
                lifetime = current.token_expires_at - current.token_obtained_at
                runners[action.stem] = dataclasses.replace(
                    current,
                    token=Secret(f"glrt-rotated-{current.id}"),
                    token_obtained_at=NOW,
                    token_expires_at=NOW + lifetime,
                )
        elif action.kind is Kind.DELETE and current is not None and current.id == action.runner_id:
            del runners[action.stem]
    return Observed({s: dataclasses.replace(r, verdict=Verdict.VALID) for s, r in runners.items()})


def deletes(plan: Plan) -> list:
    return plan.of_kind(Kind.DELETE)


# -- properties: the planner --------------------------------------------------------------


@given(scenario(), st.booleans(), st.booleans())
def test_plan_deletes_only_what_it_should(case, force, prune):
    desired, observed = case
    plan = plan_for(desired, observed, force=force, prune=prune)
    wanted = {e.stem for e in desired}
    current_ids = {r.id for s, r in observed.runners.items() if s in wanted}
    known_ids = {r.id for r in observed.runners.values()} | {p.id for p in observed.pending_deletes}
    for action in deletes(plan):
        # (i) never a desired stem's current runner, never an id it does not know
        assert action.runner_id not in current_ids
        assert action.runner_id in known_ids
        if action.stem in wanted:
            assert action.runner_id in {p.id for p in observed.pending_deletes}
    # (vi)
    if not prune:
        assert deletes(plan) == []


@given(scenario(), st.booleans(), st.booleans())
def test_every_desired_stem_gets_exactly_one_action(case, force, prune):
    desired, observed = case
    plan = plan_for(desired, observed, force=force, prune=prune)
    not_deleting = [a.stem for a in plan.actions if a.kind is not Kind.DELETE]
    if plan.held:
        # Held: what exists is kept, nothing is created.
        assert sorted(not_deleting) == sorted(e.stem for e in desired if e.stem in observed.runners)
    else:
        assert sorted(not_deleting) == sorted(e.stem for e in desired)
    # Every observed runner that is not desired is deleted exactly once when pruning.
    if prune and not plan.held:
        for stem, state in observed.runners.items():
            if stem not in {e.stem for e in desired}:
                assert [a.runner_id for a in deletes(plan) if a.stem == stem].count(state.id) == 1


# An attribute changed while the token is past 75% of its lifetime, both seen in one run.
UPDATE_AND_ROTATION_DUE = (
    [Executor("b", "/prefix/main/b.toml", URLS[0], Scope(), "h-main-b", {"locked": True}, {})],
    Observed(
        {
            "b": RunnerState(
                "b",
                2,
                URLS[0],
                Scope(),
                {"locked": False},
                Secret("glrt-token-of-b-2"),
                NOW - dt.timedelta(days=30),
                NOW + dt.timedelta(days=5),
                Verdict.VALID,
            )
        }
    ),
)


def converges(case, force: bool, prune: bool) -> None:
    desired, observed = case
    plan = plan_for(desired, observed, force=force, prune=prune)
    if plan.held:
        plan = plan_for(desired, observed, force=True, prune=prune)
    after = simulate(desired, observed, plan)

    again = plan_for(desired, after, force=force, prune=prune)

    first = {a.stem: a for a in plan.actions if a.kind is not Kind.DELETE}
    leftover = [
        a
        for a in again.actions
        if a.kind is not Kind.KEEP
        # A token that could not be checked is not rotated; once checked, it may be.
        and not (
            a.kind is Kind.ROTATE
            and first[a.stem].kind in (Kind.KEEP, Kind.UPDATE)
            and observed.runners[a.stem].verdict is not Verdict.VALID
        )
    ]
    assert leftover == [], (plan.actions, again.actions)
    assert not again.held
    assert sorted(a.stem for a in again.actions) == sorted(e.stem for e in desired)


@given(scenario(), st.booleans(), st.booleans())
def test_one_apply_converges(case, force, prune):
    """(iii) apply the plan, check every token again (all VALID): nothing left to do."""
    converges(case, force, prune)


@pytest.mark.parametrize("force", [False, True])
def test_an_update_does_not_leave_a_due_rotation_for_the_next_run(force):
    """Idempotent: the run after one that updated an attribute makes no mutating call,
    even when the token was already due for rotation during that first run: the planner
    rotates in the same run (a ROTATE carrying the changes)."""
    converges(UPDATE_AND_ROTATION_DUE, force, True)


@given(scenario(), st.booleans(), st.booleans(), st.randoms(use_true_random=False))
def test_the_order_of_desired_does_not_matter(case, force, prune, random):
    desired, observed = case
    shuffled = list(desired)
    random.shuffle(shuffled)
    assert plan_for(shuffled, observed, force=force, prune=prune) == plan_for(
        desired, observed, force=force, prune=prune
    )
    assert plan_for(tuple(reversed(desired)), observed, force=force, prune=prune) == plan_for(
        desired, observed, force=force, prune=prune
    )


@given(scenario(), st.booleans())
def test_mass_invalid_holds_every_create_and_delete(case, prune):
    """(v) more than half of two or more checked tokens INVALID, no --force: held."""
    desired, observed = case
    verdicts = [r.verdict for r in observed.runners.values()]
    checked = [v for v in verdicts if v in (Verdict.VALID, Verdict.INVALID)]
    mass = len(checked) >= 2 and 2 * checked.count(Verdict.INVALID) > len(checked)

    plan = plan_for(desired, observed, prune=prune)
    forced = plan_for(desired, observed, prune=prune, force=True)

    assert plan.held is mass
    assert forced.held is False
    if mass:
        assert plan.of_kind(Kind.CREATE, Kind.RECREATE, Kind.DELETE) == []
        assert plan.warnings
        kept_ids = {a.runner_id for a in plan.actions}
        assert kept_ids <= {r.id for r in observed.runners.values()}
    else:
        assert plan == forced


@given(scenario(), st.booleans())
def test_the_deletion_guard(case, force):
    """With the default --max-deletions: refuse iff this run would delete more than half
    of the managed runners (at least 1 always allowed); --force lifts it."""
    desired, observed = case
    wanted = {e.stem for e in desired}
    managed = len(observed.runners)
    deletions = sum(1 for stem in observed.runners if stem not in wanted)
    refuse = not force and deletions > max(1, managed // 2)

    if refuse:
        with pytest.raises(InputError, match="refusing to delete"):
            reconcile(desired, observed, now=NOW, force=force)
    else:
        plan = reconcile(desired, observed, now=NOW, force=force)
        assert plan == plan_for(desired, observed, force=force)
    # Without pruning there is nothing to refuse.
    reconcile(desired, observed, now=NOW, force=force, prune=False)


@given(scenario(), st.integers(0, 6))
def test_an_explicit_max_deletions(case, limit):
    desired, observed = case
    deletions = sum(1 for stem in observed.runners if stem not in {e.stem for e in desired})
    if deletions > limit:
        with pytest.raises(InputError):
            reconcile(desired, observed, now=NOW, max_deletions=limit)
    else:
        reconcile(desired, observed, now=NOW, max_deletions=limit)


# -- strategies: executor files -----------------------------------------------------------

IDENTITY = Identity("host", "main", "s_0123456789ab")
URL = "https://gitlab.example.com"
TEMPLATE = f'concurrent = 2\n[[client_configs]]\nurl = "{URL}"\npersonal_access_token = "glpat-x"\n'
# Keys the parser consumes: everything else is passed through.
CONSUMED = {
    "description",
    "tags",
    "tag_list",
    "run_untagged",
    "locked",
    "paused",
    "access_level",
    "maximum_timeout",
    "maintenance_note",
    "runner_type",
    "group_id",
    "project_id",
    "url",
    "token",
    "id",
    "token_obtained_at",
    "token_expires_at",
    "name",
    "runners",
    "executor",
}
REGISTRATION = CONSUMED - {"url", "token", "id", "name", "runners", "executor"}

keys_st = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12) | st.text(
    min_size=1, max_size=8
)
pass_key_st = keys_st.filter(lambda k: k not in CONSUMED)
scalars_st = (
    st.text(max_size=30)
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))
)
values_st = st.recursive(
    scalars_st,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys_st, inner, max_size=4),
    max_leaves=12,
)
registration_st = st.fixed_dictionaries(
    {},
    optional={
        "tags": st.lists(st.sampled_from(TAGS), max_size=4),
        "locked": st.booleans(),
        "paused": st.booleans(),
        "access_level": st.sampled_from(("not_protected", "ref_protected")),
        "maximum_timeout": st.integers(600, 10**6),
        "description": st.text(min_size=1, max_size=20),
        "maintenance_note": st.text(max_size=40),
    },
)


@pytest.fixture(scope="module")
def disk() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "config.template.main.toml").write_text(TEMPLATE)
        (root / "main").mkdir()
        yield root


def write_executor(prefix: Path, data: bytes) -> None:
    for old in (prefix / "main").iterdir():
        old.unlink()
    (prefix / "main" / "x.toml").write_bytes(data)


# -- properties: executor files -----------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(pass_key_st, values_st, max_size=6),
    registration_st,
    st.sampled_from(("flat", "runners")),
    st.sampled_from(("shell", "docker", "custom")),
)
def test_pass_through_keys_reach_the_settings_unchanged(disk, passed, attributes, shape, kind):
    entry = {"executor": kind, **attributes, **passed}
    document = {"runners": [entry]} if shape == "runners" else entry
    text = tomlkit.dumps(document)
    assume(tomlkit.parse(text).unwrap() == document)  # tomlkit itself round-trips it
    write_executor(disk, text.encode())

    (executor,) = inputs.load(disk, IDENTITY, environ={}).executors

    assert dict(executor.settings) == {"executor": kind, **passed}
    assert not set(executor.settings) & REGISTRATION
    for key in ("locked", "paused", "access_level", "maximum_timeout", "description"):
        if key in attributes:
            assert executor.attributes[key] == attributes[key]
    if "tags" in attributes:
        assert executor.attributes["tag_list"] == sorted(set(attributes["tags"]))
    assert IDENTITY.marker("x") in executor.attributes["maintenance_note"]
    assert executor.attributes["run_untagged"] is not bool(attributes.get("tags"))
    assert executor.name == "host-main-x" and executor.url == URL


GARBAGE_ALPHABET = "[]{}=\"'.,#\n\t \\ab01-_:+"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=200)
    | st.text(GARBAGE_ALPHABET, max_size=120).map(str.encode)
    | st.lists(
        st.sampled_from(
            (
                b'executor = "shell"\n',
                b"[docker]\n",
                b"[docker.image]\n",
                b'image = "x"\n',
                b"[[runners]]\n",
                b"[runners.docker]\n",
                b'url = "TODO"\n',
                b'tags = ["a"]\n',
                b"a.b = 1\n",
                b"a = 1\n",
                b"[a]\n",
                b"[[a]]\n",
                b"a = {b = 1}\n",
                b"[a.b]\n",
                b'token = "TODO"\n',
                b"runners = 1\n",
                b"runners.x = 1\n",
                b"[runners]\n",
                b"[[runners.docker]]\n",
                b"name = 5\n",
                b"executor = 1\n",
                b"tags = 'a, b'\n",
                b"\xff",
            )
        ),
        max_size=8,
    ).map(b"".join),
)
@example(b'executor = "shell"\n[docker]\nimage = "x"\nimage = "y"\n')
@example(b'[[runners]]\nexecutor = "shell"\nexecutor = "docker"\n')
def test_garbage_executor_files_raise_only_input_errors(disk, data):
    write_executor(disk, data)
    try:
        inputs.load(disk, IDENTITY, environ={})
    except InputError as error:
        assert "\n" not in str(error).strip()
        assert "x.toml" in str(error)


TEMPLATE_LINES = (
    b"[[client_configs]]\n",
    b'url = "https://gitlab.example.com"\n',
    b'url = "https://gitlab.example.com/"\n',
    b'personal_access_token = "glpat-x"\n',
    b'access_token = "glpat-y"\n',
    b'registration_token = "GR1348941z"\n',
    b'personal_access_token_env = "TOKEN"\n',
    b'access_token_file = "/nonexistent"\n',
    b"client_configs = []\n",
    b'client_configs = [{url = "https://gitlab.example.com", access_token = "a"}]\n',
    b"client_configs = 1\n",
    b"[client_configs]\n",
    b'runner_type = "group_type"\n',
    b"group_id = 1\n",
    b"group_id = true\n",
    b"tls_ca_file = 1\n",
    b"[[runners]]\n",
    b"concurrent = 1\n",
    b"[session_server]\n",
    b"url = 1\n",
    b"\xfe",
)


@given(
    st.binary(max_size=200) | st.lists(st.sampled_from(TEMPLATE_LINES), max_size=10).map(b"".join)
)
@example(b'[[client_configs]]\nurl = "https://gitlab.example.com"\nurl = "https://x.example"\n')
def test_garbage_templates_raise_only_input_errors(data):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "main").mkdir()
        (root / "main" / "shell.toml").write_text('executor = "shell"\n')
        (root / "config.template.main.toml").write_bytes(data)
        try:
            inputs.load(root, IDENTITY, environ={"TOKEN": "glpat-from-env"})
        except InputError as error:
            assert "\n" not in str(error).strip()
            assert "config.template.main.toml" in str(error)
