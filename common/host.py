"""The host process: its memory allocator, settings read from the environment, and progress on stderr."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
import time

from tqdm import tqdm

from .errors import ConfigError

# glibc's malloc, where this process has it (Linux): the C library, and mallopt's parameters (malloc.h).
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None


M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


KEEP_HEAP_TOP = 2**31 - 1  # bytes of free heap top kept rather than trimmed (mallopt takes an int)


def reuse_freed_memory() -> bool:
    """Keep the memory this process frees for its next allocations; True where glibc's malloc took the setting.

    glibc gives a freed block above its mmap threshold (at most 32 MiB) straight back to the kernel, so a CPU
    training step whose activations are larger maps them afresh every step and the kernel zeroes every page
    again: PyTorch's CPU tensors come from malloc one by one, and at ``vgg bench``'s defaults that was 150,000
    page faults and a quarter of the CPU time per step (TensorFlow's ops, which allocate on its own threads,
    90,000). After this, large blocks come from the heap, a free heap top under 2 GiB stays, and threads started
    from now on share the main heap (TensorFlow's, when this runs before it starts them: ``vgg train`` calls it
    first); the process keeps what its steps used until :func:`give_back_freed_memory`.
    ``VGG_REUSE_FREED_MEMORY=0`` leaves malloc as it is.
    """
    if os.environ.get("VGG_REUSE_FREED_MEMORY", "1") == "0" or _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return False
    return all(
        _LIBC.mallopt(param, value) == 1
        for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_HEAP_TOP), (M_ARENA_MAX, 1))
    )


def give_back_freed_memory() -> None:
    """Return the free pages of this process's heap to the kernel (glibc's ``malloc_trim``; elsewhere nothing)."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


# Seconds between two progress lines when stderr is not a terminal (a log file, a pipe, CI); VGG_PROGRESS_EVERY
# sets it (0: every step).
LOG_EVERY = 30.0


def env_seconds(name: str, default: float, zero: bool = False) -> float:
    """Seconds set by the environment variable ``name``, ``default`` where it is unset; a ConfigError where it
    is set to anything but a number > 0 (``zero``: >= 0)."""
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value > 0 or (zero and value == 0))):
        raise ConfigError(f"{name}={text!r}: give a number of seconds {'>=' if zero else '>'} 0, or unset it")
    return value


class Progress:
    """Progress of a loop on stderr: a tqdm bar on a terminal; elsewhere one line every :data:`LOG_EVERY` s.

    ``update(n, examples=k, **info)`` counts ``n`` steps of ``total`` (and ``k`` examples), ``info`` the
    figures to show (``loss=0.53``). ``enabled=False`` shows nothing; ``None`` decides by the terminal.
    """

    def __init__(self, total: int | None, label: str, enabled: bool | None = None, every: float | None = None):
        self.total, self.label = None if total is None else max(total, 1), label  # None: a loop of unknown length
        self.enabled = enabled is not False
        self.tty = sys.stderr.isatty()
        self.every = env_seconds("VGG_PROGRESS_EVERY", LOG_EVERY, zero=True) if every is None else every
        self.done = self.examples = 0
        self.start = self._logged = time.perf_counter()
        self.bar = (
            tqdm(total=self.total, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)
            if self.enabled and self.tty
            else None
        )

    def update(self, n: int = 1, examples: int = 0, **info) -> None:
        self.done += n
        self.examples += examples
        figures = {k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in info.items()}
        if self.bar is not None:
            self.bar.set_postfix(figures, refresh=False)
            self.bar.update(n)
        elif (
            self.enabled
            and time.perf_counter() - self._logged >= self.every
            and (self.total is None or self.done < self.total)
        ):
            self._logged = now = time.perf_counter()
            rate = self.done / max(now - self.start, 1e-9)
            speed = f", {self.examples / (now - self.start):.1f} examples/s" if self.examples else ""
            extra = "".join(f", {k} {v}" for k, v in figures.items())
            done = f"{self.done} steps" if self.total is None else f"{self.done}/{self.total}"
            eta = "" if self.total is None else f", eta {(self.total - self.done) / rate:.0f} s"
            print(f"{self.label}: {done}{speed}{extra}{eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
