/**
 * The inspector page: log in (an admin token, or none on a server without
 * authentication), connect to `/inspector/ws` with `@sodp/client`, check
 * the admin permission with `admin.stats`, then show the views as tabs.
 * Only the visible tab polls, and only while the page is visible.
 *
 * Layout: `app` (shared client, verbatim answers, writer lookup), one file
 * per view (`keys`, `deltas`, `history`, `sessions`, `server`, `actions`),
 * `tree` (capped JSON tree with highlights), `diff`, `poll`, `dom`.
 */

import { type ConnectionStatus, SodpClient } from "@sodp/client";
import { ActionsView } from "./actions.ts";
import { App, type Stats, type View } from "./app.ts";
import { DeltasView } from "./deltas.ts";
import { h, replace } from "./dom.ts";
import { HistoryView } from "./history.ts";
import { KeysView } from "./keys.ts";
import { ServerView } from "./server.ts";
import { SessionsView } from "./sessions.ts";

const TOKEN_KEY = "sodp-inspector-token";
const root = document.getElementById("app") as HTMLElement;

function wsUrl(): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/inspector/ws`;
}

function loginScreen(message?: string): void {
  const token = h("textarea", {
    id: "token",
    rows: 4,
    placeholder: "JWT (leave empty if the server has no authentication)",
    spellcheck: "false",
  });
  token.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
  const form = h(
    "form",
    {
      class: "login",
      id: "login",
      onsubmit: (e: Event) => {
        e.preventDefault();
        void connect(token.value.trim());
      },
    },
    h("h1", null, "SODP inspector"),
    h("p", { class: "muted" }, `Connects to ${wsUrl()} as an administrator.`),
    token,
    h("button", { id: "login-go" }, "Connect"),
    message ? h("p", { class: "error", id: "login-error" }, message) : null,
  );
  replace(root, form);
}

async function connect(token: string): Promise<void> {
  const client = new SodpClient(wsUrl(), {
    token: token || undefined,
    reconnectDelay: 500,
    maxReconnectDelay: 5000,
    onError: (e) => console.warn(e.message),
  });
  try {
    await client.ready;
  } catch (err) {
    client.close();
    loginScreen(`Refused: ${err instanceof Error ? err.message.replace("[SODP] ", "") : err}`);
    return;
  }
  const app = new App(client);
  const first = await app.ask("admin.stats", {});
  if (!first.success) {
    client.close();
    loginScreen(
      first.code === 403
        ? "Refused: this token is not an administrator's (403 access denied)."
        : `Refused: ${first.code ?? ""} ${String(first.data)}`,
    );
    return;
  }
  app.stats = first.data as Stats;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  shell(app);
}

function shell(app: App): void {
  const views: View[] = [
    new KeysView(app),
    new DeltasView(app),
    new HistoryView(app),
    new SessionsView(app),
    new ServerView(app),
    new ActionsView(app),
  ];
  const status = h("span", { class: "status", id: "status" }, app.client.status);
  const setStatus = (s: ConnectionStatus) => {
    status.textContent = s;
    status.className = `status ${s}`;
  };
  setStatus(app.client.status);
  app.client.onStatusChange(setStatus);
  const main = h("main");
  const tabs = views.map((v) => h("button", { class: "tab", "data-view": v.name, onclick: () => select(v) }, v.name));
  let current: View | undefined;
  const select = (v: View) => {
    current?.hide();
    current = v;
    for (const t of tabs) t.classList.toggle("active", t.getAttribute("data-view") === v.name);
    replace(main, v.root);
    v.show();
    history.replaceState(null, "", `#${v.name.toLowerCase()}`);
  };
  const who = app.client.sub ? `as ${app.client.sub}` : "no authentication";
  const logout = h(
    "button",
    {
      class: "small",
      onclick: () => {
        current?.hide();
        app.client.close();
        sessionStorage.removeItem(TOKEN_KEY);
        loginScreen();
      },
    },
    "Log out",
  );
  replace(
    root,
    h(
      "header",
      null,
      h("strong", null, "SODP inspector"),
      h("nav", null, tabs),
      h("span", { class: "muted" }, `${location.host} · ${who}`),
      status,
      logout,
    ),
    main,
  );
  const wanted = views.find((v) => `#${v.name.toLowerCase()}` === location.hash) ?? views[0]!;
  select(wanted);
}

loginScreen();
