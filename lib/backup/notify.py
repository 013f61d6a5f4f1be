"""Notifications of scheduled-export runs: mail via the local sendmail, JSON webhook.

A notification failure is the caller's to log and count; it never changes the
outcome of the backups it reports.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from ganeti import errors

DEFAULT_SENDMAIL = "/usr/sbin/sendmail"
SENDMAIL_TIMEOUT = 60.0
WEBHOOK_TIMEOUT = 15.0


class NotifyError(errors.GenericError):
    """A mail or webhook could not be delivered."""


def wanted(notify: str, failed: bool) -> bool:
    return notify == "always" or (notify == "failure" and failed)


def subject(report: dict[str, Any]) -> str:
    verdict = "FAILED" if report["failed"] else "ok"
    return (f"[ganeti-backup] {report['cluster']}: schedule {report['schedule']}"
            f" {verdict} ({report['counts']['ok']} ok, {report['counts']['failed']} failed)")


def send_mail(sendmail: str, to: Sequence[str], report: dict[str, Any],
              body: str) -> None:
    """Hand the message to ``sendmail -t -oi`` (recipients from the To header)."""
    msg = EmailMessage()
    msg["From"] = f"ganeti-backup@{socket.gethostname()}"
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject(report)
    msg["Date"] = formatdate(localtime=False)
    msg.set_content(body)
    try:
        proc = subprocess.run([sendmail, "-t", "-oi"], input=msg.as_bytes(),
                              capture_output=True, timeout=SENDMAIL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NotifyError(f"mail to {', '.join(to)}: cannot run {sendmail}: {err}") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
        raise NotifyError(f"mail to {', '.join(to)}: {sendmail} failed: {detail}")


def post_webhook(url: str, report: dict[str, Any]) -> None:
    """POST the report as JSON; any answer but 2xx is a failure."""
    if not url.startswith(("http://", "https://")):
        raise NotifyError(f"webhook {url}: only http(s) URLs are supported")
    request = urllib.request.Request(url, data=json.dumps(report).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "ganeti-backup-runner"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as answer:
            status = answer.status
    except urllib.error.HTTPError as err:
        raise NotifyError(f"webhook {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise NotifyError(f"webhook {url}: {getattr(err, 'reason', err)}") from None
    if not 200 <= status < 300:
        raise NotifyError(f"webhook {url}: HTTP {status}")


def deliver(settings: Any, report: dict[str, Any], body: str, sendmail: str) -> list[str]:
    """Send what ``settings`` (BackupDefaults in effect) asks for; the errors, if any."""
    problems: list[str] = []
    if not wanted(settings.notify, bool(report["failed"])):
        return problems
    if settings.mail_to:
        try:
            send_mail(sendmail, settings.mail_to, report, body)
        except NotifyError as err:
            problems.append(str(err))
    if settings.webhook_url:
        try:
            post_webhook(settings.webhook_url, report)
        except NotifyError as err:
            problems.append(str(err))
    return problems
