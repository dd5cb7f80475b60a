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

static inline float softplus_of(float raw, int64_t on) {
    /* torch's F.softplus: the identity above 20 (exp would only add rounding there). */
    return !on ? raw : (raw > 20.0f ? raw : log1pf(expf(raw)));
}

static inline float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

CLONES
static void scan_forward(const Scan *p, float *out, float *x_last, float *starts, int64_t row0,
                         int64_t row1) {
    const int64_t L = p->L, N = p->N, per_group = p->dim / p->groups;
    const int64_t n_chunks = (L + CHUNK - 1) / CHUNK;
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
        for (int64_t t = 0; t < L; t++) {
            if (starts != NULL && t % CHUNK == 0)
                memcpy(starts + (i * n_chunks + t / CHUNK) * N, x, N * sizeof(float));
            const float s = softplus_of(delta[t] + bias, p->softplus), v = s * u[t];
            const float *Bt = Bg + t * N, *Ct = Cg + t * N;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t n = 0; n < N; n++) {
                x[n] = expf(s * a[n]) * x[n] + v * Bt[n];
                acc += x[n] * Ct[n];
            }
            const float y = acc + Dd * u[t];
            out[i * L + t] = z ? y * z[t] * sigmoid(z[t]) : y;
        }
        memcpy(x_last + i * N, x, N * sizeof(float));
    }
}

typedef struct {
    /* Row-shaped gradients (written), then per-thread sums over rows (accumulated). */
    float *u, *delta, *z, *x0;
    float *A /* (dim, N) */, *B, *C /* (batch, G, L, N) */, *D, *bias /* (dim,) */;
} Grads;

CLONES
static void scan_backward(const Scan *p, const float *starts, const float *g_out,
                          const float *g_last, const Grads *gr, int64_t row0, int64_t row1) {
    const int64_t L = p->L, N = p->N, per_group = p->dim / p->groups;
    const int64_t n_chunks = (L + CHUNK - 1) / CHUNK;
    float xs[(CHUNK + 1) * MAX_STATE], decay[CHUNK * MAX_STATE];
    float dts[CHUNK], ys[CHUNK];
    for (int64_t i = row0; i < row1; i++) {
        const int64_t b = i / p->dim, d = i % p->dim, g = d / per_group;
        const int64_t offset = (b * p->groups + g) * L * N;
        const float *Bg = p->B + offset, *Cg = p->C + offset;
        float *dBg = gr->B + offset, *dCg = gr->C + offset, *dA = gr->A + d * N;
        const float *u = p->u + i * L, *delta = p->delta + i * L;
        const float *z = p->z ? p->z + i * L : NULL, *go = g_out + i * L;
        const float Dd = p->D[d], bias = p->bias[d];
        float lam[MAX_STATE], a[MAX_STATE], dD = 0.0f, dbias = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            lam[n] = g_last[i * N + n];
            a[n] = p->A[d * N + n];
        }
        for (int64_t c = n_chunks - 1; c >= 0; c--) {
            const int64_t t0 = c * CHUNK, T = (L - t0 < CHUNK) ? L - t0 : CHUNK;
            /* Recompute: xs[k] is the state before position t0 + k (xs[0] the saved start). */
            memcpy(xs, starts + (i * n_chunks + c) * N, N * sizeof(float));
            for (int64_t k = 0; k < T; k++) {
                const float s = softplus_of(delta[t0 + k] + bias, p->softplus);
                const float v = s * u[t0 + k];
                const float *Bt = Bg + (t0 + k) * N, *Ct = Cg + (t0 + k) * N;
                float *prev = xs + k * N, *next = xs + (k + 1) * N, *e = decay + k * N;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t n = 0; n < N; n++) {
                    e[n] = expf(s * a[n]);
                    next[n] = e[n] * prev[n] + v * Bt[n];
                    acc += next[n] * Ct[n];
                }
                dts[k] = s;
                ys[k] = acc + Dd * u[t0 + k];
            }
            for (int64_t k = T - 1; k >= 0; k--) {
                const int64_t t = t0 + k;
                const float s = dts[k], ut = u[t], v = s * ut;
                float gy = go[t];
                if (z) {
                    const float sz = sigmoid(z[t]);
                    gr->z[i * L + t] = gy * ys[k] * sz * (1.0f + z[t] * (1.0f - sz));
                    gy *= z[t] * sz;
                }
                const float *Bt = Bg + t * N, *Ct = Cg + t * N, *e = decay + k * N;
                const float *prev = xs + k * N, *cur = xs + (k + 1) * N;
                float *dBt = dBg + t * N, *dCt = dCg + t * N;
                float g_v = 0.0f, g_s = 0.0f;
#pragma omp simd reduction(+ : g_v, g_s)
                for (int64_t n = 0; n < N; n++) {
                    const float l = lam[n] + gy * Ct[n];
                    const float q = l * e[n] * prev[n];
                    g_v += l * Bt[n];
                    dBt[n] += l * v;
                    dCt[n] += gy * cur[n];
                    g_s += q * a[n];
                    dA[n] += q * s;
                    lam[n] = l * e[n];
                }
                g_s += g_v * ut;
                const float raw = delta[t] + bias;
                const float g_raw = (p->softplus && raw <= 20.0f) ? g_s * sigmoid(raw) : g_s;
                gr->u[i * L + t] = gy * Dd + g_v * s;
                gr->delta[i * L + t] = g_raw;
                dD += gy * ut;
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
