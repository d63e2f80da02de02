"""What the libraries print, kept out of edgekit's output.

stdout carries only the result (the table, or the JSON with --json); edgekit's progress,
notes and warnings go to stderr. TensorFlow, tf2onnx, NNCF and ONNX Runtime print progress
bars to stdout (NNCF's "Statistics collection"), log through Python's logging (tf2onnx's
`optimize_transpose` tracebacks, `WARNING:root:Axis 1 is out-of-range`) and warn through
`warnings`. Here, once per process:
- without --debug, their log records below ERROR and their warnings are dropped;
- during a conversion step, their stdout goes to stderr, or nowhere with -q.

The CLI sets EDGEKIT_DEBUG / EDGEKIT_QUIET in the environment, so step child processes
behave the same way as the parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

DEBUG_ENV, QUIET_ENV = "EDGEKIT_DEBUG", "EDGEKIT_QUIET"
LIBRARY_LOGGERS = ("", "tf2onnx", "nncf", "absl", "tensorflow", "onnxruntime", "openvino", "h5py", "matplotlib")


def debug() -> bool:
    return os.environ.get(DEBUG_ENV) == "1"


def quiet() -> bool:
    return os.environ.get(QUIET_ENV) == "1"


def configure(debug_on: bool, quiet_on: bool | None = None) -> None:
    """Called by the CLI before any work: the choice holds here and in every child."""
    os.environ[DEBUG_ENV] = "1" if debug_on else "0"
    if quiet_on is not None:
        os.environ[QUIET_ENV] = "1" if quiet_on else "0"
    hush_libraries()


def hush_libraries() -> None:
    """Without --debug: library log records below ERROR and Python warnings are not shown."""
    if debug():
        return
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


@contextlib.contextmanager
def step_output():
    """Around a library call: its stdout to stderr (a progress bar is progress, not a result),
    or to nowhere with -q; its warnings and logs as hush_libraries decides."""
    hush_libraries()
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(open(os.devnull, "w")) if quiet() else sys.stderr
        stack.enter_context(contextlib.redirect_stdout(target))
        yield
