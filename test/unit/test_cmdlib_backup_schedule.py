"""Schedule, generation and prune LUs through the real processor (loopback RPC)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.loopback import Env

from ganeti import errors, opcodes
from ganeti.backend import export as ex


@pytest.fixture
def env(tmp_path: Any) -> Env:
    environment = Env(tmp_path)
    environment.create("inst1", disks=[{"size": 1}])
    environment.create("inst2", disks=[{"size": 1}], tags=["db"])
    return environment


def add(env: Env, name: str = "nightly", **fields: Any) -> Any:
    fields.setdefault("instances", ["inst1"])
    fields.setdefault("target_node", "node3")
    fields.setdefault("cron", "0 3 * * *")
    return env.run(opcodes.OpBackupScheduleAdd.create(name=name, **fields))


def query(env: Env) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in env.run(opcodes.OpBackupScheduleQuery.create())}


def test_add_modify_remove(env: Env) -> None:
    add(env, cron="0  3 * * *", retention={"keep_last": 2, "keep_daily": 0})
    stored = query(env)["nightly"]
    assert (stored["cron"], stored["retention"], stored["node_policy"]) == (
        "0 3 * * *", {"keep_last": 2}, "fixed")
    env.run(opcodes.OpBackupScheduleModify.create(name="nightly", tags=["db"],
                                                  node_policy="other"))
    stored = query(env)["nightly"]
    # a new selection replaces the old one; a policy other than fixed drops the node
    assert (stored["instances"], stored["tags"], stored["target_node"]) == (
        ["inst1"], ["db"], None)
    env.run(opcodes.OpBackupScheduleModify.create(name="nightly", all_instances=True,
                                                  target_node="node2"))
    stored = query(env)["nightly"]
    assert (stored["all_instances"], stored["instances"], stored["tags"],
            stored["node_policy"], stored["target_node"]) == (True, [], [], "fixed", "node2")
    env.run(opcodes.OpBackupScheduleRemove.create(name="nightly"))
    assert query(env) == {}


@pytest.mark.parametrize(("fields", "field", "ecode"), [
    ({"instances": ["nosuch"]}, "instances", errors.ECODE_NOENT),
    ({"target_node": "node9"}, "target_node", errors.ECODE_NOENT),
    ({"compress": "lz4"}, "compress", errors.ECODE_INVAL),
    ({"cron": "* * *"}, "cron", errors.ECODE_INVAL),
    ({"retention": {"keep_hourlyy": 1}}, "keep_hourlyy", errors.ECODE_INVAL),
    ({"instances": [], "tags": []}, "instances", errors.ECODE_INVAL),
    ({"node_policy": "primary"}, "target_node", errors.ECODE_INVAL),
])
def test_bad_schedules_are_refused_naming_the_field(env: Env, fields: dict[str, Any],
                                                    field: str, ecode: str) -> None:
    with pytest.raises(errors.OpPrereqError) as err:
        add(env, **fields)
    assert f"'{field}'" in err.value.args[0] and err.value.args[1] == ecode
    assert query(env) == {}


def test_duplicate_and_unknown_names(env: Env) -> None:
    add(env)
    with pytest.raises(errors.OpPrereqError, match="already exists"):
        add(env)
    with pytest.raises(errors.OpPrereqError, match="Backup schedule 'other' not known"):
        env.run(opcodes.OpBackupScheduleModify.create(name="other", enabled=False))
    with pytest.raises(errors.OpPrereqError, match="Nothing to change"):
        env.run(opcodes.OpBackupScheduleModify.create(name="nightly"))
    with pytest.raises(errors.OpPrereqError, match="Backup schedule 'other' not known"):
        env.run(opcodes.OpBackupScheduleQuery.create(names=["other"]))


def node_export(env: Env, node: str, stamp: float, keep: bool = True) -> None:
    """An export as LUBackupExport's finalize leaves it (the copy itself is e2e-tested)."""
    ctx = env.roots[node]
    staging = ctx.paths.root / ex.export_prepare(ctx, "inst1").lstrip("/")
    (staging / "disk0.img").write_bytes(b"x" * 1000)
    ex.export_finalize(ctx, "inst1", f"[export]\nversion = 0\ntimestamp = {int(stamp)}\n",
                       keep)


