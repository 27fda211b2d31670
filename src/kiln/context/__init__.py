"""The build context: .dockerignore rules and a digest for every file a build may read."""

from kiln.context.ignore import (
    IgnorePattern,
    IgnoreRules,
    find_ignore_file,
    load_ignore,
    read_ignore_patterns,
)
from kiln.context.patterns import (
    MatchInfo,
    Pattern,
    PatternError,
    PatternMatcher,
    clean_path,
    match_glob,
)
from kiln.context.scan import (
    ContextEntry,
    ContextScan,
    ContextSnapshot,
    DigestCache,
    scan_context,
)

__all__ = [
    "ContextEntry",
    "ContextScan",
    "ContextSnapshot",
    "DigestCache",
    "IgnorePattern",
    "IgnoreRules",
    "MatchInfo",
    "Pattern",
    "PatternError",
    "PatternMatcher",
    "clean_path",
    "find_ignore_file",
    "load_ignore",
    "match_glob",
    "read_ignore_patterns",
    "scan_context",
]
