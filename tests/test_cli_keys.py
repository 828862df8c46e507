"""``kms-service keys rotate|config``, ``token lookup`` and the bulk ``rewrap``: the real command against a
database a running ``serve`` uses, on SQLite and PostgreSQL; the running server sees each change. Also: every
``KMS_*`` variable in ``--help``, and the shell completion docs/configuration.md documents."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import click
import requests
from processes import COMMAND, ServeProcess, cli_env, run_cli

from kms_service.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "tests" / "data" / "services.yaml"


def root_token(env: dict[str, str]) -> tuple[str, str]:
    lines = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.strip().splitlines()
    return lines[-1], next(line.split()[-1] for line in lines if line.startswith("accessor:"))


def key_body(server: ServeProcess, token: str, name: str, until=lambda body: True) -> dict:
    """The server's view of key NAME, once ``until`` holds (another process's change reaches it in ~150 ms)."""
    deadline = time.monotonic() + 10
    while True:
        answer = requests.get(f"{server.url}/v1/transit/keys/{name}", headers={"X-Vault-Token": token}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()["data"]
        if until(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.stderr


def test_keys_rotate_and_config_reach_the_running_server(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env)
    try:
        token, _ = root_token(env)
        rotated = run_cli(["keys", "rotate", "vault-enc"], env).stdout
        assert "rotated key vault-enc in transit/ to version 2" in rotated
        assert "latest_version" in rotated and "chacha20-poly1305" in rotated  # the settings table
        assert key_body(server, token, "vault-enc", lambda b: b["latest_version"] == 2)["latest_version"] == 2
        body = json.loads(run_cli(["keys", "rotate", "vault-enc", "--json"], env).stdout)
        assert body["latest_version"] == 3 and body["name"] == "vault-enc"

        configured = run_cli(
            [
                "keys",
                "config",
                "vault-enc",
                "--min-decryption-version",
                "2",
                "--min-encryption-version",
                "3",
                "--deletion-allowed",
                "true",
                "--auto-rotate-period",
                "30d",
                "--json",
            ],
            env,
        )
        body = json.loads(configured.stdout)
        expected = {
            "min_decryption_version": 2,
            "min_encryption_version": 3,
            "deletion_allowed": True,
            "auto_rotate_period": 30 * 86400,
        }
        assert {k: body[k] for k in expected} == expected
        seen = key_body(server, token, "vault-enc", lambda b: b["min_decryption_version"] == 2)
        assert {k: seen[k] for k in expected} == expected
        assert sorted(seen["keys"]) == ["2", "3"]  # version 1 no longer decrypts
        text = run_cli(
            ["keys", "config", "vault-enc", "--deletion-allowed", "false", "--auto-rotate-period", "0"], env
        ).stdout
        # Values as the API gives them (true/false), not Python's.
        assert "configured key vault-enc in transit/: deletion_allowed=false, auto_rotate_period=0" in text
        assert key_body(server, token, "vault-enc", lambda b: b["auto_rotate_period"] == 0)["auto_rotate_period"] == 0

        # Mistakes are one line each and change nothing.
        one_line_error(run_cli(["keys", "rotate", "missing"], env, check=False), 1, "no key named missing in transit/")
        one_line_error(run_cli(["keys", "config", "vault-enc"], env, check=False), 2, "nothing to change")
        one_line_error(
            run_cli(["keys", "config", "vault-enc", "--min-decryption-version", "9"], env, check=False), 1, ""
        )
        after = key_body(server, token, "vault-enc")
        assert (after["latest_version"], after["min_decryption_version"], after["exportable"]) == (3, 2, False)
    finally:
        server.stop()


def test_token_lookup_by_accessor(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    run_cli(["migrate"], env)
    run_cli(["keys", "create", "vault-enc"], env)  # a policy naming a key that does not exist is refused
    lines = run_cli(["token", "create", "--policy", "encrypt:vault-enc", "--ttl", "2h", "--display-name", "app"], env)
    token, accessor = lines.stdout.strip().splitlines()[-1], lines.stdout.split()[1]
    table = run_cli(["token", "lookup", accessor], env).stdout
    assert accessor in table and "encrypt:vault-enc" in table and "app" in table
    assert token not in table
    document = json.loads(run_cli(["token", "lookup", accessor, "--json"], env).stdout)
    assert document["accessor"] == accessor and document["policies"] == ["default", "encrypt:vault-enc"]
    assert document["display_name"] == "app" and document["expired"] is False and document["endpoint"] is None
    # As Vault's lookup gives them: ttl the seconds left, creation_ttl the lifetime given.
    assert 7000 < document["ttl"] <= 7200 and document["creation_ttl"] == 7200
    assert token not in json.dumps(document)
    one_line_error(run_cli(["token", "lookup", "0" * 24], env, check=False), 1, "no token with that accessor")
    one_line_error(run_cli(["token", "lookup", token], env, check=False), 2, "not a token accessor")
    run_cli(["token", "revoke", accessor], env)
    one_line_error(run_cli(["token", "lookup", accessor], env, check=False), 1, "no token with that accessor")


def _encrypt_many(server: ServeProcess, token: str, plaintexts: list[bytes]) -> list[str]:
    items = [{"plaintext": base64.b64encode(p).decode()} for p in plaintexts]
    answer = requests.post(
        f"{server.url}/v1/transit/encrypt/vault-enc",
        json={"batch_input": items},
        headers={"X-Vault-Token": token},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return [item["ciphertext"] for item in answer.json()["data"]["batch_results"]]


def _decrypt_many(server: ServeProcess, token: str, ciphertexts: list[str]) -> list[bytes]:
    answer = requests.post(
        f"{server.url}/v1/transit/decrypt/vault-enc",
        json={"batch_input": [{"ciphertext": c} for c in ciphertexts]},
        headers={"X-Vault-Token": token},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return [base64.b64decode(item["plaintext"]) for item in answer.json()["data"]["batch_results"]]


def test_rewrap_a_file_of_ciphertexts(database_url, data_dir, tmp_path):
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env)
    try:
        token, _ = root_token(env)
        plaintexts = [f"secret {i}".encode() for i in range(2500)]
        old = _encrypt_many(server, token, plaintexts[:1200])
        run_cli(["keys", "rotate", "vault-enc"], env)
        key_body(server, token, "vault-enc", lambda b: b["latest_version"] == 2)
        old += _encrypt_many(server, token, plaintexts[1200:])
        run_cli(["keys", "rotate", "vault-enc"], env)
        key_body(server, token, "vault-enc", lambda b: b["latest_version"] == 3)
        assert old[0].startswith("vault-kms:v1:") and old[-1].startswith("vault-kms:v2:")
        source = tmp_path / "ciphertexts.txt"
        source.write_text("\n".join(old[:1000]) + "\n\n" + "\n".join(old[1000:]) + "\n")  # one blank line

        result = run_cli(["rewrap", "--key", "vault-enc", str(source)], env)
        lines = result.stdout.splitlines()
        assert len(lines) == 2501 and lines[1000] == ""
        rewrapped = lines[:1000] + lines[1001:]
        assert all(line.startswith("vault-kms:v3:") for line in rewrapped)
        assert _decrypt_many(server, token, rewrapped) == plaintexts
        assert "rewrapped 2500 ciphertext(s) to transit/vault-enc version 3" in result.stderr
        # The service counted the encryptions (usage counters): 2,500 new ciphertexts of version 3.
        usage = key_body(server, token, "vault-enc")["usage"]
        assert usage["3"]["encryptions"] == 2500, usage

        # Standard input works too.
        piped = subprocess.run(
            [*COMMAND, "rewrap", "--key", "vault-enc", "-"],
            input=old[0] + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert piped.returncode == 0 and piped.stdout.startswith("vault-kms:v3:"), piped.stderr

        # A bad line stops it, naming the line, never echoing it.
        bad = tmp_path / "bad.txt"
        garbage = "vault-kms:v1:" + base64.b64encode(b"not a ciphertext of this key, at all").decode()
        bad.write_text("\n".join([*old[:1700], garbage, *old[1700:1800]]) + "\n")
        failed = run_cli(["rewrap", "--key", "vault-enc", str(bad)], env, check=False)
        one_line_error(failed, 1, "line 1701: ")
        assert garbage not in failed.stderr and garbage[13:] not in failed.stderr
        assert len(failed.stdout.splitlines()) == 1000  # the chunk before it
        one_line_error(run_cli(["rewrap", "--key", "missing", str(source)], env, check=False), 1, "no key named")
        one_line_error(run_cli(["rewrap", "--key", "vault-enc", str(tmp_path / "nope")], env, check=False), 2, "nope")
    finally:
        server.stop()


def on_a_terminal(command: list[str], env: dict[str, str], stdout) -> tuple[int, str]:
    """Run ``command`` with standard error on a pseudo-terminal (as an operator's shell); its exit status
    and what the terminal showed."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(command, env={**env, "COLUMNS": "100"}, stdout=stdout, stderr=secondary)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    return proc.wait(timeout=120), shown.decode("utf-8", "replace")


def test_rewrap_shows_a_progress_bar_on_a_terminal(database_url, data_dir, tmp_path):
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env)
    try:
        token, _ = root_token(env)
        source = tmp_path / "ciphertexts.txt"
        source.write_text("\n".join(_encrypt_many(server, token, [b"x"] * 1500)) + "\n")
    finally:
        server.stop()
    with open(tmp_path / "out.txt", "w") as out:
        code, text = on_a_terminal([*COMMAND, "rewrap", "--key", "vault-enc", str(source)], env, out)
    assert code == 0, text
    assert "rewrapping 1500 ciphertext(s) with transit/vault-enc" in text
    assert "1500/1500" in text and "━" in text, text  # rich's bar, complete
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 1500


