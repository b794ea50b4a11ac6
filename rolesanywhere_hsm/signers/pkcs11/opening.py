"""Open the token key a `SignerConfig` names in two phases: `locate_pkcs11` (parse, load the
module, select, read the chain: public objects, no PIN) and `LocatedTokenKey.unlock` (log in,
check the key).

The steps, in order, each in its own module: `modules` (which module, loaded once),
`inventory` (snapshots of tokens and certificates), `selection` (pure: exactly one token and
certificate, or an error listing the candidates), then the login and the key, checked against
the certificate and the acceptance rules every signer shares (`signers.acceptance`: the leaf's
at locate, the key's type and public value at unlock, where the private key is seen); the result is one `OpenedKey` for the
`Pkcs11Signer`. rolesanywhere_hsm.signers.locate says why the two phases.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pkcs11
from pkcs11 import Attribute, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11

from rolesanywhere_hsm import x509 as _x509
from rolesanywhere_hsm.errors import (
    CertificateError,
    PinLockedError,
    Pkcs11UriError,
    RolesAnywhereError,
    SelectionError,
    TokenSigningError,
    UsageError,
)
from rolesanywhere_hsm.lazylog import get_logger
from rolesanywhere_hsm.signers import acceptance
from rolesanywhere_hsm.signers.base import SecretCallback, SignerConfig
from rolesanywhere_hsm.signers.locate import Located
from rolesanywhere_hsm.signers.mechanisms import SigningSpec, choose_signing_spec
from rolesanywhere_hsm.signers.pin import ProtectedAuthentication
from rolesanywhere_hsm.signers.secretpolicy import TOKEN_PIN, SecretPolicy, SecretRequest
from rolesanywhere_hsm.signers.pkcs11.error_mapping import login, mapped_errors
from rolesanywhere_hsm.signers.pkcs11.inventory import (
    KEY_TYPES,
    LiveToken,
    check_library,
    parse_if_uri,
    read_certificates,
    read_objects,
    read_tokens,
    selecting_uri,
)
from rolesanywhere_hsm.signers.pkcs11.modules import (
    MODULE_ENV_VAR,
    acquire_module,
    captured_stderr,
    known_module_paths,
    loaded_module,
    module_noise_contained,
    release_module,
    resolve_module_path,
)
from rolesanywhere_hsm.signers.pkcs11.pairing import public_object, public_object_findings, token_public_value
from rolesanywhere_hsm.signers.pkcs11.selection import (
    ObjectSnapshot,
    TokenSnapshot,
    format_id,
    matching_tokens,
    object_matches,
    select_certificate,
    select_token,
)
from rolesanywhere_hsm.signers.pkcs11.signer import OpenedKey, Pkcs11Signer, find_one_key
from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri

__all__ = [
    "LocatedTokenKey",
    "checked_uris",
    "load_module",
    "locate_pkcs11",
    "located_token",
    "module_tokens",
    "open_chosen_module",
    "open_pkcs11_signer",
    "pin_attributes",
    "select_token_certificate",
    "selected_certificate",
    "token_for_key",
]

# --debug shows the steps: module, token, key, mechanism, where the PIN came from (never the PIN).
log = get_logger("rolesanywhere_hsm.pkcs11")  # logging only when a line can show


def checked_uris(config: SignerConfig) -> tuple[Pkcs11Uri | None, Pkcs11Uri | None]:
    """The first half's first step: the certificate URI and the key URI `config` gives (the
    certificate URI made from the key URI, or empty with --cert-selector, when absent),
    checked: type= matches, and at least one of them is a pkcs11: URI."""
    cert_uri = parse_if_uri(config.certificate, "--certificate")
    key_uri = parse_if_uri(config.private_key, "--private-key") if config.private_key else None
    if config.private_key and key_uri is None:
        raise UsageError(
            "The PKCS#11 signer needs --private-key as a pkcs11: URI (or left out).",
            hint="Give --private-key pkcs11:token=...;object=... or use a key file.",
        )
    if cert_uri is None and not config.certificate:
        if config.cert_selector is not None:
            cert_uri = Pkcs11Uri()  # --cert-selector alone: every certificate of every token
        elif key_uri is not None:  # a key alone: the certificate with its object=/id= on its token
            cert_uri = key_uri.with_changes(type=None, pin_value=None, pin_source=None)
    if cert_uri is None and key_uri is None:
        raise UsageError("Neither --certificate nor --private-key is a pkcs11: URI.",
                         hint="Name the key on the token with --private-key pkcs11:...")
    for uri, what in ((cert_uri, "certificate"), (key_uri, "private key")):
        expected = "cert" if what == "certificate" else "private"
        if uri is not None and uri.type is not None and uri.type != expected:
            raise Pkcs11UriError(
                f"The {what} URI says type={uri.type}; it must be type={expected} or none.",
                hint=f"Drop type= or write type={expected}.",
            )
    return cert_uri, key_uri


def _object_template(uri: Pkcs11Uri, object_class: Any) -> dict[Any, Any]:
    template: dict[Any, Any] = {Attribute.CLASS: object_class}
    if uri.object is not None:
        template[Attribute.LABEL] = uri.object
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    return template


def _key_template(key_uri: Pkcs11Uri | None, cert_uri: Pkcs11Uri | None,
                  cert_id: bytes | None) -> tuple[dict[Any, Any], str]:
    """How to find the private key, and how to name that in messages: the key URI's object
    or id, else the certificate's CKA_ID, else the certificate URI's object and id."""
    if key_uri is not None and (key_uri.object is not None or key_uri.id is not None):
        return _object_template(key_uri, ObjectClass.PRIVATE_KEY), key_uri.object_criteria()
    if cert_id:
        return ({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: cert_id},
                f"id={format_id(cert_id)} (the certificate's CKA_ID)")
    if cert_uri is not None:
        return _object_template(cert_uri, ObjectClass.PRIVATE_KEY), cert_uri.object_criteria()
    return {Attribute.CLASS: ObjectClass.PRIVATE_KEY}, ""


def _selector_candidates(snapshots: list[TokenSnapshot], certificates: list[ObjectSnapshot],
                         cert_uri: Pkcs11Uri, key_uri: Pkcs11Uri | None,
                         module_path: str) -> list[tuple[ObjectSnapshot, Any, str]]:
    """The certificates --cert-selector chooses among: those on the tokens the URIs allow
    that the certificate URI's object=/id= match, each with its parsed names and the URI
    that selects exactly it (for the error that lists them). One that does not parse is
    left out (a token may hold odd objects; it cannot be the one the selector names)."""
    from rolesanywhere_hsm.certselector import candidate_from_der
    from rolesanywhere_hsm.errors import CertificateError

    searched = matching_tokens(snapshots, cert_uri, key_uri)
    found = []
    for cert in certificates:
        if cert.object_class != "cert" or cert.token not in searched or not object_matches(cert, cert_uri):
            continue
        try:
            candidate = candidate_from_der(cert.value)
        except CertificateError:
            log.debug("certificate %s cannot be parsed; not a candidate", cert.describe(with_token=True))
            continue
        uri = selecting_uri(cert, certificates, snapshots, module_path).to_string()
        found.append((cert, candidate, uri))
    return found


def _pick_by_selector(found: list[tuple[ObjectSnapshot, Any, str]], selector: Any, latest: bool,
                      where: str) -> ObjectSnapshot:
    """certselector's rule over the token certificates (an error lists them with their URIs)."""
    from rolesanywhere_hsm.certselector import select_certificate as pick

    index = pick([c for _, c, _ in found], selector, use_latest_expiring=latest,
                 labels=[u for _, _, u in found], where=where)
    return found[index][0]


