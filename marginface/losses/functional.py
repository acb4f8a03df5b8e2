"""Fused, class-chunked margin softmax cross-entropy.

``margin_cross_entropy`` computes the loss of every classification head in this package:

    z_ij = s_i * u_ij,   u_ij = c_ij            for j != y_i
                         u_iy = f(c_iy)         for the target class
    loss = mean_i [ logsumexp_j z_ij - z_iy ]

where ``c_ij`` is the cosine between embedding ``i`` and class weight row ``j`` (or the plain
dot product plus bias for the unnormalised Softmax head), ``s_i`` the scale (a constant or the
feature norm), and ``f`` a head's target-margin function.

It never materialises a normalised copy of the weights, nor the softmax or its gradient over all
classes: it walks the classes in chunks, keeps one float32 ``(B, C)`` buffer of cosines for the
backward pass, and fuses the margin, the softmax and the cross-entropy with a hand-written
backward. The gradient of ``f`` is exact (taken by autograd on the ``B`` target cosines in float64).

Rows of ``weight`` may be a subset (Partial FC) or a shard of all classes (model parallel): a label
of ``-1`` means "target not in these rows", and ``group`` all-reduces the softmax statistics and
target logits across the ranks that hold the other shards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["DEFAULT_CHUNK_SIZE", "MarginFn", "margin_cross_entropy"]

MarginFn = Callable[[Tensor], Tensor]
DEFAULT_CHUNK_SIZE = None  # auto: about 2**23 logits per chunk, at least 8192 classes
_AUTO_CHUNK_ELEMENTS = 2**23
_MIN_AUTO_CHUNK = 8192
_EPS = 1e-12


def _target_margin(cos_t: Tensor, margin: MarginFn | None) -> tuple[Tensor, Tensor]:
    """f(c) and f'(c) for the target cosines, computed in float64 with autograd."""
    if margin is None:
        return cos_t, torch.ones_like(cos_t)
    with torch.enable_grad():
        c64 = cos_t.detach().to(torch.float64).requires_grad_(True)
        f64 = margin(c64)
        (df,) = torch.autograd.grad(f64.sum(), c64)
    return f64.detach().to(cos_t.dtype), df.to(cos_t.dtype)


def _replace_targets(z: Tensor, labels: Tensor, lo: int, hi: int, value: Tensor) -> Tensor:
    """Write ``value[i]`` at column ``labels[i] - lo`` of ``z`` where the label is in [lo, hi)."""
    local = labels - lo
    inside = (local >= 0) & (local < hi - lo)
    idx = local.clamp(0, hi - lo - 1).unsqueeze(1)
    current = z.gather(1, idx)
    z.scatter_(1, idx, torch.where(inside.unsqueeze(1), value.unsqueeze(1), current))
    return inside


