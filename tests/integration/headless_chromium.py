"""Debian's `chromium`, headless, for tests that look at a web UI: the rendered DOM of a page,
or a screenshot of it. `make test` installs the package when missing.

The page is given a virtual-time budget: Chromium runs the page's JavaScript and fetches and
only then dumps or paints, so a single-page app (the Temporal UI) is shown with its data,
not its loading state. Every run gets a fresh profile directory, no network but the page's,
and is killed if it outlives its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_binary() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt chromium)")
    return found


async def _run(url: str, *mode: str, budget_ms: int, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            chromium_binary(),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *mode,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group: a page that never settles is killed with its renderers.
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"chromium exited {process.returncode}: {err.decode()[-2000:]}")
        return out.decode()


async def dump_dom(url: str, *, budget_ms: int = 10_000, timeout: float = 60.0) -> str:
    """The page's DOM once its scripts and fetches have run."""
    return await _run(url, "--dump-dom", budget_ms=budget_ms, timeout=timeout)


async def screenshot(
    url: str,
    path: str,
    *,
    width: int = 1400,
    height: int = 800,
    budget_ms: int = 10_000,
    timeout: float = 60.0,
) -> None:
    """A PNG of the page at `width` x `height`, written to `path`."""
    await _run(
        url,
        f"--screenshot={path}",
        f"--window-size={width},{height}",
        budget_ms=budget_ms,
        timeout=timeout,
    )
