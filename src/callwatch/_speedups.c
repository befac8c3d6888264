/* The watched-call wrapper of callwatch._core, in C.
 *
 * Same contract as the Python wrapper that _core generates per signature (and which stays
 * as the fallback, and as this wrapper's slow path): per call, look up the request's state
 * (a dict: entry index -> record, see _state.py) in the ContextVar, count the call in the
 * entry's record, and add the time of outermost calls (and of the outermost call of its
 * group).  The record offsets (_state.CALLS, NS, ACTIVE) are given when a function is
 * wrapped.  A call outside any request (no state), or anything that is not the dict of
 * lists of ints this code expects, goes to the Python wrapper unchanged.
 *
 * Why C: around real I/O the interpreter's code and data are cold again after each
 * syscall, and this path runs far fewer instructions than the generated Python wrapper
 * (benchmarks/in_situ.py and benchmarks/macro.py measure both).
 *
 * Nothing here may break the user's call: an error while counting is cleared and the
 * call's own result (or exception) is returned as it was.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <math.h>
#include <time.h>

/* None: CLOCK_MONOTONIC (what time.perf_counter_ns reads on Linux); else a callable
 * returning int nanoseconds (callwatch.testing.FakeClock). */
static PyObject *clock_override = NULL;

static int
now_ns(long long *out)
{
    if (clock_override == NULL) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        *out = (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec;
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(clock_override);
    if (r == NULL)
        return -1;
    *out = PyLong_AsLongLong(r);
    Py_DECREF(r);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* A record (_state.py): a fixed number of int64 slots, stored in the object itself.  The
 * wrapper adds to them in place: no int object is made or freed per call, and a state
 * whose records are all of this type holds no container, so the GC never tracks it.
 * Python code reads and writes the slots like a list's (rec[CALLS] += 1). */
#define RECORD_MAX 4

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    long long v[RECORD_MAX];
} Record;

static PyTypeObject RecordType;

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
    Record *c = (Record *)RecordType.tp_alloc(&RecordType, 0);
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

static PyTypeObject RecordType = {
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

typedef struct {
    PyObject_HEAD
    PyObject *fn;     /* the watched function */
    PyObject *var;    /* the ContextVar with the request's state */
    PyObject *slow;   /* the Python wrapper: calls outside requests, odd states */
    PyObject *key;    /* the entry's index in the state */
    PyObject *gkey;   /* its group's index, or NULL */
    Py_ssize_t calls, ns, active;  /* offsets in a record */
    Py_ssize_t need;  /* slots a record needs for these offsets */
    /* The last state this wrapper counted in, and its records there (group's: NULL until
     * needed): a request calls the same function again and again, and this saves the
     * dict lookups.  Strong references, so the state's address cannot be reused while
     * cached; records are never removed from a state. */
    PyObject *cst;
    Record *crec, *cgrec;
    PyObject *dict;
    PyObject *weakreflist;
    vectorcallfunc vectorcall;
} Watched;

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
        rec = RecordType.tp_alloc(&RecordType, 0);
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
    if (!Py_IS_TYPE(rec, &RecordType) || ((Record *)rec)->n < w->need) {
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
        if (now_ns(&t0) == 0) {
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
        /* The clock override (tests) is Python code: keep the call's own exception. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (now_ns(&t1) == 0) {
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
static PyObject *
watched_enter(Watched *w, PyObject *st)
{
    Record *rec = NULL, *grec = NULL;
    int odd = 0;
    long long t;
    if (!PyDict_Check(st) || records_of(w, st, &rec, &grec, &odd) < 0 || now_ns(&t) < 0) {
        PyErr_Clear();
        Py_XDECREF(rec);
        Py_XDECREF(grec);
        Py_RETURN_FALSE;
    }
    long long *r = rec->v;
    r[w->calls] += 1;
    if (r[w->active]++ == 0)
        r[w->ns] -= t;
    if (grec != NULL) {
        long long *gr = grec->v;
        gr[w->calls] += 1;
        if (gr[w->active]++ == 0)
            gr[w->ns] -= t;
    }
    Py_DECREF(rec);
    Py_XDECREF(grec);
    Py_RETURN_TRUE;
}

static PyObject *
watched_leave(Watched *w, PyObject *st)
{
    Record *rec = NULL, *grec = NULL;
    int odd = 0;
    long long t;
    if (!PyDict_Check(st) || records_of(w, st, &rec, &grec, &odd) < 0 || now_ns(&t) < 0) {
        PyErr_Clear();
        Py_XDECREF(rec);
        Py_XDECREF(grec);
        Py_RETURN_NONE;
    }
    long long *r = rec->v;
    if (--r[w->active] == 0)
        r[w->ns] += t;
    if (grec != NULL) {
        long long *gr = grec->v;
        if (--gr[w->active] == 0)
            gr[w->ns] += t;
    }
    Py_DECREF(rec);
    Py_XDECREF(grec);
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
static void
wrapper_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    PyObject_ClearWeakRefs(self);  /* a no-op without weak references */
    Py_TYPE(self)->tp_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* Like a Python function: bound to an instance when looked up on one. */
static PyObject *
watched_descr_get(PyObject *self, PyObject *obj, PyObject *type)
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
static PyObject *
watched_getattro(PyObject *self, PyObject *name)
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

static PyTypeObject WatchedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callwatch._speedups.Watched",
    .tp_doc = "A watched function (callwatch's C wrapper).",
    .tp_basicsize = sizeof(Watched),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = watched_new,
    .tp_dealloc = wrapper_dealloc,
    .tp_traverse = (traverseproc)watched_traverse,
    .tp_clear = (inquiry)watched_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Watched, vectorcall),
    .tp_descr_get = watched_descr_get,
    .tp_repr = (reprfunc)watched_repr,
    .tp_getset = watched_getset,
    .tp_methods = watched_methods,
    .tp_getattro = watched_getattro,
    .tp_dictoffset = offsetof(Watched, dict),
    .tp_weaklistoffset = offsetof(Watched, weakreflist),
};

/* ---------------------------------------------------------------------------------------
 * The handler wrapper: one request per call of a sync handler.  Same contract as the
 * generated wrapper of _request.py (_HANDLER), which stays as the async wrapper, the
 * fallback, and this one's slow path: a fresh state, the profiler's begin and end, the
 * state current while the handler runs, its time, the configured dimensions, and the
 * hand-over to the collector ((name, ns, flags, state) appended to its pending list,
 * folded every `batch` requests).  `profiler` and `dimension_functions` are read from
 * _request's globals on each call: configure() rebinds them after handlers are wrapped.
 * Like Watched, `fn` comes first (watched_getattro reads attributes through it).
 */

static PyObject *str_profiler, *str_dimension_functions, *str_config_dimensions, *str_begin, *str_end, *zero;

typedef struct {
    PyObject_HEAD
    PyObject *fn;       /* the handler function */
    PyObject *slow;     /* the generated Python wrapper */
    PyObject *name;     /* the handler's name */
    PyObject *var;      /* the ContextVar with the request's state */
    PyObject *globals;  /* _request's module dict */
    PyObject *pending;  /* the collector's pending list */
    PyObject *fold;     /* the collector's fold */
    PyObject *dims_key, *name_key;  /* the state's header keys */
    Py_ssize_t batch;
    long profiled;      /* the flag of a profiled request */
    PyObject *dict;
    PyObject *weakreflist;
    vectorcallfunc vectorcall;
} Handler;

_Static_assert(offsetof(Handler, fn) == offsetof(Watched, fn), "watched_getattro reads fn of both");

/* An error left by a bookkeeping step (which runs Python code): an Exception is
 * callwatch's, and is dropped; anything else (KeyboardInterrupt, or SystemExit from a
 * signal handler that ran meanwhile) is the host's, kept to be raised when the request
 * has been recorded, as the Python wrapper's `finally` would raise it (the first one). */
typedef struct {
    PyObject *type, *value, *tb;
} Raised;

static void
settle(Raised *host)
{
    if (!PyErr_Occurred())
        return;
    if (host->type != NULL || PyErr_ExceptionMatches(PyExc_Exception))
        PyErr_Clear();
    else
        PyErr_Fetch(&host->type, &host->value, &host->tb);
}

/* config_dimensions(name, state, args, kwargs), with the call's arguments as Python has them. */
static void
handler_dimensions(Handler *h, PyObject *st, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *fns = PyDict_GetItemWithError(h->globals, str_dimension_functions);
    if (fns == NULL || PyObject_IsTrue(fns) != 1)
        return;
    PyObject *fn = PyDict_GetItemWithError(h->globals, str_config_dimensions);
    if (fn == NULL)
        return;
    Py_INCREF(fn);  /* held across the call: the module's globals may change meanwhile */
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *a = PyTuple_New(nargs), *kw = PyDict_New();
    if (a != NULL && kw != NULL) {
        for (Py_ssize_t i = 0; i < nargs; i++)
            PyTuple_SET_ITEM(a, i, Py_NewRef(args[i]));
        Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
        int ok = 1;
        for (Py_ssize_t i = 0; i < nkw && ok; i++)
            ok = PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) == 0;
        if (ok)
            Py_XDECREF(PyObject_CallFunctionObjArgs(fn, h->name, st, a, kw, NULL));
    }
    Py_XDECREF(a);
    Py_XDECREF(kw);
    Py_DECREF(fn);
}

/* The profiler's end(token, final name, ns, state); the final name is a name given
 * during the request, else the handler's (also when the given one cannot be read). */
static void
handler_end_profile(Handler *h, PyObject *p, PyObject *prof, PyObject *st, PyObject *ns, Raised *host)
{
    PyObject *name = NULL, *given = PyDict_GetItemWithError(st, h->name_key);
    if (given != NULL) {
        Py_INCREF(given);
        int named = PyObject_IsTrue(given);
        if (named == 1)
            name = PyObject_Str(given);
        Py_DECREF(given);
    }
    settle(host);
    if (name == NULL)
        name = Py_NewRef(h->name);
    Py_XDECREF(PyObject_CallMethodObjArgs(p, str_end, prof, name, ns, st, NULL));
    Py_DECREF(name);
    settle(host);
}

static PyObject *
handler_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Handler *h = (Handler *)op;
    Raised host = {NULL, NULL, NULL};
    PyObject *st = PyDict_New();
    if (st == NULL || PyDict_SetItem(st, h->dims_key, zero) < 0
            || PyDict_SetItem(st, h->name_key, zero) < 0) {
        Py_XDECREF(st);
        PyErr_Clear();
        return PyObject_Vectorcall(h->slow, args, nargsf, kwnames);
    }
    /* The profiler begins before the state is current, so that nothing is left set if
     * it fails; an error of its own is dropped (the request goes unprofiled), the host's
     * is raised before the handler runs (as the Python wrapper does). */
    PyObject *p = PyDict_GetItemWithError(h->globals, str_profiler), *prof = NULL;
    if (p != NULL && p != Py_None) {
        Py_INCREF(p);
        prof = PyObject_CallMethodOneArg(p, str_begin, h->name);
        if (prof == Py_None)
            Py_CLEAR(prof);
    }
    else
        p = NULL;
    settle(&host);
    if (host.type != NULL) {
        if (prof != NULL)
            handler_end_profile(h, p, prof, st, zero, &host);
        Py_XDECREF(prof);
        Py_XDECREF(p);
        Py_DECREF(st);
        PyErr_Restore(host.type, host.value, host.tb);
        return NULL;
    }
    PyObject *tok = PyContextVar_Set(h->var, st);
    if (tok == NULL) {  /* out of memory: the call runs, uncounted */
        PyErr_Clear();
        if (prof != NULL) {
            handler_end_profile(h, p, prof, st, zero, &host);
            Py_XDECREF(host.type);
            Py_XDECREF(host.value);
            Py_XDECREF(host.tb);
        }
        Py_XDECREF(prof);
        Py_XDECREF(p);
        Py_DECREF(st);
        return PyObject_Vectorcall(h->fn, args, nargsf, kwnames);
    }
    long long t0 = 0, t1 = 0;
    if (now_ns(&t0) < 0)
        PyErr_Clear();
    PyObject *result = PyObject_Vectorcall(h->fn, args, nargsf, kwnames);

    /* The handler's own exception is kept across the bookkeeping (which runs Python code). */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    long flags = result == NULL && et != NULL && PyErr_GivenExceptionMatches(et, PyExc_Exception);
    if (now_ns(&t1) < 0) {
        settle(&host);
        t1 = t0;
    }
    PyObject *ns = PyLong_FromLongLong(t1 - t0);
    if (ns == NULL) {
        PyErr_Clear();
        ns = Py_NewRef(zero);
    }
    if (prof != NULL) {
        handler_end_profile(h, p, prof, st, ns, &host);
        flags |= h->profiled;
    }
    if (PyContextVar_Reset(h->var, tok) < 0)
        PyErr_Clear();
    handler_dimensions(h, st, args, nargsf, kwnames);
    settle(&host);
    PyObject *fl = PyLong_FromLong(flags);
    PyObject *item = fl != NULL ? PyTuple_Pack(4, h->name, ns, fl, st) : NULL;
    if (item != NULL && PyList_Append(h->pending, item) == 0
            && PyList_GET_SIZE(h->pending) >= h->batch)
        Py_XDECREF(PyObject_CallNoArgs(h->fold));
    settle(&host);
    Py_XDECREF(item);
    Py_XDECREF(fl);
    Py_DECREF(ns);
    Py_DECREF(tok);
    Py_XDECREF(prof);
    Py_XDECREF(p);
    Py_DECREF(st);
    if (host.type != NULL) {  /* the host's own interrupt wins, as in the Python wrapper */
        Py_XDECREF(result);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        PyErr_Restore(host.type, host.value, host.tb);
        return NULL;
    }
    PyErr_Restore(et, ev, tb);
    return result;
}

