/* Causal depthwise conv1d with SiLU fused, compiled for the CPU: forward and backward by rows.
 *
 * For one row i = (batch b, channel d), kernel width W and xs = [state | x] along L (the state
 * holds the W-1 inputs before x, zeros when absent):
 *     pre[t] = bias[d] + sum_{k<W} w[d, k] xs[t + k]        out[t] = silu(pre[t]) (or pre[t])
 *     final[j] = xs[L + j], j < W - 1                        (the state after x)
 * as in kernels/conv1d/ops.py (the reference); cpu.py gives the layouts and the autograd
 * function around this file.
 *
 * Why compiled: on CPU the reference makes four passes over the (batch, dim, L) tensor in
 * memory (the state concatenated in front of x, oneDNN's depthwise convolution, SiLU, and the
 * final state sliced out of the concatenation), each from memory at the model's lengths. Here a
 * row is read once and written once, in tiles of TILE positions that stay in L1 between the taps
 * and the activation; x may be a channel slice of a wider tensor (the mixer's x is half of
 * in_proj's output), so nothing is copied first.
 *
 * Backward (pre recomputed, nothing but the inputs saved):
 *     g[t] = dout[t] silu'(pre[t]),  silu'(p) = s (1 + p (1 - s)),  s = sigmoid(p)
 *     dxs[p] = sum_k w[k] g[p - k] (0 <= p - k < L) + dfinal[p - L] (p >= L)
 *     dw[d, k] += sum_t g[t] xs[t + k];   dbias[d] += sum_t g[t]
 * dx is dxs past the state's W - 1 places, dstate its first W - 1. A row's sums for dw and
 * dbias run in double: a weight's gradient is a sum over every position, often near zero, and
 * AdamW turns its rounding into whole steps (a run split over ranks must train the weights of
 * one process). dw and dbias are sums over the batch's rows: each thread writes its own buffers and the caller adds them (no atomics,
 * and the result does not depend on the order threads finish).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WIDTH 64
#define TILE 1024

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* One binary for every x86-64 machine: the loader picks the widest vector unit present. */
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

typedef struct {
    const float *x;     /* row (b, d) starts at x + b * sxb + d * sxd; positions contiguous */
    const float *w;     /* (dim, W) */
    const float *bias;  /* (dim,) or NULL */
    const float *state; /* (batch * dim, W - 1) or NULL (zeros) */
    int64_t dim, L, W, sxb, sxd, silu;
} Conv;

static inline const float *row_of(const Conv *p, int64_t i) {
    return p->x + (i / p->dim) * p->sxb + (i % p->dim) * p->sxd;
}

/* xs[q] of row i for q < W - 1 + L: the state's entries first, then x. */
static inline float xs_at(const Conv *p, const float *x, int64_t i, int64_t q) {
    const int64_t j = q - (p->W - 1);
    if (j >= 0)
        return x[j];
    return p->state != NULL ? p->state[i * (p->W - 1) + q] : 0.0f;
}

/* pre[t0 .. t0 + T) of row i into acc; positions t >= W - 1 read x alone (the vectorised
 * loop), the first W - 1 reach into the state. */
static inline void pre_tile(const Conv *p, const float *x, int64_t i, const float *w, float b,
                            int64_t t0, int64_t T, float *acc) {
    const int64_t W = p->W;
    const int64_t head = t0 < W - 1 ? (W - 1 - t0 < T ? W - 1 - t0 : T) : 0;
    for (int64_t n = 0; n < head; n++) {
        float a = b;
        for (int64_t k = 0; k < W; k++)
            a += w[k] * xs_at(p, x, i, t0 + n + k);
        acc[n] = a;
    }
#pragma omp simd
    for (int64_t n = head; n < T; n++)
        acc[n] = b;
    for (int64_t k = 0; k < W; k++) {
        const float wk = w[k];
        const float *src = x + t0 + k - (W - 1);
#pragma omp simd
        for (int64_t n = head; n < T; n++)
            acc[n] += wk * src[n];
    }
}

