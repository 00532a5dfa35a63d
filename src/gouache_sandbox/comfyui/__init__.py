"""A loopback stand-in for a ComfyUI server (tests and ``gouache demo``).

It speaks ComfyUI 0.3.64's HTTP and WebSocket API with the message shapes and
order captured in ``shared/fixtures/comfyui``, "generates" images with Pillow
(deterministic per prompt text and seed), and injects faults: HTTP 500 on chosen
routes, WebSocket drops, a crash mid-job (queue and history lost, like a killed
process), ignored or late interrupts. Usage::

    async with ComfyUISandbox(speed=Speed(step_delay=0.05)) as comfy:
        ...  # point a ComfyUI client at comfy.url
"""

from gouache_sandbox.comfyui.engine import Checkpoint, Engine, Faults, Speed
from gouache_sandbox.comfyui.nodes import NODES, NodeDef, validate_prompt
from gouache_sandbox.comfyui.server import COMFYUI_VERSION, ComfyUISandbox

__all__ = [
    "COMFYUI_VERSION",
    "NODES",
    "Checkpoint",
    "ComfyUISandbox",
    "Engine",
    "Faults",
    "NodeDef",
    "Speed",
    "validate_prompt",
]
