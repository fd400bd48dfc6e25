"""Browser tests: Playwright for Python driving Debian's Chromium against the live server.

Chromium comes from the system (`apt-get install chromium`, done by .ci/run), never from a
download by Playwright. Without it the tests fail when CI=true, and are skipped only on a
developer machine that lacks it. Every page a test opens is checked for console errors,
uncaught exceptions and Content-Security-Policy violations, and screenshotted into
artifacts/screenshots/ (git-ignored).
"""

import os
import re
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CAVRA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "pw-for-tests-only"
# Reports every CSP violation to the console, in case the browser's own report is quiet.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (event) {
  console.error("CSP violation: " + event.violatedDirective + " blocked " + event.blockedURI);
});
"""


def _browser_or_skip():
    """Playwright's sync API and the system Chromium, or fail (CI) / skip (elsewhere)."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover (the dev extra installs it)
        if in_ci:
            pytest.fail("playwright is not installed: install the dev extra (.[dev])")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if in_ci:
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with apt-get")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return sync_playwright


@pytest.fixture
def browser(monkeypatch):
    sync_playwright = _browser_or_skip()
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


class Session:
    """One browser tab with the problems it saw and a screenshot helper."""

    def __init__(self, page, name: str) -> None:
        self.page = page
        self.name = name
        self.problems: list[str] = []
        self.shots: list[Path] = []

    def shot(self, step: str, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{len(self.shots) + 1:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        self.shots.append(path)
        return path


@pytest.fixture
def open_session(browser, live_server, request):
    """`open_session(name, viewport=…)` → a Session on the live server."""
    sessions: list[Session] = []

    def open_(name: str, *, width: int = 1280, height: int = 900) -> Session:
        context = browser.new_context(
            base_url=live_server.url,
            viewport={"width": width, "height": height},
            accept_downloads=True,
        )
        context.add_init_script(CSP_LISTENER)
        page = context.new_page()
        page.set_default_timeout(15_000)
        session = Session(page, re.sub(r"\W+", "-", name).strip("-"))
        page.on(
            "console",
            lambda message: (
                session.problems.append(f"console {message.type}: {message.text}")
                if message.type in ("error", "warning") or "Content Security Policy" in message.text
                else None
            ),
        )
        page.on("pageerror", lambda error: session.problems.append(f"page error: {error}"))
        sessions.append(session)
        return session

    yield open_
    for session in sessions:
        session.page.context.close()


def log_in(session: Session, path: str, username: str) -> None:
    """Open `path`, get sent to the console's sign-in page, sign in, land back on `path`."""
    page = session.page
    page.goto(path)
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.press("#id_password", "Enter")


def follow(locator) -> None:
    """Click a link or a submit button and wait until the next page has loaded."""
    with locator.page.expect_navigation():
        locator.click()
