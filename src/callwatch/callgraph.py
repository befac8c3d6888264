"""Call graph images of profile dumps (gprof2dot + graphviz's dot), optionally colored by
how each function's calls per request changed from other dumps.  Used by ``callwatch
callgraph`` and the demo."""

from __future__ import annotations

import fnmatch
import io
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from .analysis import load
from .errors import CallgraphError

__all__ = ["CallgraphError", "draw"]

_NODE = re.compile(r'^(\t\d+ \[)color="([^"]+)", fontcolor="([^"]+)", (fontsize="[^"]+", )label="([^"]*)"(.*)$')




def draw(paths: Sequence[str | Path], output: str | Path, *, diff: str | Path | None = None,
         highlight: Sequence[str] = (), node_threshold: float = 0.5) -> None:
    """Draw the call graph of the dumps in ``paths`` to ``output`` (.svg, .png or .dot);
    with ``diff``, colored by how calls per request changed from those dumps."""
    try:
        import gprof2dot
    except ImportError:
        raise CallgraphError("needs gprof2dot. Fix: pip install 'callwatch[profile]'") from None
    out = Path(output)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("svg", "png", "dot"):
        raise CallgraphError(f"{out}: give a .svg, .png or .dot file")
    dot = shutil.which("dot")
    if fmt != "dot" and dot is None:
        raise CallgraphError("graphviz's dot is not installed. Fix: apt-get install graphviz (or write a .dot file)")
    main = load(paths)
    base = load([diff]) if diff else None
    profile = gprof2dot.PstatsParser(*[str(f) for f in main.files]).parse()
    profile.prune(node_threshold / 100.0, node_threshold / 500.0, None, False)
    calls_main = {f.name: (f.called or 0) / main.requests for f in profile.functions.values()}
    calls_base: dict[str, float] | None = None
    if base is not None:
        bprof = gprof2dot.PstatsParser(*[str(f) for f in base.files]).parse()
        calls_base = {f.name: (f.called or 0) / base.requests for f in bprof.functions.values()}
    text = io.StringIO()
    gprof2dot.DotWriter(text).graph(profile, gprof2dot.themes["color"])
    source = "".join(_restyle(line, calls_main, calls_base, list(highlight)) + "\n"
                     for line in text.getvalue().splitlines())
    if fmt == "dot":
        out.write_text(source)
        return
    assert dot is not None
    r = subprocess.run([dot, f"-T{fmt}", "-o", str(out)], input=source.encode(), capture_output=True, timeout=120)
    if r.returncode != 0:
        raise CallgraphError(f"dot failed: {r.stderr.decode(errors='replace').strip()}")


def _restyle(line: str, calls: dict[str, float], base: dict[str, float] | None, highlight: list[str]) -> str:
    m = _NODE.match(line)
    if m is None:
        return line
    head, color, fontcolor, fontsize, lab, rest = m.groups()
    name = lab.split("\\n", 1)[0]
    extra = ""
    if base is not None:
        now, before = calls.get(name, 0.0), base.get(name, 0.0)
        ratio = math.inf if before == 0 and now > 0 else (now / before if before else 1.0)
        if ratio >= 1.2:
            color, fontcolor = "#d62728", "#ffffff"
            lab += "\\n" + ("new" if math.isinf(ratio) else f"x{ratio:.2f}") + f" calls/req ({before:.2f} -> {now:.2f})"
        elif ratio <= 1 / 1.2:
            color, fontcolor = "#2ca02c", "#ffffff"
            lab += f"\\nx{ratio:.2f} calls/req"
        else:
            color, fontcolor = "#bbbbbb", "#000000"
    if any(fnmatch.fnmatchcase(name, h) or h in name for h in highlight):
        extra = ', penwidth="4", peripheries="2"'
        if base is None:
            color, fontcolor = "#ff7f0e", "#000000"
    return f'{head}color="{color}", fontcolor="{fontcolor}", {fontsize}label="{lab}"{extra}{rest}'
