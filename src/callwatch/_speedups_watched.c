/* The watched-call wrapper of callwatch._core, in C (the module: _speedups.c).
 *
 * Same contract as the Python wrapper that _core generates per signature (and which stays
 * as the fallback, and as this wrapper's slow path): per call, look up the request's state
 * (a dict: entry index -> record, see _state.py) in the ContextVar, count the call in the
 * entry's record, and add the time of outermost calls (and of the outermost call of its
 * group).  The record offsets (_state.CALLS, NS, ACTIVE) are given when a function is
 * wrapped.  A call outside any request (no state), or a state that is not a dict of
 * records (_speedups_record.c), goes to the Python wrapper unchanged.
 *
 * Why C: around real I/O the interpreter's code and data are cold again after each
 * syscall, and this path runs far fewer instructions than the generated Python wrapper
 * (benchmarks/in_situ.py and benchmarks/macro.py measure both).
 *
 * Nothing here may break the user's call: an error while counting is cleared and the
 * call's own result (or exception) is returned as it was.
 */

#include "_speedups.h"



/* The entry's record in the state (a new reference), made on first touch; NULL with an
 * error set when it cannot be, and *odd set when the state holds something else there (a
 * list: a record made while the C wrapper was off; the Python wrapper counts that state). */
static Record *
get_record(Watched *w, PyObject *st, PyObject *key, int *odd)
{
    PyObject *rec = PyDict_GetItemWithError(st, key);
    if (rec == NULL) {
        if (PyErr_Occurred())
            return NULL;
        rec = cw_RecordType.tp_alloc(&cw_RecordType, 0);
        if (rec == NULL)
            return NULL;
        ((Record *)rec)->n = w->need;
        /* setdefault: the allocation may have run a finalizer that made the record
         * already (a watched call in the same request); keep that one. */
        PyObject *kept = PyDict_SetDefault(st, key, rec);
        Py_DECREF(rec);
        rec = kept;
        if (rec == NULL)
            return NULL;
    }
    if (!Py_IS_TYPE(rec, &cw_RecordType) || ((Record *)rec)->n < w->need) {
        *odd = 1;
        PyErr_SetString(PyExc_TypeError, "callwatch: not a state record");
        return NULL;
    }
    return (Record *)Py_NewRef(rec);
}

/* The function's record and its group's (NULL without a group) in state `st`, as new
 * references, through the cache of the last state; -1 with an error set (and *odd set
 * when the state holds something else than records). */
static int
records_of(Watched *w, PyObject *st, Record **rec, Record **grec, int *odd)
{
    *rec = *grec = NULL;
    if (st == w->cst) {
        *rec = (Record *)Py_NewRef(w->crec);
        *grec = (Record *)Py_XNewRef(w->cgrec);
    }
    else {
        *rec = get_record(w, st, w->key, odd);
        if (*rec == NULL)
            return -1;
        Py_XSETREF(w->cst, Py_NewRef(st));
        Py_XSETREF(w->crec, (Record *)Py_NewRef(*rec));
        Py_CLEAR(w->cgrec);
    }
    if (w->gkey != NULL && *grec == NULL) {  /* st is the cached state by now */
        *grec = get_record(w, st, w->gkey, odd);
        if (*grec == NULL)
            return -1;
        Py_XSETREF(w->cgrec, (Record *)Py_NewRef(*grec));
    }
    return 0;
}

