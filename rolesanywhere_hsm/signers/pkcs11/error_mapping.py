"""python-pkcs11's exceptions turned into ours at the boundary, and the one login helper.

`mapped_errors` is a context manager around every call into python-pkcs11 (the pattern of
httpx's `map_httpcore_exceptions`): callers never catch a `pkcs11.exceptions` class themselves
except where a specific answer means something (a wrong PIN, an attribute a module lacks).
Messages use the exception's class name only: its text could, in principle, carry data we
passed in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pkcs11
from pkcs11 import TokenFlag
from pkcs11 import exceptions as p11

from rolesanywhere_hsm.errors import (
    PinIncorrectError,
    PinLockedError,
    RolesAnywhereError,
    TokenError,
)
from rolesanywhere_hsm.signers.pin import ProtectedAuthentication

__all__ = ["already_logged_in", "login", "mapped_errors", "pin_refused"]


@contextlib.contextmanager
def mapped_errors(action: str, default: type[TokenError] = TokenError) -> Iterator[None]:
    """Raise ours `from exc` for any python-pkcs11 error inside, naming what we were doing.

    `default` is the class for failures that are not about the token's presence or the PIN
    (a failed C_Sign stays a TokenSigningError)."""
    try:
        yield
    except RolesAnywhereError:
        raise
    except p11.PinLocked as exc:
        raise PinLockedError(
            f"The token's user PIN is locked ({action}).",
            hint="Unblock it with the PUK or the security officer PIN (e.g. `ykman piv access "
            "unblock-pin`); rolesanywhere-hsm never retries a PIN.",
        ) from exc
    except (p11.TokenNotPresent, p11.DeviceRemoved, p11.TokenNotRecognised) as exc:
        raise TokenError(f"The token went away while {action} ({type(exc).__name__}).",
                         hint="Insert the token again and rerun.") from exc
    except p11.DeviceError as exc:
        # `default`, not TokenError: ykcs11 reports a card's refusal to sign (e.g. SW 6A80)
        # as CKR_DEVICE_ERROR, and a failed C_Sign must stay a TokenSigningError.
        raise default(
            f"The token or its reader failed while {action} (DeviceError).",
            hint="For smart cards and YubiKeys, check that the smart card service (pcscd) runs.",
        ) from exc
    except (p11.UserNotLoggedIn, p11.SessionClosed, p11.SessionHandleInvalid) as exc:
        raise default(f"The token session was lost while {action} ({type(exc).__name__}).",
                      hint="Rerun; the session is reopened on the next attempt.") from exc
    except p11.GeneralError as exc:
        raise default(
            f"The token failed while {action} (GeneralError).",
            hint="On a TPM (tpm2-pkcs11) without tpm2-abrmd, other processes may hold the TPM's "
            "3 object slots: close them, or run tpm2-abrmd; else rerun with --debug.",
        ) from exc
    except p11.PKCS11Error as exc:
        detail = type(exc).__name__
        if type(exc) is p11.PKCS11Error and str(exc).startswith(("OS exception", "Unknown exception")):
            detail = str(exc)  # dlopen's reason: names the file and the loader error
        raise default(f"The token failed while {action} ({detail}).",
                      hint="Rerun with --debug; check the module's own logs.") from exc
    except OSError as exc:
        raise default(f"The PKCS#11 module failed while {action}: {exc.strerror or exc}.",
                      hint="Check the module path and its permissions.") from exc


def pin_refused(token: Any, what: str) -> PinIncorrectError | PinLockedError:
    """PinIncorrect with the tries left that the token's flags tell (re-read after the failure)."""
    flags = 0
    with contextlib.suppress(p11.PKCS11Error):
        flags = token.slot.get_token().flags
    name = token.label
    if flags & TokenFlag.USER_PIN_LOCKED:
        return PinLockedError(
            f"The token {name!r} refused the {what} and has now locked it.",
            hint="Unblock it with the PUK or security officer PIN.",
        )
    if flags & TokenFlag.USER_PIN_FINAL_TRY:
        left = "ONE try is left before the PIN locks"
    elif flags & TokenFlag.USER_PIN_COUNT_LOW:
        left = "few tries are left before the PIN locks"
    else:
        left = "the token does not say how many tries are left"
    return PinIncorrectError(
        f"The token {name!r} refused the {what} ({left}). It was tried once and is not retried.",
        hint="Check the PIN source (URI pin-value/pin-source, RAH_PKCS11_PIN, the prompt) "
        "before running again.",
    )


def already_logged_in(token: Any, *, provisioning: bool) -> TokenError:
    """python-pkcs11 trap 3: login state is per process, so a signer open on the token holds
    it and a second C_Login is refused; name that instead of a module failure."""
    return TokenError(
        f"This process is already logged in to token {token.label!r} (another "
        "signer on the same token is open).",
        hint="Close the signer before provisioning the token." if provisioning else
        "Use one signer per token and process.",
    )


def login(token: Any, pin: Any, *, rw: bool = False) -> Any:
    """C_OpenSession + C_Login (once; a refused PIN is never retried). `pin` None opens a
    public session (no login). `rw`: a read/write session (provisioning writes objects)."""
    if pin is ProtectedAuthentication:
        pin = pkcs11.PROTECTED_AUTH
    with mapped_errors(f"logging in to token {token.label!r}"):
        try:
            return token.open(rw=True, user_pin=pin) if rw else token.open(user_pin=pin)
        except p11.PinIncorrect:
            raise pin_refused(token, "PIN") from None
        except (p11.PinLenRange, p11.PinInvalid):
            raise PinIncorrectError(
                f"The token {token.label!r} refused the PIN's length or characters.",
                hint="It was tried once and is not retried; check the PIN source.",
            ) from None
        except p11.TokenWriteProtected:
            raise TokenError(f"The token {token.label!r} is write-protected.",
                             hint="Provisioning writes to the token; use one that allows it.") from None
        except p11.UserAlreadyLoggedIn:
            raise already_logged_in(token, provisioning=rw) from None
        except p11.UserPinNotInitialized:
            raise TokenError(f"The token {token.label!r} has no user PIN set.",
                             hint="Initialise the user PIN (e.g. `pkcs11-tool --init-pin`).") from None
