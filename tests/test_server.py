"""The in-thread server that tests and benchmarks run the product and the simulators on."""

from __future__ import annotations

import httpx
from flask import Flask, send_file
from werkzeug.test import EnvironBuilder

from sim.server import serve_in_thread


def file_app(path) -> tuple[Flask, list]:
    app = Flask(__name__)
    opened = []

    @app.get("/file")
    def file():
        opened.append(open(path, "rb"))  # noqa: SIM115 - closed by whoever serves the response
        return send_file(opened[-1], mimetype="image/svg+xml")

    return app, opened


def test_a_served_file_is_closed_before_its_response_leaves(tmp_path):
    """Werkzeug's server skips closing a response whose client dropped the connection (a browser giving up on a
    favicon), and the file's ResourceWarning then fails whichever test the garbage collector meets it in: the file
    is read whole and closed as the app returns, before a byte is sent."""
    path = tmp_path / "icon.svg"
    path.write_bytes(b"<svg/>" * 1000)
    app, opened = file_app(path)
    server = serve_in_thread(app)
    try:
        wsgi = server.server.app  # what the server runs: the app behind its file wrapper
        environ = EnvironBuilder(path="/file").get_environ()
        body = wsgi(environ, lambda status, headers, exc_info=None: None)
        assert opened[-1].closed  # before the server has iterated the response
        assert b"".join(body) == path.read_bytes()
        with httpx.Client() as client:  # and over a real connection
            answer = client.get(f"{server.url}/file")
        assert answer.status_code == 200 and answer.content == path.read_bytes()
        assert answer.headers["content-type"].startswith("image/svg+xml")
    finally:
        server.stop()
