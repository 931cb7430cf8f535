"""Email over SMTP (smtplib): one connection per message, optional STARTTLS or implicit TLS.

The message carries ``Message-ID: <message_id@domain>`` and ``X-Omnisim-Idempotency-Key``;
SMTP servers cannot deduplicate, so ``ProviderSet`` checks ``SentKeys`` before sending and
marks the key once the server has accepted the DATA.
"""

from __future__ import annotations

import email.policy
import email.utils
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from omnisim.send.providers.base import Attempt, OutboundMessage

__all__ = ["SmtpProvider", "IDEMPOTENCY_HEADER"]

IDEMPOTENCY_HEADER = "X-Omnisim-Idempotency-Key"


class _Refused(Exception):
    def __init__(self, stage: str, code: int, reply: bytes | str) -> None:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
        super().__init__(f"SMTP {stage} refused: {code} {text}")
        self.code = code


@dataclass
class SmtpProvider:
    """Send one email per attempt to ``host:port`` as ``sender``.

    ``password`` is read from the environment at load time (``password_env``); ``ca_file``
    trusts a private CA (tests use a self-signed certificate); ``timeout_s`` is the socket
    timeout of each SMTP command.
    """

    name: str
    host: str
    port: int
    sender: str
    starttls: bool = False
    implicit_tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    message_id_domain: str | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        sender_domain = email.utils.parseaddr(self.sender)[1].rpartition("@")[2]
        self._domain = self.message_id_domain or sender_domain or "omnisim.local"

    def message_id(self, msg: OutboundMessage) -> str:
        mid = msg.message_id
        return mid if mid.startswith("<") and mid.endswith(">") else f"<{mid}@{self._domain}>"

    def build(self, msg: OutboundMessage) -> EmailMessage:
        em = EmailMessage()
        em["From"] = self.sender
        em["To"] = msg.address
        em["Subject"] = msg.subject or ""
        em["Date"] = email.utils.formatdate(usegmt=True)
        em["Message-ID"] = self.message_id(msg)
        em[IDEMPOTENCY_HEADER] = msg.idempotency_key
        em.set_content(msg.body)
        return em

    def send(self, msg: OutboundMessage) -> Attempt:
        try:
            em = self.build(msg)
        except (ValueError, TypeError) as exc:  # e.g. a header with a newline
            return Attempt("permanent", error=f"cannot build the email: {exc}")
        try:
            smtp = self._connect()
            try:
                reply = self._transaction(smtp, em, msg.address)
            finally:
                _quit(smtp)
            return Attempt("sent", response=reply, provider_message_id=em["Message-ID"])
        except _Refused as exc:
            return Attempt("retry" if 400 <= exc.code < 500 else "permanent",
                           response=str(exc), error=str(exc))
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError,
                ssl.SSLError) as exc:
            return Attempt("failover", error=f"{type(exc).__name__}: {exc}")
        except TimeoutError:
            return Attempt("retry", error=f"timed out after {self.timeout_s} s")
        except (OSError, smtplib.SMTPException) as exc:
            return Attempt("retry", error=f"connection error: {type(exc).__name__}: {exc}")

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s,
                                                  context=self._context())
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            if self.starttls:
                smtp.starttls(context=self._context())
            if self.username:
                smtp.login(self.username, self.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    def _transaction(smtp: smtplib.SMTP, em: EmailMessage, to: str) -> str:
        """MAIL, RCPT, DATA by hand so the server's final reply (queue id) is kept."""
        smtp.ehlo_or_helo_if_needed()
        sender = email.utils.parseaddr(str(em["From"]))[1]
        utf8 = not (to + sender).isascii()
        code, reply = smtp.mail(sender, ["SMTPUTF8"] if utf8 else [])
        if code != 250:
            raise _Refused("MAIL FROM", code, reply)
        code, reply = smtp.rcpt(to)
        if code not in (250, 251):
            raise _Refused("RCPT TO", code, reply)
        try:
            code, reply = smtp.data(em.as_bytes(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP))
        except smtplib.SMTPDataError as exc:  # the DATA command itself refused (no 354)
            raise _Refused("DATA", exc.smtp_code, exc.smtp_error) from None
        if code != 250:
            raise _Refused("DATA", code, reply)
        return f"{code} {reply.decode('utf-8', 'replace')}"


def _quit(smtp: smtplib.SMTP) -> None:
    """Close politely; a failure here must not turn an accepted message into a retry."""
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()
