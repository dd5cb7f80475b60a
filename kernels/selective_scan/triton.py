"""Selective scan on the GPU: launchers and the autograd Function around the Triton kernels.

``selective_scan_triton`` is what ``mambadna.kernels.selective_scan`` calls for CUDA tensors
and for ``backend="triton"`` (arguments already validated). The kernels live in
``kernels.py``, and the Gluon versions of the three pipelined passes (run on CUDA
for aligned rows) in ``gluon.py``; the math is in kernels/README.md, the layout and the
tiling in docs/kernels.md, the measured speed in docs/runlog.md.

What is kept between forward and backward: the inputs and the fp32 state at every chunk
boundary, ``X`` (batch, L / chunk, dim, N) — 64 / chunk bytes per (batch, channel, position);
a call that no gradient will follow writes only the segments' start states into it. The
output is recomputed, never saved.

Under ``TRITON_INTERPRET=1`` (set before Triton is imported) the Triton kernels run on CPU
tensors; that is how CI tests them (Gluon has no interpreter).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace

import torch

from mambadna.kernels.launch import (
    PlanCache,
    cdiv,
    empty,
    interpreting,
    maxnreg,
    num_sms,
    resident_per_sm,
    resident_programs,
    set_poison_outputs,
)
from mambadna.kernels.selective_scan import kernels as K
from mambadna.kernels.selective_scan.config import (
    ScanConfig,
    get_config,
    scan_config,
    set_config,
)
from mambadna.kernels.selective_scan.naive import selective_scan_chunked

# ScanConfig, get_config, scan_config, set_config (deprecated), resident_programs and
# set_poison_outputs are re-exported: they were this module's (as mambadna.kernels.triton_scan).
__all__ = ["ScanConfig", "get_config", "resident_programs", "scan_config",
           "selective_scan_triton", "set_config", "set_poison_outputs"]

_log = logging.getLogger(__name__)

compiled_kernels: dict[str, object] = {}  # last compiled kernel per role (registers, spills)


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Geometry:
    """How one call is cut: channel tiles, positions per thread tile, chunks and segments."""

    batch: int
    dim: int
    length: int
    n_state: int
    groups: int
    tile: int  # T: positions per thread tile
    block_d: int  # BD: channels per program
    n_dtiles: int  # channel tiles per group
    chunk: int  # CH
    n_chunks: int
    chunks_per_seg: int
    n_seg: int
    aligned: bool

    @property
    def n_bt(self) -> int:
        return self.batch * self.groups * self.n_dtiles

    @property
    def n_tiles(self) -> int:
        return -(-self.length // self.tile)


def _geometry(u, B, delta, z, n_state, block_d, cfg: ScanConfig) -> _Geometry:
    batch, dim, length = u.shape
    groups = 1 if B.dim() == 3 else B.shape[1]
    # Positions per thread tile: one 16-byte load per row unless the config says otherwise.
    itemsize = max(t.element_size() for t in (u, delta, z) if t is not None)
    tile = cfg.tile or (8 if itemsize <= 2 else 4)
    n_dtiles = -(-(dim // groups) // block_d)
    n_bt = batch * groups * n_dtiles
    target = cfg.programs_per_sm * num_sms(u.device)
    wanted = cfg.segments or max(1, -(-target // n_bt))
    # Short sequences get shorter chunks so they can still be split into enough segments.
    per_seg = -(-length // wanted)
    chunk = min(cfg.chunk, max(cfg.min_chunk, 1 << max(per_seg - 1, 0).bit_length()))
    chunk = max(chunk, tile)
    n_chunks = -(-length // chunk)
    n_seg = min(wanted, n_chunks)
    chunks_per_seg = -(-n_chunks // n_seg)
    n_seg = -(-n_chunks // chunks_per_seg)
    aligned = length % tile == 0 and _rows_aligned(u, delta, z)
    return _Geometry(batch, dim, length, n_state, groups, tile, block_d, n_dtiles, chunk,
                     n_chunks, chunks_per_seg, n_seg, aligned)


def _rows_aligned(u, delta, z) -> bool:
    return all(t.data_ptr() % 16 == 0 for t in (u, delta, z) if t is not None)


def _tile_major(t: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """B or C as fp32 (batch, G, L/T, N, T), L zero-padded to a multiple of T.

    Every thread of a program reads the same B / C rows, so converting them to fp32 once here
    beats converting them in every thread, and tile-major storage puts a tile's N rows at
    fixed offsets from one pointer. One strided copy does the cast and the transpose (three
    kernels as cast, pad and transpose: 0.14 ms per tensor at 2^20 on an H200).
    """
    batch, groups, n, tile = geo.batch, geo.groups, geo.n_state, geo.tile
    full = geo.length // tile  # whole tiles; the last one may be partial
    src = t.reshape(batch, groups, n, geo.length)
    out = torch.empty(batch, groups, geo.n_tiles, n, tile, dtype=torch.float32,
                      device=t.device)
    rows = out.transpose(2, 3)  # (batch, G, N, L/T, T): a view in B's own order
    rows[:, :, :, :full].copy_(src[..., :full * tile].reshape(batch, groups, n, full, tile))
    if full < geo.n_tiles:
        rest = geo.length - full * tile
        rows[:, :, :, full, :rest].copy_(src[..., full * tile:])
        rows[:, :, :, full, rest:].zero_()
    return out


def _from_tile_major(t: torch.Tensor, geo: _Geometry, shape, dtype) -> torch.Tensor:
    """Inverse of ``_tile_major`` (drops the padding) as ``dtype``, reshaped to ``shape``:
    one strided copy that casts and transposes."""
    batch, groups, n, tile = geo.batch, geo.groups, geo.n_state, geo.tile
    full = geo.length // tile
    out = torch.empty(shape, dtype=dtype, device=t.device)
    dst = out.view(batch, groups, n, geo.length)
    rows = t.transpose(2, 3)
    dst[..., :full * tile].view(batch, groups, n, full, tile).copy_(rows[:, :, :, :full])
    if full < geo.n_tiles:
        dst[..., full * tile:].copy_(rows[:, :, :, full, :geo.length - full * tile])
    return out


def _retile(geo: _Geometry, block_d: int) -> _Geometry:
    """The same cut with channel tiles of ``block_d`` channels."""
    return replace(geo, block_d=block_d, n_dtiles=-(-(geo.dim // geo.groups) // block_d))


def _bc_strides(geo: _Geometry) -> tuple[int, int]:
    """(batch, group) strides of tile-major B / C."""
    per_group = geo.n_tiles * geo.tile * geo.n_state
    return geo.groups * per_group, per_group


def _common_args(geo: _Geometry, sB) -> tuple:
    return (geo.dim, geo.length, geo.dim // geo.groups, geo.n_dtiles, geo.groups, geo.n_bt,
            geo.n_chunks, geo.chunks_per_seg, geo.n_seg, *sB)


def _chain(S, dtsum, A2, geo: _Geometry, n_slots: int, slot_stride: int, reverse: bool) -> None:
    lanes = geo.dim * geo.n_state
    blk = 128  # one lane per thread, 4 warps; 16 segments' loads in flight per step
    grid = (geo.batch, cdiv(lanes, blk))
    compiled_kernels["chain"] = K._chain_kernel[grid](
        S, dtsum, A2, geo.dim, geo.n_seg, n_slots, slot_stride,
        N=geo.n_state, REVERSE=reverse, CB=16, BLK=blk, num_warps=4)


# The cut and kernels of a call, per (direction, config, what of the call they depend on).
_plans = PlanCache()
_plan = _plans.get_or_make


@functools.lru_cache(maxsize=256)
def _chunks_per_segment(n_chunks: int, n_bt: int, slots: int, summary_slots: int,
                        summary_weight: float, forced: int | None = None) -> int:
    """Chunks per segment: the least time when every program that does not fit on the GPU at
    once waits for a whole turn.

    A pass's programs each take (segment, channel tile) items of equal length, so a grid of
    items one over the resident slots costs a second turn of the same length (measured on an
    H200: 12 resident of 16 per SM took 108 ms where one item per resident program took 92).
    Time in chunk-lengths: turns x (chunks + a per-item overhead of a quarter chunk), for the
    pass over every segment (slots: its programs resident on the GPU) and, at
    ``summary_weight`` of its time per item, the summary pass over all segments but one
    (``summary_slots``). The forward and the backward each cut L this way.
    """
    if forced is not None:
        return -(-n_chunks // max(1, min(forced, n_chunks)))
    best, best_cost, last_seg = 1, None, None
    for cps in range(1, n_chunks + 1):
        n_seg = -(-n_chunks // cps)
        if n_seg == last_seg:
            continue
        last_seg = n_seg
        item = cps + 0.25
        cost = -(-n_seg * n_bt // slots) * item
        if n_seg > 1:
            cost += summary_weight * -(-(n_seg - 1) * n_bt // summary_slots) * item
        if best_cost is None or cost < best_cost - 1e-9:
            best, best_cost = cps, cost
    return best


# ----------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _ForwardPlan:
    geo: _Geometry  # the output pass's channel tiles and the cut
    sgeo: _Geometry  # the summary pass's channel tiles, the same cut
    summary: tuple  # (kernel, flags)
    output: tuple


def _forward(u, delta, A2, B, C, D, z, bias, init, softplus, cfg: ScanConfig,
             save_states: bool = True):
    """Launch the forward kernels. Returns out, final state, chunk states X and the geometry.
    Without ``save_states`` (no gradient to come) X holds only the segments' start states."""
    n_state = A2.shape[1]
    key = ("forward", cfg, save_states, softplus, tuple(u.shape), tuple(B.shape), n_state,
           u.dtype, delta.dtype, z.dtype if z is not None else None, D is None, bias is None,
           _rows_aligned(u, delta, z), u.device)
    plan = _plans.get(key)
    geo = plan.geo if plan is not None else _geometry(
        u, B, delta, z, n_state, 32 * cfg.fwd_warps * cfg.fwd_channels_per_thread, cfg)
    batch, dim, dev = geo.batch, geo.dim, u.device
    B, C = _tile_major(B, geo), _tile_major(C, geo)
    X = empty((batch, geo.n_chunks, dim, n_state), torch.float32, dev)
    if init is None:
        X[:, 0].zero_()
    else:
        X[:, 0].copy_(init)
    out = empty(u.shape, u.dtype, dev)
    final = empty((batch, dim, n_state), torch.float32, dev)
    sB = _bc_strides(geo)
    ptrs = (u, delta, z if z is not None else u, out, A2, B, C,
            D if D is not None else A2, bias if bias is not None else A2)
    plan = _plan(key, lambda: _forward_plan(geo, cfg, save_states, softplus, D, z, bias,
                                            (*ptrs, X, X, final), sB))
    geo, sgeo = plan.geo, plan.sgeo
    dtsum = X
    if geo.n_seg > 1:
        dtsum = empty((batch, geo.n_seg, dim), torch.float32, dev)
        kernel, flags = plan.summary
        compiled_kernels["forward summary"] = kernel[((geo.n_seg - 1) * sgeo.n_bt,)](
            *ptrs, X, dtsum, final, *_common_args(sgeo, sB), **flags)
        _chain(X, dtsum, A2, geo, geo.n_chunks, geo.chunks_per_seg, reverse=False)
    kernel, flags = plan.output
    compiled_kernels["forward"] = kernel[(geo.n_seg * geo.n_bt,)](
        *ptrs, X, dtsum, final, *_common_args(geo, sB), **flags)
    return out, final, X, geo, B, C


