"""OpClusterRenewCrypto through the real processor: the master's domain secret file."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.loopback import Env

from ganeti import errors, opcodes

SECRET = "x" * 20 + "-other-clusters-secret"


def _secret_file(env: Env) -> Path:
    return env.ctx.paths.cluster_domain_secret_file


def test_new_secret_replaces_the_old_one_privately(tmp_path: Path) -> None:
    env = Env(tmp_path)
    path = env.run(opcodes.OpClusterRenewCrypto.create(new_cluster_domain_secret=True))
    assert path == str(_secret_file(env))
    first = _secret_file(env).read_text()
    assert len(first.strip()) >= 64 and _secret_file(env).stat().st_mode & 0o777 == 0o600
    env.run(opcodes.OpClusterRenewCrypto.create(new_cluster_domain_secret=True))
    assert _secret_file(env).read_text() != first


def test_given_secret_is_written_as_is(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.run(opcodes.OpClusterRenewCrypto.create(cluster_domain_secret=SECRET))
    assert _secret_file(env).read_text() == SECRET + "\n"


@pytest.mark.parametrize("fields", [{}, {"new_cluster_domain_secret": True,
                                         "cluster_domain_secret": SECRET}])
def test_exactly_one_source_of_the_secret(tmp_path: Path, fields: dict[str, object]) -> None:
    env = Env(tmp_path)
    with pytest.raises(errors.OpPrereqError, match="exactly one of") as err:
        env.run(opcodes.OpClusterRenewCrypto.create(**fields))
    assert err.value.ecode == errors.ECODE_INVAL and not _secret_file(env).exists()


@pytest.mark.parametrize("secret", ["short", "x" * 40 + " with spaces"])
def test_weak_secrets_are_refused_by_the_opcode(secret: str) -> None:
    with pytest.raises(errors.OpPrereqError, match="cluster_domain_secret"):
        opcodes.OpClusterRenewCrypto.create(cluster_domain_secret=secret)
