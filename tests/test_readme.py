"""The README's generated blocks match the code they are generated from."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from update_readme import README  # noqa: E402
from update_readme import generated_readme  # noqa: E402


def test_conv_method_table_is_generated_from_the_registry():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert generated_readme(text) == text, "run .venv/bin/python scripts/update_readme.py"
