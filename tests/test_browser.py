"""End to end in a real browser: JupyterLab on 127.0.0.1 + Debian's Chromium driven by Playwright.

The browser tests what only a browser can: that each panel renders as a live widget and that every
control redraws it. A panel needs nothing from its notebook's training runs, so instead of
re-running whole notebooks (minutes; nbval already executes them) the test writes ONE small
notebook, one cell per panel of labkit.widgets (every panel the lab's notebooks show) plus a
prediction widget (labkit.predict), opens it once, runs it, then per panel changes every control and
asserts the panel's output changed; it clicks "train this state now" on the shift panel and on the
two fine-tuning panels (DPO, scheduled sampling: a live tiny-model run each, its progress bar must
finish and the live run must appear beside the stored one) and commits a prediction. Screenshots go to
artifacts/browser/. Skips (saying why) where chromium is absent; LABKIT_REQUIRE_BROWSER=1 turns
that into a failure. Everything is served from a temporary folder.
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


# one cell per panel: (name, the code of the cell). Every panel class of labkit.widgets appears
# (test_every_panel_is_covered), with the arguments the notebooks use where they need none of their data.
PANEL_CELLS = [
    ("shift", "from labkit.widgets import ShiftPanel\nShiftPanel().ui()"),
    ("temperature", "from labkit.widgets import TemperaturePanel\nTemperaturePanel().ui()"),
    ("padding", "from labkit.widgets import PaddingPanel\nPaddingPanel().ui()"),
    ("reduction", "from labkit.widgets import ReductionPanel\nReductionPanel().ui()"),
    ("mask_ratio", "from labkit.widgets import MaskRatioPanel\nMaskRatioPanel(ratio=0.3).ui()"),
    ("scheduled_sampling", "from labkit.widgets import ScheduledSamplingPanel\nScheduledSamplingPanel().ui()"),
    ("contrastive_temperature", "from labkit.widgets import ContrastiveTemperaturePanel\nContrastiveTemperaturePanel().ui()"),
    ("soft_targets", "import torch\nfrom labkit.widgets import SoftTargetPanel\n"
                     "SoftTargetPanel(torch.randn(5, 10, generator=torch.Generator().manual_seed(0)), labels=[0, 1, 2, 3, 4]).ui()"),
    ("mixture", "from labkit.widgets import MixturePanel\nMixturePanel().ui()"),
    ("dpo_weights", "from labkit.widgets import DPOWeightsPanel\nDPOWeightsPanel().ui()"),
]
PREDICT_CELL = ("from labkit.predict import ask\n"
                "q = ask('00.browser', 'Which side?', choices=['left', 'right'])")
PANEL_CALL = re.compile(r"\b(\w+Panel)\(")


def panel_notebook(path: Path) -> Path:
    """Write the test notebook: the prediction widget first, then one cell per panel."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(PREDICT_CELL)] + [nbformat.v4.new_code_cell(code) for _, code in PANEL_CELLS]
    nbformat.write(nb, path)
    return path


def test_every_panel_is_covered():
    """Every panel class of labkit.widgets, and every labkit panel a notebook builds, has a cell here."""
    import inspect

    import labkit.widgets as widgets
    from labkit.widgets.base import Panel

    covered = {m.group(1) for _, code in PANEL_CELLS for m in PANEL_CALL.finditer(code)}
    classes = {n for n, c in inspect.getmembers(widgets, inspect.isclass)
               if issubclass(c, Panel) and c is not Panel and not n.startswith("_")}
    used = {m.group(1) for py in NOTEBOOKS.glob("[0-9][0-9]*_*.py") for m in PANEL_CALL.finditer(py.read_text())
            if hasattr(widgets, m.group(1))}       # a panel defined inside a notebook is not importable here
    used |= {"ShiftPanel"} if any("shift_panel(" in py.read_text() for py in NOTEBOOKS.glob("*.py")) else set()
    assert classes <= covered and used <= covered, (classes | used) - covered


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
    (root / "notebooks").mkdir()
    panel_notebook(root / "notebooks" / "panels.ipynb")
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


