"""The build workflow of atomic-reactor and incubator: sources, plugins, results."""

from kiln.workflow.description import BuildDescription, DescriptionError, RegistrySpec
from kiln.workflow.plugin import NoArgs, Phase, Plugin, PluginError, PluginRegistry, PluginSpec
from kiln.workflow.results import BuildResults, PluginRun, PushedImage
from kiln.workflow.source import Source, SourceError, SourceSpec, prepare_source
from kiln.workflow.workflow import BuildCancelled, BuildWorkflow

__all__ = [
    "BuildCancelled",
    "BuildDescription",
    "BuildResults",
    "BuildWorkflow",
    "DescriptionError",
    "NoArgs",
    "Phase",
    "Plugin",
    "PluginError",
    "PluginRegistry",
    "PluginRun",
    "PluginSpec",
    "PushedImage",
    "RegistrySpec",
    "Source",
    "SourceError",
    "SourceSpec",
    "prepare_source",
]