static PyObject *
watched_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Watched *w = (Watched *)op;
    PyObject *st = NULL;
    Record *rec = NULL, *grec = NULL;
    int odd = 0;
    if (PyContextVar_Get(w->var, NULL, &st) < 0)
        return NULL;
    if (st == NULL || !PyDict_Check(st)) {
        Py_XDECREF(st);
        return PyObject_Vectorcall(w->slow, args, nargsf, kwnames);
    }
    /* st, rec, grec: strong references held until the end (the ContextVar may be reset
     * meanwhile, and the call may count in another state and replace the cache). */
    if (records_of(w, st, &rec, &grec, &odd) < 0)
        goto slow;
    long long *r = rec->v, *gr = grec != NULL ? grec->v : NULL;
    long long g = 0, t0 = 0, t1;
    int timed = 0;
    r[w->calls] += 1;
    /* A group's calls are its members' calls, every one of them. */
    if (gr != NULL)
        gr[w->calls] += 1;
    if (!r[w->active]) {
        if (cw_now_ns(&t0) == 0) {
            if (gr != NULL) {
                g = gr[w->active];
                gr[w->active] = g + 1;
            }
            r[w->active] = 1;
            timed = 1;
        }
        else
            PyErr_Clear();  /* a broken clock override: the call is counted, not timed */
    }
    PyObject *result = PyObject_Vectorcall(w->fn, args, nargsf, kwnames);
    if (timed) {
        /* The clock override (tests) is Python code: keep the call's own exception.  The
         * C clock cannot fail or touch it: no fetch and restore on every call then. */
        PyObject *et = NULL, *ev = NULL, *tb = NULL;
        int python_clock = cw_clock_runs_python();
        if (python_clock)
            PyErr_Fetch(&et, &ev, &tb);
        if (cw_now_ns(&t1) == 0) {
            long long t = t1 - t0;
            r[w->ns] += t;
            if (gr != NULL && !g)
                gr[w->ns] += t;
        }
        else
            PyErr_Clear();
        if (gr != NULL)
            gr[w->active] = g;
        r[w->active] = 0;
        if (python_clock)
            PyErr_Restore(et, ev, tb);
    }
    Py_XDECREF(grec);
    Py_DECREF(rec);
    Py_DECREF(st);
    return result;

slow:
    /* Not a state of records (made while the C wrapper was off, or broken): the Python
     * wrapper counts it as it can, and never breaks the call.  Out of memory for a record:
     * the call runs uncounted (the Python wrapper would need memory too, outside its try). */
    PyErr_Clear();
    Py_XDECREF(grec);
    Py_XDECREF(rec);
    Py_DECREF(st);
    return PyObject_Vectorcall(odd ? w->slow : w->fn, args, nargsf, kwnames);
}

/* The async wrapper's two steps (_core._async_watched), where concurrent awaits of one
 * function in one request overlap: ACTIVE is a depth, and the time added is the union of
 * the intervals (NS goes down by t0 when the first call starts, up by t1 when the last
 * ends).  enter(state) -> False when the state is not one of records (the Python wrapper
 * takes the call); leave(state) never fails. */
static int
async_step(Watched *w, PyObject *st, int entering)
{
    Record *rec = NULL, *grec = NULL;
    int odd = 0;
    long long t;
    if (!PyDict_Check(st) || records_of(w, st, &rec, &grec, &odd) < 0 || cw_now_ns(&t) < 0) {
        PyErr_Clear();
        Py_XDECREF(rec);
        Py_XDECREF(grec);
        return -1;
    }
    /* The function's record, then its group's: counted on entering; the outermost call
     * (depth 0 -> 1) starts the time, the last to leave (1 -> 0) ends it. */
    Record *recs[2] = {rec, grec};
    for (int i = 0; i < 2 && recs[i] != NULL; i++) {
        long long *r = recs[i]->v;
        if (entering) {
            r[w->calls] += 1;
            if (r[w->active]++ == 0)
                r[w->ns] -= t;
        }
        else if (--r[w->active] == 0)
            r[w->ns] += t;
    }
    Py_DECREF(rec);
    Py_XDECREF(grec);
    return 0;
}

static PyObject *
watched_enter(Watched *w, PyObject *st)
{
    return PyBool_FromLong(async_step(w, st, 1) == 0);
}

static PyObject *
watched_leave(Watched *w, PyObject *st)
{
    (void)async_step(w, st, 0);
    Py_RETURN_NONE;
}

static PyObject *
watched_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *fn, *var, *slow;
    Py_ssize_t k, gk, calls, ns, active;
    static char *kwlist[] = {"fn", "var", "slow", "k", "gk", "calls", "ns", "active", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOnnnnn:Watched", kwlist, &fn, &var, &slow,
                                     &k, &gk, &calls, &ns, &active))
        return NULL;
    if (!PyCallable_Check(fn) || !PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "Watched: fn and slow must be callable");
        return NULL;
    }
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "Watched: var must be a ContextVar");
        return NULL;
    }
    if (k <= 0 || calls < 0 || ns < 0 || active < 0) {
        PyErr_SetString(PyExc_ValueError, "Watched: bad entry or offsets");
        return NULL;
    }
    Py_ssize_t need = calls;
    if (ns > need) need = ns;
    if (active > need) need = active;
    if (need >= RECORD_MAX) {
        PyErr_SetString(PyExc_ValueError, "Watched: offsets beyond a record");
        return NULL;
    }
    Watched *w = (Watched *)type->tp_alloc(type, 0);
    if (w == NULL)
        return NULL;
    w->key = PyLong_FromSsize_t(k);
    w->gkey = gk > 0 ? PyLong_FromSsize_t(gk) : NULL;
    if (w->key == NULL || (gk > 0 && w->gkey == NULL)) {
        Py_DECREF(w);
        return NULL;
    }
    w->fn = Py_NewRef(fn);
    w->var = Py_NewRef(var);
    w->slow = Py_NewRef(slow);
    w->calls = calls;
    w->ns = ns;
    w->active = active;
    w->need = need + 1;
    w->vectorcall = watched_vectorcall;
    return (PyObject *)w;
}