static PyObject *
handler_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *fn, *slow, *name, *var, *globals, *pending, *fold, *dims_key, *name_key;
    Py_ssize_t batch;
    long profiled;
    static char *kwlist[] = {"fn", "slow", "name", "var", "globals", "pending", "fold", "dims_key", "name_key",
                             "batch", "profiled", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOUO!O!O!OOOnl:Handler", kwlist, &fn, &slow, &name,
                                     &PyContextVar_Type, &var, &PyDict_Type, &globals, &PyList_Type, &pending,
                                     &fold, &dims_key, &name_key, &batch, &profiled))
        return NULL;
    if (!PyCallable_Check(fn) || !PyCallable_Check(slow) || !PyCallable_Check(fold)) {
        PyErr_SetString(PyExc_TypeError, "Handler: fn, slow and fold must be callable");
        return NULL;
    }
    Handler *h = (Handler *)type->tp_alloc(type, 0);
    if (h == NULL)
        return NULL;
    h->fn = Py_NewRef(fn);
    h->slow = Py_NewRef(slow);
    h->name = Py_NewRef(name);
    h->var = Py_NewRef(var);
    h->globals = Py_NewRef(globals);
    h->pending = Py_NewRef(pending);
    h->fold = Py_NewRef(fold);
    h->dims_key = Py_NewRef(dims_key);
    h->name_key = Py_NewRef(name_key);
    h->batch = batch;
    h->profiled = profiled;
    h->vectorcall = handler_vectorcall;
    return (PyObject *)h;
}

