"""`vgg conform`: anyone's VGG or AlexNet port held to the spec (common.conform)."""

from __future__ import annotations

import argparse
import os
from contextlib import ExitStack

from ..backends import BACKENDS
from ..checkpoint import FolderLock, prepare_folder
from ..conform import REPORT_FILES, conform, framework_of, write_report
from ..distributed import USER_CODE, run_user_code
from ..exits import FAILED
from .options import (
    arch_option,
    positive,
    prepare_file,
)


def add_arguments(p) -> None:
    p.add_argument(
        "model",
        help="*.onnx, *.keras, an MXNet Gluon export (*-symbol.json beside its *.params), or a PyTorch factory "
        "module.path:function (imported and called; nothing unpickled)",
    )
    p.add_argument(
        "--arch", type=arch_option, default=None, help="alexnet, a VGG name or conv_arch pairs (default: inferred)"
    )
    p.add_argument("--in-channels", type=positive(int), default=None, help="(default: inferred)")
    p.add_argument("--num-classes", type=positive(int), default=None, help="(default: inferred)")
    p.add_argument(
        "--input-size", type=positive(int), default=None, help="(default: declared by the model, or inferred)"
    )
    p.add_argument("--ratio", type=positive(int), default=None, help="VGG: width divisor (default: inferred)")
    p.add_argument("--fc-hidden", type=positive(int), default=None, help="VGG (default: inferred)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None, help="VGG (default: inferred)")
    p.add_argument(
        "--reference", choices=list(BACKENDS), default="torch", help="the backend that runs the same weights (torch)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights loaded into both (default 0)")
    p.add_argument("--images", type=positive(int), default=4, help="real test images compared (default 4)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (else searched)")
    p.add_argument("--out", default=None, help="folder for conformance.md and conformance.json")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.add_argument(
        "--timeout",
        type=positive(float),
        default=600.0,
        help="seconds a factory's check may take; its code runs in a process of its own (default 600)",
    )


def run(args) -> int:
    """``vgg conform MODEL``: the report on stdout (and in --out); exit 0 when the model conforms, 1 when not."""
    with ExitStack() as held:
        if args.out is not None:  # before the work: a report must not be lost to a bad folder, nor replace one unasked
            folder = prepare_folder(args.out)
            if os.environ.get(USER_CODE) is None:  # locked while it runs (the process it runs a factory in is its own)
                held.enter_context(FolderLock(folder))
            for name in REPORT_FILES:
                prepare_file(folder / name, args.overwrite, "--out")
        if framework_of(args.model) == "torch" and os.environ.get(USER_CODE) is None:  # a factory: the user's code
            return run_user_code(args.argv, args.timeout, f"vgg conform {args.model}")
        return _conform(args)


def _conform(args) -> int:
    """The check itself, in this process: the report printed, and written to --out where given."""
    options = {
        "arch": args.arch,
        "in_channels": args.in_channels,
        "num_classes": args.num_classes,
        "input_size": args.input_size,
        "ratio": args.ratio,
        "fc_hidden": args.fc_hidden,
        "batch_norm": args.batch_norm,
    }
    report = conform(
        args.model, reference=args.reference, seed=args.seed, images=args.images, data_dir=args.data_dir, **options
    )
    print(report.to_markdown())
    if args.out:
        md, js = write_report(report, args.out)
        print(f"report: {md}\nnumbers: {js}")
    print(report.summary())
    return 0 if report.conforms else FAILED
