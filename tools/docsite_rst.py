# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Render the Markdown guides of docs/ as the reStructuredText pages of the collection's docs site.

antsibull-docs takes extra docs only as RST files under docs/docsite/rst/, listed in docs/docsite/extra-docs.yml.
The guides stay Markdown in docs/ (what the README links to and GitHub shows); this script writes
docs/docsite/rst/<name>.rst from docs/<name>.md into a copy of the collection (``make collection`` runs it on
.build/ansible_collections/fleet/checkpoint), so that the docs lint and the tarball carry them and nothing
generated is committed.

    python tools/docsite_rst.py COLLECTION_DIR   (run by `make collection`)

It fails when a guide of docs/ is not listed in extra-docs.yml or a listed one has no Markdown file, when a link
to another guide names a heading that does not exist, and on Markdown it cannot render faithfully (raw HTML other
than comments, a literal holding a double backtick, headings that skip a level).
"""

from __future__ import annotations

import posixpath
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from docutils.utils import column_width, punctuation_chars
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

LABEL_PREFIX = "ansible_collections.{namespace}.{name}.docsite."
# Section adornments by Markdown heading level; level 1 (the page title) is also overlined.
ADORNMENTS = {1: "=", 2: "-", 3: "~", 4: "^", 5: '"'}
# Characters after which an inline markup start-string is recognised, and before which an end-string is (docutils'
# own rules); elsewhere an escaped space separates the markup from the word it touches.
START_OK = re.compile(r"[\s%s%s]" % (punctuation_chars.openers, punctuation_chars.delimiters))
END_OK = re.compile(
    r"[\s%s%s%s]"
    % (punctuation_chars.closing_delimiters, punctuation_chars.delimiters, punctuation_chars.closers)
)
# A first line of a paragraph that RST would read as a list item, directive, field, option or line block.
BLOCK_START = re.compile(r"^(?:[-+*\u2022\u2023\u2043]\s|[#\w]{1,3}[.)]\s|\(\w{1,3}\)\s|\.\.(?:\s|$)|:\S|--?\w|\|\s|>>>)")
PUNCTUATION_LINE = re.compile(r"^([!-/:-@\[-`{-~])\1*$")
HTML_COMMENT = re.compile(r"^\s*<!--.*?-->\s*$", re.S)
LEXERS = {"": "text", "console": "console", "sh": "shell", "bash": "shell", "shell": "shell"}


class GuideError(Exception):
    """A guide that cannot be rendered as it is, with the file and the reason."""


def slug(text: str) -> str:
    """The anchor GitHub gives a heading (lower case, punctuation dropped, spaces to hyphens)."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def plain_text(node: SyntaxTreeNode) -> str:
    if node.type in ("text", "code_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    return "".join(plain_text(child) for child in node.children)


def escape(text: str) -> str:
    return re.sub(r"([\\*`|_])", r"\\\1", text)


@dataclass
class Guide:
    name: str
    source: Path
    tree: SyntaxTreeNode
    anchors: list[str] = field(default_factory=list)


class Renderer:
    """Turns one guide's Markdown syntax tree into RST lines."""

    def __init__(self, guide: Guide, guides: dict[str, Guide], linked: set[tuple[str, str]], label_prefix: str,
                 blob_url: str) -> None:
        self.guide = guide
        self.guides = guides
        self.linked = linked
        self.label_prefix = label_prefix
        self.blob_url = blob_url
        self.level = 0
        self.anchor_index = 0
        self.current: SyntaxTreeNode | None = None  # the block being rendered, for the line number of an error

    def fail(self, node: SyntaxTreeNode | None, message: str) -> GuideError:
        if node is None or not node.map:
            node = self.current
        line = f":{node.map[0] + 1}" if node is not None and node.map else ""
        return GuideError(f"docs/{self.guide.name}.md{line}: {message}")

    # Blocks

    def document(self) -> list[str]:
        lines = [
            f".. Generated from docs/{self.guide.name}.md by tools/docsite_rst.py: edit the Markdown, not this file.",
            "",
            f".. _{self.label_prefix}{self.guide.name}:",
            "",
        ]
        lines.extend(self.blocks(self.guide.tree.children))
        return lines

    def blocks(self, nodes: list[SyntaxTreeNode]) -> list[str]:
        out: list[str] = []
        previous = None
        for node in nodes:
            lines = self.block(node)
            if not lines:
                continue
            if out:
                out.append("")
                if previous in ("bullet_list", "ordered_list") and node.type == previous:
                    out.extend(["..", ""])  # two lists in a row would merge into one
            out.extend(lines)
            previous = node.type
        return out

    def block(self, node: SyntaxTreeNode) -> list[str]:
        self.current = node
        handler = getattr(self, f"block_{node.type}", None)
        if handler is None:
            raise self.fail(node, f"no RST rendering for Markdown {node.type!r}")
        return handler(node)

    def block_heading(self, node: SyntaxTreeNode) -> list[str]:
        level = int(node.tag[1:])
        if level == 1 and self.level:
            raise self.fail(node, "a second level-1 heading (the page title must be the only one)")
        if level > self.level + 1 or level not in ADORNMENTS:
            raise self.fail(node, f"heading level {level} after level {self.level}")
        self.level = level
        title = self.inline(node.children)
        if "\n" in title:
            raise self.fail(node, "a heading over several lines")
        adornment = ADORNMENTS[level] * column_width(title)
        lines: list[str] = []
        if level > 1:
            anchor = self.guide.anchors[self.anchor_index]
            self.anchor_index += 1
            if (self.guide.name, anchor) in self.linked:
                lines += [f".. _{self.label_prefix}{self.guide.name}.{anchor}:", ""]
        else:
            self.anchor_index += 1
        if level == 1:
            lines.append(adornment)
        return lines + [title, adornment]

    def block_paragraph(self, node: SyntaxTreeNode) -> list[str]:
        lines = self.inline(node.children).split("\n")
        if BLOCK_START.match(lines[0]):
            lines[0] = "\\" + lines[0]
        lines = [("\\" + line) if PUNCTUATION_LINE.match(line) else line for line in lines]
        if lines[-1].endswith("::"):
            lines[-1] = lines[-1][:-1] + "\\:"
        return lines

    def _list(self, node: SyntaxTreeNode, ordered: bool) -> list[str]:
        start = int(node.attrs.get("start", 1)) if ordered else 0
        out: list[str] = []
        for index, item in enumerate(node.children):
            marker = f"{start + index}." if ordered else "-"
            body = self.blocks(item.children)
            if out:
                out.append("")
            if not body:
                out.append(marker)
                continue
            indent = " " * (len(marker) + 1)
            out.append(f"{marker} {body[0]}")
            out.extend(f"{indent}{line}" if line else "" for line in body[1:])
        return out

    def block_bullet_list(self, node: SyntaxTreeNode) -> list[str]:
        return self._list(node, ordered=False)

    def block_ordered_list(self, node: SyntaxTreeNode) -> list[str]:
        return self._list(node, ordered=True)

    def block_fence(self, node: SyntaxTreeNode) -> list[str]:
        language = node.info.split()[0] if node.info.strip() else ""
        language = LEXERS.get(language, language)
        code = node.content.rstrip("\n").split("\n")
        return [f".. code-block:: {language}", ""] + [f"    {line}" if line.strip() else "" for line in code]

    def block_code_block(self, node: SyntaxTreeNode) -> list[str]:
        code = node.content.rstrip("\n").split("\n")
        return ["::", ""] + [f"    {line}" if line.strip() else "" for line in code]

    def block_blockquote(self, node: SyntaxTreeNode) -> list[str]:
        return [f"    {line}" if line else "" for line in self.blocks(node.children)]

    def block_hr(self, node: SyntaxTreeNode) -> list[str]:
        return ["----"]

    def block_html_block(self, node: SyntaxTreeNode) -> list[str]:
        if HTML_COMMENT.match(node.content):
            return []
        raise self.fail(node, "raw HTML (only comments are dropped)")

    def block_table(self, node: SyntaxTreeNode) -> list[str]:
        rows: list[list[str]] = []
        header_rows = 0
        for part in node.children:
            for tr in part.children:
                rows.append([self.inline(cell.children) for cell in tr.children])
                if part.type == "thead":
                    header_rows += 1
        out = [".. list-table::", f"   :header-rows: {header_rows}", "   :widths: auto", ""]
        for cells in rows:
            for column, cell in enumerate(cells):
                bullet = "   * -" if column == 0 else "     -"
                if "\n" in cell:
                    raise self.fail(node, "a table cell over several lines")
                out.append(f"{bullet} {cell}" if cell else bullet)
        return out

    # Inline

    def inline(self, nodes: list[SyntaxTreeNode]) -> str:
        pieces: list[tuple[bool, str]] = []  # (is markup, RST text)
        for node in nodes:
            if node.type == "inline":
                pieces.extend(self.inline_pieces(node.children))
            else:
                pieces.extend(self.inline_pieces([node]))
        return join_pieces(pieces)

    def inline_pieces(self, nodes: list[SyntaxTreeNode]) -> list[tuple[bool, str]]:
        pieces: list[tuple[bool, str]] = []
        for node in nodes:
            kind = node.type
            if kind == "text":
                pieces.append((False, escape(node.content)))
            elif kind in ("softbreak", "hardbreak"):
                pieces.append((False, "\n"))
            elif kind == "code_inline":
                pieces.append((True, self.literal(node, node.content)))
            elif kind in ("strong", "em"):
                pieces.extend(self.emphasis(node, "**" if kind == "strong" else "*"))
            elif kind == "link":
                pieces.append((True, self.link(node, plain_text(node), str(node.attrs["href"]))))
            elif kind == "image":
                alt = str(node.attrs.get("alt") or plain_text(node))
                pieces.append((True, self.link(node, alt, str(node.attrs["src"]))))
            elif kind == "html_inline" and HTML_COMMENT.match(node.content):
                continue
            else:
                raise self.fail(node, f"no RST rendering for inline Markdown {kind!r}")
        return pieces

    def literal(self, node: SyntaxTreeNode, content: str) -> str:
        content = content.strip()
        if "``" in content or content.endswith("`"):
            raise self.fail(node, f"a literal RST cannot hold: {content!r}")
        return f"``{content}``"

    def emphasis(self, node: SyntaxTreeNode, mark: str) -> list[tuple[bool, str]]:
        """Emphasis around text; RST cannot nest markup, so literals and links inside are left out of it."""
        pieces: list[tuple[bool, str]] = []
        for is_markup, text in self.inline_pieces(node.children):
            if is_markup:
                pieces.append((True, text))
                continue
            stripped = text.strip()
            if not stripped:
                pieces.append((False, text))
                continue
            lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
            if lead:
                pieces.append((False, lead))
            pieces.append((True, f"{mark}{stripped}{mark}"))
            if trail:
                pieces.append((False, trail))
        return pieces

    def link(self, node: SyntaxTreeNode, text: str, href: str) -> str:
        text = re.sub(r"\s+", " ", text).strip() or href
        title = re.sub(r"([\\`<])", r"\\\1", text)
        if re.match(r"^[a-z][a-z0-9+.-]*:", href):
            return f"`{title} <{href}>`__"
        path, anchor = href.partition("#")[::2]
        target = posixpath.normpath(posixpath.join("docs", path)) if path else f"docs/{self.guide.name}.md"
        match = re.fullmatch(r"docs/([^/]+)\.md", target)
        if match and match.group(1) in self.guides:
            name = match.group(1)
            if anchor and anchor not in self.guides[name].anchors:
                raise self.fail(node, f"link to {href!r}: docs/{name}.md has no heading with that anchor")
            label = f"{self.label_prefix}{name}" + (f".{anchor}" if anchor else "")
            return f":ref:`{title} <{label}>`"
        if target.startswith("../"):
            raise self.fail(node, f"link to {href!r} leaves the repository")
        return f"`{title} <{self.blob_url}{target}{'#' + anchor if anchor else ''}>`__"


def join_pieces(pieces: list[tuple[bool, str]]) -> str:
    out = ""
    for index, (is_markup, text) in enumerate(pieces):
        if is_markup:
            if out and not START_OK.match(out[-1]):
                out += "\\ "
            out += text
            following = next((piece for is_mark, piece in pieces[index + 1:] if piece), "")
            if following and not END_OK.match(following[0]):
                out += "\\ "
        else:
            out += text
    return out


def headings_anchors(tree: SyntaxTreeNode) -> list[str]:
    """The GitHub anchors of a guide's headings, in order (repeated titles get -1, -2, ...)."""
    anchors: list[str] = []
    seen: dict[str, int] = {}
    for node in tree.walk():
        if node.type == "heading":
            base = slug(plain_text(node))
            count = seen.get(base, 0)
            seen[base] = count + 1
            anchors.append(base if count == 0 else f"{base}-{count}")
    return anchors


def linked_anchors(guides: dict[str, Guide]) -> set[tuple[str, str]]:
    """(guide, anchor) of every heading another link points to, so that only those get an RST label."""
    linked: set[tuple[str, str]] = set()
    for guide in guides.values():
        for node in guide.tree.walk():
            if node.type != "link":
                continue
            path, anchor = str(node.attrs["href"]).partition("#")[::2]
            if not anchor or re.match(r"^[a-z][a-z0-9+.-]*:", path):
                continue
            name = Path(path).stem if path else guide.name
            linked.add((name, anchor))
    return linked


def toctree_refs(index: dict) -> list[str]:
    refs: list[str] = []
    for section in index.get("sections") or []:
        for entry in section.get("toctree") or []:
            refs.append(entry["ref"] if isinstance(entry, dict) else entry)
    return refs


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    collection = Path(argv[1])
    galaxy = yaml.safe_load((collection / "galaxy.yml").read_text(encoding="utf-8"))
    label_prefix = LABEL_PREFIX.format(namespace=galaxy["namespace"], name=galaxy["name"])
    blob_url = galaxy["repository"].rstrip("/") + "/blob/main/"
    docsite = collection / "docs" / "docsite"
    refs = toctree_refs(yaml.safe_load((docsite / "extra-docs.yml").read_text(encoding="utf-8")))
    markdown = {path.stem for path in (collection / "docs").glob("*.md")}
    problems = [f"docs/{name}.md is not listed in docs/docsite/extra-docs.yml" for name in sorted(markdown - set(refs))]
    problems += [f"docs/docsite/extra-docs.yml lists {ref!r}, but docs/{ref}.md does not exist"
                 for ref in refs if ref not in markdown]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    parser = MarkdownIt("commonmark").enable("table")
    guides: dict[str, Guide] = {}
    for ref in refs:
        source = collection / "docs" / f"{ref}.md"
        tree = SyntaxTreeNode(parser.parse(source.read_text(encoding="utf-8")))
        guides[ref] = Guide(ref, source, tree, headings_anchors(tree))
    linked = linked_anchors(guides)
    output = docsite / "rst"
    try:
        rendered = {f"{guide.name}.rst": "\n".join(Renderer(guide, guides, linked, label_prefix, blob_url).document())
                    + "\n" for guide in guides.values()}
    except GuideError as error:
        print(error, file=sys.stderr)
        return 1
    # Only what changed is written, nothing is removed but stale guides: make test runs the fast gates (which read
    # these files) while the lab gates refresh the collection copy.
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.iterdir():
        if stale.name not in rendered:
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
    for name, text in rendered.items():
        target = output / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    print(f"docs/docsite/rst: {len(guides)} guides rendered from docs/*.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
