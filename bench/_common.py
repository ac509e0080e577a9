"""Shared helpers for harmspot benchmarks (optional: a benchmark may use none of them).

* :func:`machine_info` / :func:`machine_markdown`: nproc, CPU model, RAM, load average,
  Python and library versions, UTC date, git commit.
* :func:`best_of`: wall time of a callable, best of N repeats (plus every repeat).
* :func:`run_child`: run a command in a child process and return its wall time and
  peak resident memory (``ru_maxrss`` of that one child, via ``os.wait4``).
* :func:`md_table`: a GitHub-flavoured markdown table.
* :func:`write_result`: write ``bench/results/<topic>.md``.
* :func:`bench_args`: the common ``--quick`` / ``--repeat`` command-line flags.

Everything here is standard library plus numpy; psutil is used only when present.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

SHARED_MACHINE_NOTE = (
    "Timings were taken on a shared 2-core machine while other jobs (tests, other benchmarks) "
    "were running, so absolute times are noisy; each figure is the best of the stated number of "
    "repeats, and the ratios (measured side by side in the same run) are the figures to read."
)


# ---------------------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        try:
            return getattr(importlib.import_module(mod), "__version__", None)
        except Exception:
            return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception:
        return None


def machine_info(libs: Iterable[str] = ()) -> dict:
    """Machine and software description for a results file.

    Keys: ``date_utc``, ``nproc`` (CPUs this process may use), ``cpu_count`` (all CPUs),
    ``cpu_model``, ``ram_gb``, ``loadavg`` (1/5/15 min), ``python``, ``platform``,
    ``git_commit``, ``versions`` (numpy plus every name in ``libs`` that is installed).
    """
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    try:
        load = tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        load = None
    versions = {}
    for lib in ("numpy", *libs):
        v = _version(lib)
        if v is not None:
            versions[lib] = v
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gb": _ram_gb(),
        "loadavg": load,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "versions": versions,
    }


def machine_markdown(info: dict | None = None, libs: Iterable[str] = ()) -> str:
    """The machine description as a few markdown bullet lines."""
    info = info or machine_info(libs)
    vers = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    load = "/".join(str(v) for v in info["loadavg"]) if info.get("loadavg") else "n/a"
    return "\n".join([
        f"- Date: {info['date_utc']}; harmspot commit {info.get('git_commit') or 'n/a'}",
        f"- Machine: `nproc` = {info['nproc']}, CPU {info['cpu_model']}, RAM {info['ram_gb']} GB, "
        f"{info['platform']}",
        f"- Load average when measured (1/5/15 min): {load}",
        f"- Python {info['python']}; {vers}",
    ])


# ---------------------------------------------------------------------------------------- timing

@dataclass
class Timing:
    """Result of :func:`best_of`: ``best`` seconds, every repeat in ``times``, the last ``result``."""

    best: float
    times: list[float] = field(default_factory=list)
    result: object = None

    @property
    def median(self) -> float:
        s = sorted(self.times)
        return s[len(s) // 2]


def best_of(fn: Callable[[], object], repeat: int = 3, warmup: int = 0, setup: Callable[[], None] | None = None,
            keep_result: bool = False, budget_s: float = 0.0, max_repeat: int = 15) -> Timing:
    """Wall time of ``fn()`` (``time.perf_counter``), best of ``repeat`` runs.

    ``warmup`` untimed calls come first; ``setup()`` (untimed) runs before every call;
    the garbage collector is run before and disabled during each timed call. With
    ``budget_s`` > 0, quick calls are repeated beyond ``repeat`` (up to ``max_repeat``)
    until the timed total reaches ``budget_s``: on a busy machine the best of more
    runs is closer to the undisturbed time.
    """
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times, result = [], None
    while len(times) < max(1, repeat) or (sum(times) < budget_s and len(times) < max_repeat):
        if setup:
            setup()
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
        if not keep_result:
            result = None
    return Timing(min(times), times, result)


def best_of_interleaved(fns: dict[str, Callable[[], object]], repeat: int = 3, budget_s: float = 0.0,
                        max_repeat: int = 15,
                        on_first: Callable[[str, object], None] | None = None) -> dict[str, Timing]:
    """Time several callables round-robin (one call each per round) and keep each one's best.

    On a shared machine the load drifts; interleaving exposes every competitor to the
    same conditions, so the ratios between them are steadier than timing each one's
    repeats back to back. Each callable runs at least ``repeat`` times, and quick ones
    more (up to ``max_repeat``) until ``budget_s`` of their own time has been measured.
    ``on_first(key, result)`` sees each callable's first result (to check correctness);
    results are not kept.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    while True:
        todo = [k for k in fns
                if len(times[k]) < max(1, repeat) or (sum(times[k]) < budget_s and len(times[k]) < max_repeat)]
        if not todo:
            break
        for k in todo:
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                result = fns[k]()
                dt = time.perf_counter() - t0
            finally:
                gc.enable()
            if not times[k] and on_first is not None:
                on_first(k, result)
            del result
            times[k].append(dt)
    return {k: Timing(min(v), v) for k, v in times.items()}


