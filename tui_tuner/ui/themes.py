"""Loading the UI's colour themes from YAML files (``ui/themes/*.yaml`` or a given path)."""

from __future__ import annotations

from pathlib import Path

import yaml
from textual.theme import Theme

from tui_tuner.core.errors import UserError

__all__ = ["THEME_DIR", "load_theme", "theme_names"]

THEME_DIR = Path(__file__).parent / "themes"
_FIELDS = {
    "name", "dark", "primary", "secondary", "accent", "foreground", "background", "surface",
    "panel", "success", "warning", "error", "boost", "luminosity_spread", "text_alpha",
}  # fmt: skip


def theme_names() -> list[str]:
    return sorted(p.stem for p in THEME_DIR.glob("*.yaml"))


def load_theme(name_or_path: str) -> Theme:
    """A bundled theme by short name (``dark``) or a theme file; errors name the file and key."""
    path = Path(name_or_path)
    if not path.suffix:
        path = THEME_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(
                f"--theme: no theme {name_or_path!r}; choose one of {', '.join(theme_names())} "
                "or give a .yaml file"
            )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"--theme: cannot read {path}: {err}") from None
    if not isinstance(data, dict) or "name" not in data or "primary" not in data:
        raise UserError(f"{path}: a theme needs at least `name` and `primary`")
    unknown = sorted(set(map(str, data)) - _FIELDS)
    if unknown:
        raise UserError(f"{path}: unknown theme keys {unknown}; allowed: {sorted(_FIELDS)}")
    try:
        return Theme(**{str(k): v for k, v in data.items()})
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: {err}") from None
