"""The path-rule ACL engine and the built-in policy templates (pure, no I/O)."""

import pytest

from kms_service.acl import ACL, Capability, PathRule, Policy, acl_for, parse_policy
from kms_service.errors import InvalidRequest

R, U, D = Capability.READ, Capability.UPDATE, Capability.DELETE


@pytest.mark.parametrize(
    "pattern, path, matches",
    [
        ("transit/keys/k", "transit/keys/k", True),
        ("transit/keys/k", "transit/keys/k/rotate", False),
        ("transit/keys/k/*", "transit/keys/k/rotate", True),
        ("transit/keys/k/*", "transit/keys/k", False),
        ("transit/keys/k*", "transit/keys/k2", True),
        ("transit/+/k", "transit/sign/k", True),
        ("transit/+/k", "transit/sign/k/x", False),
        ("transit/+/k/*", "transit/sign/k/sha2-256", True),
        ("transit/sign/k/*", "transit/sign/kk/sha2-256", False),
    ],
)
def test_glob_matching(pattern, path, matches):
    assert PathRule(pattern, R).matches(path) is matches


def test_exact_beats_glob_and_deny_wins():
    acl = ACL(
        [
            Policy("a", (PathRule("transit/keys/*", R | U), PathRule("transit/keys/secret", Capability.DENY))),
            Policy("b", (PathRule("transit/keys/secret", R),)),
        ]
    )
    assert acl.allows("transit/keys/other", U)
    assert not acl.allows("transit/keys/secret", R)  # deny in one policy beats read in another


def test_capabilities_union_only_for_the_same_pattern():
    acl = ACL([Policy("a", (PathRule("transit/keys/k/*", R),)), Policy("b", (PathRule("transit/keys/k/*", U),))])
    assert acl.capabilities("transit/keys/k/rotate") == R | U


def test_most_specific_glob_wins():
    acl = ACL([Policy("a", (PathRule("transit/*", R), PathRule("transit/keys/*", U)))])
    assert acl.capabilities("transit/keys/k") == U
    assert acl.capabilities("transit/sign/k") == R


def test_default_deny():
    assert not ACL([]).allows("transit/keys/k", R)


@pytest.mark.parametrize(
    "policy, path, capability, allowed",
    [
        ("admin:k", "transit/keys/k", R, True),
        ("admin:k", "transit/keys/k", U, False),
        ("admin:k", "transit/keys/k/rotate", U, True),
        ("admin:k", "transit/keys/k/config", U, True),
        ("admin:k", "transit/keys/other/rotate", U, False),
        ("sign:k", "transit/sign/k/sha2-512", U, True),
        ("sign:k", "transit/sign/k", U, True),
        ("sign:k", "transit/verify/k/sha2-512", U, False),
        ("verify:k", "transit/verify/k/sha2-512", U, True),
        ("encrypt:k", "transit/encrypt/k", U, True),
        ("encrypt:k", "transit/encrypt/k/x", U, False),
        ("encrypt:k", "transit/decrypt/k", U, False),
        ("decrypt:k", "transit/decrypt/k", U, True),
        ("rewrap:k", "transit/rewrap/k", U, True),
        ("root", "anything/at/all", D, True),
    ],
)
def test_builtin_policies(policy, path, capability, allowed):
    assert acl_for([policy]).allows(path, capability) is allowed


@pytest.mark.parametrize("name", ["owner:k", "encrypt", "encrypt:", "encrypt:bad key", "encrypt:k/../x", "ROOT"])
def test_unknown_or_malformed_policy_names_are_refused(name):
    with pytest.raises(InvalidRequest):
        parse_policy(name)


def test_a_list_asks_for_the_path_with_a_trailing_slash_exact_rule_without_it_first():
    """Vault lists "<path>/": an exact rule for "<path>" applies first, then one for "<path>/", then the globs
    (so "transit/keys/*" grants listing transit/keys, as in Vault)."""
    lists = Capability.LIST
    assert ACL([Policy("p", (PathRule("transit/keys", lists),))]).allows("transit/keys/", lists)
    assert ACL([Policy("p", (PathRule("transit/keys/", lists),))]).allows("transit/keys/", lists)
    assert ACL([Policy("p", (PathRule("transit/keys/*", lists),))]).allows("transit/keys/", lists)
    assert not ACL([Policy("p", (PathRule("transit/keys/*", lists),))]).allows("transit/keys", lists)
    exact_first = ACL([Policy("p", (PathRule("transit/keys", Capability.READ), PathRule("transit/keys/", lists)))])
    assert not exact_first.allows("transit/keys/", lists)
    assert not ACL([Policy("p", (PathRule("transit/keys/vault-enc", lists),))]).allows("transit/keys/", lists)
