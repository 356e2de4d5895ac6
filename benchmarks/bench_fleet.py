"""A thundering herd: M hosts sync at the same moment against one rate-limited GitLab.

Usage (from the checkout, with the development venv; nothing else is needed)::

    .venv/bin/python benchmarks/bench_fleet.py              # 50 hosts x 20 runners, ~1.5 min
    .venv/bin/python benchmarks/bench_fleet.py --restart    # then a fleet-wide reboot too
    .venv/bin/python benchmarks/bench_fleet.py --hosts 20 --rate 600 --latency 100
    .venv/bin/python benchmarks/bench_fleet.py --units --runners 2 --rate 120 --rate-key token
    .venv/bin/python benchmarks/bench_fleet.py --help

One fake GitLab (``register_runner.testing.fake_gitlab``, a real HTTP server on 127.0.0.1
served from a thread of this process) enforces a rate limit per client. Every simulated
host connects from 127.0.0.1, so the limit is keyed on the User-Agent, which carries the
host's system ID (``register-runner/VERSION (r_xxxxxxxxxxxx)``): each host gets its own
prefix under a temporary folder with its own pre-written ``.runner_system_id``, and all
hosts use the same admin access token.

All M syncs start together: each child is spawned first as a small gate process that
reports ready and waits on a pipe; once every one is ready the pipe is closed and they all
``exec`` ``python -m register_runner sync --prefix P --jobs J --deadline D --json`` at the
same instant, interpreter start-up included. The hosts run at a lower priority
(``--host-nice``, default 10) than this process, which serves the fake GitLab: a real
GitLab is another machine, and a fake starved of CPU by 50 busy hosts answers in seconds
instead of milliseconds, which would measure the simulation rather than the tool.

Phases:

1. deploy: every executor is new, so each host creates its R runners;
2. restart (only with ``--restart``): the same hosts sync again with nothing changed
   (R verifications each, no mutating call), as after a fleet-wide reboot. The rate
   windows are cleared first: a reboot comes long after the deploy.

Reported per phase: wall time until every host finished, 429 answers the server sent,
total requests, most requests in flight, the per-host sync time percentiles (p50, p95,
max), CPU use of the hosts, of the fake GitLab and of the whole machine (to tell a
CPU-bound run from a network-bound one), peak RSS, and whether every host exited 0 and
converged: each host's config has R runners whose tokens are valid GitLab runners
carrying that host's marker, and GitLab holds exactly M x R runners (no duplicate).

With ``--units`` the hosts are fresh hosts booting with the shipped systemd units, simulated
from the unit files themselves (contrib/systemd): at boot each runs the drop-in's
ExecStartPre command line (``--fresh-deadline`` and all, killed past its TimeoutStartSec),
then register-runner-retry.timer fires as systemd would fire it (OnBootSec, then
OnUnitInactiveSec after each run, each plus a fresh random share of RandomizedDelaySec)
and runs register-runner-retry.service's command line (``sync --retry-only``), until every
host has its config and nothing left to retry. The hourly register-runner.timer is left
out: nothing waits for it. Reported: the time until the last host had its first complete
config, the runs of each kind and how they ended, the 429s, and the convergence check
below (no duplicate). ``--rate-key token`` gives the fleet one shared budget.

The default budget, 15 requests a minute per host, is set below the 20 requests a deploy
needs so that the limit bites and some requests wait for GitLab's 60 s window; at
GitLab's usual 600 a minute (or the 30 a minute suggested for this benchmark) a deploy
of 20 runners would not see a single 429. All M hosts run on this one machine, which a
real fleet does not: with 50 Python processes on 2 CPUs the start-up is CPU-bound, and
the report says so when it is. The script exits 0 after the report, or 1 if a host
failed or the fleet did not converge.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import secrets
import select
import shlex
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import _harness as h

from register_runner.testing.fake_gitlab import FakeGitLab
from register_runner.testing.prefix import Prefix, make_prefix
from register_runner.testing.units import unit_settings

# Run by each child before the real command line: lower its priority by the second
# argument, say "ready" on the fd given as first argument, wait until stdin closes, then
# become ``python -m register_runner ARGS``. Python 3.9 syntax only.
GATE = (
    "import os, sys\n"
    "os.nice(int(sys.argv[2]))\n"
    "fd = int(sys.argv[1])\n"
    "os.write(fd, b'.')\n"
    "os.close(fd)\n"
    "os.read(0, 1)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'register_runner'] + sys.argv[3:])\n"
)
# What a sync loads, for the start-up of one process alone (without the herd).
IMPORT_SYNC = "import register_runner.cli, register_runner.commands.sync, register_runner.gitlab"
MARKER_ID = re.compile(r"system_id=([sr]_[0-9A-Za-z]{12})")
MARKER_EXECUTOR = re.compile(r"executor=(\S+)")


@dataclass
class Host:
    index: int
    prefix: Prefix
    system_id: str
    log: Path
    pid: int = 0
    returncode: Optional[int] = None
    seconds: float = 0.0  # from the common start to this host's exit
    tool_seconds: Optional[float] = None  # the tool's own --json "seconds"
    maxrss_kb: int = 0
    cpu: float = 0.0
    problems: list[str] = field(default_factory=list)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_fleet.py",
        description="M hosts sync at once against one rate-limited fake GitLab "
        "(see the module docstring for what is measured).",
    )
    parser.add_argument("--hosts", type=int, default=50, metavar="M", help="hosts (default 50)")
    parser.add_argument(
        "--runners", type=int, default=20, metavar="R", help="runners per host (default 20)"
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=15,
        metavar="PER_MINUTE",
        help="requests a minute per host (User-Agent) before 429; 0 for no limit "
        "(default 15, below the 20 a deploy needs, so that the limit bites)",
    )
    parser.add_argument(
        "--rate-key",
        choices=("user-agent", "token"),
        default="user-agent",
        help="what the budget is counted on: user-agent, one per host (default), or token, "
        "one budget for the whole fleet, which shares one access token (GitLab throttles "
        "per user); with token, --rate is the fleet's requests a minute",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=50.0,
        metavar="MS",
        help="fake GitLab latency per request, in milliseconds (default 50)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=16,
        metavar="J",
        help="--jobs of every host (default 16, the tool's)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        metavar="S",
        help="--deadline of every host: long enough to wait out the rate limit (default 120)",
    )
    parser.add_argument(
        "--restart",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="after the deploy, sync every host again with nothing changed, as after a "
        "fleet-wide reboot (adds about a minute when the limit bites; default: no)",
    )
    parser.add_argument(
        "--units",
        action="store_true",
        help="boot fresh hosts with the shipped units instead: the drop-in's pre-step, then "
        "register-runner-retry.timer until every host converged (see above)",
    )
    parser.add_argument(
        "--host-nice",
        type=int,
        default=10,
        metavar="N",
        help="niceness of the simulated hosts (default 10), so that the herd does not starve "
        "the fake GitLab, which stands for another machine, of CPU; 0 to share equally",
    )
    parser.add_argument(
        "--bytecode-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the hosts a bytecode cache in the temporary folder, as an installed "
        "package has (default: yes; see _harness.use_bytecode_cache)",
    )
    parser.add_argument(
        "--show-logs",
        action="store_true",
        help="print the stderr of every host that failed, not only its last lines",
    )
    args = parser.parse_args(argv)
    for name in ("hosts", "runners", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if not 0 <= args.host_nice <= 19:
        parser.error("--host-nice must be between 0 and 19")
    if args.rate < 0 or args.latency < 0 or args.deadline <= 0:
        parser.error("--rate and --latency must not be negative, --deadline must be positive")
    return args


BUDGET = {"user-agent": "per host (User-Agent)", "token": "for the fleet (one access token)"}


def row(metric: str, text: str) -> str:
    return f"{metric:<14}{text}"


def say(text: str) -> None:
    print(text, flush=True)


def unique_system_ids(count: int) -> list[str]:
    alphabet = string.ascii_letters + string.digits
    ids: set[str] = set()
    while len(ids) < count:
        ids.add("r_" + "".join(secrets.choice(alphabet) for _ in range(12)))
    return sorted(ids)


def warm_up(work: Path) -> None:
    """One unmeasured sync against a throwaway fake GitLab, so that the bytecode and page
    caches are warm and the herd does not also pay for compiling modules."""
    with FakeGitLab() as scratch:
        token = scratch.add_access_token(scopes=h.SCOPES, admin=True)
        prefix = make_prefix(
            work / "warm-up", scratch.url, token, executors={"shell": h.executor_toml(0)}
        )
        child = h.run_child(h.tool("sync", "--prefix", prefix.root, "--json"))
        if child.returncode != 0:
            say(row("warning", f"warm-up sync failed: {child.describe_failure()}"))


def build_hosts(args: argparse.Namespace, gitlab: FakeGitLab, token: str, work: Path) -> list:
    executors = {h.stem(i): h.executor_toml(i) for i in range(args.runners)}
    hosts = []
    (work / "logs").mkdir()
    for index, system_id in enumerate(unique_system_ids(args.hosts)):
        prefix = make_prefix(work / f"host{index:03d}", gitlab.url, token, executors=executors)
        # A system ID file without a fingerprint is adopted as is (the contract).
        (prefix.root / ".runner_system_id").write_text(system_id + "\n")
        hosts.append(Host(index, prefix, system_id, work / "logs" / f"host{index:03d}"))
    return hosts


@dataclass
class Usage:
    """CPU seconds of this process (the fake GitLab) and machine-wide load in a phase."""

    fake_cpu: float = 0.0
    machine_busy: Optional[float] = None  # fraction of all CPUs busy, any process

    @classmethod
    def measure(cls, before: tuple, after: tuple) -> Usage:
        (self0, machine0), (self1, machine1) = before, after
        return cls(self1 - self0, h.busy_fraction(machine0, machine1))


def usage_now() -> tuple:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime, h.machine_cpu()


def herd(args: argparse.Namespace, hosts: list[Host], phase: str) -> tuple[float, Usage]:
    """Start every host's sync at the same instant; wait for all. Returns the wall time."""
    ready_r, ready_w = os.pipe()
    gate_r, gate_w = os.pipe()
    procs: dict[int, tuple[Host, subprocess.Popen]] = {}
    env = h.child_env()
    try:
        for host in hosts:
            argv = [
                sys.executable,
                "-c",
                GATE,
                str(ready_w),
                str(args.host_nice),
                *("sync", "--prefix", str(host.prefix.root), "--jobs", str(args.jobs)),
                *("--deadline", str(args.deadline), "--json"),
            ]
            with (
                open(f"{host.log}.{phase}.out", "wb") as out,
                open(f"{host.log}.{phase}.err", "wb") as err,
            ):
                proc = subprocess.Popen(
                    argv, stdin=gate_r, stdout=out, stderr=err, env=env, pass_fds=(ready_w,)
                )
            host.pid = proc.pid
            host.returncode = None
            procs[proc.pid] = (host, proc)
    finally:
        os.close(ready_w)
        os.close(gate_r)
    waiting = len(procs)
    limit = time.monotonic() + 120
    while waiting and time.monotonic() < limit:
        readable, _, _ = select.select([ready_r], [], [], 1.0)
        if readable:
            got = os.read(ready_r, waiting)
            if not got:
                break
            waiting -= len(got)
    os.close(ready_r)
    if waiting:
        say(row("warning", f"{waiting} hosts never reported ready; starting anyway"))

    before = usage_now()
    start = time.perf_counter()
    os.close(gate_w)  # every gate reads EOF: the herd starts

    def kill_all() -> None:
        for host, proc in procs.values():
            if host.returncode is None:
                proc.send_signal(signal.SIGKILL)

    watchdog = threading.Timer(args.deadline + 120, kill_all)
    watchdog.start()
    try:
        remaining = len(procs)
        while remaining:
            pid, status, usage = os.wait4(-1, 0)
            if pid not in procs:
                continue
            host, proc = procs[pid]
            host.seconds = time.perf_counter() - start
            host.returncode = proc.returncode = h.exit_code(status)
            host.maxrss_kb = h.rss_kb(usage)
            host.cpu = usage.ru_utime + usage.ru_stime
            remaining -= 1
    finally:
        watchdog.cancel()
    wall = time.perf_counter() - start
    usage = Usage.measure(before, usage_now())

    for host in hosts:
        out = Path(f"{host.log}.{phase}.out").read_text(errors="replace")
        child = h.Child([], host.returncode or 0, host.seconds, host.maxrss_kb, out, "")
        said = child.summary().get("seconds")
        host.tool_seconds = float(said) if isinstance(said, (int, float)) else None
    return wall, usage


