"""The HTTP API (FastAPI): the ingress the Ray Serve application wraps, and a plain ASGI
app for in-process tests. It authenticates the key, enforces the request limits, decodes
the radiographs, asks the backend for the readings and the adjudication, and maps every
error the project raises on purpose to a 4xx answer with a machine-readable code.

Endpoints: ``POST /v1/claims:validate`` (JSON with base64 images, or multipart with the
claim as a ``claim`` JSON part and one file per attachment named by its radiograph id),
``POST /v1/images:analyze``, ``GET /v1/decisions/{audit_id}``, ``GET /healthz``,
``GET /readyz``."""

from __future__ import annotations

import binascii
import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import pybase64
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datasets.radiograph import ReaderLimits
from models.detections import ImageReading
from models.errors import DxvError
from models.radiographs import RadiographKind
from serving.adjudication import ClaimDecision, RuleTables, SearchAhead, adjudicate
from serving.api.admin_routes import add_admin_routes
from serving.api.appeal_routes import add_appeal_routes
from serving.api.drift_metrics import DriftCollector
from serving.api.metrics import ApiMetrics, server_timing
from serving.api.openapi import CLAIM_BODY, FHIR_CLAIM_BODY, FHIR_CLAIM_RESPONSE, errors
from serving.api.openapi import install as install_openapi
from serving.api.params import RowId
from serving.api.request_context import RequestContext, answering, current_request
from serving.api.review_routes import add_review_routes
from serving.api.turns import Turns
from serving.appeals import AppealError, AppealInputError
from serving.claims import Claim, InvalidClaimError, claim_from_json
from serving.effective_tables import EffectiveTables
from serving.image_analysis import (
    ImageAnalysis,
    ModelsUnavailableError,
    PrintsCallback,
    analyze_files,
    raise_if_refused,
)
from serving.rate_limits import RateLimitedError, TenantBudgets, retry_after_header
from serving.review.dispositions import DispositionError
from serving.rules.recycled import ImagePrint
from serving.service_config import ServingConfig
from serving.store import repository, reviews
from serving.store.access_log import AccessLogWriter, AccessRecord
from serving.store.api_keys import AuthError, ForbiddenError, Permission, Principal, authenticate, presented_key_id
from serving.store.database import Store
from serving.store.table_versions import TableVersionConflictError, TableVersionNotFoundError

log = logging.getLogger("dxv.api")


class RequestError(DxvError):
    code = "request.invalid"


class RequestTooLargeError(DxvError):
    code = "request.too_large"


class StoreUnavailableError(DxvError):
    """The state store is away or busy past its timeout (HTTP 503, to be retried)."""

    code = "store.unavailable"


class NotFoundError(DxvError):
    code = "not_found"


class TenantMismatchError(DxvError):
    code = "auth.tenant_mismatch"


_STATUS = {AuthError: 401, ForbiddenError: 403, TenantMismatchError: 403, NotFoundError: 404, RequestTooLargeError: 413,
           repository.IdempotencyConflictError: 409, reviews.ReviewNotFoundError: 404, reviews.ReviewClosedError: 409,
           DispositionError: 422, AppealError: 409, AppealInputError: 422, TableVersionNotFoundError: 404,
           TableVersionConflictError: 409, ModelsUnavailableError: 503,
           StoreUnavailableError: 503, RateLimitedError: 429}


class Reader(Protocol):
    """What the API needs from the models: the files of a request in (as received), a
    reading and fingerprint for each out, in order; a file that cannot be read raises its
    ``DxvError``."""

    def analyze(self, files: list[tuple[str, bytes, RadiographKind | None]], limits: ReaderLimits,
                on_printed: PrintsCallback | None = None) -> list[ImageAnalysis]:
        """``on_printed``: called with the files' fingerprints before the models read them,
        where the models read in this process (else never)."""
        ...

    def ready(self) -> bool: ...


class ImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: str = Field(min_length=1, max_length=128)
    kind: RadiographKind | None = None
    content_base64: str = Field(min_length=1)


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: tuple[ImageIn, ...] = Field(min_length=1)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def create_app(*, reader: Reader, store: Store, tables: RuleTables, config: ServingConfig,
               clock: Callable[[], dt.datetime] | None = None, reads_at_once: int | None = None) -> FastAPI:
    """``reads_at_once``: requests at the models at a time, the others waiting their turn up
    to ``limits.max_waiting_requests`` (``serving.api.turns``); None: no limit."""
    access_log = AccessLogWriter(store)
    turns = Turns(reads_at_once, config.limits.max_waiting_requests) if reads_at_once else None

    # Work a claim starts beside the models (its recycled-radiograph search): a pool of its
    # own, so that it never waits behind the requests' own threads.
    side_work = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dxv-side")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        access_log.close()  # what is queued is written before the replica goes
        side_work.shutdown(wait=False)

    app = FastAPI(title="Dental radiograph validation", version="1.0", lifespan=lifespan,
                  description="Checks dental claim lines against the radiographs sent with them.")
    app.state.store = store
    app.state.access_log = access_log
    metrics = ApiMetrics()
    if turns is not None:
        metrics.waiting.set_function(lambda: turns.waiting)
    now = clock or (lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))
    limits = ReaderLimits(max_pixels=config.limits.max_pixels_per_image, max_bytes=config.limits.max_request_bytes)
    # The release's tables with the thresholds an admin promoted last (re-checked every refresh_s).
    live = EffectiveTables(store, tables, refresh_s=config.thresholds_refresh_s, now=now)
    budgets = TenantBudgets(config.limits.tenant_rate, config.limits.tenant_rates)
    metrics.registry.register(DriftCollector(store, config.monitoring, now))

    @app.exception_handler(DxvError)
    async def _dxv_error(_: Request, exc: DxvError) -> JSONResponse:
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 400)
        response = _error(status, exc.code, exc.message)
        # A moment's unavailability (503) or a rate spent (429, which says for how long): the caller retries.
        retry_after_s = getattr(exc, "retry_after_s", 1.0 if status == 503 else None)
        if retry_after_s is not None:
            response.headers["Retry-After"] = retry_after_header(retry_after_s)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing's own answers (no such route, a method the route does not take) in the
        # service's error shape, like every other refusal.
        response = _error(exc.status_code, _HTTP_CODES.get(exc.status_code, "request.invalid"), str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database is away or busy past its timeout: no answer was made, so the caller
        # retries. Logged by type only (the statement's values are hidden by the engine too).
        log.warning("state store unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
        return await _dxv_error(request, StoreUnavailableError(
            "the state store cannot be reached just now; retry (a claim already decided gets its decision back and "
            "consumes nothing again)"))

    for unavailable in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(unavailable, _store_unavailable)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(422, "request.invalid", problems or "the request is not valid")

    async def size_limit_count_and_log(scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Every HTTP request: refused unread past the size limit, timed and counted, a defect
        answered in the service's shape, and the data routes written to the access log."""
        started = time.perf_counter()
        headers, path = Headers(scope=scope), scope["path"]
        route = path if path.startswith(("/v1/claims", "/v1/images", "/healthz", "/readyz", "/metrics")) \
            else _route_family(path)
        status = {"code": 500, "started": False}
        request = RequestContext(request_id=uuid.uuid4().hex)  # filled in by principal() and the stages

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.update(code=message["status"], started=True)
                message = {**message, "headers": [
                    *message.get("headers", ()), (b"x-request-id", request.request_id.encode("ascii")),
                    (b"server-timing", server_timing(request.stages_s, time.perf_counter() - started))]}
            await send(message)

        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.limits.max_request_bytes:
            request.key_id = presented_key_id(_token(headers.get("x-api-key"), headers.get("authorization")))
            refusal = _error(413, "request.too_large", f"the request is {int(declared):,} bytes; the limit is "
                                                       f"{config.limits.max_request_bytes:,}")
            await refusal(scope, receive, send_noting_status)
        else:
            # The request stage times the data routes only (probes and scrapes would dilute it).
            timed = metrics.stage("request") if path.startswith(_AUDITED_PREFIXES) else contextlib.nullcontext()
            with timed, answering(request):
                try:
                    await app(scope, receive, send_noting_status)
                except Exception as exc:  # a defect, never bad input: answered in the service's shape
                    failure = _internal_error(exc, request.request_id)
                    if not status["started"]:  # else the answer is under way: the client sees it cut
                        await failure(scope, receive, send_noting_status)
        metrics.requests.labels(route=route, status=str(status["code"])).inc()
        if path.startswith(_AUDITED_PREFIXES):
            matched = scope.get("route")  # set by the router on this same scope
            access_log.add(AccessRecord(
                at=now(), tenant=request.tenant, key_id=request.key_id, authenticated=request.authenticated,
                method=scope["method"], route=getattr(matched, "path", "(no such route)")[:128],
                subject=",".join(f"{k}={v}" for k, v in scope.get("path_params", {}).items())[:256],
                status=int(status["code"]), duration_ms=round((time.perf_counter() - started) * 1000, 3),
                request_id=request.request_id))

    # A plain ASGI middleware: Starlette's BaseHTTPMiddleware (@app.middleware) runs the app
    # in a task of its own and passes every chunk of a request's body through its own
    # streams: 8 ms for 3.5 MB sent in 64 KB chunks, in one process, against 0.5 ms without
    # it. (Behind Serve the body reached the app in one piece, and both measured the same:
    # README, "The service under load", session 23.)
    app.add_middleware(_HttpOnly, handle=size_limit_count_and_log)

    def principal(api_key: str | None, authorization: str | None, permission: Permission) -> Principal:
        token = _token(api_key, authorization)
        request = current_request()
        try:
            with store.reading() as session:  # no write lock: an adjudication in progress never holds up a key check
                who = authenticate(session, token, now())
        except AuthError:
            if request is not None:
                request.key_id = presented_key_id(token)
            raise
        if request is not None:
            request.key_id, request.tenant, request.authenticated = who.key_id, who.tenant, True
        who.require(permission)
        return who

    add_review_routes(app, store=store, config=config, now=now, principal=principal, limits=limits)

    def read_files(files: list[tuple[str, bytes, RadiographKind | None]], on_printed: PrintsCallback | None = None
                   ) -> list[ImageAnalysis]:
        """Every file of a request, sent together (one trip to the model replica)."""
        start = time.perf_counter()
        analyses = reader.analyze(files, limits, on_printed)
        # Decoding and the models run where the models are; what is left of the wall time
        # is getting the files there and the readings back.
        busy = 0.0
        for analysis in analyses:
            metrics.observe("decode", analysis.decode_s)
            metrics.observe("models", analysis.models_s)
            busy += analysis.decode_s + analysis.models_s
            for model, version in analysis.reading.model_versions:
                metrics.models.labels(model=model, version=version).set(1)
        if analyses:
            metrics.observe("model_transport", max(time.perf_counter() - start - busy, 0.0))
        return analyses

    def read_all(files: dict[str, bytes], kinds: dict[str, RadiographKind | None],
                 on_printed: PrintsCallback | None = None) -> tuple[dict[str, ImageReading], tuple[ImagePrint, ...]]:
        analyses = read_files([(rid, data, kinds.get(rid)) for rid, data in files.items()], on_printed)
        return {a.reading.image_id: a.reading for a in analyses}, tuple(a.printed for a in analyses)

    def read_and_decide(claim: Claim, files: dict[str, bytes], actor: str) -> ClaimDecision:
        """The claim's radiographs read and the claim decided (blocking: models, database). The
        recycled-radiograph search starts once the radiographs are fingerprinted and runs
        while the models read them (where they read in this process)."""
        search = SearchAhead(store, claim, side_work)
        readings, prints = read_all(files, {a.radiograph_id: a.kind for a in claim.attachments}, search.start)
        with metrics.stage("adjudication"):
            decided = adjudicate(claim, readings, store, live.current(), now=now(), actor=actor, webhooks=config.webhooks,
                                 prints=prints, files=files, review=config.review.priority, searched=search.result())
        for line in decided.lines:
            metrics.decisions.labels(action=line.action.value).inc()
        return decided

    async def in_turn(work: Callable[[], Any]) -> Any:
        """``work`` (blocking: the models, the store) in a worker thread, once this request
        has a turn at the models; refused with ``ModelsBusyError`` when the line is full."""
        if turns is None:
            return await run_in_threadpool(work)
        arrived = time.perf_counter()
        async with turns.turn():
            metrics.observe("queue", time.perf_counter() - arrived)
            return await run_in_threadpool(work)

    def b64(image_id: str, text: str) -> bytes:
        try:
            # pybase64 (SIMD): a periapical's 850 KB of base64 in 0.05 ms, the standard library's 2 ms.
            return pybase64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"image {image_id}: content is not valid base64 ({exc})") from exc

    def admit(tenant: str, n: int) -> None:
        """A request of ``n`` radiographs within the limits, and within its tenant's rate,
        before any model reads it."""
        if n > config.limits.max_images:
            raise RequestTooLargeError(f"{n} images; at most {config.limits.max_images} per request")
        budgets.charge(tenant, n)

    async def claim_and_files(request: Request) -> tuple[Claim, dict[str, bytes]]:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            part = form.get("claim")
            if part is None:
                raise RequestError("multipart request without a 'claim' part (the claim JSON)")
            text = part if isinstance(part, str) else (await part.read()).decode("utf-8", "replace")
            claim = _parse_claim_text(text)
            files = {}
            for attachment in claim.attachments:
                upload = form.get(attachment.radiograph_id)
                if upload is None or isinstance(upload, str):
                    raise RequestError(f"attachment {attachment.radiograph_id}: no file part of that name")
                files[attachment.radiograph_id] = await upload.read()
            return claim, files
        body = await request.body()
        claim = _parse_claim_text(body.decode("utf-8", "replace"))
        files = {}
        for attachment in claim.attachments:
            if not attachment.content:
                raise RequestError(f"attachment {attachment.radiograph_id}: no content (base64) given")
            files[attachment.radiograph_id] = b64(attachment.radiograph_id, attachment.content)
        return claim, files

    add_appeal_routes(app, store=store, config=config, tables=live, now=now, principal=principal, read_all=read_all,
                      decode_base64=b64, charge=budgets.charge, in_turn=in_turn)
    add_admin_routes(app, store=store, tables=live, now=now, principal=principal)

    @app.post("/v1/claims:validate", response_model=ClaimDecision, openapi_extra=CLAIM_BODY,
              responses=errors(400, 401, 403, 409, 413, 422, 429, 503))
    async def validate(request: Request, x_api_key: str | None = Header(None),
                       authorization: str | None = Header(None),
                       idempotency_key: str | None = Header(None, max_length=128)) -> Response:
        who = principal(x_api_key, authorization, Permission.VALIDATE)
        # The body's digest ties an idempotency key to one request; without a key it is not needed
        # (a megabyte of base64 takes a few milliseconds to hash).
        body_digest = hashlib.sha256(await request.body()).hexdigest() if idempotency_key else ""
        if idempotency_key:
            with store.reading() as session:
                earlier = repository.idempotent_audit_id(session, who.tenant, idempotency_key, body_digest)
                found = repository.decision_by_audit_id(session, who.tenant, earlier) if earlier is not None else None
            if found is not None:
                return _decision_response(ClaimDecision.model_validate_json(found).model_copy(update={"replayed": True}))
        claim, files = await claim_and_files(request)
        if claim.tenant != who.tenant:
            raise TenantMismatchError(f"the claim names tenant {claim.tenant!r}; this key belongs to another tenant")
        admit(who.tenant, len(files))

        def decide() -> ClaimDecision:  # blocking (models, database): off the event loop
            decided = read_and_decide(claim, files, who.key_id)
            if idempotency_key:
                with store.transaction() as session:
                    repository.remember_idempotency(session, who.tenant, idempotency_key, body_digest, decided.audit_id,
                                                    now())
            return decided

        return _decision_response(await in_turn(decide))

    @app.post("/fhir/Claim", openapi_extra=FHIR_CLAIM_BODY,
              responses={**FHIR_CLAIM_RESPONSE, **errors(400, 401, 403, 413, 422, 429, 503)})
    async def fhir_claim(request: Request, x_api_key: str | None = Header(None),
                         authorization: str | None = Header(None)) -> Response:
        from serving.fhir import FhirError, claim_from_fhir, claim_response

        who = principal(x_api_key, authorization, Permission.VALIDATE)
        try:
            resource = json.loads(await request.body())
        except json.JSONDecodeError as exc:
            raise FhirError(f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
        claim, fhir, files = claim_from_fhir(resource, who.tenant)  # the files as decoded from the resource
        admit(who.tenant, len(files))

        def decide() -> dict[str, Any]:
            return claim_response(read_and_decide(claim, files, who.key_id), fhir, now())

        body = await in_turn(decide)
        return Response(content=json.dumps(body), media_type="application/fhir+json")

    @app.post("/v1/images:analyze", responses=errors(400, 401, 403, 413, 422, 429, 503))
    async def analyze(body: AnalyzeRequest, x_api_key: str | None = Header(None),
                      authorization: str | None = Header(None)) -> dict[str, Any]:
        who = principal(x_api_key, authorization, Permission.VALIDATE)
        admit(who.tenant, len(body.images))
        files = [(i.image_id, b64(i.image_id, i.content_base64), i.kind) for i in body.images]
        analyses = await in_turn(lambda: read_files(files))
        return {"images": [a.reading.to_json() for a in analyses]}

    @app.get("/v1/decisions/{audit_id}", response_model=ClaimDecision, responses=errors(401, 403, 404, 422, 503))
    def decision(audit_id: RowId, x_api_key: str | None = Header(None),
                       authorization: str | None = Header(None)) -> Response:
        who = principal(x_api_key, authorization, Permission.READ_DECISIONS)
        with store.reading() as session:
            found = repository.claim_decision_by_audit_id(session, who.tenant, audit_id)
        if found is None:  # another tenant's decision is "not found" too
            raise NotFoundError(f"no decision {audit_id} for this tenant")
        return _decision_response(ClaimDecision.model_validate_json(found))

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(content=metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "not ready: the same body, with what is not"}})
    def readyz() -> JSONResponse:
        models, state = reader.ready(), store.reachable()
        return JSONResponse(status_code=200 if models and state else 503,
                            content={"ready": models and state, "models": models, "store": state})

    install_openapi(app)
    return app


_HTTP_CODES = {404: "not_found", 405: "request.method_not_allowed"}
# Requests written to the access log: the data routes (not the probes, /metrics or the
# workbench's static files, which carry no claim data).
_AUDITED_PREFIXES = ("/v1/", "/fhir/")


class _HttpOnly:
    """An ASGI middleware calling ``handle(scope, receive, send, app)`` for HTTP requests
    (lifespan and other scopes pass straight through)."""

    def __init__(self, app: ASGIApp, handle: Callable[..., Awaitable[None]]) -> None:
        self.app, self.handle = app, handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send, self.app)


