"""vlmparity: is serving engine B as accurate as engine A for the same vision-language model?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vlmparity")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
