"""The node types the ComfyUI stand-in knows, their `/object_info`, and prompt validation.

Validation follows ComfyUI 0.3.64's ``validate_prompt`` (see the captured 400
bodies in ``shared/fixtures/comfyui/builtin_errors.json``): the same error types,
messages, ``details`` strings and ``node_errors`` layout, including the quirks
that an exception while following a link is blamed on the *output* node, that
values are converted in place (``4`` becomes ``4.0`` for a FLOAT), and that a
prompt with some valid outputs is accepted with the invalid ones listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

Json = dict[str, Any]

#: Placeholders for combo lists that depend on server state.
CHECKPOINTS: Final = "@checkpoints"
INPUT_FILES: Final = "@input_files"
LORAS: Final = "@loras"

_SAMPLERS: Final = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc",
    "uni_pc_bh2",
]  # fmt: skip
_SCHEDULERS: Final = [
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
]  # fmt: skip
_UPSCALE: Final = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_MAX_SEED: Final = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class NodeDef:
    """One node class: its inputs (ComfyUI's ``INPUT_TYPES`` shape) and outputs."""

    name: str
    required: Mapping[str, list[Any]]
    outputs: tuple[str, ...] = ()
    output_names: tuple[str, ...] | None = None
    optional: Mapping[str, list[Any]] = field(default_factory=dict)
    hidden: Mapping[str, str] = field(default_factory=dict)
    output_node: bool = False
    category: str = "image"
    display_name: str | None = None
    description: str = ""
    python_module: str = "nodes"
    testing: bool = False

    def object_info(self, resolve: Callable[[str], list[str]]) -> Json:
        """This node's entry in ``GET /object_info``, dynamic combos resolved."""

        def spec(value: list[Any]) -> list[Any]:
            if value and isinstance(value[0], str) and value[0].startswith("@"):
                return [resolve(value[0]), *value[1:]]
            return list(value)

        inputs: Json = {"required": {k: spec(v) for k, v in self.required.items()}}
        order: Json = {"required": list(self.required)}
        if self.optional:
            inputs["optional"] = {k: spec(v) for k, v in self.optional.items()}
            order["optional"] = list(self.optional)
        if self.hidden:
            inputs["hidden"] = dict(self.hidden)
            order["hidden"] = list(self.hidden)
        return {
            "input": inputs,
            "input_order": order,
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.output_names or self.outputs),
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }

    def input_spec(self, name: str) -> list[Any] | None:
        """The declared spec of input ``name`` (required or optional)."""
        return self.required.get(name) or self.optional.get(name)


def _int(default: int, lo: int, hi: int, step: int | None = 1, **extra: Any) -> list[Any]:
    cfg: Json = {"default": default, "min": lo, "max": hi}
    if step is not None:
        cfg["step"] = step
    cfg.update(extra)
    return ["INT", cfg]


def _float(default: float, lo: float, hi: float, step: float, **extra: Any) -> list[Any]:
    return ["FLOAT", {"default": default, "min": lo, "max": hi, "step": step, **extra}]


_IMG_HIDDEN: Final = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

