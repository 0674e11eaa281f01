"""Screens the app pushes over the dashboard: modal dialogs that hand a typed result back
through ``dismiss``, so the app decides what to do with it (the engine never sees a screen)."""
