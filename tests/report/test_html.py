"""`calbench report --html`: one self-contained file, rendered in a real headless browser (Debian's
chromium) with the network cut off; every table names a method, every registered figure is embedded,
nothing is fetched from elsewhere, and a screenshot is left for a person to open."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_store

from calbench.cli import cli
from calbench.report.figures import FIGURES

SWEEP = (("ce", "ce", {}), ("ls", "ls(alpha=0.05)", {"alpha": 0.05}),
         ("mbls", "mbls(margin=5)", {"margin": 5.0, "alpha": 0.1}),
         ("mbls", "mbls(margin=10)", {"margin": 10.0, "alpha": 0.1}),
         ("cals-alm", "cals-alm(margin=10)", {"margin": 10.0, "penalty": "phr"}))
GROUPS = (("digits", "mlp"), ("digits-lt", "mlp"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# no network: every host resolves to nothing and any proxied request goes to a closed port
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Document(HTMLParser):
    """Tables (their text), figure sections (their image sources) and every URL-carrying attribute."""

    def __init__(self):
        super().__init__()
        self.tables, self.figures, self.urls, self.ids = [], {}, [], set()
        self._depth, self._section = 0, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get("id"))
        self.urls += [v for k, v in attrs.items() if k in ("src", "href", "action", "poster", "data") and v]
        if tag == "table":
            self._depth += 1
            self.tables.append("")
        if tag == "section" and (attrs.get("id") or "").startswith("figure-"):
            self._section = attrs["id"][len("figure-"):]
            self.figures[self._section] = []
        if tag == "img" and self._section:
            self.figures[self._section].append(attrs.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "table":
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.tables[-1] += data


def parse(text: str) -> Document:
    doc = Document()
    doc.feed(text)
    return doc


@pytest.fixture(scope="module")
def html_report(tmp_path_factory):
    root = make_store(tmp_path_factory.mktemp("html") / "results", methods=SWEEP, datasets=GROUPS, n=90)
    path = root.parent / "report.html"
    res = CliRunner().invoke(cli, ["report", "--results", str(root), "--html", str(path), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    return path


def browser(*args: str, profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs it: apt-get install chromium chromium-driver)")
        pytest.skip("chromium is not installed")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", *OFFLINE, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


def test_the_file_is_self_contained_and_small(html_report):
    text = html_report.read_text()
    doc = parse(text)
    assert doc.urls, "the navigation links and images carry URLs"
    assert all(u.startswith(("data:", "#")) for u in doc.urls), [u[:60] for u in doc.urls if u[:5] != "data:"]
    assert "<link" not in text and "@import" not in text and "url(" not in text and "<script src" not in text
    # an http(s) reference may only appear in plain text, never in a tag
    assert not re.search(r"<[^>]*https?://", text)
    assert html_report.stat().st_size < 5_000_000
    assert not list(html_report.parent.glob(".report.html.*"))  # the temporary file was renamed


def test_it_renders_in_a_headless_browser_with_every_table_and_figure(html_report, tmp_path):
    dom = browser("--dump-dom", html_report.as_uri(), profile=tmp_path / "profile").stdout
    doc = parse(dom)
    for section in ("summary", "tables", "rankings", "figures", "selection", "conventions"):
        assert section in doc.ids, section
    labels = {label for _, label, _ in SWEEP} | {name for name, _, _ in SWEEP}
    titles = ["quickstart: test", "after post-hoc ts", "stored split val", "average rank over cells",
              "pairwise Wilcoxon", "selection on validation"]
    assert all(t in dom for t in titles), [t for t in titles if t not in dom]
    assert len(doc.tables) >= len(titles) + 2  # two rankings: raw and after ts
    for table in doc.tables:
        assert any(label in table for label in labels), table[:200]
    assert set(doc.figures) == set(FIGURES.names())
    for name, sources in doc.figures.items():
        assert sources, f"figure {name} not drawn"
        for src in sources:
            assert src.startswith("data:image/png;base64,")
            assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    shot = tmp_path / "report-html.png"
    browser("--hide-scrollbars", "--window-size=1400,2400", f"--screenshot={shot}", html_report.as_uri(),
            profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