def select_token_certificate(tokens: list[LiveToken], cert_uri: Pkcs11Uri, key_uri: Pkcs11Uri | None,
                        module_path: str, config: SignerConfig,
                        ) -> tuple[LiveToken, ObjectSnapshot, Any, list[ObjectSnapshot]]:
    """The one certificate the URI (and --cert-selector, when given) selects, searched on
    every token the URIs allow (all of them when they name none), read in public sessions;
    returns the chosen token's public session open (the key is looked for there first), the
    others closed, and every certificate on the chosen token (where its issuers may be)."""
    snapshots = [t.snapshot for t in tokens]
    searched = matching_tokens(snapshots, cert_uri, key_uri)
    sessions: dict[TokenSnapshot, Any] = {}
    try:
        certificates: list[ObjectSnapshot] = []
        for live in tokens:
            if live.snapshot in searched:
                with mapped_errors(f"listing certificates on token {live.snapshot.label!r}"):
                    sessions[live.snapshot] = live.token.open()
                    certificates += read_objects(sessions[live.snapshot], live.snapshot,
                                                 ObjectClass.CERTIFICATE, "cert", with_value=True)
        if config.cert_selector is not None:
            found = _selector_candidates(snapshots, certificates, cert_uri, key_uri, module_path)
            chosen = _pick_by_selector(found, config.cert_selector,
                                       config.use_latest_expiring_certificate,
                                       f"the tokens of the module {module_path}")
        else:
            chosen = select_certificate(snapshots, certificates, cert_uri, module_path, key_uri=key_uri)
        log.debug("certificate %s on %s", chosen.describe(), chosen.token.describe())
        return (next(t for t in tokens if t.snapshot == chosen.token), chosen,
                sessions.pop(chosen.token), [c for c in certificates if c.token == chosen.token])
    finally:
        for other in sessions.values():
            with contextlib.suppress(pkcs11.PKCS11Error):
                other.close()


