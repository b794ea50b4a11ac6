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

The CLI (`cli/doctor.py`) renders the list for a person or as JSON; nothing here prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rolesanywhere_hsm.errors import (
    CertificateError,
    PinError,
    PinUnavailableError,
    RolesAnywhereError,
    ServiceError,
)
from rolesanywhere_hsm.redact import redact
from rolesanywhere_hsm.signers.base import SignerConfig, signer_kind

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
    "chain_order_problems",
    "clock_check",
    "failed",
    "run_doctor",
]

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
# The service refuses a request whose X-Amz-Date is further than this from its clock, and
# says only "Invalid signature" (docs/protocol.md).
CLOCK_SKEW_LIMIT = dt.timedelta(minutes=5)
CLOCK_SKEW_WARNING = dt.timedelta(minutes=1)
EXPIRY_WARNING = dt.timedelta(days=30)
# `doctor` exits with this when at least one check failed (docs/cli.md, "doctor").
EXIT_CHECK_FAILED = 8
# Bounded: doctor must end in bounded time even when the endpoint does not answer.
PROBE_TIMEOUT = 10.0
TEST_MESSAGE = b"rolesanywhere-hsm doctor: test signature"
NO_PIN_SOURCE = "no PIN source and no terminal to ask on"

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class Check:
    """One link's verdict. `fix` says what to do when the status is warn or fail."""

    name: str
    status: str
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


@dataclass(frozen=True)
class DoctorOptions:
    """What credential-process would be given, plus the trust anchor's CA and `call`."""

    signer: SignerConfig
    trust_anchor_arn: str
    profile_arn: str
    role_arn: str
    region: str | None = None
    endpoint: str | None = None
    session_duration: int = 3600
    role_session_name: str | None = None
    verify: bool | str = True
    trust_env: bool = True
    trust_anchor_ca: str | None = None
    call: bool = False
    clock: Clock = _utcnow
    environ: Mapping[str, str] | None = None
    contain_module_noise: bool = True  # off with --debug: the module's stderr is shown


def _from_error(name: str, exc: RolesAnywhereError) -> Check:
    return Check(name, FAIL, exc.message, exc.hint or "")


@dataclass
class _Run:
    """The state the checks hand on: what passed, and the objects later checks need."""

    options: DoctorOptions
    checks: list[Check] = field(default_factory=list)
    certificate: bytes | None = None  # the leaf, DER
    given_chain: list[bytes] = field(default_factory=list)  # as the user gave it, in order
    signer: Any = None
    token: Any = None  # TokenSnapshot of the token holding the certificate or key
    module_path: str | None = None
    endpoint: str | None = None
    arns: Any = None
    pending_certificate_error: CertificateError | None = None

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self.options.environ is None else self.options.environ

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def ok(self, *names: str) -> bool:
        """Whether every named check ran and passed (a warning counts as passed)."""
        status = {c.name: c.status for c in self.checks}
        return all(status.get(n) in (PASS, WARN) for n in names)

    def skip_unless(self, name: str, *needs: str) -> bool:
        """Add a skip for `name` unless every check in `needs` passed; True when skipped."""
        missing = [n for n in needs if not self.ok(n)]
        if missing:
            self.add(Check(name, SKIP, f"not checked: {', '.join(missing)} did not pass"))
            return True
        return False


def run_doctor(options: DoctorOptions) -> list[Check]:
    """Every check, in order; never raises for what it checks (a failure is a Check)."""
    run = _Run(options)
    with contextlib.ExitStack() as cleanup:
        if signer_kind(options.signer) == "pkcs11":
            _contained(run, lambda: (_token_checks(run, cleanup), _key_check(run, cleanup),
                                     _signature_check(run)))
        else:
            for name in ("module", "token"):
                run.add(Check(name, SKIP, "the key is a file: no PKCS#11 module or token"))
            _file_certificate_check(run)
            run.add(Check("pin", SKIP, "the key is a file: no PIN (a key password is asked "
                          "for when the key is encrypted)"))
            _key_check(run, cleanup)
            _signature_check(run)
        _certificate_checks(run)
        _chain_checks(run)
        _arn_checks(run)
        _network_checks(run)
        _call_check(run)
    return run.checks


# ---------------------------------------------------------------------------------------------
# Where the key lives


