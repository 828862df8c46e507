"""The ``kms-service`` command: the group, assembled from the command modules: ``cli_init.py`` init (the
example YAML files); ``cli_serve.py`` serve,
relationships, config check; ``cli_access.py`` token create/revoke/list, policy; ``cli_audit.py`` audit
hash/verify; ``cli_migrate.py`` migrate, migrate-from/-to; ``cli_inspect.py`` keys list/show, endpoints list,
token lookup, inspect (read-only); ``cli_keys.py`` keys rotate/config and rewrap (writes through the
service); ``cli_master_key.py`` master-key rotate/status. What they share is ``cli_common.py``.

Every flag also reads a ``KMS_*`` environment variable (``migrate-from``/``migrate-to``: ``--addr`` and ``--token``
read Vault's and OpenBao's own variables). Commands talk to the database directly (never through HTTP), so
they work while a server runs or before the first one starts; ``migrate-from``/``-to`` also talk HTTP to the
Vault or OpenBao server they move keys from or to.
"""

from __future__ import annotations

import sys

import click

from kms_service import __version__, logs
from kms_service.cli_access import policy, token
from kms_service.cli_audit import audit
from kms_service.cli_common import Group
from kms_service.cli_init import init
from kms_service.cli_inspect import endpoints, inspect, keys, token_lookup
from kms_service.cli_keys import rewrap
from kms_service.cli_master_key import master_key
from kms_service.cli_migrate import migrate, migrate_from, migrate_to
from kms_service.cli_serve import config_group, relationships, serve


@click.group(cls=Group, context_settings={"max_content_width": 120})
@click.version_option(__version__, prog_name="kms-service")
def main() -> None:
    """Self-hosted key management: Vault's transit API backed by SQLite or PostgreSQL."""
    logs.setup()  # each command's --log-format and --log-level set it up again


# In this order in the command reference (docs/cli_reference.py); --help lists them by name.
for command in (
    init,
    serve,
    relationships,
    config_group,
    policy,
    audit,
    token,
    migrate,
    migrate_from,
    migrate_to,
    keys,
    endpoints,
    inspect,
    master_key,
    rewrap,
):
    main.add_command(command)
token.add_command(token_lookup)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
