"""The ``xlxmert serve`` application: one FastAPI app with the HTTP API and the demo page.

    from xlxmert.server import create_app
    app = create_app("models/shapes-64")          # then: uvicorn, or httpx's ASGI transport

Endpoints (JSON unless said; errors are ``{"detail": "one line"}`` with a 4xx/503 status):

- ``POST /paint`` {caption, sampler, steps, temperature, guidance_scale, top_k, anneal, seed,
  format}: the painting as ``image/png``, or with ``format: "json"`` its base64 PNG and visual ids
  (a caption longer than the model reads is painted from its first words, with a ``warning``);
- ``GET /paint/stream?caption=...`` (same options): server-sent events, one ``step`` event per
  sampling step with that step's image, then one ``final`` event (paper Fig. 4 live);
- ``POST /caption`` (multipart: ``image``; ``prefix``, ``seed``): captions with scores;
- ``POST /answer`` (``image``, ``question``; ``top_k``): the top answers with probabilities;
- ``POST /verify`` (``left``, ``right``, ``statement``): NLVR2 true/false, when the model folder
  has an NLVR2 head (``heads/nlvr2/``);
- ``GET /health``, ``GET /model`` (model card summary, sampler settings, limits), ``GET /`` (page),
  ``GET /docs`` (the OpenAPI page, its assets from the ``swagger-ui-bundle-v2`` package: no CDN).

Model work runs in worker threads, at most ``max_concurrent`` requests at once
(:class:`~xlxmert.server.limits.WorkSlots`); no path from a request is ever opened.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import swagger_ui_bundle
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from xlxmert.errors import XLXMERTError
from xlxmert.server.limits import HTTPError, ServerConfig, WorkSlots, check_text, decode_image
from xlxmert.utils.hub import resolve_model_folder
from xlxmert.utils.model_folder import read_model_index

SamplerName = Literal["mask-predict", "tl-br", "random", "easy-first"]
LOG = logging.getLogger("xlxmert.server")
NO_NLVR2 = "this model has no NLVR2 head; fine-tune one with xlxmert finetune --task nlvr2"


class PaintRequest(BaseModel):
    """Options of ``POST /paint`` and ``GET /paint/stream``; None takes the model's sampler settings."""

    model_config = ConfigDict(extra="forbid")

    caption: str = Field(description="what to paint")
    sampler: SamplerName | None = Field(None, description="grid sampling order (default: the model's)")
    steps: int | None = Field(None, ge=1, description="sampling steps (at most the grid's cells)")
    temperature: float | None = Field(None, ge=0, le=100, description="0 = argmax; > 0 samples ids")
    guidance_scale: float | None = Field(None, ge=0, le=100, description="classifier-free guidance")
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely visual words")
    anneal: bool | None = Field(None, description="decay the temperature to 0 over the steps")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the draws and the generator noise")
    format: Literal["png", "json"] = Field("png", description="png: the image; json: base64 + ids")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class Models:
    """The pipelines of one model folder, loaded once when the app is made. A task the folder
    cannot do keeps the one-line reason (``errors``) that its endpoint answers with."""

    def __init__(self, model_dir: str | Path) -> None:
        from xlxmert.pipelines.caption import CaptionPipeline
        from xlxmert.pipelines.paint import PaintPipeline

        self.model_dir = resolve_model_folder(model_dir)  # a folder, or a Hub repository's snapshot
        self.paint = PaintPipeline.from_pretrained(self.model_dir)
        self.caption = CaptionPipeline.from_pretrained(self.model_dir)
        self.errors: dict[str, str] = {}
        self.answer = self._optional("answer", self._load_answer)
        self.verify = self._optional("verify", self._load_verify)

    def _optional(self, task: str, load):
        try:
            return load()
        except XLXMERTError as exc:
            self.errors[task] = str(exc)
            return None

    def _load_answer(self):
        from xlxmert.pipelines.answer import AnswerPipeline

        return AnswerPipeline.from_pretrained(self.model_dir)

    def _load_verify(self):
        if not (self.model_dir / "heads" / "nlvr2").is_dir():
            raise XLXMERTError(NO_NLVR2)
        try:
            from xlxmert.pipelines.verify import NLVR2Pipeline
        except ImportError:
            raise XLXMERTError(NO_NLVR2 + " (this xlxmert has no NLVR2 pipeline)") from None
        return NLVR2Pipeline.from_pretrained(self.model_dir)

    @property
    def num_cells(self) -> int:
        return self.paint.transformer.config.num_cells

    def summary(self) -> dict:
        """What ``GET /model`` reports: the model's shape, its sampler settings, its tasks, its card."""
        cfg = self.paint.transformer.config
        index = read_model_index(self.model_dir)
        sampler = self.paint.sampler
        return {
            "name": self.model_dir.name,
            "recipe": index.get("recipe", index.get("preset")),
            "variant": cfg.variant,
            "grid_size": cfg.grid_size,
            "num_visual_words": cfg.num_clusters,
            "image_size": self.paint.generator.config.output_size,
            "max_text_length": cfg.max_text_length,
            "parameters": sum(p.numel() for p in self.paint.transformer.parameters()),
            "sampler": asdict(sampler),
            "default_steps": sampler.build().num_steps(self.num_cells),
            "samplers": list(SamplerName.__args__),
            "max_steps": self.num_cells,
            "tasks": {
                "paint": True,
                "caption": True,
                "answer": self.answer is not None,
                "verify": self.verify is not None,
            },
            "unavailable": dict(self.errors),
            "card": _card_summary(self.model_dir),
        }


