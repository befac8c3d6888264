/* Records (_state.py) and the fold's loops over them (_table.py, _stats.py). */

#include "_speedups.h"
#include <math.h>

static PyObject *
record_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n:Record", &n))
        return NULL;
    if (n < 1 || n > RECORD_MAX) {
        PyErr_Format(PyExc_ValueError, "Record: 1 to %d slots", RECORD_MAX);
        return NULL;
    }
    Record *r = (Record *)type->tp_alloc(type, 0);
    if (r != NULL)
        r->n = n;  /* tp_alloc zeroed the slots */
    return (PyObject *)r;
}

static Py_ssize_t
record_len(Record *r)
{
    return r->n;
}

static PyObject *
record_item(Record *r, Py_ssize_t i)
{
    if (i < 0 || i >= r->n) {
        PyErr_SetString(PyExc_IndexError, "record index out of range");
        return NULL;
    }
    return PyLong_FromLongLong(r->v[i]);
}

static int
record_ass_item(Record *r, Py_ssize_t i, PyObject *value)
{
    if (i < 0 || i >= r->n) {
        PyErr_SetString(PyExc_IndexError, "record index out of range");
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "record slots cannot be deleted");
        return -1;
    }
    long long x = PyLong_AsLongLong(value);
    if (x == -1 && PyErr_Occurred())
        return -1;
    r->v[i] = x;
    return 0;
}

static PyObject *
record_copy(Record *r, PyObject *unused)
{
    Record *c = (Record *)cw_RecordType.tp_alloc(&cw_RecordType, 0);
    if (c == NULL)
        return NULL;
    c->n = r->n;
    memcpy(c->v, r->v, sizeof(c->v));
    return (PyObject *)c;
}

static PyObject *
record_repr(Record *r)
{
    PyObject *list = PySequence_List((PyObject *)r);
    if (list == NULL)
        return NULL;
    PyObject *out = PyUnicode_FromFormat("Record(%R)", list);
    Py_DECREF(list);
    return out;
}

/* Equal to a list or a tuple of the same ints, and to an equal record: tests and
 * callers compare records with literals. */
static PyObject *
record_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !PySequence_Check(b))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *la = PySequence_List(a), *lb = PySequence_List(b);
    PyObject *out = NULL;
    if (la != NULL && lb != NULL)
        out = PyObject_RichCompare(la, lb, op);
    Py_XDECREF(la);
    Py_XDECREF(lb);
    return out;
}

static PySequenceMethods record_as_sequence = {
    .sq_length = (lenfunc)record_len,
    .sq_item = (ssizeargfunc)record_item,
    .sq_ass_item = (ssizeobjargproc)record_ass_item,
};

static PyMethodDef record_methods[] = {
    {"__copy__", (PyCFunction)record_copy, METH_NOARGS, "a record with the same slots"},
    {NULL},
};

PyTypeObject cw_RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callwatch._speedups.Record",
    .tp_doc = "Record(n): n int64 slots, all 0 (a request's record of one entry).",
    .tp_basicsize = sizeof(Record),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = record_new,
    .tp_as_sequence = &record_as_sequence,
    .tp_methods = record_methods,
    .tp_repr = (reprfunc)record_repr,
    .tp_richcompare = record_richcompare,
    .tp_hash = PyObject_HashNotImplemented,
};

/* columns(states, calls, ns) -> {entry: Record [calls, max calls, ns, max ns]}: what the
 * fold adds per entry for a batch of requests' states (_table._add_columns), in one pass.
 * Header keys (<= 0) are skipped; a negative time (an async call still running) counts 0.
 * A state that is not a dict of records (lists: the pure-Python records) raises, and the
 * fold does it in Python.  No Python code runs in the loop, so no state can change under it. */
