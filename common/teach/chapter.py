"""Everything the page and the notebook show, gathered once: the code side by side, live shapes, a run's numbers,
the chapter's exercises answered with the numbers they come from. Prose lives here too, so the page and the
notebook say the same thing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arch import AlexNetConfig, NetConfig, VGGConfig, config_from_dict, make_alexnet_config, make_config
from ..backends import BACKENDS, display_name, get_backend
from ..errors import ConfigError
from ..spec import memory_needed, spec
from . import sources
from .sources import Conventions, Source

# The book's network: VGG-11 on one-channel 224 px images, ten classes.
BOOK = dict(arch="vgg11", in_channels=1, num_classes=10, input_size=224)
# VGG's Table 1 as the paper trains it: three channels, 1000 classes.
TABLE1 = dict(in_channels=3, num_classes=1000, input_size=224)


@dataclass
class Section:
    """One comparison of the same function in every backend."""

    key: str  # anchor
    title: str
    dotted: str  # the name inside each backend package ("model._layer", "train.Trainer.train_step")
    text: str  # what to look at
    columns: dict[str, Source | None] = field(default_factory=dict)


@dataclass
class ShapeRow:
    layer: str
    spec_shape: tuple[int, ...]  # NCHW with the batch of one
    spec_params: int
    macs: int
    shapes: dict[str, tuple[int, ...]]  # backend -> NCHW shape, by its own shape inference
    own: dict[str, tuple[int, ...]]  # backend -> the shape in its own layout
    params: dict[str, int]  # backend -> its own count
    names: dict[str, str]  # backend -> its name for the layer


@dataclass
class ShapeTable:
    key: str
    title: str
    config: NetConfig
    rows: list[ShapeRow]
    totals: dict[str, int]  # backend -> count_params (-1 where its shape inference failed)
    layouts: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)  # backend -> why its shape inference failed

    @property
    def spec_params(self) -> int:
        return sum(r.spec_params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def differences(self) -> int:
        """Cells where a backend disagrees with the spec (name, shape, parameters) and totals that differ."""
        bad = sum(
            r.shapes.get(n) != r.spec_shape or r.params.get(n) != r.spec_params or r.names.get(n) != r.layer
            for r in self.rows
            for n in self.totals
        )
        return bad + sum(total != self.spec_params for total in self.totals.values())


def side_by_side(key: str, title: str, dotted: str, text: str, names: list[str]) -> Section:
    return Section(key, title, dotted, text, {n: sources.backend_source(n, dotted) for n in names})


def to_layout(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """An NCHW shape in ``layout`` (NHWC moves the channels last); a flat shape stays as it is."""
    if layout == "NHWC" and len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    return shape


def shape_table(key: str, title: str, config: NetConfig, names: list[str]) -> ShapeTable:
    """Each backend's own shape inference and counts on the abstract network of ``config``, beside the spec."""
    s = spec(config)
    live: dict[str, tuple[list, dict[str, int]]] = {}
    totals, layouts, errors = {}, {}, {}
    for n in names:
        b = get_backend(n)
        layouts[n] = str(getattr(b, "LAYOUT", "NCHW"))
        try:
            net = b.abstract_network(config)  # layers and shapes, no parameter memory
            live[n] = (b.layer_shapes(net, config.input_size, config.in_channels), b.layer_params(net))
            totals[n] = int(b.count_params(net))
        except Exception as e:  # one backend's failure is shown in its column; the page still tells the rest
            live[n], totals[n], errors[n] = ([], {}), -1, f"{type(e).__name__}: {e}"[:300]
    rows = []
    for i, g in enumerate(s.group_rows()):
        shapes, own, params, layer_names = {}, {}, {}, {}
        for n, (trace, counts) in live.items():
            if i < len(trace):
                layer_names[n], shape = trace[i][0], tuple(int(d) for d in trace[i][1])
                shapes[n], own[n] = shape, to_layout(shape, layouts[n])
            params[n] = int(counts.get(g["name"], 0))
        rows.append(ShapeRow(g["name"], (1, *g["shape"]), g["params"], g["macs"], shapes, own, params, layer_names))
    return ShapeTable(key, title, config, rows, totals, layouts, errors)


