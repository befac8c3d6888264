"""A function's parameter list as source, for the watched wrapper generated per signature.

A wrapper with the function's own parameters (``def get_user(self, uid)``) passes its
arguments on without packing a tuple and a dict per call (benchmarks/micro.py, the
"generic wrapper" row is the packing kind).
"""

from __future__ import annotations

import inspect
import keyword
import types
from typing import Any, Callable


def signature_code(fn: Callable[..., Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(parameter list, call arguments, defaults) to copy ``fn``'s signature, or None.

    Only for plain Python functions whose signature comes from their code object; any
    doubt (a ``__signature__`` override, odd names) falls back to ``*args, **kwargs``.
    """
    if type(fn) is not types.FunctionType or "__signature__" in vars(fn):
        return None
    try:
        sig = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return None
    P = inspect.Parameter
    params: list[str] = []
    call: list[str] = []
    defaults: dict[str, Any] = {}
    star_done = False
    items = list(sig.parameters.values())
    for i, p in enumerate(items):
        n = p.name
        if not n.isidentifier() or keyword.iskeyword(n) or n.startswith("_cw_"):
            return None
        decl = n
        if p.default is not P.empty:
            defaults[f"_cw_d{i}"] = p.default
            decl = f"{n}=_cw_d{i}"
        if p.kind is P.POSITIONAL_ONLY:
            params.append(decl)
            call.append(n)
            if i + 1 == len(items) or items[i + 1].kind is not P.POSITIONAL_ONLY:
                params.append("/")
        elif p.kind is P.POSITIONAL_OR_KEYWORD:
            params.append(decl)
            call.append(n)
        elif p.kind is P.VAR_POSITIONAL:
            params.append("*" + n)
            call.append("*" + n)
            star_done = True
        elif p.kind is P.KEYWORD_ONLY:
            if not star_done:
                params.append("*")
                star_done = True
            params.append(decl)
            call.append(f"{n}={n}")
        else:  # VAR_KEYWORD
            params.append("**" + n)
            call.append("**" + n)
    return ", ".join(params), ", ".join(call), defaults
