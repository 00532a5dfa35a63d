"""gouache — a Discord image bot with a fair queue and a pool of image workers."""

__version__ = "0.1.0"
