"""The ``vgg`` command: summary, train, compare, convert, evaluate, bench, conform; frameworks imported when needed."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from . import PIPE_GONE, report
from .arch import CONFIGS, MAX_INT, AlexNetConfig, config_from_dict, make_any_config
from .backends import BACKENDS, display_name, get_backend, parse_backends, require
from .checkpoint import RUN_FILES, read_checkpoint_meta
from .distributed import (
    LAUNCHED,
    LOST,
    TIMEOUT,
    child_env,
    describe_exit,
    die_with_parent,
    error_status,
    leave_note,
    python_module,
    quiet_error,
    user_code_ended,
    worker_env,
)
from .errors import ArgValue, ConfigError, VGGError, WeightsError
from .spec import check_memory, spec
from .training import LOG_EVERY, LR_SCHEDULES, OPTIMIZERS, default_lr, env_seconds, fit, reuse_freed_memory

# Training options left out take these values (the checkpoint's, with --resume). `vgg train`: the book's recipe
# on VGG-11 narrowed 4x (its small_conv_arch) at 224 px.
TRAIN_DEFAULTS = {
    "arch": "vgg11",
    "ratio": 4,
    "fc_hidden": 4096,
    "batch_norm": False,
    "dropout": 0.5,
    "resize": 224,
    "epochs": 10,
    "optimizer": "sgd",
    "lr_schedule": "constant",
    "batch_size": 128,
    "seed": 0,
    "precision": "fp32",
}
# The default `vgg compare` run: VGG-11 narrowed 4x with batch norm on 32 px images, measured to reach
# >= 0.88 test accuracy in every backend within the time budget on a 2-core CPU (see README).
COMPARE_DEFAULTS = {
    **TRAIN_DEFAULTS,
    "resize": 32,
    "epochs": 5,
    "batch_norm": True,
    "fc_hidden": 512,
    "lr_schedule": "cosine",
}
# AlexNet in either command: the book's recipe (lr 0.01 for SGD, see default_lr), 10 epochs at 224 px.
ALEXNET_DEFAULTS = {"resize": 224, "epochs": 10, "lr_schedule": "constant"}
VGG_ONLY = ("ratio", "fc_hidden", "batch_norm")  # options AlexNet does not have
# `vgg summary`: the book's full-width network.
SUMMARY_DEFAULTS = {"arch": "vgg11", "ratio": 1, "fc_hidden": 4096, "batch_norm": False, "dropout": 0.5}


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        if kind is int and value > MAX_INT:  # no count here needs more, and the frameworks index no more
            raise argparse.ArgumentTypeError(f"must be at most {MAX_INT:,}, got {text}")
        return value

    return parse


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    if value > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT:,}, got {text}")
    return value


def _arch(text):
    """A configuration name ('alexnet' included), or a book-style conv_arch such as '1,64;1,128;2,256;2,512;2,512'."""
    if text in CONFIGS or text == "alexnet":
        return text
    if ";" not in text and "," not in text:
        raise argparse.ArgumentTypeError(
            f"unknown arch {text!r}: give a name ({', '.join(CONFIGS)}, alexnet) or pairs like '1,64;1,128;2,256'"
        )
    try:
        return tuple(tuple(int(v) for v in pair.split(",")) for pair in text.split(";"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"arch {text!r}: give a name ({', '.join(CONFIGS)}, alexnet) or pairs like '1,64;1,128;2,256'"
        ) from None


def _add_net_args(p, defaults):
    """The network's options; left out, they are None until the command fills in ``defaults`` (VGG's or AlexNet's)."""
    p.add_argument(
        "--arch",
        type=_arch,
        default=None,
        help=f"alexnet, a VGG configuration ({', '.join(CONFIGS)}) or VGG conv_arch pairs "
        f"'1,64;1,128;...' (default {defaults['arch']})",
    )
    p.add_argument(
        "--ratio",
        type=_positive(int),
        default=None,
        help=f"VGG: divide every conv width by this (the book's small_conv_arch is 4; default {defaults['ratio']})",
    )
    p.add_argument(
        "--fc-hidden",
        type=_positive(int),
        default=None,
        help=f"VGG: width of the two hidden dense layers (default {defaults['fc_hidden']})",
    )
    p.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"VGG: batch norm between each conv and its ReLU (default {defaults['batch_norm']})",
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=None,
        help=f"dropout of the two hidden dense layers (default {defaults['dropout']})",
    )


def _fill_defaults(args, defaults: dict) -> None:
    """Options left out (None) take ``defaults``, or AlexNet's where ``--arch alexnet``; VGG's own stay None there."""
    alexnet = (args.arch or defaults["arch"]) == "alexnet"
    for option, value in {**defaults, **(ALEXNET_DEFAULTS if alexnet else {})}.items():
        if getattr(args, option, None) is None and not (alexnet and option in VGG_ONLY):
            setattr(args, option, value)


def _config(args, input_size: int, in_channels: int = 1, num_classes: int = 10):
    """The network the options describe, validated (either network)."""
    return make_any_config(
        args.arch, in_channels, num_classes, input_size, args.ratio, args.fc_hidden, args.dropout, args.batch_norm
    )


def cmd_summary(args) -> int:
    _fill_defaults(args, SUMMARY_DEFAULTS)
    config = _config(args, args.input_size, args.in_channels, args.num_classes)
    check_memory(config)  # one this machine could not build is refused, as by every command
    s = spec(config)
    names = parse_backends(args.backends)
    headers = ["layer", "spec shape", "spec params"]
    columns, totals = [], {}
    for name in names:
        b = get_backend(name)
        net = b.abstract_network(config)  # its layers and shapes, no parameter memory
        trace = b.layer_shapes(net, config.input_size, config.in_channels)
        columns.append((name, trace, b.layer_params(net)))
        totals[name] = b.count_params(net)
        headers += [f"{name} shape", f"{name} params"]
    rows, bad = [], 0
    for i, srow in enumerate(s.group_rows()):
        row = [srow["name"], (1, *srow["shape"]), srow["params"]]
        for _, trace, params in columns:
            shape, n = trace[i][1], params.get(srow["name"], 0)
            ok = trace[i][0] == srow["name"] and shape == (1, *srow["shape"]) and n == srow["params"]
            bad += not ok
            row += [report.fmt(shape) + ("" if ok else "  ≠"), n]
        rows.append(row)
    rows.append(["total", "", s.params] + sum(([("" if totals[n] == s.params else "≠"), totals[n]] for n in names), []))
    print(report.format_table(headers, rows, title=f"summary: {config.describe()}"))
    print(
        f"MACs per example: {s.macs:,}   batch-norm statistics: {s.buffers:,}   "
        f"receptive field of the last conv: {max(layer.rf for layer in s.layers if layer.rf)} px"
    )
    mismatched = bad + sum(totals[n] != s.params for n in names)
    if mismatched:
        print(f"DISAGREEMENT: {mismatched} value(s) differ from the spec (marked ≠)", file=sys.stderr)
        return 1
    print(f"all {len(names)} backend(s) agree with the spec")
    return 0


def _build(backend, args):
    from .weights import xavier_init

    net = backend.from_config(_config(args, args.resize))
    backend.import_weights(net, xavier_init(net.config, args.seed))  # identical start in every framework
    return net


