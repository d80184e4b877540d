# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The errors every per-container checkpoint operation raises, and what the caller makes of them.

An operation that fails raises OpError (or a subclass) carrying `partial`: the result it had built so far, so that
the module can report what was already done to the container (its `modified` key says whether something changed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError


class OpError(Exception):
    """This container's operation failed; the message says why and what to do."""

    daemon_unavailable = False

    def __init__(self, message: str, partial: Result | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class DaemonUnavailable(OpError):
    """The Docker daemon went away during the operation (killed, restarting): nothing can be concluded about the
    checkpoint; a later run tries again (no fallback applies)."""

    daemon_unavailable = True


class DumpInDoubt(OpError):
    """The dump's end was not seen (no answer in time, or an answer cut off): the daemon may still be dumping.
    Nothing is cleaned up behind it."""


def daemon_gone(exc: BaseException) -> bool:
    """Whether `exc` says the Docker daemon did not answer (rather than answered with an error)."""
    if isinstance(exc, OpError):
        return exc.daemon_unavailable
    return isinstance(exc, DockerAPIError) and exc.status is None


def message_of(exc: BaseException) -> str:
    """An operation's failure in words: an OpError's own message, anything else with its type."""
    return str(exc) if isinstance(exc, OpError) else f"{type(exc).__name__}: {exc}"


@contextmanager
def carrying(result: Result) -> Iterator[Result]:
    """Whatever the block raises leaves it as an OpError carrying `result`, what the operation had done so far.

    An OpError keeps its type and message (and a partial result it already carries); any other exception becomes an
    OpError with the exception's type in its message, marked daemon_unavailable when the Engine did not answer.
    """
    try:
        yield result
    except OpError as exc:
        if exc.partial is None:
            exc.partial = result
        raise
    except Exception as exc:
        error = OpError(message_of(exc), partial=result)
        error.daemon_unavailable = daemon_gone(exc)
        raise error from exc


def checkpoint_not_found(name: str, container: str, available: list[str]) -> OpError:
    """The error for a checkpoint the container does not have, naming those it has."""
    return OpError(f"checkpoint {name!r} not found for container {container}"
                   + (f" (it has: {', '.join(available)})" if available else " (it has none)"))
