"""tui-tuner: find the fastest `vllm serve` settings, live in the terminal.

The package root imports nothing heavy; see DESIGN in docs/architecture.md for the layers.
"""

__version__ = "0.1.0"
