"""Run a command on a pseudo-terminal, and render what it wrote as the rows a terminal would show."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
import time
from collections.abc import Callable

# The control sequences the command line writes: carriage return, newline, and CSI sequences (clear to
# the end of the line, and the log renderer's colours).
TOKENS = re.compile(r"(\x1b\[[0-9;?]*[@-~]|\r|\n)")


def run_on_terminal(argv: list[str], env: dict[str, str], interrupt_when: Callable[[str], bool],
                    timeout: float = 120) -> tuple[str, int]:
    """Run `argv` with a pty as its controlling terminal; type Ctrl-C once `interrupt_when(output so far)`
    holds. Returns everything it wrote and its exit code."""
    pid, master = pty.fork()
    if pid == 0:  # the child: exec at once, and never return into the test process
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    try:
        output = _read_until_closed(master, interrupt_when, time.monotonic() + timeout)
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return output, os.waitstatus_to_exitcode(status)


def _read_until_closed(master: int, interrupt_when: Callable[[str], bool], deadline: float) -> str:
    output, interrupted = b"", False
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child has exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
        if not interrupted and interrupt_when(output.decode(errors="replace")):
            os.write(master, b"\x03")  # what Ctrl-C types: the terminal sends SIGINT to the command
            interrupted = True
    else:
        raise AssertionError(f"the command did not end:\n{output.decode(errors='replace')}")
    return output.decode(errors="replace")


def screen_rows(output: str) -> list[str]:
    """The rows a terminal shows after `output`: `\\r` returns to the row's start, text overwrites,
    `ESC [ K` clears to the end of the row, other escape sequences (colours) show nothing."""
    rows: list[list[str]] = [[]]
    row = column = 0
    for token in TOKENS.split(output):
        if token == "\r":
            column = 0
        elif token == "\n":
            row, column = row + 1, 0
            if row == len(rows):
                rows.append([])
        elif token == "\x1b[K":
            del rows[row][column:]
        elif not token.startswith("\x1b["):
            for char in token:
                rows[row][column:column + 1] = [char]
                column += 1
    return ["".join(chars) for chars in rows]
