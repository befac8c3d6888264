"""``callwatch report``: the HTML page from real pstats dumps (cProfile, one dump per
request, of a workload whose call counts are known), in-process and once through a real
subprocess.  The browser's view of the page is tests/test_report_browser.py."""

from __future__ import annotations

import cProfile
import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callwatch import report
from callwatch.analysis import load
from callwatch.cli import main


def fetch(i: int) -> int:
    return sum(range(200 + i))


def steady() -> int:
    return sum(range(300))


# a function whose name needs escaping: the report must show it as text, never as markup
def _evil() -> int:
    return fetch(0)


_evil.__code__ = _evil.__code__.replace(co_name="<b>x</b>&'\"")


def handle(players: int) -> None:
    for i in range(players):
        fetch(i)
    steady()
    _evil()


def dumps(folder: Path, players: int, requests: int = 3) -> Path:
    folder.mkdir(parents=True)
    for n in range(requests):
        prof = cProfile.Profile()
        prof.runcall(handle, players)
        prof.dump_stats(str(folder / f"{n}.prof"))
    return folder


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    return dumps(tmp_path / "small", 2), dumps(tmp_path / "big", 7, requests=4)


def _row(page: str, name: str) -> str:
    m = re.search(r"<tr[^>]*><td class=\"fn\" data-v=\"[^\"]*\(" + re.escape(name) + r"\)\">.*?</tr>", page)
    assert m, name
    return m.group(0)


def test_the_growth_table_holds_calls_per_request_before_and_after(two: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(two[0]), str(two[1]), "-o", str(out)]) == 0
    page = out.read_text()
    fetch_row = _row(page, "fetch")
    # handle() calls fetch once per player, and _evil() once more: 3 and 8 per request
    assert fetch_row.startswith('<tr class="grew">')
    assert re.findall(r'data-v="([^"]+)">', fetch_row)[1:4] == ["3", "8", "2.66667"]
    steady_row = _row(page, "steady")
    assert steady_row.startswith("<tr>") and re.findall(r'data-v="([^"]+)">', steady_row)[1:4] == ["1", "1", "1"]
    assert re.search(r'<g class="node grew" data-function="[^"]*\(fetch\)"><title>', page)
    assert re.search(r'<g class="node" data-function="[^"]*\(steady\)"><title>', page)
    assert "<p><b>small</b>: 3 request(s)" in page and "<b>big</b>: 4 request(s)" in page


def test_every_function_name_is_escaped(two: tuple[Path, Path], tmp_path: Path) -> None:
    page = report.build(load([two[0]]), load([two[1]]))
    assert "<b>x</b>" not in page
    assert html.escape("(<b>x</b>&'\")") in page
    assert page.count("<script>") == 1 and "<b>x</b>" not in page.split("<script>")[1]


def test_the_page_is_self_contained(two: tuple[Path, Path]) -> None:
    page = report.build(load([two[0]]), load([two[1]]),
                        graph_svg=None)
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\(", page)
    assert set(re.findall(r"https?://[^\"' )]+", page)) <= {"http://www.w3.org/2000/svg"}


def test_the_icicle_shares_a_callers_width_among_its_callees(two: tuple[Path, Path]) -> None:
    after = load([two[1]])
    tree = report.call_tree(after)
    stats = after.stats.stats  # type: ignore[attr-defined]
    (handle_node,) = [n for n in tree.children if n.key is not None and n.key[2] == "handle"]
    assert handle_node.seconds == pytest.approx(stats[handle_node.key][3])
    under = {n.key[2]: n.seconds for n in handle_node.children if n.key is not None}
    for name in ("fetch", "steady"):
        key = next(k for k in stats if k[2] == name)
        assert under[name] == pytest.approx(stats[key][4][handle_node.key][3])
    assert sum(under.values()) <= handle_node.seconds * (1 + 1e-9)


def test_single_profile_mode(two: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "one.html"
    assert main(["report", str(two[1]), "-o", str(out), "--no-graphviz"]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    page = out.read_text()
    assert "4 profiled request(s)" in page and 'class="grew"' not in page and 'node grew' not in page
    assert re.findall(r'data-v="([^"]+)">', _row(page, "fetch"))[1] == "8"


def test_graphviz_graph_is_embedded_when_dot_exists(two: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed")
    out = report.write([two[0]], [two[1]], tmp_path / "g.html")
    page = out.read_text()
    assert "<h2>Call graph (graphviz)</h2>" in page and page.count("<svg") == 2 and "<?xml" not in page


def test_bad_input_is_one_error_naming_the_file(two: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.prof"
    bad.write_bytes(b"not a profile")
    assert main(["report", str(two[0]), str(bad), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"callwatch report: {bad}: not a pstats profile") and err.count("\n") == 1
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "x.html")]) == 2
    assert f"{tmp_path / 'missing'}: no such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_report_through_a_subprocess(two: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "sub.html"
    r = subprocess.run([sys.executable, "-m", "callwatch", "report", str(two[0]), str(two[1]), "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{out}\n", "")
    assert 'class="node grew"' in out.read_text()
