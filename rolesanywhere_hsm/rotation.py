"""Certificate rotation without restart: a renewed certificate is picked up at the next refresh.

Certificates are renewed for months-long processes by cert-manager, SPIRE or a cron job, while
the key stays where it is (in a token it cannot leave). At each refresh a `CredentialSession`
asks `RotationWatch.check()` whether the certificate changed:

* files (certificate, key, intermediates): a change of identity or content stamp (device,
  inode, size, modification time; `os.stat` follows links, so a Kubernetes atomic-writer swap
  of `..data`, a rename over the file and an in-place rewrite all show) means the files are read
  again. Costs one `stat()` per file and refresh;
* a certificate on a token: the certificates with the leaf's CKA_ID are listed in the session
  already open (no login, no PIN); one for the same key from the same issuer (not a CA) with a
  later notAfter is used.

A renewed certificate is used only for the key in use: its public key must equal the current
certificate's (which was checked against the key when the signer opened). Otherwise it is
refused with one log line, and the current pair is kept while it is valid. A file-key signer
whose key file changed too is opened again (no token, no PIN involved).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from typing import Any

from rolesanywhere_hsm.attempts import CertificateSummary, Rotation, certificate_summary
from rolesanywhere_hsm.errors import RolesAnywhereError

__all__ = ["RotationWatch", "file_stamp", "pick_renewal"]

log = logging.getLogger("rolesanywhere_hsm.session")

Stamp = tuple[Any, ...]


def _is_file_ref(ref: str | None) -> bool:
    return bool(ref) and not str(ref).lower().startswith("pkcs11:")


def file_stamp(paths: list[str]) -> Stamp:
    """What identifies the current content of each file: (device, inode, size, mtime in ns),
    or the error number when it cannot be stat'ed (a swap in progress)."""
    stamp: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            stamp.append(exc.errno)
            continue
        stamp.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def _not_after(der: bytes) -> dt.datetime:
    return certificate_summary(der).not_after


def _public_key(der: bytes) -> bytes:
    from rolesanywhere_hsm.x509 import certificate_info

    return certificate_info(der).public_key_info


def _same_issuer_leaf(der: bytes, issuer: bytes) -> bool:
    """A renewal from the same CA: not a CA itself, and issued under the current leaf's issuer
    name. The chain the signer holds is kept on a token rotation, so only such a renewal still
    chains; and a token may hold other certificates for the same key under the same CKA_ID (a
    YubiKey's attestation certificate, issued by the card's f9 key, certifies the slot's key)."""
    from rolesanywhere_hsm.x509 import certificate_info

    info = certificate_info(der)
    return not info.is_ca and info.issuer_raw == issuer


def pick_renewal(current: bytes, found: list[bytes]) -> tuple[bytes | None, bytes | None]:
    """(renewal, refused) among the certificates `found` with the leaf's CKA_ID on a token:
    `renewal` is the one for the same key from the same issuer with the latest notAfter, if
    later than the current one's; `refused` is a new certificate for another key that took the
    current one's place (the current one is gone from the token). Pure over DER values."""
    from rolesanywhere_hsm.x509 import certificate_info

    key = _public_key(current)
    issuer = certificate_info(current).issuer_raw
    others = [der for der in found if der != current]
    same_key = [der for der in others if _public_key(der) == key and _same_issuer_leaf(der, issuer)]
    if same_key:
        latest = max(same_key, key=_not_after)
        if _not_after(latest) > _not_after(current):
            return latest, None
        return None, None
    if others and current not in found:
        return None, others[0]
    return None, None


