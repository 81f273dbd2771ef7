"""Help text fixes applied to Typer's option classes once, for every command.

Recent Typer releases print a type next to every option (`<int>`, `<path>`), also for boolean flags,
which take no value (`--stream <bool>` reads as if it wanted one), and print lists as `<list[Path]>`.
A flag shows no type; a repeatable option shows its element type. Typer versions without these type
labels are left alone.
"""

from __future__ import annotations

from typing import Any

_MARK = "_vlmparity_fixed"  # on our replacement method: a class that has it is patched already


def fix_help_metavars() -> None:
    """Patch `TyperOption.display_type_rich` (idempotent: a patched class carries the mark)."""
    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # pragma: no cover - a Typer without its own parameter classes
        return
    for cls in (TyperOption, TyperArgument):
        original = cls.__dict__.get("display_type_rich") or getattr(cls, "display_type_rich", None)
        if original is None or getattr(original, _MARK, False):
            continue  # older Typer (click's metavars, flags already show none), or patched already
        setattr(cls, "display_type_rich", _fixed(original))  # noqa: B010 -- a method, patched


def _fixed(original: Any) -> Any:
    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and getattr(self, "metavar", None) is None:
            return None
        shown = original(self, ctx)
        if isinstance(shown, str) and shown.startswith("<list[") and shown.endswith("]>"):
            shown = "<" + shown[len("<list[") : -len("]>")].lower() + ">"
        return shown  # type: ignore[no-any-return]

    setattr(display_type_rich, _MARK, True)
    return display_type_rich
