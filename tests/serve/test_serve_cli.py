"""``adapterhub serve`` as a process: prints its URL, answers, and on SIGTERM finishes the in-flight stream and exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from adapterhub.serve.server import free_port

ROOT = Path(__file__).parents[2]


def test_serve_process_drains_on_sigterm_and_exits_0(tiny_llama_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADAPTERHUB_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "adapterhub", "serve", "--base", str(tiny_llama_dir), "--base-name", "tiny",
         "--port", str(port), "--registry", str(tmp_path / "registry"), "--max-new-tokens", "256"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner, banner + process.stderr.read()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        body = {"model": "tiny", "prompt": "Patient reports chest pain", "max_tokens": 256, "temperature": 0,
                "stream": True, "stop": ["\u0000never"]}
        with httpx.Client(timeout=60) as http, http.stream("POST", url + "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            first = next(lines)
            process.send_signal(signal.SIGTERM)  # mid-answer
            rest = [line for line in lines if line]
        assert first.startswith("data: ") and rest[-1] == "data: [DONE]"
        finish = json.loads(rest[-2][6:])["choices"][0]["finish_reason"]
        assert finish in ("stop", "length")
        assert process.wait(timeout=60) == 0
        log = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")]
        assert any(entry["path"] == "/v1/completions" and entry["status"] == 200 for entry in log)
    finally:
        if process.poll() is None:
            process.kill()
