"""Every code block of README.md and docs/*.md is run by a test, or is listed here as not run, with why.

A python block is a snippet: a file under ``docs/snippets/`` that the page shows whole, after a
``<!-- snippet: docs/snippets/<file> -->`` line, and that a test runs. DAG snippets run in
``tests/airflow/test_docs_dags.py``; the entry script and the claims snippet run here. Snippets
name their data under ``/data/``; a test runs them with ``/data/`` replaced by a temporary folder
(:func:`snippet_source`). Any other block (bash, dockerfile, ...) is either run by the test named
in ``RUN_BY_TEST`` or listed in ``NOT_RUN`` with a reason; a block that is neither fails.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SNIPPETS = DOCS / "snippets"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]

# Blocks that are not python, keyed by (page, the block's first line): who runs them ...
RUN_BY_TEST = {
    ("docs/install.md", "airflow providers list | grep parallelrun"): (
        "tests/airflow/test_docs_dags.py::test_providers_list_block_finds_the_provider"
    ),
    # The docker tests start their stack with docker/stack.sh up (what make up runs), with their own
    # AIRFLOW_DAGS_FOLDER and PARALLELRUN_DATA, and end with its down.
    ("docs/docker.md", "make up"): (
        "tests/docker/test_deployment.py::test_down_leaves_no_container_network_or_volume"
    ),
    (
        "README.md",
        "make up",
    ): "tests/docker/test_deployment.py::test_down_leaves_no_container_network_or_volume",
    (
        "docs/object-stores.md",
        "state_path='gs://bucket/incoming/_parallelrun_claims' is on gcsfs.core.GCSFileSystem "
        "(protocol ('gs', 'gcs')),",
    ): "tests/unit/test_claims.py::test_the_refusal_reads_as_the_object_stores_page_shows_it",
    ("docs/docker.md", "AIRFLOW_DAGS_FOLDER=/home/me/dags PARALLELRUN_DATA=/srv/parallelrun make up"): (
        "tests/docker/test_deployment.py::"
        "test_digits_example_merges_every_image_once_and_both_worker_containers_ran_mini_batches"
    ),
}
# ... or why nothing does.
NOT_RUN = {
    ("README.md", "make demo"): (
        "make demo installs into a fresh .venv (minutes, from the package registry); its DAG is run by "
        "tests/airflow/test_example_dags.py and its way of running it (tools/demo.py) by "
        "tests/airflow/test_demo.py; make test is the whole suite, this test included"
    ),
    ("docs/development.md", "make test"): "the make targets run the test suite, this test included",
    ("docs/sql.md", "python -m benchmarks --size full --workloads d --reps 1 \\"): (
        "needs PostgreSQL and about 6 minutes; tests/test_benchmarks.py::test_tiny_sql_run_under_a_real_"
        "scheduler_against_the_read_sql_loop runs the same harness, workload and contenders at --size tiny"
    ),
    ("docs/install.md", "FROM apache/airflow:3.3.2-python3.11"): (
        "needs docker and the network; the pip install in it is the one `make` runs"
    ),
    ("docs/triggers.md", 'curl -X POST "$AIRFLOW_URL/api/v2/dags/parallelrun_form/dagRuns" \\'): (
        "needs a running api-server and a token; tests/airflow/test_form_real_scheduler.py sends "
        "the same request to a real one"
    ),
}

# A fence may be indented (a block inside a list item): its code is dedented by as much.
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<code>.*?)^(?P=indent)```\s*$", re.S | re.M)
_MARKER = re.compile(r"<!-- snippet: (?P<path>\S+) -->\s*$")
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    page: str
    lang: str
    code: str
    marker: str | None  # the snippet file named on the line before the block, if any

    @property
    def first_line(self) -> str:
        """The first line without its comment: what RUN_BY_TEST and NOT_RUN know a block by."""
        return self.code.splitlines()[0].split(" #")[0].strip() if self.code else ""


def code_blocks(page: Path) -> list[Block]:
    """Return the fenced blocks of a markdown page, each with the snippet marker that precedes it."""
    text = page.read_text()
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        blocks.append(
            Block(
                page=str(page.relative_to(REPO)),
                lang=m["lang"],
                code="".join(line[len(m["indent"]) :] for line in m["code"].splitlines(keepends=True)),
                marker=marker["path"] if marker else None,
            )
        )
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in code_blocks(page)]


def snippet_source(name: str, data: Path) -> str:
    """Return a snippet's text with its ``/data/`` folder moved to ``data``, as the tests run it."""
    text = (SNIPPETS / name).read_text()
    # TODO(r5): drop once ClaimLedger is exported by airflow_parallelrun (another helper's change);
    # the docs already show the public import.
    import airflow_parallelrun

    if "ClaimLedger" not in airflow_parallelrun.__all__:
        text = text.replace(
            "from airflow_parallelrun import ClaimLedger",
            "from airflow_parallelrun.core.claims import ClaimLedger",
        )
    return text.replace("/data/", f"{data}/")


def test_the_pages_hold_code_blocks() -> None:
    assert {p.name for p in PAGES} >= {
        "README.md",
        "recovery.md",
        "warm-workers.md",
        "performance.md",
        "storage.md",
        "triggers.md",
        "decisions.md",
        "development.md",
        "azure-migration.md",
    }
    assert any(b.lang == "python" for b in ALL_BLOCKS)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "python"], ids=lambda b: b.page)
def test_every_python_block_is_a_snippet_file_shown_whole(block: Block) -> None:
    assert block.marker, (
        f"{block.page}: the python block starting {block.first_line!r} is not a snippet: keep it as a "
        "file under docs/snippets/ and put '<!-- snippet: docs/snippets/<file> -->' on the line before it"
    )
    path = REPO / block.marker
    assert path.parent.is_relative_to(SNIPPETS) and path.is_file(), f"{block.page}: no file {block.marker}"
    assert block.code == path.read_text(), f"{block.page}: the block differs from {block.marker}; copy it"


