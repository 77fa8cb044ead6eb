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


def read_whole(file, buffer_size: int = 8192) -> list[bytes]:
    """A `wsgi.file_wrapper` that reads the file at once and closes it before the response leaves.

    Werkzeug's development server skips closing a response when the client drops the connection while it drains
    the request (a browser giving up on a favicon): the file stays open until the garbage collector finds it, and
    the tests, which treat every warning as an error, fail on the ResourceWarning. The files served here are small."""
    try:
        return [file.read()]
    finally:
        file.close()


def _files_read_whole(app):
    def wrapped(environ, start_response):
        environ["wsgi.file_wrapper"] = read_whole
        return app(environ, start_response)
    return wrapped


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start a threaded WSGI server for `app` (port 0 picks a free one) and return once it accepts requests. Files
    it serves are read whole (`read_whole`)."""
    server = make_server(host, port, _files_read_whole(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"wsgi-{server.server_port}", daemon=True)
    thread.start()
    return RunningServer(server, thread)
