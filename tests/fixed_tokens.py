"""A token source for GraphUsers without Entra (tests of every layer)."""

from __future__ import annotations


class FixedTokens:
    """graph.Tokens that hands out t1, t2, ... and records refreshes."""

    def __init__(self):
        self.issued, self.refreshed = 0, []

    def get(self):
        self.issued += 1
        return f"t{self.issued}"

    def refresh(self, rejected):
        self.refreshed.append(rejected)
        return self.get()
