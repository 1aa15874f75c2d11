/**
 * Sessions: every live session (`admin.sessions`, polled while shown) —
 * subject, remote address, connected since, watched keys, presence paths,
 * queue depth, CALLs, rate-limit refusals — its details (`admin.session`)
 * and a two-step Disconnect (`admin.disconnect`).
 */

import type { App, View } from "./app.ts";
import { ago, h, replace, time } from "./dom.ts";
import { Poller } from "./poll.ts";

interface Summary {
  id: number;
  subject: string | null;
  remote: string | null;
  connected_at: number;
  inspector: boolean;
  watching: number;
  presence: number;
  queue: number;
  calls: number;
  rate_limited: number;
}

export class SessionsView implements View {
  readonly name = "Sessions";
  readonly root: HTMLElement;
  private readonly _rows = h("tbody", { id: "sessions-list" });
  private readonly _note = h("p", { class: "muted", id: "sessions-note" });
  private readonly _done = h("p", { id: "sessions-action" });
  private readonly _detail = h("div", { class: "detail", id: "session-detail" }, h("p", { class: "muted" }, "Select a session."));
  private readonly _poll = new Poller(2000, () => this._load());
  private _selected: number | undefined;
  private _armed: number | undefined;

  constructor(private readonly _app: App) {
    const cols = ["id", "subject", "remote", "connected", "watching", "presence", "queue", "calls", "429s", ""];
    const table = h(
      "table",
      { class: "list" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          cols.map((c) => h("th", null, c)),
        ),
      ),
      this._rows,
    );
    this.root = h("section", { class: "split wide" }, h("div", { class: "pane" }, table, this._note, this._done), this._detail);
  }

  show(): void {
    this._poll.start();
  }

  hide(): void {
    this._poll.stop();
  }

  private async _load(): Promise<void> {
    const a = await this._app.ask("admin.sessions", { limit: 1000 });
    if (!a.success) {
      replace(this._note, `${a.code ?? ""} ${String(a.data)}`);
      return;
    }
    const { sessions, total } = a.data as { sessions: Summary[]; total: number };
    replace(
      this._note,
      `${total} live session${total === 1 ? "" : "s"}${sessions.length < total ? ` (first ${sessions.length} shown)` : ""}`,
    );
    const now = Date.now();
    replace(
      this._rows,
      sessions.map((s) =>
        h(
          "tr",
          { class: s.id === this._selected ? "sel" : null, "data-session": String(s.id), onclick: () => void this._select(s.id) },
          h("td", { class: "num" }, String(s.id)),
          h("td", null, s.subject ?? "—", s.inspector ? h("span", { class: "badge" }, "inspector") : null),
          h("td", { class: "mono" }, s.remote ?? "—"),
          h("td", { title: time(s.connected_at) }, ago(s.connected_at, now)),
          h("td", { class: "num" }, String(s.watching)),
          h("td", { class: "num" }, String(s.presence)),
          h("td", { class: "num" }, String(s.queue)),
          h("td", { class: "num" }, String(s.calls)),
          h("td", { class: "num" }, String(s.rate_limited)),
          h("td", null, this._disconnectButton(s.id)),
        ),
      ),
    );
  }

  /** First click arms it, a second within 4 s disconnects. */
  private _disconnectButton(id: number): HTMLElement {
    const armed = this._armed === id;
    return h(
      "button",
      {
        class: armed ? "small danger" : "small",
        "data-disconnect": String(id),
        onclick: (e: Event) => {
          e.stopPropagation();
          if (this._armed !== id) {
            this._armed = id;
            (e.currentTarget as HTMLElement).textContent = "Confirm?";
            (e.currentTarget as HTMLElement).classList.add("danger");
            setTimeout(() => {
              if (this._armed === id) this._armed = undefined;
            }, 4000);
            return;
          }
          this._armed = undefined;
          void this._disconnect(id);
        },
      },
      armed ? "Confirm?" : "Disconnect",
    );
  }

  private async _disconnect(id: number): Promise<void> {
    const a = await this._app.ask("admin.disconnect", { id });
    replace(this._done, a.success ? `session ${id} disconnected` : `${a.code ?? ""} ${String(a.data)}`);
    this._poll.now();
  }

  private async _select(id: number): Promise<void> {
    this._selected = id;
    for (const tr of this._rows.querySelectorAll("tr")) tr.classList.toggle("sel", tr.getAttribute("data-session") === String(id));
    const a = await this._app.ask("admin.session", { id });
    if (!a.success) {
      replace(this._detail, h("p", null, `${a.code ?? ""} ${String(a.data)}`));
      return;
    }
    const s = a.data as Summary & {
      watched: string[];
      presence_paths: Record<string, string[]>;
      queue_capacity: number;
      truncated: boolean;
    };
    const presence = Object.entries(s.presence_paths);
    replace(
      this._detail,
      h("h2", null, `session ${s.id}`, s.inspector ? h("span", { class: "badge" }, "inspector") : null),
      h(
        "dl",
        null,
        h("dt", null, "subject"),
        h("dd", null, s.subject ?? "— (anonymous)"),
        h("dt", null, "remote"),
        h("dd", { class: "mono" }, s.remote ?? "—"),
        h("dt", null, "connected since"),
        h("dd", null, `${time(s.connected_at)} (${ago(s.connected_at)})`),
        h("dt", null, "queue"),
        h("dd", null, `${s.queue} / ${s.queue_capacity} frames`),
        h("dt", null, "calls · rate-limited"),
        h("dd", null, `${s.calls} · ${s.rate_limited}`),
      ),
      h("h3", null, `watched (${s.watching})`),
      s.watched.length
        ? h(
            "ul",
            { class: "mono" },
            s.watched.map((k) => h("li", null, k)),
          )
        : h("p", { class: "muted" }, "nothing"),
      h("h3", null, `presence paths (${s.presence})`),
      presence.length
        ? h(
            "ul",
            { class: "mono" },
            presence.map(([k, paths]) => h("li", null, `${k}: ${paths.join(", ")}`)),
          )
        : h("p", { class: "muted" }, "none"),
      s.truncated ? h("p", { class: "muted" }, "(lists truncated)") : null,
    );
  }
}
