"""What one credential costs the token: PKCS#11 calls counted by OpenSC's pkcs11-spy between
`credential-process` and SoftHSM, and, on the virtual YubiKey with typical hardware latencies
(tests/vpiv/card.py, RAH_VPIV_LATENCY), the time per credential and the VERIFY and GENERAL
AUTHENTICATE commands the card itself counted.

The virtual YubiKey is started with `tests.tokens.yubikey.start_virtual_yubikey` (plain code,
no pytest fixture): it needs pcscd, vsmartcard-vpcd, ykcs11 and OpenSC, and a checkout with
tests/.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, REPO, Material, Row, alternate, child_env, emulator, timed_run

OURS = [PYTHON, "-m", "rolesanywhere_hsm", "credential-process"]
FLOOR = str(REPO / "bench" / "floor.py")
YUBIKEY_LATENCY = "verify=25,rsa=150,ec=60"


def spy_rows(runs: int) -> list[Row]:
    from tests.signers.spylog import SPY, counts, parse_spy_log

    if not os.path.isfile(SPY):
        print("pkcs11-spy.so (OpenSC) is not installed: spy rows skipped", file=sys.stderr)
        return []
    rows = []
    with tempfile.TemporaryDirectory(prefix="rah-bench-") as tmp:
        material = Material.create(Path(tmp))
        if material.token is None:
            return []
        token = material.token
        with emulator(material) as emu:
            for label, name in (("ec", "SoftHSM P-256"), ("rsa", "SoftHSM RSA-2048")):
                log = Path(tmp) / f"spy-{label}.log"
                env = child_env(**material.token_env(), RAH_PKCS11_MODULE=SPY, PKCS11SPY=token.module,
                                PKCS11SPY_OUTPUT=str(log))
                timed_run([*OURS, "--certificate", token.uri_for(label, type="cert"), *emu.args], env)
                calls = parse_spy_log(log)
                n = counts(calls)
                rows.append(Row("token calls", f"{name}: one credential-process", unit="calls",
                                median=float(len(calls)), target="1 login, 1 signature",
                                met=n["C_Login"] == 1 and n["C_Sign(real)"] == 1,
                                extra={"logins": n["C_Login"], "signatures": n["C_Sign(real)"],
                                       "sessions": n["C_OpenSession"], "total_calls": len(calls),
                                       "find_objects": n["C_FindObjectsInit"],
                                       "get_attribute_value": n["C_GetAttributeValue"]}))
    return rows


def yubikey_rows(runs: int, warmup: int) -> list[Row]:
    from tests.tokens.yubikey import ForeignPcscd, missing_yubikey_binaries, start_virtual_yubikey

    missing = missing_yubikey_binaries()
    if missing:
        print(f"virtual YubiKey needs {', '.join(missing)}: YubiKey rows skipped", file=sys.stderr)
        return []
    rows: list[Row] = []
    previous = os.environ.get("RAH_VPIV_LATENCY")
    os.environ["RAH_VPIV_LATENCY"] = YUBIKEY_LATENCY  # the card process reads it at start
    try:
        with tempfile.TemporaryDirectory(prefix="rah-bench-") as tmp:
            material = Material.create(Path(tmp), softhsm=False)
            try:
                card = start_virtual_yubikey(Path(tmp) / "card", material.ca)
            except ForeignPcscd as exc:
                print(f"virtual YubiKey: {exc}: rows skipped", file=sys.stderr)
                return []
            try:
                with emulator(material) as emu:
                    rows += _yubikey_variants(card, emu, runs, warmup)
            finally:
                card.stop()
    finally:
        if previous is None:
            os.environ.pop("RAH_VPIV_LATENCY", None)
        else:
            os.environ["RAH_VPIV_LATENCY"] = previous
    return rows


def _yubikey_variants(card: object, emu: object, runs: int, warmup: int) -> list[Row]:
    rows: list[Row] = []
    floor_args = [PYTHON, FLOOR, emu.url, emu.trust_anchor_arn, emu.profile_arn, emu.role_arn]  # type: ignore[attr-defined]
    for slot, name in (("9a", "RSA-2048"), ("9d", "P-384")):
        module = card.ykcs11_module  # type: ignore[attr-defined]
        env = child_env(**card.subprocess_env(module, pin=True))  # type: ignore[attr-defined]
        env["PYTHONPATH"] = child_env()["PYTHONPATH"]
        uri = card.uri_for(slot, module, type="cert", by_label=True)  # type: ignore[attr-defined]
        label = card.slots[slot].ykcs11_labels.certificate  # type: ignore[attr-defined]
        per_variant: dict[str, tuple[int, int, int, int]] = {}

        def counted(key: str, args: list[str]) -> tuple[float, float]:
            card.clear_counters()  # type: ignore[attr-defined]
            began = time.monotonic()  # the card stamps its log with the same system clock
            measured = timed_run(args, env)
            status = card.status()  # type: ignore[attr-defined]
            apdus = sum(1 for line in card.apdu_log() if float(line.split()[0]) >= began)  # type: ignore[attr-defined]
            v, s, a, n = per_variant.get(key, (0, 0, 0, 0))
            per_variant[key] = (v + status["verify_attempts"], s + sum(status["signatures"].values()), a + apdus, n + 1)
            return measured

        ours_name = f"YubiKey {slot} {name}: credential-process"
        floor_name = f"YubiKey {slot} {name}: floor.py"
        samples = alternate({
            floor_name: lambda: counted(floor_name, [*floor_args, "pkcs11", module,
                                                     card.token_label(module), label]),  # type: ignore[attr-defined]
            ours_name: lambda: counted(ours_name, [*OURS, "--certificate", uri, *emu.args]),  # type: ignore[attr-defined]
        }, runs, warmup)
        from bench.common import rows_from_samples

        pair_rows = rows_from_samples("virtual YubiKey (ykcs11, latency added)", samples,
                                      {ours_name: (floor_name, 1.3)})
        for row in pair_rows:
            verify, signatures, apdus, count = per_variant[row.name]
            row.extra.update(verify_per_credential=verify / count, general_authenticate_per_credential=signatures / count,
                             apdus_per_credential=apdus / count)
            if row.name == ours_name:  # one VERIFY, one signature, and no more commands than the floor
                floor_apdus = per_variant[floor_name][2] / per_variant[floor_name][3]
                row.extra["card_ops_target_met"] = ((verify / count, signatures / count) == (1.0, 1.0)
                                                    and apdus / count <= floor_apdus)
        rows += pair_rows
    return rows
