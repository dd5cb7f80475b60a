# Triton's JIT frontend builds tuples by concatenation, not by starred unpacking:
# ruff: noqa: RUF005
"""Triton kernels of the selective scan; launched by ``triton.py`` (math: kernels/README.md).

Tiling (the same in every kernel): a program owns one batch row, a tile of ``BD`` channels and a
segment of positions. Each thread owns one channel (``BD`` = 32 x warps), all ``N`` of its
states, and walks the segment in tiles of ``T`` = 8 (4 for fp32) positions: the tile's u / delta / z
rows are one vector load per thread (each a different cache line, so wide tiles halve the L1
traffic that limited the 4-position version), and the tile's B / C rows (fp32, stored
tile-major by the launcher: (batch, G, L/T, N, T), so a tile's N rows are one contiguous
block) are loaded once per program and shared by all its channels. Inside a tile the
recurrence runs position by position in registers (``_col`` picks a column of a register tile;
with T in-thread it compiles to a register move, or an add on Triton 3.6), so a state update
costs one exp2 and two FMAs, and nothing of size (batch, dim, L, N) is ever written to memory.

Segments (the L-split): the states at chunk boundaries (every ``CH`` positions) are the only
thing kept between passes. Forward: ``SUMMARY`` runs scan each segment from a zero state and
write its end state and the sum of its dt; ``_chain_kernel`` chains the segments; the output
run recomputes each segment from its true start state, writes ``out`` and the chunk-boundary
states. Backward mirrors it with the adjoint state walking right to left.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
_LN2 = tl.constexpr(LN2)  # kernels may read module globals only as constexpr
LOG2E_ = tl.constexpr(LOG2E)
# The cut of L into chunks and segments is chosen per call (for the backward from the compiled
# kernel's occupancy, so after a first compile): its integers must not select another compile.
_GEOMETRY_ARGS = ["n_dtiles", "n_bt", "n_chunks", "chunks_per_seg", "n_seg"]

# Under TRITON_INTERPRET=1 every call of a jit helper re-patches triton.language (about half a
# millisecond, thousands of calls per kernel), so the helpers stay plain Python functions there;
# the interpreter runs the kernels as Python anyway. Compiled, they are inlined device functions.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_device = (lambda fn: fn) if _INTERPRET else triton.jit
if _INTERPRET:  # tl.sum is a jit function too; the interpreter sums this pattern with numpy

    def _sum(x, axis):
        return tl.reduce(x, axis, tl.standard._sum_combine)

else:
    _sum = tl.sum


# ----------------------------------------------------------------------------- small helpers


@_device
def _col(x, cols, j: tl.constexpr, BITS: tl.constexpr = False):
    """Column j of a [BD, T] fp32 register tile as a [BD] vector.

    With T in-thread the compiler reduces the sum to a register pick when it can drop the
    additions of the identity. As floats the identity is -0.0, which Triton 3.6 turns into
    +0.0: x + 0.0 differs from x at x = -0.0, so every pick stays an add (160 of the forward
    output pass's 1446 instructions per tile there; Triton 3.9 drops them). BITS sums the
    integer bits instead (x + 0 is x for every integer): 1446 -> 1318 instructions at the
    same occupancy on 3.6. The forward passes, the adjoint summary and the backward's rerun
    take it from ScanConfig.bit_picks; the backward's reverse walk keeps float picks (with
    integer ones its state loop grew 354 -> 365 instructions and spilled 8 bytes).
    """
    if BITS:
        bits = _sum(tl.where(cols == j, x.to(tl.int32, bitcast=True), 0), axis=1)
        return bits.to(tl.float32, bitcast=True)
    return _sum(tl.where(cols == j, x, -0.0), axis=1)


@_device
def _put(x, cols, j: tl.constexpr, v):
    """``x`` with column j replaced by the [BD] vector ``v``."""
    return tl.where(cols == j, v[:, None], x)


if _INTERPRET:

    def _lg2(x):
        return tl.log2(x)

    def _rcp(x):
        return 1.0 / x

else:
    # The special-function unit's approximations (one MUFU instruction each). Triton's log and
    # division are the accurate libdevice / IEEE versions: ~20 instructions for a log, ~10 for a
    # division, per element and pass, more than the state loop's overhead (docs/kernels.md).

    @triton.jit
    def _lg2(x):
        """log2(x), absolute error <= 2^-22 on [0.5, 2] (PTX lg2.approx)."""
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)

    @triton.jit
    def _rcp(x):
        """1 / x to ~1 ulp (PTX rcp.approx); 1 / inf = 0."""
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)


if _INTERPRET:

    def _prefetch_l1(ptrs, mask):
        pass

else:

    @triton.jit
    def _prefetch_l1(ptrs, mask):
        """Ask for the cache lines at ``ptrs`` (where ``mask``) to be brought into L1 without
        waiting for them: a hint, no registers held, no effect on the results."""
        addr = tl.where(mask, ptrs.to(tl.int64, bitcast=True), 0)
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.u64 p, $1, 0; @p prefetch.global.L1 [$1]; }",
            "=r,l", [addr], dtype=tl.int32, is_pure=False, pack=1)


@_device
def _softplus(x):
    """log(1 + exp(x)) as torch computes it (threshold 20), relative error < 1e-5.

    softplus(x) = max(x, 0) + log1p(e) with e = exp(-|x|) in (0, 1]. log1p(e) is log2(1 + e)
    ln 2 where that is well conditioned (e >= 1/64: the result is >= 0.015 and lg2's absolute
    error 2^-22 is < 1e-5 of it) and its series e - e^2/2 + e^3/3 - e^4/4 below (truncation
    < e^4/5 < 1e-8 of the result).
    """
    e = tl.exp2(tl.abs(x) * -LOG2E_)
    series = e * (1.0 - e * (0.5 - e * (0.3333333333333333 - e * 0.25)))
    lp = tl.where(e < 0.015625, series, _lg2(1.0 + e) * _LN2)
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + lp)


@_device
def _sigmoid(x):
    return _rcp(1.0 + tl.exp2(x * -LOG2E_))


@_device
def _channel_tile(bt, n_dtiles, groups, dim_per_group, BD: tl.constexpr):
    """(batch row, group, global channel ids [BD], channel mask [BD]) of channel tile ``bt``."""
    dtile = bt % n_dtiles
    bg = bt // n_dtiles
    g = bg % groups
    b = bg // groups
    dl = dtile * BD + tl.arange(0, BD)
    dmask = dl < dim_per_group
    d = g * dim_per_group + dl
    return b, g, d, dmask


@_device
def _load_dt(delta_ptr, offs, m2, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt tile [BD, T] (bias, softplus; 0 outside the sequence) and the pre-softplus value."""
    return _dt_of(tl.load(delta_ptr + offs, mask=m2, other=0.0), m2, bias, HAS_BIAS, SOFTPLUS)


