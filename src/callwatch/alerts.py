"""Alert rules evaluated against graphite-web's render API (``callwatch alerts check``).

Rules (thresholds in the YAML's ``alerts:`` section):

- spike: per handler x watched function, calls per request over the last ``window``
  (summed over every worker and host) against the median of the per-interval values over
  the ``baseline`` before it: WARNING at ``spike_warning`` x, CRITICAL at ``spike_critical``
  x, never below ``spike_floor`` calls per request.
- p99: the worst p99 response time of any handler over the window.
- no_data: no request at all for ``no_data_minutes``.

Status codes follow Nagios/Icinga: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.  Graphite
unreachable or answering nonsense is UNKNOWN with the reason, never a traceback.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from . import queries
from .config import Config

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

__all__ = ["CRITICAL", "OK", "UNKNOWN", "WARNING", "Result", "check", "seconds"]


class GraphiteError(Exception):
    pass


@dataclass
class Result:
    rule: str
    status: int
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{NAMES[self.status]} {self.rule}: {self.message}"


def seconds(period: str) -> int:
    m = re.match(r"^(\d+)(s|min|h|d)$", period)
    if not m:
        raise ValueError(period)
    return int(m.group(1)) * {"s": 1, "min": 60, "h": 3600, "d": 86400}[m.group(2)]


def render(web_url: str, target: str, start: int, end: int, timeout: float = 10.0) -> dict[str, list[tuple[float, int]]]:
    """{series name: [(value, ts)...]} with nulls dropped; GraphiteError on any failure."""
    q = urllib.parse.urlencode({"target": target, "from": start, "until": end, "format": "json"})
    url = f"{web_url.rstrip('/')}/render?{q}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise GraphiteError(f"graphite-web answered HTTP {e.code} for {target}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise GraphiteError(f"graphite-web at {web_url} unreachable ({reason})") from None
    except ValueError:
        raise GraphiteError(f"graphite-web at {web_url} did not answer JSON") from None
    if not isinstance(data, list):
        raise GraphiteError(f"graphite-web at {web_url} answered something that is not a series list")
    return {s["target"]: [(float(v), int(t)) for v, t in s["datapoints"] if v is not None] for s in data}


def check(cfg: Config, web_url: str, now: float | None = None) -> list[Result]:
    """Evaluate every rule; the last Result is the summary."""
    a = cfg.alerts
    now_i = int(time.time() if now is None else now)
    window = seconds(a.window)
    baseline = seconds(a.baseline)
    start = now_i - window - baseline
    q = queries.Queries.from_config(cfg)
    results: list[Result] = []
    try:
        requests = render(web_url, q.requests_by_handler(), start, now_i)
        calls = render(web_url, q.calls_by_handler_function(), start, now_i)
        p99 = render(web_url, q.p99_by_handler(), now_i - window, now_i)
    except GraphiteError as e:
        results.append(Result("graphite", UNKNOWN, str(e)))
        return _summary(results)
    if not requests:
        results.append(Result("graphite", UNKNOWN, f"no callwatch metrics under '{q.base_pattern}' "
                              "(wrong --config prefix, or nothing sent yet)"))
        return _summary(results)

    requests = {q.handler_of(k): v for k, v in requests.items()}
    calls = {".".join(q.pair_of(k)): v for k, v in calls.items()}
    p99 = {q.handler_of(k): v for k, v in p99.items()}
    results.append(_no_data(requests, now_i, a.no_data_minutes))
    results.append(_spikes(requests, calls, now_i - window, a))
    results.append(_p99(p99, a))
    return _summary(results)


def _no_data(requests: dict[str, list[tuple[float, int]]], now: int, minutes: float) -> Result:
    last = max((t for pts in requests.values() for _, t in pts), default=None)
    if last is None or now - last > minutes * 60:
        ago = "never" if last is None else f"{now - last} s ago"
        return Result("no_data", CRITICAL, f"no requests reported for {minutes:g} min (last point {ago})",
                      {"last_point": last})
    return Result("no_data", OK, f"last point {now - last} s ago", {"last_point": last})


def _spikes(requests: dict[str, list[tuple[float, int]]], calls: dict[str, list[tuple[float, int]]],
            window_start: int, a: Any) -> Result:
    worst: tuple[int, float, str, float, float] | None = None
    judged = 0
    for name, pts in calls.items():
        handler, _, function = name.partition(".")
        req = dict((t, v) for v, t in requests.get(handler, []))
        base_vals = [v / req[t] for v, t in pts if t < window_start and req.get(t)]
        now_calls = sum(v for v, t in pts if t >= window_start and req.get(t))
        now_reqs = sum(req[t] for v, t in pts if t >= window_start and req.get(t))
        if not now_reqs or not base_vals:
            continue
        judged += 1
        current = now_calls / now_reqs
        base = statistics.median(base_vals)
        ratio = current / base if base else (float("inf") if current > 0 else 1.0)
        status = OK
        if current >= a.spike_floor and current > base:
            if ratio >= a.spike_critical:
                status = CRITICAL
            elif ratio >= a.spike_warning:
                status = WARNING
        key = (status, min(ratio, 1e9))
        if worst is None or key > (worst[0], worst[1]):
            worst = (status, min(ratio, 1e9), name, current, base)
    if worst is None:
        return Result("spike", OK, "nothing to compare yet (no handler x function with both a baseline and "
                      "recent requests)", {"pairs": 0})
    status, ratio, name, current, base = worst
    handler, _, function = name.partition(".")
    msg = (f"{judged} handler x function pairs; worst {handler}/{function}: {current:.2f} calls/request vs "
           f"baseline {base:.2f} (x{ratio:.2f}; warning x{a.spike_warning:g}, critical x{a.spike_critical:g})")
    return Result("spike", status, msg, {"pairs": judged, "handler": handler, "function": function,
                                         "current": current, "baseline": base, "ratio": ratio})


def _p99(p99: dict[str, list[tuple[float, int]]], a: Any) -> Result:
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
