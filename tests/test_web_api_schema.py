"""schemathesis against the API's OpenAPI document, in process (ASGI): generated requests for
every operation, each response checked against the document, and never a server error. The
ledger holds a labelled clip (one label with markup); the actions run with the token, on a
spool of copy stages."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from conftest import chain_settings
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.schemas import OpenApiSchema
from test_labels import T0, A, clip, facts, labelled, plate, track
from web_home import TOKEN

from watchers import app as wiring
from watchers.config import parse
from watchers.ledger import Ledger
from watchers.web import create_app


def world(root: Path) -> OpenApiSchema:
    policies = parse(chain_settings(("ingest", "archive")), source=None, base_dir=root)
    wiring.open_spool(policies).ensure_layout(policies.order())
    led = Ledger(policies.ledger_path)
    clip(led, A, T0)
    led.ingest([labelled(A, facts([track(3), track(4, "<b>")], [plate(3), plate(4, "O8")]))], T0)
    led.close()
    app = create_app(policies, token=TOKEN)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_api_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    """Every operation, a bounded number of generated cases each (schemathesis's pytest
    plugin is not used: it does not load under this pytest)."""
    schema = world(tmp_path)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})

        check()
        checked.append(operation.label)
    assert len(checked) == 10, checked