def test_generations_list_prune_and_remove(env: Env) -> None:
    now = time.time()
    for days in (3, 1, 0):
        node_export(env, "node3", now - days * 86400)
    node_export(env, "node2", now - 5 * 86400)
    listed = env.run(opcodes.OpBackupListGenerations.create())
    gens = listed["generations"]
    assert listed["unreachable"] == [] and len(gens) == 4
    assert sorted((g["node"], g["newest"]) for g in gens) == [
        ("node2", True), ("node3", False), ("node3", False), ("node3", True)]
    result = env.run(opcodes.OpBackupPrune.create(instances=["inst1"], keep_last=2))
    removed = [(r["node"], r["timestamp"]) for r in result["plan"] if r["removed"]]
    # per node: node3 loses its oldest, node2's only (newest) export stays
    assert removed == [("node3", int(now - 3 * 86400))]
    left = env.run(opcodes.OpBackupListGenerations.create(nodes=["node3"],
                                                          instances=["inst1"]))
    assert len(left["generations"]) == 2
    older = next(g for g in left["generations"] if not g["newest"])
    newest = next(g for g in left["generations"] if g["newest"])
    with pytest.raises(errors.OpPrereqError, match="newest export"):
        env.run(opcodes.OpBackupRemoveGeneration.create(instance_name="inst1",
                                                        generation=newest["generation"]))
    assert env.run(opcodes.OpBackupRemoveGeneration.create(
        instance_name="inst1", generation=older["generation"])) == ["node3"]
    with pytest.raises(errors.OpPrereqError, match="No export generation"):
        env.run(opcodes.OpBackupRemoveGeneration.create(
            instance_name="inst1", generation=older["generation"]))


def test_offline_node_is_not_asked(env: Env) -> None:
    node_export(env, "node3", time.time())
    env.set_offline("node3", True)
    listed = env.run(opcodes.OpBackupListGenerations.create())
    assert listed == {"generations": [], "unreachable": []}


def test_prune_needs_a_policy(env: Env) -> None:
    with pytest.raises(errors.OpPrereqError, match="keep_last, keep_hourly"):
        env.run(opcodes.OpBackupPrune.create(instances=["inst1"]))


def set_params(env: Env, **fields: Any) -> Any:
    fields.setdefault("instance_name", "inst1")
    return env.run(opcodes.OpBackupSetGenerationParams.create(**fields))


def test_protected_generations_survive_prune_and_removal(env: Env) -> None:
    now = time.time()
    for days in (3, 2, 1, 0):
        node_export(env, "node3", now - days * 86400)
    gens = sorted(env.run(opcodes.OpBackupListGenerations.create())["generations"],
                  key=lambda g: g["timestamp"])
    oldest, newest = gens[0]["generation"], gens[-1]["generation"]
    changed = set_params(env, generation=oldest, protected=True, note="monthly audit")
    assert changed == [{"node": "node3", "generation": oldest, "protected": True,
                        "note": "monthly audit"}]
    # the newest addressed by the instance name alone
    assert set_params(env, protected=True)[0]["generation"] == newest
    result = env.run(opcodes.OpBackupPrune.create(instances=["inst1"], keep_last=1))
    plan = {r["generation"]: r for r in result["plan"]}
    assert plan[oldest]["keep"] and plan[oldest]["reasons"] == ["protected"]
    assert not plan[oldest]["removed"]
    # keep-last 1 among the unprotected: the newest unprotected one (a day old) stays
    assert sorted(r["timestamp"] for r in result["plan"] if r["removed"]) == [
        int(now - 2 * 86400)]
    left = {g["generation"]: g for g in
            env.run(opcodes.OpBackupListGenerations.create())["generations"]}
    assert len(left) == 3 and left[oldest]["note"] == "monthly audit"
    with pytest.raises(errors.OpPrereqError) as err:
        env.run(opcodes.OpBackupRemoveGeneration.create(instance_name="inst1",
                                                        generation=oldest))
    assert err.value.args[1] == errors.ECODE_STATE
    assert f"gnt-backup unprotect inst1@{oldest}" in err.value.args[0]
    with pytest.raises(errors.OpPrereqError) as err:
        env.run(opcodes.OpBackupRemove.create(instance_name="inst1"))
    assert err.value.args[1] == errors.ECODE_STATE
    assert "'gnt-backup unprotect inst1'" in err.value.args[0]
    assert ex.export_list(env.roots["node3"]) == ["inst1"]
    set_params(env, generation=oldest, protected=False)
    assert env.run(opcodes.OpBackupRemoveGeneration.create(
        instance_name="inst1", generation=oldest)) == ["node3"]
    set_params(env, protected=False)
    assert env.run(opcodes.OpBackupRemove.create(instance_name="inst1")) == ["node3"]
    assert ex.export_list(env.roots["node3"]) == []


