"""What a process costs, read from /proc: CPU seconds and resident memory."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float | None:
    """user + system CPU seconds of every thread of `pid` so far (None if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: count fields after its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _status_kib(pid: int | str, name: str) -> int | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return None


def peak_rss_bytes(pid: int | str) -> int | None:
    """VmHWM: the most resident memory the process has had."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024


def rss_bytes(pid: int | str) -> int | None:
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024


def service_pid(name: str) -> int | None:
    """The pid of the local Kafka or Redis that `make services` started."""
    path = Path(__file__).resolve().parent.parent / "var" / "run" / f"{name}.pid"
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def machine() -> dict[str, str]:
    """nproc, CPU model and memory, for the report."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = _status_kib_meminfo("MemTotal")
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": model,
        "memory": f"{mem_kib / 2**20:.1f} GiB" if mem_kib else "unknown",
        "kernel": os.uname().release,
    }


def _status_kib_meminfo(name: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