def _forward_plan(geo: _Geometry, cfg: ScanConfig, save_states: bool, softplus: bool, D, z,
                  bias, args: tuple, sB) -> _ForwardPlan:
    """The forward's kernels and flags, and its cut (``args``: the kernels' tensors, whose
    dtypes and alignment the occupancy lookups compile for)."""
    s_warps = cfg.fwd_summary_warps or cfg.fwd_warps
    sgeo = _retile(geo, 32 * s_warps * cfg.fwd_channels_per_thread)
    G = _gluon(geo, cfg, cfg.fwd_channels_per_thread)
    common_flags = dict(N=geo.n_state, T=geo.tile, CH=geo.chunk, HAS_D=D is not None,
                        HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
                        NS=cfg.stages)
    passes = {}  # SUMMARY -> (kernel, its flags)
    for summary, g, warps, cap in ((False, geo, cfg.fwd_warps, cfg.fwd_maxnreg),
                                   (True, sgeo, s_warps, cfg.fwd_summary_maxnreg)):
        flags = dict(common_flags, BD=g.block_d, SUMMARY=summary, num_warps=warps,
                     **maxnreg(cap))
        if not summary:
            flags.update(SAVE_X=save_states)
        if G is not None:
            passes[summary] = G._scan_fwd_kernel, dict(flags, W=warps)
        else:
            passes[summary] = K._scan_fwd_kernel, dict(flags, WRITE_FINAL=not summary,
                                                       ALIGNED=geo.aligned, BITS=cfg.bit_picks)
    if cfg.fwd_turns and cfg.segments is None and geo.n_chunks > 1:
        # The cut from the resident programs of both passes, the summary's counted in the
        # output pass's channel tiles. The summary pass takes ~0.55 of the output pass's time
        # per channel (H200, 2^20: 6.3 ms over 127 of 128 segments against 11.4).
        n_sms = num_sms(args[0].device)
        slots = [(resident_per_sm(passes[summary][0], (*args, *_common_args(g, sB)),
                                  passes[summary][1]) or 16)
                 * n_sms * g.block_d // geo.block_d
                 for summary, g in ((False, geo), (True, sgeo))]
        unit = max(1, cfg.fwd_cut // geo.chunk)
        cps = unit * _chunks_per_segment(cdiv(geo.n_chunks, unit), geo.n_bt, *slots,
                                         0.55)
        geo = replace(geo, chunks_per_seg=cps, n_seg=cdiv(geo.n_chunks, cps))
        sgeo = replace(sgeo, chunks_per_seg=cps, n_seg=geo.n_seg)
    return _ForwardPlan(geo, sgeo, passes[True], passes[False])


def _gluon(geo: _Geometry, cfg: ScanConfig, channels_per_thread: int):
    """The Gluon kernels' module (``gluon.py``) if they apply to this call, else
    None: they copy 16-byte rows (aligned rows only), lay B / C blocks of N rows over the
    threads (N a power of two) and give a thread one channel; the interpreter has no Gluon."""
    n = geo.n_state
    if not (cfg.gluon and geo.aligned and n & (n - 1) == 0 and cfg.stages >= 2
            and channels_per_thread == 1 and not interpreting()):
        return None
    try:
        from mambadna.kernels.selective_scan import gluon
    except ImportError:  # a Triton without Gluon
        return None
    return gluon


# ----------------------------------------------------------------------------- backward


@dataclass(frozen=True)
class _BackwardPlan:
    bgeo: _Geometry  # the backward kernel's channel tiles and its own cut
    sgeo: _Geometry  # the adjoint summary's channel tiles, the same cut
    main: tuple  # (kernel, flags)
    summary: tuple
    slots: int  # backward programs the GPU holds at once: the persistent grid


def _backward(saved, geo: _Geometry, softplus: bool, dout, dfinal, cfg: ScanConfig):
    """Launch the backward kernels; returns du, ddelta, dA, dB, dC, dD, dz, dbias, dinit."""
    u, delta, A2, B, C, D, z, bias, X = saved
    batch, dim, n_state, dev = geo.batch, geo.dim, geo.n_state, u.device
    du = empty(u.shape, u.dtype, dev)
    ddelta = empty(delta.shape, delta.dtype, dev)
    dz = empty(z.shape, z.dtype, dev) if z is not None else None
    f32 = dict(dtype=torch.float32, device=dev)
    dA = torch.zeros(dim, n_state, **f32)
    dD = torch.zeros(dim, **f32)
    dbias = torch.zeros(dim, **f32)
    dBC = torch.zeros((2, *B.shape), **f32)  # tile-major, like B
    dinit = empty((batch, dim, n_state), torch.float32, dev)
    sB = _bc_strides(geo)
    z_ = z if z is not None else u
    bias_ = bias if bias is not None else A2
    A2T = A2.t().contiguous()  # (N, dim): a state's channels are one coalesced load

    def main_args(Q, scratch):
        return (u, delta, z_, dout, A2T, B, C, D if D is not None else A2, bias_, X, Q, scratch,
                du, ddelta, dz if dz is not None else du, dA, dBC, dD, dbias, dinit)

    def summary_args(Q, dtsum):
        return dout, z_, delta, A2, C, bias_, Q, dtsum

    key = ("backward", cfg, geo, softplus, u.dtype, delta.dtype, dout.dtype,
           z.dtype if z is not None else None, D is None, bias is None, dev)
    plan = _plan(key, lambda: _backward_plan(geo, cfg, softplus, D, z, bias, main_args(X, X),
                                             summary_args(X, X), sB, B.numel()))
    bgeo, sgeo = plan.bgeo, plan.sgeo
    main_kernel, main_flags = plan.main
    summary_kernel, summary_flags = plan.summary
    Q = empty((batch, bgeo.n_seg, dim, n_state), torch.float32, dev)
    if dfinal is None:
        Q[:, -1].zero_()
    else:
        Q[:, -1].copy_(dfinal)
    if bgeo.n_seg > 1:
        dtsum = empty((batch, bgeo.n_seg, dim), torch.float32, dev)
        compiled_kernels["backward summary"] = summary_kernel[
            ((sgeo.n_seg - 1) * sgeo.n_bt,)](
            *summary_args(Q, dtsum), *_common_args(sgeo, sB), **summary_flags)
        _chain(Q, dtsum, A2, bgeo, bgeo.n_seg, 1, reverse=True)
    scratch_slots = geo.chunk // geo.tile + 3  # tile-start states, then q and dA (the kernel)
    n_items = bgeo.n_seg * bgeo.n_bt
    nprog = max(1, min(n_items, plan.slots))
    scratch = torch.empty(nprog * scratch_slots * n_state * bgeo.block_d, **f32)
    compiled_kernels["backward"] = main_kernel[(nprog,)](
        *main_args(Q, scratch), *_common_args(bgeo, sB), B.numel(), **main_flags)
    return (du, ddelta, dA, dBC[0], dBC[1],
            dD if D is not None else None,
            dz, dbias if bias is not None else None, dinit)


def _backward_plan(geo: _Geometry, cfg: ScanConfig, softplus: bool, D, z, bias,
                   main_args: tuple, summary_args: tuple, sB, bc_numel: int) -> _BackwardPlan:
    """The backward's kernels and flags, and its own cut of L (``main_args`` /
    ``summary_args``: the kernels' tensors, X standing in for the buffers the cut sizes, so
    that the occupancy lookups compile for the right dtypes and alignment)."""
    dev = main_args[0].device
    # The backward may use other warps than the forward; the channel tiles must then change.
    bgeo = _retile(geo, 32 * cfg.bwd_warps * cfg.bwd_channels_per_thread)
    s_warps = cfg.bwd_summary_warps or cfg.bwd_warps
    sgeo = _retile(geo, 32 * s_warps * cfg.bwd_channels_per_thread)
    flags = dict(N=geo.n_state, T=geo.tile, CH=geo.chunk, HAS_Z=z is not None,
                 HAS_BIAS=bias is not None, SOFTPLUS=softplus)
    main_flags = dict(flags, BD=bgeo.block_d, num_warps=cfg.bwd_warps, HAS_D=D is not None,
                      ALIGNED=geo.aligned, BNS=cfg.bwd_stages, PREFETCH=cfg.bwd_prefetch,
                      RERUN_BITS=cfg.bit_picks, **maxnreg(cfg.bwd_maxnreg))
    summary_flags = dict(flags, BD=sgeo.block_d, num_warps=s_warps, NS=cfg.stages)
    G = _gluon(geo, cfg, cfg.bwd_channels_per_thread)
    if G is None:
        summary_kernel = K._scan_bwd_summary_kernel
        summary_flags.update(ALIGNED=geo.aligned, BITS=cfg.bit_picks)
    else:
        summary_kernel = G._scan_bwd_summary_kernel
        summary_flags.update(W=s_warps)
    main_kernel = K._scan_bwd_kernel
    # The backward's own segments: chosen from how many programs of each kernel the GPU holds
    # at once (the forward's X has a state at every chunk, so any whole-chunk cut works).
    per_sm = cfg.bwd_programs_per_sm or resident_per_sm(
        main_kernel, (*main_args, *_common_args(bgeo, sB), bc_numel), main_flags) or 16
    per_sm_summary = resident_per_sm(summary_kernel, (*summary_args, *_common_args(sgeo, sB)),
                                     summary_flags) or 16
    slots = per_sm * num_sms(dev)
    # The adjoint summary takes ~0.13 of the backward's time per channel (H200); weighted
    # 0.25, its resident programs counted in the backward's channel tiles.
    cps = _chunks_per_segment(geo.n_chunks, bgeo.n_bt, slots,
                              per_sm_summary * num_sms(dev) * sgeo.block_d // bgeo.block_d,
                              0.25, cfg.bwd_segments)
    bgeo = replace(bgeo, chunks_per_seg=cps, n_seg=cdiv(geo.n_chunks, cps))
    sgeo = replace(sgeo, chunks_per_seg=cps, n_seg=bgeo.n_seg)
    return _BackwardPlan(bgeo, sgeo, (main_kernel, main_flags), (summary_kernel, summary_flags),
                         slots)


# ----------------------------------------------------------------------------- autograd


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                save_states, cfg):
        ctx.bc_shapes = (B.shape, B.dtype), (C.shape, C.dtype)
        A2 = (A.float() * K.LOG2E).contiguous()
        D_ = D.float().contiguous() if D is not None else None
        bias_ = delta_bias.float().contiguous() if delta_bias is not None else None
        init = initial_state.float() if initial_state is not None else None
        out, final, X, geo, B, C = _forward(u, delta, A2, B, C, D_, z, bias_, init,
                                            delta_softplus, cfg, save_states)
        ctx.save_for_backward(u, delta, A2, B, C, D_, z, bias_, X)
        ctx.geo, ctx.cfg, ctx.softplus = geo, cfg, delta_softplus
        ctx.dtypes = tuple(t.dtype if t is not None else None
                           for t in (A, D, delta_bias, initial_state))
        ctx.set_materialize_grads(False)
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        saved = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(saved[0])
        dout = dout.contiguous()
        dfinal = dfinal.float().contiguous() if dfinal is not None else None
        du, ddelta, dA, dB, dC, dD, dz, dbias, dinit = _backward(
            saved, ctx.geo, ctx.softplus, dout, dfinal, ctx.cfg)
        a_t, d_t, b_t, i_t = ctx.dtypes
        (b_shape, b_dtype), (c_shape, c_dtype) = ctx.bc_shapes
        dB = _from_tile_major(dB, ctx.geo, b_shape, b_dtype)
        dC = _from_tile_major(dC, ctx.geo, c_shape, c_dtype)
        dD = dD.to(d_t) if dD is not None else None
        dbias = dbias.to(b_t) if dbias is not None else None
        dinit = dinit.to(i_t) if i_t is not None else None
        return du, ddelta, dA.to(a_t), dB, dC, dD, dz, dbias, dinit, None, None, None