class RotationWatch:
    """Watches the certificate of one signer; `check(signer)` applies a renewal.

    `reopen` opens a whole new signer (for a key in a file); `notify` hears each `Rotation`.
    """

    def __init__(self, certificate: str | None, private_key: str | None, intermediates: str | None,
                 *, key_in_file: bool, reopen: Callable[[], Any], notify: Callable[[Rotation], None]) -> None:
        self._certificate = certificate if _is_file_ref(certificate) else None
        self._intermediates = intermediates if _is_file_ref(intermediates) else None
        self._key_file = private_key if key_in_file and _is_file_ref(private_key) else None
        self._paths = [p for p in (self._certificate, self._key_file, self._intermediates) if p]
        self._stamp = file_stamp(self._paths)
        self._reopen = reopen
        self._notify = notify
        self._refused: bytes | None = None  # the last refused certificate: logged once

    def restamp(self) -> None:
        """The signer was (re)opened from the files as they are now."""
        self._stamp = file_stamp(self._paths)

    def check(self, signer: Any) -> Any:
        """The signer to use from now on: `signer`, updated in place or replaced (the caller
        closes a replaced one)."""
        if self._paths:
            stamp = file_stamp(self._paths)
            if stamp != self._stamp:
                self._stamp = stamp
                return self._from_files(signer)
        lister = getattr(signer, "token_certificates", None)
        if lister is not None and self._certificate is None:
            return self._from_token(signer, lister)
        return signer

    # -- files -------------------------------------------------------------------------------

    def _from_files(self, signer: Any) -> Any:
        old = signer.certificate
        if self._key_file is not None:  # a key in a file: open it all again (no token, no PIN)
            try:
                fresh = self._reopen()
            except RolesAnywhereError as exc:
                self._refuse(old, None, exc.message)
                return signer
            if fresh.certificate == old and fresh.chain == signer.chain:
                fresh.close()
                return signer
            self._applied(old, fresh.certificate)
            return fresh
        from rolesanywhere_hsm.x509 import load_certificates, order_chain

        try:
            certificates = load_certificates(self._certificate) if self._certificate else [old]
            leaf, extras = certificates[0], certificates[1:]
            if self._intermediates:
                extras = extras + load_certificates(self._intermediates)
            chain = order_chain(leaf, extras) if extras else signer.chain
        except RolesAnywhereError as exc:
            self._refuse(old, None, exc.message)
            return signer
        if leaf == old and chain == signer.chain:
            return signer
        return self._replace(signer, old, leaf, chain)

    # -- tokens ------------------------------------------------------------------------------

    def _from_token(self, signer: Any, lister: Callable[[], list[bytes]]) -> Any:
        old = signer.certificate
        try:
            found = lister()
        except RolesAnywhereError as exc:  # the refresh itself will meet and report it
            log.debug("listing the token's certificates failed: %s", exc.message)
            return signer
        renewal, refused = pick_renewal(old, found)
        if refused is not None and refused != self._refused:
            self._refused = refused
            self._refuse(old, refused, "its public key is not the key in use")
        if renewal is None:
            return signer
        return self._replace(signer, old, renewal, signer.chain)

    # -- both --------------------------------------------------------------------------------

    def _replace(self, signer: Any, old: bytes, leaf: bytes, chain: tuple[bytes, ...]) -> Any:
        try:
            signer.replace_certificate(leaf, chain)
        except RolesAnywhereError as exc:
            self._refuse(old, leaf, exc.message)
            return signer
        if leaf != old:
            self._applied(old, leaf)
        return signer

    def _applied(self, old: bytes, new: bytes) -> None:
        was, now = certificate_summary(old), certificate_summary(new)
        log.warning("certificate rotated: serial %s (not after %s) -> serial %s (not after %s)",
                    was.serial, _when(was), now.serial, _when(now))
        self._notify(Rotation("applied", was, now))

    def _refuse(self, old: bytes, new: bytes | None, reason: str) -> None:
        was = certificate_summary(old)
        try:
            now: CertificateSummary | None = certificate_summary(new) if new is not None else None
        except RolesAnywhereError:
            now = None
        shown = f"serial {now.serial} (not after {_when(now)})" if now else "the new certificate"
        log.error("renewed certificate refused: %s: %s; keeping serial %s (not after %s) while it is valid",
                  shown, reason, was.serial, _when(was))
        self._notify(Rotation("refused", was, now, reason))


def _when(summary: CertificateSummary) -> str:
    return summary.not_after.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
