"""Runners as this host wants them and as GitLab holds them: scopes, the marker, the
executors and client configs the inputs describe, and what observe learns of each."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Optional

from ..secret import Secret
from ..timeutil import NEVER, now_utc

# Sent to GitLab, never written into config.toml (gitlab-api.md §9).
REGISTRATION_ATTRIBUTES = (
    "description",
    "tag_list",
    "run_untagged",
    "locked",
    "paused",
    "access_level",
    "maximum_timeout",
    "maintenance_note",
)
RUNNER_TYPES = ("instance_type", "group_type", "project_type")

# A runner is known by its GitLab and its id together: two GitLabs hand out the same ids,
# and a GitLab restored from a backup hands old ids out again.
RunnerKey = tuple[str, int]


def normalize_url(url: str) -> str:
    """The one spelling of a GitLab url that runners are keyed by."""
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class Scope:
    """Where a runner lives in GitLab. A change of scope means a new runner."""

    runner_type: str = "instance_type"
    group_id: Optional[int] = None
    project_id: Optional[int] = None

    def describe(self) -> str:
        if self.runner_type == "group_type":
            return f"group {self.group_id}"
        if self.runner_type == "project_type":
            return f"project {self.project_id}"
        return "instance"

    def to_json(self) -> dict[str, Any]:
        return {
            "runner_type": self.runner_type,
            "group_id": self.group_id,
            "project_id": self.project_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scope:
        return cls(
            data.get("runner_type", "instance_type"), data.get("group_id"), data.get("project_id")
        )


# How every marker this tool writes begins, whatever its version, host or prefix.
MARKER_START = "[register-runner "


def carries_marker(note: Any) -> bool:
    """Whether a runner's maintenance note holds a marker of this tool (any host's)."""
    return isinstance(note, str) and MARKER_START in note


@dataclass(frozen=True)
class Identity:
    """Who this host is, for default names and the marker stored in GitLab.

    ``prefix_key`` tells apart two prefixes of one host that use the same instance name
    (same host, instance, stems and system ID): neither may take the other's runners for
    its own. Empty, the marker is the one releases before the key wrote.
    """

    host: str
    instance: str
    system_id: str
    prefix_key: str = ""

    def default_name(self, stem: str) -> str:
        return f"{self.host}-{self.instance}-{stem}"

    def marker(self, stem: str) -> str:
        key = f" prefix={self.prefix_key}" if self.prefix_key else ""
        return (
            f"{MARKER_START}host={self.host} instance={self.instance} "
            f"executor={stem} system_id={self.system_id}{key}]"
        )

    def names_this_machine(self, note: Any) -> bool:
        """Whether ``note`` holds a marker naming this machine's system ID, whatever its
        host name, instance or prefix."""
        if not isinstance(note, str):
            return False
        mark = re.compile(
            rf"{re.escape(MARKER_START)}[^\]]* system_id={re.escape(self.system_id)}[ \]]"
        )
        return mark.search(note) is not None


_PREFIX_KEY = re.compile(r" prefix=[0-9a-f]+\]\Z")


def earlier_marker(note: str) -> str:
    """``note`` (a maintenance_note ending in a marker) as releases before the prefix key
    wrote it: what the runners an existing host already has carry."""
    return _PREFIX_KEY.sub("]", note)


@dataclass(frozen=True)
class Credentials:
    """A runner's token and its timestamps, as the config holds them."""

    token: Secret
    obtained_at: Optional[datetime]
    expires_at: Optional[datetime]  # None: never expires

    def as_entry(self) -> dict[str, Any]:
        return {
            "token": self.token.reveal(),
            "token_obtained_at": self.obtained_at or now_utc(),
            "token_expires_at": self.expires_at or NEVER,
        }


@dataclass(frozen=True)
class ClientConfig:
    """One GitLab instance from the template's ``client_configs``."""

    url: str
    scope: Scope
    access_token: Optional[Secret] = None
    registration_token: Optional[Secret] = None
    tls_ca_file: Optional[str] = None
    tls_cert_file: Optional[str] = None  # a client certificate, for fronts that require one
    tls_key_file: Optional[str] = None


@dataclass(frozen=True)
class Executor:
    """One executor file: the runner this host should have under that file's stem."""

    stem: str
    path: str
    url: str
    scope: Scope
    name: str
    attributes: Mapping[str, Any]  # registration attributes to send, marker included
    settings: Mapping[str, Any]  # pass-through keys for the [[runners]] entry, in file order
    # A runner that is not gitlab-runner: its credentials go to this file, not the config.
    credentials_file: Optional[str] = None
    credentials_owner: Optional[str] = None  # the user a new credentials file is given to


class Verdict(enum.Enum):
    """What ``POST /runners/verify`` said of a token."""

    VALID = "valid"
    INVALID = "invalid"  # a 403: the only answer that proves a token dead
    UNKNOWN = "unknown"  # timeout, 5xx, 429: proves nothing
    UNCHECKED = "unchecked"


class Evidence(enum.Enum):
    """What ``GET /runners/:id`` said of a runner whose token GitLab rejected, when the
    mass-invalid guard asks: whether the 403s are real."""

    GONE = "gone"  # 404: GitLab lost it (restored from a backup, deleted by hand)
    REPLACED = "replaced"  # the id is another runner's now (another marker, or none)
    LISTED = "listed"  # still there with this host's marker: the 403s are GitLab-side
    UNREADABLE = "unreadable"  # the access token may not read it
    UNKNOWN = "unknown"  # GitLab did not answer


@dataclass(frozen=True)
class AccessTokenCheck:
    """What ``GET /personal_access_tokens/self`` said of a client_config's access token."""

    answered: bool  # False: GitLab could not be asked (unreachable, failing)
    expires_at: Optional[date] = None  # None: never, or GitLab would not say
    rejected: bool = False  # 401: expired, revoked or mistyped


@dataclass(frozen=True)
class RunnerState:
    """What this host knows of the runner it made for one executor stem."""

    stem: str
    id: int
    url: str
    scope: Scope
    applied: Mapping[str, Any]  # registration attributes last sent to GitLab
    token: Optional[Secret] = None  # None: the output config lost it
    token_obtained_at: Optional[datetime] = None
    token_expires_at: Optional[datetime] = None
    verdict: Verdict = Verdict.UNCHECKED
