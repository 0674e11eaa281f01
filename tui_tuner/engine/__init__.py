"""The tuning engine (asyncio; imports core and optuna, never Textual): the study store over
Optuna storage and the trial loop. It talks to servers and load generators only through the
adapters' ports, so it runs the same under the TUI, headless, and in tests."""