def check_fleet(args: argparse.Namespace, gitlab: FakeGitLab, hosts: list[Host]) -> list[str]:
    """Every host converged, with its own runners, and GitLab holds no duplicate."""
    problems = []
    runners = gitlab.runners()
    by_token = {r.token: r for r in runners if r.token_valid}
    owners: Counter = Counter()
    for r in runners:
        sid = MARKER_ID.search(r.maintenance_note or "")
        executor = MARKER_EXECUTOR.search(r.maintenance_note or "")
        owners[(sid.group(1) if sid else None, executor.group(1) if executor else None)] += 1
    duplicates = sum(count - 1 for count in owners.values() if count > 1)
    expected = args.hosts * args.runners
    if len(runners) != expected:
        problems.append(f"GitLab holds {len(runners)} runners, expected {expected}")
    if duplicates:
        problems.append(f"{duplicates} duplicate runners (same host and executor) in GitLab")
    for host in hosts:
        host.problems = []
        if host.returncode != 0:
            host.problems.append(f"exit {host.returncode}")
        try:
            entries = host.prefix.runners()
        except Exception as error:  # a missing or broken config is a finding, not a crash
            host.problems.append(f"config unreadable: {error}")
            entries = []
        if len(entries) != args.runners:
            host.problems.append(f"config has {len(entries)} runners, expected {args.runners}")
        for entry in entries:
            r = by_token.get(entry.get("token"))
            if r is None:
                host.problems.append(f"{entry.get('name')}: token unknown to GitLab")
            elif f"system_id={host.system_id}" not in (r.maintenance_note or ""):
                host.problems.append(f"{entry.get('name')}: runner {r.id} is another host's")
            elif entry.get("id") != r.id:
                host.problems.append(f"{entry.get('name')}: id {entry.get('id')} != {r.id}")
        if host.problems:
            problems.append(f"host{host.index:03d} ({host.system_id}): {'; '.join(host.problems)}")
    return problems