def _contained(run: _Run, steps: Callable[[], object]) -> None:
    """Run the token steps with the module's stderr captured (unless `contain_module_noise` is
    off, as with --debug), and tell about what it printed in the module check: p11-kit-proxy
    loads every registered module, and tpm2-pkcs11 on a machine without a TPM prints a dozen
    ERROR lines that have nothing to do with the user's token."""
    if not run.options.contain_module_noise:
        steps()
        return
    from rolesanywhere_hsm.signers.pkcs11.modules import captured_stderr

    with captured_stderr() as noise:
        steps()
    module = next((c for c in run.checks if c.name == "module"), None)
    if not noise or module is None or module.status != PASS:
        return
    first = redact(noise[0].strip())[:160]
    run.checks[run.checks.index(module)] = Check(
        "module", WARN, f"{module.message}; it printed {len(noise)} line(s) on stderr (hidden), "
        f"the first: {first!r}",
        "Harmless to this run, but another module is speaking: name yours with module-path= in "
        "the URI (or --pkcs11-lib / RAH_PKCS11_MODULE) so that p11-kit-proxy does not load every "
        "registered module; rerun with --debug to see the lines.")


def _token_checks(run: _Run, cleanup: contextlib.ExitStack) -> None:
    """module, token, certificate (public objects, no login) and pin (no login either)."""
    from rolesanywhere_hsm.signers.pkcs11.inventory import (
        check_library,
        parse_if_uri,
        read_certificates,
        read_tokens,
    )
    from rolesanywhere_hsm.signers.pkcs11.modules import (
        acquire_module,
        release_module,
        resolve_module_path,
    )
    from rolesanywhere_hsm.signers.pkcs11.selection import matching_tokens, select_certificate

    config = run.options.signer
    try:
        cert_uri = parse_if_uri(config.certificate, "--certificate")
        key_uri = parse_if_uri(config.private_key, "--private-key") if config.private_key else None
        module_path = resolve_module_path((key_uri, cert_uri), config.pkcs11_lib, run.options.environ)
        lib = acquire_module(module_path)
    except RolesAnywhereError as exc:
        run.add(_from_error("module", exc))
        for name in ("token", "certificate", "pin"):
            run.add(Check(name, SKIP, "not checked: module did not pass"))
        return
    cleanup.callback(release_module, module_path)
    run.module_path = module_path
    run.add(Check("module", PASS, f"{module_path} loads ({lib.library_description.rstrip()}, "
                  f"{lib.manufacturer_id.rstrip()})"))
    try:
        for uri in (cert_uri, key_uri):
            if uri is not None:
                check_library(lib, uri, module_path)
        tokens = read_tokens(lib)
    except RolesAnywhereError as exc:
        run.add(_from_error("token", exc))
        tokens = []
    else:
        run.add(_token_check([t.snapshot for t in tokens], cert_uri, key_uri, module_path))
    if not run.ok("token"):
        run.add(Check("certificate", SKIP, "not checked: token did not pass"))
        run.add(Check("pin", SKIP, "not checked: token did not pass"))
        return
    snapshots = [t.snapshot for t in tokens]
    if cert_uri is not None:
        try:
            searched = [t for t in tokens if t.snapshot in matching_tokens(snapshots, cert_uri, key_uri)]
            chosen = select_certificate(snapshots, read_certificates(searched), cert_uri, module_path,
                                        key_uri=key_uri)
        except RolesAnywhereError as exc:
            run.add(_from_error("certificate", exc))
        else:
            run.certificate, run.token = chosen.value, chosen.token
            run.add(Check("certificate", PASS, f"one certificate matches: {chosen.describe()} on "
                          f"{chosen.token.describe()}"))
    else:
        _file_certificate_check(run)
        matching = matching_tokens(snapshots, key_uri)
        run.token = matching[0] if len(matching) == 1 else None
    main_uri = key_uri or cert_uri
    run.add(_pin_check(run.token, main_uri, cert_uri, run.environ))


