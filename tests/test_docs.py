"""The documents say what the code does."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_error_catalogue_document_matches_the_code():
    from scripts.errors_doc import render

    assert (ROOT / "docs" / "errors.md").read_text() == render(), "run: python scripts/errors_doc.py > docs/errors.md"


def test_the_readme_documents_every_setting_the_product_reads():
    import re

    config = (ROOT / "dashboard" / "config.py").read_text()
    readers = r'(?:os\.environ\.get|_int|_float|_bool|_choice)\(\s*(?:os\.environ\.get\()?"([A-Z_]+)"'
    settings = set(re.findall(readers, config))
    readme = (ROOT / "README.md").read_text()
    assert settings, "no settings found in config.py"
    assert sorted(s for s in settings if f"`{s}`" not in readme) == []
