"""Take the README's picture of the asset graph from a running Dagster webserver.

Needs Debian's `chromium` and `chromium-driver` and the `docs` extra (selenium):

    apt-get install chromium chromium-driver
    .venv/bin/pip install -e '.[docs]'
    .venv/bin/python scripts/screenshot_asset_graph.py --url http://127.0.0.1:3000

It opens the `kommo` asset group's lineage page headless, dismisses the first-visit dialog, waits
for the asset nodes to render, zooms out until every declared stream fits (`--zoom-out` clicks of
the graph's zoom-out control: at full size a column of 22 nodes is taller than any window, and
the compact nodes still show each name) and saves a PNG (default `docs/asset-graph.png`).

With ``--asset kommo/chat_response_times --out docs/asset-chat-response-times.png`` it saves that
derived table's page instead, once its column schema has rendered.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from kommo_dagster.derived.declaration import ACTIVITY_TABLES
from kommo_dagster.kommo.streams import STREAMS


def _driver(*, width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={tempfile.mkdtemp(prefix='kommo-shot-')}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _click_if_present(driver: webdriver.Chrome, text: str) -> None:
    with contextlib.suppress(NoSuchElementException):
        driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()


def _zoom_out_button(driver: webdriver.Chrome) -> WebElement:
    """The graph's zoom-out control: the second of the icon buttons stacked in the bottom-right
    corner (zoom in, zoom out, then the graph's settings); they carry no label to find them by."""
    size = driver.get_window_size()
    corner = [
        b
        for b in driver.find_elements(By.TAG_NAME, "button")
        if b.location["x"] > size["width"] * 0.8 and b.location["y"] > size["height"] * 0.6
    ]
    if len(corner) < 2:
        raise RuntimeError("the graph's zoom controls were not found")
    return sorted(corner, key=lambda b: b.location["y"])[1]


def _wait_for_text(
    driver: webdriver.Chrome, ready: Callable[[str], bool], *, timeout: float, what: str
) -> None:
    """Wait until the page's text is ``ready`` (dismissing the first-visit dialog meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _click_if_present(driver, "Skip")
        if ready(driver.find_element(By.TAG_NAME, "body").text):
            return
        time.sleep(0.5)
    raise TimeoutError(what)


def take(
    *, url: str, out: Path, width: int, height: int, timeout: float, zoom_out_clicks: int
) -> None:
    driver = _driver(width=width, height=height)
    try:
        driver.get(f"{url.rstrip('/')}/locations/kommo_dagster/asset-groups/kommo")
        _wait_for_text(
            driver,
            lambda text: any(stream in text for stream in STREAMS),
            timeout=timeout,
            what=f"the asset graph at {url} showed none of the kommo streams",
        )
        time.sleep(2)  # let the graph settle after its layout animation
        _click_if_present(driver, "Skip")
        zoom_out = _zoom_out_button(driver)
        for _ in range(zoom_out_clicks):
            zoom_out.click()
            time.sleep(0.3)
        time.sleep(2)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def take_asset_page(
    *, url: str, asset: str, columns: list[str], out: Path, width: int, height: int, timeout: float
) -> None:
    """The page of one asset (its overview: description, column schema, row count), saved once
    every one of ``columns`` is on the page."""
    driver = _driver(width=width, height=height)
    try:
        driver.get(f"{url.rstrip('/')}/assets/{asset}")
        _wait_for_text(
            driver,
            lambda text: all(c in text for c in columns),
            timeout=timeout,
            what=f"the page of {asset} at {url} did not show its columns",
        )
        time.sleep(2)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="the webserver's address")
    parser.add_argument("--out", type=Path, default=Path("docs/asset-graph.png"))
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=2100)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--zoom-out", type=int, default=12, help="clicks of the zoom-out control")
    parser.add_argument(
        "--asset",
        help="instead of the graph, the page of this derived table (e.g. kommo/chat_response_times)"
        " with its column schema",
    )
    args = parser.parse_args()
    if args.asset:
        name = args.asset.rsplit("/", 1)[-1]
        take_asset_page(
            url=args.url,
            asset=args.asset,
            columns=list(ACTIVITY_TABLES[name].column_names),
            out=args.out,
            width=args.width,
            height=args.height,
            timeout=args.timeout,
        )
        print(f"saved {args.out}")
        return
    take(
        url=args.url,
        out=args.out,
        width=args.width,
        height=args.height,
        timeout=args.timeout,
        zoom_out_clicks=args.zoom_out,
    )
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