def per_agent(gitlab: FakeGitLab) -> tuple[Counter, Counter]:
    """Requests and 429s per User-Agent."""
    total: Counter = Counter()
    limited: Counter = Counter()
    for q in gitlab.requests:
        agent = q.headers.get("User-Agent", "")
        total[agent] += 1
        if q.status == 429:
            limited[agent] += 1
    return total, limited


def report_phase(
    args: argparse.Namespace,
    gitlab: FakeGitLab,
    hosts: list[Host],
    phase: str,
    wall: float,
    usage: Usage,
    alone: float,
    expect: dict[str, Any],
) -> list[str]:
    stats = gitlab.stats
    total, limited = per_agent(gitlab)
    # Calls that changed something: a 429 changed nothing.
    mutating = sum(1 for q in gitlab.mutating_requests() if q.status < 400)
    ok = sum(1 for host in hosts if host.returncode == 0)
    times = [host.seconds for host in hosts]
    inside = [host.tool_seconds for host in hosts if host.tool_seconds is not None]
    cpu = sum(host.cpu for host in hosts)
    cores = os.cpu_count() or 1
    m = len(hosts)
    say(row(phase, f"wall time until every host finished   {wall:7.2f} s"))
    say(
        row(
            phase,
            f"per-host sync time (wall)             p50 {h.percentile(times, 50):6.2f} s  "
            f"p95 {h.percentile(times, 95):6.2f} s  max {max(times):6.2f} s",
        )
    )
    starts = [x.seconds - x.tool_seconds for x in hosts if x.tool_seconds is not None]
    if starts:
        say(
            row(
                phase,
                f"per-host start-up (wall - inside)     p50 {h.percentile(starts, 50):6.2f} s  "
                f"p95 {h.percentile(starts, 95):6.2f} s  max {max(starts):6.2f} s  "
                f"(interpreter, imports, exit; one process alone: {alone:.2f} s)",
            )
        )
    if inside:
        say(
            row(
                phase,
                f"per-host time inside the tool         p50 {h.percentile(inside, 50):6.2f} s  "
                f"p95 {h.percentile(inside, 95):6.2f} s  max {max(inside):6.2f} s  "
                "(--json seconds: after start-up and imports)",
            )
        )
    say(
        row(
            phase,
            f"requests                              {stats.get('requests', 0):7d}  "
            f"({stats.get('201', 0)} created, {stats.get('200', 0)} ok, "
            f"{mutating} mutating answered; {expect['requests']} expected without 429s; "
            f"most from one host: {max(total.values()) if total else 0})",
        )
    )
    say(
        row(
            phase,
            f"429 answers                           {stats.get('429', 0):7d}  "
            f"(to {len(limited)} of {m} hosts; most to one host: "
            f"{max(limited.values()) if limited else 0})",
        )
    )
    say(
        row(
            phase,
            f"most requests in flight               {stats.get('max_in_flight', 0):7d}  "
            f"(of {m * args.jobs} possible: {m} hosts x jobs={args.jobs}; "
            f"{stats.get('connections', 0)} connections)",
        )
    )
    say(
        row(
            phase,
            f"CPU of the hosts                      {cpu:7.1f} s  "
            f"({cpu / m:.2f} s per host; {cpu / (wall * cores):.0%} of {cores} CPUs "
            "over the wall time)",
        )
    )
    say(
        row(
            phase,
            f"CPU of the fake GitLab                {usage.fake_cpu:7.1f} s  "
            f"({usage.fake_cpu / (wall * cores):.0%} of {cores} CPUs)",
        )
    )
    others = 0.0
    if usage.machine_busy is not None:
        others = max(0.0, usage.machine_busy * wall * cores - cpu - usage.fake_cpu)
        say(
            row(
                phase,
                f"CPU of other processes                {others:7.1f} s  "
                f"(the machine's {cores} CPUs were {usage.machine_busy:.0%} busy in all)",
            )
        )
    cpu_floor = (cpu + usage.fake_cpu) / cores
    say(
        row(
            phase,
            f"CPU floor                             {cpu_floor:7.1f} s  "
            f"(all of this CPU work spread over {cores} CPUs: no herd on this machine "
            "finishes sooner)",
        )
    )
    if starts and h.percentile(starts, 50) > 5 * alone:
        say(
            row(
                phase,
                f"CPU-bound: {m} Python processes starting at once are too heavy for {cores} "
                "CPUs; per-host times measure this simulation's CPU contention, not GitLab",
            )
        )
    if others > 0.25 * wall * cores:
        say(
            row(
                phase,
                f"noisy: other processes took {others / (wall * cores):.0%} of the CPUs "
                "during this phase; the times are inflated by them",
            )
        )
    say(
        row(
            phase,
            f"peak RSS per host                     max {h.mib(max(x.maxrss_kb for x in hosts))}"
            f"  (sum over hosts {h.mib(sum(x.maxrss_kb for x in hosts))})",
        )
    )
    say(row(phase, f"hosts that exited 0                   {ok:7d} of {m}"))
    problems = check_fleet(args, gitlab, hosts)
    if expect.get("mutating") is not None and mutating != expect["mutating"]:
        problems.append(f"{mutating} mutating requests, expected {expect['mutating']}")
    if problems:
        say(row(phase, f"NOT CONVERGED: {len(problems)} problem(s)"))
        for problem in problems[:20]:
            say(row("", problem))
        if len(problems) > 20:
            say(row("", f"... and {len(problems) - 20} more"))
        for host in hosts:
            if host.returncode != 0:
                err = Path(f"{host.log}.{phase}.err").read_text(errors="replace").splitlines()
                lines = err if args.show_logs else err[-3:]
                for line in lines:
                    say(row("", f"host{host.index:03d}: {line}"))
                if not args.show_logs:
                    break
    else:
        runners = len(gitlab.runners())
        say(
            row(
                phase,
                f"converged: every host has its {args.runners} runners with valid tokens; "
                f"GitLab holds {runners} = {m} x {args.runners}, no duplicate",
            )
        )
    return problems


