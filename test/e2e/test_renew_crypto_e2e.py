"""gnt-cluster renew-crypto on a running cluster: a job whose LU writes the master's
cluster domain secret, the secret itself never stored with the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cluster import E2ECluster

pytestmark = pytest.mark.e2e


def _secret(cluster: E2ECluster) -> str:
    return cluster.master.paths.cluster_domain_secret_file.read_text().strip()


def _last_job(cluster: E2ECluster) -> tuple[str, str]:
    proc = cluster.gnt("gnt-job", "list", "--no-headers", "--separator", "|",
                       "-o", "id,summary", check=True)
    job_id, summary = proc.stdout.splitlines()[-1].split("|")
    return job_id.strip(), summary.strip()


def test_renew_crypto_runs_as_a_job_and_keeps_the_secret_out_of_it(
        cluster: E2ECluster, tmp_path: Path) -> None:
    path = cluster.master.paths.cluster_domain_secret_file
    before = _secret(cluster)
    proc = cluster.gnt("gnt-cluster", "renew-crypto", "--new-cluster-domain-secret")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"Cluster domain secret written to {path}"
    new = _secret(cluster)
    assert new != before and len(new) >= 64 and path.stat().st_mode & 0o777 == 0o600
    assert _last_job(cluster)[1] == "CLUSTER_RENEW_CRYPTO"

    given = "another-clusters-secret-" + "9" * 40
    secret_file = tmp_path / "secret"
    secret_file.write_text(given + "\n")
    proc = cluster.gnt("gnt-cluster", "renew-crypto", "--cluster-domain-secret",
                       str(secret_file))
    assert proc.returncode == 0, proc.stderr
    assert _secret(cluster) == given
    job_id, _summary = _last_job(cluster)
    info = cluster.gnt("gnt-job", "info", job_id, check=True).stdout
    assert "<redacted>" in info and given not in info
    queue = cluster.master.paths.data_dir / "queue"
    stored = [p.read_bytes() for p in queue.rglob("*") if p.is_file()] if queue.exists() else []
    assert not any(given.encode() in blob for blob in stored)

    # from stdin too; a weak secret is refused before any job, the file unchanged
    stdin_secret = "from-stdin-" + "7" * 40
    proc = cluster.gnt("gnt-cluster", "renew-crypto", "--cluster-domain-secret", "-",
                       input_text=stdin_secret + "\n")
    assert proc.returncode == 0, proc.stderr
    assert _secret(cluster) == stdin_secret
    last = _last_job(cluster)[0]
    secret_file.write_text("short\n")
    proc = cluster.gnt("gnt-cluster", "renew-crypto", "--cluster-domain-secret",
                       str(secret_file), ok=False)
    assert proc.returncode == 1 and "at least 32 characters" in proc.stderr, proc.stderr
    assert _secret(cluster) == stdin_secret and _last_job(cluster)[0] == last
