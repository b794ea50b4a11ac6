"""Real PKCS#11 tokens for the tests: a software TPM behind tpm2-pkcs11 and a virtual PIV card
behind pcscd, each driven through its real PKCS#11 module (no mocks)."""
