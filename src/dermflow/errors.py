"""Errors a user can act on: their message names the file or field at fault."""


class DermflowError(Exception):
    """Base for expected failures; stages print the message, not a traceback.

    Every subclass pickles (a DDP rank hands its error to the job that way), whatever
    its ``__init__`` takes: it is rebuilt from its message arguments and attributes.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild, (type(self), self.args), self.__dict__


def _rebuild(cls: type[DermflowError], args: tuple[object, ...]) -> DermflowError:
    """An error of ``cls`` with ``args``, without calling its ``__init__`` (which may take
    other arguments than the message it made)."""
    err = cls.__new__(cls)
    err.args = args
    return err


class ConfigError(DermflowError):
    """A config value is missing, mistyped or out of range."""


class DatasetError(DermflowError):
    """Raw data is missing, unreadable or inconsistent."""


class DownloadError(DermflowError):
    """Fetching a remote file failed (offline, bad checksum, server error)."""


class DiskFullError(DermflowError):
    """A file system has too little free space for an output."""


class FileAccessError(DermflowError):
    """A file or folder cannot be written or read: permissions, or a read-only file system."""


class DamagedFileError(DermflowError):
    """A file a stage reads back is truncated, foreign or carries code; ``remedy`` says how
    to get a good one (usually ``rebuild(rule)``)."""

    def __init__(self, path: object, problem: str, remedy: str) -> None:
        super().__init__(f"{path}: {problem}; {remedy}")
        self.path = path


def rebuild(rule: str) -> str:
    """The remedy for a damaged output of ``rule``: Snakemake reruns it and what follows."""
    return f"rebuild it with `snakemake --forcerun {rule}`"
