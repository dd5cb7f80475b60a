/* The FASTQ block parser's compiled fast path: plain four-line records of a buffer, checked.
 *
 * parse(buffer, final) walks whole four-line records from the start of `buffer` and returns
 * (consumed, names, headers, sequences, qualities, plain_headers), or None as soon as a record
 * is not plain four-line FASTQ with nothing to report, exactly where fastq.py's
 * _four_line_batch would return None (the caller then reads from the buffer's first line on
 * with the line-by-line parser, which names the problem, record and line). A record is
 * accepted when its header starts with '@' and holds a name, its sequence is not empty and
 * does not start with '+', its '+' line is bare or repeats the header, and its quality is as
 * long as the sequence and Phred+33 ('!'..'~'). A carriage return anywhere gives None.
 *
 * consumed: the bytes of the records returned; a record cut by the end of the buffer is left
 * for the next call, unless `final` (the buffer ends the file: its last line needs no '\n').
 * plain_headers: every header is printable ASCII, space or tab, so its name is the first run
 * of characters other than space and tab after '@' and spaces/tabs (as fastq.py's _NAME);
 * when false, names is None and the caller splits the headers as the line-by-line parser does.
 *
 * Why C: in Python, splitting a block into lines alone costs about as much per read as
 * pysam's whole loop (BENCHMARKS.md, "Reading FASTQ"); here one pass over the bytes finds the
 * lines and checks them, and Python only receives the four objects per read it needs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    const char *start;
    Py_ssize_t len;
} Line;

/* The line at `pos`, without its '\n'; returns the position after it, or -1 if the buffer
 * ends first (and the buffer is not final). */
static Py_ssize_t next_line(const char *buf, Py_ssize_t size, Py_ssize_t pos, int final,
                            Line *line) {
    if (pos >= size)
        return -1;
    const char *nl = memchr(buf + pos, '\n', (size_t)(size - pos));
    if (nl == NULL) {
        if (!final)
            return -1;
        line->start = buf + pos;
        line->len = size - pos;
        return size;
    }
    line->start = buf + pos;
    line->len = nl - (buf + pos);
    return nl - buf + 1;
}

static int phred33(const Line *q) {
    const unsigned char *c = (const unsigned char *)q->start;
    for (Py_ssize_t i = 0; i < q->len; i++)
        if ((unsigned char)(c[i] - 33) > 93)
            return 0;
    return 1;
}

/* 1: printable ASCII, space or tab only. */
static int plain(const Line *h) {
    const unsigned char *c = (const unsigned char *)h->start;
    for (Py_ssize_t i = 0; i < h->len; i++)
        if (!((c[i] >= 32 && c[i] <= 126) || c[i] == '\t'))
            return 0;
    return 1;
}

/* The name of a plain header: after '@' and spaces/tabs, up to the next space or tab. */
static Py_ssize_t name_of(const Line *h, Py_ssize_t *from) {
    Py_ssize_t i = 1;
    while (i < h->len && (h->start[i] == ' ' || h->start[i] == '\t'))
        i++;
    Py_ssize_t j = i;
    while (j < h->len && h->start[j] != ' ' && h->start[j] != '\t')
        j++;
    *from = i;
    return j - i;
}

static PyObject *append_steal(PyObject *list, PyObject *item) {
    if (item == NULL || PyList_Append(list, item) < 0) {
        Py_XDECREF(item);
        return NULL;
    }
    Py_DECREF(item);
    return list;
}

static PyObject *parse(PyObject *self, PyObject *args) {
    Py_buffer view;
    int final;
    if (!PyArg_ParseTuple(args, "y*p", &view, &final))
        return NULL;
    const char *buf = view.buf;
    const Py_ssize_t size = view.len;
    PyObject *result = NULL, *names = NULL, *headers = NULL, *seqs = NULL, *quals = NULL;
    if (memchr(buf, '\r', (size_t)size) != NULL) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    names = PyList_New(0);
    headers = PyList_New(0);
    seqs = PyList_New(0);
    quals = PyList_New(0);
    if (!names || !headers || !seqs || !quals)
        goto done;
    int all_plain = 1, bad = 0;
    Py_ssize_t pos = 0;
    for (;;) {
        Line h, s, p, q;
        Py_ssize_t p1 = next_line(buf, size, pos, final, &h);
        Py_ssize_t p2 = p1 < 0 ? -1 : next_line(buf, size, p1, final, &s);
        Py_ssize_t p3 = p2 < 0 ? -1 : next_line(buf, size, p2, final, &p);
        Py_ssize_t p4 = p3 < 0 ? -1 : next_line(buf, size, p3, final, &q);
        if (p4 < 0) {
            /* An incomplete record: left for the next call, or broken if the file ends. */
            if (final && pos < size)
                bad = 1;
            break;
        }
        if (h.len < 1 || h.start[0] != '@' || p.len < 1 || p.start[0] != '+' ||
            s.len == 0 || s.start[0] == '+' || s.len != q.len || !phred33(&q) ||
            !(p.len == 1 || (p.len == h.len && memcmp(p.start + 1, h.start + 1,
                                                      (size_t)(h.len - 1)) == 0))) {
            bad = 1;
            break;
        }
        if (all_plain && !plain(&h))
            all_plain = 0;
        if (all_plain) {
            Py_ssize_t from, n = name_of(&h, &from);
            if (n == 0) {
                bad = 1;  /* a header without a name: reported line by line */
                break;
            }
            if (!append_steal(names, PyUnicode_DecodeASCII(h.start + from, n, NULL)))
                goto done;
        }
        if (!append_steal(headers, PyBytes_FromStringAndSize(h.start, h.len)) ||
            !append_steal(seqs, PyBytes_FromStringAndSize(s.start, s.len)) ||
            !append_steal(quals, PyBytes_FromStringAndSize(q.start, q.len)))
            goto done;
        pos = p4;
    }
    if (bad) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    result = Py_BuildValue("(nOOOOO)", pos, all_plain ? names : Py_None, headers, seqs, quals,
                           all_plain ? Py_True : Py_False);
done:
    Py_XDECREF(names);
    Py_XDECREF(headers);
    Py_XDECREF(seqs);
    Py_XDECREF(quals);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_VARARGS, "Plain four-line FASTQ records of a buffer (see the file)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastq",
                                    "Compiled FASTQ block parser (see mambadna/io/fastq.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__fastq(void) { return PyModule_Create(&module); }