def token_flags(flags: int) -> list[str]:
    """The CK_TOKEN_INFO PIN flags worth telling a person, in words."""
    from rolesanywhere_hsm.signers.pkcs11 import selection as s

    names = ((s.FLAG_USER_PIN_LOCKED, "user PIN locked"),
             (s.FLAG_USER_PIN_FINAL_TRY, "user PIN: final try"),
             (s.FLAG_USER_PIN_COUNT_LOW, "user PIN: wrong tries counted"),
             (s.FLAG_USER_PIN_TO_BE_CHANGED, "user PIN to be changed"),
             (s.FLAG_PROTECTED_AUTHENTICATION_PATH, "PIN pad"))
    found = [text for flag, text in names if flags & flag]
    if not flags & s.FLAG_LOGIN_REQUIRED:
        found.append("no login required")
    return found


def _token_check(snapshots: list[Any], cert_uri: Any, key_uri: Any, module_path: str) -> Check:
    """PURE over snapshots: the token(s) the URIs name are there, and their PIN is usable."""
    from rolesanywhere_hsm.signers.pkcs11 import selection as s

    if not snapshots:
        return Check("token", FAIL, f"the module {module_path} shows no initialised token",
                     "Insert the token (SoftHSM: check SOFTHSM2_CONF and its token directory; "
                     "a smart card or YubiKey: check that pcscd runs).")
    matching = s.matching_tokens(snapshots, cert_uri, key_uri)
    if not matching:
        wanted = "; ".join(f"{k}={v!r}" for u in (cert_uri, key_uri) if u is not None
                           for k, v in u.token_criteria().items())
        present = "; ".join(t.describe() for t in snapshots)
        return Check("token", FAIL, f"no token matches {wanted or '(any token)'}; the module "
                     f"has: {present}", "Fix token=, serial= or slot-id= in the URI "
                     "(`rolesanywhere-hsm tokens` prints a URI for each certificate), or "
                     "insert the token.")
    described = "; ".join(
        t.describe() + (f" [{', '.join(token_flags(t.flags))}]" if token_flags(t.flags) else "")
        for t in matching)
    if all(t.has(s.FLAG_USER_PIN_LOCKED) for t in matching):
        return Check("token", FAIL, f"the user PIN is locked: {described}",
                     "Unblock it with the PUK or the security officer PIN (YubiKey: `ykman piv "
                     "access unblock-pin`); no PIN was tried.")
    if any(t.has(s.FLAG_USER_PIN_FINAL_TRY) or t.has(s.FLAG_USER_PIN_COUNT_LOW) for t in matching):
        return Check("token", WARN, f"present: {described}",
                     "A wrong PIN was entered before; check the PIN source before the next "
                     "login: the token locks after its last try.")
    if any(t.has(s.FLAG_USER_PIN_TO_BE_CHANGED) for t in matching):
        return Check("token", WARN, f"present: {described}",
                     "Change the user PIN (e.g. `pkcs11-tool --change-pin`); some tokens refuse "
                     "to sign until it is changed.")
    return Check("token", PASS, f"present: {described}")


