"""The CreateSession client against the bundled emulator over real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm.client import RetryPolicy, RolesAnywhereClient
from rolesanywhere_hsm.session import create_session
from rolesanywhere_hsm.arn import validate_session_arns
from rolesanywhere_hsm._dev.devpki import KEY_KINDS, CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import DISCONNECT, Emulator, EmulatorConfig
from rolesanywhere_hsm.errors import (
    AccessDeniedError,
    ArnError,
    ThrottlingError,
    TransportError,
    UsageError,
)
from rolesanywhere_hsm.signers import SignerConfig, load_signer
from tests.oracle import verify_signed_request

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, throttle_attempts=3,
                   throttle_base_delay=0.01, throttle_max_delay=0.02)


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


def config_for(files: Any) -> SignerConfig:
    return SignerConfig(
        str(files.certificate), str(files.key), intermediates=str(files.chain) if files.chain else None
    )


def session(server: Emulator, signer: Any, **kwargs: Any) -> Any:
    return create_session(
        signer,
        trust_anchor_arn=server.trust_anchor_arn,
        profile_arn=server.profile_arn,
        role_arn=server.role_arn,
        endpoint=server.url,
        retry=kwargs.pop("retry", FAST),
        **kwargs,
    )


# RSA-3072 and -4096: seconds of key generation, tenths of a second per signature
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in ("rsa3072", "rsa4096") else k
                                  for k in KEY_KINDS])
def test_every_key_kind_gets_credentials(kind: str, server: Emulator, leaf_files: dict[str, Any]) -> None:
    files = leaf_files[kind]
    credentials = session(server, config_for(files))
    issued = server.last_issued
    assert credentials.access_key_id == issued.access_key_id
    assert credentials.session_token == issued.session_token
    assert credentials.source_identity == f"CN=workload-{kind}"
    # The session name defaults to the leaf serial in hex (docs/protocol.md section 4.7).
    assert credentials.assumed_role_arn.endswith("/" + format(files.cert.serial_number, "x"))
    assert 3500 < credentials.seconds_left() <= 3600


def test_requests_verify_with_botocores_canonicalisation(server: Emulator, leaf_files: dict[str, Any]) -> None:
    """An independent verifier (botocore's canonical request + cryptography) accepts what we send."""
    session(server, config_for(leaf_files["p384"]))  # with an intermediate in the chain header
    request = server.last_request
    assert request.header("X-Amz-X509-Chain")
    verify_signed_request(
        request.method,
        f"{server.url}{request.path}?{request.raw_query}",
        dict(request.headers),
        request.body,
        server.region,
    )


def test_arns_travel_in_the_query_and_the_duration_in_the_body(server: Emulator, leaf_files: dict[str, Any]) -> None:
    session(server, config_for(leaf_files["p256"]), duration_seconds=900)
    request = server.last_request
    assert "trustAnchorArn=" in request.raw_query and "roleArn=" in request.raw_query
    assert request.json() == {"durationSeconds": 900}
    assert server.last_issued.duration_seconds == 900


def test_two_server_errors_are_retried_and_the_third_attempt_succeeds(server: Emulator, leaf_files: dict[str, Any]) -> None:
    server.inject_failures([500, 500])
    ticks = itertools.count()
    start = dt.datetime.now(dt.timezone.utc)
    arns = validate_session_arns(server.trust_anchor_arn, server.profile_arn, server.role_arn)
    with load_signer(config_for(leaf_files["p256"])) as signer, RolesAnywhereClient(
        server.region, endpoint=server.url, retry=FAST,
        clock=lambda: start + dt.timedelta(seconds=next(ticks)),
    ) as client:
        credentials = client.create_session(signer, arns)
    statuses = [r.status for r in server.requests]
    assert statuses == [500, 500, 201]
    # Each attempt was signed afresh: three dates, three signatures.
    assert len({r.header("X-Amz-Date") for r in server.requests}) == 3
    assert len({r.header("Authorization") for r in server.requests}) == 3
    assert credentials.access_key_id == server.last_issued.access_key_id


def test_a_dropped_connection_is_retried(server: Emulator, leaf_files: dict[str, Any]) -> None:
    server.inject_failures([DISCONNECT])
    session(server, config_for(leaf_files["p256"]))
    assert [r.status for r in server.requests][-1] == 201
    assert len(server.requests) == 2


def test_throttling_gives_up_after_the_attempts_with_the_service_error(server: Emulator, leaf_files: dict[str, Any]) -> None:
    server.inject_failures([429, 429, 429])
    with pytest.raises(ThrottlingError) as info:
        session(server, config_for(leaf_files["p256"]))
    assert info.value.status == 429 and info.value.error_type == "ThrottlingException"
    assert len(server.requests) == 3


def test_throttle_backoff_rule_is_full_jitter_in_seconds() -> None:
    policy = RetryPolicy()
    # The ceilings double from one second up to the cap: 1, 2, 4, 8, 8 s.
    assert [policy.throttle_delay(n, 0.999999) for n in range(1, 6)] == pytest.approx([1, 2, 4, 8, 8], abs=1e-4)
    # A draw near zero still waits a twentieth of the ceiling (no busy loop); full jitter between.
    assert [policy.throttle_delay(n, 0.0) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert policy.throttle_delay(3, 0.5) == 2.0
    # The other retries stay in fractions of a second.
    assert all(policy.delay(1) <= 0.5 for _ in range(50))


def test_throttled_attempts_back_off_by_the_throttle_rule_within_the_deadline(
    server: Emulator, leaf_files: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real 429s from the emulator; the waits are recorded instead of slept (they are seconds)."""
    import random

    monkeypatch.setattr(random, "random", lambda: 0.75)
    client = RolesAnywhereClient("us-east-1", endpoint=server.url, timeout=30)
    slept: list[float] = []
    client._sleep = slept.append  # type: ignore[method-assign]
    server.inject_failures([429, 429, 429])
    arns = validate_session_arns(server.trust_anchor_arn, server.profile_arn, server.role_arn)
    from rolesanywhere_hsm.signers.base import load_signer

    with load_signer(config_for(leaf_files["p256"])) as signer:
        credentials = client.create_session(signer, arns)
    client.close()
    assert credentials.access_key_id == server.last_issued.access_key_id
    assert slept == [0.75, 1.5, 3.0]  # seconds: 0.75 of 1, 2 and 4
    # Within the deadline: a wait that does not fit ends the call with the ThrottlingError.
    client = RolesAnywhereClient("us-east-1", endpoint=server.url, timeout=2.5)
    slept.clear()
    client._sleep = slept.append  # type: ignore[method-assign]
    server.inject_failures([429] * 8)
    with load_signer(config_for(leaf_files["p256"])) as signer, pytest.raises(ThrottlingError) as info:
        client.create_session(signer, arns)
    client.close()
    assert slept == [0.75, 1.5] and info.value.exit_code == 9  # 3.0 s would not fit in 2.5


def test_access_denied_is_not_retried_and_keeps_the_service_message(
    server: Emulator, leaf_files: dict[str, Any], tmp_path: Path
) -> None:
    stranger = CertificateAuthority.create("Stranger CA")
    key = leaf_files["p256"].private_key
    cert = write_pem(tmp_path / "untrusted.crt", stranger.issue_leaf(key.public_key(), "w"))
    with pytest.raises(AccessDeniedError, match="Untrusted signing certificate") as info:
        session(server, SignerConfig(str(cert), str(leaf_files["p256"].key)))
    assert info.value.status == 403 and info.value.exit_code == 6
    assert len(server.requests) == 1


def test_region_flag_must_match_the_trust_anchor(server: Emulator, leaf_files: dict[str, Any]) -> None:
    with pytest.raises(ArnError, match="does not match the trust anchor's region"):
        session(server, config_for(leaf_files["p256"]), region="ap-south-1")
    assert server.requests == []


def test_out_of_range_duration_is_refused_before_the_key_is_opened(server: Emulator, tmp_path: Path) -> None:
    # The certificate path does not exist: had the signer been opened first, this would be a
    # KeyLoadError, not the duration's UsageError.
    with pytest.raises(UsageError, match="^duration_seconds 60 is out of range"):  # its keyword
        session(server, SignerConfig(str(tmp_path / "absent.crt"), str(tmp_path / "absent.key")), duration_seconds=60)


def test_nothing_listening_is_a_transport_error_after_retries(leaf_files: dict[str, Any], root_ca: CertificateAuthority) -> None:
    emulator = Emulator(EmulatorConfig.for_certificates([root_ca.certificate])).start()
    url, arns = emulator.url, (emulator.trust_anchor_arn, emulator.profile_arn, emulator.role_arn)
    emulator.stop()
    with pytest.raises(TransportError, match="Cannot connect") as info:
        create_session(config_for(leaf_files["p256"]), trust_anchor_arn=arns[0], profile_arn=arns[1],
                       role_arn=arns[2], endpoint=url, retry=FAST)
    assert info.value.exit_code == 7


def test_https_with_a_ca_bundle_and_refusal_without(root_ca: CertificateAuthority, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    from cryptography import x509 as cx509

    tls_key = leaf_files["p256"].private_key
    tls_cert = _with_ip_san(root_ca, tls_key, cx509)
    cert_file = write_pem(tmp_path / "tls.crt", tls_cert)
    key_file = write_pem(tmp_path / "tls.key", tls_key, mode=0o600)
    bundle = write_pem(tmp_path / "ca.pem", root_ca.certificate)
    config = EmulatorConfig.for_certificates([root_ca.certificate])
    with Emulator(config, tls_cert=cert_file, tls_key=key_file) as server:
        assert server.url.startswith("https://")
        credentials = session(server, config_for(leaf_files["p256"]), verify=str(bundle))
        assert credentials.access_key_id
        with pytest.raises(TransportError, match="TLS verification") as info:
            session(server, config_for(leaf_files["p256"]))
        assert "--ca-bundle" in info.value.diagnostics()
        assert len(server.requests) == 1  # the TLS failure was not retried (nor reached HTTP)


def _with_ip_san(ca: CertificateAuthority, key: Any, cx509: Any) -> Any:
    import ipaddress

    from cryptography.hazmat.primitives import hashes

    builder = (
        cx509.CertificateBuilder()
        .subject_name(cx509.Name([cx509.NameAttribute(cx509.oid.NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(cx509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
        .not_valid_after(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
        .add_extension(
            cx509.SubjectAlternativeName(
                [cx509.IPAddress(ipaddress.ip_address("127.0.0.1")), cx509.DNSName("localhost")]
            ),
            critical=False,
        )
    )
    return builder.sign(ca.key, hashes.SHA256())


def test_role_session_name_is_sent_when_the_profile_accepts_it(server: Emulator, leaf_files: dict[str, Any]) -> None:
    with pytest.raises(AccessDeniedError, match="Not authorized to set roleSessionName"):
        session(server, config_for(leaf_files["p256"]), role_session_name="batch-job-7")
    server.config.profiles[server.profile_arn].accept_role_session_name = True
    credentials = session(server, config_for(leaf_files["p256"]), role_session_name="batch-job-7")
    assert server.last_request.json() == {"durationSeconds": 3600, "roleSessionName": "batch-job-7"}
    assert credentials.assumed_role_arn.endswith("/batch-job-7")


def test_a_ca_bundle_with_comments_and_several_certificates_is_read(
    root_ca: CertificateAuthority, leaf_files: dict[str, Any], tmp_path: Path
) -> None:
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives.serialization import Encoding

    tls_key = leaf_files["p256"].private_key
    cert_file = write_pem(tmp_path / "tls.crt", _with_ip_san(root_ca, tls_key, cx509))
    key_file = write_pem(tmp_path / "tls.key", tls_key, mode=0o600)
    stranger = CertificateAuthority.create("Stranger CA")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(  # as distributions write them: comments (not all ASCII) between blocks
        "# Issuer: CN=Stranger CA, O=Ŏrganisation\n".encode() + stranger.certificate.public_bytes(Encoding.PEM)
        + b"\n# Issuer: CN=Root\n" + root_ca.certificate.public_bytes(Encoding.PEM)
    )
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate]), tls_cert=cert_file, tls_key=key_file) as server:
        assert session(server, config_for(leaf_files["p256"]), verify=str(bundle)).access_key_id
