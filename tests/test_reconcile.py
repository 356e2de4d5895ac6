"""reconcile(desired, observed) -> Plan: every branch, no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from register_runner.errors import InputError
from register_runner.model import (
    AccessTokenCheck,
    Action,
    Evidence,
    Executor,
    Kind,
    Observed,
    PendingDelete,
    RunnerState,
    Scope,
    Verdict,
)
from register_runner.reconcile import (
    attribute_changes,
    check_not_emptied,
    reconcile,
    rotation_due,
)
from register_runner.secret import Secret

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
URL = "https://gitlab.example.com"
INSTANCE = Scope()
ATTRS = {"description": "h-main-x", "run_untagged": False, "tag_list": ["a", "b"]}


def executor(stem, url=URL, scope=INSTANCE, **attributes):
    return Executor(
        stem,
        f"/p/main/{stem}.toml",
        url,
        scope,
        f"h-main-{stem}",
        {**ATTRS, **attributes},
        {"executor": "shell"},
    )


def runner(
    stem,
    runner_id=1,
    verdict=Verdict.VALID,
    token="glrt-x",
    applied=None,
    url=URL,
    scope=INSTANCE,
    obtained=None,
    expires=None,
):
    return RunnerState(
        stem,
        runner_id,
        url,
        scope,
        dict(ATTRS) if applied is None else applied,
        Secret(token) if token else None,
        obtained,
        expires,
        verdict,
    )


def kinds(plan):
    return [(a.kind, a.stem) for a in plan.actions]


def test_new_executor_is_created():
    plan = reconcile([executor("x")], Observed(), now=NOW)
    assert kinds(plan) == [(Kind.CREATE, "x")] and plan.mutates


def test_known_valid_runner_is_kept():
    plan = reconcile([executor("x")], Observed({"x": runner("x")}), now=NOW)
    assert kinds(plan) == [(Kind.KEEP, "x")] and not plan.mutates


@pytest.mark.parametrize("verdict", [Verdict.UNKNOWN, Verdict.UNCHECKED])
def test_unknown_verdict_never_recreates(verdict):
    plan = reconcile([executor("x")], Observed({"x": runner("x", verdict=verdict)}), now=NOW)
    assert kinds(plan) == [(Kind.KEEP, "x")]


def test_invalid_token_recreates():
    plan = reconcile([executor("x")], Observed({"x": runner("x", 5, Verdict.INVALID)}), now=NOW)
    assert kinds(plan) == [(Kind.RECREATE, "x")] and plan.actions[0].runner_id == 5


def test_lost_token_recreates():
    plan = reconcile(
        [executor("x")],
        Observed({"x": runner("x", token=None, verdict=Verdict.UNCHECKED)}),
        now=NOW,
    )
    assert kinds(plan) == [(Kind.RECREATE, "x")]


@pytest.mark.parametrize(
    "moved",
    [
        {"url": "https://other.example.com"},
        {"scope": Scope("group_type", group_id=1)},
        {"scope": Scope("project_type", project_id=2)},
    ],
)
def test_moved_runner_is_recreated(moved):
    plan = reconcile([executor("x", **moved)], Observed({"x": runner("x")}), now=NOW)
    assert kinds(plan) == [(Kind.RECREATE, "x")]


def test_changed_attribute_is_an_update_with_the_diff():
    plan = reconcile(
        [executor("x", locked=True, tag_list=["b", "c"])], Observed({"x": runner("x")}), now=NOW
    )
    (action,) = plan.actions
    assert action.kind is Kind.UPDATE
    assert action.changes == (("locked", None, True), ("tag_list", ["a", "b"], ["b", "c"]))


def test_tag_order_is_not_a_change():
    assert attribute_changes({"tag_list": ["b", "a"]}, {"tag_list": ["a", "b"]}) == ()


def test_attributes_the_file_does_not_set_are_left_alone():
    applied = {**ATTRS, "paused": True, "maximum_timeout": 3600}
    plan = reconcile([executor("x")], Observed({"x": runner("x", applied=applied)}), now=NOW)
    assert kinds(plan) == [(Kind.KEEP, "x")]


def test_removed_executor_is_deleted_and_pending_deletes_are_retried():
    observed = Observed(
        {"x": runner("x", 1), "gone": runner("gone", 2)}, [PendingDelete(9, URL, "older")]
    )
    plan = reconcile([executor("x")], observed, now=NOW, max_deletions=5)
    assert kinds(plan) == [(Kind.KEEP, "x"), (Kind.DELETE, "gone"), (Kind.DELETE, "older")]
    assert [a.runner_id for a in plan.of_kind(Kind.DELETE)] == [2, 9]


def test_no_prune_deletes_nothing():
    observed = Observed({"gone": runner("gone")}, [PendingDelete(9, URL, "older")])
    assert reconcile([], observed, now=NOW, prune=False).actions == ()


def test_deletion_guard_default_is_half_at_least_one():
    observed = Observed({s: runner(s, i) for i, s in enumerate("abcd")})
    assert len(reconcile([executor("a"), executor("b")], observed, now=NOW).actions) == 4
    with pytest.raises(InputError, match="refusing to delete 3 of 4"):
        reconcile([executor("a")], observed, now=NOW)
    single = Observed({"a": runner("a")})
    assert kinds(reconcile([], single, now=NOW)) == [(Kind.DELETE, "a")]


def test_deletion_guard_explicit_limit_and_force():
    observed = Observed({s: runner(s, i) for i, s in enumerate("abcd")})
    with pytest.raises(InputError):
        reconcile([executor("a"), executor("b")], observed, now=NOW, max_deletions=1)
    assert len(reconcile([], observed, now=NOW, force=True).of_kind(Kind.DELETE)) == 4


def test_pending_deletes_do_not_count_against_the_guard():
    observed = Observed({"a": runner("a")}, [PendingDelete(i, URL, f"o{i}") for i in range(5)])
    assert len(reconcile([executor("a")], observed, now=NOW).of_kind(Kind.DELETE)) == 5


def test_mass_invalid_holds_creates_and_deletes():
    observed = Observed(
        {s: runner(s, i, Verdict.INVALID) for i, s in enumerate("abc")},
        [PendingDelete(9, URL, "older")],
    )
    plan = reconcile(
        [executor("a"), executor("b"), executor("c"), executor("new")], observed, now=NOW
    )
    assert plan.held and plan.warnings
    assert {a.kind for a in plan.actions} == {Kind.KEEP}
    assert not plan.mutates


@pytest.mark.parametrize(
    ("verdicts", "held"),
    [
        ("I", False),  # one token is not "at least two"
        ("II", True),
        ("IV", False),  # half is not more than half
        ("IIV", True),
        ("IVV", False),
        ("IIUU", True),  # unknown verdicts are not checked ones
    ],
)
def test_mass_invalid_threshold(verdicts, held):
    verdict = {"I": Verdict.INVALID, "V": Verdict.VALID, "U": Verdict.UNKNOWN}
    observed = Observed({f"s{i}": runner(f"s{i}", i, verdict[v]) for i, v in enumerate(verdicts)})
    desired = [executor(f"s{i}") for i in range(len(verdicts))]
    assert reconcile(desired, observed, now=NOW).held is held
    assert not reconcile(desired, observed, now=NOW, force=True).held


def test_rotation_at_three_quarters_of_the_lifetime():
    obtained = NOW - timedelta(hours=76)
    due = runner("x", obtained=obtained, expires=obtained + timedelta(hours=100))
    assert rotation_due(due, NOW)
    assert kinds(reconcile([executor("x")], Observed({"x": due}), now=NOW)) == [(Kind.ROTATE, "x")]
    fresh = runner("x", obtained=NOW - timedelta(hours=1), expires=NOW + timedelta(hours=99))
    assert not rotation_due(fresh, NOW)
    assert not rotation_due(runner("x", obtained=obtained), NOW)  # never expires


def test_rotation_waits_for_a_verified_token():
    obtained = NOW - timedelta(hours=76)
    state = runner(
        "x", verdict=Verdict.UNKNOWN, obtained=obtained, expires=obtained + timedelta(hours=100)
    )
    assert kinds(reconcile([executor("x")], Observed({"x": state}), now=NOW)) == [(Kind.KEEP, "x")]


def test_actions_are_sorted_whatever_the_input_order():
    desired = [executor(s) for s in "cab"]
    assert [a.stem for a in reconcile(desired, Observed(), now=NOW).actions] == ["a", "b", "c"]


def test_a_due_rotation_carries_the_attribute_changes():
    obtained = NOW - timedelta(hours=76)
    due = runner("x", obtained=obtained, expires=obtained + timedelta(hours=100))
    (action,) = reconcile([executor("x", locked=True)], Observed({"x": due}), now=NOW).actions
    assert (action.kind, action.runner_id) == (Kind.ROTATE, 1)
    assert action.changes == (("locked", None, True),)
    assert action.reason == "token past 75% of its lifetime; registration attributes changed"


# -- what mutation testing found unseen ---------------------------------------------------


def test_rotation_is_due_at_exactly_three_quarters_of_the_lifetime():
    state = runner("a", obtained=NOW - timedelta(hours=75), expires=NOW + timedelta(hours=25))
    assert rotation_due(state, NOW)
    assert not rotation_due(state, NOW - timedelta(seconds=1))


def test_recreate_names_the_runner_it_replaces():
    moved = reconcile([executor("a", url="https://other")], observe(runner("a", 7)), now=NOW)
    lost = reconcile([executor("b")], observe(runner("b", 8, token=None)), now=NOW)
    assert [(a.kind, a.runner_id) for a in moved.actions] == [(Kind.RECREATE, 7)]
    assert [(a.kind, a.runner_id) for a in lost.actions] == [(Kind.RECREATE, 8)]
    assert "moved from" in moved.actions[0].reason and "missing" in lost.actions[0].reason


def test_held_plan_keeps_each_known_runner_and_says_how_many_were_rejected():
    states = [runner(s, i, Verdict.INVALID) for i, s in enumerate("ab", 1)]
    states.append(runner("c", 3))
    plan = reconcile([executor(s) for s in "abcd"], observe(*states), now=NOW)
    assert plan.held
    assert [(a.kind, a.stem, a.runner_id) for a in plan.actions] == [
        (Kind.KEEP, "a", 1),
        (Kind.KEEP, "b", 2),
        (Kind.KEEP, "c", 3),
    ]
    assert all(a.reason == "held by the mass-invalid guard" for a in plan.actions)
    assert "rejected 2 of 3 runner tokens" in plan.warnings[0]


def test_a_create_of_unknown_outcome_waits_unless_forced():
    observed = Observed(unresolved=frozenset({"a"}))
    assert [a.kind for a in reconcile([executor("a")], observed, now=NOW).actions] == [Kind.WAIT]
    forced = reconcile([executor("a")], observed, now=NOW, force=True)
    assert [a.kind for a in forced.actions] == [Kind.CREATE]


def observe(*states: RunnerState) -> Observed:
    return Observed({state.stem: state for state in states})


# -- the mass-invalid guard settled by evidence, the rejected access token -----------------


def _guarded(evidence):
    """a, b rejected (with what GET /runners/:id said), c valid, d new, e stale."""
    observed = Observed(
        {
            "a": runner("a", 1, Verdict.INVALID),
            "b": runner("b", 2, Verdict.INVALID),
            "c": runner("c", 3),
            "e": runner("e", 5, Verdict.UNCHECKED),  # stale: not verified
        },
        evidence=dict(zip("ab", evidence)),
    )
    return reconcile([executor(s) for s in "abcd"], observed, now=NOW)


@pytest.mark.parametrize(
    "evidence",
    [(Evidence.GONE, Evidence.GONE), (Evidence.GONE, Evidence.REPLACED)],
)
def test_runners_gitlab_lost_are_recreated_without_their_old_ids(evidence):
    plan = _guarded(evidence)
    assert not plan.held and not plan.refusals
    assert [(a.kind, a.stem, a.runner_id) for a in plan.actions] == [
        (Kind.RECREATE, "a", None),  # the old id is not this host's to delete any more
        (Kind.RECREATE, "b", None),
        (Kind.KEEP, "c", 3),
        (Kind.CREATE, "d", None),
        (Kind.DELETE, "e", 5),  # proven by its own token or marker when deleted
    ]
    assert "no longer has those runners" in plan.warnings[0]


@pytest.mark.parametrize(
    ("evidence", "refused"),
    [
        ((Evidence.GONE, Evidence.LISTED), False),
        ((Evidence.LISTED, Evidence.UNREADABLE), False),  # GitLab-side, whatever else
        ((Evidence.GONE, Evidence.UNREADABLE), True),
        ((Evidence.UNKNOWN, Evidence.GONE), False),
        ((), False),  # not asked: never released
    ],
)
def test_any_runner_not_proven_gone_holds_everything(evidence, refused):
    plan = _guarded(evidence)
    assert plan.held and not plan.mutates
    assert bool(plan.refusals) is refused
    if refused:
        assert "read_api or manage_runner" in plan.refusals[0] and "--force" in plan.refusals[0]
    else:
        assert plan.warnings[0].startswith("held by the mass-invalid guard")


def test_nothing_that_needs_a_rejected_access_token_is_planned():
    other = "https://other.example.com"
    observed = Observed(
        {"a": runner("a", 1, Verdict.INVALID), "b": runner("b", 2), "c": runner("c", 3)},
        [PendingDelete(9, URL, "older")],
        access_tokens={URL: AccessTokenCheck(False, rejected=True), other: AccessTokenCheck(True)},
    )
    desired = [executor("a"), executor("b", locked=True), executor("d"), executor("o", url=other)]
    plan = reconcile(desired, observed, now=NOW)
    assert [(a.kind, a.stem, a.runner_id) for a in plan.actions] == [
        (Kind.KEEP, "a", 1),
        (Kind.KEEP, "b", 2),
        (Kind.WAIT, "d", None),
        (Kind.CREATE, "o", None),  # another GitLab, another token
        (Kind.KEEP, "c", 3),
        (Kind.KEEP, "older", 9),
    ]
    assert plan.blocked == {URL}
    (refusal,) = plan.refusals
    assert refusal.startswith(f"{URL}: the access token was rejected (401")


def test_a_rejected_access_token_is_the_one_refusal_when_the_guard_cannot_read():
    observed = Observed(
        {s: runner(s, i, Verdict.INVALID) for i, s in enumerate("ab", 1)},
        evidence={"a": Evidence.UNREADABLE, "b": Evidence.UNREADABLE},
        access_tokens={URL: AccessTokenCheck(False, rejected=True)},
    )
    plan = reconcile([executor("a"), executor("b")], observed, now=NOW)
    assert plan.held and not plan.mutates
    (refusal,) = plan.refusals
    assert "rejected (401" in refusal


# -- what the operator reads: each action's reason, the guard's lines (mutation testing) ----


def test_a_bad_files_runner_is_kept_by_its_id_with_the_files_reason():
    observed = observe(runner("a", 1), runner("b", 2))
    bad = {"b": "/p/main/b.toml: line 3: bad value", "new": "/p/main/new.toml: not TOML"}
    plan = reconcile([executor("a")], observed, now=NOW, bad=bad)
    assert plan.actions == (
        Action(Kind.KEEP, "a", "", 1),
        Action(Kind.KEEP, "b", "/p/main/b.toml: line 3: bad value", 2),
        Action(Kind.KEEP, "new", "/p/main/new.toml: not TOML", None),
    )


def test_each_planned_action_says_why():
    obtained = NOW - timedelta(hours=80)
    observed = Observed(
        {
            "gone": runner("gone", 1),
            "rejected": runner("rejected", 2, Verdict.INVALID),
            "due": runner("due", 3, obtained=obtained, expires=obtained + timedelta(hours=100)),
            "changed": runner("changed", 4),
            "lost": runner("lost", 5, token=None),
        },
        [PendingDelete(9, URL, "older")],
        unresolved=frozenset({"waiting"}),
    )
    desired = [executor(s) for s in ("rejected", "due", "lost", "new", "waiting")]
    desired.append(executor("changed", locked=True))
    plan = reconcile(desired, observed, now=NOW, max_deletions=2)
    assert {a.stem: a.reason for a in plan.actions} == {
        "changed": "registration attributes changed",
        "due": "token past 75% of its lifetime",
        "lost": "token missing from the config",
        "new": "new executor",
        "rejected": "GitLab rejected the token (403)",
        "waiting": "an earlier create's outcome is not known yet",
        "gone": "executor file removed",
        "older": "deletion left over from an earlier run",
    }


def test_a_changed_maintenance_note_is_an_update_even_with_a_marker_in_it():
    marker = "[register-runner host=h instance=main executor=a system_id=s_1 prefix=ab12]"
    wanted = {"maintenance_note": f"new owner {marker}"}
    applied = {**ATTRS, "maintenance_note": f"old owner {marker}"}
    plan = reconcile([executor("a", **wanted)], observe(runner("a", applied=applied)), now=NOW)
    assert [(a.kind, a.changes) for a in plan.actions] == [
        (Kind.UPDATE, (("maintenance_note", f"old owner {marker}", f"new owner {marker}"),))
    ]


def test_the_deletion_limit_is_a_whole_number_of_runners():
    observed = Observed({s: runner(s, i) for i, s in enumerate("abc")})
    with pytest.raises(InputError) as refused:
        reconcile([executor("a")], observed, now=NOW)
    assert str(refused.value) == (
        "refusing to delete 2 of 3 runners (limit 1); check the executor folder, or pass "
        "--max-deletions N or --force"
    )


def _guard_lines(evidence):
    plan = _guarded(evidence)
    return plan.warnings, plan.refusals


def test_the_guards_line_when_gitlab_still_lists_the_runners():
    assert _guard_lines((Evidence.LISTED, Evidence.LISTED)) == (
        (
            "held by the mass-invalid guard: GitLab still lists these runners (a, b) with this "
            "host's marker: GitLab rejected 2 of 3 runner tokens at once, a GitLab-side failure "
            "(maintenance mode, Geo secondary, WAF); nothing is created or deleted and the "
            "config is kept. Use --force if their tokens really are gone",
        ),
        (),
    )


def test_the_guards_one_line_when_the_access_token_may_not_read_the_runners():
    # The refusal is the one line: no empty or second warning beside it.
    assert _guard_lines((Evidence.UNREADABLE, Evidence.UNREADABLE)) == (
        (),
        (
            "held by the mass-invalid guard: GitLab rejected 2 of 3 runner tokens at once and "
            "the access token may not read these runners (a, b) to tell whether GitLab lost "
            "them; nothing is created or deleted and the config is kept. Give it the read_api "
            "or manage_runner scope, or run sync --force if the runners really are gone",
        ),
    )


def test_the_guards_line_when_gitlab_did_not_answer():
    assert _guard_lines((Evidence.UNKNOWN, Evidence.UNKNOWN)) == (
        (
            "held by the mass-invalid guard: GitLab rejected 2 of 3 runner tokens at once and "
            "GitLab did not answer about these runners (a, b); nothing is created or deleted "
            "and the config is kept; asked again on the next run",
        ),
        (),
    )


def test_released_runners_say_what_gitlab_answered_about_them():
    plan = _guarded((Evidence.GONE, Evidence.REPLACED))
    assert [(a.stem, a.reason) for a in plan.of_kind(Kind.RECREATE)] == [
        ("a", "GitLab no longer has runner 1"),
        ("b", "runner 2 is another runner now"),
    ]
    assert plan.warnings == (
        "GitLab rejected the tokens of 2 runner(s) (a, b) and no longer has those runners "
        "(a GitLab restored from a backup?): they are created again",
    )


def test_a_released_runner_whose_file_is_gone_is_deleted_by_its_old_id():
    observed = Observed(
        {s: runner(s, i, Verdict.INVALID) for i, s in enumerate("abc", 1)},
        evidence=dict.fromkeys("abc", Evidence.GONE),
    )
    plan = reconcile([executor("a"), executor("b")], observed, now=NOW)
    assert plan.of_kind(Kind.DELETE) == [Action(Kind.DELETE, "c", "executor file removed", 3)]


def test_what_a_rejected_access_token_holds_says_so():
    observed = Observed(
        {"a": runner("a", 1, Verdict.INVALID)},
        access_tokens={URL: AccessTokenCheck(False, rejected=True)},
    )
    plan = reconcile([executor("a"), executor("d")], observed, now=NOW)
    assert plan.actions == (
        Action(Kind.KEEP, "a", "the access token was rejected (401)", 1),
        Action(Kind.WAIT, "d", "the access token was rejected (401)"),
    )
    assert plan.refusals == (
        f"{URL}: the access token was rejected (401 on GET /personal_access_tokens/self): "
        "expired, revoked or mistyped; nothing that needs it is created, changed or deleted "
        "until it is replaced in the template",
    )


def test_an_emptied_executor_folder_is_refused_with_the_way_out():
    with pytest.raises(InputError) as refused:
        check_not_emptied(0, 3, "/p/main", force=False)
    assert str(refused.value) == (
        "/p/main: no executor files, but 3 runner(s) exist; refusing to delete them all "
        "(pass --force if that is the intention, or use unregister)"
    )
