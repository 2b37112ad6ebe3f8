"""The built book and a JupyterLab server, opened in headless Chromium.

Selenium drives Debian's `chromium` and `chromium-driver` packages by their
paths, so Selenium Manager never runs and nothing is downloaded. Every page of
the book is served from 127.0.0.1 and checked for console errors, broken
internal links, images that failed to load and math that MathJax did not
typeset. Screenshots go to $SSR_ARTIFACTS_DIR (default: `artifacts/`).

The tests use the book that `built_book` executes, or the html folder named by
$SSR_BOOK_HTML. A book built with `execute_notebooks: "off"` is enough to check
links and math in a few seconds, but it has no outputs, so widget and plot
errors show up only in the executed build.
"""

import base64
import functools
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import nbformat
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# Headless Chromium, 1280 pixels wide. `--no-sandbox` lets it run as root in a
# container, and the other flags turn off its background calls to Google's
# services (updates, sync, field trials), which fail on a machine without network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]

# Console errors that no change to the book can avoid offline, each matched
# as an exact substring of the message. Every error seen so far can be fixed
# in the book's configuration, so the list is empty.
UNAVOIDABLE_CONSOLE_ERRORS = []

# Folders of the html output that hold assets and sources, not pages.
NON_PAGE_FOLDERS = {"_static", "_sources", "_images", "_downloads"}

# Tags and attributes whose URLs must resolve to a file of the built site.
LINK_ATTRIBUTES = {
    "a": ["href"],
    "link": ["href"],
    "img": ["src"],
    "script": ["src"],
    "source": ["src"],
    "video": ["src", "poster"],
    "iframe": ["src"],
}

# Text that MathJax 3 replaces when it typesets a `.math` element.
TEX_DELIMITERS = ["\\(", "\\[", "$$", "\\begin{"]

SCREENSHOT_PAGES = {
    "landing": "index.html",
    "formula": "notebooks/03_soft_stagewise_regression.html",
    "comparison": "notebooks/07_comparing_models.html",
}

# Full-page screenshots stop here, which keeps a long chapter's PNG to a few MB.
MAX_SCREENSHOT_HEIGHT = 20_000

pytestmark = [
    pytest.mark.book,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason=f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver",
    ),
]


@pytest.fixture(scope="session")
def book_html(request):
    """Return the html folder named by $SSR_BOOK_HTML, or else the one `built_book` builds."""
    value = os.environ.get("SSR_BOOK_HTML")
    if not value:
        try:
            return request.getfixturevalue("built_book")
        except pytest.skip.Exception as skip:
            pytest.skip(
                f"{skip.msg}, or set SSR_BOOK_HTML to the _build/html folder of a built book"
            )
    html = Path(value)
    if not (html / "index.html").is_file():
        pytest.fail(
            f"SSR_BOOK_HTML={value} has no index.html; point it at a book's _build/html folder"
        )
    return html


