"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class CalbenchError(Exception):
    """A problem with the user's input (file, recipe, option) rather than a bug."""


class UnknownNameError(CalbenchError, ValueError):
    """A name that is not in a registry (method, dataset, backbone, metric, ...)."""


class ConfigError(CalbenchError, ValueError):
    """A malformed recipe or option; the message names the file and key."""


class InputError(CalbenchError, ValueError):
    """A malformed input file (predictions, results, dataset layout)."""
