"""An English-French translation corpus from LibreOffice's help, built from Debian packages.

LibreOffice's help is translated paragraph by paragraph, and every translated HTML page keeps
the paragraph ids of the English page (``<p id="par_id3150040">``). Pairing the English and
French texts of each id gives about 39,000 pairs of real human translations (documentation
sentences, headings, menu paths; median 8 words), from two Debian packages (about 5 MB,
downloaded without installing them). The texts are LibreOffice's (MPL-2.0): padless does
not ship them, this script builds the corpus on your machine.

    apt-get download libreoffice-help-en-us libreoffice-help-fr
    python -m benchmarks.libreoffice_corpus libreoffice-help-en-us_*.deb \\
        libreoffice-help-fr_*.deb --out benchmarks/data/libreoffice-en-fr.tsv
    padless prepare benchmarks/data/libreoffice-en-fr.tsv --format tsv \\
        --out benchmarks/data/enfr --normalize none --tokenizer sentencepiece \\
        --vocab-size 8000 --max-length 40

Each argument is a ``.deb`` file (unpacked with ``dpkg-deb -x``) or a directory holding its
contents; the language of each is found from its ``usr/share/libreoffice/help/LANG``.
The output has one ``English<TAB>French`` line per paragraph, in file and id order.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

HELP_ROOT = Path("usr/share/libreoffice/help")
# elements whose id names a translated unit of text
UNITS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "td", "li"}
VOID = {"br", "img", "meta", "link", "input", "hr", "col", "source"}


class _Paragraphs(HTMLParser):
    """Collects the text of every element in :data:`UNITS` that has an id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None, list[str]]] = []
        self.texts: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            ident = dict(attrs).get("id") if tag in UNITS else None
            self.stack.append((tag, ident, []))

    def handle_endtag(self, tag: str) -> None:
        if not any(open_tag == tag for open_tag, _, _ in self.stack):
            return  # a stray end tag
        while self.stack:  # close what the page left open inside it, too
            open_tag, ident, parts = self.stack.pop()
            text = "".join(parts)
            if self.stack:
                self.stack[-1][2].append(text)
            if ident:
                self.texts.setdefault(ident, " ".join(text.split()))
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.stack[-1][2].append(data)


def paragraphs(page: Path) -> dict[str, str]:
    """``{element id: text}`` of one help page (whitespace collapsed, tags dropped)."""
    parser = _Paragraphs()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return {ident: text for ident, text in parser.texts.items() if text}


def help_directory(path: Path, work: Path) -> tuple[str, Path]:
    """``(language, its help directory)`` of a ``.deb`` (unpacked into ``work``) or a
    directory of its contents."""
    if path.is_file():
        target = work / path.name
        try:
            subprocess.run(["dpkg-deb", "-x", str(path), str(target)], check=True,
                           capture_output=True, text=True)
        except FileNotFoundError:
            raise SystemExit(f"{path}: dpkg-deb is needed to unpack it; or give the "
                             "directory unpacked from it") from None
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"{path}: not a .deb package ({e.stderr.strip()})") from None
        path = target
    if not (path / HELP_ROOT).is_dir():
        raise SystemExit(f"{path}: no {HELP_ROOT} inside: not a libreoffice-help-LANG package")
    languages = sorted(p for p in (path / HELP_ROOT).iterdir() if (p / "text").is_dir())
    if len(languages) != 1:
        raise SystemExit(f"{path}: expected one language under {HELP_ROOT}, found "
                         f"{[p.name for p in languages]}")
    return languages[0].name, languages[0]


def aligned_pairs(english: Path, french: Path) -> list[tuple[str, str]]:
    """``(English, French)`` texts of the paragraph ids both help trees have, page by page."""
    pairs = []
    for page in sorted((english / "text").rglob("*.html")):
        translated = french / page.relative_to(english)
        if not translated.is_file():
            continue
        theirs = paragraphs(translated)
        for ident, text in paragraphs(page).items():
            if ident in theirs:
                pairs.append((text, theirs[ident]))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs=2, type=Path, metavar="DEB_OR_DIR",
                        help="libreoffice-help-en-us and libreoffice-help-fr (.deb or unpacked)")
    parser.add_argument("--out", type=Path, required=True, help="the TSV file to write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        trees = dict(help_directory(p, Path(work)) for p in args.packages)
        if "en-US" not in trees or len(trees) != 2:
            raise SystemExit(f"expected en-US and one other language, got {sorted(trees)}")
        (other,) = set(trees) - {"en-US"}
        pairs = aligned_pairs(trees["en-US"], trees[other])
    if not pairs:
        raise SystemExit("no paragraph ids in common: are these LibreOffice help packages?")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{en}\t{tr}\n" for en, tr in pairs), encoding="utf-8")
    print(f"wrote {args.out}: {len(pairs)} en-US/{other} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
