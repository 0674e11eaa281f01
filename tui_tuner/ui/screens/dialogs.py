"""Small modal screens: confirm a prune, and the key help."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
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
                f"Prune trial {self.number} ({escape(self.what)})?\n\n"
                "Its server and load generator are stopped now and the trial is recorded as "
                "pruned with what was measured so far.\n\n"
                "[b]y[/b] prune   [b]n[/b] / [b]esc[/b] keep it running"
            )

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


# At most 70 columns a line: the dialog is 72 wide at 80 columns, and a wrapped line pushed
# the last ones out of an 80x24 screen. The dialog scrolls if the screen is smaller still.
HELP = """\
[b]tui-tuner keys[/b]
  [b]p[/b]      pause after the running trial(s); again to resume
  [b]P[/b]      pause now: stop the running trial(s) (they run again)
  [b]x[/b]      prune the selected running trial (confirm with [b]y[/b])
  [b]e[/b]      edit the search space (from the next trial on)
  [b]s[/b]      export the best: vllm serve command + vLLM YAML
  [b]enter[/b]  details of the selected trial
  [b]l[/b]      logs: follow the running trial(s) / pin the selected one
  [b]g[/b]      GuideLLM's raw log instead of the server's, or back
  [b]o[/b]      sort the table by the next column (▼ best first)
  [b]q[/b]      quit: stop the running trial(s) cleanly; resumable
  [b]ctrl+p[/b] command palette     [b]?[/b] this help
[b]tok/s marks[/b]  [b]![/b] client-limited (may be low)  [b]±[/b] repeat spread
  [b]~[/b] partial figure of a pruned or running trial (dim)
Trials are stored as they finish: quitting or losing SSH never
loses one. Resume with [b]tui-tuner resume STUDY_DIR[/b].
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="help"):
            yield Static(HELP.rstrip())

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
