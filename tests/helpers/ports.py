"""A loopback port no process listens on, for tests that need a fixed port or a closed one."""

import socket


def unused_port() -> int:
    """A port the kernel just handed out and took back: free now (a test that binds it later can
    still lose it to another process, which these tests accept)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
