"""Nukki's HTTP API: the cutout engine behind FastAPI, served by uvicorn (``python -m api``).

Routes (OpenAPI docs at ``/docs``, the schema at ``/openapi.json``):

* ``GET /healthz``: ``{"status": "ok", "backend": ...}``.
* ``POST /v1/detect``: multipart ``image`` -> every character, numbered as the studio numbers them.
* ``POST /v1/cutout``: multipart ``image`` plus optional fields -> the file (PNG, JPEG, WebP, mask, ZIP).

Every error is JSON ``{"error": "..."}``: 413 for an upload over the byte or pixel limit,
422 for a picture that cannot be decoded, a setting that is not valid or a model the
request names that is not installed (the message says how to get it), 503 with
``Retry-After`` when ``max_jobs`` requests are already being worked on. A bug in the
server gives 500 with a one-line message; the traceback goes to the server log only.

Detection, matting and encoding block for tens to hundreds of milliseconds, so the
route functions are plain ``def``: FastAPI runs them in its worker threads, and the
event loop stays free to accept, refuse and stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Literal, TypeVar

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import Scope

from api import forms
from api.config import ApiConfig
from api.gate import JobGate, JobSlots
from api.jobs import CutoutService, NothingToCut
from inference.errors import ModelUnavailable
from inference.image_io import ImageLoadError, PictureTooLarge
from inference.matte import MatteSettings
from inference.model_cache import PROMPTERS
from inference.segmenter import BACKENDS, REFINERS

log = logging.getLogger("nukki.api")
T = TypeVar("T")

#: Routes behind the job gate (bounded concurrency and upload size).
JOB_PREFIX = "/v1/"
_DEFAULTS = MatteSettings()
_ERROR = {"content": {"application/json": {"example": {"error": "what went wrong, for a person"}}}}
#: Model choices shared by both job routes (an explicitly named model that is not installed gets 422).
BackendField = Annotated[
    Literal[BACKENDS], Form(description="detector: `auto` = the anime model when installed, else classic")
]
RefineField = Annotated[Literal[REFINERS], Form(description="mask refiner (needs its weights)")]
TtaField = Annotated[bool, Form(description="flip test-time augmentation of the detector")]

DESCRIPTION = """
Cut anime and cartoon characters out of pictures over HTTP: the engine of the Nukki
studio and command line, with the same rules (studio numbering left to right, the
click rule, matte settings by the command line's names).

```bash
curl -F image=@picture.png http://127.0.0.1:8000/v1/detect
curl -F image=@picture.png -F select=largest -F trim=true -o cutout.png http://127.0.0.1:8000/v1/cutout
```

Errors are JSON `{"error": "..."}`: 413 (upload or picture too large), 422 (not a
picture, or a bad setting), 503 with `Retry-After` (busy; try again).
"""


def create_app(config: ApiConfig | None = None, *, service: CutoutService | None = None) -> FastAPI:
    """The API as an ASGI application.

    Args:
        config: limits and concurrency; from the environment when ``None``.
        service: the engine behind the routes; one with ``config``'s pixel limit when ``None``.
    """
    config = config if config is not None else ApiConfig.from_env()
    service = service if service is not None else CutoutService(max_pixels=config.max_pixels)
    slots = JobSlots(config.max_jobs)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            backend = await run_in_threadpool(service.warm_up)
            log.info("models loaded: %s", backend)
        except ModelUnavailable as exc:
            log.warning("models not loaded at start: %s", exc)
        yield

    app = FastAPI(title="Nukki API", version="1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.config = config
    app.state.service = service
    app.state.slots = slots

    def is_job(scope: Scope) -> bool:
        return scope.get("method") == "POST" and scope.get("path", "").startswith(JOB_PREFIX)

    app.add_middleware(JobGate, slots=slots, max_upload_bytes=config.max_upload_bytes, accepts=is_job)
    _install_error_handlers(app)

    @app.get("/healthz", summary="Is the server up, and which backend does it use?")
    def healthz() -> dict[str, object]:
        return {
            "status": "ok",
            **service.health(),
            "jobs_active": slots.active,
            "jobs_refused": slots.refused,
            "max_jobs": config.max_jobs,
            "max_upload_bytes": config.max_upload_bytes,
            "max_pixels": config.max_pixels,
        }

    @app.post(
        "/v1/detect",
        summary="Find every character",
        description=(
            "Every character in the picture, numbered 1, 2, ... from left to right as the studio "
            "numbers them; `box` is `[x0, y0, x1, y1]` in pixels (exclusive ends), `area` the "
            "pixels the character covers. Detection is cached by the picture's digest, so a "
            "following `/v1/cutout` of the same picture does not detect again."
        ),
        responses={413: _ERROR, 422: _ERROR, 503: _ERROR},
    )
    def detect(
        image: Annotated[UploadFile, File(description="the picture: PNG, JPEG, WebP, BMP, TIFF or GIF")],
        backend: BackendField = "auto",
        refine: RefineField = "none",
        tta: TtaField = False,
    ) -> dict[str, object]:
        data = image.file.read()
        models = forms.ModelChoice(backend=backend, refine=refine, tta=tta)
        return _as_http_errors(lambda: service.detect(data, image.filename or "picture", models))

    @app.post(
        "/v1/cutout",
        summary="Cut characters out",
        description=(
            "The chosen characters as a file: `png` (an RGBA cutout, or a composite when a "
            "`background` is given), `jpeg` / `webp` (composites, over white unless a background "
            "is given), `mask` (greyscale PNG, white = character) or `zip` (one trimmed RGBA layer "
            "per character, the full cutout, the mask, a background plate and `manifest.json`). "
            "Headers `X-Nukki-Selected` (chosen numbers) and `X-Nukki-Notes` (JSON list) say what happened."
        ),
        response_class=Response,
        responses={
            200: {
                "description": "the file",
                "content": {t: {} for t in ("image/png", "image/jpeg", "image/webp", "application/zip")},
            },
            413: _ERROR,
            422: _ERROR,
            503: _ERROR,
        },
    )
    def cutout(
        image: Annotated[UploadFile, File(description="the picture: PNG, JPEG, WebP, BMP, TIFF or GIF")],
        select: Annotated[
            str | None, Form(description="`all` (default), `largest`, or character numbers like `1,3`")
        ] = None,
        points: Annotated[
            str | None,
            Form(
                description=(
                    "JSON `[[x, y, true|false], ...]` in image pixels: `true` includes the character "
                    "under the point, `false` excludes it. Without `select`, the first include point on a "
                    "character starts from nobody; after `select`, points add to or drop from its choice. "
                    "An include point on no character asks the point prompter (SAM 2 when installed, else "
                    "the classic segmenter) to cut out what lies there; `X-Nukki-Notes` says when it finds nothing."
                )
            ),
        ] = None,
        threshold: Annotated[float, Form(description="soft mask value that counts as character, in (0, 1)")] = (
            _DEFAULTS.threshold
        ),
        min_island: Annotated[int, Form(description="remove specks smaller than this (px)")] = (
            _DEFAULTS.min_island_area
        ),
        max_hole: Annotated[int, Form(description="fill holes smaller than this (px)")] = _DEFAULTS.max_hole_area,
        guided_radius: Annotated[int, Form(description="guided filter radius (px); 0 disables it")] = (
            _DEFAULTS.guided_radius
        ),
        guided_eps: Annotated[float, Form(description="guided filter eps; smaller follows colour edges closer")] = (
            _DEFAULTS.guided_eps
        ),
        feather: Annotated[float, Form(description="edge feathering (px)")] = _DEFAULTS.feather,
        decontaminate: Annotated[bool, Form(description="re-estimate edge colours (no halo)")] = (
            _DEFAULTS.decontaminate
        ),
        strands: Annotated[bool, Form(description="keep thin structures (hair strands) below the threshold")] = (
            _DEFAULTS.strands
        ),
        background: Annotated[
            str | None,
            Form(description="`transparent` (png default), `blur`, or a colour: `white`, `black`, `#rrggbb`"),
        ] = None,
        background_image: Annotated[
            UploadFile | None,
            File(
                description="a picture to put behind the cutout; `background` may then only be a colour "
                "(the padding of `fit=contain`)"
            ),
        ] = None,
        fit: Annotated[
            Literal["cover", "contain"],
            Form(description="how `background_image` is fitted: fill and crop (`cover`) or fit inside and pad"),
        ] = "cover",
        trim: Annotated[bool, Form(description="crop to the chosen characters")] = False,
        format: Annotated[
            Literal[forms.OUTPUT_FORMATS], Form(description="what to send back")
        ] = "png",
        backend: BackendField = "auto",
        refine: RefineField = "none",
        tta: TtaField = False,
        prompt_model: Annotated[
            Literal[PROMPTERS],
            Form(description="point prompter for points on no character: `auto` = SAM 2 when installed, else classic"),
        ] = "auto",
    ) -> Response:
        data = image.file.read()
        name = image.filename or "picture"
        backdrop = background_image.file.read() if background_image is not None else None

        def work():
            try:  # full quality, as the command line renders
                matte = MatteSettings(
                    threshold=threshold,
                    min_island_area=min_island,
                    max_hole_area=max_hole,
                    guided_radius=guided_radius,
                    guided_eps=guided_eps,
                    feather=feather,
                    decontaminate=decontaminate,
                    strands=strands,
                )
            except ValueError as exc:
                raise forms.matte_error(exc) from None
            options = forms.CutoutOptions(
                select=forms.parse_select(select),
                points=forms.parse_points(points, max_points=config.max_points),
                matte=matte,
                background=forms.parse_background(
                    background,
                    format,
                    picture=(
                        service.open_background(backdrop, "background_image")
                        if backdrop is not None and format not in ("mask", "zip")
                        else None
                    ),
                    fit=fit,
                ),
                trim=trim,
                format=format,
                models=forms.ModelChoice(backend=backend, refine=refine, tta=tta, prompt_model=prompt_model),
            )
            return service.cutout(data, name, options)

        result = _as_http_errors(work)
        return Response(result.data, media_type=result.media_type, headers=result.headers)

    return app


def _as_http_errors(work: Callable[[], T]) -> T:
    """Run a job; input problems and models that are not installed become 4xx, a bug 500 (all JSON)."""
    try:
        return work()
    except PictureTooLarge as exc:
        raise HTTPException(413, detail=str(exc)) from None
    except (ImageLoadError, NothingToCut) as exc:
        raise HTTPException(422, detail=str(exc)) from None
    except ModelUnavailable as exc:  # a model the request named is not installed: say how to get it
        raise HTTPException(422, detail=str(exc)) from None
    except ValueError as exc:
        # The engine's convention: ValueError means the input (a setting, a number) is wrong.
        raise HTTPException(422, detail=str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a bug: answered here, so the connection stays usable
        log.exception("unexpected error in a job")
        raise HTTPException(500, detail=_internal_error(exc)) from None


def _internal_error(exc: Exception) -> str:
    return f"Internal error ({type(exc).__name__}); the server log has the details."


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}. See /docs for the API."
        elif exc.status_code == 405:
            message = f"{request.url.path} does not take {request.method}. See /docs for the API."
        elif exc.status_code == 400:
            # Starlette's and FastAPI's words for a body that is not multipart/form-data.
            message = (
                f"The request body is not valid multipart/form-data ({message.rstrip('.')}). Send the picture "
                "as the form field 'image', e.g. curl -F image=@picture.png ..."
            )
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": describe_validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse({"error": _internal_error(exc)}, status_code=500)


def describe_validation_errors(errors: object) -> str:
    """FastAPI's validation errors as one sentence per field, naming the form field."""
    sentences = []
    for error in errors if isinstance(errors, (list, tuple)) else ():
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "request"
        if error.get("type") == "missing":
            hint = ""
            if field == "image":
                hint = " (send the picture as multipart/form-data, e.g. curl -F image=@picture.png)"
            sentences.append(f"form field '{field}' is missing{hint}")
            continue
        got = error.get("input")
        shown = repr(got) if isinstance(got, (str, int, float, bool)) else type(got).__name__
        if len(shown) > 80:
            shown = shown[:77] + "..."
        sentences.append(f"form field '{field}': {error.get('msg', 'invalid')}, got {shown}")
    return "; ".join(sentences) or "the request is not valid"