# The options of `vgg train` that a checkpoint fixes: option -> where its value is in the checkpoint.
RESUMED = {
    "arch": ("config", "arch"),
    "ratio": ("config", "ratio"),
    "resize": ("config", "input_size"),
    "fc_hidden": ("config", "fc_hidden"),
    "dropout": ("config", "dropout"),
    "batch_norm": ("config", "batch_norm"),
    "lr": ("recipe", "lr"),
    "optimizer": ("recipe", "optimizer"),
    "lr_schedule": ("recipe", "lr_schedule"),
    "batch_size": ("recipe", "batch_size"),
    "seed": ("recipe", "seed"),
    "train_limit": ("recipe", "train_examples"),
    "test_limit": ("recipe", "test_examples"),
    "precision": ("recipe", "precision"),
}


def _vgg_options(config) -> str:
    """A configuration as the options that build it (a custom arch's widths at ratio 1): ``--arch 1,4;...``."""
    if isinstance(config, AlexNetConfig):
        return config.describe()
    kw = config.vgg_kwargs()
    ratio = f" --ratio {kw['ratio']}" if isinstance(kw["arch"], str) else ""
    bn = " --batch-norm" if kw["batch_norm"] else ""
    return (
        f"--arch {_arch_text(kw['arch'])}{ratio} --resize {kw['input_size']} --fc-hidden {kw['fc_hidden']} "
        f"--dropout {kw['dropout']}{bn}"
    )


def _resume_args(args, path) -> None:
    """Take the configuration and recipe of the checkpoint at ``path``; refuse options that ask for others."""
    from .checkpoint import read_checkpoint_meta
    from .data import EXAMPLES
    from .weights import meta_config

    meta = read_checkpoint_meta(path)
    if meta["backend"] != args.backend:
        raise ConfigError(
            f"{path} is a checkpoint of the {meta['backend']} backend; resume it with --backend {meta['backend']}"
        )
    config = meta_config(meta, path)
    rebuild = config.alexnet_kwargs() if isinstance(config, AlexNetConfig) else config.vgg_kwargs()
    options = {**dict.fromkeys(VGG_ONLY), "arch": config.arch, **rebuild}  # AlexNet: no VGG options
    saved = {"config": options, "recipe": meta["recipe"]}
    fresh = argparse.Namespace(**vars(args))  # the command as it started the run: the same options build it
    _fill_defaults(fresh, TRAIN_DEFAULTS)
    try:
        built = _config(fresh, fresh.resize)
    except ConfigError:
        built = None
    same_config = built == config
    given = [o for o, (group, _) in RESUMED.items() if group == "config" and getattr(args, o) is not None]
    if given and not same_config and not isinstance(options["arch"], str):  # custom widths: no option compares alone
        flags = " ".join(
            f"--{o.replace('_', '-')} {_arch_text(getattr(args, o)) if o == 'arch' else getattr(args, o)}"
            for o in given
        )
        raise ConfigError(
            f"{flags} {'build ' + _vgg_options(built) if built else 'do not build'}, not the run saved in {path} "
            f"({_vgg_options(config)}); a resumed run keeps its configuration: leave these options out, or start "
            f"a new run in another --out folder"
        )
    for option, (group, key) in RESUMED.items():
        value, given = saved[group].get(key), getattr(args, option)
        whole = {"train_limit": EXAMPLES["train"], "test_limit": EXAMPLES["test"]}.get(option)
        if group == "config" and same_config or whole is not None and given is not None and given > value == whole:
            pass  # as given when the run started: a custom arch's widths are stored divided by its ratio
        elif given is not None and given != value:
            raise ConfigError(
                f"--{option.replace('_', '-')} {_arch_text(given) if option == 'arch' else given} "
                f"differs from the run saved in {path} ({value}); a resumed run keeps its "
                f"configuration and recipe: leave the option out, or start a new run in another "
                f"--out folder"
            )
        setattr(args, option, value)
    if args.epochs is None:  # --epochs may extend a run (common.checkpoint: never below the epochs trained)
        args.epochs = meta["recipe"]["num_epochs"]
    elif args.epochs < meta["epoch"]:
        raise ConfigError(
            f"--epochs {args.epochs}: the run saved in {path} has already trained {meta['epoch']} epoch(s); "
            f"give --epochs {meta['epoch']} or more to extend it, or leave --epochs out"
        )


def _resume_command(args, out) -> str:
    """The command that continues the run in ``out``, ready to paste (the folder quoted for the shell)."""
    workers = f" --workers {args.workers}" if args.workers > 1 else ""
    return f"vgg train --backend {args.backend} --out {shlex.quote(str(out))} --resume{workers}"


def _interrupted(args, path, started: float) -> int:
    """Say what was kept after Ctrl-C and how to go on; the exit status of an interrupted command."""
    from .checkpoint import read_checkpoint_meta

    if path is None or not path.is_file():
        kept = "nothing was saved (no epoch finished)" if path else "nothing was saved (--out DIR saves every epoch)"
        print(f"interrupted: {kept}", file=sys.stderr)
        return 130
    meta = read_checkpoint_meta(path)
    if path.stat().st_mtime < started:  # an --overwrite run stopped before its first checkpoint
        print(
            f"interrupted: no epoch of this run finished, so nothing of it was saved; {path} still holds the "
            f"earlier run (epoch {meta['epoch']} of {meta['recipe']['num_epochs']}): continue that with: "
            f"{_resume_command(args, path.parent)}, or start again with --overwrite",
            file=sys.stderr,
        )
        return 130
    print(
        f"interrupted: epoch {meta['epoch']} of {meta['recipe']['num_epochs']} is saved in {path}; continue "
        f"with: {_resume_command(args, path.parent)}",
        file=sys.stderr,
    )
    return 130


def cmd_train(args) -> int:
    from .checkpoint import FolderLock, made_folder, prepare_folder, remove_stale_temporaries

    reuse_freed_memory()  # before a framework starts its threads, so that theirs take it too
    if args.out is None:
        if args.resume:
            raise ConfigError("--resume continues the run saved in an --out folder; give --out DIR")
        return _train(args, None)
    with made_folder(args.out):  # a refused run takes away the folder it made
        out = prepare_folder(args.out)
        if worker_env(args.backend) is not None:  # a worker of a run: the process that launched it holds the lock
            return _train(args, out)
        with FolderLock(out):  # a second run on the same folder is refused at once
            remove_stale_temporaries(out)  # what a run killed while writing left
            return _train(args, out)