class QuietHandler(SimpleHTTPRequestHandler):
    """Serve files without printing a line per request."""

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="session")
def book_url(book_html):
    """Serve the html folder on a free port of 127.0.0.1 and return its base URL."""
    handler = functools.partial(QuietHandler, directory=str(book_html))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Start headless Chromium with a new profile and keep its console log.

    The new profile keeps cookies, local storage and cache from leaking between runs.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def artifacts_dir():
    folder = Path(os.environ.get("SSR_ARTIFACTS_DIR") or ROOT / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class LinkParser(HTMLParser):
    """Collect the URLs a page links to, its element ids and its meta refresh target."""

    def __init__(self):
        super().__init__()
        self.links = []
        self.ids = set()
        self.refresh = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("id", "name"):
            if attributes.get(name):
                self.ids.add(attributes[name])
        for name in LINK_ATTRIBUTES.get(tag, []):
            if attributes.get(name):
                self.links.append((tag, name, attributes[name]))
        if tag == "meta" and (attributes.get("http-equiv") or "").lower() == "refresh":
            # The content reads "0; url=book/index.html".
            _, _, target = (attributes.get("content") or "").partition("url=")
            if target:
                self.refresh = target.strip()
                self.links.append((tag, "content", self.refresh))


@functools.cache
def parse_page(path):
    parser = LinkParser()
    parser.feed(Path(path).read_text(errors="replace"))
    return parser


def find_broken_links(html, page, page_url, base_url):
    """Return a line for each link of `page` to a missing file or anchor inside the site."""
    problems = []
    site = urlsplit(base_url)
    for tag, attribute, value in parse_page(page).links:
        target = urlsplit(urljoin(page_url, value))
        if target.scheme not in ("http", "https") or target.netloc != site.netloc:
            continue
        relative = unquote(target.path).removeprefix(site.path)
        file = html / relative
        if relative == "" or relative.endswith("/") or file.is_dir():
            file = file / "index.html"
        element = f"<{tag} {attribute}={value!r}>"
        if not file.is_file():
            problems.append(f"broken link {element}: {file.relative_to(html)} does not exist")
            continue
        fragment = unquote(target.fragment)
        if fragment and file.suffix == ".html" and fragment not in parse_page(file).ids:
            problems.append(
                f"broken anchor {element}: no id {fragment!r} in {file.relative_to(html)}"
            )
    return problems


def wait_for_page(driver, timeout=30):
    """Wait until the page, its images and MathJax's first typesetting are finished.

    Returns None when MathJax finished or is not on the page, else why it did not.
    """
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    # Lazy images below the first screen would not load, because the test never scrolls.
    driver.execute_script("for (const img of document.images) img.loading = 'eager';")
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return Array.from(document.images).every(img => img.complete)")
    )
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        if (!document.querySelector(".math")) { done(null); return; }
        const startup = window.MathJax && window.MathJax.startup;
        if (!startup || !startup.promise) { done("MathJax did not load"); return; }
        startup.promise.then(() => done(null), (error) => done("MathJax failed: " + error));
        """
    )


def open_page(driver, url, refresh_url=None):
    """Open `url` and, for a redirect page, wait until the browser has followed it."""
    driver.get(url)
    if refresh_url:
        WebDriverWait(driver, 30).until(lambda d: d.current_url == refresh_url)
    return wait_for_page(driver)


def find_console_errors(driver):
    errors = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        if any(pattern in entry["message"] for pattern in UNAVOIDABLE_CONSOLE_ERRORS):
            continue
        errors.append(f"console error: {entry['message']}")
    return errors


def find_broken_images(driver):
    sources = driver.execute_script(
        "return Array.from(document.images)"
        ".filter(img => img.getAttribute('src') && img.naturalWidth === 0)"
        ".map(img => img.getAttribute('src'))"
    )
    return [f"image failed to load: {source}" for source in sources]


def find_unrendered_math(driver, mathjax_problem):
    """Return a line for each sign that MathJax did not typeset the page's `.math` elements."""
    math = driver.execute_script(
        """
        const delimiters = arguments[0];
        const elements = Array.from(document.querySelectorAll(".math"));
        const raw = elements
            .filter(e => !e.querySelector("mjx-container")
                         && delimiters.some(d => e.textContent.includes(d)))
            .map(e => e.textContent.trim().slice(0, 60));
        const errors = Array.from(document.querySelectorAll("mjx-merror"))
            .map(e => e.getAttribute("data-mjx-error") || e.textContent);
        const containers = document.querySelectorAll("mjx-container").length;
        return {count: elements.length, containers: containers, raw: raw, errors: errors};
        """,
        TEX_DELIMITERS,
    )
    if not math["count"]:
        return []
    problems = []
    if mathjax_problem:
        problems.append(f"{mathjax_problem}, so {math['count']} .math elements are not typeset")
    if not math["containers"]:
        problems.append(f"no mjx-container on a page with {math['count']} .math elements")
    if math["raw"]:
        examples = "; ".join(repr(text) for text in math["raw"][:3])
        problems.append(f"{len(math['raw'])} .math elements still show raw TeX, e.g. {examples}")
    for error in math["errors"]:
        problems.append(f"MathJax error: {error}")
    return problems


