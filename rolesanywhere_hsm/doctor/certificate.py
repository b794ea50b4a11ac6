"""What the service asks of the certificate: algorithm, the leaf rules (the emulator's, written
once), validity, and the chain: order, length and a path to the trust anchor's CA."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rolesanywhere_hsm.doctor.checks import (
    certificate_on_token,
    EXPIRY_WARNING,
    FAIL,
    PASS,
    SKIP,
    WARN,
    Check,
    Run,
    from_error,
)
from rolesanywhere_hsm.errors import CertificateError
from rolesanywhere_hsm.redact import redact

__all__ = ["algorithm_check", "certificate_checks", "chain_checks", "chain_order_problems",
           "validity_check"]


_LEAF_FIXES = {
    "version": "Issue an X.509 v3 certificate.",
    "extensions": "Issue a certificate with well-formed extensions.",
    "ca": "Use the workload's end-entity certificate, not a CA certificate.",
    "key-usage": "Issue the certificate with keyUsage digitalSignature (or without keyUsage).",
    "weak-hash": "Have the CA sign the certificate with SHA-256 or stronger.",
    "subject": "Issue the certificate with a subject (e.g. CN=workload).",
}
_CURVES = {"secp256r1": PASS, "secp384r1": PASS, "secp521r1": WARN}


def algorithm_check(info: Any) -> Check:
    """PURE: the key type and size the service signs with (docs/protocol.md, "Signing")."""
    if info.key_type == "RSA":
        if info.key_bits < 2048:
            return Check("algorithm", FAIL, f"RSA {info.key_bits} bits is too small",
                         "Use an RSA key of 2048 bits or more, or EC P-256.")
        status = PASS if info.key_bits in (2048, 3072, 4096) else WARN
        return Check("algorithm", status, f"RSA {info.key_bits} bits: {info.algorithm}",
                     "" if status == PASS else "AWS documents RSA 2048, 3072 and 4096.")
    if info.key_type == "EC":
        status = _CURVES.get(info.curve or "", FAIL)
        fix = {PASS: "", WARN: "P-521 is not documented by AWS; P-256 or P-384 is safe.",
               FAIL: "Use EC P-256 or P-384."}[status]
        return Check("algorithm", status, f"EC {info.curve}: "
                     f"{info.algorithm if status != FAIL else 'not accepted'}", fix)
    return Check("algorithm", FAIL, f"{info.key_type} keys are not accepted by Roles Anywhere",
                 "Use an RSA (2048 bits or more) or an EC P-256/P-384 key.")


def validity_check(not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime) -> Check:
    """PURE: inside the validity (fail outside), and more than 30 days left (else warn)."""
    span = f"{not_before:%Y-%m-%d %H:%M}Z .. {not_after:%Y-%m-%d %H:%M}Z"
    if now < not_before:
        return Check("validity", FAIL, f"not valid yet ({span})",
                     "Check the local clock, or wait until the certificate is valid.")
    if now > not_after:
        return Check("validity", FAIL, f"expired on {not_after:%Y-%m-%d %H:%M}Z ({span})",
                     "Renew the certificate (a new one for the same key works) and store it "
                     "where --certificate points.")
    left = not_after - now
    if left < EXPIRY_WARNING:
        return Check("validity", WARN, f"expires in {left.days} days, on {not_after:%Y-%m-%d}",
                     "Renew the certificate before it expires.")
    return Check("validity", PASS, f"valid until {not_after:%Y-%m-%d} ({left.days} days left)")


def certificate_checks(run: Run) -> None:
    from cryptography import x509

    from rolesanywhere_hsm import x509 as _x509
    from rolesanywhere_hsm.emulator.trust import leaf_problems

    if run.pending_certificate_error is not None and run.certificate is None and not any(
            c.name == "certificate" for c in run.checks):
        run.add(from_error("certificate", run.pending_certificate_error))
    if run.certificate is None:
        for name in ("algorithm", "leaf", "validity"):
            run.add(Check(name, SKIP, "not checked: certificate did not pass"))
        return
    try:
        info = _x509.certificate_info(run.certificate)
        leaf = x509.load_der_x509_certificate(run.certificate)
    except (CertificateError, ValueError) as exc:
        run.add(Check("algorithm", FAIL, f"the certificate does not parse: {exc}",
                      "Check that it is an X.509 certificate."))
        return
    run.add(algorithm_check(info))
    now = run.options.clock()
    problems = [(rule, detail) for rule, detail in leaf_problems(leaf, now) if rule != "validity"]
    if problems:
        run.add(Check("leaf", FAIL, "; ".join(d for _, d in problems),
                      " ".join(dict.fromkeys(_LEAF_FIXES[r] for r, _ in problems))))
    else:
        run.add(Check("leaf", PASS, f"{info.subject}: v3, not a CA, keyUsage and signature "
                      "hash accepted"))
    run.add(validity_check(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now))


# ---------------------------------------------------------------------------------------------
# The chain


def chain_order_problems(leaf: bytes, given: list[bytes]) -> tuple[list[str], list[str]]:
    """PURE: (order problems, certificates left out) of a chain as given: each certificate
    must issue the one before it (the leaf first); roots and certificates off the leaf's
    path are left out by rolesanywhere-hsm (the official helper sends them as given)."""
    from rolesanywhere_hsm import x509 as _x509

    if not given:
        return [], []
    infos = [_x509.certificate_info(c) for c in given]
    leaf_info = _x509.certificate_info(leaf)
    order = []
    previous = leaf_info
    for position, info in enumerate(infos, 1):
        if info.subject_raw != previous.issuer_raw:
            order.append(f"certificate {position} ({info.subject or 'empty subject'}) did not "
                         f"issue {previous.subject or 'the certificate before it'}")
            break
        previous = info
    try:
        on_path = set(_x509.order_chain(leaf, given))
    except CertificateError:
        on_path = set(given)
    left_out = [i.subject or "(empty subject)" for c, i in zip(given, infos) if c not in on_path]
    return order, left_out


def chain_checks(run: Run) -> None:
    from rolesanywhere_hsm import x509 as _x509

    if run.certificate is None:
        for name in ("chain-order", "chain-length", "chain-path"):
            run.add(Check(name, SKIP, "not checked: certificate did not pass"))
        return
    given = list(run.given_chain)
    try:
        if run.options.signer.intermediates:
            given += _x509.load_certificates(run.options.signer.intermediates)
    except CertificateError as exc:
        run.add(from_error("chain-order", exc))
        return
    on_token = certificate_on_token(run.options.signer)
    from_token = on_token and not given and run.options.signer.token_chain
    if run.signer is None and from_token and run.located_chain is None:
        reason = "not checked: the chain comes from the token's CA certificates and key did not pass"
        for name in ("chain-order", "chain-length", "chain-path"):
            run.add(Check(name, SKIP, reason))
        return
    if run.chain_findings:  # locate could not build the chain: its finding is the line
        run.add(Check("chain-order", SKIP, "not checked: too many intermediates"))
        run.add(from_error("chain-length", run.chain_findings[0].error))
        run.add(Check("chain-path", SKIP, "not checked: chain-length did not pass"))
        return
    if run.signer is not None or run.located_chain is not None:
        sent = list(run.signer.chain if run.signer is not None else run.located_chain or ())
        origin = "from --intermediates" if given else (
            "from the token's CA certificates" if sent else "none")
    else:  # no key located (a PKCS#12 bundle unopened, a selection that failed)
        try:
            sent = list(_x509.order_chain(run.certificate, given)) if given else []
        except CertificateError as exc:
            run.add(Check("chain-order", SKIP, "not checked: too many intermediates"))
            run.add(from_error("chain-length", exc))
            run.add(Check("chain-path", SKIP, "not checked: chain-length did not pass"))
            return
        origin = "from --intermediates" if given else "none"
    order, left_out = chain_order_problems(run.certificate, given)
    if order:
        run.add(Check("chain-order", WARN, "the intermediates are out of order: " + order[0],
                      "Put the leaf's issuer first, then its issuer, and so on. rolesanywhere-hsm "
                      "sends them in order anyway; the official helper sends them as given."))
    elif left_out:
        run.add(Check("chain-order", WARN, "not on the leaf's path, left out: " + "; ".join(left_out),
                      "Remove them from the bundle (a root is already in the trust anchor)."))
    elif not sent:
        run.add(Check("chain-order", PASS, "no intermediates sent (enough when the trust anchor's "
                      "CA issued the leaf)"))
    else:
        run.add(Check("chain-order", PASS, f"{len(sent)} intermediate(s) {origin}, nearest first"))
    if len(sent) > _x509.MAX_CHAIN:
        run.add(Check("chain-length", FAIL, f"{len(sent)} intermediates; the service takes at "
                      f"most {_x509.MAX_CHAIN}", "Register an intermediate CA as the trust anchor "
                      "to shorten the chain."))
    else:
        run.add(Check("chain-length", PASS, f"{len(sent)} of at most {_x509.MAX_CHAIN}"))
    run.add(_path_check(run.certificate, sent, run.options.trust_anchor_ca, run.options.clock(),
                        known=given))


def path_fix(missing: str, missing_is_root: bool | None) -> str:
    """PURE: what to do when no path reaches the trust anchor and the chain stops at an issuer
    named `missing`. A root CA (self-signed) is never sent (the service has it in the trust
    anchor, or not at all): proposing to send one that is already on the token or in the
    bundle sends the user in a circle. `missing_is_root` None: not known here (a chain from
    the token, whose CA certificates doctor does not list)."""
    anchor = "check that --trust-anchor-ca is the CA registered in the trust anchor"
    if missing_is_root:
        return (f"{missing!r} is a root CA: sending it does not help; the trust anchor must be "
                f"that CA (or one of its intermediates): {anchor}.")
    if missing_is_root is None:
        return (f"If {missing!r} is an intermediate CA, send it with --intermediates (or store it "
                f"on the token); if it is the root CA (perhaps already on the token), sending it "
                f"does not help: {anchor}.")
    return (f"Send the intermediate CA {missing!r} with --intermediates (or store it on the "
            f"token), or {anchor}.")


def _path_check(leaf_der: bytes, chain: list[bytes], anchor_file: str | None,
                now: dt.datetime, *, known: list[bytes] | None = None) -> Check:
    """A PKIX path from the leaf through `chain` to a certificate of the anchor's CA file, by
    the emulator's rules (every signature checked, CA flags, validity, path length)."""
    if anchor_file is None:
        return Check("chain-path", SKIP, "no --trust-anchor-ca given",
                     "Pass --trust-anchor-ca with the CA certificate registered in the trust "
                     "anchor to check the path to it.")
    from cryptography import x509

    from rolesanywhere_hsm import x509 as _x509
    from rolesanywhere_hsm.emulator.rejections import Rejection
    from rolesanywhere_hsm.emulator.resources import TrustAnchor
    from rolesanywhere_hsm.emulator.trust import build_path

    try:
        anchors = [x509.load_der_x509_certificate(c) for c in _x509.load_certificates(anchor_file)]
    except CertificateError as exc:
        return from_error("chain-path", exc)
    leaf = x509.load_der_x509_certificate(leaf_der)
    intermediates = [x509.load_der_x509_certificate(c) for c in chain]
    anchor = TrustAnchor(arn=f"the CA in {redact(anchor_file)}", certificates=anchors)
    try:
        path = build_path(leaf, intermediates, anchor, now)
    except Rejection as exc:
        top = intermediates[-1] if intermediates else leaf
        missing = top.issuer.rfc4514_string()
        issuers = [c for c in (x509.load_der_x509_certificate(d) for d in known or [])
                   if c.subject == top.issuer]
        is_root = True if any(c.issuer == c.subject for c in issuers) else (
            False if issuers or known else None)
        return Check("chain-path", FAIL, f"no path to the trust anchor: {exc.detail}",
                     path_fix(missing, is_root))
    names = " -> ".join(c.subject.rfc4514_string() or "(empty)" for c in path)
    return Check("chain-path", PASS, f"path: {names}")