def _train(args, out: Path | None) -> int:
    from .checkpoint import checkpoint_file, retire_run
    from .errors import TrainingDiverged
    from .weights import MODEL_SUFFIXES, atomic_write, check_utf8

    ckpt = checkpoint_file(out) if out else None
    if args.resume:
        _resume_args(args, ckpt)
    elif out is not None and ckpt is not None and not args.overwrite:
        if ckpt.is_file():
            try:
                meta = read_checkpoint_meta(ckpt)
            except WeightsError:
                raise ConfigError(
                    f"{out} already holds a run whose {ckpt.name} cannot be read; replace the run with --overwrite, "
                    f"or choose another --out"
                ) from None
            raise ConfigError(
                f"{out} already holds a run ({ckpt.name}: epoch {meta['epoch']} of "
                f"{meta['recipe']['num_epochs']}); continue it with --resume, replace it with "
                f"--overwrite, or choose another --out"
            )
        saved = [name for name in RUN_FILES if (out / name).exists()]
        if saved:
            raise ConfigError(
                f"{out} already holds a run's files ({', '.join(saved)}); replace them with --overwrite, "
                f"or choose another --out"
            )
    if out is not None and ckpt is not None and args.overwrite and ckpt.is_file():
        try:
            read_checkpoint_meta(ckpt)
        except WeightsError:  # a damaged one, which --overwrite replaces (fit() keeps any file that is none)
            ckpt.unlink()
    if out is not None and args.backend == "mxnet":  # MXNet hands paths to C as UTF-8: refused now, not after epoch 1
        check_utf8(out, "MXNet")
    if out is not None:
        blocked = [name for name in RUN_FILES if (out / name).is_dir()]
        if blocked:  # found now, not when the trained run is saved
            raise ConfigError(
                f"{out / blocked[0]} is a folder, where the run saves a file of that name; move it, or choose "
                f"another --out"
            )
    _fill_defaults(args, TRAIN_DEFAULTS)
    recipe = _recipe(args)
    check_memory(_config(args, args.resize), args.batch_size)  # before the framework loads
    worker = worker_env(args.backend)
    if worker is None:
        _check_worker_options(args)
    if worker is None and args.workers > 1:  # start the workers; each runs this command in its engine's world
        return _launch_workers(args, out, ckpt)
    b = get_backend(args.backend)
    if worker is not None:  # before the framework does anything else (TensorFlow requires it)
        importlib.import_module(f"{b.__name__}.train").join_run()
    net = _build(b, args)
    started = time.time()
    try:
        train_iter, test_iter = b.load_data_fashion_mnist(
            args.batch_size, args.resize, args.seed, args.data_dir, args.train_limit, args.test_limit
        )
        trainer, lead = _trainer(b, args, net, recipe, worker)
        if lead:
            print(
                f"[{args.backend}] {display_name(args.backend)}: {net.config.describe()}, "
                f"{b.count_params(net):,} parameters; {args.optimizer} lr {recipe.lr:g}, batch {args.batch_size}, "
                f"{trainer.recipe.precision}, on {trainer.device}" + (f", {trainer.size} workers" if worker else ""),
                flush=True,
            )
        history = fit(
            trainer,
            train_iter,
            test_iter,
            checkpoint=ckpt if lead else None,  # only rank 0 writes
            resume_from=ckpt if args.resume else None,
            verbose=lead,
            replaces=out if args.overwrite and not args.resume else None,  # the earlier run goes whole, at epoch 1
        )
    except KeyboardInterrupt:
        return _interrupted(args, ckpt, started)
    except TrainingDiverged as e:
        if ckpt is not None and ckpt.is_file():
            raise TrainingDiverged(
                f"{e.template}. The last good epoch ({read_checkpoint_meta(ckpt)['epoch']}) stays in {ckpt}"
            ) from None
        raise
    if out and lead and ckpt is not None and args.overwrite and not args.resume and args.epochs == 0:
        retire_run(out)  # a run of no epoch wrote no checkpoint: the earlier run's goes with the rest of it
        ckpt.unlink(missing_ok=True)
    if out and lead:
        try:
            b.save_weights(net, out / "weights.npz")
            native = out / f"model{MODEL_SUFFIXES[args.backend]}"
            b.save_model(net, native)
            record = {
                "backend": args.backend,
                "framework": display_name(args.backend),
                "config": net.config.to_dict(),
                "params": b.count_params(net),
                "lr": recipe.lr,
                "lr_schedule": args.lr_schedule,
                "optimizer": args.optimizer,
                "precision": trainer.recipe.precision,  # what ran (Gluon's bf16 may fall back to fp32)
                "batch_size": args.batch_size,
                "workers": trainer.size,  # data-parallel processes (--workers)
                "seed": args.seed,
                "train_examples": train_iter.batches.num_examples,
                "test_examples": test_iter.batches.num_examples,
                "wall_seconds": history.wall_seconds,  # the loop's, summed over every part of a resumed run
                "history": history.to_dict(),
                **_run_identity(ckpt, out, native),
            }
            text = json.dumps(record, indent=1).encode()
            atomic_write(out / "history.json", lambda f: f.write(text))
            written = [
                p for p in (out / "weights.npz", native, ckpt, out / "history.json") if p is not None and p.is_file()
            ]
            print(f"[{args.backend}] wrote {', '.join(map(str, written))}")
        except KeyboardInterrupt:  # training is done and saved: only the run's other files may be of another run
            print(
                f"interrupted while writing the trained run's files: {ckpt} holds its last epoch, but weights.npz, "
                f"the model file and history.json may still be an earlier run's; write them again with: "
                f"{_resume_command(args, out)}",
                file=sys.stderr,
            )
            return 130
    return 0


def _run_identity(ckpt: Path | None, out: Path, native: Path) -> dict:
    """What ties a run's files together in its record: the run's id (its checkpoint's) and each file's SHA-256."""
    from .checkpoint import file_digest, new_run_id

    run = read_checkpoint_meta(ckpt).get("run") if ckpt is not None and ckpt.is_file() else None
    return {"run": run or new_run_id(), "files": {p.name: file_digest(p) for p in (out / "weights.npz", native)}}


def _check_worker_options(args) -> None:
    """--sync-bn and --port belong to --workers N: refused without it, rather than ignored."""
    if args.workers == 1 and args.sync_bn:
        raise ConfigError("--sync-bn synchronizes batch norm across workers: add --workers N (N > 1)")
    if args.workers == 1 and args.port is not None:
        raise ConfigError("--port is the first of the workers' ports: add --workers N (N > 1), or leave it out")


def _recipe(args):
    """The run's recipe from its options (the book's learning rate where --lr is left out), checked."""
    from .training import Recipe

    lr = args.lr or default_lr(args.optimizer, args.arch)
    return Recipe(args.epochs, lr, args.optimizer, args.lr_schedule, args.seed, args.precision)


def _trainer(b, args, net, recipe, worker):
    """The backend's Trainer for this run (its DistributedTrainer in a worker), and whether this process leads.

    The one that leads (rank 0, or the only process) prints and writes the files.
    """
    module = importlib.import_module(f"{b.__name__}.train")
    if worker is None:
        return module.Trainer(net, recipe, b.get_device(args.device)), True
    device = b.get_device("cpu") if args.device == "cpu" else _worker_device(b, args.backend, worker)
    trainer = module.DistributedTrainer(net, recipe, device, args.sync_bn)
    return trainer, trainer.rank == 0


def _worker_device(b, backend, worker):
    """A worker's device: its local GPU where there are GPUs (LOCAL_RANK under torchrun), else the CPU."""
    return b.try_gpu(worker.local) if backend == "torch" else b.try_gpu()


def _train_examples(args) -> int:
    """The training examples a run takes: --train-limit, at most the whole training split."""
    from .data import EXAMPLES

    return min(args.train_limit or EXAMPLES["train"], EXAMPLES["train"])


def _launch_workers(args, out, ckpt) -> int:
    """``vgg train --workers N``: N local workers of the backend's engine, watched until they end."""
    from .distributed import check_machine, check_workers, launch
    from .training import parse_device

    require(args.backend)
    check_workers(args.workers, args.batch_size, args.backend, _train_examples(args))
    check_machine(args.workers, _config(args, args.resize), args.batch_size, args.oversubscribe)
    if parse_device(args.device)[0] == "cuda":  # a GPU the framework does not see: refused before any worker starts
        get_backend(args.backend).get_device(args.device)
    if args.sync_bn and not args.batch_norm:
        raise ConfigError("--sync-bn synchronizes batch norm: add --batch-norm (this network has none)")
    argv = list(args.argv)
    if not args.resume and not args.overwrite and out is not None:
        argv.append("--overwrite")  # checked above; a worker must not refuse the folder rank 0 has begun to fill
    hint = _resume_command(args, out) if out else ""
    started = time.time()
    try:
        return launch(args.backend, argv, args.workers, args.port, ckpt, hint)
    except KeyboardInterrupt:
        return _interrupted(args, ckpt, started)


