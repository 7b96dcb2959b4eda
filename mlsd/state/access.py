"""Who may see and who may change an item: one rule for every system.

- An admin sees and changes everything.
- The owner sees and changes their own items, private or not.
- Anyone else sees an item only when it is public (not private, not hidden: unsafe, blocked,
  unavailable) and changes nothing.

The caller is passed explicitly (:class:`Caller`), from the verified identity at the edge. The
outcomes are the same everywhere: an item you may not see is *not found* (404: its existence is
not revealed), one you see but may not change is *forbidden* (403).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ADMIN = "admin"  # the one spelling: the scope that sees and changes every item

Outcome = Literal["ok", "not_found", "forbidden"]


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user name and whether they hold the admin scope."""

    user: str | None
    admin: bool = False

    @classmethod
    def of(cls, user: str | None, scopes=()) -> Caller:
        return cls(user, ADMIN in scopes)


def owns(caller: Caller, owner: str | None) -> bool:
    return owner is not None and owner == caller.user


def may_see(caller: Caller, owner: str | None, private: bool = False, hidden: bool = False) -> bool:
    """May ``caller`` see an item of ``owner``? ``hidden``: kept from everyone but its owner and
    admins (unsafe, blocked, unavailable)."""
    return caller.admin or owns(caller, owner) or not (private or hidden)


def may_change(caller: Caller, owner: str | None) -> bool:
    """May ``caller`` edit or delete an item of ``owner``? (Unowned items: admins only.)"""
    return caller.admin or owns(caller, owner)


def access(
    caller: Caller, owner: str | None, private: bool = False, hidden: bool = False
) -> Outcome:
    """What a change request gets: ``not_found`` (may not see it), ``forbidden`` (may see, may
    not change) or ``ok``."""
    if not may_see(caller, owner, private, hidden):
        return "not_found"
    return "ok" if may_change(caller, owner) else "forbidden"
