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
#include <string.h>

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

/* One call's arguments: (x, y, cell, ix0, iy0, nx, ny, extra, out). ``extra`` is the weights
 * (accumulate: None or one float64 per point) or the table (lookup: nx * ny int64). */
typedef struct {
    Py_buffer x, y, extra, out;
    int has_extra;
    Py_ssize_t n;
    long long size;
    lattice_t L;
} call_t;

static void release(call_t *c)
{
    if (c->x.obj) PyBuffer_Release(&c->x);
    if (c->y.obj) PyBuffer_Release(&c->y);
    if (c->has_extra) PyBuffer_Release(&c->extra);
    if (c->out.obj) PyBuffer_Release(&c->out);
}

/* Parse and check a call; on failure set a ValueError naming what is wrong, release, return -1.
 * is_lookup: the table is required and holds one value per cell, out one per point; otherwise
 * the weights are optional and hold one per point, out one per cell. */
static int parse_call(PyObject *args, call_t *c, int is_lookup)
{
    long long ix0, iy0, nx, ny;
    PyObject *extra = NULL;
    memset(c, 0, sizeof(*c));
    if (!PyArg_ParseTuple(args, "y*y*dLLLLOw*", &c->x, &c->y, &c->L.cell, &ix0, &iy0, &nx, &ny, &extra, &c->out))
        goto fail;
    const char *bad = NULL;
    c->n = c->x.len / (Py_ssize_t)sizeof(double);
    c->size = nx * ny;
    if (c->x.len != c->y.len || c->x.len % (Py_ssize_t)sizeof(double) != 0 || nx <= 0 || ny <= 0 ||
        c->size >= 2147483647LL || !(c->L.cell > 0))
        bad = "bad lattice or x/y buffers";
    else if (extra != Py_None) {
        if (PyObject_GetBuffer(extra, &c->extra, PyBUF_C_CONTIGUOUS) < 0)
            goto fail;
        c->has_extra = 1;
    }
    if (!bad && is_lookup && (!c->has_extra || c->extra.len != c->size * 8 || c->out.len != c->x.len))
        bad = "table must hold nx * ny int64, out n int64";
    if (!bad && !is_lookup && (c->out.len != c->size * 8 || (c->has_extra && c->extra.len != c->x.len)))
        bad = "out must hold nx * ny 8-byte values, weights one float64 per point";
    if (bad) {
        PyErr_Format(PyExc_ValueError, "harmspot binning kernel: %s", bad);
        goto fail;
    }
    c->L.lox = (double)ix0;
    c->L.hix = (double)(ix0 + nx);
    c->L.loy = (double)iy0;
    c->L.hiy = (double)(iy0 + ny);
    c->L.nx = (double)nx;
    return 0;
fail:
    release(c);
    return -1;
}

/* accumulate(x, y, cell, ix0, iy0, nx, ny, weights_or_None, out): adds each point's count
 * (int64 out) or weight (float64 out) to out[code]; points off the lattice are skipped. */
static PyObject *accumulate(PyObject *self, PyObject *args)
{
    call_t a;
    if (parse_call(args, &a, 0) < 0)
        return NULL;
    const double *X = a.x.buf, *Y = a.y.buf, *W = a.has_extra ? a.extra.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    int32_t c[BLK];
    for (Py_ssize_t s = 0; s < a.n; s += BLK) {
        Py_ssize_t m = a.n - s < BLK ? a.n - s : BLK;
        codes_block(X + s, Y + s, m, &a.L, c);
        if (W) {
            double *o = a.out.buf;
            const double *ws = W + s;
            for (Py_ssize_t j = 0; j < m; j++)
                if (c[j] >= 0) o[c[j]] += ws[j];
        } else {
            int64_t *o = a.out.buf;
            for (Py_ssize_t j = 0; j < m; j++)
                if (c[j] >= 0) o[c[j]] += 1;
        }
    }
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

/* lookup(x, y, cell, ix0, iy0, nx, ny, table, out): out[i] = table[code of point i], -1 off
 * the lattice (table: nx * ny int64; out: n int64). */
static PyObject *lookup(PyObject *self, PyObject *args)
{
    call_t a;
    if (parse_call(args, &a, 1) < 0)
        return NULL;
    const double *X = a.x.buf, *Y = a.y.buf;
    const int64_t *T = a.extra.buf;
    int64_t *O = a.out.buf;
    Py_BEGIN_ALLOW_THREADS
    int32_t c[BLK];
    for (Py_ssize_t s = 0; s < a.n; s += BLK) {
        Py_ssize_t m = a.n - s < BLK ? a.n - s : BLK;
        codes_block(X + s, Y + s, m, &a.L, c);
        for (Py_ssize_t j = 0; j < m; j++)
            O[s + j] = c[j] >= 0 ? T[c[j]] : -1;
    }
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"accumulate", accumulate, METH_VARARGS, "Add counts or weights per lattice cell (see geo.units)."},
    {"lookup", lookup, METH_VARARGS, "table[cell code] per point, -1 off the lattice (see geo.units)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "geo._binning", NULL, -1, methods};

PyMODINIT_FUNC PyInit__binning(void) { return PyModule_Create(&module); }
