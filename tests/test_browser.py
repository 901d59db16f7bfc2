"""The page in a real browser: headless Chromium driven by Playwright.

Test-only dependencies: `apt-get install -y chromium` and
`pip install playwright` (Playwright's own browser download is not used:
it drives the system's Chromium). Without them these tests skip, saying why.
"""

import os
import re
import shutil
import unittest
from typing import Optional

from tests.support import Peer, ServerProcess, child_env, free_port

try:
    from playwright.sync_api import Error as PlaywrightError, expect, sync_playwright
except ImportError:     # pragma: no cover - depends on the machine
    sync_playwright = None

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT = 10000    # ms: how long expect() waits for a condition


def missing() -> Optional[str]:
    if sync_playwright is None:
        return "Playwright for Python is not installed (pip install playwright)"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return "no Chromium at %s (apt-get install -y chromium)" % CHROMIUM
    return None


@unittest.skipIf(missing(), missing() or "")
class BrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.playwright = sync_playwright().start()
        try:
            cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM,
                                                         args=CHROMIUM_ARGS)
        except PlaywrightError:
            cls.playwright.stop()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.browser.close()
        cls.playwright.stop()

    def server(self, *args: str, port: int = 0, env: Optional[dict] = None) -> ServerProcess:
        server = ServerProcess(*args, port=port, env=env)
        self.addCleanup(server.__exit__)
        return server.start()

    def page(self, server: ServerProcess, name: Optional[str] = None):
        """A browser user, in a context of its own, that joined as name."""
        context = self.browser.new_context(viewport={"width": 800, "height": 600})
        self.addCleanup(context.close)
        page = context.new_page()
        page.goto("http://127.0.0.1:%d/" % server.port)
        if name is not None:
            page.fill("#name", name)
            page.click("#join-button")
            expect(page.locator("#status")).to_have_text("connected as " + name, timeout=WAIT)
        return page

    def say(self, page, text: str) -> None:
        page.fill("#input", text)
        page.press("#input", "Enter")
        expect(page.locator("#input")).to_have_value("", timeout=WAIT)

    def test_two_browsers_and_a_terminal(self) -> None:
        server = self.server()
        alice = self.page(server, "alice")
        bob = self.page(server, "bob")
        carol = Peer(server.port, "carol")
        self.addCleanup(carol.close)
        expect(alice.locator("#log")).to_contain_text("carol joined", timeout=WAIT)

        markup = '<img src=x onerror="document.title=1"> <b>hi</b>'
        self.say(alice, markup)
        carol.expect(r"<alice> " + re.escape(markup) + "$")
        line = bob.locator(".line.message", has_text="<b>hi</b>")
        expect(line).to_contain_text(markup, timeout=WAIT)
        expect(line.locator(".from")).to_have_text("alice")
        self.assertEqual(bob.locator("#log img, #log b").count(), 0)
        self.assertEqual(bob.title(), "Broadcast Chat")
        expect(alice.locator(".line.own", has_text="<b>hi</b>")).to_have_count(1, timeout=WAIT)
        stamp = line.locator("time")
        self.assertRegex(stamp.inner_text(), r"\d\d:\d\d")
        self.assertRegex(stamp.get_attribute("datetime"), r"Z$")

        carol.send("hello browsers")
        for page in (alice, bob):
            expect(page.locator(".line.message", has_text="hello browsers")
                   .locator(".from")).to_have_text("carol", timeout=WAIT)
        carol.sendraw(b"pasted one\npasted two\npasted three\n")     # one object, three lines
        expect(alice.locator(".line.message", has_text="pasted")).to_have_count(3, timeout=WAIT)
        pasted = alice.locator(".line.message", has_text="pasted").all_inner_texts()
        self.assertEqual([text.rsplit(" ", 2)[-2:] for text in pasted],
                         [["pasted", "one"], ["pasted", "two"], ["pasted", "three"]])

        self.say(bob, "/me waves")
        expect(alice.locator(".line.action")).to_contain_text("* bob waves", timeout=WAIT)
        self.say(alice, "/msg bob for your eyes only")
        private = bob.locator(".line.private", has_text="for your eyes only")
        expect(private.locator(".from")).to_have_text("alice", timeout=WAIT)
        expect(alice.locator(".line.private.own")).to_contain_text("-> bob for your eyes only",
                                                                   timeout=WAIT)
        self.assertNotIn("eyes only", "\n".join(carol.sync()))

        self.say(bob, "/who")
        expect(bob.locator(".line.notice", has_text="3 online")).to_contain_text(
            "3 online: alice, bob, carol", timeout=WAIT)
        self.say(alice, "/nick alicia")
        carol.expect(r"-- alice is now known as alicia")
        expect(alice.locator("#status")).to_have_text("connected as alicia", timeout=WAIT)
        self.say(alice, "still me")
        expect(alice.locator(".line.own", has_text="still me")).to_have_count(1, timeout=WAIT)
        self.say(bob, "/quit")
        carol.expect(r"-- bob left \(quit\)")
        expect(bob.locator("#status")).to_contain_text("left the chat", timeout=WAIT)

    def test_reconnects_after_a_server_restart(self) -> None:
        port = free_port()
        first = self.server(port=port)
        dora = self.page(first, "dora")
        first.stop()
        first.__exit__()
        expect(dora.locator("#status")).to_contain_text("reconnecting", timeout=WAIT)
        expect(dora.locator(".line.error").first).to_contain_text("connection lost",
                                                                  timeout=WAIT)
        second = self.server(port=port)
        expect(dora.locator("#status")).to_have_text("connected as dora", timeout=3 * WAIT)
        eve = Peer(second.port, "eve")
        self.addCleanup(eve.close)
        self.say(dora, "back again")
        eve.expect(r"<dora> back again$")

    def test_over_tls(self) -> None:
        here = os.path.dirname(os.path.abspath(__file__))
        server = self.server("--tls-cert", os.path.join(here, "test_cert.pem"),
                             "--tls-key", os.path.join(here, "test_key.pem"))
        context = self.browser.new_context(ignore_https_errors=True)   # self-signed
        self.addCleanup(context.close)
        page = context.new_page()
        page.goto("https://localhost:%d/" % server.port)
        page.fill("#name", "tess")
        page.click("#join-button")
        expect(page.locator("#status")).to_have_text("connected as tess", timeout=WAIT)
        self.say(page, "sealed")
        expect(page.locator(".line.own", has_text="sealed")).to_have_count(1, timeout=WAIT)
        server.log.expect(r"http \S+ GET /ws 101")

    def test_password(self) -> None:
        server = self.server(env=child_env(BROADCAST_PASSWORD="open sesame"))
        page = self.page(server)
        page.fill("#name", "frank")
        page.click("#join-button")
        expect(page.locator("#password")).to_be_visible(timeout=WAIT)
        expect(page.locator("#status")).to_have_text("this chat has a password", timeout=WAIT)
        page.fill("#password", "guess")
        page.click("#join-button")
        expect(page.locator("#status")).to_have_text("wrong password: try again", timeout=WAIT)
        page.fill("#password", "open sesame")
        page.click("#join-button")
        expect(page.locator("#status")).to_have_text("connected as frank", timeout=WAIT)
        gina = Peer(server.port, greet=False)
        self.addCleanup(gina.close)
        gina.send("/pass open sesame")
        gina.expect(r"-- Broadcast Chat")
        gina.nick("gina")
        self.say(page, "the door is open")
        gina.expect(r"<frank> the door is open$")


if __name__ == "__main__":
    unittest.main()
