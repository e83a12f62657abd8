"""The GPU check: the book's own PyTorch code and this project's side by side on one GPU, in one script.

Run it through ``scripts/gpu_check.sh`` (it sets ``PYTHONPATH``; no install step). It needs PyTorch with CUDA,
torchvision (for the book's own loader) and the four Fashion-MNIST files in ``$FASHION_MNIST_DIR``. Parts:

1. the same seed gives the same batches on the host and on the GPU; a checkpoint written on the GPU resumes
   on the CPU and the other way round (``vgg train --resume``);
2. ``vgg bench --device cuda`` at 224 px: ratio 4 (the book's run) and ratio 1 (full-width VGG-11), fp32 and bf16;
3. the book's 10-epoch run (VGG-11 ratio 4, 224 px, lr 0.05, batch 128) with this project's ``train`` on
   ``cuda``, then the same training step on one resident batch in the same process;
4. the same run with the book's own code: torchvision's ``FashionMNIST`` + ``Resize(224)`` with 4 loader
   workers, the book's ``vgg`` and ``train_ch6`` as printed in *Dive into Deep Learning*;
5. where the host CPU has AMX (``amx_bf16``): ``vgg bench --device cpu`` at its defaults on two of its cores,
   fp32 and bf16 (the AMX rows of docs/bf16.md);
6. with ``--levers`` only: ``torch.compile`` against the eager step, fp32 and bf16, full-width VGG-11.

Every part writes its numbers to ``OUT/gpu_check.json`` as soon as it has them; the end prints one table.
``--quick`` runs the same parts small (1 epoch, 2,048 examples, 64 px) to check the script itself, also on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS: dict = {}


def save(out: Path, key: str, value) -> None:
    RESULTS[key] = value
    (out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    print(f"== {key}: {json.dumps(value, default=str)[:600]}", flush=True)


def part(out: Path, key: str, fn, *args):
    """Run one part; a failure is recorded and the next part still runs."""
    start = time.perf_counter()
    try:
        value = fn(*args)
    except Exception as e:
        traceback.print_exc()
        value = {"error": f"{type(e).__name__}: {e}"}
    value["part_seconds"] = time.perf_counter() - start
    save(out, key, value)
    return value


def vgg_cli(*args, timeout=600, cores=None) -> subprocess.CompletedProcess:
    """``vgg ARGS`` in a child process (on the CPUs ``cores`` only, where given); its output is printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pin = None if cores is None else lambda: os.sched_setaffinity(0, cores)
    command = [sys.executable, "-m", "common.cli", *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=pin)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"vgg {' '.join(map(str, args))} failed: {done.stderr.strip()[-800:]}")
    return done


# 1. Same batches, checkpoints across devices -------------------------------------------------------------------


def same_batches_and_resume(device: str, work: Path) -> dict:
    from vgg_torch.data import DeviceIter, load_data_fashion_mnist

    train_iter, _ = load_data_fashion_mnist(128, resize=224, seed=7, train_limit=1024, test_limit=128)
    host = [b for _, b in zip(range(3), train_iter, strict=False)]
    train_iter.batches.epoch = 0
    gpu = [b for _, b in zip(range(3), DeviceIter(train_iter.batches, device), strict=False)]
    labels_equal = all(torch.equal(y.cpu(), yd.cpu()) for (_, y), (_, yd) in zip(host, gpu, strict=True))
    pixel_diff = max(float((x - xd.cpu()).abs().max()) for (x, _), (xd, _) in zip(host, gpu, strict=True))
    tiny = ["--backend", "torch", "--ratio", "8", "--resize", "32", "--fc-hidden", "64", "--batch-size", "64"]
    tiny += ["--train-limit", "2048", "--test-limit", "512", "--seed", "3"]
    resumed = {}
    for i, (first, then) in enumerate(((device, "cpu"), ("cpu", device))):
        run = work / f"resume_{i}"
        vgg_cli("train", *tiny, "--epochs", "1", "--device", first, "--out", run)
        vgg_cli("train", "--backend", "torch", "--resume", "--epochs", "2", "--device", then, "--out", run)
        history = json.loads((run / "history.json").read_text())["history"]
        resumed[f"{first} then {then}"] = {
            "epochs": len(history["epochs"]),
            "device": history["device"],
            "test_acc": history["epochs"][-1]["test_acc"],
        }
    return {"labels_equal": labels_equal, "max_pixel_difference": pixel_diff, "resumed": resumed}


# 2. vgg bench --device cuda ---------------------------------------------------------------------------------------


