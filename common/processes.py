"""Local processes of a run: the command line and environment of a child, starting a set of them, watching
them, and stopping every one, whatever happens (a child dies with its parent)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .exits import LOST
from .host import env_seconds

TIMEOUT = 300.0  # VGG_DIST_TIMEOUT sets it: collective_timeout()


def collective_timeout() -> float:
    """:data:`TIMEOUT`, or the seconds ``VGG_DIST_TIMEOUT`` gives (one line where it is no number > 0)."""

    return env_seconds("VGG_DIST_TIMEOUT", TIMEOUT)


# Set by launch() in every worker it starts, to the worker's index: only worker 0 prints an error of the
# project's own (the same in every worker), and none prints a lost peer, which the parent names itself.
@dataclass
class Process:
    """One process of a local run: its role (``worker``, ``server``, ``scheduler``), command and variables."""

    role: str
    index: int
    argv: list[str]
    env: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.role} {self.index}"


# The folder holding common/ and the backends: a checkout, or site-packages where the project is installed.
PROJECT = Path(__file__).resolve().parent.parent


def python_module(module: str, *args: str) -> list[str]:
    """``python -P -m MODULE ARGS``: the project's module in a child process, never a ``common`` of the working
    folder's (without ``-P`` Python puts that folder first on the path, and a ``common/`` or ``common.py`` there
    would be imported, its code run); run it with :func:`child_env`."""
    return [sys.executable, "-P", "-m", module, *args]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for :func:`python_module`: this one, ``extra``, and a checkout's folder first on
    ``PYTHONPATH`` (a checkout used without an install is found as the working folder was before ``-P``)."""
    env = {**os.environ, **extra}
    if PROJECT.name not in ("site-packages", "dist-packages"):  # an install is found without help
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    return env


# prctl(2)'s option that names the signal the kernel sends this process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _prctl():
    """The C library's ``prctl``, loaded now (never in a forked child); None off Linux or where it cannot be had."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent():
    """A ``preexec_fn`` for ``subprocess``: the child is killed (SIGKILL) when the process starting it dies.

    Without it a child outlives a parent that was killed (SIGKILL, or SIGTERM and SIGHUP, which end a parent
    without running its ``finally``): workers in their own sessions get no signal of their parent's, and would
    go on training and writing its ``--out`` folder after its lock is gone. Each link of a chain holds its own
    (``vgg compare``, its ``vgg train --workers N``, their workers): the death of the first ends them all.

    Linux's ``PR_SET_PDEATHSIG`` fires when the *thread* that started the child ends: call ``subprocess`` from
    the main thread (the project does). A parent that died before the setting took effect is seen at once (the
    child's parent is then another process) and the child ends too. None off Linux (the children then live on
    after a killed parent, as before).
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def preexec() -> None:  # in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the setting
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def describe_exit(code: int) -> str:
    """How a process ended, from its ``returncode``: ``was killed by SIGKILL``, ``stopped with exit status 2``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"stopped with exit status {code}"


# Signals sent from outside (a user, a scheduler, the kernel's OOM killer). A process that loses its peer dies
# by itself: a non-zero status, or SIGABRT (Gloo's and ps-lite's fatal errors end in abort()).
_SENT = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}


def _cause_first(proc: Process, code: int) -> tuple:
    """Sort key of the processes that stopped at once: the likeliest cause first — killed from outside, then by
    another signal, then a non-zero status, then a worker that lost its peers (:data:`LOST`); a worker before a
    server or scheduler; then by index."""
    lost = code == LOST and proc.role == "worker"
    return (-code not in _SENT, code >= 0, lost, proc.role != "worker", proc.index)  # Signals compare as numbers


def stop(popens: list[subprocess.Popen], grace: float = 5.0) -> None:
    """Stop every process still running (its whole process group): SIGTERM, then SIGKILL after ``grace`` s."""
    alive = [p for p in popens if p.poll() is None]
    for p in alive:
        with _quiet():
            os.killpg(p.pid, signal.SIGTERM)
            os.killpg(p.pid, signal.SIGCONT)  # a stopped process (SIGSTOP) takes the SIGTERM now, not after grace
    deadline = time.monotonic() + grace
    for p in alive:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with _quiet():
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class _quiet:
    """Ignore a process that is already gone."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, ProcessLookupError)


