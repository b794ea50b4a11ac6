"""The life of the long-running commands (rolesanywhere_hsm/cli/longrun.py, sdnotify.py): sd_notify
over a real unix datagram socket, and real signals, in this process and in real `serve`,
`update` and `emulator` processes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from rolesanywhere_hsm import sdnotify
from rolesanywhere_hsm.cli.longrun import LongRunning, refresh_state
from rolesanywhere_hsm.emulator import Emulator
from tests.cli.test_serve import Serve, server, start_serve  # noqa: F401  (fixtures)

ROOT = Path(__file__).parents[2]


# -- the protocol on plain data ---------------------------------------------------------------


@pytest.mark.parametrize(("value", "address"), [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@/org/systemd/notify/1", b"\0/org/systemd/notify/1"),
    ("", None), ("@", None), ("vsock:2:1234", None), ("relative/path", None),
])
def test_notify_address(value: str, address: str | bytes | None) -> None:
    assert sdnotify.notify_address({"NOTIFY_SOCKET": value}) == address
    assert sdnotify.notify_address({}) is None


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_process() -> None:
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=43) is None
    for bad in ("", "0", "-5", "soon"):
        assert sdnotify.watchdog_interval({"WATCHDOG_USEC": bad}) is None
    assert sdnotify.watchdog_interval({}) is None


def test_refresh_state_without_an_engine() -> None:
    assert "no credentials yet" in refresh_state(None)


# -- a real datagram socket ------------------------------------------------------------------


@dataclass
class Receiver:
    """A unix datagram socket standing in for systemd's notify socket; `on_message` runs in the
    receiving thread as each datagram arrives (to look at the world at that moment)."""

    sock: socket.socket
    name: str  # the NOTIFY_SOCKET value
    on_message: Callable[[str], object] | None = None
    messages: list[tuple[str, object]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            text = data.decode()
            seen = self.on_message(text) if self.on_message else None
            with self.arrived:
                self.messages.append((text, seen))
                self.arrived.notify_all()

    def wait_for(self, needle: str, timeout: float = 30) -> tuple[str, object]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for message, seen in self.messages:
                    if needle in message.splitlines():
                        return message, seen
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {needle} within {timeout} s; got {self.messages}")
                self.arrived.wait(left)

    def texts(self) -> list[str]:
        with self.arrived:
            return [message for message, _ in self.messages]


def _receiver(abstract: bool) -> Iterator[Receiver]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    directory = None
    if abstract:
        name = f"@rah-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name[1:])
    else:
        directory = tempfile.mkdtemp(prefix="rah-n")  # short: sun_path holds 108 bytes
        name = f"{directory}/notify"
        sock.bind(name)
    receiver = Receiver(sock, name)
    thread = threading.Thread(target=receiver.run, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(5)
        if directory:
            Path(name).unlink(missing_ok=True)
            os.rmdir(directory)


@pytest.fixture
def notify_socket() -> Iterator[Receiver]:
    yield from _receiver(abstract=True)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_sends_one_datagram(abstract: bool) -> None:
    for receiver in _receiver(abstract):
        assert sdnotify.notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": receiver.name})
        assert receiver.wait_for("READY=1", 5)[0] == "READY=1\nSTATUS=up"


def test_notify_without_a_socket_or_to_a_dead_one_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    assert not sdnotify.notify("READY=1", {})
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert "could not notify the service manager" in caplog.text


# -- the helper in this process, with real signals --------------------------------------------


@pytest.fixture
def life_env(notify_socket: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.name)
    return notify_socket


def _kill(signum: int) -> None:
    os.kill(os.getpid(), signum)  # delivered to the main thread before os.kill returns to Python code


def test_stop_signals_set_stop_once_and_send_stopping(life_env: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    called: list[int] = []
    with LongRunning("t", prefix="t: ", loggers=()) as life:
        life.on_stop(lambda: called.append(1))
        life.ready("up")
        assert life_env.wait_for("READY=1")[0] == "READY=1\nSTATUS=up"
        _kill(signal.SIGTERM)
        assert life.wait(5)
        life_env.wait_for("STOPPING=1")
        _kill(signal.SIGINT)  # a second stop while stopping: logged, nothing else
        assert called == [1]
    err = capsys.readouterr().err
    assert "t: SIGTERM: stopping" in err
    assert "t: SIGINT while stopping: already stopping" in err
    assert life_env.texts().count("STOPPING=1") == 1


def test_a_signal_taken_by_another_thread_ends_the_wait_at_once(life_env: Receiver) -> None:
    """The kernel may hand a process's signal to any thread; the main thread blocked in
    `wait()` must still see it at once (it used to wait until its timeout ran out)."""
    def signal_from_a_worker() -> None:
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # the C handler runs in this thread

    with LongRunning("t", prefix="t: ", loggers=()) as life:
        life.ready("up")
        worker = threading.Thread(target=signal_from_a_worker)
        started = time.monotonic()
        worker.start()
        assert life.wait(20)
        assert time.monotonic() - started < 5
        worker.join()


def test_sighup_and_sigusr1_are_logged_and_the_command_keeps_running(
        life_env: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    with LongRunning("t", prefix="t: ", loggers=(), state=lambda: "3 things done") as life:
        life.ready("up")
        _kill(signal.SIGHUP)
        _kill(signal.SIGUSR1)
        assert not life.wait(0.05)
    err = capsys.readouterr().err
    assert "t: SIGHUP: nothing to reload, still running" in err
    assert "t: running: 3 things done" in err


def test_sigint_before_ready_interrupts_and_handlers_come_back(life_env: Receiver) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)}
    with pytest.raises(KeyboardInterrupt), LongRunning("t", prefix="t: ", loggers=()):
        _kill(signal.SIGINT)  # a person at a PIN prompt who wants out
    assert {s: signal.getsignal(s) for s in before} == before
    assert life_env.wait_for("STOPPING=1")
    assert not any("READY=1" in t for t in life_env.texts())


def test_the_log_handler_goes_with_the_command(life_env: Receiver) -> None:
    logger = logging.getLogger("rolesanywhere_hsm.test_longrun")
    handlers = list(logger.handlers)
    with LongRunning("t", prefix="t: ", loggers=(logger.name,)):
        assert len(logger.handlers) == len(handlers) + 1
    assert logger.handlers == handlers


@pytest.mark.slow
def test_watchdog_pings_every_half_watchdog_usec(life_env: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    with LongRunning("t", prefix="t: ", loggers=()):
        time.sleep(0.65)
    pings = life_env.texts().count("WATCHDOG=1")
    assert 4 <= pings <= 7, life_env.texts()
    time.sleep(0.3)
    assert life_env.texts().count("WATCHDOG=1") == pings  # stopped with the command


# -- real processes ---------------------------------------------------------------------------


SLOW_SHUTDOWN = textwrap.dedent("""
    import sys, time
    from rolesanywhere_hsm.cli.longrun import LongRunning
    with LongRunning("t", prefix="t: ", loggers=()) as life:
        life.ready("up")
        print("ready", file=sys.stderr, flush=True)
        life.wait()
        time.sleep(1.5)  # a slow shutdown (a token logout, answers in progress)
    print("done", file=sys.stderr, flush=True)
