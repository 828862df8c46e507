"""Vault's policy documents read as Vault reads them (pure, no I/O): a path named twice, an attribute given
twice, the wildcards OpenBao refuses, and the policy list a new token gets."""

import pytest

from kms_service.acl import ACL, Capability
from kms_service.errors import InvalidRequest
from kms_service.policy_documents import DEFAULT_POLICY, parse, token_policy_names

R, L = Capability.READ, Capability.LIST


def granted(document: str, path: str) -> Capability:
    return ACL([parse("p", document)]).capabilities(path)


@pytest.mark.parametrize(
    "document, expected",
    [
        ('{"path": {"a": {"capabilities": ["read"]}, "a": {"capabilities": ["deny"]}}}', Capability(0)),
        ('{"path": {"a": {"capabilities": ["deny"]}, "a": {"capabilities": ["read"]}}}', Capability(0)),
        ('{"path": {"a": {"capabilities": ["read"]}, "a": {"capabilities": ["list"]}}}', R | L),
        ('{"path": {"a": {"capabilities": ["read"], "capabilities": ["deny"]}}}', Capability(0)),
        ('{"path": {"a": {"capabilities": ["read"]}}, "path": {"a": {"capabilities": ["deny"]}}}', Capability(0)),
        ('path "a" { capabilities = ["read"] }\npath "a" { capabilities = ["deny"] }', Capability(0)),
        ('path "a" { capabilities = ["read"] }\npath "a" { capabilities = ["list"] }', R | L),
        ('path "a" {\n  capabilities = ["deny"]\n  capabilities = ["read"]\n}', Capability(0)),
        ('path "a" {\n  capabilities = ["read"]\n  capabilities = ["list"]\n}', R | L),
        ('path "a" {\n  capabilities = ["list"]\n  policy = "deny"\n}', Capability(0)),
    ],
    ids=[
        "json-key-twice-deny-last",
        "json-key-twice-deny-first",
        "json-key-twice-union",
        "json-attribute-twice",
        "json-path-twice",
        "hcl-block-twice-deny",
        "hcl-block-twice-union",
        "hcl-attribute-twice-deny",
        "hcl-attribute-twice-union",
        "hcl-capabilities-and-legacy-deny",
    ],
)
def test_a_path_named_twice_adds_up_and_deny_wins(document, expected):
    assert granted(document, "a") == expected


@pytest.mark.parametrize(
    "document, message",
    [
        (
            'path "transit/+*" { capabilities = ["read"] }',
            'path "transit/+*": path "transit/+*": invalid use of wildcards (\'+*\' is forbidden)',
        ),
        (
            '{"path": {"/transit/keys/+*/x": {"capabilities": ["read"]}}}',
            'path "/transit/keys/+*/x": path "transit/keys/+*/x": invalid use of wildcards (\'+*\' is forbidden)',
        ),
        ('path "a" { capabilities = ["reed"] }', 'path "a": path "a": invalid capability "reed"'),
        ('path "a" { policy = "reed" }', 'path "a": path "a": invalid policy "reed"'),
        ('path "a" { policy = ["read"] }', 'path "a": path "a": invalid policy "..."'),
    ],
    ids=["plus-star", "plus-star-json-leading-slash", "capability", "legacy-policy", "legacy-policy-list"],
)
def test_refused_in_openbaos_words(document, message):
    with pytest.raises(InvalidRequest) as refused:
        parse("p", document)
    assert refused.value.message == f"failed to parse policy: {message}"


def test_the_default_policy_grants_the_self_and_wrapping_paths_only():
    acl = ACL([parse("default", DEFAULT_POLICY)])
    update = Capability.UPDATE
    assert acl.capabilities("auth/token/lookup-self") == R
    for path in (
        "auth/token/renew-self",
        "auth/token/revoke-self",
        "sys/capabilities-self",
        "sys/wrapping/wrap",
        "sys/wrapping/lookup",
        "sys/wrapping/unwrap",
    ):
        assert acl.capabilities(path) == update, path
    for path in ("sys/wrapping/rewrap", "auth/token/create", "transit/keys/", "sys/policies/acl/default"):
        assert acl.capabilities(path) == Capability(0), path


@pytest.mark.parametrize(
    "requested, options, expected",
    [
        ((), {}, ("default",)),
        (("foo",), {}, ("default", "foo")),
        (("foo", "default", "foo"), {}, ("default", "foo")),
        (("foo",), {"no_default_policy": True}, ("foo",)),
        (("default",), {"no_default_policy": True}, ()),
        (("root",), {}, ("root",)),
        (("root", "foo"), {}, ("root",)),
        (("foo",), {"parent": ("root",)}, ("default", "foo")),
        (("foo",), {"parent": ("default", "foo")}, ("default", "foo")),
        # A parent made without the default policy does not hand it down.
        (("foo",), {"parent": ("foo",)}, ("foo",)),
    ],
)
def test_a_new_tokens_policies_as_openbao_records_them(requested, options, expected):
    assert token_policy_names(requested, **options) == expected