def cmd_compare(args) -> int:
    from .data import find_files
    from .distributed import check_machine, check_workers
    from .training import parse_device

    names = parse_backends(args.backends)
    _fill_defaults(args, COMPARE_DEFAULTS)
    check_memory(_config(args, args.resize), args.batch_size)
    _check_worker_options(args)
    # what every backend's run would refuse, refused once before any of them starts
    _recipe(args)
    parse_device(args.device)
    find_files(args.data_dir)
    for name in names:
        require(name)
        if args.workers > 1:
            check_workers(args.workers, args.batch_size, name, _train_examples(args))
    if args.workers > 1:
        check_machine(args.workers, _config(args, args.resize), args.batch_size, args.oversubscribe)
    from contextlib import ExitStack

    from .checkpoint import FolderLock, made_folder, prepare_folder

    with made_folder(args.out), ExitStack() as held:
        out = prepare_folder(args.out)
        held.enter_context(FolderLock(out))  # a second compare on the same folder is refused at once
        # every folder the compare will write is locked now, before its first run: a `vgg train` there meanwhile
        # is refused, and each backend's run is handed its folder's lock
        locks = {}
        for name in names:
            held.enter_context(made_folder(out / name))
            locks[name] = held.enter_context(FolderLock(prepare_folder(out / name)))
        _claim_compare_folder(out, names, args.resume, args.overwrite)
        return _compare(args, names, out, locks)


def _compare(args, names: list[str], out: Path, locks: Mapping | None = None) -> int:
    """Each backend's `vgg train` in its own process, one after the other, then the report."""
    from .checkpoint import checkpoint_file

    records = []
    for name in names:
        # each backend's run replaces the one an earlier `vgg compare` left in the same folder; with --resume,
        # a backend with a checkpoint continues it (a finished one only writes its files again)
        resume = args.resume and checkpoint_file(out / name).is_file()
        cmd = python_module(
            "common.cli",
            "train",
            "--backend",
            name,
            f"--out={out / name}",  # one word: a folder named like an option ("-1") stays a value
            "--resume" if resume else "--overwrite",
            "--arch",
            _arch_text(args.arch),
            "--resize",
            str(args.resize),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--optimizer",
            args.optimizer,
            "--lr-schedule",
            args.lr_schedule,
            "--dropout",
            str(args.dropout),
            "--seed",
            str(args.seed),
        )
        if args.batch_norm is not None:
            cmd.append("--batch-norm" if args.batch_norm else "--no-batch-norm")
        for flag, value in (
            ("--ratio", args.ratio),
            ("--fc-hidden", args.fc_hidden),
            ("--lr", args.lr),
            ("--train-limit", args.train_limit),
            ("--test-limit", args.test_limit),
            ("--data-dir", args.data_dir),
        ):
            if value is not None:
                cmd.append(f"{flag}={value}")
        cmd += ["--precision", args.precision, "--device", args.device, "--workers", str(args.workers)]
        if args.sync_bn:
            cmd.append("--sync-bn")
        if args.oversubscribe:
            cmd.append("--oversubscribe")
        if args.port is not None:  # the backends run one after another: each may take the same ports
            cmd += ["--port", str(args.port)]
        print(f"== {display_name(name)}", flush=True)
        try:
            env = child_env(PYTHONUNBUFFERED="1")
            fds = locks[name].pass_to(env) if locks else ()
            done = subprocess.run(cmd, env=env, pass_fds=fds, preexec_fn=die_with_parent())  # none outlives it
        except KeyboardInterrupt:  # the run got the same Ctrl-C, has saved what it could and said so
            done = subprocess.CompletedProcess(cmd, 130)
        if done.returncode == 130:
            print(
                f"interrupted: the comparison stopped in the {name} run; continue it with the same command "
                f"and --resume (finished backends are kept, each other one continues from its last checkpoint)",
                file=sys.stderr,
            )
            return 130
        if done.returncode < 0:  # killed: it could say nothing (the kernel's out-of-memory killer, say)
            print(
                f"error: the {name} run {describe_exit(done.returncode)}; continue the comparison with the same "
                f"command and --resume (each backend from its last checkpoint)",
                file=sys.stderr,
            )
            return 1
        if done.returncode == PIPE_GONE:  # the reader of the output went away: the run ended quietly, as this does
            return PIPE_GONE
        if done.returncode != 0:
            print(f"error: the {name} run failed (exit {done.returncode}); see its message above", file=sys.stderr)
            return done.returncode
        records.append(json.loads((out / name / "history.json").read_text()))
    _mark_compare_folder(out)  # every run here is now the compare's (those it resumed included)
    paths = report.write_compare_report(out, records)
    print(f"\nreport: {paths['markdown']}\nplot:   {paths['plot']}\nnumbers: {paths['json']}")
    print(paths["table"])
    return 0


COMPARE_MARK = ".vgg-compare"  # in a `vgg compare` --out: the backends' runs there are the command's own
COMPARE_FILES = ("report.md", "curves.png", "results.json")


def _claim_compare_folder(out: Path, names: list[str], resume: bool, overwrite: bool) -> None:
    """Before a compare writes into ``out``: refuse to replace what it did not write, then mark the folder its own.

    A backend's folder holding a run, or a report file, in a folder no compare has written (no mark, and no
    compare's results.json from before the mark existed) is a user's: it is replaced only with ``overwrite``.
    ``resume`` continues such a run where it has a checkpoint, and replaces nothing else of the user's. A compare
    that is not resumed also removes the report of the one before, so that one failing partway leaves no report
    that describes other runs.
    """
    from .checkpoint import checkpoint_file

    own = (out / COMPARE_MARK).is_file() or _compare_results(out / "results.json")
    resumed = [n for n in names if resume and checkpoint_file(out / n).is_file()]
    if not (own or overwrite):
        theirs = [
            out / n
            for n in names
            if n not in resumed
            and (checkpoint_file(out / n).exists() or any((out / n / f).exists() for f in RUN_FILES))
        ]
        theirs += [out / f for f in COMPARE_FILES if (out / f).exists()]
        if theirs:
            raise ConfigError(
                f"{theirs[0]} holds files vgg compare did not write; replace them with --overwrite, or choose "
                f"another --out"
            )
    if own or overwrite or not resumed:
        _mark_compare_folder(out)
    # else the user's runs it continues become its own only once it has finished them (_compare marks it then):
    # one it fails to continue stays the user's, which a later compare replaces only with --overwrite
    if not resume:
        for name in COMPARE_FILES:
            (out / name).unlink(missing_ok=True)


def _mark_compare_folder(out: Path) -> None:
    """Mark ``out`` as a compare's: its backends' runs and report files may be replaced by the next one."""
    from .weights import atomic_write

    atomic_write(out / COMPARE_MARK, lambda f: f.write(b"written by vgg compare: its runs here may be replaced\n"))


