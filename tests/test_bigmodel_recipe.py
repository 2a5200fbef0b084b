"""The large model's recipe on CPU: the prose corpus (on a tiny fake tree of unpacked Debian packages), the
mamba_ssm <-> transformers conversion (on a tiny model with random weights) and the trainer's arguments."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import lzma
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.loading import load_fp_model
from helpers import make_tokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "export" / "recipes"))
import build_prose_corpus as corpus  # noqa: E402
import mamba_ssm_names  # noqa: E402
import train_data  # noqa: E402
import train_demo  # noqa: E402
import train_loop  # noqa: E402
import train_models  # noqa: E402

WORDS = ("state space models read the sequence once and keep a small summary of what they have seen so far "
         "while attention looks back at every token again").split()


def sentence(i: int, n: int = 12) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(n)).capitalize() + f" number {i}."


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


def fake_package_tree(root: Path) -> None:
    """Every package the recipe reads, as `dpkg-deb -x` leaves it (plus --fetch's .deb-info.json), in miniature."""
    for package, (_, phrase, _) in corpus.LICENCES.items():
        write(root / package / "usr/share/doc" / package / "copyright", f"Header\n{phrase}\nmore text\n")
        write(root / package / corpus.DEB_INFO, json.dumps(
            {"package": package, "version": "1.0-1", "deb": f"{package}_1.0-1_all.deb", "deb_sha256": "0" * 64}))
    # bible-kjv's decoder: a script printing what `bible -f` prints (one verse per line, reference first)
    verses = "\n".join(f"{book}{c}:{v} {sentence(b * 100 + c * 10 + v)}" for b, book in enumerate(("Ge", "1Sa"))
                       for c in (1, 2) for v in (1, 2, 3))
    program = root / "bible-kjv/usr/bin/bible"
    write(program, f"#!/bin/sh\ncat <<'EOF'\n{verses}\nEOF\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    write(root / "bible-kjv-text/usr/lib/bible.data", b"EC02 fake")
    fortunes = root / "fortunes/usr/share/games/fortunes"
    for k, name in enumerate(("wisdom", "songs-poems")):
        cookies = [f"{sentence(i + 1000 * k)}\n\t-- Author {i}\n\n" for i in range(150)]
        write(fortunes / name, "%\n".join(cookies) + "%\n")
        write(fortunes / f"{name}.dat", b"\x00\x01binary")
        os.symlink(name, fortunes / f"{name}.u8")
    write(fortunes / "ascii-art", "  /\\_/\\\n ( o.o )\n%\n")
    devil = "00-database-info\nheaders\n\n    TITLE PAGE\n\nPREFACE\n\n" + "\n\n".join(
        f"WORD{i}, n.  {sentence(i)}\n{sentence(i + 1)}" for i in range(120))
    write(root / "dict-devil/usr/share/dictd/devil.dict.dz", gzip.compress(devil.encode()))
    jargon = ("The Jargon File\n\n   Welcome to the Jargon File\n\n   I. Introduction\n\n   crock\n\n"
              "                Welcome to the Jargon File\n\n" + "\n\n".join(
                  f"   :term{i}: n.\n\n   {sentence(i)}\n   {sentence(i + 2)}\n\n   lone" for i in range(100)))
    write(root / "jargon-text/usr/share/doc/jargon-text/jargon.txt.gz", gzip.compress(jargon.encode()))
    for pos, tag in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
        lines = ["  1 This software and database is being provided to you, the LICENSEE"]
        for i in range(200):
            example = f'; "{sentence(i, 6)}"' if i % 2 == 0 else ""
            lines.append(f"{i:08d} 03 {tag} 02 word_{i}(a) 0 other{i} 0 000 | gloss number {i}{example}  ")
        write(root / f"wordnet-base/usr/share/wordnet/data.{pos}", "\n".join(lines) + "\n")
    html_root = root / "python3.11-doc/usr/share/doc/python3.11/html"
    for i in range(6):
        write(html_root / f"library/mod{i}.html",
              f'<html><body><div class="body"><h1>mod{i}</h1><p>{sentence(i)} {sentence(i + 1)}</p>'
              f'<div class="highlight"><pre>print({i})</pre></div></div></body></html>')
    write(html_root / "genindex.html", '<div class="body"><p>Index entries only</p></div>')
    book = root / "debian-handbook/usr/share/doc/debian-handbook/html/en-US"
    for i in range(8):
        write(book / f"sect.page{i}.html",
              f'<html><body><div id="banner"><span>Download the ebook</span></div><p id="title">Handbook</p>'
              f'<div class="section"><h2>Page {i}</h2><div class="para">{sentence(100 + i)} {sentence(i)}</div>'
              f'<pre class="screen">$ apt install x{i}</pre></div>'
              f'<ul class="docnav"><li>Prev</li><li>Next</li></ul></body></html>')
    write(book / "index.html", '<html><body><div class="toc">Contents</div></body></html>')


def build(root: Path, out: Path) -> dict:
    return corpus.build_prose_corpus(root=root, out_dir=out / "prose", train_out=out / "train.txt", seed=7,
                                     calibration_bytes=6_000, evaluation_bytes=(400, 900))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("prose")
    fake_package_tree(base / "root")
    return base, build(base / "root", base / "a")


def test_corpus_is_byte_identical_on_rerun(built):
    base, manifest = built
    again = build(base / "root", base / "b")
    for name in ("prose/calibration.txt", "prose/evaluation.txt", "train.txt"):
        assert (base / "a" / name).read_bytes() == (base / "b" / name).read_bytes(), name
    for split in manifest["splits"]:
        assert {**again["splits"][split], "path": ""} == {**manifest["splits"][split], "path": ""}


def test_manifest_records_sources_and_hashes(built):
    base, manifest = built
    on_disk = json.loads((base / "a/prose/manifest.json").read_text())
    assert on_disk == manifest
    assert set(manifest["sources"]) == set(corpus.TRAINING_PACKAGES) | {corpus.EVALUATION_PACKAGE}
    assert set(manifest["tools"]) == set(corpus.TOOL_PACKAGES)
    for package, source in manifest["sources"].items():
        assert source["version"] == "1.0-1" and source["licence"] == corpus.LICENCES[package][0]
        assert source["documents"] > 0 and source["cleaning"]
    for split, entry in manifest["splits"].items():
        data = (base / "a" / ("train.txt" if split == "train" else f"prose/{split}.txt")).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest(), split
    evaluation = manifest["splits"]["evaluation"]
    assert list(evaluation["documents_per_source"]) == [corpus.EVALUATION_PACKAGE]
    assert 400 <= evaluation["bytes"] <= 900
    calibration = manifest["splits"]["calibration"]["documents_per_source"]
    assert corpus.EVALUATION_PACKAGE not in calibration
    assert sum(len(v) for v in calibration.values()) == manifest["splits"]["calibration"]["documents"]


def test_splits_are_disjoint_and_cleaned(built):
    base, _ = built
    train = (base / "a/train.txt").read_text()
    calibration = (base / "a/prose/calibration.txt").read_text()
    evaluation = (base / "a/prose/evaluation.txt").read_text()
    train_docs, calib_docs = set(train.split("\n\n")), set(calibration.split("\n\n"))
    assert not train_docs & calib_docs
    for text in (train, calibration):
        assert "Page " not in text  # no handbook page outside the evaluation split
    assert "Page " in evaluation
    for junk in ("Download the ebook", "Prev", "apt install", "print(", "Index entries", "/\\_/\\", "Ge1:1",
                 "LICENSEE", "TITLE PAGE", "00-database", "binary"):
        assert junk not in train + calibration + evaluation, junk
    everything = train + calibration
    assert "-- Author 3" in everything  # a fortune keeps its attribution line
    assert "word 0, other0 (n.): gloss number 0;" in everything  # WordNet: lemmas, '_' -> ' ', example kept
    assert "gloss number 1\n" not in everything + "\n"  # a synset without an example sentence is dropped
    assert "lone" not in everything  # Jargon File: paragraphs under four words dropped
    assert ":term5: n." in everything  # ... but not an entry's head
    chapters = corpus.bible_documents(base / "root")
    assert list(chapters) == ["kjv/0000-Ge1", "kjv/0001-Ge2", "kjv/0002-1Sa1", "kjv/0003-1Sa2"]
    assert chapters["kjv/0002-1Sa1"] == "\n".join(sentence(110 + v) for v in (1, 2, 3))  # references dropped


def test_a_changed_licence_stops_the_build(tmp_path):
    fake_package_tree(tmp_path / "root")
    write(tmp_path / "root/dict-devil/usr/share/doc/dict-devil/copyright", "All rights reserved.\n")
    with pytest.raises(SystemExit, match="dict-devil"):
        build(tmp_path / "root", tmp_path / "out")


# ----------------------------------------------------------------------------------------------------------------
# mamba_ssm <-> transformers
# ----------------------------------------------------------------------------------------------------------------
def tiny_pair(tmp_path: Path):
    """A mamba_ssm-layout folder and the same random weights as a transformers model."""
    ssm_config = mamba_ssm_names.mamba_ssm_config(d_model=32, n_layer=2, vocab_size=120, d_state=8)
    config = transformers.MambaConfig(**mamba_ssm_names.transformers_config_kwargs(ssm_config), bos_token_id=0,
                                      eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.MambaForCausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    state = mamba_ssm_names.to_mamba_ssm_names(model.state_dict())
    assert "backbone.embedding.weight" in state and "backbone.embeddings.weight" not in state
    folder = tmp_path / "mamba_ssm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(ssm_config))
    state.pop("lm_head.weight")  # tied to the embedding: stored once, as mamba_ssm's loader expects
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return model, folder, ssm_config


def test_conversion_round_trip_keeps_every_tensor(tmp_path):
    model, _, _ = tiny_pair(tmp_path)
    state = model.state_dict()
    back = mamba_ssm_names.to_transformers_names(mamba_ssm_names.to_mamba_ssm_names(state))
    assert list(back) == list(state)
    assert all(back[k] is state[k] for k in state)


def test_converted_config_is_the_same_model_to_edge_quamba(tmp_path):
    model, folder, ssm_config = tiny_pair(tmp_path)
    hf_folder = tmp_path / "hf"
    model.save_pretrained(hf_folder)
    ours_from_ssm = parse_model_config(ssm_config, "mamba_ssm config")
    ours_from_hf = parse_model_config(json.loads((hf_folder / "config.json").read_text()), "hf config")
    token_ids = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}  # mamba_ssm configs have none
    assert dataclasses.replace(ours_from_ssm, **token_ids) == dataclasses.replace(ours_from_hf, **token_ids)
    assert ours_from_ssm.dt_rank == 2  # ceil(32 / 16)


def test_mamba_ssm_folder_and_converted_folder_give_the_same_logits(tmp_path):
    model, folder, _ = tiny_pair(tmp_path)
    hf_folder = tmp_path / "hf"
    model.save_pretrained(hf_folder)
    tokens = torch.tensor([[0, 5, 17, 99, 3, 64, 7, 7, 42, 119]])
    with torch.no_grad():
        from_ssm, _ = load_fp_model(folder, dtype=torch.float64)(tokens)
        from_hf, _ = load_fp_model(hf_folder, dtype=torch.float64)(tokens)
        expected = model.double()(input_ids=tokens).logits
    print("mamba_ssm layout vs transformers layout, max |diff|:", (from_ssm - from_hf).abs().max().item(),
          " vs transformers:", (from_hf - expected).abs().max().item())
    assert torch.equal(from_ssm, from_hf)
    assert (from_hf - expected).abs().max() <= 1e-5 * expected.abs().max()  # transformers runs A and D in float32


def test_as_transformers_renames_a_mamba_ssm_model(tmp_path):
    """train_models.as_transformers on a stand-in for MambaSsmLM (an ``lm`` whose state dict has mamba_ssm names)."""
    model, _, _ = tiny_pair(tmp_path)

    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = torch.nn.Module()
            self.lm.backbone = torch.nn.Module()
            self.lm.backbone.embedding = model.backbone.embeddings
            self.lm.backbone.layers = model.backbone.layers
            self.lm.backbone.norm_f = model.backbone.norm_f
            self.lm.lm_head = model.lm_head

    converted = train_models.as_transformers(StandIn(), model.config)
    assert converted is not model
    for key, value in model.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key


@pytest.mark.parametrize("change, message", [
    ({"attn_layer_idx": [1]}, "pure Mamba1"),
    ({"pad_vocab_size_multiple": 16}, "padded"),
    ({"rms_norm": False}, "rms_norm"),
    ({"ssm_cfg": {"layer": "Mamba2"}}, "pure Mamba1"),
    ({"ssm_cfg": {"d_state": 16, "bias": True}}, "bias"),
])
def test_configs_that_do_not_convert_are_refused(change, message):
    ssm_config = {**mamba_ssm_names.mamba_ssm_config(d_model=32, n_layer=2, vocab_size=120), **change}
    with pytest.raises(ValueError, match=message):
        mamba_ssm_names.transformers_config_kwargs(ssm_config)


def test_public_130m_shape():
    kwargs = mamba_ssm_names.transformers_config_kwargs(
        mamba_ssm_names.mamba_ssm_config(d_model=768, n_layer=24, vocab_size=16384))
    assert (kwargs["hidden_size"], kwargs["num_hidden_layers"], kwargs["state_size"], kwargs["expand"],
            kwargs["conv_kernel"], kwargs["time_step_rank"]) == (768, 24, 16, 2, 4, 48)


# ----------------------------------------------------------------------------------------------------------------
# trainer arguments, schedule and data
# ----------------------------------------------------------------------------------------------------------------
def test_trainer_defaults_are_the_demo_recipe():
    args = train_demo.parse_args([])
    assert args.backend == "transformers" and args.max_seconds is None and args.eval_seq_lens == [args.seq_len]
    args = train_demo.parse_args(["--backend", "mamba_ssm", "--eval-seq-lens", "512,2048", "--max-seconds", "40"])
    assert args.eval_seq_lens == [512, 2048] and args.max_seconds == 40


@pytest.mark.parametrize("argv, message", [
    (["--backend", "mamba_ssm", "--compile"], "--compile is for --backend transformers"),
    (["--max-seconds", "0"], "--max-seconds must be > 0"),
    (["--warmup", "10", "--steps", "10"], "--warmup must be"),
    (["--hidden-size", "100"], "multiple of 16"),
    (["--eval-seq-lens", "512,x"], "comma-separated integers"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--backend", "jax"], "invalid choice"),
])
def test_trainer_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_demo.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err


def test_mamba_ssm_backend_needs_a_gpu(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("One document here.\n\nAnother document there.\n")
    tokenizer = tmp_path / "tokenizer.json"
    make_tokenizer().save(str(tokenizer))
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        train_demo.main(["--backend", "mamba_ssm", "--device", "cpu", "--tokenizer", str(tokenizer),
                         "--train-text", str(text), "--eval-text", str(text), "--out", str(tmp_path / "o")])


def test_schedule_follows_the_time_budget():
    kw = dict(steps=10_000, warmup=10, lr=1e-3, min_lr=1e-4)
    assert train_loop.lr_at(0, **kw, progress=0.0) == pytest.approx(1e-4)  # warm-up ignores the clock
    rates = [train_loop.lr_at(50, **kw, progress=p) for p in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)]
    assert rates == sorted(rates, reverse=True)
    assert rates[0] == pytest.approx(1e-3) and rates[2] == pytest.approx(5.5e-4)
    assert rates[4] == pytest.approx(1e-4) and rates[5] == pytest.approx(1e-4)
    assert train_loop.lr_at(5_005, **kw) == pytest.approx(train_loop.lr_at(5_005, **kw, progress=0.5))


def test_xz_text_and_the_token_cache(tmp_path, monkeypatch):
    text = "First document, two sentences. Yes.\n\nSecond document.\n"
    plain, packed = tmp_path / "train.txt", tmp_path / "train.txt.xz"
    plain.write_text(text)
    packed.write_bytes(lzma.compress(text.encode()))
    tokenizer_file = tmp_path / "tokenizer.json"
    tokenizer = make_tokenizer()
    tokenizer.save(str(tokenizer_file))
    assert torch.equal(train_data.tokenize_documents(tokenizer, plain),
                       train_data.tokenize_documents(tokenizer, packed))
    cache = tmp_path / "tokens.pt"
    args = train_demo.parse_args(["--tokenizer", str(tokenizer_file), "--train-text", str(packed),
                                  "--eval-text", str(plain), "--tokens-cache", str(cache)])
    first = train_data.load_streams(args, tokenizer)
    assert cache.is_file()

    def no_tokenizing(*_):
        raise AssertionError("tokenized although the cache matches")

    monkeypatch.setattr(train_data, "tokenize_documents", no_tokenizing)
    second = train_data.load_streams(args, tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    plain.write_text(text + "\nThird.\n")  # another evaluation text: the cache no longer applies
    with pytest.raises(AssertionError, match="tokenized although"):
        train_data.load_streams(args, tokenizer)
