/* callwatch._speedups: what its C files share (see _speedups.c for the module). */

#ifndef CALLWATCH_SPEEDUPS_H
#define CALLWATCH_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

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

extern PyTypeObject cw_RecordType;

/* The watched-call wrapper (_speedups_watched.c). */
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

extern PyTypeObject cw_WatchedType;
/* The handler wrapper (_speedups_handler.c); cw_handler_ready() before it is used. */
extern PyTypeObject cw_HandlerType;
extern PyTypeObject cw_SkipType;
int cw_handler_ready(void);

/* What both wrapper types share (_speedups_watched.c): they start with `fn`. */
PyObject *cw_wrapper_descr_get(PyObject *self, PyObject *obj, PyObject *type);
PyObject *cw_wrapper_getattro(PyObject *self, PyObject *name);
void cw_wrapper_dealloc(PyObject *self);
extern PyMethodDef cw_wrapper_methods[];

/* The duration clock (_speedups.c): 0, or -1 with an error set (a broken override). */
int cw_now_ns(long long *out);
/* Is the clock an override (Python code, which may raise or clobber an error)? */
int cw_clock_runs_python(void);

/* The fold's loops (_speedups_record.c). */
PyObject *cw_columns(PyObject *module, PyObject *args);
PyObject *cw_sketch_keys(PyObject *module, PyObject *args);

#endif
