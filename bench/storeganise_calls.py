"""A delivery's first call to Storeganise, over HTTPS: a client of its own against the worker's kept one.

Every delivery's job first reads its rental again from Storeganise (events are hints), before any lock or unlock.
Until 2026-12-06 each job built a client of its own, so that read opened a TCP connection and negotiated TLS first;
now a worker keeps one client for its warm jobs (`dashboard.clients.kept_storeganise_client`) and the read goes out
on the connection the last job left open. This measures both on this machine: the Storeganise simulator served over
TLS by gunicorn (threaded, connections kept open, as Storeganise's servers would: docs/storeganise.md) with a
certificate made for the run, and BENCH_CALLS reads of one rental [400], in rounds that alternate the two ways.

Localhost has no network between the two, so the figures are the handshake's CPU and this machine's time only: in
production each new connection also costs the round trips of TCP's and TLS's handshakes to Storeganise (two with
TLS 1.3), on the way to the gate. Prints the wall and this process's CPU per read, each way, and their ratio.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.stack import BIN, ROOT, env_int, report, say
from sim.server import free_port

ROUNDS = 8
WARMUP = 20


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the client trusts it through SSL_CERT_FILE, as httpx allows)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def serve(folder: Path, port: int, cert_file: Path, key_file: Path) -> subprocess.Popen:
    env = {**os.environ, "SG_WEBHOOK_URL": "http://127.0.0.1:9/unused"}  # reads send no webhook
    log = open(folder / "sg-sim.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([str(BIN / "gunicorn"), "--workers", "1", "--worker-class", "gthread", "--threads", "4",
                             "--keep-alive", "60", "--bind", f"127.0.0.1:{port}", "--certfile", str(cert_file),
                             "--keyfile", str(key_file), "sim.storeganise:from_environment()"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_up(url: str, cert_file: Path) -> None:
    until = time.monotonic() + 30
    while time.monotonic() < until:
        try:
            if httpx.get(f"{url}/_sim/config", verify=str(cert_file), timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the Storeganise simulator did not answer over TLS")


def main() -> None:
    calls = env_int("BENCH_CALLS", 400)
    with tempfile.TemporaryDirectory(prefix="pti-bench-sg-") as tmp:
        folder = Path(tmp)
        cert_file, key_file = make_certificate(folder)
        os.environ["SSL_CERT_FILE"] = str(cert_file)  # before the product builds its TLS context
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        server = serve(folder, port, cert_file, key_file)
        try:
            wait_up(url, cert_file)
            measure(url, calls)
        finally:
            server.terminate()
            server.wait(10)


def measure(url: str, calls: int) -> None:
    from dashboard import create_app
    from dashboard.clients import close_storeganise_client, kept_storeganise_client, storeganise_client
    from sim.storeganise import DEMO_API_KEY

    app = create_app({"SECRET_KEY": "bench", "ENCRYPTION_KEYS": "ZGVtby1vbmx5LWtleS1kZW1vLW9ubHkta2V5LWRlbW8=",
                      "SQLALCHEMY_DATABASE_URI": "sqlite://", "STOREGANISE_API_URL": f"{url}/api/v1/admin",
                      "STOREGANISE_API_KEY": DEMO_API_KEY})
    rental_id = httpx.get(f"{url}/_sim/state", timeout=10).json()["unitRentals"][0]["id"]

    def own() -> None:  # as each delivery's job did: a client of its own, closed at the job's end
        with storeganise_client() as client:
            client.get_unit_rental(rental_id)

    def kept() -> None:  # as it does now
        kept_storeganise_client().get_unit_rental(rental_id)

    with app.app_context():
        for way in (own, kept):
            for _ in range(WARMUP):
                way()
        per_round = max(1, calls // ROUNDS)
        figures: dict[str, list[tuple[float, float]]] = {"own": [], "kept": []}
        for round_no in range(ROUNDS):
            for way in ((own, kept) if round_no % 2 == 0 else (kept, own)):
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(per_round):
                    way()
                figures[way.__name__].append(((time.perf_counter() - wall) / per_round * 1000,
                                              (time.process_time() - cpu) / per_round * 1000))
        close_storeganise_client(app)
    own_wall, own_cpu = (statistics.median(f[i] for f in figures["own"]) for i in (0, 1))
    kept_wall, kept_cpu = (statistics.median(f[i] for f in figures["kept"]) for i in (0, 1))
    say(f"{ROUNDS} rounds of {per_round} reads each way over TLS on localhost (medians of the rounds): a client of "
        f"its own {own_wall:.2f} ms wall, {own_cpu:.2f} ms CPU a read; the kept client {kept_wall:.2f} ms wall, "
        f"{kept_cpu:.2f} ms CPU")
    report("storeganise_calls", own_wall_ms=f"{own_wall:.2f}", own_cpu_ms=f"{own_cpu:.2f}",
           kept_wall_ms=f"{kept_wall:.2f}", kept_cpu_ms=f"{kept_cpu:.2f}",
           wall_ratio=f"{kept_wall / own_wall:.2f}", cpu_ratio=f"{kept_cpu / own_cpu:.2f}")


if __name__ == "__main__":
    sys.exit(main())
