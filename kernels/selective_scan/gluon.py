# Triton's JIT frontend builds tuples by concatenation, not by starred unpacking:
# ruff: noqa: RUF005
"""The selective scan's pipelined passes in Gluon, Triton's explicit-layout dialect (CUDA only).

The forward summary and output passes (``_scan_fwd_kernel``) and the adjoint summary
(``_scan_bwd_summary_kernel``) with the math, tiling and arguments of their Triton versions
in ``kernels.py``: a program owns one (segment, channel tile), a thread one
channel and its N states, and the segment is walked in tiles of T positions. What Gluon
changes is how each tile's operands reach the threads. ``tl`` software pipelining copies
every B / C row of a tile on its own (in the output pass 32 asynchronous copies per tile,
each issued by the lanes that own the row inside its own branch: ~300 of the loop's 1336
instructions on Triton 3.6). Here the tile's B (and C) block, N x T fp32 contiguous in the
tile-major layout, is one 16-byte copy per thread into a ring of NS shared-memory stages,
with the tile's u / delta / z rows (one 16-byte copy per thread each); each state then reads
its rows from shared memory (every lane the same address: a broadcast). One barrier per tile.

The launcher uses them for aligned rows only (L a multiple of T, 16-byte aligned bases: every
copy is 16 bytes and a tile is inside its segment or outside it as a whole) and N a power of
two. Under ``TRITON_INTERPRET=1`` there is no Gluon; the Triton kernels run instead.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as cp

# The element-wise helpers (and the dt tile) are the Triton kernels' own: no layouts in them; a
# Gluon kernel calls them and compiles to the same SASS as with Gluon copies of them.
from mambadna.kernels.selective_scan.kernels import _col, _dt_of, _sigmoid

# The asynchronous global-to-shared copy: `async_load` from Triton 3.7 on,
# `async_copy_global_to_shared` before (which later versions keep only to raise).
_copy = getattr(cp, "async_load", None) or cp.async_copy_global_to_shared
# The barrier of the program's threads: `barrier` from Triton 3.7 on, `thread_barrier` before.
_barrier = getattr(gl, "barrier", None) or gl.thread_barrier


@gluon.jit
def _channel_tile(bt, n_dtiles, groups, dim_per_group, BD: gl.constexpr, layout: gl.constexpr):
    """(batch row, group, channel ids [BD], channel mask [BD]) of channel tile ``bt``."""
    dtile = bt % n_dtiles
    bg = bt // n_dtiles
    g = bg % groups
    b = bg // groups
    dl = dtile * BD + gl.arange(0, BD, layout)
    return b, g, g * dim_per_group + dl, dl < dim_per_group


@gluon.jit
def _issue(bc_s, u_s, d_s, z_s, stage, t0, t_lo, t_hi, bc_base_b, bc_base_c, r2, i2, row,
           cols, dmask, u_ptr, delta_ptr, z_ptr, N: gl.constexpr, T: gl.constexpr,
           HAS_Z: gl.constexpr):
    """Start the copies of the tile at t0 into ``stage``: the block's rows r2 (from
    ``bc_base_b`` below N, ``bc_base_c`` from N) and the rows of u, delta and z (or the
    adjoint's dout, delta, z), masked off outside [t_lo, t_hi)."""
    live = (t0 >= t_lo) & (t0 < t_hi)
    at = t0 * N + (r2 % N) * T + i2
    src = gl.where(r2 < N, bc_base_b + at, bc_base_c + at)  # rows 0..N-1: B's, then C's
    _copy(bc_s.index(stage), src, mask=(r2 >= 0) & (i2 >= 0) & live)
    # Aligned rows: t0, t_lo and t_hi are multiples of T, so a tile is inside the segment
    # or outside it as a whole (a per-position mask would cut the copies to 2 bytes).
    m2 = dmask[:, None] & (cols < T) & live
    offs = gl.max_contiguous(gl.multiple_of(row[:, None] + t0 + cols, [1, T]), [1, T])
    _copy(u_s.index(stage), u_ptr + offs, mask=m2)
    _copy(d_s.index(stage), delta_ptr + offs, mask=m2)
    if HAS_Z:
        _copy(z_s.index(stage), z_ptr + offs, mask=m2)


@gluon.jit(do_not_specialize=["n_dtiles", "n_bt", "n_chunks", "chunks_per_seg", "n_seg"])
def _scan_fwd_kernel(
    u_ptr, delta_ptr, z_ptr, out_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
    X_ptr, dtsum_ptr, final_ptr,
    dim, L, dim_per_group, n_dtiles, groups, n_bt, n_chunks, chunks_per_seg, n_seg,
    sB_b, sB_g,
    N: gl.constexpr, BD: gl.constexpr, T: gl.constexpr, CH: gl.constexpr, SUMMARY: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
    NS: gl.constexpr, W: gl.constexpr, SAVE_X: gl.constexpr = True,
):
    """One (segment, channel tile) of the forward scan, as ``kernels.
    _scan_fwd_kernel``. SUMMARY: scan from a zero state; write the end state into the chunk
    slot of the next segment's first chunk and the per-channel sum of dt into ``dtsum``
    (batch, n_seg, dim). Otherwise: from X[b, first chunk], write out, X at every later
    chunk boundary (SAVE_X) and the final state after the last position.
    X: (batch, n_chunks, dim, N) fp32; A2 = A * log2(e); B, C tile-major fp32."""
    blk: gl.constexpr = gl.BlockedLayout([1, T], [32, 1], [W, 1], [1, 0])
    chl: gl.constexpr = gl.SliceLayout(1, blk)
    coll: gl.constexpr = gl.SliceLayout(0, blk)
    # The tile's B (and C) block as [ROWS, T] fp32 (B's N rows, then C's), 4 floats a lane.
    ROWS: gl.constexpr = N if SUMMARY else 2 * N
    LOAD_Z: gl.constexpr = HAS_Z and not SUMMARY
    cpl: gl.constexpr = gl.BlockedLayout([1, 4], [32 * 4 // T, T // 4], [W, 1], [1, 0])
    rows2: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])

    pid = gl.program_id(0)
    seg = pid // n_bt
    b, g, d, dmask = _channel_tile(pid % n_bt, n_dtiles, groups, dim_per_group, BD, chl)
    L = gl.multiple_of(L, T)  # aligned rows only (the module's docstring)
    row = (b.to(gl.int64) * dim + d) * L
    cols = gl.arange(0, T, coll)[None, :]
    bc_off = b.to(gl.int64) * sB_b + g.to(gl.int64) * sB_g
    r2 = gl.arange(0, ROWS, gl.SliceLayout(1, cpl))[:, None]
    i2 = gl.arange(0, T, gl.SliceLayout(0, cpl))[None, :]
    bc_base_b = B_ptr + bc_off
    bc_base_c = C_ptr + bc_off
    c_lo = seg * chunks_per_seg
    t_lo = c_lo * CH
    t_hi = gl.minimum(t_lo + chunks_per_seg * CH, L)
    x_row = (b.to(gl.int64) * n_chunks * dim + d) * N
    dimN = dim.to(gl.int64) * N

    A2 = ()
    h = ()
    for n in gl.static_range(N):
        A2 = A2 + (gl.load(A2_ptr + d * N + n, mask=dmask, other=0.0),)
        if SUMMARY:
            h = h + (gl.zeros([BD], gl.float32, chl),)
        else:
            h = h + (gl.load(X_ptr + x_row + c_lo * dimN + n, mask=dmask, other=0.0),)
    bias = gl.zeros([BD], gl.float32, chl)
    if HAS_BIAS:
        bias = gl.load(bias_ptr + d, mask=dmask, other=0.0)
    Dv = gl.zeros([BD], gl.float32, chl)
    if HAS_D:
        Dv = gl.load(D_ptr + d, mask=dmask, other=0.0)

    dts = gl.zeros([BD], gl.float32, chl)
    bc_s = gl.allocate_shared_memory(gl.float32, [NS, ROWS, T], rows2)
    u_s = gl.allocate_shared_memory(u_ptr.dtype.element_ty, [NS, BD, T], rows2)
    d_s = gl.allocate_shared_memory(delta_ptr.dtype.element_ty, [NS, BD, T], rows2)
    z_s = gl.allocate_shared_memory(z_ptr.dtype.element_ty, [NS, BD, T], rows2)

    for k in gl.static_range(NS - 1):
        _issue(bc_s, u_s, d_s, z_s, k, t_lo + k * T, t_lo, t_hi, bc_base_b, bc_base_c, r2, i2, row,
               cols, dmask, u_ptr, delta_ptr, z_ptr, N, T, LOAD_Z)
        cp.commit_group()

    n_tiles = gl.cdiv(t_hi - t_lo, T)
    for i in range(n_tiles):
        t0 = t_lo + i * T
        # This thread's copies of tile i have landed; the barrier makes every thread's
        # visible and frees the stage of tile i - 1 for the copy of tile i + NS - 1.
        cp.wait_group(NS - 2)
        _barrier()
        _issue(bc_s, u_s, d_s, z_s, (i + NS - 1) % NS, t0 + (NS - 1) * T, t_lo, t_hi, bc_base_b,
               bc_base_c, r2, i2, row, cols, dmask, u_ptr, delta_ptr, z_ptr, N, T, LOAD_Z)
        cp.commit_group()
        s = i % NS
        if SAVE_X and not SUMMARY:
            if (t0 % CH == 0) & (t0 != t_lo):
                for n in gl.static_range(N):
                    gl.store(X_ptr + x_row + (t0 // CH) * dimN + n, h[n], mask=dmask)
        m2 = dmask[:, None] & (cols < T)  # whole tiles (aligned rows)
        offs = gl.max_contiguous(gl.multiple_of(row[:, None] + t0 + cols, [1, T]), [1, T])
        dt, _x = _dt_of(d_s.index(s).load(blk), m2, bias, HAS_BIAS, SOFTPLUS)
        if SUMMARY:
            dts += gl.sum(dt, axis=1)
        u = u_s.index(s).load(blk).to(gl.float32)
        dtu = dt * u
        y = gl.zeros([BD, T], gl.float32, blk)
        new = ()
        for n in gl.static_range(N):
            brow = bc_s.index(s).slice(n, 1).load(blk)  # [1, T]: every lane reads the row
            a = gl.exp2(dt * A2[n][:, None])
            bx = dtu * brow
            hn = h[n]
            if SUMMARY:
                for j in gl.static_range(T):
                    hn = _col(a, cols, j, True) * hn + _col(bx, cols, j, True)
            else:
                crow = bc_s.index(s).slice(N + n, 1).load(blk)
                hs = gl.zeros([BD, T], gl.float32, blk)
                for j in gl.static_range(T):
                    hn = _col(a, cols, j, True) * hn + _col(bx, cols, j, True)
                    hs = gl.where(cols == j, hn[:, None], hs)
                y += hs * crow
            new = new + (hn,)
        h = new
        if not SUMMARY:
            if HAS_D:
                y += Dv[:, None] * u
            if HAS_Z:
                zz = z_s.index(s).load(blk).to(gl.float32)
                y = y * zz * _sigmoid(zz)
            gl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=m2)
    cp.wait_group(0)

    if SUMMARY:
        c_next = c_lo + chunks_per_seg
        for n in gl.static_range(N):
            gl.store(X_ptr + x_row + c_next * dimN + n, h[n], mask=dmask)
        gl.store(dtsum_ptr + (b.to(gl.int64) * n_seg + seg) * dim + d, dts, mask=dmask)
    elif t_hi == L:
        f_row = (b.to(gl.int64) * dim + d) * N
        for n in gl.static_range(N):
            gl.store(final_ptr + f_row + n, h[n], mask=dmask)


@gluon.jit(do_not_specialize=["n_dtiles", "n_bt", "n_chunks", "chunks_per_seg", "n_seg"])
def _scan_bwd_summary_kernel(
    dout_ptr, z_ptr, delta_ptr, A2_ptr, C_ptr, bias_ptr, Q_ptr, dtsum_ptr,
    dim, L, dim_per_group, n_dtiles, groups, n_bt, n_chunks, chunks_per_seg, n_seg,
    sB_b, sB_g,
    N: gl.constexpr, BD: gl.constexpr, T: gl.constexpr, CH: gl.constexpr,
    HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
    NS: gl.constexpr, W: gl.constexpr,
):
    """Adjoint summary of segment s = 1 + pid // n_bt, scanned right to left from zero, as
    ``kernels._scan_bwd_summary_kernel``: q = a[t_lo] g[t_lo] into slot s - 1
    of Q (batch, n_seg, dim, N), the per-channel sum of dt into dtsum[b, s]. Tiles are
    copied right to left, each with its C block (one copy per thread)."""
    blk: gl.constexpr = gl.BlockedLayout([1, T], [32, 1], [W, 1], [1, 0])
    chl: gl.constexpr = gl.SliceLayout(1, blk)
    coll: gl.constexpr = gl.SliceLayout(0, blk)
    cpl: gl.constexpr = gl.BlockedLayout([1, 4], [32 * 4 // T, T // 4], [W, 1], [1, 0])
    rows2: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])

    pid = gl.program_id(0)
    seg = pid // n_bt + 1
    b, g, d, dmask = _channel_tile(pid % n_bt, n_dtiles, groups, dim_per_group, BD, chl)
    L = gl.multiple_of(L, T)  # aligned rows only (the module's docstring)
    row = (b.to(gl.int64) * dim + d) * L
    cols = gl.arange(0, T, coll)[None, :]
    c_base = C_ptr + b.to(gl.int64) * sB_b + g.to(gl.int64) * sB_g
    r2 = gl.arange(0, N, gl.SliceLayout(1, cpl))[:, None]
    i2 = gl.arange(0, T, gl.SliceLayout(0, cpl))[None, :]
    t_lo = seg * chunks_per_seg * CH
    t_hi = gl.minimum(t_lo + chunks_per_seg * CH, L)
    n_tiles = gl.cdiv(t_hi - t_lo, T)
    t_top = t_lo + (n_tiles - 1) * T  # the first tile of the walk

    A2 = ()
    q = ()
    for n in gl.static_range(N):
        A2 = A2 + (gl.load(A2_ptr + d * N + n, mask=dmask, other=0.0),)
        q = q + (gl.zeros([BD], gl.float32, chl),)
    bias = gl.zeros([BD], gl.float32, chl)
    if HAS_BIAS:
        bias = gl.load(bias_ptr + d, mask=dmask, other=0.0)
    dts = gl.zeros([BD], gl.float32, chl)

    c_s = gl.allocate_shared_memory(gl.float32, [NS, N, T], rows2)
    o_s = gl.allocate_shared_memory(dout_ptr.dtype.element_ty, [NS, BD, T], rows2)
    d_s = gl.allocate_shared_memory(delta_ptr.dtype.element_ty, [NS, BD, T], rows2)
    z_s = gl.allocate_shared_memory(z_ptr.dtype.element_ty, [NS, BD, T], rows2)

    for k in gl.static_range(NS - 1):
        _issue(c_s, o_s, d_s, z_s, k, t_top - k * T, t_lo, t_hi, c_base, c_base, r2, i2, row,
               cols, dmask, dout_ptr, delta_ptr, z_ptr, N, T, HAS_Z)
        cp.commit_group()

    for i in range(n_tiles):
        t0 = t_top - i * T
        cp.wait_group(NS - 2)
        _barrier()
        _issue(c_s, o_s, d_s, z_s, (i + NS - 1) % NS, t0 - (NS - 1) * T, t_lo, t_hi, c_base,
               c_base, r2, i2, row, cols, dmask, dout_ptr, delta_ptr, z_ptr, N, T, HAS_Z)
        cp.commit_group()
        s = i % NS
        m2 = dmask[:, None] & (cols < T)  # whole tiles (aligned rows)
        dt, _x = _dt_of(d_s.index(s).load(blk), m2, bias, HAS_BIAS, SOFTPLUS)
        dy = o_s.index(s).load(blk).to(gl.float32)
        if HAS_Z:
            zz = z_s.index(s).load(blk).to(gl.float32)
            dy = dy * zz * _sigmoid(zz)
        dts += gl.sum(dt, axis=1)
        new = ()
        for n in gl.static_range(N):
            crow = c_s.index(s).slice(n, 1).load(blk)
            a = gl.exp2(dt * A2[n][:, None])
            cy = dy * crow
            qn = q[n]
            for j in gl.static_range(T - 1, -1, -1):
                qn = _col(a, cols, j, True) * (qn + _col(cy, cols, j, True))
            new = new + (qn,)
        q = new
    cp.wait_group(0)

    dimN = dim.to(gl.int64) * N
    q_row = (b.to(gl.int64) * n_seg * dim + d) * N + (seg - 1) * dimN
    for n in gl.static_range(N):
        gl.store(Q_ptr + q_row + n, q[n], mask=dmask)
    gl.store(dtsum_ptr + (b.to(gl.int64) * n_seg + seg) * dim + d, dts, mask=dmask)
