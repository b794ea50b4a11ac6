"""A secret callback (or prompt) for tests: it answers with a fixed value and records every
question it was asked, so a test can count how often, and for what, a secret was asked."""

from __future__ import annotations


class SecretAsker:
    """Answers `answer` and appends each description it is asked with to `asked`."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def __call__(self, description: str) -> str:
        self.asked.append(description)
        return self.answer
