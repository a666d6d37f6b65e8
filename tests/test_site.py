"""The rendered book as a reader opens it: the static site in headless Chromium (``pytest -m browser``;
``make test-browser``).

CI has not run ``make book``, so the test makes its own: it executes chapters 00 and 01 at smoke size
with papermill (temporary data and figures folders; the kernels draw their figures inline, as in
``make book``), builds the site from them with ``python -m symlib site``, and opens it from disk
(``file://``, as a reader opens ``out/html/index.html``). On the landing page and on every chapter
and docs page it links to, every image has loaded, no cell output shows an error, and nothing was
loaded from anywhere but the site's own files (the book is offline). The chapters not executed are
listed as not run. A screenshot of the landing page goes to ``figures/book_landing.png``.

Skipped only when Chromium, chromedriver or selenium are missing (CI installs them: ``.ci/run``).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_helpers import chromium, missing

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
FIGURES = REPO / "figures"  # the repository's, like test_browser.py's screenshot
CHAPTERS = ("00_quickstart", "01_tasks_and_programs")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Chapters 00 and 01 executed at smoke size and the site built from them: (index.html, seconds taken)."""
    why = missing()
    if why:
        pytest.skip(why)
    t0 = time.perf_counter()
    root = tmp_path_factory.mktemp("site")
    nbs = root / "executed"
    nbs.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # conftest's Agg would keep figures out of the notebooks
    env.update(SYMLIB_SMOKE="1", SYMLIB_DATA=str(root / "data"), SYMLIB_FIGURES=str(root / "figures"), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    runs = {}
    for name in CHAPTERS:  # the two at once, one thread each (01 does not need 00's network)
        cmd = [sys.executable, "-m", "papermill", "--cwd", str(REPO / "notebooks"), "--no-progress-bar",
               str(REPO / "notebooks" / f"{name}.ipynb"), str(nbs / f"{name}.ipynb"), "-p", "SMOKE", "True",
               "-p", "RESULTS_PATH", str(nbs / f"{name}.json")]
        runs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, proc in runs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} failed:\n{log[-3000:]}"
    html = root / "html"
    built = subprocess.run([sys.executable, "-m", "symlib.book.site", "--notebooks", str(nbs), "--out", str(html)], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (html / "index.html").exists()
    return html / "index.html", time.perf_counter() - t0


@pytest.fixture(scope="module")
def driver(site, tmp_path_factory):
    d = chromium(tmp_path_factory.mktemp("chromium"), "1400,1000")
    try:
        yield d
    finally:
        d.quit()


def _visit(driver, url: str) -> dict:
    """Open ``url``, wait for it and its images to load; what the test checks on each page."""
    driver.get(url)
    end = time.monotonic() + 20
    while time.monotonic() < end and not driver.execute_script(
            "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete);"):
        time.sleep(0.1)
    return driver.execute_script("""
        const outside = performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('file:'));
        return {
          title: document.title,
          images: document.images.length,
          broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
          errors: Array.from(document.querySelectorAll('.cell_output .traceback, .cell_output .error, .cell_output .stderr'))
                  .map(e => e.textContent).filter(t => /Error|Traceback/.test(t)),
          outside: outside,
          progress: Array.from(document.querySelectorAll('.cell_output progress')).map(p => [p.value, p.max]),
        };""")


def test_book_site_in_a_browser(site, driver):
    index, build_seconds = site
    t0 = time.perf_counter()
    html = index.parent
    # offline, as built: no page asks for a script, style, image or frame from another host
    for page in html.rglob("*.html"):
        external = re.findall(r'<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)="((?:https?:)?//[^"]*)"', page.read_text())
        assert not external, (page.name, external)
    for sheet in html.rglob("*.css"):  # nor a font or style sheet from another host
        external = re.findall(r'(?:url\(|@import)\s*["\']?((?:https?:)?//[^"\')\s]*)', sheet.read_text(errors="replace"))
        assert not external, (sheet.name, external)

    landing = _visit(driver, index.as_uri())
    assert not landing["broken"] and not landing["outside"], landing
    links = driver.execute_script(
        "return Array.from(document.querySelectorAll('.bd-article .toctree-wrapper a.reference.internal'))"
        ".map(a => a.href.split('#')[0]);")
    links = list(dict.fromkeys(links))
    chapters = [u for u in links if "/chapters/" in u]
    pages = [u for u in links if "/chapters/" not in u]
    assert [Path(u).stem for u in chapters] == list(CHAPTERS)
    docs = sorted(p.stem for p in (REPO / "docs").glob("*.md") if p.stem != "index")
    assert sorted(Path(u).stem for u in pages) == docs  # every docs page is linked from the landing page
    text = driver.find_element("css selector", ".bd-article").text
    for name in ("02_train_models", "08_explorer"):  # chapters not executed are listed, not missing
        assert f"({name}) — not run" in text, text
    FIGURES.mkdir(exist_ok=True)
    driver.set_window_size(1400, 1700)  # tall enough to show the contents below the introduction
    time.sleep(0.3)
    driver.save_screenshot(str(FIGURES / "book_landing.png"))

    images = 0
    for url in links:
        page = _visit(driver, url)
        assert not page["broken"], (url, page["broken"])
        assert not page["errors"], (url, page["errors"])
        assert not page["outside"], (url, page["outside"])
        images += page["images"] if "/chapters/" in url else 0
        if url.endswith("00_quickstart.html"):  # the training's progress bar, drawn from its saved state: finished
            assert page["progress"] and all(v == m for v, m in page["progress"]), page["progress"]
    assert images >= 3, "chapter 01's figures are on its page"  # the image check above saw real figures
    print(f"\nbook site: chapters run and site built in {build_seconds:.0f} s, {len(links)} pages checked in Chromium "
          f"in {time.perf_counter() - t0:.0f} s; screenshot in {FIGURES / 'book_landing.png'}")
