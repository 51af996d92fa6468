"""Screenshot of the demo page translating one input, taken in headless Chromium.

    python demo/screenshot.py runs/cpu-small/hub "In the beginning God created the heaven and the earth." docs/demo.png

Launches the app on 127.0.0.1 (a free port), types the text, clicks Translate, waits for the
translation and saves a PNG. Needs Debian's chromium (`apt-get install -y chromium`) and the
`playwright` pip package; no browser download.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# Chromium refuses to start as root without it.
CHROMIUM_ARGS = ["--no-sandbox"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(demo):
    """Serve a Gradio app on 127.0.0.1 in this process; yields its URL and closes it after."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


@contextmanager
def browser_page(width: int = 1000, height: int = 720):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def open_app(page, url: str) -> None:
    """Load the page and wait until Gradio has rendered the form (it renders after `load`)."""
    page.goto(url)
    page.get_by_label("English").wait_for()


def output_value(page) -> str:
    return page.get_by_label("Translation").input_value()


def translate_on_page(
    page, text: str, beam_size: int | None = None, fast: bool | None = None, timeout_s: float = 300
) -> str:
    """Fill the form as a person would, click Translate, wait for the output to change; returns
    the text the page shows. (The wait allows for the fast path's first compilation.)"""
    before = output_value(page)
    page.get_by_label("English").fill(text)
    if beam_size is not None:
        page.get_by_label("number input for Beam size").fill(str(beam_size))
        page.get_by_label("number input for Beam size").press("Enter")
    if fast is not None:
        checkbox = page.get_by_label("Fast CPU path")
        if checkbox.is_visible():
            checkbox.set_checked(fast)
        elif fast:  # hidden: the package is absent, or int8 would be slower on this CPU
            raise ValueError("the page offers no fast CPU path here (int8 needs VNNI or AMX).")
    page.get_by_role("button", name="Translate").click()
    deadline = time.monotonic() + timeout_s
    while output_value(page) == before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"The page showed no new translation within {timeout_s} s.")
        page.wait_for_timeout(100)
    return output_value(page)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="Model folder or Hub id.")
    parser.add_argument("text", help="The English input to translate.")
    parser.add_argument("output", help="PNG file to write.")
    parser.add_argument("--beam_size", type=int, default=4, help="Beam size (default %(default)s).")
    parser.add_argument(
        "--fast",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Use the fast CPU path (int8 weights).",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from app import build_demo

    with serve(build_demo(args.model)) as url, browser_page() as page:
        open_app(page, url)
        try:
            shown = translate_on_page(page, args.text, args.beam_size, args.fast)
        except ValueError as err:
            sys.exit(f"screenshot: {err} Drop --fast.")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.output, full_page=True)
    print(f"{args.text!r} -> {shown!r}; wrote {args.output}")


if __name__ == "__main__":
    main()
