"""The README's settings table matches the settings classes (names and defaults)."""

from __future__ import annotations

import re
from typing import Any

from conveyor.config import ClientSettings, ConsumerSettings, ProducerSettings
from tests.support import REPO

ROW = re.compile(r"^\| `(CONVEYOR_[A-Z_]+)` \| [a-z]+ \| `?([^|`]*)`? \|", re.MULTILINE)


def _shown(value: Any) -> str:
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return "unset" if value is None else str(value)


def test_settings_table_lists_every_setting_with_its_default() -> None:
    documented = dict(ROW.findall((REPO / "README.md").read_text()))
    fields = {
        **ConsumerSettings.model_fields,
        **ProducerSettings.model_fields,
        **ClientSettings.model_fields,
    }
    actual = {f"CONVEYOR_{name.upper()}": _shown(f.default) for name, f in fields.items()}
    assert documented == actual