def bench(device: str, resize: int, ratio: int, precision: str, work: Path, quick: bool) -> dict:
    numbers = work / f"bench_{ratio}_{precision}.json"
    steps = ["--steps", "2", "--repeats", "1"] if quick else []
    vgg_cli(
        "bench", "--backends", "torch", "--device", device, "--resize", resize, "--ratio", ratio,
        "--precision", precision, "--json", numbers, *steps,
    )  # fmt: skip
    summary = json.loads(numbers.read_text())
    (run,) = summary["runs"]
    keep = ("train_book", "train_project", "train_project_real_data", "infer_book", "infer_project", "name")
    return {
        **{k: run[k] for k in keep},
        "peak_memory_mib": run["peak_memory_mib"],
        "train_gflops": run["train_gflops"],
        "peak_gflops": summary["peak_gflops"],
        "train_fraction_of_peak": run["train_fraction_of_peak"],
    }


def resident_rate(trainer, x, y, warmup: int, steps: int) -> tuple[float, float]:
    """Examples/s of ``trainer``'s step on one batch that stays where it is, and the seconds of its warm-up."""
    from vgg_torch.bench import synchronize

    start = time.perf_counter()
    trainer.to_host([trainer.train_step(x, y) for _ in range(warmup)])
    warm = time.perf_counter() - start
    synchronize(trainer.device)
    start = time.perf_counter()
    trainer.to_host([trainer.train_step(x, y) for _ in range(steps)])
    return steps * len(y) / (time.perf_counter() - start), warm


# 3. The project's run ------------------------------------------------------------------------------------------------


def project_run(device: str, resize: int, epochs: int, limit: int | None) -> dict:
    import vgg_torch
    from common.recipe import Recipe
    from vgg_torch.data import on_device
    from vgg_torch.train import Trainer

    def book_net():  # the book's run: VGG-11 narrowed 4x, its 4096-wide head, dropout, no batch norm
        return vgg_torch.vgg(arch="vgg11", ratio=4, input_size=resize, fc_hidden=4096, dropout=0.5, batch_norm=False)

    train_iter, test_iter = vgg_torch.load_data_fashion_mnist(128, resize=resize, train_limit=limit)
    start = time.perf_counter()
    history = vgg_torch.train(book_net(), train_iter, test_iter, epochs, lr=0.05, device=device)
    wall = time.perf_counter() - start
    examples = train_iter.batches.num_examples * epochs
    steady = [e.examples_per_sec for e in history.epochs[1:]] or [history.epochs[0].examples_per_sec]
    # The same step on one batch that stays on the device: what the data path is held to.
    trainer = Trainer(book_net(), Recipe(1), vgg_torch.get_device(device))
    trainer.start_epoch(1, 0.05)
    x, y = next(iter(on_device(train_iter, trainer.device)))
    resident, _ = resident_rate(trainer, x, y, 5, 10 if limit else 60)
    return {
        "epochs": epochs,
        "test_acc": history.epochs[-1].test_acc,
        "wall_seconds": wall,
        "wall_examples_per_sec": examples / wall,
        "train_examples_per_sec": float(np.median(steady)),
        "resident_batch_examples_per_sec": resident,
        "data_path_ratio": float(np.median(steady)) / resident,
        "per_epoch": [dataclasses.asdict(e) for e in history.epochs],
    }


# 4. The book's own code ----------------------------------------------------------------------------------------------


def book_data_root(work: Path) -> Path:
    """torchvision's layout (ROOT/FashionMNIST/raw, the IDX files decompressed) from $FASHION_MNIST_DIR."""
    from common.data import FILES, find_files

    raw = work / "torchvision" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in find_files().items():
        assert name in FILES
        if path.suffix == ".gz":
            (raw / name).write_bytes(gzip.decompress(path.read_bytes()))
        else:
            shutil.copyfile(path, raw / name)
    return work / "torchvision"


