"""The documentation stays true to the repository: every relative link (and #anchor) resolves,
every `llm2llm` subcommand, `python -m` module and repository path a page names exists, and
the README stays a short front door that starts with the Quickstart. No engine starts."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "RESULTS.md",
                ROOT / "cluster" / "README.md", *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 160
QUICKSTART = ["make demo", "make test"]

FENCE = re.compile(r"^([ \t]*)(```|~~~)[^\n]*\n(.*?)^\1\2[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.S)  # not across paragraphs
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$", re.M)
# A path into the repository as a page names it: a top-level folder, then at least one part.
REPO_PATH = re.compile(r"(?<![\w./<-])((?:engine|jobs|prompts|benchmarks|cluster|tests|docs)"
                       r"(?:/[\w.-]+)+/?)")


def code_blocks(text: str) -> list[str]:
    return [m.group(3) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (where a link is a link)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, punctuation other than
    `-` and `_` dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*|~~)", "", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", text)):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def link_problems(page: Path) -> list[str]:
    text = page.read_text()
    problems = []
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{rel(page)}: link {target!r}: {path_part} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            problems.append(f"{rel(page)}: link {target!r}: no heading #{anchor} in {rel(dest)}")
    return problems


def commands(text: str) -> list[list[str]]:
    """Each line of each fenced block, as words (comments kept: they name commands too)."""
    out = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                out.append(shlex.split(line, comments=False))
            except ValueError:  # an unbalanced quote in a YAML or diagram line
                out.append(line.split())
    return out


def named_subcommands(text: str) -> set[str]:
    """`llm2llm <sub>` in code blocks (also `.venv/bin/llm2llm <sub>`)."""
    subs = set()
    for words in commands(text):
        for a, b in zip(words, words[1:]):
            if (a == "llm2llm" or a.endswith("/llm2llm")) and re.fullmatch(r"[a-z][a-z_-]*", b):
                subs.add(b)
    return subs


def named_modules(text: str) -> set[str]:
    """`python -m <module>` in code blocks (any python: python3, .venv/bin/python)."""
    mods = set()
    for words in commands(text):
        for a, b, c in zip(words, words[1:], words[2:]):
            if re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", a) and b == "-m":
                mods.add(c)
    return mods


def named_paths(text: str) -> set[str]:
    """Repository paths named in code: fenced blocks and inline code spans."""
    code = code_blocks(text) + [m.group(2) for m in INLINE_CODE.finditer(FENCE.sub("", text))]
    return {m.rstrip(".,:;") for chunk in code for m in REPO_PATH.findall(chunk)}


def subcommand_problems(subs: set[str]) -> list[str]:
    from engine.cli import build_parser

    problems = []
    for sub in sorted(subs):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                build_parser().parse_args([sub, "--help"])
            code = 0  # parse_args returned: --help did not exit
        except SystemExit as e:
            code = e.code
        if code != 0 or "usage:" not in out.getvalue():
            problems.append(f"`llm2llm {sub} --help` exited {code}")
    return problems


def module_problems(mods: set[str]) -> list[str]:
    problems = []
    for mod in sorted(mods):
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(f"`python -m {mod}`: no such module")
    return problems


def path_problems(paths: set[str]) -> list[str]:
    return [f"{p}: no such file or folder" for p in sorted(paths) if not (ROOT / p).exists()]


def test_the_pages_exist():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    for page in ["README.md", "BENCHMARKS.md", "RESULTS.md", "cluster/README.md",
                 "docs/config.md", "docs/tasks.md", "docs/strategies.md", "docs/generation.md",
                 "docs/resume-and-faults.md"]:
        assert page in names and (ROOT / page).exists(), page


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    problems = link_problems(page)
    assert not problems, "\n".join(problems)


def test_every_page_is_linked_from_the_readme():
    readme = ROOT / "README.md"
    targets = LINK.findall(prose(readme.read_text()))
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in targets}
    assert [p.relative_to(ROOT).as_posix() for p in PAGES
            if p != readme and p.resolve() not in linked] == []


def test_named_subcommands_are_real():
    subs = set().union(*(named_subcommands(p.read_text()) for p in PAGES))
    assert {"run", "compare", "inspect", "report", "status"} <= subs  # the README's tour
    problems = subcommand_problems(subs)
    assert not problems, "\n".join(problems)


def test_named_modules_exist():
    mods = set().union(*(named_modules(p.read_text()) for p in PAGES))
    assert "jobs.run" in mods
    problems = module_problems(mods)
    assert not problems, "\n".join(problems)


def test_named_repository_paths_exist():
    paths = set().union(*(named_paths(p.read_text()) for p in PAGES))
    assert "jobs/configs/demo.yaml" in paths
    problems = path_problems(paths)
    assert not problems, "\n".join(problems)


def test_readme_is_a_short_front_door_that_starts_with_the_quickstart():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    first = code_blocks(text)[0]
    lines = [line.split("#")[0].strip() for line in first.splitlines()]
    assert [line for line in lines if line][:2] == QUICKSTART
    # CI runs `make test`, and the Makefile has both targets
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_the_checks_fail_on_broken_docs(tmp_path):
    """Each check finds what it is for in a page with one of each mistake."""
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## A `code` heading: here\n\n## Dup\n\n## Dup\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#a-code-heading-here) [ok2](other.md#dup-1) [self](#page)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) [web](https://example.com)\n"
        "`[not a link](nowhere.md)`\n\n"
        "```bash\nllm2llm run jobs/configs/demo.yaml\nllm2llm frobnicate x   # no such\n"
        "python -m jobs.run --config x\n.venv/bin/python -m no_such_module.at_all\n"
        "cat jobs/configs/no_such.yaml prompts/llm2llm/math.yaml\n```\n")
    text = page.read_text()
    assert link_problems(page) == [
        f"{page}: link 'missing.md': missing.md does not exist",
        f"{page}: link 'other.md#nowhere': no heading #nowhere in {tmp_path / 'other.md'}"]
    assert named_subcommands(text) == {"run", "frobnicate"}
    assert subcommand_problems({"run", "frobnicate"}) == ["`llm2llm frobnicate --help` exited 2"]
    assert module_problems(named_modules(text)) == [
        "`python -m no_such_module.at_all`: no such module"]
    assert path_problems(named_paths(text)) == [
        "jobs/configs/no_such.yaml: no such file or folder"]
