"""Scores for any graph network, with autograd doing the per-route work.

- Per-example gradients come from torch.func (functional_call + vmap(grad)), in eval mode,
  where each example's loss depends on that example alone; chunked to bound memory.
- The natural expansion score of a candidate is the eta of the new entries of the network that
  growth would build (the same fan-out, the very same random draw): old entries' gradients do
  not change when the function does not, so gain = eta(expanded) - eta(now) exactly.
- GradMax's fan-out: with zero fan-in the new fan-in gradient is linear in the fan-out,
  g(U) = U^T M. M^T u is one backward pass; M v the derivative of <g(U), v> in U (double
  backward). A few rounds of block power iteration give M's top-k left singular vectors.
  For plain groups (netsize.graph.gradmax_closed) M itself comes from one backward pass.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from netsize.graph.gradmax_closed import closed_form_matrix
from netsize.graph.groups import Group
from netsize.graph.per_example import (
    Capture,
    capture_supported,
    from_capture,
    from_hooks,
    owners_of,
)
from netsize.losses import per_example_loss
from netsize.surgery import IndexMap


def natural_score(per_example: torch.Tensor, damping: float) -> float:
    """eta = g^T (F + damping)^-1 g, diagonal empirical Fisher; per_example: (N, P)."""
    g = per_example.mean(0)
    return float((g.pow(2) / (per_example.pow(2).mean(0) + damping)).sum())


def per_example_grads(net: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor,
                      task: str, chunk: int = 64) -> dict[str, torch.Tensor]:
    """{name: (N, *shape)} gradients of each example's loss for the parameters `names`: from
    one forward and backward pass where every owner is a Linear, Conv2d or BatchNorm
    (per_example.from_hooks), else from torch.func."""
    fast = from_hooks(net, names, x, y, task)
    return fast if fast is not None else per_example_grads_func(net, names, x, y, task, chunk)


def per_example_grads_func(net: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor,
                           task: str, chunk: int = 64) -> dict[str, torch.Tensor]:
    """torch.func's per-example gradients (functional_call + vmap(grad)), in chunks."""
    was_training = net.training
    net.eval()
    params = {n: p.detach() for n, p in net.named_parameters()}
    buffers = {n: b.detach() for n, b in net.named_buffers()}
    chosen = {n: params[n] for n in names}
    rest = {**{n: p for n, p in params.items() if n not in chosen}, **buffers}

    def loss_one(sub: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor):
        out = functional_call(net, {**rest, **sub}, (xi[None],))
        return per_example_loss(out, yi[None], task).sum()

    per_chunk = vmap(grad(loss_one), in_dims=(None, 0, 0))
    try:
        parts = [per_chunk(chosen, x[i : i + chunk], y[i : i + chunk])
                 for i in range(0, len(x), chunk)]
    finally:
        net.train(was_training)
    return {n: torch.cat([p[n] for p in parts]) for n in names}


def new_entries(index_map: IndexMap, name: str) -> torch.Tensor | None:
    """Boolean mask over a tensor of the grown network: True where the entry is new."""
    source = index_map.get(name)
    if source is None or source.name is None:
        return None  # a brand-new tensor: every entry is new
    masks = [idx < 0 for idx in source.index if idx is not None]
    if not any(bool(m.any()) for m in masks):
        return torch.zeros(0, dtype=torch.bool)  # nothing new here
    grids = torch.meshgrid(*[(idx < 0) if idx is not None else torch.zeros(1, dtype=torch.bool)
                             for idx in source.index], indexing="ij")
    out = grids[0]
    for g in grids[1:]:
        out = out | g
    return out


