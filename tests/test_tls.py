"""TLS: serve --tls-cert/--tls-key, TLS 1.2 or newer only, hvac verifying the certificate, and the
relationships' scheme following."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import warnings
from pathlib import Path

import hvac
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from processes import ServeProcess, cli_env, run_cli

# The HTTP edge: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "services.yaml"
NAMES = {
    ssl.TLSVersion.TLSv1: "TLSv1",
    ssl.TLSVersion.TLSv1_1: "TLSv1.1",
    ssl.TLSVersion.TLSv1_2: "TLSv1.2",
    ssl.TLSVersion.TLSv1_3: "TLSv1.3",
}


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kms-service test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def env(database_url, data_dir, certificate):
    cert, key = certificate
    return cli_env(database_url, data_dir, KMS_TLS_CERT=str(cert), KMS_TLS_KEY=str(key))


def test_hvac_verifies_the_certificate_and_relationships_say_https(env, certificate, tmp_path):
    cert, _ = certificate
    server = ServeProcess(CONFIG, env, scheme="https", verify=str(cert))
    try:
        app = tmp_path / "app.yaml"
        app.write_text(yaml.safe_dump({"relationships": {"kms": "kms:crypto"}}))
        value = run_cli(["relationships", "--config", str(CONFIG), "--app", str(app), "--port", str(server.port)], env)
        [entry] = json.loads(base64.b64decode(value.stdout.strip()))["kms"]
        assert entry["scheme"] == "https"

        client = hvac.Client(url=server.url, token=entry["password"], verify=str(cert))
        ciphertext = client.secrets.transit.encrypt_data("vault-enc", base64.b64encode(b"over TLS").decode())
        ciphertext = ciphertext["data"]["ciphertext"]
        plaintext = client.secrets.transit.decrypt_data("vault-enc", ciphertext)["data"]["plaintext"]
        assert base64.b64decode(plaintext) == b"over TLS"

        # Without the certificate to verify against, the client refuses the server.
        with pytest.raises(requests.exceptions.SSLError):
            hvac.Client(url=server.url, token=entry["password"]).sys.read_health_status(method="GET")
        # Plain HTTP to the TLS port gets no answer.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(server.url.replace("https://", "http://") + "/v1/sys/health", timeout=5)
    finally:
        server.stop()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_before_1_2_is_refused(env, certificate, version):
    cert, _ = certificate
    server = ServeProcess(CONFIG, env, scheme="https", verify=str(cert))
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cert)
        context.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
            context.minimum_version = version
            context.maximum_version = version
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            with pytest.raises(ssl.SSLError) as refused:
                context.wrap_socket(sock, server_hostname="127.0.0.1")
        assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)
        # Control: the same client context completes a handshake with a server that allows the version, so
        # the refusal above was the server's.
        assert _handshake_with_permissive_server(context, certificate, version) == NAMES[version]
        for accepted in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            context = ssl.create_default_context(cafile=str(cert))
            context.minimum_version = context.maximum_version = accepted
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                    assert tls.version() == NAMES[accepted]
    finally:
        server.stop()


def _handshake_with_permissive_server(client: ssl.SSLContext, certificate: tuple[Path, Path], version) -> str:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_context.minimum_version = version
    server_context.load_cert_chain(*certificate)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        accepted: list[str] = []

        def serve_one() -> None:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls:
                accepted.append(tls.version() or "")

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with client.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                version_name = tls.version() or ""
        thread.join(5)
    return version_name


def test_tls_flags_errors_are_one_line(database_url, data_dir, certificate, tmp_path):
    cert, key = certificate
    base = cli_env(database_url, data_dir)
    cases = [
        ({"KMS_TLS_CERT": str(cert)}, "--tls-cert and --tls-key go together"),
        ({"KMS_TLS_CERT": str(tmp_path / "none.pem"), "KMS_TLS_KEY": str(key)}, "cannot load the TLS certificate"),
        ({"KMS_TLS_CERT": str(key), "KMS_TLS_KEY": str(cert)}, "cannot load the TLS certificate"),
    ]
    for extra, message in cases:
        result = run_cli(["serve", "--config", str(CONFIG), "--port", "0"], {**base, **extra}, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert message in result.stderr.strip().splitlines()[-1]
