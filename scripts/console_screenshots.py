"""Screenshots of the web console for README: a real ``adapterhub serve`` on the default base, driven by Chromium.

    python scripts/console_screenshots.py --registry DIR --out docs [--models education,smollm2-135m-instruct,finance]

DIR must hold decoder adapters of the default base (the README's came from the quickstart's finance, medical and
legal, the finance-qlora runs of issue 34 and education). Pages are written as 64-colour PNGs (small enough to commit).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from PIL import Image
from playwright.sync_api import sync_playwright

QUESTION = "how do i work out the eigenvalues of a 3 by 3 matrix"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--models", default="education,smollm2-135m-instruct,finance")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "adapterhub", "serve", "--registry", args.registry,
                               "--port", str(args.port)], stderr=subprocess.DEVNULL)
    try:
        _wait_ready(url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 560}, bypass_csp=True)  # wait_for_function evals
            page.goto(f"{url}/ui#/adapters")
            page.wait_for_selector("#adapters tbody tr")
            _save(page, Path(args.out) / "console-registry.png")
            page.goto(f"{url}/ui#/playground?models={args.models}&max_tokens=32&text={quote(QUESTION)}")
            page.wait_for_selector("#run")
            page.click("#run")
            page.wait_for_function(f"document.querySelectorAll('.answer-pane.done').length === "
                                   f"{len(args.models.split(','))}", timeout=300_000)
            _save(page, Path(args.out) / "console-playground.png")
            browser.close()
    finally:
        server.terminate()
        server.wait(60)


def _wait_ready(url: str, seconds: int = 240) -> None:
    for _ in range(seconds):
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the server at {url} did not become ready in {seconds} s")


def _save(page, path: Path) -> None:
    page.screenshot(path=path)
    Image.open(path).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(path)


if __name__ == "__main__":
    main()
