"""The Textual terminal UI: the only layer that imports Textual. It shows the engine's events
and sends it commands; it never blocks on process, network or storage work."""
