# Triton's JIT frontend builds tuples by concatenation, not by starred unpacking:
# ruff: noqa: RUF005
"""The selective scan's pipelined passes in Gluon, Triton's explicit-layout dialect (CUDA only).

The forward summary and output passes (``_scan_fwd_kernel``) and the adjoint summary
(``_scan_bwd_summary_kernel``) with the math, tiling and arguments of their Triton versions
in ``triton_scan_kernels.py``: a program owns one (segment, channel tile), a thread one
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
from mambadna.kernels.triton_scan_kernels import _LN2, _col, _dt_of, _sigmoid

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
    NS: gl.constexpr, W: gl.constexpr,
):
    """One (segment, channel tile) of the forward scan, as ``triton_scan_kernels.
    _scan_fwd_kernel``. SUMMARY: scan from a zero state; write the end state into the chunk
    slot of the next segment's first chunk and the per-channel sum of dt into ``dtsum``
    (batch, n_seg, dim). Otherwise: from X[b, first chunk], write out, X at every later
    chunk boundary and the final state after the last position.
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
        if not SUMMARY:
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
    ``triton_scan_kernels._scan_bwd_summary_kernel``: q = a[t_lo] g[t_lo] into slot s - 1
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


@gluon.jit
def _issue_bwd(bc_s, u_s, d_s, o_s, z_s, stage, t0, t_lo, b_base, c_base, r2, i2, row, cols,
               dmask, u_ptr, delta_ptr, dout_ptr, z_ptr, N: gl.constexpr, T: gl.constexpr,
               HAS_Z: gl.constexpr):
    """Start the copies of the backward's tile at t0 into ``stage``: its B and C blocks and
    its u, delta, dout (and z) rows; nothing below t_lo (the walk's end)."""
    live = t0 >= t_lo
    at = t0 * N + (r2 % N) * T + i2
    src = gl.where(r2 < N, b_base + at, c_base + at)
    _copy(bc_s.index(stage), src, mask=(r2 >= 0) & (i2 >= 0) & live)
    m2 = dmask[:, None] & (cols < T) & live
    offs = gl.max_contiguous(gl.multiple_of(row[:, None] + t0 + cols, [1, T]), [1, T])
    _copy(u_s.index(stage), u_ptr + offs, mask=m2)
    _copy(d_s.index(stage), delta_ptr + offs, mask=m2)
    _copy(o_s.index(stage), dout_ptr + offs, mask=m2)
    if HAS_Z:
        _copy(z_s.index(stage), z_ptr + offs, mask=m2)


