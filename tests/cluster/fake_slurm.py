#!/usr/bin/env python3
"""A recording stand-in for Slurm's client commands: what the Snakemake Slurm plugin submits, run on
this machine, for tests that need every `sbatch` call of a whole run but no real Slurm (no root).

Run as `fake_slurm.py COMMAND ARGS...` by wrappers named `sbatch`, `squeue`, `scancel`, `srun` and
`scontrol` (tests/conftest.py `fake_slurm` writes them; `FAKE_SLURM_DIR` names the state folder):

* `sbatch` appends its arguments, as one JSON line, to `$FAKE_SLURM_DIR/sbatch.jsonl`, prints a new
  job id (`--parsable`) and runs the job in the background: the `--wrap` command (or the script on
  standard input) in bash, in the `-D` folder, output to `--output` (`%j`, `%A`, `%a` filled), with
  `SLURM_JOB_ID` set and, for `--array=a-b`, one task after another with `SLURM_ARRAY_TASK_ID`.
* `squeue --name NAME` prints `<id>|<state>` of every job (array task: `<id>_<task>`) of that name,
  whatever the other options (the plugin's `--format=%i|%T --states=all --noheader`).
* `scancel ID...` stops those jobs (state CANCELLED).
* `srun [options] COMMAND...` runs COMMAND (the jobstep executor's wrapper inside a job).
* `scontrol show config` prints the two settings the plugin reads: MinJobAge (600 s, so that it
  polls with squeue) and MaxArraySize (1001, Slurm's default).

Every state change is written atomically, so concurrent calls never read half a file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path


def state_dir() -> Path:
    folder = Path(os.environ["FAKE_SLURM_DIR"])
    (folder / "jobs").mkdir(parents=True, exist_ok=True)
    return folder


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def new_id(folder: Path) -> int:
    """The next job id (a lock file keeps concurrent sbatch calls apart)."""
    import fcntl

    with open(folder / "next_id.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / "next_id"
        job_id = int(path.read_text()) if path.exists() else 1000
        write(path, str(job_id + 1))
    return job_id


def option(args: list[str], *names: str) -> str | None:
    """The value of the first of `names` in `args` (`--name value`, `--name=value` or `-Xvalue`)."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def sbatch(args: list[str]) -> int:
    folder = state_dir()
    script = sys.stdin.read() if "/dev/stdin" in args else None
    with open(folder / "sbatch.jsonl", "a") as record:
        record.write(json.dumps({"argv": args, "script": script}) + "\n")
    job_id = new_id(folder)
    wrap = option(args, "--wrap")
    command = wrap if wrap is not None else script
    array = option(args, "--array")
    tasks = [None]
    if array:
        first, last = map(int, re.fullmatch(r"(\d+)-(\d+)", array).groups())
        tasks = list(range(first, last + 1))
    job = {
        "id": job_id,
        "name": option(args, "--job-name", "-J") or "",
        "tasks": tasks,
        "command": command,
        "output": option(args, "--output", "-o") or f"slurm-{job_id}.out",
        "workdir": option(args, "-D", "--chdir") or os.getcwd(),
        "gpus": "--gpus=1" in args or any(a.startswith("--gpus") for a in args),
    }
    for task in tasks:
        write(folder / "jobs" / f"{key(job_id, task)}.json", json.dumps({**job, "task": task, "state": "PENDING"}))
    # the runner outlives this call, as a batch job outlives sbatch
    subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "_run", str(job_id)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(job_id)
    return 0


def key(job_id: int, task: int | None) -> str:
    return str(job_id) if task is None else f"{job_id}_{task}"


def run_job(job_id: int) -> int:
    folder = state_dir()
    paths = sorted((folder / "jobs").glob(f"{job_id}.json")) + sorted(
        (folder / "jobs").glob(f"{job_id}_*.json"), key=lambda p: int(p.stem.split("_")[1])
    )
    for path in paths:
        job = json.loads(path.read_text())
        if job["state"] != "PENDING":
            continue
        task = job["task"]
        output = job["output"].replace("%j", str(job_id)).replace("%A", str(job_id))
        output = output.replace("%a", str(task if task is not None else ""))
        output = Path(job["workdir"], output)
        output.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(SLURM_JOB_ID=str(job_id), SLURM_JOBID=str(job_id))
        if job["gpus"]:
            env["SLURM_GPUS"] = "1"
        if task is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(job_id), SLURM_ARRAY_TASK_ID=str(task))
        with open(output, "a") as out:
            proc = subprocess.Popen(
                ["bash", "-c", job["command"]], cwd=job["workdir"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
            write(path, json.dumps({**job, "state": "RUNNING", "pid": proc.pid}))
            rc = proc.wait()
        if json.loads(path.read_text())["state"] == "RUNNING":
            write(path, json.dumps({**job, "state": "COMPLETED" if rc == 0 else "FAILED", "pid": None}))
    return 0


def squeue(args: list[str]) -> int:
    name = option(args, "--name", "-n")
    for path in sorted((state_dir() / "jobs").glob("*.json")):
        job = json.loads(path.read_text())
        if name is None or job["name"] == name:
            print(f"{path.stem}|{job['state']}")
    return 0


def scancel(args: list[str]) -> int:
    folder = state_dir()
    for job_id in (a for a in args if not a.startswith("-")):
        for path in list((folder / "jobs").glob(f"{job_id}.json")) + list((folder / "jobs").glob(f"{job_id}_*.json")):
            job = json.loads(path.read_text())
            if job["state"] in ("PENDING", "RUNNING"):
                write(path, json.dumps({**job, "state": "CANCELLED"}))
                if job.get("pid"):
                    try:
                        os.kill(job["pid"], signal.SIGTERM)
                    except ProcessLookupError:
                        pass
    return 0


def srun(args: list[str]) -> int:
    """Drop srun's options, run the command (a shell command line when given as one word)."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        rest.pop(0)
    if not rest:
        print("srun: no command", file=sys.stderr)
        return 1
    if rest == ["sh", "-s"]:
        return subprocess.call(["sh", "-s"])
    return subprocess.call(" ".join(shlex.quote(a) for a in rest) if len(rest) > 1 else rest[0], shell=True)


def scontrol(args: list[str]) -> int:
    if args[:2] == ["show", "config"]:
        print("MaxArraySize            = 1001\nMinJobAge               = 600 sec")
        return 0
    print(f"scontrol: {' '.join(args)} is not faked", file=sys.stderr)
    return 1


def main() -> int:
    """`fake_slurm.py COMMAND ARGS...` (the wrappers named after the commands call it so)."""
    name, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if name == "_run":
        time.sleep(0.1)  # sbatch has printed the id by now
        return run_job(int(args[0]))
    handler = {"sbatch": sbatch, "squeue": squeue, "scancel": scancel, "srun": srun, "scontrol": scontrol}.get(name)
    if handler is None:
        print(f"fake_slurm: unknown command {name!r}", file=sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