def _compare_results(path: Path) -> bool:
    """Whether ``path`` is the results.json of a compare (one from before compares marked their folders)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested past Python's limit
        return False
    return (
        isinstance(record, dict)
        and set(record) == {"runs", "test_acc_spread"}
        and isinstance(record["runs"], list)
        and all(isinstance(r, dict) and {"framework", "config", "history"} <= set(r) for r in record["runs"])
    )


def _prepare_file(path, overwrite: bool, option: str, suffixes: tuple[str, ...] = (), create: bool = False) -> Path:
    """A file a command writes when its work is done, checked now, before the work: a bad path fails first.

    Refuses an empty name, a name without one of ``suffixes`` (when given), a folder, a folder that does not
    exist (``create``: made now) or cannot be written to, and an existing file unless ``overwrite``;
    ``option`` names where the path came from.
    """
    from .checkpoint import prepare_folder
    from .weights import check_target

    if not str(path).strip():
        raise ConfigError(f"{option} was given an empty name; name the file to write")
    path = Path(path)
    if suffixes and not path.name.lower().endswith(suffixes):
        raise ConfigError(f"{option} {path}: name a {' or '.join(suffixes)} file")
    try:
        if create and not path.parent.exists():
            prepare_folder(path.parent)
        check_target(path)  # the checks every written file gets, with the option named
    except ConfigError as e:
        raise ConfigError(f"{option}: {e}") from None
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise ConfigError(f"{path} already exists; replace it with --overwrite, or choose another {option}")
    prepare_folder(path.parent)  # refused where it cannot be written
    return path


def _arch_text(arch) -> str:
    return arch if isinstance(arch, str) else ";".join(f"{n},{c}" for n, c in arch)


def _read_model(path) -> tuple:
    """(config, canonical weights, source framework) of a saved model in any of the five formats read back."""
    from .checkpoint import check_run_file
    from .interchange import file_format, load_weights_file

    fmt = file_format(path)
    check_run_file(path)  # a file of a run's folder that another run's files sit beside is refused
    if fmt == "onnx":
        raise ConfigError(
            f"{path} is an ONNX model: ONNX is a format to export to, not to read weights from; convert the "
            f".npz, .safetensors or framework file it was exported from"
        )
    if fmt in ("npz", "safetensors"):
        weights, meta = load_weights_file(path)
        return config_from_dict(meta["config"]), weights, meta["source"]  # both loaders refuse non-finite values
    b = get_backend(fmt)
    net = b.load_model(path)
    return net.config, b.export_weights(net), fmt


def cmd_convert(args) -> int:
    from .interchange import FILE_SUFFIXES, check_file_path, file_format, save_weights_file

    to = args.to or file_format(args.dst)
    check_file_path(args.dst, to)
    if Path(args.dst).resolve() == Path(args.src).resolve():
        raise ConfigError(f"{args.dst} is the source file; give another destination")
    _prepare_file(args.dst, args.overwrite, "destination")
    if to != "onnx" and (args.backend or args.batch):
        raise ConfigError("--backend and --batch choose how an ONNX model is exported; the destination is not .onnx")
    config, weights, source = _read_model(args.src)
    how = ""
    if to in ("npz", "safetensors"):
        save_weights_file(args.dst, config, weights, source, "")
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
            b.export_onnx(net, args.dst, args.batch)
            how = f", exported by {display_name(name)}"
        else:
            b.save_model(net, args.dst)
    kind = f"{display_name(to)} " if to in BACKENDS else ""
    print(f"converted {args.src} ({source}) -> {args.dst} ({kind}{FILE_SUFFIXES[to]}{how}): {config.describe()}")
    return 0


def cmd_evaluate(args) -> int:
    from .interchange import FILE_SUFFIXES, file_format

    fmt = file_format(args.model)
    if fmt == "onnx":
        return _evaluate_onnx(args)
    config, weights, source = _read_model(args.model)  # first: a file that is no model says so
    name = args.backend or (fmt if fmt not in ("npz", "safetensors") else None)
    if name is None:
        raise ConfigError(
            f"a {FILE_SUFFIXES[fmt]} model belongs to no framework: say which one evaluates it with --backend"
        )
    if config.in_channels != 1 or config.num_classes != 10:
        raise ConfigError(f"{args.model} is {config.describe()}; Fashion-MNIST needs 1 input channel and 10 classes")
    b = get_backend(name)
    net = b.import_weights(b.from_config(config), weights)
    _, test_iter = b.load_data_fashion_mnist(
        args.batch_size, config.input_size, 0, args.data_dir, None, args.test_limit
    )
    device = b.get_device(args.device)
    acc = b.evaluate_accuracy(net, test_iter, device)
    print(
        f"{args.model} ({source}) in {display_name(name)} on {device}: test acc {acc:.4f} on "
        f"{test_iter.batches.num_examples:,} Fashion-MNIST test images at {config.input_size} px"
    )
    return 0


def cmd_conform(args) -> int:
    """``vgg conform MODEL``: the report on stdout (and in --out); exit 0 when the model conforms, 1 when not."""
    from contextlib import ExitStack

    from .conform import REPORT_FILES, framework_of
    from .distributed import USER_CODE, run_user_code

    with ExitStack() as held:
        if args.out is not None:  # before the work: a report must not be lost to a bad folder, nor replace one unasked
            from .checkpoint import FolderLock, prepare_folder

            folder = prepare_folder(args.out)
            if os.environ.get(USER_CODE) is None:  # locked while it runs (the process it runs a factory in is its own)
                held.enter_context(FolderLock(folder))
            for name in REPORT_FILES:
                _prepare_file(folder / name, args.overwrite, "--out")
        if framework_of(args.model) == "torch" and os.environ.get(USER_CODE) is None:  # a factory: the user's code
            return run_user_code(args.argv, args.timeout, f"vgg conform {args.model}")
        return _conform(args)


def _conform(args) -> int:
    from .conform import conform, write_report

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
    return 0 if report.conforms else 1


def _evaluate_onnx(args) -> int:
    """``vgg evaluate MODEL.onnx``: test accuracy through ONNX Runtime, no framework imported."""
    from .data import fashion_mnist_batches
    from .interchange import evaluate_onnx, load_onnx
    from .training import parse_device

    if args.backend:
        raise ConfigError(f"{args.model} runs in ONNX Runtime; --backend chooses a framework for weights files")
    if parse_device(args.device)[0] == "cuda":
        raise ConfigError(
            f"{args.model} runs in ONNX Runtime on the CPU (its CPU package is installed); leave out --device "
            f"or give --device cpu"
        )
    model = load_onnx(args.model)
    config = model.config
    if config.in_channels != 1 or config.num_classes != 10:
        raise ConfigError(f"{args.model} is {config.describe()}; Fashion-MNIST needs 1 input channel and 10 classes")
    _, test = fashion_mnist_batches(args.batch_size, config.input_size, 0, "NCHW", args.data_dir, None, args.test_limit)
    acc = evaluate_onnx(model, test)
    print(
        f"{args.model} ({model.meta['source']}, {model.meta['exporter']}, opset {model.meta['opset']}) in ONNX "
        f"Runtime: test acc {acc:.4f} on {test.num_examples:,} Fashion-MNIST test images at {config.input_size} px"
    )
    return 0


def _bench_onnxruntime(names: list[str], args, batch_size: int, steps: int, repeats: int, summary: dict | None):
    """The ``onnxruntime`` row of ``vgg bench``: inference only, beside the frameworks' inference.

    ONNX Runtime does not train and runs a graph a framework exported, so it cannot fill a row of the training
    table: it gets its own table, of inference examples/s on the same network, weights and real batch.
    """
    from .arch import make_any_config
    from .backends import is_available
    from .interchange import bench_onnxruntime

    if args.precision != "fp32":
        raise ConfigError("ONNX Runtime runs the exported float32 graph: leave onnxruntime out of a bf16 bench")
    exporter = names[0] if names else next((n for n in BACKENDS if is_available(n)), None)
    if exporter is None:
        raise ConfigError("the onnxruntime entry needs a framework to export the network; install one")
    config = make_any_config(args.arch, 1, 10, args.resize, args.ratio)
    row = bench_onnxruntime(exporter, config, batch_size, steps, repeats)
    rows = [[r["framework"], "", r["infer_project"], r["infer_gflops"]] for r in (summary or {}).get("runs", [])]
    rows.append([row["framework"], f"{row['exporter']}, opset {row['opset']}", row["infer"], row["infer_gflops"]])
    print(
        report.format_table(
            ["executor", "graph exported by", "infer ex/s", "GFLOP/s"],
            rows,
            title=f"inference, {config.describe()}, batch {batch_size} (frameworks: the project's path)",
        )
    )
    return row


PLOT_SUFFIXES = (".png", ".pdf", ".svg")  # what --plot may be named: formats matplotlib writes
GPU_STEPS = 25  # `vgg bench --device cuda`: timed steps per repeat where --steps is left out


def cmd_bench(args) -> int:
    from .bench import BENCH_DEFAULTS, SWEEP_DEFAULTS, bench_table, run_bench, run_sweep, sweep_table

    reuse_freed_memory()  # as vgg train runs, before any framework starts its threads (common.bench)
    entries = [n.strip() for n in args.backends.split(",")]
    onnxruntime = "onnxruntime" in entries  # ONNX Runtime: an inference-only fourth row (_bench_onnxruntime)
    frameworks = [n for n in entries if n != "onnxruntime"]
    try:
        names = parse_backends(frameworks) if frameworks or not onnxruntime else []
    except ConfigError as e:
        raise ConfigError(f"{e}; add onnxruntime for ONNX Runtime's inference") from None
    if onnxruntime and args.sweep:
        raise ConfigError("--sweep measures the frameworks' training; leave onnxruntime out of --backends")
    for name in names:
        require(name)
    if args.sweep and args.arch == "alexnet":
        raise ConfigError(
            "--sweep varies VGG's width ratio and input size; for AlexNet measure one size at a "
            "time: vgg bench --arch alexnet --resize N"
        )
    _fill_defaults(args, {"arch": BENCH_DEFAULTS["arch"], "ratio": BENCH_DEFAULTS["ratio"]})  # AlexNet has no ratio
    defaults = SWEEP_DEFAULTS if args.sweep else BENCH_DEFAULTS  # for the options left out
    batch_size = args.batch_size or defaults["batch_size"]
    points = [(args.resize, args.ratio)]
    if args.sweep:
        points += [(s, args.ratio) for s in args.sizes or SWEEP_DEFAULTS["sizes"]]
        points += [(args.resize, r) for r in args.ratios or SWEEP_DEFAULTS["ratios"]]
    for size, ratio in points:  # each network as run_bench and run_sweep build it
        check_memory(make_any_config(args.arch, 1, 10, size, ratio), batch_size)
    if not args.sweep and (args.sizes or args.ratios or args.plot is not None):
        raise ConfigError("--sizes, --ratios and --plot belong to --sweep; add --sweep")
    from .training import parse_device

    if args.json is not None:  # checked before the minutes of measuring, which must not be lost to a bad path
        _prepare_file(args.json, args.overwrite, "--json", create=True)
    if args.sweep:
        args.plot = args.plot or SWEEP_DEFAULTS["plot"]
        _prepare_file(args.plot, args.overwrite, "--plot", PLOT_SUFFIXES, create=True)
    gpu = parse_device(args.device)[0] == "cuda"  # a GPU step takes milliseconds: more of them per timed repeat
    steps = args.steps or (GPU_STEPS if gpu and not args.sweep else defaults["steps"])
    repeats = args.repeats or defaults["repeats"]
    if args.workers > 1:
        if args.sweep or onnxruntime:
            raise ConfigError("--workers measures data-parallel training alone: leave out --sweep and onnxruntime")
        return _bench_workers(names, args, batch_size, steps)
    if args.sweep:
        plot = args.plot
        summary = run_sweep(
            names,
            args.arch,
            args.sizes or list(SWEEP_DEFAULTS["sizes"]),
            args.ratios or list(SWEEP_DEFAULTS["ratios"]),
            args.resize,
            args.ratio,
            batch_size,
            steps,
            repeats,
            args.precision,
            args.json,
            plot,
            args.device,
        )
        print(sweep_table(summary))
        print(f"plot: {plot}")
    else:
        summary = None
        if names:
            json_path = None if onnxruntime else args.json  # with ONNX Runtime's row, written below
            summary = run_bench(
                names,
                args.arch,
                args.ratio,
                args.resize,
                batch_size,
                steps,
                repeats,
                args.precision,
                json_path,
                args.device,
            )
            print(bench_table(summary))
        if onnxruntime:
            row = _bench_onnxruntime(names, args, batch_size, steps, repeats, summary)
            if args.json:
                from .weights import atomic_write

                record = {**(summary or {}), "onnxruntime": row}
                atomic_write(args.json, lambda f: f.write(json.dumps(record, indent=1).encode()))
    if args.json:
        print(f"numbers: {args.json}")
    return 0


def _bench_workers(names: list[str], args, batch_size: int, steps: int) -> int:
    """``vgg bench --workers N``: training examples/s of 1..N data-parallel processes of one thread each (the
    same threads in all), each a real ``vgg train --workers K`` run of two epochs of ``steps`` global batches,
    the second timed; beside it, what ``common.distributed.predict`` expects from the one-process speed."""
    import tempfile

    from .distributed import BANDWIDTHS, ENGINES, check_workers, predict

    rows = []
    for name in names:
        check_workers(args.workers, batch_size, name)
        config = make_any_config(args.arch, 1, 10, args.resize, args.ratio)
        flops, single = spec(config).train_flops, None
        for workers in range(1, args.workers + 1):
            with tempfile.TemporaryDirectory() as out:
                cmd = python_module("common.cli", "train", "--backend", name, "--arch", _arch_text(args.arch))
                cmd += [] if args.ratio is None else ["--ratio", str(args.ratio)]
                cmd += ["--resize", str(args.resize), "--batch-size", str(batch_size), "--epochs", "2"]
                cmd += ["--train-limit", str(batch_size * steps), "--test-limit", str(batch_size), "--device", "cpu"]
                cmd += ["--precision", args.precision, "--workers", str(workers), "--out", out]
                env = child_env(OMP_NUM_THREADS="1", MXNET_OMP_MAX_THREADS="1")
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=die_with_parent())
                if done.returncode != 0:
                    raise ConfigError(f"the {name} run with {workers} workers failed: {done.stderr.strip()[-300:]}")
                rate = json.loads((Path(out) / "history.json").read_text())["history"]["epochs"][-1]["examples_per_sec"]
            single = single or rate
            expected = predict(config, batch_size, workers, single * flops, BANDWIDTHS["10 Gb/s"])
            rows.append(
                [
                    display_name(name),
                    ENGINES[name].split(" (")[0],
                    workers,
                    rate,
                    f"{rate / single:.2f}x",
                    f"{rate / single / workers:.0%}",
                    f"{expected.efficiency:.0%}",
                ]
            )
    headers = ["backend", "engine", "processes", "train examples/s", "speedup", "efficiency", "model (10 Gb/s)"]
    print(report.format_table(headers, rows, title=f"data parallel, one thread per process: {config.describe()}"))
    from .bench import cpu_features

    cpu = cpu_features().get("model", "unknown")
    print(f"CPU: {cpu}; the model: docs/distributed.md")
    if args.json is not None:
        from .weights import atomic_write

        record = {"config": config.to_dict(), "batch_size": batch_size, "steps": steps, "cpu": cpu}
        record["rows"] = [dict(zip(headers, row, strict=True)) for row in rows]
        atomic_write(args.json, lambda f: f.write(json.dumps(record, indent=1).encode()))
        print(f"numbers: {args.json}")
    return 0


def _add_precision(p, default="fp32"):
    """``--precision``; ``default=None`` where the command fills it in (a resumed run takes the checkpoint's)."""
    from .training import PRECISIONS

    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help="compute precision: fp32, or bf16 (bfloat16 convolutions and matmuls, float32 weights; default fp32)",
    )


