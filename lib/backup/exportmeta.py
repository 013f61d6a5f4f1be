"""Protection flag and note of an export generation: the sidecar format (pure, no I/O).

The sidecar (``META_FILE``) lives inside the export's directory, next to
config.ini, so it moves with the directory when finalize retires the export
into the generations dir; config.ini stays exactly as Ganeti writes it.

Reading is defensive: the file is written by nodes, but anyone with access
to the export dir can change it.  A sidecar that cannot be trusted never
makes a generation prunable: an unreadable file, or a ``protected`` value
that is not a boolean, counts as protected (with a warning naming the
problem) until ``gnt-backup modify --protected no`` writes a clean one.  A
bad note is dropped with a warning.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

META_FILE = "ganeti-ng.meta.json"
META_VERSION = 1
NOTE_MAX = 1024
# a sidecar larger than this is not read at all (a note is at most 4 KiB in UTF-8)
MAX_META_BYTES = 16 * 1024


class MetaError(ValueError):
    """A protection/note value is unusable; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class ExportMeta:
    protected: bool = False
    note: str = ""
    # why the stored sidecar was not (fully) usable; None when it was clean or absent
    problem: str | None = None


def check_note(note: Any) -> str:
    """One line of at most NOTE_MAX characters, no control characters; "" clears it."""
    if not isinstance(note, str):
        raise MetaError("note", f"must be text, got {type(note).__name__}")
    if len(note) > NOTE_MAX:
        raise MetaError("note", f"at most {NOTE_MAX} characters, got {len(note)}")
    bad = next((ch for ch in note if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")),
               None)
    if bad is not None:
        raise MetaError("note", f"must be one line without control characters"
                                f" (found U+{ord(bad):04X})")
    return note.strip()


def check_protected(protected: Any) -> bool:
    if not isinstance(protected, bool):
        raise MetaError("protected", f"must be true or false, got {protected!r}")
    return protected


def render(meta: ExportMeta) -> str:
    return json.dumps({"version": META_VERSION, "protected": check_protected(meta.protected),
                       "note": check_note(meta.note)}, sort_keys=True) + "\n"


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
    problem = f"{META_FILE}: {'; '.join(problems)}" if problems else None
    return ExportMeta(protected=protected, note=note, problem=problem)