@dataclass
class Failure:
    """The first process of a run that stopped abnormally; where it lost its peers (:data:`LOST`), the workers
    still running when it did (those that stopped answering), as (index, pid)."""

    process: Process
    pid: int
    code: int
    stalled: tuple[tuple[int, int], ...] = ()

    @property
    def lost(self) -> bool:
        return self.process.role == "worker" and self.code == LOST

    def describe(self, workers: int) -> str:
        who = f"worker {self.process.index} of {workers}" if self.process.role == "worker" else self.process.name
        if not self.lost:
            return f"{who} (pid {self.pid}) {describe_exit(self.code)}"
        wait = f"{collective_timeout():g} s"
        slow = "(VGG_DIST_TIMEOUT; raise it where a worker is only slow)"
        if not self.stalled:
            return f"the workers lost each other: {who} (pid {self.pid}) gave up on a collective after {wait} {slow}"
        indices = [str(index) for index, _ in self.stalled]
        pids = ", ".join(str(pid) for _, pid in self.stalled)
        many = len(indices) > 1
        names = f"workers {', '.join(indices[:-1])} and {indices[-1]}" if many else f"worker {indices[0]}"
        return (
            f"{names} of {workers} (pid{'s' if many else ''} {pids}) stopped answering: worker {self.process.index} "
            f"waited {wait} for {'them' if many else 'it'} in a collective {slow}"
        )


def run_processes(
    processes: list[Process], poll: float = 0.2, linger: float = 10.0, settle: float = 3.0
) -> Failure | None:
    """Start ``processes``, each in its own process group; wait for the workers; None when all end with status 0.

    A process that stops abnormally (a signal, a non-zero status) stops all others at once and is returned.
    Scheduler and server processes end by themselves when the workers finish (given ``linger`` seconds).
    Whatever happens (Ctrl-C included), no process is left running; a parent that is killed takes them with it
    (:func:`die_with_parent`).
    """
    popens: list[subprocess.Popen] = []
    try:
        for proc in processes:  # one by one: a process that fails to start leaves those before it to stop
            popens.append(  # noqa: PERF401
                subprocess.Popen(proc.argv, env=proc.env, start_new_session=True, preexec_fn=die_with_parent())
            )
        pairs = list(zip(processes, popens, strict=True))
        settle_until = float("inf")
        while True:
            codes = [(proc, p, p.poll()) for proc, p in pairs]
            failed = [(proc, p, c) for proc, p, c in codes if c not in (None, 0)]
            running = [(proc, p) for proc, p, c in codes if c is None and proc.role == "worker"]
            if failed and all(c > 0 for _, _, c in failed) and time.monotonic() < settle_until:
                settle_until = min(settle_until, time.monotonic() + settle)
                if all(c == LOST and proc.role == "worker" for proc, _, c in failed):
                    if running:  # the others in the same collective give up too; the ones still running stalled
                        time.sleep(poll)
                        continue
                elif not any(proc.index == 0 and proc.role == "worker" for proc, _, _ in failed):
                    # an error of the project's own meets every worker alike: let worker 0 say it first
                    time.sleep(poll)
                    continue
            if failed:
                proc, p, code = min(failed, key=lambda f: _cause_first(f[0], f[2]))
                failure = Failure(proc, p.pid, code)
                if failure.lost:  # the workers that gave up name none: those still in the collective stalled
                    failure.stalled = tuple((other.index, q.pid) for other, q in running)
                    for _, q in running:  # nothing of theirs is left to save (rank 0 writes the files); woken by
                        # a SIGTERM, a stalled worker would first meet its engine's own fatal error and print it
                        # (JAX's coordination client: "Terminating process because the JAX distributed service
                        # detected fatal errors")
                        with _quiet():
                            os.killpg(q.pid, signal.SIGKILL)
                return failure
            if all(c == 0 for proc, _, c in codes if proc.role == "worker"):
                deadline = time.monotonic() + linger
                while time.monotonic() < deadline and any(p.poll() is None for p in popens):
                    time.sleep(poll)
                return None
            time.sleep(poll)
    finally:
        stop(popens)