# --- a compare run ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    folder: Path
    records: list[dict]  # results.json's "runs": one per framework

    def series(self, key: str) -> dict[str, list[tuple[float, float]]]:
        """framework -> (epoch, value) for each epoch."""
        return {r["framework"]: [(e["epoch"], e[key]) for e in r["history"]["epochs"]] for r in self.records}

    def against_time(self, key: str) -> dict[str, list[tuple[float, float]]]:
        """framework -> (seconds of training so far, value) at the end of each epoch."""
        out = {}
        for r in self.records:
            t, points = 0.0, []
            for e in r["history"]["epochs"]:
                t += e["seconds"]
                points.append((t, e[key]))
            out[r["framework"]] = points
        return out

    def drift(self) -> list[dict[str, float]]:
        """Per epoch every framework reached: the largest difference between frameworks in loss and accuracies."""
        epochs = min(len(r["history"]["epochs"]) for r in self.records)
        out = []
        for i in range(epochs):
            row: dict[str, float] = {"epoch": i + 1}
            for key in ("loss", "train_acc", "test_acc"):
                values = [r["history"]["epochs"][i][key] for r in self.records]
                row[key] = max(values) - min(values)
            out.append(row)
        return out


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _valid_record(r: Any) -> bool:
    """Whether ``r`` is one framework's record as `vgg compare` writes it, with at least one finished epoch."""
    config_from_dict(r["config"])  # a ConfigError (or KeyError, TypeError) where it is none
    epochs = r["history"]["epochs"]
    return (
        isinstance(r["framework"], str)
        and _number(r["params"])
        and _number(r["wall_seconds"])
        and isinstance(epochs, list)
        and bool(epochs)
        and all(
            type(e["epoch"]) is int
            and all(_number(e[k]) for k in ("loss", "train_acc", "test_acc", "seconds", "examples_per_sec"))
            for e in epochs
        )
    )


def read_run(folder: Path) -> Run:
    """The records `vgg compare` wrote into ``folder`` (its results.json); a ConfigError that says what to give."""
    path = folder / "results.json"
    if not path.is_file():
        raise ConfigError(f"{folder} holds no results.json of `vgg compare`")
    try:
        runs = json.loads(path.read_text())["runs"]
        valid = isinstance(runs, list) and bool(runs) and all(_valid_record(r) for r in runs)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, ConfigError):
        valid = False
    if not valid:
        raise ConfigError(f"{path} is not the results.json of a finished `vgg compare`")
    return Run(folder, runs)


# --- bench files ------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    runs: list[dict] = field(default_factory=list)  # `vgg bench --json`: one entry per (file, backend)
    points: list[dict] = field(default_factory=list)  # `vgg bench --sweep --json`: one entry per point
    files: list[str] = field(default_factory=list)


def read_bench(paths: list[str]) -> Bench:
    """The measurements of `vgg bench --json FILE` and `vgg bench --sweep --json FILE` files."""
    out = Bench()
    for p in paths:
        try:
            record = json.loads(Path(p).read_text())
            if "points" in record:
                points = [dict(pt, file=p) for pt in record["points"] if "error" not in pt]
                valid = all(_number(pt["train"]) and type(pt["input_size"]) is int for pt in points)
                out.points += points
            else:
                config = record["config"]
                runs = [dict(r, file=p, arch=config["arch"], input_size=config["input_size"]) for r in record["runs"]]
                valid = all(_number(r["train_project"]) for r in runs)
                out.runs += runs
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            raise ConfigError(f"{p} is not a bench file: give the JSON file that `vgg bench` writes (plain or swept)")
        out.files.append(p)
    return out


# --- the chapter ------------------------------------------------------------------------------------------------


@dataclass
class Chapter:
    names: list[str]  # the backends shown, in the registry's order
    labels: dict[str, str]
    conventions: dict[str, Conventions | None]
    block: Section
    block_helper: Section
    layer: Section
    network: Section
    shared_network: list[Source]
    book_table: ShapeTable
    training: list[Section]
    fit: Source
    run: Run | None
    bench: Bench
    exercises: dict[str, Any]
    extras: list[Section]
    extra_tables: list[ShapeTable]
    missing: list[str]  # registry backends whose framework is not installed here


