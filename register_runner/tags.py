"""Tags every runner of a host gets, beyond its executor file's own: host-wide tags from
the template, identity tags (host, host without digits, instance), tags a site module
captures (``--capture-tags``, as LLNL's gitlab-runner-auth does), and a JSON schema the
final tag lists must match (``--tag-schema``) before any API call."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import InputError

# The template's own table, removed from the output like client_configs.
SETTINGS_TABLE = "register_runner"
SETTINGS_KEYS = ("tags", "identity_tags")

# The JSON Schema keywords checked here: enough to constrain a list of tag strings. Any
# other keyword is refused rather than silently ignored.
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples"})
KEYWORDS = (
    frozenset(
        {
            "type",
            "items",
            "enum",
            "const",
            "pattern",
            "minItems",
            "maxItems",
            "uniqueItems",
            "contains",
            "minLength",
            "maxLength",
            "allOf",
            "anyOf",
            "not",
        }
    )
    | ANNOTATIONS
)
JSON_TYPES = {"array": list, "string": str, "integer": int, "boolean": bool, "object": dict}


@dataclass(frozen=True)
class TagPolicy:
    host_tags: tuple[str, ...] = ()
    schema: Optional[Mapping[str, Any]] = None
    schema_path: Optional[Path] = None

    def check(self, where: str, tags: Sequence[str]) -> None:
        if self.schema is None:
            return
        problem = violation(self.schema, list(tags))
        if problem:
            raise InputError(
                f"{where}: tags {list(tags)} do not match --tag-schema "
                f"{self.schema_path}: {problem}"
            )


def identity_tags(host: str, instance: str) -> list[str]:
    """The host, the host without its digits (the cluster: node12 → node), the instance."""
    cluster = re.sub(r"\d+", "", host).strip("-_.")
    return [tag for tag in (host, cluster, instance) if tag]


def capture_tags(path: Path) -> list[str]:
    """Call ``capture_tags()`` in the Python file at ``path``: a site's own tag logic."""
    spec = importlib.util.spec_from_file_location("register_runner_capture_tags", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise InputError(f"{path}: --capture-tags needs a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        tags = module.capture_tags()
    except InputError:
        raise
    except AttributeError:
        raise InputError(f"{path}: defines no capture_tags() function") from None
    except Exception as error:
        raise InputError(
            f"{path}: capture_tags() failed: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise InputError(f"{path}: capture_tags() must return a list of strings")
    return [tag.strip() for tag in tags if tag.strip()]


def load_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read the tag schema: {error.strerror}") from None
    except ValueError as error:
        raise InputError(f"{path}: not valid JSON: {error}") from None
    _check_supported(path, schema)
    return schema


def _check_supported(path: Path, schema: Any) -> None:
    if not isinstance(schema, dict):
        raise InputError(f"{path}: a JSON schema must be an object")
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        raise InputError(
            f"{path}: schema keyword {unknown[0]!r} is not supported (supported: "
            + ", ".join(sorted(KEYWORDS - ANNOTATIONS))
            + ")"
        )
    for key in ("items", "contains", "not"):
        if key in schema:
            _check_supported(path, schema[key])
    for key in ("allOf", "anyOf"):
        for part in schema.get(key, []):
            _check_supported(path, part)


def violation(schema: Mapping[str, Any], value: Any) -> Optional[str]:
    """Why ``value`` does not match ``schema``, or None."""
    expected = schema.get("type")
    if expected is not None:
        kind = JSON_TYPES.get(expected)
        if kind is None or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{value!r} is not of type {expected}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{value!r} is not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        return f"{value!r} is not {schema['const']!r}"
    if isinstance(value, str):
        return _string_violation(schema, value)
    if isinstance(value, list):
        return _array_violation(schema, value)
    return _combined_violation(schema, value)


def _string_violation(schema: Mapping[str, Any], value: str) -> Optional[str]:
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{value!r} does not match {schema['pattern']!r}"
    if len(value) < schema.get("minLength", 0):
        return f"{value!r} is shorter than {schema['minLength']}"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{value!r} is longer than {schema['maxLength']}"
    return _combined_violation(schema, value)


def _array_violation(schema: Mapping[str, Any], value: list) -> Optional[str]:
    if len(value) < schema.get("minItems", 0):
        return f"fewer than {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"more than {schema['maxItems']} items"
    if schema.get("uniqueItems") and len(set(map(json.dumps, value))) != len(value):
        return "items are not unique"
    if "items" in schema:
        for item in value:
            problem = violation(schema["items"], item)
            if problem:
                return problem
    if "contains" in schema and all(violation(schema["contains"], i) for i in value):
        return "no item matches 'contains'"
    return _combined_violation(schema, value)


def _combined_violation(schema: Mapping[str, Any], value: Any) -> Optional[str]:
    for part in schema.get("allOf", []):
        problem = violation(part, value)
        if problem:
            return problem
    if "anyOf" in schema and all(violation(part, value) for part in schema["anyOf"]):
        return "matches none of 'anyOf'"
    if "not" in schema and violation(schema["not"], value) is None:
        return "matches 'not'"
    return None