def check_page(driver, html, page, base_url):
    """Open one page and return every problem found on it."""
    page_url = urljoin(base_url, page.relative_to(html).as_posix())
    refresh = parse_page(page).refresh
    driver.get_log("browser")  # drops the previous page's messages
    try:
        mathjax_problem = open_page(driver, page_url, refresh and urljoin(page_url, refresh))
    except TimeoutException:
        return [f"did not finish loading or typesetting within 30 s (at {driver.current_url})"]
    return (
        find_console_errors(driver)
        + find_broken_links(html, page, page_url, base_url)
        + find_broken_images(driver)
        + find_unrendered_math(driver, mathjax_problem)
    )


def list_pages(html):
    return sorted(
        path for path in html.rglob("*.html")
        if path.relative_to(html).parts[0] not in NON_PAGE_FOLDERS
    )


def test_every_page_loads_cleanly(browser, book_html, book_url):
    """Open every page and report, page by page, console errors, broken links, images and math."""
    pages = list_pages(book_html)
    assert book_html / "index.html" in pages
    assert any(page.parent.name == "notebooks" for page in pages), "the book has no notebook pages"

    failures = {}
    for page in pages:
        problems = check_page(browser, book_html, page, book_url)
        if problems:
            failures[page.relative_to(book_html).as_posix()] = problems

    sections = []
    for name, problems in failures.items():
        lines = "\n".join(f"  - {problem}" for problem in problems)
        sections.append(f"{name} ({len(problems)} problems):\n{lines}")
    report = "\n".join(sections)
    assert not failures, f"{len(failures)} of {len(pages)} pages have problems:\n{report}"


def save_screenshots(driver, folder, name):
    """Save the first screen and the whole page (up to MAX_SCREENSHOT_HEIGHT) as PNG files."""
    first_screen = folder / f"{name}.png"
    driver.save_screenshot(str(first_screen))

    # The viewport is made as tall as the page for this capture. Capturing beyond
    # a normal viewport instead shifted pages whose raw TeX overflows sideways.
    width, height = driver.execute_script(
        "return [window.innerWidth, document.documentElement.scrollHeight]"
    )
    metrics = {"width": width, "height": min(height, MAX_SCREENSHOT_HEIGHT),
               "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    full_page = folder / f"{name}-full.png"
    full_page.write_bytes(base64.b64decode(shot["data"]))
    return first_screen, full_page


def png_size(path):
    """Read the width and height from a PNG file's header."""
    header = path.read_bytes()[:24]
    assert header.startswith(b"\x89PNG"), f"{path} is not a PNG file"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


@pytest.mark.parametrize("name, page", SCREENSHOT_PAGES.items(), ids=SCREENSHOT_PAGES.keys())
def test_page_screenshot(browser, book_html, book_url, artifacts_dir, name, page):
    """Save screenshots of a chapter, 1280 pixels wide, for a person to look at."""
    path = book_html / page
    notebook = ROOT / "notebooks" / f"{Path(page).stem}.ipynb"
    if not path.is_file() and page.startswith("notebooks/") and not notebook.is_file():
        pytest.skip(f"{notebook.name} is not in the repository yet, so the book has no {page}")
    assert path.is_file(), f"the built book has no {page}"

    url = urljoin(book_url, page)
    refresh = parse_page(path).refresh
    mathjax_problem = open_page(browser, url, refresh and urljoin(url, refresh))
    # Saved before the checks, because a page that fails them is the one to look at.
    screenshots = save_screenshots(browser, artifacts_dir, name)

    for screenshot in screenshots:
        width, height = png_size(screenshot)
        assert width == 1280, f"{screenshot.name} is {width} pixels wide, not 1280"
        assert height >= 600, f"{screenshot.name} is only {height} pixels high"
    assert browser.find_element(By.CSS_SELECTOR, "article h1").text, f"{page} has no heading"
    assert mathjax_problem is None, f"{page}: {mathjax_problem}"


def find_free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_slider_notebook(path):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python"
    }
    notebook.cells = [
        nbformat.v4.new_code_cell("import ipywidgets"),
        nbformat.v4.new_code_cell(
            'ipywidgets.IntSlider(value=7, min=0, max=100, description="Age")'
        ),
    ]
    nbformat.write(notebook, path)