class _SearchedModule:
    """The module a --cert-selector search chose, still loaded (acquired once: the caller
    releases it or hands it on), and the certificate it picked there."""

    __slots__ = ("chosen", "lib", "path")

    def __init__(self, path: str, lib: Any, chosen: ObjectSnapshot) -> None:
        self.path, self.lib, self.chosen = path, lib, chosen


def _selector_module(config: SignerConfig, cert_uri: Pkcs11Uri | None, key_uri: Pkcs11Uri | None,
                     environ: Mapping[str, str] | None) -> str | _SearchedModule:
    """The module to open: the one named (a path, not loaded yet), else (with
    --cert-selector) the one whose tokens hold the certificate the selector picks, which the
    search leaves loaded so that it is loaded and initialised once."""
    searched = selector_module_search(config, cert_uri, key_uri, environ)
    return searched if searched is not None else resolve_module_path(
        (key_uri, cert_uri), config.pkcs11_lib, environ)


def selector_module_search(config: SignerConfig, cert_uri: Pkcs11Uri | None, key_uri: Pkcs11Uri | None,
                           environ: Mapping[str, str] | None) -> _SearchedModule | None:
    """The module --cert-selector's search chose, loaded (the caller releases it), when a
    selector is given and no module is named; else None (the named or found module is
    loaded as usual). For `doctor`, which takes the same steps as `locate_pkcs11`."""
    if config.cert_selector is None or cert_uri is None or _module_named(
            (key_uri, cert_uri), config.pkcs11_lib, environ):
        return None
    return _module_by_selector(config, cert_uri, key_uri, environ)


def open_chosen_module(config: SignerConfig, cert_uri: Pkcs11Uri | None, key_uri: Pkcs11Uri | None,
                       environ: Mapping[str, str] | None, *, contain_noise: bool = True,
                       ) -> tuple[str, Any, bool]:
    """The first half's module step: with --cert-selector and no module named, the module the
    search over every module chose (loaded by the search: loaded once), else the named or
    found one (`load_module`). Returns (path, library, whether the search chose it); the
    caller releases the module. Only the search raises `SelectionError` or
    `CertificateError` (no one certificate matched); the rest raise `ModuleLoadError`."""
    searched = selector_module_search(config, cert_uri, key_uri, environ)
    if searched is not None:
        return searched.path, searched.lib, True
    module_path, lib = load_module((key_uri, cert_uri), config.pkcs11_lib, environ,
                                   contain_noise=contain_noise)
    return module_path, lib, False


def pin_attributes(main_uri: Pkcs11Uri, cert_uri: Pkcs11Uri | None) -> tuple[str | None, str | None]:
    """The `pin-value` and `pin-source` the PIN comes from: the main URI's (the key's, else
    the certificate's), each falling back to the certificate URI's."""
    pin_value = main_uri.pin_value if main_uri.pin_value is not None else (
        cert_uri.pin_value if cert_uri else None)
    pin_source = main_uri.pin_source if main_uri.pin_source is not None else (
        cert_uri.pin_source if cert_uri else None)
    return pin_value, pin_source


