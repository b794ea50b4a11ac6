"""Every shell block of README.md and docs/*.md (```sh, ```console, ```bash, ```shell) is kept
honest here.

The convention (docs/cli.md, "Shell blocks in these docs"):
- a block preceded by `<!-- not-run: needs ... -->` needs something a test machine lacks (real
  AWS, an HSM, a YubiKey, a real TPM, root): it is not run;
- a block preceded by `<!-- run-by-test: SETUP -->` is run here, in bash with `set -e`, in a temp
  directory and a temp HOME prepared by SETUP (see SETUPS below);
- every other block only shows command lines.

Whatever the mark, every `rolesanywhere-hsm ...` line of every block is parsed against the typer
app: the subcommand must exist and each `--flag` must be one of its options. In a ```console
block, commands are the lines starting with `$ ` (and their `\\` continuations); the other lines
are output.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(\s*)```(sh|console|bash|shell)\s*$")
MARK = re.compile(r"^<!-- (not-run|run-by-test): (.+?) -->$")
PROGRAM = "rolesanywhere-hsm"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    kind: str  # sh, console, ...
    text: str
    mark: str | None  # "not-run", "run-by-test" or None
    reason: str  # the mark's text

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """The block's commands, continuations joined; output lines of a console block dropped."""
        out: list[str] = []
        current: str | None = None
        for raw in self.text.splitlines():
            line = raw.strip()
            if current is not None:
                current += " " + line.rstrip("\\").strip()
                if not line.endswith("\\"):
                    out.append(current)
                    current = None
                continue
            if self.kind == "console":
                if not line.startswith("$ "):
                    continue  # output, or a comment about a step
                line = line[2:]
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                current = line.rstrip("\\").strip()
            else:
                out.append(line)
        if current is not None:
            out.append(current)
        return out


def blocks() -> list[Block]:
    found = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            match = FENCE.match(lines[index])
            if match:
                end = index + 1
                while not lines[end].strip().startswith("```"):
                    end += 1
                before = [line for line in lines[max(0, index - 3):index] if line.strip()]
                mark = MARK.match(before[-1].strip()) if before else None
                found.append(Block(path, index + 1, match.group(2), "\n".join(lines[index + 1:end]),
                                   mark.group(1) if mark else None, mark.group(2) if mark else ""))
                index = end
            index += 1
    return found


BLOCKS = blocks()


def test_blocks_are_found_and_marks_are_known() -> None:
    assert len(BLOCKS) >= 30
    for block in BLOCKS:
        if block.mark == "not-run":
            assert block.reason.startswith("needs "), block.name
        if block.mark == "run-by-test":
            assert block.reason in SETUPS, f"{block.name}: unknown setup {block.reason!r}"
    assert any(block.mark == "run-by-test" for block in BLOCKS)
    # the parse check below has lines to check: a change to the block reader cannot empty it
    assert sum(len(list(tool_invocations(c))) for block in BLOCKS for c in block.commands()) >= 25


# ---------------------------------------------------------------------------------------------
# Parse every rolesanywhere-hsm line against the typer app


@functools.cache  # one build (about 0.1 s of CPU time) for every line checked
def _click_root():  # type: ignore[no-untyped-def]
    import typer.main

    from rolesanywhere_hsm.cli.typer_app import app

    return typer.main.get_command(app)


def tool_invocations(command: str) -> Iterator[list[str]]:
    """The argument lists after each `rolesanywhere-hsm` in a shell command line (also inside
    `$(...)` and after `&&`, `|`, `;`)."""
    words = shlex.split(command.replace("$(", " ").replace(")", " "), comments=True)
    current: list[str] | None = None
    for word in words:
        if word in ("&&", "||", "|", ";") or word.endswith(";"):
            if current is not None:
                yield current
            current = None
            continue
        if word == PROGRAM:
            if current is not None:
                yield current
            current = []
        elif current is not None:
            current.append(word)
    if current is not None:
        yield current