static int
watched_traverse(Watched *w, visitproc visit, void *arg)
{
    Py_VISIT(w->fn);
    Py_VISIT(w->var);
    Py_VISIT(w->slow);
    Py_VISIT(w->dict);
    Py_VISIT(w->cst);
    Py_VISIT(w->crec);
    Py_VISIT(w->cgrec);
    return 0;
}

static int
watched_clear(Watched *w)
{
    Py_CLEAR(w->fn);
    Py_CLEAR(w->var);
    Py_CLEAR(w->slow);
    Py_CLEAR(w->dict);
    Py_CLEAR(w->key);
    Py_CLEAR(w->gkey);
    Py_CLEAR(w->cst);
    Py_CLEAR(w->crec);
    Py_CLEAR(w->cgrec);
    return 0;
}

/* Both wrapper types' dealloc: their own tp_clear drops what they hold. */
void
cw_wrapper_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    PyObject_ClearWeakRefs(self);  /* a no-op without weak references */
    Py_TYPE(self)->tp_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* Like a Python function: bound to an instance when looked up on one. */
PyObject *
cw_wrapper_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *
watched_repr(Watched *w)
{
    return PyUnicode_FromFormat("<callwatch watched %R>", w->fn);
}

static PyObject *
watched_get_fn(Watched *w, void *closure)
{
    return Py_NewRef(w->fn);
}

static PyObject *
watched_get_slow(Watched *w, void *closure)
{
    return Py_NewRef(w->slow);
}

/* Attributes it does not have itself (__code__, __defaults__, __globals__, ...) are the
 * wrapped function's: code that inspects "a function" sees the one it replaced.  (Also
 * Handler's: both structs have `fn` right after the object header.) */
PyObject *
cw_wrapper_getattro(PyObject *self, PyObject *name)
{
    PyObject *r = PyObject_GenericGetAttr(self, name);
    if (r != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return r;
    PyErr_Clear();
    return PyObject_GetAttr(((Watched *)self)->fn, name);  /* Handler: the same offset */
}

/* Pickled by reference, like the function it replaces (pickle looks the qualified name up
 * in __module__, where the patched module holds this object); copy.copy returns it. */
static PyObject *
watched_reduce(PyObject *self, PyObject *unused)
{
    return PyObject_GetAttrString(self, "__qualname__");
}

PyMethodDef cw_wrapper_methods[] = {
    {"__reduce__", watched_reduce, METH_NOARGS, NULL},
    {NULL},
};

static PyMethodDef watched_methods[] = {
    {"__reduce__", watched_reduce, METH_NOARGS, NULL},
    {"_cw_enter", (PyCFunction)watched_enter, METH_O, "an async call starts in the state (False: not counted)"},
    {"_cw_leave", (PyCFunction)watched_leave, METH_O, "an async call that entered ends"},
    {NULL},
};

static PyGetSetDef watched_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"_cw_fn", (getter)watched_get_fn, NULL, "the watched function", NULL},
    {"_cw_slow", (getter)watched_get_slow, NULL, "the Python wrapper (slow path)", NULL},
    {NULL},
};

PyTypeObject cw_WatchedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callwatch._speedups.Watched",
    .tp_doc = "A watched function (callwatch's C wrapper).",
    .tp_basicsize = sizeof(Watched),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = watched_new,
    .tp_dealloc = cw_wrapper_dealloc,
    .tp_traverse = (traverseproc)watched_traverse,
    .tp_clear = (inquiry)watched_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Watched, vectorcall),
    .tp_descr_get = cw_wrapper_descr_get,
    .tp_repr = (reprfunc)watched_repr,
    .tp_getset = watched_getset,
    .tp_methods = watched_methods,
    .tp_getattro = cw_wrapper_getattro,
    .tp_dictoffset = offsetof(Watched, dict),
    .tp_weaklistoffset = offsetof(Watched, weakreflist),
};

