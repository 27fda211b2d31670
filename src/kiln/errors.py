"""kiln's exception tree.

Every failure a user can cause or meet is a ``KilnError``: ``str(error)`` is one line that
says what went wrong and where, the CLI prints exactly that line and exits non-zero, and
library callers can catch the whole family with one ``except``.
"""

from __future__ import annotations


class KilnError(Exception):
    """The root of every error kiln reports to a user."""


class DockerfileError(KilnError):
    """A problem in a Dockerfile, located by file and line.

    ``line`` and ``end_line`` are 1-based; ``line`` is ``None`` for problems that belong to
    the file as a whole (an empty Dockerfile, an unknown target stage).
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        end_line: int | None = None,
        file: str = "Dockerfile",
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.end_line = end_line if end_line is not None else line
        self.file = file
        self.hint = hint

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def in_file(self, file: str) -> DockerfileError:
        """The same error, reported against ``file`` (the parser only sees text)."""
        self.file = file
        return self


class ContextError(KilnError):
    """A problem with the build context: a bad .dockerignore, an unreadable path."""
