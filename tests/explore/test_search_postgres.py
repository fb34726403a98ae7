"""One study shared by two `crosslayer search` processes through a real PostgreSQL server, started by the test on
the loopback interface (a free port, a temporary data directory). Skipped, saying why, where no PostgreSQL
binaries exist (CI installs them: .ci/run)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch


def _binaries() -> Path | None:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(cand, "initdb").is_file() and Path(cand, "pg_ctl").is_file():
            return Path(cand)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` system user."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' system user to run the server as")
    return ["runuser", "-u", "postgres", "--", *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
    bin_dir = _binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) found; install the 'postgresql' package to run this test")
    data = Path(tempfile.mkdtemp(prefix="crosslayer-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
    port = _free_port()
    run = lambda cmd: subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120)  # noqa: E731
    init = run([str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    if init.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off"
    start = run([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o", opts, "-l", str(data / "log"), "-w", "start"])
    if start.returncode != 0:
        log = (data / "log").read_text() if (data / "log").exists() else ""
        shutil.rmtree(data, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {start.stderr} {log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"])
        shutil.rmtree(data, ignore_errors=True)


def test_two_processes_share_one_study(postgres_url: str, lenet5_trained, data_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "lenet5.pt"
    torch.save(lenet5_trained.state_dict(), weights)
    cmd = [sys.executable, "-m", "crosslayer.cli.main", "search", "--model", "lenet5", "--weights", str(weights),
           "--storage", postgres_url, "--study", "shared", "--trials", "8", "--trial-epochs", "0",
           "--final-points", "0", "--train-limit", "600", "--test-limit", "200", "--json"]
    env = {**os.environ, "CROSSLAYER_DATA": str(data_dir), "OMP_NUM_THREADS": "1", "CROSSLAYER_NO_PROGRESS": "1"}
    procs = [subprocess.Popen([*cmd, "--out", str(tmp_path / f"machine{i}")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    assert 8 <= len(trials) <= 9  # the budget is the study's; a race may start one extra trial
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both processes ran trials of the one study
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    for i in range(2):
        assert (tmp_path / f"machine{i}" / "report.html").is_file()
