"""Secrets in a job: typed so every record masks them, and kept off any non-local plain-http URL.

A token or a database URL is a `SecretText` / `SecretUrl`. Dumped as JSON (the ledger's
`job_json`, Prefect's flow-run parameters) a token is `**********` and a URL shows everything but
its password (`user:***@host`). When the job file wrote the value as `${VAR}`, the record keeps
that reference instead, so a rollback or a DLQ retry can rebuild the job from the environment.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr
from pydantic_core import core_schema
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from batchgate.errors import ConfigError

MASKED = "**********"  # how pydantic dumps a SecretStr, and how exports mask a secret
HIDDEN_PASSWORD = "***"  # how SQLAlchemy renders a hidden password
SECRET_FIELDS = (("source", "token"), ("destination", "token"), ("destination", "url"),
                 ("ledger", "url"))  # fmt: skip
# a connector's option is a secret when its key is one of these words or ends in one (api_key)
SECRET_KEY = re.compile(r"(?:^|[_-])(?:token|password|passwd|secret|key|apikey)$")
TEMPLATE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
OPTIONS = "options."  # templates_of's key for a connector's option: options.KEY


class SecretText(SecretStr):
    """A SecretStr that may remember the `${VAR}` it was written as (never a value)."""

    def __init__(self, secret_value: str, template: str | None = None) -> None:
        super().__init__(secret_value)
        self.template = template if template and self._safe_template(template) else None

    def _safe_template(self, template: str) -> bool:
        return "${" in template and self.get_secret_value() not in template

    def with_value(self, value: str) -> SecretText:
        return type(self)(value, self.template)

    def recorded(self) -> str:
        """What a record keeps: the `${VAR}` reference, else the mask."""
        return self.template or (MASKED if self.get_secret_value() else "")

    def secrets(self) -> list[str]:
        """The strings that must never appear in a record."""
        return [self.get_secret_value()] if self.get_secret_value() else []

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _dump, info_arg=True, when_used="always"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "format": "password", "writeOnly": True}

    @classmethod
    def _validate(cls, value: Any) -> SecretText:
        if isinstance(value, cls):
            return value
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return cls(value)


class SecretUrl(SecretText):
    """A database URL whose password is a secret; the rest (driver, user, host, database) is not."""

    def _safe_template(self, template: str) -> bool:
        return "${" in template and not any(s in template for s in self.secrets())

    def _display(self) -> str:
        return hide_password(self.get_secret_value())

    def recorded(self) -> str:
        """The `${VAR}` reference when the URL holds a password, else the URL, password hidden."""
        if self.template and self.secrets():
            return self.template
        return hide_password(self.get_secret_value())

    def secrets(self) -> list[str]:
        """The password, decoded and as written in the URL."""
        value = self.get_secret_value()
        forms = {_password(value)}
        with contextlib.suppress(ValueError):
            forms.add(urlsplit(value).password)
        return sorted(f for f in forms if f)

    def __eq__(self, other: Any) -> bool:
        """Also equal to its text, like the plain URL string it replaces."""
        if isinstance(other, str):
            return hmac.compare_digest(self.get_secret_value().encode(), other.encode())
        return super().__eq__(other)

    __hash__ = SecretText.__hash__


def _dump(value: Any, info: core_schema.SerializationInfo) -> Any:
    if not isinstance(value, SecretText):
        return MASKED
    return value.recorded() if info.mode_is_json() else value


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except (ArgumentError, ValueError):
        return None


def hide_password(url: str) -> str:
    """The URL with its password as `***` (unchanged when it has none)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^/@]*?:)[^/@]*@", rf"\1{HIDDEN_PASSWORD}@", url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def has_hidden_password(url: Any) -> bool:
    """True for a URL recorded with its password hidden (it cannot connect as it is)."""
    return isinstance(url, str) and _password(url) == HIDDEN_PASSWORD


def secret_values(model: BaseModel | None) -> list[str]:
    """Every secret a job (or one of its sections) holds: tokens and URL passwords."""
    if model is None:
        return []
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found += secret_values(value)
        elif isinstance(value, SecretText):
            found += value.secrets()
        elif isinstance(value, SecretStr) and value.get_secret_value():
            found.append(value.get_secret_value())
        elif isinstance(value, dict):
            found += _dict_secrets(value)
    return found


def _dict_secrets(options: dict[str, Any]) -> list[str]:
    """The secrets in a connector's options (values marked secret by their key)."""
    found: list[str] = []
    for value in options.values():
        if isinstance(value, SecretText):
            found += value.secrets()
        elif isinstance(value, dict):
            found += _dict_secrets(value)
    return found


