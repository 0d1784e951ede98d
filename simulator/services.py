"""The real services a simulated hall talks to, started as child processes in their own process
groups (so a stop takes their children too, and nothing is left behind): the province reference
server, the edge agent, and Mosquitto; plus the hall supervisor's alert webhook (in-process).

`Service.start()` waits for the first stdout line `listening http://...` (province, agent); the
rest of the child's output goes to a log file in the run directory.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from aiohttp import web

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
ROOT = Path(__file__).resolve().parent.parent
ACL_FILE = ROOT / "edge_agent" / "deploy" / "mosquitto" / "acl"


class ServiceError(RuntimeError):
    """A service did not start; the message says which, why, and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A child process in its own session/process group."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None
                 ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._log = None

    def start(self, wait_url: bool = True, timeout: float = 30.0) -> str:
        """Start; with `wait_url` return the URL from its first `listening ...` line."""
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE if wait_url else subprocess.DEVNULL,
            stderr=self._log, cwd=self.cwd, start_new_session=True)
        if not wait_url:
            return ""
        line: list[bytes] = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                             daemon=True)
        t.start()
        t.join(timeout)
        text = line[0].decode(errors="replace").strip() if line else ""
        if not text.startswith("listening "):
            self.stop()
            tail = self.log_tail()
            raise ServiceError(f"{self.name} 未能启动 did not start "
                               f"(first line {text!r}); log {self.log_path}: {tail}")
        self.url = text.split(" ", 1)[1]
        # keep draining stdout so the child never blocks on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()
        return self.url

    def _drain(self) -> None:
        try:
            for _ in self.proc.stdout:
                pass
        except (OSError, ValueError):
            pass

    def log_tail(self, n: int = 600) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left."""
        p = self.proc
        if p is not None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                if p.poll() is not None:
                    break
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(wait)
                except subprocess.TimeoutExpired:
                    continue
            try:
                os.killpg(p.pid, signal.SIGKILL)   # any grandchild still in the group
            except (ProcessLookupError, PermissionError):
                pass
            if p.stdout is not None:
                try:
                    p.stdout.close()
                except OSError:
                    pass
        if self._log is not None:
            self._log.close()
            self._log = None


def hcp_argv(*args: str) -> list[str]:
    """`python -m tools.hcp ...` with this interpreter (works without the console script)."""
    return [sys.executable, "-m", "tools.hcp", *args]


def province(run_dir: Path, profile: str = "gbt39046-json", outage: str | None = None,
             seed: int = 1, port: int = 0, extra: list[str] | None = None) -> Service:
    argv = hcp_argv("province", "serve", "--profile", profile, "--port", str(port), "--db",
                    str(run_dir / "province.sqlite3"), "--seed", str(seed), *(extra or []))
    if outage:
        argv += ["--outage", outage]
    return Service("省平台 province", argv, run_dir / "province.log", cwd=ROOT)


def agent(config: Path, run_dir: Path) -> Service:
    return Service("代理 agent", hcp_argv("agent", "run", "--config", str(config)),
                   run_dir / "agent.log", cwd=ROOT)


def mosquitto_missing() -> str | None:
    """Why the MQTT demo can't run here, or None."""
    if not os.path.exists(MOSQUITTO) or not os.path.exists(MOSQUITTO_PASSWD):
        return (f"未安装 Mosquitto / Mosquitto is not installed ({MOSQUITTO}): "
                "apt-get install mosquitto, or run with --link serial")
    return None


class Broker:
    """Mosquitto on a free loopback port with per-device passwords and the shipped ACL, as a
    hall broker is set up (edge_agent/deploy/mosquitto/README.md)."""

    def __init__(self, run_dir: Path, users: dict[str, str], port: int | None = None) -> None:
        self.dir = run_dir / "mosquitto"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        passwd = self.dir / "passwd"
        first = True
        for user, pw in users.items():
            subprocess.run([MOSQUITTO_PASSWD, *(["-c"] if first else []), "-b", str(passwd),
                            user, pw], check=True, capture_output=True)
            first = False
        conf = [f"listener {self.port} 127.0.0.1", "allow_anonymous false",
                f"password_file {passwd}", f"acl_file {ACL_FILE}",
                "persistence true", f"persistence_location {self.dir}/",
                "autosave_interval 1"]
        if os.geteuid() == 0:
            conf.append("user root")       # keep access to the run dir when started as root
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")
        self.service = Service("Mosquitto", [MOSQUITTO, "-c", str(self.conf)],
                               self.dir / "mosquitto.log")

    def start(self, timeout: float = 10.0) -> None:
        self.service.start(wait_url=False)
        end = time.monotonic() + timeout
        while True:
            if not self.service.running:
                raise ServiceError(f"Mosquitto 退出 exited: {self.service.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > end:
                    raise ServiceError("Mosquitto 未监听 did not start listening")
                time.sleep(0.05)

    def stop(self) -> None:
        self.service.stop()

    async def restart(self, off_s: float) -> None:
        """Kill the broker hard, wait `off_s`, start it again on the same port."""
        p = self.service.proc
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        self.service.stop()
        await asyncio.sleep(off_s)
        await asyncio.get_running_loop().run_in_executor(None, self.start)


class AlertSink:
    """The hall supervisor's webhook: counts the 差评 alerts the agent delivers."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/alerts", self._post)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/alerts"
        return self.url

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.alerts.append(body if isinstance(body, dict) else {})
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
