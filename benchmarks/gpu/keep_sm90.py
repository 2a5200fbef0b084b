"""Edit mamba_ssm's setup.py (2.3.x) so that it compiles for arch=compute_90,code=sm_90 only (H200), in place.

Every ``cc_flag.append("arch=compute_XX,code=sm_XX")`` with XX != 90 is removed together with the
``cc_flag.append("-gencode")`` line just before it; a ``pass`` takes their place, so that an ``if`` whose body held
only gencode pairs stays valid Python. Exits non-zero, changing nothing, when the file does not look as expected.

    python3 benchmarks/gpu/keep_sm90.py path/to/setup.py
"""

from __future__ import annotations

import re
import sys

ARCH = re.compile(r'cc_flag\.append\("arch=compute_(\d+),code=sm_\d+"\)')


def keep_sm90(text: str) -> tuple[str, int]:
    """-> (edited text, number of gencode pairs removed). Raises ValueError on an unexpected layout."""
    out, kept, dropped = [], 0, 0
    for line in text.splitlines(keepends=True):
        match = ARCH.search(line)
        if match and match.group(1) != "90":
            if not out or '"-gencode"' not in out[-1]:
                raise ValueError(f"unexpected layout near {line.strip()!r}: no -gencode line before it")
            out.pop()
            out.append(line[: len(line) - len(line.lstrip())] + "pass  # gencode pair removed (sm_90 only)\n")
            dropped += 1
            continue
        kept += bool(match)
        out.append(line)
    if kept != 1:
        raise ValueError(f"expected exactly one sm_90 gencode entry, found {kept}")
    return "".join(out), dropped


def main() -> None:
    path = sys.argv[1]
    try:
        text, dropped = keep_sm90(open(path).read())
    except ValueError as exc:
        sys.exit(f"{path}: {exc}")
    compile(text, path, "exec")  # the edited file must still be valid Python
    open(path, "w").write(text)
    print(f"{path}: kept arch=compute_90,code=sm_90, removed {dropped} other gencode pairs")


if __name__ == "__main__":
    main()
