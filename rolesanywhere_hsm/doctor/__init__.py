"""`doctor`: check each link from the key to a CreateSession, before AWS refuses it.

The checks are data: `run_doctor()` returns a list of `Check` (name, status, message, fix),
made by small functions, one per link, in the order a request needs them:

    module, token, certificate, pin, key, signature      where the key lives and whether it signs
    algorithm, leaf, validity                            what the service asks of the leaf
    chain-order, chain-length, chain-path                the intermediates, and a path to the CA
    arns, region                                         the three ARNs and where to sign
    proxy, endpoint, clock                               the way to the endpoint and its time
    call                                                 with `call=True`, a real CreateSession

A check whose inputs failed is reported as "skip" (with what it waited for), never run on
bad input. A PIN is presented at most once: the `pin` check only tells where the PIN will
come from (reading a file or a variable, never running a command or prompting), the one
login happens in the `key` check, and the same open key makes the test signature and the
CreateSession. The leaf and path rules are the emulator's (`emulator.trust`), which model
the service's (docs/protocol.md, "What the service checks"): written once.

Modules: `checks` (Check, options, the run state), `key` (module to signature),
`certificate` (leaf and chain), `network` (ARNs to CreateSession). The CLI
(`cli/doctor.py`) renders the list for a person or as JSON; nothing here prints.
"""

from __future__ import annotations

import contextlib

from rolesanywhere_hsm.doctor.certificate import (
    algorithm_check,
    certificate_checks,
    chain_checks,
    chain_order_problems,
    validity_check,
)
from rolesanywhere_hsm.doctor.checks import (
    CLOCK_SKEW_LIMIT,
    EXIT_CHECK_FAILED,
    EXPIRY_WARNING,
    FAIL,
    PASS,
    SKIP,
    WARN,
    Check,
    DoctorOptions,
    Run,
    failed,
)
from rolesanywhere_hsm.doctor.key import (
    contained,
    file_certificate_check,
    key_check,
    signature_check,
    token_checks,
    token_flags,
)
from rolesanywhere_hsm.doctor.network import (
    arn_checks,
    call_check,
    clock_check,
    endpoint_region,
    network_checks,
    proxy_for,
)
from rolesanywhere_hsm.signers.base import signer_kind

__all__ = [
    "CLOCK_SKEW_LIMIT",
    "EXIT_CHECK_FAILED",
    "EXPIRY_WARNING",
    "FAIL",
    "PASS",
    "SKIP",
    "WARN",
    "Check",
    "DoctorOptions",
    "algorithm_check",
    "chain_order_problems",
    "clock_check",
    "endpoint_region",
    "failed",
    "proxy_for",
    "run_doctor",
    "token_flags",
    "validity_check",
]


def run_doctor(options: DoctorOptions) -> list[Check]:
    """Every check, in order; never raises for what it checks (a failure is a Check)."""
    run = Run(options)
    with contextlib.ExitStack() as cleanup:
        if signer_kind(options.signer) == "pkcs11":
            contained(run, lambda: (token_checks(run, cleanup), key_check(run, cleanup),
                                     signature_check(run)))
        else:
            for name in ("module", "token"):
                run.add(Check(name, SKIP, "the key is a file: no PKCS#11 module or token"))
            file_certificate_check(run)
            run.add(Check("pin", SKIP, "the key is a file: no PIN (a key password is asked "
                          "for when the key is encrypted)"))
            key_check(run, cleanup)
            signature_check(run)
        if options.attestation_roots is not None:
            from rolesanywhere_hsm.doctor.attestation import attestation_check

            attestation_check(run)
        certificate_checks(run)
        chain_checks(run)
        arn_checks(run)
        network_checks(run)
        call_check(run)
    return run.checks
