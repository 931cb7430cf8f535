"""Parse and check a providers YAML document into provider objects.

Every error is a ``ProviderConfigError`` naming the key path (``channels.sms[0].url``) and
what was expected. Secrets are never in the file: ``password_env`` / ``auth_env`` name
environment variables, read here, at load time.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from omnisim.policies import _spec
from omnisim.send.providers.base import OutboundMessage, Provider, ProviderConfigError
from omnisim.send.providers.filesink import FileSink
from omnisim.send.providers.resilience import RATE_SCOPES, Resilience
from omnisim.send.providers.smtp import SmtpProvider
from omnisim.send.providers.webhook import BodyTemplate, TemplateError, WebhookProvider

__all__ = ["ProviderSpec", "parse_providers", "CHANNELS", "TYPES"]

E = ProviderConfigError
CHANNELS = ("email", "sms", "push", "web")
RESILIENCE_KEYS = {f.name for f in fields(Resilience)}
_COMMON = {"name", "type"} | RESILIENCE_KEYS
_SECRET_KEYS = {"password": "password_env", "auth_value": "auth_env", "token": "auth_env"}


@dataclass(frozen=True)
class ProviderSpec:
    """One configured provider of one channel, in failover order."""

    channel: str
    provider: Provider
    resilience: Resilience


def _resilience(spec: Mapping[str, Any], path: str, base: Resilience) -> Resilience:
    def num(key: str, kind: type = float, minimum: float = 0.0, positive: bool = True) -> Any:
        value = _spec.get(spec, key, kind, path, E, default=getattr(base, key), minimum=minimum)
        if positive and value is not None and value <= 0:
            raise _spec.fail(E, _spec.join(path, key), "a number > 0", value)
        return value

    res = Resilience(
        rate_per_s=num("rate_per_s"), burst=num("burst", minimum=1.0), timeout_s=num("timeout_s"),
        max_attempts=num("max_attempts", int, 1), backoff_base_s=num("backoff_base_s", positive=False),
        backoff_max_s=num("backoff_max_s", positive=False),
        retry_after_max_s=num("retry_after_max_s", positive=False),
        failure_threshold=num("failure_threshold", int, 1),
        reset_after_s=num("reset_after_s", positive=False),
        rate_scope=_spec.get(spec, "rate_scope", str, path, E, default=base.rate_scope,
                             choices=RATE_SCOPES))
    if res.burst is not None and res.rate_per_s is None:
        raise E(f"{_spec.join(path, 'burst')}: needs rate_per_s (burst alone limits nothing)")
    return res


def _env(spec: Mapping[str, Any], key: str, path: str, required: bool) -> str | None:
    var = _spec.get(spec, key, str, path, E, default=... if required else None)
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise E(f"{_spec.join(path, key)}: environment variable {var} is not set")
    return value


def _smtp(spec: Mapping[str, Any], path: str, name: str, res: Resilience, base_dir: Path) -> Provider:
    _spec.check_keys(spec, _COMMON | {"host", "port", "starttls", "ssl", "username",
                                       "password_env", "from", "ca_file", "message_id_domain"}, path, E)
    starttls = _spec.get(spec, "starttls", bool, path, E, default=False)
    implicit = _spec.get(spec, "ssl", bool, path, E, default=False)
    if starttls and implicit:
        raise E(f"{_spec.join(path, 'ssl')}: ssl (implicit TLS) and starttls are exclusive; pick one")
    username = _spec.get(spec, "username", str, path, E, default=None)
    password = _env(spec, "password_env", path, required=username is not None)
    ca_file = _spec.get(spec, "ca_file", str, path, E, default=None)
    sender = _spec.get(spec, "from", str, path, E)
    if "@" not in sender:
        raise _spec.fail(E, _spec.join(path, "from"), "an email address (name <a@b>)", sender)
    return SmtpProvider(
        name=name, host=_spec.get(spec, "host", str, path, E),
        port=_spec.get(spec, "port", int, path, E, default=465 if implicit else 587, minimum=1),
        sender=sender, starttls=starttls, implicit_tls=implicit, username=username, password=password,
        ca_file=str(base_dir / ca_file) if ca_file else None,
        message_id_domain=_spec.get(spec, "message_id_domain", str, path, E, default=None),
        timeout_s=res.timeout_s)


def _http(spec: Mapping[str, Any], path: str, name: str, res: Resilience, base_dir: Path) -> Provider:
    _spec.check_keys(spec, _COMMON | {"url", "method", "headers", "auth_header", "auth_env",
                                       "auth_prefix", "body", "response_id_field"}, path, E)
    url = _spec.get(spec, "url", str, path, E)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _spec.fail(E, _spec.join(path, "url"), "an http:// or https:// URL", url)
    method = _spec.get(spec, "method", str, path, E, default="POST", choices=("POST", "PUT", "PATCH"))
    headers = _spec.get(spec, "headers", dict, path, E, default={})
    for key, value in headers.items():
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise _spec.fail(E, _spec.join(_spec.join(path, "headers"), str(key)),
                             "a string without line breaks", value)
    auth_env = _spec.get(spec, "auth_env", str, path, E, default=None)
    auth_header = _spec.get(spec, "auth_header", str, path, E,
                            default="Authorization" if auth_env else None)
    secret = _env(spec, "auth_env", path, required="auth_header" in spec or "auth_prefix" in spec)
    prefix = _spec.get(spec, "auth_prefix", str, path, E, default="")
    if "body" not in spec:
        raise E(f"{_spec.join(path, 'body')}: required key is missing (expected a mapping or a JSON text)")
    try:
        body = BodyTemplate(spec["body"])
    except TemplateError as exc:
        raise E(f"{_spec.join(path, 'body')}: {exc}") from None
    if isinstance(spec["body"], str):
        _check_json_text(body, _spec.join(path, "body"))
    elif not isinstance(spec["body"], (dict, list)):
        raise _spec.fail(E, _spec.join(path, "body"), "a mapping or a JSON text", spec["body"])
    return WebhookProvider(
        name=name, url=url, body=body, method=method, headers=dict(headers),
        auth_header=auth_header, auth_value=None if secret is None else prefix + secret,
        response_id_field=_spec.get(spec, "response_id_field", str, path, E, default="id"),
        timeout_s=res.timeout_s)


def _check_json_text(body: BodyTemplate, path: str) -> None:
    sample = OutboundMessage("m", "k", "u", "sms", "+1", 'a "quoted"\nsubject', "b\\",
                             None, None, _AnyMeta())
    try:
        json.loads(body.render(sample))
    except ValueError as exc:
        raise E(f"{path}: not valid JSON once filled in ({exc}); quote every placeholder, "
                f'e.g. "{{body}}"') from None


class _AnyMeta(dict):
    """A meta mapping that has every key, to dry-render templates at load time."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return "x"


