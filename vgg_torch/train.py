"""The book's ``train_ch6`` in PyTorch: the step and the state adapters that ``common.training.fit`` drives."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from common import host, training
from common.data import check_batch
from common.distributed import WorkerLost, loss_scale, restored_digest, shard
from common.errors import ConfigError, InputError, arg
from common.processes import collective_timeout
from common.recipe import ADAM

from .data import on_device
from .model import Device, Net
from .weights import export_weights, import_weights


def try_gpu(i: int = 0) -> Device:
    """The i-th GPU if PyTorch sees one, else the CPU."""
    i = training.gpu_index(i)
    return torch.device(f"cuda:{i}") if torch.cuda.device_count() > i else torch.device("cpu")


def get_device(device: Device | str | None = "auto") -> Device:
    """The PyTorch device of ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a ``torch.device``, as is)."""
    if isinstance(device, torch.device):
        return device
    kind, index = training.parse_device(device)
    if kind == "auto":
        return try_gpu()
    if kind == "cuda" and torch.cuda.device_count() <= index:
        raise training.no_gpu("PyTorch", index, torch.cuda.device_count(), "a CUDA wheel of torch")
    return torch.device("cpu") if kind == "cpu" else torch.device(f"cuda:{index}")


def _check_batch(net, x, y, check_finite, where):
    """The checks of :func:`common.data.check_batch` on one batch of tensors (NCHW)."""
    if not torch.is_tensor(x) or not torch.is_tensor(y):
        raise InputError(
            f"{where} is ({type(x).__name__}, {type(y).__name__}); give (images, labels) as "
            f"torch tensors (torch.from_numpy)"
        )
    if getattr(net, "config", None) is None:  # a network not built by vgg(): nothing to check against
        return
    finite = bool(torch.isfinite(x).all()) if check_finite and x.is_floating_point() else True
    check_batch(
        net.config,
        x.shape,
        str(x.dtype).removeprefix("torch."),
        y.detach().cpu().numpy(),
        "NCHW",
        finite,
        where,
        "int64",
        framework="torch",
    )


def evaluate_accuracy(
    net: Net, data_iter: Iterable, device: Device | str | None = None, check_finite: bool = True, compile: bool = False
) -> float:
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed).

    Every batch is checked against the network first (rank, channels, size, dtype, labels; with
    ``check_finite``, NaN or infinite pixels): a mistake is an :class:`common.errors.InputError`.
    ``compile``: the forward pass through ``torch.compile`` (:class:`Compiled`; one compilation for every batch
    size), unless ``net`` is compiled already.
    """
    device = next(net.parameters()).device if device is None else get_device(device)
    if compile and not isinstance(net, Compiled):
        net = Compiled(net.to(device, memory_format=torch.channels_last))
    net.eval()

    def check(x, y, where):
        _check_batch(net, x, y, check_finite, where)

    def correct(x, y):
        x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
        return (net(x).argmax(dim=1) == y).sum()  # summed on the device: one host sync per pass

    with torch.no_grad():
        return training.accuracy(data_iter, check, correct)


def policy(precision="fp32"):
    """Networks built inside this block are ready for ``precision`` (PyTorch needs nothing: autocast is per step)."""
    return contextlib.nullcontext()


def in_precision(net, precision="fp32"):
    """``net`` computing in ``precision``, sharing its parameters: ``net`` itself for fp32.

    For bf16, a wrapper whose forward runs under ``torch.autocast`` (bfloat16 convolutions and matmuls,
    float32 weights): training it trains ``net``.
    """
    return net if precision == "fp32" else _Autocast(net)


