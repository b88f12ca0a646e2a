"""One training step in the recipe's precision, memory format and compilation.

`train.precision` bf16 or fp16 runs the forward pass and the loss under autocast (on the CPU or
CUDA alike); the weights, their gradients and the optimizer's moments stay fp32, and fp16 scales
the loss with a gradient scaler so that small gradients do not underflow. `train.channels_last`
keeps conv weights and image batches in NHWC order. `train.compile` runs the forward and
backward pass of a `torch.compile`d view of the network.

The network itself stays an ordinary module: growth checks score it and surgery reads it
directly, in fp32 and uncompiled, and evaluation uses it too. A network that surgery replaced is
noticed at its first step (compared by identity) and is converted and compiled again then, so
growth, resuming and fine-tuning need no hook here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from netsize.errors import UserError
from netsize.losses import batch_loss

if TYPE_CHECKING:
    from netsize.train import TrainConfig

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run (one sentence naming the key and the fix)."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise UserError(f"train.precision: bf16 is not supported by {name}; use fp16 (with "
                        "its gradient scaler) or fp32.")


class Stepper:
    """Forward, loss, backward and optimizer step of one batch; counts compile time.

    compile_seconds: the wall time of the first step after each (re)compilation, which is
    almost all compilation; compiles: how many networks were compiled (1 + growth events).
    """

    def __init__(self, cfg: TrainConfig, device: torch.device):
        check_precision(cfg.precision, device)
        self.device, self.channels_last, self.compile = device, cfg.channels_last, cfg.compile
        self.dtype = DTYPES[cfg.precision]
        # fp16's loss scaling; bf16 has fp32's exponent range and needs none
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.compile_seconds, self.compiles = 0.0, 0
        self._net: nn.Module | None = None  # the network the callable below runs
        self._forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _adopt(self, net: nn.Module) -> bool:
        """Convert and compile a network seen for the first time; True when it was compiled."""
        if self.channels_last:
            # keeps every Parameter object (only .data changes), so the optimizer still holds them
            net.to(memory_format=torch.channels_last)
        if self.compile and self._net is not None:
            # a grown network is another module behind the same forward code: drop the old
            # graphs so that they neither pile up towards dynamo's recompile limit nor guard it
            torch._dynamo.reset()
        self._net = net
        self._forward = torch.compile(net) if self.compile else net
        self.compiles += int(self.compile)
        return self.compile

    def __call__(self, net: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor,
                 yb: torch.Tensor, task: str) -> torch.Tensor:
        """One optimizer step on (xb, yb); returns the batch loss, detached, on the device."""
        first = self._net is not net and self._adopt(net)
        started = time.perf_counter() if first else 0.0
        if self.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        assert self._forward is not None
        with self.autocast():
            loss = batch_loss(self._forward(xb), yb, task)
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)  # skipped (and the scale lowered) when a gradient overflowed
            self.scaler.update()
        if first:
            self.compile_seconds += time.perf_counter() - started
        return loss.detach()
