"""One exception hierarchy: every error a user can cause says what to fix."""


class SernasError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(SernasError, ValueError):
    """A search specification, preset or option is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup (corpus, strategy, preset, model family, op) failed."""

    def __init__(self, what: str, name: str, valid: list[str] | tuple[str, ...]) -> None:
        self.what, self.name, self.valid = what, name, sorted(valid)
        super().__init__(f"unknown {what} {name!r}; choose one of: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class DataError(SernasError):
    """A corpus cannot be read, or too little usable data is left to search on."""


class GenomeError(SernasError, ValueError):
    """A genome (or imported Genotype text) is malformed or inconsistent."""


class ResourceError(SernasError):
    """A search will not fit in the available memory or on any node's CPUs / GPUs; the message suggests a
    smaller setting."""


class SearchCancelled(SernasError):
    """The search was cancelled by its owner; its checkpoints remain and it can be resumed."""
