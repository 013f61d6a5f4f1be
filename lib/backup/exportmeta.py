"""Protection flag, note and last verify of an export generation: the sidecar format
(pure, no I/O).

The sidecar (``META_FILE``) lives inside the export's directory, next to
config.ini, so it moves with the directory when finalize retires the export
into the generations dir; config.ini stays exactly as Ganeti writes it.

Reading is defensive: the file is written by nodes, but anyone with access
to the export dir can change it.  A sidecar that cannot be trusted never
makes a generation prunable: an unreadable file, or a ``protected`` value
that is not a boolean, counts as protected (with a warning naming the
problem) until ``gnt-backup modify --protected no`` writes a clean one.  A
bad note is dropped with a warning, and so is a bad verify record (the
generation then counts as not verified).
"""

from __future__ import annotations

import json
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

META_FILE = "ganeti-ng.meta.json"
META_VERSION = 1
NOTE_MAX = 1024
# the verify record keeps at most this many problems, each cut to PROBLEM_MAX characters
PROBLEMS_MAX = 32
PROBLEM_MAX = 200
# a sidecar larger than this is not read at all (JSON escapes a character in at most 12
# bytes: a note takes at most 12 KiB, the verify record's problems at most 75 KiB)
MAX_META_BYTES = 128 * 1024
_CONTROL = ("Cc", "Cf", "Zl", "Zp")


class MetaError(ValueError):
    """A protection/note value is unusable; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class ExportMeta:
    protected: bool = False
    note: str = ""
    # the last gnt-backup verify: {"time": int, "ok": bool, "problems": [str, ...]}
    verify: dict[str, Any] | None = None
    # why the stored sidecar was not (fully) usable; None when it was clean or absent
    problem: str | None = None


def check_note(note: Any) -> str:
    """One line of at most NOTE_MAX characters, no control characters; "" clears it."""
    if not isinstance(note, str):
        raise MetaError("note", f"must be text, got {type(note).__name__}")
    if len(note) > NOTE_MAX:
        raise MetaError("note", f"at most {NOTE_MAX} characters, got {len(note)}")
    bad = next((ch for ch in note if unicodedata.category(ch) in _CONTROL), None)
    if bad is not None:
        raise MetaError("note", f"must be one line without control characters"
                                f" (found U+{ord(bad):04X})")
    return note.strip()


def check_protected(protected: Any) -> bool:
    if not isinstance(protected, bool):
        raise MetaError("protected", f"must be true or false, got {protected!r}")
    return protected


def _problem_text(text: str) -> str:
    """One line of at most PROBLEM_MAX characters (control characters become '?')."""
    line = "".join("?" if unicodedata.category(ch) in _CONTROL else ch for ch in text)
    return line if len(line) <= PROBLEM_MAX else line[:PROBLEM_MAX - 3] + "..."


def verify_record(ok: bool, problems: list[str], when: float | None = None
                  ) -> dict[str, Any]:
    """The record of one verify, cut to what the sidecar keeps (the count stays right:
    problems beyond PROBLEMS_MAX are summarised in the last one)."""
    kept = [_problem_text(p) for p in problems[:PROBLEMS_MAX]]
    if len(problems) > PROBLEMS_MAX:
        kept[-1] = f"... and {len(problems) - PROBLEMS_MAX + 1} more problem(s)"
    return {"time": int(time.time() if when is None else when), "ok": bool(ok),
            "problems": kept}


def check_verify(record: Any) -> dict[str, Any] | None:
    """A verify record as stored, or MetaError naming what is wrong (None: no record)."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise MetaError("verify", f"must be an object, got {type(record).__name__}")
    when, ok, problems = record.get("time"), record.get("ok"), record.get("problems", [])
    if not isinstance(when, int) or isinstance(when, bool) or not 0 <= when < 2**63:
        raise MetaError("verify", f"time must be seconds since the epoch, got {when!r}")
    if not isinstance(ok, bool):
        raise MetaError("verify", f"ok must be true or false, got {ok!r}")
    if (not isinstance(problems, list) or len(problems) > PROBLEMS_MAX
            or not all(isinstance(p, str) for p in problems)):
        raise MetaError("verify", f"problems must be a list of at most {PROBLEMS_MAX}"
                                  " texts")
    if ok and problems:
        raise MetaError("verify", "ok with problems")
    return {"time": when, "ok": ok, "problems": [_problem_text(p) for p in problems]}


def is_empty(meta: ExportMeta) -> bool:
    """Nothing to store: the export needs no sidecar."""
    return not meta.protected and not meta.note and meta.verify is None


def render(meta: ExportMeta) -> str:
    data: dict[str, Any] = {"version": META_VERSION,
                            "protected": check_protected(meta.protected),
                            "note": check_note(meta.note)}
    verify = check_verify(meta.verify)
    if verify is not None:
        data["verify"] = verify
    return json.dumps(data, sort_keys=True) + "\n"


def parse(raw: bytes | None) -> ExportMeta:
    """The metadata a sidecar holds (``None``: no sidecar, nothing set)."""
    if raw is None:
        return ExportMeta()
    if len(raw) > MAX_META_BYTES:
        return ExportMeta(protected=True, problem=f"{META_FILE} is larger than"
                                                  f" {MAX_META_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # deep nesting
        return ExportMeta(protected=True, problem=f"{META_FILE} is not valid JSON: {err}")
    if not isinstance(data, dict):
        return ExportMeta(protected=True, problem=f"{META_FILE} does not hold a JSON object")
    problems: list[str] = []
    try:
        protected = check_protected(data.get("protected", False))
    except MetaError as err:
        protected = True
        problems.append(str(err))
    try:
        note = check_note(data.get("note", ""))
    except MetaError as err:
        note = ""
        problems.append(str(err))
    try:
        verify = check_verify(data.get("verify"))
    except MetaError as err:
        verify = None
        problems.append(str(err))
    problem = f"{META_FILE}: {'; '.join(problems)}" if problems else None
    return ExportMeta(protected=protected, note=note, verify=verify, problem=problem)
