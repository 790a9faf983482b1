"""The README matches the code: its settings table the settings classes (names and defaults),
its layout block the source tree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conveyor.config import ClientSettings, ConsumerSettings, ProducerSettings
from tests.support import REPO

ROW = re.compile(r"^\| `(CONVEYOR_[A-Z_]+)` \| [a-z]+ \| `?([^|`]*)`? \|", re.MULTILINE)
# The layout block's entries: `folder/   what it holds`, a subpackage indented by one space,
# continuation lines indented further.
ENTRY = re.compile(r"^( ?)([a-z_]+)/\s+(.*)$")
PACKAGES = ("conveyor", "config", "shared", "producer", "consumer")  # entries that list modules


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


def _layout() -> dict[str, str]:
    """Folder (`producer`, `producer/store`) -> what the layout block says it holds."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```\n", 2)[1]
    entries: dict[str, str] = {}
    top = folder = ""
    for line in block.splitlines():
        if entry := ENTRY.match(line):
            indent, name, text = entry.groups()
            top = name if not indent else top
            folder = f"{top}/{name}" if indent else name
            entries[folder] = text
        else:
            entries[folder] += " " + line.strip()
    return entries


def _named(text: str) -> set[str]:
    """The module names an entry lists: comma- or `and`-separated, after any `prose:` lead,
    their notes in parentheses dropped."""
    while "(" in text:
        text = re.sub(r"\([^()]*\)", "", text)
    text = text.split(": ", 1)[-1]
    return {name.strip() for name in re.split(r",|\band\b", text) if name.strip()}


def _modules(folder: Path) -> set[str]:
    """Modules and subpackages of a source folder, symlinks and `__main__` aside."""
    return {
        path.stem
        for path in folder.iterdir()
        if not path.is_symlink()
        and path.stem != "__main__"
        and (path.suffix == ".py" or (path / "__init__.py").is_file())
    }


def test_layout_names_only_modules_that_exist() -> None:
    for folder, text in _layout().items():
        if folder.split("/")[0] in PACKAGES:
            missing = sorted(_named(text) - _modules(REPO / folder) - {"__init__"})
            assert not missing, f"README layout: {folder}/ has no module(s) {missing}"


def test_layout_lists_every_producer_subpackage_and_module() -> None:
    layout = _layout()
    packages = sorted(
        str(path.parent.relative_to(REPO)) for path in (REPO / "producer").rglob("__init__.py")
    )
    for package in packages:
        assert package in layout, f"README layout has no line for {package}/"
        subpackages = {
            path.name for path in (REPO / package).iterdir() if (path / "__init__.py").is_file()
        }
        unlisted = sorted(
            _modules(REPO / package) - subpackages - {"__init__"} - _named(layout[package])
        )
        assert not unlisted, f"README layout: {package}/ does not list {unlisted}"
