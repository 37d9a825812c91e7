"""``models=``: checked names, staged once per node under Azure's layout, found through ``AZUREML_MODEL_DIR``.

Local sources are linked in place; remote ones are downloaded once into the node's cache, also
when two processes stage the same model at once (a real HTTP server counts the downloads).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.models.refs import ModelError, model_refs
from airflow_parallelrun.core.models.staging import MODEL_CACHE_ENV, model_environment, stage_models
from airflow_parallelrun.core.spec import RunSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


class _Handler(http.server.SimpleHTTPRequestHandler):
    gets: Counter[str]
    delay = 0.0

    def do_GET(self) -> None:
        type(self).gets[self.path] += 1
        time.sleep(self.delay)  # keeps a first download in flight while a second process asks
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_models(tmp_path: Path) -> Iterator[tuple[str, Counter[str], Path]]:
    """A real HTTP server over ``tmp_path/served``: its base URL, its GET counts per path, its folder."""
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (_Handler,), {"gets": Counter(), "delay": 1.0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.gets, served
    server.shutdown()
    server.server_close()


def test_keys_name_a_model_and_its_version() -> None:
    refs = model_refs({"mnist-prs": "/m/a", "mnist-prs:2": "s3://b/m", "scaler.v1:10": "file:///m/s"})
    assert [(r.name, r.version, r.is_remote) for r in refs] == [
        ("mnist-prs", "1", False),
        ("mnist-prs", "2", True),
        ("scaler.v1", "10", False),
    ]
    assert refs[2].local_path == "/m/s"


@pytest.mark.parametrize(
    ("models", "said"),
    [
        ({"../up": "/m"}, "models key '../up' is invalid"),
        ({"m:latest": "/m"}, "models key 'm:latest' is invalid"),
        ({"m:0": "/m"}, "version number >= 1"),
        ({"m": ""}, "models['m']='' is not a path"),
        ({"m": "/a", "m:1": "/b"}, "models names 'm' version 1 twice"),
        (["m"], "models is of type list, not a mapping"),
    ],
)
def test_bad_models_are_refused_when_the_config_is_made(models: object, said: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        ParallelRunConfig(entry_script="s.py", models=models)  # type: ignore[arg-type]
    assert said in str(raised.value)


def test_gpus_per_node_must_be_a_count() -> None:
    with pytest.raises(ConfigError, match=r"gpus_per_node=-1 is invalid"):
        ParallelRunConfig(entry_script="s.py", gpus_per_node=-1)


def test_a_local_model_is_used_in_place_under_azures_layout(tmp_path: Path) -> None:
    folder = tmp_path / "trained" / "mnist"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w")
    single = tmp_path / "scaler.pkl"
    single.write_bytes(b"s")
    env = model_environment({"mnist-prs:3": str(folder), "scaler": str(single)})
    root = Path(env["PARALLELRUN_MODELS_DIR"])
    # Several models: AZUREML_MODEL_DIR is the folder of all, <name>/<version>/<file or folder> below.
    assert env["AZUREML_MODEL_DIR"] == str(root)
    assert (root / "mnist-prs" / "3" / "mnist").resolve() == folder
    assert (root / "scaler" / "1" / "scaler.pkl").resolve() == single
    assert os.listdir(root / "mnist-prs" / "3") == ["mnist"]
    # One model: AZUREML_MODEL_DIR is that model's <name>/<version> folder.
    one = model_environment({"scaler": str(single)})
    assert Path(one["AZUREML_MODEL_DIR"]) == Path(one["PARALLELRUN_MODELS_DIR"]) / "scaler" / "1"
    assert (Path(one["AZUREML_MODEL_DIR"]) / "scaler.pkl").read_bytes() == b"s"


def test_a_missing_local_model_names_the_model_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as raised:
        model_environment({"mnist-prs": str(tmp_path / "nowhere")})
    message = str(raised.value)
    assert "model mnist-prs:1" in message and str(tmp_path / "nowhere") in message
    assert "put the model's file or folder there" in message


def test_a_remote_folder_is_downloaded_once_and_again_only_when_it_changed(
    tmp_path: Path, cache: Path
) -> None:
    fs = fsspec.filesystem("memory")
    base = f"/models-{tmp_path.name}/mnist"
    fs.pipe({f"{base}/weights.bin": b"w1", f"{base}/conf/labels.txt": b"0 1 2"})
    url = f"memory://{base}"
    (ref,) = model_refs({"mnist": url})
    root = Path(stage_models([ref], str(cache)))
    staged = root / "mnist" / "1" / "mnist"
    assert (staged / "weights.bin").read_bytes() == b"w1"
    assert (staged / "conf" / "labels.txt").read_bytes() == b"0 1 2"
    downloads = cache / "downloads"
    entries = sorted(p.name for p in downloads.iterdir() if p.is_dir())
    assert len(entries) == 1
    # Staged again, unchanged: the same entry, nothing downloaded.
    assert Path(stage_models([ref], str(cache))) == root
    assert sorted(p.name for p in downloads.iterdir() if p.is_dir()) == entries
    # Rewritten at the same URL (another size): downloaded again, into a new entry.
    fs.pipe({f"{base}/weights.bin": b"w2-longer"})
    again = Path(stage_models([ref], str(cache)))
    assert (again / "mnist" / "1" / "mnist" / "weights.bin").read_bytes() == b"w2-longer"
    assert len([p for p in downloads.iterdir() if p.is_dir()]) == 2
    fs.rm(base, recursive=True)


_STAGE = """
import json, sys
from airflow_parallelrun.core.models.staging import model_environment
env = model_environment({"scorer:2": sys.argv[1]})
print(json.dumps(env))
"""


@pytest.mark.slow
def test_two_processes_staging_one_remote_model_at_once_download_it_once(
    http_models: tuple[str, Counter[str], Path], cache: Path
) -> None:
    url, gets, served = http_models
    (served / "scorer.onnx").write_bytes(b"x" * 100_000)
    env = {**os.environ, "PYTHONPATH": str(REPO), MODEL_CACHE_ENV: str(cache)}
    stagers = [
        subprocess.Popen(
            [sys.executable, "-c", _STAGE, f"{url}/scorer.onnx"], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in stagers]
    assert [p.returncode for p in stagers] == [0, 0]
    assert outputs[0] == outputs[1]
    model_dir = Path(outputs[0]["AZUREML_MODEL_DIR"])
    assert (model_dir / "scorer.onnx").read_bytes() == b"x" * 100_000
    assert gets["/scorer.onnx"] == 1, gets
    # A later task on the node finds it staged: no download.
    subprocess.run([sys.executable, "-c", _STAGE, f"{url}/scorer.onnx"], env=env, check=True, timeout=120)
    assert gets["/scorer.onnx"] == 1, gets


_READ_MODEL = """
import os

