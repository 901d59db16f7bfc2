#!/usr/bin/env python3
"""Make docs/browser.png: the page with a few lines of chat, in headless Chromium.

    python3 tools/browser_screenshot.py [OUTPUT.png]

Starts a server on a free port, joins two browser users and a raw TCP
user, says a few lines, and saves a screenshot of one browser's page.
Needs what tests/test_browser.py needs (chromium, playwright).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support import Peer, ServerProcess                      # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT, missing  # noqa: E402


def main(argv) -> int:
    output = argv[1] if len(argv) > 1 else os.path.join(ROOT, "docs", "browser.png")
    problem = missing()
    if problem:
        print("browser_screenshot.py: " + problem, file=sys.stderr)
        return 1
    from playwright.sync_api import expect, sync_playwright
    with ServerProcess() as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = {}
        for name in ("alice", "bob"):
            page = browser.new_context(viewport={"width": 560, "height": 380}).new_page()
            page.goto("http://127.0.0.1:%d/" % server.port)
            page.fill("#name", name)
            page.click("#join-button")
            expect(page.locator("#status")).to_have_text("connected as " + name, timeout=WAIT)
            pages[name] = page
        carol = Peer(server.port, "carol")

        def say(name: str, text: str) -> None:
            page = pages[name]
            page.fill("#input", text)
            page.press("#input", "Enter")
            expect(page.locator("#input")).to_have_value("", timeout=WAIT)

        say("bob", "hi alice! carol is on nc in a terminal")
        carol.send("hello from the terminal")
        expect(pages["alice"].locator("#log")).to_contain_text("hello from the terminal",
                                                               timeout=WAIT)
        say("alice", "hello both, from a browser")
        say("bob", "/me waves")
        say("bob", "/msg alice lunch at noon?")
        say("alice", "<b>markup</b> shows as text")
        say("alice", "/who")
        alice = pages["alice"]
        expect(alice.locator("#log")).to_contain_text("3 online", timeout=WAIT)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        alice.screenshot(path=output)
        carol.close()
        browser.close()
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
