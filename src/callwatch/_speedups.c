/* callwatch._speedups: the optional C extension (callwatch falls back to Python).
 *
 *   _speedups_record.c   Record, a request's record of one entry; the fold's loops
 *   _speedups_watched.c  Watched, the watched-call wrapper (sync, and async's two steps)
 *   _speedups_handler.c  Handler, the sync handler wrapper
 *   _speedups.c          the clock they read, and the module
 */

#include "_speedups.h"
#include <time.h>

/* None: CLOCK_MONOTONIC (what time.perf_counter_ns reads on Linux); else a callable
 * returning int nanoseconds (callwatch.testing.FakeClock). */
static PyObject *clock_override = NULL;

int
cw_clock_runs_python(void)
{
    return clock_override != NULL;
}

int
cw_now_ns(long long *out)
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

static PyMethodDef methods[] = {
    {"columns", cw_columns, METH_VARARGS,
     "columns(states, calls, ns): per entry, [calls, max calls, ns, max ns] over the states."},
    {"sketch_keys", cw_sketch_keys, METH_VARARGS,
     "sketch_keys(values, multiplier, offset): ({DDSketch key: count}, zeros) of the values."},
    {"set_clock", set_clock, METH_O,
     "set_clock(fn or None): read durations from fn() instead of CLOCK_MONOTONIC (tests)."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "callwatch._speedups",
    .m_doc = "callwatch's wrappers, records and fold loops in C (optional: callwatch falls back to Python).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&cw_WatchedType) < 0 || PyType_Ready(&cw_RecordType) < 0 || cw_handler_ready() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "Watched", Py_NewRef((PyObject *)&cw_WatchedType)) < 0) {
        Py_DECREF(&cw_WatchedType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "Handler", Py_NewRef((PyObject *)&cw_HandlerType)) < 0) {
        Py_DECREF(&cw_HandlerType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "Skip", Py_NewRef((PyObject *)&cw_SkipType)) < 0) {
        Py_DECREF(&cw_SkipType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "Record", Py_NewRef((PyObject *)&cw_RecordType)) < 0) {
        Py_DECREF(&cw_RecordType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