def gain(grown: nn.Module, index_map: IndexMap, x: torch.Tensor, y: torch.Tensor, task: str,
         damping: float) -> float:
    """eta contribution of every new entry of `grown` (= eta(grown) - eta(before))."""
    masks: dict[str, torch.Tensor | None] = {}
    for name, param in grown.named_parameters():
        mask = new_entries(index_map, name)
        if mask is None or mask.numel() > 0:
            masks[name] = None if mask is None else _broadcast(mask, param.shape)
    if not masks:
        return 0.0
    grads = per_example_grads(grown, list(masks), x, y, task)
    columns = [g.flatten(1) if masks[n] is None else g[:, masks[n]]
               for n, g in grads.items()]
    return natural_score(torch.cat(columns, dim=1), damping)


def check_capture(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  task: str) -> Capture | None:
    """One pass over the network for a whole check (eta now, |dL/dy|^2, and GradMax's matrix
    and the gains of plain groups), or None where a module needs torch.func."""
    return capture_supported(net, owners_of([n for n, _ in net.named_parameters()]), x, y, task)


def eta_from(net: nn.Module, cap: Capture, damping: float) -> float:
    """eta(net) from its capture (the same per-example gradients as eta's)."""
    grads = from_capture(net, [n for n, _ in net.named_parameters()], cap)
    return natural_score(torch.cat([g.flatten(1) for g in grads.values()], dim=1), damping)


