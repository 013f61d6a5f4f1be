"""Which export generations a retention policy keeps (Proxmox/restic style).

Pure function, no I/O: the same plan is shown by ``gnt-backup prune
--dry-run``, applied by the prune LU and tested on its own.  Rules run in the
order keep-last, -hourly, -daily, -weekly, -monthly, -yearly; each keeps the
newest generation of up to N periods (hour, day, ISO week, ...) that no
earlier rule already covered, exactly as Proxmox VE's prune does.  Periods
are computed in UTC so that every node and the runner agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

# (rule name, period key of an epoch timestamp); keep-last (None): each one its own period
RULES: tuple[tuple[str, Callable[[float], str] | None], ...] = (
    ("keep_last", None),
    ("keep_hourly", lambda ts: time.strftime("%Y-%m-%d %H", time.gmtime(ts))),
    ("keep_daily", lambda ts: time.strftime("%Y-%m-%d", time.gmtime(ts))),
    ("keep_weekly", lambda ts: time.strftime("%G/%V", time.gmtime(ts))),
    ("keep_monthly", lambda ts: time.strftime("%Y-%m", time.gmtime(ts))),
    ("keep_yearly", lambda ts: time.strftime("%Y", time.gmtime(ts))),
)
RULE_NAMES: tuple[str, ...] = tuple(name for name, _ in RULES)


class PolicyError(ValueError):
    """A retention policy value is unusable; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class Decision:
    timestamp: float
    index: int                  # position in the caller's list
    keep: bool = False
    reasons: list[str] = field(default_factory=list)


def check_policy(policy: Mapping[str, int | None]) -> dict[str, int]:
    """Only known rules with counts >= 0; ``None``/0 mean "rule not used"."""
    clean: dict[str, int] = {}
    for name, value in policy.items():
        if name not in RULE_NAMES:
            raise PolicyError(name, f"unknown retention rule (known: {', '.join(RULE_NAMES)})")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyError(name, f"must be a whole number >= 0, got {value!r}")
        if value:
            clean[name] = value
    return clean


def is_keep_all(policy: Mapping[str, int | None]) -> bool:
    """A policy with no rule keeps everything (nothing to prune)."""
    return not check_policy(policy)


def _key(key_of: Callable[[float], str] | None, dec: Decision) -> str:
    return f"#{dec.index}" if key_of is None else key_of(dec.timestamp)


def plan(timestamps: Sequence[float], policy: Mapping[str, int | None]) -> list[Decision]:
    """Decide keep/remove for each timestamp; result newest first.

    Equal timestamps keep the caller's order (list the newer one first).  An
    empty policy keeps everything.  The newest generation is always kept by
    any non-empty policy, because it is the newest of its own period.
    """
    rules = check_policy(policy)
    order = sorted(range(len(timestamps)), key=lambda i: -timestamps[i])
    decisions = [Decision(timestamps[i], i) for i in order]
    if not rules:
        for dec in decisions:
            dec.keep = True
            dec.reasons.append("no retention rule: keep all")
        return decisions
    for name, key_of in RULES:
        count = rules.get(name, 0)
        if not count:
            continue
        covered = {_key(key_of, d) for d in decisions if d.keep}
        chosen: list[str] = []
        for dec in decisions:
            if dec.keep:
                continue
            key = _key(key_of, dec)
            if key in covered or key in chosen:
                continue
            if len(chosen) >= count:
                break
            chosen.append(key)
            dec.keep = True
            label = name.replace("_", "-")
            dec.reasons.append(f"{label} {len(chosen)}/{count}")
    for dec in decisions:
        if not dec.keep:
            dec.reasons.append("not selected by any rule")
    return decisions
