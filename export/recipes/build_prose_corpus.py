"""Build the large model's English corpus from Debian packages: prose, quotations, definitions and documentation.

Longer than our ~400-line rule: one small extractor per source package (the table below) beside the shared
chunking and licence recording; each extractor is short and read with the table.

Training sources (each a Debian package; licences are read from the package's copyright file and recorded):

=====================  =====================================================  ===================================
package                what is kept                                           one *document* is
=====================  =====================================================  ===================================
bible-kjv-text         the King James Bible (1611), one verse per line,       one chapter
                       decoded by the ``bible`` program of ``bible-kjv``
fortunes               the fortune cookies (quotations, poems, jokes), one    ~8 KB of consecutive cookies of one
                       cookie a paragraph; ``ascii-art`` left out             cookie file
dict-devil             Ambrose Bierce, *The Devil's Dictionary* (1911),       ~8 KB of consecutive paragraphs
                       preface and entries
jargon-text            the Jargon File 4.4.7 (hacker lexicon and essays)      ~8 KB of consecutive paragraphs
wordnet-base           WordNet 3.0 synsets that have an example sentence:     ~8 KB of consecutive synsets of one
                       ``lemma, lemma (pos): gloss; "example"``               data file
python3.11-doc         the Python 3.11 documentation, cleaned as              one HTML page
                       ``build_corpus.py`` does for the demo model
=====================  =====================================================  ===================================

Evaluation source, held out whole (never in the training or calibration text, nor in the tokenizer's training):
``debian-handbook``, *The Debian Administrator's Handbook* (English HTML, one page a document). A seeded sample of
its pages of ~0.5 MB is the shipped evaluation split; the rest of the book is not used at all.

Calibration: from every training source, a seeded sample of whole documents of about that source's share of
``--calibration-bytes``; those documents are then left out of the training text.

Text layout (as the demo corpus): one paragraph per line (fortune cookies and verse keep their line breaks),
documents joined by one blank line. Every split file is byte-identical on every rerun with the same package versions
(sorted inputs, ``random.Random(seed)``), and ``manifest.json`` records package versions, .deb hashes, licences,
cleaning, sizes and hashes.

Outputs: ``calib_data/prose/{calibration,evaluation}.txt`` and ``manifest.json`` (shipped) and
``.train_data/prose/train.txt`` (git-ignored).

Usage (Debian 12 packages; no root needed, nothing is installed)::

    python3 export/recipes/build_prose_corpus.py --fetch      # apt-get download + dpkg-deb -x into .train_data/
    python3 export/recipes/build_prose_corpus.py              # rebuild the splits from what was fetched
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import (  # noqa: E402  (the recipe folder is not a package)
    EXCLUDED_PAGES,
    _size_pair,
    _SphinxBodyText,
    html_to_prose,
    join_documents,
    list_documents,
    sha256_text,
    split_documents,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_VERSION = 1
DOCUMENT_BYTES = 8_000
"""Target size of a document cut from a long text (a cookie file, a dictionary): small enough that a calibration
sample of whole documents can take each source's share of ~0.7 MB."""

TRAINING_PACKAGES = ("bible-kjv-text", "fortunes", "dict-devil", "jargon-text", "wordnet-base", "python3.11-doc")
EVALUATION_PACKAGE = "debian-handbook"
TOOL_PACKAGES = ("bible-kjv",)  # the decoder of bible-kjv-text's compressed text
PACKAGES = TRAINING_PACKAGES + (EVALUATION_PACKAGE,) + TOOL_PACKAGES
DEB_INFO = ".deb-info.json"
"""Written by --fetch into each unpacked package: {"package", "version", "deb", "deb_sha256"}."""

