"""The ``vgg`` command: summary, train, compare, convert. Frameworks are imported only when a command needs one."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import report
from .arch import CONFIGS, make_config
from .backends import BACKENDS, display_name, get_backend, parse_backends, require
from .errors import ConfigError, VGGError
from .spec import spec
from .training import DEFAULT_LR, OPTIMIZERS, History

# The default `vgg compare` run: VGG-11 narrowed 4x with batch norm on 32 px images, measured to reach
# >= 0.88 test accuracy in every backend within the time budget on a 2-core CPU (see README).
COMPARE_DEFAULTS = {"arch": "vgg11", "ratio": 4, "resize": 32, "epochs": 3, "batch_norm": True,
                    "fc_hidden": 512, "lr": 0.05, "optimizer": "sgd", "batch_size": 128}


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _arch(text):
    """A configuration name, or a book-style conv_arch such as '1,64;1,128;2,256;2,512;2,512'."""
    if text in CONFIGS or ";" not in text and "," not in text:
        return text
    try:
        return tuple(tuple(int(v) for v in pair.split(",")) for pair in text.split(";"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"arch {text!r}: give a name ({', '.join(CONFIGS)}) or pairs like "
                                         f"'1,64;1,128;2,256'") from None


def _add_net_args(p, defaults=None):
    d = {"arch": "vgg11", "ratio": 1, "fc_hidden": 4096, "batch_norm": False, **(defaults or {})}
    p.add_argument("--arch", type=_arch, default=d["arch"],
                   help=f"configuration name ({', '.join(CONFIGS)}) or conv_arch pairs '1,64;1,128;...' "
                        f"(default {d['arch']})")
    p.add_argument("--ratio", type=_positive(int), default=d["ratio"], help="divide every conv width by this "
                   f"(the book's small_conv_arch is 4; default {d['ratio']})")
    p.add_argument("--fc-hidden", type=_positive(int), default=d["fc_hidden"],
                   help=f"width of the two hidden dense layers (default {d['fc_hidden']})")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=d["batch_norm"],
                   help="batch norm between each conv and its ReLU")
    p.add_argument("--dropout", type=float, default=0.5, help="dropout of the two hidden dense layers")


def cmd_summary(args) -> int:
    config = make_config(args.arch, args.in_channels, args.num_classes, args.input_size, args.ratio,
                         args.fc_hidden, args.dropout, args.batch_norm)
    s = spec(config)
    names = parse_backends(args.backends)
    headers = ["layer", "spec shape", "spec params"]
    columns, totals = [], {}
    for name in names:
        b = get_backend(name)
        net = b.vgg(**config.vgg_kwargs())
        trace = b.layer_shapes(net, config.input_size, config.in_channels)
        params = _group_params(b, net)
        columns.append((name, trace, params))
        totals[name] = b.count_params(net)
        headers += [f"{name} shape", f"{name} params"]
    rows, bad = [], 0
    for i, srow in enumerate(s.group_rows()):
        row = [srow["name"], (1, *srow["shape"]), srow["params"]]
        for _, trace, params in columns:
            shape, n = trace[i][1], params[srow["name"]]
            ok = trace[i][0] == srow["name"] and shape == (1, *srow["shape"]) and n == srow["params"]
            bad += not ok
            row += [report.fmt(shape) + ("" if ok else "  ≠"), n]
        rows.append(row)
    rows.append(["total", "", s.params] + sum(([("" if totals[n] == s.params else "≠"), totals[n]]
                                                for n in names), []))
    print(report.format_table(headers, rows, title=f"VGG summary: {config.describe()}"))
    print(f"MACs per example: {s.macs:,}   batch-norm statistics: {s.buffers:,}   "
          f"receptive field of the last conv: {max(l.rf for l in s.layers if l.rf)} px")
    mismatched = bad + sum(totals[n] != s.params for n in names)
    if mismatched:
        print(f"DISAGREEMENT: {mismatched} value(s) differ from the spec (marked ≠)", file=sys.stderr)
        return 1
    print(f"all {len(names)} backend(s) agree with the spec")
    return 0


def _group_params(backend, net) -> dict[str, int]:
    """Trainable parameters per top-level layer, counted by the backend from its exported canonical weights."""
    counts: dict[str, int] = {}
    trainable = set(spec(net.config).param_shapes())
    for name, array in backend.export_weights(net).items():
        if name in trainable and not name.endswith(("running_mean", "running_var")):
            group = name.split(".")[0]
            counts[group] = counts.get(group, 0) + array.size
    return {g: counts.get(g, 0) for g in spec(net.config).groups()}


def _build(backend, args):
    from .weights import xavier_init

    net = backend.vgg(args.arch, 1, 10, args.resize, args.ratio, args.fc_hidden, args.dropout, args.batch_norm)
    backend.import_weights(net, xavier_init(net.config, args.seed))  # identical start in every framework
    return net


def _input_size(args) -> int:
    if args.resize is None:
        raise ConfigError("Fashion-MNIST's 28 px images cannot pass five 2x2 pools; give --resize 32 or more "
                          "(the book uses 224)")
    return args.resize


def cmd_train(args) -> int:
    _input_size(args)
    lr = args.lr or DEFAULT_LR[args.optimizer]
    b = get_backend(args.backend)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    net = _build(b, args)
    print(f"[{args.backend}] {display_name(args.backend)}: {net.config.describe()}, "
          f"{b.count_params(net):,} parameters; {args.optimizer} lr {lr:g}, batch {args.batch_size}", flush=True)
    train_iter, test_iter = b.load_data_fashion_mnist(args.batch_size, args.resize, args.seed, args.data_dir,
                                                      args.train_limit, args.test_limit)
    start = time.perf_counter()
    history = b.train(net, train_iter, test_iter, args.epochs, lr, args.optimizer, None, args.seed)
    wall = time.perf_counter() - start
    if out:
        b.save_weights(net, out / "weights.npz")
        record = {"backend": args.backend, "framework": display_name(args.backend), "config": net.config.to_dict(),
                  "params": b.count_params(net), "lr": lr, "optimizer": args.optimizer,
                  "batch_size": args.batch_size, "seed": args.seed, "train_examples": train_iter.batches.num_examples,
                  "test_examples": test_iter.batches.num_examples, "wall_seconds": wall, "history": history.to_dict()}
        (out / "history.json").write_text(json.dumps(record, indent=1))
        print(f"[{args.backend}] wrote {out / 'weights.npz'} and {out / 'history.json'}")
    return 0


def cmd_compare(args) -> int:
    names = parse_backends(args.backends)
    _input_size(args)
    make_config(args.arch, 1, 10, args.resize, args.ratio, args.fc_hidden, args.dropout, args.batch_norm)
    for name in names:
        require(name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name in names:
        cmd = [sys.executable, "-m", "common.cli", "train", "--backend", name, "--out", str(out / name),
               "--arch", _arch_text(args.arch), "--ratio", str(args.ratio), "--resize", str(args.resize),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--optimizer", args.optimizer,
               "--fc-hidden", str(args.fc_hidden), "--dropout", str(args.dropout), "--seed", str(args.seed),
               "--batch-norm" if args.batch_norm else "--no-batch-norm"]
        for flag, value in (("--lr", args.lr), ("--train-limit", args.train_limit),
                            ("--test-limit", args.test_limit), ("--data-dir", args.data_dir)):
            if value is not None:
                cmd += [flag, str(value)]
        print(f"== {display_name(name)}", flush=True)
        done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode != 0:
            print(f"error: the {name} run failed (exit {done.returncode}); see its message above", file=sys.stderr)
            return done.returncode
        records.append(json.loads((out / name / "history.json").read_text()))
    paths = report.write_compare_report(out, records)
    print(f"\nreport: {paths['markdown']}\nplot:   {paths['plot']}\nnumbers: {paths['json']}")
    print(paths["table"])
    return 0


def _arch_text(arch) -> str:
    return arch if isinstance(arch, str) else ";".join(f"{n},{c}" for n, c in arch)


def cmd_convert(args) -> int:
    from .weights import load_npz, read_meta, save_npz
    from .arch import VGGConfig

    meta = read_meta(args.src)
    config = VGGConfig.from_dict(meta["config"])
    weights, _ = load_npz(args.src)
    if args.to == "npz":
        save_npz(args.dst, config, weights, meta["source"], meta["source_version"])
    else:
        b = get_backend(args.to)
        net = b.vgg(**config.vgg_kwargs())
        b.import_weights(net, weights)
        b.save_weights(net, args.dst)
    print(f"converted {args.src} ({meta['source']}) -> {args.dst} ({args.to})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgg", description="VGG in PyTorch, tf.keras and MXNet Gluon, "
                                     "held to one analytic spec.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="layer-by-layer shapes and parameters of every backend beside the spec")
    _add_net_args(p)
    p.add_argument("--backends", default="all", help="'all' or a comma list of " + ", ".join(BACKENDS))
    p.add_argument("--in-channels", type=_positive(int), default=1)
    p.add_argument("--num-classes", type=_positive(int), default=10)
    p.add_argument("--input-size", type=_positive(int), default=224)
    p.set_defaults(func=cmd_summary)

    def add_training(p, defaults):
        _add_net_args(p, defaults)
        p.add_argument("--resize", type=_positive(int), default=defaults["resize"],
                       help=f"input side in pixels, bilinear from 28 (>= 32; default {defaults['resize']})")
        p.add_argument("--epochs", type=_non_negative_int, default=defaults["epochs"])
        p.add_argument("--lr", type=_positive(float), default=None,
                       help="learning rate (default: 0.05 for sgd, 0.001 for adam)")
        p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults["optimizer"])
        p.add_argument("--batch-size", type=_positive(int), default=defaults["batch_size"])
        p.add_argument("--seed", type=int, default=0, help="fixes the initial weights, batch order and dropout")
        p.add_argument("--train-limit", type=_positive(int), default=None, help="use only the first N training "
                       "examples")
        p.add_argument("--test-limit", type=_positive(int), default=None, help="use only the first N test examples")
        p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (else searched)")

    p = sub.add_parser("train", help="train one backend on the real Fashion-MNIST, the book's recipe")
    p.add_argument("--backend", choices=list(BACKENDS), required=True)
    add_training(p, {"arch": "vgg11", "ratio": 4, "resize": 224, "epochs": 10, "optimizer": "sgd",
                     "batch_size": 128})
    p.add_argument("--out", default=None, help="folder for weights.npz and history.json")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="train the same VGG in every backend and write a report with plots")
    add_training(p, COMPARE_DEFAULTS)
    p.add_argument("--backends", default="all", help="'all' or a comma list of " + ", ".join(BACKENDS))
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("convert", help="convert a saved model between frameworks")
    p.add_argument("src", help="a weights .npz written by any backend")
    p.add_argument("dst")
    p.add_argument("--to", choices=[*BACKENDS, "npz"], required=True)
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VGGError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
