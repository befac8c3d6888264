"""The demo's memory story: ``game.HISTORY`` grows at a full table; the census and a leak
hunt (``memory:``) show which type grows and what holds it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TextIO

from .. import config as cwconfig
from .._leakhunt import REPORT
from ..naming import Pattern
from . import game

LEAKING = "callwatch.demo.game.HandRecord"


def configure(cfg: cwconfig.Config, output: Path | None) -> cwconfig.Config:
    """``cfg`` with a census at every flush and, with ``output``, leak hunts under it.  The
    game forgets its history first: the demo may run several times in one process."""
    game.HISTORY.clear()
    hunt_dir = None
    if output is not None:
        hunt_dir = output / "leaks"
        hunt_dir.mkdir(parents=True, exist_ok=True)
    memory = cwconfig.MemoryConfig(gc=False, process=False, census_every=1, leak_window=2,
                                   hunt_dir=str(hunt_dir) if hunt_dir else None)
    return dataclasses.replace(cfg, memory=memory)


def start_hunt(cfg: cwconfig.Config, seconds: float) -> None:
    """Hunt in this process for ``seconds`` from the next flush (the demo's whole run)."""
    if cfg.memory is not None and cfg.memory.hunt_dir:
        (Path(cfg.memory.hunt_dir) / f"start.{os.getpid()}").write_text(f"{seconds:g}\n")


def report(out: TextIO, cfg: cwconfig.Config) -> Path | None:
    """Print what the hunt found about the leaking type; -> the report, if one was written."""
    out.write(f"\n== Memory: {len(game.HISTORY):,} {LEAKING} objects kept by the 7-player deals")
    if cfg.memory is None or not cfg.memory.hunt_dir:
        out.write(" (no leak hunt: run with an output directory)\n")
        return None
    reports = sorted(Path(cfg.memory.hunt_dir).glob(f"*/{REPORT}"))
    if not reports:
        out.write(" (the leak hunt did not finish: run longer)\n")
        return None
    text = reports[-1].read_text()
    out.write(f"; the leak hunt's report: {reports[-1]}\n")
    lines = text.splitlines()
    grew = [ln for ln in lines if ln.strip().startswith(LEAKING + ":")]
    out.write("".join(f"   {ln.strip()}\n" for ln in grew))
    start = next((i for i, ln in enumerate(lines) if ln.startswith(f"What holds a {LEAKING} ")), None)
    if start is not None:
        out.write("   what holds them:\n")
        for ln in lines[start + 1:]:
            if not ln.strip():
                break
            out.write(f"   {ln}\n")
    out.write(f"   (the same with: callwatch leaks {cfg.memory.hunt_dir})\n")
    return reports[-1]


def graphite_hint(cfg: cwconfig.Config) -> str:
    """The census series of the leaking type, to chart."""
    return Pattern.from_config(cfg).process(f"memory.types.{LEAKING.replace('.', '_')}.count")
