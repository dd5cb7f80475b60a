/* The selective scan's compiled CPU kernel: forward and backward of the recurrence core.
 *
 * For one row i = (batch b, channel d) and position t (group g = d / (dim / G)):
 *     x_t = exp(dt_t * A[d]) * x_{t-1} + dtu_t * B[b, g, t]        (vectors over N states)
 *     y_t = sum_n C[b, g, t, n] * x_t[n]
 * Everything else (bias, softplus, the D skip, the SiLU gate, dtypes) stays in PyTorch around
 * this core, in kernels/selective_scan/cpu.py, which also documents the layouts.
 *
 * Why compiled: the chunked PyTorch scan makes a dozen passes over (dim, L, N) tensors per chunk,
 * while the recurrence needs one exp and two multiply-adds per state update. Here a row's state
 * stays in registers, the loop over N is vectorised (with -ffast-math GCC calls glibc's vector
 * expf), and rows are independent, so the caller splits them across threads; the GIL is released.
 *
 * Backward: the forward saves the state at the start of every chunk of CHUNK positions; the
 * backward recomputes a chunk's states and decays from it into a small local buffer, then walks
 * the chunk backwards with the adjoint lam (dLoss/dx_t):
 *     lam += gy_t C_t;  d(dtu)_t = <lam, B_t>;  dB_t += lam dtu_t;  dC_t += gy_t x_t;
 *     q = lam * exp(dt_t A) * x_{t-1};  d(dt)_t = <q, A>;  dA += q dt_t;  lam = lam * exp(dt_t A)
 * dB, dC, dA are sums over rows: each thread writes its own buffer and the caller adds them.
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

CLONES
static void scan_forward(const float *dt, const float *dtu, const float *A, const float *B,
                         const float *C, const float *x0, float *y, float *x_last,
                         float *starts, int64_t row0, int64_t row1, int64_t dim, int64_t groups,
                         int64_t L, int64_t N) {
    const int64_t per_group = dim / groups;
    const int64_t n_chunks = (L + CHUNK - 1) / CHUNK;
    for (int64_t i = row0; i < row1; i++) {
        const int64_t b = i / dim, d = i % dim, g = d / per_group;
        const float *Bg = B + (b * groups + g) * L * N, *Cg = C + (b * groups + g) * L * N;
        const float *dt_i = dt + i * L, *dtu_i = dtu + i * L;
        float x[MAX_STATE], a[MAX_STATE];
        for (int64_t n = 0; n < N; n++) {
            x[n] = x0[i * N + n];
            a[n] = A[d * N + n];
        }
        for (int64_t t = 0; t < L; t++) {
            if (starts != NULL && t % CHUNK == 0)
                memcpy(starts + (i * n_chunks + t / CHUNK) * N, x, N * sizeof(float));
            const float s = dt_i[t], v = dtu_i[t];
            const float *Bt = Bg + t * N, *Ct = Cg + t * N;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t n = 0; n < N; n++) {
                x[n] = expf(s * a[n]) * x[n] + v * Bt[n];
                acc += x[n] * Ct[n];
            }
            y[i * L + t] = acc;
        }
        memcpy(x_last + i * N, x, N * sizeof(float));
    }
}

CLONES
static void scan_backward(const float *dt, const float *dtu, const float *A, const float *B,
                          const float *C, const float *starts, const float *gy,
                          const float *g_last, float *d_dt, float *d_dtu, float *d_A, float *d_B,
                          float *d_C, float *d_x0, int64_t row0, int64_t row1, int64_t dim,
                          int64_t groups, int64_t L, int64_t N) {
    const int64_t per_group = dim / groups;
    const int64_t n_chunks = (L + CHUNK - 1) / CHUNK;
    float xs[(CHUNK + 1) * MAX_STATE], decay[CHUNK * MAX_STATE];
    for (int64_t i = row0; i < row1; i++) {
        const int64_t b = i / dim, d = i % dim, g = d / per_group;
        const int64_t offset = (b * groups + g) * L * N;
        const float *Bg = B + offset, *Cg = C + offset;
        float *dBg = d_B + offset, *dCg = d_C + offset, *dA_d = d_A + d * N;
        const float *dt_i = dt + i * L, *dtu_i = dtu + i * L, *gy_i = gy + i * L;
        float lam[MAX_STATE], a[MAX_STATE];
        for (int64_t n = 0; n < N; n++) {
            lam[n] = g_last[i * N + n];
            a[n] = A[d * N + n];
        }
        for (int64_t c = n_chunks - 1; c >= 0; c--) {
            const int64_t t0 = c * CHUNK, T = (L - t0 < CHUNK) ? L - t0 : CHUNK;
            /* Recompute: xs[k] is the state before position t0 + k (xs[0] the saved start). */
            memcpy(xs, starts + (i * n_chunks + c) * N, N * sizeof(float));
            for (int64_t k = 0; k < T; k++) {
                const float s = dt_i[t0 + k], v = dtu_i[t0 + k];
                const float *Bt = Bg + (t0 + k) * N;
                float *prev = xs + k * N, *next = xs + (k + 1) * N, *e = decay + k * N;
#pragma omp simd
                for (int64_t n = 0; n < N; n++) {
                    e[n] = expf(s * a[n]);
                    next[n] = e[n] * prev[n] + v * Bt[n];
                }
            }
            for (int64_t k = T - 1; k >= 0; k--) {
                const int64_t t = t0 + k;
                const float s = dt_i[t], v = dtu_i[t], gyt = gy_i[t];
                const float *Bt = Bg + t * N, *Ct = Cg + t * N, *e = decay + k * N;
                const float *prev = xs + k * N, *cur = xs + (k + 1) * N;
                float *dBt = dBg + t * N, *dCt = dCg + t * N;
                float g_dtu = 0.0f, g_dt = 0.0f;
#pragma omp simd reduction(+ : g_dtu, g_dt)
                for (int64_t n = 0; n < N; n++) {
                    const float l = lam[n] + gyt * Ct[n];
                    const float q = l * e[n] * prev[n];
                    g_dtu += l * Bt[n];
                    dBt[n] += l * v;
                    dCt[n] += gyt * cur[n];
                    g_dt += q * a[n];
                    dA_d[n] += q * s;
                    lam[n] = l * e[n];
                }
                d_dtu[i * L + t] = g_dtu;
                d_dt[i * L + t] = g_dt;
            }
        }
        memcpy(d_x0 + i * N, lam, N * sizeof(float));
    }
}