NODES: Final[dict[str, NodeDef]] = {
    d.name: d
    for d in (
        NodeDef(
            "EmptyImage",
            {
                "width": _int(512, 1, 16384),
                "height": _int(512, 1, 16384),
                "batch_size": _int(1, 1, 4096, None),
                "color": _int(0, 0, 16777215, 1, display="color"),
            },
            ("IMAGE",),
        ),
        NodeDef("ImageInvert", {"image": ["IMAGE"]}, ("IMAGE",), display_name="Invert Image"),
        NodeDef(
            "ImageBlur",
            {
                "image": ["IMAGE"],
                "blur_radius": _int(1, 1, 31),
                "sigma": _float(1.0, 0.1, 10.0, 0.1),
            },
            ("IMAGE",),
            category="image/postprocessing",
            display_name="Image Blur",
            python_module="comfy_extras.nodes_post_processing",
        ),
        NodeDef(
            "ImageScale",
            {
                "image": ["IMAGE"],
                "upscale_method": [_UPSCALE, {}],
                "width": _int(512, 0, 16384),
                "height": _int(512, 0, 16384),
                "crop": [["disabled", "center"], {}],
            },
            ("IMAGE",),
            category="image/upscaling",
            display_name="Upscale Image",
        ),
        NodeDef(
            "ImageBlend",
            {
                "image1": ["IMAGE", {}],
                "image2": ["IMAGE", {}],
                "blend_factor": _float(0.5, 0.0, 1.0, 0.01),
                "blend_mode": [
                    ["normal", "multiply", "screen", "overlay", "soft_light", "difference"],
                    {},
                ],
            },
            ("IMAGE",),
            category="image/postprocessing",
            python_module="comfy_extras.nodes_post_processing",
        ),
        NodeDef(
            "ImageAddNoise",
            {
                "image": ["IMAGE"],
                "seed": _int(
                    0,
                    0,
                    _MAX_SEED,
                    None,
                    control_after_generate=True,
                    tooltip="The random seed used for creating the noise.",
                ),
                "strength": _float(0.5, 0.0, 1.0, 0.01),
            },
            ("IMAGE",),
            python_module="comfy_extras.nodes_images",
        ),
        NodeDef(
            "GetImageSize",
            {"image": ["IMAGE"]},
            ("INT", "INT", "INT"),
            ("width", "height", "batch_size"),
            hidden={"unique_id": "UNIQUE_ID"},
            display_name="Get Image Size",
            description="Returns width and height of the image, and passes it through unchanged.",
            category="image",
            python_module="comfy_extras.nodes_images",
        ),
        NodeDef(
            "PrimitiveString",
            {"value": ["STRING", {}]},
            ("STRING",),
            category="utils/primitive",
            display_name="String",
            python_module="comfy_extras.nodes_primitive",
        ),
        NodeDef(
            "PreviewAny",
            {"source": ["*", {}]},
            output_node=True,
            category="utils",
            display_name="Preview Any",
            python_module="comfy_extras.nodes_preview_any",
        ),
        NodeDef(
            "SaveImage",
            {
                "images": ["IMAGE", {"tooltip": "The images to save."}],
                "filename_prefix": [
                    "STRING",
                    {"default": "ComfyUI", "tooltip": "The prefix for the file to save."},
                ],
            },
            hidden=_IMG_HIDDEN,
            output_node=True,
            display_name="Save Image",
            description="Saves the input images to your ComfyUI output directory.",
        ),
        NodeDef(
            "PreviewImage",
            {"images": ["IMAGE"]},
            hidden=_IMG_HIDDEN,
            output_node=True,
            display_name="Preview Image",
            description="Saves the input images to your ComfyUI output directory.",
        ),
        NodeDef(
            "SaveImageWebsocket",
            {"images": ["IMAGE"]},
            output_node=True,
            category="api/image",
            python_module="custom_nodes.websocket_image_save",
        ),
        NodeDef(
            "LoadImage",
            {"image": [INPUT_FILES, {"image_upload": True}]},
            ("IMAGE", "MASK"),
            display_name="Load Image",
        ),
        NodeDef(
            "CheckpointLoaderSimple",
            {
                "ckpt_name": [
                    CHECKPOINTS,
                    {"tooltip": "The name of the checkpoint (model) to load."},
                ]
            },
            ("MODEL", "CLIP", "VAE"),
            category="loaders",
            display_name="Load Checkpoint",
            description="Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
        ),
        NodeDef(
            "LoraLoader",
            {
                "model": ["MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}],
                "clip": ["CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}],
                "lora_name": [LORAS, {"tooltip": "The name of the LoRA."}],
                "strength_model": _float(1.0, -100.0, 100.0, 0.01),
                "strength_clip": _float(1.0, -100.0, 100.0, 0.01),
            },
            ("MODEL", "CLIP"),
            category="loaders",
            display_name="Load LoRA",
        ),
        NodeDef(
            "CLIPTextEncode",
            {
                "text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                "clip": ["CLIP"],
            },
            ("CONDITIONING",),
            category="conditioning",
            display_name="CLIP Text Encode (Prompt)",
        ),
        NodeDef(
            "EmptyLatentImage",
            {
                "width": _int(512, 16, 16384, 8),
                "height": _int(512, 16, 16384, 8),
                "batch_size": _int(1, 1, 4096, None),
            },
            ("LATENT",),
            category="latent",
            display_name="Empty Latent Image",
        ),
        NodeDef(
            "KSampler",
            {
                "model": ["MODEL"],
                "seed": _int(0, 0, _MAX_SEED, None, control_after_generate=True),
                "steps": _int(20, 1, 10000, None),
                "cfg": _float(8.0, 0.0, 100.0, 0.1, round=0.01),
                "sampler_name": [_SAMPLERS, {}],
                "scheduler": [_SCHEDULERS, {}],
                "positive": ["CONDITIONING"],
                "negative": ["CONDITIONING"],
                "latent_image": ["LATENT"],
                "denoise": _float(1.0, 0.0, 1.0, 0.01),
            },
            ("LATENT",),
            category="sampling",
            description="Uses the provided model, positive and negative conditioning to denoise the latent image.",
        ),
        # What gouache's result buttons use (`[comfyui.actions]`): scale, pad, encode.
        NodeDef(
            "ImageScaleBy",
            {
                "image": ["IMAGE"],
                "upscale_method": [_UPSCALE, {}],
                "scale_by": _float(1.0, 0.01, 8.0, 0.01),
            },
            ("IMAGE",),
            category="image/upscaling",
            display_name="Upscale Image By",
        ),
        NodeDef(
            "ImagePadForOutpaint",
            {
                "image": ["IMAGE"],
                "left": _int(0, 0, 16384, 8),
                "top": _int(0, 0, 16384, 8),
                "right": _int(0, 0, 16384, 8),
                "bottom": _int(0, 0, 16384, 8),
                "feathering": _int(40, 0, 16384, 1),
            },
            ("IMAGE", "MASK"),
            display_name="Pad Image for Outpainting",
        ),
        NodeDef(
            "VAEEncode",
            {"pixels": ["IMAGE"], "vae": ["VAE"]},
            ("LATENT",),
            category="latent",
            display_name="VAE Encode",
        ),
        NodeDef(
            "VAEEncodeForInpaint",
            {
                "pixels": ["IMAGE"],
                "vae": ["VAE"],
                "mask": ["MASK"],
                "grow_mask_by": _int(6, 0, 64, 1),
            },
            ("LATENT",),
            category="latent/inpaint",
            display_name="VAE Encode (for Inpainting)",
        ),
        NodeDef(
            "LatentUpscaleBy",
            {
                "samples": ["LATENT"],
                "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "bislerp"], {}],
                "scale_by": _float(1.5, 0.01, 8.0, 0.01),
            },
            ("LATENT",),
            category="latent",
            display_name="Upscale Latent By",
        ),
        NodeDef(
            "VAEDecode",
            {"samples": ["LATENT"], "vae": ["VAE"]},
            ("IMAGE",),
            category="latent",
            display_name="VAE Decode",
        ),
        # ComfyUI's own execution-test nodes, present on the server the
        # fixtures were captured from (tests/execution/testing_nodes).
        NodeDef(
            "TestSleep",
            {"value": ["*", {}], "seconds": _float(2.0, 0.0, 9999.0, 0.01)},
            ("*",),
            category="Testing/Nodes",
            python_module="custom_nodes.testing-suite",
            testing=True,
        ),
        NodeDef(
            "TestSyncError",
            {"value": ["*", {}]},
            ("*",),
            category="Testing/Nodes",
            python_module="custom_nodes.testing-suite",
            testing=True,
        ),
    )
}


def is_link(value: object) -> bool:
    """A link input: ``[node_id, output_index]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


@dataclass
class Validation:
    """The outcome of `validate_prompt`, ready to become a response body."""

    ok: bool
    error: Json | None
    node_errors: Json
    outputs: list[str]


def _invalid(message: str, details: str, kind: str = "invalid_prompt") -> Validation:
    return Validation(
        False,
        {"type": kind, "message": message, "details": details, "extra_info": {}},
        {},
        [],
    )


class _Validator:
    """One validation pass over a prompt (converts values in place like ComfyUI)."""

    def __init__(
        self,
        prompt: dict[str, Any],
        nodes: Mapping[str, NodeDef],
        resolve: Callable[[str], list[str]],
    ) -> None:
        self.prompt = prompt
        self.nodes = nodes
        self.resolve = resolve
        self.done: dict[str, tuple[bool, list[Json]]] = {}

    def node(self, node_id: str) -> tuple[bool, list[Json]]:
        """Validate ``node_id`` and what it links to: ``(valid, its own errors)``."""
        if node_id in self.done:
            return self.done[node_id]
        # Mark first: a cycle then reads as valid instead of recursing forever.
        self.done[node_id] = (True, [])
        entry = self.prompt[node_id]  # KeyError on a dangling link, as in ComfyUI
        definition = self.nodes[entry["class_type"]]
        inputs = entry.get("inputs") or {}
        errors: list[Json] = []
        valid = True
        for name, spec in [*definition.required.items(), *definition.optional.items()]:
            if name not in inputs:
                if name in definition.required:
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": name,
                            "extra_info": {"input_name": name},
                        }
                    )
                    valid = False
                continue
            value = inputs[name]
            config = self._resolved_spec(spec)
            if is_link(value):
                upstream_id, slot = value
                upstream = self.nodes[self.prompt[upstream_id]["class_type"]]
                received = upstream.outputs[slot]
                wanted = config[0]
                if isinstance(wanted, str) and "*" not in (wanted, received) and wanted != received:
                    details = f"{name}, received_type({received}) mismatch input_type({wanted})"
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": details,
                            "extra_info": {
                                "input_name": name,
                                "input_config": config,
                                "received_type": received,
                                "linked_node": value,
                            },
                        }
                    )
                    valid = False
                    continue
                if not self.node(upstream_id)[0]:
                    valid = False
                continue
            # LoadImage validates its file itself (VALIDATE_INPUTS), skipping the list check.
            custom = definition.name == "LoadImage" and name == "image"
            problem = None if custom else self._value(name, value, config, inputs)
            if problem is not None:
                errors.append(problem)
                valid = False
            elif custom and value not in self.resolve(INPUT_FILES):
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": f"{name} - Invalid image file: {value}",
                        "extra_info": {"input_name": name},
                    }
                )
                valid = False
        self.done[node_id] = (valid and not errors, errors)
        return self.done[node_id]

    def _resolved_spec(self, spec: list[Any]) -> list[Any]:
        kind = spec[0]
        cfg = spec[1] if len(spec) > 1 else {}
        if isinstance(kind, str) and kind.startswith("@"):
            return [self.resolve(kind), cfg]
        return [kind, cfg] if len(spec) > 1 else [kind]

    def _value(
        self, name: str, value: Any, config: list[Any], inputs: dict[str, Any]
    ) -> Json | None:
        kind = config[0]
        cfg: Json = config[1] if len(config) > 1 else {}
        if isinstance(kind, list):
            if value not in kind:
                return {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{value}' not in {kind}",
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": value,
                    },
                }
            return None
        converters: dict[str, Callable[[Any], Any]] = {
            "INT": int,
            "FLOAT": float,
            "STRING": str,
            "BOOLEAN": bool,
        }
        convert = converters.get(kind)
        if convert is None:
            return None
        try:
            converted = convert(value)
        except (TypeError, ValueError, OverflowError) as exc:
            return {
                "type": "invalid_input_type",
                "message": f"Failed to convert an input value to a {kind} value",
                "details": f"{name}, {value}, {exc}",
                "extra_info": {
                    "input_name": name,
                    "input_config": config,
                    "received_value": value,
                    "exception_message": str(exc),
                },
            }
        inputs[name] = converted
        if kind in ("INT", "FLOAT"):
            for bound, kind_name, word in (
                ("min", "value_smaller_than_min", "smaller than min of"),
                ("max", "value_bigger_than_max", "bigger than max of"),
            ):
                limit = cfg.get(bound)
                if limit is None:
                    continue
                if (bound == "min" and converted < limit) or (bound == "max" and converted > limit):
                    return {
                        "type": kind_name,
                        "message": f"Value {converted} {word} {limit}",
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": config,
                            "received_value": converted,
                        },
                    }
        return None


def validate_prompt(
    prompt: object,
    nodes: Mapping[str, NodeDef],
    resolve: Callable[[str], list[str]],
) -> Validation:
    """Validate an API-format prompt like ComfyUI does; values are converted in place.

    Raises `TypeError` for a prompt that is not an object (the real server
    answers that with a bare 500).
    """
    if not isinstance(prompt, dict):
        raise TypeError("prompt must be an object")
    for node_id, entry in prompt.items():
        if not isinstance(entry, dict) or "class_type" not in entry:
            return _invalid(
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
            )
        class_type = entry["class_type"]
        if class_type not in nodes:
            return _invalid(
                f"Cannot execute because node {class_type} does not exist.",
                f"Node ID '#{node_id}'",
            )
    outputs = [k for k, v in prompt.items() if nodes[v["class_type"]].output_node]
    if not outputs:
        return _invalid("Prompt has no outputs", "", "prompt_no_outputs")

    validator = _Validator(prompt, nodes, resolve)
    good: list[str] = []
    failed_reasons: list[Json] = []
    node_errors: Json = {}
    for output in outputs:
        before = set(validator.done)
        try:
            valid, reasons = validator.node(output)
        except (KeyError, IndexError, TypeError) as exc:
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(exc),
                    "extra_info": {
                        "exception_type": type(exc).__name__,
                        "traceback": [
                            '  File "gouache_sandbox/comfyui/nodes.py", in validate_prompt\n'
                        ],
                    },
                }
            ]
            validator.done[output] = (False, reasons)
        if valid:
            good.append(output)
            continue
        failed_reasons.extend(reasons)
        # Every node this output reached with errors of its own is listed, and
        # names this output among those that depend on it.
        for node_id in [output, *(n for n in validator.done if n not in before)]:
            node_valid, node_reasons = validator.done[node_id]
            if node_valid or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            if output not in entry["dependent_outputs"]:
                entry["dependent_outputs"].append(output)
    if not good:
        details = "\n".join(f"{r['message']}: {r['details']}" for r in failed_reasons)
        return Validation(
            False,
            {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            },
            node_errors,
            [],
        )
    return Validation(True, None, node_errors, good)
