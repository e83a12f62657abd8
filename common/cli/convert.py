"""`vgg convert`: a saved model into another framework's or format's file, or exported to ONNX."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ..backends import BACKENDS, display_name, get_backend
from ..checkpoint import check_run_file
from ..errors import ConfigError
from ..files import atomic_write
from ..interchange import FILE_SUFFIXES, check_file_path, file_format, read_model, save_weights_file
from .options import (
    FORMATS,
    positive,
    prepare_file,
)


def add_arguments(p) -> None:
    p.add_argument("src", help=f"a saved model: {FORMATS.split(';')[0]}")
    p.add_argument("dst", help="where to write it, named for its format (*.onnx: an ONNX model)")
    p.add_argument(
        "--to",
        choices=[*BACKENDS, "npz", "safetensors", "onnx"],
        default=None,
        help="the destination's format (default: from its name)",
    )
    p.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default=None,
        help="to .onnx: the framework whose exporter writes it (default: the source file's framework)",
    )
    p.add_argument(
        "--batch",
        type=positive(int),
        default=None,
        help="to .onnx: a fixed batch size (default: a dynamic batch axis)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace dst if it exists (without it, dst is kept)")


def run(args) -> int:
    to = args.to or file_format(args.dst)
    check_file_path(args.dst, to)
    if Path(args.dst).resolve() == Path(args.src).resolve():
        raise ConfigError(f"{args.dst} is the source file; give another destination")
    prepare_file(args.dst, args.overwrite, "destination")
    if to != "onnx" and (args.backend or args.batch):
        raise ConfigError("--backend and --batch choose how an ONNX model is exported; the destination is not .onnx")
    check_run_file(args.src)  # a file of a run's folder that another run's files sit beside is refused
    config, weights, source = read_model(args.src)
    how = ""
    if to in ("npz", "safetensors"):
        write = partial(save_weights_file, config=config, weights=weights, source=source, source_version="")
    else:
        name = (args.backend or source) if to == "onnx" else to
        if name not in BACKENDS:
            raise ConfigError(
                f"{args.src} names no framework ({source!r}) to export it with; choose one: --backend "
                + " | ".join(BACKENDS)
            )
        b = get_backend(name)
        net = b.import_weights(b.from_config(config), weights)
        if to == "onnx":
            write = partial(b.export_onnx, net, batch=args.batch)
            how = f", exported by {display_name(name)}"
        else:
            write = partial(b.save_model, net)
    # written whole beside dst, then put in place: a file that appeared at dst meanwhile is kept without --overwrite
    atomic_write(args.dst, write, by_name=True, overwrite=args.overwrite)
    kind = f"{display_name(to)} " if to in BACKENDS else ""
    print(f"converted {args.src} ({source}) -> {args.dst} ({kind}{FILE_SUFFIXES[to]}{how}): {config.describe()}")
    return 0
