"""Static checks of the container recipes (jetson/Dockerfile, export/Dockerfile), since no Docker engine and no Jetson
exist here and the images have never been built: base tags pinned, no GPU step in a build RUN (the build runs without
the NVIDIA runtime), the plugin library built in its own stage for sm_87, no torch in the slim TensorRT image and its
pip list in step with setup.cfg, every copied or referenced file present, the scripts parse."""

import configparser
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JETSON = ROOT / "jetson" / "Dockerfile"
EXPORT = ROOT / "export" / "Dockerfile"

GPU_STEPS = {
    "import tensorrt": "loads libnvinfer, which needs the GPU driver",
    "nvidia-smi": "there is none on Jetson, and no GPU during the build",
    "load_extension": "the torch extension build checks torch.cuda.is_available()",
    "cpp_extension": "the torch extension build",
    "torch.cuda": "no GPU during the build",
    "trtexec": "builds an engine on the GPU",
    "run_on_gpu.sh": "the plugin harness runs kernels",
    "build-engine": "builds an engine on the GPU",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    out, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        out.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, f"{path}: a continuation line ends the file"
    return out


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name (the part after AS; an unnamed stage gets its index); global ARGs under ''."""
    result, current = {"": []}, ""
    for keyword, args in instructions(path):
        if keyword == "FROM":
            words = args.split()
            current = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(result) - 1)
            result[current] = [(keyword, args)]
        else:
            result[current].append((keyword, args))
    return result


def base_images(path: Path) -> dict[str, str]:
    """Stage name -> base image with global ARG defaults substituted."""
    defaults = {}
    for keyword, args in stages(path)[""]:
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            defaults[name] = value
    bases = {}
    for name, body in stages(path).items():
        if name:
            image = body[0][1].split()[0]
            bases[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image)
    return bases


@pytest.mark.parametrize("path", [JETSON, EXPORT], ids=["jetson", "export"])
def test_every_base_image_is_pinned_to_a_tag(path):
    names = set(stages(path)) - {""}
    for stage, image in base_images(path).items():
        print(stage, image)
        if image in names:  # FROM an earlier stage
            continue
        assert "$" not in image, f"{stage}: {image} has an ARG without a default"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{stage}: {image} names no tag"
        assert tag != "latest", f"{stage}: {image} is not pinned"


@pytest.mark.parametrize("path", [JETSON, EXPORT], ids=["jetson", "export"])
def test_no_build_step_needs_the_gpu(path):
    for stage, body in stages(path).items():
        for keyword, args in body:
            if keyword == "RUN":
                for step, why in GPU_STEPS.items():
                    assert step not in args, f"{path.name} stage {stage!r}: RUN has {step!r} ({why}): {args[:120]}"


def test_jetson_stages_and_what_they_hold():
    by_stage = stages(JETSON)
    assert {"plugins", "trt", "full"} <= set(by_stage)
    plugin_runs = " ".join(args for keyword, args in by_stage["plugins"] if keyword == "RUN")
    assert "cmake -S plugins/tensorrt" in plugin_runs and "-DCMAKE_CUDA_ARCHITECTURES=87" in plugin_runs
    assert "sha256sum" in plugin_runs  # the digest the TensorRT backend checks
    for stage in ("trt", "full"):
        copies = [args for keyword, args in by_stage[stage] if keyword == "COPY"]
        assert any(args.startswith("--from=plugins ") for args in copies), f"{stage} lacks the plugin library"
        env = " ".join(args for keyword, args in by_stage[stage] if keyword == "ENV")
        assert "EDGE_QUAMBA_TRT_PLUGINS=/opt/edge-quamba/lib/libedge_quamba_trt_plugins.so" in env
        entry = [args for keyword, args in by_stage[stage] if keyword == "ENTRYPOINT"]
        assert entry == ['["jetson/first_run.sh"]']
    assert "pytorch" not in base_images(JETSON)["trt"] and "pytorch" in base_images(JETSON)["full"]


def pip_requirements(run: str) -> list[str]:
    """Requirement names of the `pip install` commands in one RUN (options and the package itself left out)."""
    names = []
    for command in run.split("&&"):
        words = shlex.split(command)
        if "pip" not in words or "install" not in words:
            continue
        for word in words[words.index("install") + 1:]:
            if not word.startswith("-") and word != ".":
                names.append(re.split(r"[<>=!~\[ ]", word, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_the_slim_image_installs_no_torch_and_follows_setup_cfg():
    runs = [args for keyword, args in stages(JETSON)["trt"] if keyword == "RUN"]
    text = " ".join(runs)
    assert not re.search(r"\btorch\b", text.replace("torch,", "")), "the slim image installs torch"
    assert "--no-deps ." in text  # the package itself, without its torch requirement
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    required = {re.split(r"[<>=!~ ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
                for line in config["options"]["install_requires"].strip().splitlines() if line.strip()}
    installed = {name for run in runs for name in pip_requirements(run)}
    print("setup.cfg:", sorted(required), "slim image:", sorted(installed))
    assert installed == (required - {"torch", "onnx", "onnxruntime"}) | {"cuda-python"}


def test_copied_and_referenced_files_exist():
    for path in (JETSON, EXPORT):
        for keyword, args in instructions(path):
            if keyword == "COPY" and not args.startswith("--from="):
                for source in args.split()[:-1]:
                    assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"
    for script in ("jetson/first_run.sh", "jetson/smoke_test.sh"):
        file = ROOT / script
        assert file.is_file() and file.stat().st_mode & 0o111, f"{script} is missing or not executable"
        subprocess.run(["bash", "-n", str(file)], check=True)  # parses
        referenced = set(re.findall(r"(?:plugins|jetson|edge_quamba)/[\w/.-]+\.(?:sh|py)", file.read_text()))
        for name in referenced:
            assert (ROOT / name).is_file(), f"{script} refers to {name}, which does not exist"
    assert (ROOT / "jetson" / "Dockerfile.dockerignore").read_text().count("third_party") == 2


def test_unbuilt_recipes_say_so():
    for path in (JETSON, EXPORT, ROOT / "jetson" / "README.md", ROOT / "jetson" / "first_run.sh",
                 ROOT / "jetson" / "smoke_test.sh", ROOT / "jetson" / "benchmark.py"):
        assert re.search(r"NEVER (BUILT|RUN)", path.read_text(encoding="utf-8")), f"{path} does not say it never ran"
