"""The master's export statistics store (ganeti.backup.export_stats): real files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
from pathlib import Path

import pytest

from ganeti.backup import export_stats
from ganeti.backup.export_stats import ExportStats


def store(tmp_path: Path) -> ExportStats:
    return ExportStats(tmp_path / export_stats.STATS_NAME)


def success(stats: ExportStats, uuid: str = "u1", name: str = "web1", when: float = 1000.0,
            **extra: object) -> export_stats.ExportRecord:
    fields = {"finished": when, "duration": 12.5, "wire_bytes": 300, "data_bytes": 1000,
              "disk_bytes": 4096, "target": "node3", **extra}
    return stats.record_success(uuid, name, **fields)  # type: ignore[arg-type]


def test_never_exported_has_no_record(tmp_path: Path) -> None:
    stats = store(tmp_path)
    assert stats.all() == {}
    assert stats.get("u1") is None


def test_success_then_failures_then_success_resets(tmp_path: Path) -> None:
    stats = store(tmp_path)
    rec = success(stats)
    assert (rec.last_success, rec.duration, rec.wire_bytes, rec.data_bytes, rec.disk_bytes,
            rec.target, rec.failures) == (1000.0, 12.5, 300, 1000, 4096, "node3", 0)
    for count in (1, 2, 3):
        rec = stats.record_failure("u1", "web1", when=2000.0 + count, error="target offline")
        assert rec.failures == count
    # the last success is kept through the failures
    assert (rec.last_success, rec.wire_bytes, rec.last_failure, rec.last_error) == (
        1000.0, 300, 2003.0, "target offline")
    rec = success(stats, when=3000.0, wire_bytes=10)
    assert (rec.failures, rec.last_success, rec.wire_bytes) == (0, 3000.0, 10)
    # the last failure stays visible (when did it last go wrong)
    assert rec.last_failure == 2003.0


def test_failure_without_any_success(tmp_path: Path) -> None:
    stats = store(tmp_path)
    rec = stats.record_failure("u1", "web1", when=5.0, error="x" * 10_000)
    assert rec.last_success is None and rec.failures == 1
    assert rec.last_error is not None and len(rec.last_error) == export_stats.ERROR_MAX


def test_survives_a_restart_and_keeps_others(tmp_path: Path) -> None:
    success(store(tmp_path), "u1", "web1")
    store(tmp_path).record_failure("u2", "db1", when=7.0, error="boom")
    export_stats._CACHE.clear()  # a new process: nothing cached
    again = store(tmp_path).all()
    assert sorted(again) == ["u1", "u2"]
    assert again["u1"].wire_bytes == 300 and again["u2"].failures == 1
    raw = json.loads((tmp_path / export_stats.STATS_NAME).read_text())
    assert raw["version"] == export_stats.FORMAT_VERSION
    assert (tmp_path / export_stats.STATS_NAME).stat().st_mode & 0o777 == 0o600


def test_removed_instances_are_dropped(tmp_path: Path) -> None:
    stats = store(tmp_path)
    success(stats, "u1")
    success(stats, "u2", "db1")
    success(stats, "u3", "mail1", known=lambda: ["u3", "u1"])
    assert sorted(stats.all()) == ["u1", "u3"]


def test_damaged_record_is_dropped_alone(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    stats = store(tmp_path)
    success(stats, "u1")
    success(stats, "u2", "db1")
    path = tmp_path / export_stats.STATS_NAME
    doc = json.loads(path.read_text())
    doc["instances"]["u2"]["failures"] = "many"
    path.write_text(json.dumps(doc))
    export_stats._CACHE.clear()
    with caplog.at_level(logging.WARNING):
        assert sorted(stats.all()) == ["u1"]
    assert "u2" in caplog.text
    # the next record keeps the good ones
    stats.record_failure("u3", "mail1", when=1.0, error="e")
    assert sorted(stats.all()) == ["u1", "u3"]


@pytest.mark.parametrize("damage", [b"{\"version\": 1, \"instances\": {\"u1\": {", b"",
                                    b"\x00\x00garbage", b"[1, 2]"])
def test_damaged_file_falls_back_to_previous_version(tmp_path: Path, damage: bytes) -> None:
    stats = store(tmp_path)
    success(stats, "u1")
    success(stats, "u2", "db1")  # the version with u1 only is now .prev... u1+u2 current
    stats.record_failure("u2", "db1", when=9.0, error="e")
    path = tmp_path / export_stats.STATS_NAME
    path.write_bytes(damage)
    export_stats._CACHE.clear()
    # the previous version: everything but the last change (u2's failure)
    records = stats.all()
    assert sorted(records) == ["u1", "u2"] and records["u2"].failures == 0
    # recording again starts from that version; the damaged file never becomes .prev
    stats.record_failure("u1", "web1", when=10.0, error="e")
    export_stats._CACHE.clear()
    records = stats.all()
    assert records["u1"].failures == 1 and records["u2"].failures == 0
    prev = json.loads(path.with_name(path.name + ".prev").read_text())
    assert sorted(prev["instances"]) == ["u1", "u2"]


def test_damaged_file_without_previous_version(tmp_path: Path) -> None:
    path = tmp_path / export_stats.STATS_NAME
    path.write_text("not json")
    stats = store(tmp_path)
    assert stats.all() == {}
    stats.record_failure("u1", "web1", when=1.0, error="e")
    assert stats.get("u1") is not None


def test_cache_sees_changes_by_another_writer(tmp_path: Path) -> None:
    stats = store(tmp_path)
    success(stats, "u1")
    assert stats.get("u1") is not None
    # another process rewrites the file (a new inode): the cache notices
    other = tmp_path / "other.json"
    ExportStats(other).record_failure("u9", "x", when=1.0, error="e")
    (tmp_path / export_stats.STATS_NAME).write_bytes(other.read_bytes())
    assert sorted(stats.all()) == ["u9"]


def test_concurrent_records_lose_nothing(tmp_path: Path) -> None:
    threads_n, per_thread = 8, 15
    errors: list[BaseException] = []

    def work(idx: int) -> None:
        try:
            for n in range(per_thread):
                # each thread its own store object: they share the file and its locks
                stats = store(tmp_path)
                if n % 3 == 0:
                    success(stats, f"u{idx}", f"i{idx}", when=float(n))
                else:
                    stats.record_failure(f"u{idx}", f"i{idx}", when=float(n), error="e")
                stats.record_failure("shared", "s", when=float(n), error="e")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    export_stats._CACHE.clear()
    records = store(tmp_path).all()
    assert len(records) == threads_n + 1
    # every increment of the shared record survived
    assert records["shared"].failures == threads_n * per_thread
    for idx in range(threads_n):
        # the last success was n=12; failures 13 and 14 came after it
        assert records[f"u{idx}"].failures == 2
        assert records[f"u{idx}"].last_success == 12.0


def _fail_many(path: str, count: int) -> None:
    stats = ExportStats(Path(path))
    for n in range(count):
        stats.record_failure("shared", "s", when=float(n), error="e")


def test_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    """Across processes only the flock serialises writers."""
    ctx = multiprocessing.get_context("fork")
    path = str(tmp_path / export_stats.STATS_NAME)
    procs = [ctx.Process(target=_fail_many, args=(path, 20)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    export_stats._CACHE.clear()
    assert store(tmp_path).all()["shared"].failures == 60
