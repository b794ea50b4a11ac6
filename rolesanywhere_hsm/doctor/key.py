"""Where the key lives: module, token (and its PIN flags), certificate, PIN source, key, and
one real signature. The one login is in the key check; the PIN check only looks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from rolesanywhere_hsm.doctor.checks import (
    certificate_on_token,
    FAIL,
    NO_PIN_SOURCE,
    PASS,
    SKIP,
    TEST_MESSAGE,
    WARN,
    Check,
    Run,
    from_error,
)
from rolesanywhere_hsm.errors import (
    CertificateError,
    PinError,
    PinUnavailableError,
    RolesAnywhereError,
)
from rolesanywhere_hsm.redact import redact
from rolesanywhere_hsm.signers.base import signer_kind

__all__ = ["contained", "file_certificate_check", "findings_check", "key_check", "signature_check", "token_check", "token_checks",
           "token_flags"]


def contained(run: Run, steps: Callable[[], object]) -> None:
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


def token_checks(run: Run, cleanup: contextlib.ExitStack) -> None:
    """module, token, certificate (public objects, no login) and pin (no login either).

    The steps are the first half of opening a token key (`signers.pkcs11.opening`, as
    `locate_pkcs11` takes them), so the same rules and messages apply; doctor only renders
    each step as its line, and goes on to the next line where locate would stop."""
    from rolesanywhere_hsm.errors import CertificateError, SelectionError
    from rolesanywhere_hsm.signers.pkcs11.opening import (
        checked_uris,
        module_tokens,
        open_chosen_module,
        select_token_certificate,
        token_for_key,
    )
    from rolesanywhere_hsm.signers.pkcs11.modules import release_module

    config = run.options.signer
    # what the module prints is doctor's to capture and tell about (`contained`), or to show
    contain = False
    try:  # with --cert-selector and no module named, the module locate's search chooses
        cert_uri, key_uri = checked_uris(config)
        module_path, lib, searched = open_chosen_module(config, cert_uri, key_uri, run.options.environ,
                                                        contain_noise=contain)
    except (SelectionError, CertificateError) as exc:  # only the search: no one certificate
        run.add(Check("module", SKIP, "not checked: none is named and the --cert-selector "
                      "search over every module found no one certificate"))
        run.add(Check("token", SKIP, "not checked: module did not pass"))
        run.add(from_error("certificate", exc))
        run.add(Check("pin", SKIP, "not checked: certificate did not pass"))
        return
    except RolesAnywhereError as exc:
        run.add(from_error("module", exc))
        for name in ("token", "certificate", "pin"):
            run.add(Check(name, SKIP, "not checked: module did not pass"))
        return
    cleanup.callback(release_module, module_path)
    run.module_path = module_path
    run.add(Check("module", PASS, f"{module_path} loads ({lib.library_description.rstrip()}, "
                  f"{lib.manufacturer_id.rstrip()})"
                  f"{', chosen by --cert-selector among every module found' if searched else ''}"))
    try:
        tokens = module_tokens(lib, module_path, (key_uri, cert_uri), contain_noise=contain)
    except RolesAnywhereError as exc:
        run.add(from_error("token", exc))
        tokens = []
    else:
        run.add(token_check([t.snapshot for t in tokens], cert_uri, key_uri, module_path))
    if not run.ok("token"):
        run.add(Check("certificate", SKIP, "not checked: token did not pass"))
        run.add(Check("pin", SKIP, "not checked: token did not pass"))
        return
    if cert_uri is not None:  # the certificate on the token
        try:
            _live, chosen, session, _on_token = select_token_certificate(
                tokens, cert_uri, key_uri, module_path, config)
        except RolesAnywhereError as exc:
            run.add(from_error("certificate", exc))
        else:
            from pkcs11 import PKCS11Error

            with contextlib.suppress(PKCS11Error):  # a public session: nothing to undo
                session.close()
            run.certificate, run.token = chosen.value, chosen.token
            run.add(Check("certificate", PASS, f"one certificate matches: {chosen.describe()} on "
                          f"{chosen.token.describe()}"))
    else:
        file_certificate_check(run)
        run.token = None
        if run.certificate is not None and key_uri is not None:
            with contextlib.suppress(RolesAnywhereError):  # the key check reports it, via locate
                run.token = token_for_key(tokens, key_uri, run.certificate, module_path).snapshot
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


def token_check(snapshots: list[Any], cert_uri: Any, key_uri: Any, module_path: str) -> Check:
    """PURE over snapshots: the token(s) the URIs name are there (`selection.searched_tokens`,
    the rule the certificate is then searched by), and their PIN is usable. A failure
    carries the code the same problem has when credential-process meets it."""
    from rolesanywhere_hsm.errors import PinLockedError
    from rolesanywhere_hsm.signers.pkcs11 import selection as s

    try:  # the selection's own rule and words (no token, none matching, two URIs apart)
        matching = s.searched_tokens(snapshots, module_path, cert_uri, key_uri)
    except RolesAnywhereError as exc:
        return Check("token", FAIL, exc.message, exc.hint or "", code=exc.code)
    described = "; ".join(
        t.describe() + (f" [{', '.join(token_flags(t.flags))}]" if token_flags(t.flags) else "")
        for t in matching)
    if all(t.has(s.FLAG_USER_PIN_LOCKED) for t in matching):
        return Check("token", FAIL, f"the user PIN is locked: {described}",
                     "Unblock it with the PUK or the security officer PIN (YubiKey: `ykman piv "
                     "access unblock-pin`); no PIN was tried.", code=PinLockedError.code)
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
    from rolesanywhere_hsm.signers.pkcs11.opening import pin_attributes

    if token is not None and not token.has(s.FLAG_LOGIN_REQUIRED):
        return Check("pin", PASS, f"token {token.label!r} needs no login: no PIN is asked")
    pin_value, pin_source = pin_attributes(main_uri, cert_uri)  # as locate reads them
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
            return from_error("pin", exc)
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


def file_certificate_check(run: Run) -> None:
    from rolesanywhere_hsm import x509 as _x509

    try:
        found = _x509.load_certificates(run.options.signer.certificate)
    except CertificateError as exc:
        run.pending_certificate_error = exc  # a PKCS#12 file: the key step may still read it
        return
    run.certificate, run.given_chain = found[0], list(found[1:])
    extra = f" and {len(found) - 1} more (taken as intermediates)" if len(found) > 1 else ""
    run.add(Check("certificate", PASS, f"read from {redact(run.options.signer.certificate)}{extra}"))


def key_check(run: Run, cleanup: contextlib.ExitStack) -> None:
    """Open the key as credential-process would, in its two phases: `locate` (no PIN: the
    chain the key would send is known from here, for the chain checks, even when no PIN is
    available) and `unlock` (the one login, the pairing checks)."""
    from rolesanywhere_hsm.signers.base import locate

    config = run.options.signer
    is_token = signer_kind(config) == "pkcs11"
    needs = ("module", "token") if is_token else ()
    if is_token and certificate_on_token(config):
        needs += ("certificate",)
    pin_check = next((c for c in run.checks if c.name == "pin"), None)
    no_pin_source = pin_check is not None and pin_check.message == NO_PIN_SOURCE
    if run.skip_unless("key", *needs):
        return
    try:
        # the validity check reports the dates; this one says whether the key signs anyway
        located = locate(config._replace(check_dates=False))
    except RolesAnywhereError as exc:
        run.add(from_error("key", exc))
        return
    cleanup.callback(located.close)
    # locate's findings are rendered, not checked again: the chain's by the chain checks (the
    # key is still tested: a chain problem says nothing about the key), the others here, each
    # one a key line with its code, in place of a login
    run.chain_findings = [f for f in located.findings if f.setting == "intermediates"]
    located.findings = [f for f in located.findings if f.setting != "intermediates"]
    if located.certificate is not None and not run.chain_findings:
        run.located_chain = located.chain  # public: the chain checks need no login for it
    if located.findings:  # seen without a PIN: reported whatever the pin line says
        if run.pending_certificate_error is not None:
            run.add(from_error("certificate", run.pending_certificate_error))
        run.add(findings_check("key", located.findings))
        return
    if is_token and not no_pin_source and run.skip_unless("key", "pin"):
        return  # a PIN source that does not answer: no login is tried
    try:
        signer = located.unlock()
    except PinUnavailableError as exc:
        if no_pin_source:
            run.add(Check("key", SKIP, "not checked: pin did not pass"))
        else:
            run.add(from_error("key", exc))
        return
    except PinError as exc:
        run.add(Check("key", FAIL, f"login refused: {exc.message}", exc.hint or "", code=exc.code))
        return
    except RolesAnywhereError as exc:
        if run.pending_certificate_error is not None:
            run.add(from_error("certificate", run.pending_certificate_error))
        run.add(from_error("key", exc))
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


def findings_check(name: str, findings: list[Any]) -> Check:
    """PURE: one failed check line for `locate`'s findings (each check is reported once): the
    first one's message, fix and code, then every other one with its own code, so one run
    shows every problem locate saw."""
    first, rest = findings[0], findings[1:]
    message = first.message + "".join(f" Also [{f.code}]: {f.message}" for f in rest)
    fix = " ".join(dict.fromkeys(f.hint for f in findings if f.hint))
    return Check(name, FAIL, message, fix, code=first.code)


def signature_check(run: Run) -> None:
    """One real signature, verified with the certificate's public key."""
    if run.skip_unless("signature", "key"):
        return
    signer = run.signer
    try:
        signature = signer.sign(TEST_MESSAGE)
    except RolesAnywhereError as exc:
        run.add(from_error("signature", exc))
        return
    from rolesanywhere_hsm.x509 import verify_signature

    if not verify_signature(signer.certificate, TEST_MESSAGE, signature, signer.algorithm):
        run.add(Check("signature", FAIL, "the key signed, but the signature does not verify with "
                      "the certificate's public key", "Select the key that belongs to the "
                      "certificate (same id=), or the certificate of this key."))
        return
    run.add(Check("signature", PASS, f"one {signer.algorithm} signature made and verified with the "
                  "certificate's public key"))
