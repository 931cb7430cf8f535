"""Providers YAML: the example loads; every mistake names its key path and expected type."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from omnisim.errors import OmnisimError
from omnisim.send.providers import ProviderConfigError, ProviderSet
from omnisim.send.providers.resilience import Resilience

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "providers.yaml"
SECRETS = ["OMNISIM_SMTP_PASSWORD", "OMNISIM_SMTP_BACKUP_PASSWORD", "OMNISIM_SMS_TOKEN",
           "OMNISIM_SMS_BACKUP_KEY", "OMNISIM_PUSH_TOKEN"]

GOOD: dict[str, Any] = {"channels": {
    "email": [{"type": "smtp", "host": "127.0.0.1", "port": 2525, "from": "a@b.example"}],
    "sms": [{"type": "http", "url": "http://127.0.0.1:9/x", "body": {"to": "{address}"}}],
}}


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one key (``sms.0.url``; value ``...`` deletes it) changed."""
    data = copy.deepcopy(GOOD)
    node: Any = data["channels"]
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_example_file_loads(monkeypatch):
    for var in SECRETS:
        monkeypatch.setenv(var, "x")
    ps = ProviderSet.from_yaml(EXAMPLE)
    assert ps.channels() == {"email", "sms", "push"}
    assert ps.providers("sms") == ["sms-gateway", "sms-backup"]
    assert ps.providers("push") == ["push-gateway", "push-dry-run"]
    assert set(ps.breaker_states().values()) == {"closed"}


def test_example_names_the_missing_secret(monkeypatch):
    for var in SECRETS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ProviderConfigError, match=r"providers\.yaml: channels\.email\[0\]\.password_env: "
                                                  "environment variable OMNISIM_SMTP_PASSWORD is not set"):
        ProviderSet.from_yaml(EXAMPLE)


def test_defaults_and_overrides():
    data = with_("sms.0.max_attempts", 7)
    data["defaults"] = {"timeout_s": 3, "max_attempts": 2}
    ps = ProviderSet.from_dict(data)
    assert ps.resilience("email-smtp-0") == Resilience(timeout_s=3.0, max_attempts=2)
    assert ps.resilience("sms-http-0") == Resilience(timeout_s=3.0, max_attempts=7)


