"""The tag LUs (OpTagsGet/Set/Del) through the real processor, against a real config."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.loopback import Env

from ganeti import config_journal, errors, limits, opcodes


@pytest.fixture
def env(tmp_path: Path) -> Env:
    env = Env(tmp_path)
    env.create("inst1", disks=[{"size": 1}], start=False)
    return env


def _set(env: Env, kind: str, name: str | None, *tags: str) -> None:
    env.run(opcodes.OpTagsSet.create(kind=kind, name=name, tags=list(tags)))


def _get(env: Env, kind: str, name: str | None) -> list[str]:
    result: list[str] = env.run(opcodes.OpTagsGet.create(kind=kind, name=name))
    return result


def _stored(env: Env) -> dict[str, object]:
    data, _serial = config_journal.load(env.cfg.path)  # the file and its journal
    return {"cluster": sorted(data["cluster"]["tags"]),
            **{i["name"]: sorted(i["tags"]) for i in data["instances"].values()},
            **{n["name"]: sorted(n["tags"]) for n in data["nodes"].values()}}


@pytest.mark.parametrize(("kind", "name"), [("cluster", None), ("instance", "inst1"),
                                            ("node", "node2"), ("nodegroup", "default")])
def test_set_get_and_delete_tags_of_each_kind(env: Env, kind: str, name: str | None) -> None:
    _set(env, kind, name, "b-tag", "a:tag", "b-tag")
    assert _get(env, kind, name) == ["a:tag", "b-tag"]
    _set(env, kind, name, "c/d")       # adds: the others stay
    assert _get(env, kind, name) == ["a:tag", "b-tag", "c/d"]
    env.run(opcodes.OpTagsDel.create(kind=kind, name=name, tags=["b-tag", "c/d"]))
    assert _get(env, kind, name) == ["a:tag"]


def test_tags_are_stored_in_the_objects_of_the_config_file(env: Env) -> None:
    _set(env, "instance", "inst1", "web")
    _set(env, "node", "node3", "rack:7")
    _set(env, "cluster", None, "prod")
    stored = _stored(env)
    assert (stored["inst1"], stored["node3"], stored["cluster"]) == \
        (["web"], ["rack:7"], ["prod"])
    assert stored["node2"] == []


def test_dry_run_changes_nothing(env: Env) -> None:
    env.run(opcodes.OpTagsSet.create(kind="instance", name="inst1", tags=["x"],
                                     dry_run=True))
    assert env.inst().tags == []


def test_deleting_a_missing_tag_fails_and_keeps_the_others(env: Env) -> None:
    _set(env, "instance", "inst1", "keep")
    with pytest.raises(errors.OpPrereqError) as info:
        env.run(opcodes.OpTagsDel.create(kind="instance", name="inst1",
                                         tags=["keep", "absent"]))
    assert info.value.args[1] == errors.ECODE_NOENT
    assert "'absent' not found" in str(info.value) and "tags" in str(info.value)
    assert env.inst().tags == ["keep"]


@pytest.mark.parametrize(("kind", "name"), [("instance", "nosuch"), ("node", "nosuch"),
                                            ("nodegroup", "nosuch")])
def test_unknown_objects_are_noent(env: Env, kind: str, name: str) -> None:
    for op in (opcodes.OpTagsGet.create(kind=kind, name=name),
               opcodes.OpTagsSet.create(kind=kind, name=name, tags=["a"])):
        with pytest.raises(errors.OpPrereqError) as info:
            env.run(op)
        assert info.value.args[1] == errors.ECODE_NOENT
        assert "'nosuch' not known" in str(info.value)


def test_an_object_needs_its_name(env: Env) -> None:
    with pytest.raises(errors.OpPrereqError, match="name: the instance's name is needed"):
        env.run(opcodes.OpTagsSet.create(kind="instance", name=None, tags=["a"]))


@pytest.mark.parametrize(("tag", "why"), [
    ("a b", "invalid characters"), ("", "outside the limit"),
    ("x" * (limits.TAG_LENGTH.maximum + 1), "outside the limit"),
    ("semi;colon", "invalid characters")])
def test_ganetis_tag_rules_are_checked_by_the_opcode(tag: str, why: str) -> None:
    for cls in (opcodes.OpTagsSet, opcodes.OpTagsDel):
        with pytest.raises(errors.OpPrereqError) as info:
            cls.create(kind="instance", name="inst1", tags=["ok", tag])
        text = str(info.value)
        assert f"'{cls.OP_ID}.tags[1]'" in text and why in text


def test_ganetis_tag_alphabet_is_accepted() -> None:
    tags = ["a.b+c*d/e:f@g-h_1", "ünïcödé", "x" * limits.TAG_LENGTH.maximum]
    assert opcodes.OpTagsSet.create(kind="cluster", tags=tags).tags == tags  # type: ignore[attr-defined]


def test_more_tags_than_the_limit_per_object_are_refused(env: Env) -> None:
    half = limits.TAGS.maximum // 2
    _set(env, "instance", "inst1", *(f"t{i}" for i in range(half)))
    with pytest.raises(errors.OpPrereqError) as info:
        _set(env, "instance", "inst1", *(f"u{i}" for i in range(half + 1)))
    assert info.value.args[1] == errors.ECODE_INVAL
    assert f"more than the limit of {limits.TAGS.maximum}" in str(info.value)
    assert len(env.inst().tags) == half


def test_concurrent_cluster_tag_changes_all_land(env: Env) -> None:
    errors_seen: list[BaseException] = []

    def add(i: int) -> None:
        try:
            _set(env, "cluster", None, f"c{i}")
        except BaseException as err:
            errors_seen.append(err)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors_seen == []
    assert _get(env, "cluster", None) == sorted(f"c{i}" for i in range(8))


def test_network_tags_cannot_be_changed(env: Env) -> None:
    with pytest.raises(errors.OpPrereqError, match="not known"):
        env.run(opcodes.OpTagsSet.create(kind="network", name="net1", tags=["a"]))
