import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.image
import pytest
from changefixtures import generation_record, letter_record, suite_run, write_sample_run
from runfixtures import alternating, write_run

from harness import cli
from harness.analysis.comparison import build_comparison
from harness.render import plots
from harness.render.report import CHANGES_SHOWN as REPORT_SHOWN
from harness.render.report import build_report, render_markdown, write_report

BASE = {"t_a": alternating(40), "t_b": alternating(30, 3)}
WORSE = {"t_a": alternating(40)[:-5] + [0.0] * 5, "t_b": alternating(30, 3)}
PLOTS = ["scores", "deltas", "flips", "tradeoff"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ARC, GSM = "llama3_arc_challenge", "llama3_gsm8k_cot"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def run_dir(tmp_path):
    store = write_run(
        tmp_path / "run",
        {"bf16": BASE, "bf16~repeat": BASE, "fp8": WORSE},
        groups={"g": ["t_a", "t_b"]},
        failed={"int8": "engine crashed: OOM"},
        noise_floor=True,
        config_path="configs/demo.yaml",
    )
    return store.root


@pytest.fixture
def report_dir(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 0
    assert f"wrote {out / 'report.html'}" in capsys.readouterr().out
    return out


def decode_png(data: bytes):
    assert data.startswith(PNG_MAGIC)
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def test_report_writes_markdown_html_and_valid_pngs(report_dir):
    for name in PLOTS:
        image = decode_png((report_dir / f"{name}.png").read_bytes())
        height, width = image.shape[:2]
        assert height > 100 and width > 100
        assert image[..., :3].std() > 0  # something is drawn
    md = (report_dir / "report.md").read_text()
    for name in PLOTS:
        assert f"]({name}.png)" in md


def test_report_html_is_self_contained_with_tables_and_embedded_images(report_dir):
    page = (report_dir / "report.html").read_text()
    images = re.findall(r"<img [^>]*src='data:image/png;base64,([^']+)'", page)
    assert len(images) == len(PLOTS)
    for data in images:
        decode_png(base64.b64decode(data))
    assert page.count("<table>") == 3  # variants, comparison, provenance
    assert "<th>fp8 delta [95% CI]</th>" in page
    assert "<td>-5.00 [-12.50, +0.00]</td>" in page
    assert "src='http" not in page and "<link" not in page


def md_rows(md: str) -> list[list[str]]:
    """Cells of every markdown table row, without the padding that aligns the columns."""
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines() if line.startswith("| ")]


def test_report_names_the_source_of_every_number(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "## Provenance (run.json and &lt;variant&gt;/manifest.json)" in md  # shown, not read as a tag
    rows = {row[0]: row[1:] for row in md_rows(md)}
    assert rows["run.config_path"][0] == "configs/demo.yaml"
    assert rows["run.created"][0] == "2025-01-01T00:00:00+00:00"
    for field in [
        "environment.git_sha",
        "environment.versions.vllm",
        "environment.hardware.cpu_model",
        "data.datasets.demo_task",
        "data.task_versions.demo_task",
        "spec.data_source",
        "engine.quantization.weight_bytes",
        "statistics.throughput.tokens_per_s",
    ]:
        assert any(key == field or key.startswith(f"{field}.") for key in rows), field
    assert md.count("Source: ") == len(PLOTS)
    assert rows["int8"][:2] == ["failed", "engine crashed: OOM"]


def test_report_of_a_missing_run_is_bad_input(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()  # nothing written for a run that is not there


def test_report_of_a_malformed_manifest_is_one_line_naming_the_file(run_dir, capsys):
    manifest = run_dir / "fp8" / "manifest.json"
    raw = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**raw, "status": 7}))
    assert cli.main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("harness report: error: ")
    assert f"{manifest}: status:" in err
    assert not (run_dir / "report").exists()