def selected_certificate(config: SignerConfig, environ: Mapping[str, str] | None = None) -> bytes:
    """The DER of the token certificate `config.cert_selector` picks (among the certificates
    a pkcs11: `config.certificate` allows, or every token's when it is absent), read in
    public sessions: no PIN. For `read-certificate-data --cert-selector`."""
    cert_uri, key_uri = checked_uris(config)
    if cert_uri is None:
        cert_uri = Pkcs11Uri()
    module_path = _selector_module(config, cert_uri, key_uri, environ)
    if isinstance(module_path, _SearchedModule):  # the search already picked it
        try:
            check_library(module_path.lib, cert_uri, module_path.path)
        finally:
            release_module(module_path.path)
        return module_path.chosen.value
    with loaded_module(module_path) as lib:
        check_library(lib, cert_uri, module_path)
        tokens = read_tokens(lib)
        snapshots = [t.snapshot for t in tokens]
        certificates = read_certificates(
            [t for t in tokens if t.snapshot in matching_tokens(snapshots, cert_uri, key_uri)])
    found = _selector_candidates(snapshots, certificates, cert_uri, key_uri, module_path)
    return _pick_by_selector(found, config.cert_selector, config.use_latest_expiring_certificate,
                             f"the tokens of the module {module_path}").value


def _module_named(uris: tuple[Pkcs11Uri | None, ...], configured: str | None,
                  environ: Mapping[str, str] | None) -> bool:
    """Whether the user named a module (URI module-path/module-name, --pkcs11-lib,
    RAH_PKCS11_MODULE); if not, --cert-selector searches every module `tokens` finds."""
    environ = os.environ if environ is None else environ
    return bool(configured or environ.get(MODULE_ENV_VAR)
                or any(u is not None and (u.module_path or u.module_name) for u in uris))


def _module_by_selector(config: SignerConfig, cert_uri: Pkcs11Uri, key_uri: Pkcs11Uri | None,
                        environ: Mapping[str, str] | None) -> _SearchedModule:
    """With --cert-selector and no module named: the module holding the one certificate the
    selector picks among the certificates of every module `tokens` finds (the same token
    seen through two modules, e.g. p11-kit-proxy and the module itself, counts once: the
    first module wins). Public sessions only; modules that fail to load are skipped. A module
    that offers a candidate stays loaded until the pick; the chosen one is returned loaded
    (the caller owns that one use), the others are released."""
    found: list[tuple[ObjectSnapshot, Any, str]] = []
    module_of: dict[int, str] = {}
    held: dict[str, Any] = {}  # modules with candidates, acquired until the pick
    seen: set[tuple[str, str, str]] = set()
    chosen_path: str | None = None
    try:
        for path, _why in known_module_paths(None, environ):
            try:
                with captured_stderr():
                    lib = acquire_module(path)
            except Exception as exc:  # noqa: BLE001 (a module that does not load is not a candidate)
                log.debug("module %s skipped: %s", path, exc)
                continue
            try:
                with captured_stderr():
                    tokens = read_tokens(lib)
                    snapshots = [t.snapshot for t in tokens]
                    certificates = read_certificates(
                        [t for t in tokens if t.snapshot in matching_tokens(snapshots, cert_uri, key_uri)])
                entries = _selector_candidates(snapshots, certificates, cert_uri, key_uri, path)
            except Exception as exc:  # noqa: BLE001 (as above: a module that fails to list)
                log.debug("module %s skipped: %s", path, exc)
                release_module(path)
                continue
            for entry in entries:
                cert = entry[0]
                identity = (cert.token.manufacturer, cert.token.serial, cert.token.label)
                if identity in seen:  # already listed through an earlier module
                    continue
                module_of[len(found)] = path
                found.append(entry)
            seen |= {(s.manufacturer, s.serial, s.label) for s in snapshots}
            if path in module_of.values():
                held[path] = lib
            else:
                release_module(path)
        chosen = _pick_by_selector(found, config.cert_selector, config.use_latest_expiring_certificate,
                                   "the tokens of every PKCS#11 module found")
        chosen_path = module_of[next(i for i, e in enumerate(found) if e[0] is chosen)]
        log.debug("--cert-selector: module %s", chosen_path)
        return _SearchedModule(chosen_path, held[chosen_path], chosen)
    finally:
        for path in held:
            if path != chosen_path:
                release_module(path)