# Where each package keeps its copyright file and the licence read from it (checked against the file's text).
LICENCES = {
    "bible-kjv-text": ("public-domain", "The copyright for the King James Version text of the Bible is expired",
                       "text out of copyright (Crown letters patent still apply in the United Kingdom); Debian "
                       "packaging GPL-2+"),
    "fortunes": ("BSD-4-Clause (collection)", "This program falls under the BSD copyright",
                 "the collection is distributed under the BSD licence of fortune(6); cookies quote many authors"),
    "dict-devil": ("public-domain", "The Devil's Dictionary is in the public domain", ""),
    "jargon-text": ("public-domain", "This document (the Jargon File) is in the public domain", ""),
    "wordnet-base": ("WordNet-3.0", "License: WordNet3.0",
                     "permissive; requires the notice 'WordNet 3.0 Copyright 2006 by Princeton University. All "
                     "rights reserved.' with copies"),
    "python3.11-doc": ("PSF-2.0", "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2",
                       "code examples in it are dual-licensed PSF-2.0 / 0BSD"),
    "bible-kjv": ("GPL-2.0-or-later", "Its licence is GPL version 2 or later",
                  "the decoder program only (run, not shipped); its output is the public-domain text"),
    "debian-handbook": ("GPL-2.0-or-later OR CC-BY-SA-3.0", "License: GPL-2.0+ or CC-BY-SA-3.0",
                        "The Debian Administrator's Handbook, Raphael Hertzog and Roland Mas; the shipped excerpt "
                        "is redistributed under CC-BY-SA-3.0"),
}


# ----------------------------------------------------------------------------------------------------------------
# fetching (the only step that needs the network: Debian's archive through apt)
# ----------------------------------------------------------------------------------------------------------------
def fetch_packages(packages: tuple[str, ...], debs_dir: Path, root: Path) -> None:
    """apt-get download each package into debs_dir and unpack it into root/<package> with dpkg-deb -x."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *packages], cwd=debs_dir, check=True)
    for package in packages:
        debs = sorted(debs_dir.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise SystemExit(f"expected one {package}_*.deb in {debs_dir}, found {len(debs)}: remove the old ones")
        deb = debs[0]
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        target = root / package
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
        info = {"package": package, "version": version, "deb": deb.name,
                "deb_sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}
        (target / DEB_INFO).write_text(json.dumps(info, indent=2) + "\n")
        print(f"unpacked {deb.name} into {target}")


def package_record(root: Path, package: str) -> dict:
    """Version, .deb hash and licence of one unpacked package (the licence checked against its copyright file)."""
    info_file = root / package / DEB_INFO
    if not info_file.is_file():
        raise SystemExit(f"{info_file} not found: run with --fetch first")
    info = json.loads(info_file.read_text())
    spdx, phrase, note = LICENCES[package]
    copyright_file = Path("usr/share/doc") / package / "copyright"
    text = (root / package / copyright_file).read_text(encoding="utf-8", errors="replace")
    if phrase not in text:
        raise SystemExit(f"{root / package / copyright_file} no longer says {phrase!r}: check its licence")
    return {**info, "licence": spdx, "licence_note": note, "copyright_file": "/" + copyright_file.as_posix()}


# ----------------------------------------------------------------------------------------------------------------
# cleaning: each source -> {document name: text}
# ----------------------------------------------------------------------------------------------------------------
def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def chunk_paragraphs(paragraphs: list[str], prefix: str, target: int = DOCUMENT_BYTES) -> dict[str, str]:
    """Consecutive paragraphs grouped into documents of about `target` bytes, named prefix#0000, prefix#0001, ..."""
    documents: dict[str, str] = {}
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        current.append(paragraph)
        size += len(paragraph.encode("utf-8")) + 1
        if size >= target:
            documents[f"{prefix}#{len(documents):04d}"] = "\n".join(current)
            current, size = [], 0
    if current:
        documents[f"{prefix}#{len(documents):04d}"] = "\n".join(current)
    return documents


def bible_documents(root: Path) -> dict[str, str]:
    """One document per chapter ("Ge1" ... "Re22"), one verse per line, verse references dropped.

    ``bible -f`` prints every verse on one line as ``<Book><chapter>:<verse> <text>`` (pretty-printing off)."""
    program = root / "bible-kjv/usr/bin/bible"
    data_dir = root / "bible-kjv-text/usr/lib"
    out = subprocess.run([str(program), "-f", "-p", str(data_dir), "gen1:1-rev22:21"], check=True,
                         capture_output=True, text=True, encoding="utf-8").stdout
    chapters: dict[str, list[str]] = {}
    order: list[str] = []
    for line in out.splitlines():
        match = re.match(r"^(\w+?)(\d+):(\d+) (.*)$", line)
        if not match:
            if line.strip():
                raise SystemExit(f"unexpected line from {program}: {line[:80]!r}")
            continue
        book, chapter, _, verse = match.groups()
        name = f"{book}{chapter}"
        if name not in chapters:
            chapters[name] = []
            order.append(name)
        chapters[name].append(collapse(verse))
    # the zero-padded position keeps names sorted in the Bible's order
    return {f"kjv/{i:04d}-{name}": "\n".join(chapters[name]) for i, name in enumerate(order)}