def _contiguous(t):
    return t.contiguous() if t is not None else None


_fp64_logged = False


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_final_state=False,
                          config: ScanConfig | None = None):
    """Selective scan by the Triton kernels (same contract as ``mambadna.kernels.selective_scan``).

    Computes in fp32 whatever the input dtypes (bf16 / fp16 / fp32); fp64 inputs go to the
    chunked PyTorch reference instead (the kernels have no fp64 path). ``config``: the tiling
    (None: the innermost ``scan_config`` block's, else the defaults).
    """
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        global _fp64_logged
        if not _fp64_logged:
            _log.info("selective_scan: fp64 inputs use the PyTorch reference (no fp64 kernels)")
            _fp64_logged = True
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      initial_state, return_final_state)
    if not (u.is_cuda or interpreting()):
        raise RuntimeError(
            "selective_scan: the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set "
            "before Triton is imported, to run them slowly on CPU); use backend='reference' "
            "for CPU tensors")
    u, delta, z = (_contiguous(t) for t in (u, delta, z))
    # The chunk states are for the backward only: a call that no gradient will follow (an
    # inference pipeline) skips their stores (~0.1 ms of 14.8 at (1, 1024, 2^20), H200).
    save_states = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)
    cfg = config if config is not None else get_config()
    out, final = _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                      bool(delta_softplus), save_states, cfg)
    if return_final_state:
        return out, final.to(initial_state.dtype) if initial_state is not None else final
    return out

