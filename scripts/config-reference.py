"""Regenerate docs/TRAINER.md's config reference from the config's field docs (run after a
config change; tests/train/test_config.py checks the page is in step)."""
from pathlib import Path

from tumbler.train.config import reference_markdown

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"
page = Path(__file__).resolve().parent.parent / "docs" / "TRAINER.md"
text = page.read_text()
head, rest = text.split(BEGIN, 1)
_, tail = rest.split(END, 1)
page.write_text(head + BEGIN + "\n" + reference_markdown() + END + tail)
print(f"updated {page}")