def load_module(uris: tuple[Pkcs11Uri | None, ...], pkcs11_lib: str | None,
                environ: Mapping[str, str] | None, *, contain_noise: bool = True) -> tuple[str, Any]:
    """The first half's module step: the module the URIs, `pkcs11_lib` or RAH_PKCS11_MODULE
    name (or the one found), acquired once (C_Initialize); the caller releases it.
    `contain_noise=False` leaves what the module prints to a caller that captures it itself
    (doctor tells about it)."""
    module_path = resolve_module_path(uris, pkcs11_lib, environ)
    with module_noise_contained(module_path) if contain_noise else contextlib.nullcontext():
        return module_path, acquire_module(module_path)


def module_tokens(lib: Any, module_path: str, uris: tuple[Pkcs11Uri | None, ...], *,
                  contain_noise: bool = True) -> list[LiveToken]:
    """The first half's public step on a loaded module: the URIs' library-* attributes
    checked against it, then its tokens (C_GetSlotList, C_GetTokenInfo: no session, no
    login), with what the module prints contained as at every load (unless the caller
    captures it: `contain_noise=False`)."""
    for uri in uris:
        if uri is not None:
            check_library(lib, uri, module_path)
    with module_noise_contained(module_path) if contain_noise else contextlib.nullcontext():
        return read_tokens(lib)


@contextlib.contextmanager
def located_token(uri: Pkcs11Uri, pkcs11_lib: str | None = None,
                  environ: Mapping[str, str] | None = None) -> Iterator[tuple[str, Any, LiveToken]]:
    """The first half of opening a token key, without a certificate: the module (named as for
    `locate_pkcs11`), loaded once and released on exit, and the one token `uri` selects. No
    session, no secret. (module path, library, live token); provisioning builds on it."""
    module_path, lib = load_module((uri,), pkcs11_lib, environ)
    try:
        tokens = module_tokens(lib, module_path, (uri,))
        chosen = select_token([t.snapshot for t in tokens], uri, module_path)
        yield module_path, lib, next(t for t in tokens if t.snapshot == chosen)
    finally:
        release_module(module_path)


def token_for_key(tokens: list[LiveToken], key_uri: Pkcs11Uri, certificate: bytes,
                   module_path: str) -> LiveToken:
    """The token for a key URI when the certificate is a file: the one the URI selects, or,
    when it selects several, the single one that holds this certificate."""
    snapshots = [t.snapshot for t in tokens]
    matching = matching_tokens(snapshots, key_uri)
    if len(matching) > 1:
        holders = {c.token for c in read_certificates([t for t in tokens if t.snapshot in matching])
                   if c.value == certificate}
        if len(holders) == 1:
            return next(t for t in tokens if t.snapshot in holders)
    chosen = select_token(snapshots, key_uri, module_path)
    return next(t for t in tokens if t.snapshot == chosen)


def _usable_without_login(session: Any, key_template: dict[Any, Any]) -> bool:
    """Whether exactly one key matches in a public session and it is not a private object
    (CKA_PRIVATE false: PKCS#11 lets it be used without C_Login)."""
    keys = list(session.get_objects(key_template))
    if len(keys) != 1:
        return False
    with contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive):
        return not bool(keys[0][Attribute.PRIVATE])
    return False


