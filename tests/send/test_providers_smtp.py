"""The SMTP provider against a real aiosmtpd server on loopback: headers, UTF-8 bodies,
AUTH with the password from the environment, STARTTLS and implicit TLS with a self-signed
certificate, 4xx retry / 5xx permanent, and dedup with SentKeys."""

from __future__ import annotations

import email
import email.policy
import random
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

aiosmtpd = pytest.importorskip("aiosmtpd")
pytest.importorskip("cryptography")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402

from omnisim.send.providers import IDEMPOTENCY_HEADER, MemorySentKeys, ProviderSet  # noqa: E402
from providers_support import (  # noqa: E402
    FakeTime, free_port, message, self_signed_cert, server_tls_context,
)


@dataclass
class Mailbox:
    """aiosmtpd handler: keeps what it accepts; ``refuse`` scripts replies to DATA."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    refuse: list[str] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd API
        if self.refuse:
            return self.refuse.pop(0)
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "raw": envelope.original_content or envelope.content,
                              "tls": session.ssl is not None})
        return f"250 OK queued as Q{len(self.messages)}"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.password == b"pa55 word"
        return AuthResult(success=ok, handled=False, message=None if ok else "535 5.7.8 bad credentials")

    def parsed(self, i: int = 0) -> email.message.EmailMessage:
        return email.message_from_bytes(self.messages[i]["raw"], policy=email.policy.default)


def _start(handler: Mailbox, **kw: Any) -> Controller:
    ctl = Controller(handler, hostname="127.0.0.1", port=free_port(), **kw)
    ctl.start()
    return ctl


@pytest.fixture
def smtpd() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    ctl = _start(box, authenticator=box.authenticate, auth_require_tls=False)
    yield box, ctl.port
    ctl.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Any, Any]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def smtp(port: int, **over: Any) -> dict[str, Any]:
    spec = {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": port,
            "from": "Shop Ünïcode <news@shop.example>", "timeout_s": 2, "max_attempts": 2,
            "backoff_base_s": 1.0}
    spec.update(over)
    return spec


def pset(*providers: dict[str, Any], ft: FakeTime | None = None, keys: Any = None) -> ProviderSet:
    ft = ft or FakeTime()
    return ProviderSet.from_dict({"channels": {"email": list(providers)}}, sent_keys=keys,
                                 clock=ft.clock, sleep=ft.sleep, rng=random.Random(1))


def mail(n: int = 1, **kw: Any):
    base = dict(channel="email", address="ana@example.org", subject="Grüße — 50 % off ✓",
                body="Hallo Ana,\nschöne Grüße — 你好 ✓\n.\nA line with only a dot above.\n")
    base.update(kw)
    return message(n, **base)


def test_email_headers_and_utf8_body(smtpd):
    box, port = smtpd
    res = pset(smtp(port)).deliver(mail())
    assert (res.status, res.provider, res.attempts, res.error) == ("sent", "mail", 1, None)
    assert res.provider_message_id == "<m1@shop.example>"
    assert res.response == "250 OK queued as Q1"
    (got,) = box.messages
    assert got["from"] == "news@shop.example" and got["to"] == ["ana@example.org"]
    em = box.parsed()
    assert em["From"] == "Shop Ünïcode <news@shop.example>"
    assert em["To"] == "ana@example.org"
    assert em["Subject"] == "Grüße — 50 % off ✓"
    assert em["Message-ID"] == "<m1@shop.example>"
    assert em[IDEMPOTENCY_HEADER] == "k1"
    assert em.get_content().replace("\r\n", "\n") == mail().body
    assert em.get_content_charset() == "utf-8"


def test_login_uses_password_from_environment(smtpd, monkeypatch):
    box, port = smtpd
    monkeypatch.setenv("SMTP_PW", "pa55 word")
    assert pset(smtp(port, username="shop", password_env="SMTP_PW")).deliver(mail()).status == "sent"
    assert box.logins == [(b"shop", b"pa55 word")]


def test_bad_password_fails_over_without_retry(smtpd, monkeypatch):
    box, port = smtpd
    monkeypatch.setenv("SMTP_PW", "wrong")
    ft = FakeTime()
    res = pset(smtp(port, username="shop", password_env="SMTP_PW"), ft=ft).deliver(mail())
    assert (res.status, res.attempts) == ("failed", 1)
    assert "SMTPAuthenticationError" in res.error and ft.sleeps == []
    assert box.messages == []


def test_second_delivery_of_same_key_is_not_sent(smtpd):
    box, port = smtpd
    keys = MemorySentKeys()
    ps = pset(smtp(port), keys=keys)
    assert ps.deliver(mail(1)).status == "sent"
    assert keys.get("k1") == ("mail", "<m1@shop.example>")
    # a retry after a crash: same key, maybe a new ProviderSet over the same store
    again = pset(smtp(port), keys=keys).deliver(mail(1, message_id="m1-retry"))
    assert (again.status, again.attempts) == ("sent", 0) and "duplicate" in again.response
    assert len(box.messages) == 1
    assert ps.deliver(mail(2)).status == "sent" and len(box.messages) == 2


def test_4xx_is_retried_5xx_is_permanent(smtpd):
    box, port = smtpd
    ft = FakeTime()
    box.refuse = ["451 4.3.0 try again later"]
    res = pset(smtp(port), ft=ft).deliver(mail(1))
    assert (res.status, res.attempts) == ("sent", 2) and len(ft.sleeps) == 1
    box.refuse = ["550 5.1.1 no such user"]
    res = pset(smtp(port), ft=ft).deliver(mail(2))
    assert (res.status, res.attempts) == ("failed", 1)
    assert "550" in res.error and "no such user" in res.error
    assert len(box.messages) == 1


@pytest.mark.parametrize("field", ["subject", "address"])
def test_header_injection_is_refused(smtpd, field):
    box, port = smtpd
    res = pset(smtp(port)).deliver(mail(**{field: "a@b.example\r\nBcc: victim@example.org"}))
    assert (res.status, res.attempts) == ("failed", 1) and "cannot build" in res.error
    assert box.messages == []


def test_connection_refused_fails_over_to_second_server(smtpd):
    box, port = smtpd
    ft = FakeTime()
    res = pset(smtp(free_port(), name="down"), smtp(port, name="up"), ft=ft).deliver(mail())
    assert (res.status, res.provider, res.attempts) == ("sent", "up", 3)
    assert len(box.messages) == 1 and len(ft.sleeps) == 1


def test_starttls_with_self_signed_certificate(cert):
    cert_path, key_path = cert
    box = Mailbox()
    ctl = _start(box, tls_context=server_tls_context(cert_path, key_path), require_starttls=True)
    try:
        plain = pset(smtp(ctl.port, max_attempts=1)).deliver(mail(1))
        assert plain.status == "failed" and "530" in plain.error  # server insists on STARTTLS
        res = pset(smtp(ctl.port, starttls=True, ca_file=str(cert_path))).deliver(mail(2))
        assert res.status == "sent", res.error
        assert box.messages[0]["tls"] is True and box.parsed()[IDEMPOTENCY_HEADER] == "k2"
        unverified = pset(smtp(ctl.port, starttls=True, max_attempts=1)).deliver(mail(3))
        assert unverified.status == "failed" and "CERTIFICATE_VERIFY_FAILED" in unverified.error
    finally:
        ctl.stop()


def test_implicit_tls(cert):
    cert_path, key_path = cert
    box = Mailbox()
    ctl = _start(box, ssl_context=server_tls_context(cert_path, key_path))
    try:
        plain = pset(smtp(ctl.port, max_attempts=1, timeout_s=0.3)).deliver(mail(1))
        assert plain.status == "failed" and box.messages == []
        res = pset(smtp(ctl.port, ssl=True, ca_file=str(cert_path))).deliver(mail(2))
        assert res.status == "sent", res.error
        assert box.parsed()[IDEMPOTENCY_HEADER] == "k2"
    finally:
        ctl.stop()


class _RefuseDataCommand(Controller):
    """An aiosmtpd server that answers the DATA command itself (before any content) with
    ``reply``, as servers do for policy rejections (554) or overload (451)."""

    def __init__(self, handler: Mailbox, reply: str, **kw: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=free_port(), **kw)
        self.reply = reply

    def factory(self):
        from aiosmtpd.smtp import SMTP, syntax

        reply = self.reply

        class Server(SMTP):
            @syntax("DATA")
            async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd API
                await self.push(reply)

        return Server(self.handler, **self.SMTP_kwargs)


@pytest.mark.parametrize("reply, status, attempts, permanent", [
    ("554 5.7.1 rejected by content policy", "failed", 1, True),  # used to be retried
    ("451 4.3.0 try again later", "failed", 2, False),
])
def test_refusal_of_the_data_command_is_classified_by_its_code(reply, status, attempts, permanent):
    ctl = _RefuseDataCommand(Mailbox(), reply)
    ctl.start()
    try:
        ft = FakeTime()
        res = pset(smtp(ctl.port), ft=ft).deliver(mail())
    finally:
        ctl.stop()
    assert (res.status, res.attempts, res.permanent) == (status, attempts, permanent)
    assert f"SMTP DATA refused: {reply}" in res.error
