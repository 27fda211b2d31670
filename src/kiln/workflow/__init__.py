"""The build workflow of atomic-reactor and incubator: sources, plugins, results."""

from kiln.workflow.source import Source, SourceError, SourceSpec, prepare_source

__all__ = ["Source", "SourceError", "SourceSpec", "prepare_source"]
