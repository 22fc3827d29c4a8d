"""Figures embedded in Snakemake's report text (workflow/report/*.rst), as Snakemake intends.

Snakemake registers the reStructuredText directives `embeddedimage` and `embeddedfigure` to put
an image into the report as a data URI, but in 9.27 the class that does it comes second in
their bases, after docutils' Image, whose `run` wins: the image keeps its file path, which the
single-file report cannot resolve (a broken image on the landing page). The Snakefile calls
`register()` to register the two names again, with the data URI made before docutils builds
the node. Nothing else of Snakemake's report changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils.parsers.rst import directives
from docutils.parsers.rst.directives.images import Figure, Image


class _DataUri:
    """Replaces the directive's path argument by the file's contents as a data URI."""

    def run(self) -> Any:
        from snakemake.report.common import data_uri_from_file

        # The path as written: docutils' uri() would drop its spaces (a results_dir may have some).
        path = self.arguments[0].strip()
        # docutils' default alt text is the argument, which would repeat the whole data URI.
        self.options.setdefault("alt", Path(path).name)
        self.arguments[0] = data_uri_from_file(path)
        return super().run()


class EmbeddedImage(_DataUri, Image):
    pass


class EmbeddedFigure(_DataUri, Figure):
    pass


def register() -> None:
    directives.register_directive("embeddedimage", EmbeddedImage)
    directives.register_directive("embeddedfigure", EmbeddedFigure)
