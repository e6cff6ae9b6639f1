"""The "API keys" dashboard in a real headless Chromium, against a real `gateway serve`.

Each test works on its own keys (unique names), so the tests can share one gateway. The
proxy checks use real HTTP requests through the gateway to the echo upstream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import Gateway, sign_in, wait_until

KEY_VALUE = re.compile(r"^gw_[0-9A-Za-z]{38}$")


def unique(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:6]}"


def create_key(gateway: Gateway, name: str, **fields: Any) -> tuple[dict[str, Any], str]:
    """A key made through the admin API (for tests whose subject is another action)."""
    response = gateway.admin("POST", "/v1/keys", json={"name": name, "scope": "read", **fields})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["apiKey"], body["secret"]


def row(page: Page, name: str) -> Any:
    return page.locator("#keys-body tr").filter(has=page.get_by_role("link", name=name, exact=True))


def open_menu(page: Page, name: str) -> Any:
    page.get_by_role("button", name=f"Actions for {name}", exact=True).click()
    menu = page.get_by_role("menu", name=f"Actions for {name}")
    expect(menu).to_be_visible()
    return menu


def choose(page: Page, name: str, action: str) -> None:
    open_menu(page, name).get_by_role("menuitem", name=action, exact=True).click()


def error_code(response: Any) -> str:
    return response.json()["error"]["code"]


def assert_value_gone(page: Page, value: str) -> None:
    """The key value is nowhere: DOM, URL, web storage."""
    assert value not in page.content()
    assert value not in page.url
    storage = page.evaluate(
        "() => JSON.stringify([Object.entries(sessionStorage), Object.entries(localStorage)])"
    )
    assert value not in storage


def test_sign_in_keeps_the_key_in_session_storage_only(page: Page, gateway: Gateway) -> None:
    sign_in(page, gateway.admin_key)
    assert page.evaluate("sessionStorage.getItem('gateway.adminKey')") == gateway.admin_key
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert gateway.admin_key not in page.url
    assert gateway.admin_key not in page.content()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin API key")).to_be_focused()
    assert page.evaluate("sessionStorage.getItem('gateway.adminKey')") is None


def test_a_non_admin_key_is_refused_with_its_request_id(page: Page, gateway: Gateway) -> None:
    _, read_value = create_key(gateway, unique("Read only"))
    page.goto("/")
    page.get_by_label("Admin API key").fill(read_value)
    with page.expect_response(re.compile(r"/v1/keys\?")) as answer:
        page.get_by_role("button", name="Sign in").click()
    envelope = answer.value.json()["error"]
    assert answer.value.status == 403 and envelope["code"] == "INSUFFICIENT_SCOPE"
    alert = page.locator("#signin-error")
    expect(alert).to_contain_text(envelope["message"])
    expect(alert.locator(".request-id")).to_have_text(envelope["requestId"])
    assert page.evaluate("sessionStorage.getItem('gateway.adminKey')") is None


def test_a_revoked_admin_key_returns_to_sign_in(page: Page, gateway: Gateway) -> None:
    admin, admin_value = create_key(gateway, unique("Second admin"), scope="admin")
    sign_in(page, admin_value)
    assert gateway.admin("POST", f"/v1/keys/{admin['id']}/revoke").status_code == 200
    page.get_by_role("tab", name="Active").click()
    expect(page.locator("#signin-error")).to_contain_text("revoked")
    expect(page.locator("#signin-error .request-id")).not_to_be_empty()
    assert page.evaluate("sessionStorage.getItem('gateway.adminKey')") is None


def test_create_a_key_copy_its_value_and_see_it_once(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    name = unique("Billing sync")
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="Create key")
    expect(dialog.get_by_label("Name")).to_be_focused()
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Scope").select_option("write")
    dialog.get_by_label("All sites").uncheck()
    dialog.get_by_label("Site ids").fill("site-a, site-b")
    dialog.get_by_label("Rate limit").fill("100/minute")
    with page.expect_response("**/v1/keys") as answer:
        dialog.get_by_role("button", name="Create key").click()
    assert answer.value.status == 201
    created = answer.value.json()

    secret_dialog = page.get_by_role("dialog", name="Copy your new API key")
    expect(secret_dialog).to_contain_text("will not be shown")
    value = page.get_by_label("New key value").input_value()
    assert KEY_VALUE.match(value) and value == created["secret"]
    secret_dialog.get_by_role("button", name="Copy").click()
    expect(secret_dialog.get_by_role("status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == value

    secret_dialog.get_by_role("button", name="I have copied the key").click()
    expect(secret_dialog).to_be_hidden()
    assert page.get_by_label("New key value").input_value() == ""
    assert_value_gone(page, value)

    key_row = row(page, name)
    expect(key_row).to_contain_text(created["apiKey"]["hint"])
    expect(key_row).to_contain_text("Write")
    expect(key_row).to_contain_text("site-a, site-b")
    page.reload()
    expect(row(page, name)).to_contain_text(created["apiKey"]["hint"])
    assert_value_gone(page, value)

    if gateway.proxy_url:
        response = gateway.proxy(value, "/sites/site-a/orders")
        assert response.status_code == 200, response.text


def test_edit_changes_name_and_scope_not_the_value(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    name, new_name = unique("Reporting"), unique("Reporting v2")
    key, value = create_key(gateway, name)
    page.reload()
    choose(page, name, "Edit Key")
    dialog = page.get_by_role("dialog", name=f"Edit key “{name}”")
    expect(dialog).to_contain_text("does not change the key value")
    expect(dialog.get_by_label("Name")).to_have_value(name)
    dialog.get_by_label("Name").fill(new_name)
    dialog.get_by_label("Scope").select_option("write")
    with page.expect_request(f"**/v1/keys/{key['id']}") as sent:
        dialog.get_by_role("button", name="Save").click()
    assert sent.value.method == "PATCH"
    assert sent.value.post_data_json == {"name": new_name, "scope": "write"}  # changed only

    expect(row(page, new_name)).to_contain_text("Write")
    expect(row(page, name)).to_have_count(0)
    expect(row(page, new_name)).to_contain_text(key["hint"])
    assert gateway.admin("GET", f"/v1/keys/{key['id']}").json()["apiKey"]["scope"] == "write"
    if gateway.proxy_url:
        assert gateway.proxy(value).status_code == 200


def test_rotate_stops_the_old_value_at_once(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    name = unique("Mobile app")
    key, old_value = create_key(gateway, name)
    if gateway.proxy_url:
        assert gateway.proxy(old_value).status_code == 200
    page.reload()
    choose(page, name, "Rotate Key")
    confirm = page.get_by_role("dialog", name=f"Rotate key “{name}”?")
    expect(confirm).to_contain_text("The old value stops working immediately")
    expect(confirm.get_by_label("Grace period in seconds")).to_have_value("0")
    confirm.get_by_role("button", name="Rotate key").click()

    secret_dialog = page.get_by_role("dialog", name="Copy your new API key")
    expect(secret_dialog).to_contain_text("The old value has stopped working")
    new_value = page.get_by_label("New key value").input_value()
    assert KEY_VALUE.match(new_value) and new_value != old_value
    secret_dialog.get_by_role("button", name="I have copied the key").click()
    assert_value_gone(page, new_value)
    rotated = gateway.admin("GET", f"/v1/keys/{key['id']}").json()["apiKey"]
    expect(row(page, name)).to_contain_text(rotated["hint"])

    if gateway.proxy_url:
        old = gateway.proxy(old_value)
        assert old.status_code == 401 and error_code(old) == "INVALID_API_KEY"
        assert gateway.proxy(new_value).status_code == 200


def test_revoke_then_delete(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    name = unique("Old partner")
    key, value = create_key(gateway, name)
    page.reload()

    menu = open_menu(page, name)
    expect(menu.get_by_role("menuitem", name="Delete Key")).to_have_count(0)
    revoke_item = menu.get_by_role("menuitem", name="Revoke Key")
    assert "danger" in (revoke_item.get_attribute("class") or "")
    expect(revoke_item).to_have_css("color", "rgb(196, 43, 43)")
    revoke_item.click()
    confirm = page.get_by_role("dialog", name=f"Revoke key “{name}”?")
    expect(confirm).to_contain_text("401")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    confirm.get_by_role("button", name="Revoke key").click()
    expect(row(page, name)).to_contain_text("Revoked")

    page.get_by_role("tab", name="Active").click()
    expect(page.get_by_role("tab", name="Active")).to_have_attribute("aria-selected", "true")
    expect(row(page, name)).to_have_count(0)
    page.get_by_role("tab", name="Revoked").click()
    expect(row(page, name)).to_contain_text("Revoked")
    if gateway.proxy_url:
        revoked = gateway.proxy(value)
        assert revoked.status_code == 401 and error_code(revoked) == "KEY_REVOKED"

    menu = open_menu(page, name)
    delete_item = menu.get_by_role("menuitem", name="Delete Key")
    expect(delete_item).to_have_css("color", "rgb(196, 43, 43)")
    delete_item.click()
    confirm = page.get_by_role("dialog", name=f"Delete key “{name}”?")
    expect(confirm).to_contain_text("irreversible")
    with page.expect_response(f"**/v1/keys/{key['id']}") as answer:
        confirm.get_by_role("button", name="Delete key").click()
    assert answer.value.status == 204
    expect(row(page, name)).to_have_count(0)
    page.get_by_role("tab", name="All").click()
    expect(page.locator("#keys-body tr").first).to_be_visible()
    expect(row(page, name)).to_have_count(0)
    assert gateway.admin("GET", f"/v1/keys/{key['id']}").status_code == 404


def test_a_field_error_shows_its_request_id(signed_in: Page) -> None:
    page = signed_in
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="Create key")
    dialog.get_by_label("Name").fill(unique("Bad limit"))
    dialog.get_by_label("Rate limit").fill("lots please")
    with page.expect_response("**/v1/keys") as answer:
        dialog.get_by_role("button", name="Create key").click()
    envelope = answer.value.json()["error"]
    assert answer.value.status == 400 and envelope["details"]["field"] == "rateLimit"

    alert = dialog.locator(".form-error")
    expect(alert).to_contain_text(envelope["message"])
    expect(alert).to_contain_text(f"(request id: {envelope['requestId']})")
    rate = dialog.get_by_label("Rate limit")
    expect(rate).to_have_attribute("aria-invalid", "true")
    expect(rate).to_be_focused()
    expect(dialog.locator("#f-rate-error")).to_have_text(envelope["details"]["reason"])


def test_a_conflict_shows_its_request_id(signed_in: Page, gateway: Gateway) -> None:
    """Rotating a key that another administrator revoked meanwhile: 409 with its id."""
    page = signed_in
    name = unique("Raced")
    key, _ = create_key(gateway, name)
    page.reload()
    expect(row(page, name)).to_contain_text("Active")
    assert gateway.admin("POST", f"/v1/keys/{key['id']}/revoke").status_code == 200

    choose(page, name, "Rotate Key")
    confirm = page.get_by_role("dialog", name=f"Rotate key “{name}”?")
    with page.expect_response(f"**/v1/keys/{key['id']}/rotate") as answer:
        confirm.get_by_role("button", name="Rotate key").click()
    envelope = answer.value.json()["error"]
    assert answer.value.status == 409 and envelope["code"] == "KEY_REVOKED"
    expect(confirm.locator(".form-error")).to_have_text(
        f"{envelope['message']} (request id: {envelope['requestId']})"
    )


def test_a_missing_key_shows_the_not_found_error(signed_in: Page) -> None:
    page = signed_in
    with page.expect_response("**/v1/keys/key_0000000000000000") as answer:
        page.goto("/#/keys/key_0000000000000000")
    envelope = answer.value.json()["error"]
    assert answer.value.status == 404
    expect(page.locator("#banner")).to_contain_text(
        f"{envelope['message']} (request id: {envelope['requestId']})"
    )


def test_row_menu_works_from_the_keyboard(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    name = unique("Keyboard")
    create_key(gateway, name)
    page.reload()
    trigger = page.get_by_role("button", name=f"Actions for {name}", exact=True)
    expect(trigger).to_have_attribute("aria-haspopup", "menu")
    trigger.focus()
    page.keyboard.press("Enter")
    menu = page.get_by_role("menu", name=f"Actions for {name}")
    expect(menu).to_be_visible()
    expect(trigger).to_have_attribute("aria-expanded", "true")
    expect(menu.get_by_role("menuitem", name="View Details")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(menu.get_by_role("menuitem", name="Edit Key")).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(trigger).to_be_focused()
    expect(trigger).to_have_attribute("aria-expanded", "false")

    # Enter on a menu item acts; the details heading then takes the focus.
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=name, level=1)).to_be_focused()


def test_load_more_pages_through_the_list(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    batch = unique("Batch")
    for index in range(26):
        create_key(gateway, f"{batch} {index:02d}")
    page.reload()
    rows = page.locator("#keys-body tr")
    expect(rows).to_have_count(25)
    load_more = page.get_by_role("button", name="Load more")
    load_more.click()
    wait_until(lambda: rows.count() > 25, 10, "the second page")
    expect(row(page, f"{batch} 00")).to_have_count(1)


def test_phone_viewport_fits(browser: Any, gateway: Gateway) -> None:
    context = browser.new_context(
        base_url=gateway.admin_url, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    try:
        page = context.new_page()
        name = unique("A rather long key name for a phone")
        create_key(gateway, name, sites=["site-a", "site-b", "site-c"])
        sign_in(page, gateway.admin_key)
        expect(row(page, name)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

        menu = open_menu(page, name)
        box = menu.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844
        menu.get_by_role("menuitem", name="View Details").click()
        expect(page.get_by_role("heading", name="Configuration")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(gateway.log_path.parent / "phone-details.png"), full_page=True)
    finally:
        context.close()


def seed_history(gateway: Gateway, key_id: str, days: int) -> None:
    """Past traffic written through the store itself (the proxy can only make today's)."""
    from gateway.runtime import key_service
    from gateway.settings import load_settings
    from gateway.store.base import UsageRecord

    now = datetime.now(UTC)
    records = []
    for back in range(days, 0, -1):
        day = now - timedelta(days=back)
        weekday_load = 14 if day.weekday() < 5 else 4
        count = weekday_load + (back * 7) % 9
        for index in range(count):
            status = 500 if index == 0 and back % 6 == 0 else 404 if index == 1 else 200
            at = day - timedelta(minutes=index * 13)
            records.append(UsageRecord(key_id, at, "GET", "/history", status, 12.5, None))

    records.sort(key=lambda record: record.at)

    async def write() -> None:
        url = gateway.env["GATEWAY_STORAGE__URL"]
        async with key_service(load_settings(storage={"url": url})) as service:
            await service.store.record_usage(records)

    # Playwright's sync API owns this thread's event loop: run the store in another thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result(timeout=30)


def test_screenshots(browser: Any, tmp_path_factory: Any) -> None:
    """The README's screenshots, from a gateway with a few realistic keys and some traffic."""
    from tests.browser.conftest import SCREENSHOTS, launch_gateway

    with launch_gateway(tmp_path_factory.mktemp("screenshots")) as gateway:
        billing, billing_value = create_key(
            gateway, "Billing sync", scope="write", rateLimit="100/minute"
        )
        create_key(gateway, "Analytics export", sites=["site-eu", "site-us"])
        create_key(gateway, "Ops console", scope="admin")
        partner, _ = create_key(gateway, "Legacy partner feed", sites=["site-eu"])
        gateway.admin("POST", f"/v1/keys/{partner['id']}/revoke")
        analytics = gateway.admin("GET", "/v1/keys?limit=10").json()["data"]
        analytics_id = next(k["id"] for k in analytics if k["name"] == "Analytics export")
        seed_history(gateway, billing["id"], days=29)
        seed_history(gateway, analytics_id, days=3)
        if gateway.proxy_url:
            for index in range(24):
                path = f"/sites/site-eu/invoices/{index}" if index % 7 else "/status/404"
                gateway.proxy(billing_value, path)

            def recorded() -> bool:
                body = gateway.admin("GET", f"/v1/keys/{billing['id']}").json()
                return len(body["apiKey"]["usage"]["recent"]) == 20 and all(
                    not r["path"].startswith("/history") for r in body["apiKey"]["usage"]["recent"]
                )

            wait_until(recorded, 10, "the usage to be recorded")

        context = browser.new_context(
            base_url=gateway.admin_url, viewport={"width": 1280, "height": 800}
        )
        try:
            page = context.new_page()
            sign_in(page, gateway.admin_key)
            expect(row(page, "Billing sync")).to_be_visible()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.mouse.move(0, 0)  # no hover highlight in the picture
            page.screenshot(path=str(SCREENSHOTS / "dashboard-list.png"))

            choose(page, "Billing sync", "View Details")
            expect(page.get_by_role("heading", name="Billing sync", level=1)).to_be_visible()
            chart = page.locator("#usage-chart svg")
            expect(chart).to_have_attribute("role", "img")
            expect(chart.locator("g.bar")).to_have_count(30)
            expect(chart.locator("desc")).to_contain_text("requests")
            if gateway.proxy_url:
                expect(page.locator("#recent-body")).to_contain_text("/sites/site-eu/invoices/1")
            expect(chart.locator("rect.bar-requests")).to_have_count(30)
            page.screenshot(path=str(SCREENSHOTS / "dashboard-details.png"))
        finally:
            context.close()


def test_rotate_with_a_grace_period_keeps_the_old_value_working(
    signed_in: Page, gateway: Gateway
) -> None:
    page = signed_in
    name = unique("Grace")
    _, old_value = create_key(gateway, name)
    page.reload()
    choose(page, name, "Rotate Key")
    confirm = page.get_by_role("dialog", name=f"Rotate key “{name}”?")
    confirm.get_by_label("Grace period in seconds").fill("300")
    with page.expect_request("**/rotate") as sent:
        confirm.get_by_role("button", name="Rotate key").click()
    assert sent.value.post_data_json == {"gracePeriodSeconds": 300}
    secret_dialog = page.get_by_role("dialog", name="Copy your new API key")
    expect(secret_dialog).to_contain_text("keeps working for 300 seconds")
    new_value = page.get_by_label("New key value").input_value()
    page.keyboard.press("Escape")  # closing by Escape wipes the value too
    expect(secret_dialog).to_be_hidden()
    assert_value_gone(page, new_value)
    if gateway.proxy_url:
        assert gateway.proxy(old_value).status_code == 200
        assert gateway.proxy(new_value).status_code == 200


def test_server_text_is_never_parsed_as_html(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    name = f'<img src=x onerror="window.pwned=1"> {uuid.uuid4().hex[:6]}'
    create_key(gateway, name)
    page.reload()
    expect(page.get_by_role("link", name=name, exact=True)).to_have_text(name)
    choose(page, name, "View Details")
    expect(page.get_by_role("heading", name=name, level=1)).to_have_text(name)
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.pwned") is None


def test_an_expired_key_shows_expired_and_leaves_the_active_tab(
    signed_in: Page, gateway: Gateway
) -> None:
    page = signed_in
    name = unique("Short lived")
    soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    key, _ = create_key(gateway, name, expiresAt=soon)
    wait_until(
        lambda: gateway.admin("GET", f"/v1/keys/{key['id']}").json()["apiKey"]["expired"],
        10,
        "the key to expire",
    )
    page.reload()
    badges = row(page, name).locator(".badge").filter(has_not_text=re.compile("Read"))
    expect(badges).to_have_text(["Expired"])  # one status badge, not "Active" beside it
    page.get_by_role("tab", name="Active").click()
    expect(page.locator("#keys-body tr").first).to_be_visible()
    expect(row(page, name)).to_have_count(0)
    for badge in page.locator("#keys-body .badge-expired").all():
        raise AssertionError(f"an expired key is listed as active: {badge.text_content()}")
    page.get_by_role("tab", name="All").click()
    row(page, name).get_by_role("link", name=name, exact=True).click()
    config = page.locator("#details-config")
    expect(config).to_contain_text("Expired")
    expect(page.locator("#details-badges .badge-expired")).to_have_text("Expired")
    expect(page.locator("#details-badges .badge-active")).to_have_count(0)
