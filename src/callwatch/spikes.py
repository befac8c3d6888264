"""In-process spike detection: a handler suddenly making more calls of a watched function.

At every flush, for each handler x watched function (and group), the interval's calls per
request are compared with the median of the same pair's last ``baseline_intervals``
intervals.  At least ``factor`` times the baseline and at least ``floor`` calls per request
is a spike: one warning is logged, ``handler.<h>.watch.<f>.spike`` is sent (the ratio),
and, with ``graphite.web_url``, a Graphite event is posted (tags: callwatch, spike, the
handler, the function) so dashboards annotate the moment.  Nothing is repeated while the
spike lasts; it ends when calls per request fall below ``factor`` x the baseline again.
The baseline does not learn from spiking intervals, so a lasting change stays a spike
until it is dealt with (or until callwatch restarts).

Runs in the flush thread, on numbers the snapshot already has: nothing on the request path.
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

from .aggregate import BACKGROUND, Snapshot
from .config import SpikesConfig

log = logging.getLogger("callwatch")

__all__ = ["Spike", "SpikeDetector", "post_event"]


@dataclass(frozen=True)
class Spike:
    handler: str
    function: str  # entry name; groups as the group's name
    is_group: bool
    baseline: float
    value: float
    when: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    def describe(self) -> str:
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
        self.web_url = web_url
        self.on_spike = on_spike
        self._history: dict[tuple[str, str, bool], collections.deque[float]] = {}
        self._active: dict[tuple[str, str, bool], Spike] = {}
        self.spikes_seen = 0
        self._event_failing = False
        self._lock = threading.Lock()

    def __call__(self, snap: Snapshot) -> None:
        with self._lock:
            self._judge(snap)

    def _judge(self, snap: Snapshot) -> None:
        cfg = self.cfg
        active_now: dict[tuple[str, str, bool], float] = {}
        for handler, hs in snap.handlers.items():
            if not isinstance(handler, str) or handler == BACKGROUND or hs.requests < cfg.min_requests:
                continue
            for k, fs in hs.funcs.items():
                e = snap.entries[k]
                key = (handler, e.name, e.is_group)
                value = fs.calls / hs.requests
                hist = self._history.get(key)
                if hist is None:
                    if len(self._history) >= 10_000:
                        continue
                    hist = self._history[key] = collections.deque(maxlen=cfg.baseline_intervals)
                baseline = statistics.median(hist) if len(hist) >= 3 else None
                spiking = (baseline is not None and value >= cfg.floor and value > baseline
                           and value >= cfg.factor * baseline)
                if spiking:
                    assert baseline is not None
                    active_now[key] = value / baseline if baseline else float("inf")
                    if key not in self._active:
                        spike = Spike(handler, e.name, e.is_group, baseline, value, snap.start)
                        self._active[key] = spike
                        self._started(spike)
                else:
                    hist.append(value)  # a spiking interval does not move the baseline
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
            try:
                post_event(self.web_url, spike.describe(),
                           ["callwatch", "spike", spike.handler, spike.function],
                           json.dumps({"handler": spike.handler, "function": spike.function,
                                       "baseline": spike.baseline, "value": spike.value}),
                           spike.when)
                self._event_failing = False
            except Exception as e:
                if not self._event_failing:
                    self._event_failing = True
                    log.warning("callwatch: cannot post the spike event to %s (%s)", self.web_url, e)
