"""The README stays short, and every relative link in it and in docs/ points at something.

Checks: README.md is at most 300 lines; every relative Markdown link (text or image) in
README.md and docs/*.md names an existing file, and a `#fragment` names a heading of the target
page (GitHub's anchor rule); every docs/*.md page is linked from README.md.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 300

# [text](target) or ![alt](target); the target ends at whitespace or ")" (titles not used here).
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _strip_fences(text):
  """Text without its fenced code blocks."""
  out, fence = [], False
  for line in text.split("\n"):
    if _FENCE.match(line):
      fence = not fence
      continue
    if not fence:
      out.append(line)
  return "\n".join(out)


def _strip_code(text):
  """Text without fenced code blocks and inline code spans (links there are not links)."""
  return re.sub(r"`[^`\n]*`", "", _strip_fences(text))


def links(text):
  """Targets of the Markdown links in `text`, outside code."""
  return _LINK.findall(_strip_code(text))


def github_anchor(heading):
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> '-'."""
  s = heading.strip().lower()
  s = re.sub(r"[^\w\- ]", "", s)
  return s.replace(" ", "-")


def anchors(path):
  """Every anchor the headings of a Markdown file define (duplicates get -1, -2, ...)."""
  seen, out = {}, set()
  for line in _strip_fences(path.read_text(encoding="utf-8")).split("\n"):
    m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
    if m:
      a = github_anchor(m.group(1))
      n = seen.get(a, 0)
      seen[a] = n + 1
      out.add(a if n == 0 else f"{a}-{n}")
  return out


def _is_relative(target):
  return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("//")


def test_helpers_on_a_hand_made_case(tmp_path):
  text = ("see [a](docs/a.md#x-y) and ![img](../p.png) and `[not](b.md)` and "
          "[web](https://e.org)\n```\n[code](c.md)\n```\n")
  assert links(text) == ["docs/a.md#x-y", "../p.png", "https://e.org"]
  assert github_anchor("Inference speed (`benchmarks/inference.py`)") == (
      "inference-speed-benchmarksinferencepy")
  assert github_anchor("CPU figures (this project's 2-vCPU VM)") == "cpu-figures-this-projects-2-vcpu-vm"
  page = tmp_path / "p.md"
  page.write_text("# A b\n## A b\n```\n# not a heading\n```\n## Speed (`x.py`)\n")
  assert anchors(page) == {"a-b", "a-b-1", "speed-xpy"}


def test_readme_is_short():
  n = len(README.read_text(encoding="utf-8").splitlines())
  assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES})"


def test_docs_pages_exist():
  assert DOCS, "no docs/*.md pages"


@pytest.mark.parametrize("page", [README] + DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
  broken = []
  for target in links(page.read_text(encoding="utf-8")):
    if not _is_relative(target):
      continue
    path, _, frag = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      broken.append(f"{target}: no such file")
    elif frag and dest.suffix == ".md" and frag not in anchors(dest):
      broken.append(f"{target}: no heading with anchor #{frag}")
  assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
  linked = set()
  for target in links(README.read_text(encoding="utf-8")):
    if _is_relative(target):
      linked.add((ROOT / target.partition("#")[0]).resolve())
  missing = [p.relative_to(ROOT).as_posix() for p in DOCS if p.resolve() not in linked]
  assert not missing, f"docs pages not linked from README.md: {missing}"
