"""`vgg teach`: the chapter's page opened in a real browser (Debian's headless Chromium), its notebook run by a
Jupyter kernel.

The page is built once for the module, from a small `vgg compare` of the MXNet backend (the quickest to train);
every backend whose framework is installed has its column.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from helpers import ENV, ONE_THREAD, ROOT, TINY_CLI, run_in_process, run_python, run_vgg

from common.arch import make_alexnet_config, make_config
from common.backends import BACKENDS, is_available
from common.report import fmt
from common.spec import spec
from common.teach import command

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by scripts/setup.sh: nothing is downloaded
SWEEP = ROOT / "docs" / "bench_sweep.json"  # a `vgg bench --sweep --json` file kept in docs/
INSTALLED = [name for name in BACKENDS if is_available(name)]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teach")
    run = root / "run"
    small = ["--epochs", "2", "--train-limit", "512", "--test-limit", "256", "--seed", "1"]
    done = run_vgg("compare", "--backends", "mxnet", *TINY_CLI, *small, "--out", run, env=ONE_THREAD, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = root / "site"
    args = ["teach", "--run", run, "--out", out, "--bench", SWEEP, "--notebook-backend", "mxnet"]
    done = run_vgg(*args, env=ONE_THREAD, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "page:" in done.stdout and "notebook:" in done.stdout
    return {"run": run, "out": out, "page": out / "index.html", "notebook": out / "chapter.ipynb"}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Opened:
    """A page opened in Chromium at one viewport, with what it said on its console and every request it made."""

    def __init__(self, browser, path: Path, width: int, height: int):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri(), wait_until="load")

    def overflow(self) -> tuple[int, int]:
        return tuple(self.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]"))


@pytest.fixture(scope="module")
def wide(browser, site):
    opened = Opened(browser, site["page"], 1280, 720)
    yield opened
    opened.page.close()


@pytest.fixture(scope="module")
def phone(browser, site):
    opened = Opened(browser, site["page"], 390, 844)
    yield opened
    opened.page.close()


# --- the page in a browser ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["wide", "phone"])
def test_the_page_opens_offline_without_errors_and_without_overflow(view, request, tmp_path):
    opened: Opened = request.getfixturevalue(view)
    assert opened.problems == []
    assert opened.requests and all(url.startswith(("file://", "data:")) for url in opened.requests), opened.requests
    assert opened.page.locator("script").count() == 0  # nothing needs JavaScript
    scroll, inner = opened.overflow()
    assert scroll <= inner, f"{view}: the page is {scroll} px wide in a {inner} px window"
    shot = tmp_path / f"{view}.png"
    opened.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


def test_the_columns_stand_side_by_side_when_wide_and_stack_on_a_phone(wide, phone):
    def boxes(opened, part):
        cells = opened.page.locator(f'.cell[data-fn="model._layer"][data-part="{part}"]')
        assert cells.count() == len(INSTALLED)
        return [cells.nth(i).bounding_box() for i in range(cells.count())]

    for part in ("conv", "relu", "pool"):  # the corresponding lines of every framework in one row
        row = boxes(wide, part)
        assert len({round(b["y"]) for b in row}) == 1, part
        assert [b["x"] for b in row] == sorted(b["x"] for b in row) and len({b["x"] for b in row}) == len(row)
        stacked = boxes(phone, part)
        assert len({round(b["x"]) for b in stacked}) == 1, part  # one column, one framework under another
        assert all(b["width"] <= 390 for b in stacked)


def _definition(path: Path, qualname: str) -> tuple[str, int] | None:
    """The text of ``qualname`` (``Trainer.train_step``) in ``path`` and its first line, read with ``ast``."""
    text = path.read_text()
    nodes: list = ast.parse(text).body
    node = None
    for name in qualname.split("."):
        node = next((n for n in nodes if getattr(n, "name", None) == name), None)
        if node is None:
            return None
        nodes = getattr(node, "body", [])
    assert node is not None
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    lines = text.splitlines(keepends=True)[first - 1 : node.end_lineno]
    return "".join(lines), first


def test_every_code_column_is_the_functions_own_source(wide):
    page = wide.page
    grids = page.eval_on_selector_all("[data-grid]", "gs => gs.map(g => g.dataset.grid)")
    grids = [g for g in grids if g != "conventions"]
    assert {"model.vgg_block", "model._layer", "model.Network", "train.Trainer.train_step"} <= set(grids)
    shown = 0
    for dotted in grids:
        module, qualname = dotted.split(".", 1)
        for name in INSTALLED:
            package = BACKENDS[name].package
            expected = _definition(ROOT / package / f"{module}.py", qualname)
            cells = f'.cell[data-backend="{name}"][data-fn="{dotted}"]'
            if expected is None:
                assert page.locator(f"{cells}[data-absent]").count() >= 1, (name, dotted)
                continue
            text = "".join(page.eval_on_selector_all(f"{cells} pre.code", "ps => ps.map(p => p.textContent)"))
            assert text == expected[0], f"{name} {dotted}: the column is not the function's source"
            href = page.get_attribute(f'[data-grid="{dotted}"] .col-head[data-backend="{name}"] a', "href")
            assert href == (ROOT / package / f"{module}.py").as_uri() + f"#L{expected[1]}"
            shown += 1
    assert shown >= 3 * len(INSTALLED)
    fit = _definition(ROOT / "common" / "training.py", "fit")
    assert fit is not None
    assert page.text_content('.cell[data-fn="common.training.fit"] pre.code') == fit[0]


def test_the_differences_are_read_from_the_code(wide):
    notes = {
        name: wide.page.text_content(f'[data-grid="conventions"] .cell[data-backend="{name}"]') for name in INSTALLED
    }
    if "tf" in notes:
        assert "NHWC" in notes["tf"] and "lazy input shape" in notes["tf"]
        assert "momentum m = 0.9" in notes["tf"] and "default is 0.001" in notes["tf"]  # Keras' own epsilon
    if "torch" in notes:
        assert "requires in_channels" in notes["torch"] and "momentum m = 0.1" in notes["torch"]
    if "mxnet" in notes:
        assert "defers initialization" in notes["mxnet"] and "momentum m = 0.9" in notes["mxnet"]
    assert all("epsilon 1e-05" in text for text in notes.values())


@pytest.mark.parametrize(
    "table, config",
    [
        ("book-shapes", make_config("vgg11")),
        ("alexnet-shapes", make_alexnet_config()),
        ("vgg16-shapes", make_config("vgg16", in_channels=3, num_classes=1000)),
        ("vgg19-shapes", make_config("vgg19", in_channels=3, num_classes=1000)),
    ],
)
def test_the_shape_tables_equal_the_spec(wide, table, config):
    page, s = wide.page, spec(config)
    rows = f'table[data-table="{table}"]'
    spec_cells = page.eval_on_selector_all(f'{rows} td[data-col="spec"]', "cs => cs.map(c => c.textContent)")
    assert spec_cells == [str(shape) for _, shape in s.trace()]
    for name in INSTALLED:  # each framework's own shape inference, marked equal
        cells = page.locator(f'{rows} td[data-col="{name}"]')
        assert cells.count() == len(s.trace())
        assert page.locator(f'{rows} td.ne[data-col="{name}"]').count() == 0
        assert page.text_content(f'{rows} td[data-col="{name}-total"]').rstrip("=") == f"{s.params:,}"
    verdict = page.locator(f'table[data-table="{table}"] >> xpath=../following-sibling::p[1]')
    assert verdict.get_attribute("data-differences") == "0"


def test_the_results_are_the_runs(wide, site):
    page = wide.page
    record = json.loads((site["run"] / "results.json").read_text())["runs"][0]
    table = page.text_content("table.results")
    assert record["framework"] in table and fmt(record["history"]["epochs"][-1]["test_acc"]) in table
    assert page.locator("#results ~ div.charts svg, .charts svg").count() >= 4
    assert "one framework" in page.text_content("section:has(#results)")


def test_the_exercises_state_their_numbers(wide):
    page = wide.page
    vgg11, alex = spec(make_config("vgg11")), spec(make_alexnet_config())
    trace = page.text_content('[data-exercise="trace"]')
    assert "11 layers with weights" in trace and "= 8 lines" in trace
    versus = page.text_content('[data-exercise="alexnet"]')
    assert f"{vgg11.macs:,}" in versus and f"{alex.macs:,}" in versus and f"{alex.params:,}" in versus
    resolution = page.text_content('[data-exercise="resolution"]')
    sweep = json.loads(SWEEP.read_text())["points"]
    measured = [p for p in sweep if p["input_size"] == 224 and "error" not in p]
    assert measured and fmt(measured[0]["train"]) in resolution  # the sweep's own number, and its file
    assert str(SWEEP) in resolution
    table1 = page.text_content('[data-exercise="table1"]')
    for arch in ("vgg16", "vgg19"):
        assert f"{spec(make_config(arch, in_channels=3, num_classes=1000)).params:,}" in table1


# --- the notebook ------------------------------------------------------------------------------------------------


def test_the_notebook_runs_top_to_bottom(site, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(site["notebook"], as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source.startswith("BACKEND = 'mxnet'")
    monkeypatch.setenv("PYTHONPATH", ENV["PYTHONPATH"])  # the kernel imports this checkout
    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "MXNet Gluon computes in NCHW" in text
    assert f"{spec(make_config('vgg11')).params:,} parameters (spec: " in text
    assert "epoch 2, loss" in text and "hand_vgg holds as many parameters as vgg(): True" in text


# --- without a run, and what is refused --------------------------------------------------------------------------


def test_without_a_run_the_page_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/compare here
    done = run_in_process(capsys, "teach", "--out", "site")
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "site" / "index.html").read_text()
    assert "No compare run yet: run <code>make compare</code>" in page and 'table class="results"' not in page
    again = run_in_process(capsys, "teach", "--out", "site", "--run", ROOT / "no-such-run")
    assert again.returncode != 0 and again.stderr.count("\n") == 1 and "give --run" in again.stderr


def test_a_folder_without_results_is_one_line(tmp_path, capsys):
    done = run_in_process(capsys, "teach", "--run", tmp_path, "--out", tmp_path / "site")
    assert done.returncode != 0
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "results.json" in done.stderr and "--run" in done.stderr
    bad = tmp_path / "results.json"
    bad.write_text('{"runs": [{"framework": "x"}]}')
    done = run_in_process(capsys, "teach", "--run", tmp_path, "--out", tmp_path / "site")
    assert done.returncode != 0 and "is not the results.json of a finished `vgg compare`" in done.stderr
    done = run_in_process(capsys, "teach", "--bench", bad, "--out", tmp_path / "site")
    assert done.returncode != 0 and "--bench" in done.stderr and done.stderr.count("\n") == 1


def test_a_page_the_user_wrote_is_kept_without_overwrite(tmp_path, capsys, site):
    out = tmp_path / "site"
    out.mkdir()
    mine = out / "index.html"
    mine.write_text("<p>my notes</p>")
    done = run_in_process(capsys, "teach", "--out", out, "--run", site["run"])
    assert done.returncode != 0 and "--overwrite" in done.stderr
    assert mine.read_text() == "<p>my notes</p>" and not (out / "chapter.ipynb").exists()
    # what `vgg teach` wrote it replaces without --overwrite; what the user wrote only with it
    assert command._ours(site["page"]) and command._ours(site["notebook"]) and not command._ours(mine)
    shutil.copy(site["notebook"], out / "chapter.ipynb")
    done = run_in_process(capsys, "teach", "--out", out, "--run", site["run"])
    assert done.returncode != 0 and f"{mine} exists" in done.stderr  # the notebook was no obstacle


# --- the registry decides the columns; the package imports no framework ------------------------------------------


def test_a_backend_added_to_the_registry_gets_its_column(tmp_path):
    # the registry holding MXNet and a second entry for the same package: the page has both, and nothing else
    code = f"""
