"""What commands print on stdout: a compact table for people, JSON for machines. Logs go
to stderr; tokens appear here only masked.

Under systemd, stdout and stderr are usually both the journal: the table is then left
out (the key=value log lines say the same, once), unless --json asks for JSON.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .model import CONFIG_ROW
from .secret import mask, scrub

# The version of what --json prints (keys and types of the summary and of every row):
# raised only when a key changes meaning or goes, never when one is added.
JSON_SCHEMA = 1

# A token in a config: gitlab-runner's `token = "…"`, in any TOML string quoting.
_TOKEN_LINE = re.compile(r"""^(\s*"?token"?\s*=\s*)(["'])(.*?)(\2)""")


def table(rows: Sequence[Mapping[str, Any]]) -> str:
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
            row["action"]
            if result in (None, "done", "kept", "planned")
            else f"{row['action']} ({result})"
        )
        lines.append((action, row["runner"], _ids(row), detail))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    text = "\n".join(
        f"{a:<{widths[0]}}  {r:<{widths[1]}}  {i:>{widths[2]}}  {d}".rstrip()
        for a, r, i, d in lines
    )
    diffs = [row["diff"] for row in rows if row.get("diff")]
    return "\n\n".join([text, *(d.rstrip("\n") for d in diffs)])


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
    *,
    table_asked: bool,
) -> None:
    """``table_asked``: --table, the table under systemd too."""
    # Secrets are masked where they enter; scrubbing what is printed is the second line.
    if as_json:
        document = {"schema": JSON_SCHEMA, **summary, "actions": list(rows)}
        document["warnings"] = list(warnings)
        sys.stdout.write(scrub(json.dumps(document, indent=2, default=str)) + "\n")
    elif table_wanted(table_asked):
        print(scrub(table(rows)))
    sys.stdout.flush()


def emit_result(as_json: bool, result: Any, *, table_asked: bool) -> None:
    """Print an ``api.Result``: the table, or the JSON summary. The config row carries
    the config diff (plan only, tokens masked; None when there is none)."""
    summary: dict[str, Any] = {
        "command": result.command,
        "exit_status": result.exit_status,
        "changed": result.changed,
        "config": str(result.config),
        "system_id": result.system_id,
        "errors": list(result.errors),  # bad executor files: their runners were held
    }
    if result.command != "plan":  # plan's output depends on its inputs alone
        summary.update(config_written=result.config_written, seconds=result.seconds)
    rows = [a.as_row() for a in result.actions]
    for row in rows:
        if row["runner"] == CONFIG_ROW:
            row["diff"] = result.config_diff or None
            if result.config_diff:
                row["reason"] = f"{row['reason']} (diff below)"
    emit(as_json, summary, rows, result.warnings, table_asked=table_asked)


def table_wanted(asked: bool) -> bool:
    """Under systemd (JOURNAL_STREAM set) stdout is usually the journal too, where the
    table would repeat the log lines: there it goes only to a terminal, or when asked.
    Anywhere else (a terminal, a pipe) it is printed."""
    if asked or not os.environ.get("JOURNAL_STREAM"):
        return True
    try:
        return os.isatty(sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def config_diff(old_text: str, new_text: str, name: str = "config") -> str:
    """A unified diff from the config as it is to the config a sync would write, with
    every token masked: empty when they are the same."""
    import difflib  # plan only: a sync imports less

    lines = difflib.unified_diff(
        _masked(old_text), _masked(new_text), f"{name} (now)", f"{name} (after sync)"
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _masked(text: str) -> list[str]:
    return [
        _TOKEN_LINE.sub(lambda m: m[1] + m[2] + mask(m[3]) + m[4], scrub(line))
        for line in text.splitlines(keepends=True)
    ]