def check_invocation(args: list[str]) -> list[str]:
    """What is wrong with `rolesanywhere-hsm ARGS` as a command line (empty: nothing)."""
    command = _click_root()
    path = []
    while hasattr(command, "commands"):
        if not args or args[0].startswith("-"):
            if args and args[0] in ("--help", "--version"):
                return []
            return [f"no subcommand after {' '.join([PROGRAM, *path])}"]
        name, args = args[0], args[1:]
        if name not in command.commands:
            return [f"{' '.join([PROGRAM, *path])} has no subcommand {name!r}"]
        command, path = command.commands[name], [*path, name]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    known.add("--help")
    problems = []
    for word in args:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            if flag not in known:
                problems.append(f"{' '.join([PROGRAM, *path])} has no option {flag}")
    return problems


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_block_command_lines_parse(block: Block) -> None:
    problems = []
    for command in block.commands():
        for args in tool_invocations(command):
            problems += check_invocation(args)
    assert problems == [], block.name


def test_the_parse_check_can_fail() -> None:
    assert check_invocation(["credential-process", "--certificate", "x"]) == []
    assert check_invocation(["cache", "clear"]) == []
    assert check_invocation(["credential-proces"]) != []
    assert check_invocation(["keygen", "--module", "x"]) != []
    assert check_invocation(["cache"]) != []
    assert list(tool_invocations("X=$(rolesanywhere-hsm tokens --json) && rolesanywhere-hsm version")) == [
        ["tokens", "--json"], ["version"]]


# ---------------------------------------------------------------------------------------------
# Run the blocks marked run-by-test