from common.backends import BACKENDS, Backend
from common.cli import main
mxnet = BACKENDS["mxnet"]
BACKENDS.clear()
BACKENDS.update(mxnet=mxnet, again=Backend("vgg_mxnet", "mxnet", "mxnet", "Gluon again"))
raise SystemExit(main(["teach", "--out", {str(tmp_path)!r}, "--run", {str(tmp_path / "none")!r}]))
"""
    (tmp_path / "none").mkdir()
    done = run_python(code, env=ONE_THREAD)
    assert done.returncode != 0 and "holds no results.json" in done.stderr  # the run is checked first
    done = run_python(code.replace(f', "--run", {str(tmp_path / "none")!r}', ""), env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "index.html").read_text()
    assert 'style="--n:2" data-grid="model._layer"' in page and "Gluon again" in page
    assert page.count('data-backend="again" data-fn="model._layer"') == page.count(
        'data-backend="mxnet" data-fn="model._layer"'
    )
    assert 'data-backend="torch"' not in page and 'data-col="again-total"' in page


def test_the_teach_package_imports_no_framework():
    modules = ["common.teach", *(f"common.teach.{m}" for m in ("command", "sources", "chapter", "page", "notebook"))]
    frameworks = [b.framework for b in BACKENDS.values()]
    code = (
        f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print([f for f in {frameworks!r} if f in sys.modules])"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