def _pin_check(token: Any, main_uri: Any, cert_uri: Any, environ: Mapping[str, str]) -> Check:
    """Where the PIN will come from, without logging in, running a command or prompting.
    A file or a variable is read (and dropped) to see that it holds a PIN."""
    from rolesanywhere_hsm.signers.pin import PIN_ENV_VAR, TTY_PATH, read_pin_source
    from rolesanywhere_hsm.signers.pkcs11 import selection as s

    if token is not None and not token.has(s.FLAG_LOGIN_REQUIRED):
        return Check("pin", PASS, f"token {token.label!r} needs no login: no PIN is asked")
    pin_value = main_uri.pin_value if main_uri.pin_value is not None else (
        cert_uri.pin_value if cert_uri else None)
    pin_source = main_uri.pin_source if main_uri.pin_source is not None else (
        cert_uri.pin_source if cert_uri else None)
    empty = Check("pin", FAIL, "", "Put the PIN in the source; an empty PIN is never sent.")
    if pin_value is not None:
        if not pin_value:
            return Check("pin", FAIL, "pin-value in the URI is empty", empty.fix)
        return Check("pin", WARN, "from pin-value in the URI",
                     "Anyone who can list processes sees the command line: use "
                     "pin-source=file:/path (mode 0600) or RAH_PKCS11_PIN instead.")
    if pin_source is not None:
        shown = redact(f"pin-source={pin_source}")
        if pin_source.startswith("cmd:"):
            return Check("pin", PASS, f"from {shown}: the command runs once, at the login")
        try:
            value = read_pin_source(pin_source, environ)
        except PinUnavailableError as exc:
            return _from_error("pin", exc)
        if not value:
            return Check("pin", FAIL, f"{shown} gives an empty PIN", empty.fix)
        return Check("pin", PASS, f"from {shown}")
    if PIN_ENV_VAR in environ:
        if not environ[PIN_ENV_VAR]:
            return Check("pin", FAIL, f"{PIN_ENV_VAR} is set but empty", empty.fix)
        return Check("pin", PASS, f"from {PIN_ENV_VAR}")
    if token is not None and token.has(s.FLAG_PROTECTED_AUTHENTICATION_PATH):
        return Check("pin", PASS, "entered on the token's PIN pad")
    try:
        os.close(os.open(TTY_PATH, os.O_RDWR | os.O_NOCTTY))
    except OSError:
        # Not final: a key that needs no login (a YubiKey's 9e slot through OpenSC) is used
        # without a PIN; the key check settles it.
        return Check("pin", FAIL, NO_PIN_SOURCE,
                     f"Add pin-source=file:/path to the URI or set {PIN_ENV_VAR}; an AWS SDK "
                     "runs credential-process without a terminal.")
    return Check("pin", WARN, "asked on the terminal",
                 f"An AWS SDK runs credential-process without a terminal: add "
                 f"pin-source=file:/path to the URI or set {PIN_ENV_VAR}.")


def _file_certificate_check(run: _Run) -> None:
    from rolesanywhere_hsm import x509 as _x509

    try:
        found = _x509.load_certificates(run.options.signer.certificate)
    except CertificateError as exc:
        run.pending_certificate_error = exc  # a PKCS#12 file: the key step may still read it
        return
    run.certificate, run.given_chain = found[0], list(found[1:])
    extra = f" and {len(found) - 1} more (taken as intermediates)" if len(found) > 1 else ""
    run.add(Check("certificate", PASS, f"read from {redact(run.options.signer.certificate)}{extra}"))


def _key_check(run: _Run, cleanup: contextlib.ExitStack) -> None:
    """Open the key as credential-process would: the one login, the pairing checks."""
    from rolesanywhere_hsm.signers.base import load_signer

    config = run.options.signer
    is_token = signer_kind(config) == "pkcs11"
    needs = ("module", "token", "pin") if is_token else ()
    if is_token and run.options.signer.certificate[:7].lower() == "pkcs11:":
        needs += ("certificate",)
    pin_check = next((c for c in run.checks if c.name == "pin"), None)
    no_pin_source = pin_check is not None and pin_check.message == NO_PIN_SOURCE
    if no_pin_source:
        needs = tuple(n for n in needs if n != "pin")
    if run.skip_unless("key", *needs):
        return
    try:
        signer = load_signer(config)
    except PinUnavailableError as exc:
        if no_pin_source:
            run.add(Check("key", SKIP, "not checked: pin did not pass"))
        else:
            run.add(_from_error("key", exc))
        return
    except PinError as exc:
        run.add(Check("key", FAIL, f"login refused: {exc.message}", exc.hint or ""))
        return
    except RolesAnywhereError as exc:
        if run.pending_certificate_error is not None:
            run.add(_from_error("certificate", run.pending_certificate_error))
        run.add(_from_error("key", exc))
        return
    cleanup.callback(signer.close)
    run.signer = signer
    if pin_check is not None and getattr(signer, "login_count", None) == 0:
        run.checks[run.checks.index(pin_check)] = Check(
            "pin", PASS, "no PIN needed: the token lets this key sign without a login")
    if run.pending_certificate_error is not None:
        run.certificate = signer.certificate
        run.add(Check("certificate", PASS, f"read from {redact(config.certificate)} with its key"))
    detail = ""
    if getattr(signer, "spec", None) is not None:
        detail = f" (token {signer.token_label!r}, mechanism {signer.spec.mechanism_name})"
    run.add(Check("key", PASS, f"found and it belongs to the certificate{detail}"))