def gather(run: Run | None, bench: Bench) -> Chapter:
    names = sources.backends()
    if not names:
        raise ConfigError("no backend's framework is installed here; install one, e.g. pip install -e '.[torch]'")
    book = make_config(**BOOK)
    alexnet = make_alexnet_config(in_channels=1, num_classes=10, input_size=224)
    vgg16, vgg19 = make_config("vgg16", **TABLE1), make_config("vgg19", **TABLE1)
    return Chapter(
        names=names,
        labels={n: display_name(n) for n in names},
        conventions={n: sources.conventions(n) for n in names},
        block=side_by_side("block", "vgg_block", "model.vgg_block", BLOCK_TEXT, names),
        block_helper=side_by_side("block-container", "_block: the container", "model._block", BLOCK_HELPER_TEXT, names),
        layer=side_by_side("layer", "_layer: one planned layer", "model._layer", LAYER_TEXT, names),
        network=side_by_side("network-class", "Network", "model.Network", NETWORK_TEXT, names),
        shared_network=[sources.common_source("arch.block_plan"), sources.common_source("spec.network_functions")],
        book_table=shape_table("book-shapes", "The book's VGG-11: 1 × 224 × 224 in, 10 classes", book, names),
        training=[
            side_by_side(
                "trainer-init", "Trainer.__init__: loss and optimizer", "train.Trainer.__init__", INIT_TEXT, names
            ),
            side_by_side("train-step", "Trainer.train_step: one step", "train.Trainer.train_step", STEP_TEXT, names),
            side_by_side(
                "train-step-inner", "Trainer._step: the compiled step", "train.Trainer._step", INNER_TEXT, names
            ),
        ],
        fit=sources.common_source("training.fit"),
        run=run,
        bench=bench,
        exercises=exercises(book, alexnet, vgg16, vgg19, bench),
        extras=[
            side_by_side("lrn", "AlexNet: LocalResponseNorm", "model.LocalResponseNorm", LRN_TEXT, names),
            side_by_side("my-sequential", "Blocks by hand: MySequential", "blocks.MySequential", MYSEQ_TEXT, names),
            side_by_side("hand-vgg", "Blocks by hand: hand_vgg", "blocks.hand_vgg", HAND_VGG_TEXT, names),
            side_by_side("fixed-mlp", "Blocks by hand: FixedHiddenMLP", "blocks.FixedHiddenMLP", FIXED_TEXT, names),
            side_by_side("tied", "Parameter management: tied_mlp", "blocks.tied_mlp", TIED_TEXT, names),
            side_by_side(
                "export", "Parameter management: export_weights", "weights.export_weights", EXPORT_TEXT, names
            ),
            side_by_side("init-xavier", "Initialization: init_xavier", "model.init_xavier", XAVIER_TEXT, names),
            side_by_side(
                "init-default", "Initialization: the framework's own", "weights._default_init", DEFAULT_TEXT, names
            ),
        ],
        extra_tables=[
            shape_table("alexnet-shapes", "AlexNet: 1 × 224 × 224 in, 10 classes", alexnet, names),
            shape_table("vgg16-shapes", "VGG-16 (Table 1, D): 3 × 224 × 224 in, 1000 classes", vgg16, names),
            shape_table("vgg19-shapes", "VGG-19 (Table 1, E): 3 × 224 × 224 in, 1000 classes", vgg19, names),
        ],
        missing=[n for n in BACKENDS if n not in names],
    )


def exercises(
    book: VGGConfig, alexnet: AlexNetConfig, vgg16: VGGConfig, vgg19: VGGConfig, bench: Bench
) -> dict[str, Any]:
    """The numbers of the chapter's exercises, each from the spec (and from bench files where given)."""
    s = spec(book)
    convs = [layer for layer in s.layers if layer.kind == "conv"]
    dense = [layer for layer in s.layers if layer.kind == "linear"]
    blocks = [g for g in s.groups() if g.startswith("block")]
    shared = {g: sum(1 for c in convs if c.group == g) for g in blocks}
    vgg_rows, alex_rows = s.group_rows(), spec(alexnet).group_rows()
    small = make_config(**{**BOOK, "input_size": 96})
    sizes = {}
    for ratio in (1, 4):
        for side in (96, 224):
            c = make_config(**{**BOOK, "input_size": side, "ratio": ratio})
            cs = spec(c)
            sizes[(ratio, side)] = {
                "params": cs.params,
                "macs": cs.macs,
                "fc1_in": c.flat_features,
                "final": c.final_size,
                "memory_128": memory_needed(c, 128),
            }
    return {
        "trace": {
            "weight_layers": len(convs) + len(dense),
            "convs": len(convs),
            "dense": len(dense),
            "blocks": len(blocks),
            "convs_per_block": shared,
            "hidden": sum(k - 1 for k in shared.values()),
            "lines_with_weights": len(blocks) + len(dense),
            "trace_lines": len(s.groups()),
            "groups": s.groups(),
        },
        "alexnet": {
            "vgg_rows": vgg_rows,
            "alex_rows": alex_rows,
            "vgg_params": s.params,
            "vgg_macs": s.macs,
            "alex_params": spec(alexnet).params,
            "alex_macs": spec(alexnet).macs,
            # the first dense layer's share of the parameters (VGG's fc1, AlexNet's fc6)
            "vgg_dense1": next(r["params"] for r in vgg_rows if r["name"].startswith("fc")) / s.params,
            "alex_dense1": next(r["params"] for r in alex_rows if r["name"].startswith("fc")) / spec(alexnet).params,
            "speeds": [r for r in bench.runs if r["arch"] in ("vgg11", "alexnet")],
        },
        "resolution": {
            "sizes": sizes,
            "small_trace": spec(small).trace(),
            "points": [p for p in bench.points if p["input_size"] in (96, 224)],
        },
        "table1": {
            name: {
                "params": spec(c).params,
                "macs": spec(c).macs,
                "convs": sum(len(b.kernels) for b in c.blocks),
                "per_block": [len(b.kernels) for b in c.blocks],
                "trace": spec(c).trace(),
            }
            for name, c in (("vgg11", make_config("vgg11", **TABLE1)), ("vgg16", vgg16), ("vgg19", vgg19))
        },
    }