def init():
    global where, content
    where = os.environ["AZUREML_MODEL_DIR"]
    with open(os.path.join("azureml-models", "scorer", "2", "scorer.onnx"), "rb") as f:
        content = f.read().decode()

def run(mini_batch):
    return [f"{os.path.basename(p)} {content} {where}" for p in mini_batch]
"""


@pytest.mark.slow
def test_a_run_stages_a_remote_model_and_its_workers_read_it_from_the_working_directory(
    tmp_path: Path, http_models: tuple[str, Counter[str], Path]
) -> None:
    url, gets, served = http_models
    (served / "scorer.onnx").write_bytes(b"model-7")
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"f{i}.txt").write_text("x")
    script = tmp_path / "score.py"
    script.write_text(_READ_MODEL)
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(
            entry_script="x.py",
            mini_batch_size="1",
            process_count_per_node=2,
            models={"scorer:2": f"{url}/scorer.onnx"},
        ),
        entry_script=str(script),
    )
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    statuses = steps.run_mini_batches([0, 1, 2], spec)
    assert all(s.succeeded for s in statuses), statuses
    parts = sorted((tmp_path / "out" / "_parallelrun" / "parts").glob("*.txt"))
    lines = [line for part in parts for line in part.read_text().splitlines()]
    assert [line.split()[:2] for line in lines] == [
        ["f0.txt", "model-7"],
        ["f1.txt", "model-7"],
        ["f2.txt", "model-7"],
    ]
    assert {line.split()[2] for line in lines} == {str(Path(line.split()[2])) for line in lines}
    assert lines[0].split()[2].endswith(os.path.join("scorer", "2"))
    assert gets["/scorer.onnx"] == 1
