"""The configuration given or inferred from the parameter shapes, and the parameters and layers matched with
the spec's."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..arch import (
    ALEXNET_FEATURES,
    ALEXNET_MIN_SIZE,
    CONFIGS,
    MAX_INT,
    WIDTHS,
    AlexNetConfig,
    NetConfig,
    make_any_config,
)
from ..errors import ConfigError, arg
from ..spec import available_memory, check_layer_sizes, format_bytes, memory_needed, spec
from .records import KINDS, STATISTICS, Event, Param, ParamRow


def align(kinds: Sequence[str], events: Sequence[Event]) -> dict[int, int]:
    """Spec layer index -> event index: the longest common subsequence of the two kind sequences (events of no
    known kind are skipped). A layer the model computes without a module of its own (a functional ReLU) or
    leaves out is unmatched; a module the spec does not have is skipped."""
    ev = [(j, e.kind) for j, e in enumerate(events) if e.kind in KINDS]
    n, m = len(kinds), len(ev)
    best = np.zeros((n + 1, m + 1), np.int32)
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i, j] = best[i + 1, j + 1] + 1 if kinds[i] == ev[j][1] else max(best[i + 1, j], best[i, j + 1])
    out, i, j = {}, 0, 0
    while i < n and j < m:
        if kinds[i] == ev[j][1] and best[i, j] == best[i + 1, j + 1] + 1:
            out[i] = ev[j][0]
            i, j = i + 1, j + 1
        elif best[i + 1, j] >= best[i, j + 1]:
            i += 1
        else:
            j += 1
    return out


GIVEN = ("arch", "in_channels", "num_classes", "input_size", "ratio", "fc_hidden", "batch_norm")


def _vgg_arch(kernels: list[int], widths: list[int], lrn: bool) -> tuple[str, int] | None:
    """(configuration name, ratio) whose convolutions are these, or None."""
    found = []
    for name, paper in CONFIGS.items():
        flat = [k for block in paper.kernels for k in block]
        full = [w for w, block in zip(WIDTHS, paper.kernels, strict=True) for _ in block]
        if flat != kernels or widths[0] == 0 or full[0] % widths[0]:
            continue
        ratio = full[0] // widths[0]
        if [w // ratio for w in full] == widths:
            found.append((name, ratio))
    if not found:
        return None
    named = [f for f in found if CONFIGS[f[0]].lrn == lrn] or found
    return named[0]


def _input_size(final: int, candidates: range, side_of: Callable[[int], int]) -> int | None:
    sizes = [s for s in candidates if side_of(s) == final]
    return (224 if 224 in sizes else sizes[0]) if sizes else None


def infer_config(
    params: list[Param], given: dict[str, Any], declared: tuple[int, int, int] | None, has_lrn: bool, what: str
) -> tuple[NetConfig, list[str]]:
    """The configuration the given options and the model's parameter shapes describe, and sentences saying what
    was inferred. ``declared`` is the model's own (channels, height, width) input where it states one."""
    trainable = [p.shape for p in params if p.trainable and p.shape is not None]
    inferred = _from_shapes(trainable, given, declared, has_lrn, what)
    if declared:
        if not all(0 < d <= MAX_INT for d in declared) and not {"in_channels", "input_size"} <= set(given):
            raise ConfigError(
                f"{what} declares a {'x'.join(map(str, declared))} input, more than the frameworks index; give "
                f"{arg('in_channels')} and {arg('input_size')} it was built for"
            )
        inferred["input_size"] = declared[1]
        inferred.setdefault("in_channels", declared[0])
    needed = ("arch", "in_channels", "num_classes", "input_size")
    missing = [k for k in needed if k not in given and inferred.get(k) is None]
    if "arch" not in given and inferred.get("arch") != "alexnet" and "batch_norm" not in inferred:
        missing.append("batch_norm")
    if missing:
        found = ", ".join(f"{len(s)}-D {s}" for s in trainable[:6])
        raise ConfigError(
            f"cannot tell the configuration of {what} from its parameters ({len(trainable)}: {found}, ...): "
            f"pass {', '.join(arg(m) for m in missing)}"
        )
    chosen = {**inferred, **given}
    notes = _inferred_notes(inferred, given, chosen, declared)
    arch = chosen["arch"]
    if arch == "alexnet":
        config = make_any_config("alexnet", chosen["in_channels"], chosen["num_classes"], chosen["input_size"])
    else:
        config = make_any_config(
            arch,
            chosen["in_channels"],
            chosen["num_classes"],
            chosen["input_size"],
            chosen.get("ratio"),
            chosen.get("fc_hidden"),
            0.5,
            chosen.get("batch_norm"),
        )
    return config, notes


