"""Build a calibration set (and a held-out evaluation split) from your own text, the way the shipped one was built.

    python -m edge_quamba.calib_data.make_calibration_set --text corpus.txt --out my_calib     # installed package
    python calib_data/make_calibration_set.py --text corpus.txt --out my_calib                 # source checkout
    edge-quamba quantize --model M --out q --calib-data my_calib/calibration.txt
    edge-quamba eval --model q --data my_calib/evaluation.txt

Input: a UTF-8 text file whose documents are separated by blank lines, or a .jsonl file with one {"text": ...}
object per line (one document each). Documents are the unit of the split, so no document is in both splits: the
documents are shuffled with random.Random(--seed) and dealt in that order to the calibration split until it holds
--calibration-bytes (a document that would overshoot by more than half a document's worth is passed over), then to
the evaluation split likewise (--evaluation-bytes, 0 for none). Output, byte-identical for the same input and
options: calibration.txt, evaluation.txt (documents joined by one blank line) and manifest.json (source file and
its sha256, sizes, method, seed, the documents each split took, sha256 of each split).

Calibration needs --calib-samples x --calib-seq-len tokens (256 x 512 by default, about 0.5 MB of English for a
byte-level BPE of 8k tokens): the default 700 kB split leaves room. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

KIND = "edge-quamba/calibration-set"
OUTPUT_FILES = ("calibration.txt", "evaluation.txt", "manifest.json")


class CalibrationSetError(Exception):
    """Bad input: printed as one line, exit status 1."""


def read_documents(path: Path) -> list[str]:
    """The documents of a .txt (blank-line separated) or .jsonl ({"text": ...} per line) file, stripped, non-empty."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationSetError(f"--text {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationSetError(f"--text {path}: not readable UTF-8 text ({exc})") from None
    if "\x00" in raw:
        raise CalibrationSetError(f"--text {path}: not text (it holds NUL bytes)")
    if path.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError):
                raise CalibrationSetError(f"--text {path}:{number} is not a JSON object") from None
            if not isinstance(text, str):
                raise CalibrationSetError(f"--text {path}:{number} has no string field \"text\"")
            docs.append(text.strip())
    else:
        docs = [block.strip() for block in raw.replace("\r\n", "\n").split("\n\n")]
    docs = [doc for doc in docs if doc]
    if not docs:
        raise CalibrationSetError(f"--text {path}: holds no text")
    return docs


def split_documents(sizes: list[int], seed: int, targets: dict[str, int]) -> dict[str, list[int]]:
    """Document indices per split: shuffled with random.Random(seed), dealt to each split in turn until its target
    bytes; a document that would overshoot the target by more than half its size is passed over."""
    order = list(range(len(sizes)))
    random.Random(seed).shuffle(order)
    splits: dict[str, list[int]] = {name: [] for name in targets}
    remaining = order
    for name, target in targets.items():
        taken, filled, left = [], 0, []
        for index in remaining:
            if filled < target and filled + sizes[index] <= target + sizes[index] // 2:
                taken.append(index)
                filled += sizes[index]
            else:
                left.append(index)
        splits[name], remaining = sorted(taken), left
    return splits


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_calibration_set(text: Path, out: Path, calibration_bytes: int = 700_000, evaluation_bytes: int = 400_000,
                         seed: int = 1234) -> dict:
    """Write calibration.txt, evaluation.txt and manifest.json into ``out`` (see the module docstring); returns the
    manifest. ``out`` must be new, empty, or a calibration set made by this script; it is replaced atomically."""
    if calibration_bytes < 1 or evaluation_bytes < 0:
        raise CalibrationSetError("--calibration-bytes must be >= 1 and --evaluation-bytes >= 0")
    out = Path(out)
    _check_out(out, text)
    docs = read_documents(Path(text))
    sizes = [len(doc.encode("utf-8")) + 2 for doc in docs]  # + the blank-line separator
    splits = split_documents(sizes, seed, {"calibration": calibration_bytes, "evaluation": evaluation_bytes})
    if not splits["calibration"]:
        raise CalibrationSetError(f"--text {text}: no document fits in --calibration-bytes {calibration_bytes}")
    manifest = {
        "kind": KIND,
        "manifest_version": 1,
        "source": {"file": Path(text).name, "sha256": hashlib.sha256(Path(text).read_bytes()).hexdigest(),
                   "documents": len(docs)},
        "split": {"unit": "document (blank-line separated, or one .jsonl line)",
                  "method": "documents shuffled with random.Random(seed), dealt in order to calibration until its "
                  "target bytes, then to evaluation likewise; a document overshooting a target by more than half its "
                  "size is passed over",
                  "seed": seed, "calibration_target_bytes": calibration_bytes,
                  "evaluation_target_bytes": evaluation_bytes},
        "splits": {},
    }
    parent = out.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        for name in ("calibration", "evaluation"):
            joined = "\n\n".join(docs[i] for i in splits[name]) + ("\n" if splits[name] else "")
            (tmp / f"{name}.txt").write_text(joined, encoding="utf-8")
            manifest["splits"][name] = {"path": f"{name}.txt", "documents": len(splits[name]),
                                        "bytes": len(joined.encode("utf-8")), "sha256": sha256_text(joined),
                                        "document_indices": splits[name]}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_out(out: Path, text: Path) -> None:
    """--out may be new, empty, or a calibration set this script made (nothing else is ever deleted)."""
    if out.resolve() == Path.cwd().resolve() or out.resolve() in Path.cwd().resolve().parents:
        raise CalibrationSetError(f"--out {out}: is the current folder or one above it; name a new folder")
    if Path(text).resolve().parent == out.resolve():
        raise CalibrationSetError(f"--out {out}: holds --text {text}; write to another folder")
    if not out.exists():
        if not out.resolve().parent.is_dir():
            raise CalibrationSetError(f"--out {out}: the parent folder does not exist")
        return
    if not out.is_dir():
        raise CalibrationSetError(f"--out {out}: exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    try:
        ours = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours or not set(entries) <= set(OUTPUT_FILES):
        raise CalibrationSetError(f"--out {out}: holds files this script did not write ({entries[0]}, ...); "
                                  f"name a new folder")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=Path, required=True, help="UTF-8 .txt (blank-line separated) or .jsonl")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (new, empty, or a previous set)")
    parser.add_argument("--calibration-bytes", type=int, default=700_000)
    parser.add_argument("--evaluation-bytes", type=int, default=400_000, help="0: no evaluation split")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    try:
        manifest = make_calibration_set(args.text, args.out, args.calibration_bytes, args.evaluation_bytes, args.seed)
    except CalibrationSetError as exc:
        print(f"make_calibration_set: error: {exc}", file=sys.stderr)
        sys.exit(1)
    for name, split in manifest["splits"].items():
        print(f"wrote {args.out / split['path']} ({split['bytes']} bytes, {split['documents']} documents)")
    print(f"wrote {args.out / 'manifest.json'}")


if __name__ == "__main__":
    main()
