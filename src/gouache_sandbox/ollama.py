"""An Ollama stand-in: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/version``.

Response shapes follow Ollama's HTTP API: a non-streaming answer is one JSON
object (``model``, ``created_at``, ``message`` or ``response``, ``done``,
``done_reason``, durations in nanoseconds, token counts); with ``"stream":
true`` (Ollama's default) the answer is NDJSON, one object per chunk, the last
one ``done: true`` with the statistics. Errors are ``{"error": "..."}`` with
400 (bad request) or 404 (unknown model).

The "model" is a deterministic toy translator: Chinese words from a small
dictionary become English (longest match first), Chinese punctuation becomes
ASCII, anything else passes through, and Han characters it does not know come
out as ``U+XXXX`` markers. It translates only the *last user message* (or the
``prompt``) and ignores the system instruction, as a well-behaved model would.

Tests steer it through `OllamaSandbox.settings`: latency, failures (HTTP
status), hangs (never answer, for timeout tests) and a custom ``responder``
(e.g. an adversarial model). Every request body is kept in ``requests``.

``python -m gouache_sandbox.ollama --port 11434`` serves it for the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

Json = dict[str, Any]
OLLAMA_VERSION = "0.12.6"
# "demo-translate" is the model `gouache demo` asks for; "demo-vision" describes images.
DEFAULT_MODELS = ("qwen2.5:7b", "llama3.2:3b", "demo-translate", "llava:7b", "demo-vision")
#: Models that read the ``images`` of a message (others refuse them, as Ollama does).
VISION_MODELS = frozenset({"llava", "demo-vision"})

ZH_EN: dict[str, str] = {
    # Whole phrases of the demo's prompts (word order differs between the languages).
    "一只在月光下的猫": "a cat in the moonlight",
    "雪山下的小木屋": "a small wooden cabin below snowy mountains",
    "水彩画": "watercolor painting",
    "赛博朋克风格的城市夜景": "a cyberpunk city at night",
    "一碗热腾腾的拉面": "a steaming bowl of ramen",
    "特写": "close-up",
    "穿着宇航服的熊猫": "a panda in a spacesuit",
    "一只": "a",
    "一个": "a",
    "一位": "a",
    "一座": "a",
    "一片": "a",
    "两只": "two",
    "三只": "three",
    "猫": "cat",
    "小猫": "kitten",
    "狗": "dog",
    "小狗": "puppy",
    "狐狸": "fox",
    "红色": "red",
    "红": "red",
    "蓝色": "blue",
    "蓝": "blue",
    "绿色": "green",
    "黄色": "yellow",
    "白色": "white",
    "黑色": "black",
    "金色": "golden",
    "可爱的": "cute",
    "可爱": "cute",
    "美丽的": "beautiful",
    "美丽": "beautiful",
    "巨大的": "giant",
    "小": "small",
    "大": "big",
    "的": "",
    "在": "on",
    "上": "",
    "里": "in",
    "和": "and",
    "与": "and",
    "月亮": "moon",
    "月球": "moon",
    "太阳": "sun",
    "星空": "starry sky",
    "天空": "sky",
    "山": "mountain",
    "山脉": "mountains",
    "海": "sea",
    "大海": "ocean",
    "海边": "seaside",
    "河": "river",
    "湖": "lake",
    "森林": "forest",
    "树": "tree",
    "花": "flower",
    "樱花": "cherry blossoms",
    "城市": "city",
    "街道": "street",
    "夜晚": "night",
    "夜景": "night view",
    "日落": "sunset",
    "日出": "sunrise",
    "雨": "rain",
    "雪": "snow",
    "龙": "dragon",
    "女孩": "girl",
    "男孩": "boy",
    "少女": "young woman",
    "老人": "old man",
    "机器人": "robot",
    "宇航员": "astronaut",
    "城堡": "castle",
    "房子": "house",
    "水墨画": "ink wash painting",
    "油画": "oil painting",
    "水彩": "watercolor",
    "插画": "illustration",
    "照片": "photo",
    "风格": "style",
    "赛博朋克": "cyberpunk",
    "蒸汽朋克": "steampunk",
    "像素": "pixel art",
    "动漫": "anime",
    "写实": "photorealistic",
    "高清": "high detail",
    "细节": "details",
    "光": "light",
    "灯光": "lighting",
    "文字": "text",
    "水印": "watermark",
    "模糊": "blur",
    "人": "person",
    "坐": "sitting",
    "站": "standing",
    "飞": "flying",
    "睡觉": "sleeping",
    "喝茶": "drinking tea",
    "看": "looking at",
    "戴着": "wearing",
    "帽子": "hat",
}
_PUNCT = {
    "，": ", ",
    "。": ". ",
    "、": ", ",
    "：": ": ",
    "；": "; ",
    "！": "! ",
    "？": "? ",
    "（": " (",
    "）": ") ",
    "“": '"',
    "”": '"',
    "《": '"',
    "》": '"',
}
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LONGEST = max(len(k) for k in ZH_EN)


def toy_translate(text: str) -> str:
    """Deterministic zh→en: dictionary words (longest first), ASCII punctuation, ``U+XXXX`` otherwise."""
    out: list[str] = []
    i = 0
    while i < len(text):
        for size in range(min(_LONGEST, len(text) - i), 0, -1):
            word = ZH_EN.get(text[i : i + size])
            if word is not None:
                out.append(f" {word} " if word else " ")
                i += size
                break
        else:
            ch = text[i]
            if ch in _PUNCT:
                out.append(_PUNCT[ch])
            elif _HAN.match(ch):
                out.append(f" U+{ord(ch):04X} ")
            else:
                out.append(ch)
            i += 1
    joined = "".join(out)
    joined = re.sub(r"\s+([,.:;!?)])", r"\1", joined)
    return " ".join(joined.split())


Responder = Callable[[str], str]


@dataclass
class OllamaSettings:
    """What the stand-in does with the next requests (tests flip these)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    latency_s: float = 0.0  # before answering (before the first chunk when streaming)
    chunk_delay_s: float = 0.0  # between streamed chunks
    fail_next: int = 0  # answer the next N generation requests with fail_status
    fail_status: int = 500
    fail_message: str = "llama runner process has terminated: exit status 2"
    hang_next: int = 0  # never answer the next N generation requests
    responder: Responder | None = None  # replace the toy translator


