/* The handler wrapper of callwatch._request, in C (the module: _speedups.c). */

#include "_speedups.h"
#include <structmember.h>

/* ---------------------------------------------------------------------------------------
 * The handler wrapper: one request per call of a sync handler.  Same contract as the
 * generated wrapper of _request.py (_HANDLER), which stays as the async wrapper, the
 * fallback, and this one's slow path: a fresh state, the profiler's begin and end, the
 * state current while the handler runs, its time, the configured dimensions, and the
 * hand-over to the collector ((name, ns, flags, state) appended to its pending list,
 * folded every `batch` requests).  `profiler` and `dimension_functions` are read from
 * _request's globals on each call: configure() rebinds them after handlers are wrapped.
 * Like Watched, `fn` comes first (cw_wrapper_getattro reads attributes through it).
 */

static PyObject *str_profiler, *str_dimension_functions, *str_config_dimensions, *str_begin, *str_end, *str_profiler_skip,
    *zero;


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

_Static_assert(offsetof(Handler, fn) == offsetof(Watched, fn), "cw_wrapper_getattro reads fn of both");

/* The requests the profiler surely skips (the policy's ``Skip``, profiling/_policy.py):
 * its countdown, whether a profile on demand is asked for, and the handlers profiled
 * within min_interval (the policy's dict, None without min_interval).  A request of a
 * handler named at the start is not chosen while the countdown stays above 0, nothing is
 * on demand and its handler is in `recent`: that is decided here, with no Python call
 * (benchmarks/macro.py's "never picks" row measures what choose() cost per request). */
typedef struct {
    PyObject_HEAD
    Py_ssize_t left;
    int ask;
    PyObject *recent;
    Py_ssize_t owner;  /* id() of the profiler it belongs to */
} Skip;

static PyMemberDef skip_members[] = {
    {"left", T_PYSSIZET, offsetof(Skip, left), 0, "requests until the countdown's pick"},
    {"ask", T_INT, offsetof(Skip, ask), 0, "nonzero: ask the policy about every request"},
    {"recent", T_OBJECT, offsetof(Skip, recent), 0, "handler -> when last profiled, or None"},
    {"owner", T_PYSSIZET, offsetof(Skip, owner), 0, "id() of the profiler it belongs to"},
    {NULL},
};

static void
skip_dealloc(Skip *s)
{
    Py_XDECREF(s->recent);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

PyTypeObject cw_SkipType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callwatch._speedups.Skip",
    .tp_doc = "The requests the profiler surely skips (the C handler reads it).",
    .tp_basicsize = sizeof(Skip),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)skip_dealloc,
    .tp_members = skip_members,
};

/* Is this request of handler `name` surely not profiled by `p`?  Then it counts down
 * here.  The Skip is _request's `profiler_skip`, read from its globals (no attribute
 * lookup on the profiler), and used only while its owner is `p`. */
static int
skipped(Handler *h, PyObject *p)
{
    PyObject *o = PyDict_GetItemWithError(h->globals, str_profiler_skip);
    if (o == NULL || !Py_IS_TYPE(o, &cw_SkipType) || ((Skip *)o)->owner != (Py_ssize_t)(uintptr_t)p) {
        PyErr_Clear();
        return 0;
    }
    Skip *s = (Skip *)o;
    PyObject *recent = s->recent;
    if (s->left > 1 && !s->ask
            && (recent == NULL || recent == Py_None
                || (PyDict_CheckExact(recent) && PyDict_GetItemWithError(recent, h->name) != NULL))) {
        s->left -= 1;
        return 1;
    }
    PyErr_Clear();
    return 0;
}

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
        prof = skipped(h, p) ? NULL : PyObject_CallMethodOneArg(p, str_begin, h->name);
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
    if (cw_now_ns(&t0) < 0)
        PyErr_Clear();
    PyObject *result = PyObject_Vectorcall(h->fn, args, nargsf, kwnames);

    /* The handler's own exception is kept across the bookkeeping (which runs Python code). */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    long flags = result == NULL && et != NULL && PyErr_GivenExceptionMatches(et, PyExc_Exception);
    if (cw_now_ns(&t1) < 0) {
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

PyTypeObject cw_HandlerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callwatch._speedups.Handler",
    .tp_doc = "A handler: each call one request (callwatch's C wrapper).",
    .tp_basicsize = sizeof(Handler),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = handler_new,
    .tp_dealloc = cw_wrapper_dealloc,
    .tp_traverse = (traverseproc)handler_traverse,
    .tp_clear = (inquiry)handler_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Handler, vectorcall),
    .tp_descr_get = cw_wrapper_descr_get,
    .tp_repr = (reprfunc)handler_repr,
    .tp_getset = handler_getset,
    .tp_methods = cw_wrapper_methods,
    .tp_getattro = cw_wrapper_getattro,
    .tp_dictoffset = offsetof(Handler, dict),
    .tp_weaklistoffset = offsetof(Handler, weakreflist),
};

int
cw_handler_ready(void)
{
    if ((str_profiler = PyUnicode_InternFromString("profiler")) == NULL
            || (str_dimension_functions = PyUnicode_InternFromString("dimension_functions")) == NULL
            || (str_config_dimensions = PyUnicode_InternFromString("config_dimensions")) == NULL
            || (str_begin = PyUnicode_InternFromString("begin")) == NULL
            || (str_end = PyUnicode_InternFromString("end")) == NULL
            || (str_profiler_skip = PyUnicode_InternFromString("profiler_skip")) == NULL
            || (zero = PyLong_FromLong(0)) == NULL)
        return -1;
    return PyType_Ready(&cw_SkipType) < 0 ? -1 : PyType_Ready(&cw_HandlerType);
}