def _add_workers(p):
    """``--workers``, ``--port``, ``--sync-bn``: data parallel on the framework's own engine (docs/distributed.md)."""
    p.add_argument(
        "--workers",
        type=_positive(int),
        default=1,
        help="data-parallel worker processes on this machine, on the framework's own distributed engine; "
        "--batch-size stays the global batch, split among them (default 1: one process)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=None,
        help="with --workers: the first port of 127.0.0.1 the workers use (default: free ones are picked)",
    )
    p.add_argument(
        "--oversubscribe",
        action="store_true",
        help="with --workers: start them even where this machine has fewer CPUs, or less memory, than they need",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="with --workers and --batch-norm: batch-norm statistics over the global batch, where the "
        "framework has it (PyTorch on GPUs, tf.keras)",
    )


def _port(text):
    """A TCP port number, 1..65535."""
    value = _positive(int)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {text}")
    return value


def _positive_ints(text):
    """A comma list of whole numbers > 0, such as '32,64,96'."""
    return [_positive(int)(v) for v in text.split(",")]


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the whole usage first), like every other error."""

    commands: Mapping[str, argparse.ArgumentParser] = {}  # the top parser's: each command's own

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _quiet_frameworks(verbose: bool) -> None:
    """Without ``--verbose``, TensorFlow keeps its start-up notices to itself (here and in every process started
    from here): TF_CPP_MIN_LOG_LEVEL 2 unless the user set it; with it, the user's value or everything."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")


