"""``register-runner status``: what the last run did, from its record under the prefix; no
API call and no lock, so it answers at once even while a sync runs or GitLab is down.
Exits with whether the host's runners can take jobs (health.status_of): 0 yes, 1 a person
must act, 3 not known (3 too when no run is recorded)."""

from __future__ import annotations

import argparse
import json
import sys

from .. import api, health


def run(args: argparse.Namespace) -> int:
    result = api.status(args.prefix, args.instance)
    if args.json:
        json.dump(result.run.status_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(describe(result.run))
    return result.exit_status


def describe(last: health.Run) -> str:
    """A short table: the run, then one line per runner, then the warnings."""
    lines = [
        f"last run {health.iso(last.time)}: exit status {last.exit_status}; "
        + ("healthy" if health.healthy(last) else "NOT healthy")
    ]
    rows = [("RUNNER", "ID", "VERDICT", "TOKEN EXPIRES")] + [
        (
            r["runner"],
            "-" if r.get("id") is None else str(r["id"]),
            r["verdict"],
            r.get("token_expires_at") or "never",
        )
        for r in last.runners
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    for url, expires in sorted(last.access_tokens.items()):
        if url in last.rejected_access_tokens:
            lines.append(f"access token for {url}: REJECTED (401); replace it")
        else:
            lines.append(f"access token for {url}: expires {expires or 'never (or unknown)'}")
    lines += [f"warning: {w}" for w in last.warnings]
    return "\n".join(lines)
