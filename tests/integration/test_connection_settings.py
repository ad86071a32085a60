"""Standard connection settings: NATS over TLS with a certificate made for the test and
with a user and password (real nats-servers); Temporal's own environment configuration
beside the RIDEHAIL_* names; secrets read from *_FILE."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.config import Settings
from infra.connections import connect_nats, connect_temporal
from ridehail.processes.serverprocess import answering, binary
from tests.support.servers import free_port
from tests.support.stack import eventually

RIDEHAIL_ENV = ("RIDEHAIL_TEMPORAL_ADDRESS", "RIDEHAIL_TEMPORAL_NAMESPACE")


def certificate_pair(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ridehail test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start a nats-server with extra arguments on a free port; stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> int:
        port = free_port()
        started.append(subprocess.Popen(
            [binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return port

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


async def wait_listening(port: int) -> None:
    async def listening() -> bool:
        return answering("127.0.0.1", port)

    await eventually(listening, f"nats-server on {port}")


async def refused(settings: Settings) -> str:
    """How a single connection attempt with these settings fails."""
    try:
        nc = await nats.connect(servers=settings.nats_servers, allow_reconnect=False,
                                max_reconnect_attempts=0, connect_timeout=3,
                                **settings.nats_connect_options())  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 — what failed is the point
        return repr(e)
    await nc.close()
    raise AssertionError("connected")


async def round_trip(settings: Settings) -> None:
    nc = await connect_nats(settings, "test")
    try:
        sub = await nc.subscribe("hello")
        await nc.publish("hello", b"there")
        assert (await sub.next_msg(timeout=5)).data == b"there"
    finally:
        await nc.drain()


async def test_nats_over_tls_with_the_ca_of_the_settings(nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca, cert, key = certificate_pair(tmp_path)
    port = nats_server("--tls", "--tlscert", str(cert), "--tlskey", str(key))
    await wait_listening(port)
    url = f"tls://127.0.0.1:{port}"
    await round_trip(Settings(data_dir=tmp_path, nats_url=url, nats_tls_ca=ca))
    # without the CA the server's certificate is not trusted
    assert "CERTIFICATE_VERIFY_FAILED" in await refused(Settings(data_dir=tmp_path,
                                                                 nats_url=url))


async def test_nats_user_and_password_the_password_from_a_file(
    nats_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    port = nats_server("--user", "ridehail", "--pass", "s3cret-pass")
    await wait_listening(port)
    secret = tmp_path / "nats_password"
    secret.write_text("s3cret-pass\n")
    monkeypatch.setenv("RIDEHAIL_NATS_URL", f"nats://127.0.0.1:{port}")
    monkeypatch.setenv("RIDEHAIL_NATS_USER", "ridehail")
    monkeypatch.setenv("RIDEHAIL_NATS_PASSWORD_FILE", str(secret))
    settings = Settings(data_dir=tmp_path)
    assert settings.nats_password == "s3cret-pass"
    await round_trip(settings)
    wrong = settings.model_copy(update={"nats_password": "guess"})
    assert "uthorization" in await refused(wrong)


def test_secret_files_and_their_conflicts(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jwt").write_text("from-a-file-" + "x" * 20 + "\n")
    monkeypatch.setenv("RIDEHAIL_JWT_SECRET_FILE", str(tmp_path / "jwt"))
    settings = Settings(data_dir=tmp_path)
    assert settings.find_jwt_secret() == ("from-a-file-" + "x" * 20, "RIDEHAIL_JWT_SECRET")
    assert "RIDEHAIL_JWT_SECRET_FILE" not in settings.as_env()  # children get the value
    monkeypatch.setenv("RIDEHAIL_JWT_SECRET", "y" * 32)
    with pytest.raises(ValueError, match="both set"):
        Settings(data_dir=tmp_path)
    monkeypatch.delenv("RIDEHAIL_JWT_SECRET")
    monkeypatch.setenv("RIDEHAIL_TEMPORAL_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read"):
        Settings(data_dir=tmp_path)


async def test_temporal_standard_environment_and_ridehail_names_win(
    servers: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in RIDEHAIL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", servers.temporal_address)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    settings = Settings(data_dir=tmp_path)
    assert settings.temporal_address == servers.temporal_address
    client = await connect_temporal(settings)
    assert (await client.count_workflows()).count >= 0  # it answers
    monkeypatch.setenv("RIDEHAIL_TEMPORAL_ADDRESS", "127.0.0.1:1")
    assert Settings(data_dir=tmp_path).temporal_address == "127.0.0.1:1"
    # an API key turns TLS on, as Temporal's own tools do
    monkeypatch.setenv("TEMPORAL_API_KEY", "key")
    from infra.config import temporal_environment
    from infra.connections import temporal_tls

    assert temporal_tls(Settings(data_dir=tmp_path), temporal_environment()) is True
    assert temporal_tls(Settings(data_dir=tmp_path, temporal_tls=False),
                        temporal_environment()) is False
