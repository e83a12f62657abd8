"""The chapter as a Jupyter notebook: the same words as the page, the backend chosen in its first code cell,
small sizes so that it runs top to bottom on a CPU in well under a minute."""

from __future__ import annotations

from typing import Any

from ..backends import BACKENDS
from .chapter import (
    BLOCK_TEXT,
    FIT_TEXT,
    INTRO,
    LAYER_TEXT,
    NETWORK_TEXT,
    STEP_TEXT,
    TIED_TEXT,
    TITLE,
    XAVIER_TEXT,
)

GENERATOR = "vgg teach"  # in the notebook's metadata: how `vgg teach` knows a notebook it may replace

CELLS: list[tuple[str, str]] = [
    ("markdown", f"# {TITLE}\n\n{INTRO}\n\nChoose the framework in the next cell, then run all cells."),
    ("code", "BACKEND = {backend!r}  # one of: {choices} (common.backends.BACKENDS)"),
    (
        "code",
        "import importlib\n"
        "import inspect\n\n"
        "from common.arch import make_alexnet_config, make_config\n"
        "from common.backends import BACKENDS, get_backend\n"
        "from common.spec import spec\n\n"
        "b = get_backend(BACKEND)  # imports the framework now\n"
        "model = importlib.import_module(BACKENDS[BACKEND].package + '.model')\n"
        "print(BACKENDS[BACKEND].label, 'computes in', getattr(b, 'LAYOUT', 'NCHW'))",
    ),
    ("markdown", f"## The block\n\n{BLOCK_TEXT}"),
    ("code", "print(inspect.getsource(b.vgg_block))"),
    ("markdown", LAYER_TEXT),
    ("code", "print(inspect.getsource(model._layer))"),
    ("code", "block = b.vgg_block(2, 1, 8)  # two convolutions, 1 -> 8 channels, then the pool\nblock"),
    ("markdown", f"## The network\n\n{NETWORK_TEXT}\n\nThe book's shape trace, by the framework's own inference:"),
    (
        "code",
        "config = make_config('vgg11', in_channels=1, num_classes=10, input_size=224)\n"
        "net = b.abstract_network(config)  # shapes only: no parameter memory\n"
        "trace = [(name, tuple(shape)) for name, shape in b.layer_shapes(net, 224)]\n"
        "for name, shape in trace:\n"
        "    print(f'{name:10s} {shape}')\n"
        "assert trace == spec(config).trace(), 'the framework disagrees with common.spec'\n"
        "print(f'{b.count_params(net):,} parameters (spec: {spec(config).params:,})')",
    ),
    ("markdown", f"## Training\n\n{STEP_TEXT}"),
    (
        "code",
        "print(inspect.getsource(importlib.import_module(BACKENDS[BACKEND].package + '.train').Trainer.train_step))",
    ),
    ("markdown", f"{FIT_TEXT}\n\nA small run: VGG-11 at an eighth of the width on 32 px images, 2 epochs of 1024."),
    (
        "code",
        "train_iter, test_iter = b.load_data_fashion_mnist(64, resize=32, train_limit=1024, test_limit=512)\n"
        "small = b.vgg('vgg11', ratio=8, input_size=32, fc_hidden=64, batch_norm=True)\n"
        "history = b.train(small, train_iter, test_iter, num_epochs=2, lr_schedule='cosine')\n"
        "print(history.last.line())",
    ),
    ("markdown", "## Exercises\n\n1. Why does the shape trace print 8 lines for VGG-11's 11 layers?"),
    (
        "code",
        "s = spec(config)\n"
        "convs = [layer for layer in s.layers if layer.kind == 'conv']\n"
        "dense = [layer for layer in s.layers if layer.kind == 'linear']\n"
        "blocks = sorted({c.group for c in convs})\n"
        "print(len(convs) + len(dense), 'layers with weights:', len(convs), 'convolutions,', len(dense), 'dense')\n"
        "print({g: sum(c.group == g for c in convs) for g in blocks}, '-> convolutions per block')\n"
        "print(len(blocks) + len(dense), 'lines with weights: one per block, one per dense layer')",
    ),
    ("markdown", "2. Why is VGG slower and hungrier than AlexNet?"),
    (
        "code",
        "a = spec(make_alexnet_config(in_channels=1, num_classes=10, input_size=224))\n"
        "print(f'MACs per image: VGG-11 {s.macs:,}, AlexNet {a.macs:,} ({s.macs / a.macs:.1f}x)')\n"
        "print(f'parameters:     VGG-11 {s.params:,}, AlexNet {a.params:,}')",
    ),
    ("markdown", "3. What does 96 instead of 224 pixels do?"),
    (
        "code",
        "for side in (96, 224):\n"
        "    c = spec(make_config('vgg11', input_size=side))\n"
        "    print(f'{side} px: {c.macs:,} MACs, {c.params:,} parameters, last map {c.trace()[4][1]}')",
    ),
    ("markdown", "4. VGG-16 and VGG-19 (Table 1): 3 channels, 1000 classes."),
    (
        "code",
        "for name in ('vgg16', 'vgg19'):\n"
        "    c = make_config(name, in_channels=3, num_classes=1000)\n"
        "    print(name, [len(k.kernels) for k in c.blocks], f'{spec(c).params:,} parameters, {spec(c).macs:,} MACs')",
    ),
    ("markdown", "## Blocks by hand, parameter management, initialization\n\n" + TIED_TEXT),
    (
        "code",
        "hand = b.hand_vgg(small.config)\n"
        "print('hand_vgg holds as many parameters as vgg():', b.count_params(hand) == b.count_params(small))\n"
        "print(b.named_parameters(b.tied_mlp(tied=True)))\n"
        "print(b.named_parameters(b.tied_mlp(tied=False)))",
    ),
    ("markdown", XAVIER_TEXT),
    (
        "code",
        "b.init_weights(small, 'xavier', seed=0)\n"
        "w = b.export_weights(small)\n"
        "print({name: w[name].shape for name in list(w)[:4]})",
    ),
]


def build(backend: str) -> Any:
    """The notebook, with ``backend`` in its first code cell."""
    import nbformat  # deferred: a heavy library (its JSON schema), loaded only where a notebook is written
    from nbformat import v4

    nb = v4.new_notebook()
    for kind, text in CELLS:
        text = text.format(backend=backend, choices=", ".join(BACKENDS)) if "{backend" in text else text
        nb.cells.append(v4.new_markdown_cell(text) if kind == "markdown" else v4.new_code_cell(text))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["generator"] = GENERATOR
    nbformat.validate(nb)
    return nb


def text(backend: str) -> str:
    import nbformat  # deferred: as in build()

    return nbformat.writes(build(backend))
