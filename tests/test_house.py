"""House rules read from the source (issue 24): the package keeps no module state that
callers set from outside, so a run's inputs are its arguments and its record is in what
it returns."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import register_runner

PACKAGE = Path(register_runner.__file__).parent
# Every command that does something has an API function (demo only shows them).
COMMANDS = (
    "sync",
    "plan",
    "unregister",
    "reset_token",
    "verify",
    "status",
    "prune_legacy",
    "gc",
    "system_id",
)


def test_no_global_statement_outside_testing():
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}: global {', '.join(node.names)}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "testing" not in path.relative_to(PACKAGE).parts
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Global)
    ]
    assert found == []


def public_functions():
    return [
        (name, getattr(register_runner, name))
        for name in register_runner.__all__
        if inspect.isfunction(getattr(register_runner, name))
    ]


def test_every_api_function_has_explicit_typed_keywords():
    names = [name for name, _ in public_functions()]
    assert sorted(names) == sorted(COMMANDS)
    for name, function in public_functions():
        signature = inspect.signature(function)
        assert signature.return_annotation is not inspect.Signature.empty, name
        for parameter in signature.parameters.values():
            assert parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL), (
                f"{name}(**{parameter.name})"
            )
            assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)
            if parameter.name not in ("prefix", "instance"):
                assert parameter.kind is parameter.KEYWORD_ONLY, (name, parameter.name)


def test_a_misspelt_keyword_is_a_type_error_naming_it(make):
    prefix = make()
    # Named by the call itself, not by a dataclass behind it.
    with pytest.raises(TypeError, match=r"^sync\(\) got an unexpected keyword argument 'jobz'"):
        register_runner.sync(prefix=prefix.root, jobz=2)  # type: ignore[call-arg]
    assert not prefix.output.exists()