def self_peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB), from ``getrusage``.

    Caveat (Linux): ``ru_maxrss`` survives ``exec``, so a process started by a big parent
    reports at least the parent's RSS at fork time; :func:`vmhwm_mb` does not.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vmhwm_mb(pid: int | str = "self") -> float | None:
    """Peak RSS of a process's current address space (``VmHWM`` in /proc/<pid>/status, MiB).

    Unlike ``ru_maxrss`` it starts afresh at ``exec``, so it is not inflated by the parent.
    None where /proc is not available.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


#: Python code that, run with ``python -c CODE OUT SCRIPT ARGS...``, runs SCRIPT (e.g. a console
#: script) with ARGS as if started directly and writes its VmHWM (MiB) to OUT at exit.
HWM_WRAPPER = (
    "import atexit, runpy, sys\n"
    "out, script = sys.argv[1], sys.argv[2]\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(out, 'w').write(str(int(line.split()[1]) / 1024.0))\n"
    "atexit.register(_hwm)\n"
    "sys.argv = [script] + sys.argv[3:]\n"
    "runpy.run_path(script, run_name='__main__')\n"
)


@dataclass
class ChildRun:
    """A finished child process: exit code, wall seconds, CPU seconds (user + system, all its
    threads), peak RSS (MiB; ``ru_maxrss``, see :func:`run_child`), captured output, and the
    parent's own RSS when it started the child (``parent_rss_mb``)."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    cpu_s: float = 0.0
    parent_rss_mb: float | None = None


def run_child(argv: Sequence[str], *, env: dict | None = None, cwd: str | Path | None = None,
              timeout: float | None = None) -> ChildRun:
    """Run ``argv``; return its wall time, CPU time and its own peak RSS (``ru_maxrss`` from ``os.wait4``).

    Output goes to temporary files (no pipe deadlocks). The peak is that of the child
    process itself (grandchildren are not included). On timeout the child is killed
    and ``returncode`` is -9.

    Caveat (Linux): ``ru_maxrss`` is carried across ``exec``, so the figure is at least the
    parent's RSS at the moment of the fork (returned as ``parent_rss_mb``). Start children
    before the parent grows, or have the child report its own :func:`vmhwm_mb` (for a
    console script: run it under :data:`HWM_WRAPPER`).
    """
    parent_rss = None
    try:
        parent_rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        pass
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(map(str, argv)), stdout=out, stderr=err, env=env,
                                cwd=str(cwd) if cwd else None)
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if deadline and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(proc.returncode, wall, usage.ru_maxrss / 1024.0, out.read(), err.read(),
                        usage.ru_utime + usage.ru_stime, parent_rss)


# ---------------------------------------------------------------------------------------- output

def fmt_s(seconds: float | None, digits: int = 3) -> str:
    """Seconds as text (ms below 0.1 s)."""
    if seconds is None:
        return "n/a"
    if seconds < 0.1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.{digits}g} s" if seconds < 100 else f"{seconds:.0f} s"


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """Markdown table. ``align``: one letter per column, 'l' or 'r' (default: first left, rest right)."""
    headers = [str(h) for h in headers]
    align = align or ("l" + "r" * (len(headers) - 1))
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for r in rows:
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_result(topic: str, text: str) -> Path:
    """Write ``bench/results/<topic>.md`` (creating the folder); returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{topic}.md"
    path.write_text(text.rstrip() + "\n")
    return path


def bench_args(description: str, argv: Sequence[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Parse the common flags: ``--quick`` (small sizes only), ``--repeat N`` (default 3),
    ``--no-write`` (print the markdown, do not write the results file)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes only (a minute or so)")
    p.add_argument("--repeat", type=int, default=3, help="repeats per measurement; the best is reported")
    p.add_argument("--no-write", action="store_true", help="print the results, do not write bench/results")
    if extra:
        extra(p)
    return p.parse_args(argv)


def ensure_root_on_path() -> None:
    """Make ``import geo`` work when a benchmark is run as ``python bench/bench_x.py``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
