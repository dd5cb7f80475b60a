/* The selective scan's compiled CPU kernel: the whole scan of one row, forward and backward.
 *
 * For one row i = (batch b, channel d) and position t (group g = d / (dim / G)):
 *     s_t = softplus(delta_t + bias[d])            (softplus optional)
 *     x_t = exp(s_t * A[d]) * x_{t-1} + s_t u_t * B[b, g, t]       (vectors over N states)
 *     y_t = <C[b, g, t], x_t> + D[d] u_t;   out_t = y_t * silu(z_t)   (gate optional)
 * as in kernels/selective_scan/naive.py (the reference); cpu.py gives the layouts and the
 * autograd function around this file.
 *
 * Why compiled and fused: the chunked PyTorch scan makes a dozen passes over (dim, L, N) tensors
 * per chunk and the model's bias/softplus/gate a pass each over (dim, L); the recurrence needs
 * one exp and two multiply-adds per state update. Here a row's state stays in registers, the
 * loop over N is vectorised (with -ffast-math GCC calls glibc's vector expf), the elementwise
 * work rides along, and rows are independent, so the caller splits them across threads (the
 * GIL is released).
 *
 * Backward: the forward saves the state at the start of every chunk of CHUNK positions; the
 * backward recomputes a chunk's states, decays and pre-gate outputs from it into small local
 * buffers, then walks the chunk backwards with the adjoint lam = dLoss/dx_t (gy = dLoss/dy_t):
 *     lam += gy C_t;  g_v = <lam, B_t>;  dB_t += lam s_t u_t;  dC_t += gy x_t;
 *     q = lam * exp(s_t A) * x_{t-1};  g_s = <q, A> + g_v u_t;  dA += q s_t;
 *     lam = lam * exp(s_t A);  du_t = gy D + g_v s_t;  ddelta_t = g_s * sigmoid(delta_t + bias)
 * dA, dB, dC, dD and dbias are sums over rows: each thread writes its own buffer and the caller
 * adds them (no atomics, and the result does not depend on the order threads finish).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_STATE 64
#define CHUNK 64

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* One binary for every x86-64 machine: the loader picks the widest vector unit present. */
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

typedef struct {
    /* Inputs, (batch * dim, L) rows unless noted; z and starts may be NULL. */
    const float *u, *delta, *z, *A /* (dim, N) */, *B, *C /* (batch, G, L, N) */;
    const float *D, *bias /* (dim,) */, *x0 /* (rows, N) */;
    int64_t dim, groups, L, N, softplus;
} Scan;

/* Per-position scalar work (softplus, the gate's sigmoid) is done for a chunk of positions at a
 * time in loops over positions, which GCC vectorises (glibc's vector expf and log1pf): done one
 * position at a time inside the recurrence, these scalar calls cost several times the
 * recurrence itself. The recurrence then reads the chunk's steps from small local buffers. */
static inline void chunk_steps(const float *delta, const float *u, float bias, int64_t softplus,
                               int64_t T, float *s, float *v, float *sig) {
#pragma omp simd
    for (int64_t k = 0; k < T; k++) {
        const float raw = delta[k] + bias;
        /* torch's F.softplus: the identity above 20 (exp would only add rounding there). */
        const float e = expf(fminf(raw, 20.0f));
        const float sp = raw > 20.0f ? raw : log1pf(e);
        s[k] = softplus ? sp : raw;
        v[k] = s[k] * u[k];
        /* d softplus / d raw = sigmoid(raw) = e / (1 + e); 1 above 20 and without softplus. */
        if (sig != NULL)
            sig[k] = (softplus && raw <= 20.0f) ? e / (1.0f + e) : 1.0f;
    }
}

/* exp for the recurrence's decays, inlined so that the loop over states stays in registers:
 * a call of glibc's vector expf per position makes the compiler spill and reload the state
 * around it (every vector register is the caller's to save) and cost about half the scan.
 * Cephes' single-precision scheme: x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial for
 * exp(r), 2^n built in the exponent bits; relative error about 2e-7 (tests/kernels compare the
 * scan with an fp64 reference). x is clamped to [-87, 88]: below, exp is under the smallest
 * normal float (the decay's true value is as good as 0 there), above, it overflows. */
