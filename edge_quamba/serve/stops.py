"""Stop sequences on streamed text: emit only what can no longer turn into a stop sequence.

OpenAI's rule: generation ends at the first occurrence of any stop sequence, which is not part of the returned text.
Text arrives in pieces (one per token or so), and a stop sequence may span pieces, so the matcher holds back the
longest tail of the text seen so far that is the beginning of some stop sequence, and releases it as soon as the next
piece shows it is not one. The text a stream sends is therefore always a prefix of the final text.
"""

from __future__ import annotations


class StopMatcher:
    """Feed text pieces in order; ``feed`` returns the text that is safe to send now."""

    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = tuple(s for s in stops if s)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.pending = ""  # held back: may be the start of a stop sequence
        self.text = ""  # everything released so far
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        buffer = self.pending + piece
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self.pending = True, ""
            return self._release(buffer[:min(hits)])
        hold = self._held_tail(buffer)
        self.pending = buffer[len(buffer) - hold:]
        return self._release(buffer[:len(buffer) - hold])

    def flush(self) -> str:
        """At the end of generation: release what was held back (it never became a stop sequence)."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return self._release(out)

    def _held_tail(self, buffer: str) -> int:
        for size in range(min(len(buffer), self.longest - 1), 0, -1):
            tail = buffer[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0

    def _release(self, text: str) -> str:
        self.text += text
        return text