def _card_summary(model_dir: Path) -> str | None:
    """The model card's title and first paragraph (``README.md``, Hub metadata skipped), one string."""
    path = model_dir / "README.md"
    if not path.is_file():
        return None
    paragraphs = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    body = [p for p in paragraphs if not p.startswith(("#", "---"))]
    title = next((p.lstrip("# ").splitlines()[0] for p in paragraphs if p.startswith("#")), "")
    return " ".join([title, " ".join(body[0].split()) if body else ""]).strip()


def _page() -> str:
    return resources.files("xlxmert.server").joinpath("static/index.html").read_text(encoding="utf-8")


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "form")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid').lower()}")
    return "; ".join(parts)


def create_app(model_dir: str | Path | None = None, config: ServerConfig | None = None) -> FastAPI:
    """The app serving ``model_dir`` (default: the model ``xlxmert paint`` uses) under ``config``."""
    from xlxmert.pipelines import default_model_dir
    from xlxmert.server.limits import BodyLimit

    config = config or ServerConfig()
    models = Models(model_dir if model_dir is not None else default_model_dir())
    slots = WorkSlots(config)
    page = _page()
    app = FastAPI(
        title="xlxmert",
        summary="X-LXMERT: paint images from captions step by step, caption images, answer questions",
        version=_version(),
        docs_url=None,  # served below from the swagger-ui-bundle package, not from a CDN
        redoc_url=None,
    )
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    app.state.models, app.state.slots, app.state.config = models, slots, config
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(XLXMERTError)
    async def _library_error(request: Request, exc: XLXMERTError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # logged by the server with its traceback
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    def paint_options(req: PaintRequest) -> tuple[str, dict]:
        caption = check_text(req.caption, "caption", config.max_caption_chars)
        if req.steps is not None and req.steps > models.num_cells:
            raise HTTPError(
                422, f"steps must be at most {models.num_cells} (the grid's cells), got {req.steps}"
            )
        options = req.model_dump(exclude={"caption", "format"})
        return caption, options

    def truncation(caption: str) -> str | None:
        """The warning for a caption longer than the model reads (it paints the first words)."""
        limit = models.paint.transformer.config.max_text_length
        tokens = models.paint.tokenizer([caption], max_length=limit)
        if not tokens.truncated[0]:
            return None
        kept = models.paint.tokenizer.decode(tokens.input_ids[0])
        return f"the caption is longer than the model's {limit - 2} word pieces; painted from: {kept!r}"

    async def work(fn, *args, **kwargs):
        async with slots.slot():
            return await run_in_threadpool(fn, *args, **kwargs)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="xlxmert API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    @app.get("/health", summary="Liveness and the work queue")
    async def health() -> dict:
        return {
            "status": "ok",
            "busy": slots.busy,
            "waiting": slots.waiting,
            "max_concurrent": config.max_concurrent,
            "served": slots.served,
            "rejected": slots.rejected,
            "abandoned": slots.abandoned,
        }

    @app.get("/model", summary="Model card summary, sampler settings, tasks and limits")
    async def model() -> dict:
        return models.summary() | {"limits": asdict(config)}

    @app.post(
        "/paint",
        summary="Paint one image from a caption",
        responses={200: {"content": {"image/png": {}}, "description": "the PNG (or JSON: format=json)"}},
    )
    async def paint(req: PaintRequest) -> Response:
        caption, options = paint_options(req)
        start = time.perf_counter()
        out = await work(models.paint, [caption], **options)
        warning = truncation(caption)
        if req.format == "png":
            headers = {"X-XLXMERT-Warning": warning.encode("ascii", "replace").decode()} if warning else None
            return Response(png_bytes(out.images[0]), media_type="image/png", headers=headers)
        return JSONResponse(
            {
                "caption": caption,
                "image": base64.b64encode(png_bytes(out.images[0])).decode("ascii"),
                "visual_ids": None if out.ids is None else out.ids[0].tolist(),
                "grid_size": models.paint.transformer.config.grid_size,
                "seconds": round(time.perf_counter() - start, 4),
                "warning": warning,
            }
        )

    @app.get(
        "/paint/stream",
        summary="Paint step by step: server-sent events",
        response_description="text/event-stream: one `step` event per sampling step "
        '({"step", "steps", "image": data URL}), then one `final` event ({"image", "seconds", '
        '"warning"}); a failure after the first step is one `error` event ({"detail"})',
    )
    async def paint_stream(req: Annotated[PaintRequest, Query()]) -> StreamingResponse:
        caption, options = paint_options(req)
        start = time.perf_counter()
        stack = AsyncExitStack()
        await stack.enter_async_context(slots.slot())
        try:
            sampler, guidance = models.paint.resolve_sampler(
                options.pop("sampler"),
                options.pop("steps"),
                options.pop("temperature"),
                options.pop("anneal"),
                options.pop("top_k"),
                options.pop("guidance_scale"),
            )
            total = sampler.num_steps(models.num_cells)
            frames = models.paint.paint_steps(caption, sampler, guidance_scale=guidance, **options)
            stack.callback(frames.close)
            first = await run_in_threadpool(next, frames)
        except BaseException:
            await stack.aclose()
            raise

        async def events():
            try:
                image, step = first, 1
                while True:
                    yield _sse("step", {"step": step, "steps": total, "image": data_url(image)})
                    image_next = await run_in_threadpool(next, frames, None)
                    if image_next is None:
                        break
                    image, step = image_next, step + 1
                seconds = round(time.perf_counter() - start, 4)
                final = {"step": step, "steps": total, "image": data_url(image), "seconds": seconds}
                yield _sse("final", final | {"warning": truncation(caption)})
            except (GeneratorExit, asyncio.CancelledError):
                slots.abandoned += 1  # the client left mid-stream
                raise
            except Exception as exc:  # noqa: BLE001 - the status is sent: the error goes in the stream
                kind = f"internal error: {type(exc).__name__}"
                if not isinstance(exc, XLXMERTError):
                    LOG.exception("painting stream failed")
                detail = (str(exc) or kind) if isinstance(exc, XLXMERTError) else kind
                yield _sse("error", {"detail": detail.splitlines()[0]})
            finally:
                await stack.aclose()

        return _SlotStream(events(), stack)

    @app.post("/caption", summary="Caption an uploaded image (captions with scores)")
    async def caption(
        image: Annotated[UploadFile, File(description="PNG or JPEG")],
        prefix: Annotated[str, Form(description="words the caption must start with")] = "",
        num_captions: Annotated[int, Form(ge=1, le=10, description="captions to write, best first")] = 1,
        seed: Annotated[int, Form(ge=0, le=2**63 - 1)] = 0,
    ) -> dict:
        img = await _read_image(image, "image", config)
        if len(prefix) > config.max_caption_chars:
            check_text(prefix, "prefix", config.max_caption_chars)
        kwargs = {"seed": seed} | ({"prefix": prefix.strip()} if prefix.strip() else {})
        if "num_captions" in inspect.signature(models.caption.__call__).parameters:
            kwargs["num_captions"] = num_captions  # a pipeline that writes several per image
        out = await work(models.caption, [img], **kwargs)
        scores = getattr(out, "scores", None)  # None from a pipeline that does not score captions
        scores = [None] * len(out.captions) if scores is None else [round(float(x), 4) for x in scores]
        return {"captions": [{"caption": c, "score": x} for c, x in zip(out.captions, scores)]}

    @app.post("/answer", summary="Answer a question about an uploaded image")
    async def answer(
        image: Annotated[UploadFile, File(description="PNG or JPEG")],
        question: Annotated[str, Form(description="the question")],
        top_k: Annotated[int, Form(ge=1, le=100)] = 5,
    ) -> dict:
        if models.answer is None:
            raise HTTPError(404, models.errors["answer"])
        question = check_text(question, "question", config.max_caption_chars)
        img = await _read_image(image, "image", config)
        out = await work(models.answer, [img], [question], top_k=top_k)
        return {
            "question": question,
            "answers": [{"answer": a, "probability": round(p, 6)} for a, p in out.top[0]],
        }

    @app.post("/verify", summary="Is the statement true of the image pair? (NLVR2 head)")
    async def verify(
        left: Annotated[UploadFile, File(description="the left image")],
        right: Annotated[UploadFile, File(description="the right image")],
        statement: Annotated[str, Form(description="a statement about the pair")],
    ) -> dict:
        if models.verify is None:
            raise HTTPError(404, models.errors["verify"])
        statement = check_text(statement, "statement", config.max_caption_chars)
        left_img = await _read_image(left, "left", config)
        right_img = await _read_image(right, "right", config)
        out = await work(models.verify, [left_img], [right_img], [statement])
        return {
            "statement": statement,
            "label": bool(out.labels[0]),
            "probability": float(out.probabilities[0]),
        }

    return app


class _SlotStream(StreamingResponse):
    """A server-sent-event stream that frees its work slot however it ends: finished, failed, or the
    client gone before (or while) the body is sent."""

    def __init__(self, content, stack: AsyncExitStack) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._stack = stack

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stack.aclose()


async def _read_image(upload: UploadFile, field: str, config: ServerConfig) -> Image.Image:
    data = await upload.read(config.max_upload_bytes + 1)
    return decode_image(data, field, config)


def _version() -> str:
    from xlxmert import __version__

    return __version__