CLONES
static void conv_forward(const Conv *p, float *out, float *final, int64_t row0, int64_t row1) {
    const int64_t L = p->L, W = p->W;
    float acc[TILE];
    for (int64_t i = row0; i < row1; i++) {
        const float *x = row_of(p, i);
        const float *w = p->w + (i % p->dim) * W;
        const float b = p->bias != NULL ? p->bias[i % p->dim] : 0.0f;
        float *o = out + i * L;
        for (int64_t t0 = 0; t0 < L; t0 += TILE) {
            const int64_t T = L - t0 < TILE ? L - t0 : TILE;
            pre_tile(p, x, i, w, b, t0, T, acc);
            if (p->silu) {
#pragma omp simd
                for (int64_t n = 0; n < T; n++)
                    o[t0 + n] = acc[n] / (1.0f + expf(fminf(-acc[n], 88.0f)));
            } else {
                memcpy(o + t0, acc, T * sizeof(float));
            }
        }
        for (int64_t j = 0; j < W - 1; j++)
            final[i * (W - 1) + j] = xs_at(p, x, i, L + j);
    }
}

/* g is a scratch row of L + W - 1 floats (its last W - 1 stay zero: dx reads past the end). */
CLONES
static void conv_backward(const Conv *p, const float *g_out, const float *g_final, float *dx,
                          float *d_state, float *dw, float *dbias, float *g, int64_t row0,
                          int64_t row1) {
    const int64_t L = p->L, W = p->W;
    float acc[TILE];
    memset(g + L, 0, (W - 1) * sizeof(float));
    for (int64_t i = row0; i < row1; i++) {
        const int64_t d = i % p->dim;
        const float *x = row_of(p, i);
        const float *w = p->w + d * W;
        const float b = p->bias != NULL ? p->bias[d] : 0.0f;
        const float *go = g_out + i * L;
        double db = 0.0;
        for (int64_t t0 = 0; t0 < L; t0 += TILE) {
            const int64_t T = L - t0 < TILE ? L - t0 : TILE;
            if (p->silu) {
                pre_tile(p, x, i, w, b, t0, T, acc);
#pragma omp simd
                for (int64_t n = 0; n < T; n++) {
                    const float s = 1.0f / (1.0f + expf(fminf(-acc[n], 88.0f)));
                    g[t0 + n] = go[t0 + n] * s * (1.0f + acc[n] * (1.0f - s));
                }
            } else {
                memcpy(g + t0, go + t0, T * sizeof(float));
            }
#pragma omp simd reduction(+ : db)
            for (int64_t n = 0; n < T; n++)
                db += g[t0 + n];
        }
        dbias[d] += (float)db;
        for (int64_t k = 0; k < W; k++) {
            /* positions whose tap k reads x; the first W - 1 - k read the state */
            const int64_t first = W - 1 - k < L ? W - 1 - k : L;
            const float *src = x + k - (W - 1);
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (int64_t t = first; t < L; t++)
                sum += (double)(g[t] * src[t]);
            for (int64_t t = 0; t < first; t++)
                sum += (double)(g[t] * xs_at(p, x, i, t + k));
            dw[d * W + k] += (float)sum;
        }
        /* dx[j] = dxs[j + W - 1] = sum_k w[k] g[j + W - 1 - k] (g is zero past L) */
        float *dxr = dx + i * L;
        for (int64_t t0 = 0; t0 < L; t0 += TILE) {
            const int64_t T = L - t0 < TILE ? L - t0 : TILE;
#pragma omp simd
            for (int64_t n = 0; n < T; n++)
                acc[n] = 0.0f;
            for (int64_t k = 0; k < W; k++) {
                const float wk = w[k];
                const float *src = g + t0 + W - 1 - k;
#pragma omp simd
                for (int64_t n = 0; n < T; n++)
                    acc[n] += wk * src[n];
            }
            memcpy(dxr + t0, acc, T * sizeof(float));
        }
        if (g_final != NULL) {
            /* final[j] = xs[L + j]: x[L + j - (W - 1)] where that is >= 0, else the state */
            const float *gf = g_final + i * (W - 1);
            for (int64_t j = 0; j < W - 1; j++)
                if (L + j - (W - 1) >= 0)
                    dxr[L + j - (W - 1)] += gf[j];
        }
        if (d_state != NULL) {
            float *ds = d_state + i * (W - 1);
            for (int64_t q = 0; q < W - 1; q++) {
                float s = 0.0f;
                for (int64_t k = 0; k <= q; k++)
                    if (q - k < L)
                        s += w[k] * g[q - k];
                if (g_final != NULL && q >= L)
                    s += g_final[i * (W - 1) + q - L];
                ds[q] = s;
            }
        }
    }
}

