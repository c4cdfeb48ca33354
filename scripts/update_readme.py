"""Regenerates the README blocks that are generated from the code.

Usage: .venv/bin/python scripts/update_readme.py [--check]

The conv-method table comes from the registry (`conv_methods_markdown()`), so
a new registered method shows up in the README without anyone editing it.
`--check` exits 1 (and changes nothing) when the README is out of date;
`tests/test_readme.py` runs that check.
"""

import os
import re
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
BEGIN, END = "<!-- conv-methods:begin -->", "<!-- conv-methods:end -->"


def generated_readme(text):
    """`text` with the conv-method block replaced by the registry's table."""
    from keras_effconv.conv_methods import conv_methods_markdown

    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no {BEGIN} ... {END} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{conv_methods_markdown()}\n{END}", text)


def main(argv):
    with open(README, encoding="utf-8") as f:
        text = f.read()
    new = generated_readme(text)
    if "--check" in argv:
        if new != text:
            print("README.md is out of date: run .venv/bin/python scripts/update_readme.py")
            return 1
        return 0
    if new != text:
        with open(README, "w", encoding="utf-8") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
