"""Vault-style path ACLs: policies are path rules with capabilities; default deny; deny wins. Pure.

Built-in policy templates (admin, sign, verify, encrypt, decrypt, rewrap) are rule lists bound to one key.
A new policy is a new entry in ``POLICY_TEMPLATES``; the engine itself does not change.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from kms_service.errors import InvalidRequest
from kms_service.keyring import validate_key_name


class Capability(enum.IntFlag):
    DENY = enum.auto()
    CREATE = enum.auto()
    READ = enum.auto()
    UPDATE = enum.auto()
    DELETE = enum.auto()
    LIST = enum.auto()
    SUDO = enum.auto()
    PATCH = enum.auto()


NONE = Capability(0)
RW = Capability.READ | Capability.UPDATE
ALL = (
    Capability.CREATE
    | Capability.READ
    | Capability.UPDATE
    | Capability.DELETE
    | Capability.LIST
    | Capability.SUDO
    | Capability.PATCH
)


@dataclass(frozen=True)
class PathRule:
    """``pattern`` may end in ``*`` (prefix match) and use ``+`` for exactly one segment."""

    pattern: str
    capabilities: Capability
    # Vault's min_wrapping_ttl / max_wrapping_ttl in seconds (0: none): a request here must ask for its
    # response wrapped (X-Vault-Wrap-TTL) with a TTL within them.
    min_wrapping_ttl: int = 0
    max_wrapping_ttl: int = 0

    @cached_property
    def is_glob(self) -> bool:
        return self.pattern.endswith("*") or "+" in self.pattern.split("/")

    def matches(self, path: str) -> bool:
        pattern = self.pattern
        prefix = pattern.endswith("*")
        if prefix:
            pattern = pattern[:-1]
        pattern_parts = pattern.split("/")
        path_parts = path.split("/")
        if prefix:
            # Every complete segment must match; the last (partial) one is a string prefix.
            if len(path_parts) < len(pattern_parts):
                return False
            *whole, last = pattern_parts
            for pat, seg in zip(whole, path_parts, strict=False):
                if pat != "+" and pat != seg:
                    return False
            rest = "/".join(path_parts[len(whole) :])
            return last == "+" or rest.startswith(last)
        if len(path_parts) != len(pattern_parts):
            return False
        return all(pat == "+" or pat == seg for pat, seg in zip(pattern_parts, path_parts, strict=True))

    def priority(self) -> tuple:
        """Vault's ordering among glob matches: later first wildcard, no trailing '*', fewer '+',
        longer, then lexicographically greater wins."""
        p = self.pattern
        first_wild = min((i for i, c in enumerate(p) if c in "+*"), default=len(p))
        return (first_wild, not p.endswith("*"), -p.count("+"), len(p), p)


@dataclass(frozen=True)
class Policy:
    name: str
    rules: tuple[PathRule, ...]


# The most decisions one ACL remembers (then it starts again).
MAX_DECIDED_PATHS = 4096


class ACL:
    """The merged view of a token's policies."""

    def __init__(self, policies: Iterable[Policy]) -> None:
        self.root = False
        exact: dict[str, Capability] = {}
        globs: dict[str, Capability] = {}
        # pattern → (min, max) wrapping TTL, for the patterns that limit it.
        limits: dict[str, tuple[int, int]] = {}
        for policy in policies:
            if policy.name == "root":
                self.root = True
            for rule in policy.rules:
                target = globs if rule.is_glob else exact
                # Capabilities are unioned across policies only for the same pattern (Vault).
                target[rule.pattern] = target.get(rule.pattern, NONE) | rule.capabilities
                if rule.min_wrapping_ttl > 0 or rule.max_wrapping_ttl > 0:
                    limits[rule.pattern] = _merged_limits(limits.get(rule.pattern, (0, 0)), rule)
        self._exact = exact
        self._globs = sorted((PathRule(p, c) for p, c in globs.items()), key=PathRule.priority, reverse=True)
        self._limits = limits
        # Whether any rule limits wrapping: only then does a request ask wrapping_limits.
        self.limits_wrapping = bool(limits) and not self.root
        # path → capabilities, decided once per path (an ACL never changes: a policy change builds a new one).
        self._decided: dict[str, Capability] = {}

    def capabilities(self, path: str) -> Capability:
        """The capabilities granted on ``path``. A path ending in ``/`` is a list (Vault lists ``<path>/``): an
        exact rule for the path without the slash applies first, then one with it, then the globs."""
        if self.root:
            return ALL
        caps = self._decided.get(path)
        if caps is None:
            if len(self._decided) >= MAX_DECIDED_PATHS:  # paths are the caller's to choose: stay bounded
                self._decided.clear()
            caps = self._decided[path] = self._decide(path)
        return caps

    def _decide(self, path: str) -> Capability:
        pattern = self._deciding_pattern(path)
        if pattern is None:
            return NONE
        caps = self._exact.get(pattern)
        if caps is None:
            caps = next(rule.capabilities for rule in self._globs if rule.pattern == pattern)
        if caps & Capability.DENY:
            return NONE
        return caps

    def _deciding_pattern(self, path: str) -> str | None:
        """The pattern of the rule that decides ``path`` (see ``capabilities``), or None."""
        if path.endswith("/") and path[:-1] in self._exact:
            return path[:-1]
        if path in self._exact:
            return path
        for rule in self._globs:
            if rule.matches(path):
                return rule.pattern
        return None

    def wrapping_limits(self, path: str) -> tuple[int, int]:
        """The (min, max) wrapping TTL in seconds the rule deciding ``path`` sets (0: none)."""
        if not self.limits_wrapping:
            return (0, 0)
        pattern = self._deciding_pattern(path)
        return self._limits.get(pattern, (0, 0)) if pattern is not None else (0, 0)

    def allows(self, path: str, capability: Capability) -> bool:
        # The flags' integers: Flag.__and__ builds a new member, measurably slower on every request.
        return (self.capabilities(path)._value_ & capability._value_) != 0

    def reaches_under(self, prefix: str) -> bool:
        """Whether any rule grants something at or below ``prefix`` (``transit/``): Vault shows a mount to a
        token that may use anything in it."""
        if self.root or self.capabilities(prefix) != NONE:
            return True
        exact = (caps for pattern, caps in self._exact.items() if pattern.startswith(prefix))
        globs = (
            rule.capabilities
            for rule in self._globs
            if rule.pattern.startswith(prefix) or rule.matches(prefix) or prefix.startswith(rule.pattern.rstrip("*"))
        )
        return any(caps != NONE and not caps & Capability.DENY for caps in (*exact, *globs))


