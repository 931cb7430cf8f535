"""Errors users can act on. The CLI prints them as one paragraph and exits non-zero."""

from __future__ import annotations


class OmnisimError(Exception):
    """Base for errors caused by the user's input (files, parameters), not by a bug.

    ``exit_code`` is what the CLI exits with: 2 for bad input, 1 for a failed run.
    """

    exit_code = 2

    def one_paragraph(self) -> str:
        text = " ".join(str(self).split())
        return text if text.startswith("error:") else "error: " + text
