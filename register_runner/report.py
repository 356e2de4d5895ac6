"""What commands print on stdout: a compact table for people, JSON for machines. Logs go
to stderr; tokens appear here only masked."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .model import Plan


def plan_rows(plan: Plan, write: str) -> list[dict[str, Any]]:
    rows = [
        {
            "action": a.kind.value,
            "runner": a.stem,
            "id": a.runner_id,
            "reason": a.reason,
            "changes": [{"attribute": key, "old": old, "new": new} for key, old, new in a.changes],
        }
        for a in plan.actions
    ]
    rows.append(
        {
            "action": "write" if write == "changes" else "keep",
            "runner": "(config)",
            "id": None,
            "reason": write,
            "changes": [],
        }
    )
    return rows


def table(rows: Iterable[Mapping[str, Any]]) -> str:
    lines = [("ACTION", "RUNNER", "ID", "DETAIL")]
    for row in rows:
        detail = row.get("reason") or ""
        if row.get("changes"):
            detail = "; ".join(
                f"{c['attribute']}: {_short(c['old'])} -> {_short(c['new'])}"
                for c in row["changes"]
            )
        if row.get("error"):
            detail = f"{detail}: {row['error']}" if detail else row["error"]
        result = row.get("result")
        action = (
            row["action"] if result in (None, "done", "kept", "planned") else f"{row['action']} ({result})"
        )
        lines.append((action, row["runner"], _ids(row), detail))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {r:<{widths[1]}}  {i:>{widths[2]}}  {d}".rstrip()
        for a, r, i, d in lines
    )


def _ids(row: Mapping[str, Any]) -> str:
    """The runner's id; ``old→new`` when it was replaced, the new one when created."""
    old, new = row.get("id"), row.get("new_id")
    if new is None:
        return "-" if old is None else str(old)
    return str(new) if old is None else f"{old}→{new}"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def emit(
    as_json: bool,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    warnings: Sequence[str],
) -> None:
    if as_json:
        json.dump(
            dict(summary, actions=list(rows), warnings=list(warnings)),
            sys.stdout,
            indent=2,
            default=str,
        )
        sys.stdout.write("\n")
    else:
        print(table(rows))
    sys.stdout.flush()


def emit_result(as_json: bool, result: Any) -> None:
    """Print an ``api.Result``: the table, or the JSON summary."""
    summary: dict[str, Any] = {
        "command": result.command,
        "exit_status": result.exit_status,
        "changed": result.changed,
        "config": str(result.config),
        "system_id": result.system_id,
    }
    if result.command != "plan":
        summary.update(config_written=result.config_written, seconds=result.seconds)
    emit(as_json, summary, [a.as_row() for a in result.actions], result.warnings)