@pytest.fixture(scope="module")
def page(lab, browser):
    """panels.ipynb opened in JupyterLab, every cell run once (one kernel for the whole module)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = time.monotonic()
    try:
        pg.goto(f"{lab['url']}/lab/workspaces/panels/tree/notebooks/panels.ipynb?reset&token={lab['token']}")
        pg.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
        pg.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=60_000)
        try:   # JupyterLab may ask which kernel to start
            pg.wait_for_selector(".jp-Dialog .jp-mod-accept", timeout=8_000)
            pg.click(".jp-Dialog .jp-mod-accept")
        except PlaywrightTimeout:
            pass
        pg.wait_for_function(KERNEL_IDLE, timeout=90_000)
        pg.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        pg.wait_for_function(ALL_CELLS_DONE, timeout=RUN_TIMEOUT_MS, polling=500)
        errors = pg.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        tracebacks = [e for e in errors if "Traceback" in e]
        assert not tracebacks, f"panels.ipynb raised while running in JupyterLab:\n{tracebacks[0][:1500]}"
        pg.wait_for_selector(".jp-OutputArea-output .lab-panel", timeout=30_000)
        (ARTIFACTS / "open-and-run.seconds").write_text(f"{time.monotonic() - start:.1f}\n")
        yield pg
    finally:
        try:   # free the kernel's CPU and memory
            pg.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception:  # noqa: BLE001 - the page may already be gone
            pass
        pg.close()


def _cell(page, k: int):
    """The output of code cell k (0: the prediction, 1..: PANEL_CELLS)."""
    return page.locator(".jp-Notebook .jp-CodeCell").nth(k)


@pytest.mark.parametrize("k,name", list(enumerate([n for n, _ in PANEL_CELLS], start=1)),
                         ids=[n for n, _ in PANEL_CELLS])
def test_panel_responds_in_jupyterlab(page, k, name):
    start = time.monotonic()
    panel = _cell(page, k).locator(".widget-vbox.lab-panel").first
    panel.wait_for(timeout=30_000)
    panel.scroll_into_view_if_needed()
    controls = _controls(panel)
    assert controls, f"{name}: panel has no control"
    changed = []
    for j, (kind, control) in enumerate(controls):
        before = _snapshot(panel)
        _change(kind, control, page)
        changed.append((j, kind, _wait_changed(panel, before)))
        panel.screenshot(path=str(ARTIFACTS / f"{name}-control{j}.png"))
    (ARTIFACTS / f"{name}.seconds").write_text(f"{time.monotonic() - start:.1f}\n")
    unchanged = [c for c in changed if not c[2]]
    assert not unchanged, f"{name}: these controls did not change the panel's output: {unchanged}"


LIVE_PANELS = ["shift", "scheduled_sampling", "dpo_weights"]     # a plain LM run, and the two fine-tuning panels


@pytest.mark.parametrize("name", LIVE_PANELS)
def test_train_this_state_now(page, name):
    """The button retrains the selected state live: the bar fills, a finished line and the live column
    appear beside the stored run (the fine-tuning panels first train their shared start: seconds more)."""
    k = 1 + [n for n, _ in PANEL_CELLS].index(name)
    panel = _cell(page, k).locator(".widget-vbox.lab-panel").first
    panel.scroll_into_view_if_needed()
    before = _snapshot(panel)
    panel.locator("button", has_text="train this state now").click()
    panel.locator(".widget-html-content", has_text="done:").wait_for(timeout=300_000)
    assert "trained now" in _snapshot(panel) and _snapshot(panel) != before
    panel.screenshot(path=str(ARTIFACTS / f"{name}-trained-now.png"))
    bar = panel.locator(".widget-hprogress .progress-bar").first
    assert "width: 100%" in (bar.get_attribute("style") or ""), "the progress bar did not finish"


def test_prediction_commits(page):
    box = _cell(page, 0).locator(".lab-predict").first
    box.scroll_into_view_if_needed()
    box.locator(".widget-toggle-buttons button", has_text="right").click()
    box.locator("button", has_text="commit").click()
    box.locator(".widget-html-content", has_text="committed").wait_for(timeout=15_000)
