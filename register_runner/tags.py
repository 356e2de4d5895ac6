"""Tags every runner of a host gets, beyond its executor file's own: host-wide tags from
the template, identity tags, the values of the environment variables an executor file
names in ``env_tags``, what a site's ``--capture-tags`` plugin captures (as LLNL's
gitlab-runner-auth does), and a JSON schema checked before any API call (``--tag-schema``):
an array schema checks each runner's final tag list, an object schema checks the
properties gitlab-runner-auth built (its form)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import json
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .errors import HostInputError, InputError
from .files import read_file
from .tomlfile import Where

# The template's own table, removed from the output like client_configs.
MAX_SCHEMA_BYTES = 1 << 20
SETTINGS_TABLE = "register_runner"
# capture_tags and tag_schema: the --capture-tags and --tag-schema every command uses (the
# timer's sync, plan, prune-legacy), so that no run tags the runners differently. host:
# the name a fleet knows the host by (inputs.with_host).
SETTINGS_KEYS = ("tags", "identity_tags", "capture_tags", "tag_schema", "host")
# identity_tags = "gitlab-runner-auth": the tags that tool gave (see properties()).
GITLAB_RUNNER_AUTH = "gitlab-runner-auth"

# The JSON Schema keywords checked here: enough to constrain a list of tag strings or the
# properties object gitlab-runner-auth validates. Any other keyword is refused rather than
# silently ignored; annotations (its tag_schema.json has "custom-name") mean nothing here.
ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default", "custom-name"}
)
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
            "properties",
            "required",
            "additionalProperties",
            "allOf",
            "anyOf",
            "not",
        }
    )
    | ANNOTATIONS
)
OBJECT_KEYWORDS = ("properties", "required", "additionalProperties")
JSON_TYPES: dict[str, Any] = {
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "null": type(None),
}


class Capture:
    """A site's ``capture_tags`` function, called once per executor type and env_tags.

    Two forms: gitlab-runner-auth's ``capture_tags(instance, executor_type, env=None,
    tag_schema=None)`` returning a properties dict, and the older no-argument form returning
    a list of tags. Either may return either."""

    def __init__(self, source: str, function: Callable[..., Any]) -> None:
        self.source = source
        self.function = function
        self.takes_arguments = _takes_arguments(source, function)
        self._results: dict[Any, Union[dict[str, Any], list[str]]] = {}

    def __call__(
        self,
        instance: str,
        executor_type: Optional[str],
        env: Optional[list[str]],
        tag_schema: Optional[Mapping[str, Any]],
    ) -> Union[dict[str, Any], list[str]]:
        key: Optional[tuple[Optional[str], Optional[tuple[str, ...]]]]
        key = (executor_type, tuple(env) if env is not None else None)
        if not self.takes_arguments:
            key = None
        if key not in self._results:
            self._results[key] = self._call(instance, executor_type, env, tag_schema)
        return self._results[key]

    def _call(
        self,
        instance: str,
        executor_type: Optional[str],
        env: Optional[list[str]],
        tag_schema: Optional[Mapping[str, Any]],
    ) -> Union[dict[str, Any], list[str]]:
        try:
            if self.takes_arguments:
                env = None if env is None else list(env)
                result = self.function(instance, executor_type, env=env, tag_schema=tag_schema)
            else:
                result = self.function()
        except Exception as error:
            raise HostInputError(
                f"{self.source}: capture_tags() failed: {type(error).__name__}: {error}"
            ) from None
        if isinstance(result, dict) and all(isinstance(k, str) for k in result):
            return result
        if isinstance(result, (list, tuple)) and all(isinstance(t, str) for t in result):
            return list(result)
        raise HostInputError(
            f"{self.source}: capture_tags() must return a dict of properties "
            "(gitlab-runner-auth's form) or a list of strings"
        )


def _takes_arguments(source: str, function: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind("main", "shell", env=None, tag_schema=None)
        return True
    except TypeError:
        pass
    try:
        signature.bind()
        return False
    except TypeError:
        raise InputError(
            f"{source}: capture_tags must take (instance, executor_type, env=None, "
            "tag_schema=None), as in gitlab-runner-auth, or no argument"
        ) from None


@dataclass(frozen=True)
class TagPolicy:
    """How an executor's tag list is made, beyond its own ``tags``."""

    host_tags: tuple[str, ...] = ()
    schema: Optional[Mapping[str, Any]] = None
    schema_path: Optional[Path] = None
    capture: Optional[Capture] = None
    # gitlab-runner-auth's host name (socket.gethostname(), unshortened) and instance:
    # the properties it built start with them.
    hostname: str = ""
    instance: str = "main"
    gitlab_runner_auth: bool = False  # identity_tags = "gitlab-runner-auth"
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def object_schema(self) -> bool:
        schema = self.schema or {}
        return schema.get("type") == "object" or any(k in schema for k in OBJECT_KEYWORDS)

    def tags_for(
        self,
        where: Where,
        executor_type: Optional[str],
        env_tags: Optional[list[str]],
        own: Optional[list[str]],
    ) -> Optional[list[str]]:
        """The executor's tags: its own, the host's, its env_tags values and what the plugin
        captured (all of gitlab-runner-auth's properties, flattened, in that mode). None
        when there are none at all (then run_untagged defaults to true)."""
        env_values = [self.environ[name] for name in env_tags or () if name in self.environ]
        captured: Union[dict[str, Any], list[str]] = {}
        if self.capture is not None:
            captured = self.capture(self.instance, executor_type, env_tags, self.schema)
        properties = {
            "hostname": self.hostname,
            "executor_type": executor_type or "",
            "instance": self.instance,
            "env": env_values,
        }
        if isinstance(captured, dict):
            properties.update(captured)
        if self.object_schema:
            self._check(where, "properties", properties)
        if isinstance(captured, list):
            values = list(captured)
        else:
            values = [] if self.gitlab_runner_auth else flatten_values(captured)
        values += flatten_values(properties) if self.gitlab_runner_auth else env_values
        extra = split_tags(where, values) + list(self.host_tags)
        if own is None and not extra:
            return None
        return sorted(set(own or ()) | set(extra))

    def check(self, where: Where, tags: Sequence[str]) -> None:
        """An array schema against the final tag list (an object schema is checked
        against the properties in tags_for)."""
        if self.schema is not None and not self.object_schema:
            self._check(where, "tags", list(tags))

    def _check(self, where: Where, what: str, value: Any) -> None:
        problem = violation(self.schema or {}, value)
        if problem:
            raise InputError(
                f"{where}: {what} {value!r} do not match --tag-schema {self.schema_path}: {problem}"
            )