/* Python entry points: addresses of contiguous fp32 buffers (checked by the caller) and sizes. */
#define PTR(v) ((float *)(uintptr_t)(v))

static PyObject *py_forward(PyObject *self, PyObject *args) {
    unsigned long long p[9];
    long long row0, row1, dim, groups, L, N;
    if (!PyArg_ParseTuple(args, "KKKKKKKKKLLLLLL", &p[0], &p[1], &p[2], &p[3], &p[4], &p[5],
                          &p[6], &p[7], &p[8], &row0, &row1, &dim, &groups, &L, &N))
        return NULL;
    if (N > MAX_STATE || N < 1 || groups < 1 || dim % groups != 0) {
        PyErr_Format(PyExc_ValueError, "cpu scan: N must be 1..%d and dim divisible by groups",
                     MAX_STATE);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    scan_forward(PTR(p[0]), PTR(p[1]), PTR(p[2]), PTR(p[3]), PTR(p[4]), PTR(p[5]), PTR(p[6]),
                 PTR(p[7]), p[8] ? PTR(p[8]) : NULL, row0, row1, dim, groups, L, N);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_backward(PyObject *self, PyObject *args) {
    unsigned long long p[14];
    long long row0, row1, dim, groups, L, N;
    if (!PyArg_ParseTuple(args, "KKKKKKKKKKKKKKLLLLLL", &p[0], &p[1], &p[2], &p[3], &p[4],
                          &p[5], &p[6], &p[7], &p[8], &p[9], &p[10], &p[11], &p[12], &p[13],
                          &row0, &row1, &dim, &groups, &L, &N))
        return NULL;
    if (N > MAX_STATE || N < 1 || groups < 1 || dim % groups != 0) {
        PyErr_Format(PyExc_ValueError, "cpu scan: N must be 1..%d and dim divisible by groups",
                     MAX_STATE);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    scan_backward(PTR(p[0]), PTR(p[1]), PTR(p[2]), PTR(p[3]), PTR(p[4]), PTR(p[5]), PTR(p[6]),
                  PTR(p[7]), PTR(p[8]), PTR(p[9]), PTR(p[10]), PTR(p[11]), PTR(p[12]),
                  PTR(p[13]), row0, row1, dim, groups, L, N);
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
