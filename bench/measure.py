"""Running one child process and measuring it: wall time, CPU time and peak RSS from ``os.wait4``."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Measured:
    wall_s: float
    cpu_s: float          # user + system
    peak_rss_mb: float    # ru_maxrss: Linux carries the spawning process's own peak over exec (a floor)
    returncode: int
    stdout: str
    stderr: str


def timed(command: list[str], env: dict[str, str]) -> Measured:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    return Measured(round(wall, 3), round(usage.ru_utime + usage.ru_stime, 3), round(usage.ru_maxrss / 1024, 1),
                    child.returncode, stdout, stderr)
