# SPDX-License-Identifier: GPL-2.0-or-later
"""The tests' one QMP client: commands in order, events collected on the side.

Every read is bounded by the client's timeout.  Used by the aggregation
driver (tests/aggregation) and the patched QEMU's smoke test.
"""

import json
import socket
import time


class QmpError(RuntimeError):
    """A command answered with an error: its class and description."""

    def __init__(self, command, error):
        self.error_class = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"{command}: {self.desc}")


class Qmp:
    def __init__(self, path, timeout=30, alive=lambda: True):
        """Connects to the unix socket at path, retrying while alive() until timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline or not alive():
                    raise
                time.sleep(0.1)
        self.timeout = timeout
        self.sock.settimeout(timeout)
        # Lines are cut by hand, not with a socket file: a file whose read
        # timed out (wait_event) cannot be read again, and a partial line
        # must survive a timeout.
        self._buf = b""
        self.events = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise ConnectionError(f"no QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def _read(self):
        """The next message; the socket's timeout bounds the wait."""
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP socket closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _write(self, msg):
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def command(self, command, **arguments):
        """Sends a command; returns its whole answer ({"return": ...} or {"error": ...})."""
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.settimeout(self.timeout)
        self._write(msg)
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply

    def send(self, command, **arguments):
        """Sends a command without waiting: for one whose answer may never come."""
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._write(msg)

    def execute(self, command, **arguments):
        """Sends a command; returns its result or raises QmpError."""
        reply = self.command(command, **arguments)
        if "error" in reply:
            raise QmpError(command, reply["error"])
        return reply.get("return")

    def wait_event(self, name, timeout):
        """The first event called name (already received or within timeout), or None."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e["event"] == name:
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                reply = self._read()
            except (socket.timeout, TimeoutError):
                return None
            if "event" in reply:
                self.events.append(reply)

    def take_event(self, name, timeout):
        """As wait_event(), but the event returned is consumed: the next
        call returns the next one."""
        event = self.wait_event(name, timeout)
        if event is not None:
            self.events.remove(event)
        return event

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def expect_refused(qmp, check, command, cases, say=print):
    """Each (arguments, why) of @cases must be refused by @command, the
    error saying @why; returns how many were.  @check is the test's checker
    (its expect(ok, message) records a failure), @say its log."""
    refused = 0
    for arguments, why in cases:
        try:
            qmp.execute(command, **arguments)
            check.expect(False, f"{command} {arguments} was accepted")
        except RuntimeError as e:
            say(f"refused as it should be: {arguments}: {e}")
            refused += check.expect(why in str(e), f"refusal of {command} {arguments} does "
                                    f"not say '{why}': {e}")
    return refused
