"""SecretPolicy: one order for the token PIN and the key passwords, and who may prompt.

Plain data: a policy with a recording callback and prompt, an environment of our own, and
requests for each kind of secret; no token, no terminal."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rolesanywhere_hsm.errors import PinUnavailableError
from rolesanywhere_hsm.signers.pin import ProtectedAuthentication
from rolesanywhere_hsm.signers.secretpolicy import (
    PKCS8_PASSWORD,
    TOKEN_PIN,
    TPM_KEY_PASSWORD,
    SecretKind,
    SecretPolicy,
    SecretRequest,
    SecretSource,
)

from tests.secretasker import SecretAsker

KINDS = [TOKEN_PIN, PKCS8_PASSWORD, TPM_KEY_PASSWORD]


def _every_source(kind: SecretKind, tmp_path: Path, upto: SecretSource) -> tuple[SecretRequest, dict[str, str]]:
    """A request and environment where every source from `upto` down the order answers."""
    order = list(SecretSource)
    on = set(order[order.index(upto):])
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-pin-source\n")
    pin_file.chmod(0o600)
    uri_sources = kind is TOKEN_PIN  # only a token PIN has a URI
    request = SecretRequest(
        kind, f"{kind.name} for the test",
        explicit="from-explicit" if SecretSource.EXPLICIT in on else None,
        pin_value="from-pin-value" if uri_sources and SecretSource.URI_PIN_VALUE in on else None,
        pin_source=f"file:{pin_file}" if uri_sources and SecretSource.URI_PIN_SOURCE in on else None,
        protected_authentication_path=SecretSource.PROTECTED_PATH in on,
    )
    environ = {kind.env_var: "from-environment"} if SecretSource.ENVIRONMENT in on else {}
    return request, environ


EXPECTED = {
    SecretSource.EXPLICIT: "from-explicit",
    SecretSource.URI_PIN_VALUE: "from-pin-value",
    SecretSource.URI_PIN_SOURCE: "from-pin-source",
    SecretSource.ENVIRONMENT: "from-environment",
    SecretSource.PROTECTED_PATH: ProtectedAuthentication,
    SecretSource.CALLBACK: "from-callback",
    SecretSource.PROMPT: "from-prompt",
}


URI_SOURCES = (SecretSource.URI_PIN_VALUE, SecretSource.URI_PIN_SOURCE)
# Only a token PIN has a pkcs11: URI, so the URI's sources are cases for it alone.
ORDER_CASES = [(kind, first) for kind in KINDS for first in SecretSource
               if kind is TOKEN_PIN or first not in URI_SOURCES]


@pytest.mark.parametrize(("kind", "first"), ORDER_CASES,
                         ids=[f"{first.value}-{kind.name}" for kind, first in ORDER_CASES])
def test_the_first_source_in_the_one_order_answers(kind: SecretKind, first: SecretSource, tmp_path: Path) -> None:
    """explicit > URI pin-value > URI pin-source > environment > PIN pad > callback > prompt,
    for every kind of secret; the sources after the one that answers are not consulted."""
    request, environ = _every_source(kind, tmp_path, first)
    callback, prompt = SecretAsker("from-callback"), SecretAsker("from-prompt")
    policy = SecretPolicy(callback if first is not SecretSource.PROMPT else None, prompt=prompt, environ=environ)
    value, source = policy.resolve(request)
    assert (value, source) == (EXPECTED[first], first)
    assert callback.asked == ([request.description] if first is SecretSource.CALLBACK else [])
    assert prompt.asked == ([request.description] if first is SecretSource.PROMPT else [])


def test_the_names_of_the_variables_are_the_documented_ones() -> None:
    assert [k.env_var for k in KINDS] == ["RAH_PKCS11_PIN", "RAH_PKCS8_PASSWORD", "RAH_TPM_KEY_PASSWORD"]


@pytest.mark.parametrize("kind", [TOKEN_PIN, TPM_KEY_PASSWORD], ids=lambda k: k.name)
@pytest.mark.parametrize("source", [SecretSource.EXPLICIT, SecretSource.ENVIRONMENT, SecretSource.CALLBACK,
                                    SecretSource.PROMPT], ids=lambda s: s.value)
def test_an_empty_secret_that_guards_a_counter_is_refused(kind: SecretKind, source: SecretSource) -> None:
    """Whichever source gives it, an empty PIN or TPM key password is refused (never sent),
    and the refusal does not fall through to the next source."""
    prompt = SecretAsker("")
    request = SecretRequest(kind, "secret", explicit="" if source is SecretSource.EXPLICIT else None,
                            subject="/keys/k.tss")
    environ = {kind.env_var: ""} if source is SecretSource.ENVIRONMENT else {}
    policy = SecretPolicy(SecretAsker("") if source is SecretSource.CALLBACK else None, prompt=prompt,
                          environ=environ)
    with pytest.raises(PinUnavailableError, match="empty") as info:
        policy.resolve(request)
    assert kind.source_words(source) in info.value.message
    assert prompt.asked == ([] if source is not SecretSource.PROMPT else ["secret"])


def test_an_empty_key_file_password_is_passed_on() -> None:
    """A key file's password guards no counter, and a PKCS#12 file may have an empty one."""
    policy = SecretPolicy(prompt=SecretAsker(""), environ={})
    assert policy.resolve(SecretRequest(PKCS8_PASSWORD, "Password for k.p12")) == ("", SecretSource.PROMPT)


