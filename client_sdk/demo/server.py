"""Start a real market server process on loopback for the demo (an institution would run
``lwm serve`` the same way), and stop it afterwards."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: ``lwm serve`` flags that turn the per-address rate limits off: for a server whose only
#: client is this machine's own experiment or benchmark (one address sending thousands).
NO_ADDRESS_LIMIT_ARGS = ["--rate-limit-address", "off", "--rate-limit-address-text", "off",
                         "--rate-limit-address-publish", "off",
                         "--rate-limit-address-report", "off"]


def stop_process(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """Ask a child process to stop; kill it when it has not within ``grace`` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServerProcess:
    def __init__(self, data_dir: Path, port: int | None = None, workers: int = 1,
                 extra_args: list[str] | None = None, *, address_limits: bool = True):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "market_server", "serve", "--data-dir",
                     str(self.data_dir), "--port", str(self.port), "--workers", str(workers),
                     *(extra_args or []), *([] if address_limits else NO_ADDRESS_LIMIT_ARGS)]
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "server.log"

    def __enter__(self) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.time() + 60
        # one client for the whole wait: a new one per poll builds a TLS context (~0.1 s)
        with httpx.Client(timeout=1) as http:
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"market server exited at start; see {self.log_path}:\n"
                                       + self.log_path.read_text()[-2000:])
                try:
                    if http.get(self.url + "/healthz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"market server did not come up within 60 s; see {self.log_path}")

    @property
    def market_key(self) -> str | None:
        """The server's public key, from the key file it created in its own data dir (None when
        the key lives elsewhere: ``--market-key-file`` or ``$LWM_MARKET_KEY_FILE``). The demo's
        clients pin it (``market_key=``, followed in memory only) instead of trusting on first
        use, which would remember each throwaway loopback server in the user's
        ``known_markets.json`` and refuse the next one that gets the same port."""
        path = self.data_dir / "market_key.pem"
        if ("--market-key-file" in self.args or os.environ.get("LWM_MARKET_KEY_FILE")
                or not path.exists()):
            return None
        from protocol.identity import Identity
        return Identity.load(path).public_key_b64

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()
