"""`rolesanywhere-hsm emulator` with bad input: exit 2 and one clear message, also with RAH_DEBUG=1
(which adds the traceback and keeps the code); never the internal-error exit 1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rolesanywhere_hsm.cli import main
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from tests.clirunner import typer_command_kept

ANCHOR = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/0c3a9e57-5b3f-4d8a-9f0e-3f3f6a1b2c3d"


def _cases(tmp: Path, ca_file: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "dir").mkdir()
    os.mkfifo(tmp / "fifo")
    (tmp / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (tmp / "deep_object.json").write_text('{"a":' * 100000 + "1" + "}" * 100000)
    (tmp / "deep.toml").write_text("a = " + "[" * 100000 + "]" * 100000)
    (tmp / "arn_type.json").write_text(json.dumps({"trust_anchors": [{"arn": 5, "certificates": [ca_file.name]}]}))
    (tmp / "nul.json").write_text(json.dumps({"trust_anchors": [{"arn": ANCHOR, "certificates": ["a\x00b"]}]}))
    ca = str(ca_file)
    return {
        "port above range": (["--ca", ca, "--port", "70000"], "--port 70000 is not a TCP port"),
        "negative port": (["--ca", ca, "--port", "-1"], "--port -1 is not a TCP port"),
        "port file is a directory": (["--ca", ca, "--port-file", str(tmp / "dir")], "exists and is not a regular file"),
        "deeply nested JSON": (["--config", str(tmp / "deep.json")], "nested too deeply"),
        "deeply nested JSON object": (["--config", str(tmp / "deep_object.json")], "nested too deeply"),
        "deeply nested TOML": (["--config", str(tmp / "deep.toml")], "nested too deeply"),
        "an ARN that is a number": (["--config", str(tmp / "arn_type.json")], "'arn' has the wrong type (int)"),
        "NUL in a path": (["--config", str(tmp / "nul.json")], "the path contains a NUL character"),
        "config is a FIFO": (["--config", str(tmp / "fifo")], "is a FIFO (named pipe), not a regular file"),
        "CA is a device": (["--ca", "/dev/zero"], "is a character device"),
        "TLS certificate is a FIFO": (["--ca", ca, "--tls-cert", str(tmp / "fifo")], "Cannot read the --tls-cert file"),
        "TLS key is a directory": (["--ca", ca, "--tls-cert", ca, "--tls-key", str(tmp / "dir")], "is a directory"),
    }


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_bad_emulator_input_is_exit_2_with_and_without_debug(
    debug: bool, tmp_path: Path, root_ca: CertificateAuthority, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca_file = write_pem(tmp_path / "ca.pem", root_ca.certificate)
    if debug:
        monkeypatch.setenv("RAH_DEBUG", "1")
    else:
        monkeypatch.delenv("RAH_DEBUG", raising=False)
    for name, (args, message) in _cases(tmp_path, ca_file).items():
        with pytest.raises(SystemExit) as exited, typer_command_kept():  # one typer build, not 12
            main(["emulator", *args])
        captured = capsys.readouterr()
        assert exited.value.code == 2, (name, captured.err)
        assert captured.out == "", name
        assert message in captured.err, (name, captured.err)
        assert ("Traceback (most recent call last)" in captured.err) == debug, (name, captured.err)
        if not debug:
            assert 1 <= captured.err.count("\n") <= 2, (name, captured.err)
