"""What one signature and one CreateSession cost inside a long-running process, against floors.

Floors: python-pkcs11's bare `key.sign()` on the same SoftHSM key (what any PKCS#11 client
must pay) and `cryptography` signing with a key in memory. Targets: our `Pkcs11Signer.sign()`
(mechanism choice, DER conversion, locking) and `FileSigner.sign()`; then a whole CreateSession
against the bundled emulator with one long-lived `RolesAnywhereClient` (connection reused), as
the credential servers will run it. Prints medians and ratios measured in this one run.

    python bench/sign.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _median_us(fn: Callable[[], object], rounds: int) -> float:
    for _ in range(min(20, rounds)):
        fn()  # warm up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    rounds = parser.parse_args().rounds

    import pkcs11
    from pkcs11 import Mechanism, ObjectClass

    from rolesanywhere_hsm.arn import validate_session_arns
    from rolesanywhere_hsm.client import RolesAnywhereClient
    from rolesanywhere_hsm.devpki import CertificateAuthority, new_private_key, write_pem
    from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
    from rolesanywhere_hsm.signers import SignerConfig, load_signer
    from rolesanywhere_hsm.softhsm import SoftHsmToken

    message = b"AWS4-X509-ECDSA-SHA256\n20260116T000243Z\n20260116/us-east-1/rolesanywhere/aws4_request\n" + b"0" * 64
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ca = CertificateAuthority.create()
        pin = "bench-pin-1234"
        token = SoftHsmToken.create(directory / "hsm", label="bench", pin=pin, so_pin="bench-so-5678")
        for kind, label, key_id in (("p256", "ec", b"\x01"), ("rsa2048", "rsa", b"\x02")):
            token.add_key(kind, label, key_id, ca)
        os.environ.update(token.env)
        os.environ["RAH_PKCS11_PIN"] = pin

        # Floors: bare python-pkcs11 on the same keys, in one session.
        lib = pkcs11.lib(token.module)
        lib.reinitialize()
        tok = lib.get_token(token_label="bench")
        with tok.open(user_pin=pin) as session:
            ec_key = session.get_key(ObjectClass.PRIVATE_KEY, label="ec")
            rsa_key = session.get_key(ObjectClass.PRIVATE_KEY, label="rsa")
            digest = hashlib.sha256(message).digest()
            rows.append(("floor: python-pkcs11 ECDSA P-256 (host hash)",
                         _median_us(lambda: ec_key.sign(digest, mechanism=Mechanism.ECDSA), rounds)))
            rows.append(("floor: python-pkcs11 SHA256_RSA_PKCS 2048",
                         _median_us(lambda: rsa_key.sign(message, mechanism=Mechanism.SHA256_RSA_PKCS), rounds)))
        lib.finalize()

        for label, name in (("ec", "P-256"), ("rsa", "RSA-2048")):
            with load_signer(SignerConfig(certificate=token.uri_for(label, type="cert", module=True))) as signer:
                rows.append((f"Pkcs11Signer.sign {name}", _median_us(lambda: signer.sign(message), rounds)))

        file_key = new_private_key("p256")
        cert = write_pem(directory / "leaf.crt", ca.issue_leaf(file_key.public_key(), "bench"))
        keyfile = write_pem(directory / "leaf.key", file_key, mode=0o600)
        with load_signer(SignerConfig(str(cert), str(keyfile))) as file_signer:
            rows.append(("FileSigner.sign P-256 (cryptography)", _median_us(lambda: file_signer.sign(message), rounds)))
            with Emulator(EmulatorConfig.for_certificates([ca.certificate])) as emulator:
                arns = validate_session_arns(emulator.trust_anchor_arn, emulator.profile_arn, emulator.role_arn)
                with RolesAnywhereClient(emulator.region, endpoint=emulator.url) as client:
                    rows.append(("CreateSession, file P-256, reused client",
                                 _median_us(lambda: client.create_session(file_signer, arns), max(20, rounds // 10))))
                with load_signer(SignerConfig(certificate=token.uri_for("ec", type="cert", module=True))) as signer, \
                        RolesAnywhereClient(emulator.region, endpoint=emulator.url) as client:
                    rows.append(("CreateSession, SoftHSM P-256, reused client",
                                 _median_us(lambda: client.create_session(signer, arns), max(20, rounds // 10))))

    floor = rows[0][1]
    print(f"medians over {rounds} rounds (CreateSession: {max(20, rounds // 10)}); ratio to the first floor")
    print(f"{'what':48} {'median us':>10} {'x floor':>8}")
    for name, micros in rows:
        print(f"{name:48} {micros:10.1f} {micros / floor:8.2f}")


if __name__ == "__main__":
    main()
