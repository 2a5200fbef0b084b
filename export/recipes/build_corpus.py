"""Build the demo English-prose corpus from a Debian documentation package and split it by document.

Source: the Python 3.11 reference documentation shipped by Debian's ``python3.11-doc`` (Sphinx HTML under
``/usr/share/doc/python3.11/html``). Each HTML file is one *document*. Cleaning keeps only the text of Sphinx's
main ``<div class="body">``, drops code blocks (``<pre>``, ``highlight*`` divs), scripts, styles and the ``¶``
permalinks, and writes one paragraph per line; documents are joined by a blank line.

Split: the sorted document list is shuffled with ``random.Random(seed)``; documents are then dealt in that order
to calibration until it reaches its target size (a document that would push it past its maximum is passed over),
then to evaluation likewise; every remaining document is train. No document is in two splits.

Outputs (byte-identical on every rerun with the same package version):

* ``calib_data/calibration.txt``  (shipped)
* ``calib_data/evaluation.txt``   (shipped)
* ``calib_data/manifest.json``    (shipped: source, licence, hashes, sizes, split method)
* ``.train_data/train.txt``                          (git-ignored; tokenizer and model training only)

Usage::

    apt-get install python3.11-doc
    python3 export/recipes/build_corpus.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_VERSION = 1

# Pages that are indexes, navigation, search or legal boilerplate rather than documentation prose.
EXCLUDED_PAGES = (
    "contents.html",
    "copyright.html",
    "download.html",
    "genindex*.html",
    "license.html",
    "py-modindex.html",
    "search.html",
)

# Licence headings found in Debian copyright files, mapped to SPDX identifiers.
KNOWN_LICENCES = {
    "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2": "PSF-2.0",
    "GNU GENERAL PUBLIC LICENSE": "GPL",
    "Creative Commons Attribution-ShareAlike 3.0": "CC-BY-SA-3.0",
}

BLOCK_TAGS = frozenset(
    "p div li dt dd h1 h2 h3 h4 h5 h6 tr br blockquote table ul ol dl section caption figcaption".split()
)
VOID_TAGS = frozenset("area base br col embed hr img input link meta source track wbr".split())
SKIPPED_TAGS = frozenset(("pre", "script", "style"))


class _SphinxBodyText(HTMLParser):
    """Collects the prose of Sphinx's ``<div class="body">`` as a list of paragraphs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, inside body, skipped)
        self._parts: list[str] = []
        self.paragraphs: list[str] = []

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self._parts)).strip()
        self._parts.clear()
        if re.search(r"[A-Za-z]", text):
            self.paragraphs.append(text)

    def _state(self) -> tuple[bool, bool]:
        return (self._stack[-1][1], self._stack[-1][2]) if self._stack else (False, False)

    def opens_body(self, tag: str, attrs: dict[str, str | None], classes: list[str]) -> bool:
        """Whether this element holds the page's prose (Sphinx: ``<div class="body">``)."""
        return tag == "div" and "body" in classes

    def skips(self, tag: str, attrs: dict[str, str | None], classes: list[str]) -> bool:
        """Whether this element and everything inside it is dropped (code, scripts, permalinks)."""
        return (
            tag in SKIPPED_TAGS
            or (tag == "div" and any(c.startswith("highlight") for c in classes))
            or (tag == "a" and "headerlink" in classes)
        )

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        in_body, skipped = self._state()
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        in_body = in_body or self.opens_body(tag, attributes, classes)
        skipped = skipped or self.skips(tag, attributes, classes)
        if tag in BLOCK_TAGS and in_body and not skipped:
            self._flush()
        if tag in ("td", "th") and in_body and not skipped:
            self._parts.append(" ")
        if tag not in VOID_TAGS:
            self._stack.append((tag, in_body, skipped))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS or not any(t == tag for t, _, _ in self._stack):
            return
        while self._stack:
            open_tag, in_body, skipped = self._stack.pop()
            if open_tag == tag:
                break
        if tag in BLOCK_TAGS and in_body and not skipped:
            self._flush()

    def handle_data(self, data: str) -> None:
        in_body, skipped = self._state()
        if in_body and not skipped:
            self._parts.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_prose(html: str, parser_class: type[_SphinxBodyText] = _SphinxBodyText) -> str:
    """One document's prose: paragraphs one per line, no blank lines, no trailing newline."""
    parser = parser_class()
    parser.feed(html)
    parser.close()
    return "\n".join(parser.paragraphs)


def list_documents(html_root: Path) -> list[str]:
    """Sorted POSIX paths (relative to html_root) of the documentation pages kept."""
    pages = []
    for path in sorted(html_root.rglob("*.html")):
        rel = path.relative_to(html_root)
        if rel.parts[0].startswith("_") or any(rel.match(pattern) for pattern in EXCLUDED_PAGES):
            continue
        pages.append(rel.as_posix())
    return pages


def package_version(package: str) -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def package_licence(package: str) -> tuple[str, str]:
    """(SPDX id, copyright file path) of the first known licence heading in the package's copyright file."""
    copyright_file = Path("/usr/share/doc") / package / "copyright"
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    hits = [(text.find(heading), spdx) for heading, spdx in KNOWN_LICENCES.items() if heading in text]
    if not hits:
        raise SystemExit(f"no known licence heading in {copyright_file}; add it to KNOWN_LICENCES")
    return min(hits)[1], str(copyright_file)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def join_documents(texts: list[str]) -> str:
    """Documents separated by one blank line, file ends with a newline."""
    return "\n\n".join(texts) + "\n"