def book_run(device: str, resize: int, epochs: int, limit: int | None, work: Path) -> dict:
    """*Dive into Deep Learning*, "Networks Using Blocks (VGG)", PyTorch, as printed (d2l's helpers inlined)."""
    import torchvision
    from torch.utils import data
    from torchvision import transforms

    from vgg_torch import book  # the book's network, as printed

    torch.manual_seed(0)
    root = book_data_root(work)

    def load_data_fashion_mnist(batch_size, resize=None):
        trans = [transforms.ToTensor()]
        if resize:
            trans.insert(0, transforms.Resize(resize))
        trans = transforms.Compose(trans)
        mnist_train = torchvision.datasets.FashionMNIST(root=root, train=True, transform=trans, download=False)
        mnist_test = torchvision.datasets.FashionMNIST(root=root, train=False, transform=trans, download=False)
        if limit:
            mnist_train = data.Subset(mnist_train, range(limit))
        return (
            data.DataLoader(mnist_train, batch_size, shuffle=True, num_workers=4),
            data.DataLoader(mnist_test, batch_size, shuffle=False, num_workers=4),
        )

    def accuracy(y_hat, y):
        y_hat = y_hat.argmax(axis=1)
        cmp = y_hat.type(y.dtype) == y
        return float(cmp.type(y.dtype).sum())

    def evaluate_accuracy_gpu(net, data_iter, device=None):
        net.eval()
        metric = [0.0, 0.0]
        with torch.no_grad():
            for X, y in data_iter:
                X, y = X.to(device), y.to(device)
                metric[0] += accuracy(net(X), y)
                metric[1] += y.numel()
        return metric[0] / metric[1]

    def train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
        def init_weights(m):
            if type(m) is nn.Linear or type(m) is nn.Conv2d:
                nn.init.xavier_uniform_(m.weight)

        net.apply(init_weights)
        net.to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        loss = nn.CrossEntropyLoss()
        step_seconds, epochs = 0.0, []
        for _ in range(num_epochs):
            metric = [0.0, 0.0, 0]
            net.train()
            for X, y in train_iter:
                t0 = time.perf_counter()
                optimizer.zero_grad()
                X, y = X.to(device), y.to(device)
                y_hat = net(X)
                ell = loss(y_hat, y)
                ell.backward()
                optimizer.step()
                with torch.no_grad():
                    metric[0] += float(ell * X.shape[0])
                    metric[1] += accuracy(y_hat, y)
                    metric[2] += X.shape[0]
                step_seconds += time.perf_counter() - t0
            test_acc = evaluate_accuracy_gpu(net, test_iter, device)
            epochs.append({"loss": metric[0] / metric[2], "train_acc": metric[1] / metric[2], "test_acc": test_acc})
            print(f"[book] epoch {len(epochs)}: {epochs[-1]}", flush=True)
        return epochs, metric[2] * num_epochs / step_seconds

    net = book.vgg(book.small_conv_arch(4), resize=resize)
    lr, batch_size = 0.05, 128
    train_iter, test_iter = load_data_fashion_mnist(batch_size, resize=resize)
    start = time.perf_counter()
    epochs_seen, steps_rate = train_ch6(net, train_iter, test_iter, epochs, lr, torch.device(device))
    wall = time.perf_counter() - start
    examples = len(train_iter.dataset) * epochs
    return {
        "epochs": epochs,
        "test_acc": epochs_seen[-1]["test_acc"],
        "wall_seconds": wall,
        "wall_examples_per_sec": examples / wall,
        "train_examples_per_sec": steps_rate,  # the book's count: training steps only
        "per_epoch": epochs_seen,
    }


# 5. The host CPU, where it has AMX ---------------------------------------------------------------------------------


def _siblings(cpu: int) -> str | None:
    """The CPUs sharing ``cpu``'s physical core (Linux's list, e.g. ``"0,8"``): whether two CPUs are two cores."""
    try:
        return Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
    except OSError:
        return None


def host_cpu(work: Path, quick: bool, cpu: dict) -> dict:
    """``vgg bench --backends torch --device cpu`` at its defaults, fp32 then bf16, on the first two cores this
    process may use (the 2-core machine the AMX targets are set for); ``cpu``: the host's ``cpu_features()``."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    steps = ["--steps", "2", "--repeats", "1"] if quick else []
    results: dict = {"cores": cores, "cpu": cpu, "thread_siblings": [_siblings(c) for c in cores]}
    for precision in ("fp32", "bf16"):
        numbers = work / f"cpu_{precision}.json"
        args = ["bench", "--backends", "torch", "--device", "cpu", "--precision", precision, "--json", numbers]
        vgg_cli(*args, *steps, cores=cores)
        summary = json.loads(numbers.read_text())
        (run,) = summary["runs"]
        keep = ("train_book", "train_project", "train_gflops", "train_fraction_of_peak", "infer_project")
        results[precision] = {**{k: run[k] for k in keep}, "peak_gflops": summary["peak_gflops"]}
    results["bf16_over_fp32"] = results["bf16"]["train_project"] / results["fp32"]["train_project"]
    return results


# 6. Levers for bf16 (measured, not used by default) -----------------------------------------------------------------


def step_profile(trainer, x, y, steps: int) -> list[dict]:
    """The operators that take most of ``trainer``'s step on one batch: self time on the GPU (on a CPU, the
    host's), per step and as a share of the whole, the 15 largest."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(trainer.device).type == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        trainer.to_host([trainer.train_step(x, y) for _ in range(steps)])
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    ops = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in ops) or 1
    return [
        {"op": e.key, "ms_per_step": getattr(e, key) / 1e3 / steps, "share": getattr(e, key) / total} for e in ops[:15]
    ]