BAD = [
    (with_("email.0.type", "carrier-pigeon"),
     r"channels\.email\[0\]\.type: expected one of smtp, http, file, got str 'carrier-pigeon'"),
    (with_("email.0.type", ...), r"channels\.email\[0\]\.type: required key is missing"),
    (with_("sms.0.url", ...), r"channels\.sms\[0\]\.url: required key is missing \(expected a string\)"),
    (with_("sms.0.url", "ftp://x/y"), r"channels\.sms\[0\]\.url: expected an http:// or https:// URL"),
    (with_("sms.0.url", 42), r"channels\.sms\[0\]\.url: expected a string, got int 42"),
    (with_("sms.0.timeout_s", "fast"), r"channels\.sms\[0\]\.timeout_s: expected a number, got str 'fast'"),
    (with_("sms.0.timeout_s", 0), r"channels\.sms\[0\]\.timeout_s: expected a number > 0"),
    (with_("sms.0.max_attempts", 0), r"channels\.sms\[0\]\.max_attempts: expected a value >= 1"),
    (with_("sms.0.max_attempts", 2.5), r"channels\.sms\[0\]\.max_attempts: expected an integer"),
    (with_("sms.0.rate_per_s", True), r"channels\.sms\[0\]\.rate_per_s: expected a number, got bool"),
    (with_("sms.0.burst", 5), r"channels\.sms\[0\]\.burst: needs rate_per_s"),
    (with_("sms.0.method", "GET"), r"channels\.sms\[0\]\.method: expected one of POST, PUT, PATCH"),
    (with_("sms.0.headers", {"X-N": 1}), r"channels\.sms\[0\]\.headers\.X-N: expected a string"),
    (with_("sms.0.headers", {"X-N": "a\r\nX-Evil: 1"}), r"headers\.X-N: expected a string without line breaks"),
    (with_("sms.0.auth_header", "X-Api-Key"), r"channels\.sms\[0\]\.auth_env: required key is missing"),
    (with_("sms.0.body", ...), r"channels\.sms\[0\]\.body: required key is missing"),
    (with_("sms.0.body", 3), r"channels\.sms\[0\]\.body: expected a mapping or a JSON text"),
    (with_("sms.0.body", {"to": "{phone}"}), r"channels\.sms\[0\]\.body: unknown placeholder \{phone\}"),
    (with_("sms.0.body", '{"to": {address}}'), r"channels\.sms\[0\]\.body: not valid JSON once filled in"),
    (with_("sms.0.auth_env", "NO_SUCH_VAR_OMNISIM"),
     r"channels\.sms\[0\]\.auth_env: environment variable NO_SUCH_VAR_OMNISIM is not set"),
    (with_("sms.0.token", "abc"), r"channels\.sms\[0\]\.token: secrets do not belong in the file; set auth_env"),
    (with_("sms.0.bogus", 1), r"channels\.sms\[0\]\.bogus: unknown key"),
    (with_("email.0.starttls", "yes"), r"channels\.email\[0\]\.starttls: expected a boolean, got str 'yes'"),
    ({"channels": {"email": [{**GOOD["channels"]["email"][0], "ssl": True, "starttls": True}]}},
     r"channels\.email\[0\]\.ssl: ssl \(implicit TLS\) and starttls are exclusive"),
    (with_("email.0.port", "25"), r"channels\.email\[0\]\.port: expected an integer"),
    (with_("email.0.from", "nobody"), r"channels\.email\[0\]\.from: expected an email address"),
    (with_("email.0.password", "hunter2"),
     r"channels\.email\[0\]\.password: secrets do not belong in the file; set password_env"),
    (with_("email.0.username", "u"), r"channels\.email\[0\]\.password_env: required key is missing"),
    ({"channels": {"sms": [GOOD["channels"]["email"][0]]}},
     r"channels\.sms\[0\]\.type: smtp serves only email, not sms"),
    ({"channels": {"fax": []}}, r"channels\.fax: unknown key \(expected one of email, push, sms, web\)"),
    ({"channels": {"sms": []}}, r"channels\.sms: expected a non-empty list of providers"),
    ({"channels": {"sms": ["http"]}}, r"channels\.sms\[0\]: expected a mapping \(one provider\), got str 'http'"),
    ({"channels": {"sms": [{**GOOD["channels"]["sms"][0], "name": "a"}] * 2}},
     r"channels\.sms\[1\]\.name: 'a' is already used at channels\.sms\[0\]"),
    ({}, r"channels: required key is missing"),
    ([1, 2], r"<top level>: expected a mapping, got list"),
    ({"version": 2, "channels": {}}, r"version: expected 1, got int 2"),
    ({"defaults": {"timeout": 3}, "channels": {}}, r"defaults\.timeout: unknown key"),
    ({"defaults": {"backoff_max_s": "x"}, "channels": {}}, r"defaults\.backoff_max_s: expected a number"),
]


@pytest.mark.parametrize("data, pattern", BAD, ids=[p.split(":")[0][:40] for _, p in BAD])
def test_config_errors_name_the_key_path(data, pattern):
    with pytest.raises(ProviderConfigError, match=pattern) as info:
        ProviderSet.from_dict(data)
    assert isinstance(info.value, OmnisimError) and info.value.exit_code == 2


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("channels:\n  sms:\n    - type: http\n      body: {}\n")
    with pytest.raises(ProviderConfigError, match=r"p\.yaml: channels\.sms\[0\]\.url: required key"):
        ProviderSet.from_yaml(bad)
    bad.write_text("channels: [unclosed\n")
    with pytest.raises(ProviderConfigError, match=r"p\.yaml: not valid YAML"):
        ProviderSet.from_yaml(bad)
    with pytest.raises(ProviderConfigError, match=r"missing\.yaml: cannot read"):
        ProviderSet.from_yaml(tmp_path / "missing.yaml")
    bad.write_text("")  # used to say "p.yaml:: expected a mapping"
    with pytest.raises(ProviderConfigError, match=r"p\.yaml: expected a mapping, got NoneType"):
        ProviderSet.from_yaml(bad)
