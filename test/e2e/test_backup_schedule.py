"""Scheduled exports end to end: schedules via gnt-backup, the runner with a
controllable clock (--now), retained generations, prune, import of an older one.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import gntfork
from support.cluster import E2ECluster
from support.files import wait_for_the_next_second

from ganeti import config_journal
from ganeti.backup import exportconf
from ganeti.backup import schedule as sched
from ganeti.tools.local_cluster import SOURCE_TOP

pytestmark = pytest.mark.e2e

MIB = 1 << 20
DAY = 86400


def runner(cluster: E2ECluster, *argv: str, sendmail: Path | None = None,
           home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = cluster.env()
    if sendmail is not None:
        env["GANETI_BACKUP_SENDMAIL"] = str(sendmail)
    if home is not None:        # where a real sendmail (msmtp) finds its configuration
        env["HOME"] = str(home)
    return gntfork.run_python([sys.executable,
                               str(SOURCE_TOP / "tools" / "ganeti-backup-runner"), *argv],
                              env, timeout=300)


def gen_root(cluster: E2ECluster, node_name: str, instance: str) -> Path:
    return cluster.node(node_name).paths.export_dir / ".generations" / instance


def generations(cluster: E2ECluster, node_name: str, instance: str) -> list[str]:
    root = gen_root(cluster, node_name, instance)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def disk_file(cluster: E2ECluster, instance: str) -> Path:
    proc = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name", instance)
    assert instance in proc.stdout
    inst = cluster.instance_conf(instance)
    assert inst is not None
    return Path(inst["disks"][0]["logical_id"][1])


def fill(path: Path, marker: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(marker * (MIB // len(marker)))


def fake_generation(cluster: E2ECluster, node_name: str, instance: str,
                    stamp: float) -> str:
    """An older generation as a past run would have left it (real files, old timestamp)."""
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(stamp))
    newest = cluster.node(node_name).paths.export_dir / instance
    target = gen_root(cluster, node_name, instance) / name
    shutil.copytree(newest, target)
    conf = (target / "config.ini").read_text()
    old = exportconf.parse(conf).timestamp
    (target / "config.ini").write_text(conf.replace(f"timestamp = {old}",
                                                    f"timestamp = {int(stamp)}"))
    return name


def listing(cluster: E2ECluster) -> list[list[str]]:
    out = cluster.gnt("gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
                      "-o", "node,export,generation,size,newest").stdout
    return [line.split("|") for line in out.splitlines()]


def test_schedule_add_list_modify_remove(cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", "--tags", "db", "s1")
    bad = cluster.gnt("gnt-backup", "schedule", "add", "x", "--instances", "s1", "-n",
                      "node3", "--cron", "0 25 * * *", ok=False)
    assert bad.returncode == 1 and "'cron'" in bad.stderr and "Bad hour" in bad.stderr
    bad = cluster.gnt("gnt-backup", "schedule", "add", "x", "--instances", "nosuch", "-n",
                      "node3", "--cron", "0 3 * * *", ok=False)
    assert bad.returncode == 1 and "'instances'" in bad.stderr and "nosuch" in bad.stderr
    bad = cluster.gnt("gnt-backup", "schedule", "add", "x", "--instances", "s1",
                      "--cron", "0 3 * * *", ok=False)
    assert bad.returncode == 1 and "'target_node'" in bad.stderr
    bad = cluster.gnt("gnt-backup", "schedule", "add", "x", "--tags", "db", "-n", "node3",
                      "--cron", "0 3 * * *", "--keep-daily", "-1", ok=False)
    assert bad.returncode == 2 and "--keep-daily" in bad.stderr
    cluster.gnt("gnt-backup", "schedule", "add", "dbs", "--tags", "db", "--node-policy",
                "other", "--cron", "30 2 * * *", "--keep-last", "2", "--keep-weekly", "4")
    out = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "--separator", "|",
                      "-o", "name,enabled,cron,instances,target,retention,shutdown_mode").stdout
    assert out.splitlines() == ["dbs|Y|30 2 * * *|tag:db|(other)|last=2,weekly=4|shutdown"]
    cluster.gnt("gnt-backup", "schedule", "modify", "dbs", "--cron", "0 4 * * 0",
                "--keep-daily", "7", "-n", "node3", "--enabled", "no")
    out = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "--separator", "|",
                      "-o", "name,enabled,cron,target,retention,next_run", "dbs").stdout
    assert out.splitlines() == ["dbs|N|0 4 * * 0|node3|last=2,weekly=4,daily=7|-"]
    bad = cluster.gnt("gnt-backup", "schedule", "modify", "nosuch", "--enabled", "yes",
                      ok=False)
    assert bad.returncode == 1 and "nosuch" in bad.stderr
    # a disabled schedule never runs on its own, run-now runs it anyway
    quiet = runner(cluster, "--now", "2031-01-01T00:00:00Z")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert runner(cluster, "--always-report", "--now", "2031-01-01T00:00:00Z").stdout == (
        "Summary: 0 ok, 0 failed, 0 skipped\n")
    proc = cluster.gnt("gnt-backup", "schedule", "run-now", "dbs")
    assert "OK        dbs s1 job" in proc.stdout and "export to node3" in proc.stdout
    assert (cluster.node("node3").paths.export_dir / "s1" / "config.ini").is_file()
    cluster.gnt("gnt-backup", "schedule", "remove", "dbs")
    assert cluster.gnt("gnt-backup", "schedule", "list", "--no-headers").stdout == ""
    bad = cluster.gnt("gnt-backup", "schedule", "remove", "dbs", ok=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    cluster.gnt("gnt-backup", "remove", "s1")
    cluster.gnt("gnt-instance", "remove", "-f", "s1")


def test_runner_retention_failure_and_import_of_an_older_generation(
        cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", "g1")
    disk = disk_file(cluster, "g1")
    cluster.gnt("gnt-backup", "schedule", "add", "nightly", "--instances", "g1", "-n",
                "node3", "--cron", "0 3 * * *", "--keep-last", "2", "--keep-daily", "2")
    # not due before the first slot after its creation
    data = config_journal.load(cluster.master.paths.cluster_conf_file)[0]
    created = next(iter(data["backup_schedules"].values()))["ctime"]
    first_slot = sched.next_slot("0 3 * * *", created)
    proc = runner(cluster, "--now", str(first_slot - 1))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    fill(disk, b"AAAA")
    proc = runner(cluster, "--now", "2030-01-01T03:00:00Z")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK        nightly g1 job" in proc.stdout
    assert generations(cluster, "node3", "g1") == []          # only the newest so far
    # older runs' generations: two days back (twice), three and five days back, counted
    # from today's noon (UTC), so that 2.0 and 2.1 days back fall on one day at any hour
    now = time.time() // DAY * DAY + DAY / 2
    fakes = [fake_generation(cluster, "node3", "g1", now - k * DAY)
             for k in (2.0, 2.1, 3.0, 5.0)]
    first = listing(cluster)[0][2]
    fill(disk, b"BBBB")
    # the master was down for days: one catch-up run, then retention
    proc = runner(cluster, "--now", "2030-01-05T10:00:00Z")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Summary: 1 ok, 0 failed, 0 skipped" in proc.stdout
    assert "4 slots since the last run, running once" in proc.stderr
    # keep-last 2: the new export and the previous one; keep-daily 2: the newest of the
    # two most recent other days (2 and 3 days back); 2.1 and 5 days back are pruned
    assert generations(cluster, "node3", "g1") == sorted([first, fakes[0], fakes[2]])
    rows = listing(cluster)
    assert [r[4] for r in rows] == ["Y", "N", "N", "N"]
    assert all(int(r[3]) >= 4 * MIB for r in rows)
    # the Ganeti-compatible view still shows one export
    plain = cluster.gnt("gnt-backup", "list", "--no-headers", "--separator", "|").stdout
    assert plain.splitlines() == ["node3|g1"]
    # same time again: not due
    assert runner(cluster, "--now", "2030-01-05T10:30:00Z").stdout == ""

    # prune --dry-run shows what would go and removes nothing
    out = cluster.gnt("gnt-backup", "prune", "--keep-last", "1", "--dry-run", "g1").stdout
    assert f"node3 g1@{first}" in out and "would remove" in out
    assert "1 kept, 3 would remove" in out
    assert generations(cluster, "node3", "g1") == sorted([first, fakes[0], fakes[2]])

    # a failing export (pre hook veto on the target) leaves every generation untouched
    before = listing(cluster)
    hook_dir = cluster.node("node3").paths.hooks_dir / "instance-export-pre.d"
    hook_dir.mkdir(parents=True, exist_ok=True)
    veto = hook_dir / "50-full"
    veto.write_text("#!/bin/sh\necho 'disk full'\nexit 1\n")
    veto.chmod(0o755)
    try:
        proc = runner(cluster, "--now", "2030-01-06T03:00:00Z")
    finally:
        veto.unlink()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED    nightly g1 job" in proc.stdout and "disk full" in proc.stdout
    assert "Summary: 0 ok, 1 failed, 0 skipped" in proc.stdout
    assert listing(cluster) == before
    out = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "--separator", "|",
                      "-o", "name,last_result").stdout
    assert out.strip() == "nightly|failed: g1"

    # import the older generation by NAME@GENERATION and by --generation
    assert (disk.read_bytes()[:4]) == b"BBBB"
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3", "--src-dir",
                f"g1@{first}", "--no-start", "g1-old")
    assert disk_file(cluster, "g1-old").read_bytes()[:MIB] == b"AAAA" * (MIB // 4)
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-dir", "g1", "--generation",
                fakes[2], "--no-start", "g1-older")
    assert disk_file(cluster, "g1-older").read_bytes()[:4] == b"AAAA"
    bad = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                      "--src-dir", "g1", "--generation", "20990101T000000Z", "--no-start", "g1-x",
                      ok=False)
    assert bad.returncode == 1 and "20990101T000000Z" in bad.stderr
    bad = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-dir",
                      "g1@20990101T000000Z", "--no-start", "g1-x", ok=False)
    assert bad.returncode == 1 and "No export of g1@20990101T000000Z" in bad.stderr
    # remove one older generation; the newest is refused (gnt-backup remove handles it)
    cluster.gnt("gnt-backup", "remove", f"g1@{fakes[2]}")
    assert generations(cluster, "node3", "g1") == sorted([first, fakes[0]])
    newest = listing(cluster)[0][2]
    bad = cluster.gnt("gnt-backup", "remove", "g1", "--generation", newest, ok=False)
    assert bad.returncode == 1 and "newest export" in bad.stderr
    for name in ("g1-old", "g1-older", "g1"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
    cluster.gnt("gnt-backup", "schedule", "remove", "nightly")
    assert os.path.isdir(gen_root(cluster, "node3", "g1"))


def meta_rows(cluster: E2ECluster, instance: str) -> list[list[str]]:
    """(generation, newest, protected, note) of every generation on node3, newest first."""
    out = cluster.gnt("gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
                      "--node", "node3", "-o", "export,generation,newest,protected,note").stdout
    return [line.split("|")[1:] for line in out.splitlines()
            if line.split("|")[0] == instance]


def sidecar(cluster: E2ECluster, instance: str, generation: str | None) -> Any:
    base = cluster.node("node3").paths.export_dir
    path = (base / instance if generation is None
            else gen_root(cluster, "node3", instance) / generation)
    meta = path / "ganeti-ng.meta.json"
    return json.loads(meta.read_text()) if meta.exists() else None


def test_protected_generations_and_notes(cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", "p1")
    disk = disk_file(cluster, "p1")
    bad = cluster.gnt("gnt-backup", "export", "-n", "node3", "--note", "x" * 1025, "p1",
                      ok=False)
    assert bad.returncode == 1 and "note: at most 1024 characters" in bad.stderr
    assert not (cluster.node("node3").paths.export_dir / "p1").exists()
    exports = []
    for marker, note in ((b"AAAA", "before the upgrade"), (b"BBBB", ""), (b"CCCC", "")):
        fill(disk, marker)
        cluster.gnt("gnt-backup", "export", "-n", "node3", "--keep-generations",
                    *(["--note", note] if note else []), "p1")
        exports.append(meta_rows(cluster, "p1")[0][0])
        wait_for_the_next_second()  # generations are named by the second
    first, second, third = exports
    assert meta_rows(cluster, "p1") == [[third, "Y", "N", ""], [second, "N", "N", ""],
                                        [first, "N", "N", "before the upgrade"]]
    # the note moved with the export when it was retired; config.ini has none of it
    assert sidecar(cluster, "p1", first) == {"version": 1, "protected": False,
                                             "note": "before the upgrade"}
    assert "upgrade" not in (gen_root(cluster, "node3", "p1") / first
                             / "config.ini").read_text()
    # the default list -g columns include Protected and Note
    out = cluster.gnt("gnt-backup", "list", "-g", "--node", "node3").stdout
    assert out.splitlines()[0].split()[-2:] == ["Protected", "Note"]

    cluster.gnt("gnt-backup", "protect", f"p1@{first}")
    assert sidecar(cluster, "p1", first)["protected"] is True
    out = cluster.gnt("gnt-backup", "prune", "--keep-last", "1", "p1").stdout
    assert f"node3 p1@{first}" in out and "keep (protected)" in out
    assert f"p1@{second}" in out and "removed" in out
    assert "2 kept, 1 removed" in out
    assert generations(cluster, "node3", "p1") == [first]
    # the runner's export + prune jobs skip it too
    cluster.gnt("gnt-backup", "schedule", "add", "hourly-p1", "--instances", "p1", "-n",
                "node3", "--cron", "0 * * * *", "--keep-last", "1")
    proc = runner(cluster, "--now", "2030-01-01T03:00:00Z")
    assert proc.returncode == 0 and "OK        hourly-p1 p1 job" in proc.stdout, (
        proc.stdout + proc.stderr)
    cluster.gnt("gnt-backup", "schedule", "remove", "hourly-p1")
    assert generations(cluster, "node3", "p1") == [first]
    fourth = meta_rows(cluster, "p1")[0][0]
    assert fourth not in (first, second, third)

    bad = cluster.gnt("gnt-backup", "remove", f"p1@{first}", ok=False)
    assert bad.returncode == 1 and "is protected" in bad.stderr
    assert f"gnt-backup unprotect p1@{first}" in bad.stderr
    assert generations(cluster, "node3", "p1") == [first]

    # the newest, by instance name alone
    cluster.gnt("gnt-backup", "protect", "p1")
    bad = cluster.gnt("gnt-backup", "remove", "p1", ok=False)
    assert bad.returncode == 1 and "'gnt-backup unprotect p1'" in bad.stderr
    assert (cluster.node("node3").paths.export_dir / "p1" / "config.ini").is_file()
    # a plain export (Ganeti's replace semantics) never deletes a protected export:
    # it is kept as an older generation
    fill(disk, b"DDDD")
    proc = cluster.gnt("gnt-backup", "export", "-n", "node3", "p1")
    assert "is protected: it is kept as an older generation" in proc.stdout + proc.stderr
    assert generations(cluster, "node3", "p1") == [first, fourth]
    rows = meta_rows(cluster, "p1")
    assert [r[1:3] for r in rows] == [["Y", "N"], ["N", "Y"], ["N", "Y"]]

    # notes change later; a bad one is refused naming the field
    cluster.gnt("gnt-backup", "modify", f"p1@{first}", "--note", "kept for the audit")
    cluster.gnt("gnt-backup", "modify", "p1", "--generation", fourth, "--protected", "no",
                "--note", "")
    assert meta_rows(cluster, "p1")[1:] == [[fourth, "N", "N", ""],
                                            [first, "N", "Y", "kept for the audit"]]
    assert sidecar(cluster, "p1", fourth) is None
    bad = cluster.gnt("gnt-backup", "modify", f"p1@{first}", "--note", "two\nlines",
                      ok=False)
    assert bad.returncode == 1 and "note: must be one line" in bad.stderr
    bad = cluster.gnt("gnt-backup", "modify", f"p1@{first}", ok=False)
    assert bad.returncode == 1 and "Nothing to change" in bad.stderr
    assert meta_rows(cluster, "p1")[2][3] == "kept for the audit"

    # unprotected, it goes like any other
    cluster.gnt("gnt-backup", "unprotect", f"p1@{first}")
    cluster.gnt("gnt-backup", "remove", f"p1@{first}")
    cluster.gnt("gnt-backup", "remove", f"p1@{fourth}")
    cluster.gnt("gnt-backup", "remove", "p1")
    assert meta_rows(cluster, "p1") == []
    assert not (cluster.node("node3").paths.export_dir / "p1").exists()
    cluster.gnt("gnt-instance", "remove", "-f", "p1")


# --- fixes and options of issue 21 --------------------------------------------------------


def add_instance(cluster: E2ECluster, name: str, *tags: str, pnode: str = "node2") -> None:
    extra = ("--tags", ",".join(tags)) if tags else ()
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", pnode, "--disk", "0:size=4M",
                "--no-start", *extra, name)


def tags_of(cluster: E2ECluster, name: str) -> str:
    out = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "tags", name).stdout
    return out.strip()


def ctime_of(cluster: E2ECluster, schedule: str) -> float:
    data = config_journal.load(cluster.master.paths.cluster_conf_file)[0]
    return float(next(s for s in data["backup_schedules"].values()
                      if s["name"] == schedule)["ctime"])


def sendmail_stub(tmp_path: Path) -> tuple[Path, Path]:
    """The sendmail interface (``-t -oi``, message on stdin), delivering into a file."""
    spool = tmp_path / "mail"
    script = tmp_path / "sendmail"
    script.write_text(f"#!/bin/sh\n[ \"$1 $2\" = '-t -oi' ] || exit 64\n"
                      f"cat >> '{spool}'\necho '--end--' >> '{spool}'\n")
    script.chmod(0o755)
    return script, spool


class Hook:
    """A real HTTP endpoint on 127.0.0.1 recording the JSON it receives."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(
                    int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/backup"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_dry_run_create_and_import_leave_no_lock(cluster: E2ECluster) -> None:
    add_instance(cluster, "dry1")
    cluster.gnt("gnt-backup", "export", "-n", "node3", "dry1")
    args = ("-t", "file", "-n", "node2", "--disk", "0:size=4M", "--no-start")
    cluster.gnt("gnt-instance", "add", *args, "--dry-run", "dry2")
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3", "--src-dir",
                "dry1", "--no-start", "--dry-run", "dry3")
    locks = cluster.gnt("gnt-debug", "locks").stdout
    assert "dry2" not in locks and "dry3" not in locks
    # the real runs after the dry runs
    cluster.gnt("gnt-instance", "add", *args, "dry2")
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3", "--src-dir",
                "dry1", "--no-start", "dry3")
    for name in ("dry1", "dry2", "dry3"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
    cluster.gnt("gnt-backup", "remove", "dry1")


class SmtpSink:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) keeping every message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[str, list[str], str]] = []
        messages = self.messages

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                 envelope.content.decode()))
                return "250 OK"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def msmtp_home(self, home: Path) -> Path:
        """A HOME whose ~/.msmtprc relays to this sink."""
        home.mkdir(parents=True, exist_ok=True)
        rc = home / ".msmtprc"
        rc.write_text(f"defaults\nauth off\ntls off\naccount default\nhost 127.0.0.1\n"
                      f"port {self.port}\nfrom ganeti-backup@localhost\n")
        rc.chmod(0o600)
        return home

    def close(self) -> None:
        self.controller.stop()