@_device
def _dt_of(raw, m2, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt tile from a loaded delta tile (see ``_load_dt``)."""
    x = raw.to(tl.float32)
    if HAS_BIAS:
        x = x + bias[:, None]
    dt = x
    if SOFTPLUS:
        dt = _softplus(x)
    return tl.where(m2, dt, 0.0), x


@_device
def _load_inputs(u_ptr, delta_ptr, row, t0, L, cols, dmask, bias, HAS_BIAS: tl.constexpr,
                 SOFTPLUS: tl.constexpr):
    """The tile at t0 of the program's channel rows: (mask, offsets, dt, u, dt * u), [BD, T]."""
    m2 = dmask[:, None] & ((t0 + cols) < L)
    offs = row[:, None] + t0 + cols
    dt, _x = _load_dt(delta_ptr, offs, m2, bias, HAS_BIAS, SOFTPLUS)
    u = tl.load(u_ptr + offs, mask=m2, other=0.0).to(tl.float32)
    return m2, offs, dt, u, dt * u


@_device
def _load_tile(u_ptr, delta_ptr, z_ptr, row, t, t_hi, cols, dmask, LOAD_Z: tl.constexpr):
    """Raw u, delta (and z) tiles at positions t..t+T-1 (zeros at and past t_hi)."""
    m = dmask[:, None] & ((t + cols) < t_hi)
    offs = row[:, None] + t + cols
    u = tl.load(u_ptr + offs, mask=m, other=0.0)
    delta = tl.load(delta_ptr + offs, mask=m, other=0.0)
    z = u
    if LOAD_Z:
        z = tl.load(z_ptr + offs, mask=m, other=0.0)
    return u, delta, z


@_device
def _load_dy(dout_ptr, z_ptr, offs, m2, HAS_Z: tl.constexpr):
    """dy = dout * silu(z) (the gradient reaching y), dout, z and sigmoid(z); [BD, T] each."""
    dout = tl.load(dout_ptr + offs, mask=m2, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z_ptr + offs, mask=m2, other=0.0).to(tl.float32)
        sz = _sigmoid(zz)
        dy = dout * zz * sz
    else:
        zz = dout
        sz = dout
        dy = dout
    return dy, dout, zz, sz


# ----------------------------------------------------------------------------- forward


@triton.jit(do_not_specialize=_GEOMETRY_ARGS)
def _scan_fwd_kernel(
    u_ptr, delta_ptr, z_ptr, out_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
    X_ptr, dtsum_ptr, final_ptr,
    dim, L, dim_per_group, n_dtiles, groups, n_bt, n_chunks, chunks_per_seg, n_seg,
    sB_b, sB_g,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr, CH: tl.constexpr,
    SUMMARY: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, WRITE_FINAL: tl.constexpr, ALIGNED: tl.constexpr,
    NS: tl.constexpr = 1, BITS: tl.constexpr = False, SAVE_X: tl.constexpr = True,
):
    """One (segment, channel tile) of the forward scan.

    SUMMARY: scan from a zero state; write the end state into the chunk-state slot of the next
    segment's first chunk and the per-channel sum of dt into ``dtsum`` (batch, n_seg, dim).
    Otherwise: start from X[b, first chunk], write out and X at every later chunk boundary
    (SAVE_X: only the backward reads those), and the final state after the last position.
    X: (batch, n_chunks, dim, N) fp32. A2 = A * log2(e).
    """
    pid = tl.program_id(0)
    seg = pid // n_bt
    b, g, d, dmask = _channel_tile(pid % n_bt, n_dtiles, groups, dim_per_group, BD)
    if ALIGNED:
        L = tl.multiple_of(L, T)
    row = (b.to(tl.int64) * dim + d) * L  # [BD] offsets of the channel rows
    cols = tl.arange(0, T)[None, :]
    b_base = B_ptr + b.to(tl.int64) * sB_b + g.to(tl.int64) * sB_g
    c_base = C_ptr + b.to(tl.int64) * sB_b + g.to(tl.int64) * sB_g
    c_lo = seg * chunks_per_seg
    t_lo = c_lo * CH
    t_hi = tl.minimum(t_lo + chunks_per_seg * CH, L)
    x_row = (b.to(tl.int64) * n_chunks * dim + d) * N  # + chunk * dim * N + n
    dimN = dim.to(tl.int64) * N

    A2 = ()
    h = ()
    for n in tl.static_range(N):
        A2 = A2 + (tl.load(A2_ptr + d * N + n, mask=dmask, other=0.0),)
        if SUMMARY:
            h = h + (tl.zeros([BD], tl.float32),)
        else:
            h = h + (tl.load(X_ptr + x_row + c_lo * dimN + n, mask=dmask, other=0.0),)
    bias = tl.zeros([BD], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dmask, other=0.0)
    dts = tl.zeros([BD], tl.float32)

    # Software-pipelined by Triton (NS > 1): the tile loads are asynchronous copies into
    # shared memory issued NS - 1 tiles ahead.
    for t0 in tl.range(t_lo, t_hi, T, num_stages=NS):
        if SAVE_X and not SUMMARY:
            if (t0 % CH == 0) & (t0 != t_lo):
                for n in tl.static_range(N):
                    tl.store(X_ptr + x_row + (t0 // CH) * dimN + n, h[n], mask=dmask)
        m2, offs, dt, u, dtu = _load_inputs(u_ptr, delta_ptr, row, t0, L, cols, dmask, bias,
                                            HAS_BIAS, SOFTPLUS)
        if SUMMARY:
            dts += _sum(dt, axis=1)
        y = tl.zeros([BD, T], tl.float32)
        new = ()
        for n in tl.static_range(N):
            brow = tl.load(b_base + t0 * N + n * T + cols).to(tl.float32)
            a = tl.exp2(dt * A2[n][:, None])
            bx = dtu * brow
            hn = h[n]
            if SUMMARY:
                for j in tl.static_range(T):
                    hn = _col(a, cols, j, BITS) * hn + _col(bx, cols, j, BITS)
            else:
                crow = tl.load(c_base + t0 * N + n * T + cols)
                hs = tl.zeros([BD, T], tl.float32)
                for j in tl.static_range(T):
                    hn = _col(a, cols, j, BITS) * hn + _col(bx, cols, j, BITS)
                    hs = _put(hs, cols, j, hn)
                y += hs * crow.to(tl.float32)
            new = new + (hn,)
        h = new
        if not SUMMARY:
            if HAS_D:
                y += Dv[:, None] * u
            if HAS_Z:
                zz = tl.load(z_ptr + offs, mask=m2, other=0.0).to(tl.float32)
                y = y * zz * _sigmoid(zz)
            tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=m2)

    if SUMMARY:
        c_next = c_lo + chunks_per_seg
        for n in tl.static_range(N):
            tl.store(X_ptr + x_row + c_next * dimN + n, h[n], mask=dmask)
        tl.store(dtsum_ptr + (b.to(tl.int64) * n_seg + seg) * dim + d, dts, mask=dmask)
    elif WRITE_FINAL:
        if t_hi == L:
            f_row = (b.to(tl.int64) * dim + d) * N
            for n in tl.static_range(N):
                tl.store(final_ptr + f_row + n, h[n], mask=dmask)


# ----------------------------------------------------------------------------- segment chain


@triton.jit
def _chain_kernel(
    S_ptr, dtsum_ptr, A2_ptr, dim, n_seg, n_slots, slot_stride,
    N: tl.constexpr, REVERSE: tl.constexpr, CB: tl.constexpr, BLK: tl.constexpr,
):
    """Chain the segment summaries in place, sequentially over segments (tiny).

    Lanes are (channel, state) pairs of one batch row, one per thread. S: (batch, n_slots,
    dim, N); segment s owns slot s * slot_stride. Forward: x = S[seg 0]; for s in 0..n_seg-2:
    x = exp2(A2 * dtsum[s]) * x + S[s+1]; S[s+1] = x. REVERSE (the adjoint): x = S[n_seg-1];
    for s in n_seg-1..1: x = exp2(A2 * dtsum[s]) * x + S[s-1]; S[s-1] = x.
    CB segments are loaded per step so that their loads are in flight together. They are CB
    separate [BLK] vectors, not one [CB, BLK] tile: Triton 3.6 spread such a tile's rows over
    warps, and picking row j then took shuffles and barriers (3422 instructions per step,
    ~0.1 ms per call whatever the size).
    """
    b = tl.program_id(0).to(tl.int64)
    lane = tl.program_id(1) * BLK + tl.arange(0, BLK)
    dimN = dim * N
    mask = lane < dimN
    d = lane // N
    A2 = tl.load(A2_ptr + lane, mask=mask, other=0.0)
    s_row = b * n_slots * dimN + lane  # + slot * dimN
    t_row = b * n_seg * dim + d  # + seg * dim
    if REVERSE:
        x = tl.load(S_ptr + s_row + (n_seg - 1) * slot_stride * dimN, mask=mask, other=0.0)
    else:
        x = tl.load(S_ptr + s_row, mask=mask, other=0.0)
    for k0 in range(0, n_seg - 1, CB):
        decays = ()
        ends = ()
        offsets = ()
        valids = ()
        for j in tl.static_range(CB):
            # Step k (past the last: a decay of 1 and an end of 0). A vector compare: the
            # interpreter's scalar bools do not combine with masks.
            k = k0 + j
            valid = mask & (lane * 0 + k < n_seg - 1)
            if REVERSE:
                src = n_seg - 1 - k
                dst = src - 1
            else:
                src = k
                dst = k + 1
            dts = tl.load(dtsum_ptr + t_row + src * dim, mask=valid, other=0.0)
            off = s_row + (dst * slot_stride).to(tl.int64) * dimN
            decays = decays + (tl.exp2(A2 * dts),)
            ends = ends + (tl.load(S_ptr + off, mask=valid, other=0.0),)
            offsets = offsets + (off,)
            valids = valids + (valid,)
        for j in tl.static_range(CB):
            x = decays[j] * x + ends[j]
            tl.store(S_ptr + offsets[j], x, mask=valids[j])


# ----------------------------------------------------------------------------- backward


@triton.jit(do_not_specialize=_GEOMETRY_ARGS)
def _scan_bwd_summary_kernel(
    dout_ptr, z_ptr, delta_ptr, A2_ptr, C_ptr, bias_ptr, Q_ptr, dtsum_ptr,
    dim, L, dim_per_group, n_dtiles, groups, n_bt, n_chunks, chunks_per_seg, n_seg,
    sB_b, sB_g,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr, CH: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ALIGNED: tl.constexpr,
    NS: tl.constexpr = 1, BITS: tl.constexpr = False,
):
    """Adjoint summary of segment s = 1 + pid // n_bt, scanned right to left from zero.

    Writes q = a[t_lo] * g[t_lo] (what the segment passes to the position before it) into slot
    s - 1 of Q (batch, n_seg, dim, N), and the per-channel sum of dt into dtsum[b, s].
    """
    pid = tl.program_id(0)
    seg = pid // n_bt + 1
    b, g, d, dmask = _channel_tile(pid % n_bt, n_dtiles, groups, dim_per_group, BD)
    if ALIGNED:
        L = tl.multiple_of(L, T)
    row = (b.to(tl.int64) * dim + d) * L
    cols = tl.arange(0, T)[None, :]
    c_base = C_ptr + b.to(tl.int64) * sB_b + g.to(tl.int64) * sB_g
    t_lo = seg * chunks_per_seg * CH
    t_hi = tl.minimum(t_lo + chunks_per_seg * CH, L)
    n_tiles = tl.cdiv(t_hi - t_lo, T)
    A2 = ()
    q = ()
    for n in tl.static_range(N):
        A2 = A2 + (tl.load(A2_ptr + d * N + n, mask=dmask, other=0.0),)
        q = q + (tl.zeros([BD], tl.float32),)
    bias = tl.zeros([BD], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0)
    dts = tl.zeros([BD], tl.float32)
    # Software-pipelined by Triton (NS > 1): the tile loads are asynchronous copies into
    # shared memory issued NS - 1 tiles ahead, so each tile's operands are on chip when used.
    for i in tl.range(0, n_tiles, num_stages=NS):
        t0 = t_lo + (n_tiles - 1 - i) * T
        r_o, r_d, r_z = _load_tile(dout_ptr, delta_ptr, z_ptr, row, t0, t_hi, cols, dmask,
                                   HAS_Z)
        tmask = (t0 + cols) < L
        m2 = dmask[:, None] & tmask
        dt, _x = _dt_of(r_d, m2, bias, HAS_BIAS, SOFTPLUS)
        dy = r_o.to(tl.float32)
        if HAS_Z:
            zz = r_z.to(tl.float32)
            dy = dy * zz * _sigmoid(zz)
        dts += _sum(dt, axis=1)
        new = ()
        for n in tl.static_range(N):
            crow = tl.load(c_base + t0 * N + n * T + cols).to(tl.float32)
            a = tl.exp2(dt * A2[n][:, None])
            cy = dy * crow
            qn = q[n]
            for j in tl.static_range(T - 1, -1, -1):
                qn = _col(a, cols, j, BITS) * (qn + _col(cy, cols, j, BITS))
            new = new + (qn,)
        q = new
    dimN = dim.to(tl.int64) * N
    q_row = (b.to(tl.int64) * n_seg * dim + d) * N + (seg - 1) * dimN
    for n in tl.static_range(N):
        tl.store(Q_ptr + q_row + n, q[n], mask=dmask)
    tl.store(dtsum_ptr + (b.to(tl.int64) * n_seg + seg) * dim + d, dts, mask=dmask)


@_device
def _adjoint_state(n, dt, dtu, dy, y, ddt, gsum, brow, crow, a2, h0, qn, dA_n,
                   scr_q, scr_dA, red, sBC, cols, BD: tl.constexpr, T: tl.constexpr):
    """State n of one backward tile: recompute its states h from the tile's start state h0,
    walk the adjoint right to left from q, store the new q and dA carries, add the tile's dB
    / dC rows (summed over the channel tile), and return y, d(dt) and sum_n g B updated.
    ``red``: the tile's dB block (a scalar pointer; dC is sBC elements further)."""
    a = tl.exp2(dt * a2[:, None])
    bx = dtu * brow
    hn = h0
    hs = tl.zeros([BD, T], tl.float32)
    for j in tl.static_range(T):
        hn = _col(a, cols, j) * hn + _col(bx, cols, j)
        hs = _put(hs, cols, j, hn)
    y += hs * crow
    cy = dy * crow
    gs = tl.zeros([BD, T], tl.float32)
    rh = tl.zeros([BD, T], tl.float32)  # a_t * g_t * h_{t-1}
    for j in tl.static_range(T - 1, -1, -1):
        gj = qn + _col(cy, cols, j)
        qn = _col(a, cols, j) * gj
        gs = _put(gs, cols, j, gj)
        if j == 0:
            rh = _put(rh, cols, j, qn * h0)
        else:
            rh = _put(rh, cols, j, qn * _col(hs, cols, j - 1))
    tl.store(scr_q + n * BD, qn)
    tl.store(scr_dA + n * BD, dA_n + _sum(rh * dt, axis=1))
    ddt += rh * (a2 * _LN2)[:, None]
    gsum += gs * brow
    tl.atomic_add(red + n * T + cols, _sum(gs * dtu, axis=0)[None, :], sem="relaxed")
    tl.atomic_add(red + n * T + sBC + cols, _sum(hs * dy, axis=0)[None, :], sem="relaxed")
    return y, ddt, gsum


@triton.jit(do_not_specialize=_GEOMETRY_ARGS)
def _scan_bwd_kernel(
    u_ptr, delta_ptr, z_ptr, dout_ptr, A2T_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
    X_ptr, Q_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBC_ptr, dD_ptr, dbias_ptr, dinit_ptr,
    dim, L, dim_per_group, n_dtiles, groups, n_bt, n_chunks, chunks_per_seg, n_seg,
    sB_b, sB_g, sBC,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr, CH: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ALIGNED: tl.constexpr, BNS: tl.constexpr = 1, PREFETCH: tl.constexpr = False,
    RERUN_BITS: tl.constexpr = False,
):
    """Gradients of every input, by recomputation; a persistent loop over (segment, tile).

    Per segment, chunks right to left; per chunk: (1) rerun the forward from the saved chunk
    state X[c], keeping each tile's start state in this program's scratch; (2) tiles right to
    left: recompute the tile's states from its start state, run the adjoint g (carried as
    q = a * g), and form du, ddelta, dz, the dB / dC rows (summed over the channel tile, then
    one atomic add per position) and dA / dD / dbias (one atomic add per segment). Segment 0
    also writes d(initial state). Q (batch, n_seg, dim, N): the adjoint entering each segment
    from the right. dBC: fp32 (2, batch, G, N, L), dB then dC, sBC elements apart.

    Unlike the forward, the states are a run-time loop: the per-state carries (q, dA) live in
    the program's scratch (cache-resident), which keeps registers and compile time small.
    Scratch per program, [BD] fp32 slots: CH/T + 1 tile-start states per state, then q, dA.
    A2T: A * log2(e) as (N, dim), so that one state's values of a channel tile are one
    coalesced load (state n of every channel is read once per tile and state).
    """
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if ALIGNED:
        L = tl.multiple_of(L, T)
    cols = tl.arange(0, T)[None, :]
    n_slots: tl.constexpr = CH // T + 1
    # Prefetch lanes: lane l asks for 128-byte line l % (N T / 32) of a tile's B (C) block.
    lines: tl.constexpr = (N * T + 31) // 32
    pf_off = (tl.arange(0, BD) % lines) * 32
    pf_on = tl.arange(0, BD) < lines
    scr = scratch_ptr + pid.to(tl.int64) * ((n_slots + 2) * N * BD) + tl.arange(0, BD)
    scr_q = scr + n_slots * N * BD
    scr_dA = scr_q + N * BD
    dimN = dim.to(tl.int64) * N
    for w in range(pid, n_seg * n_bt, nprog):
        seg = w // n_bt
        b, g, d, dmask = _channel_tile(w % n_bt, n_dtiles, groups, dim_per_group, BD)
        row = (b.to(tl.int64) * dim + d) * L
        bc_off = b.to(tl.int64) * sB_b + g.to(tl.int64) * sB_g
        x_row = (b.to(tl.int64) * n_chunks * dim + d) * N
        q_row = (b.to(tl.int64) * n_seg * dim + d) * N + seg * dimN
        for n in range(N):
            tl.store(scr_q + n * BD, tl.load(Q_ptr + q_row + n, mask=dmask, other=0.0))
            tl.store(scr_dA + n * BD, tl.zeros([BD], tl.float32))
        bias = tl.zeros([BD], tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + d, mask=dmask, other=0.0)
        Dv = tl.zeros([BD], tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + d, mask=dmask, other=0.0)
        dD_acc = tl.zeros([BD], tl.float32)
        db_acc = tl.zeros([BD], tl.float32)
        c_lo = seg * chunks_per_seg
        c_hi = tl.minimum(c_lo + chunks_per_seg, n_chunks)
        for ci in range(c_hi - c_lo):
            c = c_hi - 1 - ci
            t_lo = c * CH
            n_tiles = tl.cdiv(tl.minimum(t_lo + CH, L) - t_lo, T)
            # (1) forward states at the start of every tile of the chunk -> scratch
            for n in range(N):
                tl.store(scr + n * BD, tl.load(X_ptr + x_row + c * dimN + n, mask=dmask,
                                               other=0.0))
            for i in range(n_tiles - 1):
                t0 = t_lo + i * T
                if PREFETCH:  # the next tile's B block, read state by state below
                    _prefetch_l1(B_ptr + bc_off + (t0 + T) * N + pf_off, pf_on)
                _m2, _offs, dt, _u, dtu = _load_inputs(u_ptr, delta_ptr, row, t0, L, cols, dmask,
                                                       bias, HAS_BIAS, SOFTPLUS)
                # The next state's operands load while this state computes.
                p_b = tl.load(B_ptr + bc_off + t0 * N + cols)
                p_a2 = tl.load(A2T_ptr + d, mask=dmask, other=0.0)
                p_h = tl.load(scr + (i * N) * BD)
                for n in range(N):
                    brow, a2, hn = p_b, p_a2, p_h
                    n1 = (n + 1) % N
                    p_b = tl.load(B_ptr + bc_off + t0 * N + n1 * T + cols)
                    p_a2 = tl.load(A2T_ptr + n1 * dim + d, mask=dmask, other=0.0)
                    p_h = tl.load(scr + (i * N + n1) * BD)
                    a = tl.exp2(dt * a2[:, None])
                    bx = dtu * brow
                    for j in tl.static_range(T):
                        hn = _col(a, cols, j, RERUN_BITS) * hn + _col(bx, cols, j, RERUN_BITS)
                    tl.store(scr + ((i + 1) * N + n) * BD, hn)
            # (2) tiles right to left: states, adjoint, gradients
            for ii in range(n_tiles):
                i = n_tiles - 1 - ii
                t0 = t_lo + i * T
                if PREFETCH:  # the B and C blocks of the tile before (the next in this walk)
                    _prefetch_l1(B_ptr + bc_off + (t0 - T) * N + pf_off, pf_on & (t0 > 0))
                    _prefetch_l1(C_ptr + bc_off + (t0 - T) * N + pf_off, pf_on & (t0 > 0))
                m2, offs, dt, u, dtu = _load_inputs(u_ptr, delta_ptr, row, t0, L, cols, dmask,
                                                    bias, HAS_BIAS, SOFTPLUS)
                dy, _dout, _z, _sz = _load_dy(dout_ptr, z_ptr, offs, m2, HAS_Z)
                gsum = tl.zeros([BD, T], tl.float32)  # sum_n g * B
                ddt = tl.zeros([BD, T], tl.float32)  # sum_n a * g * h_prev * A
                y = tl.zeros([BD, T], tl.float32)
                red = dBC_ptr + bc_off + t0 * N  # + n * T: state n's dB row
                if BNS > 1:
                    # Triton pipelines the run-time state loop: each state's operands are
                    # copied into shared memory BNS - 1 states ahead.
                    for n in tl.range(0, N, num_stages=BNS):
                        y, ddt, gsum = _adjoint_state(
                            n, dt, dtu, dy, y, ddt, gsum,
                            tl.load(B_ptr + bc_off + t0 * N + n * T + cols),
                            tl.load(C_ptr + bc_off + t0 * N + n * T + cols),
                            tl.load(A2T_ptr + n * dim + d, mask=dmask, other=0.0),
                            tl.load(scr + (i * N + n) * BD), tl.load(scr_q + n * BD),
                            tl.load(scr_dA + n * BD), scr_q, scr_dA, red, sBC, cols, BD, T)
                else:
                    # The next state's operands load while this state computes.
                    p_b = tl.load(B_ptr + bc_off + t0 * N + cols)
                    p_c = tl.load(C_ptr + bc_off + t0 * N + cols)
                    p_a2 = tl.load(A2T_ptr + d, mask=dmask, other=0.0)
                    p_h = tl.load(scr + (i * N) * BD)
                    p_q = tl.load(scr_q)
                    p_dA = tl.load(scr_dA)
                    for n in range(N):
                        brow, crow, a2, h0, qn, dA_n = p_b, p_c, p_a2, p_h, p_q, p_dA
                        n1 = (n + 1) % N
                        p_b = tl.load(B_ptr + bc_off + t0 * N + n1 * T + cols)
                        p_c = tl.load(C_ptr + bc_off + t0 * N + n1 * T + cols)
                        p_a2 = tl.load(A2T_ptr + n1 * dim + d, mask=dmask, other=0.0)
                        p_h = tl.load(scr + (i * N + n1) * BD)
                        p_q = tl.load(scr_q + n1 * BD)
                        p_dA = tl.load(scr_dA + n1 * BD)
                        y, ddt, gsum = _adjoint_state(
                            n, dt, dtu, dy, y, ddt, gsum, brow, crow, a2, h0, qn, dA_n,
                            scr_q, scr_dA, red, sBC, cols, BD, T)
                # The epilogue reloads what the state loop did not need to keep, all at once
                # (L1 has usually dropped the lines by now: their latencies overlap).
                dt, x = _load_dt(delta_ptr, offs, m2, bias, HAS_BIAS, SOFTPLUS)
                dy, dout, zz, sz = _load_dy(dout_ptr, z_ptr, offs, m2, HAS_Z)
                du = dt * gsum
                ddt += u * gsum
                if HAS_D:
                    du += Dv[:, None] * dy
                    y += Dv[:, None] * u
                    dD_acc += _sum(dy * u, axis=1)
                tl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=m2)
                if SOFTPLUS:
                    ddt = tl.where(x > 20.0, ddt, ddt * _sigmoid(x))
                ddt = tl.where(m2, ddt, 0.0)
                if HAS_BIAS:
                    db_acc += _sum(ddt, axis=1)
                tl.store(ddelta_ptr + offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
                if HAS_Z:
                    dz = dout * y * sz * (1.0 + zz * (1.0 - sz))
                    tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=m2)
        for n in range(N):
            tl.atomic_add(dA_ptr + d * N + n, tl.load(scr_dA + n * BD), mask=dmask,
                          sem="relaxed")
        if HAS_D:
            tl.atomic_add(dD_ptr + d, dD_acc, mask=dmask, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + d, db_acc, mask=dmask, sem="relaxed")
        if seg == 0:
            f_row = (b.to(tl.int64) * dim + d) * N
            for n in range(N):
                tl.store(dinit_ptr + f_row + n, tl.load(scr_q + n * BD), mask=dmask)
