"""The systemd units in contrib/systemd: systemd accepts them, and they keep the promises
the manual (docs/installing.md) and the contract make.

Every shipped unit goes through `systemd-analyze verify` (Debian's systemd package) in a
temporary copy whose executables point at stubs, since verify insists that they exist.
The drop-in is verified on top of the stock gitlab-runner.service, as
`gitlab-runner install` writes it. The promises are checked on the units as systemd
merges them: a pre-step whose failure never holds the runner back, the stock unit's
EnvironmentFile and --service kept, a start timeout that outlasts the tool's own waits,
a timer with jitter, a path unit that starts the sync.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from register_runner import cli
from register_runner.testing.units import unit_settings

SYSTEMD = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
DROP_IN = SYSTEMD / "gitlab-runner.service.d" / "register-runner.conf"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd; "
    ".ci/run installs it when it runs as root)",
)

# /etc/systemd/system/gitlab-runner.service as gitlab-runner's packages write it
# (`gitlab-runner install`, kardianos/service's systemd template).
STOCK_UNIT = """\
[Unit]
Description=GitLab Runner
ConditionFileIsExecutable=/usr/bin/gitlab-runner

After=network.target

[Service]
StartLimitInterval=5
StartLimitBurst=10
ExecStart=/usr/bin/gitlab-runner "run" "--config" "/etc/gitlab-runner/config.toml" \
"--working-directory" "/home/gitlab-runner" "--service" "gitlab-runner" "--user" "gitlab-runner"

Restart=always

RestartSec=120
EnvironmentFile=-/etc/sysconfig/gitlab-runner

[Install]
WantedBy=multi-user.target
"""

# The programs the units run, which verify wants to find executable.
EXECUTABLES = ("/usr/local/bin/register-runner", "/usr/bin/gitlab-runner")
UNIT_SUFFIXES = (".service", ".timer", ".path")


def shipped_units() -> list[Path]:
    return sorted(p for p in SYSTEMD.iterdir() if p.suffix in UNIT_SUFFIXES)


def instance_name(unit: Path) -> str:
    """The name to load a unit by: a template as its `main` instance."""
    return unit.name.replace("@.", "@main.")


def merged(*texts: str) -> dict[tuple[str, str], list[str]]:
    return unit_settings("\n".join(texts))


def seconds(value: str) -> float:
    """A systemd time span such as 120, 90s, 2min, 1min 30s."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    spans = re.findall(r"(\d+)\s*([a-z]*)", value)
    assert spans, value
    return sum(int(number) * units[unit] for number, unit in spans)


def command(value: str) -> tuple[str, list[str]]:
    """An Exec*= value as (systemd's prefix characters, argv)."""
    prefix = re.match(r"[-@:+!]*", value).group()
    return prefix, shlex.split(value[len(prefix) :])


def register_runner_args(argv: list[str]):
    """The unit's register-runner command line as the real CLI parses it."""
    arguments = argv[1:]
    if arguments[0] not in cli.COMMANDS:  # as cli.main: no command word means sync
        arguments = ["sync", *arguments]
    return cli.build_parser().parse_args(arguments)


def copy_with_stubs(files: dict[str, str], where: Path) -> Path:
    """Write unit files into where/units with every executable pointing at a stub."""
    units = where / "units"
    for executable in EXECUTABLES:
        stub = where / "stubs" / executable.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    for name, text in files.items():
        for executable in EXECUTABLES:
            text = text.replace(executable, str(where / "stubs" / executable.lstrip("/")))
        (units / name).parent.mkdir(parents=True, exist_ok=True)
        (units / name).write_text(text)
    return units


def verify(units: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(units / name)],
        capture_output=True,
        text=True,
        timeout=60,
        # Plain text: no pager, no colour codes in the lines we look at.
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )


def complaints(result: subprocess.CompletedProcess, units: Path, names) -> list[str]:
    """Lines of verify's output about our files (the host's own units may have issues
    of their own when verify loads them as dependencies)."""
    ours = [str(units), *(n.split(".")[0] for n in names)]
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if any(word in line for word in ours)]


@needs_analyze
@pytest.mark.parametrize("unit", shipped_units(), ids=lambda p: p.name)
def test_each_shipped_unit_verifies_clean(unit, tmp_path):
    files = {p.name: p.read_text() for p in shipped_units()}
    units = copy_with_stubs(files, tmp_path)
    result = verify(units, instance_name(unit))
    assert complaints(result, units, files) == [], result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


@needs_analyze
def test_drop_in_verifies_clean_on_the_stock_unit(tmp_path):
    units = copy_with_stubs(
        {
            "gitlab-runner.service": STOCK_UNIT,
            "gitlab-runner.service.d/register-runner.conf": DROP_IN.read_text(),
        },
        tmp_path,
    )
    result = verify(units, "gitlab-runner.service")
    assert complaints(result, units, ["gitlab-runner.service"]) == [], result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


