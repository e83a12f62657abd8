"""The book's ``train_ch6`` in PyTorch: the step and the state adapters that ``common.training.fit`` drives."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from common import training
from common.errors import InputError
from common.training import check_batch

from .weights import export_weights, import_weights


def try_gpu(i=0):
    """The i-th GPU if PyTorch sees one, else the CPU."""
    return torch.device(f"cuda:{i}") if torch.cuda.device_count() > i else torch.device("cpu")


def get_device(device="auto"):
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
    """The checks of :func:`common.training.check_batch` on one batch of tensors (NCHW)."""
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


def evaluate_accuracy(net, data_iter, device=None, check_finite=True):
    """Accuracy of ``net`` over ``data_iter`` in evaluation mode (dropout off, batch-norm statistics fixed).

    Every batch is checked against the network first (rank, channels, size, dtype, labels; with
    ``check_finite``, NaN or infinite pixels): a mistake is an :class:`common.errors.InputError`.
    """
    device = next(net.parameters()).device if device is None else get_device(device)
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


def _optimizer(net, optimizer, lr):
    if optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr)
    return torch.optim.SGD(net.parameters(), lr=lr)


class Trainer(training.Trainer):
    """PyTorch's side of :func:`common.training.fit`."""

    backend = "torch"

    def __init__(self, net, recipe, device):
        super().__init__(net, recipe, device)
        torch.manual_seed(recipe.seed)  # dropout masks
        # channels-last lets oneDNN run its blocked convolutions without reordering every tensor: measured 1.3x
        # faster training and 1.8x faster inference than PyTorch's default NCHW on a 2-core CPU (vgg bench)
        net.to(device, memory_format=torch.channels_last)
        self.forward = in_precision(net, recipe.precision)
        self.opt = _optimizer(net, recipe.optimizer, recipe.lr)
        self.loss_fn = nn.CrossEntropyLoss(reduction="sum")

    def check_batch(self, x, y, where):
        _check_batch(self.net, x, y, self.recipe.check_finite, where)

    def start_epoch(self, epoch, lr):
        self.net.train()
        for group in self.opt.param_groups:
            group["lr"] = lr

    def train_step(self, x, y):
        x, y = x.to(self.device, memory_format=torch.channels_last), y.to(self.device)
        logits = self.forward(x)
        loss = self.loss_fn(logits, y)  # summed over the batch
        self.opt.zero_grad(set_to_none=True)
        (loss / y.numel()).backward()
        self.opt.step()
        correct = (logits.argmax(dim=1) == y).sum()
        return torch.stack([loss.detach().float(), correct.float()]).tolist()  # one host sync

    def evaluate(self, data_iter):
        return evaluate_accuracy(self.net, data_iter, self.device, self.recipe.check_finite)

    def weights(self):
        return export_weights(self.net)

    def set_weights(self, weights):
        import_weights(self.net, weights)

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
        if "cpu" in arrays:
            torch.set_rng_state(torch.from_numpy(arrays["cpu"].copy()))
        if "cuda" in arrays and torch.device(self.device).type == "cuda":
            torch.cuda.set_rng_state(torch.from_numpy(arrays["cuda"].copy()), torch.device(self.device))


train = training.train_function(Trainer, get_device)