def levers(device: str, resize: int, quick: bool) -> dict:
    """The project's training step on one resident batch, full-width VGG-11: eager and ``torch.compile``d,
    fp32 and bf16; what each lever would give the bf16 target. For the eager steps, where their time goes
    (:func:`step_profile`): what a next lever would have to shorten."""
    import vgg_torch
    from common.recipe import Recipe
    from vgg_torch.train import Trainer

    results = {}
    x = torch.rand(128, 1, resize, resize, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,), device=device)
    for compiled in (False, True):
        for precision in ("fp32", "bf16"):
            net = vgg_torch.vgg(arch="vgg11", ratio=1, input_size=resize, fc_hidden=4096, batch_norm=False)
            trainer = Trainer(net, Recipe(1, precision=precision), vgg_torch.get_device(device))
            if compiled:
                trainer.forward = torch.compile(trainer.forward)
            trainer.start_epoch(1, 0.05)
            rate, warm = resident_rate(trainer, x, y, 3, 2 if quick else 30)
            key = f"{'compiled' if compiled else 'eager'}_{precision}"
            results[key] = {"examples_per_sec": rate, "warmup_seconds": warm}
            print(f"[levers] {key}: {results[key]}", flush=True)
            if not compiled:
                results[f"profile_{key}"] = step_profile(trainer, x, y, 2 if quick else 10)
    return results


# The table ----------------------------------------------------------------------------------------------------------


def fmt(v, spec=",.0f"):
    return "—" if v is None else format(v, spec)


