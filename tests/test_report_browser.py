"""``callwatch report``'s page in a real browser: Debian's headless Chromium, driven over
the DevTools protocol on ``--remote-debugging-pipe`` (NUL-terminated JSON on fds 3 and 4;
stdlib only, no port to pick).  The report is made from the demo's own dumps (callwatch's
profiler on the card game, 2 then 7 players).  Checked: the page loads with no console
message of level error, no exception and no request but the file itself; the grown
function's icicle node and table row are painted in the grew color; the screenshot is not
blank.  Every wait is bounded, and Chromium is killed by its PID at the end (~9 s, most of
it the demo's 6 s of load)."""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from callwatch.cli import main
from callwatch.demo import run as demo_run

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs Debian's chromium (scripts/test installs it)"),
              pytest.mark.timeout(120)]
GREW_RGB = "rgb(214, 39, 40)"  # report.py's CSS for svg.icicle g.grew rect (#d62728)


class Browser:
    """The DevTools protocol over the pipe: one page session, events kept in order."""

    def __init__(self, home: Path) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        env = {**os.environ, "HOME": str(home), "TMPDIR": str(home)}  # keeps ~ and /tmp clean
        args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={home / 'profile'}", "--window-size=1280,900",
                "--remote-debugging-pipe", "about:blank"]
        # the child reads commands on fd 3 and writes on fd 4
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(3, 4), preexec_fn=lambda: _onto_3_and_4(to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 20.0) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                assert "error" not in m, (method, m["error"])
                return dict(m.get("result", {}))
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._read(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer in time"
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                assert chunk, f"Chromium closed the pipe (exit {self.proc.poll()})"
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return dict(json.loads(raw))

    def close(self) -> None:
        for fd in (self._w, self._r):
            os.close(fd)
        self.proc.kill()
        self.proc.wait(timeout=10)


def _onto_3_and_4(r: int, w: int) -> None:
    """In the child: the pipe ends onto fds 3 and 4 (by way of high copies, since either
    end may itself be 3 or 4)."""
    import fcntl

    hr, hw = fcntl.fcntl(r, fcntl.F_DUPFD, 100), fcntl.fcntl(w, fcntl.F_DUPFD, 100)
    os.dup2(hr, 3)
    os.dup2(hw, 4)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = demo_run.run(duration=6, interval=1, threads=2, out=io.StringIO(), output=out)
    assert result.profiles is not None and result.profiles.html is not None
    page = out / "again.html"  # and once through the command, as a user runs it
    assert main(["report", str(result.profiles.small), str(result.profiles.big), "-o", str(page)]) == 0
    return page


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def png_colors(png: bytes) -> set[tuple[int, ...]]:
    """The distinct pixel colors of an 8-bit RGB or RGBA PNG (Chromium's screenshots)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colors = bytearray(stride), set()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colors.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))  # type: ignore[misc]
        prev = line
    return {tuple(c) for c in colors}


def test_the_report_loads_offline_with_the_grown_function_in_red(demo_report: Path, browser: Browser) -> None:
    b = browser
    target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    b.session = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        b.send(f"{domain}.enable")
    b.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                  "mobile": False})
    url = demo_report.resolve().as_uri()
    b.send("Page.navigate", {"url": url})
    b.wait_event("Page.loadEventFired")
    probe = """(() => {
      const g = [...document.querySelectorAll('svg.icicle g.grew')]
        .find(e => e.dataset.function.endsWith('(Database.get_player)'));
      const row = [...document.querySelectorAll('#growth tr.grew td.fn')]
        .find(e => e.textContent.endsWith('(Database.get_player)'));
      const plain = document.querySelector('svg.icicle g.node:not(.grew) rect');
      return JSON.stringify({
        fill: g && getComputedStyle(g.querySelector('rect')).fill,
        width: g && g.querySelector('rect').getBoundingClientRect().width,
        plain: plain && getComputedStyle(plain).fill,
        row: row && getComputedStyle(row).color, nodes: document.querySelectorAll('svg.icicle g').length});
    })()"""
    seen = json.loads(b.send("Runtime.evaluate", {"expression": probe, "returnByValue": True})["result"]["value"])
    assert seen["fill"] == GREW_RGB, seen
    assert seen["width"] > 1 and seen["plain"] not in (None, GREW_RGB), seen
    assert seen["row"] == "rgb(178, 24, 43)", seen  # tr.grew td.fn: #b2182b
    assert seen["nodes"] > 5, seen
    # a header click sorts: the calls-after column, largest first
    sort = """(() => { document.querySelectorAll('#growth th')[2].click();
      return [...document.querySelectorAll('#growth tbody tr')].map(r => +r.cells[2].dataset.v); })()"""
    col = b.send("Runtime.evaluate", {"expression": sort, "returnByValue": True})["result"]["value"]
    assert len(col) > 3 and col == sorted(col, reverse=True), col
    shot = base64.b64decode(b.send("Page.captureScreenshot", {"format": "png"})["data"])
    time.sleep(0.3)  # late console messages or requests come as events before the next answer
    b.send("Runtime.evaluate", {"expression": "1"})
    errors = [m for m in b.events if m.get("method") in ("Runtime.exceptionThrown",)
              or m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] in ("error", "assert")
              or m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error"]
    assert errors == []
    requested = [m["params"]["request"]["url"] for m in b.events if m.get("method") == "Network.requestWillBeSent"]
    assert requested == [url]  # the file itself, nothing else
    colors = png_colors(shot)
    assert len(colors) > 20 and (214, 39, 40) in colors, len(colors)


def test_a_console_error_would_be_seen(tmp_path: Path, browser: Browser) -> None:
    """The check above can fail: a page with an error and a fetch is caught by it."""
    page = tmp_path / "bad.html"
    page.write_text("<p>x</p><img src='http://127.0.0.1:9/x.png'><script>console.error('boom'); nope();</script>")
    b = browser
    target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    b.session = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Network"):
        b.send(f"{domain}.enable")
    b.send("Page.navigate", {"url": page.as_uri()})
    b.wait_event("Page.loadEventFired")
    methods = {m.get("method") for m in b.events}
    assert {"Runtime.exceptionThrown", "Runtime.consoleAPICalled"} <= methods
    urls = [m["params"]["request"]["url"] for m in b.events if m.get("method") == "Network.requestWillBeSent"]
    assert "http://127.0.0.1:9/x.png" in urls
