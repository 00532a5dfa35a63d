"""What each simulated node does: pictures through the graph, progress ticks, previews."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final, Protocol

from gouache_sandbox.comfyui import images
from gouache_sandbox.comfyui.images import Picture
from gouache_sandbox.comfyui.model import Checkpoint, Files, Hub, Interrupted, NodeFailure, Speed
from gouache_sandbox.comfyui.run import Run

Json = dict[str, Any]


class Engine(Protocol):
    """What a node simulation uses of the engine that runs it."""

    hub: Hub
    files: Files
    speed: Speed
    interrupt_flag: bool

    async def checkpoint(self, cp: Checkpoint) -> None: ...

    def to_client(self, run: Run, event: str, data: Json) -> None: ...


class NodeRunner:
    """Simulates one node; progress ticks go through `tick`."""

    def __init__(self, engine: Engine, run: Run, node_id: str, class_type: str) -> None:
        self.engine = engine
        self.run_ = run
        self.node_id = node_id
        self.class_type = class_type

    async def work(self, seconds: float) -> None:
        """Simulated computation (yields to the loop even when instant)."""
        await asyncio.sleep(max(0.0, seconds))

    async def tick(
        self, step: int, value: float, maximum: float, preview: bytes | None, fmt: str
    ) -> None:
        """One progress-hook call: interrupt check, then progress_state, progress, preview."""
        engine, run = self.engine, self.run_
        await engine.checkpoint(Checkpoint(run.item.prompt_id, self.node_id, self.class_type, step))
        if engine.interrupt_flag:
            raise Interrupted(self.node_id)
        engine.to_client(
            run, "progress_state", run.progress.set(self.node_id, value, maximum, "running")
        )
        progress = {
            "value": value,
            "max": maximum,
            "prompt_id": run.item.prompt_id,
            "node": self.node_id,
        }
        frame: tuple[bytes, str, Json] | None = None
        if preview is not None:
            meta = {
                "node_id": self.node_id,
                "prompt_id": run.item.prompt_id,
                "display_node_id": self.node_id,
                "parent_node_id": None,
                "real_node_id": self.node_id,
                "image_type": "image/png" if fmt == "PNG" else "image/jpeg",
            }
            frame = (preview, fmt, meta)
        engine.hub.send_progress(progress, frame, run.client_id)

    async def save(self, picture: Picture, kind: str, prefix: str) -> Json:
        """Draw and write the batch; return the ``{"images": [...]}`` UI output."""
        files = self.engine.files
        subfolder, names = files.next_names(kind, prefix, picture.batch)
        caption = self.run_.caption
        for index, name in enumerate(names):
            path = files.dirs[kind] / subfolder / name
            img = await asyncio.to_thread(images.render, picture, index, caption)
            await asyncio.to_thread(images.save_png, img, path)
        return {"images": [{"filename": n, "subfolder": subfolder, "type": kind} for n in names]}

    async def run(self, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], Json | None]:  # noqa: C901, PLR0912, PLR0915
        """Execute the node on resolved ``inputs``: ``(outputs, ui output or None)``."""
        speed = self.engine.speed
        ct = self.class_type
        if ct == "EmptyImage":
            w, h, b = inputs["width"], inputs["height"], inputs["batch_size"]
            if w * h * b * 4 > speed.max_alloc_bytes:
                raise NodeFailure(
                    "RuntimeError",
                    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                    f"allocate memory: you tried to allocate {w * h * b * 4} bytes. Error code 12 "
                    "(Cannot allocate memory)",
                )
            return (Picture(w, h, b, color=inputs["color"]),), None
        if ct == "ImageInvert":
            pic: Picture = inputs["image"]
            return (pic.with_(inverted=not pic.inverted),), None
        if ct == "ImageBlur":
            await self.work(speed.node_delay)
            pic = inputs["image"]
            return (pic.with_(blur=pic.blur + inputs["sigma"]),), None
        if ct == "ImageScale":
            pic = inputs["image"]
            w, h = inputs["width"], inputs["height"]
            if w == 0 and h == 0:
                return (pic,), None
            w = w or max(1, round(pic.width * h / pic.height))
            h = h or max(1, round(pic.height * w / pic.width))
            return (pic.with_(width=w, height=h),), None
        if ct in _ACTION_NODES:
            return _action_node(ct, inputs), None
        if ct == "ImageBlend":
            first, second = inputs["image1"], inputs["image2"]
            factor = float(inputs["blend_factor"])
            return (first.with_(layers=(*first.layers, (second, factor))),), None
        if ct == "ImageAddNoise":
            pic = inputs["image"]
            return (pic.with_(seed=inputs["seed"], noise=inputs["strength"]),), None
        if ct == "GetImageSize":
            pic = inputs["image"]
            self.engine.hub.send_progress_text(
                self.node_id, f"width: {pic.width}, height: {pic.height}\n batch size: {pic.batch}"
            )
            return (pic.width, pic.height, pic.batch), None
        if ct == "PrimitiveString":
            return (inputs["value"],), None
        if ct == "PreviewAny":
            source = inputs["source"]
            text = source if isinstance(source, str) else str(source)
            return (), {"text": [text]}
        if ct == "SaveImage":
            return (), await self.save(inputs["images"], "output", inputs["filename_prefix"])
        if ct == "PreviewImage":
            return (), await self.save(inputs["images"], "temp", self.engine.files.temp_prefix)
        if ct == "SaveImageWebsocket":
            pic = inputs["images"]
            for index in range(pic.batch):
                img = await asyncio.to_thread(images.render, pic, index, self.run_.caption)
                png = await asyncio.to_thread(images.encode, img, "PNG")
                await self.tick(index, index, pic.batch, png, "PNG")
                await self.work(speed.step_delay)
            return (), None
        if ct == "LoadImage":
            path = self.engine.files.resolve("input", "", inputs["image"])
            if path is None or not path.exists():
                missing = self.engine.files.dirs["input"].resolve() / str(inputs["image"])
                raise NodeFailure(
                    "FileNotFoundError", f"[Errno 2] No such file or directory: '{missing}'"
                )
            size = await asyncio.to_thread(_image_size, path)
            return (Picture(size[0], size[1], 1, source=str(path)), None), None
        if ct == "CheckpointLoaderSimple":
            await self.work(speed.node_delay)
            name = inputs["ckpt_name"]
            return (("MODEL", name), ("CLIP", name), ("VAE", name)), None
        if ct == "LoraLoader":
            await self.work(speed.node_delay)
            lora = inputs["lora_name"]
            return (("MODEL", f"{inputs['model'][1]}+{lora}"), ("CLIP", inputs["clip"][1])), None
        if ct == "CLIPTextEncode":
            return (("CONDITIONING", inputs["text"]),), None
        if ct == "EmptyLatentImage":
            return (
                ("LATENT", inputs["width"], inputs["height"], inputs["batch_size"], None),
            ), None
        if ct == "KSampler":
            return (await self._ksampler(inputs),), None
        if ct == "VAEDecode":
            await self.work(speed.node_delay)
            latent = inputs["samples"]
            return (latent[4] if isinstance(latent[4], Picture) else _picture(latent),), None
        if ct == "TestSleep":
            seconds = float(inputs["seconds"])
            ticks = max(1, round(seconds / 0.01))
            for i in range(ticks):
                await self.tick(i, i * seconds / ticks, seconds, None, "PNG")
                await self.work(0.01 * speed.sleep_scale)
            return (inputs["value"],), None
        if ct == "TestSyncError":
            raise NodeFailure("RuntimeError", "Intentional sync execution error for testing")
        raise NodeFailure("NotImplementedError", f"{ct} is not simulated")

    async def _ksampler(self, inputs: dict[str, Any]) -> tuple[Any, ...]:
        _, width, height, batch, source = inputs["latent_image"]
        positive = inputs["positive"][1]
        seed = inputs["seed"]
        steps = int(inputs["steps"])
        denoise = float(inputs.get("denoise", 1.0))
        color = int.from_bytes(images.sha_bytes(f"{positive}|{seed}")[:3], "big")
        picture = Picture(width, height, batch, color=color, text=positive, seed=seed)
        if isinstance(source, Picture) and denoise < 1.0:
            # img2img: the encoded image shows through, the more the less is denoised
            picture = source.with_(layers=(*source.layers, (picture, denoise)))
        final = await asyncio.to_thread(images.render, picture, 0, "")
        for step in range(1, steps + 1):
            await self.work(self.engine.speed.step_delay)
            preview = await asyncio.to_thread(images.sampling_preview, final, step, steps)
            await self.tick(step, step, steps, preview, "JPEG")
        return ("LATENT", width, height, batch, picture)


def _picture(latent: tuple[Any, ...]) -> Picture:
    _, width, height, batch, _ = latent
    return Picture(width, height, batch)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


_ACTION_NODES: Final = frozenset(
    {"ImageScaleBy", "ImagePadForOutpaint", "VAEEncode", "VAEEncodeForInpaint", "LatentUpscaleBy"}
)


def _action_node(ct: str, inputs: dict[str, Any]) -> tuple[Any, ...]:
    """The nodes gouache's result buttons use: scale, pad, encode, upscale a latent."""
    if ct == "ImageScaleBy":
        pic: Picture = inputs["image"]
        by = float(inputs["scale_by"])
        return (
            pic.with_(width=max(1, round(pic.width * by)), height=max(1, round(pic.height * by))),
        )
    if ct == "ImagePadForOutpaint":
        pic = inputs["image"]
        left, top, right, bottom = (int(inputs[k]) for k in ("left", "top", "right", "bottom"))
        old = pic.pad
        padded = pic.with_(
            width=pic.width + left + right,
            height=pic.height + top + bottom,
            pad=(old[0] + left, old[1] + top, old[2] + right, old[3] + bottom),
        )
        return (padded, ("MASK", padded.width, padded.height))
    if ct in ("VAEEncode", "VAEEncodeForInpaint"):
        pic = inputs["pixels"]
        return (("LATENT", pic.width, pic.height, pic.batch, pic),)
    _, width, height, batch, source = inputs["samples"]
    by = float(inputs["scale_by"])
    w, h = max(8, round(width * by)), max(8, round(height * by))
    scaled = source.with_(width=w, height=h) if isinstance(source, Picture) else source
    return (("LATENT", w, h, batch, scaled),)
