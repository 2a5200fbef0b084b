"""build-engine and --backend tensorrt against fakes of TensorRT 10.3 and cuda-python (tests/fakes): NO real TensorRT
or GPU is involved; these show the calls, their order and count, and the refusals, on CPU.

* build-engine verifies the export folder and --out before TensorRT is imported, so a flipped byte of
  model.trt.onnx or a bad --out never reaches trt.Builder;
* the runtime makes its buffers, contexts and graphs once: decoding more tokens allocates nothing, binds nothing and
  captures nothing; every copy, memset, enqueue and graph launch is on one stream; each decode context's enqueue is
  warmed up outside a capture, captured once and replayed per token; the states ping-pong correctly (the generated
  tokens equal the fake engine's toy recurrence run in plain Python);
* a changed plugin library or engine file is a one-line error with a non-zero exit;
* `run` and `bench --backend tensorrt` work with ``import torch`` blocked (a subprocess with a meta-path finder that
  raises ImportError for torch).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fakes as fake_modules
from helpers import TEXT, cli_in_process, make_tokenizer, one_error_line, random_hf_model, save_transformers_layout

FAKES = fake_modules.FOLDER
REPO = Path(__file__).resolve().parent.parent
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def export_folder(tmp_path_factory):
    """A tiny random model quantized and exported with its TensorRT graph (model.trt.onnx)."""
    root = tmp_path_factory.mktemp("trt")
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=3, vocab_size=tokenizer.get_vocab_size())
    fp = save_transformers_layout(hf, root / "fp", tokenizer)
    (root / "calib.txt").write_text(TEXT * 4)
    proc = cli_in_process("quantize", "--model", str(fp), "--out", str(root / "q"), "--calib-data",
                          str(root / "calib.txt"), "--calib-samples", "2", "--calib-seq-len", "32")
    assert proc.returncode == 0, proc.stderr
    proc = cli_in_process("export", "--model", str(root / "q"), "--out", str(root / "x"), "--target", "tensorrt",
                          "--calib-data", str(root / "calib.txt"), "--validate-prompt-len", "8",
                          "--validate-decode-steps", "1")
    assert proc.returncode == 0, proc.stderr
    return root / "x"


@pytest.fixture
def fakes(monkeypatch):
    """``import tensorrt`` and ``import cuda.bindings.runtime`` get the fakes (fresh module state per test)."""
    with fake_modules.installed(monkeypatch):
        yield


def fake_plugin_library(path: Path, drop: str | None = None) -> Path:
    """A fake plugin library registering every creator edge-quamba needs (less ``drop``)."""
    from edge_quamba.runtime.tensorrt_engine import required_creators

    creators = [[c["name"], c["version"], c["namespace"]] for c in required_creators() if c["name"] != drop]
    path.write_text(json.dumps({"fake_tensorrt_plugin_library": 1, "creators": creators}))
    return path


def build(export: Path, out: Path, library: Path, *extra: str):
    return cli_in_process("build-engine", "--model", str(export), "--out", str(out), "--plugins", str(library),
                          *extra)


@pytest.fixture
def engine(export_folder, tmp_path, fakes):
    library = fake_plugin_library(tmp_path / "libplugins.so")
    proc = build(export_folder, tmp_path / "engine", library)
    assert proc.returncode == 0, proc.stderr
    fake_modules.drop()  # the runtime starts from fresh fakes, as in a process of its own
    return tmp_path / "engine"


def prompt_ids(folder: Path) -> list[int]:
    from edge_quamba.models.tokenizer import load_tokenizer

    return load_tokenizer(folder).encode(PROMPT)


def expected_tokens(folder: Path, prompt: list[int], new_tokens: int) -> list[int]:
    import tensorrt

    from edge_quamba.folders import open_model

    c = open_model(str(folder)).config
    return tensorrt.reference_greedy(prompt, new_tokens, c.d_inner, c.d_conv, c.d_state)


def greedy(backend, prompt: list[int], new_tokens: int) -> list[int]:
    logits, states = backend.prefill(prompt)
    tokens = [int(logits.argmax())]
    for _ in range(new_tokens - 1):
        logits, states = backend.decode(tokens[-1], states)
        tokens.append(int(logits.argmax()))
    return tokens


def calls(name: str) -> list[dict]:
    from cuda.bindings import runtime

    return [record for record in runtime.LOG if record["call"] == name]


# -- build-engine -----------------------------------------------------------------------------------------------------

def test_build_engine_writes_a_sealed_engine_folder(engine, tmp_path):
    import tensorrt

    from edge_quamba.folders import open_model
    from edge_quamba.integrity import file_sha256
    from edge_quamba.ops.specs import PLUGIN_SPECS

    folder = open_model(str(engine))  # seal and every listed file verified
    raw = folder.record
    assert folder.kind == "engine"
    assert sorted(raw["files"]) == ["engine.plan", "tokenizer.json"]
    assert [c["name"] for c in raw["plugins"]["creators"]] == list(PLUGIN_SPECS)
    assert raw["plugins"]["sha256"] == file_sha256(tmp_path / "libplugins.so")
    assert raw["tensorrt"] == tensorrt.__version__
    assert raw["profiles"]["prefill"]["seq_len"] == [1, 128, 2048]


def test_a_library_without_a_creator_is_refused_before_the_builder(export_folder, tmp_path, fakes):
    import tensorrt

    library = fake_plugin_library(tmp_path / "lib.so", drop="HadamardQuantize")
    line = one_error_line(build(export_folder, tmp_path / "engine", library))
    assert "does not register the plugins ['HadamardQuantize']" in line
    assert tensorrt.BUILDERS == [] and not (tmp_path / "engine").exists()


def flip_a_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


def test_a_changed_trt_graph_never_reaches_tensorrt(export_folder, tmp_path, fakes):
    export = tmp_path / "x"
    shutil.copytree(export_folder, export)
    flip_a_byte(export / "model.trt.onnx")
    library = fake_plugin_library(tmp_path / "lib.so")
    line = one_error_line(build(export, tmp_path / "engine", library))
    assert "model.trt.onnx does not match the sha256" in line
    assert "tensorrt" not in sys.modules  # verified before TensorRT was even imported
    import tensorrt

    one_error_line(build(export, tmp_path / "engine", library))
    assert tensorrt.BUILDERS == [] and not (tmp_path / "engine").exists()


@pytest.mark.parametrize("case", ["the model folder", "inside the model folder", "a foreign folder",
                                  "read-only file system", "plugins missing"])
def test_out_and_plugins_are_checked_before_tensorrt(export_folder, tmp_path, fakes, monkeypatch, case):
    import tensorrt

    library = fake_plugin_library(tmp_path / "lib.so")
    out = tmp_path / "engine"
    if case == "the model folder":
        out, words = export_folder, "is --model"
    elif case == "inside the model folder":
        out, words = export_folder / "engine", "is inside --model"
    elif case == "a foreign folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        words = "is not an edge-quamba output"
    elif case == "read-only file system":
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr("edge_quamba.atomic.tempfile.mkdtemp", read_only)
        words = "cannot write there: Read-only file system"
    else:
        library, words = tmp_path / "missing.so", "is not a file"
    before = sorted(p.name for p in export_folder.iterdir())
    line = one_error_line(build(export_folder, out, library))
    assert words in line
    assert tensorrt.BUILDERS == []
    assert sorted(p.name for p in export_folder.iterdir()) == before
    if case == "a foreign folder":
        assert (out / "notes.txt").read_text() == "mine"


# -- the runtime ------------------------------------------------------------------------------------------------------

def test_decode_allocates_and_binds_nothing_and_replays_graphs_on_one_stream(engine):
    import tensorrt
    from cuda.bindings import runtime

    from edge_quamba.folders import open_model
    from edge_quamba.runtime.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(open_model(str(engine)))
    prompt = prompt_ids(engine)
    assert backend.cuda_graph is True and len(tensorrt.CONTEXTS) == 3

    logits, states = backend.prefill(prompt)
    assert logits.dtype.name == "float32" and logits.shape == (backend.config.vocab_size,)
    assert backend.engine_ms_last == pytest.approx(tensorrt.ENQUEUE_MS_PER_TOKEN * len(prompt))
    logits, states = backend.decode(int(logits.argmax()), states)
    assert backend.engine_ms_last == pytest.approx(tensorrt.ENQUEUE_MS_PER_TOKEN)
    allocations = len(calls("cudaMalloc")) + len(calls("cudaMallocHost"))
    bindings = [dict(c.address_calls) for c in tensorrt.CONTEXTS]
    enqueues, captures = len(tensorrt.ENQUEUES), len(calls("cudaStreamBeginCapture"))
    launches = len(calls("cudaGraphLaunch"))

    steps = 17
    mark = len(runtime.LOG)
    for _ in range(steps):
        logits, states = backend.decode(int(logits.argmax()), states)
    per_token = [r for r in runtime.LOG[mark:] if r["call"] in ("cudaMemcpyAsync", "cudaMemsetAsync")]
    # Copies per token: the token id in (8 bytes, pinned -> device) and last_logits out (v float16); no memset.
    assert per_token == steps * [
        {"call": "cudaMemcpyAsync", "stream": per_token[0]["stream"], "captured": False,
         "kind": "cudaMemcpyHostToDevice", "count": 8},
        {"call": "cudaMemcpyAsync", "stream": per_token[0]["stream"], "captured": False,
         "kind": "cudaMemcpyDeviceToHost", "count": 2 * backend.config.vocab_size}]
    print("allocations", allocations, "enqueues", enqueues, "captures", captures, "launches", launches)
    assert len(calls("cudaMalloc")) + len(calls("cudaMallocHost")) == allocations  # none per token
    assert [dict(c.address_calls) for c in tensorrt.CONTEXTS] == bindings  # nothing rebound
    assert len(tensorrt.ENQUEUES) == enqueues and len(calls("cudaStreamBeginCapture")) == captures == 2
    assert len(calls("cudaGraphLaunch")) == launches + steps  # one replay per token

    # Addresses bound once per context, every I/O tensor; decode shapes set once, prefill's input_ids per prompt.
    names = {backend.engine.get_tensor_name(i) for i in range(backend.engine.num_io_tensors)}
    prefill, *decode = tensorrt.CONTEXTS
    for context in tensorrt.CONTEXTS:
        assert context.address_calls == {name: 1 for name in names}
        assert context.strategy == tensorrt.ExecutionContextAllocationStrategy.USER_MANAGED
    for context in decode:
        assert set(context.shape_calls.values()) == {1}
    assert prefill.shape_calls["input_ids"] == 2  # (1, 1) at construction, (1, l) for the prompt
    # Each decode context: one warm-up outside capture, then one captured enqueue, nothing after.
    for context in decode:
        assert [e["captured"] for e in tensorrt.ENQUEUES if e["context"] is context] == [False, True]

    # One stream for every copy, memset, event, enqueue and launch; never the legacy default stream.
    created = calls("cudaStreamCreateWithFlags")
    assert len(created) == 1 and created[0]["flags"] == runtime.cudaStreamNonBlocking
    streams = {record["stream"] for record in runtime.LOG if record["stream"] is not None}
    assert streams == {created[0]["stream"]} and 0 not in streams
    assert {e["stream"] for e in tensorrt.ENQUEUES} == streams
    assert not [r for r in runtime.LOG if "refused" in r]
    backend.close()
    assert runtime.live_device == {} and runtime.live_pinned == {}


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_states_ping_pong_to_the_toy_models_tokens(engine, cuda_graph):
    """Greedy generation through the fake engine equals its recurrence run in Python, twice in a row (the second
    prefill starts from zeroed states, whatever the first sequence left in the buffers)."""
    import tensorrt

    from edge_quamba.folders import open_model
    from edge_quamba.runtime.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(open_model(str(engine)), cuda_graph=cuda_graph)
    prompt = prompt_ids(engine)
    expected = expected_tokens(engine, prompt, 12)
    first, second = greedy(backend, prompt, 12), greedy(backend, prompt[:3], 12)
    print("tokens", first, "expected", expected)
    assert first == expected
    assert second == expected_tokens(engine, prompt[:3], 12)
    assert backend.cuda_graph is cuda_graph
    assert len(calls("cudaStreamBeginCapture")) == (2 if cuda_graph else 0)
    decode_enqueues = [e for e in tensorrt.ENQUEUES if e["context"] is not tensorrt.CONTEXTS[0]]
    assert len(decode_enqueues) == (4 if cuda_graph else 2 * 11)


def test_stale_states_and_long_prompts_are_refused(engine):
    from edge_quamba.errors import InputError
    from edge_quamba.folders import open_model
    from edge_quamba.runtime.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(open_model(str(engine)))
    _, old = backend.prefill([1, 2, 3])
    _, new = backend.prefill([4, 5])
    with pytest.raises(InputError, match="latest prefill or decode step"):
        backend.decode(1, old)
    _, newer = backend.decode(1, new)
    with pytest.raises(InputError, match="latest prefill or decode step"):
        backend.decode(1, new)
    with pytest.raises(InputError, match="prefill profile takes 1 to 2048"):
        backend.prefill([1] * 2049)
    with pytest.raises(InputError, match="outside the model's vocabulary"):
        backend.decode(backend.config.vocab_size, newer)


def run_tensorrt(engine: Path, *extra: str):
    return cli_in_process("run", "--model", str(engine), "--backend", "tensorrt", "--prompt", PROMPT,
                          "--max-new-tokens", "4", "--temperature", "0", *extra)


@pytest.mark.parametrize("change", ["plugin library", "engine file", "TensorRT version", "no GPU", "no cuda-python"])
def test_refusals_are_one_line(engine, tmp_path, monkeypatch, change):
    """Each refused before TensorRT loads the plugin library or makes a context."""
    import tensorrt

    if change == "plugin library":
        library = tmp_path / "libplugins.so"
        library.write_text(library.read_text() + " ")  # rebuilt: same creators, other bytes
        words = "does not match the sha256 recorded in engine_config.json"
    elif change == "engine file":
        flip_a_byte(engine / "engine.plan")
        words = "engine.plan does not match the sha256"
    elif change == "TensorRT version":
        monkeypatch.setattr(tensorrt, "__version__", "10.4.0.1")
        words = "was built with TensorRT 10.3.0.26 and this is TensorRT 10.4.0.1"
    elif change == "no GPU":
        from cuda.bindings import runtime

        monkeypatch.setattr(runtime, "DEVICE_COUNT", 0)
        words = "needs an NVIDIA GPU and CUDA finds none (cudaErrorNoDevice"
    else:
        fake_modules.drop()
        monkeypatch.setitem(sys.modules, "cuda", None)  # `import cuda...` raises ImportError
        words = "needs cuda-python (module cuda.bindings.runtime)"
    line = one_error_line(run_tensorrt(engine))
    assert words in line
    trt = sys.modules["tensorrt"]  # a fresh fake in the cuda-python case
    assert trt.get_plugin_registry().libraries == [] and trt.CONTEXTS == []
    runtime = sys.modules.get("cuda.bindings.runtime")
    if runtime is not None:  # what was made before the refusal is freed
        assert runtime.live_device == {} and runtime.live_pinned == {} and runtime._streams == {}


def test_run_and_bench_work_without_torch(engine, tmp_path):
    """`run` and `bench --backend tensorrt` in a subprocess where ``import torch`` raises ImportError (a meta-path
    finder installed by a sitecustomize on PYTHONPATH) and every attempt to import it is written down."""
    site = tmp_path / "site"
    site.mkdir()
    attempts = tmp_path / "torch_imports.txt"
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "class BlockTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            with open(os.environ['TORCH_ATTEMPTS'], 'a') as f:\n"
        "                f.write(name + '\\n')\n"
        "            raise ImportError(f'torch is blocked in this test ({name})')\n"
        "        return None\n"
        "sys.meta_path.insert(0, BlockTorch())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(FAKES), str(REPO)]),
           "TORCH_ATTEMPTS": str(attempts), "HF_HUB_OFFLINE": "1"}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "torch is blocked" in check.stderr  # the blocker works
    attempts.unlink()

    command = [sys.executable, "-m", "edge_quamba", "run", "--model", str(engine), "--backend", "tensorrt",
               "--prompt", PROMPT, "--max-new-tokens", "10", "--temperature", "0", "--json"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["tokens"] == expected_tokens(engine, out["prompt_tokens"], 10)
    sampled = [json.loads(subprocess.run(command[:-3] + ["--seed", "7", "--json"], env=env, capture_output=True,
                                         text=True, timeout=300).stdout)["tokens"] for _ in range(2)]
    assert sampled[0] == sampled[1] and len(sampled[0]) == 10

    bench = subprocess.run([sys.executable, "-m", "edge_quamba", "bench", "--model", str(engine), "--backend",
                            "tensorrt", "--prompt-len", "16", "--new-tokens", "4", "--repeats", "1", "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert report["backend"] == "tensorrt" and report["machine"]["torch"] is None
    assert not attempts.exists(), attempts.read_text()
