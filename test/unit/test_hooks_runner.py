"""Node-side hook runner: real scripts in temporary hook directories."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from pathlib import Path

import pytest

from ganeti import constants, errors
from ganeti.hooks import runner
from ganeti.hooks.runner import run_hooks

HPATH = "instance-export"
PRE_DIR = f"{HPATH}-pre.d"


def _script(directory: Path, name: str, body: str, shebang: str = "#!/bin/sh") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"{shebang}\n{body}\n")
    path.chmod(0o755)
    return path


def _pre_dir(hooks: Path) -> Path:
    return hooks / PRE_DIR


def _wait_dead(pid: int, timeout: float = 30.0) -> bool:
    """True once ``pid`` has exited (a zombie counts as dead: init may not reap it)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_missing_directory_gives_no_results(tmp_path: Path) -> None:
    assert run_hooks(tmp_path, HPATH, "pre", {}) == []
    assert run_hooks(tmp_path / "nonexistent", HPATH, "post", {}) == []


@pytest.mark.parametrize(("hpath", "phase"), [
    (HPATH, "middle"), (HPATH, ""), ("a/b", "pre"), ("..", "pre"), ("x..y", "post"), ("", "pre"),
])
def test_invalid_arguments_raise(tmp_path: Path, hpath: str, phase: str) -> None:
    with pytest.raises(errors.HooksFailure):
        run_hooks(tmp_path, hpath, phase, {})


def test_skip_rules(tmp_path: Path) -> None:
    pre = _pre_dir(tmp_path)
    marker = tmp_path / "ran"
    touch = f"echo \"$0\" >> {marker}"
    for bad_name in ("a.sh", "x y", ".hidden"):
        _script(pre, bad_name, touch)
    _script(pre, "noexec", touch).chmod(0o644)
    (pre / "subdir").mkdir()
    (pre / "broken").symlink_to(tmp_path / "does-not-exist")
    target = _script(tmp_path / "elsewhere", "real", touch)
    (pre / "linked").symlink_to(target)
    _script(pre, "10-ok", "echo ok")

    results = run_hooks(tmp_path, HPATH, "pre", {})

    skip, ok = constants.HKR_SKIP, constants.HKR_SUCCESS
    assert results == [
        (f"{PRE_DIR}/.hidden", skip, ""),
        (f"{PRE_DIR}/10-ok", ok, "ok\n"),
        (f"{PRE_DIR}/a.sh", skip, ""),
        (f"{PRE_DIR}/broken", skip, ""),
        (f"{PRE_DIR}/linked", ok, ""),
        (f"{PRE_DIR}/noexec", skip, ""),
        (f"{PRE_DIR}/subdir", skip, ""),
        (f"{PRE_DIR}/x y", skip, ""),
    ]
    # only the symlink to a valid executable ran
    assert marker.read_text().splitlines() == [str(pre / "linked")]


def test_scripts_run_sorted_one_after_another(tmp_path: Path) -> None:
    pre = _pre_dir(tmp_path)
    log = tmp_path / "order"
    names = ["b", "a", "10", "2", "A_x", "a-1"]
    for name in names:
        # start and end markers show that runs never overlap
        _script(pre, name, f"echo start-{name} >> {log}; echo end-{name} >> {log}")

    results = run_hooks(tmp_path, HPATH, "pre", {})

    expected = sorted(names)
    assert [r[0] for r in results] == [f"{PRE_DIR}/{n}" for n in expected]
    assert all(r[1] == constants.HKR_SUCCESS for r in results)
    lines = log.read_text().split()
    assert lines == [f"{kind}-{n}" for n in expected for kind in ("start", "end")]


def test_post_phase_uses_post_directory(tmp_path: Path) -> None:
    _script(_pre_dir(tmp_path), "pre1", "echo pre")
    _script(tmp_path / f"{HPATH}-post.d", "post1", "echo post")
    assert run_hooks(tmp_path, HPATH, "post", {}) == [
        (f"{HPATH}-post.d/post1", constants.HKR_SUCCESS, "post\n"),
    ]


# /proc/self/environ is the environment as exec'd (before Python's locale coercion)
_DUMP_ENV = """
import json, os, sys
raw = open("/proc/self/environ", "rb").read().decode()
print(json.dumps({
    "env": dict(item.split("=", 1) for item in raw.split("\\0") if item),
    "cwd": os.getcwd(),
    "stdin": os.readlink("/proc/self/fd/0"),
    "stdin_data": sys.stdin.read(),
    "own_session": os.getsid(0) == os.getpid(),
}))
"""