@pytest.mark.parametrize(("fields", "message", "ecode"), [
    ({}, "Nothing to change", errors.ECODE_INVAL),
    ({"note": "a\nb"}, "note: must be one line", errors.ECODE_INVAL),
    ({"note": "x" * 1025}, "note: at most 1024 characters", errors.ECODE_INVAL),
    ({"generation": "20990101T000000Z", "protected": True}, "No export generation",
     errors.ECODE_NOENT),
    ({"instance_name": "nosuch", "protected": True}, "No export of nosuch",
     errors.ECODE_NOENT),
])
def test_set_generation_params_refuses_bad_input(env: Env, fields: dict[str, Any],
                                                 message: str, ecode: str) -> None:
    node_export(env, "node3", time.time())
    with pytest.raises(errors.OpPrereqError) as err:
        set_params(env, **fields)
    assert message in err.value.args[0] and err.value.args[1] == ecode
    gen = env.run(opcodes.OpBackupListGenerations.create())["generations"][0]
    assert (gen["protected"], gen["note"]) == (False, "")


def test_snapshot_mode_is_refused_on_storage_that_cannot_snapshot(env: Env) -> None:
    # file disks on a filesystem without reflinks cannot be snapshotted live
    with pytest.raises(errors.OpPrereqError) as err:
        add(env, shutdown_mode="snapshot")
    assert "'shutdown_mode'" in err.value.args[0] and "inst1 disk 0 (file)" in err.value.args[0]
    assert err.value.args[1] == errors.ECODE_INVAL and query(env) == {}
    # a tag selection is checked for the instances it selects now, and says so
    with pytest.raises(errors.OpPrereqError, match="selection matches now"):
        add(env, instances=[], tags=["db"], shutdown_mode="snapshot")
    # ... and excluded instances are not its concern
    add(env, instances=[], tags=["db"], exclude=["inst2"], shutdown_mode="snapshot")
    assert query(env)["nightly"]["shutdown_mode"] == "snapshot"
    add(env, name="plain")
    with pytest.raises(errors.OpPrereqError, match="'shutdown_mode'"):
        env.run(opcodes.OpBackupScheduleModify.create(name="plain", shutdown_mode="snapshot"))
    with pytest.raises(errors.OpPrereqError, match="'shutdown_mode'"):
        env.run(opcodes.OpBackupScheduleModify.create(name="nightly", exclude=[]))
    assert query(env)["plain"]["shutdown_mode"] == "shutdown"


def test_snapshot_mode_is_accepted_where_storage_can_snapshot(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from ganeti.storage import reflink  # what filedisk asks whether a path can reflink
    monkeypatch.setattr(reflink, "supports_reflink", lambda _path: True)
    add(env, shutdown_mode="snapshot")
    assert query(env)["nightly"]["shutdown_mode"] == "snapshot"


def test_overrides_and_exclude(env: Env) -> None:
    add(env, instances=[], all_instances=True, exclude=["tag:db", "inst1"],
        overrides={"notify": "always", "bwlimit": 100})
    stored = query(env)["nightly"]
    assert (stored["exclude"], stored["overrides"]) == (
        ["inst1", "tag:db"], {"notify": "always", "bwlimit": 100})
    # None drops an override (back to the cluster default); others are merged
    env.run(opcodes.OpBackupScheduleModify.create(
        name="nightly", overrides={"bwlimit": None, "timezone": "Europe/Berlin"}))
    assert query(env)["nightly"]["overrides"] == {"notify": "always",
                                                  "timezone": "Europe/Berlin"}
    with pytest.raises(errors.OpPrereqError, match=r"overrides\.timezone"):
        env.run(opcodes.OpBackupScheduleModify.create(
            name="nightly", overrides={"timezone": "Nowhere/Land"}))
    with pytest.raises(errors.OpPrereqError, match="'exclude'"):
        add(env, name="both", instances=["inst1"], exclude=["inst1"])
