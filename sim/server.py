"""Serve a simulator (or the product) on a real port from a background thread: for tests and benchmarks."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

from werkzeug.serving import BaseWSGIServer, make_server


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the system picks it); whoever binds it next should do so soon."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class RunningServer:
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start a threaded WSGI server for `app` (port 0 picks a free one) and return once it accepts requests."""
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"wsgi-{server.server_port}", daemon=True)
    thread.start()
    return RunningServer(server, thread)
