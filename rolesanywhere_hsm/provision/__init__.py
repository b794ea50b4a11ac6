"""From a blank token to a usable key: generate a key pair inside a token (`keygen`), have that
key sign a certificate request (`csr`), and store the CA's certificate beside it
(`import-certificate`). See docs/onboarding.md for the whole path per token family.

Modules: `keyspec` (PURE: key types, CKA_IDs, public-key comparison), `token` (a logged-in
read/write session on one token, and reading a key's public half), `keygen`, `csr`, `store`.
Nothing here is imported by `credential-process`.
"""
