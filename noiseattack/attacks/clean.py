"""`clean`: no attack, the baseline every attacked setting is read against."""

from __future__ import annotations

from .base import AttackSpec, register


class Clean(AttackSpec):
    name = "clean"
    rank = 0
    help = "Train without any attack (the baseline)."

    def label(self, p) -> str:
        return "clean"

    def title(self, p) -> str:
        return "clean (no attack)"

    def family(self) -> str:
        return "clean (no attack)"

    def column(self, label: str) -> str:
        return "clean"


register(Clean())