def flatten_values(value: Any) -> list[Any]:
    """gitlab-runner-auth's flattening: a dict's values and a list's items, depth first in
    order; anything else is one value."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [leaf for item in value for leaf in flatten_values(item)]
    return [value]


def split_tags(where: Where, values: Sequence[Any]) -> list[str]:
    """Tags as GitLab reads the comma-joined list gitlab-runner-auth sent: split at commas,
    stripped, blanks dropped. It could not join anything but strings, nor can this."""
    tags = []
    for value in values:
        if not isinstance(value, str):
            raise InputError(
                f"{where}: captured tag value {value!r} is a {type(value).__name__}, not a string"
            )
        tags += [tag.strip() for tag in value.split(",") if tag.strip()]
    return tags


def legacy_hostname() -> str:
    """The host name gitlab-runner-auth tagged and described runners with: not shortened."""
    return socket.gethostname()


def identity_tags(host: str, instance: str) -> list[str]:
    """The host, the host without its digits (the cluster: node12 → node), the instance."""
    cluster = re.sub(r"\d+", "", host).strip("-_.")
    return [tag for tag in (host, cluster, instance) if tag]


def load_capture(name: Union[str, Path]) -> Capture:
    """``--capture-tags NAME``: a module importable from PYTHONPATH (gitlab-runner-auth's
    form, e.g. ``capture_tags``) or a Python file (a path, or a name ending in .py)."""
    spec = _capture_spec(name)
    source = spec.origin or str(name)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as error:
        raise InputError(f"{source}: cannot load it: {type(error).__name__}: {error}") from None
    function = getattr(module, "capture_tags", None)
    if not callable(function):
        raise InputError(f"{source}: defines no capture_tags() function")
    return Capture(source, function)


def is_file_name(name: Union[str, Path]) -> bool:
    """Whether ``--capture-tags NAME`` names a file rather than a module."""
    text = str(name)
    return isinstance(name, Path) or text.endswith(".py") or "/" in text


def capture_origin(name: Union[str, Path]) -> Optional[Path]:
    """The file ``--capture-tags NAME`` runs, to check who may change it."""
    origin = _capture_spec(name).origin
    return Path(origin) if origin else None


def _capture_spec(name: Union[str, Path]) -> importlib.machinery.ModuleSpec:
    text = str(name)
    if is_file_name(name):
        path = Path(text)
        spec = importlib.util.spec_from_file_location("register_runner_capture_tags", path)
        if spec is None or spec.loader is None or not path.is_file():
            raise InputError(f"{path}: --capture-tags needs a Python file or a module name")
        return spec
    try:
        spec = importlib.util.find_spec(text)
    except (ImportError, ValueError) as error:
        raise InputError(f"--capture-tags {text}: cannot import it: {error}") from None
    if spec is None or spec.loader is None:
        raise InputError(
            f"--capture-tags {text}: no such module on PYTHONPATH (set PYTHONPATH "
            "to its folder, or give the path of its .py file)"
        )
    return spec


def load_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(read_file(path, limit=MAX_SCHEMA_BYTES).decode("utf-8"))
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
    types = schema.get("type", [])
    for name in types if isinstance(types, list) else [types]:
        if name not in JSON_TYPES:
            raise InputError(f"{path}: schema type {name!r} is not a JSON Schema type")
    for key in ("items", "contains", "not"):
        if key in schema:
            _check_supported(path, schema[key])
    if isinstance(schema.get("additionalProperties"), dict):
        _check_supported(path, schema["additionalProperties"])
    for part in schema.get("properties", {}).values():
        _check_supported(path, part)
    for key in ("allOf", "anyOf"):
        for part in schema.get(key, []):
            _check_supported(path, part)


def violation(schema: Mapping[str, Any], value: Any) -> Optional[str]:
    """Why ``value`` does not match ``schema``, or None."""
    expected = schema.get("type")
    if expected is not None and not any(
        _is_type(value, name) for name in (expected if isinstance(expected, list) else [expected])
    ):
        return f"{value!r} is not of type {expected}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{value!r} is not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        return f"{value!r} is not {schema['const']!r}"
    if isinstance(value, str):
        return _string_violation(schema, value)
    if isinstance(value, list):
        return _array_violation(schema, value)
    if isinstance(value, dict):
        return _object_violation(schema, value)
    return _combined_violation(schema, value)


def _is_type(value: Any, name: str) -> bool:
    kind = JSON_TYPES.get(name)
    # JSON has no booleans among its numbers; Python does (True is an int).
    return (
        kind is not None
        and isinstance(value, kind)
        and not (isinstance(value, bool) and name in ("integer", "number"))
    )


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


def _object_violation(schema: Mapping[str, Any], value: dict) -> Optional[str]:
    for name in schema.get("required", []):
        if name not in value:
            return f"{name!r} is a required property"
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problem = violation(properties[name], item)
        elif extra is False:
            problem = "is not allowed (additionalProperties)"
        elif isinstance(extra, dict):
            problem = violation(extra, item)
        else:
            problem = None
        if problem:
            return f"{name}: {problem}"
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
