"""Alert rules evaluated against graphite-web's render API (``callwatch alerts check``).

Rules (thresholds in the YAML's ``alerts:`` section):

- spike: the call-count spike of :mod:`callwatch.spikes` (one definition for the
  in-process detector, this check and the Grafana rule), per origin x handler x watched
  function, replayed over the ``baseline`` before the ``window``; the latest judged
  interval in the window decides: WARNING at ``spike_warning`` x the baseline, CRITICAL
  at ``spike_critical`` x, never below ``spike_floor`` calls per request.
- p99: the worst p99 response time of any handler over the window.
- no_data: no request at all for ``no_data_minutes``.
- leak: WARNING while a process's latest census in the window has leak suspects (the
  definition is the in-process census's, ``callwatch.memory.Census``; this reads its
  ``process.memory.leak_suspects``).  OK without ``memory:`` (no census).

Status codes follow Nagios/Icinga: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.  Graphite
unreachable, too slow (a deadline per request and one for the whole check), answering too
much (a size cap) or nonsense is UNKNOWN with the reason, never a traceback.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from . import queries
from .config import AlertsConfig, Config
from .spikes import Baseline, Rule
from .errors import GraphiteError

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

#: seconds for one render request, all of it (connect, headers, body)
REQUEST_TIMEOUT = 10.0
#: seconds for the whole check
TOTAL_TIMEOUT = 30.0
#: bytes of one render answer; callwatch's own queries need far less
MAX_BYTES = 32 * 1024 * 1024

__all__ = ["CRITICAL", "OK", "UNKNOWN", "WARNING", "Result", "check", "seconds"]

Points = dict[str, list[tuple[float, int]]]




@dataclass
class Result:
    """One rule's verdict: a status code (``OK``... ``UNKNOWN``), why, and the numbers
    behind it (``values``, in the JSON output)."""

    rule: str
    status: int
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The verdict as one line of text: ``WARNING p99: ...``."""
        return f"{NAMES[self.status]} {self.rule}: {self.message}"


def seconds(period: str) -> int:
    """A period of the ``alerts:`` section (``30s``, ``5min``, ``2h``, ``1d``) in seconds;
    ``ValueError`` for anything else."""
    m = re.match(r"^(\d+)(s|min|h|d)$", period)
    if not m:
        raise ValueError(period)
    return int(m.group(1)) * {"s": 1, "min": 60, "h": 3600, "d": 86400}[m.group(2)]


def render(web_url: str, target: str, start: int, end: int, deadline: float,
           max_bytes: int = MAX_BYTES) -> Points:
    """{series name: [(value, ts)...]} with nulls dropped, all of it read before the
    ``deadline`` (time.monotonic()); GraphiteError on any failure."""
    q = urllib.parse.urlencode({"target": target, "from": start, "until": end, "format": "json"})
    body = _get(f"{web_url.rstrip('/')}/render?{q}", web_url, target, deadline, max_bytes)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise GraphiteError(f"graphite-web at {web_url} did not answer JSON") from None
    return _series(data, web_url)


def _get(url: str, web_url: str, target: str, deadline: float, max_bytes: int) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise GraphiteError(f"graphite-web at {web_url}: no time left for {target} (the check's deadline)")
    cut = threading.Event()
    try:
        u = urllib.parse.urlsplit(url)
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = cls(u.hostname or "", u.port, timeout=left)
    except ValueError as e:
        raise GraphiteError(f"graphite-web URL {web_url}: {e}. Fix: give http://HOST:PORT") from None
    try:
        conn.connect()
    except OSError as e:
        raise _unreachable(web_url, e) from None
    # Socket timeouts bound each wait, not the total: a server dripping a byte at a time
    # would never trip them.  The timer cuts the socket (which the response keeps after
    # the connection lets go of it) at the deadline.
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, (conn.sock, cut))
    timer.daemon = True
    timer.start()
    try:
        return _read(conn, u, web_url, target, max_bytes, cut)
    except (OSError, http.client.HTTPException) as e:
        if cut.is_set():
            raise GraphiteError(f"graphite-web at {web_url} did not answer within {left:.1f} s "
                                f"(the deadline) for {target}") from None
        raise _unreachable(web_url, e) from None
    finally:
        timer.cancel()
        conn.close()


