"""Shared helpers for the benchmark scripts (not a benchmark itself).

Every measured run of the tool is the real command line in a child process. The child is
reaped with ``os.wait4``, which returns the resource usage of that one child, so its peak
RSS (``ru_maxrss``) is exact per run and needs no wrapper process (``getrusage
(RUSAGE_CHILDREN)`` would be a maximum over every child reaped so far).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
# The scopes the README recommends for an admin's token that creates instance runners.
SCOPES = ("create_runner", "manage_runner", "read_api")


@dataclass
class Child:
    """One finished child process."""

    argv: list[str]
    returncode: int
    seconds: float  # wall clock, from spawn to reaped
    maxrss_kb: int  # peak resident set size of this child alone
    stdout: str
    stderr: str

    def summary(self) -> dict[str, Any]:
        """The ``--json`` summary the tool printed (empty if there is none)."""
        try:
            data = json.loads(self.stdout)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def describe_failure(self) -> str:
        tail = " | ".join(self.stderr.strip().splitlines()[-3:])
        return f"exit {self.returncode}: {' '.join(self.argv[-6:])}: {tail}"


# Set by use_bytecode_cache(): where the children keep their compiled bytecode.
_PYCACHE: Optional[Path] = None


def use_bytecode_cache(folder: Path) -> str:
    """Let every child cache compiled bytecode under ``folder`` (PYTHONPYCACHEPREFIX), as
    an installed package has its .pyc files. Without it, an editable install under
    PYTHONDONTWRITEBYTECODE=1 (as in some CI and sandbox images) recompiles the tool's
    own modules on every start. Returns a line that says what was done."""
    global _PYCACHE
    _PYCACHE = folder
    was = os.environ.get("PYTHONDONTWRITEBYTECODE")
    why = " (PYTHONDONTWRITEBYTECODE=1 is set here and is cleared for them)" if was else ""
    return (
        f"children cache their bytecode in a temporary PYTHONPYCACHEPREFIX{why}, as an "
        "installed package would; --no-bytecode-cache runs them with this environment as is"
    )


def child_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment of a measured child: ours, minus systemd's journal marker."""
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if _PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)
    env.update(extra or {})
    return env


def rss_kb(usage: Any) -> int:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    return usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_child(
    argv: Sequence[str], env: Optional[Mapping[str, str]] = None, timeout: float = 600
) -> Child:
    """Run ``argv`` to completion; wall time and the child's own peak RSS."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=child_env(env)
        )
        # A blocking wait4 releases the GIL, so the in-process fake GitLab is not slowed
        # down by polling; the timer kills a child that hangs.
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = exit_code(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Child(
            argv,
            proc.returncode,
            seconds,
            rss_kb(usage),
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


def tool(*args: Any) -> list[str]:
    """``python -m register_runner ARGS`` with this interpreter (the installed package)."""
    return [sys.executable, "-m", "register_runner", *(str(a) for a in args)]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p100 is the maximum)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f} MiB"


def machine_line() -> str:
    """Where the figures come from: they mean little without it."""
    cpus = os.cpu_count() or 0
    try:
        load = f"load {os.getloadavg()[0]:.2f}"
    except OSError:
        load = "load ?"
    return (
        f"python {platform.python_version()} ({sys.executable}), {platform.system()} "
        f"{platform.machine()}, {cpus} CPUs, {load}"
    )


def machine_cpu() -> Optional[tuple[float, float]]:
    """(busy, total) jiffies of the whole machine from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [float(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_fraction(
    before: Optional[tuple[float, float]], after: Optional[tuple[float, float]]
) -> Optional[float]:
    """Share of all CPUs busy between two machine_cpu() readings (any process)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def own_cpu() -> float:
    """CPU seconds of this process and of every child it has reaped."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def other_load_line(cpu_before: float, machine_before: Optional[tuple], wall: float) -> str:
    """How much of the machine other processes used since the readings, as a report line
    (empty off Linux): shared CI machines inflate every figure."""
    busy = busy_fraction(machine_before, machine_cpu())
    if busy is None or wall <= 0:
        return ""
    cores = os.cpu_count() or 1
    others = max(0.0, busy * wall * cores - (own_cpu() - cpu_before)) / (wall * cores)
    verdict = "; every figure above is inflated by them" if others > 0.25 else ""
    return f"other processes used {others:.0%} of the {cores} CPUs during the run{verdict}"


def executor_toml(index: int, extra_tag: Optional[str] = None) -> str:
    """One flat executor file: a shell runner with tags (a registration attribute)."""
    tags = ["linux", "bench", f"n{index}"]
    if extra_tag:
        tags.append(extra_tag)
    quoted = ", ".join(f'"{t}"' for t in tags)
    return (
        'executor = "shell"\n'
        f"tags = [{quoted}]\n"
        'builds_dir = "/var/lib/gitlab-runner/builds"\n'
        "[custom_build_dir]\n"
        "  enabled = true\n"
    )


def stem(index: int) -> str:
    return f"exec{index:04d}"