UNITS = h.ROOT / "contrib" / "systemd"
TOOL = "/usr/local/bin/register-runner"
UNITS_CAP = 40 * 60.0  # seconds: a fleet not converged by then has failed


def span(value: str) -> float:
    """A systemd time span such as 180, 4min, 2min 30s, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"(\d+)\s*([a-z]*)", value)))


@dataclass
class Units:
    """What the shipped units run and when, read from contrib/systemd."""

    pre_step: list[str]  # the drop-in's ExecStartPre, "-" stripped
    start_timeout: float
    retry: list[str]  # register-runner-retry.service's ExecStart
    retry_timeout: float
    first: float  # register-runner-retry.timer's OnBootSec
    again: float  # its OnUnitInactiveSec
    jitter: float  # its RandomizedDelaySec

    @classmethod
    def shipped(cls) -> Units:
        drop_in = unit_settings(
            (UNITS / "gitlab-runner.service.d" / "register-runner.conf").read_text()
        )
        service = unit_settings((UNITS / "register-runner-retry.service").read_text())
        timer = unit_settings((UNITS / "register-runner-retry.timer").read_text())
        (pre,) = drop_in[("Service", "ExecStartPre")]
        (retry,) = service[("Service", "ExecStart")]
        return cls(
            shlex.split(pre.lstrip("-")),
            span(drop_in[("Service", "TimeoutStartSec")][-1]),
            shlex.split(retry),
            span(service[("Service", "TimeoutStartSec")][-1]),
            span(timer[("Timer", "OnBootSec")][-1]),
            span(timer[("Timer", "OnUnitInactiveSec")][-1]),
            span(timer[("Timer", "RandomizedDelaySec")][-1]),
        )


@dataclass
class Booted:
    """One fresh host's runs under the units."""

    host: Host
    runs: list[tuple[str, float, float, int, bool]] = field(default_factory=list)
    first_config: Optional[float] = None  # seconds from boot to its first complete config


