"""Retention policy (Proxmox/restic semantics) and prune plans over generations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ganeti.backup import generations, retention


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def kept(stamps: list[float], **policy: int) -> list[str]:
    return [datetime.fromtimestamp(d.timestamp, UTC).strftime("%Y-%m-%d %H:%M")
            for d in retention.plan(stamps, policy) if d.keep]


# one backup a day at 03:00 and an extra one at 15:00, 2026-01-01 .. 2026-03-31
DAILY = [ts(f"2026-{m:02d}-{d:02d} {h:02d}:00") for m, last in ((1, 31), (2, 28), (3, 31))
         for d in range(1, last + 1) for h in (3, 15)]


def test_keep_last_keeps_the_newest_n() -> None:
    assert kept(DAILY, keep_last=3) == ["2026-03-31 15:00", "2026-03-31 03:00",
                                        "2026-03-30 15:00"]


def test_keep_daily_keeps_the_newest_of_each_day() -> None:
    assert kept(DAILY, keep_daily=3) == ["2026-03-31 15:00", "2026-03-30 15:00",
                                         "2026-03-29 15:00"]


def test_rules_skip_periods_already_covered() -> None:
    # keep-last takes both of 03-31; keep-daily then starts at 03-30 (Proxmox semantics)
    assert kept(DAILY, keep_last=2, keep_daily=2) == [
        "2026-03-31 15:00", "2026-03-31 03:00", "2026-03-30 15:00", "2026-03-29 15:00"]


def test_weekly_uses_iso_weeks_and_monthly_the_newest_of_each_month() -> None:
    # 2026-03-31 is a Tuesday (ISO week 14, starting Monday 03-30); week 13 ends Sunday 03-29
    assert kept(DAILY, keep_weekly=2) == ["2026-03-31 15:00", "2026-03-29 15:00"]
    assert kept(DAILY, keep_monthly=5) == ["2026-03-31 15:00", "2026-02-28 15:00",
                                           "2026-01-31 15:00"]


def test_combined_policy_like_vzdump() -> None:
    decisions = retention.plan(DAILY, {"keep_last": 1, "keep_daily": 2, "keep_weekly": 1,
                                       "keep_monthly": 2, "keep_yearly": 1})
    keep = [(datetime.fromtimestamp(d.timestamp, UTC).strftime("%m-%d %H"), d.reasons)
            for d in decisions if d.keep]
    # each rule skips periods an earlier rule covered: keep-daily starts at 03-30, and
    # ISO weeks 14 (03-30, 03-31) and 13 (03-29) are covered, so keep-weekly takes week 12
    assert keep == [("03-31 15", ["keep-last 1/1"]),
                    ("03-30 15", ["keep-daily 1/2"]),
                    ("03-29 15", ["keep-daily 2/2"]),
                    ("03-22 15", ["keep-weekly 1/1"]),
                    ("02-28 15", ["keep-monthly 1/2"]),
                    ("01-31 15", ["keep-monthly 2/2"])]
    # keep-yearly had nothing new to keep: 2026 is covered already
    assert sum(d.keep for d in decisions) == 6
    assert all(d.reasons == ["not selected by any rule"] for d in decisions if not d.keep)


def test_hourly_and_yearly() -> None:
    stamps = [ts("2024-06-01 10:00"), ts("2025-06-01 10:00"), ts("2026-06-01 10:10"),
              ts("2026-06-01 10:40"), ts("2026-06-01 11:05")]
    assert kept(stamps, keep_hourly=2) == ["2026-06-01 11:05", "2026-06-01 10:40"]
    assert kept(stamps, keep_yearly=2) == ["2026-06-01 11:05", "2025-06-01 10:00"]


def test_newest_is_always_kept_and_input_order_does_not_matter() -> None:
    shuffled = DAILY[::3] + DAILY[1::3] + DAILY[2::3]
    for rule in retention.RULE_NAMES:
        decisions = retention.plan(shuffled, {rule: 1})
        assert decisions[0].timestamp == max(DAILY) and decisions[0].keep
        assert [d.timestamp for d in decisions] == sorted(DAILY, reverse=True)


def test_fewer_backups_than_asked_keeps_all() -> None:
    assert len(kept(DAILY[:3], keep_last=10)) == 3


def test_empty_policy_keeps_everything() -> None:
    assert retention.is_keep_all({}) and retention.is_keep_all({"keep_last": 0})
    assert all(d.keep for d in retention.plan(DAILY, {}))


@pytest.mark.parametrize(("policy", "field"), [
    ({"keep_lats": 1}, "keep_lats"), ({"keep_daily": -1}, "keep_daily"),
    ({"keep_weekly": "2"}, "keep_weekly"), ({"keep_last": True}, "keep_last")])
def test_bad_policy_names_the_field(policy: dict[str, object], field: str) -> None:
    with pytest.raises(retention.PolicyError) as err:
        retention.check_policy(policy)  # type: ignore[arg-type]
    assert err.value.field == field and field in str(err.value)


def _gen(node: str, inst: str, when: str, newest: bool = False) -> dict[str, object]:
    return {"node": node, "instance": inst, "generation": when, "timestamp": ts(when),
            "newest": newest}


def test_prune_plan_groups_per_node_and_instance() -> None:
    gens = [_gen("n2", "a", "2026-01-03 03:00", True), _gen("n2", "a", "2026-01-02 03:00"),
            _gen("n2", "a", "2026-01-01 03:00"), _gen("n3", "a", "2026-01-01 04:00", True),
            _gen("n2", "b", "2025-01-01 03:00", True)]
    rows = generations.prune_plan(gens, {"keep_last": 1})
    removed = [(r["node"], r["instance"], r["generation"]) for r in rows if not r["keep"]]
    assert removed == [("n2", "a", "2026-01-02 03:00"), ("n2", "a", "2026-01-01 03:00")]
    assert {(r["node"], r["instance"]) for r in rows if r["keep"]} == {
        ("n2", "a"), ("n3", "a"), ("n2", "b")}


def _plan(gens: list[dict[str, object]], policy: dict[str, int | None]
          ) -> list[tuple[str, bool, list[str]]]:
    return [(str(r["generation"]), bool(r["keep"]), list(r["reasons"]))
            for r in generations.prune_plan(gens, policy)]


def test_protected_generations_are_kept_and_take_no_keep_slot() -> None:
    """As in Proxmox VE / PBS: the rules select among the unprotected ones."""
    gens = [_gen("n", "a", "2026-01-05 03:00", True), _gen("n", "a", "2026-01-04 03:00"),
            _gen("n", "a", "2026-01-03 03:00"), _gen("n", "a", "2026-01-02 03:00"),
            _gen("n", "a", "2026-01-01 03:00")]
    gens[1]["protected"] = gens[3]["protected"] = True
    assert _plan(gens, {"keep_last": 2}) == [
        ("2026-01-05 03:00", True, ["keep-last 1/2"]),
        ("2026-01-04 03:00", True, ["protected"]),
        # without protection this one would be removed (keep-last 2 = the two newest)
        ("2026-01-03 03:00", True, ["keep-last 2/2"]),
        ("2026-01-02 03:00", True, ["protected"]),
        ("2026-01-01 03:00", False, ["not selected by any rule"])]


def test_protected_generation_covers_no_period() -> None:
    # same day: the protected newer one does not make its day "covered"
    gens = [_gen("n", "a", "2026-01-02 03:00", True), _gen("n", "a", "2026-01-01 05:00"),
            _gen("n", "a", "2026-01-01 04:00"), _gen("n", "a", "2025-12-31 03:00")]
    gens[1]["protected"] = True
    assert _plan(gens, {"keep_daily": 2}) == [
        ("2026-01-02 03:00", True, ["keep-daily 1/2"]),
        ("2026-01-01 05:00", True, ["protected"]),
        ("2026-01-01 04:00", True, ["keep-daily 2/2"]),
        ("2025-12-31 03:00", False, ["not selected by any rule"])]


def test_protected_newest_export_frees_its_keep_last_slot() -> None:
    gens = [_gen("n", "a", "2026-01-03 03:00", True), _gen("n", "a", "2026-01-02 03:00"),
            _gen("n", "a", "2026-01-01 03:00")]
    gens[0]["protected"] = True
    rows = generations.prune_plan(gens, {"keep_last": 1})
    assert [(r["keep"], r["reasons"], r["protected"]) for r in rows] == [
        (True, ["protected"], True), (True, ["keep-last 1/1"], False),
        (False, ["not selected by any rule"], False)]
