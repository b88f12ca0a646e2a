"""Memory guard: estimate what a run needs and refuse it, naming the recipe key, before allocating.

The estimate is deliberately coarse. It exists to stop absurd sizes (a hidden layer of 10**8
units, a growth schedule of 2**31 parameters) with a clear sentence instead of the kernel's
out-of-memory killer, not to predict peak memory precisely.

Set the environment variable ``NETSIZE_MEMORY_BYTES`` to an integer number of bytes to override
the memory the machine reports (tests use it; so can anyone who wants a stricter or looser guard).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from netsize.errors import UserError

ENV_VAR = "NETSIZE_MEMORY_BYTES"
FLOAT_BYTES = 4  # float32
PARAM_COPIES = 6  # weights + gradient + 2 optimizer moments + best snapshot + checkpoint
ACTIVATION_COPIES = 3  # outputs saved by the forward pass plus their gradients in the backward
USABLE_FRACTION = 0.8  # leave room for the interpreter, libraries and the rest of the machine
DEFAULT_BYTES = 1 << 50  # nothing to read: assume plenty rather than refuse everything
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
                  Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # cgroup v1


def _meminfo_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, or None where the file or field is missing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _sysconf_available() -> int | None:
    """Page size times available physical pages, or None where sysconf lacks them."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup in bytes, or None when unlimited or unknown."""
    for path in _CGROUP_LIMITS:
        try:
            return int(path.read_text().strip())  # "max" (unlimited) fails the int()
        except (OSError, ValueError):
            continue
    return None


def available_bytes() -> int:
    """Memory this process may still use, in bytes.

    ``NETSIZE_MEMORY_BYTES`` wins when set. Otherwise MemAvailable from /proc/meminfo, else
    sysconf's available pages, else a very large default; capped by a cgroup memory limit.
    """
    override = os.environ.get(ENV_VAR, "").strip()
    if override:
        try:
            return int(override)
        except ValueError:
            raise UserError(f"{ENV_VAR}={override!r} is not a whole number of bytes; "
                            f"set it to an integer or unset it.") from None
    avail = _meminfo_available()
    if avail is None:
        avail = _sysconf_available()
    if avail is None:
        avail = DEFAULT_BYTES
    limit = _cgroup_limit()
    return avail if limit is None else min(avail, limit)


def _numel(output: object) -> int:
    """Total elements of every tensor in a forward output (tensor, tuple, list or dict)."""
    if isinstance(output, torch.Tensor):
        return output.numel()
    if isinstance(output, (list, tuple)):
        return sum(_numel(item) for item in output)
    if isinstance(output, dict):
        return sum(_numel(item) for item in output.values())
    return 0


def graph_activation_elements(net: nn.Module) -> int | None:
    """activation_elements of a graph network from its spec's shapes, without running it
    (the meta-device forward costs seconds of lazy torch set-up); None for other modules."""
    spec, ops = getattr(net, "spec", None), getattr(net, "ops", None)
    if spec is None or ops is None or not hasattr(spec, "shape"):
        return None
    total = 0
    for name in ops:  # the nodes with a module: the leaves the forward hooks would see
        size = 1
        for dim in spec.shape(name):
            size *= dim
        total += size
    return total


def activation_elements(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Output elements per example summed over every leaf module's forward, run on the meta device.

    Parameters and buffers are swapped for meta-device stand-ins for the call (the module itself is
    not copied or changed), so even a model far larger than memory is measured without allocating.
    The forward runs in eval mode without gradients; training flags are restored afterwards.
    """
    total = 0

    def hook(_mod: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        total += _numel(output)

    tensors = {**dict(module.named_parameters(remove_duplicate=False)),
               **dict(module.named_buffers(remove_duplicate=False))}
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    handles = [leaf.register_forward_hook(hook) for leaf in leaves]
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            functional_call(module, meta, (torch.empty((1, *input_shape), device="meta"),),
                            tie_weights=False, strict=False)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.training = training
    return total


def estimate_training_bytes(params: int, activations_per_example: int, batch_size: int,
                            data_bytes: int, max_params: int | None = None) -> int:
    """Rough bytes a training run needs: parameters, activations and the data set.

    * parameters: ``max(params, max_params or 0)`` float32 values held six times over (weights,
      gradients, two Adam moments, the best snapshot and a checkpoint). Pass ``max_params`` as the
      cap growth may reach, so a run that starts small but may grow huge is judged by its cap;
    * activations: ``activations_per_example * batch_size`` float32 values, three times (saved by
      the forward pass and their gradients in the backward);
    * ``data_bytes``: the data set held in memory as tensors.
    """
    n_params = max(params, max_params or 0)
    return (n_params * FLOAT_BYTES * PARAM_COPIES
            + activations_per_example * batch_size * FLOAT_BYTES * ACTIVATION_COPIES
            + data_bytes)


def human(n_bytes: float) -> str:
    """A byte count for people: '800.0 GiB', '12.5 MiB', '3.0 KiB', '512 B'."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n_bytes) >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"


def check_memory(needed: int, key: str, what: str) -> None:
    """Raise UserError naming ``key`` when ``needed`` exceeds 80% of the memory available."""
    avail = available_bytes()
    if needed > USABLE_FRACTION * avail:
        raise UserError(f"{key}: {what} needs about {human(needed)} of memory but "
                        f"{human(avail)} is available; lower {key}.")