def test_no_prompt_unless_the_front_end_allows_one_and_the_error_says_how() -> None:
    policy = SecretPolicy.unattended(environ={})
    assert not policy.may_prompt and SecretPolicy.terminal().may_prompt
    for kind in KINDS:
        with pytest.raises(PinUnavailableError, match="this call does not prompt") as info:
            policy.resolve(SecretRequest(kind, f"{kind.name} for the test"))
        error = info.value
        assert kind.env_var in error.hint and "callback" in error.hint
        assert error.setting == kind.setting
    with pytest.raises(PinUnavailableError) as info:
        policy.resolve(SecretRequest(TOKEN_PIN, "PIN for token 'ci'"))
    assert "pin-source" in info.value.hint


def test_a_background_thread_never_prompts() -> None:
    prompt = SecretAsker("typed")
    errors: list[BaseException] = []

    def run() -> None:
        for policy in (SecretPolicy.terminal(environ={}), SecretPolicy.unattended(environ={})):
            try:
                policy.resolve(SecretRequest(TOKEN_PIN, "PIN for token 'ci'"))
            except PinUnavailableError as exc:
                errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert len(errors) == 2 and all("background" in str(e) for e in errors)
    assert prompt.asked == []


def test_a_remembering_policy_asks_once_and_forgets_on_refusal() -> None:
    """A long-running front end asks once at start; re-logins are answered from memory; a
    refused secret is dropped, so it is never presented again from memory."""
    callback = SecretAsker("1234")
    policy = SecretPolicy.unattended(callback, environ={}).remembering()
    request = SecretRequest(TOKEN_PIN, "PIN for token 'ci'")
    assert policy.resolve(request) == ("1234", SecretSource.CALLBACK)
    assert policy.resolve(request) == ("1234", SecretSource.CALLBACK)
    assert len(callback.asked) == 1
    policy.forget()
    policy.resolve(request)
    assert len(callback.asked) == 2
    assert "1234" not in repr(policy)


def test_each_resolve_asks_each_source_at_most_once() -> None:
    callback = SecretAsker("1234")
    policy = SecretPolicy(callback, prompt=SecretAsker("never"), environ={})
    policy.resolve(SecretRequest(TOKEN_PIN, "PIN"))
    assert callback.asked == ["PIN"]


def test_no_secret_in_a_repr() -> None:
    request = SecretRequest(TPM_KEY_PASSWORD, "Password for k", explicit="Sekrit-42", pin_value="Sekrit-43")
    assert "Sekrit" not in repr(request)
