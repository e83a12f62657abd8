"""Measure a lever against the project's path, interleaved in one process: ``python scripts/levers.py LEVER``.

- ``torch``: ``torch.compile`` (inductor) of the channels-last network against the eager channels-last one.
- ``mxnet``: ``hybridize(static_alloc=True, static_shape=True)`` against plain ``hybridize()``.
- ``bf16 BACKEND``: the bf16 training step against the fp32 one, at ``vgg compare``'s configuration.

The first two at ``vgg bench``'s defaults (vgg11, ratio 4, 96 px, batch 128, the book's head, fp32); training
steps on one real batch held in memory. The two variants alternate round by round, so that a machine shared with other
work slows both alike; printed: the median examples/s of the rounds, the median of the per-round ratios to
the project's path, and the first step's time (compilation included).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from common.arch import make_any_config
from common.bench import BENCH_DEFAULTS, bench_modules, build_net
from common.cli.options import COMPARE_DEFAULTS
from common.errors import ConfigError
from common.host import reuse_freed_memory

D = BENCH_DEFAULTS


def _variants(name, b, bench, config):
    """(label, step) pairs: the project's training step and the lever's."""
    if name == "bf16":
        return [(p, bench.train_step(build_net(b, bench, config, p), "project", p)) for p in ("fp32", "bf16")]
    if name == "torch":
        import torch

        base = bench.train_step(build_net(b, bench, config, "fp32"), "project")
        compiled = bench.train_step(torch.compile(build_net(b, bench, config, "fp32")), "project")
        return [("eager channels-last (project)", base), ("torch.compile, channels-last", compiled)]
    from vgg_mxnet.train import hybridize

    def step_of(**flags):  # the book's plain step, which leaves the network as it is: hybridized here with flags
        return bench.train_step(hybridize(build_net(b, bench, config, "fp32"), **flags), "book")

    return [
        ("hybridize()", step_of()),
        ("hybridize(static_alloc=True, static_shape=True)", step_of(static_alloc=True, static_shape=True)),
    ]


def main(name: str, backend: str | None = None, rounds: int = 9, steps: int = 3) -> dict:
    """Measure lever ``name``; ``backend`` is the one to measure for ``bf16`` (the others are their own backend)."""
    if name == "bf16":
        if backend is None:
            raise ConfigError("the bf16 lever needs a backend: torch, tf or mxnet")
        C = COMPARE_DEFAULTS
        config = make_any_config(
            C["arch"], 1, 10, C["resize"], C["ratio"], C["fc_hidden"], C["dropout"], C["batch_norm"]
        )
        steps *= 4  # small steps at 32 px: more of them per round
    else:
        config, backend = make_any_config(D["arch"], 1, 10, D["resize"], D["ratio"]), name  # vgg bench's network
    b, bench = bench_modules(backend)
    stream, _ = b.load_data_fashion_mnist(D["batch_size"], config.input_size, 0, None, D["batch_size"], 1)
    x, y = next(iter(stream))
    variants = _variants(name, b, bench, config)
    first = {}
    for label, step in variants:  # the first step builds (compiles) the graph
        start = time.perf_counter()
        step(x, y)
        first[label] = time.perf_counter() - start
        step(x, y)
    rates: dict[str, list[float]] = {label: [] for label, _ in variants}
    for _ in range(rounds):
        for label, step in variants:
            start = time.perf_counter()
            for _ in range(steps):
                step(x, y)
            rates[label].append(steps * D["batch_size"] / (time.perf_counter() - start))
    base = rates[variants[0][0]]
    out = {
        label: {
            "train_examples_per_sec": statistics.median(r),
            "rounds": r,
            "first_step_seconds": first[label],
            "vs_project": statistics.median(v / b for v, b in zip(r, base, strict=True)),
        }  # paired round by round
        for label, r in rates.items()
    }
    for label, r in out.items():
        print(
            f"{label}: {r['train_examples_per_sec']:.1f} train ex/s ({r['vs_project']:.2f}x), first step "
            f"{r['first_step_seconds']:.1f} s"
        )
    return out


if __name__ == "__main__":
    lever = sys.argv[1] if len(sys.argv) > 1 else None
    if lever not in ("torch", "mxnet", "bf16") or (lever == "bf16") != (len(sys.argv) == 3):
        sys.exit("usage: python scripts/levers.py {torch | mxnet | bf16 BACKEND}")
    reuse_freed_memory()  # as vgg train and vgg bench run, before a framework starts its threads
    print(json.dumps(main(lever, sys.argv[2] if lever == "bf16" else None), indent=1))
