"""Odd but possible answers, read by both HTTP paths with the same outcome: h11 (under httpx)
is the reference for what an answer's framing means and which ones are refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rolesanywhere_hsm.arn import validate_session_arns
from rolesanywhere_hsm.client import RetryPolicy, RolesAnywhereClient
from rolesanywhere_hsm.deadline import Deadline
from rolesanywhere_hsm.errors import RolesAnywhereError
from rolesanywhere_hsm.signers import SignerConfig, load_signer
from rolesanywhere_hsm.signers.base import Signer
from tests.fixtures.faults import FaultServer, credentials_answer

ARNS = validate_session_arns(
    "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/0c3a9e57-5b3f-4d8a-9f0e-3f3f6a1b2c3d",
    "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/9a8b7c6d-1111-2222-3333-444455556666",
    "arn:aws:iam::111122223333:role/Workload")
GOOD = credentials_answer()
BODY = GOOD[GOOD.index(b"\r\n\r\n") + 4:]
DENIED = b'{"message": "no"}'


def head(status: str, *lines: str) -> bytes:
    return ("\r\n".join([status, *lines]) + "\r\n\r\n").encode("latin-1")


ANSWERS = {
    "interim 100 first": head("HTTP/1.1 100 Continue") + head("HTTP/1.1 201 Created", f"Content-Length: {len(BODY)}") + BODY,
    "HTTP/1.0, close-delimited": head("HTTP/1.0 201 Created") + BODY,
    "no reason phrase": head("HTTP/1.1 201", f"Content-Length: {len(BODY)}") + BODY,
    "repeated equal lengths": head("HTTP/1.1 201 Created", f"Content-Length: {len(BODY)}",
                                   f"Content-Length: {len(BODY)}") + BODY,
    "conflicting lengths": head("HTTP/1.1 201 Created", f"Content-Length: {len(BODY)}", "Content-Length: 3") + BODY,
    "chunked in capitals": head("HTTP/1.1 201 Created", "Transfer-Encoding: Chunked")
    + b"%X\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
    "gzip then chunked": head("HTTP/1.1 201 Created", "Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n",
    "a header line without a colon": head("HTTP/1.1 201 Created", "Broken header", f"Content-Length: {len(BODY)}") + BODY,
    "a folded header": head("HTTP/1.1 201 Created", "X-A: a", " b", f"Content-Length: {len(BODY)}") + BODY,
    "a status that is not a number": head("HTTP/1.1 2O1 Created", f"Content-Length: {len(BODY)}") + BODY,
    "HTTP/2 on the status line": head("HTTP/2 201 Created", f"Content-Length: {len(BODY)}") + BODY,
    "204 with no body": head("HTTP/1.1 204 No Content"),
    "chunked 403": head("HTTP/1.1 403 Forbidden", "Transfer-Encoding: chunked", "X-Amzn-ErrorType: AccessDeniedException")
    + b"%x\r\n" % len(DENIED) + DENIED + b"\r\n0\r\n\r\n",
    "bytes after the body": head("HTTP/1.1 201 Created", f"Content-Length: {len(BODY)}") + BODY + b"garbage",
    "a bad chunk size": head("HTTP/1.1 201 Created", "Transfer-Encoding: chunked") + b"zz\r\n" + BODY,
    "nothing at all": b"",
    "length and chunked": head("HTTP/1.1 201 Created", "Content-Length: 3", "Transfer-Encoding: chunked")
    + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
    "a length with a sign": head("HTTP/1.1 201 Created", f"Content-Length: +{len(BODY)}") + BODY,
    "a length in hex": head("HTTP/1.1 201 Created", "Content-Length: 0x10") + BODY,
    "a space before the colon": head("HTTP/1.1 201 Created", f"Content-Length : {len(BODY)}") + BODY,
    "a chunk size with spaces": head("HTTP/1.1 201 Created", "Transfer-Encoding: chunked")
    + b"%x \r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
    "a chunk without its CRLF": head("HTTP/1.1 201 Created", "Transfer-Encoding: chunked")
    + b"%x\r\n" % len(BODY) + BODY + b"0\r\n\r\n",
    "a body cut short": head("HTTP/1.1 201 Created", f"Content-Length: {len(BODY) + 10}") + BODY,
    "LF line ends": head("HTTP/1.1 201 Created", f"Content-Length: {len(BODY)}").replace(b"\r\n", b"\n") + BODY,
}


@pytest.fixture(scope="module")
def signer(leaf_files: dict[str, Any]) -> Iterator[Signer]:
    files = leaf_files["p256"]
    with load_signer(SignerConfig(str(files.certificate), str(files.key))) as opened:
        yield opened


def outcome(payload: bytes, signer: Signer, path: str) -> tuple[Any, ...]:
    with FaultServer("script", script=[payload] * 3) as server:
        try:
            with RolesAnywhereClient("eu-west-1", endpoint=server.url, trust_env=False, http_client=path,
                                     retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)) as client:
                assert client.http_client == ("httpx" if path == "httpx" else "direct")
                credentials = client.create_session(signer, ARNS, deadline=Deadline.after(3))
        except RolesAnywhereError as exc:
            return (type(exc).__name__, exc.exit_code, exc.message.split(":")[0], server.connections)
        return ("ok", credentials.access_key_id, server.connections)


@pytest.mark.parametrize("name", list(ANSWERS))
def test_both_paths_read_an_answer_the_same_way(name: str, signer: Signer) -> None:
    assert outcome(ANSWERS[name], signer, "auto") == outcome(ANSWERS[name], signer, "httpx")