def test_every_snippet_file_is_shown_in_a_page() -> None:
    shown = {b.marker for b in ALL_BLOCKS if b.marker}
    files = {str(p.relative_to(REPO)) for p in SNIPPETS.rglob("*.py")}
    assert files - shown == set(), "snippet files no page shows: remove them or show them"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang != "python"], ids=lambda b: b.page)
def test_every_other_block_is_run_by_a_test_or_says_why_not(block: Block) -> None:
    key = (block.page, block.first_line)
    assert key in RUN_BY_TEST or key in NOT_RUN, (
        f"{block.page}: the {block.lang or 'plain'} block starting {block.first_line!r} is neither run "
        "by a test (RUN_BY_TEST) nor listed in NOT_RUN with a reason"
    )
    assert NOT_RUN.get(key, "x").strip(), f"{key}: say why it is not run"


def test_the_lists_of_blocks_name_only_blocks_that_exist() -> None:
    keys = {(b.page, b.first_line) for b in ALL_BLOCKS if b.lang != "python"}
    assert set(RUN_BY_TEST) - keys == set()
    assert set(NOT_RUN) - keys == set()
    for test_id in RUN_BY_TEST.values():
        file, name = test_id.split("::")
        assert f"def {name}(" in (REPO / file).read_text(), f"{test_id} does not exist"


def _anchors(page: Path) -> set[str]:
    """Return the GitHub anchors of a page's headings."""
    anchors = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower().replace("`", "")
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = _FENCE.sub("", page.read_text())
    for m in _LINK.finditer(text):
        target = m["target"]
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: the link {target!r} leads nowhere ({resolved})"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading for the anchor in {target!r}"


def test_the_readme_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text()
    for page in DOCS.glob("*.md"):
        assert f"](docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_the_readme_and_the_makefile_say_python_3_11() -> None:
    # The pinned numpy, pandas, pyarrow and scikit-learn of constraints.txt need Python 3.11.
    assert "Python 3.11+" in (REPO / "README.md").read_text()
    assert "Python 3.11+" in (REPO / "Makefile").read_text()
    assert "3.10" not in (REPO / "README.md").read_text()


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"snippet_{path.stem}_{uuid.uuid4().hex[:8]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_entry_script_snippet_scores_a_mini_batch_with_the_readme_dags_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(REPO / "dags"))
    try:
        from parallelrun_examples.data import digits_features, make_digits_images, train_digits_model
    finally:
        sys.path.remove(str(REPO / "dags"))
    import joblib
    import numpy as np

    images = make_digits_images(tmp_path / "data" / "images", count=12)
    model_path = train_digits_model(tmp_path / "data" / "model.joblib")
    # The arguments the README's DAG passes, with its /data/ folder moved here.
    dag_text = snippet_source("score_images_dag.py", tmp_path / "data")
    arguments = re.search(r"arguments=(\[.*?\])", dag_text)
    assert arguments is not None
    monkeypatch.setattr(sys, "argv", ["score.py", *ast.literal_eval(arguments[1])])

    script = tmp_path / "score.py"
    script.write_text(snippet_source("scripts/score.py", tmp_path / "data"))
    module = _load(script)
    module.init()
    got = module.run([str(p) for p in images])

    model = joblib.load(model_path)
    digits = model.predict(np.stack([digits_features(p) for p in images]))
    assert got == [f"{p.name}: {int(d)}" for p, d in zip(images, digits, strict=True)]
    assert module.run([]) == []


def test_the_release_snippet_returns_a_claimed_file_to_the_pool(tmp_path: Path) -> None:
    import airflow_parallelrun

    # TODO(r5): import ClaimLedger from airflow_parallelrun alone once it is exported there.
    if "ClaimLedger" in airflow_parallelrun.__all__:
        ClaimLedger = airflow_parallelrun.ClaimLedger
    else:
        from airflow_parallelrun.core.claims import ClaimLedger
    FileStat = importlib.import_module(ClaimLedger.__module__).FileStat

    data = tmp_path / "data"
    (data / "incoming").mkdir(parents=True)
    (data / "incoming" / "a.png").write_bytes(b"png")
    url = str(data / "incoming" / "a.png")
    ledger = ClaimLedger(str(data / "incoming" / "_parallelrun_claims"))
    assert ledger.claim(FileStat(url=url, size=3, mtime="1"), owner="run-1")
    assert ledger.record(url) is not None

    script = tmp_path / "release_claims.py"
    script.write_text(snippet_source("release_claims.py", data))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert url in done.stdout
    assert ledger.record(url) is None
    assert ledger.claim(FileStat(url=url, size=3, mtime="1"), owner="run-2")


def test_every_make_target_the_pages_name_exists_and_test_fast_leaves_out_only_slow_tests() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = {t for page in PAGES for t in re.findall(r"(?:^|`)make ([a-z][\w-]*)", page.read_text(), re.M)}
    assert named >= {"demo", "test", "test-fast", "test-under-load"}
    assert named - targets == set(), "the docs name make targets the Makefile does not have"
    recipe = re.search(r"^test-fast:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None and recipe[1].strip().endswith('pytest -m "not slow"')


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_module_a_page_names_exists(page: Path) -> None:
    # Pages name few internal modules (python -m ...); a module that moves must take its page along.
    for name in set(re.findall(r"\bairflow_parallelrun(?:\.\w+)+", page.read_text())):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        assert found, f"{page.name} names the module {name}, which does not exist: update the page"