def test_environment_is_clean_and_context_isolated(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANETI_LEAK_FROM_PARENT", "1")
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.setenv("USER", "someone")
    _script(_pre_dir(tmp_path), "dump", _DUMP_ENV, shebang=f"#!{sys.executable}")
    env = {
        "GANETI_INSTANCE_NAME": "inst1",
        "GANETI_DISK_COUNT": 2,
        "GANETI_IP": None,
        "GANETI_REMOVE_INSTANCE": False,
        "HOME": "/tmp/evil",
        "LD_PRELOAD": "/tmp/evil.so",
        "PATH": "/tmp/evil",
    }

    [(script, status, output)] = run_hooks(tmp_path, HPATH, "pre", env)

    assert (script, status) == (f"{PRE_DIR}/dump", constants.HKR_SUCCESS)
    seen = json.loads(output)
    assert seen["env"] == {
        "PATH": constants.HOOKS_PATH,
        "GANETI_INSTANCE_NAME": "inst1",
        "GANETI_DISK_COUNT": "2",
        "GANETI_IP": "",
        "GANETI_REMOVE_INSTANCE": "False",
    }
    assert seen["cwd"] == "/"
    assert seen["stdin"] == os.devnull
    assert seen["stdin_data"] == ""
    assert seen["own_session"] is True


def test_invalid_environment_value_is_an_argument_error(tmp_path: Path) -> None:
    _script(_pre_dir(tmp_path), "ok", "true")
    with pytest.raises(errors.HooksFailure):
        run_hooks(tmp_path, HPATH, "pre", {"GANETI_X": "a\0b"})


def test_output_merged_and_exit_status(tmp_path: Path) -> None:
    pre = _pre_dir(tmp_path)
    _script(pre, "1-good", "echo to-stdout; echo to-stderr >&2")
    _script(pre, "2-bad", "echo something broke >&2; exit 3")
    _script(pre, "3-after", "echo still-runs")

    results = run_hooks(tmp_path, HPATH, "pre", {})

    assert results == [
        (f"{PRE_DIR}/1-good", constants.HKR_SUCCESS, "to-stdout\nto-stderr\n"),
        (f"{PRE_DIR}/2-bad", constants.HKR_FAIL, "something broke\n"),
        (f"{PRE_DIR}/3-after", constants.HKR_SUCCESS, "still-runs\n"),
    ]


def test_unexecutable_format_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    pre = _pre_dir(tmp_path)
    pre.mkdir(parents=True)
    path = pre / "noshebang"
    path.write_bytes(b"\x00\x01garbage")
    path.chmod(0o755)

    [(_, status, output)] = run_hooks(tmp_path, HPATH, "pre", {})

    assert status == constants.HKR_FAIL
    assert "Cannot execute" in output


def test_output_is_limited_to_the_tail(tmp_path: Path) -> None:
    size = 3 * runner.OUTPUT_LIMIT
    _script(_pre_dir(tmp_path), "chatty",
            f"echo FIRST; head -c {size} /dev/zero | tr '\\0' a; echo; echo LAST")

    [(_, status, output)] = run_hooks(tmp_path, HPATH, "pre", {})

    assert status == constants.HKR_SUCCESS
    assert output.endswith("LAST\n")
    assert "FIRST" not in output
    assert "truncated" in output.splitlines()[0]
    assert len(output.encode()) < runner.OUTPUT_LIMIT + 200


def _read_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


def _kill_quietly(pids: list[int]) -> None:
    """Leave no stray process behind when an assertion failed."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "needs-sigkill"])
def test_timeout_kills_whole_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           ignore_term: bool) -> None:
    monkeypatch.setattr(runner, "KILL_GRACE", 0.5)
    pids = tmp_path / "pids"
    trap = "trap '' TERM" if ignore_term else ""
    _script(_pre_dir(tmp_path), "hang",
            f"{trap}\nsleep 1000 &\necho $! > {pids}\necho $$ >> {pids}\necho started\nwait")

    [(_, status, output)] = run_hooks(tmp_path, HPATH, "pre", {}, timeout=2)

    assert status == constants.HKR_FAIL
    assert output.startswith("started\n")
    assert output.splitlines()[-1] == "Script timed out after 2 s"
    child, script = _read_pids(pids)
    try:
        for pid in (child, script):
            assert _wait_dead(pid), f"pid {pid} survived the timeout"
            assert not _alive(pid)
    except AssertionError:
        _kill_quietly([child, script])
        raise


def test_background_child_holding_output_does_not_block(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    _script(_pre_dir(tmp_path), "daemonize", f"sleep 1000 &\necho $! > {pids}\necho done")
    try:
        [(_, status, output)] = run_hooks(tmp_path, HPATH, "pre", {}, timeout=20)
        # waiting for end of file would have hit the timeout instead
        assert (status, output) == (constants.HKR_SUCCESS, "done\n")
    finally:
        _kill_quietly(_read_pids(pids))
