"""`ServeConfig` is the one declaration of the server's options: every field is a `lmforge serve` flag
and a `lmforge.serve` keyword, bad values are one-line errors, the API key also comes from
LMFORGE_API_KEY; /health answers 503 while the model loads; a model that cannot load stops the server
with an error that names it; the request schemas in /openapi.json come from GenerationConfig."""

from __future__ import annotations

import dataclasses
import threading
import time

import httpx2 as httpx
import pytest
from serve_helpers import free_port

import lmforge
from lmforge.errors import LMForgeError
from lmforge.generate.config import GenerationConfig
from lmforge.serve.config import ServeConfig


def test_every_serve_config_field_is_a_cli_flag():
    from lmforge.cli import build_parser

    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]
    dests = {a.dest for a in serve._actions}
    assert {f.name for f in dataclasses.fields(ServeConfig)} <= dests
    assert "--max-batch" in serve.format_help() and "(default: 16)" in serve.format_help()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": -1}, "port"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"compile": "fast"}, "compile"),
        ({"max_bach": 4}, "did you mean max_batch"),
        ({"host": 5}, "host"),
    ],
)
def test_bad_options_are_refused_before_anything_loads(options, message):
    with pytest.raises(LMForgeError, match=message):
        lmforge.serve(**options)


def test_the_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LMFORGE_API_KEY", "from-env")
    assert ServeConfig().api_key == "from-env"
    assert ServeConfig(api_key="given").api_key == "given"
    monkeypatch.setenv("LMFORGE_API_KEY", "")
    assert ServeConfig().api_key is None


def test_a_model_that_cannot_load_stops_the_server_with_its_error(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    with pytest.raises(LMForgeError, match="no-such-model"):
        lmforge.serve(model=str(missing), port=free_port(), log_level="error")
    from lmforge.cli import main

    assert main(["serve", "--model", str(missing), "--port", str(free_port()), "--log-level", "error"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_health_is_503_while_the_model_loads(tiny_checkpoint):
    import uvicorn

    from lmforge.serve.app import ServerState, create_app

    config = ServeConfig(model=str(tiny_checkpoint), port=free_port(), compile="eager", max_batch=2)
    state = ServerState(config)
    gate = threading.Event()
    load = state.load
    state.load = lambda loop: (gate.wait(), load(loop))
    app = create_app(config, state)  # log_config=None: uvicorn's dictConfig would reset the test's logging
    server = uvicorn.Server(uvicorn.Config(app, port=config.port, log_level="error", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    try:
        while not server.started:
            time.sleep(0.05)
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json() == {"status": "loading"}
        chat = httpx.post(
            url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "model_not_ready"
        gate.set()
        deadline = time.monotonic() + 60
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        reply = httpx.post(
            url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            timeout=30,
        )
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3
    finally:
        gate.set()
        server.should_exit = True
        thread.join(timeout=30)


def test_request_schemas_come_from_generation_config(tiny_server):
    spec = httpx.get(tiny_server.url + "/openapi.json").json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    served = {f.name for f in dataclasses.fields(GenerationConfig)} - {
        "num_beams", "num_return_sequences", "compile", "aot", "length_penalty", "early_stopping",
        "penalty_alpha", "contrastive_alpha", "prompt_lookup", "num_draft_tokens", "prompt_lookup_max_ngram",
    }  # fmt: skip
    assert served <= set(chat["properties"])
    assert (
        chat["properties"]["top_k"]["description"]
        == GenerationConfig.__dataclass_fields__["top_k"].metadata["help"]
    )
    assert chat["required"] == ["messages"] and chat["additionalProperties"] is False
    assert {"messages", "max_tokens", "n", "stream", "response_format", "logprobs"} <= set(chat["properties"])
