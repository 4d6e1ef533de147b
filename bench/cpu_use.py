"""CPU time of the processes a benchmark measures, by role, read from /proc (Linux).

A sampler thread notes every process's cumulative CPU time (user + system) every 50 ms; the CPU a
role used over a window is the sum over its processes of the difference between their last
sample at the window's end and their last sample before its start (a process that ended keeps
its last sample); and the whole machine's busy time, from /proc/stat. On a machine whose cores
everything shares, this says where the time of a burst went, which processes the last answers
waited for, and whether the cores were full.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from pathlib import Path

INTERVAL = 0.05
# /proc is listed for new processes every this many samples only (the sampler's own CPU was 5%
# of a core when it listed it at every sample).
RESCAN_EVERY = 10
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# role -> predicate on (command name, command line); the first match wins.
ROLES = (
    ("API", lambda comm, cmd: "api:create_app()" in cmd),
    ("serve.py (API and worker)", lambda comm, cmd: "serve.py" in cmd),
    ("workers", lambda comm, cmd: "celery" in cmd and " -A worker worker " in cmd),
    ("PostgreSQL", lambda comm, cmd: comm == "postgres"),
    ("Redis", lambda comm, cmd: comm == "redis-server"),
    ("clients", lambda comm, cmd: "bench.slow_turns" in cmd),
    ("slow LLM", lambda comm, cmd: "bench.slow_llm" in cmd),
)
# The busy time of every core, whatever ran (the roles above, the benchmark itself, the rest).
MACHINE = "machine"


def role_of(comm: str, cmd: str) -> str | None:
    """The role of a process by its command name and command line (arguments space-separated)."""
    return next((role for role, matches in ROLES if matches(comm, f" {cmd} ")), None)


def _role(pid: str) -> str | None:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return role_of(comm, cmd)


def _machine_seconds() -> float:
    """CPU seconds all cores spent busy since boot: /proc/stat's user, nice, system, irq and
    softirq (not idle, iowait, or the time a hypervisor gave another machine, steal)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = stat.readline().split()[1:8]
    return sum(int(ticks) for ticks in (user, nice, system, irq, softirq)) / _TICKS


def _cpu_seconds(pid: str) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


class CpuSampler:
    """``with CpuSampler() as cpu: ...``, then ``cpu.used(start, end)`` (``time.time()``s)."""

    def __init__(self) -> None:
        self._roles: dict[str, str | None] = {}
        self._samples: dict[str, list[tuple[float, float]]] = {}  # pid -> [(time, cpu)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    @staticmethod
    def available() -> bool:
        return Path("/proc/self/stat").exists()

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        count = 0
        while not self._stop.is_set():
            if count % RESCAN_EVERY == 0:
                self._scan()
            self._sample()
            count += 1
            self._stop.wait(INTERVAL)
        self._scan()
        self._sample()

    def _scan(self) -> None:
        for pid in os.listdir("/proc"):
            if pid.isdigit() and pid not in self._roles:
                self._roles[pid] = _role(pid)

    def _sample(self) -> None:
        now = time.time()
        self._samples.setdefault(MACHINE, []).append((now, _machine_seconds()))
        for pid, role in self._roles.items():
            if role is not None and (seconds := _cpu_seconds(pid)) is not None:
                self._samples.setdefault(pid, []).append((now, seconds))

    def used(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each role with a process sampled used between ``start`` and ``end``
        (in the order of ROLES), then the whole machine's (MACHINE)."""
        by_role: dict[str, float] = {}
        for pid, samples in self._samples.items():
            role = MACHINE if pid == MACHINE else self._roles[pid]
            assert role is not None
            by_role[role] = by_role.get(role, 0.0) + _at(samples, end) - _at(samples, start)
        order = [role for role, _ in ROLES] + [MACHINE]
        return {role: round(by_role[role], 3) for role in order if role in by_role}


def _at(samples: list[tuple[float, float]], moment: float) -> float:
    """A process's CPU seconds as last sampled at ``moment`` (its first sample if none was)."""
    index = bisect.bisect_right(samples, (moment, float("inf"))) - 1
    return samples[max(index, 0)][1]