def _checked_key(session: Any, token: Any, key_template: dict[Any, Any], criteria: str,
                 info: _x509.CertificateInfo, spec: SigningSpec | None,
                 public: tuple[str, bytes | None] | None = None,
                 ) -> tuple[Any, bool, bool, SigningSpec]:
    """The one private key `key_template` finds, checked against the certificate: its type,
    CKA_SIGN, its public value where the token shows one (else `verify_pending`: the first
    signature is checked), CKA_ALWAYS_AUTHENTICATE, and the mechanism to sign with. `public`
    is the public key object locate read, if it did (not searched for again)."""
    key = find_one_key(session, key_template, criteria, token.label,
                       "Private keys are listed only after login: `rolesanywhere-hsm "
                       "tokens --login` or `pkcs11-tool --login --list-objects --type privkey`.")
    key_type = KEY_TYPES.get(key[Attribute.KEY_TYPE], "other")
    facts = acceptance.KeyFacts("pkcs11", key_type=key_type, criteria=criteria, token_label=token.label)
    acceptance.raise_first(acceptance.key_type_findings(info, facts))
    if not hasattr(key, "sign"):
        raise TokenSigningError(
            f"The key {criteria} on token {token.label!r} may not sign (CKA_SIGN is false).",
            hint="Use a signing key.",
        )
    token_public = token_public_value(session, key, key_type, KEY_TYPES, known=public)
    acceptance.raise_first(acceptance.pairing_findings(info, acceptance.KeyFacts(
        "pkcs11", token_value=token_public, criteria=criteria, token_label=token.label)))
    always_auth = False
    with contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive):
        always_auth = bool(key[Attribute.ALWAYS_AUTHENTICATE])
    if spec is None:
        spec = choose_signing_spec(key_type, token.slot.get_mechanisms(), key_bits=info.key_bits,
                                   curve=info.curve, parameter_set=info.parameter_set)
    elif spec.key_type != key_type:
        raise UsageError(f"The forced signing spec is for {spec.key_type}, the key is {key_type}.",
                         hint="Pass a spec for the key's type.")
    return key, token_public is None, always_auth, spec


def _chain(config: SignerConfig, certificate: bytes, from_file: list[bytes],
           on_token: list[ObjectSnapshot], token_label: str) -> tuple[bytes, ...]:
    """The intermediates to send: from --intermediates (and a certificate file's extras),
    which win; else, for a certificate on the token, its issuer path among the token's CA
    certificates (unless `config.token_chain` is off)."""
    if config.intermediates:
        from_file = from_file + _x509.load_certificates(config.intermediates)
    if from_file:
        return _x509.order_chain(certificate, from_file)
    if not on_token or not config.token_chain:
        return ()
    from rolesanywhere_hsm.issuer_path import build_issuer_path

    path = build_issuer_path(certificate, [c.value for c in on_token])
    log.debug("chain from token %r: %s", token_label,
              " <- ".join(path.subjects) if path.subjects else "no issuer of the leaf on the token")
    return path.intermediates


class LocatedTokenKey(Located):
    """A token key as `locate_pkcs11` found it: the module loaded, the token, the certificate
    and its chain, the key's criteria, whether a login is needed and where its PIN will come
    from; a public session open (the key is looked for there first). No PIN asked yet."""

    kind = "pkcs11"

    def __init__(self, config: SignerConfig, spec: SigningSpec | None,
                 environ: Mapping[str, str] | None, prompt: SecretCallback | None) -> None:
        super().__init__()
        self.config = config
        self._spec = spec
        self._environ = environ
        self._prompt = prompt
        self.module_path: str | None = None
        self._acquired = False
        self.session: Any = None  # the public session (the chosen token's)
        self.token: Any = None  # python-pkcs11's Token
        self.token_snapshot: TokenSnapshot | None = None
        self.cert_id: bytes | None = None
        self.on_token: list[ObjectSnapshot] = []  # every certificate on the chosen token
        self.key_template: dict[Any, Any] = {}
        self.key_criteria = ""
        self.info: _x509.CertificateInfo | None = None
        self.secret_request: SecretRequest | None = None  # the PIN to ask for, if a login is needed
        self.login_required = False
        self.pin_locked = False
        # the public key object with the key's CKA_ID, as (type, value), when there is one
        self.public_object: tuple[str, bytes | None] | None = None

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(pkcs11.PKCS11Error):
                session.close()
        if self._acquired and self.module_path is not None:
            self._acquired = False
            release_module(self.module_path)

    def default_policy(self) -> SecretPolicy:
        """Without a policy from the front end: the config's callback, then the terminal (or
        the `prompt` given to locate), reading the `environ` given to locate."""
        return SecretPolicy(self.config.secret_callback, prompt=self._prompt or True, environ=self._environ)

    def unlock(self, policy: SecretPolicy | None = None) -> Pkcs11Signer:
        """The one login (when the token needs one): the PIN resolved once through `policy`
        and presented once, then the key checked against the certificate and the signer built.
        Refused (the first finding raised) while locate found a problem: no PIN before the
        selection succeeded."""
        self.require()
        policy = self.default_policy() if policy is None else policy
        assert self.token is not None and self.info is not None and self.secret_request is not None
        assert self.module_path is not None
        token, info, config = self.token, self.info, self.config
        session, self.session = self.session, None
        try:
            user_pin: Any = None
            if self.login_required:
                user_pin, source = policy.resolve(self.secret_request)
                log.debug("PIN for token %r from %s", token.label, source.value)
                public, session = session, None
                try:
                    session = login(token, user_pin)
                finally:
                    with contextlib.suppress(pkcs11.PKCS11Error):
                        public.close()
                if user_pin is ProtectedAuthentication:
                    user_pin = None
            else:
                log.debug("token %r: the key is used without login (no PIN asked)", token.label)

            with mapped_errors(f"reading objects on token {token.label!r}"):
                key, verify_pending, always_auth, spec = _checked_key(
                    session, token, self.key_template, self.key_criteria, info, self._spec,
                    self.public_object)

            log.debug("module %s, token %r, key %s, mechanism %s%s", self.module_path, token.label,
                      self.key_criteria or "(the only key)", spec.mechanism_name,
                      ", always-authenticate" if always_auth else "")
            assert self.certificate is not None
            opened = OpenedKey(
                module_path=self.module_path, token=token, session=session, key=key,
                key_template=tuple(self.key_template.items()),
                key_criteria=self.key_criteria or "(the only key)",
                certificate=self.certificate, chain=self.chain, algorithm=info.algorithm, spec=spec,
                always_authenticate=always_auth, secret_request=self.secret_request, policy=policy,
                login_required=self.login_required, verify_pending=verify_pending,
                cert_id=self.cert_id,
            )
            signer = Pkcs11Signer(opened, reuse_pin=config.reuse_pin,
                                  user_pin=user_pin if isinstance(user_pin, str) else None)
        except BaseException:
            self.session = session
            self.close()
            raise
        self._acquired = False  # the signer releases the module when it closes
        return signer