@dataclass
class _Counters:
    requests: list[Json] = field(default_factory=list)
    served: int = 0


def describe_images(images: Any) -> str | None:
    """A vision model's answer: four numbered prompts naming the first image's colour and shape."""
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        data = base64.b64decode(str(images[0]), validate=True)
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError, IndexError, TypeError):
        return None
    r, g, b = rgb.resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    color = ("red", "green", "blue")[max(range(3), key=lambda i: (r, g, b)[i])]
    w, h = rgb.size
    shape = "landscape" if w > h else "portrait" if h > w else "square"
    return "\n".join(
        [
            f"1. a {color} {shape} scene, soft light",
            f"2. {color} tones, minimalist {shape} poster",
            f"3. a {shape} photograph dominated by {color}",
            f"4. {color} watercolor study, {shape} format",
        ]
    )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _stats(prompt: str, answer: str, latency_s: float) -> Json:
    """Timing and token statistics in Ollama's units (nanoseconds), derived from the lengths."""
    prompt_tokens = max(1, len(prompt) // 3)
    eval_tokens = max(1, len(answer.split()))
    eval_ns = eval_tokens * 20_000_000
    prompt_ns = prompt_tokens * 1_000_000
    load_ns = 2_000_000
    return {
        "total_duration": int(latency_s * 1e9) + load_ns + prompt_ns + eval_ns,
        "load_duration": load_ns,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_tokens,
        "eval_duration": eval_ns,
    }


def _chunks(answer: str) -> list[str]:
    """Streamed pieces: words with their leading space, like a tokenizer's output."""
    parts = re.findall(r"\s*\S+", answer)
    return parts or [answer]


class OllamaSandbox:
    """The stand-in server; `start` on loopback, read `url`, `aclose` when done."""

    def __init__(self, settings: OllamaSettings | None = None) -> None:
        self.settings = settings or OllamaSettings()
        self._counters = _Counters()
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._release = asyncio.Event()  # set on close: lets hung requests end

    # -- lifecycle -------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port)."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/generate", self._generate)
        self._release.clear()
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._host = host

    async def aclose(self) -> None:
        """Stop serving; hung requests are released first."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OllamaSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:11434``."""
        return f"http://{self._host}:{self._port}"

    @property
    def requests(self) -> list[Json]:
        """Every generation request body received, in order."""
        return self._counters.requests

    @property
    def served(self) -> int:
        """Generation requests answered successfully."""
        return self._counters.served

    # -- routes ----------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": OLLAMA_VERSION})

    async def _tags(self, request: web.Request) -> web.Response:
        models = []
        for name in self.settings.models:
            family = name.split(":")[0].rstrip("0123456789.")
            models.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 4_683_087_332,
                    "digest": hashlib.sha256(name.encode()).hexdigest(),
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": family,
                        "families": [family],
                        "parameter_size": "7.6B",
                        "quantization_level": "Q4_K_M",
                    },
                }
            )
        return web.json_response({"models": models})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
        ):
            return _error(400, "messages must be a list of {role, content}")
        users = [m for m in messages if m["role"] == "user"]
        text = str(users[-1].get("content", "")) if users else ""
        images = users[-1].get("images") if users else None
        if images and _canonical(str(body["model"])).split(":")[0] not in VISION_MODELS:
            return _error(400, f'"{body["model"]}" does not support images')
        early = await self._hurdles(body)
        if early is not None:
            return early
        answer = describe_images(images) if images else self._answer(text)
        if answer is None:
            return _error(400, "illegal base64 data or an unreadable image")
        model = str(body["model"])
        stats = _stats(json.dumps(messages), answer, self.settings.latency_s)
        self._counters.served += 1
        if body.get("stream", True) is False:
            return web.json_response(
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": answer},
                    "done_reason": "stop",
                    "done": True,
                    **stats,
                }
            )
        pieces = [
            {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": chunk},
                "done": False,
            }
            for chunk in _chunks(answer)
        ]
        final = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            **stats,
        }
        return await self._stream(request, [*pieces, final])

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            return _error(400, "prompt must be a string")
        early = await self._hurdles(body)
        if early is not None:
            return early
        answer = self._answer(prompt)
        model = str(body["model"])
        stats = _stats(prompt, answer, self.settings.latency_s)
        context = [ord(c) % 32000 for c in (prompt + answer)[:64]]
        self._counters.served += 1
        if body.get("stream", True) is False:
            return web.json_response(
                {
                    "model": model,
                    "created_at": _now(),
                    "response": answer,
                    "done": True,
                    "done_reason": "stop",
                    "context": context,
                    **stats,
                }
            )
        pieces = [
            {"model": model, "created_at": _now(), "response": chunk, "done": False}
            for chunk in _chunks(answer)
        ]
        final = {
            "model": model,
            "created_at": _now(),
            "response": "",
            "done": True,
            "done_reason": "stop",
            "context": context,
            **stats,
        }
        return await self._stream(request, [*pieces, final])

    # -- helpers -----------------------------------------------------------------

    async def _body(self, request: web.Request) -> Json | web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "invalid character in request body: not JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        self._counters.requests.append(body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "model is required")
        if _canonical(model) not in {_canonical(m) for m in self.settings.models}:
            return _error(404, f'model "{model}" not found, try pulling it first')
        return body

    async def _hurdles(self, body: Json) -> web.Response | None:
        """Injected hangs, latency and failures, in that order."""
        s = self.settings
        if s.hang_next > 0:
            s.hang_next -= 1
            # Held until the server closes; the client's timeout is what ends it.
            await self._release.wait()
            return _error(503, "server shutting down")
        if s.latency_s > 0:
            await asyncio.sleep(s.latency_s)
        if s.fail_next > 0:
            s.fail_next -= 1
            return _error(s.fail_status, s.fail_message)
        return None

    def _answer(self, text: str) -> str:
        responder = self.settings.responder
        return responder(text) if responder is not None else toy_translate(text)

    async def _stream(self, request: web.Request, objects: list[Json]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for i, obj in enumerate(objects):
            if i and self.settings.chunk_delay_s > 0:
                await asyncio.sleep(self.settings.chunk_delay_s)
            await resp.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
        await resp.write_eof()
        return resp


def _canonical(model: str) -> str:
    return model if ":" in model else f"{model}:latest"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _serve(host: str, port: int, latency_s: float) -> None:
    sandbox = OllamaSandbox(OllamaSettings(latency_s=latency_s))
    await sandbox.start(host, port)
    log.info("ollama.sandbox_ready", url=sandbox.url, models=list(sandbox.settings.models))
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.aclose()


def main(argv: list[str] | None = None) -> None:
    """``python -m gouache_sandbox.ollama``: serve the stand-in until Ctrl-C."""
    parser = argparse.ArgumentParser(description="gouache's Ollama stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.latency))


if __name__ == "__main__":
    main()