def label(name: str) -> str:
    return BACKENDS[name].label


# --- the words --------------------------------------------------------------------------------------------------

TITLE = "Networks Using Blocks (VGG), side by side"
INTRO = (
    "The chapter of Dive into Deep Learning, with every framework of this project in its own column. The code "
    "below is the installed packages' own source, read when this page was made; the shapes are each framework's "
    "own shape inference, beside the framework-free spec (common.spec) that every backend is held to."
)
BLOCK_TEXT = (
    "The book's block: num_convs 3×3 convolutions (padding 1), each followed by a ReLU, then a 2×2 max-pool of "
    "stride 2. Every backend checks the arguments and asks common.arch for the plan of layers; what differs is "
    "the framework's container and layers, below."
)
BLOCK_HELPER_TEXT = "The plan becomes the framework's sequential container, one layer per planned layer."
LAYER_TEXT = (
    "One planned layer in each framework, row by row: the convolution, batch norm, the ReLU, the pool. The rows "
    "line up so that the same layer is read across."
)
NETWORK_TEXT = (
    "The whole network is the framework's sequential container of named blocks and head layers; calling it "
    "checks the input first. vgg(), alexnet() and from_config() are the same in every backend (shown once below)."
)
INIT_TEXT = "The loss (summed over the batch) and the optimizer, made once per run."
STEP_TEXT = (
    "The book's loop body: forward, loss, backward, update; it returns the batch's loss sum and correct count "
    "(the host reads them only every few steps)."
)
INNER_TEXT = "Where a framework compiles its step (tf.function), the body lives in a method of its own."
FIT_TEXT = (
    "The epoch loop itself is written once, in common.training.fit, and runs every backend's Trainer: the same "
    "learning-rate schedule, batch order, checks, checkpoints and per-epoch record."
)
LRN_TEXT = (
    "AlexNet's local response normalization. PyTorch has it as nn.LocalResponseNorm; TensorFlow's op does not "
    "divide alpha by the window, so its layer does; MXNet's LRN does as PyTorch does."
)
MYSEQ_TEXT = 'The book\'s hand-made Sequential ("Layers and Modules"): children registered in order, run in order.'
HAND_VGG_TEXT = "The same VGG as vgg(), written with MySequential: it holds the same parameters."
FIXED_TEXT = "A block with a constant weight, one layer used twice and Python control flow."
TIED_TEXT = "Parameter management: one layer used twice shares its parameters (tied=False: two copies)."
EXPORT_TEXT = (
    "Each framework's parameters as canonical NumPy arrays (conv OIHW, dense (out, in)): the names every backend "
    "shares, and what lets one backend's weights be loaded into another."
)
XAVIER_TEXT = (
    "The recipe's initialization: Xavier-uniform weights, zero biases. init_weights(net, scheme, seed) draws "
    "the book's schemes in NumPy instead, so one seed gives the same weights in every framework."
)
DEFAULT_TEXT = 'init_weights(net, "default"): each framework\'s own initialization, which differs.'
NO_RUN = "No compare run yet: run `make compare` (or `vgg compare`), then `vgg teach --run runs/compare`."
