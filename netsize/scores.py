"""Scores: pure functions of a network and a score batch.

Everything here runs in eval mode (batch norm uses running statistics, dropout is off), where each
example's loss depends on that example alone, so per-example gradients, the empirical Fisher and
the GradMax matrix are well defined, and scoring leaves no trace on the module (no running-stat
updates).

Notation (docs/design.md): a new unit of layer l has fan-in w (its row of W_l, plus bias) and
fan-out omega (its column of W_{l+1}). With zero fan-in the gradient of w is
    dL/dw = c * omega^T M,   M = mean_n M_n,   M_n = (dl_n/dz_{l+1}) x_n^T
where x_n is layer l's input (with a 1 appended for the bias) and c = f'(0) times the eval-mode
batch-norm scale. For convolutions the rows of M_n run over (out channel, kernel tap) of the next
conv and the columns over (in channel, kernel tap) of layer l, built from unfolded tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from netsize.losses import per_example_loss
from netsize.model import Net, activation_slope_at_zero, running_stats


@dataclass
class Probe:
    """Per-example tensors of one score batch, all detached. N = batch size."""

    x_in: list[torch.Tensor]  # input of hidden op i
    z: list[torch.Tensor]  # output of hidden op i (before the norm)
    a: list[torch.Tensor]  # output of hidden layer i (after activation)
    grad_z: list[torch.Tensor]  # dl_n/dz_i, z_i = output of hidden op i
    grad_a: list[torch.Tensor]  # dl_n/da_i
    grad_n: list[torch.Tensor | None]  # dl_n/d(norm output) of layers with a norm
    grad_out: torch.Tensor  # dl_n/d(head output): (N, n_outputs)
    head_in: torch.Tensor  # input of the head: (N, d_last)
    _cols: dict[tuple[int, tuple[int, ...]], torch.Tensor] = field(default_factory=dict)

    def patches(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Cached `_patches(x, k)`: a layer's input is often the previous layer's output."""
        key = (x.data_ptr(), tuple(x.shape))
        if key not in self._cols:
            self._cols[key] = _patches(x, k)
        return self._cols[key]


def probe(net: Net, x: torch.Tensor, y: torch.Tensor, task: str) -> Probe:
    was_training = net.training
    net.eval()
    try:
        out, taps = net.forward_taps(x)
        # Summed per-example losses: in eval mode d(sum)/d(tensor of example n) = dl_n/d(...).
        total = per_example_loss(out, y, task).sum()
        normed = [i for i, layer in enumerate(net.spec.layers) if layer.norm]
        wrt = [t.z for t in taps] + [t.a for t in taps] + [taps[i].n for i in normed] + [out]
        grads = torch.autograd.grad(total, wrt)
        head_in = net.route(len(taps) - 1, taps[-1].a.detach())
    finally:
        net.train(was_training)
    n = len(taps)
    grad_n: list[torch.Tensor | None] = [None] * n
    for j, i in enumerate(normed):
        grad_n[i] = grads[2 * n + j]
    return Probe(
        x_in=[t.x_in.detach() for t in taps],
        z=[t.z.detach() for t in taps],
        a=[t.a.detach() for t in taps],
        grad_z=list(grads[:n]),
        grad_a=list(grads[n : 2 * n]),
        grad_n=grad_n,
        grad_out=grads[-1],
        head_in=head_in,
    )


# ------------------------------------------------------------------------ GradMax matrix M_n
def unfold_same(x: torch.Tensor, k: int) -> torch.Tensor:
    """F.unfold(x, k, padding=k // 2) for stride 1: (N, C, H, W) -> (N, C*k*k, H*W).

    Built from k*k shifted slices of the padded tensor, several times faster than im2col on
    the CPU for the small images and channel counts scoring sees.
    """
    n, c, h, w = x.shape
    pad = k // 2
    padded = F.pad(x, (pad, pad, pad, pad))
    shifts = [padded[:, :, dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k)]
    return torch.stack(shifts, dim=2).reshape(n, c * k * k, h * w)


