"""The OpenAI-compatible HTTP app: FastAPI routes over one scheduler that owns the running batch.

`create_app(config)` returns the app; `lmforge.serve` runs it under uvicorn. The models load in a
thread when the app starts (`/health` answers 503 until they are ready, 200 after). Each generation
request is checked (`protocol`), turned into one scheduler ticket per choice, and answered whole or as
server-sent events (`responses`); a client that disconnects cancels its tickets, which frees their
rows at the next step. Every error is answered in OpenAI's envelope with its status code.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import LMForgeError
from lmforge.generate.batching import Event
from lmforge.lm import LM, load
from lmforge.model.linear import pack_fp32
from lmforge.serve import protocol as p
from lmforge.serve.config import ServeConfig
from lmforge.serve.metrics import Metrics
from lmforge.serve.responses import Reply, TokenText, sse
from lmforge.serve.scheduler import QueueFull, Refused, Scheduler, Ticket

log = logging.getLogger("lmforge.serve")
MAX_EMBEDDING_INPUTS = 2048
ENDPOINTS = (
    "/",
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/tokenize",
    "/detokenize",
)


class ServerState:
    """The models, the scheduler and their readiness, shared by every route."""

    def __init__(self, config: ServeConfig, on_error: Callable[[Exception], None] | None = None):
        self.config = config
        self.metrics = Metrics()
        self.lm: LM | None = None
        self.embedder: LM | None = None
        self.scheduler: Scheduler | None = None
        self.tokens: TokenText | None = None
        self.status = "loading"
        self.packed_bytes = 0  # float32 weights also kept in oneDNN's packed layout (--pack-weights)
        self.error: str | None = None
        self.on_error = on_error
        self.embed_lock = threading.Lock()

    def load(self, loop: asyncio.AbstractEventLoop) -> None:
        """Load the models, warm the batch up and start the scheduler (runs in a thread)."""
        c = self.config
        try:
            if c.threads:
                torch.set_num_threads(c.threads)
            lm = load(c.model, dtype=c.dtype, compile=c.compile)
            if not lm.config.causal:
                raise LMForgeError(f"--model {c.model} is an encoder: give it as --embedding-model")
            self.embedder = load(c.embedding_model, dtype=c.embedding_dtype) if c.embedding_model else None
            self.packed_bytes = pack_fp32(lm.model) if c.pack_weights else 0
            if self.packed_bytes:
                log.info(
                    "lmforge serve: %d MB of float32 weights also packed for oneDNN", self.packed_bytes >> 20
                )
            scheduler = Scheduler(
                lm,
                max_batch=c.max_batch,
                max_queue=c.max_queue,
                metrics=self.metrics,
                prefill_tokens=c.prefill_tokens,
            )
            warm_up(lm, scheduler)
            scheduler.start(loop)
            self.lm, self.scheduler = lm, scheduler
            self.tokens = TokenText(lm.tokenizer) if lm.tokenizer is not None else None
            self.status = "ok"
            log.info(
                "lmforge serve: %s ready in %s on the running batch of %d rows",
                c.model_id,
                dtype_name(lm),
                c.max_batch,
            )
        except Exception as exc:  # noqa: BLE001 - reported by /health and by serve()
            self.status, self.error = "error", f"{exc}"
            log.error("lmforge serve: loading failed: %s", exc)
            if self.on_error is not None:
                self.on_error(exc)

    def require_ready(self) -> None:
        if self.status != "ok":
            detail = f": {self.error}" if self.error else "; retry when GET /health answers 200"
            raise p.APIError(503, f"the model is {self.status}{detail}", code="model_not_ready")

    def generation_model(self, name: str | None) -> LM:
        self.require_ready()
        c = self.config
        if name in (None, c.model_id):
            return self.lm
        if c.embedding_model is not None and name == c.embedding_model:
            raise p.bad_request(f"model {name!r} is an embedding model: use /v1/embeddings", "model")
        raise model_not_found(name, self.model_ids())

    def embedding_model(self, name: str | None) -> LM:
        self.require_ready()
        c = self.config
        if name is None:
            return self.embedder or self.lm
        if c.embedding_model is not None and name == c.embedding_model:
            return self.embedder
        if name == c.model_id:
            return self.lm
        raise model_not_found(name, self.model_ids())

    def model_ids(self) -> list[str]:
        c = self.config
        return [c.model_id] + ([c.embedding_model] if c.embedding_model else [])


def dtype_name(lm: LM) -> str:
    """The generation model's dtype as `--dtype` spells it ("bfloat16", "float32")."""
    return str(lm.engine.dtype).removeprefix("torch.")