def _signature_check(run: _Run) -> None:
    """One real signature, verified with the certificate's public key."""
    if run.skip_unless("signature", "key"):
        return
    signer = run.signer
    try:
        signature = signer.sign(TEST_MESSAGE)
    except RolesAnywhereError as exc:
        run.add(_from_error("signature", exc))
        return
    if not verify_signature(signer.certificate, signer.algorithm, TEST_MESSAGE, signature):
        run.add(Check("signature", FAIL, "the key signed, but the signature does not verify with "
                      "the certificate's public key", "Select the key that belongs to the "
                      "certificate (same id=), or the certificate of this key."))
        return
    run.add(Check("signature", PASS, f"one {signer.algorithm} signature made and verified with the "
                  "certificate's public key"))


def verify_signature(certificate: bytes, algorithm: str, message: bytes, signature: bytes) -> bool:
    """Whether `signature` over `message` verifies with the certificate's key as the service
    checks it (SHA-256; PKCS#1 v1.5 for RSA, DER ECDSA for EC)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = x509.load_der_x509_certificate(certificate).public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and "RSA" in algorithm:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey) and "ECDSA" in algorithm:
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# The leaf

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


def _certificate_checks(run: _Run) -> None:
    from cryptography import x509

    from rolesanywhere_hsm import x509 as _x509
    from rolesanywhere_hsm.emulator.trust import leaf_problems

    if run.pending_certificate_error is not None and run.certificate is None and not any(
            c.name == "certificate" for c in run.checks):
        run.add(_from_error("certificate", run.pending_certificate_error))
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


def _chain_checks(run: _Run) -> None:
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
        run.add(_from_error("chain-order", exc))
        return
    on_token = run.options.signer.certificate[:7].lower() == "pkcs11:"
    if run.signer is None and on_token and not given and run.options.signer.token_chain:
        reason = "not checked: the chain comes from the token's CA certificates and key did not pass"
        for name in ("chain-order", "chain-length", "chain-path"):
            run.add(Check(name, SKIP, reason))
        return
    if run.signer is not None:
        sent = list(run.signer.chain)
        origin = "from --intermediates" if given else (
            "from the token's CA certificates" if sent else "none")
    else:
        try:
            sent = list(_x509.order_chain(run.certificate, given)) if given else []
        except CertificateError as exc:
            run.add(Check("chain-order", SKIP, "not checked: too many intermediates"))
            run.add(_from_error("chain-length", exc))
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
    run.add(_path_check(run.certificate, sent, run.options.trust_anchor_ca, run.options.clock()))


def _path_check(leaf_der: bytes, chain: list[bytes], anchor_file: str | None,
                now: dt.datetime) -> Check:
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
        return _from_error("chain-path", exc)
    leaf = x509.load_der_x509_certificate(leaf_der)
    intermediates = [x509.load_der_x509_certificate(c) for c in chain]
    anchor = TrustAnchor(arn=f"the CA in {redact(anchor_file)}", certificates=anchors)
    try:
        path = build_path(leaf, intermediates, anchor, now)
    except Rejection as exc:
        top = intermediates[-1] if intermediates else leaf
        missing = top.issuer.rfc4514_string()
        return Check("chain-path", FAIL, f"no path to the trust anchor: {exc.detail}",
                     f"Send the intermediate CA {missing!r} with --intermediates (or store it "
                     "on the token), or check that --trust-anchor-ca is the CA registered in the "
                     "trust anchor.")
    names = " -> ".join(c.subject.rfc4514_string() or "(empty)" for c in path)
    return Check("chain-path", PASS, f"path: {names}")


# ---------------------------------------------------------------------------------------------
# ARNs, the endpoint, the clock, the proxy


def _arn_checks(run: _Run) -> None:
    from rolesanywhere_hsm.arn import validate_session_arns
    from rolesanywhere_hsm.endpoints import resolve_endpoint

    options = run.options
    try:
        run.arns = validate_session_arns(options.trust_anchor_arn, options.profile_arn, options.role_arn)
    except RolesAnywhereError as exc:
        run.add(_from_error("arns", exc))
        run.add(Check("region", SKIP, "not checked: arns did not pass"))
        return
    run.add(Check("arns", PASS, f"trust anchor, profile and role in {run.arns.partition}, "
                  f"{run.arns.region}, account {run.arns.trust_anchor.account}"))
    region = run.arns.region
    if options.region and options.region != region:
        run.add(Check("region", FAIL, f"--region {options.region} but the trust anchor is in {region}",
                      "Drop --region (the trust anchor's region is used) or make it match."))
        return
    try:
        run.endpoint = resolve_endpoint(region, options.endpoint, options.environ)
    except RolesAnywhereError as exc:
        run.add(_from_error("region", exc))
        return
    host_region = endpoint_region(run.endpoint)
    if host_region is not None and host_region != region:
        run.add(Check("region", FAIL, f"the endpoint {run.endpoint} is in {host_region} but the "
                      f"trust anchor is in {region}", "Use the endpoint of the trust anchor's "
                      "region (or drop --endpoint / AWS_ENDPOINT_URL*)."))
        run.endpoint = None
        return
    run.add(Check("region", PASS, f"signing for {region} at {run.endpoint}"))


def endpoint_region(url: str) -> str | None:
    """PURE: the region in an AWS Roles Anywhere host name, or None (a private endpoint)."""
    import re
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    match = re.fullmatch(r"rolesanywhere(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|api\.aws|"
                         r"api\.amazonwebservices\.com\.cn)", host)
    return match.group(1) if match else None


def proxy_for(url: str, trust_env: bool) -> str | None:
    """The proxy httpx will use for `url` with this environment (HTTPS_PROXY, ALL_PROXY,
    NO_PROXY...), or None for a direct connection. Uses httpx's own rules so that the answer is
    what the client does."""
    if not trust_env:
        return None
    import httpx
    from httpx._utils import URLPattern, get_environment_proxies  # httpx's own matching

    target = httpx.URL(url)
    for pattern, proxy in sorted((URLPattern(k), v) for k, v in get_environment_proxies().items()):
        if pattern.matches(target):
            return proxy
    return None


def _network_checks(run: _Run) -> None:
    options = run.options
    if run.endpoint is None:
        for name in ("proxy", "endpoint", "clock"):
            run.add(Check(name, SKIP, "not checked: region did not pass"))
        return
    try:
        proxy = proxy_for(run.endpoint, options.trust_env)
    except Exception as exc:  # noqa: BLE001 (a malformed variable: say so, go on)
        run.add(Check("proxy", WARN, f"the proxy variables cannot be read: {exc}",
                      "Check HTTPS_PROXY, ALL_PROXY and NO_PROXY."))
    else:
        if proxy is None:
            why = " (--no-proxy)" if not options.trust_env else ""
            run.add(Check("proxy", PASS, f"direct connection to {run.endpoint}{why}"))
        else:
            run.add(Check("proxy", PASS, f"through the proxy {redact(proxy)} (from the "
                          "environment; set NO_PROXY or pass --no-proxy to go direct)"))
    run.add(_endpoint_check(run))
    if not run.ok("endpoint"):
        run.add(Check("clock", SKIP, "not checked: endpoint did not pass"))


def _endpoint_check(run: _Run) -> Check:
    """One GET to the endpoint: reachable, TLS verified, and its Date against our clock."""
    import ssl

    import httpx

    options = run.options
    verify: Any = options.verify
    try:
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        with httpx.Client(verify=verify, trust_env=options.trust_env,
                          timeout=httpx.Timeout(PROBE_TIMEOUT)) as client:
            sent_at = options.clock()
            response = client.get(run.endpoint + "/")
            received_at = options.clock()
    except (OSError, ValueError) as exc:
        return Check("endpoint", FAIL, f"cannot set up HTTPS: {exc}",
                     "Check --ca-bundle / AWS_CA_BUNDLE and the proxy variables.")
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc):
            return Check("endpoint", FAIL, f"TLS verification of {run.endpoint} failed: {exc}",
                         "Pass --ca-bundle (or AWS_CA_BUNDLE) for a private CA, or check the "
                         "proxy (a TLS-inspecting proxy needs its CA in the bundle).")
        return Check("endpoint", FAIL, f"cannot connect to {run.endpoint}: {exc}",
                     "Check the network, the proxy settings and --endpoint.")
    except httpx.HTTPError as exc:
        return Check("endpoint", FAIL, f"{run.endpoint} did not answer: {type(exc).__name__} {exc}",
                     "Check the network, the proxy settings and --endpoint.")
    tls = "TLS not verified (--no-verify-ssl)" if options.verify is False else (
        "TLS verified" if run.endpoint.startswith("https:") else "plain http (loopback)")
    status = WARN if options.verify is False else PASS
    run.add(Check("endpoint", status, f"{run.endpoint} answered HTTP {response.status_code}; {tls}",
                  "Drop --no-verify-ssl: credentials travel over this connection."
                  if status == WARN else ""))
    midpoint = sent_at + (received_at - sent_at) / 2
    return clock_check(response.headers.get("Date"), midpoint, run.endpoint)


def clock_check(date_header: str | None, local: dt.datetime, endpoint: str) -> Check:
    """PURE: the local clock against the endpoint's Date header."""
    from email.utils import parsedate_to_datetime

    if not date_header:
        return Check("clock", WARN, f"{endpoint} sent no Date header: the clock was not compared",
                     "Check that the clock is synchronised (timedatectl, chrony).")
    try:
        remote = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return Check("clock", WARN, f"the Date header {date_header!r} does not parse",
                     "Check that the clock is synchronised (timedatectl, chrony).")
    skew = local - remote
    seconds = abs(skew.total_seconds())
    direction = "ahead of" if skew.total_seconds() > 0 else "behind"
    text = f"the local clock is {seconds:.0f} s {direction} the endpoint's"
    if abs(skew) > CLOCK_SKEW_LIMIT:
        return Check("clock", FAIL, text + f" (more than {CLOCK_SKEW_LIMIT.seconds // 60} minutes: "
                     "the service answers \"Invalid signature\")",
                     "Set the clock right: enable time synchronisation (`timedatectl "
                     "set-ntp true`, chrony) and check the time zone.")
    if abs(skew) > CLOCK_SKEW_WARNING:
        return Check("clock", WARN, text, "Enable time synchronisation before the skew reaches "
                     f"{CLOCK_SKEW_LIMIT.seconds // 60} minutes.")
    return Check("clock", PASS, text)