def test_migrate_from_shows_a_progress_bar_on_a_terminal(database_url, data_dir, tmp_path):
    from openbao import dev_server

    env = cli_env(database_url, data_dir)
    run_cli(["migrate"], env)
    secret = "progress-bar-test-token"  # noqa: S105 (the dev server's token)
    with dev_server(secret) as url:
        mounted = requests.post(
            f"{url}/v1/sys/mounts/transit", json={"type": "transit"}, headers={"X-Vault-Token": secret}, timeout=30
        )
        assert mounted.status_code == 204, mounted.text
        for name in ("one", "two", "three"):
            made = requests.post(
                f"{url}/v1/transit/keys/{name}",
                json={"exportable": True, "allow_plaintext_backup": True},
                headers={"X-Vault-Token": secret},
                timeout=30,
            )
            assert made.status_code in (200, 204), made.text
        with open(tmp_path / "report.txt", "w") as out:
            code, text = on_a_terminal([*COMMAND, "migrate-from", "--addr", url, "--token", secret], env, out)
    assert code == 0, text
    assert "3/3" in text and "━" in text, text  # rich's bar, complete
    assert all(f"[{i}/3] " in text for i in (1, 2, 3)), text  # each key's outcome, above the bar
    assert secret not in text  # the token is never shown
    report = (tmp_path / "report.txt").read_text()
    assert report.count("moved") >= 3, report


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_help_shows_every_kms_variable():
    # Each command's help as click renders it for --help (in this process: a subprocess each would take
    # minutes on a loaded machine); serve's own --help, run for real, also names KMS_MASTER_KEY.
    variables = set()
    for path, command in _commands(main):
        wanted = {p.envvar for p in command.params if isinstance(p.envvar, str) and p.envvar.startswith("KMS_")}
        variables |= wanted
        with click.Context(command, info_name=" ".join(path), max_content_width=200) as ctx:
            shown = command.get_help(ctx)
        assert all(variable in shown for variable in wanted), (path, wanted - {v for v in wanted if v in shown})
    serve_help = run_cli(["serve", "--help"], dict(os.environ)).stdout
    assert "KMS_MASTER_KEY" in serve_help and "KMS_DATABASE_URL" in serve_help
    assert {"KMS_DATABASE_URL", "KMS_DATA_DIR", "KMS_LOG_LEVEL", "KMS_WORKERS"} <= variables
    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert all(f"`{variable}`" in reference for variable in variables), variables - {
        v for v in variables if f"`{v}`" in reference
    }


