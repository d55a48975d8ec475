"""How this set was made: a tiny real library (`tinytext`) with two bugs, and a row per bug.

    python src/tumbler/tasks/sets/swe-mini/make.py      # rewrites repos/ and instances.jsonl

The history has three commits, with fixed dates and author, so their hashes are the same on
every machine: the library and its tests (both bugs in), the slugify fix with its tests, the
duration fix with its tests. Each row's base_commit is the commit before its fix; its `patch`
(the oracle) is the fix's change to the library, its `test_patch` the change to the tests;
FAIL_TO_PASS are the tests that the test patch adds (they fail at the base and pass with the
fix), PASS_TO_PASS the tests that pass either way. The repository ships as a git bundle.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).parent
REPO = "tumbler/tinytext"
BUNDLE = HERE / "repos" / "tumbler__tinytext.bundle"
ENV = {"GIT_AUTHOR_NAME": "Tinytext Dev", "GIT_AUTHOR_EMAIL": "dev@tinytext.invalid",
       "GIT_COMMITTER_NAME": "Tinytext Dev", "GIT_COMMITTER_EMAIL": "dev@tinytext.invalid",
       "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"}

def d(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


BASE = {
    "pyproject.toml": """
        [project]
        name = "tinytext"
        version = "0.1.0"
        requires-python = ">=3.9"

        [tool.pytest.ini_options]
        testpaths = ["tests"]
        """,
    "README.md": "# tinytext\n\nSmall text helpers: slugs and durations.\n",
    "tinytext/__init__.py": """
        from tinytext.duration import parse_duration
        from tinytext.slug import slugify

        __all__ = ["parse_duration", "slugify"]
        """,
    "tinytext/slug.py": '''
        import re
        import unicodedata


        def slugify(text: str) -> str:
            """A URL slug: lower-case ASCII letters and digits, words joined by single dashes."""
            text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
            return re.sub(r"[^a-z0-9]", "-", text.lower())
        ''',
    "tinytext/duration.py": '''
        import re

        UNITS = {"h": 3600, "m": 60, "s": 1}
        PART = re.compile(r"(\\d+)([hms])")


        def parse_duration(text: str) -> int:
            """Seconds in a duration such as "1h30m", "45s" or "2h"."""
            text = text.strip().lower()
            if not text or PART.sub("", text):
                raise ValueError(f"not a duration: {text!r}")
            total = 0
            for number, unit in PART.findall(text):
                total = int(number) * UNITS[unit]
            return total
        ''',
    "tests/conftest.py": """
        import pytest


        @pytest.fixture
        def words():
            return ["Hello", "World"]
        """,
    "tests/test_slug.py": """
        from tinytext import slugify


        def test_single_word():
            assert slugify("Hello") == "hello"


        def test_two_words(words):
            assert slugify(" ".join(words)) == "hello-world"


        def test_accents_are_dropped():
            assert slugify("Café") == "cafe"
        """,
    "tests/test_duration.py": """
        import pytest

        from tinytext import parse_duration


        def test_hours():
            assert parse_duration("2h") == 7200


        def test_seconds():
            assert parse_duration("45s") == 45


        def test_garbage_is_refused():
            with pytest.raises(ValueError):
                parse_duration("soon")
        """,
}
BASE = {name: d(text) for name, text in BASE.items()}

SLUG_FIX = {"tinytext/slug.py": BASE["tinytext/slug.py"].replace(
    'return re.sub(r"[^a-z0-9]", "-", text.lower())',
    'return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")')}
SLUG_TESTS = {"tests/test_slug.py": BASE["tests/test_slug.py"] + "\n\n" + d("""

    def test_punctuation_makes_one_dash():
        assert slugify("Hello, World!") == "hello-world"


    def test_no_dash_at_the_ends():
        assert slugify("  --Tiny text--  ") == "tiny-text"
    """)}
DURATION_FIX = {"tinytext/duration.py": BASE["tinytext/duration.py"].replace(
    "total = int(number)", "total += int(number)")}
DURATION_TESTS = {"tests/test_duration.py": BASE["tests/test_duration.py"] + "\n\n" + d("""

    def test_hours_and_minutes():
        assert parse_duration("1h30m") == 5400


    @pytest.mark.parametrize("text, seconds", [("1m1s", 61), ("2h0m5s", 7205)])
    def test_every_part_counts(text, seconds):
        assert parse_duration(text) == seconds
    """)}

ROWS = [
    dict(instance_id="tinytext-1", fix=SLUG_FIX, tests=SLUG_TESTS,
         problem_statement=textwrap.dedent("""\
             slugify leaves repeated and trailing dashes

             `slugify("Hello, World!")` gives `"hello--world-"`; it should give `"hello-world"`.
             Runs of characters that are not letters or digits should become one dash, and a
             slug should never start or end with a dash (`slugify("  --Tiny text--  ")` should
             be `"tiny-text"`)."""),
         FAIL_TO_PASS=["tests/test_slug.py::test_punctuation_makes_one_dash",
                       "tests/test_slug.py::test_no_dash_at_the_ends"],
         PASS_TO_PASS=["tests/test_slug.py::test_single_word", "tests/test_slug.py::test_two_words",
                       "tests/test_slug.py::test_accents_are_dropped",
                       "tests/test_duration.py::test_hours"]),
    dict(instance_id="tinytext-2", fix=DURATION_FIX, tests=DURATION_TESTS,
         problem_statement=textwrap.dedent("""\
             parse_duration only counts the last part

             `parse_duration("1h30m")` returns 1800 instead of 5400: only the minutes are counted.
             Every part of a duration should add up (`"1m1s"` is 61 seconds, `"2h0m5s"` is 7205)."""),
         FAIL_TO_PASS=["tests/test_duration.py::test_hours_and_minutes",
                       "tests/test_duration.py::test_every_part_counts[1m1s-61]",
                       "tests/test_duration.py::test_every_part_counts[2h0m5s-7205]"],
         PASS_TO_PASS=["tests/test_duration.py::test_hours", "tests/test_duration.py::test_seconds",
                       "tests/test_duration.py::test_garbage_is_refused",
                       "tests/test_slug.py::test_punctuation_makes_one_dash"]),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git(work, "init", "-q", "-b", "main")
        write(work, BASE)
        commits = [commit(work, "tinytext: slugs and durations", 0)]
        rows = []
        for n, row in enumerate(ROWS, start=1):
            base = commits[-1]
            write(work, row["fix"])
            patch = git(work, "diff")
            write(work, row["tests"])
            test_patch = git(work, "diff", "--", "tests")
            commits.append(commit(work, f"fix {row['instance_id']}", n))
            rows.append({"instance_id": row["instance_id"], "repo": REPO, "base_commit": base,
                         "problem_statement": row["problem_statement"], "patch": patch,
                         "test_patch": test_patch, "FAIL_TO_PASS": row["FAIL_TO_PASS"],
                         "PASS_TO_PASS": row["PASS_TO_PASS"], "version": "0.1"})
        BUNDLE.parent.mkdir(exist_ok=True)
        git(work, "bundle", "create", "-q", str(BUNDLE), "main")
    with open(HERE / "instances.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def write(work: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def commit(work: Path, message: str, n: int) -> str:
    date = f"2024-01-0{n + 1}T12:00:00+00:00"
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message, env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    return git(work, "rev-parse", "HEAD").strip()


def git(work: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["git", *args], cwd=work, check=True, capture_output=True, text=True,
                          env={**os.environ, **ENV, **(env or {})}).stdout


if __name__ == "__main__":
    main()