def _call_check(run: _Run) -> None:
    if not run.options.call:
        run.add(Check("call", SKIP, "no --call: CreateSession was not called"))
        return
    if run.skip_unless("call", "signature", "arns", "region", "endpoint"):
        return
    from rolesanywhere_hsm.client import RetryPolicy, RolesAnywhereClient

    options = run.options
    try:
        with RolesAnywhereClient(run.arns.region, endpoint=run.endpoint, verify=options.verify,
                                 trust_env=options.trust_env, retry=RetryPolicy(attempts=1)) as client:
            credentials = client.create_session(run.signer, run.arns,
                                                duration_seconds=options.session_duration,
                                                role_session_name=options.role_session_name)
    except ServiceError as exc:
        run.add(Check("call", FAIL, exc.message, _service_fix(exc, run.checks)))
        return
    except RolesAnywhereError as exc:
        run.add(_from_error("call", exc))
        return
    expiration = getattr(credentials, "expiration", None)
    until = f", valid until {expiration:%Y-%m-%dT%H:%M:%SZ}" if isinstance(expiration, dt.datetime) else ""
    run.add(Check("call", PASS, f"CreateSession issued credentials (access key "
                  f"{credentials.access_key_id[:4]}...){until}"))


def _service_fix(exc: ServiceError, checks: list[Check]) -> str:
    """The service's vague refusals, pointed at what the checks above found."""
    status = {c.name: c.status for c in checks}
    if "Untrusted signing certificate" in exc.message:
        broken = [n for n in ("leaf", "validity", "chain-length", "chain-path") if status.get(n) == FAIL]
        if broken:
            return f"See the {', '.join(broken)} check(s) above."
        if status.get("chain-path") == SKIP:
            return ("Run with --trust-anchor-ca (the CA registered in the trust anchor) to check the "
                    "path; check also that the trust anchor is the one of this CA and that no "
                    "imported CRL revokes the certificate.")
        return ("The path to --trust-anchor-ca is fine here: check that the trust anchor holds that "
                "CA, is enabled, and that no CRL imported into it revokes the certificate.")
    if "Invalid signature" in exc.message:
        if status.get("clock") == FAIL:
            return "See the clock check above."
        return ("Check the clock (within 5 minutes of the service's) and any proxy that rewrites "
                "signed headers; the key and certificate pair here.")
    return exc.hint or ""