class _MarginCrossEntropy(torch.autograd.Function):
    """Forward keeps, per chunk, ``e = exp(z - m_chunk)`` and the chunk's row maxima; backward
    turns them into softmax probabilities with one multiply. The target entries are handled
    densely as plain softmax terms and then corrected sparsely (one entry per row)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        scale: Tensor,
        labels: Tensor,
        margin: MarginFn | None,
        normalize_weight: bool,
        subcenters: int,
        chunk_size: int,
        mm_dtype: torch.dtype | None,
        group: object | None,
    ) -> Tensor:
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        B = x.shape[0]
        K = subcenters
        C = weight.shape[0] // K
        device = x.device
        with torch.autocast(device.type, enabled=False):
            xa = x.detach().to(acc)
            w_all = weight.detach()
            norms = (
                torch.linalg.vector_norm(w_all, dim=1, dtype=acc).clamp_min_(_EPS)
                if normalize_weight
                else None
            )
            s = scale.detach().to(acc)
            xs = xa * s.unsqueeze(1)
            xs_mm = xs if mm_dtype is None else xs.to(mm_dtype)

            # Target cosines straight from the target rows (max over sub-centres).
            valid = labels >= 0
            safe = labels.clamp_min(0)
            rows = (safe.unsqueeze(1) * K + torch.arange(K, device=device)).reshape(-1)
            w_t = w_all.index_select(0, rows).to(acc).view(B, K, -1)
            cos_tk = torch.einsum("bkd,bd->bk", w_t, xa)
            if normalize_weight:
                assert norms is not None
                cos_tk = cos_tk / norms.index_select(0, rows).view(B, K)
            cos_t, k_t = cos_tk.max(dim=1)
            if bias is not None:
                cos_t = cos_t + bias.detach().to(acc).index_select(0, safe)
            f_t, df_t = _target_margin(cos_t, margin)
            z_t = s * f_t

            chunks: list[Tensor] = []
            maxima: list[Tensor] = []
            argmax: list[Tensor] = []
            run_max = torch.full((B,), float("-inf"), dtype=acc, device=device)
            run_sum = torch.zeros(B, dtype=acc, device=device)
            for lo in range(0, C, chunk_size):
                hi = min(C, lo + chunk_size)
                w = w_all[lo * K : hi * K]
                wm = w if w.dtype == xs_mm.dtype else w.to(xs_mm.dtype)
                if K == 1 and xs_mm.dtype == acc:
                    z = torch.mm(xs_mm, wm.t())
                else:
                    z = torch.mm(xs_mm, wm.t()).to(acc)
                if normalize_weight:
                    assert norms is not None
                    z.div_(norms[lo * K : hi * K])
                if K > 1:
                    z, a = z.view(B, hi - lo, K).max(dim=2)
                    argmax.append(a.to(torch.uint8))
                if bias is not None:
                    z.add_(bias.detach()[lo:hi].to(acc))
                _replace_targets(z, labels, lo, hi, z_t)
                m = z.amax(dim=1)
                z.sub_(m.unsqueeze(1)).exp_()
                chunk_sum = z.sum(dim=1)
                new_max = torch.maximum(run_max, m)
                run_sum.mul_(torch.exp(run_max - new_max))
                run_sum.add_(chunk_sum * torch.exp(m - new_max))
                run_max = new_max
                chunks.append(z)
                maxima.append(m)

            z_target = torch.where(valid, z_t, torch.zeros_like(z_t))
            if group is not None:
                global_max = run_max.clone()
                dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
                run_sum.mul_(torch.exp(run_max - global_max))
                dist.all_reduce(run_sum, op=dist.ReduceOp.SUM, group=group)
                dist.all_reduce(z_target, op=dist.ReduceOp.SUM, group=group)
                run_max = global_max
            lse = run_max + torch.log(run_sum)
            loss = (lse - z_target).mean()

        ctx.save_for_backward(
            x,
            weight,
            bias,
            scale,
            labels,
            lse,
            cos_t,
            f_t,
            df_t,
            k_t,
            norms,
            torch.stack(maxima, dim=1),
            *chunks,
            *argmax,
        )
        ctx.opts = (len(chunks), normalize_weight, K, chunk_size, mm_dtype)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        n_chunks, normalize_weight, K, chunk_size, mm_dtype = ctx.opts
        saved = ctx.saved_tensors
        x, weight, bias, scale, labels, lse, cos_t, f_t, df_t, k_t, norms, maxima = saved[:12]
        chunks = saved[12 : 12 + n_chunks]
        argmax = saved[12 + n_chunks :]
        need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
        acc = lse.dtype
        B = x.shape[0]
        C = weight.shape[0] // K
        device = x.device
        with torch.autocast(device.type, enabled=False):
            coef = grad_out.to(acc) / B
            xa = x.detach().to(acc)
            s = scale.detach().to(acc)
            r = coef * s  # dL/dc_ij = r_i * p_ij off the target
            rx = xa * r.unsqueeze(1)
            rx_mm = rx if mm_dtype is None else rx.to(mm_dtype)
            w_all = weight.detach()
            factor = torch.exp(maxima - lse.unsqueeze(1))  # e * factor = softmax probability
            need_acc = need_x or need_s
            acc_x = torch.zeros(B, x.shape[1], dtype=acc, device=device) if need_acc else None
            grad_w = torch.empty(weight.shape, dtype=acc, device=device) if need_w else None
            grad_b = torch.empty(C, dtype=acc, device=device) if need_b else None
            pb = torch.zeros(B, dtype=acc, device=device) if need_s and bias is not None else None
            work = torch.empty(B * min(chunk_size, C), dtype=acc, device=device)
            for i, lo in enumerate(range(0, C, chunk_size)):
                hi = min(C, lo + chunk_size)
                p = work[: B * (hi - lo)].view(B, hi - lo)
                torch.mul(chunks[i], factor[:, i : i + 1], out=p)
                if need_b:
                    assert grad_b is not None
                    torch.mv(p.t(), r, out=grad_b[lo:hi])
                if need_s and bias is not None:
                    assert pb is not None
                    pb.add_(torch.mv(p, bias.detach()[lo:hi].to(acc)))
                if K > 1:
                    full = torch.zeros(B, hi - lo, K, dtype=acc, device=device)
                    full.scatter_(2, argmax[i].long().unsqueeze(2), p.unsqueeze(2))
                    p = full.view(B, (hi - lo) * K)
                if normalize_weight:
                    p.div_(norms[lo * K : hi * K])
                pm = p if mm_dtype is None else p.to(mm_dtype)
                w = w_all[lo * K : hi * K]
                wm = w if w.dtype == pm.dtype else w.to(pm.dtype)
                if need_acc:
                    assert acc_x is not None
                    acc_x.add_(torch.mm(pm, wm).to(acc))
                if need_w:
                    assert grad_w is not None
                    gw = grad_w[lo * K : hi * K]
                    if mm_dtype is None:
                        torch.mm(pm.t(), rx_mm, out=gw)
                    else:
                        gw.copy_(torch.mm(pm.t(), rx_mm))
                    if normalize_weight:
                        # d c_ij / d w_j = x_i / n_j - c_ij w_j / n_j^2: project out w_j.
                        n = norms[lo * K : hi * K]
                        wa = w.to(acc)
                        col = torch.linalg.vecdot(gw, wa) / (n * n)
                        gw.addcmul_(wa, col.unsqueeze(1), value=-1.0)

            # Sparse correction at the target entries: the dense pass used r * p there, the true
            # derivative is coef * s * (p - 1) * f'(c).
            valid = labels >= 0
            safe = labels.clamp_min(0)
            p_t = torch.exp(s * f_t - lse)
            delta = torch.where(valid, coef * s * ((p_t - 1.0) * df_t - p_t), torch.zeros_like(p_t))
            row = safe * K + k_t
            w_t = w_all.index_select(0, row).to(acc)
            n_t = norms.index_select(0, row) if normalize_weight else None
            grad_x = None
            if need_x:
                assert acc_x is not None
                w_dir = w_t / n_t.unsqueeze(1) if n_t is not None else w_t
                grad_x = acc_x * r.unsqueeze(1) + delta.unsqueeze(1) * w_dir
            if need_w:
                assert grad_w is not None
                if normalize_weight:
                    assert n_t is not None
                    upd = (delta / n_t).unsqueeze(1) * xa - (delta * cos_t / (n_t * n_t)).unsqueeze(
                        1
                    ) * w_t
                else:
                    upd = delta.unsqueeze(1) * xa
                grad_w.index_put_((row,), upd, accumulate=True)  # index_add_ is slow on CPU
            if need_b:
                assert grad_b is not None
                grad_b.index_put_((safe,), delta, accumulate=True)
            grad_s = None
            if need_s:
                # sum_j p_ij c_ij = x_i . (sum_j p_ij w_j / n_j); swap the target's c for f(c).
                assert acc_x is not None
                pc = (xa * acc_x).sum(dim=1)
                if bias is not None:
                    assert pb is not None
                    pc = pc + pb
                pu = pc + torch.where(valid, p_t * (f_t - cos_t), torch.zeros_like(p_t))
                grad_s = coef * (pu - torch.where(valid, f_t, torch.zeros_like(f_t)))
                grad_s = grad_s.to(scale.dtype)
        return (
            grad_x.to(x.dtype) if grad_x is not None else None,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
            grad_s,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def margin_cross_entropy(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    scale: float | Tensor = 1.0,
    margin: MarginFn | None = None,
    bias: Tensor | None = None,
    normalize_weight: bool = True,
    subcenters: int = 1,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    group: object | None = None,
) -> Tensor:
    """Mean cross-entropy of margin logits over ``weight``'s rows, without a ``(B, C)`` softmax.

    Args:
        embeddings: ``(B, D)``; normalise them first for the cosine heads.
        weight: ``(C * subcenters, D)`` class rows (sub-centres of a class are consecutive).
        labels: ``(B,)`` int64 row-class indices; ``-1`` means the target is on another shard.
        scale: a constant ``s`` or a ``(B,)`` tensor (e.g. feature norms, gradient flows into it).
        margin: the target-cosine transform ``f``; ``None`` means no margin.
        bias: optional ``(C,)`` bias (only for unnormalised heads).
        normalize_weight: divide each row's dot product by the row's norm (cosine heads).
        subcenters: ``K``; a class's cosine is the max over its ``K`` rows.
        chunk_size: classes per chunk; ``None`` picks about 2**23 logits per chunk (BLAS is
            inefficient on thin chunks, and the chunk bounds the temporary memory).
        group: a process group holding the other shards of the classes, or ``None``.
    """
    B = embeddings.shape[0]
    if isinstance(scale, Tensor):
        s = scale.expand(B) if scale.dim() == 0 else scale
    else:
        s = torch.full((B,), float(scale), dtype=torch.float32, device=embeddings.device)
    if chunk_size is None:
        chunk_size = max(_MIN_AUTO_CHUNK, _AUTO_CHUNK_ELEMENTS // max(1, B * subcenters))
    mm_dtype = None
    device_type = embeddings.device.type
    if torch.is_autocast_enabled(device_type):
        mm_dtype = torch.get_autocast_dtype(device_type)
    return _MarginCrossEntropy.apply(
        embeddings,
        weight,
        bias,
        s,
        labels,
        margin,
        normalize_weight,
        int(subcenters),
        int(chunk_size),
        mm_dtype,
        group,
    )