static inline float exp_inline(float x) {
    x = fminf(fmaxf(x, -87.0f), 88.0f);
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  /* ln2 in two parts */
    float q = 1.9875691500e-4f;
    q = q * r + 1.3981999507e-3f;
    q = q * r + 8.3334519073e-3f;
    q = q * r + 4.1665795894e-2f;
    q = q * r + 1.6666665459e-1f;
    q = q * r + 5.0000001201e-1f;
    const float poly = (q * r) * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return poly * scale;
}

/* The recurrence over one chunk for NN states (a constant where the caller passes one, so that
 * the loop over states becomes whole vector registers): x holds the state in and out, ys gets
 * <C_t, x_t>; with xs and decay (the backward's recompute) every state and decay is kept. */
static inline __attribute__((always_inline)) void chunk_recurrence(
    const int64_t NN, const float *a, const float *Bt, const float *Ct, const float *s,
    const float *v, int64_t T, float *x, float *ys, float *xs, float *decay) {
    for (int64_t k = 0; k < T; k++) {
        const float sk = s[k], vk = v[k];
        const float *Bk = Bt + k * NN, *Ck = Ct + k * NN;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < NN; n++) {
            const float e = exp_inline(sk * a[n]);
            x[n] = e * x[n] + vk * Bk[n];
            acc += x[n] * Ck[n];
            if (xs != NULL) {
                decay[k * NN + n] = e;
                xs[(k + 1) * NN + n] = x[n];
            }
        }
        ys[k] = acc;
    }
}

/* Rows outer, positions inner. (Chunks outer and rows inner, so that a chunk's B and C stay in
 * L1 for every row, measured 1.3x slower: the rows' u, delta, z and out are then read in
 * scattered pieces, while B and C stream from L2/L3 well enough.) */
CLONES
static void scan_forward(const Scan *p, float *out, float *x_last, float *starts, int64_t row0,
                         int64_t row1) {
    const int64_t L = p->L, N = p->N, per_group = p->dim / p->groups;
    const int64_t n_chunks = (L + CHUNK - 1) / CHUNK;
    float s[CHUNK], v[CHUNK], ys[CHUNK];
    for (int64_t i = row0; i < row1; i++) {
        const int64_t b = i / p->dim, d = i % p->dim, g = d / per_group;
        const float *Bg = p->B + (b * p->groups + g) * L * N;
        const float *Cg = p->C + (b * p->groups + g) * L * N;
        const float *u = p->u + i * L, *delta = p->delta + i * L;
        const float *z = p->z ? p->z + i * L : NULL;
        const float Dd = p->D[d], bias = p->bias[d];
        float x[MAX_STATE], a[MAX_STATE];
        for (int64_t n = 0; n < N; n++) {
            x[n] = p->x0[i * N + n];
            a[n] = p->A[d * N + n];
        }
        for (int64_t c = 0; c < n_chunks; c++) {
            const int64_t t0 = c * CHUNK, T = (L - t0 < CHUNK) ? L - t0 : CHUNK;
            if (starts != NULL)
                memcpy(starts + (i * n_chunks + c) * N, x, N * sizeof(float));
            chunk_steps(delta + t0, u + t0, bias, p->softplus, T, s, v, NULL);
            if (N == 16)
                chunk_recurrence(16, a, Bg + t0 * N, Cg + t0 * N, s, v, T, x, ys, NULL, NULL);
            else
                chunk_recurrence(N, a, Bg + t0 * N, Cg + t0 * N, s, v, T, x, ys, NULL, NULL);
            float *o = out + i * L + t0;
            const float *ut = u + t0;
            if (z) {
                const float *zt = z + t0;
#pragma omp simd
                for (int64_t k = 0; k < T; k++)
                    o[k] = (ys[k] + Dd * ut[k]) * zt[k] / (1.0f + expf(-zt[k]));
            } else {
#pragma omp simd
                for (int64_t k = 0; k < T; k++)
                    o[k] = ys[k] + Dd * ut[k];
            }
        }
        memcpy(x_last + i * N, x, N * sizeof(float));
    }
}

typedef struct {
    /* Row-shaped gradients (written), then per-thread sums over rows (accumulated). */
    float *u, *delta, *z, *x0;
    float *A /* (dim, N) */, *B, *C /* (batch, G, L, N) */, *D, *bias /* (dim,) */;
} Grads;

