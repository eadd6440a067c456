"""Every entry of pgolf.features.FEATURES names a module that imports, and that module says
where it is defined that pgolf.features loads it and which config field selects it (those
arrows are invisible to a reader of the import statements)."""

import ast
import importlib

import pytest

from pgolf.features import FEATURES, load


@pytest.mark.parametrize("key", sorted(FEATURES, key=str), ids=lambda k: f"{k[0]}={k[1]}")
def test_every_feature_entry_imports_and_documents_its_selector(key):
    field, value = key
    mod = importlib.import_module(FEATURES[key])
    if value is not True:
        assert load(field, value) is mod
    doc = ast.get_docstring(ast.parse(open(mod.__file__, encoding="utf-8").read())) or ""
    assert "pgolf.features" in doc, f"{mod.__name__}: its docstring does not say pgolf.features loads it"
    assert field in doc, f"{mod.__name__}: its docstring does not name the field {field} that selects it"