def fortune_documents(root: Path) -> dict[str, str]:
    """Cookies of every fortune file (strfile text: cookies separated by lines holding only '%').

    A cookie keeps its line breaks (poems, attributions), with tabs and runs of spaces collapsed and blank lines
    inside it dropped (a blank line separates documents)."""
    folder = root / "fortunes/usr/share/games/fortunes"
    documents: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".dat", ".u8") or path.is_symlink() or path.name == "ascii-art":
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        cookies = []
        for cookie in re.split(r"^%$", text, flags=re.M):
            lines = [collapse(line) for line in cookie.splitlines()]
            lines = [line for line in lines if line]
            if lines and re.search(r"[A-Za-z]", " ".join(lines)):
                cookies.append("\n".join(lines))
        documents.update(chunk_paragraphs(cookies, f"fortunes/{path.name}"))
    return documents


def plain_paragraphs(text: str) -> list[str]:
    """Blank-line-separated paragraphs of a plain-text file, each joined into one line; no Latin letter: dropped."""
    paragraphs = [collapse(block) for block in re.split(r"\n\s*\n", text)]
    return [p for p in paragraphs if re.search(r"[A-Za-z]", p)]


def devil_documents(root: Path) -> dict[str, str]:
    """The dictionary's entries after its front matter (dictd text, dictzip = gzip-readable)."""
    with gzip.open(root / "dict-devil/usr/share/dictd/devil.dict.dz", "rt", encoding="utf-8") as handle:
        text = handle.read()
    start = text.find("PREFACE")  # before it: the dictd headers and the title page
    if start < 0:
        raise SystemExit("dict-devil: the heading PREFACE was not found")
    return chunk_paragraphs(plain_paragraphs(text[start:]), "devil")


def jargon_documents(root: Path) -> dict[str, str]:
    """The Jargon File from its introduction on (the table of contents dropped); paragraphs of fewer than four
    words are dropped (the glossary's word lists) unless they are an entry's head (``:term: n.``)."""
    with gzip.open(root / "jargon-text/usr/share/doc/jargon-text/jargon.txt.gz", "rt", encoding="utf-8") as handle:
        text = handle.read()
    start = text.find("Welcome to the Jargon File", text.find("Welcome to the Jargon File") + 1)
    if start < 0:
        raise SystemExit("jargon-text: the introduction heading was not found")
    paragraphs = [p for p in plain_paragraphs(text[start:]) if len(p.split()) >= 4 or p.startswith(":")]
    return chunk_paragraphs(paragraphs, "jargon")


WORDNET_POS = {"noun": "n.", "verb": "v.", "adj": "adj.", "adv": "adv."}


def wordnet_line(line: str, pos: str) -> str | None:
    """``lemma, lemma (pos): gloss; "example"`` from one line of a WordNet data file (see wndb(5WN)); None for the
    licence header and for synsets without an example sentence (a quoted part of the gloss): definitions alone
    would be over 40% of the corpus, in one formula."""
    if line.startswith("  "):
        return None
    fields, _, gloss = line.partition(" | ")
    if '"' not in gloss:
        return None
    parts = fields.split()
    count = int(parts[3], 16)
    lemmas = [re.sub(r"\(\w+\)$", "", parts[4 + 2 * i]).replace("_", " ") for i in range(count)]
    return f"{', '.join(lemmas)} ({pos}): {collapse(gloss)}"


def wordnet_documents(root: Path) -> dict[str, str]:
    documents: dict[str, str] = {}
    for name, pos in WORDNET_POS.items():
        path = root / f"wordnet-base/usr/share/wordnet/data.{name}"
        lines = [wordnet_line(line, pos) for line in path.read_text(encoding="utf-8").splitlines()]
        documents.update(chunk_paragraphs([line for line in lines if line], f"wordnet/{name}"))
    return documents