/* The adjoint walk back over one chunk (see the top of this file), NN states as above. */
static inline __attribute__((always_inline)) void chunk_adjoint(
    const int64_t NN, const float *a, const float *Bt, const float *Ct, const float *s,
    const float *v, const float *gys, const float *xs, const float *decay, int64_t T,
    float *lam, float *dBt, float *dCt, float *dA, float *g_vs, float *g_ss) {
    for (int64_t k = T - 1; k >= 0; k--) {
        const float sk = s[k], vk = v[k], gy = gys[k];
        const float *Bk = Bt + k * NN, *Ck = Ct + k * NN, *e = decay + k * NN;
        const float *prev = xs + k * NN, *cur = xs + (k + 1) * NN;
        float *dBk = dBt + k * NN, *dCk = dCt + k * NN;
        float g_v = 0.0f, g_s = 0.0f;
#pragma omp simd reduction(+ : g_v, g_s)
        for (int64_t n = 0; n < NN; n++) {
            const float l = lam[n] + gy * Ck[n];
            const float q = l * e[n] * prev[n];
            g_v += l * Bk[n];
            dBk[n] += l * vk;
            dCk[n] += gy * cur[n];
            g_s += q * a[n];
            dA[n] += q * sk;
            lam[n] = l * e[n];
        }
        g_vs[k] = g_v;
        g_ss[k] = g_s;
    }
}

CLONES
static void scan_backward(const Scan *p, const float *starts, const float *g_out,
                          const float *g_last, const Grads *gr, int64_t row0, int64_t row1) {
    const int64_t L = p->L, N = p->N, per_group = p->dim / p->groups;
    const int64_t n_chunks = (L + CHUNK - 1) / CHUNK;
    float xs[(CHUNK + 1) * MAX_STATE], decay[CHUNK * MAX_STATE];
    float s[CHUNK], v[CHUNK], sig[CHUNK], ys[CHUNK], gys[CHUNK], g_vs[CHUNK], g_ss[CHUNK];
    for (int64_t i = row0; i < row1; i++) {
        const int64_t b = i / p->dim, d = i % p->dim, g = d / per_group;
        const int64_t offset = (b * p->groups + g) * L * N;
        const float *Bg = p->B + offset, *Cg = p->C + offset;
        float *dBg = gr->B + offset, *dCg = gr->C + offset, *dA = gr->A + d * N;
        const float *u = p->u + i * L, *delta = p->delta + i * L;
        const float *z = p->z ? p->z + i * L : NULL, *go = g_out + i * L;
        const float Dd = p->D[d], bias = p->bias[d];
        float lam[MAX_STATE], a[MAX_STATE], x[MAX_STATE], dD = 0.0f, dbias = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            lam[n] = g_last[i * N + n];
            a[n] = p->A[d * N + n];
        }
        for (int64_t c = n_chunks - 1; c >= 0; c--) {
            const int64_t t0 = c * CHUNK, T = (L - t0 < CHUNK) ? L - t0 : CHUNK;
            /* Recompute: xs[k] is the state before position t0 + k (xs[0] the saved start). */
            memcpy(xs, starts + (i * n_chunks + c) * N, N * sizeof(float));
            memcpy(x, xs, N * sizeof(float));
            chunk_steps(delta + t0, u + t0, bias, p->softplus, T, s, v, sig);
            const float *Bt = Bg + t0 * N, *Ct = Cg + t0 * N, *ut = u + t0, *got = go + t0;
            if (N == 16)
                chunk_recurrence(16, a, Bt, Ct, s, v, T, x, ys, xs, decay);
            else
                chunk_recurrence(N, a, Bt, Ct, s, v, T, x, ys, xs, decay);
            /* The gate: out = y silu(z), y = ys + D u. */
            if (z) {
                const float *zt = z + t0;
                float *dz = gr->z + i * L + t0;
#pragma omp simd
                for (int64_t k = 0; k < T; k++) {
                    const float sz = 1.0f / (1.0f + expf(-zt[k]));
                    const float y = ys[k] + Dd * ut[k];
                    dz[k] = got[k] * y * sz * (1.0f + zt[k] * (1.0f - sz));
                    gys[k] = got[k] * zt[k] * sz;
                }
            } else {
                memcpy(gys, got, T * sizeof(float));
            }
            if (N == 16)
                chunk_adjoint(16, a, Bt, Ct, s, v, gys, xs, decay, T, lam, dBg + t0 * N,
                              dCg + t0 * N, dA, g_vs, g_ss);
            else
                chunk_adjoint(N, a, Bt, Ct, s, v, gys, xs, decay, T, lam, dBg + t0 * N,
                              dCg + t0 * N, dA, g_vs, g_ss);
            float *du = gr->u + i * L + t0, *ddelta = gr->delta + i * L + t0;
#pragma omp simd reduction(+ : dD, dbias)
            for (int64_t k = 0; k < T; k++) {
                const float g_raw = (g_ss[k] + g_vs[k] * ut[k]) * sig[k];
                du[k] = gys[k] * Dd + g_vs[k] * s[k];
                ddelta[k] = g_raw;
                dD += gys[k] * ut[k];
                dbias += g_raw;
            }
        }
        memcpy(gr->x0 + i * N, lam, N * sizeof(float));
        gr->D[d] += dD;
        gr->bias[d] += dbias;
    }
}

