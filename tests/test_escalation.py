"""Escalation attempts through the names and documents the policy, role and restore code reads: each is
refused, and nothing changes."""

from __future__ import annotations

import base64
import json
from typing import Any

import hvac
import hvac.exceptions
import pytest

from kms_service import policy_documents
from kms_service.errors import InvalidRequest


def test_a_capitalised_policy_name_is_checked_at_the_name_it_changes(server):
    root = server.client(server.root_token())
    root.sys.create_or_update_acl_policy(
        "policy-admin",
        'path "sys/policies/acl/*" { capabilities = ["create", "read", "update", "delete"] }\n'
        'path "sys/policies/acl/default" { capabilities = ["deny"] }\n',
    )
    admin_token = root.auth.token.create(policies=["policy-admin"], ttl="1h")["auth"]["client_token"]
    admin = server.client(admin_token)
    before = root.sys.read_acl_policy("default")["data"]["policy"]
    for name in ("default", "DEFAULT", "Default"):
        with pytest.raises(hvac.exceptions.Forbidden):
            admin.sys.create_or_update_acl_policy(name, 'path "*" { capabilities = ["sudo", "update"] }')
    with pytest.raises(hvac.exceptions.Forbidden):
        admin.sys.delete_acl_policy("DEFAULT")
    assert root.sys.read_acl_policy("default")["data"]["policy"] == before
    # Names it may change, in capitals or not, still work.
    admin.sys.create_or_update_acl_policy("Team-Ops", 'path "transit/keys" { capabilities = ["list"] }')
    assert "team-ops" in root.sys.list_acl_policies()["data"]["keys"]


@pytest.mark.parametrize(
    "document",
    [
        'path "transit/*" {\n  capabilities = ["update"]\n  allowed_parameters {\n    context = []\n  }\n}\n',
        'path "transit/*" {\n  capabilities = ["update"]\n  denied_parameters {\n    plaintext = []\n  }\n}\n',
        'path "transit/*" {\n  capabilities = ["update"]\n  anything {\n    a = 1\n  }\n}\n',
    ],
)
def test_constraint_blocks_in_a_path_rule_are_refused_not_dropped(document):
    with pytest.raises(InvalidRequest, match='failed to parse policy: path "transit/\\*"'):
        policy_documents.parse("constrained", document)


def test_a_role_bounds_the_policies_of_a_token_made_in_a_child_namespace(server):
    root_token = server.root_token()
    root = server.client(root_token)
    root.sys.create_namespace("team-b")
    in_team = hvac.Client(url=root.url, token=root_token, namespace="team-b")
    for name in ("reader", "writer"):
        in_team.sys.create_or_update_acl_policy(name, 'path "transit/keys" { capabilities = ["list"] }')
    in_team.auth.token.create_or_update_role("limited", allowed_policies=["reader"])
    root.sys.create_or_update_acl_policy(
        "role-user", 'path "team-b/auth/token/create/limited" { capabilities = ["update"] }'
    )
    user = root.auth.token.create(policies=["role-user"], ttl="1h")["auth"]["client_token"]
    as_user = hvac.Client(url=root.url, token=user, namespace="team-b")
    made = as_user.auth.token.create(role_name="limited", policies=["reader"])["auth"]
    assert "reader" in made["policies"] and "writer" not in made["policies"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="allowed policies"):
        as_user.auth.token.create(role_name="limited", policies=["writer"])


def test_a_role_keeps_the_case_of_a_grants_key(server):
    root = server.client(server.root_token())
    root.auth.token.create_or_update_role("no-decrypt", disallowed_policies=["decrypt:Vault-Enc"])
    assert root.auth.token.read_role("no-decrypt")["data"]["disallowed_policies"] == ["decrypt:Vault-Enc"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="disallowed"):
        root.auth.token.create(role_name="no-decrypt", policies=["decrypt:Vault-Enc"])


def test_a_forced_restore_cannot_allow_deletion(server):
    root = server.client(server.root_token())
    transit = root.secrets.transit
    transit.create_key("guarded", exportable=True, allow_plaintext_backup=True)
    backup = transit.backup_key("guarded")["data"]["backup"]
    document = json.loads(base64.b64decode(backup))
    assert _allow_deletion(document) == 1
    transit.restore_key(base64.b64encode(json.dumps(document).encode()).decode(), name="guarded", force=True)
    assert transit.read_key("guarded")["data"]["deletion_allowed"] is False
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.delete_key("guarded")
    assert transit.read_key("guarded")["data"]["name"] == "guarded"


def _allow_deletion(document: Any) -> int:
    """Set every ``deletion_allowed`` in a backup document to true; how many there were."""
    found = 0
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "deletion_allowed":
                document[key], found = True, found + 1
            else:
                found += _allow_deletion(value)
    elif isinstance(document, list):
        found += sum(_allow_deletion(item) for item in document)
    return found
