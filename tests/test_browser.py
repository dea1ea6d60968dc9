"""The sample explorer in a real JupyterLab, driven by headless Chromium (marker `browser`).

What no other test sees: the widget's JavaScript rendering in the page and answering the keyboard.
Needs Debian's Chromium at /usr/bin/chromium (`apt-get install chromium`) and the `playwright`
Python package; skips without them (CI checks for Chromium before the tests, so there it runs).
A screenshot lands in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DEMO_NOTEBOOK = "build/browser-test/explorer_demo.ipynb"  # generated; build/ is git-ignored
ARTIFACTS = ROOT / "test-artifacts"
SERVER_START_SECONDS = 90
RUN_ALL_SECONDS = 120  # the demo notebook loads no model: a kernel start and two cells


def _missing_requirement() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(_missing_requirement() is not None, reason=str(_missing_requirement())),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_private_settings(home: Path) -> dict[str, str]:
    """Temporary Jupyter folders: no user settings, no news pop-up, no autosave, no windowing."""
    config, settings = home / "config", home / "lab-settings"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}})
    )
    docmanager = settings / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    # JupyterLab 4 only renders the cells in view ("windowing"): render them all, so the explorer
    # at the end of a long notebook is in the page once its cell has run.
    tracker = settings / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    return {
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "WORKBOOK_QUICK": "1",
    }


def _wait_until_up(url: str, token: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """A JupyterLab server on a free port; yields (base URL, token); always stopped afterwards."""
    home = tmp_path_factory.mktemp("jupyter")
    port, token = _free_port(), secrets.token_hex(16)
    log = home / "server.log"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        "--ServerApp.allow_root=True",  # CI runs as root; harmless otherwise
        "--LabApp.expose_app_in_browser=True",
    ]  # window.jupyterapp, to run the cells
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **_write_private_settings(home)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, token, process, log)
        yield url, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def write_demo_notebook(path: Path) -> None:
    """A small notebook that shows the explorer on synthetic samples (no model, no data)."""
    setup = """\
import numpy as np
import torch
from helpers.inference import Predictions
from helpers.explorer import show_explorer

rng = np.random.default_rng(0)
labels = np.array([1] * 12 + [0] * 12)
crack_probability = np.clip(labels * 0.5 + rng.uniform(0.05, 0.5, size=24), 0, 1)
colours = rng.integers(0, 256, size=(24, 3), dtype=np.uint8)
probabilities = torch.tensor(np.stack([1 - crack_probability, crack_probability], axis=1), dtype=torch.float32)
predictions = Predictions([f"{i:05d}.jpg" for i in range(24)], [], torch.tensor(labels), probabilities,
                          ["Negative", "Positive"])"""
    show = """\
show_explorer(predictions, load_image=lambda i: np.full((96, 96, 3), colours[i], dtype=np.uint8),
              heatmap=lambda i: np.full((96, 96, 3), (255, 80, 0), dtype=np.uint8))"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(show)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def _page_report(page, console: list[str]) -> str:
    """What went wrong, for the failure message: error outputs of the cells and the console."""
    errors = page.eval_on_selector_all(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "nodes => nodes.map(n => n.innerText.slice(-1500))",
    )
    return (
        "\n--- cell errors and warnings ---\n"
        + "\n".join(errors or ["(none)"])
        + "\n--- browser console errors ---\n"
        + "\n".join(console or ["(none)"])
    )


def run_notebook_and_check_explorer(browser, lab_server, notebook: str, screenshot: Path) -> dict:
    """Open `notebook` in JupyterLab, run all cells, move the threshold; returns texts before/after."""
    url, token = lab_server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: console.append(str(error)))
    try:
        # `reset`: a fresh workspace, so notebooks opened by an earlier test are not restored as hidden tabs.
        page.goto(f"{url}/lab/tree/{notebook}?reset&token={token}", wait_until="domcontentloaded")
        page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.sessionContext",
            timeout=60_000,
        )
        # Wait for the kernel, then Run > Run All Cells through JupyterLab's own command.
        page.evaluate("""async () => {
            const app = window.jupyterapp;
            await app.shell.currentWidget.sessionContext.ready;
            window.runAllResult = undefined;
            app.commands.execute('notebook:run-all-cells').then(
                ok => { window.runAllResult = ok; }, error => { window.runAllResult = String(error); });
        }""")
        page.wait_for_function(
            "() => document.querySelector('.crack-explorer') || window.runAllResult !== undefined",
            timeout=RUN_ALL_SECONDS * 1000,
        )
        if page.locator(".crack-explorer").count() == 0:  # the run ended; give the widget a moment to render
            try:
                page.wait_for_selector(".crack-explorer", timeout=20_000)
            except Exception:
                pytest.fail(
                    f"{notebook}: no .crack-explorer after Run All Cells (result: "
                    f"{page.evaluate('window.runAllResult')}){_page_report(page, console)}"
                )

        explorer = page.locator(".crack-explorer").first
        explorer.scroll_into_view_if_needed()
        for selector in (
            ".crack-explorer-threshold",
            "img.crack-explorer-image",
            ".crack-explorer-matrix",
            ".crack-explorer-sample",
        ):
            assert explorer.locator(selector).count() == 1, (
                f"{notebook}: {selector} missing{_page_report(page, console)}"
            )
        mistakes, matrix = explorer.locator(".crack-explorer-mistakes"), explorer.locator(".crack-explorer-matrix")
        texts = {
            "explorers": page.locator(".crack-explorer").count(),
            "before_mistakes": mistakes.inner_text(),
            "before_matrix": matrix.inner_text(),
        }

        # Move the threshold with the keyboard, as a learner could: focus the handle, press End (-> 0.99).
        explorer.locator(".crack-explorer-threshold .noUi-handle").focus()
        page.keyboard.press("End")
        try:
            page.wait_for_function(
                "([node, text]) => node.innerText !== text",
                arg=[mistakes.element_handle(), texts["before_mistakes"]],
                timeout=30_000,
            )
        except Exception:
            pytest.fail(f"{notebook}: moving the threshold changed nothing on the page{_page_report(page, console)}")
        texts.update(after_mistakes=mistakes.inner_text(), after_matrix=matrix.inner_text())
        explorer.scroll_into_view_if_needed()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
        return texts
    finally:
        page.close()


def test_explorer_renders_and_reacts_in_jupyterlab(browser, lab_server):
    write_demo_notebook(ROOT / DEMO_NOTEBOOK)
    texts = run_notebook_and_check_explorer(browser, lab_server, DEMO_NOTEBOOK, ARTIFACTS / "explorer_demo.png")
    assert texts["explorers"] == 1, "the explorer should be shown once, even as a cell's last expression"
    assert "0.50" in texts["before_mistakes"] and "0.99" in texts["after_mistakes"], texts
    assert texts["after_matrix"] != texts["before_matrix"], texts
