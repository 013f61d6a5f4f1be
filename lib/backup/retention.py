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
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

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

# how many periods a rule keeps; None or 0: the rule is not used
KeepCount = Annotated[int, Field(ge=0)] | None


class RetentionRules(BaseModel):
    """The keep-* rules: the one definition of their names, types and bounds.

    Mixed into OpBackupPrune (flat fields) and RetentionPolicy (a schedule's policy).
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    keep_last: KeepCount = Field(None, description="Keep the N newest generations")
    keep_hourly: KeepCount = Field(
        None, description="Keep the newest generation of each of the last N hours")
    keep_daily: KeepCount = Field(
        None, description="Keep the newest generation of each of the last N days")
    keep_weekly: KeepCount = Field(
        None, description="Keep the newest generation of each of the last N ISO weeks")
    keep_monthly: KeepCount = Field(
        None, description="Keep the newest generation of each of the last N months")
    keep_yearly: KeepCount = Field(
        None, description="Keep the newest generation of each of the last N years")

    def rules(self) -> dict[str, int]:
        """The rules in use (count > 0), as plan() and the config take them."""
        return {name: getattr(self, name) for name in RULE_NAMES if getattr(self, name)}


class RetentionPolicy(RetentionRules):
    """A schedule's retention policy; stored and shown with its used rules only, in the
    order they were given."""

    _order: tuple[str, ...] = PrivateAttr(default=RULE_NAMES)

    @model_validator(mode="wrap")
    @classmethod
    def _known_rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(RULE_NAMES))
            if unknown:
                raise ValueError(f"'{unknown[0]}': unknown retention rule (known:"
                                 f" {', '.join(RULE_NAMES)})")
        policy = handler(data)
        if isinstance(data, dict):
            policy._order = (*data, *(n for n in RULE_NAMES if n not in data))
        return policy

    @model_serializer(mode="wrap")
    def _used_rules(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        values = handler(self)
        return {name: values[name] for name in self._order if values.get(name)}


if tuple(RetentionRules.model_fields) != RULE_NAMES:
    raise AssertionError("RetentionRules fields must be the RULES names, in order")


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
    """Only known rules with counts >= 0 (checked by RetentionRules); ``None``/0 mean
    "rule not used"."""
    for name in policy:
        if name not in RULE_NAMES:
            raise PolicyError(name, f"unknown retention rule (known: {', '.join(RULE_NAMES)})")
    try:
        return RetentionRules.model_validate(dict(policy)).rules()
    except ValidationError as err:
        item = err.errors()[0]
        name = str(item["loc"][0])
        raise PolicyError(name, f"must be a whole number >= 0, got {item['input']!r}"
                          ) from None


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
