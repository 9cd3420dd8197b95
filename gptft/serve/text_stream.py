"""Token ids to text pieces as they are generated, so that the pieces joined equal
`tokenizer.decode(all ids).strip()` (what `python -m gptft.generate` prints).

A piece is held back while the decoded text ends inside a multi-byte character (the tokenizer then
shows U+FFFD) and while it is trailing whitespace (stripped if nothing follows)."""
from __future__ import annotations

PARTIAL = "\ufffd"


class TextStream:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""  # text handed out so far

    def _ready(self, final: bool) -> str:
        text = self.tokenizer.decode(self.ids).lstrip()
        if final:
            return text.rstrip()
        if text.endswith(PARTIAL):
            text = text.rstrip(PARTIAL)
        return text.rstrip()

    def _piece(self, final: bool) -> str:
        text = self._ready(final)
        if not text.startswith(self.sent) or len(text) <= len(self.sent):
            return ""  # nothing new (or a tokenizer that rewrote earlier text: never retract)
        piece, self.sent = text[len(self.sent):], text
        return piece

    def push(self, token: int) -> str:
        """The text that `token` makes final ("" while held back)."""
        self.ids.append(token)
        return self._piece(final=False)

    def finish(self) -> str:
        """What is still held back once generation ended."""
        return self._piece(final=True)
