"""Call-count spikes: the one definition, and the in-process detector.

The definition, implemented by the in-process detector (here), ``callwatch alerts check``
(:mod:`callwatch.alerts`) and the generated Grafana alert rule (:mod:`callwatch.grafana`):

- **Series.** One origin (a process: host and worker slot) x handler x watched function
  (the detector judges groups the same way; ``alerts check`` and the Grafana rule judge
  watched functions).  Origins are never summed: each is judged on its own calls and requests, and one origin
  spiking is a spike.  A cause local to one worker (its cache gone cold) would be diluted
  by the number of workers in a sum, and the in-process detector only sees its process.
- **Value.** The calls per request of one interval (calls / requests of the handler in
  that interval and process: the ``calls_per_request.mean`` series).  An interval with
  fewer than ``min_requests`` requests of the handler is not judged.
- **Baseline.** The median of the values of the last ``N`` judged intervals that were not
  spikes (none before 3 such intervals).  A spiking interval does not move the baseline,
  so a lasting change stays a spike until it is dealt with.
- **Spike.** ``value >= floor`` and ``value > baseline`` and ``value >= factor x baseline``.
- **Verdict now.** The latest judged interval (``alerts check``: within ``alerts.window``).

Parameters: in-process ``spikes.factor``, ``floor``, ``baseline_intervals`` (N) and
``min_requests``; ``alerts check`` and Grafana ``alerts.spike_warning`` (factor; CRITICAL
from ``spike_critical``), ``spike_floor``, N = ``alerts.baseline`` / ``graphite.interval``
and ``spikes.min_requests``.

The Grafana rule is Graphite's nearest expression, per origin series::

    divideSeriesLists(removeBelowValue(cpr, floor), movingMedian(cpr, '<alerts.baseline>'))

its last value above ``spike_warning``.  Where Graphite cannot follow the definition:

1. ``movingMedian`` takes every interval of the baseline period, spiking ones too: a spike
   lasting over half the baseline becomes the baseline and the rule clears, while the
   detector and ``alerts check`` still see a spike
   (``tests/test_spike_consistency.py::test_a_lasting_spike_clears_only_in_grafana``).
2. Grafana's classic conditions have no ``>=``: at exactly factor x the baseline the rule
   does not fire.
3. ``min_requests`` and the 3-interval minimum are not applied (Graphite cannot filter one
   series' points by another series), and a baseline of 0 divides to null: calls where
   there were none are not a spike to Grafana.
4. ``movingMedian`` counts time, not judged intervals: idle intervals shorten its history.

**Response-time incidents.**  The same rule (:class:`Rule`, :class:`Baseline`) judges each
origin x handler's mean response time per interval (ms; ``factor``, ``baseline_intervals`` and
``min_requests`` as above, the floor :data:`RESPONSE_FLOOR_MS` instead of a call count).  At
an incident's start the detector explains it (:mod:`callwatch.explain`: the interval against
its baseline intervals pooled) and, with ``graphite.web_url``, posts one event whose text is
the short explanation, tagged callwatch, explain and the handler's metric name: what the
generated handler dashboard's annotation query asks for.

The detector runs in the flush thread, on numbers the snapshot already has: nothing on the
request path.  At a spike's start it logs one warning, sends ``...watch.<f>.spike`` (the
ratio) while the spike lasts, and, with ``graphite.web_url``, posts a Graphite event
(tags: callwatch, spike, the handler, the function) so dashboards annotate the moment.
"""

from __future__ import annotations

import collections
import json
import logging
import statistics
import threading
import urllib.request
from dataclasses import dataclass
from typing import Callable

from ._pooling import Totals
from .aggregate import BACKGROUND, Snapshot
from .config import SpikesConfig


log = logging.getLogger("callwatch")

__all__ = ["RESPONSE_FLOOR_MS", "Baseline", "Rule", "Spike", "SpikeDetector", "post_event"]

#: a response-time incident needs a mean of at least this many ms (the rule's floor)
RESPONSE_FLOOR_MS = 1.0
#: tags of the response-time incident events, before the handler's metric name
EXPLAIN_TAGS = ("callwatch", "explain")


@dataclass(frozen=True)
class Rule:
    """The definition's parameters (see the module docstring)."""

    factor: float
    floor: float
    baseline_intervals: int
    min_requests: int

    @classmethod
    def from_config(cls, cfg: SpikesConfig) -> Rule:
        """The in-process detector's rule (the ``spikes:`` section)."""
        return cls(cfg.factor, cfg.floor, cfg.baseline_intervals, cfg.min_requests)

    def for_response_time(self) -> Rule:
        """The same rule judging a mean response time (ms): only the floor differs."""
        return Rule(self.factor, RESPONSE_FLOOR_MS, self.baseline_intervals, self.min_requests)


class Baseline:
    """The judged history of one origin x handler x function."""

    __slots__ = ("values",)

    def __init__(self, intervals: int) -> None:
        self.values: collections.deque[float] = collections.deque(maxlen=intervals)

    def judge(self, value: float, rule: Rule) -> tuple[float | None, bool]:
        """(the baseline ``value`` was compared with, or None; whether it is a spike).

        A value that is not a spike joins the baseline."""
        base = statistics.median(self.values) if len(self.values) >= 3 else None
        spiking = (base is not None and value >= rule.floor and value > base
                   and value >= rule.factor * base)
        if not spiking:
            self.values.append(value)
        return base, spiking


