"""Writes the YAML the test apps load through CALLWATCH_CONFIG."""

from __future__ import annotations

from pathlib import Path


def write(path: Path, *, port: int, prefix: str, slot_dir: Path, interval: int = 1, memory: bool = False) -> Path:
    path.write_text(
        f"graphite:\n  host: 127.0.0.1\n  port: {port}\n  prefix: {prefix}\n  interval: {interval}\n"
        f"naming:\n  host: h\n  slot_dir: {slot_dir}\n"
        "watch:\n"
        "  - {target: 'apps.shop:get_*', group: db}\n"
        "  - {target: 'apps.shop:aget_*', group: db}\n"
        "  - {target: 'apps.shop:cache_*', group: cache}\n"
        + ("memory: {}\n" if memory else "")
    )
    return path
