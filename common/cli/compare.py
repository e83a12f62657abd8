"""`vgg compare`: the same network trained in every backend, each in its own process, and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from .. import report
from ..arch import arch_text
from ..backends import BACKENDS, display_name, parse_backends, require
from ..checkpoint import (
    FolderLock,
    checkpoint_file,
    claim_compare_folder,
    made_folder,
    mark_compare_folder,
    prepare_folder,
)
from ..data import find_files
from ..distributed import check_machine, check_workers
from ..exits import FAILED, INTERRUPTED, PIPE_GONE
from ..processes import child_env, describe_exit, die_with_parent, python_module
from ..spec import check_memory
from ..training import parse_device
from .options import (
    COMPARE_DEFAULTS,
    add_training,
    check_worker_options,
    fill_defaults,
    make_recipe,
    net_config,
    train_examples,
)


def add_arguments(p) -> None:
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


def run(args) -> int:
    names = parse_backends(args.backends)
    fill_defaults(args, COMPARE_DEFAULTS)
    check_memory(net_config(args, args.resize), args.batch_size)
    check_worker_options(args)
    # what every backend's run would refuse, refused once before any of them starts
    make_recipe(args)
    parse_device(args.device)
    find_files(args.data_dir)
    for name in names:
        require(name)
        if args.workers > 1:
            check_workers(args.workers, args.batch_size, name, train_examples(args))
    if args.workers > 1:
        check_machine(args.workers, net_config(args, args.resize), args.batch_size, args.oversubscribe)

    with made_folder(args.out), ExitStack() as held:
        out = prepare_folder(args.out)
        held.enter_context(FolderLock(out))  # a second compare on the same folder is refused at once
        # every folder the compare will write is locked now, before its first run: a `vgg train` there meanwhile
        # is refused, and each backend's run is handed its folder's lock
        locks = {}
        for name in names:
            held.enter_context(made_folder(out / name))
            locks[name] = held.enter_context(FolderLock(prepare_folder(out / name)))
        claim_compare_folder(out, names, args.resume, args.overwrite)
        return _compare(args, names, out, locks)


def _compare(args, names: list[str], out: Path, locks: Mapping[str, FolderLock] | None = None) -> int:
    """Each backend's `vgg train` in its own process, one after the other, then the report."""

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
            arch_text(args.arch),
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
        if args.compile:
            cmd.append("--compile")
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
            done = subprocess.CompletedProcess(cmd, INTERRUPTED)
        if done.returncode == INTERRUPTED:
            print(
                f"interrupted: the comparison stopped in the {name} run; continue it with the same command "
                f"and --resume (finished backends are kept, each other one continues from its last checkpoint)",
                file=sys.stderr,
            )
            return INTERRUPTED
        if done.returncode < 0:  # killed: it could say nothing (the kernel's out-of-memory killer, say)
            print(
                f"error: the {name} run {describe_exit(done.returncode)}; continue the comparison with the same "
                f"command and --resume (each backend from its last checkpoint)",
                file=sys.stderr,
            )
            return FAILED
        if done.returncode == PIPE_GONE:  # the reader of the output went away: the run ended quietly, as this does
            return PIPE_GONE
        if done.returncode != 0:
            print(f"error: the {name} run failed (exit {done.returncode}); see its message above", file=sys.stderr)
            return done.returncode
        records.append(json.loads((out / name / "history.json").read_text()))
    mark_compare_folder(out)  # every run here is now the compare's (those it resumed included)
    paths = report.write_compare_report(out, records)
    print(f"\nreport: {paths['markdown']}\nplot:   {paths['plot']}\nnumbers: {paths['json']}")
    print(paths["table"])
    return 0
