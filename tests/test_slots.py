"""Worker slots: small stable numbers per live process, and the partial-interval hand-off."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from callwatch._slots import FALLBACK_SLOTS, FallbackSlot, Slot, SlotError, take

from conftest import TcpReceiver


def test_lowest_free_slot_is_taken_and_freed_on_release(tmp_path: Path) -> None:
    a, b, c = (Slot(tmp_path, "cw.h") for _ in range(3))
    assert (a.claim(), b.claim()) == (0, 1)
    a.release()
    assert c.claim() == 0  # the slot a left
    other = Slot(tmp_path, "other.app")
    assert other.claim() == 0  # keys do not share slots
    for s in (b, c, other):
        s.release()


def test_handoff_is_read_once(tmp_path: Path) -> None:
    a = Slot(tmp_path, "k")
    a.claim()
    a.leave_handoff({"start": 10, "x": [1, 2]})
    a.release()
    b = Slot(tmp_path, "k")
    assert b.claim() == 0
    assert b.take_handoff() == {"start": 10, "x": [1, 2]}
    assert b.take_handoff() is None
    b.release()


def test_a_shared_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    with pytest.raises(SlotError, match="is not a private directory"):
        Slot(d, "k").claim()


def unusable_dirs(tmp_path: Path) -> list[Path]:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could plant lock files: refused
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    return [shared, a_file / "slots", tmp_path / ("x" * 300)]  # not private, not a directory, too long


def test_an_unusable_slot_directory_gives_unique_fallback_names(tmp_path: Path) -> None:
    pid = os.getpid()
    for directory in unusable_dirs(tmp_path):
        a, error = take(directory, "cw.h")
        b, _ = take(directory, "cw.h")
        assert isinstance(error, (OSError, SlotError)), directory
        assert isinstance(a, FallbackSlot) and isinstance(b, FallbackSlot)
        # held at once: different names, from pid mod 64 upwards
        assert (a.name, b.name) == (f"p{pid % 64}", f"p{(pid + 1) % 64}")
        a.release()
        c, _ = take(directory, "cw.h")
        assert c.name == a.name  # freed on release (and by the kernel when a process dies)
        other, _ = take(directory, "other.app")
        assert other.name == a.name  # keys do not share names
        for s in (b, c, other):
            s.release()
    assert FALLBACK_SLOTS == 64


def test_fallback_names_stay_within_the_cap(tmp_path: Path) -> None:
    held = [FallbackSlot("cap.test") for _ in range(FALLBACK_SLOTS + 1)]
    try:
        for s in held:
            s.claim()
        names = [s.name for s in held]
        assert sorted(names[:-1]) == sorted(f"p{n}" for n in range(FALLBACK_SLOTS))
        assert names[-1] == f"pid{os.getpid()}"  # all 64 held: the pid, unique but unbounded
    finally:
        for s in held:
            s.release()


def test_the_fallback_is_said_once_per_process(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import callwatch
    from callwatch import _runtime

    monkeypatch.setattr(_runtime, "_fallback_warned", False)
    shared, _, _ = unusable_dirs(tmp_path)
    cfg = {"graphite": {"interval": 60, "prefix": "fb"}, "naming": {"host": "h", "slot_dir": str(shared)}}
    with caplog.at_level(logging.WARNING, logger="callwatch"):
        for _ in range(3):
            rt = callwatch.configure(cfg, start_thread=False, strict=True)
            assert rt is not None and rt.worker == f"p{os.getpid() % 64}"
    assert [r.getMessage() for r in caplog.records] == [
        f"callwatch: cannot take a worker slot in {shared} ({shared} is not a private directory of this user "
        f"(owner {os.getuid()}, mode 777); set naming.slot_dir to one); this process sends as worker "
        f"p{os.getpid() % 64}, a name no other live process uses. Fix: set naming.slot_dir to a directory "
        "that only this user can write"]


CHILD = textwrap.dedent("""
    import sys, time, callwatch
    port, slot_dir, n, hold = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    rt = callwatch.configure({"graphite": {"host": "127.0.0.1", "port": port, "interval": 86400, "prefix": "sl"},
                              "naming": {"host": "h", "slot_dir": slot_dir}}, strict=True)
    print(rt.worker, int(rt.exporter.collector.start), flush=True)
    for _ in range(n):
        with callwatch.request("job"):
            pass
    time.sleep(hold)
""")


def run_child(port: int, slot_dir: Path, n: int, hold: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(slot_dir), str(n), str(hold)],
                            stdout=subprocess.PIPE, text=True)


def test_processes_get_their_own_slots_and_a_successor_completes_the_interval(
        tcp_receiver: TcpReceiver, tmp_path: Path) -> None:
    a = run_child(tcp_receiver.port, tmp_path, 3, hold=3.0)
    a_worker, a_start = a.stdout.readline().split()  # type: ignore[union-attr]
    b = run_child(tcp_receiver.port, tmp_path, 4)
    b_worker, _ = b.stdout.readline().split()  # type: ignore[union-attr]
    assert (a_worker, b_worker) == ("w0", "w1")  # alive at the same time: two slots
    assert b.wait(30) == 0 and a.wait(30) == 0
    c = run_child(tcp_receiver.port, tmp_path, 2)  # a and b are gone: c takes w0, a's slot
    c_worker, c_start = c.stdout.readline().split()  # type: ignore[union-attr]
    assert c.wait(30) == 0
    assert c_worker == "w0"
    sent = [line.split() for line in tcp_receiver.data.decode().splitlines()]
    w0 = [(int(v), int(t)) for n, v, t in sent if n == "sl.h_w0.handler.job.requests"]
    w1 = [(int(v), int(t)) for n, v, t in sent if n == "sl.h_w1.handler.job.requests"]
    assert w1 == [(4, int(b_start_of(sent, "w1")))]
    if c_start == a_start:
        # same interval: c merged a's partial interval, so the last value carbon keeps is 3 + 2
        assert w0 == [(3, int(a_start)), (5, int(a_start))]
    else:  # the run crossed an interval boundary (midnight UTC): nothing to merge
        assert w0 == [(3, int(a_start)), (2, int(c_start))]


def b_start_of(sent: list[list[str]], worker: str) -> str:
    return next(t for n, _, t in sent if n == f"sl.h_{worker}.handler.job.requests")


def test_configure_again_in_the_same_interval_under_a_fallback_name_resends_the_whole_interval(
        tmp_path: Path) -> None:
    import callwatch
    from callwatch.testing import FakeClock, RecordingSender

    shared, _, _ = unusable_dirs(tmp_path)
    cfg = {"graphite": {"host": "unused.invalid", "interval": 10, "prefix": "fb"},
           "naming": {"host": "h", "slot_dir": str(shared)}}
    t0 = 1_700_000_000
    clock, sender = FakeClock(t0 + 1), RecordingSender()
    name = f"fb.h_p{os.getpid() % 64}.handler.job.requests"
    with clock:
        callwatch.configure(cfg, sender=sender, clock=clock, start_thread=False, strict=True)
        for _ in range(3):
            with callwatch.request("job"):
                pass
        clock.advance(2)
        callwatch.configure(cfg, sender=sender, clock=clock, start_thread=False, strict=True)
        assert sender.values()[(name, t0)] == 3
        for _ in range(2):
            with callwatch.request("job"):
                pass
        clock.advance(10)
        callwatch.flush()
    assert sender.values()[(name, t0)] == 5  # carbon keeps the last value: the whole interval
