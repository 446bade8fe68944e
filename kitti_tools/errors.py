"""The one error type for malformed KITTI files: it always names the file and, where known, the line."""
from typing import Optional


class KittiFormatError(ValueError):
    """A KITTI file is missing, truncated or malformed.

    The message starts with ``path:line:`` (or ``path:`` when no line applies) so a user can open
    the file at the offending place.
    """

    def __init__(self, path: str, message: str, line: Optional[int] = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