def _merged_limits(held: tuple[int, int], rule: PathRule) -> tuple[int, int]:
    """Two policies' limits on one pattern, as Vault merges them: the lower minimum, the higher maximum."""
    low, high = held
    if rule.min_wrapping_ttl > 0 and (low == 0 or rule.min_wrapping_ttl < low):
        low = rule.min_wrapping_ttl
    if rule.max_wrapping_ttl > 0 and (high == 0 or rule.max_wrapping_ttl > high):
        high = rule.max_wrapping_ttl
    return (low, high)


def wrapping_allowed(limits: tuple[int, int], wrap_ttl: int | None) -> bool:
    """Whether a request asking ``wrap_ttl`` (None: not wrapped) meets a rule's limits. Vault: either limit
    demands wrapping, and the TTL must be within them."""
    low, high = limits
    if high > 0 and (wrap_ttl is None or wrap_ttl > high):
        return False
    if low > 0 and (wrap_ttl is None or wrap_ttl < low):
        return False
    return True


# policy kind → rules, with {key} bound to the grant's key. The sign/verify templates also grant the
# bare path because hvac (and the Vault CLI) send hash_algorithm in the body, not the URL.
POLICY_TEMPLATES: dict[str, tuple[tuple[str, Capability], ...]] = {
    "admin": (
        ("transit/keys/{key}", Capability.READ),
        ("transit/keys/{key}/*", Capability.READ | Capability.CREATE | Capability.UPDATE | Capability.DELETE),
    ),
    "sign": (("transit/sign/{key}", RW), ("transit/sign/{key}/*", RW)),
    "verify": (("transit/verify/{key}", RW), ("transit/verify/{key}/*", RW)),
    "encrypt": (("transit/encrypt/{key}", RW),),
    "decrypt": (("transit/decrypt/{key}", RW),),
    "rewrap": (("transit/rewrap/{key}", RW),),
}

ROOT_POLICY = Policy("root", ())


def policy_name(kind: str, key: str) -> str:
    return f"{kind}:{key}"


def parse_policy(name: str) -> Policy:
    """``root`` or ``<kind>:<key>`` (e.g. ``encrypt:payments``) → a Policy. Raises InvalidRequest."""
    if name == "root":
        return ROOT_POLICY
    kind, sep, key = name.partition(":")
    if not sep or kind not in POLICY_TEMPLATES:
        raise InvalidRequest(
            f"unknown policy; use 'root' or '<policy>:<key>' with policy one of {', '.join(POLICY_TEMPLATES)}"
        )
    validate_key_name(key)
    rules = tuple(PathRule(pattern.format(key=key), caps) for pattern, caps in POLICY_TEMPLATES[kind])
    return Policy(name, rules)


def acl_for(policy_names: Iterable[str]) -> ACL:
    return ACL(parse_policy(name) for name in policy_names)
