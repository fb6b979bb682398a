"""Unit tests of the evaluation report: metrics.json and a self-contained report.html."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.evaluate import EvaluationResult, evaluate, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects <img> sources, <script>/<link> tags and text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def small_tables(n: int = 600) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)

    def draw(m: int) -> pd.DataFrame:
        x = rng.gamma(2.0, size=m)
        when = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 700, size=m), unit="D")
        kind = rng.choice(["a", "b", "c<d>"], size=m)
        flag = rng.random(m) < 0.3
        return pd.DataFrame({"amount": x, "when": when, "kind": kind, "flag": flag,
                             "score": x * 2 + rng.normal(size=m)})

    real, train = draw(n), draw(n)
    syn = train.copy()
    syn["score"] = rng.permutation(syn["score"].to_numpy())
    return real, train, syn


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return small_tables()


@pytest.fixture(scope="module")
def result(tables) -> EvaluationResult:
    real, train, syn = tables
    return evaluate(real, syn, target="flag", context=["kind"], train=train,
                    privacy={"epsilon": float("inf"), "delta": None})


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tables, result) -> Path:
    real, _, syn = tables
    out = tmp_path_factory.mktemp("report")
    path = write_report(result, out, real=real, synthetic=syn)
    assert path == out / "report.html"
    return out


def test_writes_both_files_and_no_temporaries(report_dir: Path, result: EvaluationResult) -> None:
    assert sorted(p.name for p in report_dir.iterdir()) == ["metrics.json", "report.html"]
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.to_dict()))
    assert metrics["privacy"]["epsilon"] == "inf"


def test_html_is_self_contained_and_every_image_is_a_png(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    page.close()
    assert page.external == []
    assert "http://" not in html and "https://" not in html
    # 5 column plots, the heatmaps and the per-context bars
    assert len(page.images) == 7
    from PIL import Image  # installed with matplotlib

    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        raw = base64.b64decode(src[len(prefix):], validate=True)
        assert raw.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()  # full decode, not just the header
            assert im.width > 100 and im.height > 100


def test_summary_says_not_private_and_escapes_values(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert "not private" in html and 'class="value bad">not private' in html
    assert "Not privacy-protected" in html
    assert "c&lt;d&gt;" in html and "c<d>" not in html


def test_private_model_shows_epsilon(tables, tmp_path: Path) -> None:
    real, train, syn = tables
    r = evaluate(real, syn, target=None, train=train, privacy={"epsilon": 2.5, "delta": 1e-5})
    html = write_report(r, tmp_path, real=real, synthetic=syn).read_text(encoding="utf-8")
    assert "not private" not in html and "2.50" in html


def test_refuses_tables_without_the_evaluated_columns(tables, result: EvaluationResult, tmp_path: Path) -> None:
    real, _, syn = tables
    with pytest.raises(InvalidDataError, match="'score'"):
        write_report(result, tmp_path, real=real, synthetic=syn.drop(columns=["score"]))
    assert not (tmp_path / "report.html").exists()


def test_dollar_signs_are_not_mathtext_and_bad_out_dir_is_a_user_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    real = pd.DataFrame({"cost $": rng.normal(size=80), "tag": rng.choice(["$a", "b$"], size=80)})
    r = evaluate(real, real.copy(), target=None, context=["tag"])
    html = write_report(r, tmp_path / "out", real=real, synthetic=real).read_text(encoding="utf-8")
    assert "cost $" in html
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot write the report"):
        write_report(r, blocker / "sub", real=real, synthetic=real)


def test_chromium_renders_the_page_when_available(report_dir: Path, tmp_path: Path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--screenshot={shot}", "--window-size=1280,2000",
           (report_dir / "report.html").as_uri()]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("chromium did not finish in 90 s")
    if proc.returncode != 0 or not shot.exists():
        pytest.skip(f"chromium could not render here (exit {proc.returncode})")
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 20_000
