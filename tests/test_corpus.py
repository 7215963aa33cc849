"""The bad-input corpus (tests/corpus/make_corpus.py): every case gives the expected error class,
a message naming the file or argument, and changes nothing outside its output folder.

Prints the number of cases per category (``pytest -s`` or the summary line of each test).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from pathlib import Path

import pytest

from tests.corpus.make_corpus import Case, _Server, make_cases

CATEGORIES = ("checkpoint", "image", "labels", "output", "download", "prompt")


def snapshot(root: Path, exclude: Path | None) -> dict[str, str]:
    """Every entry under ``root`` (links not followed) -> its kind and content hash."""
    out: dict[str, str] = {}
    skip = str(exclude) if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        if skip and (dirpath == skip or dirpath.startswith(skip + os.sep)):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if skip and (path == skip or path.startswith(skip + os.sep)):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[path] = "link:" + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    out[path] = "file:" + hashlib.sha1(f.read()).hexdigest()
            elif stat.S_ISDIR(st.st_mode):
                out[path] = "dir"
            else:
                out[path] = f"special:{stat.S_IFMT(st.st_mode)}"
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    server = _Server()
    try:
        yield root, make_cases(root, server)
    finally:
        server.close()


def run_case(case: Case, root: Path) -> str | None:
    """None when ``case`` behaves as expected, else what went wrong."""
    before = snapshot(root, case.out)
    error: BaseException | None = None
    result = None
    try:
        result = case.run()
    except Exception as exc:  # noqa: BLE001 (the class is what is checked)
        error = exc
    after = snapshot(root, case.out)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        return f"changed outside {case.out}: {changed[:5]}"
    if case.raises is None:
        if error is not None:
            return f"raised {type(error).__name__}: {error}"
    else:
        if error is None:
            return f"did not raise {case.raises.__name__}"
        if not isinstance(error, case.raises):
            return f"raised {type(error).__name__} (want {case.raises.__name__}): {error}"
        if case.names and case.names not in str(error):
            return f"the message does not name {case.names!r}: {error}"
        if "Traceback" in str(error):
            return f"a traceback in the message: {error}"
    if case.check is not None:
        try:
            case.check(result)
        except AssertionError as exc:
            return f"check failed: {exc}"
    return None


@pytest.mark.parametrize("category", CATEGORIES)
def test_corpus_category(corpus, category, capsys):
    root, cases = corpus
    mine = [c for c in cases if c.category == category]
    assert mine, f"no corpus cases for {category}"
    problems = []
    for case in mine:
        why = run_case(case, root)
        if why:
            problems.append(f"{case.name}: {why}")
    kinds = Counter(c.raises.__name__ if c.raises else "handled" for c in mine)
    with capsys.disabled():
        print(
            f"\ncorpus {category}: {len(mine)} cases, {len(mine) - len(problems)} pass "
            f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})"
        )
    assert not problems, "\n".join(problems)


def test_corpus_counts(corpus, capsys):
    _, cases = corpus
    counts = Counter(c.category for c in cases)
    with capsys.disabled():
        print("\ncorpus cases per category: " + ", ".join(f"{k} {counts[k]}" for k in CATEGORIES))
    assert set(counts) == set(CATEGORIES) and sum(counts.values()) >= 50