@gluon.jit(do_not_specialize=["n_dtiles", "n_bt", "n_chunks", "chunks_per_seg", "n_seg"])
def _scan_bwd_kernel(
    u_ptr, delta_ptr, z_ptr, dout_ptr, A2T_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
    X_ptr, Q_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBC_ptr, dD_ptr, dbias_ptr, dinit_ptr,
    dim, L, dim_per_group, n_dtiles, groups, n_bt, n_chunks, chunks_per_seg, n_seg,
    sB_b, sB_g, sBC,
    N: gl.constexpr, BD: gl.constexpr, T: gl.constexpr, CH: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
    W: gl.constexpr,
):
    """Gradients of every input, as ``triton_scan_kernels._scan_bwd_kernel`` (a persistent
    loop over (segment, channel tile) items; per chunk right to left, (1) a rerun of the
    forward from X[c] that keeps each tile's start state in the program's global scratch,
    (2) tiles right to left: states, adjoint, gradients), with its operands staged in shared
    memory instead of loaded from global memory one state ahead: each tile of the walk (its
    u / delta / dout / z rows and its B and C blocks) is copied in while the tile before it
    computes, one 16-byte copy per row and per thread, and the tile's epilogue reads the
    rows from there again; the q / dA carries and the item's A rows stay in shared memory.
    Scratch per program: CH/T + 1 tile-start states per state, [BD] fp32 each."""
    blk: gl.constexpr = gl.BlockedLayout([1, T], [32, 1], [W, 1], [1, 0])
    chl: gl.constexpr = gl.SliceLayout(1, blk)
    coll: gl.constexpr = gl.SliceLayout(0, blk)
    cpl: gl.constexpr = gl.BlockedLayout([1, 4], [32 * 4 // T, T // 4], [W, 1], [1, 0])
    rows2: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    n_slots: gl.constexpr = CH // T + 1

    L = gl.multiple_of(L, T)  # aligned rows only (the module's docstring)
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    lane = gl.arange(0, BD, chl)
    cols = gl.arange(0, T, coll)[None, :]
    r2 = gl.arange(0, 2 * N, gl.SliceLayout(1, cpl))[:, None]
    i2 = gl.arange(0, T, gl.SliceLayout(0, cpl))[None, :]
    scr = scratch_ptr + pid.to(gl.int64) * (n_slots * N * BD) + lane
    dimN = dim.to(gl.int64) * N

    bc_s = gl.allocate_shared_memory(gl.float32, [2, 2 * N, T], rows2)
    u_s = gl.allocate_shared_memory(u_ptr.dtype.element_ty, [2, BD, T], rows2)
    d_s = gl.allocate_shared_memory(delta_ptr.dtype.element_ty, [2, BD, T], rows2)
    o_s = gl.allocate_shared_memory(dout_ptr.dtype.element_ty, [2, BD, T], rows2)
    z_s = gl.allocate_shared_memory(z_ptr.dtype.element_ty, [2, BD, T], rows2)
    # Per-channel carries and A rows: each lane reads and writes only its own channel.
    flat: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    q_s = gl.allocate_shared_memory(gl.float32, [N, BD], flat)
    dA_s = gl.allocate_shared_memory(gl.float32, [N, BD], flat)
    a2_s = gl.allocate_shared_memory(gl.float32, [N, BD], flat)

    for w in range(pid, n_seg * n_bt, nprog):
        seg = w // n_bt
        b, g, d, dmask = _channel_tile(w % n_bt, n_dtiles, groups, dim_per_group, BD, chl)
        row = (b.to(gl.int64) * dim + d) * L
        bc_off = b.to(gl.int64) * sB_b + g.to(gl.int64) * sB_g
        x_row = (b.to(gl.int64) * n_chunks * dim + d) * N
        q_row = (b.to(gl.int64) * n_seg * dim + d) * N + seg * dimN
        for n in gl.static_range(N):
            q_s.index(n).store(gl.load(Q_ptr + q_row + n, mask=dmask, other=0.0))
            dA_s.index(n).store(gl.zeros([BD], gl.float32, chl))
            a2_s.index(n).store(gl.load(A2T_ptr + n * dim + d, mask=dmask, other=0.0))
        bias = gl.zeros([BD], gl.float32, chl)
        if HAS_BIAS:
            bias = gl.load(bias_ptr + d, mask=dmask, other=0.0)
        Dv = gl.zeros([BD], gl.float32, chl)
        if HAS_D:
            Dv = gl.load(D_ptr + d, mask=dmask, other=0.0)
        dD_acc = gl.zeros([BD], gl.float32, chl)
        db_acc = gl.zeros([BD], gl.float32, chl)
        c_lo = seg * chunks_per_seg
        c_hi = gl.minimum(c_lo + chunks_per_seg, n_chunks)
        for ci in range(c_hi - c_lo):
            c = c_hi - 1 - ci
            t_lo = c * CH
            t_hi = gl.minimum(t_lo + CH, L)
            n_tiles = (t_hi - t_lo) // T  # aligned rows: whole tiles
            # (1) forward states at the start of every tile of the chunk -> scratch
            for n in gl.static_range(N):
                gl.store(scr + n * BD, gl.load(X_ptr + x_row + c * dimN + n, mask=dmask,
                                               other=0.0))
            for i in range(n_tiles - 1):
                t0 = t_lo + i * T
                offs = gl.max_contiguous(gl.multiple_of(row[:, None] + t0 + cols, [1, T]),
                                         [1, T])
                m2 = dmask[:, None] & (cols < T)
                dt, _x = _dt_of(gl.load(delta_ptr + offs, mask=m2, other=0.0), m2, bias,
                                HAS_BIAS, SOFTPLUS)
                dtu = dt * gl.load(u_ptr + offs, mask=m2, other=0.0).to(gl.float32)
                for n in gl.static_range(N):
                    brow = gl.load(B_ptr + bc_off + t0 * N + n * T + cols)
                    a = gl.exp2(dt * a2_s.index(n).load(chl)[:, None])
                    bx = dtu * brow
                    hn = gl.load(scr + (i * N + n) * BD)
                    for j in gl.static_range(T):
                        hn = _col(a, cols, j, True) * hn + _col(bx, cols, j, True)
                    gl.store(scr + ((i + 1) * N + n) * BD, hn)
            # (2) tiles right to left, each copied in while the one before it computes
            t_top = t_lo + (n_tiles - 1) * T
            _issue_bwd(bc_s, u_s, d_s, o_s, z_s, 0, t_top, t_lo, B_ptr + bc_off,
                       C_ptr + bc_off, r2, i2, row, cols, dmask, u_ptr, delta_ptr, dout_ptr,
                       z_ptr, N, T, HAS_Z)
            cp.commit_group()
            for ii in range(n_tiles):
                i = n_tiles - 1 - ii
                t0 = t_lo + i * T
                cp.wait_group(0)
                _barrier()  # the tile's copies visible; the other stage free
                _issue_bwd(bc_s, u_s, d_s, o_s, z_s, (ii + 1) % 2, t0 - T, t_lo,
                           B_ptr + bc_off, C_ptr + bc_off, r2, i2, row, cols, dmask, u_ptr,
                           delta_ptr, dout_ptr, z_ptr, N, T, HAS_Z)
                cp.commit_group()
                s = ii % 2
                m2 = dmask[:, None] & (cols < T)
                offs = gl.max_contiguous(gl.multiple_of(row[:, None] + t0 + cols, [1, T]),
                                         [1, T])
                dt, x = _dt_of(d_s.index(s).load(blk), m2, bias, HAS_BIAS, SOFTPLUS)
                u = u_s.index(s).load(blk).to(gl.float32)
                dtu = dt * u
                dout = o_s.index(s).load(blk).to(gl.float32)
                dy = dout
                if HAS_Z:
                    zz = z_s.index(s).load(blk).to(gl.float32)
                    sz = _sigmoid(zz)
                    dy = dout * zz * sz
                gsum = gl.zeros([BD, T], gl.float32, blk)  # sum_n g * B
                ddt = gl.zeros([BD, T], gl.float32, blk)  # sum_n a * g * h_prev * A
                y = gl.zeros([BD, T], gl.float32, blk)
                red = dBC_ptr + bc_off + t0 * N  # + n * T: state n's dB row
                for n in gl.static_range(N):
                    h0 = gl.load(scr + (i * N + n) * BD)
                    brow = bc_s.index(s).slice(n, 1).load(blk)
                    crow = bc_s.index(s).slice(N + n, 1).load(blk)
                    a2 = a2_s.index(n).load(chl)
                    a = gl.exp2(dt * a2[:, None])
                    bx = dtu * brow
                    hn = h0
                    hs = gl.zeros([BD, T], gl.float32, blk)
                    for j in gl.static_range(T):
                        hn = _col(a, cols, j, True) * hn + _col(bx, cols, j, True)
                        hs = gl.where(cols == j, hn[:, None], hs)
                    y += hs * crow
                    cy = dy * crow
                    qn = q_s.index(n).load(chl)
                    gs = gl.zeros([BD, T], gl.float32, blk)
                    rh = gl.zeros([BD, T], gl.float32, blk)  # a_t * g_t * h_{t-1}
                    for j in gl.static_range(T - 1, -1, -1):
                        gj = qn + _col(cy, cols, j, True)
                        qn = _col(a, cols, j, True) * gj
                        gs = gl.where(cols == j, gj[:, None], gs)
                        if j == 0:
                            rh = gl.where(cols == j, (qn * h0)[:, None], rh)
                        else:
                            hp = _col(hs, cols, j - 1, True)
                            rh = gl.where(cols == j, (qn * hp)[:, None], rh)
                    q_s.index(n).store(qn)
                    dA_s.index(n).store(dA_s.index(n).load(chl) + gl.sum(rh * dt, axis=1))
                    ddt += rh * (a2 * _LN2)[:, None]
                    gsum += gs * brow
                    gl.atomic_add(red + n * T + cols, gl.sum(gs * dtu, axis=0)[None, :],
                                  sem="relaxed")
                    gl.atomic_add(red + n * T + sBC + cols, gl.sum(hs * dy, axis=0)[None, :],
                                  sem="relaxed")
                du = dt * gsum
                ddt += u * gsum
                if HAS_D:
                    du += Dv[:, None] * dy
                    y += Dv[:, None] * u
                    dD_acc += gl.sum(dy * u, axis=1)
                gl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=m2)
                if SOFTPLUS:
                    ddt = gl.where(x > 20.0, ddt, ddt * _sigmoid(x))
                ddt = gl.where(m2, ddt, 0.0)
                if HAS_BIAS:
                    db_acc += gl.sum(ddt, axis=1)
                gl.store(ddelta_ptr + offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
                if HAS_Z:
                    dz = dout * y * sz * (1.0 + zz * (1.0 - sz))
                    gl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=m2)
            cp.wait_group(0)
            _barrier()  # the next chunk's first copy reuses stage 0
        for n in gl.static_range(N):
            gl.atomic_add(dA_ptr + d * N + n, dA_s.index(n).load(chl), mask=dmask,
                          sem="relaxed")
        if HAS_D:
            gl.atomic_add(dD_ptr + d, dD_acc, mask=dmask, sem="relaxed")
        if HAS_BIAS:
            gl.atomic_add(dbias_ptr + d, db_acc, mask=dmask, sem="relaxed")
        if seg == 0:
            f_row = (b.to(gl.int64) * dim + d) * N
            for n in gl.static_range(N):
                gl.store(dinit_ptr + f_row + n, q_s.index(n).load(chl), mask=dmask)