def _file(spec: Mapping[str, Any], path: str, name: str, res: Resilience, base_dir: Path) -> Provider:
    _spec.check_keys(spec, _COMMON | {"path", "fsync"}, path, E)
    return FileSink(name=name, path=base_dir / _spec.get(spec, "path", str, path, E),
                    fsync=_spec.get(spec, "fsync", bool, path, E, default=False))


TYPES: dict[str, Callable[..., Provider]] = {"smtp": _smtp, "http": _http, "file": _file}
_TYPE_CHANNELS = {"smtp": ("email",)}


def parse_providers(data: Any, label: str = "", base_dir: Path = Path(".")) -> list[ProviderSpec]:
    """Check a providers document; ``label`` (the file name) prefixes every key path."""
    root = f"{label}:" if label else ""
    if not isinstance(data, Mapping):  # e.g. an empty file
        raise _spec.fail(E, label or "<top level>", "a mapping", data)
    doc = _spec.check_keys(data, {"version", "defaults", "channels"}, root, E)
    version = _spec.get(doc, "version", int, root, E, default=1)
    if version != 1:
        raise _spec.fail(E, _spec.join(root, "version"), "1", version)
    defaults_path = _spec.join(root, "defaults")
    defaults = _spec.check_keys(_spec.get(doc, "defaults", dict, root, E, default={}),
                                RESILIENCE_KEYS, defaults_path, E)
    base = _resilience(defaults, defaults_path, Resilience())
    channels = _spec.check_keys(_spec.get(doc, "channels", dict, root, E), set(CHANNELS),
                                _spec.join(root, "channels"), E)
    out: list[ProviderSpec] = []
    names: dict[str, str] = {}
    for channel, entries in channels.items():
        cpath = _spec.join(_spec.join(root, "channels"), channel)
        if not isinstance(entries, list) or not entries:
            raise _spec.fail(E, cpath, "a non-empty list of providers", entries)
        for i, entry in enumerate(entries):
            path = f"{cpath}[{i}]"
            if not isinstance(entry, Mapping):
                raise _spec.fail(E, path, "a mapping (one provider)", entry)
            kind = _spec.get(entry, "type", str, path, E, choices=tuple(TYPES))
            if channel not in _TYPE_CHANNELS.get(kind, CHANNELS):
                raise E(f"{_spec.join(path, 'type')}: {kind} serves only "
                        f"{', '.join(_TYPE_CHANNELS[kind])}, not {channel}")
            for secret, instead in _SECRET_KEYS.items():
                if secret in entry:
                    raise E(f"{_spec.join(path, secret)}: secrets do not belong in the file; "
                            f"set {instead} to the name of an environment variable")
            name = _spec.get(entry, "name", str, path, E, default=f"{channel}-{kind}-{i}")
            if name in names:
                raise E(f"{_spec.join(path, 'name')}: {name!r} is already used at {names[name]}")
            names[name] = path
            res = _resilience(entry, path, base)
            out.append(ProviderSpec(channel, TYPES[kind](entry, path, name, res, base_dir), res))
    return out