def python_doc_documents(root: Path) -> dict[str, str]:
    """The demo corpus's cleaning (build_corpus.py) of every Python documentation page."""
    html_root = root / "python3.11-doc/usr/share/doc/python3.11/html"
    docs = {f"python/{name}": html_to_prose((html_root / name).read_text(encoding="utf-8"))
            for name in list_documents(html_root)}
    return {name: text for name, text in docs.items() if text}


class _PublicanBodyText(_SphinxBodyText):
    """The prose of a Publican (DocBook) HTML page: all of <body> but the banner, the title bar, navigation,
    tables of contents, program listings and screens."""

    SKIPPED_IDS = frozenset(("banner", "title"))
    SKIPPED_CLASSES = frozenset(("docnav", "toc", "navheader", "navfooter", "programlisting", "screen"))

    def opens_body(self, tag: str, attrs: dict[str, str | None], classes: list[str]) -> bool:
        return tag == "body"

    def skips(self, tag: str, attrs: dict[str, str | None], classes: list[str]) -> bool:
        return (
            tag in ("pre", "script", "style")
            or attrs.get("id") in self.SKIPPED_IDS
            or bool(self.SKIPPED_CLASSES.intersection(classes))
        )


def handbook_documents(root: Path) -> dict[str, str]:
    """Every English page of the handbook but the index pages, one document each."""
    html_root = root / "debian-handbook/usr/share/doc/debian-handbook/html/en-US"
    docs = {}
    for path in sorted(html_root.glob("*.html")):
        if path.name in ("index.html", "ix01.html"):
            continue
        docs[f"handbook/{path.name}"] = html_to_prose(path.read_text(encoding="utf-8"), _PublicanBodyText)
    return {name: text for name, text in docs.items() if text}


EXTRACTORS = {
    "bible-kjv-text": bible_documents,
    "fortunes": fortune_documents,
    "dict-devil": devil_documents,
    "jargon-text": jargon_documents,
    "wordnet-base": wordnet_documents,
    "python3.11-doc": python_doc_documents,
    "debian-handbook": handbook_documents,
}
CLEANING = {
    "bible-kjv-text": "`bible -f -p <bible-kjv-text>/usr/lib gen1:1-rev22:21` (bible-kjv's decoder); verse "
                      "references dropped; one verse per line; one chapter per document",
    "fortunes": "every cookie file but ascii-art and the .dat/.u8 index files and links; cookies split at '%' "
                "lines; whitespace runs collapsed per line, blank lines dropped; cookies without a Latin letter "
                "dropped; ~8 KB of consecutive cookies per document",
    "dict-devil": "devil.dict.dz from its PREFACE on (dictd headers and title page dropped); blank-line paragraphs joined into one line; "
                  "~8 KB per document",
    "jargon-text": "jargon.txt.gz from the second 'Welcome to the Jargon File' (the table of contents dropped); "
                   "blank-line paragraphs joined into one line; paragraphs of < 4 words dropped unless they start "
                   "with ':'; ~8 KB per document",
    "wordnet-base": "data.{noun,verb,adj,adv}: one line per synset with an example sentence (a '\"' in its "
                    "gloss), 'lemma, lemma (pos): gloss' (licence header lines dropped, '_' -> ' ', adjective markers such as '(a)' dropped); ~8 KB per document",
    "python3.11-doc": "build_corpus.py's Sphinx cleaning of every page not in "
                      + ", ".join(EXCLUDED_PAGES) + "; one page per document",
    "debian-handbook": "html/en-US/*.html but index.html and ix01.html; text of <body> without #banner, #title, "
                       ".docnav, .toc, .programlisting, .screen, <pre>, <script>, <style>; one paragraph per line; "
                       "one page per document",
}


# ----------------------------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------------------------
def document_bytes(docs: dict[str, str]) -> dict[str, int]:
    return {name: len(text.encode("utf-8")) + 2 for name, text in docs.items()}  # + the blank-line separator


