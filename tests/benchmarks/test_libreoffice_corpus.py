"""``benchmarks/libreoffice_corpus.py`` on help pages in the packages' exact layout and markup."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.libreoffice_corpus import aligned_pairs, main, paragraphs

# As in libreoffice-help-en-us / -fr 7.4 (text/shared/optionen/macrosecurity.html, cut down)
ENGLISH = """<!DOCTYPE html><html lang="en-US"><head><meta charset="utf-8"></head><body>
<div id="DisplayArea"><h1 id="hd_id3152966" dir="auto">Macro <span class="emph">Security</span>
</h1><p id="par_idN1056A" class="paragraph" dir="auto">The Macro Security dialog appears when a
document contains one or more macros. You can also call the dialog from the <span
id="swlnsys">Tools - Options</span> dialog.<br></p>
<p class="embedded" dir="auto"><a href="en-US/text/x.html">Security Level</a></p>
<p id="par_only_en" class="paragraph">Not translated.</p><p id="par_empty"> </p></div>
</body></html>"""
FRENCH = """<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"></head><body>
<div id="DisplayArea"><h1 id="hd_id3152966" dir="auto">S&eacute;curit&eacute; des macros</h1>
<p id="par_idN1056A" class="paragraph" dir="auto">La bo&icirc;te de dialogue de
S&eacute;curit&eacute; des macros appara&icirc;t lorsqu'un document contient une ou
plusieurs macros.</span></p>
<p id="par_empty">x</p></div></body></html>"""


def help_tree(root: Path, language: str, pages: dict[str, str]) -> Path:
    base = root / "usr/share/libreoffice/help" / language
    for name, html in pages.items():
        path = base / "text/shared" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
    return root


def test_paragraph_texts_by_id_without_markup(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text(ENGLISH, encoding="utf-8")
    texts = paragraphs(page)
    assert texts["hd_id3152966"] == "Macro Security"
    assert texts["par_idN1056A"] == ("The Macro Security dialog appears when a document "
                                     "contains one or more macros. You can also call the dialog "
                                     "from the Tools - Options dialog.")
    assert "par_empty" not in texts and "swlnsys" not in texts  # empty; a span is no unit


def test_pairs_follow_the_ids_both_pages_have(tmp_path: Path) -> None:
    en = help_tree(tmp_path / "en", "en-US", {"a.html": ENGLISH, "only_en.html": ENGLISH})
    fr = help_tree(tmp_path / "fr", "fr", {"a.html": FRENCH})
    pairs = aligned_pairs(en / "usr/share/libreoffice/help/en-US",
                          fr / "usr/share/libreoffice/help/fr")
    assert pairs == [
        ("Macro Security", "Sécurité des macros"),
        ("The Macro Security dialog appears when a document contains one or more macros. You "
         "can also call the dialog from the Tools - Options dialog.",
         "La boîte de dialogue de Sécurité des macros apparaît lorsqu'un document contient une "
         "ou plusieurs macros."),
    ]
    out = tmp_path / "corpus.tsv"
    assert main([str(en), str(fr), "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all(line.count("\t") == 1 for line in lines)


def test_what_is_not_a_help_package_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty: no usr/share/libreoffice/help inside"):
        main([str(tmp_path / "empty"), str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    fake = tmp_path / "fake.deb"
    fake.write_text("not a package")
    with pytest.raises(SystemExit, match="fake.deb: not a .deb package"):
        main([str(fake), str(fake), "--out", str(tmp_path / "o")])