def _broadcast(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A mask over the leading dims (the index map's) expanded to the tensor's full shape."""
    while mask.dim() < len(shape):
        mask = mask.unsqueeze(-1)
    return mask.expand(shape)


def eta(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, damping: float) -> float:
    """The natural expansion score of the whole network (diagonal empirical Fisher)."""
    names = [n for n, _ in net.named_parameters()]
    grads = per_example_grads(net, names, x, y, task)
    return natural_score(torch.cat([g.flatten(1) for g in grads.values()], dim=1), damping)


def fanin_grad_norm(grown: nn.Module, producers: list[str], index_map: IndexMap,
                    x: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """Frobenius norm of the gradient of the mean loss (eval mode) with respect to the new
    units' fan-in weights (the new rows of every producer's weight): what GradMax maximises,
    recorded with each width event so initialisers can be compared on it."""
    params = dict(grown.named_parameters())
    names = [f"ops.{p}.weight" for p in producers]
    was_training = grown.training
    grown.eval()
    try:
        with torch.enable_grad():
            loss = per_example_loss(grown(x), y, task).mean()
            grads = torch.autograd.grad(loss, [params[n] for n in names])
    finally:
        grown.train(was_training)
    total = 0.0
    for name, g in zip(names, grads, strict=True):
        mask = new_entries(index_map, name)
        new = g if mask is None else g[_broadcast(mask, g.shape)]
        total += float(new.double().pow(2).sum())
    return total**0.5


def output_grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """mean_n |dl_n/dy_n|^2, SENN's yardstick for the absolute threshold alpha."""
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            out = net(x).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(per_example_loss(out, y, task).sum(), out)
    finally:
        net.train(was_training)
    return float(g.pow(2).sum(1).mean())


# ----------------------------------------------------------------------------- GradMax fan-out
class FanOutProbe:
    """A grown network with zero fan-in whose new fan-out is a variable U (D_out, k).

    Column j of U is unit j's fan-out: the entries of every consumer's new columns that
    belong to unit j, consumer by consumer in the group's order, in the consumer's old rows
    (a consumer that also produces the group keeps zeros where its new rows meet the new
    columns, as widen does, so the gradient stays linear in U). `fanin_grad(U)` is the
    gradient of the mean loss with respect to each unit's new fan-in entries, (k, D_in) =
    U^T M (the activation's slope and eval-mode norm scale included)."""

    def __init__(self, grown: nn.Module, group: Group, k: int, index_map: IndexMap,
                 x: torch.Tensor, y: torch.Tensor, task: str):
        self.net, self.group, self.k, self.x, self.y, self.task = grown, group, k, x, y, task
        self.index_map = index_map
        self.params = {n: p.detach() for n, p in grown.named_parameters()}
        self.buffers = {n: b.detach() for n, b in grown.named_buffers()}
        # every parameter with new leading entries is fan-in side: producers, norms, depthwise
        self.fan_in = [(n, idx[0] < 0) for n, src in index_map.items()
                       if n in self.params and src.name is not None and (idx := src.index)
                       and idx[0] is not None and bool((idx[0] < 0).any())]  # type: ignore
        self.fan_out = [(f"ops.{c}.weight", index_map[f"ops.{c}.weight"].index[1] < 0)  # type: ignore[operator]
                        for c in group.consumers]
        # each consumer's old rows (None: all rows are old)
        self.closed_maps: tuple[Capture, dict[str, torch.Tensor]] | None = None  # gradmax_closed
        self.old_rows: list[torch.Tensor | None] = [
            None if (rows := index_map[name].index[0]) is None else rows.ge(0)
            for name, _ in self.fan_out]

    def layout(self) -> list[tuple[str, int, list[int], int]]:
        """(consumer weight, rows, entries per unit of each site, kernel taps)."""
        out = []
        for consumer, (name, _), old in zip(self.group.consumers, self.fan_out, self.old_rows,
                                            strict=True):
            w = self.params[name]
            taps = w[0, 0].numel() if w.dim() > 2 else 1
            rows = w.shape[0] if old is None else int(old.sum())
            out.append((name, rows, [s.mult for s in self.group.columns_of(consumer)], taps))
        return out

    def dim(self) -> int:
        return sum(rows * sum(mults) * taps for _, rows, mults, taps in self.layout())

    def weights(self, u: torch.Tensor,
                base: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Consumer weights with their new columns taken from u (D_out, k); the rest of each
        weight from `base` where given (a consumer's fan-in variable when it also produces
        the group), else the grown network's."""
        out, start = {}, 0
        for (name, rows, mults, taps), (_, cols), old in zip(self.layout(), self.fan_out,
                                                             self.old_rows, strict=True):
            per_unit = sum(mults) * taps
            block = u[start : start + rows * per_unit].reshape(rows, per_unit, self.k)
            start += rows * per_unit
            pieces, at = [], 0
            for mult in mults:  # site by site: k units x mult columns x taps
                part = block[:, at : at + mult * taps].permute(0, 2, 1)  # (rows, k, mult*taps)
                pieces.append(part.reshape(rows, self.k * mult, taps))
                at += mult * taps
            w = (base or {}).get(name, self.params[name])
            out[name] = _scatter_columns(w, cols, torch.cat(pieces, dim=1), old)  # type: ignore
        return out

    def fan_out_weights(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """widen's fan_out for U: {consumer: its new columns in its old rows}."""
        weights = self.weights(u)
        out = {}
        for consumer, (name, cols), old in zip(self.group.consumers, self.fan_out,
                                               self.old_rows, strict=True):
            w = weights[name] if old is None else weights[name][old.to(weights[name].device)]
            out[consumer] = w[:, torch.as_tensor(cols, device=w.device)]
        return out

    def grown_with(self, u: torch.Tensor) -> tuple[nn.Module, IndexMap]:
        """The probe network with fan-out u in its consumers' new columns: the network
        widen(net, group, k, fan_out_weights(u)) builds, without building it again. The probe
        is spent (its network is the one returned)."""
        with torch.no_grad():
            for name, w in self.weights(u).items():
                self.net.get_parameter(name).copy_(w)
        self.closed_maps = None
        return self.net, self.index_map

    def fanin_grad(self, u: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """(k, D_in): gradient of the mean loss w.r.t. each new unit's fan-in entries."""
        fan_in = {n: self.params[n].clone().requires_grad_(True) for n, _ in self.fan_in}
        params = {**self.params, **fan_in}
        params.update(self.weights(u, params))
        was_training = self.net.training
        self.net.eval()
        try:
            out = functional_call(self.net, {**params, **self.buffers}, (self.x,))
            loss = per_example_loss(out, self.y, self.task).mean()
            grads = torch.autograd.grad(loss, list(fan_in.values()), create_graph=create_graph)
        finally:
            self.net.train(was_training)
        rows = []
        for g, (_, mask) in zip(grads, self.fan_in, strict=True):
            new = g[mask.to(g.device)]  # (segments * k, ...) unit-major within a segment
            rows.append(new.reshape(-1, self.k, *new.shape[1:]).transpose(0, 1)
                        .reshape(self.k, -1))
        return torch.cat(rows, dim=1)


def _scatter_columns(w: torch.Tensor, cols: torch.Tensor, new: torch.Tensor,
                     rows: torch.Tensor | None = None) -> torch.Tensor:
    """w with the columns `cols` (dim 1) replaced by `new` in the rows `rows` (None: all; the
    other rows get zeros there), differentiable in `new` (and in w where w requires grad)."""
    index = cols.nonzero().squeeze(1).to(w.device)
    if rows is None:
        block = new.reshape(w.shape[0], len(index), *w.shape[2:])
    else:
        kept = rows.nonzero().squeeze(1).to(w.device)
        block = new.reshape(len(kept), len(index), *w.shape[2:])
        block = block.new_zeros((w.shape[0], *block.shape[1:])).index_copy(0, kept, block)
    return w.index_copy(1, index, block)


def gradmax_fanout(probe: FanOutProbe, k: int, generator: torch.Generator,
                   rounds: int = 6, cap: Capture | None = None) -> torch.Tensor:
    """Top-k left singular vectors of M (D_out, k), orthonormal columns: exact for plain
    groups (M in closed form from `cap`, the network's capture, or one pass of the probe) and
    where M is small enough to be built row by row, else by block power iteration."""
    d = probe.dim()
    dtype = probe.params[probe.fan_out[0][0]].dtype
    m = closed_form_matrix(probe, cap)
    if m is None and d <= EXACT_DIM and -(-d // probe.k) <= 2 * rounds:  # no dearer
        m = gradmax_matrix(probe)
    if m is not None:
        u, _, _ = torch.linalg.svd(m, full_matrices=False)
        return _complete(u[:, :k], d, k, generator)
    u = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=dtype))[0]
    for _ in range(rounds):
        u = u.detach().requires_grad_(True)
        g = probe.fanin_grad(u, create_graph=True)  # (k, D_in) = U^T M
        v = g.detach()
        (mv,) = torch.autograd.grad((g * v).sum(), u)  # d/dU trace(U^T M V) = M V
        u = torch.linalg.qr(mv.detach())[0]
    return _complete(u, d, k, generator)


EXACT_DIM = 256  # fan-out dimensions up to which M is built exactly


def gradmax_matrix(probe: FanOutProbe) -> torch.Tensor:
    """M (D_out, D_in), row by row: fanin_grad(U) = U^T M, so basis columns give M's rows
    (k rows per backward pass)."""
    d, k = probe.dim(), probe.k
    dtype = probe.params[probe.fan_out[0][0]].dtype
    rows = []
    for start in range(0, d, k):
        block = torch.zeros(d, k, dtype=dtype)
        count = min(k, d - start)
        block[start : start + count, :count] = torch.eye(count, dtype=dtype)
        rows.append(probe.fanin_grad(block).detach()[:count])
    return torch.cat(rows, dim=0)


def _complete(u: torch.Tensor, d: int, k: int, generator: torch.Generator) -> torch.Tensor:
    if u.shape[1] < k:
        extra = torch.randn(d, k - u.shape[1], generator=generator, dtype=u.dtype)
        u = torch.cat([u, extra / extra.norm(dim=0, keepdim=True)], dim=1)
    signs = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
    return u * torch.where(signs == 0, torch.ones_like(signs), signs)


def scale_columns(u: torch.Tensor, target: float) -> torch.Tensor:
    return u / u.norm(dim=0, keepdim=True).clamp_min(1e-12) * target