/* Python entry points: addresses of fp32 buffers (the caller checks shapes, dtypes and
 * strides; see cpu.py), 0 for an absent optional buffer, sizes and x's strides in elements. */
#define PTR(v) ((float *)(uintptr_t)(v))

static int check_sizes(long long dim, long long L, long long W) {
    if (dim < 1 || L < 1 || W < 1 || W > MAX_WIDTH) {
        PyErr_Format(PyExc_ValueError, "cpu conv: dim and L must be >= 1 and W 1..%d",
                     MAX_WIDTH);
        return 0;
    }
    return 1;
}

static PyObject *py_forward(PyObject *self, PyObject *args) {
    unsigned long long q[6];
    long long dim, L, W, sxb, sxd, silu, row0, row1;
    if (!PyArg_ParseTuple(args, "KKKKKKLLLLLLLL", &q[0], &q[1], &q[2], &q[3], &q[4], &q[5],
                          &dim, &L, &W, &sxb, &sxd, &silu, &row0, &row1))
        return NULL;
    if (!check_sizes(dim, L, W))
        return NULL;
    const Conv p = {PTR(q[0]), PTR(q[1]), q[2] ? PTR(q[2]) : NULL, q[3] ? PTR(q[3]) : NULL,
                    dim, L, W, sxb, sxd, silu};
    Py_BEGIN_ALLOW_THREADS
    conv_forward(&p, PTR(q[4]), PTR(q[5]), row0, row1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_backward(PyObject *self, PyObject *args) {
    unsigned long long q[10];
    long long dim, L, W, sxb, sxd, silu, row0, row1;
    if (!PyArg_ParseTuple(args, "KKKKKKKKKKLLLLLLLL", &q[0], &q[1], &q[2], &q[3], &q[4], &q[5],
                          &q[6], &q[7], &q[8], &q[9], &dim, &L, &W, &sxb, &sxd, &silu, &row0,
                          &row1))
        return NULL;
    if (!check_sizes(dim, L, W))
        return NULL;
    const Conv p = {PTR(q[0]), PTR(q[1]), q[2] ? PTR(q[2]) : NULL, q[3] ? PTR(q[3]) : NULL,
                    dim, L, W, sxb, sxd, silu};
    float *g = malloc((L + W - 1) * sizeof(float));
    if (g == NULL)
        return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    conv_backward(&p, PTR(q[4]), q[5] ? PTR(q[5]) : NULL, PTR(q[6]), q[7] ? PTR(q[7]) : NULL,
                  PTR(q[8]), PTR(q[9]), g, row0, row1);
    Py_END_ALLOW_THREADS
    free(g);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS, "Causal conv1d forward over rows [row0, row1)."},
    {"backward", py_backward, METH_VARARGS, "Causal conv1d backward over rows [row0, row1)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_conv",
                                    "Compiled CPU causal conv1d (see kernels/conv1d/cpu.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__cpu_conv(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL)
        PyModule_AddIntConstant(m, "MAX_WIDTH", MAX_WIDTH);
    return m;
}