def host_argv(words: list[str], host: Host, args: argparse.Namespace) -> list[str]:
    """A unit's command line for this host: the tool from this checkout, its prefix, its
    metrics file (what ${REGISTER_RUNNER_METRICS} names)."""
    replaced = {
        TOOL: [sys.executable, "-m", "register_runner"],
        "/etc/gitlab-runner": [str(host.prefix.root)],
    }
    argv = ["nice", "-n", str(args.host_nice)]
    for word in words:
        word = word.replace("${REGISTER_RUNNER_METRICS}", f"{host.log}.prom")
        argv += replaced.get(word, [word])
    return argv


def boot_host(
    booted: Booted, units: Units, args: argparse.Namespace, boot: float, stop: threading.Event
) -> None:
    """The drop-in's pre-step at boot, then each firing of the retry timer."""
    from register_runner import health

    host = booted.host
    record = host.prefix.root / ".register-runner" / "main.last-run.json"
    env = h.child_env()

    def run(kind: str, words: list[str], timeout: float) -> None:
        before = record.stat().st_mtime_ns if record.exists() else None
        started = time.monotonic()
        with open(f"{host.log}.units.err", "ab") as err:
            proc = subprocess.Popen(
                host_argv(words, host, args), stdout=subprocess.DEVNULL, stderr=err, env=env
            )
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:  # systemd's start timeout: SIGTERM
                proc.terminate()
                code = proc.wait()
        ended = time.monotonic()
        synced = (record.stat().st_mtime_ns if record.exists() else None) != before
        booted.runs.append((kind, started - boot, ended - boot, code, synced))
        host.returncode = code if synced else host.returncode
        if booted.first_config is None and len(host.prefix.runners()) == args.runners:
            booted.first_config = ended - boot

    run("pre-step", units.pre_step, units.start_timeout)
    moment = boot + units.first + random.uniform(0, units.jitter)
    while not stop.is_set():
        done = booted.first_config is not None and not health.needs_retry(
            health.read_last_run(host.prefix.root, "main")
        )
        if done or stop.wait(max(0.0, moment - time.monotonic())):
            return
        run("retry", units.retry, units.retry_timeout)
        moment = time.monotonic() + units.again + random.uniform(0, units.jitter)


