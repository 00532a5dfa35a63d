"""The ComfyUI stand-in's HTTP + WebSocket server and its Python facade `ComfyUISandbox`.

Routes and bodies follow ComfyUI 0.3.64 (every route also under ``/api``).
WebSocket registration copies the real server's quirks: a new socket with a
known ``clientId`` replaces the old one, and when *any* socket of that id closes
the id is unregistered — so a stale socket closing after a reconnect silences
the new one. Messages for an id without a socket are dropped, not buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import struct
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import WSMsgType, web
from PIL import Image

from gouache_sandbox.comfyui.engine import Checkpoint, Engine, Faults, Files, QueueItem, Speed
from gouache_sandbox.comfyui.nodes import NODES, NodeDef, validate_prompt

log = structlog.get_logger(__name__)

Json = dict[str, Any]
COMFYUI_VERSION = "0.3.64"
_SERVER_FEATURES: Json = {"supports_preview_metadata": True, "max_upload_size": 104857600}
_TEXT_500 = "500 Internal Server Error\n\nServer got itself in trouble"
_MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models",
    "clip_vision", "style_models", "embeddings", "diffusers", "vae_approx", "controlnet",
    "gligen", "upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders",
]  # fmt: skip
# Binary event types on the WebSocket.
PREVIEW_IMAGE = 1
PROGRESS_TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    request: web.Request
    preview_metadata: bool = False


class WsHub:
    """The set of connected sockets and one ordered sender, like ComfyUI's ``send_sync``."""

    def __init__(self) -> None:
        self.sockets: dict[str, _Socket] = {}
        self._out: asyncio.Queue[tuple[str | None, str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the sender task."""
        self._task = asyncio.create_task(self._publish(), name="comfyui-ws-publisher")

    async def aclose(self) -> None:
        """Stop the sender and close the sockets."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sock in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.ws.close(code=1001), 2)
        self.sockets.clear()

    def send(self, event: str, data: Json, sid: str | None) -> None:
        """Queue a JSON message."""
        self._out.put_nowait((sid, "json", {"type": event, "data": data}))

    def send_progress(
        self, progress: Json, preview: tuple[bytes, str, Json] | None, sid: str | None
    ) -> None:
        """Queue ``progress`` plus its preview.

        A socket that announced ``supports_preview_metadata`` gets the preview
        first, as a type-4 frame with a JSON header (the real server sends it
        from its progress registry before the legacy hook's ``progress``);
        others get ``progress`` then a type-1 frame.
        """
        self._out.put_nowait((sid, "progress", (progress, preview)))

    def send_progress_text(self, node_id: str, text: str) -> None:
        """Queue a progress-text frame; ComfyUI 0.3.64 sends these to every socket."""
        node = node_id.encode()
        frame = struct.pack(">II", PROGRESS_TEXT, len(node)) + node + text.encode()
        self._out.put_nowait((None, "bytes", frame))

    def drop_all(self) -> None:
        """Cut every connection without a close frame (a network drop)."""
        for sock in list(self.sockets.values()):
            transport = sock.request.transport
            if transport is not None:
                transport.abort()

    async def send_now(self, sock: _Socket, event: str, data: Json) -> None:
        """Send directly (used for the handshake messages of one socket)."""
        await sock.ws.send_str(json.dumps({"type": event, "data": data}))

    async def _publish(self) -> None:
        while True:
            sid, kind, payload = await self._out.get()
            targets = (
                list(self.sockets.values())
                if sid is None
                else [s for s in (self.sockets.get(sid),) if s is not None]
            )
            for sock in targets:
                try:
                    if kind == "json":
                        await sock.ws.send_str(json.dumps(payload))
                    elif kind == "bytes":
                        await sock.ws.send_bytes(payload)
                    else:
                        progress, preview = payload
                        text = json.dumps({"type": "progress", "data": progress})
                        if preview is None:
                            await sock.ws.send_str(text)
                        elif sock.preview_metadata:
                            await sock.ws.send_bytes(_preview_frame(sock, *preview))
                            await sock.ws.send_str(text)
                        else:
                            await sock.ws.send_str(text)
                            await sock.ws.send_bytes(_preview_frame(sock, *preview))
                except (ConnectionError, RuntimeError) as exc:
                    log.debug("comfyui.ws_send_failed", error=str(exc))


def _preview_frame(sock: _Socket, image: bytes, fmt: str, meta: Json) -> bytes:
    if sock.preview_metadata:
        head = json.dumps(meta).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(head)) + head + image
    return struct.pack(">II", PREVIEW_IMAGE, 1 if fmt == "JPEG" else 2) + image


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


class ComfyUISandbox:
    """A loopback ComfyUI stand-in for tests and the demo.

    ``speed`` and ``faults`` may be changed while it runs. Output files live in
    ``root`` (a temporary folder by default) and survive `crash`/`restart`;
    the queue and history, as in the real server, do not.
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        root: str | Path | None = None,
        speed: Speed | None = None,
        faults: Faults | None = None,
        checkpoints: tuple[str, ...] = ("sd_xl_base_1.0.safetensors",),
        loras: tuple[str, ...] = (),
        testing_nodes: bool = True,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gouache-comfyui-")
            root = self._tmp.name
        self.files = Files(Path(root))
        self.speed = speed or Speed()
        self.faults = faults or Faults()
        self.checkpoints = list(checkpoints)
        self.loras = list(loras)
        self.nodes: dict[str, NodeDef] = {
            k: v for k, v in NODES.items() if testing_nodes or not v.testing
        }
        self.crashed = asyncio.Event()
        #: Requests served, by path without ``/api`` (``/history/<id>`` apart): for tests.
        self.requests: Counter[str] = Counter()
        self._requested = asyncio.Event()
        self._host = "127.0.0.1"
        self._port = 0
        self._runner: web.AppRunner | None = None
        self._hub = WsHub()
        self._engine = self._new_engine()
        self._tasks: list[asyncio.Task[None]] = []

    def _new_engine(self) -> Engine:
        return Engine(
            self._hub,
            self.files,
            self.speed,
            self.faults,
            checkpoints=self.checkpoints,
            loras=self.loras,
            nodes=self.nodes,
        )

    # -- lifecycle -------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port) and start the prompt worker."""
        self._host = host
        app = web.Application(middlewares=[self._faults_mw, self._origin_mw], client_max_size=2**27)
        for prefix in ("", "/api"):
            self._add_routes(app, prefix)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port or self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._hub.start()
        self._tasks = [
            asyncio.create_task(self._engine.run(), name="comfyui-prompt-worker"),
            asyncio.create_task(self._watch_crash(), name="comfyui-crash-watch"),
        ]
        self.crashed.clear()
        log.info("comfyui.sandbox_started", url=self.url)

    async def aclose(self) -> None:
        """Stop serving (gracefully) and remove the temporary folder."""
        await self._stop(graceful=True)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> ComfyUISandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _stop(self, *, graceful: bool) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        if not graceful:
            self._hub.drop_all()
        await self._hub.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def crash(self) -> None:
        """Die like a killed process: connections cut, queue and history gone."""
        log.warning("comfyui.sandbox_crashed", url=self.url)
        await self._cut_off()
        await self._stop(graceful=False)
        self.crashed.set()

    async def _cut_off(self) -> None:
        """Stop listening and cut every connection before anything else can run.

        A killed server answers nothing from its first instant; the orderly
        teardown that follows yields to other tasks, and a client must not
        reconnect or be answered in between.
        """
        runner = self._runner
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()  # closes the listening socket before it first yields
        server = runner.server
        for handler in server.connections if server is not None else []:
            if handler.transport is not None:
                handler.transport.abort()
        self._hub.drop_all()

    async def restart(self) -> None:
        """Start again on the same port with an empty queue and history."""
        if self._runner is not None:
            await self._stop(graceful=True)
        self._hub = WsHub()
        self._engine = self._new_engine()
        await self.start(self._host, self._port)

    async def _watch_crash(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._engine.crash_requested.wait(), 60)
            except TimeoutError:
                continue
            # Detach from the task list so _stop does not cancel us mid-crash.
            self._tasks = [t for t in self._tasks if t is not asyncio.current_task()]
            await self.crash()
            return

    # -- facade ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8188``."""
        return f"http://{self._host}:{self._port}"

    def ws_url(self, client_id: str | None = None) -> str:
        """The WebSocket URL for ``client_id``."""
        base = f"ws://{self._host}:{self._port}/ws"
        return f"{base}?clientId={client_id}" if client_id else base

    @property
    def engine(self) -> Engine:
        """The queue/history/execution state (for inspection in tests)."""
        return self._engine

    def drop_websockets(self) -> None:
        """Cut every WebSocket without a close frame."""
        self._hub.drop_all()

    def pause_on(self, predicate: Any) -> None:
        """Hold execution at the first `Checkpoint` matching ``predicate``."""
        self._engine.pause_on(predicate)

    async def wait_paused(self, timeout: float = 10.0) -> Checkpoint:
        """Wait until execution is held at a checkpoint."""
        return await self._engine.wait_paused(timeout)

    def resume(self) -> None:
        """Release held execution."""
        self._engine.resume()

    async def wait_requests(self, path: str, count: int, timeout: float = 10.0) -> None:
        """Wait until ``path`` has been requested ``count`` times in all."""
        async with asyncio.timeout(timeout):
            while self.requests[path] < count:
                self._requested.clear()
                await self._requested.wait()

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the queue is empty and nothing runs."""
        await asyncio.wait_for(self._engine.idle.wait(), timeout)

    # -- HTTP ------------------------------------------------------------------

    @web.middleware
    async def _faults_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path.removeprefix("/api") or "/"
        self.requests[path] += 1
        self._requested.set()
        for route, remaining in list(self.faults.http_500.items()):
            if remaining != 0 and (path == route or path.startswith(route.rstrip("/") + "/")):
                if remaining > 0:
                    self.faults.http_500[route] = remaining - 1
                return web.Response(status=500, text=_TEXT_500)
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _origin_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # ComfyUI refuses cross-origin requests: Origin must name the Host.
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            return web.Response(status=403)
        response: web.StreamResponse = await handler(request)
        return response

    def _add_routes(self, app: web.Application, p: str) -> None:
        app.router.add_get(p + "/ws", self._ws)
        app.router.add_post(p + "/prompt", self._post_prompt)
        app.router.add_get(p + "/prompt", self._get_prompt)
        app.router.add_get(p + "/queue", self._get_queue)
        app.router.add_post(p + "/queue", self._post_queue)
        app.router.add_post(p + "/interrupt", self._interrupt)
        app.router.add_get(p + "/history", self._get_history)
        app.router.add_get(p + "/history/{prompt_id}", self._get_history_one)
        app.router.add_post(p + "/history", self._post_history)
        app.router.add_get(p + "/view", self._view)
        app.router.add_post(p + "/upload/image", self._upload)
        app.router.add_get(p + "/system_stats", self._system_stats)
        app.router.add_get(p + "/features", self._features)
        app.router.add_get(p + "/object_info", self._object_info)
        app.router.add_get(p + "/object_info/{node}", self._object_info_one)
        app.router.add_get(p + "/models", self._models)
        app.router.add_get(p + "/models/{folder}", self._models_folder)
        app.router.add_get(p + "/embeddings", self._embeddings)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        # Pings are answered by hand (as aiohttp would) so a fault can stop that.
        ws = web.WebSocketResponse(max_msg_size=2**24, autoping=False)
        await ws.prepare(request)
        hub, engine = self._hub, self._engine
        sid = request.query.get("clientId", "")
        if sid:
            hub.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        sock = _Socket(ws, request)
        hub.sockets[sid] = sock
        try:
            await hub.send_now(
                sock,
                "status",
                {
                    "status": {"exec_info": {"queue_remaining": engine.queue_remaining()}},
                    "sid": sid,
                },
            )
            if engine.client_id == sid and engine.last_node_id is not None:
                await hub.send_now(sock, "executing", {"node": engine.last_node_id})
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.PING and self.faults.answer_pings:
                    await ws.pong(msg.data)
                if msg.type != WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError, AttributeError):
                    data = json.loads(msg.data)
                    if first and data.get("type") == "feature_flags":
                        flags = data.get("data") or {}
                        sock.preview_metadata = bool(flags.get("supports_preview_metadata"))
                        await hub.send_now(sock, "feature_flags", _SERVER_FEATURES)
                first = False
        finally:
            # The real server pops by id, even if a newer socket holds it now.
            hub.sockets.pop(sid, None)
        return ws

    async def _post_prompt(self, request: web.Request) -> web.Response:
        engine = self._engine
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=500, text=_TEXT_500)
        if not isinstance(body, dict):
            return web.Response(status=500, text=_TEXT_500)
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = engine.number  # an int, shown without ".0" like ComfyUI's
            if body.get("front"):
                number = -number
            engine.number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return _json({"error": error, "node_errors": {}}, 400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        try:
            result = validate_prompt(prompt, self.nodes, engine.resolve_choices)
        except TypeError:
            return web.Response(status=500, text=_TEXT_500)
        extra: Json = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        if not result.ok:
            return _json({"error": result.error, "node_errors": result.node_errors}, 400)
        engine.put(QueueItem(number, prompt_id, prompt, extra, result.outputs))
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return _json({"exec_info": {"queue_remaining": self._engine.queue_remaining()}})

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = self._engine.running
        return _json(
            {
                "queue_running": [running.entry()] if running is not None else [],
                "queue_pending": self._engine.pending(),
            }
        )

    async def _post_queue(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=500, text=_TEXT_500)
        if isinstance(body, dict):
            if body.get("clear"):
                self._engine.clear()
            if isinstance(body.get("delete"), list):
                self._engine.delete([str(x) for x in body["delete"]])
        return web.Response(status=200)

    async def _interrupt(self, request: web.Request) -> web.Response:
        prompt_id: str | None = None
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
                if isinstance(body, dict) and body.get("prompt_id"):
                    prompt_id = str(body["prompt_id"])
        self._engine.interrupt(prompt_id)
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        history = self._engine.history
        items = list(history.items())
        max_items = request.query.get("max_items")
        if max_items is not None and max_items.isdigit():
            items = items[max(0, len(items) - int(max_items)) :]
        return _json(dict(items))

    async def _get_history_one(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self._engine.history.get(prompt_id)
        return _json({prompt_id: entry} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=500, text=_TEXT_500)
        if isinstance(body, dict):
            if body.get("clear"):
                self._engine.history.clear()
            for prompt_id in body.get("delete") or []:
                self._engine.history.pop(str(prompt_id), None)
        return web.Response(status=200)

    async def _view(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        filename = q.get("filename")
        if not filename:
            return web.Response(status=404)
        kind = q.get("type", "output") or "output"
        if kind not in self.files.dirs or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        path = self.files.resolve(kind, q.get("subfolder", ""), filename)
        if path is None:
            return web.Response(status=403)
        if not path.is_file():
            return web.Response(status=404)
        data = await asyncio.to_thread(path.read_bytes)
        preview = q.get("preview")
        if preview:
            fmt, _, quality = preview.partition(";")
            fmt = "WEBP" if fmt.lower() == "webp" else "JPEG"
            data = await asyncio.to_thread(
                _reencode, data, fmt, int(quality) if quality.isdigit() else 90
            )
            return web.Response(body=data, content_type=f"image/{fmt.lower()}")
        content_type = (
            "image/png" if filename.lower().endswith(".png") else "application/octet-stream"
        )
        if self.faults.view_chunked:
            stream = web.StreamResponse(headers={"Content-Type": content_type})
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            await stream.write(data)
            await stream.write_eof()
            return stream
        return web.Response(
            body=data,
            content_type=content_type,
            headers={"Content-Disposition": f'filename="{filename}"'},
        )

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        image = form.get("image")
        if not isinstance(image, web.FileField):
            return web.Response(status=400)
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "") in ("true", "1")
        data = image.file.read()
        name = os.path.basename(image.filename or "image.png")
        if kind not in self.files.dirs:
            return web.Response(status=400)
        folder = self.files.resolve(kind, subfolder, "")
        if folder is None:
            return web.Response(status=400)
        folder.mkdir(parents=True, exist_ok=True)
        stem, ext = os.path.splitext(name)
        target = folder / name
        if not overwrite:
            i = 1
            while target.exists():
                if target.read_bytes() == data:
                    break
                name = f"{stem} ({i}){ext}"
                target = folder / name
                i += 1
        target.write_bytes(data)
        return _json({"name": name, "subfolder": subfolder, "type": kind})

    async def _system_stats(self, request: web.Request) -> web.Response:
        total = 16 * 2**30
        return _json(
            {
                "system": {
                    "os": os.name,
                    "ram_total": total,
                    "ram_free": total // 2,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": "gouache sandbox",
                    "pytorch_version": "none (simulated)",
                    "embedded_python": False,
                    "argv": ["gouache-comfyui-sandbox", "--port", str(self._port)],
                },
                "devices": [
                    {
                        "name": "sandbox",
                        "type": "cpu",
                        "index": None,
                        "vram_total": total,
                        "vram_free": total // 2,
                        "torch_vram_total": total,
                        "torch_vram_free": total // 2,
                    }
                ],
            }
        )

    async def _features(self, request: web.Request) -> web.Response:
        return _json(_SERVER_FEATURES)

    async def _object_info(self, request: web.Request) -> web.Response:
        resolve = self._engine.resolve_choices
        return _json({name: d.object_info(resolve) for name, d in self.nodes.items()})

    async def _object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node"]
        node = self.nodes.get(name)
        if node is None:
            return _json({})
        return _json({name: node.object_info(self._engine.resolve_choices)})

    async def _models(self, request: web.Request) -> web.Response:
        return _json(_MODEL_FOLDERS)

    async def _models_folder(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in _MODEL_FOLDERS:
            return web.Response(status=404)
        if folder == "loras":
            return _json(list(self.loras))
        return _json(list(self.checkpoints) if folder == "checkpoints" else [])

    async def _embeddings(self, request: web.Request) -> web.Response:
        return _json([])


def _reencode(data: bytes, fmt: str, quality: int) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format=fmt, quality=quality)
        return buf.getvalue()