def _internal_error(exc: Exception, incident: str) -> JSONResponse:
    """A 500 for an unexpected failure, with an incident id to quote (the request's id, so
    the access log finds it too). The log has the exception's type and where it was
    raised, not its message (which may carry claim data)."""
    log.error("incident %s: %s at\n%s", incident, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
    return _error(500, "internal", f"the service failed on this request (incident {incident}); retry with the same "
                                   "Idempotency-Key (a claim already decided is not decided twice) and quote the "
                                   "incident if it happens again")


def _token(api_key: str | None, authorization: str | None) -> str | None:
    return api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None)


def _decision_response(decision: ClaimDecision) -> Response:
    """The decision as FastAPI's ``response_model`` would write it (every field, nulls
    included), serialised once by pydantic instead of validated again and then encoded."""
    return Response(content=decision.model_dump_json(), media_type="application/json")


def _route_family(path: str) -> str:
    """A bounded metrics label for the other routes (never an id from the path)."""
    for prefix in ("/v1/reviews", "/v1/decisions", "/v1/appeals", "/v1/admin", "/review", "/fhir"):
        if path.startswith(prefix):
            return prefix
    return "other"


def _parse_claim_text(text: str) -> Claim:
    try:
        return claim_from_json(text)
    except InvalidClaimError as exc:  # a bad request body, not a bad file
        raise RequestError(exc.message) from exc


class ModelReader:
    """The ONNX models in this process (an ingress replica with the models placed in it, the
    default on CPUs; tests): the files are decoded and read here, as a model replica does."""

    def __init__(self, models: Any) -> None:  # a models.inference.DentalReader
        self.models = models

    def analyze(self, files: list[tuple[str, bytes, RadiographKind | None]], limits: ReaderLimits,
                on_printed: PrintsCallback | None = None) -> list[ImageAnalysis]:
        # A request's radiographs read together, as a model replica reads a batch.
        return [raise_if_refused(a) for a in analyze_files(self.models, [(image_id, data, kind, limits)
                                                                           for image_id, data, kind in files],
                                                           on_printed)]

    def ready(self) -> bool:
        return bool(self.models.ready())