@dataclass(frozen=True)
class Spike:
    """A spike's start: a handler's watched function or group, its calls per request in
    the interval that began at ``when``, and the baseline it was judged against."""

    handler: str
    function: str  # entry name; groups as the group's name
    is_group: bool
    baseline: float
    value: float
    when: float

    @property
    def ratio(self) -> float:
        """The value over the baseline (inf for a baseline of 0)."""
        return self.value / self.baseline if self.baseline else float("inf")

    def describe(self) -> str:
        """One line for the log and the Graphite event."""
        kind = "group" if self.is_group else "function"
        return (f"callwatch spike: handler {self.handler}, {kind} {self.function}: "
                f"{self.value:.2f} calls/request, baseline {self.baseline:.2f} (x{self.ratio:.2f})")


def post_event(web_url: str, what: str, tags: list[str], data: str, when: float, timeout: float = 2.0) -> None:
    """POST a Graphite event (graphite-web ``/events/``); raises on failure."""
    body = json.dumps({"what": what, "tags": tags, "data": data, "when": int(when)}).encode()
    req = urllib.request.Request(web_url.rstrip("/") + "/events/", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()


class SpikeDetector:
    """A snapshot sink: judges each interval, keeps the active spikes in ``snap.spikes``."""

    def __init__(self, cfg: SpikesConfig, web_url: str | None = None,
                 on_spike: Callable[[Spike], None] | None = None) -> None:
        self.cfg = cfg
        self.rule = Rule.from_config(cfg)
        self.web_url = web_url
        self.on_spike = on_spike
        self.response_rule = self.rule.for_response_time()
        self._responses: dict[str, _ResponseHistory] = {}
        self._incidents: set[str] = set()
        self.incidents_seen = 0
        self._history: dict[tuple[str, str, bool], Baseline] = {}
        self._active: dict[tuple[str, str, bool], Spike] = {}
        self.spikes_seen = 0
        self._event_failing = False
        self._lock = threading.Lock()

    def __call__(self, snap: Snapshot) -> None:
        with self._lock:
            self._judge(snap)
            try:
                self._judge_responses(snap)
            except Exception:  # never into the host: the call-count verdicts stand
                log.exception("callwatch: judging response times failed")

    def _judge_responses(self, snap: Snapshot) -> None:
        rule = self.response_rule
        for handler, totals in Totals.of(snap).items():
            if totals.requests < rule.min_requests:
                continue
            hist = self._responses.get(handler)
            if hist is None:
                if len(self._responses) >= 10_000:
                    continue
                hist = self._responses[handler] = _ResponseHistory(rule.baseline_intervals)
            before = list(hist.totals)
            base, spiking = hist.values.judge(totals.ns / totals.requests / 1e6, rule)
            if not spiking:
                hist.totals.append(totals)
                self._incidents.discard(handler)
            elif handler not in self._incidents:
                self._incidents.add(handler)
                self._incident(handler, before, totals, snap.start)

    def _incident(self, handler: str, before: list[Totals], after: Totals, when: float) -> None:
        from .explain import explain, pool, short_text, to_dict
        from .naming import sanitize

        self.incidents_seen += 1
        e = explain(handler, pool(before), pool([after]))
        text = short_text(e)
        log.warning("callwatch: response-time incident: %s", text)
        if self.web_url:
            self._post(text, [*EXPLAIN_TAGS, sanitize(handler)], json.dumps(to_dict(e)), when)

    def _post(self, what: str, tags: list[str], data: str, when: float) -> None:
        assert self.web_url is not None
        try:
            post_event(self.web_url, what, tags, data, when)
            self._event_failing = False
        except Exception as e:
            if not self._event_failing:
                self._event_failing = True
                log.warning("callwatch: cannot post the event to %s (%s)", self.web_url, e)

    def _judge(self, snap: Snapshot) -> None:
        rule = self.rule
        active_now: dict[tuple[str, str, bool], float] = {}
        for handler, hs in snap.handlers.items():
            if not isinstance(handler, str) or handler == BACKGROUND or hs.requests < rule.min_requests:
                continue
            for k, fs in hs.funcs.items():
                e = snap.entries[k]
                if e.runtime:  # collections per request: not a call count the rule is about
                    continue
                key = (handler, e.name, e.is_group)
                value = fs.calls / hs.requests
                hist = self._history.get(key)
                if hist is None:
                    if len(self._history) >= 10_000:
                        continue
                    hist = self._history[key] = Baseline(rule.baseline_intervals)
                baseline, spiking = hist.judge(value, rule)
                if spiking:
                    assert baseline is not None
                    active_now[key] = value / baseline if baseline else float("inf")
                    if key not in self._active:
                        spike = Spike(handler, e.name, e.is_group, baseline, value, snap.start)
                        self._active[key] = spike
                        self._started(spike)
                else:
                    self._active.pop(key, None)
        snap.spikes = active_now

    def _started(self, spike: Spike) -> None:
        self.spikes_seen += 1
        log.warning("%s", spike.describe())
        if self.on_spike is not None:
            try:
                self.on_spike(spike)
            except Exception:
                log.exception("callwatch: on_spike callback failed")
        if self.web_url:
            self._post(spike.describe(), ["callwatch", "spike", spike.handler, spike.function],
                       json.dumps({"handler": spike.handler, "function": spike.function,
                                   "baseline": spike.baseline, "value": spike.value}), spike.when)


class _ResponseHistory:
    """One handler's judged mean response times and the non-spiking intervals' totals."""

    __slots__ = ("values", "totals")

    def __init__(self, intervals: int) -> None:
        self.values = Baseline(intervals)
        self.totals: collections.deque[Totals] = collections.deque(maxlen=intervals)