@needs_analyze
def test_verify_reads_the_drop_in(tmp_path):
    # Without the empty "ExecStart=" the drop-in adds a second command, which systemd
    # refuses: proof that verify applied the drop-in, and that the reset is needed.
    text = "\n".join(line for line in DROP_IN.read_text().splitlines() if line != "ExecStart=")
    units = copy_with_stubs(
        {
            "gitlab-runner.service": STOCK_UNIT,
            "gitlab-runner.service.d/register-runner.conf": text,
        },
        tmp_path,
    )
    result = verify(units, "gitlab-runner.service")
    assert result.returncode != 0
    assert "more than one ExecStart=" in result.stderr


def runner_units() -> dict[str, dict[tuple[str, str], list[str]]]:
    """Every way of running gitlab-runner that we ship, as systemd would see it."""
    return {
        "drop-in": merged(STOCK_UNIT, DROP_IN.read_text()),
        "gitlab-runner.service": unit_settings((SYSTEMD / "gitlab-runner.service").read_text()),
        "gitlab-runner@.service": unit_settings((SYSTEMD / "gitlab-runner@.service").read_text()),
    }


@pytest.mark.parametrize("name", sorted(runner_units()))
def test_runner_starts_whatever_the_pre_step_says(name):
    unit = runner_units()[name]
    pre_steps = [command(v) for v in unit[("Service", "ExecStartPre")]]
    assert [argv[0] for _, argv in pre_steps] == ["/usr/local/bin/register-runner"]
    assert all("-" in prefix for prefix, _ in pre_steps)


@pytest.mark.parametrize("name", sorted(runner_units()))
def test_runner_keeps_the_stock_environment_file_and_service_name(name):
    unit = runner_units()[name]
    assert "-/etc/sysconfig/gitlab-runner" in unit[("Service", "EnvironmentFile")]
    (start,) = unit[("Service", "ExecStart")]
    _, argv = command(start)
    assert argv[0] == "/usr/bin/gitlab-runner"
    assert argv[argv.index("--service") + 1].startswith("gitlab-runner")
    assert argv[argv.index("--user") + 1] == "gitlab-runner"
    assert argv[argv.index("--working-directory") + 1] == "/home/gitlab-runner"


@pytest.mark.parametrize("name", sorted(runner_units()))
def test_runner_reads_the_config_register_runner_writes(name):
    unit = runner_units()[name]
    (start,) = unit[("Service", "ExecStart")]
    _, argv = command(start)
    (pre,) = unit[("Service", "ExecStartPre")]
    args = register_runner_args(command(pre)[1])
    config = Path(argv[argv.index("--config") + 1])
    assert config == args.prefix / f"config.{args.instance}.toml"


def longest_deadline(args) -> float:
    return max(args.deadline, args.fresh_deadline or 0)


@pytest.mark.parametrize("name", sorted(runner_units()))
def test_start_timeout_outlasts_the_lock_wait_and_the_deadline(name):
    # A start that times out fails even with "-" before the pre-step.
    unit = runner_units()[name]
    (pre,) = unit[("Service", "ExecStartPre")]
    args = register_runner_args(command(pre)[1])
    timeout = seconds(unit[("Service", "TimeoutStartSec")][-1])
    assert timeout > args.lock_timeout + longest_deadline(args)


def test_template_runs_its_own_instance():
    unit = runner_units()["gitlab-runner@.service"]
    (pre,) = unit[("Service", "ExecStartPre")]
    assert register_runner_args(command(pre)[1]).instance == "%i"


def test_credentials_are_optional():
    # A LoadCredential= whose file is missing keeps the service from starting, and
    # systemd < 247 (RHEL 8) does not know the setting: it ships commented out, ready.
    services = [p for p in shipped_units() if p.suffix == ".service"] + [DROP_IN]
    for path in services:
        assert ("Service", "LoadCredential") not in unit_settings(path.read_text()), path.name
        assert "#LoadCredential=gitlab-pat:" in path.read_text(), path.name


def sync_units() -> dict[str, dict[tuple[str, str], list[str]]]:
    return {
        p.name: unit_settings(p.read_text()) for p in shipped_units() if "register-runner" in p.name
    }


@pytest.mark.parametrize("name", ["register-runner.service", "register-runner@.service"])
def test_sync_service_runs_sync_on_the_prefix(name):
    unit = sync_units()[name]
    assert unit[("Service", "Type")] == ["oneshot"]
    (start,) = unit[("Service", "ExecStart")]
    prefix, argv = command(start)
    assert prefix == ""  # a failed sync must show as a failed unit
    args = register_runner_args(argv)
    assert (args.command, args.prefix) == ("sync", Path("/etc/gitlab-runner"))
    assert args.instance == ("%i" if "@" in name else "main")
    timeout = seconds(unit[("Service", "TimeoutStartSec")][-1])
    assert timeout > args.lock_timeout + longest_deadline(args)