/* Python entry points: addresses of contiguous fp32 buffers (the caller checks shapes, dtypes
 * and contiguity; see cpu.py), 0 for an absent optional buffer, and sizes. */
#define PTR(v) ((float *)(uintptr_t)(v))

static int check_sizes(long long dim, long long groups, long long N) {
    if (N < 1 || N > MAX_STATE || groups < 1 || dim % groups != 0) {
        PyErr_Format(PyExc_ValueError,
                     "cpu scan: N must be 1..%d and dim divisible by groups", MAX_STATE);
        return 0;
    }
    return 1;
}

static PyObject *py_forward(PyObject *self, PyObject *args) {
    unsigned long long q[12];
    long long dim, groups, L, N, softplus, row0, row1;
    if (!PyArg_ParseTuple(args, "KKKKKKKKKKKKLLLLLLL", &q[0], &q[1], &q[2], &q[3], &q[4],
                          &q[5], &q[6], &q[7], &q[8], &q[9], &q[10], &q[11], &dim, &groups, &L,
                          &N, &softplus, &row0, &row1))
        return NULL;
    if (!check_sizes(dim, groups, N))
        return NULL;
    const Scan p = {PTR(q[0]), PTR(q[1]), q[2] ? PTR(q[2]) : NULL, PTR(q[3]), PTR(q[4]),
                    PTR(q[5]), PTR(q[6]), PTR(q[7]), PTR(q[8]), dim, groups, L, N, softplus};
    Py_BEGIN_ALLOW_THREADS
    scan_forward(&p, PTR(q[9]), PTR(q[10]), q[11] ? PTR(q[11]) : NULL, row0, row1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_backward(PyObject *self, PyObject *args) {
    unsigned long long q[21];
    long long dim, groups, L, N, softplus, row0, row1;
    if (!PyArg_ParseTuple(args, "KKKKKKKKKKKKKKKKKKKKKLLLLLLL", &q[0], &q[1], &q[2], &q[3],
                          &q[4], &q[5], &q[6], &q[7], &q[8], &q[9], &q[10], &q[11], &q[12],
                          &q[13], &q[14], &q[15], &q[16], &q[17], &q[18], &q[19], &q[20], &dim,
                          &groups, &L, &N, &softplus, &row0, &row1))
        return NULL;
    if (!check_sizes(dim, groups, N))
        return NULL;
    const Scan p = {PTR(q[0]), PTR(q[1]), q[2] ? PTR(q[2]) : NULL, PTR(q[3]), PTR(q[4]),
                    PTR(q[5]), PTR(q[6]), PTR(q[7]), PTR(q[8]), dim, groups, L, N, softplus};
    const Grads gr = {PTR(q[12]), PTR(q[13]), q[14] ? PTR(q[14]) : NULL, PTR(q[15]),
                      PTR(q[16]), PTR(q[17]), PTR(q[18]), PTR(q[19]), PTR(q[20])};
    Py_BEGIN_ALLOW_THREADS
    scan_backward(&p, PTR(q[9]), PTR(q[10]), PTR(q[11]), &gr, row0, row1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS, "Selective-scan core forward over rows [row0, row1)."},
    {"backward", py_backward, METH_VARARGS, "Selective-scan core backward over rows [row0, row1)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_scan",
                                    "Compiled CPU selective scan (see kernels/selective_scan/cpu.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__cpu_scan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL) {
        PyModule_AddIntConstant(m, "CHUNK", CHUNK);
        PyModule_AddIntConstant(m, "MAX_STATE", MAX_STATE);
    }
    return m;
}
