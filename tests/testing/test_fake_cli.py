"""fake-gitlab's command line flags for TLS, misbehaviours and the LLNL options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from register_runner.testing.fake_gitlab import main

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "glpat-cli-token-abcdefgh"


def run_fake(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "register_runner.testing.fake_gitlab", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_tls_misbehave_and_llnl_options(tmp_path):
    tls = pytest.importorskip("register_runner.testing.tls")
    ca = tls.make_ca(tmp_path)
    server = tls.make_cert(ca, tmp_path)
    proc = run_fake(
        "--token",
        TOKEN,
        "--tls-cert",
        str(server.cert),
        "--tls-key",
        str(server.key),
        "--runner-details-token",
        "--token-lifetime",
        "3600",
        "--endless-pagination",
        "--token-expires-at",
        "2099-12-31",
        "--misbehave",
        "drop_after:POST:^/user/runners$",
        "--misbehave",
        "html::/version",
    )
    try:
        lines = dict(proc.stdout.readline().rstrip("\n").split(": ", 1) for _ in range(4))
        url = lines["url"]
        assert url.startswith("https://127.0.0.1:")
        api = url + "/api/v4"

        def call(method, path, **kwargs):
            return requests.request(
                method,
                api + path,
                headers={"PRIVATE-TOKEN": TOKEN},
                verify=str(ca.cert),
                timeout=10,
                **kwargs,
            )

        assert call("GET", "/version").headers["Content-Type"].startswith("text/html")
        assert call("GET", "/version").json()["version"]
        with pytest.raises(requests.ConnectionError):
            call("POST", "/user/runners", json={"runner_type": "instance_type"})
        created = call("POST", "/user/runners", json={"runner_type": "instance_type"}).json()
        assert created["token_expires_at"]
        assert created["id"] == 2  # the dropped create made runner 1
        assert call("GET", "/runners/2").json()["token"] == created["token"]
        assert call("GET", "/runners/all?page=7").headers["X-Next-Page"] == "8"
        assert call("GET", "/personal_access_tokens/self").json()["expires_at"] == "2099-12-31"
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "args",
    [
        ["--misbehave", "explode"],
        ["--tls-cert", "x.pem"],
        ["--tls-client-ca", "ca.pem"],
        ["--token-expires-at", "next year"],
        ["--token-lifetime", "0"],
    ],
)
def test_cli_rejects_bad_arguments(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