def _from_shapes(
    trainable: list[tuple[int, ...]],
    given: dict[str, Any],
    declared: tuple[int, int, int] | None,
    has_lrn: bool,
    what: str,
) -> dict[str, Any]:
    """What the parameter shapes say of the configuration: the channels and classes, the network (AlexNet by its
    first kernel, else a VGG of Table 1 at some ratio) and, where fc1's input is an exact multiple, the input."""
    convs = [s for s in trainable if len(s) == 4]
    dense = [s for s in trainable if len(s) == 2]
    vectors = [s for s in trainable if len(s) == 1]
    inferred: dict[str, Any] = {}
    if not convs or not dense:
        if "arch" not in given:
            raise ConfigError(
                f"{what} has {len(convs)} convolution and {len(dense)} dense weights: it is not a VGG or AlexNet "
                f"(they have both); if it is one, say which with {arg('arch')}"
            )
        return inferred
    inferred["in_channels"] = convs[0][1]
    inferred["num_classes"] = dense[-1][0]
    if declared and declared[0] != convs[0][1]:
        raise ConfigError(f"{what} declares {declared[0]}-channel input but its first convolution takes {convs[0][1]}")
    if convs[0][2] == ALEXNET_FEATURES[0].kernel:
        inferred["arch"] = "alexnet"
        final = math.isqrt(dense[0][1] // convs[-1][0])
        if final * final * convs[-1][0] == dense[0][1]:
            inferred["input_size"] = _input_size(
                final, range(ALEXNET_MIN_SIZE, 1025), lambda s: AlexNetConfig(1, 10, s, 0.5).final_size
            )
        return inferred
    return {**inferred, **_vgg_shapes(convs, dense, vectors, has_lrn, given, what)}


def _vgg_shapes(
    convs: Sequence[tuple[int, ...]],
    dense: Sequence[tuple[int, ...]],
    vectors: Sequence[tuple[int, ...]],
    has_lrn: bool,
    given: dict[str, Any],
    what: str,
) -> dict[str, Any]:
    """A VGG's arch and ratio (Table 1's at some ratio), hidden width, batch norm and input size, from its shapes."""
    inferred: dict[str, Any] = {}
    kernels, widths = [s[2] for s in convs], [s[0] for s in convs]
    named = _vgg_arch(kernels, widths, has_lrn)
    if named:
        inferred["arch"], inferred["ratio"] = named
    elif "arch" not in given:
        raise ConfigError(
            f"{what} is no VGG of Table 1 at any ratio, nor AlexNet: its {len(convs)} convolutions are "
            f"{', '.join(f'{w} wide {k}x{k}' for w, k in zip(widths[:8], kernels[:8], strict=True))}"
            f"{', ...' if len(convs) > 8 else ''}; if it is a VGG of your own, give {arg('arch')} as "
            f"(num_convs, out_channels) pairs"
        )
    inferred["fc_hidden"] = dense[0][0]
    if len(vectors) == 3 * len(convs) + len(dense):
        inferred["batch_norm"] = True
    elif len(vectors) == len(convs) + len(dense):
        inferred["batch_norm"] = False
    blocks = len(CONFIGS[named[0]].kernels) if named else None
    final = math.isqrt(dense[0][1] // widths[-1]) if widths[-1] else 0
    if blocks and final and final * final * widths[-1] == dense[0][1]:
        step = 2**blocks
        inferred["input_size"] = 224 if 224 // step == final else final * step
    return inferred


def _inferred_notes(
    inferred: dict[str, Any], given: dict[str, Any], chosen: dict[str, Any], declared: tuple[int, int, int] | None
) -> list[str]:
    """A sentence for each option that was inferred, saying from what."""
    notes: list[str] = []
    arch = chosen["arch"]
    for key in GIVEN:
        if key in given or key not in inferred or (arch == "alexnet" and key in ("ratio", "fc_hidden", "batch_norm")):
            continue
        how = {
            "input_size": "from the model's declared input"
            if declared
            else "from fc1's input features (the exact multiple)",
            "arch": "from the convolutions' kernels and widths",
            "ratio": "from the convolutions' widths",
            "batch_norm": "from the vectors between convolutions",
        }.get(key, "from the parameter shapes")
        notes.append(f"{key}={chosen[key]!r} inferred {how}")
    return notes


def check_room(config: NetConfig, images: int, what: str) -> None:
    """Refuse, before any array is made, a check this machine cannot hold: the probe images run through the
    network with every layer's output kept (a model that declares a huge input, say)."""
    check_layer_sizes(config)
    available = available_memory()
    needed = memory_needed(config, images)
    if available is not None and needed > available:
        raise ConfigError(
            f"checking {what} as {config.describe()} needs at least {format_bytes(needed)} of memory for "
            f"{images} probe images and every layer's output, but {format_bytes(available)} is available; give "
            f"{arg('input_size')} the size it was built for, or fewer {arg('images')}"
        )


def match_params(params: list[Param], config: NetConfig) -> tuple[list[ParamRow], dict[str, str] | None, list[str]]:
    """Rows pairing the spec's parameters with the model's: trainable ones by order and shape, then batch-norm
    statistics (by the layer of their weight where the model says which, else by order); user name -> canonical
    name when they all pair up (else None); and the batch-norm layers that keep no running statistics at all."""
    shapes = spec(config).param_shapes()
    rows: list[ParamRow] = []
    want = [(n, s) for n, s in shapes.items() if not n.endswith(STATISTICS)]
    have = [p for p in params if p.trainable]
    for i in range(max(len(want), len(have))):
        c, s = want[i] if i < len(want) else (None, None)
        q = have[i] if i < len(have) else None
        rows.append(ParamRow(c, s, q.name if q else None, q.shape if q else None))
    trained = {r.name: r.canonical for r in rows if r.ok and r.name and r.canonical}
    stats = [p for p in params if not p.trainable]
    want_stats = [(n, s) for n, s in shapes.items() if n.endswith(STATISTICS)]
    if stats and all(p.owner in trained and p.stat in STATISTICS for p in stats):
        by_canonical = {f"{trained[str(p.owner)].rsplit('.', 1)[0]}.{p.stat}": p for p in stats}
        for c, s in want_stats:
            q = by_canonical.pop(c, None)
            rows.append(ParamRow(c, s, q.name if q else None, q.shape if q else None))
        rows += [ParamRow(None, None, q.name, q.shape) for q in by_canonical.values()]
    else:
        for i in range(max(len(want_stats), len(stats))):
            c, s = want_stats[i] if i < len(want_stats) else (None, None)
            q = stats[i] if i < len(stats) else None
            rows.append(ParamRow(c, s, q.name if q else None, q.shape if q else None))
    # a batch norm without statistics (track_running_stats=False) loads the rest: the numbers will tell
    missing = [r for r in rows if not r.ok and r.name is None and r.canonical and r.canonical.endswith(STATISTICS)]
    bare = sorted(
        {r.canonical.rsplit(".", 1)[0] for r in missing if r.canonical},
        key=lambda layer: list(shapes).index(f"{layer}.running_mean"),
    )
    if all(r.ok for r in rows if r not in missing):
        return rows, {r.name: r.canonical for r in rows if r.ok and r.name and r.canonical}, bare
    return rows, None, []


def given_options(config: NetConfig | None, options: dict[str, Any]) -> dict[str, Any]:
    if config is not None:
        if options:
            raise ConfigError("give either a configuration or its arguments, not both")
        d = config.to_dict()
        if isinstance(config, AlexNetConfig):
            return {k: d[k] for k in ("arch", "in_channels", "num_classes", "input_size")}
        return {**config.vgg_kwargs()}
    unknown = [k for k in options if k not in GIVEN]
    if unknown:
        raise ConfigError(f"conform takes {', '.join(GIVEN)}; not {', '.join(unknown)}")
    return {k: v for k, v in options.items() if v is not None}
