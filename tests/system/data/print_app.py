"""A service of tests/system/test_multiline.py: prints normal lines and one real stack trace to stdout.

    python3 print_app.py NAME RUN

NAME picks what it prints between its normal lines ("NAME request I of RUN: ..."):
``todo-java`` the Java stack trace of java-trace.txt, ``todo-python`` the uncaught chained
traceback of python3 running raise_chained.py (a child process writing to the same stdout),
``todo-go`` the Go panic of go-panic.txt, ``todo-web`` nothing but normal lines, printed while
the others print. Lines go out one at a time, a few milliseconds apart, so that journald
interleaves the services' lines.
"""

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GAP_S = 0.01


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    time.sleep(GAP_S)


def normal_lines(name: str, run: str, first: int, count: int) -> None:
    for i in range(first, first + count):
        say(f"{name} request {i} of {run}: GET /api/todos/{i} 200 {i + 3} ms")


def main() -> None:
    name, run = sys.argv[1], sys.argv[2]
    if name == "todo-web":
        normal_lines(name, run, 0, 60)
        return
    time.sleep(0.1)  # todo-web is printing by now
    normal_lines(name, run, 0, 3)
    if name == "todo-python":
        subprocess.run([sys.executable, str(HERE / "raise_chained.py")], check=False)
    else:
        trace = (HERE / ("java-trace.txt" if name == "todo-java" else "go-panic.txt")).read_text()
        for line in trace.splitlines():
            say(line)
    normal_lines(name, run, 3, 3)


main()
