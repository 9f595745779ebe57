"""One exception type for user-facing errors: the CLI prints its message on one line, no traceback."""


class LMForgeError(Exception):
    """A problem with the user's input or environment; the message says what is wrong and what to do."""


# What an OSError's errno means to a user, and what to do about it.
_OS_CAUSES = {
    "ENOSPC": ("no space left on device", "free space or choose another path"),
    "EDQUOT": ("disk quota exceeded", "free space or choose another path"),
    "EFBIG": ("file too large for this file system", "choose another file system"),
    "EACCES": ("permission denied", "choose a path you can write or fix its permissions"),
    "EPERM": ("operation not permitted", "choose a path you can write or fix its permissions"),
    "EROFS": ("read-only file system", "choose a writable path"),
    "ENOTDIR": ("a parent of the path is a file, not a directory", "choose another path"),
    "EISDIR": ("the path is a directory", "give a file path"),
    "EEXIST": ("a file is in the way", "remove it or choose another path"),
    "ENOENT": ("no such file or directory", "check the path"),
    "ENAMETOOLONG": ("file name too long", "choose a shorter path"),
    "EMFILE": ("too many open files", "raise the limit (ulimit -n)"),
    "EIO": ("input/output error", "check the disk"),
}


def os_error_line(exc: OSError, path: object = None, doing: str = "writing", detail: str = "") -> str:
    """One line for an OSError: the cause in words, the path, `detail` (e.g. the size needed) and what
    to do; `path` defaults to the error's own file name."""
    import errno as errno_codes

    name = errno_codes.errorcode.get(exc.errno or 0, "")
    cause, advice = _OS_CAUSES.get(name, (exc.strerror or str(exc) or type(exc).__name__, ""))
    where = path if path is not None else exc.filename
    text = f"{cause} while {doing} {where}" if where is not None else cause
    if detail:
        text += f" ({detail})"
    return f"{text}; {advice}" if advice else text