PyObject *
cw_columns(PyObject *module, PyObject *args)
{
    PyObject *states;
    Py_ssize_t co, no;
    if (!PyArg_ParseTuple(args, "O!nn:columns", &PyList_Type, &states, &co, &no))
        return NULL;
    if (co < 0 || no < 0 || co >= RECORD_MAX || no >= RECORD_MAX) {
        PyErr_SetString(PyExc_ValueError, "columns: bad offsets");
        return NULL;
    }
    Py_ssize_t need = (co > no ? co : no) + 1;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(states); i++) {
        PyObject *st = PyList_GET_ITEM(states, i);
        if (!PyDict_CheckExact(st)) {
            PyErr_SetString(PyExc_TypeError, "columns: not a state");
            goto fail;
        }
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(st, &pos, &k, &v)) {
            if (!PyLong_CheckExact(k)) {
                PyErr_SetString(PyExc_TypeError, "columns: not an entry");
                goto fail;
            }
            int overflow;
            long key = PyLong_AsLongAndOverflow(k, &overflow);
            if (!overflow && key <= 0)
                continue;  /* a header key */
            long long c, n;
            if (Py_IS_TYPE(v, &cw_RecordType) && ((Record *)v)->n >= need) {
                c = ((Record *)v)->v[co];
                n = ((Record *)v)->v[no];
            }
            else {
                PyErr_SetString(PyExc_TypeError, "columns: not a record");
                goto fail;
            }
            if (n < 0)
                n = 0;
            PyObject *acc = PyDict_GetItemWithError(out, k);
            if (acc == NULL) {
                if (PyErr_Occurred())
                    goto fail;
                acc = cw_RecordType.tp_alloc(&cw_RecordType, 0);
                if (acc == NULL)
                    goto fail;
                ((Record *)acc)->n = 4;
                int rc = PyDict_SetItem(out, k, acc);
                Py_DECREF(acc);  /* out holds it */
                if (rc < 0)
                    goto fail;
            }
            long long *a = ((Record *)acc)->v;
            a[0] += c;
            if (c > a[1])
                a[1] = c;
            a[2] += n;
            if (n > a[3])
                a[3] = n;
        }
    }
    return out;

fail:
    Py_DECREF(out);
    return NULL;
}

/* sketch_keys(values, multiplier, offset) -> ({key: count}, zeros): the DDSketch bins of
 * values (ints >= 0; zeros only counted), with the very operations ddsketch's
 * LogarithmicMapping.key does in Python (math.log(v, 2) is log(v) / log(2.0) on the same
 * libm; then * multiplier, ceil, and + offset truncated by int()), so the keys are the
 * same; _stats.sketch_add_many. */
PyObject *
cw_sketch_keys(PyObject *module, PyObject *args)
{
    PyObject *values;
    double multiplier, offset;
    if (!PyArg_ParseTuple(args, "O!dd:sketch_keys", &PyList_Type, &values, &multiplier, &offset))
        return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    double log2 = log(2.0);
    Py_ssize_t zeros = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *item = PyList_GET_ITEM(values, i);
        if (!PyLong_CheckExact(item)) {
            PyErr_SetString(PyExc_TypeError, "sketch_keys: not an int");
            goto fail;
        }
        double x = PyLong_AsDouble(item);
        if (x == -1.0 && PyErr_Occurred())
            goto fail;
        if (x == 0.0) {
            zeros++;
            continue;
        }
        if (!(x > 0.0) || !isfinite(x)) {
            PyErr_SetString(PyExc_ValueError, "sketch_keys: a negative or huge int");
            goto fail;
        }
        double k = ceil(log(x) / log2 * multiplier);
        if (offset != 0.0)
            k = trunc(k + offset);
        PyObject *key = PyLong_FromDouble(k);
        if (key == NULL)
            goto fail;
        PyObject *n = PyDict_GetItemWithError(out, key);
        if (n == NULL && PyErr_Occurred()) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *n1 = PyLong_FromLongLong(n == NULL ? 1 : PyLong_AsLongLong(n) + 1);
        int rc = n1 == NULL ? -1 : PyDict_SetItem(out, key, n1);
        Py_XDECREF(n1);
        Py_DECREF(key);
        if (rc < 0)
            goto fail;
    }
    return Py_BuildValue("Nn", out, zeros);

fail:
    Py_DECREF(out);
    return NULL;
}

