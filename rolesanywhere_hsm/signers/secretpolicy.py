"""`SecretPolicy`: one order for every secret, and the front end's choice of who may prompt.

Three secrets unlock a key: a token's user PIN, the password of an encrypted key file
(PKCS#8 or PKCS#12) and the password of a TPM key file. Each is asked for in the same order,
first answer wins (docs/pkcs11.md, "PIN sources, in order"):

1. an explicit value (`--pkcs8-password`, `--tpm-key-password`, a keyword of the library);
2. the `pkcs11:` URI's `pin-value`, then its `pin-source` (a token PIN only);
3. that secret's environment variable (`RAH_PKCS11_PIN`, `RAH_PKCS8_PASSWORD`,
   `RAH_TPM_KEY_PASSWORD`);
4. a token's protected authentication path (PIN pad): log in without a PIN from us;
5. the caller's callback;
6. a prompt, when the front end allows one.

Who may prompt is not the signer's business: the command line prompts on the controlling
terminal from the main thread (`SecretPolicy.terminal()`); `boto3_session`, `create_session`
and `CredentialSession` never prompt unless their caller gives a callback or a policy that
prompts (`SecretPolicy.unattended()`), and when no source answers they say how to give the
secret instead of opening `/dev/tty` in someone else's process. A prompt is never shown from
a background thread (a refresh): it fails at once.

The invariants the lockout tests pin hold here for every secret: each source is consulted at
most once per `resolve` (a policy made with `remember=True` asks its callback or prompt once
for its whole life, and `forget()` drops the answer when the token refused it); a secret that
guards a retry counter (a token PIN, a TPM key's password) is never returned empty, whichever
source gave it; the policy is only consulted by `Located.unlock`, after the selection
succeeded; and nothing here retries. A secret is returned, never stored in a message or a
`repr`.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable, Mapping

from rolesanywhere_hsm.errors import PinUnavailableError
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.signers.pin import (
    PIN_ENV_VAR,
    PinSourceKind,
    ProtectedAuthentication,
    _ProtectedAuthentication,
    prompt_on_tty,
    read_pin_source,
)

__all__ = [
    "PKCS8_PASSWORD",
    "TOKEN_PIN",
    "TPM_KEY_PASSWORD",
    "PinRequest",
    "SecretKind",
    "SecretPolicy",
    "SecretRequest",
    "SecretSource",
    "resolve_pin",
    "terminal_prompt",
]

Prompt = Callable[[str], str]


class SecretSource(enum.Enum):
    """Which step of the order gave the secret (the names match `PinSourceKind`'s)."""

    EXPLICIT = "explicit"
    URI_PIN_VALUE = "pin-value"
    URI_PIN_SOURCE = "pin-source"
    ENVIRONMENT = "environment"
    PROTECTED_PATH = "protected-path"
    CALLBACK = "callback"
    PROMPT = "prompt"


class SecretKind(Record):
    """One of the three secrets: its variable, the option that gives it, and its wording.

    `guards_counter`: a wrong value costs a try the device counts (a token's PIN, a TPM key's
    password), so an empty one is refused before it is sent. A key file's password does not
    (the decryption is local, and a PKCS#12 file may well have an empty password).
    `sources` names each step in messages; `how` says how to give the secret without a prompt.
    """

    __slots__ = ("name", "env_var", "setting", "guards_counter", "sources", "how", "prompt_fix", "empty")
    _compared = __slots__
    name: str
    env_var: str
    setting: str
    guards_counter: bool
    sources: Mapping[SecretSource, str]
    how: str
    prompt_fix: str | None  # the "no terminal" hint, when it can name the exact option
    empty: tuple[str, str] | None  # (message with {source} and {subject}, hint)

    def __init__(self, name: str, env_var: str, setting: str, guards_counter: bool,
                 sources: Mapping[SecretSource, str], how: str, prompt_fix: str | None = None,
                 empty: tuple[str, str] | None = None) -> None:
        self._set(name=name, env_var=env_var, setting=setting, guards_counter=guards_counter,
                  sources=sources, how=how, prompt_fix=prompt_fix, empty=empty)

    def source_words(self, source: SecretSource) -> str:
        return self.sources[source]


_CALLER = {SecretSource.CALLBACK: "the caller's secret callback", SecretSource.PROMPT: "the terminal prompt"}

TOKEN_PIN = SecretKind(
    name="PIN", env_var=PIN_ENV_VAR, setting="certificate", guards_counter=True,
    sources={SecretSource[kind.name]: kind.value for kind in PinSourceKind}
    | {SecretSource.EXPLICIT: "the PIN given to the call"},
    how=f"Give it with pin-source=file:/path (or env:NAME, cmd:program) in the pkcs11: URI, the "
    f"{PIN_ENV_VAR} environment variable, or a secret callback.",
)
PKCS8_PASSWORD = SecretKind(
    name="key file password", env_var="RAH_PKCS8_PASSWORD", setting="pkcs8-password",
    guards_counter=False,
    sources={SecretSource.EXPLICIT: "--pkcs8-password", SecretSource.ENVIRONMENT: "RAH_PKCS8_PASSWORD",
             **_CALLER},
    how="Give it with --pkcs8-password (pkcs8_password= in Python), the RAH_PKCS8_PASSWORD "
    "environment variable, or a secret callback.",
    prompt_fix="Give the key file's password with --pkcs8-password or RAH_PKCS8_PASSWORD.",
)
TPM_KEY_PASSWORD = SecretKind(
    name="TPM key password", env_var="RAH_TPM_KEY_PASSWORD", setting="tpm-key-password",
    guards_counter=True,
    sources={SecretSource.EXPLICIT: "--tpm-key-password", SecretSource.ENVIRONMENT: "RAH_TPM_KEY_PASSWORD",
             **_CALLER},
    how="Give it with --tpm-key-password (tpm_key_password= in Python), the RAH_TPM_KEY_PASSWORD "
    "environment variable, or a secret callback.",
    prompt_fix="Give the key's password with --tpm-key-password or RAH_TPM_KEY_PASSWORD.",
    empty=("The TPM key password from {source} is empty, but the key file {subject} says the key "
           "has one; it was not sent to the TPM (a wrong try counts toward its lockout).",
           "Give the key's password (RAH_TPM_KEY_PASSWORD, --tpm-key-password or the prompt)."),
)


class SecretRequest(Record):
    """One secret to obtain: which kind, what the person is told ("PIN for token 'ci'"), and
    the values only the key's settings know (an explicit value, the URI's PIN attributes, a
    PIN pad). `setting` is the option the secret belongs to (default: the kind's)."""

    __slots__ = ("kind", "description", "explicit", "pin_value", "pin_source",
                 "protected_authentication_path", "setting", "subject")
    _compared = __slots__
    kind: SecretKind
    description: str
    explicit: str | None
    pin_value: str | None
    pin_source: str | None
    protected_authentication_path: bool
    setting: str | None
    subject: str  # what the secret unlocks, for messages (a key file's path)

    def __init__(self, kind: SecretKind, description: str, explicit: str | None = None,
                 pin_value: str | None = None, pin_source: str | None = None,
                 protected_authentication_path: bool = False, setting: str | None = None,
                 subject: str = "") -> None:
        self._set(kind=kind, description=description, explicit=explicit, pin_value=pin_value,
                  pin_source=pin_source, protected_authentication_path=protected_authentication_path,
                  setting=setting, subject=subject)

    def __repr__(self) -> str:  # neither an explicit value nor a pin-value reaches a traceback
        return (f"SecretRequest({self.kind.name}, {self.description!r}, "
                f"explicit={'<hidden>' if self.explicit is not None else None}, "
                f"pin_value={'<hidden>' if self.pin_value is not None else None}, "
                f"pin_source={self.pin_source is not None}, "
                f"protected_authentication_path={self.protected_authentication_path})")


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _background_error(request: SecretRequest) -> PinUnavailableError:
    return PinUnavailableError(
        f"A secret is needed ({request.description}) in a background refresh, where no prompt "
        "is shown.",
        hint=f"{request.kind.how} Or let the program ask for it at start.",
        setting=request.setting or request.kind.setting,
    )


def terminal_prompt(description: str, *, fix: str | None = None) -> str:
    """The command line's prompt: `/dev/tty` with echo off, from the main thread only (a
    background refresh fails at once instead)."""
    if not _on_main_thread():
        raise _background_error(SecretRequest(TOKEN_PIN, description))
    return prompt_on_tty(description, fix=fix)


_TERMINAL = terminal_prompt


class SecretPolicy:
    """How a front end lets secrets be found: the caller's callback, whether (and how) to
    prompt, and the environment to read. Resolves any of the three secrets in the one order
    (module docstring). Public: pass one to `create_session`, `boto3_session`,
    `CredentialSession` or `Located.unlock`.

    `prompt` is a function given the description that returns what was typed, True for the
    terminal prompt, or None/False for none. `remember=True` keeps what the callback or the
    prompt answered, per kind of secret, for later logins (a long-running front end asks once
    at start and re-logs in from memory); `forget()` drops it.
    """

    def __init__(self, callback: Prompt | None = None, *, prompt: Prompt | bool | None = None,
                 environ: Mapping[str, str] | None = None, remember: bool = False) -> None:
        self.callback = callback
        self.prompt: Prompt | None = _TERMINAL if prompt is True else (prompt or None)
        self.environ = environ
        self.remember = remember
        self._held: dict[str, tuple[str, SecretSource]] = {}
        self._lock = threading.Lock()

    @classmethod
    def terminal(cls, callback: Prompt | None = None, *, environ: Mapping[str, str] | None = None,
                 remember: bool = False) -> SecretPolicy:
        """The command line's policy: every source, then the terminal (main thread only)."""
        return cls(callback, prompt=True, environ=environ, remember=remember)

    @classmethod
    def unattended(cls, callback: Prompt | None = None, *, environ: Mapping[str, str] | None = None,
                   remember: bool = False) -> SecretPolicy:
        """The library's default: every source but the prompt; the error says what to give."""
        return cls(callback, prompt=None, environ=environ, remember=remember)

    @property
    def may_prompt(self) -> bool:
        return self.prompt is not None

    def with_callback(self, callback: Prompt | None) -> SecretPolicy:
        """This policy with `callback` added when it has none (a session given both)."""
        if callback is None or self.callback is not None:
            return self
        return SecretPolicy(callback, prompt=self.prompt, environ=self.environ, remember=self.remember)

    def remembering(self) -> SecretPolicy:
        """This policy, keeping what its callback or prompt answered (a long-lived provider)."""
        if self.remember:
            return self
        return SecretPolicy(self.callback, prompt=self.prompt, environ=self.environ, remember=True)

    def forget(self) -> None:
        """Drop remembered answers (the token refused one: it is never presented again)."""
        with self._lock:
            self._held.clear()

    def resolve(self, request: SecretRequest) -> tuple[str | _ProtectedAuthentication, SecretSource]:
        """The secret and the step that gave it; `ProtectedAuthentication` for a PIN pad.
        Raises `PinUnavailableError` when no step answers, and when the one that answers gives
        an empty secret of a kind that guards a counter (never sent)."""
        value, source = self._first(request)
        if value == "" and request.kind.guards_counter:
            raise _empty_error(request, source)
        return value, source

    def ask(self, request: SecretRequest) -> str:
        """Only the last two steps (callback, prompt): for a signer registered without a
        locator, which takes a plain callback."""
        return self._ask(request)[0]

    def as_callback(self, kind: SecretKind = TOKEN_PIN) -> Prompt:
        """This policy's callback-then-prompt as the plain callback `SignerConfig` carries."""
        return lambda description: self.ask(SecretRequest(kind, description))

    def _first(self, request: SecretRequest) -> tuple[str | _ProtectedAuthentication, SecretSource]:
        if request.explicit is not None:
            return request.explicit, SecretSource.EXPLICIT
        if request.pin_value is not None:
            return request.pin_value, SecretSource.URI_PIN_VALUE
        environ = os.environ if self.environ is None else self.environ
        if request.pin_source is not None:
            return read_pin_source(request.pin_source, environ), SecretSource.URI_PIN_SOURCE
        value = environ.get(request.kind.env_var)
        if value is not None:
            return value, SecretSource.ENVIRONMENT
        if request.protected_authentication_path:
            return ProtectedAuthentication, SecretSource.PROTECTED_PATH
        return self._ask(request)

    def _ask(self, request: SecretRequest) -> tuple[str, SecretSource]:
        kind = request.kind
        with self._lock:
            held = self._held.get(kind.name)
            if held is not None:
                return held
            if self.callback is not None:
                value, source = self.callback(request.description), SecretSource.CALLBACK
            elif self.prompt is None:
                raise _background_error(request) if not _on_main_thread() else PinUnavailableError(
                    f"A secret is needed ({request.description}) and none of its sources gave "
                    "one; this call does not prompt for it.",
                    hint=kind.how, setting=request.setting or kind.setting)
            elif self.prompt is _TERMINAL:
                if not _on_main_thread():
                    raise _background_error(request)
                value, source = prompt_on_tty(request.description, fix=kind.prompt_fix), SecretSource.PROMPT
            else:
                value, source = self.prompt(request.description), SecretSource.PROMPT
            if self.remember and value != "":
                self._held[kind.name] = (value, source)
            return value, source

    def __repr__(self) -> str:
        return (f"SecretPolicy(callback={self.callback is not None}, may_prompt={self.may_prompt}, "
                f"remember={self.remember}, held={len(self._held)})")


def _empty_error(request: SecretRequest, source: SecretSource) -> PinUnavailableError:
    kind = request.kind
    if kind is TOKEN_PIN:
        pin_kind = PinSourceKind[source.name] if source is not SecretSource.EXPLICIT else None
        return PinUnavailableError(
            f"The PIN is empty (from {kind.source_words(source)}); it was not sent to the token, "
            "so no try was spent.",
            hint=_EMPTY_PIN_HINTS.get(pin_kind, "Give the token's user PIN."),
        )
    message, hint = kind.empty or (
        "The {kind} from {source} is empty ({description}); it was not sent.", kind.how)
    return PinUnavailableError(message.format(kind=kind.name, source=kind.source_words(source),
                                              subject=request.subject, description=request.description),
                               hint=hint)


_EMPTY_PIN_HINTS = {
    PinSourceKind.URI_PIN_VALUE: "Write the PIN after pin-value= (or use pin-source).",
    PinSourceKind.URI_PIN_SOURCE: "Check the PIN file (its first line is the PIN), the "
    "variable or the command that pin-source names.",
    PinSourceKind.ENVIRONMENT: f"Set {PIN_ENV_VAR} to the PIN, or unset it to be asked.",
    PinSourceKind.PROTECTED_PATH: "Enter the PIN on the reader's PIN pad.",
    PinSourceKind.CALLBACK: "The secret callback returned an empty string.",
    PinSourceKind.PROMPT: "Type the PIN at the prompt (an empty line is not sent).",
}


# -- the token PIN's long-standing request type ----------------------------------------------


class PinRequest(Record):
    """A token PIN to obtain, with its own callback, prompt and environment: what the PKCS#11
    code passed before `SecretPolicy`; `resolve_pin` runs it through the policy's order.
    `prompt` defaults to the terminal."""

    __slots__ = ("description", "pin_value", "pin_source", "protected_authentication_path", "callback",
                 "environ", "prompt")
    _compared = __slots__
    description: str
    pin_value: str | None
    pin_source: str | None
    protected_authentication_path: bool
    callback: Prompt | None
    environ: Mapping[str, str] | None
    prompt: Prompt | None

    def __init__(self, description: str, pin_value: str | None = None, pin_source: str | None = None,
                 protected_authentication_path: bool = False, callback: Prompt | None = None,
                 environ: Mapping[str, str] | None = None, prompt: Prompt | None = None) -> None:
        self._set(description=description, pin_value=pin_value, pin_source=pin_source,
                  protected_authentication_path=protected_authentication_path, callback=callback,
                  environ=environ, prompt=prompt)

    def __repr__(self) -> str:  # the URI's pin-value must not reach a traceback
        from rolesanywhere_hsm.signers.pin import _shown_source

        return (
            f"PinRequest(description={self.description!r}, "
            f"pin_value={'<hidden>' if self.pin_value is not None else None}, "
            f"pin_source={None if self.pin_source is None else _shown_source(self.pin_source)!r}, "
            f"protected_authentication_path={self.protected_authentication_path})"
        )

    def secret_request(self) -> SecretRequest:
        return SecretRequest(TOKEN_PIN, self.description, pin_value=self.pin_value,
                             pin_source=self.pin_source,
                             protected_authentication_path=self.protected_authentication_path)

    def policy(self) -> SecretPolicy:
        return SecretPolicy(self.callback, prompt=self.prompt or prompt_on_tty, environ=self.environ)


def resolve_pin(request: PinRequest) -> tuple[str | _ProtectedAuthentication, PinSourceKind]:
    """A token PIN through `SecretPolicy`'s order; returns it and where it came from."""
    pin, source = request.policy().resolve(request.secret_request())
    return pin, PinSourceKind[source.name]
