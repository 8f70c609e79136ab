"""No service started by the test suite outlives it (issue 16, point 7: munged, slurmctld and slurmd of
tests/cluster/slurm_up.sh were still running 45 minutes after `make test`).

Each test runs pytest in a child process on a small test file, with LABELWISE_SLURM_DIR pointing at
a fresh state directory and `sleep` processes standing in for the daemons (their pids in the pid
files slurm_up.sh writes), so they need neither root nor Slurm:

* the cluster fixture of tests/test_cluster.py stops the cluster with the real
  tests/cluster/slurm_down.sh even when the test using it fails;
* the session check in tests/conftest.py fails a run that leaves such a daemon running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.faults


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as stopped
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def pytest_child(tmp_path: Path, state: Path, test_source: str) -> subprocess.CompletedProcess:
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", tests / "conftest.py")  # the session check under test
    (tests / "cluster").symlink_to(REPO / "tests" / "cluster")  # the copy's REPO is tmp_path: the real scripts
    (tests / "test_child.py").write_text(textwrap.dedent(test_source))
    env = dict(os.environ, LABELWISE_SLURM_DIR=str(state), PYTHONPATH=f"{REPO / 'tests'}{os.pathsep}{tests}")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            str(tests / "test_child.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def pids_in(state: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((state / "run").glob("*.pid.started"))]


def test_a_daemon_left_running_fails_the_run(tmp_path):
    state = tmp_path / "slurm-state"
    result = pytest_child(
        tmp_path,
        state,
        f"""
        import subprocess
        from pathlib import Path

        def test_starts_a_daemon_and_forgets_it():
            run = Path({str(state)!r}) / "run"
            run.mkdir(parents=True)
            proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
            (run / "slurmd.pid").write_text(str(proc.pid))
            (run / "slurmd.pid.started").write_text(str(proc.pid))
        """,
    )
    try:
        assert result.returncode != 0, result.stdout[-2000:]
        assert "the test suite left slurmd (pid" in result.stderr and "slurm_down.sh" in result.stderr, result.stderr
        assert "1 passed" in result.stdout  # the test itself passed: the session check failed the run
    finally:
        for pid in pids_in(state):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("timeout") is None,
    reason="tests/test_cluster.py (whose fixture this runs) needs root and coreutils' timeout",
)
def test_cluster_fixture_stops_the_cluster_when_its_test_fails(tmp_path):
    """The fixture as written, with slurm_up.sh's part played by `sleep`s; slurm_down.sh is the real one."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="tests/test_cluster.py needs it to import")
    state = tmp_path / "slurm-state"
    result = pytest_child(
        tmp_path,
        state,
        f"""
        import subprocess
        from pathlib import Path

        import test_cluster

        real_run = test_cluster.run

        def fake_run(cmd, *, cwd, limit, env=None):
            if Path(str(cmd[1])).name != "slurm_up.sh":
                return real_run(cmd, cwd=cwd, limit=limit, env=env)  # slurm_down.sh: the real script
            run = Path({str(state)!r}) / "run"
            run.mkdir(parents=True)
            for name in ("slurmctld", "slurmd"):
                proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
                (run / f"{{name}}.pid").write_text(str(proc.pid))
                (run / f"{{name}}.pid.started").write_text(str(proc.pid))
            return subprocess.CompletedProcess(cmd, 0, stdout="export SLURM_CONF=/nonexistent\\n", stderr="")

        test_cluster.run = fake_run
        cluster = test_cluster.cluster

        def test_fails_while_the_cluster_is_up(cluster):
            assert cluster["SLURM_CONF"] == "/nonexistent"
            assert False, "a failing cluster test"
        """,
    )
    pids = pids_in(state)
    try:
        assert len(pids) == 2, result.stdout[-3000:] + result.stderr[-2000:]
        assert "1 failed" in result.stdout, result.stdout[-3000:]
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if alive(p)], "slurm_down.sh did not stop the daemons after a failed test"
        assert "left" not in result.stderr, result.stderr  # the session check found nothing
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
