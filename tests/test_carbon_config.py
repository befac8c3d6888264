"""config/storage-*.conf on a real carbon-cache: roll-ups sum counts, keep maxima, average the rest."""

from __future__ import annotations

import os
import subprocess
import struct
import time
import uuid
from pathlib import Path
from typing import Iterator

import graphyte
import pytest
import whisper

from conftest import ROOT, free_ports

pytestmark = pytest.mark.graphite


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    base = tmp_path_factory.mktemp("carbon-conf")
    line, pickle, query, web = free_ports(4)
    env = dict(os.environ, CARBON_LINE_PORT=str(line), CARBON_PICKLE_PORT=str(pickle),
               CARBON_QUERY_PORT=str(query), GRAPHITE_WEB_PORT=str(web),
               CARBON_SCHEMAS=str(ROOT / "config" / "storage-schemas.conf"),
               CARBON_AGGREGATION=str(ROOT / "config" / "storage-aggregation.conf"))
    up = subprocess.run([str(ROOT / "scripts" / "graphite-up"), str(base)], env=env, capture_output=True,
                        text=True, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"graphite-up failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield base / "carbon-a" / "storage" / "whisper", line
    finally:
        subprocess.run([str(ROOT / "scripts" / "graphite-down"), str(base)], timeout=60)


def test_rolled_up_minutes(stack: tuple[Path, int]) -> None:
    whisper_dir, port = stack
    origin = "w" + uuid.uuid4().hex[:8]
    base = f"callwatch.{origin}.handler.deal"
    minute = (int(time.time()) - 3600) // 60 * 60  # an hour ago: well inside the 10 s archive
    sender = graphyte.Sender("127.0.0.1", port=port)
    series = {
        "requests": [1, 2, 3, 4, 5, 6],
        "watch.get_player.calls": [7, 7, 14, 0, 7, 7],
        "response_ms.max": [5.0, 9.0, 2.0, 4.0, 1.0, 3.0],
        "response_ms.mean": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "watch.get_player.calls_per_request.max": [7, 7, 14, 0, 7, 7],
    }
    for name, values in series.items():
        for i, v in enumerate(values):
            sender.send(f"{base}.{name}", v, timestamp=minute + 10 * i)
    expected = {"requests": 21, "watch.get_player.calls": 42, "response_ms.max": 9.0, "response_ms.mean": 3.5,
                "watch.get_player.calls_per_request.max": 14}
    got = {}
    deadline = time.monotonic() + 20
    for name, want in expected.items():
        path = Path(str(whisper_dir / Path(*f"{base}.{name}".split("."))) + ".wsp")
        while True:
            try:
                info = whisper.info(str(path)) if path.exists() else None
                if info is not None:
                    _, values = whisper.fetch(str(path), minute - 1, minute + 59, archiveToSelect=60)
                    _, tens = whisper.fetch(str(path), minute - 1, minute + 59, archiveToSelect=10)
                    if values and values[0] is not None and None not in tens:
                        break
            except (whisper.CorruptWhisperFile, struct.error):
                pass  # carbon is still writing the new file's header: read it again in a moment
            if time.monotonic() > deadline:
                pytest.fail(f"{path} never got its points")
            time.sleep(0.2)
        assert [a["secondsPerPoint"] for a in info["archives"]] == [10, 60, 600]  # our schema, not the default
        got[name] = values[0]
    assert got == expected