def _selection_setting(config: SignerConfig) -> str:
    return "cert-selector" if config.cert_selector is not None else "certificate"


def locate_pkcs11(
    config: SignerConfig, *, spec: SigningSpec | None = None,
    environ: Mapping[str, str] | None = None, prompt: SecretCallback | None = None,
) -> LocatedTokenKey:
    """Find the token key `config` names without a PIN (see docs/pkcs11.md and
    rolesanywhere_hsm.signers.locate): public objects only. Problems are findings; the
    steps after a failed one are not taken."""
    located = LocatedTokenKey(config, spec, environ, prompt)
    try:
        _locate(located, config, environ, prompt)
    except BaseException:
        located.close()
        raise
    return located


def _locate(located: LocatedTokenKey, config: SignerConfig, environ: Mapping[str, str] | None,
            prompt: SecretCallback | None) -> None:
    try:
        cert_uri, key_uri = checked_uris(config)
    except RolesAnywhereError as exc:
        located.found(exc, "private-key" if config.private_key and "private key" in exc.message
                      else "certificate")
        return
    try:  # C_Initialize and the listing (what the module prints contained), never the login
        module_path, lib, _searched = open_chosen_module(config, cert_uri, key_uri, environ)
    except RolesAnywhereError as exc:
        located.found(exc, "pkcs11-lib" if not isinstance(exc, (SelectionError, CertificateError))
                      else _selection_setting(config))
        return
    located.module_path, located._acquired = module_path, True
    main_uri = key_uri or cert_uri
    assert main_uri is not None
    try:
        tokens = module_tokens(lib, module_path, (key_uri, cert_uri))
        # 1. The certificate, before any PIN: certificates are public objects, so an empty or
        #    ambiguous selection is reported without spending a PIN (even a wrong one).
        chain_candidates: list[bytes] = []
        if cert_uri is not None:
            live, cert, located.session, located.on_token = select_token_certificate(
                tokens, cert_uri, key_uri, module_path, config)
            certificate, cert_obj_id = cert.value, cert.id or None
        else:
            from_file = _x509.load_certificates(config.certificate)
            certificate, chain_candidates = from_file[0], from_file[1:]
            cert_obj_id = None
            assert key_uri is not None
            live = token_for_key(tokens, key_uri, certificate, module_path)
        info = _x509.certificate_info(certificate)
    except RolesAnywhereError as exc:
        located.found(exc, _selection_setting(config) if not config.private_key or key_uri is None
                      or isinstance(exc, CertificateError) else "private-key")
        return
    located.certificate, located.info, located.token = certificate, info, live.token
    located.token_snapshot = live.snapshot
    located.cert_id = bytes(cert_obj_id) if cert_obj_id else None
    # the rules every signer applies: not a CA, a key type we sign with, in its dates
    located.findings += acceptance.leaf_findings(info, dates=config.check_dates,
                                                 setting=_selection_setting(config))
    located.key_template, located.key_criteria = _key_template(key_uri, cert_uri, cert_obj_id)
    token = live.token
    flags = token.flags
    pin_value, pin_source = pin_attributes(main_uri, cert_uri)
    located.secret_request = SecretRequest(
        TOKEN_PIN, f"PIN for token {token.label!r}", pin_value=pin_value, pin_source=pin_source,
        protected_authentication_path=bool(flags & TokenFlag.PROTECTED_AUTHENTICATION_PATH),
        setting="private-key" if key_uri is not None and main_uri is key_uri else "certificate",
    )
    # 2. Whether the key needs a login: a token that needs none, or a key it shows without
    #    one (a YubiKey's 9e slot through OpenSC: CKA_PRIVATE false), is used in a public
    #    session and no PIN is asked.
    try:
        if located.session is None:
            located.session = login(token, None)
        with mapped_errors(f"reading objects on token {token.label!r}"):
            located.login_required = bool(flags & TokenFlag.LOGIN_REQUIRED) and not _usable_without_login(
                located.session, located.key_template)
    except RolesAnywhereError as exc:
        located.found(exc, "certificate")
        return
    # 3. The key against the certificate where the token shows its public half without a
    #    PIN: the public key object with the key's CKA_ID (checked again after the login, so
    #    a token that will not show it here only moves the check there).
    ident = located.key_template.get(Attribute.ID)
    if ident:
        try:
            with mapped_errors(f"reading objects on token {token.label!r}"):
                located.public_object = public_object(located.session, bytes(ident), KEY_TYPES)
        except RolesAnywhereError as exc:
            log.debug("token %r: public key object not read before login (%s)", token.label, exc.message)
        located.findings += public_object_findings(
            located.public_object, info, criteria=located.key_criteria, token_label=token.label,
            setting=located.secret_request.setting)
    if located.login_required and token.flags & TokenFlag.USER_PIN_LOCKED:
        located.pin_locked = True
        located.found(PinLockedError(f"The user PIN of token {token.label!r} is locked (not tried).",
                                     hint="Unblock it with the PUK or security officer PIN."), "certificate")
    located.secret_source = _secret_source(located)
    # 4. The chain to send: from --intermediates, else the token's CA certificates (public).
    try:
        located.chain = _chain(config, certificate, chain_candidates, located.on_token, token.label)
    except RolesAnywhereError as exc:
        located.found(exc, "intermediates")