def test_shell_completion_script_and_answers():
    # The installed script, as a shell finds it on PATH (click names the variable after the program).
    bin_dir = Path(sys.prefix) / "bin"
    path = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env = {**path, "_KMS_SERVICE_COMPLETE": "bash_source"}
    script = subprocess.run(["kms-service"], env=env, capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "complete -o nosort -F _kms_service_completion kms-service" in script.stdout
    zsh = subprocess.run(
        ["kms-service"], env={**path, "_KMS_SERVICE_COMPLETE": "zsh_source"}, capture_output=True, text=True
    )
    assert zsh.returncode == 0 and "#compdef kms-service" in zsh.stdout
    # And bash then gets real answers from it: the subcommands of 'keys'.
    asked = subprocess.run(
        [
            "bash",
            "-c",
            script.stdout + '\nCOMP_WORDS=(kms-service keys ""); COMP_CWORD=2; '
            '_kms_service_completion kms-service; printf "%s\\n" "${COMPREPLY[@]}"',
        ],
        env=path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == 0 and set(asked.stdout.split()) == {
        "config",
        "create",
        "delete",
        "list",
        "rotate",
        "show",
    }, asked


def test_keys_create_and_delete_go_through_the_service(start_server, database_url, data_dir):
    """keys create and delete do what the HTTP API does, and delete refuses in the service's own words."""
    server = start_server()
    token = server.root_token()
    env = cli_env(database_url, data_dir)
    created = run_cli(["keys", "create", "cli-made", "--type", "ed25519", "--exportable"], env)
    assert created.stdout.startswith("created key cli-made in transit/ (ed25519)")
    body = key_body(server, token, "cli-made")
    assert (body["type"], body["exportable"], body["deletion_allowed"]) == ("ed25519", True, False)
    again = json.loads(run_cli(["keys", "create", "cli-made", "--type", "aes256-gcm96", "--json"], env).stdout)
    assert again["type"] == "ed25519"  # Vault's rule: an existing key is left as it is
    one_line_error(run_cli(["keys", "create", "bad key"], env, check=False), 1, "invalid key name")
    one_line_error(run_cli(["keys", "create", "k", "--type", "rot13"], env, check=False), 1, "unknown key type")

    # custom_metadata (set over HTTP) is a JSON object in --json, as the API gives it; compact JSON in a table.
    url = f"{server.url}/v1/transit/keys/cli-made"
    configured = requests.post(
        f"{url}/config", json={"custom_metadata": {"team": "payments"}}, headers={"X-Vault-Token": token}, timeout=30
    )
    assert configured.status_code in (200, 204), configured.text
    listed = {k["name"]: k for k in json.loads(run_cli(["keys", "list", "--json"], env).stdout)}
    assert listed["cli-made"]["custom_metadata"] == {"team": "payments"}
    shown = json.loads(run_cli(["keys", "show", "cli-made", "--json"], env).stdout)["key"]
    assert shown["custom_metadata"] == {"team": "payments"} and shown["exportable"] is True
    assert 'custom_metadata\t{"team":"payments"}' in run_cli(["keys", "show", "cli-made"], env).stdout

    # A token for a key that does not exist would grant nothing: refused, and no token is made.
    before = run_cli(["token", "list", "--json"], env).stdout
    one_line_error(
        run_cli(["token", "create", "--policy", "encrypt:no-such-key"], env, check=False), 1, "no key no-such-key"
    )
    assert run_cli(["token", "list", "--json"], env).stdout == before

    refused = requests.delete(url, headers={"X-Vault-Token": token}, timeout=30)
    assert refused.status_code == 400
    one_line_error(run_cli(["keys", "delete", "cli-made"], env, check=False), 1, refused.json()["errors"][0])
    run_cli(["keys", "config", "cli-made", "--deletion-allowed", "true"], env)
    assert run_cli(["keys", "delete", "cli-made"], env).stdout.strip() == "deleted key cli-made in transit/"
    assert "cli-made" not in run_cli(["keys", "list"], env).stdout
    deadline = time.monotonic() + 10  # the server hears of another process's change within its cache window
    while requests.get(url, headers={"X-Vault-Token": token}, timeout=30).status_code != 404:
        assert time.monotonic() < deadline, "the server still has the deleted key"
        time.sleep(0.05)
    one_line_error(run_cli(["keys", "delete", "cli-made"], env, check=False), 1, "no key named cli-made in transit/")


def test_help_speaks_of_the_product_only():
    """No source file names, reST markup or internal words in any --help."""
    for path, command in [((), main), *_commands(main)]:
        with click.Context(command, info_name=" ".join(("kms-service", *path)), max_content_width=200) as ctx:
            shown = command.get_help(ctx)
        for leak in (".py", "``", "cli_", "TODO"):
            assert leak not in shown, (path, leak, shown)
