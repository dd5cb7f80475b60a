"""The Mamba-1 mixer (S6) and RMSNorm.

Mixer, for hidden (batch, L, d_model)::

    x, z   = in_proj(hidden)                                 (batch, d_inner, L) each
    x      = silu(causal_conv1d(x))                          depthwise, width d_conv
    dt,B,C = x_proj(x)                                       dt_rank, d_state, d_state rows
    y      = selective_scan(x, dt_proj.weight @ dt, A = -exp(A_log), B, C, D, z,
                            delta_bias = dt_proj.bias, delta_softplus = True)
    out    = out_proj(y)                                     (batch, L, d_model)

Inside the mixer tensors stay in the kernels' (batch, channels, L) layout: the projections are
matmuls of a weight with a (channels, L) slab, so no transposed copies are made between ops.

Context parallelism: with a ``ContextGroup`` of several ranks, x and z are this rank's segment
of the sequence; the convolution takes its first inputs from the previous rank and the scan
combines its state with the other ranks' (``mambadna.kernels.context_parallel``), so the
result is exactly the one-process result.

Bidirectional (BiMamba, as in Caduceus): a second set of SSM parameters (conv, x_proj, dt_proj,
A_log, D) scans the reversed sequence; in_proj and out_proj are shared and the two directions'
outputs are added before out_proj. With right padding, each row is reversed within its real
length, so padding changes no real position in either direction.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from mambadna.kernels import (
    causal_conv1d,
    causal_conv1d_update,
    rms_norm,
    selective_scan,
    selective_state_update,
)
from mambadna.kernels.context_parallel import (
    ContextGroup,
    context_parallel_conv1d,
    context_parallel_scan,
)
from mambadna.model.config import ModelConfig


class Recompute:
    """Saved-tensor hooks that keep a recipe instead of a tensor the backward recomputes cheaply.

    The scan saves its inputs for the backward, and the projections and the conv save theirs:
    in_proj's two outputs x and z, the conv output u and delta = dt_proj(dt) would be kept as
    four (batch, d_inner, L) tensors per block, though each is one cheap op away from tensors
    that are kept anyway (the normed hidden states, x_proj's output). Inside ``with
    recompute:``, a saved tensor that was registered with ``add`` is stored as its recipe and
    rebuilt (once) when the backward first needs it, as the Mamba authors' fused path
    recomputes the conv output and delta. A recipe lives as long as the graph's saved slots
    that hold it: it is freed, with what it rebuilt, once the last node reading it has run.
    """

    def __init__(self) -> None:
        # The hooks close over the dict, not over self: a cycle through self would keep every
        # recipe (its rebuilt tensor and the inputs its closure holds) alive until Python's
        # cycle collector ran, a whole training step's activations on top of the next step's.
        self._recipes: dict[tuple, _Recipe] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(
            functools.partial(_pack, self._recipes), _unpack)

    def add(self, tensor: torch.Tensor, make) -> torch.Tensor:
        """Register ``make()`` (no-grad, returns a tensor equal to ``tensor``) as its recipe."""
        self._recipes[_key(tensor)] = _Recipe(make)
        return tensor

    def source(self, tensor: torch.Tensor):
        """A no-argument callable giving ``tensor``: its recipe where one is registered, so a
        recipe built on top of it holds the recipe, not the tensor it was meant to free."""
        recipe = self._recipes.get(_key(tensor))
        return recipe if recipe is not None else (lambda: tensor)

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        # From here on only the graph's saved slots hold the recipes: each one (with its
        # rebuilt tensor) is freed as soon as the last backward node that reads it has run.
        self._recipes.clear()


def _key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), t.shape, t.stride(), t.dtype, t.device)


def _pack(recipes: dict, t: torch.Tensor):
    return recipes.get(_key(t), t) if t.data_ptr() else t


class _Recipe:
    def __init__(self, make) -> None:
        self.make, self.value = make, None

    def __call__(self) -> torch.Tensor:
        if self.value is None:
            with torch.no_grad():
                self.value = self.make()
            self.make = None  # its closure's inputs are no longer needed through this recipe
        return self.value


def _unpack(saved):
    return saved() if isinstance(saved, _Recipe) else saved


def no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Mark a parameter that the optimizer must not decay (A_log, D, norms, biases)."""
    param._no_weight_decay = True
    return param


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last axis, computed in fp32 (returns fp32).

    ``add_norm`` fuses the pre-norm block's residual add with the norm (one kernel each way on
    CUDA: ``mambadna.kernels.rms_norm``).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = no_weight_decay(nn.Parameter(torch.ones(dim)))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """RMSNorm(x + residual) in fp32."""
        return rms_norm(x, self.weight, residual, self.eps)[0]

    def add_norm(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """(RMSNorm(x + residual), x + residual in fp32); the normed output in the autocast
        dtype under autocast (the projection that reads it would cast it anyway), else fp32."""
        device = x.device.type
        out_dtype = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
                     else None)
        return rms_norm(x, self.weight, residual, self.eps, out_dtype)


