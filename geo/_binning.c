/* Fused square-cell binning for geo.units.Lattice (optional compiled kernel).
 *
 * A point's cell is floor(x / cell), floor(y / cell) -- the same IEEE division and floor
 * as the numpy path in geo/units.py, so both give identical codes. Points are handled in
 * blocks: a branch-free loop the compiler vectorises turns a block into flat codes (-1 off
 * the lattice, NaN and inf included), then a scalar loop counts, sums weights or looks the
 * codes up. The GIL is released; geo.units splits large inputs over threads.
 *
 * No numpy headers: arrays come in through the buffer protocol (C-contiguous float64 /
 * int64, checked by the caller and again here by length).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define BLK 1024

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define HS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HS_CLONES
#endif

typedef struct {
    double cell, lox, hix, loy, hiy, nx;
} lattice_t;

/* Flat codes of m points (nx * ny must be below 2**31: checked by the caller). */
HS_CLONES
static void codes_block(const double *restrict X, const double *restrict Y, Py_ssize_t m,
                        const lattice_t *L, int32_t *restrict c)
{
    const double cell = L->cell, lox = L->lox, hix = L->hix, loy = L->loy, hiy = L->hiy, nx = L->nx;
    for (Py_ssize_t j = 0; j < m; j++) {
        double fx = floor(X[j] / cell);
        double fy = floor(Y[j] / cell);
        int ok = (fx >= lox) & (fx < hix) & (fy >= loy) & (fy < hiy);
        double code = ok ? (fy - loy) * nx + (fx - lox) : -1.0;
        c[j] = (int32_t)code;
    }
}

static int parse_lattice(PyObject *args, Py_buffer *x, Py_buffer *y, lattice_t *L, Py_buffer *w,
                         Py_buffer *out, PyObject **wobj, Py_ssize_t *n, long long *size)
{
    long long ix0, iy0, nx, ny;
    *wobj = NULL;
    if (!PyArg_ParseTuple(args, "y*y*dLLLLOw*", x, y, &L->cell, &ix0, &iy0, &nx, &ny, wobj, out))
        return -1;
    w->buf = NULL;
    *n = x->len / (Py_ssize_t)sizeof(double);
    *size = nx * ny;
    if (x->len != y->len || x->len % (Py_ssize_t)sizeof(double) != 0 || nx <= 0 || ny <= 0 ||
        *size >= 2147483647LL || !(L->cell > 0)) {
        PyErr_SetString(PyExc_ValueError, "harmspot binning kernel: bad lattice or x/y buffers");
        return -1;
    }
    if (*wobj != Py_None) {
        if (PyObject_GetBuffer(*wobj, w, PyBUF_C_CONTIGUOUS) < 0)
            return -1;
    }
    L->lox = (double)ix0;
    L->hix = (double)(ix0 + nx);
    L->loy = (double)iy0;
    L->hiy = (double)(iy0 + ny);
    L->nx = (double)nx;
    return 0;
}

static void release(Py_buffer *x, Py_buffer *y, Py_buffer *w, Py_buffer *out)
{
    if (x->obj) PyBuffer_Release(x);
    if (y->obj) PyBuffer_Release(y);
    if (w->buf && w->obj) PyBuffer_Release(w);
    if (out->obj) PyBuffer_Release(out);
}

/* accumulate(x, y, cell, ix0, iy0, nx, ny, weights_or_None, out): adds each point's count
 * (int64 out) or weight (float64 out) to out[code]; points off the lattice are skipped. */
static PyObject *accumulate(PyObject *self, PyObject *args)
{
    Py_buffer x = {0}, y = {0}, w = {0}, out = {0};
    PyObject *wobj;
    lattice_t L;
    Py_ssize_t n;
    long long size;
    if (parse_lattice(args, &x, &y, &L, &w, &out, &wobj, &n, &size) < 0) {
        release(&x, &y, &w, &out);
        return NULL;
    }
    if (out.len != size * 8 || (w.buf && w.len != x.len)) {
        release(&x, &y, &w, &out);
        PyErr_SetString(PyExc_ValueError, "harmspot binning kernel: out must hold nx * ny 8-byte values, "
                                          "weights one float64 per point");
        return NULL;
    }
    const double *X = x.buf, *Y = y.buf, *W = w.buf;
    Py_BEGIN_ALLOW_THREADS
    int32_t c[BLK];
    for (Py_ssize_t s = 0; s < n; s += BLK) {
        Py_ssize_t m = n - s < BLK ? n - s : BLK;
        codes_block(X + s, Y + s, m, &L, c);
        if (W) {
            double *o = out.buf;
            const double *ws = W + s;
            for (Py_ssize_t j = 0; j < m; j++)
                if (c[j] >= 0) o[c[j]] += ws[j];
        } else {
            int64_t *o = out.buf;
            for (Py_ssize_t j = 0; j < m; j++)
                if (c[j] >= 0) o[c[j]] += 1;
        }
    }
    Py_END_ALLOW_THREADS
    release(&x, &y, &w, &out);
    Py_RETURN_NONE;
}

/* lookup(x, y, cell, ix0, iy0, nx, ny, table, out): out[i] = table[code of point i], -1 off
 * the lattice (table: nx * ny int64; out: n int64). */
static PyObject *lookup(PyObject *self, PyObject *args)
{
    Py_buffer x = {0}, y = {0}, t = {0}, out = {0};
    PyObject *tobj;
    lattice_t L;
    Py_ssize_t n;
    long long size;
    if (parse_lattice(args, &x, &y, &L, &t, &out, &tobj, &n, &size) < 0) {
        release(&x, &y, &t, &out);
        return NULL;
    }
    if (tobj == Py_None || t.len != size * 8 || out.len != x.len) {
        release(&x, &y, &t, &out);
        PyErr_SetString(PyExc_ValueError, "harmspot binning kernel: table must hold nx * ny int64, out n int64");
        return NULL;
    }
    const double *X = x.buf, *Y = y.buf;
    const int64_t *T = t.buf;
    int64_t *O = out.buf;
    Py_BEGIN_ALLOW_THREADS
    int32_t c[BLK];
    for (Py_ssize_t s = 0; s < n; s += BLK) {
        Py_ssize_t m = n - s < BLK ? n - s : BLK;
        codes_block(X + s, Y + s, m, &L, c);
        for (Py_ssize_t j = 0; j < m; j++)
            O[s + j] = c[j] >= 0 ? T[c[j]] : -1;
    }
    Py_END_ALLOW_THREADS
    release(&x, &y, &t, &out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"accumulate", accumulate, METH_VARARGS, "Add counts or weights per lattice cell (see geo.units)."},
    {"lookup", lookup, METH_VARARGS, "table[cell code] per point, -1 off the lattice (see geo.units)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "geo._binning", NULL, -1, methods};

PyMODINIT_FUNC PyInit__binning(void) { return PyModule_Create(&module); }
