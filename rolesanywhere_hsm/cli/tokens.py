"""CLI: `tokens`, what every PKCS#11 module here shows, with a ready-to-paste URI per certificate.

The library (`signers.pkcs11.inventory`) returns data; this module only decides where a PIN
comes from for `--login` and shapes the data as text for people or JSON for scripts.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Optional

import typer

from rolesanywhere_hsm.cli import options as o

# Token flags shown, by CK_TOKEN_INFO bit (PKCS#11 v2.40 section 3.2).
_FLAG_NAMES = (
    (0x4, "login required"),
    (0x100, "protected authentication path"),
    (0x10000, "PIN count low"),
    (0x20000, "PIN final try"),
    (0x40000, "PIN locked"),
    (0x80000, "user PIN to be changed"),
)


def _flag_names(flags: int) -> list[str]:
    return [name for bit, name in _FLAG_NAMES if flags & bit]


def _pin_for_tokens(login: bool, token_label: str | None) -> Any:
    """The PIN policy of `tokens --login`: the terminal prompt, one per token, or
    RAH_PKCS11_PIN, which is presented to ONE token only (a PIN is never offered to tokens it
    may not belong to); --token chooses which."""
    if not login:
        return None
    from rolesanywhere_hsm.errors import PinUnavailableError
    from rolesanywhere_hsm.signers.pin import PIN_ENV_VAR
    from rolesanywhere_hsm.signers.secretpolicy import PinRequest, resolve_pin

    presented: list[str] = []

    def pin_for(token: Any) -> str | None:
        if token_label is not None and token.label != token_label:
            return None
        if os.environ.get(PIN_ENV_VAR) is not None and presented:
            raise PinUnavailableError(
                f"Not logged in: {PIN_ENV_VAR} was already presented to token {presented[0]!r}.",
                hint="Choose the token with --token LABEL.",
            )
        pin, _source = resolve_pin(PinRequest(
            description=f"PIN for token {token.label!r}",
            protected_authentication_path=bool(token.flags & 0x100),
        ))
        presented.append(token.label)
        return pin  # type: ignore[return-value]  # ProtectedAuthentication: login() knows it

    return pin_for


def validity_state(not_before: Any, not_after: Any, now: Any) -> str:
    """PURE: "valid", "expired" or "not yet valid" (what the service would answer at `now`)."""
    if now > not_after:
        return "expired"
    if now < not_before:
        return "not yet valid"
    return "valid"


def _certificate_data(cert: Any) -> dict[str, Any]:
    import datetime as dt

    info = cert.info
    return {
        "label": cert.object.label,
        "id": cert.object.id.hex(),
        "subject": info.subject,
        "issuer": info.issuer,
        "serialNumber": format(info.serial, "x"),
        "notBefore": cert.not_before.isoformat(),
        "notAfter": cert.not_after.isoformat(),
        "validity": validity_state(cert.not_before, cert.not_after, dt.datetime.now(dt.timezone.utc)),
        "keyType": info.key_type,
        "keyBits": info.key_bits,
        "curve": info.curve,
        "isCA": info.is_ca,
        "attestation": cert.attestation,
        "privateKey": cert.pairing.private_key,
        "publicKey": cert.pairing.public_key,
        "alwaysAuthenticate": cert.pairing.always_authenticate,
        "keyNeedsLogin": cert.pairing.needs_login,
        "uri": cert.uri,
    }


def _token_data(entry: Any) -> dict[str, Any]:
    token = entry.token
    return {
        "slotId": token.slot_id,
        "slotDescription": token.slot_description,
        "label": token.label,
        "manufacturer": token.manufacturer,
        "model": token.model,
        "serial": token.serial,
        "flags": _flag_names(token.flags),
        "loggedIn": entry.logged_in,
        "error": entry.error,
        "certificates": [_certificate_data(c) for c in entry.certificates],
        "keys": [_key_data(k, entry) for k in entry.keys],
    }


_PROTECTION_NAMES = {"SENSITIVE": "sensitive", "EXTRACTABLE": "extractable", "NEVER_EXTRACTABLE": "neverExtractable",
                     "ALWAYS_SENSITIVE": "alwaysSensitive", "LOCAL": "local"}


def _key_data(key: Any, entry: Any) -> dict[str, Any]:
    """A key, with the auditor's attributes for private keys: what the token claims about
    the key (CKA_SENSITIVE ... CKA_LOCAL) and whether it shows an attestation certificate for
    it (ykcs11 does, under the key's CKA_ID; `attest` asks other PIV modules' cards directly)."""
    data: dict[str, Any] = {"class": key.object_class, "label": key.label, "id": key.id.hex(),
                            "keyType": key.key_type, "alwaysAuthenticate": key.always_authenticate,
                            "needsLogin": key.needs_login}
    if key.object_class == "private":
        data.update({_PROTECTION_NAMES[name]: value for name, value in key.protection})
        data["attestation"] = any(c.attestation and c.object.id == key.id for c in entry.certificates)
    return data


def _protection_text(key: dict[str, Any]) -> str:
    """'sensitive, never extractable, ...' in CKA_ words; unknown attributes are left out."""
    words = {"sensitive": ("CKA_SENSITIVE", "sensitive", "not sensitive"),
             "extractable": ("CKA_EXTRACTABLE", "extractable", "not extractable"),
             "neverExtractable": ("CKA_NEVER_EXTRACTABLE", "never extractable", "was extractable"),
             "alwaysSensitive": ("CKA_ALWAYS_SENSITIVE", "always sensitive", "was not always sensitive"),
             "local": ("CKA_LOCAL", "generated on the token", "not generated on the token")}
    shown = [(yes if key[name] else no) for name, (_, yes, no) in words.items() if key.get(name) is not None]
    shown.append("attestation certificate on the token" if key["attestation"] else "no attestation shown")
    return "; " + ", ".join(shown)


def inventory_data(modules: list[Any], token_label: str | None = None) -> list[dict[str, Any]]:
    """The JSON shape of `tokens --json` (documented in docs/cli.md). With `token_label`
    (--token), only modules that show that token, or that the user named and that failed:
    the errors and noise of every other module are not about the token asked for."""
    named = ("--pkcs11-lib", "RAH_PKCS11_MODULE")
    if token_label is not None:
        modules = [m for m in modules if any(t.token.label == token_label for t in m.tokens)
                   or (m.error and m.reason in named)]
    return [{
        "module": m.path,
        "foundBy": m.reason,
        "library": {"description": m.library_description, "manufacturer": m.library_manufacturer,
                    "version": m.library_version},
        "error": m.error,
        "stderr": list(m.stderr),
        "slots": [{"slotId": s.slot_id, "description": s.description, "tokenPresent": s.token_present,
                   "tokenInitialised": s.token_initialised} for s in m.slots],
        "tokens": [_token_data(t) for t in m.tokens
                   if token_label is None or t.token.label == token_label],
    } for m in modules]


def _text(modules: list[dict[str, Any]]) -> str:
    from rolesanywhere_hsm.signers.pkcs11.selection import format_id

    lines: list[str] = []
    for m in modules:
        lib = m["library"]
        head = f"module {m['module']} ({m['foundBy']})"
        if lib["description"]:
            head += f": {lib['description']} {lib['version']} by {lib['manufacturer']}"
        lines.append(head)
        if m["error"]:
            lines.append("  cannot list it: " + m["error"].replace("\n", "\n    "))
        if m["stderr"]:
            why = ("tpm2-pkcs11 found no TPM (set TPM2_PKCS11_TCTI to use one)"
                   if any("tcti" in line.lower() for line in m["stderr"]) else "see --debug")
            lines.append(f"  ({len(m['stderr'])} line(s) the module wrote on stderr are hidden: {why})")
        if not m["error"] and not m["tokens"]:
            lines.append(f"  {len(m['slots'])} slot(s), no initialised token")
        for t in m["tokens"]:
            lines.append(f"  slot {t['slotId']} ({t['slotDescription']}): token {t['label']!r}, "
                         f"manufacturer {t['manufacturer']!r}, model {t['model']!r}, "
                         f"serial {t['serial']!r}")
            lines.append(f"    flags: {', '.join(t['flags']) or 'none'}"
                         + ("; logged in" if t["loggedIn"] else ""))
            if t["error"]:
                lines.append("    " + t["error"].replace("\n", "\n    "))
            for c in t["certificates"]:
                mark = "  [attestation certificate]" if c["attestation"] else ""
                mark += "  [CA certificate]" if c["isCA"] else ""
                mark += f"  [{c['validity'].upper()}]" if c["validity"] != "valid" else ""
                lines.append(f"    certificate {c['label']!r} id {format_id(bytes.fromhex(c['id']))}{mark}")
                lines.append(f"      subject {c['subject']}")
                lines.append(f"      issuer  {c['issuer']}")
                lines.append(f"      serial {c['serialNumber']}, valid {c['notBefore']} to {c['notAfter']}")
                key = f"{c['keyType']} {c['keyBits']} bits" + (f" ({c['curve']})" if c["curve"] else "")
                lines.append(f"      key {key}; private key: {c['privateKey']}; public key: "
                             f"{c['publicKey']}" + ("; always-authenticate" if c["alwaysAuthenticate"] else "")
                             + ("; usable without login" if c["keyNeedsLogin"] is False else ""))
                lines.append(f"      uri {c['uri']}")
            for k in t["keys"]:
                lines.append(f"    {k['class']} key {k['label']!r} id {format_id(bytes.fromhex(k['id']))} "
                             f"({k['keyType']})" + (_protection_text(k) if k["class"] == "private" else ""))
            if "login required" in t["flags"] and not t["loggedIn"]:
                lines.append("    (private keys are listed after login: add --login)")
    return "\n".join(lines)


def tokens(
    pkcs11_lib: o.Pkcs11Lib = None,
    login: Annotated[bool, typer.Option(
        "--login", help="Log in to list private keys: PIN from RAH_PKCS11_PIN (one token only) "
        "or the terminal prompt, once per token, never retried.")] = False,
    token: Annotated[Optional[str], typer.Option(
        "--token", help="Show (and log in to) only the tokens with this label.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    debug: o.Debug = False,
) -> None:
    """List every PKCS#11 module found here, its slots, tokens, certificates and keys, with the
    URI (module-path included) that selects each certificate: ready to paste into --certificate."""
    o.configure_logging(debug)
    from rolesanywhere_hsm.errors import ModuleLoadError
    from rolesanywhere_hsm.signers.pkcs11.inventory import take_inventory
    from rolesanywhere_hsm.signers.pkcs11.modules import known_module_paths

    found = known_module_paths(pkcs11_lib)
    if not found:
        raise ModuleLoadError(
            "No PKCS#11 module was found here.",
            hint="Install one (e.g. opensc, ykcs11, softhsm2, libtpm2-pkcs11-1) or name yours "
            "with --pkcs11-lib.",
        )
    named = ("--pkcs11-lib", "RAH_PKCS11_MODULE") if not debug else tuple(r for _, r in found)
    modules = inventory_data(take_inventory(found, pin_for=_pin_for_tokens(login, token), named=named),
                             token)
    if as_json:
        print(json.dumps(modules, indent=2))
    elif token is not None and not modules:
        print(f"no token labelled {token!r} in the {len(found)} module(s) looked at "
              f"({', '.join(path for path, _ in found)})")
    else:
        print(_text(modules))


def register(app: typer.Typer) -> None:
    app.command("tokens")(tokens)
