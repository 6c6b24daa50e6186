"""What keeps the server bounded: its settings, the work slots, the request-body cap and the image
decoder with its decompression-bomb guard.

Every limit answers with an HTTP status and a one-line reason (:class:`HTTPError`): 413 for too
much (a body, an upload, a caption, an image's pixels), 422 for what cannot be read, 503 with
``Retry-After`` when every work slot is taken and the wait is over.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from xlxmert.errors import XLXMERTError

# Decoders an upload may reach (none that runs a helper program, as EPS runs Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one ``xlxmert serve`` process.

    ``max_concurrent``: requests whose model work runs at once; ``max_waiting``: requests that may
    wait for a slot (more get 503 at once); ``wait_timeout_s``: how long one waits before its 503.
    ``max_caption_chars``: longest caption or question (413 above it); ``max_upload_bytes``: largest
    image upload (413); ``max_image_pixels``: largest decoded image, width × height (413, read from
    the header before any pixel is decoded; keep it under PIL's own bomb limit, 89 M pixels).
    """

    max_concurrent: int = 1
    max_waiting: int = 32
    wait_timeout_s: float = 30.0
    max_caption_chars: int = 1000
    max_upload_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise XLXMERTError(f"max_concurrent must be >= 1, got {self.max_concurrent}")
        if self.max_waiting < 0 or self.wait_timeout_s < 0:
            raise XLXMERTError("max_waiting and wait_timeout_s must be >= 0")
        if min(self.max_caption_chars, self.max_upload_bytes, self.max_image_pixels) < 1:
            raise XLXMERTError("max_caption_chars, max_upload_bytes and max_image_pixels must be >= 1")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: two uploads (``/verify``) and their form fields."""
        return 2 * self.max_upload_bytes + 64 * 1024


class HTTPError(Exception):
    """An answer with ``status`` and a one-line ``detail`` (and extra ``headers``)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class WorkSlots:
    """At most ``max_concurrent`` holders at once; up to ``max_waiting`` more wait in arrival order
    for ``wait_timeout_s``; anyone else gets 503 with ``Retry-After`` (seconds: the mean time a
    holder kept its slot, times the queue ahead, at least 1).

    ``busy`` and ``waiting`` count holders and waiters, ``served`` slots given back, ``rejected``
    503s, ``abandoned`` streams whose client left before the end (``GET /health`` reports them). The
    semaphore belongs to the event loop that serves the app; a new loop (a test's) gets a new one.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.busy = 0
        self.waiting = 0
        self.served = 0
        self.rejected = 0
        self.abandoned = 0
        self._mean_s = 1.0
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.config.max_concurrent), loop
        return self._sem

    def retry_after(self) -> int:
        ahead = self.busy + self.waiting + 1
        return max(1, math.ceil(self._mean_s * ahead / self.config.max_concurrent))

    def _busy_error(self, why: str) -> HTTPError:
        self.rejected += 1
        seconds = self.retry_after()
        return HTTPError(503, f"{why}; retry in {seconds} s", {"Retry-After": str(seconds)})

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one work slot for the ``async with`` body (released on error and cancellation)."""
        sem = self._semaphore()
        cfg = self.config
        if sem.locked() and self.waiting >= cfg.max_waiting:
            raise self._busy_error(
                f"the server is busy ({self.busy} at work, {self.waiting} waiting, the most it queues)"
            )
        self.waiting += 1
        try:
            async with asyncio.timeout(cfg.wait_timeout_s):
                await sem.acquire()
        except TimeoutError:
            raise self._busy_error(
                f"the server is busy (waited {cfg.wait_timeout_s:g} s for a slot)"
            ) from None
        finally:
            self.waiting -= 1
        self.busy += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self.busy -= 1
            self.served += 1
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - start)
            sem.release()


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 (by its Content-Length before it
    is read, else once the bytes read pass the limit), so an upload never fills memory or disk."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1").strip()
        if length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(send, int(length))
            return
        seen = 0
        started = refused = False

        async def limited_receive():
            # Past the limit: answer 413 now and tell the app the client left (whatever the app
            # then sends is dropped).
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not started:
                    refused = True
                    await self._too_large(send, seen)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, tracking_send)

    async def _too_large(self, send, size: int) -> None:
        body = (
            f'{{"detail": "the request body is {size} bytes or more; this server takes at most '
            f'{self.max_bytes} bytes"}}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def check_text(text: str, what: str, max_chars: int) -> str:
    """``text`` stripped; 422 when empty, 413 when longer than ``max_chars`` characters."""
    if not text or not text.strip():
        raise HTTPError(422, f"the {what} is empty; give some words")
    if len(text) > max_chars:
        raise HTTPError(413, f"the {what} has {len(text)} characters; this server takes at most {max_chars}")
    return text.strip()


def decode_image(data: bytes, field: str, config: ServerConfig) -> Image.Image:
    """An RGB image from uploaded bytes, never from a path.

    413 when the upload is larger than ``max_upload_bytes`` or its header declares more than
    ``max_image_pixels`` pixels (checked before the pixels are decoded: a small PNG that declares
    20000×20000 is refused without allocating them); 422 when the bytes are not an image in one of
    :data:`IMAGE_FORMATS`.
    """
    if not data:
        raise HTTPError(422, f"the upload {field!r} is empty; send an image file (PNG or JPEG)")
    if len(data) > config.max_upload_bytes:
        raise HTTPError(
            413,
            f"the upload {field!r} is larger than {config.max_upload_bytes} bytes, the most this server "
            "takes; send a smaller image",
        )
    unreadable = (
        f"the upload {field!r} is not an image this server reads ({', '.join(IMAGE_FORMATS)}); "
        "send a PNG or JPEG file"
    )
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            if width * height > config.max_image_pixels:
                raise _too_many_pixels(field, width * height, config)
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as exc:  # PIL's own guard, past 2 × its MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_many_pixels(field, int(found.group(1)) if found else None, config) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise HTTPError(422, unreadable) from None


def _too_many_pixels(field: str, pixels: int | None, config: ServerConfig) -> HTTPError:
    return HTTPError(
        413,
        f"the upload {field!r} has {pixels or 'too many'} pixels; this server decodes at most "
        f"{config.max_image_pixels} (a decompression-bomb guard); send a smaller image",
    )
