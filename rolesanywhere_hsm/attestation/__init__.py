"""Key attestation: proof from the hardware that a key was generated inside it and cannot leave.

- `yubico`: pure parsing of YubiKey PIV attestation (OIDs, extensions, slots, CSR attributes);
- `tpm_format`: pure parsing of TPM2_Certify statements (TPMS_ATTEST, TPMT_PUBLIC) and our file format;
- `piv`: fetching a PIV key's attestation (ykcs11's objects, or the card over PC/SC via `pcsc`,
  libpcsclite through ctypes);
- `tpm`: TPM2_Certify of a TPM key by an attestation key (tpm2-pytss, the [tpm] extra);
- `verify`: what a CA runs: chain to the roots, same public key, policy; facts for people and JSON;
- `collect`: `attest` and `csr --attest`: whichever of the above the key needs;
- `ca`: the test CA's rule "attested requests only" (verify, then issue with an attested OU).

None of this is imported by credential-process: attestation happens at onboarding and at the CA.
"""
