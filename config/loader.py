"""Build settings once at start; a bad value ends the process with one clear line."""

from __future__ import annotations

import re
import sys
from typing import Literal, TypeVar, get_args, get_origin

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from conveyor.config.base import ENV_PREFIX, ConveyorSettings

SettingsT = TypeVar("SettingsT", bound=ConveyorSettings)

EXIT_BAD_CONFIG = 2


def describe_error(cls: type[ConveyorSettings], error: ValidationError) -> str:
    """One line per bad variable: its env name, what was wrong, and what is allowed."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        variable = f"{ENV_PREFIX}{field.upper()}"
        info = cls.model_fields.get(field)
        secret = info is not None and "SecretStr" in repr(info.annotation)
        got = "" if secret else f" (got {item.get('input')!r})"
        allowed = f"; allowed: {_allowed(info)}" if info else ""
        lines.append(f"invalid {variable}{got}: {item['msg']}{allowed}")
    return "\n".join(lines)


def _allowed(info: FieldInfo) -> str:
    """What a field accepts, in words: its type, bounds or choices."""
    if get_origin(info.annotation) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(info.annotation))
    kind = getattr(info.annotation, "__name__", str(info.annotation))
    kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(kind, kind)
    bounds = []
    for rule in info.metadata:
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(rule, attr, None) is not None:
                bounds.append(f"{word} {getattr(rule, attr)}")
    return f"{kind} {' and '.join(bounds)}".strip()


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Read `cls` from the environment, or print why not and exit with code 2."""
    try:
        return cls()
    except ValidationError as error:
        print(f"conveyor: {describe_error(cls, error)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    except OSError as error:  # an unreadable *_FILE secret
        print(f"conveyor: cannot read a settings file: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def redact_url(url: str | SecretStr) -> str:
    """The URL with its password replaced by ***, safe for logs and errors; a
    comma-separated list of URLs (CONVEYOR_AMQP_URL of a cluster) has each one redacted."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    if "," in raw:
        return ",".join(_redact_one(one) for one in raw.split(","))
    return _redact_one(raw)


def _redact_one(raw: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(raw)
    if parts.password is None:
        return raw
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


_URL_PASSWORD = re.compile(r"(://[^:/@\s'\"]*):[^/\s'\"]*@")


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\1:***@", text)
