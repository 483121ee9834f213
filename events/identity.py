"""Identity stitching rules, pure: which identifiers an event carries and which of them join.

The identity graph is a union-find over identifiers `(kind, value)` and existing persons. An
event's identifiers are joined to its primary identifier unless that would put two different
values of an *exclusive* kind (an identified user id, a Shopify customer id) into one person:
two different identified users are never merged. Links are applied in event-id order, so the
same log gives the same graph however it is cut into batches.
"""

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from events.models import IdentifierKind
from events.validation import clean_id

Key = tuple[str, str]

# The order is the priority of an event's primary identifier: the strongest claim comes first.
PRIORITY = (
    IdentifierKind.USER_ID,
    IdentifierKind.SHOPIFY_CUSTOMER,
    IdentifierKind.EMAIL_HASH,
    IdentifierKind.ANONYMOUS_ID,
)
EXCLUSIVE_KINDS = frozenset({IdentifierKind.USER_ID, IdentifierKind.SHOPIFY_CUSTOMER})
MAX_VALUE = 255


def email_hash(email: Any) -> str:
    """SHA-256 of the trimmed, lower-cased address; "" for anything that is not an address."""
    if not isinstance(email, str) or "@" not in email:
        return ""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _clean(value: Any) -> str:
    text = clean_id(value)
    return text if len(text) <= MAX_VALUE else ""


def event_identifiers(
    *, type: str, anonymous_id: str, user_id: str, properties: Mapping[str, Any] | None
) -> list[Key]:
    """The identifiers an event carries, its primary (strongest) identifier first."""
    found: dict[str, list[str]] = {kind: [] for kind in PRIORITY}
    if user := _clean(user_id):
        found[IdentifierKind.USER_ID].append(user)
    if anonymous := _clean(anonymous_id):
        found[IdentifierKind.ANONYMOUS_ID].append(anonymous)
    properties = properties if isinstance(properties, Mapping) else {}
    if customer := _clean(properties.get("shopify_customer_id")):
        found[IdentifierKind.SHOPIFY_CUSTOMER].append(customer)
    if hashed := _clean(properties.get("email_hash")):
        found[IdentifierKind.EMAIL_HASH].append(hashed.lower())
    traits = properties.get("traits")
    email = traits.get("email") if type == "identify" and isinstance(traits, Mapping) else None
    if hashed := email_hash(email):
        found[IdentifierKind.EMAIL_HASH].append(hashed)
    if type == "alias" and (previous := _clean(properties.get("previous_id"))):
        # Segment's alias names an earlier id of the same user; it is usually the anonymous id
        # the SDK used before sign-in, so it joins as one (never as a second identified user).
        found[IdentifierKind.ANONYMOUS_ID].append(previous)
    keys: list[Key] = []
    for kind in PRIORITY:
        for value in found[kind]:
            key = (str(kind), value)
            if key not in keys:
                keys.append(key)
    return keys


@dataclass(slots=True)
class Component:
    """One person after stitching: the existing persons it absorbs and its identifiers."""

    persons: list[int] = field(default_factory=list)
    exclusive: dict[str, str] = field(default_factory=dict)
    identifiers: list[Key] = field(default_factory=list)

    @property
    def survivor(self) -> int | None:
        return min(self.persons) if self.persons else None

    @property
    def user_id(self) -> str:
        return self.exclusive.get(IdentifierKind.USER_ID, "")


class IdentityGraph:
    """Union-find over identifiers and existing persons with the never-merge rule.

    `known` maps existing identifiers to their person; `person_exclusive` gives each existing
    person's exclusive identifiers (its user id, its Shopify customer id).
    """

    def __init__(
        self,
        *,
        known: Mapping[Key, int],
        person_exclusive: Mapping[int, Mapping[str, str]],
    ) -> None:
        self._parent: dict[Any, Any] = {}
        self._exclusive: dict[Any, dict[str, str]] = {}
        self._persons: dict[Any, list[int]] = {}
        for person_id in {*known.values(), *person_exclusive}:
            node = ("person", person_id)
            self._parent[node] = node
            self._exclusive[node] = dict(person_exclusive.get(person_id, {}))
            self._persons[node] = [person_id]
        for key, person_id in known.items():
            self._add(key)
            self._union(key, ("person", person_id), force=True)

    def _add(self, key: Key) -> None:
        if key in self._parent:
            return
        self._parent[key] = key
        self._persons[key] = []
        self._exclusive[key] = {key[0]: key[1]} if key[0] in EXCLUSIVE_KINDS else {}

    def find(self, node: Any) -> Any:
        root = node
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[node] != root:
            self._parent[node], node = root, self._parent[node]
        return root

    def _union(self, a: Any, b: Any, *, force: bool = False) -> bool:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return True
        exclusive_a, exclusive_b = self._exclusive[root_a], self._exclusive[root_b]
        conflict = any(
            kind in exclusive_b and exclusive_b[kind] != value
            for kind, value in exclusive_a.items()
        )
        if conflict and not force:
            return False
        self._parent[root_b] = root_a
        exclusive_a.update({k: v for k, v in exclusive_b.items() if k not in exclusive_a})
        self._persons[root_a].extend(self._persons.pop(root_b))
        del self._exclusive[root_b]
        return True

    def link(self, identifiers: Iterable[Key]) -> Key | None:
        """Join an event's identifiers (primary first) where allowed; returns the primary."""
        keys = list(identifiers)
        if not keys:
            return None
        primary = keys[0]
        self._add(primary)
        for key in keys[1:]:
            self._add(key)
            self._union(primary, key)
        return primary

    def components(self) -> dict[Any, Component]:
        """Every root with what it holds; identifiers list only those not yet stored."""
        result: dict[Any, Component] = {}
        for node in self._parent:
            root = self.find(node)
            component = result.get(root)
            if component is None:
                component = result[root] = Component(
                    persons=sorted(self._persons[root]), exclusive=dict(self._exclusive[root])
                )
            if node[0] != "person":
                component.identifiers.append(node)
        return result
