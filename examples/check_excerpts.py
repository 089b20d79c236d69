#!/usr/bin/env python3
"""Every ```cpp block of a doc must be a verbatim excerpt of one example: the same
lines, in order and contiguous, indentation aside. The docs then show only code
that is compiled and run by the example tests.

    check_excerpts.py DOC.md EXAMPLES_DIR
"""
import pathlib
import sys


def main() -> int:
    doc, examples = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    sources = {p.name: [l.strip() for l in p.read_text().splitlines()] for p in sorted(examples.glob("*.cpp"))}
    blocks, block, start = [], None, 0
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        if block is None and line.startswith("```cpp"):
            block, start = [], n
        elif block is not None and line.startswith("```"):
            blocks.append((start, block))
            block = None
        elif block is not None:
            block.append(line.strip())
    if not blocks:
        print(f"{doc}: no ```cpp blocks")
        return 1
    bad = 0
    for start, lines in blocks:
        found = [name for name, src in sources.items()
                 if any(src[i:i + len(lines)] == lines for i in range(len(src) - len(lines) + 1))]
        if found:
            print(f"{doc}:{start}: excerpt of examples/{found[0]}")
        else:
            print(f"{doc}:{start}: not an excerpt of any examples/*.cpp:\n  " + "\n  ".join(lines))
            bad += 1
    print(f"{len(blocks) - bad} of {len(blocks)} code blocks are excerpts of the examples")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
