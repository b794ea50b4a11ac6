"""Tests of the signers: file keys, PKCS#11 tokens, URIs, PIN sources, mechanisms."""
