"""Stand-ins for the services gouache talks to but tests cannot reach: a Discord server
(REST, gateway, permissions, rate limits, faults) with a Midjourney bot inside it, a
ComfyUI server, an Ollama server, and an instant worker.

A package beside `gouache`, not inside it: the product never imports it (only
`gouache demo`, the tests and the benchmarks do; `tests/test_structure.py`
checks). They follow the real peers' documented behaviour (`docs/protocols.md`).
"""