def split_documents(
    names: list[str], sizes: dict[str, int], seed: int, targets: dict[str, tuple[int, int]]
) -> dict[str, list[str]]:
    """Deal a seeded shuffle of `names` to the splits in `targets` order (name -> (target, max) bytes); rest is train."""
    order = list(names)
    random.Random(seed).shuffle(order)
    splits: dict[str, list[str]] = {split: [] for split in targets}
    taken: set[str] = set()
    for split, (target, maximum) in targets.items():
        size = 0
        for name in order:
            if size >= target:
                break
            if name in taken or size + sizes[name] > maximum:
                continue
            splits[split].append(name)
            taken.add(name)
            size += sizes[name]
    splits["train"] = [name for name in order if name not in taken]
    return {split: sorted(members) for split, members in splits.items()}


def build_corpus(
    *,
    package: str,
    html_root: Path,
    out_dir: Path,
    train_out: Path,
    seed: int,
    calibration_bytes: tuple[int, int],
    evaluation_bytes: tuple[int, int],
) -> dict:
    names = list_documents(html_root)
    docs = {name: html_to_prose((html_root / name).read_text(encoding="utf-8")) for name in names}
    docs = {name: text for name, text in docs.items() if text}
    names = sorted(docs)
    sizes = {name: len(docs[name].encode("utf-8")) + 2 for name in names}  # + the blank-line separator
    licence, copyright_file = package_licence(package)

    splits = split_documents(
        names, sizes, seed, {"calibration": calibration_bytes, "evaluation": evaluation_bytes}
    )
    assert sum(len(v) for v in splits.values()) == len(names)
    assert len(set().union(*splits.values())) == len(names), "a document is in two splits"

    paths = {
        "calibration": out_dir / "calibration.txt",
        "evaluation": out_dir / "evaluation.txt",
        "train": train_out,
    }
    all_text = join_documents([docs[name] for name in names])
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "source": {
            "package": package,
            "version": package_version(package),
            "licence": licence,
            "licence_note": "Python documentation is under the PSF License Agreement; code examples in it are "
            "dual-licensed PSF-2.0 / 0BSD (see license.html in the package)"
            if licence == "PSF-2.0"
            else "",
            "copyright_file": copyright_file,
            "html_root": str(html_root),
        },
        "cleaning": {
            "method": "stdlib html.parser; text of <div class='body'> only; <pre>, <script>, <style>, "
            "div.highlight* and a.headerlink dropped; whitespace collapsed; one paragraph per line; "
            "paragraphs without a Latin letter dropped; documents joined by one blank line",
            "excluded_pages": list(EXCLUDED_PAGES),
            "documents": len(names),
            "bytes": len(all_text.encode("utf-8")),
            "sha256": sha256_text(all_text),
        },
        "split": {
            "unit": "document (one HTML page)",
            "method": "sorted page list shuffled with random.Random(seed); dealt in order to calibration until "
            "target bytes (skipping pages that would exceed max), then evaluation likewise; the rest is train",
            "seed": seed,
            "calibration_target_max_bytes": list(calibration_bytes),
            "evaluation_target_max_bytes": list(evaluation_bytes),
        },
        "splits": {},
    }

    for split in ("calibration", "evaluation", "train"):
        text = join_documents([docs[name] for name in splits[split]])
        path = paths[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        print(f"wrote {path} ({len(text.encode('utf-8'))} bytes, {len(splits[split])} documents)")
        rel = path.resolve().relative_to(REPO_ROOT) if path.resolve().is_relative_to(REPO_ROOT) else path
        manifest["splits"][split] = {
            "path": str(rel),
            "shipped": split != "train",
            "documents": len(splits[split]),
            "bytes": len(text.encode("utf-8")),
            "sha256": sha256_text(text),
            "pages": splits[split],
        }

    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {manifest_path}")
    return manifest


def _size_pair(text: str) -> tuple[int, int]:
    target, maximum = (int(v) for v in text.split(","))
    if not 0 < target <= maximum:
        raise argparse.ArgumentTypeError("expected TARGET,MAX bytes with 0 < TARGET <= MAX")
    return target, maximum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default="python3.11-doc", help="Debian package (for version and licence)")
    parser.add_argument("--html-root", type=Path, default=Path("/usr/share/doc/python3.11/html"))
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "calib_data")
    parser.add_argument("--train-out", type=Path, default=REPO_ROOT / ".train_data/train.txt")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--calibration-bytes", type=_size_pair, default=(700_000, 1_000_000), metavar="TARGET,MAX")
    parser.add_argument("--evaluation-bytes", type=_size_pair, default=(400_000, 600_000), metavar="TARGET,MAX")
    args = parser.parse_args(argv)
    if not args.html_root.is_dir():
        parser.error(f"{args.html_root} is not a directory: apt-get install {args.package}")
    build_corpus(
        package=args.package,
        html_root=args.html_root,
        out_dir=args.out_dir,
        train_out=args.train_out,
        seed=args.seed,
        calibration_bytes=args.calibration_bytes,
        evaluation_bytes=args.evaluation_bytes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