def test_mail_through_a_real_sendmail_to_an_smtp_sink(cluster: E2ECluster,
                                                      tmp_path: Path) -> None:
    """The runner hands its report to msmtp (a real sendmail), which relays it over SMTP."""
    msmtp = shutil.which("msmtp")
    assert msmtp, "tools/setup-env installs msmtp"
    sink = SmtpSink()
    try:
        add_instance(cluster, "mail1")
        cluster.gnt("gnt-backup", "schedule", "add", "mailed", "--instances", "mail1",
                    "-n", "node3", "--cron", "@daily", "--notify", "always",
                    "--mail-to", "ops@example.org,backup@example.org")
        proc = runner(cluster, "--schedule", "mailed", sendmail=Path(msmtp),
                      home=sink.msmtp_home(tmp_path / "home"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "OK        mailed mail1 job" in proc.stdout
        deadline = time.monotonic() + 30
        while not sink.messages and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(sink.messages) == 1, sink.messages
        sender, recipients, content = sink.messages[0]
        assert sender == "ganeti-backup@localhost"
        assert sorted(recipients) == ["backup@example.org", "ops@example.org"]
        assert "Subject: [ganeti-backup]" in content and "schedule mailed ok" in content
        assert "mail1" in content.split("\r\n\r\n", 1)[1]
    finally:
        sink.close()
        cluster.gnt("gnt-backup", "schedule", "remove", "mailed", ok=False)
        cluster.gnt("gnt-instance", "remove", "-f", "mail1", ok=False)
        cluster.gnt("gnt-backup", "remove", "mail1", ok=False)


def test_quiet_no_wait_collection_and_notifications(cluster: E2ECluster,
                                                    tmp_path: Path) -> None:
    sendmail, spool = sendmail_stub(tmp_path)
    hook = Hook()
    add_instance(cluster, "nw1", "nw")
    cluster.gnt("gnt-cluster", "modify", "--backup-notify", "failure",
                "--backup-mail-to", "ops@example.org")
    cluster.gnt("gnt-backup", "schedule", "add", "nw", "--tags", "nw", "-n", "node3",
                "--cron", "0 3 * * *", "--webhook-url", hook.url)
    first = sched.next_slot("0 3 * * *", ctime_of(cluster, "nw"))
    try:
        # nothing due: cron gets no output to mail
        proc = runner(cluster, "--now", str(first - 60), sendmail=sendmail)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
        cluster.gnt("gnt-node", "modify", "--offline", "yes", "node3")
        proc = runner(cluster, "--no-wait", "--now", str(first), sendmail=sendmail)
        # submitted is not success
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("SUBMITTED nw nw1 job ") and "OK" not in proc.stdout
        assert lines[-1] == "Summary: 0 ok, 0 failed, 0 skipped, 1 submitted"
        job_id = lines[0].split("job ")[1].split(":")[0]
        # schedule list shows the finished job's real result, not "running" for ever
        deadline = time.monotonic() + 120
        result = "running"
        while result == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
            result = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "-o",
                                 "last_result", "nw").stdout.strip()
        assert result == "failed: nw1"
        assert not spool.exists() and hook.received == []
        # the next pass collects it: reported, exit 1, notified by mail and webhook
        proc = runner(cluster, "--no-wait", "--now", str(first + 300), sendmail=sendmail)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"FAILED    nw nw1 job {job_id}: collected: " in proc.stdout
        assert "node3 is offline" in proc.stdout
        assert proc.stdout.splitlines()[-1] == "Summary: 0 ok, 1 failed, 0 skipped"
        mail = spool.read_text()
        assert "To: ops@example.org" in mail and "schedule nw FAILED" in mail
        assert mail.count("--end--") == 1
        [payload] = hook.received
        assert (payload["schedule"], payload["status"]) == ("nw", "failed")
        assert payload["outcomes"][0]["instance"] == "nw1"
        assert payload["outcomes"][0]["job_id"] == int(job_id)
        # collected once
        proc = runner(cluster, "--no-wait", "--now", str(first + 600), sendmail=sendmail)
        assert (proc.returncode, proc.stdout) == (0, "")
        assert spool.read_text().count("--end--") == 1 and len(hook.received) == 1
    finally:
        hook.close()
        cluster.gnt("gnt-node", "modify", "--offline", "no", "node3")
        cluster.gnt("gnt-cluster", "modify", "--backup-notify", "failure",
                    "--backup-mail-to", "")
    cluster.gnt("gnt-backup", "schedule", "remove", "nw")
    cluster.gnt("gnt-instance", "remove", "-f", "nw1")


def planned(cluster: E2ECluster, *argv: str) -> list[str]:
    out = cluster.gnt("gnt-backup", "schedule", "run-now", "--dry-run", *argv).stdout
    return sorted(line.split()[2].rstrip(":") for line in out.splitlines()
                  if line.startswith("PLANNED"))


def test_exclude_time_zone_snapshot_refusal_and_imported_copies(
        cluster: E2ECluster) -> None:
    add_instance(cluster, "ex1", "t1")
    add_instance(cluster, "ex2", "t1", "skip")
    add_instance(cluster, "ex3")
    cluster.gnt("gnt-backup", "schedule", "add", "ex", "--all-instances", "--exclude",
                "ex3,tag:skip", "-n", "node3", "--cron", "0 3 * * *")
    assert planned(cluster, "ex") == ["ex1"]

    # snapshot mode on file storage without reflinks is refused when the schedule is made
    bad = cluster.gnt("gnt-backup", "schedule", "add", "snap", "--instances", "ex1", "-n",
                      "node3", "--cron", "@daily", "--shutdown-mode", "snapshot", ok=False)
    assert bad.returncode == 1 and "'shutdown_mode'" in bad.stderr
    assert "ex1 disk 0 (file)" in bad.stderr
    bad = cluster.gnt("gnt-backup", "schedule", "add", "snap", "--tags", "t1", "-n",
                      "node3", "--cron", "@daily", "--shutdown-mode", "snapshot", ok=False)
    assert bad.returncode == 1 and "selection matches now" in bad.stderr
    bad = cluster.gnt("gnt-backup", "schedule", "modify", "ex", "--shutdown-mode",
                      "snapshot", ok=False)
    assert bad.returncode == 1 and "'shutdown_mode'" in bad.stderr
    assert cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "-o",
                       "name").stdout.split() == ["ex"]

    # time zones: the cluster default, then the schedule's own
    cluster.gnt("gnt-cluster", "modify", "--backup-timezone", "America/New_York")
    try:
        created = ctime_of(cluster, "ex")
        first = sched.next_slot("0 3 * * *", created, "America/New_York")
        assert time.gmtime(first).tm_hour == 8          # 03:00 EST
        assert "PLANNED" not in runner(cluster, "--dry-run", "--now", str(first - 60)).stdout
        assert "PLANNED   ex ex1" in runner(cluster, "--dry-run", "--now", str(first)).stdout
        out = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "--separator",
                          "|", "-o", "name,timezone,next_run").stdout
        shown = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(first))
        assert out.strip() == f"ex|(America/New_York)|{shown}"
        cluster.gnt("gnt-backup", "schedule", "modify", "ex", "--timezone", "Asia/Tokyo")
        tokyo = sched.next_slot("0 3 * * *", created, "Asia/Tokyo")
        assert time.gmtime(tokyo).tm_hour == 18         # 03:00 JST
        assert "PLANNED" not in runner(cluster, "--dry-run", "--now", str(tokyo - 60)).stdout
        assert "PLANNED   ex ex1" in runner(cluster, "--dry-run", "--now", str(tokyo)).stdout
        bad = cluster.gnt("gnt-backup", "schedule", "modify", "ex", "--timezone", "Mars/Base",
                          ok=False)
        assert bad.returncode == 1 and "'overrides.timezone'" in bad.stderr
        cluster.gnt("gnt-backup", "schedule", "modify", "ex", "--timezone", "default")
        out = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "-o",
                          "timezone").stdout
        assert out.strip() == "(America/New_York)"
    finally:
        cluster.gnt("gnt-cluster", "modify", "--backup-timezone", "UTC")

    # every field of list-fields works with -o, and '+' adds to the defaults
    fields = [line.split()[0] for line in cluster.gnt(
        "gnt-backup", "schedule", "list-fields", "--no-headers").stdout.splitlines()]
    assert {"name", "exclude", "timezone", "bwlimit", "ionice_class", "jobs"} <= set(fields)
    lines = cluster.gnt("gnt-backup", "schedule", "list", "--separator", "|", "-o",
                        ",".join(fields)).stdout.splitlines()
    assert len(lines) == 2 and len(lines[1].split("|")) == len(fields)
    assert lines[1].split("|")[fields.index("exclude")] == "ex3,tag:skip"
    header = cluster.gnt("gnt-backup", "schedule", "list", "--separator", "|", "-o",
                         "+exclude").stdout.splitlines()[0]
    assert header.split("|") == ["Name", "Enabled", "Cron", "Instances", "Target",
                                 "Retention", "NextRun", "LastResult", "Exclude"]
    bad = cluster.gnt("gnt-backup", "schedule", "list", "-o", "name,colour", ok=False)
    assert bad.returncode == 1 and "colour" in bad.stderr

    # an import under a new name is a copy: no tags, so no tag schedule picks it up;
    # a restore under the instance's own name keeps them
    cluster.gnt("gnt-backup", "schedule", "add", "t1s", "--tags", "t1", "-n", "node3",
                "--cron", "@daily")
    cluster.gnt("gnt-backup", "export", "-n", "node3", "ex1")
    proc = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                       "--src-dir", "ex1", "--no-start", "ex1-copy")
    assert "Not carrying the export's tags (t1)" in proc.stdout + proc.stderr
    assert tags_of(cluster, "ex1-copy") == ""
    assert planned(cluster, "t1s") == ["ex1", "ex2"]
    cluster.gnt("gnt-instance", "remove", "-f", "ex1")
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                "--src-dir", "ex1", "--no-start", "ex1")
    assert tags_of(cluster, "ex1") == "t1"
    for name in ("t1s", "ex"):
        cluster.gnt("gnt-backup", "schedule", "remove", name)
    for name in ("ex1", "ex2", "ex3", "ex1-copy"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
    cluster.gnt("gnt-backup", "remove", "ex1")


def doc_examples() -> list[list[str]]:
    """The commands of the first code block of doc/scheduled-exports.md's "Schedules"."""
    text = (SOURCE_TOP / "doc" / "scheduled-exports.md").read_text()
    section = text.split("## Schedules", 1)[1]
    block = section.split("\n\n    ", 1)[1].split("\n\n", 1)[0]
    joined = ("    " + block).replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip()]