static int
handler_traverse(Handler *h, visitproc visit, void *arg)
{
    Py_VISIT(h->fn);
    Py_VISIT(h->slow);
    Py_VISIT(h->name);
    Py_VISIT(h->var);
    Py_VISIT(h->globals);
    Py_VISIT(h->pending);
    Py_VISIT(h->fold);
    Py_VISIT(h->dims_key);
    Py_VISIT(h->name_key);
    Py_VISIT(h->dict);
    return 0;
}

static int
handler_clear(Handler *h)
{
    Py_CLEAR(h->fn);
    Py_CLEAR(h->slow);
    Py_CLEAR(h->name);
    Py_CLEAR(h->var);
    Py_CLEAR(h->globals);
    Py_CLEAR(h->pending);
    Py_CLEAR(h->fold);
    Py_CLEAR(h->dims_key);
    Py_CLEAR(h->name_key);
    Py_CLEAR(h->dict);
    return 0;
}

static PyObject *
handler_repr(Handler *h)
{
    return PyUnicode_FromFormat("<callwatch handler %R of %R>", h->name, h->fn);
}

static PyObject *
handler_get_slow(Handler *h, void *closure)
{
    return Py_NewRef(h->slow);
}

static PyGetSetDef handler_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"_cw_slow", (getter)handler_get_slow, NULL, "the Python wrapper (slow path)", NULL},
    {NULL},
};