def _patches(x: torch.Tensor, k: int, with_bias: bool = True) -> torch.Tensor:
    """(N, C, H, W) -> (N, C*k*k [+1], H*W): the op's receptive fields, a 1 row for the bias."""
    cols = unfold_same(x, k)
    if with_bias:
        cols = torch.cat([cols, torch.ones_like(cols[:, :1])], dim=1)
    return cols


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def fanin_gradient_matrices(net: Net, p: Probe, layer: int) -> torch.Tensor:
    """Per-example M_n for new units of `layer`: (N, D_next, D_in + 1).

    D_next = d_{l+1} (linear next op) or C_{l+1}*k*k (conv next op);
    D_in = d_{l-1} or C_{l-1}*k*k. Multiply by c = `fanin_gradient_scale` to get gradients.
    """
    spec = net.spec
    route = spec.route_after(layer)
    last = layer == len(spec.layers) - 1
    g_next = p.grad_out if last else p.grad_z[layer + 1]
    if spec.kind == "mlp":
        return torch.einsum("no,ni->noi", g_next, _with_ones(p.x_in[layer]))
    k = spec.kernel_size
    cols = p.patches(p.x_in[layer], k)  # (N, D_in+1, H*W) at layer l's resolution
    if route == "avgpool":  # head sees the spatial mean of the new channel
        return torch.einsum("no,ni->noi", g_next, cols.mean(dim=2))
    n, o = g_next.shape[:2]
    # dl/dh_new[p] = sum_{o,a} omega[o,a] * g_next[o, p - a + centre]: unfold g_next, flip taps.
    g_cols = unfold_same(g_next, k).view(n, o, k * k, -1).flip(2)
    g_cols = g_cols.reshape(n, o * k * k, -1)
    if route == "maxpool":
        # A zero channel's 2x2 max pools route the gradient to the first (top-left) element.
        h, w = p.x_in[layer].shape[2:]
        grid = cols.view(n, cols.shape[1], h, w)[:, :, : h // 2 * 2 : 2, : w // 2 * 2 : 2]
        cols = grid.reshape(n, cols.shape[1], -1)
    return torch.einsum("nop,nip->noi", g_cols, cols)


def fanin_gradient_scale(net: Net, layer: int) -> float:
    """c = f'(0) * gamma / sqrt(running_var + eps) of a new (gamma=1, var=1) channel."""
    scale = activation_slope_at_zero(net.spec.activation)
    if net.spec.layers[layer].norm:
        scale /= math.sqrt(1.0 + net.batch_norm(layer).eps)
    return scale


def gradmax_fanout(m: torch.Tensor, k: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Top-k left singular vectors of M (D_next, D_in+1), orthonormal columns: (D_next, k).

    k may exceed rank(M): the rest is filled with random directions orthogonal to the others,
    and past D_next (no more orthogonal directions) with random unit vectors.
    The sign is fixed so that each column's largest entry is positive (deterministic output).
    """
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    rank = int((s > s.max().clamp_min(1e-30) * 1e-6).sum()) if s.numel() else 0
    take = min(k, rank)
    omega = u[:, :take]
    if take < k:
        extra = torch.randn(m.shape[0], k - take, generator=generator, dtype=m.dtype)
        q, _ = torch.linalg.qr(torch.cat([omega, extra.to(m.device)], dim=1))
        omega = torch.cat([omega, q[:, take:]], dim=1)
    if omega.shape[1] < k:
        extra = torch.randn(m.shape[0], k - omega.shape[1], generator=generator, dtype=m.dtype)
        extra = extra.to(m.device)
        omega = torch.cat([omega, extra / extra.norm(dim=0, keepdim=True)], dim=1)
    signs = torch.sign(omega.gather(0, omega.abs().argmax(0, keepdim=True)))
    return omega * torch.where(signs == 0, torch.ones_like(signs), signs)


# ---------------------------------------------------------------- natural expansion score
def natural_score(per_example_grads: torch.Tensor, damping: float) -> float:
    """eta = g^T (F + lambda I)^-1 g with a diagonal empirical Fisher.

    per_example_grads: (N, P) gradients of each example's loss.
    g = mean_n g_n (gradient of the mean loss), F_ii = mean_n g_n,i^2.
    """
    g = per_example_grads.mean(0)
    fisher = per_example_grads.pow(2).mean(0)
    return float((g.pow(2) / (fisher + damping)).sum())


def current_score(net: Net, p: Probe, damping: float) -> float:
    """eta of the present network, from per-example gradients of every parameter.

    The gradients are assembled from the probe's taps (weight = output grad x input, in eval
    mode), which equals per-example autograd (tests compare against torch.func) at a fraction
    of its cost. The diagonal Fisher makes eta a sum of per-parameter terms.
    """
    eta = 0.0
    for i, layer in enumerate(net.spec.layers):
        eta += natural_score(_op_grads(net, p, i), damping)
        if layer.norm:
            eta += natural_score(_norm_grads(net, p, i), damping)
    head = torch.einsum("no,ni->noi", p.grad_out, _with_ones(p.head_in))
    return eta + natural_score(head.flatten(1), damping)


def _op_grads(net: Net, p: Probe, i: int) -> torch.Tensor:
    """Per-example gradients of hidden op i's weight and bias: (N, d_out * (d_in + 1))."""
    if net.spec.kind == "mlp":
        grads = torch.einsum("no,ni->noi", p.grad_z[i], _with_ones(p.x_in[i]))
    else:
        cols = p.patches(p.x_in[i], net.spec.kernel_size)
        grads = torch.einsum("nop,nip->noi", p.grad_z[i].flatten(2), cols)
    return grads.flatten(1)


def _norm_grads(net: Net, p: Probe, i: int) -> torch.Tensor:
    """Per-example gradients of an eval-mode batch norm's gamma and beta: (N, 2 * C)."""
    norm = net.batch_norm(i)
    shape = (1, -1) + (1,) * (p.z[i].dim() - 2)
    g = p.grad_n[i]
    assert g is not None
    mean, var = (t.view(shape) for t in running_stats(norm))
    xhat = (p.z[i] - mean) / torch.sqrt(var + norm.eps)
    dims = tuple(range(2, g.dim()))  # spatial positions of a conv; none for an mlp
    gamma = (g * xhat).sum(dims) if dims else g * xhat
    beta = g.sum(dims) if dims else g
    return torch.cat([gamma, beta], dim=1)


def width_gain(net: Net, layer: int, m_n: torch.Tensor, omega: torch.Tensor,
               damping: float) -> float:
    """eta contribution of k new units of `layer` with zero fan-in and fan-out omega (D_next, k).

    The new fan-in (weights and bias) has gradient c * omega^T M_n; with batch norm the new beta
    has the bias's gradient times sqrt(1 + eps), and the new gamma none (its input is 0). The
    fan-out has none either: the new units output 0.
    """
    per_example = fanin_gradient_scale(net, layer) * torch.einsum("nod,ok->nkd", m_n, omega)
    grads = [per_example.flatten(1)]  # (N, k * (D_in + 1))
    if net.spec.layers[layer].norm:
        grads.append(per_example[..., -1] * math.sqrt(1.0 + net.batch_norm(layer).eps))
    return natural_score(torch.cat(grads, dim=1), damping)


def depth_gain(net: Net, p: Probe, after: int, damping: float) -> float:
    """eta contribution of an identity layer inserted after hidden layer `after`.

    Its input is a_l and d(loss)/d(its output) = dl/da_l, the ReLU passing everything >= 0.
    """
    a, g = p.a[after], p.grad_a[after]
    if net.spec.kind == "mlp":
        per_example = torch.einsum("no,ni->noi", g, _with_ones(a))
    else:
        cols = p.patches(a, net.spec.kernel_size)  # (N, C*k*k+1, H*W)
        per_example = torch.einsum("nop,nip->noi", g.flatten(2), cols)
    return natural_score(per_example.flatten(1), damping)


def output_grad_norm(p: Probe) -> float:
    """mean_n |dl_n/dy|^2, SENN's yardstick for the absolute threshold alpha."""
    return float(p.grad_out.pow(2).sum(1).mean())