def table() -> str:
    ours, book = RESULTS.get("project_run", {}), RESULTS.get("book_run", {})
    b4, b4h = RESULTS.get("bench_ratio4_fp32", {}), RESULTS.get("bench_ratio4_bf16", {})
    b1, b1h = RESULTS.get("bench_ratio1_fp32", {}), RESULTS.get("bench_ratio1_bf16", {})
    rows = []

    def row(what, value, target, met):
        rows.append(f"| {what} | {value} | {target} | {'yes' if met else 'NO' if met is not None else '—'} |")

    def ratio(a, b):
        return a / b if a and b else None

    speedup = ratio(ours.get("wall_examples_per_sec"), book.get("wall_examples_per_sec"))
    row(
        "book's run, wall-time examples/s: ours / book's code",
        f"{fmt(ours.get('wall_examples_per_sec'))} / {fmt(book.get('wall_examples_per_sec'))} = {fmt(speedup, '.2f')}x",
        ">= 2x",
        None if speedup is None else speedup >= 2,
    )
    row(
        "training-step examples/s (the book's count): ours / book's code",
        f"{fmt(ours.get('train_examples_per_sec'))} / {fmt(book.get('train_examples_per_sec'))}",
        "",
        None,
    )
    gap = None if "test_acc" not in ours or "test_acc" not in book else ours["test_acc"] - book["test_acc"]
    row(
        "test accuracy after the run: ours / book's code",
        f"{fmt(ours.get('test_acc'), '.4f')} / {fmt(book.get('test_acc'), '.4f')}",
        "within 0.005",
        None if gap is None else abs(gap) <= 0.005,
    )
    # One epoch's test accuracy moves by up to 0.01 under the book's constant rate: the last three epochs' mean and
    # the best epoch say the same with less noise.
    accs = [[e["test_acc"] for e in run.get("per_epoch", [])] for run in (ours, book)]
    for what, pick in (("mean of the last 3 epochs", lambda a: float(np.mean(a[-3:]))), ("best epoch", max)):
        a, b = (pick(acc) if acc else None for acc in accs)
        row(
            f"test accuracy, {what}: ours / book's code",
            f"{fmt(a, '.4f')} / {fmt(b, '.4f')}",
            "within 0.005",
            None if a is None or b is None else abs(a - b) <= 0.005,
        )
    dp = ours.get("data_path_ratio")
    row(
        "training examples/s over the resident-batch step (same process)",
        f"{fmt(ours.get('train_examples_per_sec'))} / {fmt(ours.get('resident_batch_examples_per_sec'))} = "
        f"{fmt(dp, '.0%')}",
        ">= 85%",
        None if dp is None else dp >= 0.85,
    )
    for label, fp32, bf16, target in (("1 (full width)", b1, b1h, 1.8), ("4", b4, b4h, None)):
        gain = ratio(bf16.get("train_project"), fp32.get("train_project"))
        row(
            f"bf16 / fp32 training, ratio {label}, 224 px (bench, resident batch)",
            f"{fmt(bf16.get('train_project'))} / {fmt(fp32.get('train_project'))} = {fmt(gain, '.2f')}x",
            f">= {target}x" if target else "stated",
            None if gain is None or target is None else gain >= target,
        )
    for label, run in (("ratio 4 fp32", b4), ("ratio 4 bf16", b4h), ("ratio 1 fp32", b1), ("ratio 1 bf16", b1h)):
        if "train_project" in run:
            row(
                f"bench {label}: train book / project / real data; infer book / project; peak MiB",
                f"{fmt(run['train_book'])} / {fmt(run['train_project'])} / {fmt(run['train_project_real_data'])}; "
                f"{fmt(run['infer_book'])} / {fmt(run['infer_project'])}; {fmt(run['peak_memory_mib'])}",
                "",
                None,
            )
    cpu = RESULTS.get("host_cpu", {})
    if "bf16_over_fp32" in cpu:
        flags = ", ".join(cpu["cpu"].get("flags", [])) or "none"
        fp32 = cpu["fp32"]
        row(
            f"host CPU ({cpu['cpu'].get('model')}; CPUs {cpu['cores']}, their cores' threads "
            f"{cpu.get('thread_siblings')}; {flags}): PyTorch fp32 training, of the fp32 peak",
            f"{fmt(fp32['train_gflops'])} of {fmt(fp32['peak_gflops']['fp32'])} GFLOP/s = "
            f"{fmt(fp32['train_fraction_of_peak'], '.0%')}",
            ">= 50%",
            fp32["train_fraction_of_peak"] >= 0.5,
        )
        row(
            "host CPU: PyTorch bf16 / fp32 training (train ex/s; book's fp32 path)",
            f"{fmt(cpu['bf16']['train_project'])} / {fmt(fp32['train_project'])} = {fmt(cpu['bf16_over_fp32'], '.2f')}x"
            f" ({fmt(fp32['train_book'])})",
            ">= 2x",
            cpu["bf16_over_fp32"] >= 2,
        )
    for key, run in RESULTS.get("levers", {}).items():
        if isinstance(run, dict):
            row(f"lever, ratio 1 resident step: {key}", fmt(run["examples_per_sec"]), "", None)
    peaks = (b1 or b4).get("peak_gflops", {})
    row("matrix-product peak GFLOP/s fp32 / tf32 / bf16", " / ".join(fmt(peaks.get(p)) for p in peaks), "", None)
    head = ["| what | measured | target | met |", "|---|---|---|---|"]
    gpu = RESULTS.get("environment", {})
    return "\n".join([f"{gpu.get('gpu')}, PyTorch {gpu.get('torch')}, {gpu.get('date')}", *head, *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_check")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="every part small: checks the script, not the GPU")
    parser.add_argument("--skip", default="", help="comma list of parts to leave out: same,bench,project,book,cpu")
    parser.add_argument("--levers", action="store_true", help="also measure torch.compile (about a minute more)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from common.bench import cpu_features

    skip = set(filter(None, args.skip.split(",")))
    resize, epochs, limit = (64, 1, 2048) if args.quick else (224, 10, None)
    cuda = args.device.startswith("cuda")
    save(
        out,
        "environment",
        {
            "gpu": torch.cuda.get_device_name(0) if cuda else "no GPU (" + args.device + ")",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "date": time.strftime("%Y-%m-%d"),
            "cpu_count": os.cpu_count(),
            "quick": args.quick,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "same" not in skip:
            part(out, "same_batches_and_resume", same_batches_and_resume, args.device, work)
        if "bench" not in skip:
            for ratio in (4, 1):
                for precision in ("fp32", "bf16"):
                    part(out, f"bench_ratio{ratio}_{precision}", bench, args.device, resize, ratio, precision, work,
                         args.quick)  # fmt: skip
        if "project" not in skip:
            part(out, "project_run", project_run, args.device, resize, epochs, limit)
        if "book" not in skip:
            part(out, "book_run", book_run, args.device, resize, epochs, limit, work)
        cpu = cpu_features()
        if "cpu" not in skip and ("amx_bf16" in cpu.get("flags", []) or args.quick):
            part(out, "host_cpu", host_cpu, work, args.quick, cpu)
        if args.levers:
            part(out, "levers", levers, args.device, resize, args.quick)
    text = table()
    (out / "gpu_check.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
