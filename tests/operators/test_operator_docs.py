"""Every operator documents every argument where the API reference reads it.

The reference (docs/reference/operators.md, mkdocstrings) renders each public operator's class
docstring with its ``__init__`` docstring merged in, the inherited one included: the bulk operators'
arguments live on their private base class's ``__init__``. A parameter documented nowhere on that
path is missing from the reference, as all of the bulk operators' once were.
"""

from __future__ import annotations

import inspect

import pytest

from airflow_provider_qmatic.operators import appointments, bulk, update_customer

OPERATORS = [
    getattr(module, name) for module in (appointments, bulk, update_customer) for name in module.__all__
]


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda cls: cls.__name__)
def test_every_argument_is_in_the_reference(operator: type) -> None:
    rendered = (operator.__doc__ or "") + (operator.__init__.__doc__ or "")  # type: ignore[misc]
    arguments = [
        p.name
        for p in inspect.signature(operator.__init__).parameters.values()  # type: ignore[misc]
        if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    assert arguments, operator
    undocumented = [name for name in arguments if f":param {name}:" not in rendered]
    assert undocumented == [], f"{operator.__name__}: no :param: for {undocumented}"