def model_not_found(name: str, known: list[str]) -> p.APIError:
    return p.APIError(
        404,
        f"model {name!r} does not exist; this server serves {', '.join(known)}",
        "model",
        "model_not_found",
    )


def warm_up(lm: LM, scheduler: Scheduler) -> None:
    """Read the token table constraints need (about a second for a 50k vocabulary), and run each kind of
    decode step the running batch can take (`ContinuousBatcher.warm_up`: a compiled step compiles
    here, not under the first requests)."""
    if lm.tokenizer is not None:
        from lmforge.generate.constraints import token_table

        token_table(lm.tokenizer, lm.config.vocab_size)
    scheduler.batcher.warm_up()


# -- requests ----------------------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON; 413 past `limit` bytes, 400 when it is not JSON."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(int(length), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise p.bad_request(f"the request body is not valid JSON: {exc}"[:200], code="invalid_json") from None


def too_large(size: int, limit: int) -> p.APIError:
    return p.APIError(
        413, f"the request body ({size} bytes) exceeds the limit of {limit} bytes", code="request_too_large"
    )


async def disconnected(request: Request) -> None:
    """Returns when the client goes away (after the body was read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Disconnected(Exception):
    pass


class Job:
    """The tickets of one request (one per choice) and the events they send back."""

    def __init__(self, scheduler: Scheduler, parsed: p.Parsed):
        self.scheduler, self.parsed = scheduler, parsed
        self.queue: asyncio.Queue = asyncio.Queue()
        self.tickets = [
            Ticket(prompt, parsed.choice_options(i, j), i * parsed.n + j, self.queue)
            for i, prompt in enumerate(parsed.prompts)
            for j in range(parsed.n)
        ]
        self.pending = len(self.tickets)

    def submit(self) -> None:
        try:
            self.scheduler.submit(self.tickets)
        except QueueFull as exc:
            raise p.APIError(429, str(exc), code="queue_full", headers={"Retry-After": "1"}) from None

    def cancel(self) -> None:
        self.scheduler.cancel(self.tickets)

    async def next(self, watch: asyncio.Future | None = None) -> tuple[int, Event]:
        """The next event of any choice; an APIError when a choice failed, Disconnected when `watch`
        (the client's disconnect) comes first."""
        if watch is None:
            index, item = await self.queue.get()
        else:
            get = asyncio.ensure_future(self.queue.get())
            done, _ = await asyncio.wait({get, watch}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                raise Disconnected
            index, item = get.result()
        if isinstance(item, Refused):
            raise p.option_error(item.cause, self.parsed.sources)
        if isinstance(item, Exception):
            raise p.APIError(500, str(item), code="generation_failed")
        if item.finished:
            self.pending -= 1
        return index, item


async def answer(request: Request, job: Job, parsed: p.Parsed, reply: Reply) -> Response:
    """Run a job and answer: the whole reply, or a stream of chunks (the first event is awaited here,
    so a request the batcher refuses still gets its 400)."""
    job.submit()
    watch = asyncio.ensure_future(disconnected(request))
    try:
        first = await job.next(watch)
        if parsed.stream:
            return StreamingResponse(
                stream(job, first, parsed, reply),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        completions = {}
        item = first
        while True:
            index, event = item
            if event.finished:
                completions[index] = event.completion
            if not job.pending:
                break
            item = await job.next(watch)
        return JSONResponse(reply.body(completions))
    except Disconnected:
        job.cancel()
        return Response(status_code=499)
    except BaseException:
        job.cancel()
        raise
    finally:
        watch.cancel()


async def stream(job: Job, first: tuple[int, Event], parsed: p.Parsed, reply: Reply) -> AsyncIterator[str]:
    """The SSE body: opening chunks, one chunk per event, the usage chunk on request, [DONE]. A client
    that goes away cancels this generator (Starlette), and with it the job's tickets."""
    try:
        for chunk in reply.opening([t.index for t in job.tickets], parsed.include_usage):
            yield chunk
        item = first
        while True:
            chunk = reply.chunk(*item, parsed.include_usage)
            if chunk is not None:
                yield chunk
            if not job.pending:
                break
            try:
                item = await job.next()
            except p.APIError as exc:
                yield sse(exc.body())
                break
        if parsed.include_usage:
            yield reply.usage_chunk()
        yield sse("[DONE]")
    finally:
        job.cancel()


def parse_generation(
    body: dict[str, Any], lm: LM, prompts: list[list[int]], param: str, config: ServeConfig
) -> p.Parsed:
    """A checked generation request: options validated against the model, each prompt fitted into the
    context (max_tokens defaulted or refused)."""
    options, source = p.generation_options(body, lm)
    logprobs = logprobs_asked(body, chat=param == "messages")
    if logprobs is not None:
        options.update(logprobs=True, top_logprobs=logprobs)
    p.validate_options(options, source, lm)
    context = lm.config.max_seq_len
    per_prompt = [
        p.fit_context(options, len(ids), context, config.max_tokens, param, source) for ids in prompts
    ]
    return p.Parsed(
        model=config.model_id,
        prompts=prompts,
        options=per_prompt,
        n=p.check_n(body.get("n", 1), len(prompts), config.max_batch + config.max_queue),
        stream=body.get("stream", False),
        include_usage=p.include_usage(body),
        logprobs=logprobs,
        sources=source,
    )


def logprobs_asked(body: dict[str, Any], chat: bool) -> int | None:
    """How many alternatives per token a request asks for with its log-probs (None: no log-probs)."""
    if chat:
        top, wanted = body.get("top_logprobs"), body.get("logprobs", False)
        if top is not None and not wanted:
            raise p.bad_request("top_logprobs needs logprobs: true", "top_logprobs")
        count, field = (top or 0, "top_logprobs") if wanted else (None, "logprobs")
    else:  # completions: logprobs is the count
        count, field = body.get("logprobs"), "logprobs"
    if count is not None and not 0 <= count <= p.MAX_TOP_LOGPROBS:
        raise p.bad_request(f"{field} must be between 0 and {p.MAX_TOP_LOGPROBS}", field)
    return count


async def precompile(lm: LM, parsed: p.Parsed) -> None:
    """Compile an output constraint off the scheduler thread (compiled automata are cached), so a slow
    or bad one delays or fails this request alone."""
    kind = parsed.constraint
    if kind is None:
        return
    from lmforge.generate.api import Run

    def check() -> None:
        with torch.inference_mode():
            Run(lm, [parsed.prompts[0]], parsed.options[0], None, None)

    try:
        await asyncio.to_thread(check)
    except LMForgeError as exc:
        error = p.option_error(exc, parsed.sources)
        error.param = error.param or parsed.sources.get(kind, kind)
        raise error from None


# -- the app -----------------------------------------------------------------------------------------


def create_app(config: ServeConfig, state: ServerState | None = None) -> FastAPI:
    """The server's FastAPI app; the models load when it starts."""
    state = state or ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, args=(asyncio.get_running_loop(),), daemon=True).start()
        yield
        if state.scheduler is not None:
            state.scheduler.stop()

    app = FastAPI(
        title="lmforge",
        summary="An OpenAI-compatible server with continuous batching",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN; /openapi.json is served
        redoc_url=None,
    )
    app.state.lmforge = state
    app.add_middleware(CountRequests, metrics=state.metrics)
    add_error_handlers(app)
    add_routes(app, state)
    return app


class CountRequests:
    """ASGI middleware counting requests by endpoint and status (a plain ASGI wrapper: it never buffers
    a stream or hides a disconnect from it)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status[0])).inc()


def add_error_handlers(app: FastAPI) -> None:
    def envelope(error: p.APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(p.APIError)
    async def api_error(request: Request, exc: p.APIError) -> JSONResponse:
        return envelope(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return envelope(
            p.APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return envelope(p.bad_request(str(exc.errors()[:1])))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("lmforge serve: %s %s failed", request.method, request.url.path)
        return envelope(
            p.APIError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error")
        )


def body_schema(fields: type, generation: bool, models: list[str]) -> dict[str, Any]:
    schema = p.request_schema(fields, generation, models)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_routes(app: FastAPI, state: ServerState) -> None:
    config = state.config

    def authorized(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), config.api_key.encode()):
            raise p.APIError(
                401, "missing or wrong API key: send Authorization: Bearer <key>", code="invalid_api_key"
            )

    guarded = [Depends(authorized)]
    ids = state.model_ids()

    async def body_of(request: Request, fields: type, generation: bool = True) -> dict[str, Any]:
        return p.check_fields(await read_json(request, config.max_body_bytes), fields, generation)

    @app.get("/", include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        page = resources.files("lmforge.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/health", summary="200 when the model is ready, 503 while it loads (or failed to)")
    async def health() -> JSONResponse:
        body = {"status": state.status} | ({"error": state.error} if state.error else {})
        if state.lm is not None:
            body["dtype"] = dtype_name(state.lm)
            body["packed_weights_mb"] = round(state.packed_bytes / 2**20, 1)
        return JSONResponse(body, status_code=200 if state.status == "ok" else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", dependencies=guarded, summary="The served models")
    async def models() -> dict[str, Any]:
        data = []
        for name in state.model_ids():
            lm = state.lm if name == config.model_id else state.embedder
            entry = {"id": name, "object": "model", "created": 0, "owned_by": "lmforge"}
            if lm is not None:
                entry["max_model_len"] = lm.config.max_seq_len
            data.append(entry)
        return {"object": "list", "data": data}

    @app.post(
        "/v1/chat/completions", dependencies=guarded, openapi_extra=body_schema(p.ChatRequest, True, ids)
    )
    async def chat_completions(request: Request) -> Response:
        body = await body_of(request, p.ChatRequest)
        lm = state.generation_model(body.get("model"))
        messages = p.chat_messages(body["messages"])
        if lm.tokenizer is None or not getattr(lm.tokenizer, "chat_template", None):
            raise p.bad_request("this model has no chat template: use /v1/completions", "messages")
        try:
            ids = lm.tokenizer.encode_chat(messages, add_generation_prompt=True)
        except LMForgeError as exc:
            raise p.bad_request(str(exc), "messages") from None
        parsed = parse_generation(body, lm, [ids], "messages", config)
        await precompile(lm, parsed)
        reply = Reply(True, config.model_id, state.tokens, parsed.logprobs, len(ids))
        return await answer(request, Job(state.scheduler, parsed), parsed, reply)

    @app.post(
        "/v1/completions", dependencies=guarded, openapi_extra=body_schema(p.CompletionRequest, True, ids)
    )
    async def completions(request: Request) -> Response:
        body = await body_of(request, p.CompletionRequest)
        lm = state.generation_model(body.get("model"))
        prompts, texts = encode_prompts(lm, p.prompt_items(body["prompt"]))
        parsed = parse_generation(body, lm, prompts, "prompt", config)
        await precompile(lm, parsed)
        echo = [texts[i // parsed.n] for i in range(len(prompts) * parsed.n)] if body.get("echo") else None
        reply = Reply(False, config.model_id, state.tokens, parsed.logprobs, sum(map(len, prompts)), echo)
        return await answer(request, Job(state.scheduler, parsed), parsed, reply)

    @app.post(
        "/v1/embeddings", dependencies=guarded, openapi_extra=body_schema(p.EmbeddingRequest, False, ids)
    )
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await body_of(request, p.EmbeddingRequest, generation=False)
        name = body.get("model")
        lm = state.embedding_model(name)
        return await embed(state, lm, name or config.embedding_model or config.model_id, body)

    @app.post("/tokenize", dependencies=guarded, openapi_extra=body_schema(p.TokenizeRequest, False, ids))
    async def tokenize(request: Request) -> dict[str, Any]:
        body = await body_of(request, p.TokenizeRequest, generation=False)
        lm = tokenizer_model(state, body.get("model"))
        ids = tokenize_body(lm, body)
        return {"count": len(ids), "max_model_len": lm.config.max_seq_len, "tokens": ids}

    @app.post("/detokenize", dependencies=guarded, openapi_extra=body_schema(p.DetokenizeRequest, False, ids))
    async def detokenize(request: Request) -> dict[str, Any]:
        body = await body_of(request, p.DetokenizeRequest, generation=False)
        lm = tokenizer_model(state, body.get("model"))
        try:
            return {"prompt": lm.tokenizer.decode(body["tokens"])}
        except (LMForgeError, OverflowError) as exc:
            raise p.bad_request(str(exc), "tokens") from None


def encode_prompts(lm: LM, items: list[str | list[int]]) -> tuple[list[list[int]], list[str]]:
    """Token ids and text of each completions prompt (text is encoded as `generate` encodes it)."""
    vocab = lm.config.vocab_size
    ids, texts = [], []
    for item in items:
        if isinstance(item, str):
            if lm.tokenizer is None:
                raise p.bad_request("this model has no tokenizer: give the prompt as token ids", "prompt")
            ids.append(lm.tokenizer.encode(item, add_special_tokens=True))
            texts.append(item)
            continue
        if not item or any(not 0 <= t < vocab for t in item):
            raise p.bad_request(f"a token-id prompt must be non-empty ids in 0..{vocab - 1}", "prompt")
        ids.append(list(item))
        texts.append(lm.tokenizer.decode(item) if lm.tokenizer is not None else "")
    return ids, texts


def tokenizer_model(state: ServerState, name: str | None) -> LM:
    state.require_ready()
    lm = state.embedding_model(name) if name is not None else state.lm
    if lm.tokenizer is None:
        raise p.bad_request("this model has no tokenizer", "model")
    return lm


def tokenize_body(lm: LM, body: dict[str, Any]) -> list[int]:
    if (body.get("prompt") is None) == (body.get("messages") is None):
        raise p.bad_request("give exactly one of prompt and messages", "prompt")
    if body.get("prompt") is not None:
        return lm.tokenizer.encode(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))
    if not getattr(lm.tokenizer, "chat_template", None):
        raise p.bad_request("this model has no chat template", "messages")
    try:
        return lm.tokenizer.encode_chat(
            p.chat_messages(body["messages"]), add_generation_prompt=body.get("add_generation_prompt", True)
        )
    except LMForgeError as exc:
        raise p.bad_request(str(exc), "messages") from None


async def embed(state: ServerState, lm: LM, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """`/v1/embeddings` through `LM.embed`, in a worker thread (one embedding batch at a time)."""
    texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
    if not texts or len(texts) > MAX_EMBEDDING_INPUTS:
        raise p.bad_request(f"input must hold 1 to {MAX_EMBEDDING_INPUTS} texts", "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise p.bad_request("encoding_format must be float or base64", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and dims != lm.config.d_model:
        raise p.bad_request(
            f"this model's embeddings have {lm.config.d_model} dimensions, not {dims}", "dimensions"
        )

    def run() -> torch.Tensor:
        with state.embed_lock:
            return lm.embed(texts)

    try:
        vectors = await asyncio.to_thread(run)
    except LMForgeError as exc:
        raise p.bad_request(f"{exc} (start the server with --embedding-model minilm)", "model") from None
    limit = min(
        (lm.embedding.max_len if lm.embedding else None) or lm.config.max_seq_len, lm.config.max_seq_len
    )
    used = sum(min(len(lm.tokenizer.encode(t, add_special_tokens=True)), limit) for t in texts)
    data = []
    for i, row in enumerate(vectors.float()):
        value: Any = row.tolist() if fmt == "float" else base64.b64encode(row.numpy().tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }
