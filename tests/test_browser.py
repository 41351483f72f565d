"""End to end in a real browser: JupyterLab on 127.0.0.1 + Debian's Chromium driven by Playwright.

For every notebook with a widget panel: open it, run all cells, change every control of every
panel, assert the panel's output changed, save screenshots under artifacts/browser/.
Skips (saying why) where chromium is absent; LABKIT_REQUIRE_BROWSER=1 turns that into a failure.
The notebooks are served from a temporary copy, so autosave never touches the committed files.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("LABKIT_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("LABKIT_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PANEL_CALL = re.compile(r"\b\w+_panel\(|\b\w+Panel\(")


def panel_notebooks() -> list[str]:
    """Notebooks with a widget cell: a NBVAL_IGNORE_OUTPUT cell that builds a panel."""
    names = []
    for py in sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.py")):
        cells = py.read_text().split("# %%")
        if any("NBVAL_IGNORE_OUTPUT" in c and PANEL_CALL.search(c) for c in cells):
            names.append(py.with_suffix(".ipynb").name)
    return names


def _browser_available() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e .[dev])"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    why = _browser_available()
    if why:
        if REQUIRE:
            pytest.fail(f"LABKIT_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns("*.py", ".ipynb_checkpoints"))
    if (ROOT / "data").exists():
        shutil.copytree(ROOT / "data", root / "data")
    settings = root / "settings"
    (settings / "@jupyterlab/notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab/apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / "runtime"), JUPYTER_CONFIG_DIR=str(root / "config"),
               JUPYTER_PLATFORM_DIRS="1", TQDM_DISABLE="1")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={root / 'workspaces'}",
                             "--LabApp.expose_app_in_browser=True", *(["--allow-root"] if os.geteuid() == 0 else [])],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {root / 'server.log'}:\n{(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield {"url": url, "token": token, "root": root}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


RUN_TIMEOUT_MS = int(float(os.environ.get("LABKIT_BROWSER_RUN_TIMEOUT", "600")) * 1000)
KERNEL_IDLE = """() => { const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
FORGET_OUTPUTS = """() => { const m = window.jupyterapp.shell.currentWidget.content.model;
  for (let i = 0; i < m.cells.length; i++) { const c = m.cells.get(i);
    if (c.type === 'code') { c.executionCount = null; c.outputs.clear(); } } }"""
ALL_CELLS_DONE = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim());
  return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
}"""


def _snapshot(panel) -> str:
    """What the panel shows: the HTML of its output parts (text and image sources)."""
    return panel.evaluate("""el => [...el.querySelectorAll('.widget-html-content, .widget-output, img')]
                                   .map(n => n.tagName === 'IMG' ? n.src.slice(-200) : n.innerHTML).join('|')""")


def _wait_changed(panel, before: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _snapshot(panel) != before:
            return True
        time.sleep(0.1)
    return False


def _controls(panel):
    """(kind, locator) for every control in a panel."""
    out = []
    buttons = panel.locator(".widget-toggle-buttons")
    for i in range(buttons.count()):
        options = buttons.nth(i).locator("button")
        for j in range(options.count()):      # every option that is not the current one
            if "mod-active" not in (options.nth(j).get_attribute("class") or ""):
                out.append(("toggle", options.nth(j)))
    sliders = panel.locator(".widget-slider, .widget-hslider")
    for i in range(sliders.count()):
        out.append(("slider", sliders.nth(i)))
    selects = panel.locator(".widget-dropdown select")
    for i in range(selects.count()):
        out.append(("dropdown", selects.nth(i)))
    boxes = panel.locator(".widget-checkbox input")
    for i in range(boxes.count()):
        out.append(("checkbox", boxes.nth(i)))
    return out


def _change(kind, control, page) -> None:
    if kind == "toggle":
        control.click()
    elif kind == "slider":
        handle = control.locator(".noUi-handle").first
        handle.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
    elif kind == "dropdown":
        values = control.evaluate("s => [...s.options].map(o => o.value)")
        current = control.input_value()
        control.select_option(next(v for v in values if v != current))
    else:
        control.click()


@pytest.mark.parametrize("name", panel_notebooks())
def test_panels_respond_in_jupyterlab(lab, browser, name):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = name.removesuffix(".ipynb")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = time.monotonic()
    try:
        # a fresh workspace per notebook, so JupyterLab does not restore the previous test's tabs
        page.goto(f"{lab['url']}/lab/workspaces/{stem.replace('_', '-')}/tree/notebooks/{name}?reset&token={lab['token']}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=60_000)
        try:   # JupyterLab may ask which kernel to start
            page.wait_for_selector(".jp-Dialog .jp-mod-accept", timeout=8_000)
            page.click(".jp-Dialog .jp-mod-accept")
        except PlaywrightTimeout:
            pass
        page.wait_for_function(KERNEL_IDLE, timeout=90_000)
        page.evaluate(FORGET_OUTPUTS)          # the stored execution counts must not look like a finished run
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        page.wait_for_function(ALL_CELLS_DONE, timeout=RUN_TIMEOUT_MS, polling=1000)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        tracebacks = [e for e in errors if "Traceback" in e]
        assert not tracebacks, f"{name} raised while running in JupyterLab:\n{tracebacks[0][:1500]}"
        panels = page.locator(".jp-OutputArea-output > .jupyter-widgets.widget-vbox, .jp-OutputArea-output .widget-vbox.lab-panel")
        page.wait_for_selector(".jp-OutputArea-output .jupyter-widgets", timeout=30_000)
        assert panels.count() >= 1, f"{name}: no widget panel rendered"
        changed = []
        for p in range(panels.count()):
            panel = panels.nth(p)
            panel.scroll_into_view_if_needed()
            controls = _controls(panel)
            assert controls, f"{name}: panel {p} has no control"
            for k, (kind, control) in enumerate(controls):
                before = _snapshot(panel)
                _change(kind, control, page)
                ok = _wait_changed(panel, before)
                changed.append((p, k, kind, ok))
                panel.screenshot(path=str(ARTIFACTS / f"{stem}-panel{p}-control{k}.png"))
        page.screenshot(path=str(ARTIFACTS / f"{stem}.png"), full_page=False)
        unchanged = [c for c in changed if not c[3]]
        assert not unchanged, f"{name}: these controls did not change their panel's output: {unchanged}"
    finally:
        (ARTIFACTS / f"{stem}.seconds").write_text(f"{time.monotonic() - start:.1f}\n")
        try:   # free the kernel's CPU and memory before the next notebook
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception:  # noqa: BLE001 - the page may already be gone
            pass
        page.close()