def is_secret_key(name: Any) -> bool:
    """An option key naming a secret: token, password, secret or key, or ending in one."""
    return isinstance(name, str) and bool(SECRET_KEY.search(name.lower()))


def secret_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with each text under a secret key held as a SecretText (masked in records)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            value = secret_options(value)
        elif is_secret_key(key) and isinstance(value, str) and not isinstance(value, SecretText):
            value = SecretText(value)
            if TEMPLATE.fullmatch(value.get_secret_value()):
                value.template = value.get_secret_value()  # a ${VAR} a worker expands itself
        out[key] = value
    return out


def recorded_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as records keep them: each secret as its `${VAR}`, else masked."""
    return {key: _recorded(value) for key, value in options.items()}


def _recorded(value: Any) -> Any:
    if isinstance(value, dict):
        return recorded_options(value)
    return value.recorded() if isinstance(value, SecretText) else value


def templates_of(raw: dict[str, Any]) -> dict[tuple[str, str], str]:
    """The `${VAR}` forms of a raw job's secret fields (`options.KEY` for a connector's own
    options), taken before expansion."""
    found = {}
    for section, key in SECRET_FIELDS:
        part = raw.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, str) and "${" in value:
            found[(section, key)] = value
    for section in ("source", "destination"):
        part = raw.get(section)
        options = part.get("options") if isinstance(part, dict) else None
        for key, value in options.items() if isinstance(options, dict) else ():
            if is_secret_key(key) and isinstance(value, str) and "${" in value:
                found[(section, OPTIONS + key)] = value
    return found


def put_secret(section: dict[str, Any], key: str, value: str) -> None:
    """Set a secret field of a raw job's section (`options.KEY`: one of its options)."""
    if key.startswith(OPTIONS):
        section["options"][key.removeprefix(OPTIONS)] = value
    else:
        section[key] = value


def keep_templates(job: Any, templates: dict[tuple[str, str], str]) -> Any:
    """The job with each secret field remembering the `${VAR}` it was written as."""
    for (section, key), template in templates.items():
        part = getattr(job, section, None)
        if key.startswith(OPTIONS):
            job = _keep_option(job, section, key.removeprefix(OPTIONS), template)
            continue
        value = getattr(part, key, None)
        if isinstance(value, SecretText):
            value = type(value)(value.get_secret_value(), template)
            job = job.model_copy(update={section: part.model_copy(update={key: value})})
    return job


def _keep_option(job: Any, section: str, key: str, template: str) -> Any:
    part = getattr(job, section, None)
    options = dict(getattr(part, "options", None) or {})
    value = options.get(key)
    if not isinstance(value, SecretText):
        return job
    options[key] = SecretText(value.get_secret_value(), template)
    return job.model_copy(update={section: part.model_copy(update={"options": options})})


# --- where a token may go -------------------------------------------------------------------------


def token_url_problem(url: str) -> str | None:
    """Why a token must not be sent to `url`, or None: https, or plain http on this machine only."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "it is not a URL"
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if not host:
        return "it has no host"
    if scheme == "https" or (scheme == "http" and is_loopback(host)):
        return None
    if scheme == "http":
        return (
            f"it is plain http to {host}, which is not this machine: the token would cross "
            "the network unencrypted"
        )
    return f"its scheme is {scheme or 'missing'}, not https"


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (also as an IPv4-mapped address)."""
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def token_url_message(url: str, field: str, problem: str) -> str:
    shown = re.sub(r"//[^/@]*@", "//", url)  # never repeat credentials written into the URL
    return (f"{field} {shown!r} is refused before any request: {problem}. The API token is sent "
            "only over https, or plain http on this machine (127.0.0.1, ::1, localhost). Fix: set "
            f"{field} to the API's https:// URL.")  # fmt: skip


def require_token_url(url: str, field: str) -> str:
    """`url` when a token may be sent there; otherwise a ConfigError naming the field and the fix."""
    problem = token_url_problem(url)
    if problem:
        raise ConfigError(token_url_message(url, field, problem))
    return url


def mask_credentials(text: str) -> str:
    """A driver's message with any `scheme://user:password@` or `password=...` in it masked."""
    text = re.sub(r"(\b[a-z][\w+.-]*://[^/@\s:]*:)[^/@\s]+@", rf"\1{HIDDEN_PASSWORD}@", text,
                  flags=re.I)  # fmt: skip
    return re.sub(r"(\bpassword\s*=\s*)('[^']*'|\S+)", rf"\1{HIDDEN_PASSWORD}", text, flags=re.I)