@pytest.mark.parametrize("name", ["register-runner.timer", "register-runner@.timer"])
def test_timer_has_jitter_and_catches_up(name):
    timer = sync_units()[name]
    assert seconds(timer[("Timer", "RandomizedDelaySec")][-1]) >= 60
    assert timer[("Timer", "OnCalendar")]  # Persistent= applies to OnCalendar= only
    assert timer[("Timer", "Persistent")] == ["true"]
    assert timer[("Install", "WantedBy")] == ["timers.target"]
    target = timer.get(("Timer", "Unit"), [name.replace(".timer", ".service")])[-1]
    assert target.replace("%i", "") in sync_units()


@pytest.mark.parametrize(
    "name, folder",
    [
        ("register-runner.path", "/etc/gitlab-runner/main/"),
        ("register-runner@.path", "/etc/gitlab-runner/%i/"),
    ],
)
def test_path_unit_starts_the_sync_on_executor_changes(name, folder):
    path = sync_units()[name]
    assert path[("Path", "PathChanged")] == [folder]
    expected = name.replace(".path", ".service").replace("@.", "@%i.")
    assert path[("Path", "Unit")] == [expected]
    assert expected.replace("%i", "") in sync_units()


def register_runner_commands() -> dict[str, tuple[dict, object]]:
    """Every register-runner command line the shipped units run, by unit, with the unit
    as systemd sees it (the drop-in merged into the stock unit)."""
    units = {**runner_units(), **sync_units()}
    found = {}
    for name, unit in units.items():
        for key in (("Service", "ExecStartPre"), ("Service", "ExecStart")):
            for value in unit.get(key, []):
                argv = command(value)[1]
                if argv[0] == "/usr/local/bin/register-runner":
                    found[name] = (unit, register_runner_args(argv))
    return found


def environment(unit: dict) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in unit.get(("Service", "Environment"), []))


def test_every_run_writes_metrics_to_node_exporters_folder():
    commands = register_runner_commands()
    assert set(commands) >= {
        "drop-in",
        "gitlab-runner.service",
        "gitlab-runner@.service",
        "register-runner.service",
        "register-runner@.service",
        "register-runner-retry.service",
        "register-runner-retry@.service",
    }
    for name, (unit, args) in commands.items():
        # One variable says where: a drop-in (or /etc/sysconfig/gitlab-runner) moves it.
        assert str(args.metrics_file) == "${REGISTER_RUNNER_METRICS}", name
        path = Path(environment(unit)["REGISTER_RUNNER_METRICS"])
        assert path.parent == Path("/var/lib/prometheus/node-exporter"), name
        assert path.name == f"register-runner-{args.instance}.prom", name


def test_pre_step_and_timer_of_one_instance_share_one_metrics_file():
    # They describe the same prefix and instance: two files would disagree.
    by_instance: dict[str, set[str]] = {}
    for unit, args in register_runner_commands().values():
        path = environment(unit)["REGISTER_RUNNER_METRICS"]
        by_instance.setdefault(args.instance, set()).add(path)
    assert by_instance == {
        "main": {"/var/lib/prometheus/node-exporter/register-runner-main.prom"},
        "%i": {"/var/lib/prometheus/node-exporter/register-runner-%i.prom"},
    }


def test_a_fresh_host_may_wait_out_a_rate_limit_of_a_minute():
    # GitLab's throttle window is a minute: a Retry-After up to 60 s fits.
    for name, (_, args) in register_runner_commands().items():
        assert args.fresh_deadline is not None and args.fresh_deadline > 60, name
        assert args.deadline <= 30, name  # a host with a config is not held back


@pytest.mark.parametrize("name", ["register-runner-retry.timer", "register-runner-retry@.timer"])
def test_a_run_cut_short_is_retried_within_minutes_with_jitter(name):
    timer = sync_units()[name]
    service = timer.get(("Timer", "Unit"), [name.replace(".timer", ".service")])[-1]
    unit, args = register_runner_commands()[service.replace("%i", "")]
    assert args.command == "sync" and args.retry_only
    assert args.instance == ("%i" if "@" in name else "main")
    assert "-" not in command(unit[("Service", "ExecStart")][0])[0]
    jitter = seconds(timer[("Timer", "RandomizedDelaySec")][-1])
    again = seconds(timer[("Timer", "OnUnitInactiveSec")][-1])
    assert jitter >= 60
    assert again + jitter <= 10 * 60  # minutes, not the hourly timer
    # Its first run comes once the boot's pre-step is over (the start timeout bounds it),
    # so that the two do not both sync a fresh host.
    first = seconds(timer[("Timer", "OnBootSec")][-1])
    for runner in runner_units().values():
        assert first > seconds(runner[("Service", "TimeoutStartSec")][-1])
    assert timer[("Install", "WantedBy")] == ["timers.target"]
