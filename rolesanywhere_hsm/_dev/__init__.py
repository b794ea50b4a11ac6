"""Development tooling, not API: a throwaway SoftHSM2 token builder (`softhsm`), a small test PKI
(`devpki`) and the end-to-end `demo`. The test suite, the benchmarks and `rolesanywhere-hsm demo`
use them; nothing in the credential path imports them (tests/test_import_graph.py keeps them out
of the lower layers), and their names may change at any time."""
