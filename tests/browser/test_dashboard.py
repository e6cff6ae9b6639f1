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
    # The value is cleared by the dialog's close handler, which may run just after it hides.
    expect(page.get_by_label("New key value")).to_have_value("")
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

    # Said once, beside the field, in the form's words (not the API's "rateLimit").
    expect(dialog.locator(".form-error")).to_be_hidden()
    note = dialog.locator("#f-rate-error")
    expect(note).to_have_text(
        f"Rate limit: {envelope['details']['reason']}. (request id: {envelope['requestId']})"
    )
    assert "rateLimit" not in dialog.inner_text()
    assert dialog.inner_text().count(envelope["details"]["reason"]) == 1
    rate = dialog.get_by_label("Rate limit")
    expect(rate).to_have_attribute("aria-invalid", "true")
    expect(rate).to_be_focused()


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
            chart.locator("g.bar .bar-hit").nth(24).hover()  # the tooltip, in the picture
            expect(page.get_by_role("tooltip")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "dashboard-details.png"))
        finally:
            context.close()
        phone = browser.new_context(
            base_url=gateway.admin_url, viewport={"width": 390, "height": 844}, is_mobile=True
        )
        try:
            page = phone.new_page()
            sign_in(page, gateway.admin_key)
            expect(row(page, "Billing sync")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "dashboard-phone.png"), full_page=True)
        finally:
            phone.close()


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


def test_field_errors_use_the_forms_words(signed_in: Page) -> None:
    page = signed_in
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="Create key")
    dialog.get_by_label("Name").fill(unique("Bad site"))
    dialog.get_by_label("All sites").uncheck()
    dialog.get_by_label("Site ids").fill("bad site")
    with page.expect_response("**/v1/keys") as answer:
        dialog.get_by_role("button", name="Create key").click()
    assert answer.value.status == 400
    note = dialog.locator("#f-sites-error")
    expect(note).to_contain_text("Sites: site id 'bad site' may use only letters, digits")
    assert "[A-Za-z0-9_-]" not in dialog.inner_text()
    expect(dialog.locator(".form-error")).to_be_hidden()


def test_edit_is_not_offered_on_a_revoked_key(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    name = unique("No edits")
    key, _ = create_key(gateway, name)
    assert gateway.admin("POST", f"/v1/keys/{key['id']}/revoke").status_code == 200
    page.reload()
    menu = open_menu(page, name)
    expect(menu.get_by_role("menuitem", name="Edit Key")).to_have_count(0)
    expect(menu.get_by_role("menuitem", name="Rotate Key")).to_be_disabled()
    menu.get_by_role("menuitem", name="View Details").click()
    actions = page.locator("#details-actions")
    expect(actions.get_by_role("button", name="Delete Key")).to_be_visible()
    expect(actions.get_by_role("button", name="Edit Key")).to_have_count(0)


def test_a_toast_goes_with_the_next_action_and_never_covers_a_dialog(
    signed_in: Page, gateway: Gateway
) -> None:
    page = signed_in
    name = unique("Toasted")
    create_key(gateway, name)
    page.reload()
    choose(page, name, "Revoke Key")
    page.get_by_role("dialog", name=f"Revoke key “{name}”?").get_by_role(
        "button", name="Revoke key"
    ).click()
    toast = page.locator("#toast")
    expect(toast).to_contain_text("revoked")
    assert toast.evaluate("t => getComputedStyle(t).pointerEvents") == "none"
    # The next action — here opening a dialog — takes it away at once.
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("dialog", name="Create key")).to_be_visible()
    expect(toast).to_be_hidden()
    page.keyboard.press("Escape")

    # Saving an edit from the details view: the toast goes with the next click anywhere.
    other = unique("Toasted again")
    create_key(gateway, other)
    page.reload()
    choose(page, other, "View Details")
    page.locator("#details-actions").get_by_role("button", name="Edit Key").click()
    dialog = page.get_by_role("dialog", name=f"Edit key “{other}”")
    dialog.get_by_label("Name").fill(other + " v2")
    dialog.get_by_role("button", name="Save").click()
    expect(toast).to_contain_text("saved")
    page.get_by_role("heading", name="Recent requests").click()
    expect(toast).to_be_hidden()


def test_the_usage_chart_has_a_tooltip_with_the_days_counts(
    signed_in: Page, gateway: Gateway
) -> None:
    page = signed_in
    name = unique("Charted")
    key, _ = create_key(gateway, name)
    seed_history(gateway, key["id"], days=5)
    page.goto(f"/#/keys/{key['id']}")
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
    daily = gateway.admin("GET", f"/v1/keys/{key['id']}").json()["apiKey"]["usage"]["daily"]
    day = next(d for d in daily if d["requests"] > 0)
    bar = page.locator(f'#usage-chart g.bar[data-date="{day["date"]}"] .bar-hit')
    bar.hover()
    tip = page.get_by_role("tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(f"{day['requests']} requests")
    errors = "1 error" if day["errors"] == 1 else f"{day['errors']} errors"
    expect(tip).to_contain_text(errors)
    # Beside or above its bar, never over it.
    tip_box = tip.bounding_box()
    drawn = page.locator(f'#usage-chart g.bar[data-date="{day["date"]}"] .bar-requests')
    bar_box = drawn.bounding_box()
    assert tip_box and bar_box
    overlap_x = min(tip_box["x"] + tip_box["width"], bar_box["x"] + bar_box["width"]) - max(
        tip_box["x"], bar_box["x"]
    )
    overlap_y = min(tip_box["y"] + tip_box["height"], bar_box["y"] + bar_box["height"]) - max(
        tip_box["y"], bar_box["y"]
    )
    assert overlap_x <= 0 or overlap_y <= 0, (tip_box, bar_box)
    page.mouse.move(0, 0)
    expect(tip).to_be_hidden()


def test_search_finds_keys_by_name_or_id_across_pages(signed_in: Page, gateway: Gateway) -> None:
    page = signed_in
    needle = unique("Needle")
    key, _ = create_key(gateway, needle)
    for index in range(30):  # the needle is now past the first page
        create_key(gateway, f"{unique('Hay')} {index:02d}")
    page.reload()
    expect(row(page, needle)).to_have_count(0)
    search = page.get_by_label("Search keys by name or id")
    search.fill(needle.split()[-1])
    expect(row(page, needle)).to_have_count(1)
    expect(page.locator("#keys-body tr")).to_have_count(1)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    search.fill(key["id"])
    expect(row(page, needle)).to_have_count(1)
    expect(page.locator("#keys-body tr")).to_have_count(1)
    search.fill("no such key anywhere")
    expect(page.locator("#keys-empty")).to_have_text("No keys match “no such key anywhere”.")
    search.press("Escape")
    expect(page.locator("#keys-body tr")).to_have_count(25)


def test_a_phone_list_of_16_keys_is_compact(browser: Any, gateway: Gateway) -> None:
    from tests.browser.conftest import launch_gateway

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        with launch_gateway(gateway.log_path.parent / "phone16") as own:
            for index in range(16):
                create_key(own, f"Phone key {index:02d}", sites=["site-a", "site-b"])
            page.goto(own.admin_url + "/")
            page.get_by_label("Admin API key").fill(own.admin_key)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#keys-body tr")).to_have_count(17)  # and the admin key
            height = page.evaluate("document.documentElement.scrollHeight")
            assert height < 2600, height  # was ~3,800 px
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            first = page.locator("#keys-body tr").first
            for label in ("Key", "Scope", "Status", "Created", "Last used"):
                assert first.locator(f'td[data-label="{label}"]').is_visible()
    finally:
        context.close()