def boot_fleet(args: argparse.Namespace, gitlab: FakeGitLab, hosts: list[Host]) -> bool:
    """Every host boots at once with the shipped units; report how the fleet converged."""
    units = Units.shipped()
    say(
        row(
            "units",
            f"pre-step: {' '.join(units.pre_step[1:])} (TimeoutStartSec {units.start_timeout:g})",
        )
    )
    say(
        row(
            "units",
            f"retry timer: first after {units.first:g} s, then {units.again:g} s after each "
            f"run, each + random 0-{units.jitter:g} s: {' '.join(units.retry[1:])}",
        )
    )
    fleet = [Booted(host) for host in hosts]
    stop = threading.Event()
    boot = time.monotonic()
    threads = [
        threading.Thread(target=boot_host, args=(b, units, args, boot, stop), daemon=True)
        for b in fleet
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, boot + UNITS_CAP - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - boot

    stats = gitlab.stats
    firsts = [b.first_config for b in fleet if b.first_config is not None]
    outcomes: Counter = Counter()
    for b in fleet:
        for kind, _, _, code, synced in b.runs:
            outcomes[(kind, code if synced else "nothing to do")] += 1
    say(row("units", f"hosts with a complete config          {len(firsts):7d} of {len(fleet)}"))
    if firsts:
        say(
            row(
                "units",
                f"time to a host's first config         p50 {h.percentile(firsts, 50):6.1f} s  "
                f"p95 {h.percentile(firsts, 95):6.1f} s  last {max(firsts):6.1f} s  "
                "(from boot)",
            )
        )
    for (kind, code), count in sorted(outcomes.items(), key=str):
        ended = f"exit {code}" if isinstance(code, int) else code
        say(row("units", f"{f'{kind} runs, {ended}':<38}{count:7d}"))
    say(
        row(
            "units",
            f"requests {stats.get('requests', 0)}, 429 answers {stats.get('429', 0)}, "
            f"simulation wall time {wall:.1f} s",
        )
    )
    problems = check_fleet(args, gitlab, hosts)
    if len(firsts) < len(fleet):
        problems.append(f"{len(fleet) - len(firsts)} hosts never got a complete config")
    for problem in problems[:20]:
        say(row("units", f"NOT CONVERGED: {problem}"))
    if not problems:
        say(
            row(
                "units",
                f"converged without a person: GitLab holds {len(gitlab.runners())} = "
                f"{len(fleet)} x {args.runners} runners, no duplicate",
            )
        )
    return bool(problems)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    cpu_before, machine_before = h.own_cpu(), h.machine_cpu()
    m, r = args.hosts, args.runners
    cores = os.cpu_count() or 1
    say(
        f"register-runner fleet benchmark: {m} hosts x {r} runners, latency "
        f"{args.latency:g} ms, rate limit "
        f"{f'{args.rate} requests/min {BUDGET[args.rate_key]}' if args.rate else 'off'}, "
        f"jobs={args.jobs}, deadline {args.deadline:g} s"
    )
    say(row("machine", h.machine_line()))
    if m > 8 * cores:
        say(
            row(
                "note",
                f"{m} Python processes start at once on {cores} CPUs: start-up and imports "
                "are CPU-bound, so per-host times include waiting for a CPU",
            )
        )
    if args.rate and args.rate_key == "token":
        say(
            row(
                "note",
                f"the fleet needs {m * r} requests against one budget of {args.rate}/min: "
                "watch the 429s (the tool slows down once RateLimit-Remaining runs low)",
            )
        )
    elif args.rate:
        if r > args.rate:
            say(
                row(
                    "note",
                    f"a deploy needs {r} requests per host, {r - args.rate} more than the "
                    f"{args.rate}/min budget: those wait for GitLab's 60 s window (Retry-After)",
                )
            )
        else:
            say(row("note", f"{r} requests per host fit the {args.rate}/min budget: no 429"))

    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        if args.bytecode_cache:
            say(row("bytecode", h.use_bytecode_cache(work / "pycache")))
        gitlab = FakeGitLab()
        gitlab.latency = args.latency / 1000
        if args.rate:
            gitlab.rate_limit(per_minute=args.rate, key=args.rate_key)
        gitlab.start()
        try:
            token = gitlab.add_access_token(scopes=h.SCOPES, admin=True)
            hosts = build_hosts(args, gitlab, token, work)
            warm_up(work)
            imports = [sys.executable, "-c", IMPORT_SYNC]
            alone = h.median([h.run_child(imports).seconds for _ in range(4)][1:])

            gitlab.reset_stats()
            gitlab.clear_requests()
            if args.units:
                failed = boot_fleet(args, gitlab, hosts)
            else:
                wall, usage = herd(args, hosts, "deploy")
                expect: dict[str, Any] = {"requests": m * r}
                failed |= bool(
                    report_phase(args, gitlab, hosts, "deploy", wall, usage, alone, expect)
                )
            if args.restart and not args.units:
                if args.rate:
                    gitlab.rate_limit(per_minute=args.rate, key=args.rate_key)  # new windows
                gitlab.reset_stats()
                gitlab.clear_requests()
                wall, usage = herd(args, hosts, "restart")
                expect = {"requests": m * r, "mutating": 0}
                failed |= bool(
                    report_phase(args, gitlab, hosts, "restart", wall, usage, alone, expect)
                )
        finally:
            gitlab.stop()

    wall = time.perf_counter() - began
    say(row("total", f"benchmark wall time {wall:.1f} s"))
    load = h.other_load_line(cpu_before, machine_before, wall)
    if load:
        say(row("machine", load))
    say(row("result", "FAILED: see above" if failed else "every host exited 0 and converged"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