@pytest.fixture
def lab_server(tmp_path):
    """Start JupyterLab on 127.0.0.1 in a folder with one widget notebook, and stop it afterwards.

    Yields the base URL, the token and the server's log file.
    """
    work = tmp_path / "work"
    work.mkdir()
    write_slider_notebook(work / "slider.ipynb")
    token = secrets.token_hex(16)
    port = find_free_port()
    # A private configuration folder keeps the user's JupyterLab settings and workspaces out.
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        IPYTHONDIR=str(tmp_path / "ipython"),
    )
    command = [
        str(Path(sys.executable).parent / "jupyter-lab"),
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work}",
        # Neither update checks nor the extension manager may call PyPI or jupyter.org.
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        # Sets `window.jupyterapp`, through which the test reads the kernel's connection status.
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:
        # CI runs as root, and JupyterLab exits when started as root without this flag.
        command.append("--allow-root")
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(server, f"{url}api/status?token={token}", log_path)
        yield url, token, log_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_for_server(server, status_url, log_path, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log = log_path.read_text()[-3000:]
            pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(status_url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.5)
    log = log_path.read_text()[-3000:]
    pytest.fail(f"JupyterLab did not respond at /api/status within {timeout} s:\n{log}")


# The toolbar's kernel indicator can read "idle" before the kernel's WebSocket has
# connected, and cells run in that gap never execute. The connection status is exact.
KERNEL_READY_SCRIPT = """
const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
const session = panel && panel.sessionContext && panel.sessionContext.session;
const kernel = session && session.kernel;
return Boolean(kernel) && kernel.connectionStatus === "connected" && kernel.status === "idle";
"""


def click_menu_item(driver, menu, command):
    """Open a menu of JupyterLab's menu bar and click the item that runs `command`."""
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_element(
        By.XPATH, f"//li[contains(@class, 'lm-MenuBar-item')][normalize-space(.)='{menu}']"
    )).click()
    wait.until(lambda d: d.find_element(
        By.CSS_SELECTOR, f"li.lm-Menu-item[data-command='{command}']"
    )).click()


def fail_with_lab_state(driver, artifacts_dir, log_path, step):
    """Save a screenshot and fail with the notebook's outputs, the console and the server log."""
    driver.save_screenshot(str(artifacts_dir / "jupyterlab-widget-failed.png"))
    output_areas = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    outputs = [element.text for element in output_areas]
    console = [entry["message"] for entry in driver.get_log("browser") if entry["level"] != "DEBUG"]
    pytest.fail(
        f"{step}; screenshot: jupyterlab-widget-failed.png; outputs: {outputs}; "
        f"console: {console}; server log:\n{log_path.read_text()[-3000:]}"
    )


def test_widget_renders_in_jupyterlab(browser, lab_server, artifacts_dir):
    """Run a notebook through JupyterLab's Run menu and check that its IntSlider renders."""
    url, token, log_path = lab_server
    browser.get_log("browser")
    browser.get(f"{url}lab/tree/slider.ipynb?token={token}")
    try:
        step = "the notebook's kernel was not connected and idle within 60 s"
        WebDriverWait(browser, 60).until(lambda d: d.execute_script(KERNEL_READY_SCRIPT))
        step = "Run > Run All Cells was not found within 30 s"
        click_menu_item(browser, "Run", "runmenu:run-all")
        step = "no IntSlider appeared in the output within 60 s"
        slider = WebDriverWait(browser, 60).until(lambda d: d.find_element(
            By.CSS_SELECTOR, ".jp-OutputArea-output .jupyter-widgets.widget-slider"
        ))
        browser.save_screenshot(str(artifacts_dir / "jupyterlab-widget.png"))
        assert "Age" in slider.text
        assert slider.find_element(By.CSS_SELECTOR, ".widget-readout").text == "7"
    except TimeoutException:
        fail_with_lab_state(browser, artifacts_dir, log_path, step)
    finally:
        # Leave the page before the server stops, so its reconnect attempts do not fill the log.
        browser.get("about:blank")