def test_report_out_that_is_a_file_is_bad_input(run_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert cli.main(["report", str(run_dir), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {taken}: is a file" in err
    assert cli.main(["report", str(run_dir), "--out", str(taken / "below")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {taken / 'below'}: cannot create the folder" in err
    assert taken.read_text() == "not a folder"


def test_report_html_escapes_text_from_the_results_folder(tmp_path):
    store = write_run(
        tmp_path / "run", {"bf16": BASE, "fp8": WORSE}, failed={"int8": "<script>alert('x')</script> & more"}
    )
    out = tmp_path / "out"
    write_report(store, out)
    page = (out / "report.html").read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in page


def test_compare_gate_report_diff_history_run_without_vllm_or_torch(run_dir, tmp_path):
    # A finder that refuses vllm and torch makes them look uninstalled to every import.
    script = textwrap.dedent(
        f"""
        import sys

        class Uninstalled:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("vllm", "torch"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, Uninstalled())
        from harness import cli
        codes = [
            cli.main(["compare", {str(run_dir)!r}]),
            cli.main(["gate", {str(run_dir)!r}, "--max-drop", "100"]),
            cli.main(["report", {str(run_dir)!r}, "--out", {str(tmp_path / "r")!r}]),
            cli.main(["diff", {str(run_dir)!r}, "--format", "json"]),
            cli.main(["history", {str(run_dir)!r}, "--out", {str(tmp_path / "h")!r}]),
        ]
        assert not {{"vllm", "torch"}} & set(sys.modules)
        print("codes", codes)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # gate fails (exit 1) only because int8 failed; nothing needed vllm or torch.
    assert "codes [0, 1, 0, 0, 0]" in result.stdout
    assert "FAIL int8: variant failed" in result.stdout
    assert (tmp_path / "r" / "report.html").is_file()


# Libraries a command has no use for, so it must not import them: each costs a noticeable part
# of a second at every start (scipy.stats alone most of one).
NOT_IMPORTED = {
    "compare": ["jinja2", "matplotlib"],
    "gate": ["jinja2", "matplotlib", "pandas"],
    "report": ["pandas"],
    "diff": ["jinja2", "matplotlib", "pandas", "scipy.stats"],
    "history": ["jinja2"],
}


@pytest.mark.parametrize("command", NOT_IMPORTED)
def test_a_command_imports_only_the_libraries_it_uses(run_dir, tmp_path, command):
    args = {
        "gate": ["--max-drop", "100"],
        "report": ["--out", str(tmp_path / "r")],
        "history": ["--out", str(tmp_path / "h")],
    }.get(command, [])
    script = (
        f"import sys; from harness import cli; code = cli.main({[command, str(run_dir), *args]!r}); "
        f"print(code, [m for m in {NOT_IMPORTED[command]!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # gate answers 1: int8 failed.
    assert result.stdout.splitlines()[-1] == f"{1 if command == 'gate' else 0} []"


# Records, once the page has loaded, what each image decoded to.
PROBE = """<script>
window.addEventListener('load', () => {
  const sizes = Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1);
  document.body.setAttribute('data-image-widths', sizes.join(','));
});
</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium chromium-driver)")
    return path


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_html_renders_in_headless_chromium(report_dir, tmp_path):
    browser = chromium()
    probed = tmp_path / "probed.html"
    page = (report_dir / "report.html").read_text()
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = run_chromium(
        browser,
        tmp_path / "profile-dom",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probed.as_uri(),
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    widths = re.search(r'data-image-widths="([^"]*)"', dom.stdout)
    assert widths, "the load handler never ran"
    assert [int(w) > 0 for w in widths.group(1).split(",")] == [True] * len(PLOTS)
    assert dom.stdout.count("<table>") == 3
    assert "engine crashed: OOM" in dom.stdout

    screenshot = tmp_path / "shot.png"
    shot = run_chromium(
        browser,
        tmp_path / "profile-shot",
        "--window-size=1400,2400",
        f"--screenshot={screenshot}",
        (report_dir / "report.html").as_uri(),
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    image = decode_png(screenshot.read_bytes())
    assert image.shape[:2] == (2400, 1400)
    assert image[..., :3].std() > 0.05  # text, tables and plots, not a blank page


def test_report_plots_name_the_card_benchmarks_and_draw_the_card(tmp_path):
    card = {
        "name": "llama3-8b",
        "scores": [
            {
                "benchmark": "AI2 Reasoning Challenge",
                "task": "llama3_arc_challenge",
                "metric": "acc,none",
                "value": 78.6,
            }
        ],
    }
    scores = {"llama3_arc_challenge": alternating(20), "t_b": alternating(20, 3)}
    store = write_run(tmp_path / "run", {"bf16": scores, "fp8": scores}, card=card)
    report = build_report(store)
    comparison, run_card = build_comparison(store), store.read_run().card
    (score_plot,) = [p for p in report.plots if p.name == "scores"]
    # The report draws with the run's card: its names, not the suites' ("ARC-Challenge").
    assert score_plot.png == plots.png_bytes(plots.scores_figure(comparison, run_card))
    assert score_plot.png != plots.png_bytes(plots.scores_figure(comparison, None))
    assert "card llama3-8b: run.json (card.scores)" in render_markdown(report)


# -- "What changed": model text is hostile ------------------------------------------------

# Each would, if it ran, mark the body; the page must show them as text.
HOSTILE = [
    "<script>document.body.setAttribute('data-pwned', 'script')</script> The final answer is 1",
    "<img src=x onerror=\"document.body.setAttribute('data-pwned', 'img')\"> The final answer is 2",
    "--> <!-- </pre></details><script>document.body.setAttribute('data-pwned', 'close')</script> The final answer is 3",
    "**bold** [link](javascript:alert(1)) `code` The final answer is 4",
]


def hostile_run(root: Path):
    """GSM-8K: bf16 right on every document, int8 wrong on the first five with hostile text."""
    gold = "9"
    base = [generation_record(GSM, i, f"So it is 9. The final answer is {gold}", gold) for i in range(8)]
    cand = [generation_record(GSM, i, HOSTILE[i % len(HOSTILE)], gold) for i in range(5)] + base[5:]
    # A letter task both get wrong; int8 with another wrong letter on two documents.
    letters = [letter_record(ARC, i, [-2.0, -1.0, -3.0, -4.0], 0) for i in range(4)]
    moved = [letter_record(ARC, i, [-2.0, -3.0, -1.0, -4.0], 0) for i in range(2)] + letters[2:]
    # Hostile text in the question, too: the prompt comes from the dataset.
    for record in base + cand:
        record.prompt = record.prompt + "<script>document.body.setAttribute('data-pwned', 'prompt')</script>"
    return write_sample_run(root, {"bf16": {ARC: letters, GSM: base}, "int8": {ARC: moved, GSM: cand}})


def dump_dom(browser: str, profile: Path, url: str) -> str:
    dom = run_chromium(browser, profile, "--virtual-time-budget=5000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def shown_items(dom: str) -> list[str]:
    """The change items the page shows: (kind) of each <details> not hidden."""
    return re.findall(r"<details class=\"change ([a-z-]+)\"(?![^>]*hidden)[^>]*>", dom)


def test_what_changed_shows_hostile_model_text_as_text_and_runs_none_of_it(tmp_path):
    store = hostile_run(tmp_path / "run")
    write_report(store, tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<script>") == 1  # the page's own
    assert "&lt;script&gt;document.body.setAttribute(&#39;data-pwned&#39;, &#39;script&#39;)&lt;/script&gt;" in page
    assert "--&gt; &lt;!-- &lt;/pre&gt;&lt;/details&gt;" in page
    assert "src='http" not in page and "<link" not in page

    browser = chromium()
    url = (tmp_path / "out" / "report.html").as_uri()
    dom = dump_dom(browser, tmp_path / "p1", url)
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)
    assert '<img src="x"' not in dom and "<strong>" not in dom
    assert shown_items(dom) == ["changed"] * 2 + ["right-to-wrong"] * 5  # in the run's task order
    assert "7 of 7 documents shown" in dom
    assert "**bold** [link](javascript:alert(1)) `code`" in dom  # markdown stays text
    assert dom.count('<details class="change') == 7 and " open=" not in dom  # collapsed

    # The filters read the URL fragment: a count's link opens the page filtered.
    dom = dump_dom(browser, tmp_path / "p2", url + "#kind=changed")
    assert shown_items(dom) == ["changed"] * 2 and "2 of 7 documents shown" in dom
    dom = dump_dom(browser, tmp_path / "p3", url + f"#task={GSM}&variant=int8")
    assert shown_items(dom) == ["right-to-wrong"] * 5
    # The page search: documents by their text (opened), table rows too.
    dom = dump_dom(browser, tmp_path / "p4", url + "#q=javascript%3Aalert")
    assert shown_items(dom) == ["right-to-wrong"] and "1 of 7 documents shown" in dom and " open=" in dom
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)
    assert f'<a href="#variant=int8&amp;task={GSM}&amp;kind=right-to-wrong">5</a>' in dom


BEFORE_THE_SECTION = "body > :not(#search):not(#changes):not(#changes ~ *)"


def test_what_changed_at_the_full_suite_size_in_chromium(tmp_path):
    store = suite_run(tmp_path / "run", tasks=16, variants=4)
    write_report(store, tmp_path / "out")
    page = tmp_path / "out" / "report.html"
    assert page.stat().st_size < 5_000_000
    browser = chromium()
    dom = dump_dom(browser, tmp_path / "p1", page.as_uri())
    counts = build_report(store).changes
    expected = sum(min(REPORT_SHOWN, t.right_to_wrong + t.wrong_to_right + t.changed) for t in counts.tasks)
    assert len(shown_items(dom)) == expected and f"{expected} of {expected} documents shown" in dom
    # Headless Chromium's --screenshot paints a page scrolled by the fragment blank: the copy
    # photographed hides what comes before the section instead (the bar of filters stays).
    section = tmp_path / "out" / "section.html"
    section.write_text(
        page.read_text().replace("</head>", f"<style>{BEFORE_THE_SECTION}{{display:none}}</style></head>")
    )
    screenshot = tmp_path / "suite.png"
    shot = run_chromium(
        browser,
        tmp_path / "p2",
        "--window-size=1400,3000",
        "--virtual-time-budget=5000",
        f"--screenshot={screenshot}",
        section.as_uri() + "#variant=int8-w8a8&kind=right-to-wrong",
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    image = decode_png(screenshot.read_bytes())
    assert image.shape[:2] == (3000, 1400) and image[..., :3].std() > 0.05
    if os.environ.get("HARNESS_KEEP_SCREENSHOT"):  # to look at it: a path to copy it to
        shutil.copy(screenshot, os.environ["HARNESS_KEEP_SCREENSHOT"])
