"""Ends with a chained exception, uncaught, so python3 prints a real traceback to stderr.

The three tracebacks are joined the two ways Python joins them: "During handling of the above
exception, another exception occurred:" (implicit) and "The above exception was the direct cause
of the following exception:" (``raise ... from``). Used by tests/system/test_multiline.py and
tests/e2e/test_multiline_e2e.py.
"""

import json


def load_settings(text):
    return json.loads(text)


def todo_limit(settings):
    return settings["limits"]["todo"]


def main():
    try:
        limit = todo_limit(load_settings('{"limits": {}}'))
    except KeyError:
        try:
            with open("/nonexistent/todo-list/limit") as source:
                limit = int(source.read())
        except FileNotFoundError as error:
            raise RuntimeError("no todo limit configured") from error
    print(limit)


main()