def test_doc_examples_run(cluster: E2ECluster) -> None:
    add_instance(cluster, "web1", "prod")
    add_instance(cluster, "scratch1", "prod", "scratch")
    add_instance(cluster, "db1")
    commands = doc_examples()
    assert len(commands) >= 10 and all(c[:2] == ["gnt-backup", "schedule"] for c in commands)
    outputs = {}
    for argv in commands:
        outputs[" ".join(argv[2:4])] = cluster.gnt(*argv).stdout
    # the last example removed "weekly"
    assert cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "-o",
                       "name").stdout.split() == ["db", "nightly"]
    assert "PLANNED   weekly scratch1" in outputs["run-now --dry-run"]
    assert "PLANNED   weekly web1" in outputs["run-now --dry-run"]
    assert "db1" not in outputs["run-now --dry-run"]
    assert "OK        db db1 job" in outputs["run-now db"]
    assert "timezone" in outputs["list-fields"]
    rows = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "--separator", "|",
                       "-o", "name,enabled,exclude,bwlimit,ionice_class").stdout.splitlines()
    assert rows == ["db|Y|-|(-)|idle", "nightly|N|tag:scratch|(-)|(-)"]
    for name in ("db", "nightly"):
        cluster.gnt("gnt-backup", "schedule", "remove", name)
    for name in ("web1", "scratch1", "db1"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
    cluster.gnt("gnt-backup", "remove", "db1")


def test_two_schedules_with_different_targets_keep_both_histories(
        cluster: E2ECluster) -> None:
    """Issue 21 defect 1: each schedule's export used to delete the other's newest."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", "two1")
    disk = disk_file(cluster, "two1")
    cluster.gnt("gnt-backup", "schedule", "add", "near", "--instances", "two1",
                "--node-policy", "primary", "--cron", "0 1 * * *", "--keep-last", "5")
    cluster.gnt("gnt-backup", "schedule", "add", "far", "--instances", "two1", "-n",
                "node3", "--cron", "0 2 * * *", "--keep-last", "5")
    for marker in (b"AAAA", b"BBBB"):
        fill(disk, marker)
        for name in ("near", "far"):
            proc = cluster.gnt("gnt-backup", "schedule", "run-now", name)
            assert "Removed the older export" not in proc.stdout, proc.stdout
    rows = [r for r in listing(cluster) if r[1] == "two1"]
    assert sorted((r[0], r[4]) for r in rows) == [("node2", "N"), ("node2", "Y"),
                                                  ("node3", "N"), ("node3", "Y")]
    for node_name in ("node2", "node3"):
        newest = cluster.node(node_name).paths.export_dir / "two1" / "disk0.img"
        assert newest.read_bytes()[:MIB] == b"BBBB" * (MIB // 4)
        older = gen_root(cluster, node_name, "two1") / generations(cluster, node_name,
                                                                    "two1")[0]
        assert (older / "disk0.img").read_bytes()[:MIB] == b"AAAA" * (MIB // 4)
    for name in ("near", "far"):
        cluster.gnt("gnt-backup", "schedule", "remove", name)
    cluster.gnt("gnt-instance", "remove", "-f", "two1")
