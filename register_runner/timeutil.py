"""Time as GitLab and the config spell it: UTC, whole seconds."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

# gitlab-runner writes this for a token that never expires.
NEVER = datetime(1, 1, 1, tzinfo=timezone.utc)


def parse_timestamp(value: str) -> Optional[datetime]:
    """GitLab's ISO 8601 (``2025-01-01T00:00:00.000Z``); Python 3.9 cannot parse the Z."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)
