"""`vgg train`: one backend trained on the real Fashion-MNIST, resumable from its --out folder."""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
from pathlib import Path

from ..arch import AlexNetConfig, arch_text
from ..backends import BACKENDS, display_name, get_backend, require
from ..checkpoint import (
    RUN_FILES,
    FolderLock,
    checkpoint_file,
    file_digest,
    made_folder,
    new_run_id,
    prepare_folder,
    read_checkpoint_meta,
    remove_stale_temporaries,
    retire_run,
)
from ..data import EXAMPLES
from ..distributed import (
    check_machine,
    check_workers,
    launch,
    worker_env,
)
from ..errors import ConfigError, TrainingDiverged, WeightsError
from ..exits import INTERRUPTED
from ..files import atomic_write, check_utf8
from ..host import reuse_freed_memory
from ..spec import check_memory
from ..training import fit, parse_device
from ..weights import MODEL_SUFFIXES, meta_config, xavier_init
from .options import (
    TRAIN_DEFAULTS,
    VGG_ONLY,
    add_training,
    check_worker_options,
    fill_defaults,
    make_recipe,
    net_config,
    train_examples,
)


def add_arguments(p) -> None:
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


def _build(backend, args):
    net = backend.from_config(net_config(args, args.resize))
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
        f"--arch {arch_text(kw['arch'])}{ratio} --resize {kw['input_size']} --fc-hidden {kw['fc_hidden']} "
        f"--dropout {kw['dropout']}{bn}"
    )


def _resume_args(args, path) -> None:
    """Take the configuration and recipe of the checkpoint at ``path``; refuse options that ask for others."""

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
    fill_defaults(fresh, TRAIN_DEFAULTS)
    try:
        built = net_config(fresh, fresh.resize)
    except ConfigError:
        built = None
    same_config = built == config
    given = [o for o, (group, _) in RESUMED.items() if group == "config" and getattr(args, o) is not None]
    if given and not same_config and not isinstance(options["arch"], str):  # custom widths: no option compares alone
        flags = " ".join(
            f"--{o.replace('_', '-')} {arch_text(getattr(args, o)) if o == 'arch' else getattr(args, o)}" for o in given
        )
        raise ConfigError(
            f"{flags} {'build ' + _vgg_options(built) if built else 'do not build'}, not the run saved in {path} "
            f"({_vgg_options(config)}); a resumed run keeps its configuration: leave these options out, or start "
            f"a new run in another --out folder"
        )
    for option, (group, key) in RESUMED.items():
        value, given = saved[group].get(key), getattr(args, option)
        whole = {"train_limit": EXAMPLES["train"], "test_limit": EXAMPLES["test"]}.get(option)
        if (group == "config" and same_config) or (whole is not None and given is not None and given > value == whole):
            pass  # as given when the run started: a custom arch's widths are stored divided by its ratio
        elif given is not None and given != value:
            raise ConfigError(
                f"--{option.replace('_', '-')} {arch_text(given) if option == 'arch' else given} "
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
    compiled = " --compile" if args.compile else ""
    return f"vgg train --backend {args.backend} --out {shlex.quote(str(out))} --resume{workers}{compiled}"


def _interrupted(args, path, started: float) -> int:
    """Say what was kept after Ctrl-C and how to go on; the exit status of an interrupted command."""

    if path is None or not path.is_file():
        kept = "nothing was saved (no epoch finished)" if path else "nothing was saved (--out DIR saves every epoch)"
        print(f"interrupted: {kept}", file=sys.stderr)
        return INTERRUPTED
    meta = read_checkpoint_meta(path)
    if path.stat().st_mtime < started:  # an --overwrite run stopped before its first checkpoint
        print(
            f"interrupted: no epoch of this run finished, so nothing of it was saved; {path} still holds the "
            f"earlier run (epoch {meta['epoch']} of {meta['recipe']['num_epochs']}): continue that with: "
            f"{_resume_command(args, path.parent)}, or start again with --overwrite",
            file=sys.stderr,
        )
        return INTERRUPTED
    print(
        f"interrupted: epoch {meta['epoch']} of {meta['recipe']['num_epochs']} is saved in {path}; continue "
        f"with: {_resume_command(args, path.parent)}",
        file=sys.stderr,
    )
    return INTERRUPTED


def run(args) -> int:
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
    ckpt = checkpoint_file(out) if out else None
    if args.resume:
        _resume_args(args, ckpt)
    if out is not None and ckpt is not None:
        _check_out_folder(args, out, ckpt)
    fill_defaults(args, TRAIN_DEFAULTS)
    recipe = make_recipe(args)
    check_memory(net_config(args, args.resize), args.batch_size)  # before the framework loads
    worker = worker_env(args.backend)
    if worker is None:
        check_worker_options(args)
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
                "compile": args.compile,  # the history counts the graphs it built (compiles, compile_seconds)
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
            return INTERRUPTED
    return 0


def _run_identity(ckpt: Path | None, out: Path, native: Path) -> dict:
    """What ties a run's files together in its record: the run's id (its checkpoint's) and each file's SHA-256."""
    run = read_checkpoint_meta(ckpt).get("run") if ckpt is not None and ckpt.is_file() else None
    return {"run": run or new_run_id(), "files": {p.name: file_digest(p) for p in (out / "weights.npz", native)}}


def _check_out_folder(args, out: Path, ckpt: Path) -> None:
    """The --out folder, before the run: a run already there is kept unless --resume or --overwrite (a damaged
    checkpoint, which --overwrite replaces, is removed now); a folder where the run saves a file is refused."""
    if not args.resume and not args.overwrite:
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
    if args.overwrite and ckpt.is_file():
        try:
            read_checkpoint_meta(ckpt)
        except WeightsError:  # a damaged one, which --overwrite replaces (fit() keeps any file that is none)
            ckpt.unlink()
    if args.backend == "mxnet":  # MXNet hands paths to C as UTF-8: refused now, not after epoch 1
        check_utf8(out, "MXNet")
    blocked = [name for name in RUN_FILES if (out / name).is_dir()]
    if blocked:  # found now, not when the trained run is saved
        raise ConfigError(
            f"{out / blocked[0]} is a folder, where the run saves a file of that name; move it, or choose another --out"
        )


def _trainer(b, args, net, recipe, worker):
    """The backend's Trainer for this run (its DistributedTrainer in a worker), and whether this process leads.

    The one that leads (rank 0, or the only process) prints and writes the files.
    """
    module = importlib.import_module(f"{b.__name__}.train")
    if worker is None:
        return module.Trainer(net, recipe, b.get_device(args.device), compile=args.compile), True
    device = b.get_device("cpu") if args.device == "cpu" else _worker_device(b, args.backend, worker)
    trainer = module.DistributedTrainer(net, recipe, device, args.sync_bn)
    return trainer, trainer.rank == 0


def _worker_device(b, backend, worker):
    """A worker's device: its local GPU where there are GPUs (LOCAL_RANK under torchrun), else the CPU."""
    return b.try_gpu(worker.local) if backend == "torch" else b.try_gpu()


def _launch_workers(args, out, ckpt) -> int:
    """``vgg train --workers N``: N local workers of the backend's engine, watched until they end."""

    require(args.backend)
    check_workers(args.workers, args.batch_size, args.backend, train_examples(args))
    check_machine(args.workers, net_config(args, args.resize), args.batch_size, args.oversubscribe)
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