static PyTypeObject HandlerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callwatch._speedups.Handler",
    .tp_doc = "A handler: each call one request (callwatch's C wrapper).",
    .tp_basicsize = sizeof(Handler),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = handler_new,
    .tp_dealloc = wrapper_dealloc,
    .tp_traverse = (traverseproc)handler_traverse,
    .tp_clear = (inquiry)handler_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Handler, vectorcall),
    .tp_descr_get = watched_descr_get,
    .tp_repr = (reprfunc)handler_repr,
    .tp_getset = handler_getset,
    .tp_methods = watched_methods,
    .tp_getattro = watched_getattro,
    .tp_dictoffset = offsetof(Handler, dict),
    .tp_weaklistoffset = offsetof(Handler, weakreflist),
};

static PyObject *
set_clock(PyObject *module, PyObject *fn)
{
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "set_clock: a callable returning int nanoseconds, or None");
        return NULL;
    }
    Py_XSETREF(clock_override, fn == Py_None ? NULL : Py_NewRef(fn));
    Py_RETURN_NONE;
}

/* columns(states, calls, ns) -> {entry: Record [calls, max calls, ns, max ns]}: what the
 * fold adds per entry for a batch of requests' states (_table._add_columns), in one pass.
 * Header keys (<= 0) are skipped; a negative time (an async call still running) counts 0.
 * A state that is not a dict of records (or of int sequences) raises, and the fold does
 * it in Python.  No Python code runs in the loop, so no state can change under it. */