def build_prose_corpus(*, root: Path, out_dir: Path, train_out: Path, seed: int,
                       calibration_bytes: int, evaluation_bytes: tuple[int, int]) -> dict:
    records = {package: package_record(root, package) for package in PACKAGES}
    sources = {package: EXTRACTORS[package](root) for package in TRAINING_PACKAGES + (EVALUATION_PACKAGE,)}
    for package, docs in sources.items():
        if not docs:
            raise SystemExit(f"{package}: no documents extracted from {root / package}")

    training_total = sum(sum(document_bytes(sources[p]).values()) for p in TRAINING_PACKAGES)
    splits: dict[str, dict[str, list[str]]] = {"calibration": {}, "evaluation": {}, "train": {}}
    for package in TRAINING_PACKAGES:
        sizes = document_bytes(sources[package])
        share = max(1, round(calibration_bytes * sum(sizes.values()) / training_total))
        dealt = split_documents(sorted(sizes), sizes, seed, {"calibration": (share, share + DOCUMENT_BYTES)})
        splits["calibration"][package] = dealt["calibration"]
        splits["train"][package] = dealt["train"]
    sizes = document_bytes(sources[EVALUATION_PACKAGE])
    dealt = split_documents(sorted(sizes), sizes, seed, {"evaluation": evaluation_bytes})
    splits["evaluation"][EVALUATION_PACKAGE] = dealt["evaluation"]

    paths = {"calibration": out_dir / "calibration.txt", "evaluation": out_dir / "evaluation.txt",
             "train": train_out}
    manifest: dict = {
        "manifest_version": MANIFEST_VERSION,
        "kind": "prose corpus (export/recipes/build_prose_corpus.py)",
        "sources": {},
        "split": {
            "unit": "document (see each source's cleaning)",
            "evaluation": f"the held-out source {EVALUATION_PACKAGE}: its sorted documents shuffled with "
                          "random.Random(seed) and dealt until the target bytes (skipping documents that would "
                          "pass the maximum); the rest of it is not used",
            "calibration": "from each training source, its sorted documents shuffled with random.Random(seed) and "
                           "dealt until the source's share (its bytes / all training bytes) of the calibration "
                           "bytes; the rest of each training source is train",
            "seed": seed,
            "calibration_bytes": calibration_bytes,
            "evaluation_target_max_bytes": list(evaluation_bytes),
        },
        "splits": {},
    }
    for package in TRAINING_PACKAGES + (EVALUATION_PACKAGE,):
        docs = sources[package]
        text = join_documents([docs[name] for name in sorted(docs)])
        manifest["sources"][package] = {
            **records[package],
            "role": "evaluation (held out whole)" if package == EVALUATION_PACKAGE else "train + calibration",
            "cleaning": CLEANING[package],
            "documents": len(docs),
            "bytes": len(text.encode("utf-8")),
            "sha256": sha256_text(text),
        }
    manifest["tools"] = {package: records[package] for package in TOOL_PACKAGES}

    for split, by_package in splits.items():
        names = [(package, name) for package in by_package for name in by_package[package]]
        text = join_documents([sources[package][name] for package, name in names])
        path = paths[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        print(f"wrote {path} ({len(text.encode('utf-8')):,} bytes, {len(names)} documents)")
        rel = path.resolve().relative_to(REPO_ROOT) if path.resolve().is_relative_to(REPO_ROOT) else path
        entry = {
            "path": str(rel),
            "shipped": split != "train",
            "documents": len(names),
            "bytes": len(text.encode("utf-8")),
            "sha256": sha256_text(text),
            "bytes_per_source": {
                package: sum(document_bytes({n: sources[package][n] for n in members}).values())
                for package, members in by_package.items()
            },
        }
        if split != "train":  # train is every other document of the training sources
            entry["documents_per_source"] = by_package
        manifest["splits"][split] = entry

    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {manifest_path}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fetch", action="store_true",
                        help="first apt-get download the packages into --debs and unpack them into --root")
    parser.add_argument("--debs", type=Path, default=REPO_ROOT / ".train_data/debs")
    parser.add_argument("--root", type=Path, default=REPO_ROOT / ".train_data/root",
                        help="folder holding one dpkg-deb -x tree per package (root/<package>/usr/...)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "calib_data/prose")
    parser.add_argument("--train-out", type=Path, default=REPO_ROOT / ".train_data/prose/train.txt")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--calibration-bytes", type=int, default=700_000)
    parser.add_argument("--evaluation-bytes", type=_size_pair, default=(500_000, 600_000), metavar="TARGET,MAX")
    args = parser.parse_args(argv)
    if args.fetch:
        fetch_packages(PACKAGES, args.debs, args.root)
    build_prose_corpus(root=args.root, out_dir=args.out_dir, train_out=args.train_out, seed=args.seed,
                       calibration_bytes=args.calibration_bytes, evaluation_bytes=args.evaluation_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
