"""Opening a key in two phases: `locate` (no secret, no login) and `Located.unlock` (the one
step that asks for a secret).

Every key kind (a PKCS#11 token, a key file, a TPM key file) is opened the same way:

- `base.locate(config)` (the kind's locator, by the registry) finds everything that is public: the module and token, the certificate
  (selected by URI or `--cert-selector`), the criteria that find the key, the chain to send,
  and which secret source will answer. It runs the acceptance rules every signer shares
  (signers/acceptance.py: not a CA, a key type we sign with, inside its validity, the key
  against the certificate where public values allow) once, and
  collects what it finds wrong as **findings** (each one of our errors, with its stable code
  and the setting it is about) instead of stopping at the first: `doctor` reports them all in
  one run, without a PIN. What cannot be looked at once an earlier step failed (no module: no
  token) is simply not looked at.
- `Located.require()` raises the first finding (what a signer's caller sees: the same error,
  at the same point, as before any secret is asked).
- `Located.unlock(policy)` asks for the secret through the front end's `SecretPolicy`
  (signers/secretpolicy.py: one order for every secret; whether a prompt is allowed is the
  policy's) once, never empty, never retried, and logs in or
  decrypts, checks the key against the certificate where only the key can tell, and returns
  the `Signer`. A `Located` that is never unlocked must be closed (a token's module stays
  loaded until then); `unlock` hands that duty to the signer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rolesanywhere_hsm.errors import RolesAnywhereError

if TYPE_CHECKING:
    from rolesanywhere_hsm.signers.base import Signer
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy

__all__ = ["Finding", "Located", "about"]


class Finding:
    """One problem `locate` saw: our error, with its code and the setting it is about."""

    __slots__ = ("error",)

    def __init__(self, error: RolesAnywhereError) -> None:
        self.error = error

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def setting(self) -> str | None:
        return self.error.setting

    @property
    def message(self) -> str:
        return self.error.message

    @property
    def hint(self) -> str | None:
        return self.error.hint

    def __repr__(self) -> str:
        return f"Finding({self.code}, setting={self.setting!r}, {self.message!r})"


def about(error: RolesAnywhereError, setting: str) -> RolesAnywhereError:
    """`error`, said to be about `setting` unless it already names one (messages unchanged)."""
    if error.setting is None:
        error.setting = setting
    return error


class Located:
    """What `locate` found for one key; the base every kind's result shares."""

    kind = ""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.certificate: bytes | None = None  # the leaf, DER, when it could be read
        self.chain: tuple[bytes, ...] = ()  # the intermediates that would be sent
        self.secret_source: str | None = None  # where the secret will come from, in words

    def found(self, error: RolesAnywhereError, setting: str) -> None:
        self.findings.append(Finding(about(error, setting)))

    @property
    def ok(self) -> bool:
        return not self.findings

    def require(self) -> Located:
        """Raise the first finding (closing what locate opened); else return self."""
        if self.findings:
            self.close()
            raise self.findings[0].error
        return self

    def unlock(self, policy: SecretPolicy | None = None) -> Signer:
        """Ask for the secret through `policy` (the front end's `SecretPolicy`; without one,
        the config's callback, then the terminal), log in or decrypt, and return the signer
        (the caller closes it)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what locate holds (a loaded module, a public session); idempotent."""

    def __enter__(self) -> Located:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
