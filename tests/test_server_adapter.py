"""The server life-cycle adapter: ready on /health, failures classified, nothing left behind."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAST_PROFILE
from tui_tuner.adapters.vllm_server import ServerStartError, free_port, launch_server


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "fake_server.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


async def test_sim_server_becomes_ready_and_is_stopped(tmp_path: Path) -> None:
    port = free_port()
    lines: list[str] = []
    cmd = [sys.executable, "-m", "tui_tuner", "sim-serve", "m", "--port", str(port),
           "--sim-profile-file", str(FAST_PROFILE), "--sim-time-scale", "50"]  # fmt: skip
    async with launch_server(cmd, host="127.0.0.1", port=port, log_path=tmp_path / "server.log",
                             startup_timeout_s=30, on_line=lines.append) as server:  # fmt: skip
        pid = server.pid
        assert psutil.pid_exists(pid)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert any("Application startup complete." in line for line in lines)
    assert "SIMULATED" in (tmp_path / "server.log").read_text()


async def test_exit_before_ready_keeps_code_and_last_lines(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "tui_tuner", "sim-serve", "m", "--port", str(port),
           "--max-num-seqs", "abc"]  # fmt: skip
    with pytest.raises(ServerStartError) as err:
        async with launch_server(cmd, host="127.0.0.1", port=port, startup_timeout_s=30,
                                 log_path=tmp_path / "server.log"):  # fmt: skip
            pass
    assert err.value.reason == "exited" and err.value.exit_code == 2
    assert any("invalid int value: 'abc'" in line for line in err.value.tail)


async def test_startup_timeout_stops_a_server_that_never_listens(tmp_path: Path) -> None:
    cmd = _script(tmp_path, "import time\nprint('loading', flush=True)\ntime.sleep(60)\n")
    with pytest.raises(ServerStartError) as err:
        async with launch_server(cmd, host="127.0.0.1", port=free_port(), startup_timeout_s=1.0,
                                 log_path=tmp_path / "server.log"):  # fmt: skip
            pass
    assert err.value.reason == "startup_timeout" and err.value.tail == ["loading"]
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]


async def test_stop_kills_sigterm_ignorers_and_escaped_descendants(tmp_path: Path) -> None:
    port = free_port()
    cmd = _script(
        tmp_path,
        f"""
        import http.server, signal, subprocess, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # a worker that leaves the process group, as a careless engine might
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "{tmp_path}"],
                         start_new_session=True)
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers()
            def log_message(self, *a): pass
        http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
    """,
    )
    log_path = tmp_path / "server.log"
    async with launch_server(cmd, host="127.0.0.1", port=port, startup_timeout_s=20,
                             log_path=log_path, stop_grace_s=1.0) as server:  # fmt: skip
        children = psutil.Process(server.pid).children(recursive=True)
        assert len(children) == 1
    for proc in [*children]:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


async def test_a_worker_left_behind_by_a_server_that_died_is_stopped(tmp_path: Path) -> None:
    """The server exits on its own (a crash) and its worker, in a session of its own, is left
    behind, no longer its descendant: the stop still finds it among the processes seen."""
    port = free_port()
    cmd = _script(
        tmp_path,
        f"""
        import http.server, subprocess, sys, threading, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "{tmp_path}"],
                         start_new_session=True)
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers()
            def log_message(self, *a): pass
        server = http.server.HTTPServer(("127.0.0.1", {port}), H)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        time.sleep(2.5)
        print("crashed", flush=True)
        sys.exit(1)
    """,
    )
    async with launch_server(cmd, host="127.0.0.1", port=port, startup_timeout_s=20,
                             log_path=tmp_path / "server.log") as server:  # fmt: skip
        assert await server.wait_exit() == 1
        await asyncio.sleep(1.5)  # the process tree is watched once a second

    def worker() -> list[psutil.Process]:
        return [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(tmp_path) in " ".join(p.info["cmdline"] or [])
            and "fake_server.py" not in " ".join(p.info["cmdline"] or [])
            and p.status() != psutil.STATUS_ZOMBIE
        ]

    left = worker()
    for p in left:
        p.kill()
    assert not left