""")


def _wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if process.poll() is not None and text not in path.read_text():
            raise AssertionError(f"exited ({process.returncode}) before {text!r}: {path.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} within {timeout} s: {path.read_text()}")
        time.sleep(0.02)


@pytest.mark.slow
def test_a_second_ctrl_c_during_a_slow_shutdown_still_exits_0(tmp_path: Path) -> None:
    err = tmp_path / "err"
    with err.open("w") as stream:
        process = subprocess.Popen([sys.executable, "-c", SLOW_SHUTDOWN], stderr=stream, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait_for_text(err, "ready", process)
        process.send_signal(signal.SIGINT)
        _wait_for_text(err, "SIGINT: stopping", process)
        process.send_signal(signal.SIGINT)  # the second Ctrl-C, 1.5 s before the shutdown ends
        assert process.wait(30) == 0, err.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    text = err.read_text()
    assert "t: SIGINT while stopping: already stopping" in text
    assert text.rstrip().endswith("done"), text


@pytest.mark.slow
def test_serve_is_ready_only_once_the_first_credentials_are_held_and_stops_on_sigterm(
        server: Emulator, start_serve: Callable[..., Serve], softhsm_env: dict[str, str],
        notify_socket: Receiver) -> None:
    # The first two CreateSession calls fail (503, retried): credentials come a while after the
    # port is bound. At the moment READY=1 arrives, the emulator must already have issued them.
    server.inject_failures([503, 503])
    notify_socket.on_message = lambda text: len(server.issued)
    serve = start_serve(server, env={**softhsm_env, "NOTIFY_SOCKET": notify_socket.name})
    message, issued_then = notify_socket.wait_for("READY=1")
    assert issued_then == 1, notify_socket.messages
    assert len(server.requests) == 3
    assert message.startswith("READY=1\nSTATUS=serving on http://127.0.0.1:")
    assert httpx.get(f"{serve.url}/healthz").status_code == 200
    assert "STOPPING=1" not in notify_socket.texts()

    serve.process.send_signal(signal.SIGHUP)  # a log rotator's HUP: logged, keeps serving
    serve.process.send_signal(signal.SIGUSR1)  # the state, on stderr
    deadline = time.monotonic() + 30
    while "next refresh at" not in serve.stderr and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{serve.url}/healthz").status_code == 200
    assert serve.process.poll() is None
    assert "serve: SIGHUP: nothing to reload, still running" in serve.stderr
    assert "1 fetched" in serve.stderr and "credentials usable until" in serve.stderr

    serve.process.send_signal(signal.SIGINT)
    serve.process.send_signal(signal.SIGINT)  # a second Ctrl-C: still a clean exit 0
    assert serve.process.wait(30) == 0, serve.stderr
    notify_socket.wait_for("STOPPING=1")
    assert notify_socket.texts()[-1] == "STOPPING=1"
    assert notify_socket.texts().count("READY=1" + message[len("READY=1"):]) == 1
    assert "rolesanywhere-hsm serve stopped" in serve.stderr


@pytest.mark.slow
def test_serve_sends_stopping_on_sigterm_and_no_ready_when_the_first_fetch_fails(
        server: Emulator, start_serve: Callable[..., Serve], softhsm_env: dict[str, str],
        softhsm_token, intermediate_ca, notify_socket: Receiver, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    serve = start_serve(server, env={**softhsm_env, "NOTIFY_SOCKET": notify_socket.name})
    notify_socket.wait_for("READY=1")
    serve.process.send_signal(signal.SIGTERM)
    assert serve.process.wait(30) == 0
    notify_socket.wait_for("STOPPING=1")

    from rolesanywhere_hsm._dev.devpki import write_pem

    chain = write_pem(tmp_path / "chain.pem", intermediate_ca.certificate)
    for receiver in _receiver(abstract=True):
        result = subprocess.run(
            [sys.executable, "-m", "rolesanywhere_hsm", "serve",
             "--certificate", softhsm_token.uri_for("ec-p256", type="cert"), "--intermediates", str(chain),
             "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
             "--role-arn", "arn:aws:iam::123456789012:role/not-in-the-profile", "--endpoint", server.url,
             "--port", "0"],
            env={**softhsm_env, "NOTIFY_SOCKET": receiver.name}, capture_output=True, text=True,
            timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
        assert result.returncode == 6, result.stderr
        receiver.wait_for("STOPPING=1")
        assert not any("READY=1" in t for t in receiver.texts()), receiver.texts()


@pytest.mark.slow
def test_update_is_ready_once_the_file_is_written(
        server: Emulator, softhsm_token, softhsm_env: dict[str, str], intermediate_ca,  # type: ignore[no-untyped-def]
        notify_socket: Receiver, tmp_path: Path) -> None:
    from rolesanywhere_hsm._dev.devpki import write_pem

    credentials = tmp_path / "credentials"
    notify_socket.on_message = lambda text: credentials.exists()
    chain = write_pem(tmp_path / "chain.pem", intermediate_ca.certificate)
    err = tmp_path / "err"
    with err.open("w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "rolesanywhere_hsm", "update", "--profile", "p",
             "--certificate", softhsm_token.uri_for("ec-p256", type="cert"), "--intermediates", str(chain),
             "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
             "--role-arn", server.role_arn, "--endpoint", server.url],
            env={**softhsm_env, "NOTIFY_SOCKET": notify_socket.name,
                 "AWS_SHARED_CREDENTIALS_FILE": str(credentials)},
            stderr=stream, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        message, written_then = notify_socket.wait_for("READY=1", 60)
        assert written_then is True
        assert message == "READY=1\nSTATUS=profile p written"
        process.send_signal(signal.SIGUSR1)
        _wait_for_text(err, "1 fetched", process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, err.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    notify_socket.wait_for("STOPPING=1")
    assert "rolesanywhere-hsm update: SIGTERM: stopping" in err.read_text()


@pytest.mark.slow
def test_emulator_is_ready_once_listening_and_survives_sighup(root_ca, notify_socket: Receiver,  # type: ignore[no-untyped-def]
                                                                tmp_path: Path) -> None:
    from rolesanywhere_hsm._dev.devpki import write_pem

    ca = write_pem(tmp_path / "ca.pem", root_ca.certificate)
    port_file = tmp_path / "port"
    notify_socket.on_message = lambda text: port_file.exists()
    err = tmp_path / "err"
    with err.open("w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "rolesanywhere_hsm", "emulator", "--ca", str(ca), "--port-file", str(port_file)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": notify_socket.name},
            stderr=stream, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        message, listening_then = notify_socket.wait_for("READY=1", 60)
        assert listening_then is True and message.startswith("READY=1\nSTATUS=listening on http://127.0.0.1:")
        process.send_signal(signal.SIGHUP)
        process.send_signal(signal.SIGUSR1)
        _wait_for_text(err, "requests kept", process)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, err.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    notify_socket.wait_for("STOPPING=1")