def _secret_source(located: LocatedTokenKey) -> str:
    """Where the PIN will come from, in words (never the PIN): for --debug and doctor."""
    request = located.secret_request
    if not located.login_required or request is None:
        return "none: the key is used without login"
    if request.pin_value is not None:
        return "pin-value in the URI"
    if request.pin_source is not None:
        return "pin-source in the URI"
    if request.protected_authentication_path:
        return "the token's PIN pad (unless RAH_PKCS11_PIN is set)"
    return "the environment, a callback or the terminal"


def open_pkcs11_signer(
    config: SignerConfig, *, spec: SigningSpec | None = None,
    environ: Mapping[str, str] | None = None, prompt: SecretCallback | None = None,
) -> Pkcs11Signer:
    """Open the token key that `config` names (see docs/pkcs11.md): `locate_pkcs11`, then
    the first finding raised, then the one login (`LocatedTokenKey.unlock`).

    `config.certificate` is a `pkcs11:` URI (the certificate on the token) or a file;
    `config.private_key` a `pkcs11:` URI or None (then the key with the certificate's CKA_ID).
    `spec` forces a mechanism choice (tests, or a token that lists mechanisms it lacks);
    `environ` and `prompt` replace os.environ and the /dev/tty prompt (tests).
    """
    return locate_pkcs11(config, spec=spec, environ=environ, prompt=prompt).unlock()
