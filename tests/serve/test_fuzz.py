"""Whatever a client sends, /predict answers 200 or a one-line 400: never a 500, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.conftest import App

pytestmark = pytest.mark.slow

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["text", "rows", "x"]) | st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)  # fmt: skip


@pytest.fixture(scope="module")
def app(text_run):
    import asyncio

    loop = asyncio.new_event_loop()
    served = App(text_run)
    loop.run_until_complete(served.__aenter__())
    yield served, loop
    loop.run_until_complete(served.__aexit__(None, None, None))
    loop.close()


def answer(app, body: bytes):
    served, loop = app
    return loop.run_until_complete(served.post("/predict", body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON)
def test_any_json_gets_200_or_400(app, value):
    reply = answer(app, json.dumps(value, allow_nan=True).encode())
    assert reply.status_code in (200, 400), reply.text
    if reply.status_code == 400:
        message = reply.json()["error"]
        assert message and "\n" not in message and "Traceback" not in message


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200))
def test_any_bytes_get_200_or_400(app, body):
    assert answer(app, body).status_code in (200, 400)
