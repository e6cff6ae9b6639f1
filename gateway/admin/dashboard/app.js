// The "API keys" screen (SPEC §11). Plain JS, no build step, talks only to the admin API.
//
// Rules kept here on purpose:
// - The admin key lives in sessionStorage only (never a cookie, the URL or localStorage).
// - A new key value is only ever in the one-time dialog, and is wiped when it closes.
// - Server text is always set with textContent, never innerHTML.
"use strict";

(() => {
  const TOKEN_KEY = "gateway.adminKey";
  const PAGE_SIZE = 25;
  const SCOPE_LABEL = { read: "Read", write: "Write", admin: "Admin" };

  const $ = (id) => document.getElementById(id);
  const els = {
    signinView: $("signin-view"),
    signinForm: $("signin-form"),
    signinKey: $("signin-key"),
    signinError: $("signin-error"),
    signOut: $("sign-out"),
    appView: $("app-view"),
    banner: $("banner"),
    listView: $("list-view"),
    listTitle: $("list-title"),
    tabs: Array.from(document.querySelectorAll('[role="tab"]')),
    panel: $("keys-panel"),
    keysBody: $("keys-body"),
    keysEmpty: $("keys-empty"),
    keysLoading: $("keys-loading"),
    loadMore: $("load-more"),
    search: $("key-search"),
    createKey: $("create-key"),
    detailsView: $("details-view"),
    detailsTitle: $("details-title"),
    detailsBadges: $("details-badges"),
    detailsActions: $("details-actions"),
    detailsConfig: $("details-config"),
    usageStats: $("usage-stats"),
    usageChart: $("usage-chart"),
    recentBody: $("recent-body"),
    recentEmpty: $("recent-empty"),
    menu: $("row-menu"),
    keyDialog: $("key-dialog"),
    keyForm: $("key-form"),
    keyDialogTitle: $("key-dialog-title"),
    keySubmit: $("key-submit"),
    editNote: $("edit-note"),
    allSites: $("f-all-sites"),
    sites: $("f-sites"),
    confirmDialog: $("confirm-dialog"),
    confirmForm: $("confirm-form"),
    confirmTitle: $("confirm-title"),
    confirmText: $("confirm-text"),
    confirmSubmit: $("confirm-submit"),
    graceField: $("grace-field"),
    grace: $("f-grace"),
    secretDialog: $("secret-dialog"),
    secretIntro: $("secret-intro"),
    secretValue: $("secret-value"),
    copySecret: $("copy-secret"),
    copyStatus: $("copy-status"),
    toast: $("toast"),
    chartTip: null, // created with the chart
  };

  const state = {
    status: "all",
    keys: [],
    nextCursor: null,
    listSeq: 0, // ignores answers to list requests that a newer one replaced
    current: null, // the key shown in the details view
    menuFor: null, // { key, trigger } while the row menu is open
    editing: null, // the key being edited, or null when creating
    confirm: null, // { action, key } while the confirm dialog is open
    usage: null, // the usage shown in the details view (to redraw the chart)
    query: "", // the search box's text (name, id or hint), trimmed
  };

  // --- small DOM helpers ------------------------------------------------------------------

  /** Build an element; children are nodes or strings (always text, never parsed as HTML). */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) if (child) node.append(child);
    return node;
  }

  // --- formatting -------------------------------------------------------------------------

  const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
  const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  const timeFmt = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const relFmt = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const numFmt = new Intl.NumberFormat();

  function formatDateTime(iso, fallback = "Never") {
    return iso ? dateTimeFmt.format(new Date(iso)) : fallback;
  }

  function formatRelative(iso, fallback = "Never") {
    if (!iso) return fallback;
    const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
    const steps = [[60, "second"], [60, "minute"], [24, "hour"], [30, "day"], [12, "month"]];
    let value = seconds;
    for (const [size, unit] of steps) {
      if (Math.abs(value) < size) return relFmt.format(Math.round(value), unit);
      value /= size;
    }
    return relFmt.format(Math.round(value), "year");
  }

  /** `<time>` with a readable text and the exact UTC moment as a tooltip. */
  function timeEl(iso, text) {
    if (!iso) return h("span", { class: "muted" }, text);
    return h("time", { datetime: iso, title: iso.replace("T", " ").replace("Z", " UTC") }, text);
  }

  function dayLabel(date) {
    const [y, m, d] = date.split("-").map(Number);
    return dayFmt.format(new Date(Date.UTC(y, m - 1, d)));
  }

  const sitesText = (sites) => (sites.includes("*") ? "All sites" : sites.join(", "));
  // The API says whether a key is past its expiry (`expired`; its status stays "active").
  const isExpired = (key) => key.status === "active" && key.expired === true;
  // Usable now: what the Active tab lists.
  const isUsable = (key) => key.status === "active" && !key.expired;

  /** The value for an `<input type="datetime-local">` showing `iso` in local time. */
  function toLocalInput(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function fromLocalInput(value) {
    if (!value) return null;
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? value : d.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  // --- admin API --------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, details, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || {};
      this.requestId = requestId || null;
      this.handled = false;
    }
  }

  const getToken = () => sessionStorage.getItem(TOKEN_KEY);

  /** Call the admin API; a non-2xx answer becomes an ApiError carrying the envelope. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${getToken() || ""}` };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      // Relative to the page, so the dashboard also works when mounted under a prefix.
      response = await fetch(new URL(path, document.baseURI), init);
    } catch (_) {
      throw new ApiError(0, "NETWORK_ERROR",
        "Could not reach the admin API. Check that the gateway is running.", {}, null);
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (response.ok) return data;
    const envelope = data && typeof data.error === "object" && data.error ? data.error : {};
    const error = new ApiError(
      response.status,
      envelope.code || `HTTP_${response.status}`,
      envelope.message || `The admin API answered ${response.status} ${response.statusText}.`,
      envelope.details,
      envelope.requestId || response.headers.get("X-Request-ID"),
    );
    if (response.status === 401 || response.status === 403) {
      // The admin key is missing, wrong, revoked or not admin: back to sign in.
      error.handled = true;
      signOut(error);
    }
    throw error;
  }

  /** Fill `container` with the error message and its request id (for support). */
  function renderError(container, error) {
    container.replaceChildren(
      h("span", { class: "error-message" }, error.message),
      error.requestId
        ? h("span", { class: "error-request" },
          " (request id: ", h("code", { class: "request-id" }, error.requestId), ")")
        : null,
    );
    container.hidden = false;
  }

  function showBanner(error) {
    if (error.handled) return;
    renderError(els.banner.querySelector(".banner-text"), error);
    els.banner.hidden = false;
  }

  function hideBanner() {
    els.banner.hidden = true;
  }

  // A toast says what just happened and goes away with the next thing the user does
  // (a click, a key, a dialog opening, a new view) or after a few seconds. It never
  // catches the pointer (pointer-events: none), so it cannot block what is under it.
  let toastTimer = null;
  function toast(message) {
    els.toast.textContent = message;
    els.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(hideToast, 4000);
    // Armed after this turn: the click that caused the toast must not dismiss it.
    setTimeout(() => {
      document.addEventListener("pointerdown", hideToast, { capture: true, once: true });
      document.addEventListener("keydown", hideToast, { capture: true, once: true });
    }, 0);
  }

  function hideToast() {
    clearTimeout(toastTimer);
    els.toast.hidden = true;
    document.removeEventListener("pointerdown", hideToast, { capture: true });
    document.removeEventListener("keydown", hideToast, { capture: true });
  }

  // --- sign in / out ----------------------------------------------------------------------

  function showSignIn(error) {
    closeMenu(false);
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
    els.appView.hidden = true;
    els.signOut.hidden = true;
    els.signinView.hidden = false;
    if (error) renderError(els.signinError, error);
    else els.signinError.hidden = true;
    els.signinKey.focus();
  }

  function signOut(error) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.keys = [];
    state.current = null;
    els.keysBody.replaceChildren();
    showSignIn(error);
  }

  function showApp() {
    els.signinView.hidden = true;
    els.signinError.hidden = true;
    els.appView.hidden = false;
    els.signOut.hidden = false;
  }

  els.signinForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = els.signinKey.value.trim();
    els.signinKey.value = "";
    if (!value) {
      renderError(els.signinError, new ApiError(0, "", "Paste an admin API key to sign in."));
      els.signinKey.focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    showApp();
    await route();
  });

  els.signOut.addEventListener("click", () => {
    location.hash = "";
    signOut(null);
  });

  // --- routing: #/ is the list, #/keys/<id> the details of one key ------------------------

  async function route() {
    if (!getToken()) {
      showSignIn(null);
      return;
    }
    showApp();
    closeMenu(false);
    hideBanner();
    hideToast();
    const match = /^#\/keys\/([A-Za-z0-9_]+)$/.exec(location.hash);
    if (match) await showDetails(match[1]);
    else await showList();
  }

  window.addEventListener("hashchange", route);

  // --- list -------------------------------------------------------------------------------

  async function showList() {
    els.detailsView.hidden = true;
    els.listView.hidden = false;
    state.current = null;
    document.title = "API keys · Gateway";
    await loadKeys(true);
  }

  async function loadKeys(reset) {
    if (state.query) {
      await searchKeys();
      return;
    }
    const seq = ++state.listSeq;
    const params = new URLSearchParams({ status: state.status, limit: String(PAGE_SIZE) });
    if (!reset && state.nextCursor) params.set("cursor", state.nextCursor);
    if (reset) {
      els.keysLoading.hidden = false;
      els.keysEmpty.hidden = true;
    }
    els.loadMore.disabled = true;
    try {
      let page = await api("GET", `v1/keys?${params}`);
      let data = page.data;
      if (state.status === "active") {
        // The Active tab lists only keys usable now: expired keys stay under All. Read on
        // until the page has something to show (or the list ends).
        data = data.filter(isUsable);
        while (data.length < PAGE_SIZE && page.nextCursor && seq === state.listSeq) {
          params.set("cursor", page.nextCursor);
          page = await api("GET", `v1/keys?${params}`);
          data = data.concat(page.data.filter(isUsable));
        }
      }
      if (seq !== state.listSeq) return;
      state.keys = reset ? data : state.keys.concat(data);
      state.nextCursor = page.nextCursor;
      renderKeys();
    } catch (error) {
      if (seq === state.listSeq) showBanner(error);
    } finally {
      if (seq === state.listSeq) {
        els.keysLoading.hidden = true;
        els.loadMore.disabled = false;
      }
    }
  }

  // --- search: by name, id or hint, over every key of the current tab -----------------

  const SEARCH_PAGE = 200; // the API's largest page
  const SEARCH_MAX_PAGES = 50; // at most 10,000 keys are searched

  function matches(key, query) {
    const q = query.toLowerCase();
    return key.name.toLowerCase().includes(q) || key.id.toLowerCase().includes(q)
      || key.hint.toLowerCase().includes(q);
  }

  async function searchKeys() {
    const seq = ++state.listSeq;
    const query = state.query;
    els.keysLoading.hidden = false;
    els.keysEmpty.hidden = true;
    els.loadMore.hidden = true;
    const params = new URLSearchParams({ status: state.status, limit: String(SEARCH_PAGE) });
    const found = [];
    try {
      for (let pageNo = 0; pageNo < SEARCH_MAX_PAGES; pageNo += 1) {
        const page = await api("GET", `v1/keys?${params}`);
        if (seq !== state.listSeq) return;
        for (const key of page.data) {
          if (state.status === "active" && !isUsable(key)) continue;
          if (matches(key, query)) found.push(key);
        }
        if (!page.nextCursor) break;
        params.set("cursor", page.nextCursor);
      }
      state.keys = found;
      state.nextCursor = null;
      renderKeys();
    } catch (error) {
      if (seq === state.listSeq) showBanner(error);
    } finally {
      if (seq === state.listSeq) els.keysLoading.hidden = true;
    }
  }

  let searchTimer = null;
  els.search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      const query = els.search.value.trim();
      if (query === state.query) return;
      state.query = query;
      state.nextCursor = null;
      loadKeys(true);
    }, 200);
  });
  els.search.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && els.search.value) {
      event.preventDefault();
      els.search.value = "";
      els.search.dispatchEvent(new Event("input"));
    }
  });

  function statusBadges(key) {
    // One status badge: "Expired" replaces "Active" for a key past its expiry.
    if (isExpired(key)) {
      return [h("span", { class: "badge badge-expired", title: `Expired ${formatDateTime(key.expiresAt)}` }, "Expired")];
    }
    const badges = [h("span", { class: `badge badge-${key.status}` },
      key.status === "active" ? "Active" : "Revoked")];
    if (key.status === "active" && key.rotationDue) {
      badges.push(h("span", { class: "badge badge-warn", title: "The key value is older than the rotation period" }, "Rotation due"));
    }
    return badges;
  }

  function scopeBadge(scope) {
    return h("span", { class: `badge badge-scope badge-${scope}` }, SCOPE_LABEL[scope] || scope);
  }

  function renderKeys() {
    const rows = state.keys.map((key) => h("tr", { "data-key-id": key.id },
      h("td", { class: "cell-name", "data-label": "Name" },
        h("a", { href: `#/keys/${key.id}`, class: "key-name" }, key.name)),
      h("td", { "data-label": "Key" }, h("code", { class: "hint-code" }, key.hint)),
      h("td", { "data-label": "Scope" }, scopeBadge(key.scope)),
      h("td", { "data-label": "Sites", class: "cell-sites" }, sitesText(key.sites)),
      h("td", { "data-label": "Status" }, h("span", { class: "badges" }, statusBadges(key))),
      h("td", { "data-label": "Created" }, timeEl(key.createdAt, dateFmt.format(new Date(key.createdAt)))),
      h("td", { "data-label": "Last used" }, timeEl(key.lastUsedAt, formatRelative(key.lastUsedAt))),
      h("td", { class: "col-actions" },
        h("button", {
          type: "button",
          class: "btn-icon menu-trigger",
          "aria-haspopup": "menu",
          "aria-expanded": "false",
          "aria-controls": "row-menu",
          "aria-label": `Actions for ${key.name}`,
          "data-key-id": key.id,
          onclick: (event) => toggleMenu(key, event.currentTarget, false),
          onkeydown: (event) => {
            if (event.key === "ArrowDown" || event.key === "ArrowUp") {
              event.preventDefault();
              openMenu(key, event.currentTarget, event.key === "ArrowUp");
            }
          },
        }, kebabIcon())),
    ));
    // Re-rendering replaces the buttons: keep focus on the same key's menu button.
    const focusedId = els.keysBody.contains(document.activeElement)
      ? document.activeElement.getAttribute("data-key-id") : null;
    els.keysBody.replaceChildren(...rows);
    if (focusedId) {
      const again = els.keysBody.querySelector(`button[data-key-id="${CSS.escape(focusedId)}"]`);
      (again || els.listTitle).focus();
    }
    const tabName = { all: "", active: "active ", revoked: "revoked " }[state.status];
    els.keysEmpty.textContent = state.query
      ? `No ${tabName}keys match “${state.query}”.`
      : state.status === "all"
        ? "No API keys yet. Create one to get started."
        : `No ${tabName}keys.`;
    els.keysEmpty.hidden = state.keys.length > 0;
    els.loadMore.hidden = !state.nextCursor;
  }

  function kebabIcon() {
    return s("svg", { viewBox: "0 0 20 20", "aria-hidden": "true", focusable: "false" },
      s("circle", { cx: 10, cy: 4, r: 1.7 }),
      s("circle", { cx: 10, cy: 10, r: 1.7 }),
      s("circle", { cx: 10, cy: 16, r: 1.7 }));
  }

  els.loadMore.addEventListener("click", () => loadKeys(false));
  els.createKey.addEventListener("click", () => openKeyForm(null));

  // Tabs: click, or arrow keys with roving focus (WAI-ARIA tabs pattern).
  function selectTab(tab, focus) {
    for (const other of els.tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
    }
    els.panel.setAttribute("aria-labelledby", tab.id);
    if (focus) tab.focus();
    if (state.status !== tab.dataset.status) {
      state.status = tab.dataset.status;
      state.nextCursor = null;
      loadKeys(true);
    }
  }

  for (const tab of els.tabs) {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (event) => {
      const index = els.tabs.indexOf(tab);
      const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: els.tabs.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      const next = els.tabs[(moves[event.key] + els.tabs.length) % els.tabs.length];
      selectTab(next, true);
    });
  }

  // --- row menu ---------------------------------------------------------------------------

  function menuItems(key) {
    const revoked = key.status === "revoked";
    const items = [
      { label: "View Details", run: () => { location.hash = `#/keys/${key.id}`; } },
    ];
    // A revoked key cannot be used again, so there is nothing to edit on it.
    if (!revoked) items.push({ label: "Edit Key", run: () => openKeyForm(key) });
    items.push(
      { label: "Rotate Key", run: () => openConfirm("rotate", key), disabled: revoked,
        title: revoked ? "A revoked key cannot be rotated" : null },
      { label: "Revoke Key", run: () => openConfirm("revoke", key), danger: true, disabled: revoked,
        title: revoked ? "This key is already revoked" : null },
    );
    // Delete is only offered once a key is revoked (the revoke-before-delete rule).
    if (revoked) items.push({ label: "Delete Key", run: () => openConfirm("delete", key), danger: true });
    return items;
  }

  function toggleMenu(key, trigger, fromEnd) {
    if (state.menuFor && state.menuFor.trigger === trigger) closeMenu(true);
    else openMenu(key, trigger, fromEnd);
  }

  function openMenu(key, trigger, fromEnd) {
    closeMenu(false);
    const buttons = menuItems(key).map((item) => h("button", {
      type: "button",
      role: "menuitem",
      class: item.danger ? "menu-item danger" : "menu-item",
      tabindex: "-1",
      disabled: item.disabled,
      title: item.title,
      onclick: () => {
        closeMenu(true); // focus back on the ⋮ button, so dialogs return there
        item.run();
      },
    }, item.label));
    els.menu.replaceChildren(...buttons);
    els.menu.setAttribute("aria-label", `Actions for ${key.name}`);
    els.menu.hidden = false;
    trigger.setAttribute("aria-expanded", "true");
    state.menuFor = { key, trigger };
    placeMenu(trigger);
    const enabled = buttons.filter((b) => !b.disabled);
    (fromEnd ? enabled[enabled.length - 1] : enabled[0]).focus();
  }

  /** Put the menu under its button, right-aligned, and always fully inside the viewport. */
  function placeMenu(trigger) {
    const margin = 8;
    const rect = trigger.getBoundingClientRect();
    const menuRect = els.menu.getBoundingClientRect();
    let left = rect.right - menuRect.width;
    left = Math.max(margin, Math.min(left, window.innerWidth - menuRect.width - margin));
    let top = rect.bottom + 4;
    if (top + menuRect.height > window.innerHeight - margin) {
      top = Math.max(margin, rect.top - menuRect.height - 4);
    }
    els.menu.style.left = `${Math.round(left)}px`;
    els.menu.style.top = `${Math.round(top)}px`;
  }

  function closeMenu(restoreFocus) {
    if (!state.menuFor) return;
    const { trigger } = state.menuFor;
    state.menuFor = null;
    els.menu.hidden = true;
    els.menu.replaceChildren();
    trigger.setAttribute("aria-expanded", "false");
    if (restoreFocus && trigger.isConnected) trigger.focus();
  }

  els.menu.addEventListener("keydown", (event) => {
    const items = Array.from(els.menu.querySelectorAll('[role="menuitem"]:not([disabled])'));
    const index = items.indexOf(document.activeElement);
    const moves = {
      ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: items.length - 1,
    };
    if (event.key in moves) {
      event.preventDefault();
      items[(moves[event.key] + items.length) % items.length].focus();
    } else if (event.key === "Escape") {
      event.preventDefault();
      closeMenu(true);
    } else if (event.key === "Tab") {
      event.preventDefault();
      closeMenu(true);
    }
  });

  document.addEventListener("click", (event) => {
    if (!state.menuFor) return;
    if (els.menu.contains(event.target) || state.menuFor.trigger.contains(event.target)) return;
    closeMenu(false);
  });
  let chartWidth = 0;
  window.addEventListener("resize", () => {
    closeMenu(false);
    // Redraw the chart at its new width (once per frame at most).
    const width = els.usageChart.clientWidth;
    if (!state.usage || els.detailsView.hidden || width === chartWidth) return;
    chartWidth = width;
    requestAnimationFrame(() => renderUsage(state.usage));
  });
  window.addEventListener("scroll", () => closeMenu(false), true);

  // --- details ----------------------------------------------------------------------------

  async function showDetails(keyId) {
    els.listView.hidden = true;
    els.detailsView.hidden = false;
    try {
      const body = await api("GET", `v1/keys/${encodeURIComponent(keyId)}`);
      state.current = body.apiKey;
      renderDetails(body.apiKey);
      els.detailsTitle.focus();
    } catch (error) {
      if (error.handled) return;
      state.current = null;
      els.detailsTitle.textContent = "Key not available";
      for (const node of [els.detailsBadges, els.detailsActions, els.detailsConfig,
        els.usageStats, els.usageChart, els.recentBody]) node.replaceChildren();
      showBanner(error);
    }
  }

  async function refreshDetails() {
    if (state.current) await showDetails(state.current.id);
  }

  function renderDetails(key) {
    document.title = `${key.name} · API keys · Gateway`;
    els.detailsTitle.textContent = key.name;
    els.detailsBadges.replaceChildren(scopeBadge(key.scope), ...statusBadges(key));

    const revoked = key.status === "revoked";
    const actions = [];
    if (!revoked) {
      actions.push(
        h("button", { type: "button", class: "btn btn-secondary", onclick: () => openKeyForm(key) }, "Edit Key"),
        h("button", { type: "button", class: "btn btn-secondary", onclick: () => openConfirm("rotate", key) }, "Rotate Key"),
        h("button", { type: "button", class: "btn btn-danger-outline", onclick: () => openConfirm("revoke", key) }, "Revoke Key"),
      );
    } else {
      actions.push(h("button", { type: "button", class: "btn btn-danger", onclick: () => openConfirm("delete", key) }, "Delete Key"));
    }
    els.detailsActions.replaceChildren(...actions);

    const rows = [
      ["Name", key.name],
      ["Key id", h("code", {}, key.id)],
      ["Key", h("code", { class: "hint-code" }, key.hint)],
      ["Scope", SCOPE_LABEL[key.scope] || key.scope],
      ["Sites", sitesText(key.sites)],
      ["Status", revoked ? `Revoked ${formatDateTime(key.revokedAt, "")}`.trim()
        : isExpired(key) ? `Expired ${formatDateTime(key.expiresAt)}` : "Active"],
      ["Rate limit", key.rateLimit ? h("code", {}, key.rateLimit) : h("span", { class: "muted" }, "Gateway default")],
      ["Created", timeEl(key.createdAt, formatDateTime(key.createdAt))],
      ["Updated", timeEl(key.updatedAt, formatDateTime(key.updatedAt))],
      ["Last used", timeEl(key.lastUsedAt, key.lastUsedAt
        ? `${formatDateTime(key.lastUsedAt)} (${formatRelative(key.lastUsedAt)})` : "Never")],
      ["Expires", timeEl(key.expiresAt, formatDateTime(key.expiresAt))],
      ["Rotated", timeEl(key.rotatedAt, formatDateTime(key.rotatedAt))],
      ["Rotation due", key.rotationDue
        ? h("span", { class: "warn-text" }, "Yes, rotate this key")
        : "No"],
    ];
    els.detailsConfig.replaceChildren(...rows.flatMap(([term, value]) => [
      h("dt", {}, term), h("dd", {}, value),
    ]));

    renderUsage(key.usage || { totalRequests: 0, daily: [], recent: [] });
  }

  function renderUsage(usage) {
    const daily = usage.daily || [];
    const requests = daily.reduce((sum, d) => sum + d.requests, 0);
    const errors = daily.reduce((sum, d) => sum + d.errors, 0);
    const stat = (label, value) => h("div", { class: "stat" },
      h("span", { class: "stat-value" }, numFmt.format(value)),
      h("span", { class: "stat-label" }, label));
    els.usageStats.replaceChildren(
      stat("Requests, 30 days", requests),
      stat("Errors, 30 days", errors),
      stat("Requests, all time", usage.totalRequests || 0),
    );
    state.usage = usage;
    els.usageChart.replaceChildren(usageChart(daily, requests, errors));

    const recent = usage.recent || [];
    els.recentBody.replaceChildren(...recent.map((r) => h("tr", {},
      h("td", {}, timeEl(r.at, timeFmt.format(new Date(r.at)))),
      h("td", {}, h("span", { class: "method" }, r.method)),
      h("td", { class: "cell-path" }, h("code", {}, r.path)),
      h("td", {}, h("span", { class: r.status >= 400 ? "http-status http-error" : "http-status" }, String(r.status))),
      h("td", { class: "num" }, `${numFmt.format(Math.round(r.latencyMs * 10) / 10)} ms`),
      h("td", {}, r.site || h("span", { class: "muted" }, "–")),
    )));
    els.recentEmpty.hidden = recent.length > 0;
  }

  /** Round up to 1, 2 or 5 × 10ⁿ so the axis has readable numbers. */
  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 1.5, 2, 3, 4, 5, 6, 8, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  /** 30 bars (requests, with errors drawn over them) as inline SVG, plus a text version. */
  function usageChart(daily, requests, errors) {
    // Drawn at the size it is shown, so the labels keep their size on a phone too.
    const width = Math.max(300, Math.round(els.usageChart.clientWidth || 720));
    const height = Math.round(Math.min(280, Math.max(200, width * 0.42)));
    const pad = { top: 12, right: 8, bottom: 28, left: 44 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const max = niceMax(Math.max(0, ...daily.map((d) => d.requests)));
    const slot = plotW / Math.max(daily.length, 1);
    const barW = Math.max(2, slot * 0.66);
    const y = (value) => pad.top + plotH - (value / max) * plotH;

    const first = daily.length ? dayLabel(daily[0].date) : "";
    const last = daily.length ? dayLabel(daily[daily.length - 1].date) : "";
    const summary = `Requests per day from ${first} to ${last}: ${numFmt.format(requests)} requests, ${numFmt.format(errors)} errors.`;

    const grid = [0, 0.5, 1].filter((f) => Number.isInteger(max * f)).map((f) => {
      const value = max * f;
      const yy = y(value);
      return s("g", { class: "grid" },
        s("line", { x1: pad.left, x2: width - pad.right, y1: yy, y2: yy }),
        s("text", { x: pad.left - 8, y: yy + 4, "text-anchor": "end", text: numFmt.format(Math.round(value * 10) / 10) }));
    });

    const bars = daily.map((d, i) => {
      const x = pad.left + i * slot + (slot - barW) / 2;
      const label = `${dayLabel(d.date)}: ${numFmt.format(d.requests)} ${d.requests === 1 ? "request" : "requests"}, ${numFmt.format(d.errors)} ${d.errors === 1 ? "error" : "errors"}`;
      const show = () => showChartTip(d, pad.left + i * slot + slot / 2, y(d.requests), width);
      return s("g", { class: "bar", "data-date": d.date, "aria-label": label, tabindex: "-1",
        onpointerenter: show, onfocus: show, onpointerleave: hideChartTip, onblur: hideChartTip },
        // A full-height transparent hit area makes the tooltip easy to reach.
        s("rect", { class: "bar-hit", x: pad.left + i * slot, y: pad.top, width: slot, height: plotH }),
        d.requests > 0 ? s("rect", { class: "bar-requests", x, y: y(d.requests), width: barW, height: Math.max(1, y(0) - y(d.requests)), rx: 2 }) : null,
        d.errors > 0 ? s("rect", { class: "bar-errors", x, y: y(d.errors), width: barW, height: Math.max(1, y(0) - y(d.errors)), rx: 2 }) : null);
    });

    const labels = daily.map((d, i) => {
      const last = daily.length - 1;
      // Every 7th day and the last one, without two labels colliding at the end.
      if (i !== last && (i % 7 !== 0 || last - i < 4)) return null;
      // The first and last labels hug the plot edges so they are never cut off.
      const anchor = i === 0 ? "start" : i === last ? "end" : "middle";
      const x = i === 0 ? pad.left : i === last ? pad.left + plotW : pad.left + i * slot + slot / 2;
      return s("text", { class: "axis-label", x, y: height - 8, "text-anchor": anchor, text: dayLabel(d.date) });
    });

    const svg = s("svg", {
      viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "usage-svg-title usage-svg-desc",
      class: "chart-svg", preserveAspectRatio: "xMidYMid meet",
    },
    s("title", { id: "usage-svg-title", text: "Usage over the last 30 days" }),
    s("desc", { id: "usage-svg-desc", text: summary }),
    grid,
    s("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0) }),
    bars,
    labels,
    requests === 0 ? s("text", { class: "chart-empty", x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle", text: "No requests in the last 30 days" }) : null);

    // The same numbers as a table, for screen readers.
    // (In a div: a table will not shrink to the 1px of .sr-only and would stretch the page.)
    const table = h("div", { class: "sr-only" }, h("table", {},
      h("caption", {}, "Requests and errors per day"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"), h("th", { scope: "col" }, "Requests"), h("th", { scope: "col" }, "Errors"))),
      h("tbody", {}, daily.map((d) => h("tr", {}, h("td", {}, dayLabel(d.date)), h("td", {}, String(d.requests)), h("td", {}, String(d.errors)))))));
    const caption = h("figcaption", { class: "hint" }, summary);
    // The hover/focus tooltip: the day's date and counts, above its bar.
    els.chartTip = h("div", { class: "chart-tip", role: "tooltip", hidden: true });
    const frag = document.createDocumentFragment();
    frag.append(svg, els.chartTip, caption, table);
    return frag;
  }

  /** The tooltip for `day`, above the top of its bar (at `barX`, `barTop` in the SVG's
   * units), or beside it when the bar reaches the top; always inside the chart. */
  function showChartTip(day, barX, barTop, width) {
    const tip = els.chartTip;
    if (!tip) return;
    const plural = (n, one, many) => `${numFmt.format(n)} ${n === 1 ? one : many}`;
    tip.replaceChildren(
      h("strong", {}, dayLabel(day.date)),
      h("span", {}, plural(day.requests, "request", "requests")),
      h("span", { class: day.errors ? "tip-errors" : "" }, plural(day.errors, "error", "errors")),
    );
    tip.hidden = false;
    const svg = els.usageChart.querySelector("svg");
    const scale = svg ? svg.getBoundingClientRect().width / width : 1;
    const x = barX * scale;
    const top = barTop * scale;
    const gap = 8;
    const w = tip.offsetWidth;
    const room = els.usageChart.clientWidth;
    let left = x - w / 2;
    let tipTop = top - tip.offsetHeight - gap;
    if (tipTop < 0) {
      // No room above a tall bar: beside it, towards the middle of the chart.
      tipTop = 0;
      left = x < room / 2 ? x + gap * 2 : x - w - gap * 2;
    }
    tip.style.left = `${Math.round(Math.max(0, Math.min(left, room - w)))}px`;
    tip.style.top = `${Math.round(tipTop)}px`;
  }

  function hideChartTip() {
    if (els.chartTip) els.chartTip.hidden = true;
  }

  // --- create / edit form -----------------------------------------------------------------

  const FIELD_INPUT = {
    name: "f-name", scope: "f-scope", sites: "f-sites", rateLimit: "f-rate",
    expiresAt: "f-expires", gracePeriodSeconds: "f-grace",
  };

  function clearFormErrors(form) {
    for (const node of form.querySelectorAll(".field-error")) {
      node.hidden = true;
      node.textContent = "";
    }
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    form.querySelector(".form-error").hidden = true;
  }

  // The API names its fields ("rateLimit"); the form says "Rate limit".
  const FIELD_LABEL = {
    name: "Name", scope: "Scope", sites: "Sites", rateLimit: "Rate limit",
    expiresAt: "Expiry", gracePeriodSeconds: "Grace period",
  };

  /** The API's reason for a field, in the words of the form. */
  function formReason(field, reason) {
    let text = String(reason || "is not valid")
      .replace(/^Input should be a valid integer.*$/, "must be a whole number of seconds")
      .replace(/^Input should be greater than or equal to (\d+)$/, "must be $1 or more")
      .replace(/^Input should be less than or equal to (\d+)$/, "must be $1 or less")
      .replace(/must match \[A-Za-z0-9_-\]\{1,64\}/, "may use only letters, digits, “-” and “_” (1 to 64)");
    for (const [api, label] of Object.entries(FIELD_LABEL)) {
      text = text.replaceAll(`'${api}'`, label.toLowerCase());
    }
    return `${FIELD_LABEL[field] || "This field"}: ${text.charAt(0).toLowerCase()}${text.slice(1)}.`
      .replace(/\.\.$/, ".");
  }

  /** Show an error in a dialog's form. A field error is shown once, beside its field (in
   * the form's words, with the request id), and marks and focuses the field; any other
   * error shows at the top of the form. */
  function showFormError(form, error) {
    if (error.handled) return;
    const field = error.details && error.details.field;
    const inputId = FIELD_INPUT[field];
    const input = inputId && $(inputId);
    const note = input && $(`${inputId}-error`);
    if (!input || !note || !form.contains(input)) {
      renderError(form.querySelector(".form-error"), error);
      return;
    }
    input.setAttribute("aria-invalid", "true");
    renderError(note, new ApiError(error.status, error.code,
      formReason(field, error.details.reason), error.details, error.requestId));
    if (field === "sites" && els.allSites.checked) els.allSites.focus();
    else input.focus();
  }

  function syncSites() {
    els.sites.disabled = els.allSites.checked;
  }
  els.allSites.addEventListener("change", () => {
    syncSites();
    if (!els.allSites.checked) els.sites.focus();
  });

  function openKeyForm(key) {
    state.editing = key;
    const form = els.keyForm;
    form.reset();
    clearFormErrors(form);
    const editing = Boolean(key);
    els.keyDialogTitle.textContent = editing ? `Edit key “${key.name}”` : "Create key";
    els.keySubmit.textContent = editing ? "Save" : "Create key";
    els.editNote.hidden = !editing;
    if (editing) {
      form.elements.name.value = key.name;
      form.elements.scope.value = key.scope;
      const all = key.sites.includes("*");
      els.allSites.checked = all;
      els.sites.value = all ? "" : key.sites.join(", ");
      form.elements.rateLimit.value = key.rateLimit || "";
      form.elements.expiresAt.value = toLocalInput(key.expiresAt);
    } else {
      form.elements.scope.value = "read";
      els.allSites.checked = true;
    }
    syncSites();
    openDialog(els.keyDialog, form.elements.name);
  }

  function readKeyForm() {
    const f = els.keyForm.elements;
    const sites = els.allSites.checked
      ? ["*"]
      : els.sites.value.split(",").map((x) => x.trim()).filter(Boolean);
    return {
      name: f.name.value.trim(),
      scope: f.scope.value,
      sites,
      rateLimit: f.rateLimit.value.trim() || null,
      expiresAt: fromLocalInput(f.expiresAt.value),
    };
  }

  /** Only the fields the administrator changed (PATCH semantics). */
  function changedFields(key, values) {
    const changes = {};
    if (values.name !== key.name) changes.name = values.name;
    if (values.scope !== key.scope) changes.scope = values.scope;
    if (values.sites.join("\n") !== key.sites.join("\n")) changes.sites = values.sites;
    if (values.rateLimit !== (key.rateLimit || null)) changes.rateLimit = values.rateLimit;
    if (els.keyForm.elements.expiresAt.value !== toLocalInput(key.expiresAt)) changes.expiresAt = values.expiresAt;
    return changes;
  }

  els.keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = els.keyForm;
    clearFormErrors(form);
    const values = readKeyForm();
    const key = state.editing;
    els.keySubmit.disabled = true;
    try {
      if (key) {
        const changes = changedFields(key, values);
        if (Object.keys(changes).length === 0) {
          els.keyDialog.close();
          toast("Nothing changed.");
          return;
        }
        const body = await api("PATCH", `v1/keys/${encodeURIComponent(key.id)}`, changes);
        els.keyDialog.close();
        toast(`Key “${body.apiKey.name}” saved. Its value did not change.`);
        await refreshAfterChange(body.apiKey);
      } else {
        const body = {
          name: values.name, scope: values.scope, sites: values.sites,
        };
        if (values.rateLimit !== null) body.rateLimit = values.rateLimit;
        if (values.expiresAt !== null) body.expiresAt = values.expiresAt;
        const created = await api("POST", "v1/keys", body);
        els.keyDialog.close();
        showSecret(created.apiKey, created.secret, "create");
        await refreshAfterChange(created.apiKey);
      }
    } catch (error) {
      showFormError(form, error);
    } finally {
      els.keySubmit.disabled = false;
    }
  });

  async function refreshAfterChange() {
    if (!els.detailsView.hidden && state.current) await refreshDetails();
    else await loadKeys(true);
  }

  // --- confirm rotate / revoke / delete ---------------------------------------------------

  const CONFIRM = {
    rotate: {
      title: (k) => `Rotate key “${k.name}”?`,
      text: (k) => [
        `A new value will be generated for “${k.name}”. Its name, scope, sites and rate limit stay the same.`,
        "The old value stops working immediately, on the very next request. Update your integrations with the new value right away to avoid downtime, or set a grace period below.",
        "The new value is shown only once.",
      ],
      button: "Rotate key",
      cls: "btn-primary",
    },
    revoke: {
      title: (k) => `Revoke key “${k.name}”?`,
      text: (k) => [
        `“${k.name}” will be deactivated. Every request that uses it will get 401 Unauthorized, starting with the very next request.`,
        "A revoked key cannot be reactivated. It moves to the Revoked tab, where it can then be deleted.",
      ],
      button: "Revoke key",
      cls: "btn-danger",
    },
    delete: {
      title: (k) => `Delete key “${k.name}”?`,
      text: (k) => [
        `“${k.name}” and its usage history will be permanently removed.`,
        "Deletion is instant and irreversible. The audit log keeps a record of the key's events.",
      ],
      button: "Delete key",
      cls: "btn-danger",
    },
  };

  function openConfirm(action, key) {
    const spec = CONFIRM[action];
    state.confirm = { action, key };
    const form = els.confirmForm;
    form.reset();
    clearFormErrors(form);
    els.confirmTitle.textContent = spec.title(key);
    els.confirmText.replaceChildren(...spec.text(key).map((line) => h("p", {}, line)));
    els.confirmSubmit.textContent = spec.button;
    els.confirmSubmit.className = `btn ${spec.cls}`;
    els.graceField.hidden = action !== "rotate";
    els.grace.value = "0";
    // Start on Cancel for the destructive ones: Enter alone must not delete a key.
    const cancel = form.querySelector("[data-close]");
    openDialog(els.confirmDialog, action === "rotate" ? els.confirmSubmit : cancel);
  }

  els.confirmForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { action, key } = state.confirm || {};
    if (!action) return;
    clearFormErrors(els.confirmForm);
    const path = `v1/keys/${encodeURIComponent(key.id)}`;
    els.confirmSubmit.disabled = true;
    try {
      if (action === "rotate") {
        const raw = els.grace.value.trim();
        const grace = raw === "" ? 0 : Number(raw);
        // Send what was typed; the API validates it and names the field if it is wrong.
        const body = Number.isInteger(grace) && grace > 0 ? { gracePeriodSeconds: grace }
          : grace === 0 ? {} : { gracePeriodSeconds: raw };
        const rotated = await api("POST", `${path}/rotate`, body);
        els.confirmDialog.close();
        showSecret(rotated.apiKey, rotated.secret, "rotate", grace || 0);
        await refreshAfterChange(rotated.apiKey);
      } else if (action === "revoke") {
        const body = await api("POST", `${path}/revoke`, {});
        els.confirmDialog.close();
        toast(`Key “${body.apiKey.name}” revoked. Requests using it now get 401.`);
        await refreshAfterChange(body.apiKey);
      } else if (action === "delete") {
        await api("DELETE", path);
        els.confirmDialog.close();
        toast(`Key “${key.name}” deleted.`);
        if (!els.detailsView.hidden) location.hash = "#/";
        else await loadKeys(true);
      }
    } catch (error) {
      showFormError(els.confirmForm, error);
    } finally {
      els.confirmSubmit.disabled = false;
    }
  });

  // --- the one-time key value -------------------------------------------------------------

  function showSecret(key, secret, action, grace) {
    els.secretIntro.textContent = action === "create"
      ? `Key “${key.name}” was created.`
      : grace
        ? `Key “${key.name}” was rotated. The old value keeps working for ${numFmt.format(grace)} seconds, then stops.`
        : `Key “${key.name}” was rotated. The old value has stopped working.`;
    els.secretValue.value = secret;
    els.copyStatus.textContent = "";
    openDialog(els.secretDialog, els.copySecret);
  }

  // Wipe the value as soon as the dialog closes (button, Escape or sign out).
  els.secretDialog.addEventListener("close", () => {
    els.secretValue.value = "";
    els.copyStatus.textContent = "";
  });

  els.copySecret.addEventListener("click", async () => {
    const value = els.secretValue.value;
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(value);
        copied = true;
      } catch (_) {
        copied = false;
      }
    }
    if (!copied) {
      // Fallback for pages served over plain HTTP on a non-local address.
      els.secretValue.focus();
      els.secretValue.select();
      try {
        copied = document.execCommand("copy");
      } catch (_) {
        copied = false;
      }
    }
    els.copyStatus.textContent = copied
      ? "Copied to the clipboard."
      : "Could not copy automatically: the value is selected, press Ctrl+C (⌘C) to copy it.";
    if (!copied) els.secretValue.select();
  });

  // --- dialogs ----------------------------------------------------------------------------

  const returnFocus = new WeakMap();

  function openDialog(dialog, focusTarget) {
    hideToast(); // never over a dialog
    returnFocus.set(dialog, document.activeElement);
    dialog.showModal();
    if (focusTarget) focusTarget.focus();
  }

  for (const dialog of document.querySelectorAll("dialog")) {
    for (const button of dialog.querySelectorAll("[data-close]")) {
      button.addEventListener("click", () => dialog.close());
    }
    dialog.addEventListener("close", () => {
      const previous = returnFocus.get(dialog);
      returnFocus.delete(dialog);
      if (previous && previous.isConnected && previous !== document.body) previous.focus();
      else if (!els.appView.hidden) (els.detailsView.hidden ? els.listTitle : els.detailsTitle).focus();
    });
  }

  els.banner.querySelector(".banner-close").addEventListener("click", hideBanner);

  // --- start ------------------------------------------------------------------------------
  route();
})();
