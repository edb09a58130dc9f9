"""mTLS identities for internal services (issue 21 item 2): a listener that requires
client certificates from a CA, and certificate SANs that are tenants; judged with
aiohttp and grpcio. trustme makes the CAs; URI SANs (SPIFFE IDs), which trustme
cannot write, are signed with its CA key through cryptography."""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.app.server import Gateway
from gateway.config.model import ConfigError, parse
from gateway.security.tls import CertificateRefused, ClientCheck, ListenerTLS, ServerCert
from meridian_proto.meridian.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    wait_for,
)
from tests.gateway.test_grpc_helpers import auth, chat

SPIFFE = "spiffe://corp.example/ns/batch/sa/summariser"
DNS_ID = "indexer.internal"


@dataclass
class Client:
    key: str
    cert: str


def client_cert(
    ca: trustme.CA, dirpath: Path, name: str, sans: list[str], *, expired: bool = False
) -> Client:
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey | type(ca_key))
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=3), now - dt.timedelta(days=1)) if expired else (
        now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)
    )  # fmt: skip
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(s) if "://" in s else x509.DNSName(s) for s in sans
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    out = Client(str(dirpath / f"{name}.key"), str(dirpath / f"{name}.pem"))
    Path(out.key).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    Path(out.cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def _append(path: str, data: bytes) -> None:
    with Path(path).open("ab") as out:
        out.write(data)


@dataclass
class World:
    gw: Gateway
    server_ca: trustme.CA
    clients: dict[str, Client]


@pytest.fixture
async def world(emulators: EmulatorFactory, gateways: GatewayFactory, tmp_path: Path) -> World:
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    leaf = server_ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    tls = {
        "cert": str(tmp_path / "server.pem"),
        "key": str(tmp_path / "server.key"),
        "client_ca": str(tmp_path / "clients-ca.pem"),
    }
    intermediate = client_ca.create_child_ca()
    chained = client_cert(intermediate, tmp_path, "chained", [SPIFFE])
    _append(chained.cert, intermediate.cert_pem.bytes())  # the client sends its intermediate
    clients = {
        "chained": chained,
        "spiffe": client_cert(client_ca, tmp_path, "spiffe", [SPIFFE]),
        "dns": client_cert(client_ca, tmp_path, "dns", [DNS_ID]),
        "unknown": client_cert(client_ca, tmp_path, "unknown", ["spiffe://corp.example/x"]),
        "other_ca": client_cert(other_ca, tmp_path, "other", [SPIFFE]),
        "expired": client_cert(client_ca, tmp_path, "expired", [SPIFFE], expired=True),
    }
    em = await emulators()
    config = gateway_config(
        [("fra", "onprem:fra1", "v1", em.url)],
        listen={"grpc": "127.0.0.1:0", "tls": {"http": tls, "grpc": tls}},
    )
    tenants = [
        *[t.model_dump(exclude_unset=True) for t in config.tenants],
        {"name": "summariser", "identities": [SPIFFE]},
        {"name": "indexer", "identities": [DNS_ID], "api_keys": []},
    ]
    config = config.model_validate({**config.model_dump(exclude_unset=True), "tenants": tenants})
    return World(await gateways(config), server_ca, clients)


def _ssl(world: World, who: str | None) -> Any:
    ctx = ssl.create_default_context()
    world.server_ca.configure_trust(ctx)
    if who is not None:
        ctx.load_cert_chain(world.clients[who].cert, world.clients[who].key)
    return ctx


async def _chat(world: World, who: str | None, key: str | None = None) -> tuple[int, bytes]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    connector = aiohttp.TCPConnector(ssl=_ssl(world, who))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.post(world.gw.http_url + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        return r.status, await r.read()


def _metric_tenants(world: World) -> str:
    rt = world.gw.runtime
    assert rt is not None
    return rt.metrics.exposition().decode()


async def test_http_certificate_identities_are_tenants(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await _chat(world, "spiffe"))[0] == 200
    assert (await _chat(world, "dns"))[0] == 200
    exposition = _metric_tenants(world)
    assert 'tenant="summariser"' in exposition and 'tenant="indexer"' in exposition
    # an API key still works over the mTLS listener, and names its own tenant
    assert (await _chat(world, "unknown", GLOBAL_KEY))[0] == 200
    with caplog.at_level(logging.INFO):
        status, raw = await _chat(world, "unknown")
    assert status == 401 and b"spiffe://" not in raw  # nothing about the certificate
    assert any("spiffe://corp.example/x" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        (None, "listen.tls.http: no client certificate: refused at the handshake"),
        (
            "other_ca",
            "listen.tls.http: client certificate refused at the handshake: "
            "unable to get local issuer certificate",
        ),
    ],
)
async def test_http_without_a_certificate_of_the_ca_is_refused_at_the_handshake_saying_why(
    world: World, who: str | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Python's ssl cannot ask for a certificate without verifying it: the handshake
    refuses these, and the log (never the client) says why."""
    with caplog.at_level(logging.INFO, "meridian.tls"), pytest.raises(aiohttp.ClientError):
        await _chat(world, who, GLOBAL_KEY)
    await wait_for(lambda: reason in caplog.text)


@pytest.mark.parametrize("key", [None, GLOBAL_KEY])
async def test_http_an_expired_certificate_is_a_401_with_the_reason_in_the_log(
    world: World, key: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "meridian.tls"):
        status, raw = await _chat(world, "expired", key)
    assert status == 401  # even with a good API key: the listener requires a valid certificate
    error = json.loads(raw)["error"]
    assert error["code"] == "invalid_client_certificate"
    assert error["message"] == "The client certificate is not accepted."
    assert b"expired" not in raw and b"spiffe" not in raw  # nothing about the certificate
    (line,) = [r.getMessage() for r in caplog.records if "refused:" in r.getMessage()]
    assert line.startswith("listen.tls.http: client certificate CN=expired (serial ")
    assert "refused: expired at " in line


async def test_http_a_client_sending_its_intermediate_is_its_identity(world: World) -> None:
    """client_ca holds the root alone; the request-time check uses the chain the client sent."""
    assert (await _chat(world, "chained"))[0] == 200


def _channel(world: World, who: str | None) -> grpc.aio.Channel:
    ca = world.server_ca.cert_pem.bytes()
    if who is None:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        c = world.clients[who]
        creds = grpc.ssl_channel_credentials(
            ca, Path(c.key).read_bytes(), Path(c.cert).read_bytes()
        )
    return grpc.aio.secure_channel(world.gw.grpc_address, creds)


@pytest.mark.parametrize("who", [None, "other_ca", "expired"])
async def test_grpc_without_a_good_certificate_is_refused_at_the_handshake(
    world: World, who: str | None
) -> None:
    async with _channel(world, who) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.InferenceStub(channel).Chat(chat(2), metadata=auth(), timeout=10)
    # grpcio can only require-and-verify a client certificate or not ask for one (no
    # verify callback): the handshake fails, grpc reports the transport unavailable
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@dataclass
class _Connection:
    """An SSLObject's surface the request-time check reads (no client chain: the leaf)."""

    der: bytes
    verified: Any = None

    def getpeercert(self, binary_form: bool = False) -> bytes:
        assert binary_form
        return self.der


def test_the_request_time_check_follows_the_clock(tmp_path: Path) -> None:
    """A certificate valid at the handshake is refused from its expiry on (injected clock)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf = x509.load_pem_x509_certificate(
        Path(client_cert(ca, tmp_path, "svc", [SPIFFE]).cert).read_bytes()
    )
    now = [leaf.not_valid_after_utc - dt.timedelta(seconds=1)]
    check = ClientCheck("http", str(tmp_path / "ca.pem"), clock=lambda: now[0])
    der = leaf.public_bytes(serialization.Encoding.DER)
    check.verify([der])
    now[0] = leaf.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateRefused):
        check.verify([der])
    # per connection: verified once, then only the clock against the chain's window
    now[0] = leaf.not_valid_before_utc + dt.timedelta(seconds=1)
    connection = _Connection(der)
    check.connection(connection)
    assert connection.verified is not None and connection.verified[0] is check
    connection.der = b"not even a certificate"  # not read again inside the window
    check.connection(connection)
    now[0] = leaf.not_valid_after_utc
    with pytest.raises(ValueError):  # outside it: verified afresh
        check.connection(connection)
    connection.der = der
    now[0] = leaf.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateRefused):
        check.connection(connection)
    with pytest.raises(CertificateRefused):  # no certificate at all is never a pass
        check.connection(_Connection(b""))
    other = trustme.CA()
    stranger = client_cert(other, tmp_path, "stranger", [SPIFFE])
    now[0] = leaf.not_valid_before_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateRefused):
        check.verify([x509.load_pem_x509_certificate(Path(stranger.cert).read_bytes())
                      .public_bytes(serialization.Encoding.DER)])  # fmt: skip


def test_only_the_http_listener_leaves_the_dates_to_the_request(tmp_path: Path) -> None:
    """The admin listener's client certificates gate the handshake alone: dates included."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "s.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "s.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cfg = ListenerTLS(
        cert=str(tmp_path / "s.pem"),
        key=str(tmp_path / "s.key"),
        client_ca=str(tmp_path / "ca.pem"),
    )
    no_check_time = 0x200000
    http, admin = ServerCert("http", cfg).context, ServerCert("admin", cfg).context
    assert isinstance(getattr(http, "client_check", None), ClientCheck)
    assert http.verify_flags & no_check_time
    assert getattr(admin, "client_check", None) is None
    assert not admin.verify_flags & no_check_time
    assert admin.verify_mode == http.verify_mode == ssl.CERT_REQUIRED


def test_a_ca_dropped_from_client_ca_is_refused_at_the_next_request(tmp_path: Path) -> None:
    """OpenSSL's store only grows on a reload; the request-time check reads the new bundle."""
    ca, successor = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "s.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "s.key"))
    bundle = tmp_path / "clients.pem"
    bundle.write_bytes(ca.cert_pem.bytes())
    cfg = ListenerTLS(
        cert=str(tmp_path / "s.pem"), key=str(tmp_path / "s.key"), client_ca=str(bundle)
    )
    cert = ServerCert("http", cfg)
    client = x509.load_pem_x509_certificate(
        Path(client_cert(ca, tmp_path, "svc", [SPIFFE]).cert).read_bytes()
    ).public_bytes(serialization.Encoding.DER)
    check = getattr(cert.context, "client_check", None)
    assert isinstance(check, ClientCheck)
    check.verify([client])
    bundle.write_bytes(successor.cert_pem.bytes() + b"\n")  # size changes: a rotation
    assert cert.poll()
    check = getattr(cert.context, "client_check", None)
    assert isinstance(check, ClientCheck)
    with pytest.raises(CertificateRefused):
        check.verify([client])


def test_one_identity_is_one_tenant() -> None:
    text = """
regions: [{name: "aws:us-east-1"}]
models: [{name: m, versions: {v1: 100}}]
backends: [{name: b, model: m, version: v1, region: "aws:us-east-1", provider: vllm,
            url: "http://127.0.0.1:1", served_model: s}]
tenants:
  - {name: a, identities: ["spiffe://x/a"]}
  - {name: b, identities: ["spiffe://x/a"]}
"""
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert ":8: tenants.1.identities: 'spiffe://x/a' is tenant 'a'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse(text.replace('identities: ["spiffe://x/a"]}', "api_keys: []}"))
    assert "tenants.0: a tenant needs api_keys, identities or both" in str(err.value)