def _softhsm_walk(home: Path, work: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Nothing: the onboarding guide's SoftHSM blocks make their own configuration, token and
    CA from an empty HOME. Only SoftHSM's module has to be where the block says it is."""
    request.getfixturevalue("softhsm_module")
    if not Path("/usr/lib/softhsm/libsofthsm2.so").exists():
        pytest.skip("the docs name /usr/lib/softhsm/libsofthsm2.so; SoftHSM is elsewhere here")
    return {}


def _ca_files(home: Path, work: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """What the text before the onboarding guide's openssl block says the reader has: their
    CA's ca.pem and ca.key, and workload.csr (a request, here from a file key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem

    ca = CertificateAuthority.create("Docs Test CA", "p256")
    write_pem(work / "ca.pem", ca.certificate)
    write_pem(work / "ca.key", ca.key, mode=0o600)
    key = new_private_key("p256")
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workload-1")]))
           .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    (work / "workload.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return {}


def _attested_csr(home: Path, work: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """attestation-roots.pem, ca.pem, ca.key and workload.csr: a request made by our `csr`
    (library call) whose key was "attested" by a stand-in YubiKey (the virtual card's f9 key and
    Yubico's extensions, PIN policy once), as docs/attestation.md's CA script expects."""
    from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key, write_pem
    from rolesanywhere_hsm.attestation import yubico
    from rolesanywhere_hsm.provision.csr import make_csr, to_pem
    from tests.vpiv.card import PinPolicy, PivCard, SlotKey, make_attestation_key

    from cryptography.hazmat.primitives.serialization import Encoding

    root = CertificateAuthority.create("Docs Test PIV Attestation Root", "p256")
    write_pem(work / "attestation-roots.pem", root.certificate)
    ca = CertificateAuthority.create("Docs Test CA", "p256")
    write_pem(work / "ca.pem", ca.certificate)
    write_pem(work / "ca.key", ca.key, mode=0o600)
    key = new_private_key("p256")
    key_path = write_pem(work / "workload.key", key, mode=0o600)
    f9 = make_attestation_key(31415926, (root.key, root.certificate))
    card = PivCard({}, attestation=f9)
    attestation = card._issue_attestation(SlotKey(0x9A, key, None, PinPolicy.ONCE))
    extensions = [(yubico.OID_CSR_ATTESTATION, attestation.public_bytes(Encoding.DER)),
                  (yubico.OID_CSR_INTERMEDIATE, f9[1].public_bytes(Encoding.DER))]
    (work / "workload.csr").write_text(to_pem(make_csr(str(key_path), "CN=workload-1",
                                                       extra_extensions=extensions)))
    return {}


SETUPS: dict[str, Callable[[Path, Path, pytest.FixtureRequest], dict[str, str]]] = {
    "softhsm-walk": _softhsm_walk,
    "ca-files": _ca_files,
    "attested-csr": _attested_csr,
}
# Setups whose blocks continue each other, in the order of their file: each block runs after
# the ones before it with the same mark, in the same HOME and directory ("continuing from the
# token above").
CHAINED = {"softhsm-walk"}

CHECKS: dict[str, Callable[[Path, subprocess.CompletedProcess[str]], None]] = {}


def _check_leaf(path: Path) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


def _check_softhsm_walk(work: Path, done: subprocess.CompletedProcess[str]) -> None:
    assert re.search(r"^pkcs11:token=aws;.*object=workload;type=private", done.stdout, re.M), done.stdout
    if (work / "workload.pem").exists():  # the test CA block ran too
        _check_leaf(work / "workload.pem")
        assert re.search(r"^pkcs11:token=aws;.*object=workload;type=cert", done.stdout, re.M), done.stdout
        assert (work / "test-ca" / "ca.key").stat().st_mode & 0o777 == 0o600


def _check_ca_files(work: Path, done: subprocess.CompletedProcess[str]) -> None:
    _check_leaf(work / "workload.pem")


def _check_attested_csr(work: Path, done: subprocess.CompletedProcess[str]) -> None:
    from cryptography import x509

    assert "serial: 31415926" in done.stdout and "pin policy: once" in done.stdout, done.stdout
    cert = x509.load_pem_x509_certificate((work / "workload.pem").read_bytes())
    request = x509.load_pem_x509_csr((work / "workload.csr").read_bytes())
    assert cert.public_key() == request.public_key()
    assert cert.subject.rfc4514_string() == "CN=workload-1,OU=attested-yubikey"


CHECKS.update({"softhsm-walk": _check_softhsm_walk, "ca-files": _check_ca_files,
               "attested-csr": _check_attested_csr})


def clean_environment(home: Path) -> dict[str, str]:
    """What a new user's shell has: a HOME (empty), a PATH on which the installed console
    script is found, a UTF-8 locale. Nothing of the test run's own environment (no RAH_*,
    SOFTHSM2_*, AWS_*, proxies, p11-kit or TPM settings) leaks into a docs block."""
    import sys

    script_dir = Path(sys.executable).parent
    assert (script_dir / PROGRAM).exists(), f"the console script is not installed beside {sys.executable}"
    return {"HOME": str(home), "PATH": f"{script_dir}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT)}  # the worktree's code, not an installed copy


def console_script(text: str) -> str:
    """The shell script a console block runs: `$ ` lines, their continuations and here-documents;
    output lines dropped."""
    out: list[str] = []
    continuing = False
    heredoc_end: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if heredoc_end is not None:
            out.append(raw.strip())
            if line == heredoc_end:
                heredoc_end = None
            continue
        if continuing:
            out.append(line)
        elif line.startswith("$ "):
            out.append(line[2:])
        else:
            continue
        continuing = line.endswith("\\")
        here = re.search(r"<<-?\s*'?(\w+)'?", line)
        if here:
            heredoc_end = here.group(1)
    return "\n".join(out)


def test_console_script() -> None:
    text = "$ cat > x <<'EOF'\na = 1\nEOF\n$ echo a \\\n    b\noutput line\n  # a comment\n"
    assert console_script(text) == "cat > x <<'EOF'\na = 1\nEOF\necho a \\\nb"


RUN = [block for block in BLOCKS if block.mark == "run-by-test"]


@pytest.mark.parametrize("block", RUN, ids=lambda block: block.name)
def test_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    extra = SETUPS[block.reason](home, work, request)
    env = dict(clean_environment(home), **extra)
    chain = [b for b in RUN if b.path == block.path and b.reason == block.reason
             and b.line <= block.line] if block.reason in CHAINED else [block]
    script = "\n".join(console_script(b.text) if b.kind == "console" else b.text for b in chain)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                          cwd=work, env=env, timeout=120, stdin=subprocess.DEVNULL,
                          start_new_session=True)
    assert done.returncode == 0, f"{block.name}\n{script}\n--- stderr:\n{done.stderr}"
    CHECKS[block.reason](work, done)