def _unreachable(web_url: str, e: Exception) -> GraphiteError:
    return GraphiteError(f"graphite-web at {web_url} unreachable ({type(e).__name__}: {e})")


def _read(conn: http.client.HTTPConnection, u: urllib.parse.SplitResult, web_url: str, target: str,
          max_bytes: int, cut: threading.Event) -> bytes:
    conn.request("GET", f"{u.path}?{u.query}", headers={"Accept": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise GraphiteError(f"graphite-web answered HTTP {r.status} for {target}")
    body = bytearray()
    while chunk := r.read1(65536):
        body += chunk
        if len(body) > max_bytes:
            raise GraphiteError(f"graphite-web at {web_url} answered over {max_bytes} bytes for {target} "
                                "(the size cap)")
    if cut.is_set() or r.length:  # cut at the deadline, or the server hung up early
        raise http.client.IncompleteRead(bytes(body), r.length)
    return bytes(body)


def _cut(sock: socket.socket, cut: threading.Event) -> None:
    cut.set()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _series(data: Any, web_url: str) -> Points:
    """Graphite's JSON checked: a list of {"target": str, "datapoints": [[number|null, int]...]}."""
    bad = f"graphite-web at {web_url} answered JSON that is not a series list"
    if not isinstance(data, list):
        raise GraphiteError(bad)
    out: Points = {}
    for i, s in enumerate(data):
        if not isinstance(s, dict) or not isinstance(s.get("target"), str) or not isinstance(
                s.get("datapoints"), list):
            raise GraphiteError(f"{bad} (series {i} has no target and datapoints list)")
        pts = []
        for p in s["datapoints"]:
            if not (isinstance(p, list) and len(p) == 2 and _number(p[1])) or not (p[0] is None or _number(p[0])):
                raise GraphiteError(f"{bad} (series {s['target'][:80]!r} has the point {str(p)[:40]}, "
                                    "not [number or null, timestamp])")
            if p[0] is not None:
                pts.append((float(p[0]), int(p[1])))
        out[s["target"]] = pts
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check(cfg: Config, web_url: str, now: float | None = None, timeout: float = REQUEST_TIMEOUT,
          total: float = TOTAL_TIMEOUT, max_bytes: int = MAX_BYTES) -> list[Result]:
    """Evaluate every rule; the last Result is the summary.  ``timeout``: seconds for one
    render request; ``total``: for all of them; ``max_bytes``: per answer."""
    a = cfg.alerts
    now_i = int(time.time() if now is None else now)
    window, baseline = seconds(a.window), seconds(a.baseline)
    q = queries.Queries.from_config(cfg)
    end_by = time.monotonic() + total
    results: list[Result] = []

    def get(target: str, start: int) -> Points:
        return render(web_url, target, start, now_i, min(end_by, time.monotonic() + timeout), max_bytes)

    try:
        requests = get(q.requests_by_origin_handler(), now_i - window - baseline)
        cpr = get(q.calls_per_request_by_origin_function(), now_i - window - baseline)
        p99 = get(q.p99_by_handler(), now_i - window)
        leaks = get(q.leak_suspects_by_origin(), now_i - window)
    except GraphiteError as e:
        return _summary([Result("graphite", UNKNOWN, str(e))])
    if not requests:
        results.append(Result("graphite", UNKNOWN, f"no callwatch metrics under '{q.pattern.handler('requests')}' "
                              "(wrong --config prefix, or nothing sent yet)"))
        return _summary(results)
    rule = Rule(a.spike_warning, a.spike_floor, max(1, baseline // cfg.graphite.interval), cfg.spikes.min_requests)
    results.append(_no_data(requests, now_i, a.no_data_minutes))
    results.append(_spikes(requests, cpr, now_i - window, rule, a))
    results.append(_p99(p99, a))
    results.append(_leaks(leaks))
    return _summary(results)


def _leaks(suspects: Points) -> Result:
    latest = {origin: max(pts, key=lambda p: p[1])[0] for origin, pts in suspects.items() if pts}
    found = {origin: int(n) for origin, n in sorted(latest.items()) if n > 0}
    if not found:
        return Result("leak", OK, "no leak suspects" if latest else "no census in the window", {})
    where = ", ".join(f"{n} on {origin or 'the host'}" for origin, n in found.items())
    return Result("leak", WARNING, f"types suspected of leaking: {where} (process.memory.types.*.suspect)",
                  {"suspects": found})


def _no_data(requests: Points, now: int, minutes: float) -> Result:
    last = max((t for pts in requests.values() for _, t in pts), default=None)
    if last is None or now - last > minutes * 60:
        ago = "never" if last is None else f"{now - last} s ago"
        return Result("no_data", CRITICAL, f"no requests reported for {minutes:g} min (last point {ago})",
                      {"last_point": last})
    return Result("no_data", OK, f"last point {now - last} s ago", {"last_point": last})


@dataclass(frozen=True)
class _Verdict:
    status: int
    ratio: float
    origin: str
    handler: str
    function: str
    current: float
    baseline: float


def _latest(pts: list[tuple[float, int]], req: dict[int, float], window_start: int,
            rule: Rule) -> tuple[float, float, bool] | None:
    """The spike definition replayed over one series: (value, baseline, spike) of its latest
    judged interval, if that is in the window and had a baseline."""
    hist = Baseline(rule.baseline_intervals)
    last: tuple[float, float | None, bool, int] | None = None
    for value, t in sorted(pts, key=lambda p: p[1]):
        if req.get(t, 0) >= rule.min_requests:
            base, spiking = hist.judge(value, rule)
            last = (value, base, spiking, t)
    if last is None or last[1] is None or last[3] < window_start:
        return None
    return last[0], last[1], last[2]


def _spikes(requests: Points, cpr: Points, window_start: int, rule: Rule, a: AlertsConfig) -> Result:
    reqs = {queries.fields(k, 2): dict((t, v) for v, t in pts) for k, pts in requests.items()}
    worst: _Verdict | None = None
    judged = 0
    for name, pts in cpr.items():
        origin, handler, function = queries.fields(name, 3)
        got = _latest(pts, reqs.get((origin, handler), {}), window_start, rule)
        if got is None:
            continue
        judged += 1
        current, base, spiking = got
        ratio = min(current / base if base else math.inf, 1e9)
        status = (CRITICAL if ratio >= a.spike_critical else WARNING) if spiking else OK
        v = _Verdict(status, ratio, origin, handler, function, current, base)
        if worst is None or (v.status, v.ratio) > (worst.status, worst.ratio):
            worst = v
    if worst is None:
        return Result("spike", OK, "nothing to compare yet (no origin x handler x function with both a baseline "
                      "and a judged interval in the window)", {"pairs": 0})
    w = worst
    msg = (f"{judged} origin x handler x function series; worst {w.handler}/{w.function} on "
           f"{w.origin or 'the one origin'}: {w.current:.2f} calls/request vs baseline {w.baseline:.2f} "
           f"(x{w.ratio:.2f}; warning x{a.spike_warning:g}, critical x{a.spike_critical:g})")
    return Result("spike", w.status, msg, {"pairs": judged, "origin": w.origin, "handler": w.handler,
                                           "function": w.function, "current": w.current,
                                           "baseline": w.baseline, "ratio": w.ratio})


def _p99(p99: Points, a: AlertsConfig) -> Result:
    worst = max(((max(v for v, _ in pts), h) for h, pts in p99.items() if pts), default=None)
    if worst is None:
        return Result("p99", OK, "no response times in the window", {})
    value, handler = worst
    status = CRITICAL if value >= a.p99_critical_ms else WARNING if value >= a.p99_warning_ms else OK
    return Result("p99", status, f"worst {handler}: {value:.1f} ms (warning {a.p99_warning_ms:g} ms, "
                  f"critical {a.p99_critical_ms:g} ms)", {"handler": handler, "p99_ms": value})


def _summary(results: list[Result]) -> list[Result]:
    worst = max(r.status for r in results)
    counts = {n: sum(1 for r in results if r.status == s) for s, n in NAMES.items()}
    msg = ", ".join(f"{c} {n.lower()}" for n, c in counts.items() if c)
    results.append(Result("callwatch", worst, msg))
    return results


def to_json(results: list[Result]) -> str:
    return json.dumps({"status": NAMES[results[-1].status], "code": results[-1].status,
                       "results": [asdict(r) | {"status": NAMES[r.status]} for r in results[:-1]]}, indent=2)


def post_webhook(url: str, results: list[Result], timeout: float = 5.0) -> None:
    req = urllib.request.Request(url, data=to_json(results).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()