def channel_product(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """weight (out, in) @ x (batch, in, L) -> (batch, out, L), contiguous.

    A batched product of the weight broadcast over the batch, never ``torch.matmul``: when the
    weight requires a gradient (training), matmul folds (batch, in, L) into one (batch * L, in)
    product and copies its (L, out) result into (out, L) order, and its backward copies again.
    Those transposed copies took 218 of a 653 ms training step (paper-1.4m, 8 x 2^17, H100),
    and on the CPU the one in the forward cost as much as the product itself (6x the product
    for the slice that feeds dt_proj, 20 against 3.4 ms at 16,384 positions on one core).
    The backward of ``bmm`` reads its operands transposed where it needs them (cuBLAS and
    oneDNN take either order), and the weight's gradient is a (batch, out, in) sum.
    """
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


def out_projection(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y (batch, in, L) -> y^T @ weight^T (batch, L, out), the mixer's out_proj.

    In the forward a batched product reading y transposed (what matmul does without a
    gradient). With a gradient, ``_OutProjection`` gives y's gradient in y's own layout: the
    autograd of the transposed product would hand the scan's backward a (batch, L, in)
    gradient, which it must copy into (batch, in, L) order.
    """
    if torch.is_grad_enabled() and (y.requires_grad or weight.requires_grad):
        device = y.device.type
        if torch.is_autocast_enabled(device):  # a custom Function sees no autocast casts
            dtype = torch.get_autocast_dtype(device)
            y, weight = y.to(dtype), weight.to(dtype)
        return _OutProjection.apply(y, weight)
    return torch.matmul(y.transpose(1, 2), weight.t())


class _OutProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, weight):
        ctx.save_for_backward(y, weight)
        return torch.bmm(y.transpose(1, 2), weight.t().expand(y.shape[0], -1, -1))

    @staticmethod
    def backward(ctx, grad):
        y, weight = ctx.saved_tensors
        grad_y = grad_w = None
        if ctx.needs_input_grad[0]:  # (batch, in, L) = weight^T @ grad^T, no copy of grad
            grad_y = torch.bmm(weight.t().expand(y.shape[0], -1, -1), grad.transpose(1, 2))
        if ctx.needs_input_grad[1]:  # (out, in) = sum over the batch of grad^T @ y^T
            grad_w = torch.bmm(grad.transpose(1, 2), y.transpose(1, 2)).sum(0)
        return grad_y, grad_w


class SelectiveSSM(nn.Module):
    """One direction of the mixer: conv -> SiLU -> x_proj -> dt_proj -> selective scan."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d_inner, n, r = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.dt_rank, self.d_state = r, n
        bound = 1.0 / math.sqrt(cfg.d_conv)  # nn.Conv1d's default for a depthwise kernel
        self.conv_weight = nn.Parameter(torch.empty(d_inner, cfg.d_conv).uniform_(-bound, bound))
        self.conv_bias = no_weight_decay(
            nn.Parameter(torch.empty(d_inner).uniform_(-bound, bound)))
        self.x_proj = nn.Linear(d_inner, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, d_inner, bias=True)
        self._init_dt(cfg)
        # S4D-real initialisation: A[d, n] = -(n + 1) for every channel.
        A = torch.arange(1, n + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = no_weight_decay(nn.Parameter(torch.log(A)))
        self.D = no_weight_decay(nn.Parameter(torch.ones(d_inner)))

    def _init_dt(self, cfg: ModelConfig) -> None:
        """dt_proj: weight uniform +-dt_scale/sqrt(dt_rank); bias = softplus^-1(dt) with dt
        log-uniform in [dt_min, dt_max], so that softplus(bias) starts in that range."""
        std = cfg.dt_rank ** -0.5 * cfg.dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_lo, log_hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(cfg.d_inner) * (log_hi - log_lo) + log_lo)
        dt = dt.clamp(min=cfg.dt_init_floor)
        inv_softplus = dt + torch.log(-torch.expm1(-dt))
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_softplus)
        no_weight_decay(self.dt_proj.bias)

    def _project(self, x: torch.Tensor):
        """x (batch, d_inner, L) -> dt (batch, d_inner, L), B and C (batch, N, L)."""
        x_dbl = channel_product(self.x_proj.weight, x)  # (batch, r + 2N, L)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=1)
        dt = channel_product(self.dt_proj.weight, dt)  # (batch, d_inner, L)
        return dt, B, C

    def forward(self, x, z, conv_state=None, ssm_state=None, recompute: Recompute | None = None,
                context: ContextGroup | None = None):
        """x, z: (batch, d_inner, L). Returns y (batch, d_inner, L) and the final conv state
        (batch, d_inner, d_conv-1) and SSM state (batch, d_inner, N), both fp32. With
        ``recompute`` (its hooks active around this call), the conv output and delta are
        rebuilt in the backward instead of kept.

        context: the ranks that share the sequence (x, z: this rank's segment; the states
        returned: after this rank's segment), or None for the whole sequence here."""
        conv, scan = causal_conv1d, selective_scan
        if context is not None and context.size > 1:
            if recompute is not None:  # its rebuilt conv would need the halo exchange again
                raise ValueError("recompute cannot be combined with a context group")
            conv = functools.partial(context_parallel_conv1d, context=context)
            scan = functools.partial(context_parallel_scan, context=context)
        conv_in, state_in = x, conv_state
        x, conv_state = conv(conv_in, self.conv_weight, self.conv_bias, initial_state=state_in,
                             return_final_state=True, activation="silu")
        if recompute is not None:  # before x_proj, which saves x
            conv_source = recompute.source(conv_in)
            recompute.add(x, lambda: causal_conv1d(conv_source(), self.conv_weight,
                                                   self.conv_bias, initial_state=state_in,
                                                   activation="silu"))
        x_dbl = channel_product(self.x_proj.weight, x)  # (batch, r + 2N, L)
        dt_low, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=1)
        dt = channel_product(self.dt_proj.weight, dt_low)  # (batch, d_inner, L)
        if recompute is not None:
            recompute.add(dt, lambda dtype=dt.dtype: channel_product(
                self.dt_proj.weight.to(dtype), dt_low.to(dtype)))
        y, ssm_state = scan(
            x, dt, -torch.exp(self.A_log.float()), B, C, self.D.float(), z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            initial_state=ssm_state, return_final_state=True,
        )
        return y, conv_state.float(), ssm_state

    def step(self, x, z, conv_state, ssm_state):
        """One position: x, z (batch, d_inner). Returns y (batch, d_inner) and the new states."""
        x, conv_state = causal_conv1d_update(x, conv_state, self.conv_weight, self.conv_bias,
                                             activation="silu")
        dt, B, C = self._project(x[..., None])  # (batch, ., 1) each
        y, ssm_state = selective_state_update(
            ssm_state, x, dt[..., 0], -torch.exp(self.A_log.float()), B[..., 0], C[..., 0],
            self.D.float(), z, dt_bias=self.dt_proj.bias.float(), dt_softplus=True,
        )
        return y, conv_state, ssm_state


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse x (batch, channels, L) along L, each row only within its first lengths[b]
    positions (right padding stays at the end). Applying it twice gives x back."""
    if lengths is None:
        return x.flip(-1)
    length = x.shape[-1]
    t = torch.arange(length, device=x.device)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (batch, L)
    return x.gather(-1, index[:, None, :].expand_as(x))


class Mixer(nn.Module):
    """The Mamba mixer: (batch, L, d_model) -> (batch, L, d_model), with streaming state."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.d_inner = cfg.d_inner
        self.in_proj = nn.Linear(cfg.d_model, 2 * cfg.d_inner, bias=False)
        self.ssm = SelectiveSSM(cfg)
        self.ssm_rev = SelectiveSSM(cfg) if cfg.bidirectional else None
        self.out_proj = nn.Linear(cfg.d_inner, cfg.d_model, bias=False)

    def forward(self, hidden, conv_state=None, ssm_state=None, lengths=None, context=None,
                recompute=True):
        """hidden (batch, L, d_model); states as SelectiveSSM.forward; lengths (batch,) real
        lengths, used only by bidirectional mixers (None: no padding); context: a
        ``ContextGroup`` (unidirectional mixers only), hidden being this rank's segment.
        ``recompute``: when a gradient will follow, rebuild x, z, the conv output and delta in the
        backward instead of keeping them (``Recompute``); off under activation checkpointing,
        whose own hooks must see every saved tensor, and with a context group, whose
        exchanges must not run again. Returns (out (batch, L, d_model), conv_state,
        ssm_state)."""
        split = context is not None and context.size > 1
        if split and self.ssm_rev is not None:
            raise ValueError("a bidirectional mixer cannot split a sequence over ranks")
        # Two products, not one split in two: each of x and z is then a contiguous (batch,
        # d_inner, L) tensor, which the scan would otherwise copy z into (and the backward
        # would assemble d(xz) from two slices); hidden (d_model wide) is read twice instead.
        hidden_t = hidden.transpose(1, 2)
        if hidden.device.type == "cpu":  # one transposed copy of hidden instead of two of x, z
            hidden_t = hidden_t.contiguous()
        w_x, w_z = self.in_proj.weight.split(self.d_inner, dim=0)
        x, z = channel_product(w_x, hidden_t), channel_product(w_z, hidden_t)  # (b, d_inner, L)
        recompute = (Recompute() if recompute and torch.is_grad_enabled() and not split
                     else None)
        if recompute is None:
            y, conv_state, ssm_state = self.ssm(x, z, conv_state, ssm_state, context=context)
        else:
            # x and z are one small product each away from hidden (d_model wide, kept for
            # in_proj's weight gradient): 4 bytes per position and channel not kept.
            for t, w in ((x, w_x), (z, w_z)):
                recompute.add(t, lambda w=w, dtype=t.dtype: channel_product(
                    w.to(dtype), hidden_t.to(dtype)))
            with recompute:
                y, conv_state, ssm_state = self.ssm(x, z, conv_state, ssm_state, recompute)
        if self.ssm_rev is not None:
            y_rev, _, _ = self.ssm_rev(reverse_within_lengths(x, lengths),
                                       reverse_within_lengths(z, lengths))
            y = y + reverse_within_lengths(y_rev, lengths)
        out = out_projection(y, self.out_proj.weight)  # (batch, L, d_model)
        return out, conv_state, ssm_state

    def step(self, hidden, conv_state, ssm_state):
        """One position: hidden (batch, d_model) -> (out (batch, d_model), conv, ssm states)."""
        x, z = self.in_proj(hidden).split(self.d_inner, dim=-1)
        y, conv_state, ssm_state = self.ssm.step(x, z, conv_state, ssm_state)
        return self.out_proj(y), conv_state, ssm_state
