"""``xlxmert serve``: every endpoint through httpx's ASGI transport, the limits, the work queue, and
a client leaving mid-stream on a real uvicorn server (127.0.0.1 only)."""

import asyncio
import base64
import inspect
import io
import json
import shutil
import struct
import time
import zlib

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'xlxmert[serve]')")
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed (pip install 'xlxmert[serve]')")

from conftest import ANSWERS, GRID, build_tiny_model  # noqa: E402
from xlxmert.cli import main  # noqa: E402
from xlxmert.pipelines import AnswerPipeline, CaptionPipeline, PaintPipeline, default_model_dir  # noqa: E402
from xlxmert.server import ServerConfig, create_app  # noqa: E402
from xlxmert.server.app import NO_NLVR2  # noqa: E402
from xlxmert.server.background import BackgroundServer  # noqa: E402

CAPTION = "a red circle to the left of a blue square"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def app(model_dir):
    return create_app(model_dir)


def call(app, method, url, **kwargs):
    """One request through httpx's ASGI transport (a fresh event loop, like a fresh client)."""

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def scene_png() -> bytes:
    img = Image.new("RGB", (32, 32), (20, 20, 60))
    img.paste((220, 30, 30), (4, 8, 14, 18))
    return png(img)


def header_only_png(width: int, height: int) -> bytes:
    """A valid PNG of a few hundred bytes that declares ``width``×``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def tiff_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="TIFF")
    return buf.getvalue()


def events(body: str) -> list[tuple[str, dict]]:
    """Server-sent events as (event, data) pairs."""
    out = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def from_data_url(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_health_model_page_and_openapi(app):
    health = call(app, "GET", "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["busy"] == 0 and health.json()["max_concurrent"] == 1
    info = call(app, "GET", "/model").json()
    assert info["grid_size"] == GRID and info["max_steps"] == GRID * GRID
    assert info["recipe"] == "tiny-test" and info["image_size"] == 16
    assert info["tasks"] == {"paint": True, "caption": True, "answer": True, "verify": False}
    assert info["unavailable"]["verify"] == NO_NLVR2
    assert info["sampler"]["name"] == "mask-predict" and info["default_steps"] == 4
    assert info["limits"]["max_caption_chars"] == ServerConfig().max_caption_chars
    page = call(app, "GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/paint/stream" in page.text and 'id="picture"' in page.text
    assert "://" not in page.text.replace("http://127.0.0.1", "")  # no CDN, nothing fetched from elsewhere
    docs = call(app, "GET", "/docs")  # the OpenAPI page, its assets served here (works offline)
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "://" not in docs.text
    script = call(app, "GET", "/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    paths = call(app, "GET", "/openapi.json").json()["paths"]
    for path in ("/paint", "/paint/stream", "/caption", "/answer", "/verify", "/health", "/model"):
        assert path in paths


def test_paint_png_and_json_are_the_pipelines_painting(app, model_dir):
    options = dict(sampler="mask-predict", steps=4, seed=3, temperature=1.0, guidance_scale=2.0)
    expected = PaintPipeline.from_pretrained(model_dir)(CAPTION, **options)
    res = call(app, "POST", "/paint", json={"caption": CAPTION, **options})
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(res.content)).convert("RGB").tobytes() == expected.images[0].tobytes()
    res = call(app, "POST", "/paint", json={"caption": CAPTION, "format": "json", **options})
    body = res.json()
    assert body["visual_ids"] == expected.ids[0].tolist() and len(body["visual_ids"]) == GRID * GRID
    image = Image.open(io.BytesIO(base64.b64decode(body["image"]))).convert("RGB")
    assert image.tobytes() == expected.images[0].tobytes()
    other = call(app, "POST", "/paint", json={"caption": CAPTION, "format": "json", **options, "seed": 4})
    assert other.json()["visual_ids"] != body["visual_ids"]  # the seed reaches the sampler
    assert body["warning"] is None and "x-xlxmert-warning" not in res.headers


def test_a_caption_longer_than_the_model_reads_is_painted_with_a_warning(app):
    long = "a red circle to the left of a blue square and two green stars at night in the snow " * 3
    res = call(app, "POST", "/paint", json={"caption": long, "steps": 2})
    assert res.status_code == 200
    assert res.headers["x-xlxmert-warning"].startswith(
        "the caption is longer than the model's 18 word pieces"
    )
    assert call(app, "POST", "/paint", json={"caption": long, "format": "json"}).json()["warning"]
    final = events(call(app, "GET", "/paint/stream", params={"caption": long, "steps": 2}).text)[-1][1]
    assert "painted from: 'a red circle" in final["warning"]


@pytest.mark.parametrize("sampler,steps", [("mask-predict", 4), ("random", 5), ("tl-br", None)])
def test_stream_sends_one_event_per_step_then_the_final_image(app, model_dir, sampler, steps):
    params = {"caption": CAPTION, "sampler": sampler, "seed": 1, "temperature": 1.0}
    if steps:
        params["steps"] = steps
    res = call(app, "GET", "/paint/stream", params=params)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
    got = events(res.text)
    expected_steps = steps or GRID * GRID
    assert [e for e, _ in got] == ["step"] * expected_steps + ["final"]
    assert [d["step"] for _, d in got[:-1]] == list(range(1, expected_steps + 1))
    assert {d["steps"] for _, d in got} == {expected_steps}
    painting = PaintPipeline.from_pretrained(model_dir)(
        CAPTION, sampler=sampler, steps=steps, seed=1, temperature=1.0, return_intermediates=True
    )
    frames = [from_data_url(d["image"]).tobytes() for _, d in got[:-1]]
    assert frames == [f.tobytes() for f in painting.intermediates[0]]
    assert from_data_url(got[-1][1]["image"]).tobytes() == painting.images[0].tobytes()


def test_a_failure_mid_stream_is_an_error_event_and_frees_the_slot(model_dir, monkeypatch):
    app = create_app(model_dir)
    painter = app.state.models.paint
    decode = painter.decode
    calls = []

    def failing_decode(values, seed=0, noise=None):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory\nsecond line")
        return decode(values, seed, noise)

    monkeypatch.setattr(painter, "decode", failing_decode)
    got = events(call(app, "GET", "/paint/stream", params={"caption": CAPTION, "steps": 4}).text)
    assert [e for e, _ in got] == ["step", "step", "error"]
    assert got[-1][1] == {"detail": "internal error: RuntimeError"}
    assert app.state.slots.busy == 0


def test_an_internal_error_is_a_one_line_500(model_dir, monkeypatch):
    app = create_app(model_dir)
    monkeypatch.setattr(app.state.models.paint, "decode", lambda *a, **k: 1 / 0)

    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post("/paint", json={"caption": CAPTION})

    res = asyncio.run(go())
    assert res.status_code == 500 and res.json() == {"detail": "internal error: ZeroDivisionError"}
    assert app.state.slots.busy == 0


def test_paint_steps_decodes_one_step_at_a_time(model_dir, monkeypatch):
    painter = PaintPipeline.from_pretrained(model_dir)
    options = dict(sampler="random", steps=6, seed=5, temperature=1.0)
    strip = painter(CAPTION, return_intermediates=True, **options).intermediates[0]
    decode, calls = painter.decode, []
    monkeypatch.setattr(painter, "decode", lambda *a, **k: calls.append(1) or decode(*a, **k))
    frames = painter.paint_steps(CAPTION, **options)
    first = next(frames)
    assert len(calls) == 1 and first.tobytes() == strip[0].tobytes()  # only the first step painted
    rest = list(frames)
    assert len(calls) == 6 and [f.tobytes() for f in rest] == [f.tobytes() for f in strip[1:]]


def test_stream_with_the_shipped_models_own_sampler_settings():
    try:
        shipped = default_model_dir()
    except Exception:  # noqa: BLE001
        pytest.skip("no shipped model")
    app = create_app(shipped)
    steps = app.state.models.summary()["default_steps"]
    got = events(call(app, "GET", "/paint/stream", params={"caption": CAPTION}).text)
    assert len([e for e, _ in got if e == "step"]) == steps and got[-1][0] == "final"
    assert from_data_url(got[-1][1]["image"]).size == (64, 64)


def test_caption_answer_and_verify_without_a_head(app, model_dir):
    image = scene_png()
    data = {"seed": "2", "num_captions": "2"}
    res = call(app, "POST", "/caption", files={"image": ("scene.png", image, "image/png")}, data=data)
    assert res.status_code == 200
    captioner = CaptionPipeline.from_pretrained(model_dir)
    several = "num_captions" in inspect.signature(captioner.__call__).parameters
    kwargs = {"num_captions": 2} if several else {}
    expected = captioner([Image.open(io.BytesIO(image))], seed=2, **kwargs)
    captions = res.json()["captions"]
    assert [c["caption"] for c in captions] == expected.captions and len(captions) == (2 if several else 1)
    scores = getattr(expected, "scores", None)
    if scores is None:
        assert all(c["score"] is None for c in captions)
    else:
        assert [c["score"] for c in captions] == pytest.approx(list(scores), abs=1e-4)

    question = "what color is the circle"
    res = call(
        app, "POST", "/answer", files={"image": ("s.png", image, "image/png")}, data={"question": question}
    )
    assert res.status_code == 200
    answers = res.json()["answers"]
    probs = [a["probability"] for a in answers]
    assert len(answers) == len(ANSWERS) and probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    top = AnswerPipeline.from_pretrained(model_dir)([Image.open(io.BytesIO(image))], [question]).top[0]
    assert [a["answer"] for a in answers] == [a for a, _ in top]

    files = {"left": ("l.png", image, "image/png"), "right": ("r.png", image, "image/png")}
    res = call(app, "POST", "/verify", files=files, data={"statement": "there is a circle"})
    assert res.status_code == 404 and res.json()["detail"] == NO_NLVR2


def test_verify_with_an_nlvr2_head(model_dir, tmp_path):
    pytest.importorskip("xlxmert.pipelines.verify", reason="no NLVR2 pipeline in this xlxmert")
    heads = pytest.importorskip("xlxmert.models.heads")
    from xlxmert.models.families import load_transformer
    from xlxmert.pipelines.verify import NLVR2Pipeline

    folder = tmp_path / "nlvr2-model"
    shutil.copytree(model_dir, folder)
    transformer = load_transformer(folder)
    torch.manual_seed(0)
    heads.save_task_head(folder, heads.build_head("nlvr2", transformer.config.hidden_size), transformer)
    app = create_app(folder)
    assert call(app, "GET", "/model").json()["tasks"]["verify"] is True
    left, right = scene_png(), png(Image.new("RGB", (32, 32), (240, 240, 240)))
    files = {"left": ("l.png", left, "image/png"), "right": ("r.png", right, "image/png")}
    res = call(app, "POST", "/verify", files=files, data={"statement": "the left image has a red circle"})
    assert res.status_code == 200
    expected = NLVR2Pipeline.from_pretrained(folder)(
        [Image.open(io.BytesIO(left))], [Image.open(io.BytesIO(right))], ["the left image has a red circle"]
    )
    assert res.json()["label"] is expected.labels[0]
    assert res.json()["probability"] == pytest.approx(expected.probabilities[0], abs=1e-6)


BAD = [
    ("POST", "/paint", {"json": {"caption": ""}}, 422, "the caption is empty; give some words"),
    ("POST", "/paint", {"json": {"caption": "   "}}, 422, "the caption is empty"),
    ("POST", "/paint", {"json": {"caption": "red " * 10_000}}, 413,
     "has 40000 characters; this server takes"),
    ("POST", "/paint", {"json": {"sampler": "random"}}, 422, "caption: field required"),
    ("POST", "/paint", {"json": {"caption": "a", "sampler": "zigzag"}}, 422, "sampler: input should be"),
    ("POST", "/paint", {"json": {"caption": "a", "steps": 17}}, 422, "steps must be at most 16"),
    ("POST", "/paint", {"json": {"caption": "a", "steps": 0}}, 422, "steps: input should be greater"),
    ("POST", "/paint", {"json": {"caption": "a", "temprature": 1}}, 422, "temprature: extra inputs"),
    ("POST", "/paint", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422,
     "json"),
    ("GET", "/paint/stream", {"params": {"caption": ""}}, 422, "the caption is empty"),
    ("GET", "/paint/stream", {"params": {"steps": 2}}, 422, "caption: field required"),
    ("POST", "/caption", {"files": {"image": ("a.txt", b"hello, I am text\n" * 20, "text/plain")}}, 422,
     "the upload 'image' is not an image this server reads"),
    ("POST", "/caption", {"files": {"image": ("big.png", header_only_png(20000, 20000), "image/png")}}, 413,
     "has 400000000 pixels; this server decodes at most 16777216"),
    ("POST", "/caption", {"files": {"image": ("e.png", b"", "image/png")}}, 422,
     "the upload 'image' is empty"),
    ("POST", "/caption", {"data": {"seed": "1"}}, 422, "image: field required"),
    ("POST", "/caption", {"files": {"image": ("s.tif", tiff_bytes(), "image/tiff")}}, 422,
     "is not an image this server reads (PNG, JPEG, WEBP, BMP, GIF)"),
    ("POST", "/answer", {"files": {"image": ("s.png", b"PNG", "image/png")}}, 422,
     "question: field required"),
    ("POST", "/answer", {"files": {"image": ("a.txt", b"text", "text/plain")}, "data": {"question": "what"}},
     422, "not an image"),
    ("POST", "/answer", {"files": {"image": ("s.png", b"x", "image/png")}, "data": {"question": " "}}, 422,
     "the question is empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    "method,url,kwargs,status,message", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)]
)
def test_bad_input_gets_a_one_line_4xx_and_the_server_keeps_serving(
    app, method, url, kwargs, status, message
):
    res = call(app, method, url, **kwargs)
    assert res.status_code == status, res.text
    detail = res.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and message.lower() in detail.lower()
    assert call(app, "GET", "/health").json()["busy"] == 0
    assert call(app, "POST", "/paint", json={"caption": CAPTION, "steps": 2}).status_code == 200


def test_upload_and_body_size_limits(model_dir):
    config = ServerConfig(max_upload_bytes=4096)
    app = create_app(model_dir, config)
    noise = png(
        Image.frombytes("RGB", (64, 64), torch.randint(0, 256, (64 * 64 * 3,)).byte().numpy().tobytes())
    )
    assert 4096 < len(noise) < config.max_body_bytes
    res = call(app, "POST", "/caption", files={"image": ("n.png", noise, "image/png")})
    assert (
        res.status_code == 413
        and "is larger than 4096 bytes, the most this server takes" in res.json()["detail"]
    )
    huge = b"x" * (config.max_body_bytes + 1)
    res = call(app, "POST", "/caption", files={"image": ("h.png", huge, "image/png")})
    assert res.status_code == 413 and "the request body is" in res.json()["detail"]

    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b"y" * config.max_body_bytes

    res = call(app, "POST", "/paint", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413
    assert call(app, "POST", "/paint", json={"caption": CAPTION}).status_code == 200


def test_queue_waits_then_answers_503_with_retry_after(model_dir):
    body = {"caption": CAPTION, "steps": 2}

    async def scenario(app):
        transport = httpx.ASGITransport(app=app)
        slots = app.state.slots
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            async with slots.slot():  # someone else is painting
                waiter = asyncio.create_task(client.post("/paint", json=body))
                while slots.waiting == 0:
                    await asyncio.sleep(0.01)
                second = await client.post("/paint", json=body)
                health = await client.get("/health")
            first = await waiter
        return first, second, health.json()

    # One may wait 30 s: the waiter is served once the slot comes free, the next one gets 503 at once.
    app = create_app(model_dir, ServerConfig(max_concurrent=1, max_waiting=1, wait_timeout_s=30))
    served, full, health = asyncio.run(scenario(app))
    assert health["busy"] == 1 and health["waiting"] == 1
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
    assert full.json()["detail"].startswith("the server is busy (1 at work, 1 waiting")
    assert app.state.slots.busy == 0 and app.state.slots.rejected == 1

    # Two may wait 0.2 s: both get 503 after their wait.
    app = create_app(model_dir, ServerConfig(max_concurrent=1, max_waiting=2, wait_timeout_s=0.2))
    first, second, _ = asyncio.run(scenario(app))
    for res in (first, second):
        assert res.status_code == 503 and int(res.headers["retry-after"]) >= 1
        assert "waited 0.2 s for a slot" in res.json()["detail"]
    assert app.state.slots.busy == 0 and app.state.slots.waiting == 0


def test_a_client_leaving_mid_stream_frees_its_slot(model_dir, monkeypatch):
    app = create_app(model_dir, ServerConfig(max_concurrent=1, max_waiting=0))
    painter = app.state.models.paint
    decode = painter.decode

    def slow_decode(values, seed=0, noise=None):  # each step takes 0.1 s: the client leaves first
        time.sleep(0.1)
        return decode(values, seed, noise)

    monkeypatch.setattr(painter, "decode", slow_decode)
    params = {"caption": CAPTION, "sampler": "tl-br"}  # 16 steps: 17 events
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("GET", "/paint/stream", params=params) as res:
            assert res.status_code == 200
            first = next(res.iter_lines())
            assert first == "event: step"
        deadline = time.monotonic() + 20
        while client.get("/health").json()["busy"] and time.monotonic() < deadline:
            time.sleep(0.05)
        health = client.get("/health").json()
        assert health["busy"] == 0 and health["abandoned"] == 1
        # Not 503 (no one may wait): the slot is free.
        assert client.post("/paint", json={"caption": CAPTION, "steps": 1}).status_code == 200


def test_serve_cli_binds_loopback_by_default_and_rejects_bad_settings(model_dir, monkeypatch, capsys):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", "--model", str(model_dir), "--max-concurrent", "3"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8000
    assert seen["app"].state.config.max_concurrent == 3
    err = capsys.readouterr().err
    assert "http://127.0.0.1:8000" in err and "warning" not in err
    assert main(["serve", "--model", str(model_dir), "--host", "0.0.0.0", "--port", "9000"]) == 0
    assert seen["host"] == "0.0.0.0" and seen["port"] == 9000
    assert "xlxmert: warning: --host 0.0.0.0 lets other machines reach this server" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage_error:  # refused when parsed: a usage error
        main(["serve", "--model", str(model_dir), "--max-concurrent", "0"])
    err = capsys.readouterr().err
    assert usage_error.value.code == 2 and err.count("\n") == 1
    assert "argument --max-concurrent: must be a whole number in [1, " in err
    assert main(["serve", "--model", str(model_dir / "missing")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_load_benchmark_smoke_run_answers_every_request(model_dir, tmp_path, monkeypatch, capsys):
    import runpy
    import sys
    from pathlib import Path

    report = tmp_path / "bench.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serve.py"
    app = create_app(model_dir, ServerConfig(max_concurrent=1, max_waiting=1))
    with BackgroundServer(app) as server:
        argv = ["bench_serve.py", "--url", server.url, "--clients", "3", "--requests", "2"]
        monkeypatch.setattr(sys, "argv", [*argv, "--json", str(report)])
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0
    got = json.loads(report.read_text())
    assert got["requests"] == 6 and got["lost"] == 0 and got["max_concurrent"] == 1
    assert got["answered_200"] + got["answered_503"] == 6 and got["answered_200"] >= 2
    assert got["server_health"]["served"] == got["answered_200"] + 1  # + the warm-up
    assert got["server_health"]["rejected"] == got["answered_503"]
    assert "6 requests (3 clients × 2" in capsys.readouterr().out
