"""Small modal screens: confirm a prune, and the key help."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["ConfirmPrune", "HelpScreen"]


class ConfirmPrune(ModalScreen[bool]):
    """`y` prunes, anything listed as no (or escape) keeps the trial running."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes, prune"),
        Binding("n,escape,q", "answer(False)", "No"),
    ]

    def __init__(self, number: int, what: str) -> None:
        super().__init__()
        self.number, self.what = number, what

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(
                f"Prune trial {self.number} ({self.what})?\n\n"
                "Its server and load generator are stopped now and the trial is recorded as "
                "pruned with what was measured so far.\n\n"
                "[b]y[/b] prune   [b]n[/b] / [b]esc[/b] keep it running"
            )

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


HELP = """\
[b]tui-tuner keys[/b]

  [b]p[/b]      pause after the running trial; press again to resume
  [b]P[/b]      pause now: stop the running trial (it runs again on resume)
  [b]x[/b]      prune the running trial (asks to confirm with [b]y[/b])
  [b]e[/b]      edit the search space (applies from the next trial)
  [b]s[/b]      export the best configuration (vllm serve command + vLLM YAML config)
  [b]enter[/b]  details of the selected trial
  [b]l[/b]      logs: follow the running trial / show the selected trial's
  [b]o[/b]      sort the trial table by the next column
  [b]q[/b]      quit: stops the running trial cleanly; the study stays resumable
  [b]ctrl+p[/b] command palette (every action)
  [b]?[/b]      this help

Trials are stored as they finish: quitting or losing the SSH session never loses one.
Resume with [b]tui-tuner resume STUDY_DIR[/b].
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(HELP)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