def build_parser() -> _Parser:
    parser = _Parser(prog="vgg", description="VGG in PyTorch, tf.keras and MXNet Gluon, held to one analytic spec.")
    verbose_help = "show the frameworks' start-up log lines (TensorFlow's are hidden otherwise)"
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="layer-by-layer shapes and parameters of every backend beside the spec")
    _add_net_args(p, SUMMARY_DEFAULTS)
    p.add_argument("--backends", default="all", help="'all' or a comma list of " + ", ".join(BACKENDS))
    p.add_argument("--in-channels", type=_positive(int), default=1)
    p.add_argument("--num-classes", type=_positive(int), default=10)
    p.add_argument("--input-size", type=_positive(int), default=224)
    p.set_defaults(func=cmd_summary)

    def add_training(p, defaults):
        """The training options, all None when left out: the command fills in ``defaults`` (or a checkpoint's)."""
        _add_net_args(p, defaults)

        def default(option):  # "default X", and AlexNet's where it differs
            alex = ALEXNET_DEFAULTS.get(option, defaults[option])
            return f"default {defaults[option]}" + (f", AlexNet {alex}" if alex != defaults[option] else "")

        p.add_argument(
            "--resize",
            type=_positive(int),
            default=None,
            help=f"input side in pixels, bilinear from 28 (VGG >= 32, AlexNet >= 65; {default('resize')})",
        )
        p.add_argument("--epochs", type=_non_negative_int, default=None, help=f"({default('epochs')})")
        p.add_argument(
            "--lr",
            type=_positive(float),
            default=None,
            help="learning rate (default: sgd 0.05, AlexNet 0.01 as in the book; adam 0.001)",
        )
        p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"(default {defaults['optimizer']})")
        p.add_argument(
            "--lr-schedule",
            choices=LR_SCHEDULES,
            default=None,
            help=f"constant (the book's) or cosine, annealed per epoch ({default('lr_schedule')})",
        )
        p.add_argument("--batch-size", type=_positive(int), default=None, help=f"(default {defaults['batch_size']})")
        p.add_argument("--seed", type=int, default=None, help="fixes the initial weights, batch order and dropout")
        p.add_argument(
            "--train-limit", type=_positive(int), default=None, help="use only the first N training examples"
        )
        p.add_argument("--test-limit", type=_positive(int), default=None, help="use only the first N test examples")
        p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (else searched)")
        _add_device(p)
        _add_precision(p, default=None)
        _add_workers(p)

    p = sub.add_parser("train", help="train one backend on the real Fashion-MNIST, the book's recipe")
    p.add_argument("--backend", choices=list(BACKENDS), required=True)
    add_training(p, TRAIN_DEFAULTS)
    p.add_argument(
        "--out",
        default=None,
        help="folder for weights.npz, history.json and checkpoint.npz (written after every epoch)",
    )
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out from its last checkpoint (configuration and recipe come from it)",
    )
    resume.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already saved in --out (without it, an existing checkpoint there is never overwritten)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="train the same VGG in every backend and write a report with plots")
    add_training(p, COMPARE_DEFAULTS)
    p.add_argument("--backends", default="all", help="'all' or a comma list of " + ", ".join(BACKENDS))
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted compare in --out: each backend from its last checkpoint, finished ones kept",
    )
    resume.add_argument(
        "--overwrite",
        action="store_true",
        help="replace runs in --out that vgg compare did not write (its own it replaces without this)",
    )
    p.set_defaults(func=cmd_compare)

    formats = (
        "*.npz or *.safetensors (any framework), *.pt (PyTorch), *.weights.h5 (tf.keras), *.params (MXNet)"
        "; evaluate also reads *.onnx (ONNX Runtime)"
    )
    from .bench import BENCH_DEFAULTS, SWEEP_DEFAULTS

    bd, sw = BENCH_DEFAULTS, SWEEP_DEFAULTS
    p = sub.add_parser("bench", help="training and inference speed per backend, beside the book's code and the peak")
    p.add_argument(
        "--backends",
        default="all",
        help="'all' or a comma list of " + ", ".join(BACKENDS) + "; add onnxruntime for ONNX Runtime's inference",
    )
    p.add_argument("--arch", type=_arch, default=bd["arch"])
    p.add_argument(
        "--ratio",
        type=_positive(int),
        default=None,
        help=f"VGG (default {bd['ratio']}; with --sweep, the ratio of the input-size series)",
    )
    p.add_argument(
        "--resize",
        type=_positive(int),
        default=bd["resize"],
        help=f"(default {bd['resize']}; with --sweep, the input size of the ratio series)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive(int),
        default=None,
        help=f"(default {bd['batch_size']}; {sw['batch_size']} with --sweep)",
    )
    p.add_argument(
        "--steps",
        type=_positive(int),
        default=None,
        help=f"steps per timed repeat (default {bd['steps']}; {sw['steps']} with --sweep)",
    )
    p.add_argument(
        "--repeats",
        type=_positive(int),
        default=None,
        help=f"the median is shown (default {bd['repeats']}; {sw['repeats']} with --sweep)",
    )
    _add_precision(p)
    _add_device(p)
    p.add_argument("--json", default=None, help="also write every number to this JSON file")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="how cost grows: every --sizes at --ratio and every "
        "--ratios at --resize, the project's path, each point in a fresh process (peak memory per point)",
    )
    p.add_argument(
        "--sizes",
        type=_positive_ints,
        default=None,
        help=f"with --sweep: input sizes (default {','.join(map(str, sw['sizes']))})",
    )
    p.add_argument(
        "--ratios",
        type=_positive_ints,
        default=None,
        help=f"with --sweep: width ratios (default {','.join(map(str, sw['ratios']))})",
    )
    p.add_argument(
        "--plot", default=None, help=f"with --sweep: where the plot goes, .png, .pdf or .svg (default {sw['plot']})"
    )
    p.add_argument("--overwrite", action="store_true", help="replace the --json or --plot file if it exists")
    p.add_argument(
        "--workers",
        type=_positive(int),
        default=1,
        help="data-parallel training of 1..N processes, one thread each, beside the scaling model (default 1: off)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("convert", help="convert a saved model between frameworks and formats, or export it to ONNX")
    p.add_argument("src", help=f"a saved model: {formats.split(';')[0]}")
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
        type=_positive(int),
        default=None,
        help="to .onnx: a fixed batch size (default: a dynamic batch axis)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace dst if it exists (without it, dst is kept)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("conform", help="hold anyone's VGG or AlexNet port to the spec; say where it first goes wrong")
    p.add_argument(
        "model",
        help="*.onnx, *.keras, an MXNet Gluon export (*-symbol.json beside its *.params), or a PyTorch factory "
        "module.path:function (imported and called; nothing unpickled)",
    )
    p.add_argument(
        "--arch", type=_arch, default=None, help="alexnet, a VGG name or conv_arch pairs (default: inferred)"
    )
    p.add_argument("--in-channels", type=_positive(int), default=None, help="(default: inferred)")
    p.add_argument("--num-classes", type=_positive(int), default=None, help="(default: inferred)")
    p.add_argument(
        "--input-size", type=_positive(int), default=None, help="(default: declared by the model, or inferred)"
    )
    p.add_argument("--ratio", type=_positive(int), default=None, help="VGG: width divisor (default: inferred)")
    p.add_argument("--fc-hidden", type=_positive(int), default=None, help="VGG (default: inferred)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None, help="VGG (default: inferred)")
    p.add_argument(
        "--reference", choices=list(BACKENDS), default="torch", help="the backend that runs the same weights (torch)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights loaded into both (default 0)")
    p.add_argument("--images", type=_positive(int), default=4, help="real test images compared (default 4)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (else searched)")
    p.add_argument("--out", default=None, help="folder for conformance.md and conformance.json")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.add_argument(
        "--timeout",
        type=_positive(float),
        default=600.0,
        help="seconds a factory's check may take; its code runs in a process of its own (default 600)",
    )
    p.set_defaults(func=cmd_conform)

    p = sub.add_parser("evaluate", help="test accuracy of a saved model on the real Fashion-MNIST test set")
    p.add_argument("model", help=f"a saved model: {formats}")
    p.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default=None,
        help="framework to run it in (default: the file's own; needed for .npz and .safetensors)",
    )
    p.add_argument("--batch-size", type=_positive(int), default=256)
    p.add_argument("--test-limit", type=_positive(int), default=None, help="use only the first N test examples")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (else searched)")
    _add_device(p)
    p.set_defaults(func=cmd_evaluate)
    for p in sub.choices.values():  # also after the command; absent there, it leaves the value before it alone
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    parser.commands = sub.choices  # each command's parser, for its errors
    return parser


def _add_device(p) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a GPU when the framework sees one, else the CPU), cpu, cuda or cuda:N (default auto)",
    )


