"""The HTML report as a browser shows it: headless Chromium (Debian's `chromium`, which .ci/run
installs) loads the page from a file, driven over its DevTools protocol (tests/chromium.py), in a
1400 x 900 window. The Fashion-MNIST-C page with every built-in method must not scroll sideways, every
image (figures and thumbnails) must decode, and the page must ask for nothing but itself: no request
beyond the file and its data: URIs, no console error, no policy violation."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chromium import Chromium, find_chromium
from report_runs import fashion_run
from tasks.fashion_mnist import DEBIAN_ROOT, split_files

BINARY = find_chromium()
FASHION_MNIST = split_files(Path(DEBIAN_ROOT), "test") is not None
pytestmark = pytest.mark.skipif(
    BINARY is None, reason="no chromium on this machine (Debian: apt-get install -y chromium; or set $CHROMIUM)")
WIDTH = 1400

LAYOUT = """(() => {
  const root = document.documentElement;
  const tables = Array.from(document.querySelectorAll('table')).map(t => ({
    id: t.id, right: t.getBoundingClientRect().right,
    box: t.parentElement.scrollWidth, room: t.parentElement.clientWidth}));
  const images = Array.from(document.images).map(i => ({
    id: i.id, complete: i.complete, width: i.naturalWidth, scheme: i.src.slice(0, 11)}));
  return {scroll: root.scrollWidth, client: root.clientWidth, inner: window.innerWidth, tables, images};
})()"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str | None, Path]:
    """The page of one Fashion-MNIST-C run, with the layout and as plain pivots."""
    import cli

    root = tmp_path_factory.mktemp("pages")
    run_dir = fashion_run(root)
    out = {}
    for table in ("fashion-mnist-c", None):
        done = CliRunner().invoke(cli.app, ["report", str(run_dir), "--format", "html"]
                                  + (["--table", table] if table else []))
        assert done.exit_code == 0, done.output
        out[table] = root / f"report-{table or 'plain'}.html"
        out[table].write_text(done.stdout, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def browser():
    with Chromium(BINARY, WIDTH, 900) as running:
        yield running


@pytest.mark.parametrize("table", ["fashion-mnist-c", None])
def test_the_fashion_mnist_c_page_fits_loads_everything_and_fetches_nothing(browser, pages, table):
    path = pages[table]
    loaded = browser.load(path.as_uri())
    layout = browser.evaluate(LAYOUT)
    assert layout["inner"] == WIDTH
    assert layout["scroll"] <= layout["client"], f"the page scrolls sideways: {layout['scroll']} > {layout['client']}"
    for found in layout["tables"]:  # each table fits its column of the page, without a scroll bar of its own
        assert found["box"] <= found["room"] and found["right"] <= layout["client"], found
    assert {t["id"] for t in layout["tables"]} >= ({"accuracy", "paired", "cost"} if table else {"accuracy"})
    assert max(t["right"] for t in layout["tables"]) > layout["client"] / 2  # text has width: fonts are there
    figures = [i for i in layout["images"] if i["id"] in ("accuracy_vs_seconds", "ttt_loss")]
    assert len(figures) == 2
    assert (len(layout["images"]) > 2) == FASHION_MNIST  # the gallery's thumbnails, where the images are
    for image in layout["images"]:
        assert image["complete"] and image["width"] > 0 and image["scheme"].startswith("data:image/"), image
    outside = [u[:80] for u in loaded.requests if u != path.as_uri() and not u.startswith("data:")]
    assert outside == [] and loaded.requests[0] == path.as_uri()
    assert loaded.exceptions == []
    assert [c for c in loaded.console if c["level"] in ("error", "warning", "assert")] == []
    assert [e for e in loaded.log if e["level"] in ("error", "warning")] == []
    if table:  # to look at it: the screenshot is kept beside the page
        browser.screenshot(path.with_suffix(".png"))


def test_the_page_policy_blocks_what_would_call_out(browser, pages, tmp_path):
    """The check above is not vacuous: an image from the network, slipped into the page, is refused
    by its Content-Security-Policy before any request, and the refusal is reported."""
    text = pages["fashion-mnist-c"].read_text(encoding="utf-8")
    tampered = tmp_path / "tampered.html"
    tampered.write_text(text.replace("<body>", '<body><img id="out" src="http://192.0.2.1/pixel.png">', 1),
                        encoding="utf-8")
    loaded = browser.load(tampered.as_uri())
    assert browser.evaluate("document.getElementById('out').naturalWidth") == 0
    reported = [e["text"] for e in loaded.log] + [c["text"] for c in loaded.console]
    assert any("Content Security Policy" in text for text in reported), reported
