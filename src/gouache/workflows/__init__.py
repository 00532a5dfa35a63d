"""ComfyUI workflows shipped with gouache (API-format JSON + TOML binding declarations).

Load them with `gouache.pool.workflows.load_shipped`.
"""