class _Autocast(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        device_type = next(self.net.parameters()).device.type
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return self.net(x)


class Compiled(nn.Module):
    """``net``'s forward pass through ``torch.compile`` (TorchInductor), with its batch dimension dynamic.

    The batch dimension of every input is marked dynamic (``torch._dynamo.maybe_mark_dynamic``) before the
    compiled call, so that a graph serves a range of batch sizes, not one: the last, partial batch of an epoch
    and the evaluation batches do not each compile again, and nothing is padded (the loss and batch-norm
    statistics are those of the real batch). A run compiles once per shape class: training, evaluation, and on
    a CPU a small last batch (Inductor's CPU code guards its sums of more than 4,096 numbers, which splits the
    batch sizes in two ranges); no epoch compiles again. :attr:`compiles` counts the graphs the compiler built
    (each call of its backend) and :attr:`seconds` the wall time of the calls that built them. The parameters
    stay ``net``'s: training it trains ``net``.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.config = getattr(net, "config", None)
        self.compiles, self.seconds = 0, 0.0
        # kept out of the module's children, so that the parameters keep their names (net.<name>)
        self.__dict__["run"] = torch.compile(net, backend=_inductor)

    def forward(self, x):
        if x.shape[0] > 1:  # a batch of one is specialized (size 1 broadcasts); it compiles apart, if ever
            torch._dynamo.maybe_mark_dynamic(x, 0)
        _CALLING.append(self)
        try:
            start = time.perf_counter()
            before = self.compiles
            out = self.__dict__["run"](x)
        finally:
            _CALLING.pop()
        if self.compiles > before:
            self.seconds += time.perf_counter() - start
        return out


# The Compiled whose call is running: the one the backend's compilations count for. One backend for them all, so
# that a network compiled once in a process (another run of the same one, in a notebook) reuses its graphs, and
# the compiler's limit of graphs per function is not spent on copies of one graph.
_CALLING: list[Compiled] = []


def _inductor(graph, example_inputs):
    """The compiler's backend: Inductor, counted for the Compiled being called."""
    from torch._inductor.compile_fx import compile_fx  # the default backend of torch.compile, by name

    if _CALLING:
        _CALLING[-1].compiles += 1
    # fallback_random: dropout draws from PyTorch's own generator, as in eager mode (the same masks, the
    # same weights), not from Inductor's fused generator
    return compile_fx(graph, example_inputs, config_patches={"fallback_random": True})


def _optimizer(net, optimizer, lr):
    if optimizer == "adam":  # the reference of common.recipe.ADAM: PyTorch's own form
        a = ADAM
        return torch.optim.Adam(net.parameters(), lr=lr, betas=(a["beta1"], a["beta2"]), eps=a["eps"])
    return torch.optim.SGD(net.parameters(), lr=lr)


def _kept_per_parameter(opt) -> dict[str, bool]:
    """The tensors ``opt`` keeps for each parameter once it has stepped (Adam: step, exp_avg, exp_avg_sq; plain
    SGD: none), each True where it has the parameter's shape: found by one step of a twin on a probe."""
    probe = torch.zeros(2, requires_grad=True)
    probe.grad = torch.zeros(2)
    twin = type(opt)([probe], **opt.defaults)
    twin.step()
    return {slot: value.dim() > 0 for slot, value in twin.state[probe].items() if torch.is_tensor(value)}


class Trainer(training.Trainer):
    """PyTorch's side of :func:`common.training.fit`."""

    backend = "torch"
    batch_check = staticmethod(_check_batch)
    evaluate_accuracy = staticmethod(evaluate_accuracy)
    export_weights = staticmethod(export_weights)
    import_weights = staticmethod(import_weights)
    on_device = staticmethod(on_device)

    def __init__(self, net, recipe, device, compile=False):
        super().__init__(net, recipe, device, compile)
        torch.manual_seed(recipe.seed)  # dropout masks
        if torch.device(device).type == "cuda":
            # The GPU runs ahead of the host: the steps' sums are read every 50 steps (a NaN is still named by
            # its step), and cuDNN picks its fastest convolution for each of the run's few shapes. TF32: PyTorch's
            # defaults, as the book's code runs (convolutions may use TF32, matrix products stay fp32).
            self.read_every = 50
            torch.backends.cudnn.benchmark = True
        else:  # PyTorch's CPU tensors come from malloc: keep freed activations for the next step (docs/performance.md)
            host.reuse_freed_memory()
        # channels-last lets oneDNN run its blocked convolutions without reordering every tensor: measured 1.3x
        # faster training and 1.8x faster inference than PyTorch's default NCHW on a 2-core CPU (vgg bench)
        net.to(device, memory_format=torch.channels_last)
        self.forward = in_precision(net, recipe.precision)
        self.compiled: list[Compiled] = []  # with compile: the training forward, then the evaluation's
        if self.compile:  # the forward (and so its backward) compiled; the optimizer's update stays eager
            self.forward = self._compiled(self.forward)
        self.opt = _optimizer(net, recipe.optimizer, recipe.lr)
        self.loss_fn = nn.CrossEntropyLoss(reduction="sum")

    def _compiled(self, net):
        compiled = Compiled(net)
        self.compiled.append(compiled)
        return compiled

    @property
    def compiles(self):
        return sum(c.compiles for c in self.compiled)

    @property
    def compile_seconds(self):
        return sum(c.seconds for c in self.compiled)

    def evaluate(self, data_iter):
        if not self.compile:
            return super().evaluate(data_iter)
        if len(self.compiled) < 2:  # the fp32 network in evaluation mode: a graph of its own, made once
            self._compiled(self.net)
        return evaluate_accuracy(self.compiled[-1], self.feed(data_iter), self.device, self.recipe.check_finite)

    def start_epoch(self, epoch, lr):
        self.net.train()
        for group in self.opt.param_groups:
            group["lr"] = lr

    def train_step(self, x, y):
        x = x.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        compiles = self.compiles
        logits = self.forward(x)
        loss = self.loss_fn(logits, y)  # summed over the batch
        self.opt.zero_grad(set_to_none=True)
        started = time.perf_counter()
        (loss / y.numel()).backward()
        if self.compiles > compiles:  # the compiler may build the backward graph at its first call
            self.compiled[0].seconds += time.perf_counter() - started
        self.opt.step()
        correct = (logits.argmax(dim=1) == y).sum()
        return torch.stack([loss.detach().float(), correct.float()])  # left on the device: see to_host

    def to_host(self, sums):
        return torch.stack(sums).double().cpu().numpy()

    def optimizer_state(self):
        """Adam's moments and step per parameter (none for plain SGD), by canonical name."""
        names = [name for name, _ in self.net.named_parameters()]
        state = self.opt.state_dict()["state"]
        arrays = {
            f"{names[i]}/{key}": value.detach().cpu().numpy().copy()
            for i, slots in state.items()
            for key, value in slots.items()
            if torch.is_tensor(value)
        }
        return arrays, {}

    def set_optimizer_state(self, arrays, scalars):
        kept = _kept_per_parameter(self.opt)
        expected = {
            f"{name}/{slot}": tuple(p.shape) if shaped else ()
            for name, p in self.net.named_parameters()
            for slot, shaped in kept.items()
        }
        training.check_state(arrays, expected, "optimizer state")
        for key, array in arrays.items():
            if key.endswith("/step"):  # Adam's count of updates
                training.check_counter(array, self.steps_done, f"update count {key}")
        saved = self.opt.state_dict()
        state: dict[int, dict] = {}
        index = {name: i for i, (name, _) in enumerate(self.net.named_parameters())}
        for key, array in arrays.items():
            name, _, slot = key.rpartition("/")
            state.setdefault(index[name], {})[slot] = torch.from_numpy(array.copy())
        saved["state"] = state
        self.opt.load_state_dict(saved)

    def rng_state(self):
        """The generators dropout draws from: the CPU's, and the GPU's when training there."""
        state = {"cpu": torch.get_rng_state().numpy().copy()}
        if torch.device(self.device).type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(torch.device(self.device)).numpy().copy()
        return state

    def set_rng_state(self, arrays):
        expected = {"cpu": tuple(torch.get_rng_state().shape), "cuda": None}  # a CPU run ignores a GPU's state
        training.check_state(arrays, expected, "random-generator state", optional=("cuda",))
        torch.set_rng_state(torch.from_numpy(arrays["cpu"].copy()))
        if "cuda" in arrays and torch.device(self.device).type == "cuda":
            torch.cuda.set_rng_state(torch.from_numpy(arrays["cuda"].copy()), torch.device(self.device))

    def finish(self):
        host.give_back_freed_memory()  # what the steps kept (reuse_freed_memory) goes back to the system


train = training.train_function(Trainer, get_device)


def join_run():
    """Join the process group the environment describes (``env://``): gloo on CPUs, nccl where there are GPUs.

    ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE`` are what ``torchrun`` and ``vgg train
    --workers N`` set; a collective waits at most ``common.processes.collective_timeout()`` seconds for the others.
    """

    if not dist.is_available():
        raise ConfigError(f"{arg('workers')}: this PyTorch is built without torch.distributed; use {arg('workers', 1)}")
    if not dist.is_initialized():
        engine = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(engine, init_method="env://", timeout=timedelta(seconds=collective_timeout()))
    return dist.group.WORLD


class DistributedTrainer(Trainer):
    """Data parallel on ``torch.distributed``: this process is one worker of a run the environment describes.

    The process group is joined through ``env://`` (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
    ``WORLD_SIZE``: what ``torchrun`` and ``vgg train --workers N`` set), over gloo on CPUs and nccl on GPUs;
    the network is wrapped in ``DistributedDataParallel``, which averages the gradients over the workers.
    Each worker steps on its own slice of every global batch (``common.distributed.shard``) with its summed
    loss scaled by ``workers / batch``, so the averaged gradient is the one-process gradient of the batch.
    ``sync_bn``: batch-norm statistics over the global batch (``nn.SyncBatchNorm``, GPUs only); without it,
    each worker normalizes with its slice's statistics and DDP copies rank 0's running statistics to all.
    """

    def __init__(self, net, recipe, device, sync_bn=False):
        cuda = torch.device(device).type == "cuda"
        if sync_bn and not cuda:
            raise ConfigError(
                f"{arg('sync_bn')}: PyTorch's SyncBatchNorm runs on GPUs only; on CPUs leave it out (each worker "
                "then normalizes its own slice)"
            )
        join_run()
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        super().__init__(net, recipe, device)
        if self.rank > 0:  # rank 0 draws the one-process dropout masks; the others their own
            torch.manual_seed(training.derived_seed(recipe.seed, self.rank))
        module = nn.SyncBatchNorm.convert_sync_batchnorm(net) if sync_bn else net
        with _collective():  # DDP checks the parameters' shapes across workers and broadcasts rank 0's
            self.ddp = nn.parallel.DistributedDataParallel(
                in_precision(module, recipe.precision), device_ids=[torch.device(device).index] if cuda else None
            )

    def set_rng_state(self, arrays):
        super().set_rng_state(arrays)
        if self.rank > 0:  # the checkpoint holds rank 0's generators: this worker draws its own masks again
            torch.manual_seed(training.derived_seed(self.recipe.seed, self.rank, restored_digest(arrays)))

    def train_step(self, x, y):
        batch, part = len(y), shard(len(y), self.rank, self.size)
        x, y = x[part].to(self.device, memory_format=torch.channels_last), y[part].to(self.device)
        with _collective():
            logits = self.ddp(x)
            loss = self.loss_fn(logits, y)  # summed over this worker's slice
            self.opt.zero_grad(set_to_none=True)
            (loss * loss_scale(self.size, batch, self.backend)).backward()
            self.opt.step()
            sums = torch.stack([loss.detach().float(), (logits.argmax(dim=1) == y).sum().float()])
            dist.all_reduce(sums)  # the global batch's summed loss and correct predictions
        return sums

    def finish(self):
        if dist.is_initialized():
            dist.destroy_process_group()
        super().finish()


# What a failed collective says: the peer closed the connection, or the wait ran past the group's timeout.
_LOST = ("gloo", "nccl", "connection", "timed out", "timeout", "broken pipe")


@contextlib.contextmanager
def _collective():
    """Turn a collective that failed because another worker stopped into one :class:`WorkerLost` line."""

    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        text = str(e).strip()
        if not isinstance(e, dist.DistError) and not any(word in text.lower() for word in _LOST):
            raise  # a mistake of this worker's own: its traceback says where
        detail = text.splitlines()[-1][:200] if text else type(e).__name__
        raise WorkerLost(f"another worker of the run stopped or stalled ({detail}); this one stops too") from None