static PyObject *
columns(PyObject *module, PyObject *args)
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
            if (Py_IS_TYPE(v, &RecordType) && ((Record *)v)->n >= need) {
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
                acc = RecordType.tp_alloc(&RecordType, 0);
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
 * values (ints >= 0; zeros only counted), with the very operations ddsketch's LogarithmicMapping.key does in Python
 * (math.log(v, 2) is log(v) / log(2.0) on the same libm; then * multiplier, ceil, and
 * + offset truncated by int()), so the keys are the same; _stats.sketch_add_many. */
static PyObject *
sketch_keys(PyObject *module, PyObject *args)
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

static PyMethodDef methods[] = {
    {"columns", columns, METH_VARARGS,
     "columns(states, calls, ns): per entry, [calls, max calls, ns, max ns] over the states."},
    {"sketch_keys", sketch_keys, METH_VARARGS,
     "sketch_keys(values, multiplier, offset): ({DDSketch key: count}, zeros) of the values."},
    {"set_clock", set_clock, METH_O,
     "set_clock(fn or None): read durations from fn() instead of CLOCK_MONOTONIC (tests)."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "callwatch._speedups",
    .m_doc = "callwatch's watched-call wrapper in C (optional; _core falls back to Python).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&WatchedType) < 0 || PyType_Ready(&RecordType) < 0 || PyType_Ready(&HandlerType) < 0)
        return NULL;
    if ((str_profiler = PyUnicode_InternFromString("profiler")) == NULL
            || (str_dimension_functions = PyUnicode_InternFromString("dimension_functions")) == NULL
            || (str_config_dimensions = PyUnicode_InternFromString("config_dimensions")) == NULL
            || (str_begin = PyUnicode_InternFromString("begin")) == NULL
            || (str_end = PyUnicode_InternFromString("end")) == NULL
            || (zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "Watched", Py_NewRef((PyObject *)&WatchedType)) < 0) {
        Py_DECREF(&WatchedType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "Handler", Py_NewRef((PyObject *)&HandlerType)) < 0) {
        Py_DECREF(&HandlerType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "Record", Py_NewRef((PyObject *)&RecordType)) < 0) {
        Py_DECREF(&RecordType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