def option_for(argument: str, command: str) -> str:
    """The option of ``vgg COMMAND`` that sets the Python API's ``argument``: the one place they are matched.

    ``input_size`` is ``--resize`` where the command resizes the images to it (``vgg summary`` has
    ``--input-size``); every other argument is its name with dashes (``fc_hidden`` -> ``--fc-hidden``).
    """
    if argument == "input_size" and command in ("train", "compare", "bench"):
        return "--resize"
    return "--" + argument.replace("_", "-")


def message_for(error: VGGError, command: str) -> str:
    """The error's message with every argument it names written as ``vgg COMMAND``'s option (``--resize 32``)."""

    def spell(argument: str, value: ArgValue) -> str:
        option = option_for(argument, command)
        if value is None or value is True:
            return option
        if value is False:
            return "--no-" + option.removeprefix("--")
        return f"{option} {_arch_text(value) if argument == 'arch' else value}"

    return error.spelled(spell)


def _terminated(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        os.getcwd()
    except FileNotFoundError:  # relative paths mean nothing, and libraries fail at import (oneMKL: "FATAL ERROR")
        print(
            "error: the working folder was deleted; change to a folder that exists (cd) and run it again",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, which names its own --help
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv  # what a worker started by --workers runs again
    _quiet_frameworks(args.verbose)
    # SIGTERM (`kill`, a scheduler, `timeout`) stops a command as Ctrl-C does: the files being written are
    # removed, what was saved is said, and how to go on. Not in a worker, which its launcher stops this way.
    # SIGHUP (the terminal closed) too, unless it is ignored (nohup).
    on_term = os.environ.get(LAUNCHED) is None and _main_thread()
    stops = [signal.SIGTERM] + [signal.SIGHUP] * (signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN)
    before = {sig: signal.signal(sig, _terminated) for sig in stops} if on_term else {}
    try:
        env_seconds("VGG_PROGRESS_EVERY", LOG_EVERY, zero=True)  # a bad value is one line now, not mid-run
        env_seconds("VGG_DIST_TIMEOUT", TIMEOUT)
        return args.func(args)
    except VGGError as e:
        if not quiet_error(e):
            print(f"error: {message_for(e, args.command)}", file=sys.stderr)
        else:  # a worker's own error: its launcher says it where it stopped the run
            leave_note(message_for(e, args.command))
        return error_status(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a name too long for the file system, met where a path is first looked at
        if e.errno != errno.ENAMETOOLONG:
            raise
        print(
            f"error: {e.filename}: a name in it is longer than the file system takes; choose a shorter one",
            file=sys.stderr,
        )
        return 2
    finally:
        user_code_ended()  # not reached where a user's code ended the process (vgg conform's factory)
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    from . import quiet_pipe

    try:
        status = quiet_pipe(main)
    except BaseException:
        if os.environ.get(LAUNCHED) is None:
            raise
        import traceback  # a worker: said here, then left at once (below), never stuck in a framework's teardown

        traceback.print_exc()
        status = 1
    if status != 0 and os.environ.get(LAUNCHED) is not None or status == LOST:
        # a worker that stopped, or lost its peers: the engine's threads, still in a collective, may abort() the
        # interpreter's exit (PyTorch's gloo does) or wait in it for good (MXNet's ps-lite); leave at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
