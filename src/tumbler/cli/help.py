"""How `tumbler ... --help` draws options: a plain flag (`--force`) is drawn as a flag, not as an
option taking a `<bool>` value.

typer's rich help puts the parameter's type beside every option, flags included, which reads as
if `--force` wanted a value (`--force <bool>`). Imported by cli/main.py before any help is drawn.
"""
from __future__ import annotations

from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _flag_has_no_type(self: TyperOption, ctx):
    if self.is_flag and not self.count:
        return None
    return _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_has_no_type
