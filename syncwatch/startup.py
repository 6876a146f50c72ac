"""Start-up failures: one line naming what is wrong and what to do, and a sysexits code.

The codes follow sysexits(3) so that systemd can tell the kinds apart: the unit's
`RestartPreventExitStatus=` lists the ones a restart cannot fix (65, 73, 77, 78); the
others (69, 74, 75) may clear by themselves (the port is freed, space is freed, the other
process exits), so systemd keeps retrying them every `RestartSec`.
"""

from __future__ import annotations

import errno
import resource

EX_DATAERR = 65  # the state database is corrupt, or from a newer syncwatch
EX_UNAVAILABLE = 69  # daemon.listen cannot be bound (in use, or not an address of this host)
EX_CANTCREAT = 73  # the state file cannot be created (its path is a directory, …)
EX_IOERR = 74  # disk full or an I/O error on the state database
EX_TEMPFAIL = 75  # the state database is locked by another process
EX_NOPERM = 77  # the state database (or its directory) is unreadable or read-only
# EX_CONFIG = 78 lives in syncwatch.config: a broken config.

# A restart cannot fix these (nor EX_CONFIG): the unit's RestartPreventExitStatus= lists them.
PERMANENT = (EX_DATAERR, EX_CANTCREAT, EX_NOPERM)


class StartupError(Exception):
    """The daemon cannot start; `str()` is the one line to print, `exit_code` its sysexits code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def os_exit_code(exc: OSError) -> int:
    """The sysexits code of a file-system error on the state path."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return EX_NOPERM
    if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):
        return EX_CANTCREAT
    return EX_IOERR


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go does); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The kernel refuses an infinite NOFILE; 2**20 is its default nr_open.
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft
