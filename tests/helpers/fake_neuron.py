"""A stand-in for ``neurons/miner.py`` in the auto-updater tests.

The tests copy it to ``neurons/miner.py`` of a throw-away repository. It reads the version from
that repository's ``hivetrain/__init__.py``, serves ``GET /v1/status`` on ``--axon.port`` with the
version, its own arguments and pid, and stays up until it is signalled. Any other flag is accepted
and only echoed back, so tests can check what the launcher passed through.
"""

import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def read_version() -> str:
    """The ``__version__`` of the repository this copy lives in."""
    text = (REPO / "hivetrain" / "__init__.py").read_text()
    return re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M).group(1)


def axon_port(argv: list) -> int:
    """``--axon.port N`` or ``--axon.port=N`` from the arguments; 0 when absent."""
    for i, arg in enumerate(argv):
        if arg == "--axon.port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--axon.port="):
            return int(arg.split("=", 1)[1])
    return 0


def main() -> None:
    """Serve the status until killed; without a port, just stay up."""
    status = {"version": read_version(), "args": sys.argv[1:], "pid": os.getpid()}
    port = axon_port(sys.argv[1:])
    print(f"fake neuron {status['version']} pid {status['pid']} port {port}", flush=True)
    if not port:
        while True:
            time.sleep(3600)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = json.dumps(status).encode()
            self.send_response(200 if self.path == "/v1/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pm2 stops processes with SIGINT
        pass


if __name__ == "__main__":
    main()
